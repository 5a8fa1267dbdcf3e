//! Settings, from the environment (the reference platform's variable names)
//! or from code.
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
//! | `_APP_CERTIFICATES_PATH` | `./certificates` | the folder of the default file store |
//! | `_APP_CERTIFICATES_CONCURRENCY` | `8` | certificates issued at once in a cycle |

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::access::{ConsoleAccessPolicy, TrustedProxies, TRUSTED_PROXIES_VAR};
use crate::{Domain, Error, Result};

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The prefix of the versioned encryption key variables.
pub const OPENSSL_KEY_PREFIX: &str = "_APP_OPENSSL_KEY_V";

/// Every certkeeper setting. Build it with [`Config::from_env`],
/// [`Config::from_vars`] or [`Config::builder`].
///
/// `Debug` shows which key versions are set, never the keys.
#[derive(Clone)]
pub struct Config {
    /// Production mode (`_APP_ENV=production`, the default).
    pub production: bool,
    /// The main domain (`_APP_DOMAIN`).
    pub main_domain: Option<Domain>,
    /// The ACME contact address (`_APP_SYSTEM_SECURITY_EMAIL_ADDRESS`).
    pub security_email: Option<String>,
    /// Time between maintenance cycles (`_APP_MAINTENANCE_INTERVAL`).
    pub maintenance_interval: Duration,
    /// Encryption keys by version (`_APP_OPENSSL_KEY_V1` ...).
    pub openssl_keys: BTreeMap<u32, Zeroizing<String>>,
    /// `_APP_CONSOLE_WHITELIST_IPS`, as given.
    pub console_whitelist_ips: String,
    /// `_APP_CONSOLE_WHITELIST_EMAILS`, as given.
    pub console_whitelist_emails: String,
    /// `_APP_CONSOLE_WHITELIST_ROOT`, as given (default `enabled`).
    pub console_whitelist_root: String,
    /// `_APP_CONSOLE_TRUSTED_PROXIES`, as given.
    pub console_trusted_proxies: String,
    /// The ACME directory (`_APP_ACME_DIRECTORY_URL`).
    pub acme_directory_url: String,
    /// A root certificate to trust for the CA's HTTPS (`_APP_ACME_CA_ROOT`).
    pub acme_ca_root: Option<PathBuf>,
    /// Limit on any single call to the CA (`_APP_ACME_TIMEOUT`).
    pub acme_timeout: Duration,
    /// Where the HTTP-01 listener binds; `None` when off (`_APP_ACME_CHALLENGE_ADDRESS`).
    pub challenge_address: Option<SocketAddr>,
    /// The file store's folder (`_APP_CERTIFICATES_PATH`).
    pub store_path: PathBuf,
    /// Certificates issued at once (`_APP_CERTIFICATES_CONCURRENCY`).
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            production: true,
            main_domain: None,
            security_email: None,
            maintenance_interval: Duration::from_secs(86_400),
            openssl_keys: BTreeMap::new(),
            console_whitelist_ips: String::new(),
            console_whitelist_emails: String::new(),
            console_whitelist_root: "enabled".into(),
            console_trusted_proxies: String::new(),
            acme_directory_url: LETS_ENCRYPT_DIRECTORY.into(),
            acme_ca_root: None,
            acme_timeout: Duration::from_secs(30),
            challenge_address: Some(SocketAddr::from(([0u16; 8], 80))),
            store_path: PathBuf::from("./certificates"),
            concurrency: 8,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("production", &self.production)
            .field("main_domain", &self.main_domain)
            .field("security_email", &self.security_email)
            .field("maintenance_interval", &self.maintenance_interval)
            .field(
                "openssl_key_versions",
                &self.openssl_keys.keys().collect::<Vec<_>>(),
            )
            .field("console_whitelist_ips", &self.console_whitelist_ips)
            .field("console_whitelist_emails", &self.console_whitelist_emails)
            .field("console_whitelist_root", &self.console_whitelist_root)
            .field("console_trusted_proxies", &self.console_trusted_proxies)
            .field("acme_directory_url", &self.acme_directory_url)
            .field("acme_ca_root", &self.acme_ca_root)
            .field("acme_timeout", &self.acme_timeout)
            .field("challenge_address", &self.challenge_address)
            .field("store_path", &self.store_path)
            .field("concurrency", &self.concurrency)
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
            if !name.starts_with("_APP_") {
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
        let mut config = Self::default();
        for (name, value) in vars {
            let (name, value) = (name.into(), Zeroizing::new(value.into()));
            if let Some(version) = name.strip_prefix(OPENSSL_KEY_PREFIX) {
                // Digits only, no leading zero: V01 and V1 must never both
                // name version 1 and silently replace one another.
                let version: u32 = Some(version)
                    .filter(|v| v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0'))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        Error::config(
                            &name,
                            "key variables are numbered V1, V2 ... (no leading zeros)",
                        )
                    })?;
                // An empty key is kept so the keyring can refuse it by name.
                if config.openssl_keys.insert(version, value).is_some() {
                    return Err(Error::config(&name, "set twice"));
                }
                continue;
            }
            let v = value.trim();
            if v.is_empty() {
                continue;
            }
            match name.as_str() {
                "_APP_ENV" => {
                    config.production = if v.eq_ignore_ascii_case("production") {
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
                "_APP_DOMAIN" => {
                    config.main_domain =
                        Some(Domain::new(v).map_err(|e| Error::config(&name, e.to_string()))?);
                }
                "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS" => {
                    config.security_email = Some(parse_email(&name, v)?);
                }
                "_APP_MAINTENANCE_INTERVAL" => {
                    config.maintenance_interval = Duration::from_secs(parse_positive(&name, v)?);
                }
                "_APP_CONSOLE_WHITELIST_IPS" => config.console_whitelist_ips = v.to_string(),
                "_APP_CONSOLE_WHITELIST_EMAILS" => config.console_whitelist_emails = v.to_string(),
                "_APP_CONSOLE_WHITELIST_ROOT" => config.console_whitelist_root = v.to_string(),
                "_APP_CONSOLE_TRUSTED_PROXIES" => config.console_trusted_proxies = v.to_string(),
                "_APP_ACME_DIRECTORY_URL" => config.acme_directory_url = parse_url(&name, v)?,
                "_APP_ACME_CA_ROOT" => config.acme_ca_root = Some(PathBuf::from(v)),
                "_APP_ACME_TIMEOUT" => {
                    config.acme_timeout = Duration::from_secs(parse_positive(&name, v)?)
                }
                "_APP_ACME_CHALLENGE_ADDRESS" => {
                    config.challenge_address = if v.eq_ignore_ascii_case("off") {
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
                "_APP_CERTIFICATES_PATH" => config.store_path = PathBuf::from(v),
                "_APP_CERTIFICATES_CONCURRENCY" => {
                    config.concurrency =
                        usize::try_from(parse_positive(&name, v)?).unwrap_or(usize::MAX);
                }
                _ => {}
            }
        }
        // A bad whitelist or proxy entry stops start-up here, naming the variable.
        config.console_access_policy()?;
        Ok(config)
    }

    /// The proxies whose `X-Forwarded-For` is believed (`_APP_CONSOLE_TRUSTED_PROXIES`).
    pub fn trusted_proxies(&self) -> Result<TrustedProxies> {
        TrustedProxies::parse(TRUSTED_PROXIES_VAR, &self.console_trusted_proxies)
    }

    /// The console access policy from the `_APP_CONSOLE_WHITELIST_*` settings.
    ///
    /// It knows the trusted proxies, so a client address that is one of them
    /// never passes the IP whitelist.
    pub fn console_access_policy(&self) -> Result<ConsoleAccessPolicy> {
        Ok(ConsoleAccessPolicy::from_values(
            &self.console_whitelist_ips,
            &self.console_whitelist_emails,
            &self.console_whitelist_root,
        )?
        .with_trusted_proxies(self.trusted_proxies()?))
    }

    /// A typed builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Self::default())
    }
}

fn parse_positive(name: &str, v: &str) -> Result<u64> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::config(name, format!("{v:?} is not a positive whole number")))
}

fn parse_url(name: &str, v: &str) -> Result<String> {
    if (v.starts_with("https://") || v.starts_with("http://"))
        && v.len() > "https://".len()
        && !v.contains(char::is_whitespace)
    {
        Ok(v.to_string())
    } else {
        Err(Error::config(name, format!("{v:?} is not an http(s) URL")))
    }
}

/// Checks a plain `local@domain` address, as an ACME CA will.
pub fn parse_email(name: &str, v: &str) -> Result<String> {
    let bad = || Error::config(name, format!("{v:?} is not a valid email address"));
    let (local, domain) = v.rsplit_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            // A conservative set: every CA accepts it in a mailto: contact.
            .all(|c| c.is_ascii_alphanumeric() || "+-_.".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain = Domain::new(domain).map_err(|_| bad())?;
    if !local_ok || domain.ip().is_some() || !domain.as_str().contains('.') {
        return Err(bad());
    }
    Ok(format!("{local}@{domain}"))
}

/// Builds a [`Config`] in code.
#[derive(Debug, Clone)]
pub struct ConfigBuilder(Config);

impl ConfigBuilder {
    /// Production (`true`, the default) or development mode.
    pub fn production(mut self, production: bool) -> Self {
        self.0.production = production;
        self
    }

    /// The main domain.
    pub fn main_domain(mut self, domain: Domain) -> Self {
        self.0.main_domain = Some(domain);
        self
    }

    /// The ACME contact address; checked when the config is built.
    pub fn security_email(mut self, email: impl Into<String>) -> Self {
        self.0.security_email = Some(email.into());
        self
    }

    /// Time between maintenance cycles.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.0.maintenance_interval = interval;
        self
    }

    /// Adds the encryption key of `version` (1, 2 ...).
    pub fn openssl_key(mut self, version: u32, key: impl Into<String>) -> Self {
        self.0
            .openssl_keys
            .insert(version, Zeroizing::new(key.into()));
        self
    }

    /// The console whitelists, as the environment variables would give them.
    pub fn console_whitelists(mut self, ips: &str, emails: &str, root: &str) -> Self {
        self.0.console_whitelist_ips = ips.into();
        self.0.console_whitelist_emails = emails.into();
        self.0.console_whitelist_root = root.into();
        self
    }

    /// The proxies whose `X-Forwarded-For` is believed, as the environment
    /// variable would give them.
    pub fn console_trusted_proxies(mut self, proxies: &str) -> Self {
        self.0.console_trusted_proxies = proxies.into();
        self
    }

    /// The ACME directory URL.
    pub fn acme_directory_url(mut self, url: impl Into<String>) -> Self {
        self.0.acme_directory_url = url.into();
        self
    }

    /// A root to trust for the CA's HTTPS, as a PEM file.
    pub fn acme_ca_root(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.acme_ca_root = Some(path.into());
        self
    }

    /// Limit on any single call to the CA.
    pub fn acme_timeout(mut self, timeout: Duration) -> Self {
        self.0.acme_timeout = timeout;
        self
    }

    /// Where the HTTP-01 listener binds (`None`: the embedding server answers).
    pub fn challenge_address(mut self, address: Option<SocketAddr>) -> Self {
        self.0.challenge_address = address;
        self
    }

    /// The file store's folder.
    pub fn store_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.store_path = path.into();
        self
    }

    /// Certificates issued at once in a cycle.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.0.concurrency = n;
        self
    }

    /// Checks the settings and returns the config.
    pub fn build(mut self) -> Result<Config> {
        const E: &str = "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS";
        if let Some(email) = &self.0.security_email {
            self.0.security_email = Some(parse_email(E, email)?);
        }
        self.0.acme_directory_url =
            parse_url("_APP_ACME_DIRECTORY_URL", &self.0.acme_directory_url)?;
        if self.0.maintenance_interval.is_zero() {
            return Err(Error::config(
                "_APP_MAINTENANCE_INTERVAL",
                "must be positive",
            ));
        }
        if self.0.acme_timeout.is_zero() {
            return Err(Error::config("_APP_ACME_TIMEOUT", "must be positive"));
        }
        if self.0.concurrency == 0 {
            return Err(Error::config(
                "_APP_CERTIFICATES_CONCURRENCY",
                "must be positive",
            ));
        }
        self.0.console_access_policy()?;
        if self.0.openssl_keys.contains_key(&0) {
            return Err(Error::config(
                "_APP_OPENSSL_KEY_V0",
                "key variables are numbered from V1",
            ));
        }
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_ones() {
        let c = Config::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert!(c.production);
        assert_eq!(c.maintenance_interval, Duration::from_secs(86_400));
        assert_eq!(c.console_whitelist_root, "enabled");
        assert_eq!(c.acme_directory_url, LETS_ENCRYPT_DIRECTORY);
        assert_eq!(c.challenge_address, Some("[::]:80".parse().unwrap()));
        assert!(c.main_domain.is_none());
    }

    #[test]
    fn reads_every_variable() {
        let c = Config::from_vars([
            ("_APP_ENV", "development"),
            ("_APP_DOMAIN", "Console.Example.COM"),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", "certs@example.com"),
            ("_APP_MAINTENANCE_INTERVAL", "3600"),
            ("_APP_OPENSSL_KEY_V1", "first-key-0123456789"),
            ("_APP_OPENSSL_KEY_V2", "second-key-0123456789"),
            ("_APP_CONSOLE_WHITELIST_IPS", "10.0.0.0/8"),
            ("_APP_CONSOLE_WHITELIST_EMAILS", "*@example.com"),
            ("_APP_CONSOLE_WHITELIST_ROOT", "disabled"),
            ("_APP_CONSOLE_TRUSTED_PROXIES", "10.0.0.1, 172.16.0.0/12"),
            ("_APP_ACME_DIRECTORY_URL", "https://localhost:14000/dir"),
            ("_APP_ACME_CA_ROOT", "/tmp/ca.pem"),
            ("_APP_ACME_TIMEOUT", "5"),
            ("_APP_ACME_CHALLENGE_ADDRESS", "off"),
            ("_APP_CERTIFICATES_PATH", "/var/lib/certs"),
            ("_APP_CERTIFICATES_CONCURRENCY", "16"),
            ("PATH", "/usr/bin"),
        ])
        .unwrap();
        assert!(!c.production);
        assert_eq!(
            c.main_domain.as_ref().unwrap().as_str(),
            "console.example.com"
        );
        assert_eq!(c.security_email.as_deref(), Some("certs@example.com"));
        assert_eq!(c.maintenance_interval, Duration::from_secs(3600));
        assert_eq!(
            c.openssl_keys.keys().copied().collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(c.console_whitelist_root, "disabled");
        assert!(c
            .trusted_proxies()
            .unwrap()
            .contains("172.16.4.2".parse().unwrap()));
        assert_eq!(c.acme_timeout, Duration::from_secs(5));
        assert_eq!(c.challenge_address, None);
        assert_eq!(c.store_path, PathBuf::from("/var/lib/certs"));
        assert_eq!(c.concurrency, 16);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("_APP_DOMAIN", "../etc"),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", "not-an-email"),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", "a@localhost"),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", "a?b@example.com"),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", "a%40b@example.com"),
            ("_APP_MAINTENANCE_INTERVAL", "soon"),
            ("_APP_MAINTENANCE_INTERVAL", "0"),
            ("_APP_ACME_DIRECTORY_URL", "ftp://x"),
            ("_APP_ACME_CHALLENGE_ADDRESS", "port 80"),
            ("_APP_OPENSSL_KEY_V0", "x"),
            ("_APP_OPENSSL_KEY_Vx", "x"),
            ("_APP_OPENSSL_KEY_V01", "x"),
            ("_APP_OPENSSL_KEY_V+1", "x"),
            ("_APP_ENV", "prod"),
            ("_APP_CONSOLE_WHITELIST_IPS", "10.0.0.0/8,intranet"),
            ("_APP_CONSOLE_WHITELIST_EMAILS", "not an email"),
            ("_APP_CONSOLE_WHITELIST_ROOT", "maybe"),
            ("_APP_CONSOLE_TRUSTED_PROXIES", "proxy.internal"),
        ] {
            let err = Config::from_vars([(name, value)]).expect_err(name);
            match &err {
                Error::Config { name: n, .. } => assert_eq!(n, name),
                other => panic!("{name}: {other}"),
            }
        }
    }

    #[test]
    fn a_key_version_set_twice_is_an_error() {
        let err = Config::from_vars([
            ("_APP_OPENSSL_KEY_V1", "first-key-0123456789abcdefghijklmno"),
            ("_APP_OPENSSL_KEY_V1", "other-key-0123456789abcdefghijklmno"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("set twice"), "{err}");
    }

    #[test]
    fn debug_never_shows_keys() {
        let c = Config::builder()
            .openssl_key(1, "super-secret-passphrase-1")
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("openssl_key_versions: [1]"));
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
        assert!(!c.production);
    }
}
