//! The names of certkeeper's environment variables: [`Setting`], the only
//! place they are spelled.

use std::fmt;

/// Every `_APP_*` environment variable certkeeper reads, one variant each.
///
/// [`Config::from_env`](crate::Config::from_env) reads them; an
/// [`Error::Config`](crate::Error::Config) raised while reading them names the
/// variable ([`name`](Self::name)), so a server configured by its
/// environment is told which variable to fix. A server configured in code is
/// told the builder method instead.
///
/// ```
/// use certkeeper::config::Setting;
///
/// assert_eq!(Setting::Domain.name(), "_APP_DOMAIN");
/// assert_eq!(Setting::from_name("_APP_ACME_PROFILE"), Some(Setting::AcmeProfile));
/// assert_eq!(Setting::openssl_key(2), "_APP_OPENSSL_KEY_V2");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// `production` or `development` (self-signed certificates for every
    /// name, weak keys allowed with a warning); anything else is an error.
    /// Default `production`.
    Env,
    /// The main domain; unset or `localhost`: the first domain seen becomes
    /// the main domain. Default unset.
    Domain,
    /// The ACME account's contact address, required to issue from an ACME
    /// CA, and the recipient of emailed notices. Default unset.
    SecurityEmail,
    /// Seconds between maintenance cycles. Default `86400`.
    MaintenanceInterval,
    /// The encryption keys, one variable per version: this prefix followed by
    /// the version (`_APP_OPENSSL_KEY_V1`, `_V2` ..., see
    /// [`openssl_key`](Self::openssl_key)); the highest version seals, all
    /// open. Default none.
    OpensslKey,
    /// The console IP/CIDR whitelist, comma separated. Default empty.
    ConsoleWhitelistIps,
    /// The console email whitelist (`a@b.c`, `*@b.c`), comma separated.
    /// Default empty.
    ConsoleWhitelistEmails,
    /// Only the first user may sign up (`enabled` or `disabled`). Default
    /// `enabled`.
    ConsoleWhitelistRoot,
    /// Proxies (addresses, CIDRs) whose `X-Forwarded-For` is believed.
    /// Default empty.
    ConsoleTrustedProxies,
    /// The ACME CA's directory, an `https://` URL. Default Let's Encrypt
    /// production.
    AcmeDirectoryUrl,
    /// A PEM file of a root to trust for the CA's own HTTPS, instead of the
    /// system roots. Default unset.
    AcmeCaRoot,
    /// Seconds any single call to the CA may take. Default `30`.
    AcmeTimeout,
    /// Where the HTTP-01 listener binds; `off` when the embedding server
    /// answers challenges itself. Default `[::]:80`.
    AcmeChallengeAddress,
    /// The certificate profile to order, one the CA's directory lists.
    /// Default unset (the CA's default).
    AcmeProfile,
    /// The certificate profile to order for an IP address (Let's Encrypt
    /// issues those under `shortlived` only). Default unset (the
    /// [`AcmeProfile`](Self::AcmeProfile)).
    AcmeIpProfile,
    /// The certificate key type, `ecdsa-p256` or `ecdsa-p384`. Default
    /// `ecdsa-p256`.
    AcmeKeyType,
    /// The external account binding's key id (with
    /// [`AcmeEabHmacKey`](Self::AcmeEabHmacKey)). Default unset.
    AcmeEabKid,
    /// The external account binding's base64url HMAC key (with
    /// [`AcmeEabKid`](Self::AcmeEabKid)); never logged. Default unset.
    AcmeEabHmacKey,
    /// New orders per ACME account per 3 hours (the CA's limit). Default
    /// `300`.
    AcmeOrderBudget,
    /// Failed validations per name per hour before the name waits (the CA's
    /// limit). Default `5`.
    AcmeFailedValidationBudget,
    /// New certificates per registered domain per 7 days (the CA's limit;
    /// renewals are exempt). Default `50`.
    AcmeRegisteredDomainBudget,
    /// Certificates for one same set of names per 7 days (the CA's limit;
    /// renewals sent with `replaces` are exempt). Default `5`.
    AcmeDuplicateBudget,
    /// The folder of the default file store. Default `./certificates`.
    CertificatesPath,
    /// Certificates issued at once in a cycle. Default `8`.
    CertificatesConcurrency,
    /// A PostgreSQL or MariaDB URL: the store a cluster shares, instead of
    /// the file store. Default unset.
    CertificatesDatabaseUrl,
    /// Seconds any single call to the shared database may take, its
    /// retries included; past it the call ends with a store error (a
    /// silent network never hangs a cycle). Default `10`.
    CertificatesDatabaseTimeout,
    /// The SMTP server notices are emailed through; unset: no email.
    /// Default unset.
    SmtpHost,
    /// The SMTP server's port. Default `25`.
    SmtpPort,
    /// Empty (no TLS), `tls` (STARTTLS, required) or `ssl` (TLS from the
    /// start). Default empty.
    SmtpSecure,
    /// The SMTP sign-in name. Default unset.
    SmtpUsername,
    /// The SMTP password; never logged or shown. Default unset.
    SmtpPassword,
    /// A PEM file of the roots to trust for the SMTP server's TLS, instead
    /// of the system's. Default unset.
    SmtpCaRoot,
    /// The sender of notices. Default the security address.
    SystemEmailAddress,
    /// The sender's name. Default `certkeeper`.
    SystemEmailName,
    /// The authoritative DNS server (`192.0.2.53` or `192.0.2.53:53`) that
    /// takes RFC 2136 updates; setting it turns DNS-01 on. Default unset.
    Dns01Server,
    /// The zone the `_acme-challenge` records go to; required with the
    /// server. Default unset.
    Dns01Zone,
    /// The name of the TSIG key that signs the updates; required with the
    /// server. Default unset.
    Dns01TsigKeyName,
    /// That key's secret, base64; required with the server; never logged.
    /// Default unset.
    Dns01TsigSecret,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`. Default `hmac-sha256`.
    Dns01TsigAlgorithm,
    /// Seconds a DNS-01 record gets to be visible at the server before the
    /// attempt fails. Default `120`.
    Dns01PropagationTimeout,
    /// How DNS-01 records are published: `rfc2136`
    /// (the default) or a DNS provider's API (`cloudflare`, `route53` ...;
    /// feature `dns-providers`).
    Dns01Provider,
    /// The provider's API token (the consumer key for
    /// OVH, the API key for PowerDNS); never shown.
    Dns01Token,
    /// The provider's key id (Route 53's access key
    /// id, OVH's application key, GoDaddy's and Porkbun's API key,
    /// DNSimple's account id).
    Dns01KeyId,
    /// The secret of that key (Route 53's secret
    /// access key ...); never shown.
    Dns01Secret,
    /// The provider's API address (PowerDNS's URL,
    /// Route 53's endpoint, OVH's API name).
    Dns01ApiUrl,
    /// The DNS server asked for each name's zone,
    /// CNAME and name servers.
    Dns01Resolver,
    /// The DNS servers a DNS-01 record must be answered by before the CA
    /// is told, comma separated. Default: the RFC 2136 server, or the
    /// zone's name servers.
    Dns01Nameservers,
}

impl Setting {
    /// The prefix every certkeeper variable starts with.
    pub const PREFIX: &'static str = "_APP_";

    /// Every setting, in the order of the table in [`crate::config`].
    pub const fn all() -> &'static [Setting] {
        use Setting::*;
        &[
            Env,
            Domain,
            SecurityEmail,
            MaintenanceInterval,
            OpensslKey,
            ConsoleWhitelistIps,
            ConsoleWhitelistEmails,
            ConsoleWhitelistRoot,
            ConsoleTrustedProxies,
            AcmeDirectoryUrl,
            AcmeCaRoot,
            AcmeTimeout,
            AcmeChallengeAddress,
            AcmeProfile,
            AcmeIpProfile,
            AcmeKeyType,
            AcmeEabKid,
            AcmeEabHmacKey,
            AcmeOrderBudget,
            AcmeFailedValidationBudget,
            AcmeRegisteredDomainBudget,
            AcmeDuplicateBudget,
            CertificatesPath,
            CertificatesConcurrency,
            CertificatesDatabaseUrl,
            CertificatesDatabaseTimeout,
            SmtpHost,
            SmtpPort,
            SmtpSecure,
            SmtpUsername,
            SmtpPassword,
            SmtpCaRoot,
            SystemEmailAddress,
            SystemEmailName,
            Dns01Server,
            Dns01Zone,
            Dns01TsigKeyName,
            Dns01TsigSecret,
            Dns01TsigAlgorithm,
            Dns01PropagationTimeout,
            Dns01Provider,
            Dns01Token,
            Dns01KeyId,
            Dns01Secret,
            Dns01ApiUrl,
            Dns01Resolver,
            Dns01Nameservers,
        ]
    }

    /// The environment variable. For [`OpensslKey`](Self::OpensslKey), the
    /// prefix the version follows (`_APP_OPENSSL_KEY_V`).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Env => "_APP_ENV",
            Self::Domain => "_APP_DOMAIN",
            Self::SecurityEmail => "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS",
            Self::MaintenanceInterval => "_APP_MAINTENANCE_INTERVAL",
            Self::OpensslKey => "_APP_OPENSSL_KEY_V",
            Self::ConsoleWhitelistIps => "_APP_CONSOLE_WHITELIST_IPS",
            Self::ConsoleWhitelistEmails => "_APP_CONSOLE_WHITELIST_EMAILS",
            Self::ConsoleWhitelistRoot => "_APP_CONSOLE_WHITELIST_ROOT",
            Self::ConsoleTrustedProxies => "_APP_CONSOLE_TRUSTED_PROXIES",
            Self::AcmeDirectoryUrl => "_APP_ACME_DIRECTORY_URL",
            Self::AcmeCaRoot => "_APP_ACME_CA_ROOT",
            Self::AcmeTimeout => "_APP_ACME_TIMEOUT",
            Self::AcmeChallengeAddress => "_APP_ACME_CHALLENGE_ADDRESS",
            Self::AcmeProfile => "_APP_ACME_PROFILE",
            Self::AcmeIpProfile => "_APP_ACME_IP_PROFILE",
            Self::AcmeKeyType => "_APP_ACME_KEY_TYPE",
            Self::AcmeEabKid => "_APP_ACME_EAB_KID",
            Self::AcmeEabHmacKey => "_APP_ACME_EAB_HMAC_KEY",
            Self::AcmeOrderBudget => "_APP_ACME_ORDER_BUDGET",
            Self::AcmeFailedValidationBudget => "_APP_ACME_FAILED_VALIDATION_BUDGET",
            Self::AcmeRegisteredDomainBudget => "_APP_ACME_REGISTERED_DOMAIN_BUDGET",
            Self::AcmeDuplicateBudget => "_APP_ACME_DUPLICATE_BUDGET",
            Self::CertificatesPath => "_APP_CERTIFICATES_PATH",
            Self::CertificatesConcurrency => "_APP_CERTIFICATES_CONCURRENCY",
            Self::CertificatesDatabaseUrl => "_APP_CERTIFICATES_DATABASE_URL",
            Self::CertificatesDatabaseTimeout => "_APP_CERTIFICATES_DATABASE_TIMEOUT",
            Self::SmtpHost => "_APP_SMTP_HOST",
            Self::SmtpPort => "_APP_SMTP_PORT",
            Self::SmtpSecure => "_APP_SMTP_SECURE",
            Self::SmtpUsername => "_APP_SMTP_USERNAME",
            Self::SmtpPassword => "_APP_SMTP_PASSWORD",
            Self::SmtpCaRoot => "_APP_SMTP_CA_ROOT",
            Self::SystemEmailAddress => "_APP_SYSTEM_EMAIL_ADDRESS",
            Self::SystemEmailName => "_APP_SYSTEM_EMAIL_NAME",
            Self::Dns01Server => "_APP_DNS01_SERVER",
            Self::Dns01Zone => "_APP_DNS01_ZONE",
            Self::Dns01TsigKeyName => "_APP_DNS01_TSIG_KEY_NAME",
            Self::Dns01TsigSecret => "_APP_DNS01_TSIG_SECRET",
            Self::Dns01TsigAlgorithm => "_APP_DNS01_TSIG_ALGORITHM",
            Self::Dns01PropagationTimeout => "_APP_DNS01_PROPAGATION_TIMEOUT",
            Self::Dns01Provider => "_APP_DNS01_PROVIDER",
            Self::Dns01Token => "_APP_DNS01_TOKEN",
            Self::Dns01KeyId => "_APP_DNS01_KEY_ID",
            Self::Dns01Secret => "_APP_DNS01_SECRET",
            Self::Dns01ApiUrl => "_APP_DNS01_API_URL",
            Self::Dns01Resolver => "_APP_DNS01_RESOLVER",
            Self::Dns01Nameservers => "_APP_DNS01_NAMESERVERS",
        }
    }

    /// The setting a variable name stands for; `None` for an unknown name
    /// and for the key variables (see [`crate::cipher::key_variable_version`]).
    pub fn from_name(name: &str) -> Option<Setting> {
        Self::all()
            .iter()
            .copied()
            .find(|s| *s != Self::OpensslKey && s.name() == name)
    }

    /// The variable of the encryption key of `version`: `_APP_OPENSSL_KEY_V1` ...
    pub fn openssl_key(version: u32) -> String {
        format!("{}{version}", Self::OpensslKey.name())
    }
}

impl fmt::Display for Setting {
    /// The variable's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an error names a setting: by the builder method the caller used
/// (the default), or by its environment variable when the value came from
/// the environment ([`Config::from_env`](crate::Config::from_env) and what
/// [`Embedded`](crate::Embedded) builds from it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Naming {
    /// Name the builder method (`AcmeIssuerBuilder::profile`).
    #[default]
    Builder,
    /// Name the environment variable (`_APP_ACME_PROFILE`).
    Environment,
}

impl Naming {
    /// The name of `setting`, set through `method` in code.
    pub(crate) fn of(self, setting: Setting, method: &'static str) -> &'static str {
        match self {
            Self::Builder => method,
            Self::Environment => setting.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut seen = HashSet::new();
        for setting in Setting::all() {
            let name = setting.name();
            assert!(name.starts_with(Setting::PREFIX), "{name}");
            assert!(name.len() > Setting::PREFIX.len(), "{name}");
            assert!(seen.insert(name), "{name} named twice");
            assert_eq!(setting.to_string(), name);
        }
        assert_eq!(seen.len(), Setting::all().len());
    }

    #[test]
    fn naming_picks_the_method_or_the_variable() {
        let method = "AcmeIssuerBuilder::profile";
        assert_eq!(Naming::default().of(Setting::AcmeProfile, method), method);
        assert_eq!(
            Naming::Environment.of(Setting::AcmeProfile, method),
            Setting::AcmeProfile.name()
        );
    }

    #[test]
    fn from_name_reverses_name() {
        for setting in Setting::all() {
            let found = Setting::from_name(setting.name());
            if *setting == Setting::OpensslKey {
                assert_eq!(found, None);
            } else {
                assert_eq!(found, Some(*setting));
            }
        }
        assert_eq!(Setting::from_name("_APP_NOT_A_SETTING"), None);
        assert_eq!(Setting::from_name(&Setting::openssl_key(1)), None);
    }

    /// No other file under src/ spells a variable: they all go through
    /// [`Setting`].
    #[test]
    fn only_this_file_spells_the_variables() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let this = src.join("config").join("setting.rs");
        let needle = format!("\"{}", Setting::PREFIX);
        let mut stack = vec![src];
        let mut offenders = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && path != this {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        if line.contains(&needle) {
                            offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "spell these through Setting:\n{}",
            offenders.join("\n")
        );
    }
}
