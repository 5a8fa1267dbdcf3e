//! The typed sections of a [`Config`](crate::Config): checked values,
//! read-only. A value changes only through
//! [`Config::into_builder`](crate::Config::into_builder) and
//! [`ConfigBuilder::build`](crate::config::ConfigBuilder::build), so it is
//! always checked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "access")]
use crate::access::{ConsoleAccessPolicy, EmailWhitelist, IpWhitelist, TrustedProxies};
#[cfg(feature = "dns01")]
use crate::challenge::Dns01Solver;
use crate::cipher::Keyring;
use crate::config::{DatabaseUrl, Naming, Setting};
use crate::issuer::{CaBudgets, ExternalAccountBinding, KeyType};
use crate::notify::SmtpSettings;
use crate::{Domain, Error, Result};

/// How certificates are ordered from the ACME CA: the `_APP_ACME_*`
/// settings, the contact address and (feature `dns01`) the DNS-01 solver.
#[derive(Clone, Debug)]
pub struct AcmeSection {
    pub(super) directory_url: String,
    pub(super) ca_root: Option<PathBuf>,
    pub(super) timeout: Duration,
    pub(super) profile: Option<String>,
    pub(super) ip_profile: Option<String>,
    pub(super) key_type: KeyType,
    pub(super) eab: Option<ExternalAccountBinding>,
    pub(super) budgets: CaBudgets,
    pub(super) challenge_address: Option<SocketAddr>,
    pub(super) security_email: Option<String>,
    #[cfg(feature = "dns01")]
    pub(super) dns01: Option<Dns01Solver>,
}

impl AcmeSection {
    /// The ACME directory, an `https://` URL (`_APP_ACME_DIRECTORY_URL`;
    /// default Let's Encrypt production).
    pub fn directory_url(&self) -> &str {
        &self.directory_url
    }

    /// A PEM file of a root to trust for the CA's HTTPS, read and checked
    /// when the config was built (`_APP_ACME_CA_ROOT`).
    pub fn ca_root(&self) -> Option<&Path> {
        self.ca_root.as_deref()
    }

    /// The limit on any single call to the CA, positive (`_APP_ACME_TIMEOUT`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The certificate profile to order; `None`: the CA's default
    /// (`_APP_ACME_PROFILE`).
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// The certificate profile to order for an IP address; `None`: the
    /// [`profile`](Self::profile) (`_APP_ACME_IP_PROFILE`).
    pub fn ip_profile(&self) -> Option<&str> {
        self.ip_profile.as_deref()
    }

    /// The certificate key type (`_APP_ACME_KEY_TYPE`).
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The external account binding (`_APP_ACME_EAB_KID`,
    /// `_APP_ACME_EAB_HMAC_KEY`); its `Debug` hides the key.
    pub fn external_account_binding(&self) -> Option<&ExternalAccountBinding> {
        self.eab.as_ref()
    }

    /// The CA's limits the ACME issuer keeps within, both positive
    /// (`_APP_ACME_ORDER_BUDGET`, `_APP_ACME_FAILED_VALIDATION_BUDGET`).
    pub fn budgets(&self) -> CaBudgets {
        self.budgets
    }

    /// Where the HTTP-01 listener binds; `None` when the embedding server
    /// answers challenges itself (`_APP_ACME_CHALLENGE_ADDRESS`).
    pub fn challenge_address(&self) -> Option<SocketAddr> {
        self.challenge_address
    }

    /// The ACME account's contact address, normalised; also the recipient
    /// of emailed notices (`_APP_SYSTEM_SECURITY_EMAIL_ADDRESS`).
    pub fn security_email(&self) -> Option<&str> {
        self.security_email.as_deref()
    }

    /// The DNS-01 solver of the `_APP_DNS01_*` settings, checked; `None`
    /// when `_APP_DNS01_SERVER` is unset. Its `Debug` never shows the secret.
    #[cfg(feature = "dns01")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dns01")))]
    pub fn dns01(&self) -> Option<&Dns01Solver> {
        self.dns01.as_ref()
    }
}

/// Who may reach the console: the `_APP_CONSOLE_*` settings.
#[cfg(feature = "access")]
#[cfg_attr(docsrs, doc(cfg(feature = "access")))]
#[derive(Clone, Debug)]
pub struct ConsoleSection {
    pub(super) whitelist_ips: IpWhitelist,
    pub(super) whitelist_emails: EmailWhitelist,
    pub(super) root_only: bool,
    pub(super) trusted_proxies: TrustedProxies,
}

#[cfg(feature = "access")]
impl ConsoleSection {
    /// The console IP/CIDR whitelist; empty: any address
    /// (`_APP_CONSOLE_WHITELIST_IPS`).
    pub fn whitelist_ips(&self) -> &IpWhitelist {
        &self.whitelist_ips
    }

    /// The console email whitelist; empty: any address
    /// (`_APP_CONSOLE_WHITELIST_EMAILS`).
    pub fn whitelist_emails(&self) -> &EmailWhitelist {
        &self.whitelist_emails
    }

    /// Whether only the first user may sign up (`_APP_CONSOLE_WHITELIST_ROOT`,
    /// default on).
    pub fn root_only(&self) -> bool {
        self.root_only
    }

    /// The proxies whose `X-Forwarded-For` is believed
    /// (`_APP_CONSOLE_TRUSTED_PROXIES`).
    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.trusted_proxies
    }

    /// The console access policy of these settings. It knows the trusted
    /// proxies, so a client address that is one of them never passes the
    /// IP whitelist.
    pub fn access_policy(&self) -> ConsoleAccessPolicy {
        ConsoleAccessPolicy::new(
            self.whitelist_ips.clone(),
            self.whitelist_emails.clone(),
            self.root_only,
        )
        .with_trusted_proxies(self.trusted_proxies.clone())
    }
}

/// Where certificates are kept: the file store's folder, or a cluster's
/// database.
#[derive(Clone, Debug)]
pub struct StorageSection {
    pub(super) path: PathBuf,
    pub(super) database_url: Option<DatabaseUrl>,
    pub(super) database_timeout: Duration,
}

impl StorageSection {
    /// The file store's folder (`_APP_CERTIFICATES_PATH`, default
    /// `./certificates`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database of a cluster's shared store, used instead of the file
    /// store (`_APP_CERTIFICATES_DATABASE_URL`); it hides its password.
    pub fn database_url(&self) -> Option<&DatabaseUrl> {
        self.database_url.as_ref()
    }

    /// How long any single call to the shared database may take, its
    /// retries included (`_APP_CERTIFICATES_DATABASE_TIMEOUT`, default 10 s).
    pub fn database_timeout(&self) -> Duration {
        self.database_timeout
    }

    /// The options the shared database's store is connected with: the
    /// deadline of each call.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub fn database_options(&self) -> crate::store::sql::SqlOptions {
        crate::store::sql::SqlOptions::new().statement_timeout(self.database_timeout)
    }
}

/// What the renewer does and how often.
#[derive(Clone, Debug)]
pub struct RenewalSection {
    pub(super) maintenance_interval: Duration,
    pub(super) concurrency: usize,
    pub(super) main_domain: Option<Domain>,
}

impl RenewalSection {
    /// The time between maintenance cycles, positive
    /// (`_APP_MAINTENANCE_INTERVAL`, default 24 h).
    pub fn maintenance_interval(&self) -> Duration {
        self.maintenance_interval
    }

    /// How many certificates are issued at once in a cycle, at least 1
    /// (`_APP_CERTIFICATES_CONCURRENCY`, default 8).
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The main domain (`_APP_DOMAIN`); `None` (unset or `localhost`) means
    /// it is learned from the first public domain seen (the rule of
    /// [`DomainPolicy::learns`](crate::renewer::DomainPolicy::learns)).
    pub fn main_domain(&self) -> Option<&Domain> {
        self.main_domain.as_ref()
    }
}

/// The encryption keys.
///
/// `Debug` shows which key versions are set, never the keys.
#[derive(Clone, Debug)]
pub struct SecretsSection {
    pub(super) keyring: Option<Keyring>,
    pub(super) naming: Naming,
}

impl SecretsSection {
    /// The keyring of `_APP_OPENSSL_KEY_V1`, `V2` ..., checked (weak keys
    /// refused in production); `None` when no key is set.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    /// The keyring, or an [`Error::Config`] when no key is set, naming
    /// `_APP_OPENSSL_KEY_V1` (read from the environment) or
    /// `ConfigBuilder::openssl_key`.
    pub fn require_keyring(&self) -> Result<Keyring> {
        self.keyring.clone().ok_or_else(|| {
            let name = match self.naming {
                Naming::Builder => "ConfigBuilder::openssl_key".to_owned(),
                Naming::Environment => Setting::openssl_key(1),
            };
            Error::config(
                name,
                "no encryption key is set; set it to a long random secret (openssl rand -base64 32)",
            )
        })
    }
}

/// Where notices are emailed: the `_APP_SMTP_*` and `_APP_SYSTEM_EMAIL_*`
/// settings.
#[derive(Clone, Debug)]
pub struct EmailSection {
    pub(super) smtp: Option<SmtpSettings>,
}

impl EmailSection {
    /// The SMTP settings, checked; `None` when `_APP_SMTP_HOST` is unset.
    /// Their `Debug` hides the password.
    pub fn smtp(&self) -> Option<&SmtpSettings> {
        self.smtp.as_ref()
    }

    /// The email notifier of these settings; `None` when no SMTP server is
    /// set.
    #[cfg(feature = "smtp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
    pub fn notifier(&self) -> Result<Option<crate::notify::SmtpNotifier>> {
        self.smtp
            .clone()
            .map(crate::notify::SmtpNotifier::new)
            .transpose()
    }
}
