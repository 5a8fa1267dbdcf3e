//! The whole default stack from a [`Config`], for a server that wants the
//! reference platform's behaviour without wiring the parts itself.

use std::sync::Arc;

#[cfg(feature = "access")]
use crate::access::{ConsoleAccessPolicy, StoreRootSeat};
use crate::challenge::{Http01Responder, Http01Server, Http01Solver};
use crate::cipher::{Keyring, SecretCipher};
use crate::config::Setting;
use crate::issuer::{AcmeIssuer, IssuerRouter, SelfSignedIssuer};
use crate::renewer::OnDemand;
use crate::store::{CertStore, FileStore};
use crate::{CertResolver, Config, Error, Renewer, Result};

/// The default parts built from a [`Config`]: a [`FileStore`] in
/// `_APP_CERTIFICATES_PATH` (or, with `_APP_CERTIFICATES_DATABASE_URL`, the
/// cluster's PostgreSQL or MariaDB store), a [`Keyring`] from
/// `_APP_OPENSSL_KEY_V*` (or the cipher given to
/// [`start_with_cipher`](Self::start_with_cipher), such as a
/// [`SourcedKeyring`](crate::cipher::SourcedKeyring) whose keys a KMS
/// holds), an
/// HTTP-01 solver (with its own listener on `_APP_ACME_CHALLENGE_ADDRESS`
/// when the ACME issuer is in use, unless that is `off`), the DNS-01 solver
/// of the `_APP_DNS01_*` settings for wildcard names (feature `dns01`), an [`AcmeIssuer`] for
/// `_APP_ACME_DIRECTORY_URL` (when `_APP_SYSTEM_SECURITY_EMAIL_ADDRESS` is
/// set), a [`CertResolver`] and the [`Renewer`] over them (issuing on demand:
/// the first handshake for the main domain or a custom domain without a
/// certificate orders it, see [`OnDemand`]), with the stored
/// certificates loaded and the main domain (`_APP_DOMAIN`) registered, so
/// the first cycle of [`spawn_maintenance`](Self::spawn_maintenance) issues
/// it, and (feature `access`) the console's `ConsoleAccessPolicy`. With the `smtp` feature
/// and `_APP_SMTP_HOST` set, failures and expiring certificates are emailed
/// to the security address ([`SmtpNotifier`](crate::notify::SmtpNotifier)).
///
/// Keep it alive: dropping it stops the challenge listener.
#[derive(Debug)]
#[non_exhaustive]
pub struct Embedded {
    /// The renewer; call [`Renewer::run`] with
    /// `config.renewal().maintenance_interval()`.
    pub renewer: Renewer,
    /// Serves the stored certificates by SNI; give
    /// [`CertResolver::server_config`] to the TLS listener.
    pub resolver: CertResolver,
    /// The store.
    pub store: Arc<dyn CertStore>,
    /// The cipher sealing private keys and account credentials: the
    /// [`Keyring`] of the config, or the cipher given to
    /// [`start_with_cipher`](Self::start_with_cipher). Rotate with
    /// `certkeeper::vault::rotate(&*embedded.store, &*embedded.cipher)`.
    pub cipher: Arc<dyn SecretCipher>,
    /// Answers `/.well-known/acme-challenge/{token}` for an embedding server
    /// that serves port 80 itself.
    pub challenge_responder: Http01Responder,
    /// The built-in HTTP-01 listener, when one was started.
    pub challenge_server: Option<Http01Server>,
    /// The console access rules from `_APP_CONSOLE_WHITELIST_*`, with the
    /// root seat kept in the store so instances sharing it agree; its
    /// [`trusted_proxies`](ConsoleAccessPolicy::trusted_proxies) are the ones
    /// to pass to [`client_ip`](crate::access::client_ip).
    #[cfg(feature = "access")]
    #[cfg_attr(docsrs, doc(cfg(feature = "access")))]
    pub access: ConsoleAccessPolicy,
    /// The settings in force.
    pub config: Config,
}

impl Embedded {
    /// Builds and starts everything; fails with a typed error naming the
    /// setting at fault (a weak key in production, a port that cannot be
    /// bound, an unreadable store folder ...).
    pub async fn start(config: Config) -> Result<Self> {
        let keyring: Arc<Keyring> = Arc::new(config.keyring()?);
        Self::start_sealing_with(config, keyring).await
    }

    /// [`start`](Self::start), sealing with `cipher` instead of the
    /// config's keyring: a [`SourcedKeyring`](crate::cipher::SourcedKeyring)
    /// whose keys come from a KMS (see `examples/kms_cipher.rs`), or a
    /// [`Keyring`] built in code. The config then needs no
    /// `_APP_OPENSSL_KEY_V*`; keys it holds anyway are not used (a warning
    /// says so).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use certkeeper::cipher::{KeySet, SourcedKeyring};
    /// use certkeeper::{Config, Embedded};
    /// # async fn run(kms: KeySet) -> certkeeper::Result<()> {
    /// let cipher = Arc::new(SourcedKeyring::new(Arc::new(kms)).await?);
    /// let embedded = Embedded::start_with_cipher(Config::from_env()?, cipher.clone()).await?;
    /// // Later, after the KMS gained a version: new seals use it.
    /// cipher.refresh().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_with_cipher(config: Config, cipher: Arc<dyn SecretCipher>) -> Result<Self> {
        if let Some(keys) = config.secrets().keyring() {
            tracing::warn!(
                versions = ?keys.versions(),
                "the config's encryption keys are not used: the cipher given seals and opens"
            );
        }
        Self::start_sealing_with(config, cipher).await
    }

    async fn start_sealing_with(config: Config, cipher: Arc<dyn SecretCipher>) -> Result<Self> {
        let storage = config.storage();
        let store: Arc<dyn CertStore> = match storage.database_url() {
            None => Arc::new(FileStore::open(storage.path()).await?),
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            Some(url) => {
                tracing::info!(database = %url, "using the cluster's database as the store");
                url.connect_with(storage.database_options()).await?
            }
            // Config refuses a database URL this build has no store for.
            #[cfg(not(any(feature = "postgres", feature = "mysql")))]
            Some(_) => {
                return Err(Error::config(
                    Setting::CertificatesDatabaseUrl.name(),
                    "this build has no SQL store",
                ))
            }
        };
        // Answers kept in the store too, so any instance sharing it can answer the CA.
        let solver = Http01Solver::new().with_store(store.clone());
        let challenge_responder = solver.responder();
        let (acme_config, renewal) = (config.acme(), config.renewal());
        let security_email = acme_config.security_email();
        let acme_enabled = config.production() && security_email.is_some();
        if config.production() && security_email.is_none() {
            tracing::warn!(
                "{} is unset: no ACME issuer, so public names cannot get certificates (local \
                 names still get self-signed ones)",
                Setting::SecurityEmail
            );
        }
        let challenge_server = match (acme_enabled, acme_config.challenge_address()) {
            (true, Some(address)) => Some(solver.serve(address).await.map_err(|e| {
                Error::config(
                    Setting::AcmeChallengeAddress.name(),
                    format!("cannot listen on {address} for HTTP-01 challenges ({e}); set another address, or off when the server answers them itself"),
                )
            })?),
            _ => None,
        };
        let resolver = CertResolver::new();
        let mut builder = Renewer::builder(store.clone(), cipher.clone())
            .production(config.production())
            .main_domain(renewal.main_domain().cloned())
            .concurrency(renewal.concurrency())
            .resolver(resolver.clone())
            .on_demand(OnDemand::new())
            .naming(config.naming());
        let mut router = IssuerRouter::new(Arc::new(SelfSignedIssuer::new()))
            .production(config.production())
            .naming(config.naming());
        if let (true, Some(email)) = (acme_enabled, security_email) {
            let mut acme = AcmeIssuer::builder(acme_config.directory_url())
                .contact_email(email)
                .solver(Arc::new(solver.clone()))
                .store(store.clone())
                .cipher(cipher.clone())
                .request_timeout(acme_config.timeout())
                .budgets(acme_config.budgets());
            if let Some(root) = acme_config.ca_root() {
                acme = acme.ca_root_pem_file(root);
            }
            // Wildcard names, through DNS-01 (RFC 2136 + TSIG), when set up.
            #[cfg(feature = "dns01")]
            if let Some(dns01) = acme_config.dns01() {
                acme = acme.solver(Arc::new(dns01.clone()));
            }
            acme = acme.key_type(acme_config.key_type());
            if let Some(profile) = acme_config.profile() {
                acme = acme.profile(profile);
            }
            if let Some(profile) = acme_config.ip_profile() {
                acme = acme.ip_profile(profile);
            }
            if let Some(eab) = acme_config.external_account_binding() {
                acme = acme.external_account_binding(eab.key_id(), eab.expose_hmac_key());
            }
            let acme = Arc::new(acme.naming(config.naming()).build()?);
            router = router.public(acme.clone());
            builder = builder.revoker(acme);
        }
        // The default router, naming the variable a public name lacks.
        builder = builder.issuer(Arc::new(router));
        // Failures and expiring certificates emailed, as the reference does.
        #[cfg(feature = "smtp")]
        if let Some(notifier) = config.smtp_notifier()? {
            builder = builder.subscriber(Arc::new(notifier));
        }
        #[cfg(not(feature = "smtp"))]
        if config.email().smtp().is_some() {
            tracing::warn!(
                "{} is set, but this build has no `smtp` feature: no notice is emailed",
                Setting::SmtpHost
            );
        }
        let renewer = builder.build();
        renewer.load().await?;
        #[cfg(feature = "access")]
        let access = config
            .console_access_policy()
            .with_root_seat(Arc::new(StoreRootSeat::new(store.clone())));
        Ok(Self {
            #[cfg(feature = "access")]
            access,
            renewer,
            resolver,
            store,
            cipher,
            challenge_responder,
            challenge_server,
            config,
        })
    }

    /// Runs the maintenance cycle every `_APP_MAINTENANCE_INTERVAL` in a
    /// background task.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<Result<()>> {
        let renewer = self.renewer.clone();
        let interval = self.config.renewal().maintenance_interval();
        tokio::spawn(async move { renewer.run(interval).await })
    }
}
