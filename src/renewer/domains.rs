//! Which names the renewer keeps certificates for: [`DomainPolicy`] (the
//! main domain and the custom domains), and the renewer's records of those
//! names (added, removed, observed in requests).

use std::sync::{Arc, RwLock};

use tracing::info;

use super::Renewer;
use crate::events::Event;
use crate::issuer::RevocationReason;
use crate::store::{CertRecord, CertStore};
use crate::{Domain, Error, Result};

/// The store setting under which a learned main domain is remembered.
pub const MAIN_DOMAIN_META_KEY: &str = "main-domain";

/// Which domains this server may get certificates for: the main domain and
/// the custom domains the operator added. Nothing else.
///
/// The main domain is `_APP_DOMAIN`. When it is unset or `localhost`, the
/// first public domain the server sees (through [`observe`](Self::observe))
/// becomes the main domain and is remembered in the store, so every instance
/// sharing the store agrees on it and a restart keeps it. Local names
/// (`localhost`, IP literals, `.test` ...) and names without a known public
/// suffix are never learned.
///
/// Custom domains live in the store: a domain is a custom domain when the
/// store has a record for it, which only [`Renewer::add_domain`]
/// (the operator's decision) creates, on any instance sharing the store.
///
/// [`Renewer::add_domain`]: crate::Renewer::add_domain
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    configured_main: Option<Domain>,
    learned_main: Arc<RwLock<Option<Domain>>>,
    store: Arc<dyn CertStore>,
}

impl DomainPolicy {
    /// A policy with the configured main domain (`_APP_DOMAIN`), if any.
    pub fn new(main_domain: Option<Domain>, store: Arc<dyn CertStore>) -> Self {
        Self {
            configured_main: main_domain,
            learned_main: Arc::default(),
            store,
        }
    }

    /// Whether the main domain is learned rather than configured.
    pub fn learns_main_domain(&self) -> bool {
        self.configured_main
            .as_ref()
            .is_none_or(|d| d.as_str() == "localhost")
    }

    /// The main domain in force: the configured one, else the learned one
    /// (read from the store once, then kept in memory).
    pub async fn main_domain(&self) -> Result<Option<Domain>> {
        if !self.learns_main_domain() {
            return Ok(self.configured_main.clone());
        }
        if let Some(learned) = self.cached() {
            return Ok(Some(learned));
        }
        match self.store.get_meta(MAIN_DOMAIN_META_KEY).await? {
            Some(stored) => {
                let learned = Domain::new(&stored).map_err(|_| Error::Corrupt {
                    key: MAIN_DOMAIN_META_KEY.into(),
                    reason: "stored main domain is not a valid domain".into(),
                })?;
                Ok(Some(self.remember(learned)))
            }
            None => Ok(self.configured_main.clone()),
        }
    }

    /// Records that the server saw `domain` (a request's host). When the main
    /// domain is learned and none is known yet, a public `domain` (not a
    /// wildcard) becomes it. Returns the main domain in force afterwards.
    pub async fn observe(&self, domain: &Domain) -> Result<Option<Domain>> {
        if !self.learns_main_domain() || !domain.is_public() || domain.is_wildcard() {
            return self.main_domain().await;
        }
        if let Some(known) = self.main_domain().await? {
            if known.as_str() != "localhost" {
                return Ok(Some(known));
            }
        }
        let winner = self
            .store
            .put_meta_if_absent(MAIN_DOMAIN_META_KEY, domain.as_str())
            .await?;
        if winner == domain.as_str() {
            tracing::info!(%domain, "main domain learned from the first domain seen");
        }
        Domain::new(&winner).map(|d| Some(self.remember(d)))
    }

    /// The custom domains (every stored domain but the main one), sorted.
    pub async fn custom_domains(&self) -> Result<Vec<Domain>> {
        let main = self.main_domain().await?;
        let mut domains = self.store.list().await?;
        domains.retain(|d| Some(d) != main.as_ref());
        Ok(domains)
    }

    /// Whether `domain` may get a certificate without a stored record: it is
    /// `main` (the main domain in force), or `localhost` while the main
    /// domain is learned.
    pub fn is_main(&self, domain: &Domain, main: Option<&Domain>) -> bool {
        main == Some(domain) || (self.learns_main_domain() && domain.as_str() == "localhost")
    }

    /// `Ok` when `domain` is the main domain, a custom domain (stored), or
    /// (with a learned main domain) `localhost`; otherwise
    /// [`Error::DomainNotAllowed`].
    pub async fn check(&self, domain: &Domain) -> Result<()> {
        let main = self.main_domain().await?;
        if self.is_main(domain, main.as_ref()) || self.store.load(domain).await?.is_some() {
            return Ok(());
        }
        Err(Error::DomainNotAllowed {
            domain: domain.clone(),
            main,
        })
    }

    fn cached(&self) -> Option<Domain> {
        self.learned_main
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember(&self, domain: Domain) -> Domain {
        *self.learned_main.write().unwrap_or_else(|e| e.into_inner()) = Some(domain.clone());
        domain
    }
}

impl Renewer {
    /// Adds a custom domain the operator owns: stores a record for it, due
    /// now, unless the store already has one, and wakes [`run`](Self::run)
    /// so the certificate is issued without waiting for the next interval.
    /// Every instance sharing the store sees the domain from then on.
    pub async fn add_domain(&self, domain: &Domain) -> Result<()> {
        self.ensure_record(domain).await?;
        self.inner.schedule.wake();
        Ok(())
    }

    /// Removes a custom domain and its stored certificate; `true` if stored.
    pub async fn remove_domain(&self, domain: &Domain) -> Result<bool> {
        self.remove_domain_revoking(domain, None).await
    }

    /// [`remove_domain`](Self::remove_domain), revoking its certificate
    /// first when `revoke` gives a reason (the operator no longer serves
    /// the name: [`RevocationReason::CessationOfOperation`]). The record is
    /// removed only once the CA revoked the certificate; a failed revocation
    /// leaves everything as it was and returns the error. A record without
    /// a certificate, or with a self-signed one, is removed with nothing to
    /// revoke.
    pub async fn remove_domain_revoking(
        &self,
        domain: &Domain,
        revoke: Option<RevocationReason>,
    ) -> Result<bool> {
        let record = self.store().load(domain).await?;
        if let Some(reason) = revoke {
            if let Some(cert) = record.as_ref().and_then(|r| r.certificate.as_ref()) {
                if cert.issuer != crate::cert::IssuerKind::SELF_SIGNED {
                    self.revoke_stored(domain, cert, reason).await?;
                }
            }
        }
        if let Some(resolver) = &self.inner.resolver {
            resolver.remove(domain);
        }
        let removed = self.store().delete(domain).await?;
        if removed {
            if let Some(cert) = record.as_ref().and_then(|r| r.certificate.as_ref()) {
                self.forget_expiry_notice(domain, cert).await;
            }
            self.emit(Event::DomainRemoved {
                domain: domain.clone(),
            });
        }
        Ok(removed)
    }

    /// Tells the renewer a request arrived for `domain` (for example the
    /// `Host` of an HTTP request or a TLS handshake's server name). With a
    /// learned main domain (`_APP_DOMAIN` unset or `localhost`), the first
    /// public domain seen becomes the main domain: it is remembered in the
    /// store, registered, served as the resolver's fallback, and
    /// [`run`](Self::run) is woken to issue it. Returns whether `domain` may
    /// get a certificate.
    ///
    /// Cheap for the usual request: a domain the resolver already serves,
    /// or the known main domain, is answered from memory.
    pub async fn observe(&self, domain: &Domain) -> Result<bool> {
        if let Some(resolver) = &self.inner.resolver {
            if resolver.serves(domain) {
                return Ok(true);
            }
        }
        let policy = &self.inner.policy;
        let before = policy.main_domain().await?;
        if before.as_ref() == Some(domain) {
            return Ok(true);
        }
        let unknown = before.as_ref().is_none_or(|d| d.as_str() == "localhost");
        if policy.learns_main_domain() && unknown {
            let main = policy.observe(domain).await?;
            if main.as_ref() == Some(domain) {
                self.ensure_record(domain).await?;
                if let Some(resolver) = &self.inner.resolver {
                    resolver.set_fallback(Some(domain.clone()));
                }
                self.inner.schedule.wake();
                return Ok(true);
            }
        }
        Ok(policy.check(domain).await.is_ok())
    }

    /// [`observe`](Self::observe) for what a server has in hand: an HTTP
    /// `Host` header or `:authority` (`example.com:443`, `[::1]:8443`), or
    /// a TLS server name, read with [`Domain::from_host`]. A host that is
    /// not a valid name is [`Error::InvalidDomain`].
    pub async fn observe_host(&self, host: &str) -> Result<bool> {
        self.observe(&Domain::from_host(host)?).await
    }

    /// Makes sure the main domain in force has a record, so the cycle
    /// issues its certificate: a new record, due now, when there is none.
    /// Nothing to do while no main domain is set or learned. `Some` with
    /// the reason when the main domain cannot get a certificate: a public
    /// name in production without an ACME issuer, where each attempt would
    /// only fail.
    pub(super) async fn ensure_main_record(&self) -> Result<Option<Error>> {
        let policy = &self.inner.policy;
        let Some(main) = policy.main_domain().await? else {
            return Ok(None);
        };
        // `localhost` configured means "learn the main domain": it stands
        // for no domain of its own until a request names one.
        if policy.learns_main_domain() && main.as_str() == "localhost" {
            return Ok(None);
        }
        if let Err(e) = self.inner.issuing.issuer.check(&main) {
            return Ok(Some(e));
        }
        self.ensure_record(&main).await?;
        Ok(None)
    }

    /// The stored record of `domain`, or a new one stored now, due now.
    pub(super) async fn ensure_record(&self, domain: &Domain) -> Result<CertRecord> {
        if let Some(record) = self.store().load(domain).await? {
            return Ok(record);
        }
        self.create_record(domain).await
    }

    /// Stores a new record for `domain`, due now; when another caller
    /// stored one first, that one.
    pub(super) async fn create_record(&self, domain: &Domain) -> Result<CertRecord> {
        let store = self.store();
        let mut record = CertRecord::new(domain.clone(), self.inner.clock.now());
        match store.save(&record).await {
            Ok(version) => {
                record.version = version;
                info!(%domain, "domain registered for the next maintenance cycle");
                self.emit(Event::DomainAdded {
                    domain: domain.clone(),
                });
                Ok(record)
            }
            // Someone registered it first: theirs is as good.
            Err(Error::Conflict { .. }) => {
                store.load(domain).await?.ok_or_else(|| Error::NotFound {
                    what: "certificate record",
                    key: domain.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }
}
