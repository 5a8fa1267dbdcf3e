//! [`DomainPolicy`]: the main domain and the custom domains, nothing else.

use std::sync::{Arc, RwLock};

use crate::store::CertStore;
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
