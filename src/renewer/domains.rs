//! Which names the renewer keeps certificates for: [`DomainPolicy`] (the
//! main domain and the custom domains), the one main-domain rule
//! ([`DomainPolicy::learns`]), and the renewer's records of those names
//! (added, removed, observed in requests).

use std::sync::{Arc, RwLock};

use tracing::info;

use super::Renewer;
use crate::events::Event;
use crate::issuer::RevocationReason;
use crate::store::{CertRecord, CertStore};
use crate::{Domain, Error, Result};

/// The store setting under which a learned main domain is remembered.
pub const MAIN_DOMAIN_META_KEY: &str = "main-domain";

/// The `_APP_DOMAIN` that means "learn the main domain", as unset does; it
/// stands in for the main domain until a public name is seen.
const STAND_IN: &str = "localhost";

fn is_stand_in(domain: &Domain) -> bool {
    domain.as_str() == STAND_IN
}

/// The main domain as it stands, by the rule of [`DomainPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MainDomain {
    /// `_APP_DOMAIN` names it.
    Configured(Domain),
    /// The first public name seen, remembered in the store.
    Learned(Domain),
    /// To be learned, and no public name seen yet. `stand_in` is
    /// `localhost` when `_APP_DOMAIN` says so: it may get a certificate
    /// without a record of its own, and the first public name seen still
    /// takes its place.
    NotLearnedYet {
        /// `localhost`, or `None` when `_APP_DOMAIN` is unset.
        stand_in: Option<Domain>,
    },
}

impl MainDomain {
    /// The name the main domain goes by now, a stand-in included: what
    /// [`DomainPolicy::main_domain`] returns.
    pub(super) fn name(&self) -> Option<&Domain> {
        match self {
            Self::Configured(domain) | Self::Learned(domain) => Some(domain),
            Self::NotLearnedYet { stand_in } => stand_in.as_ref(),
        }
    }

    /// The main domain, configured or learned; `None` while it is to be
    /// learned. Only this one gets a record of its own.
    pub(super) fn settled(&self) -> Option<&Domain> {
        match self {
            Self::Configured(domain) | Self::Learned(domain) => Some(domain),
            Self::NotLearnedYet { .. } => None,
        }
    }
}

/// Which domains this server may get certificates for: the main domain and
/// the custom domains the operator added. Nothing else.
///
/// The main domain is `_APP_DOMAIN`. When it is unset or `localhost`
/// ([`learns`](Self::learns)), the first public domain the server sees
/// (through [`observe`](Self::observe)) becomes the main domain and is
/// remembered in the store, so every instance sharing the store agrees on it
/// and a restart keeps it. Until then `localhost`, when configured, stands
/// in for it. Local names (`localhost`, IP literals, `.test` ...) and names
/// without a known public suffix are never learned.
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

    /// The main-domain rule: whether `_APP_DOMAIN` set to `configured`
    /// means the main domain is learned rather than configured (it is
    /// unset or `localhost`).
    pub fn learns(configured: Option<&Domain>) -> bool {
        configured.is_none_or(is_stand_in)
    }

    /// Whether the main domain is learned rather than configured
    /// ([`learns`](Self::learns) of the configured one).
    pub fn learns_main_domain(&self) -> bool {
        Self::learns(self.configured_main.as_ref())
    }

    /// The main domain as it stands: configured, learned (read from the
    /// store once, then kept in memory), or not learned yet.
    pub(super) async fn main(&self) -> Result<MainDomain> {
        if !self.learns_main_domain() {
            if let Some(configured) = &self.configured_main {
                return Ok(MainDomain::Configured(configured.clone()));
            }
        }
        let learned = match self.cached() {
            Some(learned) => Some(learned),
            None => match self.store.get_meta(MAIN_DOMAIN_META_KEY).await? {
                Some(stored) => {
                    let learned = Domain::new(&stored).map_err(|_| Error::Corrupt {
                        key: MAIN_DOMAIN_META_KEY.into(),
                        reason: "stored main domain is not a valid domain".into(),
                    })?;
                    Some(self.remember(learned))
                }
                None => None,
            },
        };
        Ok(match learned {
            Some(learned) if !is_stand_in(&learned) => MainDomain::Learned(learned),
            stand_in => MainDomain::NotLearnedYet {
                stand_in: stand_in.or_else(|| self.configured_main.clone()),
            },
        })
    }

    /// The main domain in force: the configured one, else the learned one
    /// (read from the store once, then kept in memory), else `localhost`
    /// when configured.
    pub async fn main_domain(&self) -> Result<Option<Domain>> {
        Ok(self.main().await?.name().cloned())
    }

    /// Records that the server saw `domain` (a request's host). When the main
    /// domain is learned and none is known yet, a public `domain` (not a
    /// wildcard) becomes it. Returns the main domain in force afterwards.
    pub async fn observe(&self, domain: &Domain) -> Result<Option<Domain>> {
        let main = self.main().await?;
        // An address is never learned: a client reaching the server by its
        // public IP says nothing of the name the operator owns.
        if !matches!(main, MainDomain::NotLearnedYet { .. })
            || !domain.is_public()
            || domain.is_wildcard()
            || domain.ip().is_some()
        {
            return Ok(main.name().cloned());
        }
        let winner = self
            .store
            .put_meta_if_absent(MAIN_DOMAIN_META_KEY, domain.as_str())
            .await?;
        if winner == domain.as_str() {
            info!(%domain, "main domain learned from the first domain seen");
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
        main == Some(domain) || (self.learns_main_domain() && is_stand_in(domain))
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
        let before = policy.main().await?;
        if before.name() == Some(domain) {
            return Ok(true);
        }
        if let MainDomain::NotLearnedYet { .. } = before {
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

    /// Makes sure the main domain, once configured or learned, has a
    /// record, so the cycle issues its certificate: a new record, due now,
    /// when there is none. Nothing to do while it is to be learned
    /// (`localhost` standing in gets no record). `Some` with the reason
    /// when the main domain cannot get a certificate: a public name in
    /// production without an ACME issuer, where each attempt would only
    /// fail.
    pub(super) async fn ensure_main_record(&self) -> Result<Option<Error>> {
        let main = self.inner.policy.main().await?;
        let Some(main) = main.settled() else {
            return Ok(None);
        };
        if let Err(e) = self.inner.issuing.issuer.check(main) {
            return Ok(Some(e));
        }
        self.ensure_record(main).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn d(name: &str) -> Domain {
        Domain::new(name).unwrap()
    }

    fn policy(configured: Option<&str>) -> DomainPolicy {
        DomainPolicy::new(configured.map(d), Arc::new(MemoryStore::new()))
    }

    #[test]
    fn unset_or_localhost_means_the_main_domain_is_learned() {
        assert!(DomainPolicy::learns(None));
        assert!(DomainPolicy::learns(Some(&d("localhost"))));
        assert!(!DomainPolicy::learns(Some(&d("app.example.com"))));
        // Another local name is a main domain of its own, not a stand-in.
        assert!(!DomainPolicy::learns(Some(&d("app.test"))));
    }

    #[tokio::test]
    async fn the_main_domain_as_it_stands() {
        let configured = policy(Some("app.example.com"));
        let main = configured.main().await.unwrap();
        assert_eq!(main, MainDomain::Configured(d("app.example.com")));
        assert_eq!(main.settled(), Some(&d("app.example.com")));
        // A configured main domain is never replaced by a name seen.
        let after = configured.observe(&d("www.example.org")).await.unwrap();
        assert_eq!(after, Some(d("app.example.com")));

        let unset = policy(None);
        let main = unset.main().await.unwrap();
        assert_eq!(main, MainDomain::NotLearnedYet { stand_in: None });
        assert_eq!((main.name(), main.settled()), (None, None));

        let localhost = policy(Some("localhost"));
        let main = localhost.main().await.unwrap();
        assert_eq!(main.name(), Some(&d("localhost")));
        assert_eq!(main.settled(), None, "localhost only stands in");
        assert!(localhost.is_main(&d("localhost"), main.name()));
        // Local names and wildcards are never learned.
        for seen in ["app.test", "10.0.0.1", "*.example.com"] {
            let after = localhost.observe(&d(seen)).await.unwrap();
            assert_eq!(after, Some(d("localhost")), "{seen}");
        }
        let after = localhost.observe(&d("www.example.org")).await.unwrap();
        assert_eq!(after, Some(d("www.example.org")));
        let main = localhost.main().await.unwrap();
        assert_eq!(main, MainDomain::Learned(d("www.example.org")));
        // The first one stays.
        let after = localhost.observe(&d("api.example.org")).await.unwrap();
        assert_eq!(after, Some(d("www.example.org")));
    }
}
