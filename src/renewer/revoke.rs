//! Revocation: a stored certificate revoked through the renewer's
//! [`Revoker`](crate::issuer::Revoker), the record kept and due now.

use tracing::info;

use super::{Renewer, SkipReason};
use crate::issuer::{IssuedChain, RevocationReason};
use crate::store::{CertRecord, LogEntry, StoredCert};
use crate::{Domain, Error, Result};

impl Renewer {
    /// Revokes `domain`'s stored certificate for `reason` through the
    /// renewer's [`Revoker`](crate::issuer::Revoker)
    /// ([`RenewerBuilder::revoker`](super::RenewerBuilder::revoker)); the
    /// record stays, due now, so the next cycle issues a new certificate (a
    /// revoked one must not be served: it is removed from the resolver at
    /// once).
    /// Fails with [`Error::NotFound`] when there is no certificate, with
    /// [`Error::Config`] when no revoker is set, and with the revoker's
    /// error ([`Error::NotRevocable`], the CA's problem) otherwise.
    pub async fn revoke(&self, domain: &Domain, reason: RevocationReason) -> Result<CertRecord> {
        let not_found = || Error::NotFound {
            what: "certificate",
            key: domain.to_string(),
        };
        let record = self.store().load(domain).await?.ok_or_else(not_found)?;
        let cert = record.certificate.as_ref().ok_or_else(not_found)?;
        self.revoke_stored(domain, cert, reason).await?;
        if let Some(resolver) = &self.inner.resolver {
            resolver.remove(domain);
        }
        let now = self.inner.clock.now();
        let mut current = record;
        for _ in 0..3 {
            let mut next = current.clone();
            next.certificate = None;
            next.renew_date = now;
            next.ari = None;
            next.push_log(LogEntry {
                time: now,
                step: "revoke".into(),
                success: true,
                message: format!("certificate revoked ({})", reason.as_str()),
            });
            match self.store().save(&next).await {
                Ok(version) => {
                    next.version = version;
                    self.inner.schedule.wake();
                    return Ok(next);
                }
                Err(Error::Conflict { .. }) => {
                    current = self.store().load(domain).await?.ok_or_else(not_found)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::InProgress {
            domain: domain.clone(),
            reason: SkipReason::KeptChanging,
        })
    }

    /// Revokes `cert`, `domain`'s stored certificate, through the
    /// renewer's revoker; [`Error::Config`] when there is none.
    pub(super) async fn revoke_stored(
        &self,
        domain: &Domain,
        cert: &StoredCert,
        reason: RevocationReason,
    ) -> Result<()> {
        let revoker = self.inner.issuing.revoker.as_ref().ok_or_else(|| {
            Error::config(
                "RenewerBuilder::revoker",
                "no revoker is set, so no certificate can be revoked",
            )
        })?;
        let chain = IssuedChain::new(cert.chain_pem.clone(), cert.issuer.clone());
        revoker.revoke(domain, &chain, reason).await?;
        info!(%domain, reason = reason.as_str(), "certificate revoked");
        Ok(())
    }
}
