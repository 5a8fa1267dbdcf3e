//! Settings, from the environment (the reference platform's variable names)
//! or from code.
//!
//! The `_APP_CONSOLE_*` settings are read with the `access` feature only (a
//! build without it has no console rules, and ignores them); the
//! `_APP_DNS01_*` settings need the `dns01` feature (a build without it
//! refuses them, naming the feature, as it refuses a database URL whose
//! store it lacks).
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `_APP_ENV` | `production` | `production`, or `development` (self-signed certificates for every name, weak keys allowed with a warning); anything else is an error |
//! | `_APP_DOMAIN` | unset | the main domain; unset or `localhost`: the first domain seen becomes the main domain |
//! | `_APP_SYSTEM_SECURITY_EMAIL_ADDRESS` | unset | the ACME account's contact address (required to issue from an ACME CA) |
//! | `_APP_MAINTENANCE_INTERVAL` | `86400` | seconds between maintenance cycles |
//! | `_APP_OPENSSL_KEY_V1`, `_V2` ... | none | encryption keys; the highest version seals, all open |
//! | `_APP_CONSOLE_WHITELIST_IPS` | empty | console IP/CIDR whitelist, comma separated |
//! | `_APP_CONSOLE_WHITELIST_EMAILS` | empty | console email whitelist (`a@b.c`, `*@b.c`), comma separated |
//! | `_APP_CONSOLE_WHITELIST_ROOT` | `enabled` | only the first user may sign up |
//! | `_APP_CONSOLE_TRUSTED_PROXIES` | empty | proxies (addresses, CIDRs) whose `X-Forwarded-For` is believed |
//! | `_APP_ACME_DIRECTORY_URL` | Let's Encrypt production | the ACME CA's directory |
//! | `_APP_ACME_CA_ROOT` | unset | PEM file of a root to trust for the CA's own HTTPS (instead of the system roots) |
//! | `_APP_ACME_TIMEOUT` | `30` | seconds any single call to the CA may take |
//! | `_APP_ACME_CHALLENGE_ADDRESS` | `[::]:80` | where the HTTP-01 listener binds; `off` when the embedding server answers challenges itself |
//! | `_APP_ACME_PROFILE` | unset (the CA's default) | the certificate profile to order, one the CA's directory lists (Let's Encrypt: `classic`, `tlsserver`, `shortlived`) |
//! | `_APP_ACME_IP_PROFILE` | unset (`_APP_ACME_PROFILE`) | the profile to order for an IP address (Let's Encrypt issues addresses under `shortlived` only) |
//! | `_APP_ACME_KEY_TYPE` | `ecdsa-p256` | the certificate key type: `ecdsa-p256` or `ecdsa-p384` |
//! | `_APP_ACME_EAB_KID`, `_APP_ACME_EAB_HMAC_KEY` | unset | external account binding (ZeroSSL, Google ...): the key id and the base64url HMAC key the CA gave; both or neither |
//! | `_APP_CERTIFICATES_PATH` | `./certificates` | the folder of the default file store |
//! | `_APP_CERTIFICATES_CONCURRENCY` | `8` | certificates issued at once in a cycle |
//! | `_APP_CERTIFICATES_DATABASE_URL` | unset | a PostgreSQL or MariaDB URL: the store a cluster shares, instead of the file store |
//! | `_APP_SMTP_HOST` | unset | the SMTP server notices are emailed through (to `_APP_SYSTEM_SECURITY_EMAIL_ADDRESS`); unset: no email |
//! | `_APP_SMTP_PORT` | `25` | its port |
//! | `_APP_SMTP_SECURE` | empty | empty (no TLS), `tls` (STARTTLS, required) or `ssl` (TLS from the start) |
//! | `_APP_SMTP_USERNAME`, `_APP_SMTP_PASSWORD` | unset | sign-in; the password is never logged or shown |
//! | `_APP_SYSTEM_EMAIL_ADDRESS` | the security address | the sender of notices |
//! | `_APP_SYSTEM_EMAIL_NAME` | `certkeeper` | the sender's name |
//! | `_APP_SMTP_CA_ROOT` | unset | PEM file of the roots to trust for the SMTP server's TLS (instead of the system's) |
//! | `_APP_ACME_ORDER_BUDGET` | `300` | new orders per ACME account per 3 hours (the CA's limit), counted in the store and shared by the instances sharing it; a cycle leaves the rest for later |
//! | `_APP_ACME_FAILED_VALIDATION_BUDGET` | `5` | failed validations per name per hour before the name waits (the CA's limit) |
//! | `_APP_ACME_REGISTERED_DOMAIN_BUDGET` | `50` | new certificates per registered domain per 7 days (the CA's limit; renewals are exempt) before a new name under it waits |
//! | `_APP_ACME_DUPLICATE_BUDGET` | `5` | certificates for one name per 7 days (the CA's limit; renewals sent with `replaces` are exempt) before it waits |
//! | `_APP_DNS01_SERVER` | unset | the zone's primary DNS server (`192.0.2.53` or `192.0.2.53:53`) that takes RFC 2136 updates: setting it turns DNS-01 on |
//! | `_APP_DNS01_ZONE` | unset (found per name) | the zone the `_acme-challenge` records go to (`example.com`), instead of the one found from the SOA answers (CNAMEs then not followed) |
//! | `_APP_DNS01_TSIG_KEY_NAME` | unset | the name of the TSIG key that signs the updates; required with the server |
//! | `_APP_DNS01_TSIG_SECRET` | unset | that key's secret, base64 (as `tsig-keygen` prints it); required with the server; never logged |
//! | `_APP_DNS01_TSIG_ALGORITHM` | `hmac-sha256` | `hmac-sha256`, `hmac-sha384` or `hmac-sha512` |
//! | `_APP_DNS01_PROPAGATION_TIMEOUT` | `120` | seconds a DNS-01 record gets to be visible at the zone's servers before the attempt fails |
//! | `_APP_DNS01_PROVIDER` | `rfc2136` | or a DNS provider whose API publishes the records (`cloudflare`, `route53`, `pdns` ...; feature `dns-providers`): naming one turns DNS-01 on |
//! | `_APP_DNS01_TOKEN` | unset | the provider's API token (OVH: consumer key; PowerDNS: API key); never logged |
//! | `_APP_DNS01_KEY_ID` | unset | the provider's key id (Route 53: access key id; OVH: application key; GoDaddy, Porkbun: API key; DNSimple: account id) |
//! | `_APP_DNS01_SECRET` | unset | that key's secret; never logged |
//! | `_APP_DNS01_API_URL` | the provider's | PowerDNS's API URL (required), Route 53's endpoint, OVH's API name |
//! | `_APP_DNS01_RESOLVER` | the RFC 2136 server, or `/etc/resolv.conf`'s first | the DNS server asked for each name's zone, CNAME and name servers |
//! | `_APP_DNS01_NAMESERVERS` | the RFC 2136 server, or the zone's name servers | the DNS servers (comma separated) a record must be answered by before the CA is told |

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

mod sections;
mod setting;
#[cfg(feature = "access")]
pub use sections::ConsoleSection;
pub use sections::{AcmeSection, EmailSection, RenewalSection, SecretsSection, StorageSection};
pub(crate) use setting::Naming;
pub use setting::Setting;

#[cfg(feature = "access")]
use crate::access::{
    parse_switch, ConsoleAccessPolicy, EmailWhitelist, IpWhitelist, TrustedProxies,
};
#[cfg(feature = "dns01")]
use crate::challenge::{Dns01Solver, TsigAlgorithm};
use crate::cipher::{key_variable_version, Keyring};
use crate::email::parse_email;
use crate::issuer::{acme_settings, CaBudgets, ExternalAccountBinding, KeyType};
use crate::notify::{SmtpSecurity, SmtpSettings, DEFAULT_FROM_NAME};
use crate::{Domain, Error, Result};

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Every certkeeper setting, parsed and checked, in typed sections. Build
/// it with [`Config::from_env`], [`Config::from_vars`] or [`Config::builder`];
/// all three go through [`ConfigBuilder::build`], the one place values are
/// checked. The fields are private and the sections read-only, so a
/// `Config` never holds a value that was not checked: to change one, go
/// back to the builder with [`into_builder`](Self::into_builder).
///
/// `Config` is the only part of certkeeper that reads the environment; every
/// component takes the typed values it holds. Each kind of value has one
/// validator, shared with the component that uses it, so a value `Config`
/// accepts is never refused later: the keys are checked as the keyring
/// checks them (weak keys refused in production), the directory URL as the
/// ACME issuer checks it (`https://` only), the CA root file is read, the
/// addresses follow the one email rule ([`normalize_email`](crate::email::normalize_email)).
///
/// | section | settings |
/// | --- | --- |
/// | [`acme`](Self::acme) | directory, CA root, timeout, profile, key type, external account binding, budgets, challenge address, contact address, DNS-01 solver |
/// | [`console`](Self::console) (feature `access`) | IP and email whitelists, root-only sign-up, trusted proxies |
/// | [`storage`](Self::storage) | the file store's folder, a cluster's database URL |
/// | [`renewal`](Self::renewal) | maintenance interval, concurrency, main domain |
/// | [`secrets`](Self::secrets) | the keyring |
/// | [`email`](Self::email) | SMTP |
///
/// ```
/// use certkeeper::config::{Config, Setting};
///
/// let config = Config::from_vars([
///     (Setting::Env.name(), "development"),
///     (Setting::Domain.name(), "example.com"),
/// ])?;
/// assert_eq!(config.renewal().main_domain().map(|d| d.as_str()), Some("example.com"));
/// // The environment plus one change, checked again:
/// let config = config.into_builder().challenge_address(None).build()?;
/// assert_eq!(config.acme().challenge_address(), None);
/// assert!(!config.production());
/// # Ok::<(), certkeeper::Error>(())
/// ```
///
/// `Debug` shows which key versions are set, never the keys, nor any other
/// secret.
#[derive(Clone)]
pub struct Config {
    production: bool,
    acme: AcmeSection,
    #[cfg(feature = "access")]
    console: ConsoleSection,
    storage: StorageSection,
    renewal: RenewalSection,
    secrets: SecretsSection,
    email: EmailSection,
    /// Whether errors name the variables (read from the environment) or
    /// the builder methods.
    #[cfg_attr(not(feature = "fs"), allow(dead_code))]
    naming: Naming,
    /// The values it was built from, for [`Config::into_builder`].
    source: Box<ConfigBuilder>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Config");
        d.field("production", &self.production)
            .field("acme", &self.acme);
        #[cfg(feature = "access")]
        d.field("console", &self.console);
        d.field("storage", &self.storage)
            .field("renewal", &self.renewal)
            .field("secrets", &self.secrets)
            .field("email", &self.email)
            .finish()
    }
}

impl Config {
    /// Reads the process environment. Variables that are not valid UTF-8
    /// are an error if they are certkeeper's, ignored otherwise.
    pub fn from_env() -> Result<Self> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(Setting::PREFIX) {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| Error::config(name, "not valid UTF-8"))?;
            vars.push((name.to_string(), value));
        }
        Self::from_vars(vars)
    }

    /// Reads settings from `(name, value)` pairs, as if they were the
    /// environment. Unknown names are ignored; an empty value counts as unset.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut b = Self::builder();
        b.naming = Naming::Environment;
        #[cfg(feature = "dns01")]
        let mut dns01 = Dns01Vars::default();
        for (name, value) in vars {
            let (name, value) = (name.into(), Zeroizing::new(value.into()));
            if let Some(version) = key_variable_version(&name) {
                let version = version?;
                // An empty key is kept so the keyring can refuse it by name.
                if b.keys.insert(version, value).is_some() {
                    return Err(Error::config(&name, "set twice"));
                }
                continue;
            }
            let v = value.trim();
            if v.is_empty() {
                continue;
            }
            let Some(setting) = Setting::from_name(&name) else {
                continue;
            };
            match setting {
                Setting::Env => {
                    b.production = if v.eq_ignore_ascii_case("production") {
                        true
                    } else if v.eq_ignore_ascii_case("development") {
                        false
                    } else {
                        // A typo must not switch production safeguards off.
                        return Err(Error::config(
                            &name,
                            format!("{v:?} is neither production nor development"),
                        ));
                    };
                }
                Setting::Domain => {
                    let main = Domain::new(v).map_err(|e| Error::config(&name, e.to_string()))?;
                    if main.is_wildcard() {
                        return Err(Error::config(
                            &name,
                            "the main domain is one host name, not a wildcard",
                        ));
                    }
                    b.main_domain = Some(main);
                }
                Setting::SecurityEmail => b.security_email = Some(v.to_string()),
                Setting::MaintenanceInterval => {
                    b.maintenance_interval = Duration::from_secs(parse_positive(&name, v)?)
                }
                #[cfg(feature = "access")]
                Setting::ConsoleWhitelistIps => {
                    b.console_whitelist_ips = IpWhitelist::parse(&name, v)?;
                }
                #[cfg(feature = "access")]
                Setting::ConsoleWhitelistEmails => {
                    b.console_whitelist_emails = EmailWhitelist::parse(&name, v)?;
                }
                #[cfg(feature = "access")]
                Setting::ConsoleWhitelistRoot => b.console_root_only = parse_switch(&name, v)?,
                #[cfg(feature = "access")]
                Setting::ConsoleTrustedProxies => {
                    b.console_trusted_proxies = TrustedProxies::parse(&name, v)?;
                }
                Setting::AcmeDirectoryUrl => b.acme_directory_url = v.to_string(),
                Setting::AcmeCaRoot => b.acme_ca_root = Some(PathBuf::from(v)),
                Setting::AcmeTimeout => {
                    b.acme_timeout = Duration::from_secs(parse_positive(&name, v)?)
                }
                Setting::AcmeChallengeAddress => {
                    b.challenge_address = if v.eq_ignore_ascii_case("off") {
                        None
                    } else {
                        Some(v.parse().map_err(|_| {
                            Error::config(
                                &name,
                                format!(
                                    "{v:?} is not an address like [::]:80 or 0.0.0.0:80, nor off"
                                ),
                            )
                        })?)
                    };
                }
                Setting::AcmeProfile => b.acme_profile = Some(v.to_string()),
                Setting::AcmeIpProfile => b.acme_ip_profile = Some(v.to_string()),
                Setting::AcmeKeyType => b.acme_key_type = KeyType::parse_named(&name, v)?,
                Setting::AcmeEabKid => b.eab_kid = Some(v.to_string()),
                Setting::AcmeEabHmacKey => b.eab_hmac_key = Some(Zeroizing::new(v.to_string())),
                Setting::CertificatesPath => b.store_path = PathBuf::from(v),
                Setting::CertificatesDatabaseUrl => {
                    b.database_url = Some(DatabaseUrl::parse(&name, v)?)
                }
                Setting::CertificatesDatabaseTimeout => {
                    b.database_timeout = Duration::from_secs(parse_positive(&name, v)?)
                }
                Setting::CertificatesConcurrency => {
                    b.concurrency =
                        usize::try_from(parse_positive(&name, v)?).unwrap_or(usize::MAX);
                }
                Setting::SmtpHost => b.smtp_vars.host = Some(v.to_string()),
                Setting::SmtpPort => {
                    b.smtp_vars.port =
                        Some(v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                            Error::config(&name, format!("{v:?} is not a port (1 to 65535)"))
                        })?)
                }
                Setting::SmtpSecure => b.smtp_vars.security = SmtpSecurity::parse(&name, v)?,
                Setting::SmtpUsername => b.smtp_vars.username = Some(v.to_string()),
                // Not trimmed: a password may start or end with a space.
                Setting::SmtpPassword => b.smtp_vars.password = Some(value.clone()),
                Setting::SystemEmailAddress => b.smtp_vars.from_address = Some(v.to_string()),
                Setting::SystemEmailName => b.smtp_vars.from_name = Some(v.to_string()),
                Setting::SmtpCaRoot => b.smtp_vars.ca_root = Some(PathBuf::from(v)),
                Setting::AcmeOrderBudget => {
                    b.acme_budgets.orders =
                        u32::try_from(parse_positive(&name, v)?).unwrap_or(u32::MAX)
                }
                Setting::AcmeFailedValidationBudget => {
                    b.acme_budgets.failed_validations =
                        u32::try_from(parse_positive(&name, v)?).unwrap_or(u32::MAX)
                }
                Setting::AcmeRegisteredDomainBudget => {
                    b.acme_budgets.certificates_per_registered_domain =
                        u32::try_from(parse_positive(&name, v)?).unwrap_or(u32::MAX)
                }
                Setting::AcmeDuplicateBudget => {
                    b.acme_budgets.duplicate_certificates =
                        u32::try_from(parse_positive(&name, v)?).unwrap_or(u32::MAX)
                }
                #[cfg(feature = "dns01")]
                Setting::Dns01Server => dns01.server = Some(parse_dns_server(&name, v)?),
                #[cfg(feature = "dns01")]
                Setting::Dns01Zone => dns01.zone = Some(v.to_string()),
                #[cfg(feature = "dns01")]
                Setting::Dns01TsigKeyName => dns01.key_name = Some(v.to_string()),
                #[cfg(feature = "dns01")]
                Setting::Dns01TsigSecret => dns01.secret = Some(Zeroizing::new(v.to_string())),
                #[cfg(feature = "dns01")]
                Setting::Dns01TsigAlgorithm => dns01.algorithm = TsigAlgorithm::parse(&name, v)?,
                #[cfg(feature = "dns01")]
                Setting::Dns01PropagationTimeout => {
                    dns01.propagation = Some(Duration::from_secs(parse_positive(&name, v)?))
                }
                #[cfg(feature = "dns01")]
                Setting::Dns01Provider => dns01.provider = Some(v.to_string()),
                // Not trimmed, as the SMTP password: the provider trims its own.
                #[cfg(feature = "dns01")]
                Setting::Dns01Token => dns01.token = Some(value.clone()),
                #[cfg(feature = "dns01")]
                Setting::Dns01KeyId => dns01.key_id = Some(v.to_string()),
                #[cfg(feature = "dns01")]
                Setting::Dns01Secret => dns01.secret_key = Some(value.clone()),
                #[cfg(feature = "dns01")]
                Setting::Dns01ApiUrl => dns01.api_url = Some(v.to_string()),
                #[cfg(feature = "dns01")]
                Setting::Dns01Resolver => dns01.resolver = Some(parse_dns_server(&name, v)?),
                #[cfg(feature = "dns01")]
                Setting::Dns01Nameservers => {
                    dns01.nameservers = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| parse_dns_server(&name, s))
                        .collect::<Result<_>>()?
                }
                // Wildcard names would fail at each order: refused at start instead.
                #[cfg(not(feature = "dns01"))]
                Setting::Dns01Server
                | Setting::Dns01Zone
                | Setting::Dns01TsigKeyName
                | Setting::Dns01TsigSecret
                | Setting::Dns01TsigAlgorithm
                | Setting::Dns01PropagationTimeout
                | Setting::Dns01Provider
                | Setting::Dns01Token
                | Setting::Dns01KeyId
                | Setting::Dns01Secret
                | Setting::Dns01ApiUrl
                | Setting::Dns01Resolver
                | Setting::Dns01Nameservers => {
                    return Err(Error::config(
                        &name,
                        "this build has no DNS-01 solver; enable certkeeper's `dns01` feature",
                    ))
                }
                _ => {}
            }
        }
        #[cfg(feature = "dns01")]
        {
            b.dns01 = dns01.solver()?;
        }
        b.build()
    }

    /// Production mode (`_APP_ENV=production`, the default), or
    /// development (self-signed certificates for every name, weak keys
    /// allowed with a warning).
    pub fn production(&self) -> bool {
        self.production
    }

    /// How certificates are ordered from the ACME CA.
    pub fn acme(&self) -> &AcmeSection {
        &self.acme
    }

    /// Who may reach the console.
    #[cfg(feature = "access")]
    #[cfg_attr(docsrs, doc(cfg(feature = "access")))]
    pub fn console(&self) -> &ConsoleSection {
        &self.console
    }

    /// Where certificates are kept.
    pub fn storage(&self) -> &StorageSection {
        &self.storage
    }

    /// What the renewer does and how often.
    pub fn renewal(&self) -> &RenewalSection {
        &self.renewal
    }

    /// The encryption keys.
    pub fn secrets(&self) -> &SecretsSection {
        &self.secrets
    }

    /// Where notices are emailed.
    pub fn email(&self) -> &EmailSection {
        &self.email
    }

    /// The keyring, or an [`Error::Config`] when no key is set, naming
    /// `_APP_OPENSSL_KEY_V1` (read from the environment) or
    /// `ConfigBuilder::openssl_key` (see [`SecretsSection::require_keyring`]).
    pub fn keyring(&self) -> Result<Keyring> {
        self.secrets.require_keyring()
    }

    /// The console access policy from the `_APP_CONSOLE_*` settings (see
    /// [`ConsoleSection::access_policy`]).
    #[cfg(feature = "access")]
    #[cfg_attr(docsrs, doc(cfg(feature = "access")))]
    pub fn console_access_policy(&self) -> ConsoleAccessPolicy {
        self.console.access_policy()
    }

    /// The email notifier of the `_APP_SMTP_*` settings; `None` when
    /// `_APP_SMTP_HOST` is unset (see [`EmailSection::notifier`]).
    #[cfg(feature = "smtp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
    pub fn smtp_notifier(&self) -> Result<Option<crate::notify::SmtpNotifier>> {
        self.email.notifier()
    }

    /// How the components built from this config name a setting in their
    /// errors: by its variable when it was read from the environment.
    #[cfg_attr(not(feature = "fs"), allow(dead_code))]
    pub(crate) fn naming(&self) -> Naming {
        self.naming
    }

    /// A typed builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// A builder holding this config's values, to change some and
    /// [`build`](ConfigBuilder::build) (and so check) again:
    ///
    /// ```no_run
    /// # fn main() -> certkeeper::Result<()> {
    /// let config = certkeeper::Config::from_env()?
    ///     .into_builder()
    ///     .challenge_address(None) // the server answers HTTP-01 itself
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    ///
    /// Values read from the environment keep naming their variable in
    /// errors; the ones changed through the builder name its method.
    pub fn into_builder(self) -> ConfigBuilder {
        *self.source
    }
}

impl From<Config> for ConfigBuilder {
    fn from(config: Config) -> Self {
        config.into_builder()
    }
}

/// Which database a [`DatabaseUrl`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseKind {
    /// PostgreSQL (`postgres://`, `postgresql://`), for
    /// [`PostgresStore`](crate::store::PostgresStore) (feature `postgres`).
    Postgres,
    /// MariaDB or MySQL (`mysql://`, `mariadb://`), for
    /// [`MySqlStore`](crate::store::MySqlStore) (feature `mysql`).
    MySql,
}

/// The URL of a cluster's database (`_APP_CERTIFICATES_DATABASE_URL`):
/// `postgres://user:password@host:5432/db` or `mysql://user:password@host/db`.
///
/// Checked when read: the scheme must name a database whose store this build
/// has (features `postgres`, `mysql`). `Debug` and `Display` hide the
/// password.
///
/// ```
/// use certkeeper::config::{DatabaseKind, DatabaseUrl, Setting};
/// # #[cfg(feature = "postgres")] {
/// let url = DatabaseUrl::parse(Setting::CertificatesDatabaseUrl.name(), "postgres://app:s3cret@db/certs")?;
/// assert_eq!(url.kind(), DatabaseKind::Postgres);
/// assert_eq!(url.to_string(), "postgres://app:***@db/certs");
/// # }
/// # Ok::<(), certkeeper::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: Zeroizing<String>,
    kind: DatabaseKind,
}

impl DatabaseUrl {
    /// Checks `url`; an [`Error::Config`] naming `setting` (never the
    /// password) when it is not a URL of a database this build can use.
    pub fn parse(setting: &str, url: &str) -> Result<Self> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        let kind = match scheme.map(str::to_ascii_lowercase).as_deref() {
            Some("postgres" | "postgresql") => DatabaseKind::Postgres,
            Some("mysql" | "mariadb") => DatabaseKind::MySql,
            _ => {
                return Err(Error::config(
                    setting,
                    "not a postgres://, postgresql://, mysql:// or mariadb:// URL",
                ))
            }
        };
        let compiled = match kind {
            DatabaseKind::Postgres => cfg!(feature = "postgres"),
            DatabaseKind::MySql => cfg!(feature = "mysql"),
        };
        if !compiled {
            let feature = match kind {
                DatabaseKind::Postgres => "postgres",
                DatabaseKind::MySql => "mysql",
            };
            return Err(Error::config(
                setting,
                format!("this build has no store for that database; enable certkeeper's `{feature}` feature"),
            ));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::config(
                setting,
                "the URL contains spaces or control characters",
            ));
        }
        Ok(Self {
            url: Zeroizing::new(url.to_owned()),
            kind,
        })
    }

    /// The database it names.
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The URL itself, password included: for connecting only, never for logs.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// Connects the store this URL names, with its migrations applied,
    /// each call bounded by `options`' deadline.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub async fn connect_with(
        &self,
        options: crate::store::sql::SqlOptions,
    ) -> Result<std::sync::Arc<dyn crate::store::CertStore>> {
        match self.kind {
            #[cfg(feature = "postgres")]
            DatabaseKind::Postgres => Ok(std::sync::Arc::new(
                crate::store::PostgresStore::connect_with(&self.url, options).await?,
            )),
            #[cfg(feature = "mysql")]
            DatabaseKind::MySql => {
                // sqlx names MariaDB `mysql`.
                let url = match self.url.split_once("://") {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => {
                        Zeroizing::new(format!("mysql://{rest}"))
                    }
                    _ => self.url.clone(),
                };
                Ok(std::sync::Arc::new(
                    crate::store::MySqlStore::connect_with(&url, options).await?,
                ))
            }
            #[allow(unreachable_patterns)]
            _ => Err(Error::config(
                Setting::CertificatesDatabaseUrl.name(),
                "this build has no store for that database",
            )),
        }
    }

    /// Connects the store this URL names, with its migrations applied and
    /// the default deadline of each call (10 s).
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub async fn connect(&self) -> Result<std::sync::Arc<dyn crate::store::CertStore>> {
        self.connect_with(crate::store::sql::SqlOptions::new())
            .await
    }
}

impl std::fmt::Display for DatabaseUrl {
    /// The URL with its password replaced by `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return f.write_str("***");
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                if userinfo.contains(':') {
                    write!(f, "{scheme}://{user}:***@{host}{path}")
                } else {
                    write!(f, "{scheme}://{user}@{host}{path}")
                }
            }
            None => write!(f, "{scheme}://{authority}{path}"),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The `_APP_DNS01_*` values read so far.
#[cfg(feature = "dns01")]
#[derive(Default)]
struct Dns01Vars {
    server: Option<SocketAddr>,
    zone: Option<String>,
    key_name: Option<String>,
    secret: Option<Zeroizing<String>>,
    algorithm: TsigAlgorithm,
    propagation: Option<Duration>,
    provider: Option<String>,
    token: Option<Zeroizing<String>>,
    key_id: Option<String>,
    secret_key: Option<Zeroizing<String>>,
    api_url: Option<String>,
    resolver: Option<SocketAddr>,
    nameservers: Vec<SocketAddr>,
}

#[cfg(feature = "dns01")]
impl Dns01Vars {
    /// The solver: RFC 2136 when the server is set (the key is then
    /// required), a provider's API when `_APP_DNS01_PROVIDER` names one;
    /// a setting of the other kind, or any without either, is refused.
    fn solver(self) -> Result<Option<Dns01Solver>> {
        let provider = self
            .provider
            .as_deref()
            .filter(|p| !p.eq_ignore_ascii_case("rfc2136"));
        let rfc2136_set = [
            (Setting::Dns01TsigKeyName, self.key_name.is_some()),
            (Setting::Dns01TsigSecret, self.secret.is_some()),
        ];
        let provider_set = [
            (Setting::Dns01Token, self.token.is_some()),
            (Setting::Dns01KeyId, self.key_id.is_some()),
            (Setting::Dns01Secret, self.secret_key.is_some()),
            (Setting::Dns01ApiUrl, self.api_url.is_some()),
        ];
        let builder = match (self.server, provider) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    Setting::Dns01Server.name(),
                    format!("set with {}, which takes no server", Setting::Dns01Provider),
                ))
            }
            (None, None) => {
                let solver_set = [
                    (Setting::Dns01Zone, self.zone.is_some()),
                    (Setting::Dns01Resolver, self.resolver.is_some()),
                    (Setting::Dns01Nameservers, !self.nameservers.is_empty()),
                ];
                if let Some((setting, _)) =
                    solver_set.iter().chain(&rfc2136_set).find(|(_, set)| *set)
                {
                    return Err(Error::config(
                        setting.name(),
                        format!("set without {}", Setting::Dns01Server),
                    ));
                }
                if let Some((setting, _)) = provider_set.iter().find(|(_, set)| *set) {
                    return Err(Error::config(
                        setting.name(),
                        format!("set without {}", Setting::Dns01Provider),
                    ));
                }
                return Ok(None);
            }
            (Some(server), None) => {
                if let Some((setting, _)) = provider_set.iter().find(|(_, set)| *set) {
                    return Err(Error::config(
                        setting.name(),
                        format!("set without {}", Setting::Dns01Provider),
                    ));
                }
                let required = |setting: Setting| {
                    Error::config(
                        setting.name(),
                        format!("required with {}", Setting::Dns01Server),
                    )
                };
                let key_name = self
                    .key_name
                    .ok_or_else(|| required(Setting::Dns01TsigKeyName))?;
                let secret = self
                    .secret
                    .ok_or_else(|| required(Setting::Dns01TsigSecret))?;
                Dns01Solver::rfc2136(server).tsig_key(key_name, secret.as_str(), self.algorithm)
            }
            (None, Some(name)) => {
                if let Some((setting, _)) = rfc2136_set.iter().find(|(_, set)| *set) {
                    return Err(Error::config(
                        setting.name(),
                        format!("not taken by the {name} provider"),
                    ));
                }
                provider_builder(name, self.token, self.key_id, self.secret_key, self.api_url)?
            }
        };
        let mut builder = builder.naming(Naming::Environment);
        if let Some(zone) = self.zone {
            builder = builder.zone(zone);
        }
        if let Some(resolver) = self.resolver {
            builder = builder.resolver(resolver);
        }
        if !self.nameservers.is_empty() {
            builder = builder.nameservers(self.nameservers);
        }
        if let Some(limit) = self.propagation {
            builder = builder.propagation_timeout(limit);
        }
        builder.build().map(Some)
    }
}

/// The solver of the provider `_APP_DNS01_PROVIDER` names.
#[cfg(feature = "dns-providers")]
fn provider_builder(
    name: &str,
    token: Option<Zeroizing<String>>,
    key_id: Option<String>,
    secret: Option<Zeroizing<String>>,
    api_url: Option<String>,
) -> Result<crate::challenge::Dns01SolverBuilder> {
    let provider =
        crate::challenge::DnsProvider::from_settings(name, token, key_id, secret, api_url)?;
    Ok(Dns01Solver::provider(provider))
}

/// Without the `dns-providers` feature, only `rfc2136`.
#[cfg(all(feature = "dns01", not(feature = "dns-providers")))]
fn provider_builder(
    name: &str,
    _token: Option<Zeroizing<String>>,
    _key_id: Option<String>,
    _secret: Option<Zeroizing<String>>,
    _api_url: Option<String>,
) -> Result<crate::challenge::Dns01SolverBuilder> {
    Err(Error::config(
        Setting::Dns01Provider.name(),
        format!(
            "{name:?}: this build publishes through RFC 2136 only; enable certkeeper's `dns-providers` feature"
        ),
    ))
}

/// `192.0.2.53:53`, `[2001:db8::53]:53`, or an address alone (port 53).
#[cfg(feature = "dns01")]
fn parse_dns_server(name: &str, v: &str) -> Result<SocketAddr> {
    v.parse::<SocketAddr>()
        .or_else(|_| {
            v.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| {
            Error::config(
                name,
                format!("{v:?} is not an IP address, with or without a port"),
            )
        })
}

fn parse_positive(name: &str, v: &str) -> Result<u64> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::config(name, format!("{v:?} is not a positive whole number")))
}

/// Builds a [`Config`] in code; [`build`](Self::build) checks every value
/// with the same validators as [`Config::from_vars`] (which builds through
/// it too). [`Config::into_builder`] gives the builder of an existing config.
#[derive(Clone)]
pub struct ConfigBuilder {
    production: bool,
    main_domain: Option<Domain>,
    security_email: Option<String>,
    maintenance_interval: Duration,
    keys: BTreeMap<u32, Zeroizing<String>>,
    #[cfg(feature = "access")]
    console_whitelist_ips: IpWhitelist,
    #[cfg(feature = "access")]
    console_whitelist_emails: EmailWhitelist,
    #[cfg(feature = "access")]
    console_root_only: bool,
    #[cfg(feature = "access")]
    console_trusted_proxies: TrustedProxies,
    acme_directory_url: String,
    acme_ca_root: Option<PathBuf>,
    acme_timeout: Duration,
    challenge_address: Option<SocketAddr>,
    acme_profile: Option<String>,
    acme_ip_profile: Option<String>,
    acme_key_type: KeyType,
    eab_kid: Option<String>,
    eab_hmac_key: Option<Zeroizing<String>>,
    store_path: PathBuf,
    concurrency: usize,
    database_url: Option<DatabaseUrl>,
    database_timeout: Duration,
    /// Settings given whole through [`smtp`](Self::smtp).
    smtp: Option<SmtpSettings>,
    /// The `_APP_SMTP_*` values read.
    smtp_vars: SmtpVars,
    #[cfg(feature = "dns01")]
    dns01: Option<Dns01Solver>,
    acme_budgets: CaBudgets,
    naming: Naming,
    /// The settings given through a builder method: their errors name the
    /// method even in a config read from the environment.
    by_method: BTreeSet<Method>,
    /// The key versions given through [`openssl_key`](Self::openssl_key).
    keys_by_method: BTreeSet<u32>,
}

/// A builder method, for [`ConfigBuilder::by_method`].
type Method = &'static str;

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self {
            production: true,
            main_domain: None,
            security_email: None,
            maintenance_interval: Duration::from_secs(86_400),
            keys: BTreeMap::new(),
            #[cfg(feature = "access")]
            console_whitelist_ips: IpWhitelist::default(),
            #[cfg(feature = "access")]
            console_whitelist_emails: EmailWhitelist::default(),
            #[cfg(feature = "access")]
            console_root_only: true,
            #[cfg(feature = "access")]
            console_trusted_proxies: TrustedProxies::none(),
            acme_directory_url: LETS_ENCRYPT_DIRECTORY.into(),
            acme_ca_root: None,
            acme_timeout: Duration::from_secs(30),
            challenge_address: Some(SocketAddr::from(([0u16; 8], 80))),
            acme_profile: None,
            acme_ip_profile: None,
            acme_key_type: KeyType::default(),
            eab_kid: None,
            eab_hmac_key: None,
            store_path: PathBuf::from("./certificates"),
            concurrency: 8,
            database_url: None,
            database_timeout: DEFAULT_DATABASE_TIMEOUT,
            smtp: None,
            smtp_vars: SmtpVars::default(),
            #[cfg(feature = "dns01")]
            dns01: None,
            acme_budgets: CaBudgets::default(),
            naming: Naming::default(),
            by_method: BTreeSet::new(),
            keys_by_method: BTreeSet::new(),
        }
    }
}

/// The `_APP_SMTP_*` and `_APP_SYSTEM_EMAIL_*` values read, put together
/// with the security address when the config is built.
#[derive(Clone, Default)]
struct SmtpVars {
    host: Option<String>,
    port: Option<u16>,
    security: SmtpSecurity,
    username: Option<String>,
    password: Option<Zeroizing<String>>,
    from_address: Option<String>,
    from_name: Option<String>,
    ca_root: Option<PathBuf>,
}

impl SmtpVars {
    /// The settings, when a host is set.
    fn settings(self, security_email: Option<&str>) -> Result<Option<SmtpSettings>> {
        let Some(host) = self.host else {
            return Ok(None);
        };
        let to = security_email.ok_or_else(|| {
            Error::config(
                Setting::SecurityEmail.name(),
                format!(
                    "{} is set, so notices are emailed: they need this recipient",
                    Setting::SmtpHost
                ),
            )
        })?;
        let from = self.from_address.as_deref().unwrap_or(to);
        let mut settings = SmtpSettings::named(host, from, to, Naming::Environment)?;
        settings.port = self.port.unwrap_or(25);
        settings.security = self.security;
        settings.username = self.username;
        settings.password = self.password;
        settings.from_name = self.from_name.unwrap_or_else(|| DEFAULT_FROM_NAME.into());
        if let Some(path) = &self.ca_root {
            // Read now, as _APP_ACME_CA_ROOT is: a bad file stops start-up.
            acme_settings::read_ca_root(Setting::SmtpCaRoot.name(), path)?;
        }
        settings.ca_root = self.ca_root;
        Ok(Some(settings))
    }
}

impl std::fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ConfigBuilder");
        d.field("production", &self.production)
            .field("main_domain", &self.main_domain)
            .field("security_email", &self.security_email)
            .field("maintenance_interval", &self.maintenance_interval)
            .field("key_versions", &self.keys.keys().collect::<Vec<_>>());
        #[cfg(feature = "access")]
        d.field("console_whitelist_ips", &self.console_whitelist_ips)
            .field("console_whitelist_emails", &self.console_whitelist_emails)
            .field("console_root_only", &self.console_root_only)
            .field("console_trusted_proxies", &self.console_trusted_proxies);
        d.field("acme_directory_url", &self.acme_directory_url)
            .field("acme_ca_root", &self.acme_ca_root)
            .field("acme_timeout", &self.acme_timeout)
            .field("challenge_address", &self.challenge_address)
            .field("acme_profile", &self.acme_profile)
            .field("acme_ip_profile", &self.acme_ip_profile)
            .field("acme_key_type", &self.acme_key_type)
            .field("eab_kid", &self.eab_kid)
            .field("store_path", &self.store_path)
            .field("concurrency", &self.concurrency)
            .field("database_url", &self.database_url)
            .field("database_timeout", &self.database_timeout)
            .field("smtp", &self.smtp)
            .field("smtp_host", &self.smtp_vars.host);
        #[cfg(feature = "dns01")]
        d.field("dns01", &self.dns01);
        d.field("acme_budgets", &self.acme_budgets).finish()
    }
}

impl ConfigBuilder {
    /// Notes that `method` set a value, so its errors name the method.
    fn by(mut self, method: Method) -> Self {
        self.by_method.insert(method);
        self
    }

    /// How an error names `setting`: its builder `method` when the value
    /// came through it, otherwise as the config's naming says.
    fn name(&self, setting: Setting, method: Method) -> &'static str {
        if self.by_method.contains(method) {
            method
        } else {
            self.naming.of(setting, method)
        }
    }

    /// How a component built from the value of `method` names it.
    fn naming_of(&self, method: Method) -> Naming {
        if self.by_method.contains(method) {
            Naming::Builder
        } else {
            self.naming
        }
    }

    /// Production (`true`, the default) or development mode.
    pub fn production(mut self, production: bool) -> Self {
        self.production = production;
        self.by("ConfigBuilder::production")
    }

    /// The main domain; `None`: learned from the first public domain seen.
    pub fn main_domain(mut self, domain: impl Into<Option<Domain>>) -> Self {
        self.main_domain = domain.into();
        self.by("ConfigBuilder::main_domain")
    }

    /// The ACME contact address; checked when the config is built.
    pub fn security_email(mut self, email: impl Into<String>) -> Self {
        self.security_email = Some(email.into());
        self.by("ConfigBuilder::security_email")
    }

    /// Time between maintenance cycles; must be positive.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval;
        self.by("ConfigBuilder::maintenance_interval")
    }

    /// Adds (or replaces) the encryption key of `version` (1, 2 ...);
    /// checked when the config is built.
    pub fn openssl_key(mut self, version: u32, key: impl Into<String>) -> Self {
        self.keys.insert(version, Zeroizing::new(key.into()));
        self.keys_by_method.insert(version);
        self
    }

    /// The console whitelists and the root-only switch.
    #[cfg(feature = "access")]
    #[cfg_attr(docsrs, doc(cfg(feature = "access")))]
    pub fn console_whitelists(
        mut self,
        ips: IpWhitelist,
        emails: EmailWhitelist,
        root_only: bool,
    ) -> Self {
        self.console_whitelist_ips = ips;
        self.console_whitelist_emails = emails;
        self.console_root_only = root_only;
        self.by("ConfigBuilder::console_whitelists")
    }

    /// The proxies whose `X-Forwarded-For` is believed.
    #[cfg(feature = "access")]
    #[cfg_attr(docsrs, doc(cfg(feature = "access")))]
    pub fn console_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.console_trusted_proxies = proxies;
        self.by("ConfigBuilder::console_trusted_proxies")
    }

    /// The ACME directory URL; must be `https://`.
    pub fn acme_directory_url(mut self, url: impl Into<String>) -> Self {
        self.acme_directory_url = url.into();
        self.by("ConfigBuilder::acme_directory_url")
    }

    /// A root to trust for the CA's HTTPS, as a PEM file; read when the
    /// config is built.
    pub fn acme_ca_root(mut self, path: impl Into<PathBuf>) -> Self {
        self.acme_ca_root = Some(path.into());
        self.by("ConfigBuilder::acme_ca_root")
    }

    /// Limit on any single call to the CA; must be positive.
    pub fn acme_timeout(mut self, timeout: Duration) -> Self {
        self.acme_timeout = timeout;
        self.by("ConfigBuilder::acme_timeout")
    }

    /// The certificate profile to order (`_APP_ACME_PROFILE`); checked
    /// against the CA's directory at the first issue.
    pub fn acme_profile(mut self, profile: impl Into<String>) -> Self {
        self.acme_profile = Some(profile.into());
        self.by("ConfigBuilder::acme_profile")
    }

    /// The certificate profile to order for an IP address
    /// (`_APP_ACME_IP_PROFILE`; Let's Encrypt issues addresses under
    /// `shortlived` only); unset, addresses get the
    /// [`acme_profile`](Self::acme_profile). Checked like it.
    pub fn acme_ip_profile(mut self, profile: impl Into<String>) -> Self {
        self.acme_ip_profile = Some(profile.into());
        self.by("ConfigBuilder::acme_ip_profile")
    }

    /// The certificate key type (`_APP_ACME_KEY_TYPE`).
    pub fn acme_key_type(mut self, key_type: KeyType) -> Self {
        self.acme_key_type = key_type;
        self.by("ConfigBuilder::acme_key_type")
    }

    /// External account binding: the key id and base64url HMAC key the CA
    /// gave (`_APP_ACME_EAB_KID`, `_APP_ACME_EAB_HMAC_KEY`); checked when
    /// the config is built.
    pub fn acme_external_account_binding(mut self, key_id: &str, hmac_key: &str) -> Self {
        self.eab_kid = Some(key_id.to_owned());
        self.eab_hmac_key = Some(Zeroizing::new(hmac_key.to_owned()));
        self.by(EAB_METHOD)
    }

    /// Where the HTTP-01 listener binds (`None`: the embedding server answers).
    pub fn challenge_address(mut self, address: Option<SocketAddr>) -> Self {
        self.challenge_address = address;
        self.by("ConfigBuilder::challenge_address")
    }

    /// The file store's folder.
    pub fn store_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.store_path = path.into();
        self.by("ConfigBuilder::store_path")
    }

    /// The database of a cluster's shared store (see [`DatabaseUrl`]);
    /// `None`: the file store.
    pub fn database_url(mut self, url: impl Into<Option<DatabaseUrl>>) -> Self {
        self.database_url = url.into();
        self.by("ConfigBuilder::database_url")
    }

    /// How long any single call to the shared database may take, its
    /// retries included (`_APP_CERTIFICATES_DATABASE_TIMEOUT`, default
    /// 10 s): past it the call ends with a store error instead of waiting
    /// on a network that went silent. More than zero.
    pub fn database_timeout(mut self, timeout: Duration) -> Self {
        self.database_timeout = timeout;
        self.by("ConfigBuilder::database_timeout")
    }

    /// The CA's limits the ACME issuer keeps within; both must be positive.
    pub fn acme_budgets(mut self, budgets: CaBudgets) -> Self {
        self.acme_budgets = budgets;
        self.by("ConfigBuilder::acme_budgets")
    }

    /// The DNS-01 solver (see [`Dns01Solver::builder`]); `None`: no DNS-01.
    #[cfg(feature = "dns01")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dns01")))]
    pub fn dns01(mut self, solver: impl Into<Option<Dns01Solver>>) -> Self {
        self.dns01 = solver.into();
        self.by("ConfigBuilder::dns01")
    }

    /// Certificates issued at once in a cycle; must be positive.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self.by("ConfigBuilder::concurrency")
    }

    /// Where notices are emailed (replaces the `_APP_SMTP_*` values read);
    /// `None`: no email.
    pub fn smtp(mut self, settings: impl Into<Option<SmtpSettings>>) -> Self {
        self.smtp = settings.into();
        self.smtp_vars = SmtpVars::default();
        self.by("ConfigBuilder::smtp")
    }

    /// Checks the settings and returns the config; an [`Error::Config`] (or
    /// [`Error::WeakKey`]) names the setting at fault: its variable when it
    /// was read from the environment, its builder method when it was set
    /// through one.
    pub fn build(self) -> Result<Config> {
        let security_email = match &self.security_email {
            Some(email) => Some(parse_email(
                self.name(Setting::SecurityEmail, "ConfigBuilder::security_email"),
                email,
            )?),
            None => None,
        };
        let directory_url = acme_settings::directory_url(
            self.name(
                Setting::AcmeDirectoryUrl,
                "ConfigBuilder::acme_directory_url",
            ),
            &self.acme_directory_url,
        )?;
        if let Some(path) = &self.acme_ca_root {
            acme_settings::read_ca_root(
                self.name(Setting::AcmeCaRoot, "ConfigBuilder::acme_ca_root"),
                path,
            )?;
        }
        let profile = match &self.acme_profile {
            Some(profile) => Some(acme_settings::profile(
                self.name(Setting::AcmeProfile, "ConfigBuilder::acme_profile"),
                profile,
            )?),
            None => None,
        };
        let ip_profile = match &self.acme_ip_profile {
            Some(profile) => Some(acme_settings::profile(
                self.name(Setting::AcmeIpProfile, "ConfigBuilder::acme_ip_profile"),
                profile,
            )?),
            None => None,
        };
        let eab = match (&self.eab_kid, &self.eab_hmac_key) {
            (Some(kid), Some(key)) => Some(ExternalAccountBinding::named(
                kid,
                key,
                self.naming_of(EAB_METHOD),
                EAB_METHOD,
            )?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::config(
                    Setting::AcmeEabHmacKey.name(),
                    format!(
                        "required with {}: the HMAC key the CA gave with the key id",
                        Setting::AcmeEabKid
                    ),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    Setting::AcmeEabKid.name(),
                    format!(
                        "required with {}: the key id the CA gave with the HMAC key",
                        Setting::AcmeEabHmacKey
                    ),
                ))
            }
        };
        for (name, zero) in [
            (
                self.name(
                    Setting::MaintenanceInterval,
                    "ConfigBuilder::maintenance_interval",
                ),
                self.maintenance_interval.is_zero(),
            ),
            (
                self.name(Setting::AcmeTimeout, "ConfigBuilder::acme_timeout"),
                self.acme_timeout.is_zero(),
            ),
            (
                self.name(
                    Setting::CertificatesDatabaseTimeout,
                    "ConfigBuilder::database_timeout",
                ),
                self.database_timeout.is_zero(),
            ),
            (
                self.name(
                    Setting::CertificatesConcurrency,
                    "ConfigBuilder::concurrency",
                ),
                self.concurrency == 0,
            ),
            (
                self.name(Setting::AcmeOrderBudget, "ConfigBuilder::acme_budgets"),
                self.acme_budgets.orders == 0,
            ),
            (
                self.name(
                    Setting::AcmeFailedValidationBudget,
                    "ConfigBuilder::acme_budgets",
                ),
                self.acme_budgets.failed_validations == 0,
            ),
            (
                self.name(
                    Setting::AcmeRegisteredDomainBudget,
                    "ConfigBuilder::acme_budgets",
                ),
                self.acme_budgets.certificates_per_registered_domain == 0,
            ),
            (
                self.name(Setting::AcmeDuplicateBudget, "ConfigBuilder::acme_budgets"),
                self.acme_budgets.duplicate_certificates == 0,
            ),
        ] {
            if zero {
                return Err(Error::config(name, "must be positive"));
            }
        }
        if let Some(domain) = &self.main_domain {
            if domain.is_wildcard() {
                return Err(Error::config(
                    self.name(Setting::Domain, "ConfigBuilder::main_domain"),
                    "the main domain is one host name, not a wildcard",
                ));
            }
        }
        let smtp = match &self.smtp {
            Some(settings) => Some(settings.clone()),
            None => self.smtp_vars.clone().settings(security_email.as_deref())?,
        };
        // Each key named as it was given: its variable, or the method.
        let key_naming = |version: u32| {
            if self.keys_by_method.contains(&version) {
                Naming::Builder
            } else {
                self.naming
            }
        };
        // A missing key is named by the variable unless a key came in code.
        let keys_naming = if self.keys_by_method.is_empty() {
            self.naming
        } else {
            Naming::Builder
        };
        let keyring = if self.keys.is_empty() {
            None
        } else {
            Some(
                Keyring::from_keys_named(
                    self.production,
                    self.keys.iter().map(|(v, k)| (*v, k.as_str())),
                    &key_naming,
                    "ConfigBuilder::openssl_key",
                )?
                .with_naming(keys_naming),
            )
        };
        Ok(Config {
            production: self.production,
            acme: AcmeSection {
                directory_url,
                ca_root: self.acme_ca_root.clone(),
                timeout: self.acme_timeout,
                profile,
                ip_profile,
                key_type: self.acme_key_type,
                eab,
                budgets: self.acme_budgets,
                challenge_address: self.challenge_address,
                security_email,
                #[cfg(feature = "dns01")]
                dns01: self.dns01.clone(),
            },
            #[cfg(feature = "access")]
            console: ConsoleSection {
                whitelist_ips: self.console_whitelist_ips.clone(),
                whitelist_emails: self.console_whitelist_emails.clone(),
                root_only: self.console_root_only,
                trusted_proxies: self.console_trusted_proxies.clone(),
            },
            storage: StorageSection {
                path: self.store_path.clone(),
                database_url: self.database_url.clone(),
                database_timeout: self.database_timeout,
            },
            renewal: RenewalSection {
                maintenance_interval: self.maintenance_interval,
                concurrency: self.concurrency,
                main_domain: self.main_domain.clone(),
            },
            secrets: SecretsSection {
                keyring,
                naming: keys_naming,
            },
            email: EmailSection { smtp },
            naming: self.naming,
            source: Box::new(self),
        })
    }
}

/// The builder method of the external account binding.
const EAB_METHOD: &str = "ConfigBuilder::acme_external_account_binding";
/// The deadline of each call to a cluster's database unless set otherwise
/// (`_APP_CERTIFICATES_DATABASE_TIMEOUT`).
const DEFAULT_DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_ones() {
        let c = Config::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert!(c.production());
        assert_eq!(
            c.renewal().maintenance_interval(),
            Duration::from_secs(86_400)
        );
        #[cfg(feature = "access")]
        assert!(c.console().root_only());
        assert_eq!(c.acme().directory_url(), LETS_ENCRYPT_DIRECTORY);
        assert_eq!(
            c.acme().challenge_address(),
            Some("[::]:80".parse().unwrap())
        );
        assert!(c.renewal().main_domain().is_none());
        assert_eq!(c.storage().database_timeout(), Duration::from_secs(10));
    }

    const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

    #[test]
    fn reads_the_acme_profile_key_type_and_external_account_binding() {
        let c = Config::from_vars([
            (Setting::AcmeProfile.name(), " shortlived "),
            (Setting::AcmeIpProfile.name(), "shortlived"),
            (Setting::AcmeKeyType.name(), "ecdsa-p384"),
            (Setting::AcmeEabKid.name(), "kid-1"),
            (Setting::AcmeEabHmacKey.name(), EAB_KEY),
        ])
        .unwrap();
        assert_eq!(c.acme().profile(), Some("shortlived"));
        assert_eq!(c.acme().ip_profile(), Some("shortlived"));
        assert_eq!(c.acme().key_type(), KeyType::EcdsaP384);
        let eab = c.acme().external_account_binding().unwrap();
        assert_eq!(eab.key_id(), "kid-1");
        assert_eq!(eab.expose_hmac_key(), EAB_KEY);
        // The key never shows in Debug.
        let shown = format!(
            "{c:?} {:?}",
            Config::builder().acme_external_account_binding("kid-1", EAB_KEY)
        );
        assert!(
            shown.contains("kid-1") && !shown.contains(&EAB_KEY[..12]),
            "{shown}"
        );

        let defaults = Config::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(defaults.acme().profile(), None);
        assert_eq!(defaults.acme().ip_profile(), None);
        assert_eq!(defaults.acme().key_type(), KeyType::EcdsaP256);
        assert!(defaults.acme().external_account_binding().is_none());
    }

    #[test]
    fn bad_acme_profile_key_type_or_binding_names_the_setting() {
        for (vars, setting) in [
            (
                vec![(Setting::AcmeProfile.name(), "two words")],
                Setting::AcmeProfile.name(),
            ),
            (
                vec![(Setting::AcmeIpProfile.name(), "two words")],
                Setting::AcmeIpProfile.name(),
            ),
            (
                vec![(Setting::AcmeKeyType.name(), "rsa4096")],
                Setting::AcmeKeyType.name(),
            ),
            (
                vec![(Setting::AcmeEabKid.name(), "kid-1")],
                Setting::AcmeEabHmacKey.name(),
            ),
            (
                vec![(Setting::AcmeEabHmacKey.name(), EAB_KEY)],
                Setting::AcmeEabKid.name(),
            ),
            (
                vec![
                    (Setting::AcmeEabKid.name(), "kid-1"),
                    (Setting::AcmeEabHmacKey.name(), "not base64!"),
                ],
                Setting::AcmeEabHmacKey.name(),
            ),
        ] {
            let err = Config::from_vars(vars.clone()).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == setting),
                "{vars:?}: {err:?}"
            );
            assert!(!err.to_string().contains(&EAB_KEY[..12]));
        }
    }

    /// A PEM file with a certificate, as `_APP_ACME_CA_ROOT` names.
    fn ca_root_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&path, cert.pem()).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_every_variable() {
        let (_dir, ca_root) = ca_root_file();
        let c = Config::from_vars([
            (Setting::Env.name(), "development"),
            (Setting::Domain.name(), "Console.Example.COM"),
            (Setting::SecurityEmail.name(), "certs@example.com"),
            (Setting::MaintenanceInterval.name(), "3600"),
            (Setting::CertificatesDatabaseTimeout.name(), "3"),
            (&*Setting::openssl_key(1), "first-key-0123456789"),
            (&*Setting::openssl_key(2), "second-key-0123456789"),
            (Setting::ConsoleWhitelistIps.name(), "10.0.0.0/8"),
            (Setting::ConsoleWhitelistEmails.name(), "*@example.com"),
            (Setting::ConsoleWhitelistRoot.name(), "disabled"),
            (
                Setting::ConsoleTrustedProxies.name(),
                "10.0.0.1, 172.16.0.0/12",
            ),
            (
                Setting::AcmeDirectoryUrl.name(),
                "https://localhost:14000/dir",
            ),
            (Setting::AcmeCaRoot.name(), ca_root.to_str().unwrap()),
            (Setting::AcmeTimeout.name(), "5"),
            (Setting::AcmeChallengeAddress.name(), "off"),
            (Setting::CertificatesPath.name(), "/var/lib/certs"),
            (Setting::CertificatesConcurrency.name(), "16"),
            ("PATH", "/usr/bin"),
        ])
        .unwrap();
        assert!(!c.production());
        assert_eq!(
            c.renewal().main_domain().unwrap().as_str(),
            "console.example.com"
        );
        assert_eq!(c.acme().security_email(), Some("certs@example.com"));
        assert_eq!(
            c.renewal().maintenance_interval(),
            Duration::from_secs(3600)
        );
        assert_eq!(c.storage().database_timeout(), Duration::from_secs(3));
        assert_eq!(c.secrets().keyring().unwrap().versions(), vec![1, 2]);
        #[cfg(feature = "access")]
        assert!(!c.console().root_only());
        #[cfg(feature = "access")]
        assert!(c
            .console()
            .trusted_proxies()
            .contains("172.16.4.2".parse().unwrap()));
        assert_eq!(c.acme().timeout(), Duration::from_secs(5));
        assert_eq!(c.acme().challenge_address(), None);
        assert_eq!(c.storage().path(), std::path::Path::new("/var/lib/certs"));
        assert_eq!(c.renewal().concurrency(), 16);
        #[cfg(feature = "dns01")]
        assert!(c.acme().dns01().is_none());
        assert_eq!(c.acme().budgets(), CaBudgets::default());
        let c = Config::from_vars([
            (Setting::AcmeOrderBudget.name(), "50"),
            (Setting::AcmeFailedValidationBudget.name(), "2"),
            (Setting::AcmeRegisteredDomainBudget.name(), "20"),
            (Setting::AcmeDuplicateBudget.name(), "3"),
        ])
        .unwrap();
        assert_eq!(c.acme().budgets().orders, 50);
        assert_eq!(c.acme().budgets().failed_validations, 2);
        assert_eq!(c.acme().budgets().certificates_per_registered_domain, 20);
        assert_eq!(c.acme().budgets().duplicate_certificates, 3);
        for var in [
            Setting::AcmeOrderBudget.name(),
            Setting::AcmeFailedValidationBudget.name(),
            Setting::AcmeRegisteredDomainBudget.name(),
            Setting::AcmeDuplicateBudget.name(),
        ] {
            for bad in ["0", "lots"] {
                let err = Config::from_vars([(var, bad)]).unwrap_err();
                assert!(
                    matches!(&err, Error::Config { name, .. } if name == var),
                    "{err:?}"
                );
            }
        }
    }

    #[cfg(feature = "dns01")]
    const TSIG_SECRET: &str = "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IQ==";

    #[cfg(feature = "dns01")]
    #[test]
    fn reads_the_dns01_settings_and_never_shows_the_secret() {
        let c = Config::from_vars([
            (Setting::Dns01Server.name(), "192.0.2.53"),
            (Setting::Dns01Zone.name(), "example.com"),
            (Setting::Dns01TsigKeyName.name(), "certkeeper-key"),
            (Setting::Dns01TsigSecret.name(), TSIG_SECRET),
            (Setting::Dns01TsigAlgorithm.name(), "HMAC-SHA512"),
            (Setting::Dns01PropagationTimeout.name(), "30"),
        ])
        .unwrap();
        let solver = c.acme().dns01().unwrap();
        assert_eq!(solver.server(), Some("192.0.2.53:53".parse().unwrap()));
        assert_eq!(solver.zone().as_deref(), Some("example.com"));
        assert_eq!(solver.key_name(), Some("certkeeper-key"));
        assert_eq!(solver.algorithm(), Some(TsigAlgorithm::HmacSha512));
        assert_eq!(solver.propagation_timeout(), Duration::from_secs(30));
        assert!(!format!("{c:?}").contains(TSIG_SECRET));

        let c = Config::from_vars([
            (Setting::Dns01Server.name(), "[::1]:5353"),
            (Setting::Dns01Zone.name(), "example.com"),
            (Setting::Dns01TsigKeyName.name(), "k"),
            (Setting::Dns01TsigSecret.name(), TSIG_SECRET),
        ])
        .unwrap();
        let solver = c.acme().dns01().unwrap().clone();
        assert_eq!(solver.server(), Some("[::1]:5353".parse().unwrap()));
        assert_eq!(solver.algorithm(), Some(TsigAlgorithm::HmacSha256));
        assert_eq!(
            solver.propagation_timeout(),
            Dns01Solver::DEFAULT_PROPAGATION_TIMEOUT
        );
    }

    #[cfg(feature = "dns01")]
    #[test]
    fn incomplete_or_bad_dns01_settings_name_the_variable() {
        let full = [
            (Setting::Dns01Server.name(), "192.0.2.53"),
            (Setting::Dns01Zone.name(), "example.com"),
            (Setting::Dns01TsigKeyName.name(), "k"),
            (Setting::Dns01TsigSecret.name(), TSIG_SECRET),
        ];
        // Each required one missing (the zone is found when unset).
        for missing in 2..full.len() {
            let vars: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, v)| *v)
                .collect();
            let err = Config::from_vars(vars).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == full[missing].0),
                "{err:?}"
            );
        }
        // Set without the server.
        let err = Config::from_vars(full[1..].to_vec()).unwrap_err();
        assert!(matches!(&err, Error::Config { name, .. } if name == Setting::Dns01Zone.name()));
        for (var, bad) in [
            (Setting::Dns01Server.name(), "ns1.example.com"),
            (Setting::Dns01TsigSecret.name(), "not base64!"),
            (Setting::Dns01TsigAlgorithm.name(), "hmac-md5"),
            (Setting::Dns01PropagationTimeout.name(), "0"),
        ] {
            let mut vars = full.to_vec();
            vars.retain(|(name, _)| *name != var);
            vars.push((var, bad));
            let err = Config::from_vars(vars).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == var),
                "{var}: {err:?}"
            );
            assert!(!err.to_string().contains(TSIG_SECRET));
        }
        // A provider's setting beside RFC 2136's, or without a provider.
        for extra in [
            (Setting::Dns01Token.name(), "t"),
            (Setting::Dns01ApiUrl.name(), "http://127.0.0.1:8081"),
        ] {
            let mut vars = full.to_vec();
            vars.push(extra);
            let err = Config::from_vars(vars).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == extra.0),
                "{err:?}"
            );
            let err = Config::from_vars([extra]).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == extra.0),
                "{err:?}"
            );
        }
    }

    #[cfg(feature = "dns01")]
    #[test]
    fn without_a_zone_the_rfc2136_solver_finds_it_through_the_server_or_the_resolver() {
        let rfc2136 = [
            (Setting::Dns01Server.name(), "192.0.2.53"),
            (Setting::Dns01TsigKeyName.name(), "k"),
            (Setting::Dns01TsigSecret.name(), TSIG_SECRET),
        ];
        let c = Config::from_vars(rfc2136).unwrap();
        let solver = c.acme().dns01().unwrap();
        assert_eq!(solver.zone(), None);
        assert_eq!(solver.resolver(), solver.server());
        let mut vars = rfc2136.to_vec();
        vars.push((Setting::Dns01Resolver.name(), "192.0.2.1"));
        vars.push((Setting::Dns01Provider.name(), "RFC2136"));
        let c = Config::from_vars(vars).unwrap();
        let solver = c.acme().dns01().unwrap();
        assert_eq!(solver.resolver(), Some("192.0.2.1:53".parse().unwrap()));
        assert_eq!(solver.provider_name(), "rfc2136");
    }

    #[cfg(feature = "dns-providers")]
    #[test]
    fn reads_a_provider_and_its_credentials_and_never_shows_them() {
        let token = "pdns-api-key-0123456789";
        let c = Config::from_vars([
            (Setting::Dns01Provider.name(), "PDNS"),
            (Setting::Dns01Token.name(), token),
            (Setting::Dns01ApiUrl.name(), "http://127.0.0.1:8081"),
            (Setting::Dns01Resolver.name(), "127.0.0.1:5300"),
            (
                Setting::Dns01Nameservers.name(),
                "127.0.0.1:5300, 192.0.2.1",
            ),
        ])
        .unwrap();
        let solver = c.acme().dns01().unwrap();
        assert_eq!(solver.provider_name(), "pdns");
        assert_eq!(solver.server(), None);
        assert_eq!(solver.resolver(), Some("127.0.0.1:5300".parse().unwrap()));
        assert_eq!(
            solver.nameservers(),
            [
                "127.0.0.1:5300".parse().unwrap(),
                "192.0.2.1:53".parse().unwrap()
            ]
        );
        assert!(!format!("{c:?}").contains(token));

        let secret = "route53-secret-0123456789";
        let c = Config::from_vars([
            (Setting::Dns01Provider.name(), "route53"),
            (Setting::Dns01KeyId.name(), "AKIDEXAMPLE"),
            (Setting::Dns01Secret.name(), secret),
            (Setting::Dns01Zone.name(), "example.com"),
        ])
        .unwrap();
        let solver = c.acme().dns01().unwrap();
        assert_eq!(solver.zone().as_deref(), Some("example.com"));
        assert!(!format!("{c:?}").contains(secret));

        for (vars, named) in [
            (
                vec![(Setting::Dns01Provider.name(), "cloudflare")],
                Setting::Dns01Token,
            ),
            (
                vec![
                    (Setting::Dns01Provider.name(), "cloudflare"),
                    (Setting::Dns01Token.name(), token),
                    (Setting::Dns01Server.name(), "192.0.2.53"),
                ],
                Setting::Dns01Server,
            ),
            (
                vec![
                    (Setting::Dns01Provider.name(), "cloudflare"),
                    (Setting::Dns01Token.name(), token),
                    (Setting::Dns01TsigSecret.name(), TSIG_SECRET),
                ],
                Setting::Dns01TsigSecret,
            ),
            (
                vec![(Setting::Dns01Provider.name(), "bind-over-carrier-pigeon")],
                Setting::Dns01Provider,
            ),
        ] {
            let err = Config::from_vars(vars).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == named.name()),
                "{named}: {err:?}"
            );
            assert!(!err.to_string().contains(token) && !err.to_string().contains(TSIG_SECRET));
        }
    }

    #[cfg(all(feature = "dns01", not(feature = "dns-providers")))]
    #[test]
    fn a_provider_is_refused_without_the_dns_providers_feature() {
        let err = Config::from_vars([
            (Setting::Dns01Provider.name(), "cloudflare"),
            (Setting::Dns01Token.name(), "t"),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, reason } if name == Setting::Dns01Provider.name() && reason.contains("`dns-providers` feature")),
            "{err:?}"
        );
    }

    #[cfg(not(feature = "dns01"))]
    #[test]
    fn dns01_settings_are_refused_without_the_feature() {
        for name in [
            Setting::Dns01Server.name(),
            Setting::Dns01Zone.name(),
            Setting::Dns01TsigSecret.name(),
        ] {
            let err = Config::from_vars([(name, "x")]).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name: n, .. } if n == name),
                "{err:?}"
            );
            assert!(err.to_string().contains("`dns01` feature"), "{err}");
            assert!(!err.to_string().contains("\"x\""), "{err}");
        }
    }

    #[cfg(not(feature = "access"))]
    #[test]
    fn console_settings_are_ignored_without_the_feature() {
        let c = Config::from_vars([(Setting::ConsoleWhitelistIps.name(), "not an address")]);
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            (Setting::Domain.name(), "../etc"),
            (Setting::Domain.name(), "*.example.com"),
            (Setting::SecurityEmail.name(), "not-an-email"),
            (Setting::SecurityEmail.name(), "ops@*.example.com"),
            (Setting::SecurityEmail.name(), "a@localhost"),
            (Setting::SecurityEmail.name(), "a?b@example.com"),
            (Setting::SecurityEmail.name(), "a%40b@example.com"),
            (Setting::MaintenanceInterval.name(), "soon"),
            (Setting::MaintenanceInterval.name(), "0"),
            (Setting::CertificatesDatabaseTimeout.name(), "0"),
            (Setting::CertificatesDatabaseTimeout.name(), "ten"),
            (Setting::AcmeDirectoryUrl.name(), "ftp://x"),
            (
                Setting::AcmeDirectoryUrl.name(),
                "http://localhost:14000/dir",
            ),
            (Setting::AcmeCaRoot.name(), "/nonexistent/ca.pem"),
            (Setting::AcmeChallengeAddress.name(), "port 80"),
            (Setting::Env.name(), "prod"),
            #[cfg(feature = "access")]
            (Setting::ConsoleWhitelistIps.name(), "10.0.0.0/8,intranet"),
            #[cfg(feature = "access")]
            (Setting::ConsoleWhitelistEmails.name(), "not an email"),
            #[cfg(feature = "access")]
            (Setting::ConsoleWhitelistRoot.name(), "maybe"),
            #[cfg(feature = "access")]
            (Setting::ConsoleTrustedProxies.name(), "proxy.internal"),
        ] {
            let err = Config::from_vars([(name, value)]).expect_err(name);
            match &err {
                Error::Config { name: n, .. } => assert_eq!(n, name),
                other => panic!("{name}: {other}"),
            }
        }
        for suffix in ["0", "x", "01", "+1"] {
            let name = format!("{}{suffix}", Setting::OpensslKey.name());
            let err = Config::from_vars([(name.as_str(), "x")]).expect_err(&name);
            match &err {
                Error::Config { name: n, .. } => assert_eq!(n, &name),
                other => panic!("{name}: {other}"),
            }
        }
    }

    #[test]
    fn a_key_version_set_twice_is_an_error() {
        let err = Config::from_vars([
            (
                &*Setting::openssl_key(1),
                "first-key-0123456789abcdefghijklmno",
            ),
            (
                &*Setting::openssl_key(1),
                "other-key-0123456789abcdefghijklmno",
            ),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("set twice"), "{err}");
    }

    #[test]
    fn debug_never_shows_keys() {
        let c = Config::builder()
            .production(false)
            .openssl_key(1, "super-secret-passphrase-1")
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("keyring: Some"), "{shown}");
        let builder = format!(
            "{:?}",
            Config::builder().openssl_key(1, "super-secret-passphrase-1")
        );
        assert!(!builder.contains("super-secret"), "{builder}");
    }

    #[test]
    fn builder_checks_values() {
        assert!(Config::builder().security_email("nope").build().is_err());
        assert!(Config::builder().concurrency(0).build().is_err());
        let c = Config::builder()
            .security_email("ops@example.org")
            .production(false)
            .build()
            .unwrap();
        assert!(!c.production());
    }

    // One validator per kind of value: what Config accepts, the component
    // that uses the value accepts too.

    #[test]
    fn the_directory_url_config_accepts_is_one_the_acme_issuer_accepts() {
        // Refused by Config, as the issuer refuses it.
        for url in ["http://localhost:14000/dir", "https://", "https:///dir"] {
            let err = Config::from_vars([(Setting::AcmeDirectoryUrl.name(), url)]).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == Setting::AcmeDirectoryUrl.name()),
                "{url}: {err}"
            );
        }
        // Accepted by Config, then by the issuer.
        let c = Config::from_vars([
            (
                Setting::AcmeDirectoryUrl.name(),
                " https://localhost:14000/dir ",
            ),
            (Setting::SecurityEmail.name(), "ops@example.com"),
            (&*Setting::openssl_key(1), "a development passphrase"),
            (Setting::Env.name(), "development"),
        ])
        .unwrap();
        let store = std::sync::Arc::new(crate::store::MemoryStore::new());
        let issuer = crate::issuer::AcmeIssuer::builder(c.acme().directory_url())
            .contact_email(c.acme().security_email().unwrap())
            .solver(std::sync::Arc::new(crate::challenge::Http01Solver::new()))
            .store(store)
            .cipher(std::sync::Arc::new(c.keyring().unwrap()))
            .build()
            .unwrap();
        assert_eq!(issuer.directory_url(), "https://localhost:14000/dir");
    }

    #[test]
    fn key_variables_have_one_rule() {
        // V01 was refused by Config and read as V1 by the keyring: now both
        // go through the one rule, and Config builds the keyring.
        for suffix in ["01", "0", "x"] {
            let name = format!("{}{suffix}", Setting::OpensslKey.name());
            let name = name.as_str();
            let err = Config::from_vars([(name, "a development passphrase")]).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name: n, .. } if n == name),
                "{err}"
            );
            assert!(crate::cipher::key_variable_version(name).unwrap().is_err());
        }
        let c = Config::from_vars([
            (Setting::Env.name(), "development"),
            (&*Setting::openssl_key(3), "a development passphrase"),
        ])
        .unwrap();
        assert_eq!(c.keyring().unwrap().versions(), vec![3]);
        assert!(matches!(
            Config::from_vars(Vec::<(String, String)>::new()).unwrap().keyring(),
            Err(Error::Config { name, .. }) if name == Setting::openssl_key(1)
        ));
    }

    #[test]
    fn a_weak_key_is_refused_by_config_in_production_as_the_keyring_refuses_it() {
        let err = Config::from_vars([(&*Setting::openssl_key(1), "qwerty12")]).unwrap_err();
        assert!(
            matches!(&err, Error::WeakKey { name, .. } if *name == Setting::openssl_key(1)),
            "{err}"
        );
        assert!(!err.to_string().contains("qwerty12"), "{err}");
        let dev = Config::from_vars([
            (Setting::Env.name(), "development"),
            (&*Setting::openssl_key(1), "qwerty12"),
        ]);
        assert!(dev.is_ok());
    }

    #[test]
    fn an_unreadable_ca_root_is_refused_by_config_as_the_issuer_refuses_it() {
        let (dir, path) = ca_root_file();
        assert!(Config::builder().acme_ca_root(&path).build().is_ok());
        let missing = dir.path().join("missing.pem");
        let err = Config::builder()
            .acme_ca_root(&missing)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "ConfigBuilder::acme_ca_root"),
            "{err}"
        );
        // From the environment, the variable is named.
        let err = Config::from_vars([(Setting::AcmeCaRoot.name(), missing.to_str().unwrap())])
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == Setting::AcmeCaRoot.name()),
            "{err}"
        );
    }

    #[test]
    fn into_builder_keeps_every_value_and_checks_again() {
        let (_dir, ca_root) = ca_root_file();
        let vars = [
            (Setting::Env.name(), "development"),
            (Setting::Domain.name(), "example.com"),
            (Setting::SecurityEmail.name(), "Ops@Example.com"),
            (Setting::MaintenanceInterval.name(), "3600"),
            (&*Setting::openssl_key(1), "qwerty12"),
            (&*Setting::openssl_key(2), "second-key-0123456789abcdefgh"),
            (Setting::ConsoleWhitelistIps.name(), "10.0.0.0/8"),
            (
                Setting::AcmeDirectoryUrl.name(),
                "https://localhost:14000/dir",
            ),
            (Setting::AcmeCaRoot.name(), ca_root.to_str().unwrap()),
            (Setting::AcmeProfile.name(), "shortlived"),
            (Setting::AcmeEabKid.name(), "kid-1"),
            (Setting::AcmeEabHmacKey.name(), EAB_KEY),
            (Setting::CertificatesConcurrency.name(), "3"),
            (Setting::SmtpHost.name(), "smtp.example.com"),
            (Setting::SmtpPassword.name(), "s3cret-smtp-password"),
        ];
        let from_env = Config::from_vars(vars).unwrap();
        let rebuilt = from_env.clone().into_builder().build().unwrap();
        assert_eq!(format!("{rebuilt:?}"), format!("{from_env:?}"));
        assert_eq!(rebuilt.secrets().keyring().unwrap().versions(), vec![1, 2]);
        assert_eq!(
            rebuilt
                .email()
                .smtp()
                .unwrap()
                .password
                .as_deref()
                .map(String::as_str),
            Some("s3cret-smtp-password")
        );

        // The environment plus one change.
        let changed = ConfigBuilder::from(from_env.clone())
            .challenge_address(None)
            .build()
            .unwrap();
        assert_eq!(changed.acme().challenge_address(), None);
        assert_eq!(changed.renewal().concurrency(), 3);
        assert_eq!(changed.acme().security_email(), Some("ops@example.com"));

        // A change is checked, and its error names the method ...
        let err = from_env
            .clone()
            .into_builder()
            .concurrency(0)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "ConfigBuilder::concurrency"),
            "{err}"
        );
        // ... while a value read from the environment keeps naming its
        // variable: the weak V1 key, allowed in development, is refused
        // once the copy is switched to production.
        let err = from_env
            .into_builder()
            .production(true)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::WeakKey { name, .. } if *name == Setting::openssl_key(1)),
            "{err}"
        );
        assert!(!err.to_string().contains("qwerty12"), "{err}");
        // A key added in code is named by the method and its version; the
        // environment's keep their variable.
        let dev = Config::from_vars([
            (Setting::Env.name(), "development"),
            (&*Setting::openssl_key(1), "qwerty12"),
        ])
        .unwrap();
        let err = dev
            .clone()
            .into_builder()
            .openssl_key(3, "second-key-0123456789abcdefgh")
            .production(true)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::WeakKey { name, .. } if *name == Setting::openssl_key(1)),
            "{err}"
        );
        let err = dev
            .into_builder()
            .openssl_key(1, "long-enough-but-rotated-0123456789")
            .openssl_key(3, "qwerty34")
            .production(true)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::WeakKey { name, .. } if name == "ConfigBuilder::openssl_key(version 3)"),
            "{err}"
        );
    }

    #[test]
    fn the_builder_refuses_a_wildcard_main_domain_as_the_environment_does() {
        let wildcard = Domain::new("*.example.com").unwrap();
        let err = Config::builder().main_domain(wildcard).build().unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "ConfigBuilder::main_domain"),
            "{err}"
        );
        let c = Config::builder()
            .main_domain(Domain::new("example.com").unwrap())
            .build()
            .unwrap();
        assert_eq!(c.renewal().main_domain().unwrap().as_str(), "example.com");
        let c = c.into_builder().main_domain(None).build().unwrap();
        assert!(c.renewal().main_domain().is_none());
    }

    #[test]
    fn builder_errors_name_the_builder_method() {
        let err = Config::builder()
            .database_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "ConfigBuilder::database_timeout"),
            "{err}"
        );
        let err = Config::builder()
            .maintenance_interval(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "ConfigBuilder::maintenance_interval"),
            "{err}"
        );
        let err = Config::builder()
            .security_email("not an address")
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "ConfigBuilder::security_email"),
            "{err}"
        );
        let err = Config::builder()
            .acme_profile("two words")
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "ConfigBuilder::acme_profile"),
            "{err}"
        );
        assert!(!err.to_string().contains(Setting::PREFIX), "{err}");
    }

    #[cfg(feature = "access")]
    #[test]
    fn every_email_setting_follows_the_one_email_rule() {
        for address in [
            "ops@example.com",
            "Ops+Certs@Example.COM",
            "o'brien@example.ie",
            "a?b@example.com",
            "a%40b@example.com",
            "a@localhost",
            "a@10.0.0.1",
            "jürgen@example.com",
            "admin\u{200B}@example.com",
            ".a@example.com",
        ] {
            let contact = Config::from_vars([(Setting::SecurityEmail.name(), address)]);
            let listed = Config::from_vars([(Setting::ConsoleWhitelistEmails.name(), address)]);
            let user = crate::email::normalize_email(address);
            assert_eq!(contact.is_ok(), user.is_some(), "{address:?}");
            assert_eq!(listed.is_ok(), user.is_some(), "{address:?}");
            if let Ok(c) = contact {
                assert_eq!(c.acme().security_email(), user.as_deref(), "{address:?}");
                assert!(listed
                    .unwrap()
                    .console()
                    .whitelist_emails()
                    .contains(address));
            }
        }
    }

    #[test]
    fn a_database_url_is_checked_and_never_shows_its_password() {
        for bad in ["sqlite://x.db", "db.internal", "postgres//x"] {
            let err =
                Config::from_vars([(Setting::CertificatesDatabaseUrl.name(), bad)]).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == Setting::CertificatesDatabaseUrl.name()),
                "{bad}: {err}"
            );
        }
        let c = Config::from_vars([(
            Setting::CertificatesDatabaseUrl.name(),
            "postgres://app:hunter2-secret@db.internal:5432/certs",
        )]);
        if cfg!(feature = "postgres") {
            let c = c.unwrap();
            let url = c.storage().database_url().unwrap();
            assert_eq!(url.kind(), DatabaseKind::Postgres);
            assert_eq!(url.to_string(), "postgres://app:***@db.internal:5432/certs");
            let shown = format!("{c:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(url.expose().contains("hunter2"));
        } else {
            let err = c.unwrap_err();
            assert!(err.to_string().contains("`postgres` feature"), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        if cfg!(feature = "mysql") {
            let c = Config::from_vars([(
                Setting::CertificatesDatabaseUrl.name(),
                "mariadb://root@db/certs",
            )])
            .unwrap();
            assert_eq!(
                c.storage().database_url().unwrap().kind(),
                DatabaseKind::MySql
            );
        }
    }

    #[test]
    fn smtp_settings_read_the_reference_names_and_hide_the_password() {
        let config = Config::from_vars([
            (Setting::SecurityEmail.name(), "Ops@Example.com"),
            (Setting::SmtpHost.name(), "smtp.example.com"),
            (Setting::SmtpPort.name(), "465"),
            (Setting::SmtpSecure.name(), "ssl"),
            (Setting::SmtpUsername.name(), "mailer"),
            (Setting::SmtpPassword.name(), " s3cret-smtp-password "),
            (Setting::SystemEmailName.name(), "Example Ops"),
        ])
        .unwrap();
        let smtp = config.email().smtp().unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port), ("smtp.example.com", 465));
        assert_eq!(smtp.security, SmtpSecurity::Tls);
        assert_eq!(smtp.to, "ops@example.com");
        // The sender defaults to the security address.
        assert_eq!(smtp.from_address, "ops@example.com");
        assert_eq!(smtp.from_name, "Example Ops");
        assert_eq!(
            smtp.password.as_deref().map(String::as_str),
            Some(" s3cret-smtp-password ")
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");

        let none = Config::from_vars([(Setting::SmtpPort.name(), "587")]).unwrap();
        assert!(none.email().smtp().is_none());

        for (vars, setting) in [
            (
                vec![(Setting::SmtpHost.name(), "smtp.example.com")],
                Setting::SecurityEmail.name(),
            ),
            (
                vec![
                    (Setting::SmtpHost.name(), "h"),
                    (Setting::SmtpPort.name(), "0"),
                ],
                Setting::SmtpPort.name(),
            ),
            (
                vec![
                    (Setting::SmtpHost.name(), "h"),
                    (Setting::SmtpPort.name(), "70000"),
                ],
                Setting::SmtpPort.name(),
            ),
            (
                vec![
                    (Setting::SmtpHost.name(), "h"),
                    (Setting::SmtpSecure.name(), "yes"),
                ],
                Setting::SmtpSecure.name(),
            ),
            (
                vec![
                    (Setting::SecurityEmail.name(), "ops@example.com"),
                    (Setting::SmtpHost.name(), "h"),
                    (Setting::SystemEmailAddress.name(), "not an address"),
                ],
                Setting::SystemEmailAddress.name(),
            ),
        ] {
            match Config::from_vars(vars.clone()) {
                Err(Error::Config { name, .. }) => assert_eq!(name, setting, "{vars:?}"),
                other => panic!("{vars:?}: {other:?}"),
            }
        }
    }
}
