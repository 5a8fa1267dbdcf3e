//! ACME Renewal Information (RFC 9773): the CA's suggested renewal window
//! of a certificate, the `replaces` id of a renewal order, and revocation.

use std::sync::atomic::Ordering;
use std::time::Duration;

use instant_acme::{CertificateIdentifier, RevocationReason, RevocationRequest};
use rustls_pki_types::Der;
use x509_parser::extensions::ParsedExtension;

use super::{problem, AcmeIssuer, BAD_NONCE_ATTEMPTS};
use crate::cert::leaf_der;
use crate::error::{AcmeProtocolError, CertProblem};
use crate::issuer::RenewalWindow;
use crate::{Domain, Error, Result};

/// Whether the CA's directory has `renewalInfo`: not asked yet.
pub(super) const ARI_UNKNOWN: u8 = 0;
/// The CA offers ARI.
pub(super) const ARI_OFFERED: u8 = 1;
/// The CA does not offer ARI.
pub(super) const ARI_ABSENT: u8 = 2;

/// Whether the CA answers orders without echoing `replaces`: not read yet.
pub(super) const REPLACES_UNKNOWN: u8 = 0;
/// It was not seen doing so.
const REPLACES_NOT_SEEN_DROPPED: u8 = 1;
/// It does: renewals with it are ordered without `replaces`.
const REPLACES_DROPPED: u8 = 2;

/// The store setting that remembers a CA answering orders without
/// echoing `replaces`: `acme-drops-replaces-` and 16 hex digits of
/// SHA-256 over its directory URL; its value is when that was seen.
/// Removing it makes the issuers send `replaces` to that CA again.
pub(super) fn drops_replaces_key(directory_url: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(directory_url.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("acme-drops-replaces-{hex}")
}

/// The shortest and longest wait before asking for a window again, whatever
/// the CA's Retry-After says (RFC 9773 section 4.3.2 suggests such limits).
const MIN_RETRY_AFTER: Duration = Duration::from_secs(60);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl AcmeIssuer {
    /// The CA's renewal window for the leaf of `chain_pem`; `None` when the
    /// CA offers no ARI.
    pub(super) async fn fetch_renewal_window(
        &self,
        chain_pem: &str,
    ) -> Result<Option<RenewalWindow>> {
        let id = certificate_id(chain_pem)?;
        let (account, _) = self.account().await?;
        let answer = tokio::time::timeout(self.request_timeout, account.renewal_info(&id)).await;
        let (info, retry_after) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(instant_acme::Error::Unsupported(_))) => {
                self.ari.store(ARI_ABSENT, Ordering::Relaxed);
                return Ok(None);
            }
            Ok(Err(e)) => return Err(problem::acme_error(None, "renewal-info", e)),
            Err(_) => {
                return Err(Error::Timeout {
                    step: "renewal-info",
                    after: self.request_timeout,
                })
            }
        };
        self.ari.store(ARI_OFFERED, Ordering::Relaxed);
        let window = info.suggested_window;
        if window.end < window.start {
            return Err(problem::protocol_error(
                None,
                "renewal-info",
                AcmeProtocolError::new(
                    format!(
                        "the CA's renewal window for {id} ends ({}) before it starts ({})",
                        window.end, window.start
                    ),
                    None,
                    None,
                ),
            ));
        }
        Ok(Some(RenewalWindow {
            start: window.start,
            end: window.end,
            retry_after: retry_after.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER),
            explanation_url: info.explanation_url,
        }))
    }

    /// The ARI id of the leaf of `chain_pem` for a renewal order's
    /// `replaces`, when the CA offers ARI (RFC 9773 section 5: a client
    /// sends it only then). Learns whether it does with one window request
    /// when not known yet.
    pub(super) async fn replaces_id(
        &self,
        chain_pem: &str,
    ) -> Option<CertificateIdentifier<'static>> {
        if self.ari.load(Ordering::Relaxed) == ARI_UNKNOWN {
            if let Err(e) = self.fetch_renewal_window(chain_pem).await {
                tracing::debug!(error = %e, "could not learn whether the CA offers ARI");
            }
        }
        if self.ari.load(Ordering::Relaxed) != ARI_OFFERED {
            return None;
        }
        if self.drops_replaces().await {
            tracing::warn!(
                directory_url = %self.directory_url,
                reason = "the CA answered an earlier order without echoing replaces (RFC 9773 section 5)",
                "renewal ordered without replaces"
            );
            return None;
        }
        match certificate_id(chain_pem) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e, "the replaced certificate has no ARI id; ordering without replaces");
                None
            }
        }
    }

    /// Whether a renewal of `chain_pem` would be sent with `replaces`, as
    /// far as known without asking the CA (a CA whose ARI is not known yet
    /// counts as one without).
    pub(super) async fn would_send_replaces(&self, chain_pem: &str) -> bool {
        self.ari.load(Ordering::Relaxed) == ARI_OFFERED
            && !self.drops_replaces().await
            && certificate_id(chain_pem).is_ok()
    }

    /// Whether this CA is known to answer orders without echoing
    /// `replaces`: seen by this issuer, or by one sharing the store (read
    /// once from the store's setting [`drops_replaces_key`]).
    async fn drops_replaces(&self) -> bool {
        match self.replaces_memory.load(Ordering::Relaxed) {
            REPLACES_DROPPED => return true,
            REPLACES_UNKNOWN => {}
            _ => return false,
        }
        let key = drops_replaces_key(&self.directory_url);
        let learned = match self.vault.store().get_meta(&key).await {
            Ok(seen) => {
                if seen.is_some() {
                    REPLACES_DROPPED
                } else {
                    REPLACES_NOT_SEEN_DROPPED
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not read whether the CA drops replaces");
                return false;
            }
        };
        // A drop noted meanwhile wins over a read that missed it.
        let _ = self.replaces_memory.compare_exchange(
            REPLACES_UNKNOWN,
            learned,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.replaces_memory.load(Ordering::Relaxed) == REPLACES_DROPPED
    }

    /// Remembers that this CA created an order for `domain` without
    /// echoing `replaces` (`echoed`: what it sent back instead), in this
    /// issuer and in the store, so later renewals skip `replaces`.
    pub(super) async fn remember_drops_replaces(&self, domain: &Domain, echoed: Option<&str>) {
        tracing::warn!(
            %domain,
            directory_url = %self.directory_url,
            echoed = echoed.unwrap_or("nothing"),
            "the CA created the order without echoing replaces (RFC 9773 section 5 says it must): \
             the order is kept, and later renewals with this CA are ordered without replaces"
        );
        self.replaces_memory
            .store(REPLACES_DROPPED, Ordering::Relaxed);
        let key = drops_replaces_key(&self.directory_url);
        let seen = crate::error::rfc3339(time::OffsetDateTime::now_utc());
        if let Err(e) = self.vault.store().set_meta(&key, &seen).await {
            tracing::warn!(error = %e, "could not store that the CA drops replaces; remembered in this process only");
        }
    }

    /// Revokes the certificate whose chain (leaf first) is `chain_pem`
    /// (RFC 8555 section 7.6) for `reason`, signed by this issuer's ACME
    /// account, which must be the one that ordered it. The CA then stops
    /// vouching for it, and its renewal window (ARI) begins at once.
    ///
    /// Fails with [`Error::Acme`] carrying the CA's problem (for example
    /// `alreadyRevoked` or `unauthorized`).
    pub async fn revoke_chain(
        &self,
        chain_pem: &str,
        reason: crate::issuer::RevocationReason,
    ) -> Result<()> {
        use crate::issuer::RevocationReason as Reason;
        let leaf = leaf_der(chain_pem)?;
        let (account, generation) = self.account().await?;
        let request = RevocationRequest {
            certificate: &leaf,
            reason: Some(match reason {
                Reason::Unspecified => RevocationReason::Unspecified,
                Reason::KeyCompromise => RevocationReason::KeyCompromise,
                Reason::Superseded => RevocationReason::Superseded,
                Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
            }),
        };
        match retry!(self, "revoke", None, account.revoke(&request)) {
            // A key the CA no longer takes, when another instance rolled
            // it over: the stored one, once.
            Err(e) if super::account::may_be_stale_key(&e) => {
                match self.follow_stored_account(generation).await? {
                    Some((account, _)) => retry!(self, "revoke", None, account.revoke(&request))?,
                    None => return Err(e),
                }
            }
            other => other?,
        }
        tracing::info!("certificate revoked");
        Ok(())
    }
}

/// The ARI id of the leaf of `chain_pem` (RFC 9773 section 4.1): its
/// authority key identifier and its serial number as encoded.
pub(super) fn certificate_id(chain_pem: &str) -> Result<CertificateIdentifier<'static>> {
    let leaf = leaf_der(chain_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| Error::certificate(None, CertProblem::Unparsable, e.to_string()))?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .ok_or_else(|| {
            Error::certificate(
                None,
                CertProblem::Unparsable,
                "the certificate has no authority key identifier, which ARI needs",
            )
        })?;
    Ok(CertificateIdentifier::new(
        Der::from_slice(aki.0),
        Der::from_slice(cert.tbs_certificate.raw_serial()),
    )
    .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9773 appendix A: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4
    /// and serial 00:87:65:43:21 give `aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE`.
    #[test]
    fn the_ari_id_is_the_rfc_encoding_of_aki_and_serial() {
        let aki = [
            0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0,
            0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4,
        ];
        let serial = [0x00, 0x87, 0x65, 0x43, 0x21];
        let id = CertificateIdentifier::new(Der::from_slice(&aki), Der::from_slice(&serial));
        assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    }

    #[test]
    fn a_certificate_without_an_authority_key_identifier_has_no_ari_id() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = certificate_id(&cert.pem()).unwrap_err();
        assert_eq!(
            err.code(),
            Error::certificate(None, CertProblem::Unparsable, "").code()
        );
    }
}
