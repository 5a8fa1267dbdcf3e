use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use super::Domain;
use crate::store::CertStore;
use crate::{Error, Result};

/// The store setting under which a learned main domain is remembered.
pub const MAIN_DOMAIN_META_KEY: &str = "main-domain";

/// Which domains this server may get certificates for: the main domain and
/// the custom domains the operator added. Nothing else.
///
/// The main domain is `_APP_DOMAIN`. When it is unset or `localhost`, the
/// first domain the server sees (through [`observe`](Self::observe)) becomes
/// the main domain and is remembered in the store, so every instance sharing
/// the store agrees on it and a restart keeps it. Local names (`localhost`,
/// IP literals, `.test` ...) are never learned as the main domain.
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    configured_main: Option<Domain>,
    custom: Arc<RwLock<BTreeSet<Domain>>>,
    store: Arc<dyn CertStore>,
}

impl DomainPolicy {
    /// A policy with the configured main domain (`_APP_DOMAIN`), if any.
    pub fn new(main_domain: Option<Domain>, store: Arc<dyn CertStore>) -> Self {
        Self {
            configured_main: main_domain,
            custom: Arc::default(),
            store,
        }
    }

    /// Whether the main domain is learned rather than configured.
    pub fn learns_main_domain(&self) -> bool {
        self.configured_main
            .as_ref()
            .is_none_or(|d| d.as_str() == "localhost")
    }

    /// The main domain in force: the configured one, else the learned one.
    pub async fn main_domain(&self) -> Result<Option<Domain>> {
        if !self.learns_main_domain() {
            return Ok(self.configured_main.clone());
        }
        match self.store.get_meta(MAIN_DOMAIN_META_KEY).await? {
            Some(stored) => Domain::new(&stored).map(Some).map_err(|_| Error::Corrupt {
                key: MAIN_DOMAIN_META_KEY.into(),
                reason: "stored main domain is not a valid domain".into(),
            }),
            None => Ok(self.configured_main.clone()),
        }
    }

    /// Records that the server saw `domain` (a request's host). When the main
    /// domain is learned and none is known yet, a non-local `domain` becomes
    /// it. Returns the main domain in force afterwards.
    pub async fn observe(&self, domain: &Domain) -> Result<Option<Domain>> {
        if !self.learns_main_domain() || domain.is_local() {
            return self.main_domain().await;
        }
        let winner = self
            .store
            .put_meta_if_absent(MAIN_DOMAIN_META_KEY, domain.as_str())
            .await?;
        if winner == domain.as_str() {
            tracing::info!(%domain, "main domain learned from the first domain seen");
        }
        Domain::new(&winner).map(Some)
    }

    /// Adds a custom domain the operator owns.
    pub fn add_custom(&self, domain: Domain) {
        self.custom_mut().insert(domain);
    }

    /// Removes a custom domain; `true` if it was there.
    pub fn remove_custom(&self, domain: &Domain) -> bool {
        self.custom_mut().remove(domain)
    }

    /// The custom domains, sorted.
    pub fn custom_domains(&self) -> Vec<Domain> {
        self.custom
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// `Ok` when `domain` is the main domain, a custom domain, or (with a
    /// learned main domain) `localhost`; otherwise [`Error::DomainNotAllowed`].
    pub async fn check(&self, domain: &Domain) -> Result<()> {
        if self
            .custom
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(domain)
        {
            return Ok(());
        }
        let main = self.main_domain().await?;
        if main.as_ref() == Some(domain)
            || (self.learns_main_domain() && domain.as_str() == "localhost")
        {
            return Ok(());
        }
        Err(Error::DomainNotAllowed {
            domain: domain.to_string(),
            main: main.map_or_else(|| "none".to_string(), |d| d.to_string()),
        })
    }

    fn custom_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeSet<Domain>> {
        self.custom.write().unwrap_or_else(|e| e.into_inner())
    }
}
