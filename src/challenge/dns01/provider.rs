//! DNS providers' HTTP APIs through the `dns-update` crate (feature
//! `dns-providers`): the provider and its credentials, and its failures
//! typed, with every credential kept out of them.

use std::fmt::{self, Debug};
use std::time::Duration;

use dns_update::{DnsRecord, DnsRecordType, DnsUpdater};
use zeroize::Zeroizing;

use super::lookup::{Failure, Target};
use crate::config::{Naming, Setting};
use crate::error::DnsProblem;
use crate::{Error, Result};

/// A credential: kept out of `Debug`, logs and errors, wiped when dropped.
#[derive(Clone)]
struct Secret(Zeroizing<String>);

impl Secret {
    fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into().trim().to_owned()))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The providers, with what each needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cloudflare,
    DigitalOcean,
    Hetzner,
    Desec,
    Gandi,
    Linode,
    Vultr,
    Dnsimple,
    Godaddy,
    Porkbun,
    Route53,
    Ovh,
    Pdns,
}

/// Whether a provider takes a field: required, optional, or not at all.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Required,
    Optional,
    No,
}

use Takes::{No, Optional, Required};

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::Cloudflare,
        Kind::DigitalOcean,
        Kind::Hetzner,
        Kind::Desec,
        Kind::Gandi,
        Kind::Linode,
        Kind::Vultr,
        Kind::Dnsimple,
        Kind::Godaddy,
        Kind::Porkbun,
        Kind::Route53,
        Kind::Ovh,
        Kind::Pdns,
    ];

    /// The name `_APP_DNS01_PROVIDER` takes.
    fn name(self) -> &'static str {
        match self {
            Kind::Cloudflare => "cloudflare",
            Kind::DigitalOcean => "digitalocean",
            Kind::Hetzner => "hetzner",
            Kind::Desec => "desec",
            Kind::Gandi => "gandi",
            Kind::Linode => "linode",
            Kind::Vultr => "vultr",
            Kind::Dnsimple => "dnsimple",
            Kind::Godaddy => "godaddy",
            Kind::Porkbun => "porkbun",
            Kind::Route53 => "route53",
            Kind::Ovh => "ovh",
            Kind::Pdns => "pdns",
        }
    }

    /// The constructor, named in the errors of a provider made in code.
    fn method(self) -> &'static str {
        match self {
            Kind::Cloudflare => "DnsProvider::cloudflare",
            Kind::DigitalOcean => "DnsProvider::digitalocean",
            Kind::Hetzner => "DnsProvider::hetzner",
            Kind::Desec => "DnsProvider::desec",
            Kind::Gandi => "DnsProvider::gandi",
            Kind::Linode => "DnsProvider::linode",
            Kind::Vultr => "DnsProvider::vultr",
            Kind::Dnsimple => "DnsProvider::dnsimple",
            Kind::Godaddy => "DnsProvider::godaddy",
            Kind::Porkbun => "DnsProvider::porkbun",
            Kind::Route53 => "DnsProvider::route53",
            Kind::Ovh => "DnsProvider::ovh",
            Kind::Pdns => "DnsProvider::pdns",
        }
    }

    /// What it takes of `_APP_DNS01_TOKEN`, `_KEY_ID`, `_SECRET` and `_API_URL`.
    /// Whether the key id is no secret: DNSimple's account id and AWS's
    /// access key id name the account or key; GoDaddy's and Porkbun's API
    /// key and OVH's application key are half of the credential.
    fn key_id_is_public(self) -> bool {
        matches!(self, Kind::Dnsimple | Kind::Route53)
    }

    fn takes(self) -> [Takes; 4] {
        match self {
            Kind::Cloudflare
            | Kind::DigitalOcean
            | Kind::Hetzner
            | Kind::Desec
            | Kind::Gandi
            | Kind::Linode
            | Kind::Vultr => [Required, No, No, No],
            Kind::Dnsimple => [Required, Required, No, No],
            Kind::Godaddy | Kind::Porkbun => [No, Required, Required, No],
            Kind::Route53 => [No, Required, Required, Optional],
            Kind::Ovh => [Required, Required, Required, Optional],
            Kind::Pdns => [Required, No, No, Required],
        }
    }
}

/// The requests one update may make: find the zone, read the values at the
/// name, write them, and one retry.
const REQUESTS_PER_UPDATE: u32 = 4;

/// The settings of the four fields, in [`Kind::takes`]'s order.
const FIELDS: [Setting; 4] = [
    Setting::Dns01Token,
    Setting::Dns01KeyId,
    Setting::Dns01Secret,
    Setting::Dns01ApiUrl,
];

/// A DNS provider's HTTP API that the DNS-01 solver publishes its TXT
/// records through (feature `dns-providers`, over the `dns-update` crate),
/// with its credentials; give it to [`Dns01Solver::provider`](super::Dns01Solver::provider).
///
/// | provider | constructor | `_APP_DNS01_PROVIDER` |
/// | --- | --- | --- |
/// | Cloudflare | [`cloudflare(token)`](Self::cloudflare) | `cloudflare` |
/// | DigitalOcean | [`digitalocean(token)`](Self::digitalocean) | `digitalocean` |
/// | Hetzner | [`hetzner(token)`](Self::hetzner) | `hetzner` |
/// | deSEC | [`desec(token)`](Self::desec) | `desec` |
/// | Gandi LiveDNS | [`gandi(token)`](Self::gandi) | `gandi` |
/// | Linode (Akamai) | [`linode(token)`](Self::linode) | `linode` |
/// | Vultr | [`vultr(api_key)`](Self::vultr) | `vultr` |
/// | DNSimple | [`dnsimple(token, account_id)`](Self::dnsimple) | `dnsimple` |
/// | GoDaddy | [`godaddy(key, secret)`](Self::godaddy) | `godaddy` |
/// | Porkbun | [`porkbun(api_key, secret_api_key)`](Self::porkbun) | `porkbun` |
/// | Amazon Route 53 | [`route53(access_key_id, secret_access_key)`](Self::route53) | `route53` |
/// | OVH | [`ovh(application_key, application_secret, consumer_key)`](Self::ovh) | `ovh` |
/// | PowerDNS Authoritative | [`pdns(api_url, api_key)`](Self::pdns) | `pdns` |
///
/// No credential appears in its `Debug` output, in a log line or in an
/// error: the provider's own messages are shown with every credential
/// replaced by `[redacted]`.
#[derive(Clone)]
pub struct DnsProvider {
    kind: Kind,
    token: Option<Secret>,
    /// Half of the credential for GoDaddy, Porkbun and OVH: kept as a
    /// secret, shown only where [`Kind::key_id_is_public`].
    key_id: Option<Secret>,
    secret: Option<Secret>,
    api_url: Option<String>,
}

impl DnsProvider {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            token: None,
            key_id: None,
            secret: None,
            api_url: None,
        }
    }

    fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token));
        self
    }

    fn with_key(mut self, key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.key_id = Some(Secret::new(key_id));
        self.secret = Some(Secret::new(secret));
        self
    }

    /// Cloudflare, with an API token allowed `Zone:DNS:Edit` on the zones.
    pub fn cloudflare(token: impl Into<String>) -> Self {
        Self::new(Kind::Cloudflare).with_token(token)
    }

    /// DigitalOcean, with a personal access token (scope `domain`).
    pub fn digitalocean(token: impl Into<String>) -> Self {
        Self::new(Kind::DigitalOcean).with_token(token)
    }

    /// Hetzner (the Cloud API's DNS), with an API token.
    pub fn hetzner(token: impl Into<String>) -> Self {
        Self::new(Kind::Hetzner).with_token(token)
    }

    /// deSEC, with a token.
    pub fn desec(token: impl Into<String>) -> Self {
        Self::new(Kind::Desec).with_token(token)
    }

    /// Gandi LiveDNS, with a personal access token.
    pub fn gandi(token: impl Into<String>) -> Self {
        Self::new(Kind::Gandi).with_token(token)
    }

    /// Linode (Akamai), with a personal access token (`Domains` read/write).
    pub fn linode(token: impl Into<String>) -> Self {
        Self::new(Kind::Linode).with_token(token)
    }

    /// Vultr, with an API key.
    pub fn vultr(api_key: impl Into<String>) -> Self {
        Self::new(Kind::Vultr).with_token(api_key)
    }

    /// DNSimple, with an API token and the account's id.
    pub fn dnsimple(token: impl Into<String>, account_id: impl Into<String>) -> Self {
        let mut provider = Self::new(Kind::Dnsimple).with_token(token);
        provider.key_id = Some(Secret::new(account_id));
        provider
    }

    /// GoDaddy, with an API key and its secret.
    pub fn godaddy(key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::new(Kind::Godaddy).with_key(key, secret)
    }

    /// Porkbun, with an API key and its secret API key.
    pub fn porkbun(api_key: impl Into<String>, secret_api_key: impl Into<String>) -> Self {
        Self::new(Kind::Porkbun).with_key(api_key, secret_api_key)
    }

    /// Amazon Route 53, with an IAM access key allowed
    /// `route53:ListHostedZonesByName`, `route53:ListResourceRecordSets`
    /// and `route53:ChangeResourceRecordSets`.
    pub fn route53(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self::new(Kind::Route53).with_key(access_key_id, secret_access_key)
    }

    /// OVH, with an application key, its secret and a consumer key; the
    /// API is `ovh-eu` unless [`api_url`](Self::api_url) names another
    /// (`ovh-us`, `ovh-ca`, `kimsufi-eu`, `kimsufi-ca`, `soyoustart-eu`,
    /// `soyoustart-ca`).
    pub fn ovh(
        application_key: impl Into<String>,
        application_secret: impl Into<String>,
        consumer_key: impl Into<String>,
    ) -> Self {
        Self::new(Kind::Ovh)
            .with_key(application_key, application_secret)
            .with_token(consumer_key)
    }

    /// PowerDNS Authoritative's HTTP API at `api_url`
    /// (`http://127.0.0.1:8081`, its `webserver-address` and
    /// `webserver-port`), with its `api-key`; the server id is `localhost`.
    pub fn pdns(api_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        let mut provider = Self::new(Kind::Pdns).with_token(api_key);
        provider.api_url = Some(api_url.into().trim().to_owned());
        provider
    }

    /// The API's address, where the provider has more than one: Route 53's
    /// endpoint (`https://route53.amazonaws.com` unless set), OVH's API
    /// name (`ovh-eu` unless set), PowerDNS's URL. Other providers have
    /// one address: setting it fails [`build`](super::Dns01SolverBuilder::build).
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into().trim().to_owned());
        self
    }

    /// The provider's name as `_APP_DNS01_PROVIDER` writes it (`cloudflare` ...).
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The names `_APP_DNS01_PROVIDER` takes besides `rfc2136`.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Kind::ALL.into_iter().map(Kind::name)
    }

    /// The provider read from the `_APP_DNS01_*` settings: `name` (of
    /// `_APP_DNS01_PROVIDER`) and the four fields, each checked against
    /// what the provider takes.
    pub(crate) fn from_settings(
        name: &str,
        token: Option<Zeroizing<String>>,
        key_id: Option<String>,
        secret: Option<Zeroizing<String>>,
        api_url: Option<String>,
    ) -> Result<Self> {
        let lowered = name.trim().to_ascii_lowercase();
        let kind = Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == lowered)
            .ok_or_else(|| {
                Error::config(
                    Setting::Dns01Provider.name(),
                    format!(
                        "{name:?} is not a provider; expected rfc2136, {}",
                        Self::names().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
        let provider = Self {
            kind,
            token: token.map(|t| Secret::new(t.as_str())),
            key_id: key_id.map(Secret::new),
            secret: secret.map(|s| Secret::new(s.as_str())),
            api_url,
        };
        provider.check(Naming::Environment)?;
        Ok(provider)
    }

    fn given(&self) -> [bool; 4] {
        [
            self.token.as_ref().is_some_and(|t| !t.expose().is_empty()),
            self.key_id.as_ref().is_some_and(|k| !k.expose().is_empty()),
            self.secret.as_ref().is_some_and(|s| !s.expose().is_empty()),
            self.api_url.as_ref().is_some_and(|u| !u.is_empty()),
        ]
    }

    /// Each field the provider requires is given, and none it does not take.
    pub(super) fn check(&self, naming: Naming) -> Result<()> {
        let method = self.kind.method();
        for ((takes, given), setting) in self.kind.takes().into_iter().zip(self.given()).zip(FIELDS)
        {
            let name = naming.of(setting, method);
            match (takes, given) {
                (Required, false) => {
                    return Err(Error::config(
                        name,
                        format!("required by the {} provider", self.kind.name()),
                    ))
                }
                (No, true) => {
                    return Err(Error::config(
                        name,
                        format!("not taken by the {} provider", self.kind.name()),
                    ))
                }
                _ => {}
            }
        }
        if self.kind == Kind::Ovh {
            self.ovh_endpoint(naming)?;
        }
        if let (Some(url), Kind::Pdns | Kind::Route53) = (&self.api_url, self.kind) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Error::config(
                    naming.of(Setting::Dns01ApiUrl, "DnsProvider::api_url"),
                    "not an http:// or https:// URL",
                ));
            }
        }
        Ok(())
    }

    fn ovh_endpoint(&self, naming: Naming) -> Result<dns_update::providers::ovh::OvhEndpoint> {
        self.api_url
            .as_deref()
            .unwrap_or("ovh-eu")
            .parse()
            .map_err(|_| {
                Error::config(
                    naming.of(Setting::Dns01ApiUrl, "DnsProvider::api_url"),
                    "expected ovh-eu, ovh-us, ovh-ca, kimsufi-eu, kimsufi-ca, soyoustart-eu or soyoustart-ca",
                )
            })
    }

    /// The settings (or the constructor) an operator fixes when the
    /// provider refuses the credentials.
    pub(super) fn credential_names(&self, naming: Naming) -> String {
        let method = self.kind.method();
        let mut names: Vec<&str> = self
            .kind
            .takes()
            .into_iter()
            .zip(FIELDS)
            .filter(|(takes, setting)| *takes == Required && *setting != Setting::Dns01ApiUrl)
            .map(|(_, setting)| naming.of(setting, method))
            .collect();
        names.dedup();
        names.join(", ")
    }

    /// Where errors say the records went: the API's address or the provider's name.
    pub(super) fn server(&self) -> String {
        match (&self.api_url, self.kind) {
            (Some(url), Kind::Pdns | Kind::Route53) => url.clone(),
            _ => format!("{} API", self.kind.name()),
        }
    }

    /// The `dns-update` client, each request limited to `limit`.
    pub(super) fn updater(&self, naming: Naming, limit: Duration) -> Result<DnsUpdater> {
        self.check(naming)?;
        let token = || self.token.as_ref().map(Secret::expose).unwrap_or_default();
        let key_id = || self.key_id.as_ref().map(Secret::expose).unwrap_or_default();
        let secret = || self.secret.as_ref().map(Secret::expose).unwrap_or_default();
        let timeout = Some(limit);
        let made = match self.kind {
            Kind::Cloudflare => DnsUpdater::new_cloudflare(token(), timeout),
            Kind::DigitalOcean => DnsUpdater::new_digitalocean(token(), timeout),
            Kind::Hetzner => DnsUpdater::new_hetzner(token(), timeout),
            Kind::Desec => DnsUpdater::new_desec(token(), timeout),
            Kind::Gandi => DnsUpdater::new_gandiv5(token(), timeout),
            Kind::Linode => DnsUpdater::new_linode(token(), timeout),
            Kind::Vultr => DnsUpdater::new_vultr(token(), timeout),
            Kind::Dnsimple => DnsUpdater::new_dnsimple(token(), key_id(), timeout),
            Kind::Godaddy => DnsUpdater::new_godaddy(key_id(), secret(), timeout),
            Kind::Porkbun => DnsUpdater::new_porkbun(key_id(), secret(), timeout),
            Kind::Route53 => {
                DnsUpdater::new_route53(dns_update::providers::route53::Route53Config {
                    access_key_id: key_id().to_owned(),
                    secret_access_key: secret().to_owned(),
                    session_token: None,
                    region: None,
                    hosted_zone_id: None,
                    private_zone_only: None,
                    endpoint: self.api_url.clone(),
                })
            }
            Kind::Ovh => DnsUpdater::new_ovh(
                key_id(),
                secret(),
                token(),
                self.ovh_endpoint(naming)?,
                timeout,
            ),
            Kind::Pdns => {
                DnsUpdater::new_pdns(token(), self.api_url.as_deref(), None::<&str>, timeout)
            }
        };
        made.map_err(|e| Error::config(self.kind.method(), self.redact(&format!("{e:?}"))))
    }

    /// Adds `value` beside the TXT values at the target, or removes
    /// exactly that value (`add` false); each request limited to `limit`.
    pub(super) async fn update(
        &self,
        updater: &DnsUpdater,
        target: &Target,
        value: &str,
        ttl: u32,
        add: bool,
        limit: Duration,
    ) -> std::result::Result<(), Failure> {
        let owner = target.owner.to_ascii();
        let zone = target.zone.to_ascii();
        let record = vec![DnsRecord::TXT(value.to_owned())];
        let sent = async {
            if add {
                updater
                    .add_to_rrset(
                        owner.as_str(),
                        DnsRecordType::TXT,
                        ttl,
                        record,
                        zone.as_str(),
                    )
                    .await
            } else {
                updater
                    .remove_from_rrset(owner.as_str(), DnsRecordType::TXT, record, zone.as_str())
                    .await
            }
        };
        // Each request is limited by the client, but Route 53's own client
        // is not: the whole update gets as long as its requests may take.
        let whole = limit * REQUESTS_PER_UPDATE;
        tokio::time::timeout(whole, sent)
            .await
            .map_err(|_| {
                Failure::new(
                    DnsProblem::Unreachable,
                    format!("the provider did not finish the update within {whole:?}"),
                )
            })?
            .map_err(|e| self.failure(e))
    }

    /// A `dns-update` error, typed, its text without any credential.
    fn failure(&self, e: dns_update::Error) -> Failure {
        use dns_update::Error as E;
        let (problem, message) = match e {
            E::Unauthorized => (
                DnsProblem::NotAuthenticated,
                "the provider refused the credentials (HTTP 401)".to_owned(),
            ),
            // `dns-update`'s shared client writes `HTTP 403: ...`; Route 53's
            // own, `Route53 API error: 403 Forbidden - ...`.
            E::Api(message)
                if message.starts_with("HTTP 403") || message.contains(" 403 Forbidden") =>
            {
                (
                    DnsProblem::NotAuthenticated,
                    format!("the provider refused the credentials: {message}"),
                )
            }
            E::Api(message)
                if message.starts_with("Failed to send request")
                    || message.starts_with("error sending request") =>
            {
                (DnsProblem::Unreachable, message)
            }
            E::Client(message) => (DnsProblem::Unreachable, message),
            E::NotFound => (
                DnsProblem::NotInZone,
                "the provider has no such zone or record (HTTP 404)".to_owned(),
            ),
            E::Api(message) if message.starts_with("No ") && message.contains("zone") => {
                (DnsProblem::NotInZone, message)
            }
            other => (DnsProblem::Failed, format!("{other:?}")),
        };
        Failure::new(problem, self.redact(&message))
    }

    /// `text` with every credential replaced by `[redacted]`.
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let key_id = self
            .key_id
            .as_ref()
            .filter(|_| !self.kind.key_id_is_public());
        for secret in [self.token.as_ref(), key_id, self.secret.as_ref()]
            .into_iter()
            .flatten()
        {
            if !secret.expose().is_empty() {
                text = text.replace(secret.expose(), "[redacted]");
            }
        }
        text
    }
}

impl Debug for DnsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let public = self
            .key_id
            .as_ref()
            .filter(|_| self.kind.key_id_is_public());
        let key_id: &dyn Debug = match public {
            Some(key_id) => &Some(key_id.expose()),
            None => &self.key_id,
        };
        f.debug_struct("DnsProvider")
            .field("name", &self.kind.name())
            .field("token", &self.token)
            .field("key_id", &key_id)
            .field("secret", &self.secret)
            .field("api_url", &self.api_url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tok-0123456789abcdef";
    const SECRET: &str = "sec-fedcba9876543210";

    #[test]
    fn debug_and_errors_never_show_a_credential() {
        let provider = DnsProvider::ovh("app-key", SECRET, TOKEN);
        let shown = format!("{provider:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
        let failure = provider.failure(dns_update::Error::Api(format!(
            "HTTP 500: token {TOKEN} and secret {SECRET} echoed"
        )));
        assert!(!failure.message.contains(TOKEN) && !failure.message.contains(SECRET));
        assert!(
            failure.message.contains("[redacted]"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_key_that_is_half_the_credential_is_kept_out_of_debug_and_errors() {
        const KEY: &str = "key-00112233445566778899";
        for provider in [
            DnsProvider::godaddy(KEY, SECRET),
            DnsProvider::porkbun(KEY, SECRET),
            DnsProvider::ovh(KEY, SECRET, TOKEN),
        ] {
            let shown = format!("{provider:?}");
            assert!(!shown.contains(KEY) && !shown.contains(SECRET), "{shown}");
            let failure = provider.failure(dns_update::Error::Api(format!(
                "HTTP 400: Authorization sso-key {KEY}:{SECRET} is malformed"
            )));
            assert!(
                !failure.message.contains(KEY) && !failure.message.contains(SECRET),
                "{}",
                failure.message
            );
        }
        // An account id or an access key id names the account or key, and
        // is shown.
        for provider in [
            DnsProvider::dnsimple(TOKEN, "12345"),
            DnsProvider::route53("AKIDEXAMPLE", SECRET),
        ] {
            let shown = format!("{provider:?}");
            let id = if provider.kind == Kind::Dnsimple {
                "12345"
            } else {
                "AKIDEXAMPLE"
            };
            assert!(shown.contains(id), "{shown}");
            assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
        }
    }

    #[test]
    fn refused_credentials_are_not_authenticated() {
        let provider = DnsProvider::cloudflare(TOKEN);
        for e in [
            dns_update::Error::Unauthorized,
            dns_update::Error::Api("HTTP 403: forbidden".into()),
        ] {
            assert_eq!(provider.failure(e).problem, DnsProblem::NotAuthenticated);
        }
        assert_eq!(
            provider
                .failure(dns_update::Error::Api(
                    "Failed to send request to https://x: refused".into()
                ))
                .problem,
            DnsProblem::Unreachable
        );
        assert_eq!(
            provider.failure(dns_update::Error::NotFound).problem,
            DnsProblem::NotInZone
        );
    }

    /// A request a fake API received.
    #[derive(Debug)]
    struct Received {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    type Answer = Box<dyn Fn(&Received) -> (u16, String) + Send + Sync>;

    /// A provider's API on 127.0.0.1: each request recorded, answered by
    /// `answer` (status, body), one request per connection.
    async fn fake_api(
        answer: Answer,
    ) -> (
        String,
        std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
        tokio::task::JoinHandle<()>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut raw = Vec::new();
                let mut buffer = [0u8; 4096];
                let (head, body_start) = loop {
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        break (String::new(), 0);
                    }
                    raw.extend_from_slice(&buffer[..n]);
                    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&raw[..end]).into_owned(), end + 4);
                    }
                };
                let mut lines = head.lines();
                let mut first = lines.next().unwrap_or_default().split(' ');
                let (method, target) = (
                    first.next().unwrap_or_default().to_owned(),
                    first.next().unwrap_or_default().to_owned(),
                );
                let headers: Vec<(String, String)> = lines
                    .filter_map(|line| line.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while raw.len() < body_start + length {
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buffer[..n]);
                }
                let body = String::from_utf8_lossy(&raw[body_start.min(raw.len())..]).into_owned();
                let received = Received {
                    method,
                    target,
                    headers,
                    body,
                };
                let (status, reply) = answer(&received);
                log.lock().unwrap().push(received);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (url, seen, server)
    }

    const ZONES_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListHostedZonesByNameResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><HostedZones><HostedZone><Id>/hostedzone/Z0EXAMPLE</Id><Name>example.com.</Name><CallerReference>r</CallerReference><Config><PrivateZone>false</PrivateZone></Config></HostedZone></HostedZones><IsTruncated>false</IsTruncated><MaxItems>100</MaxItems></ListHostedZonesByNameResponse>"#;

    /// The record sets Route 53 answers with: the TXT values at the name.
    fn rrsets_xml(values: &[&str]) -> String {
        let records: String = values
            .iter()
            .map(|v| format!("<ResourceRecord><Value>\"{v}\"</Value></ResourceRecord>"))
            .collect();
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ResourceRecordSets><ResourceRecordSet><Name>_acme-challenge.www.example.com.</Name><Type>TXT</Type><TTL>60</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet></ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>100</MaxItems></ListResourceRecordSetsResponse>"#
        )
    }

    fn target() -> Target {
        let name = |n: &str| {
            let mut name = hickory_proto::rr::Name::from_ascii(n).unwrap();
            name.set_fqdn(true);
            name
        };
        Target {
            owner: name("_acme-challenge.www.example.com"),
            zone: name("example.com"),
        }
    }

    #[tokio::test]
    async fn route53_requests_are_signed_and_add_or_remove_only_their_value() {
        const KEY_ID: &str = "AKIDEXAMPLE";
        let limit = Duration::from_secs(5);
        // Route 53 holds "keep-me" and, once added, "value-1".
        let (url, seen, server) = fake_api(Box::new(|request: &Received| {
            if request.target.contains("/hostedzonesbyname") {
                (200, ZONES_XML.to_owned())
            } else if request.method == "GET" {
                (200, rrsets_xml(&["keep-me", "value-1"]))
            } else {
                (200, "<ChangeResourceRecordSetsResponse/>".to_owned())
            }
        }))
        .await;
        let provider = DnsProvider::route53(KEY_ID, SECRET).api_url(&url);
        let updater = provider.updater(Naming::Builder, limit).unwrap();
        provider
            .update(&updater, &target(), "value-2", 60, true, limit)
            .await
            .unwrap();
        provider
            .update(&updater, &target(), "value-1", 60, false, limit)
            .await
            .unwrap();
        server.abort();
        let seen = seen.lock().unwrap();
        let changes: Vec<&Received> = seen.iter().filter(|r| r.method == "POST").collect();
        assert_eq!(changes.len(), 2, "{seen:#?}");
        for request in seen.iter() {
            assert!(request.target.starts_with("/2013-04-01/"), "{request:?}");
            let authorization = request.header("authorization").unwrap_or_default();
            assert!(
                authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/"))
                    && authorization.contains("/us-east-1/route53/aws4_request")
                    && authorization.contains("Signature="),
                "{authorization}"
            );
            assert!(request.header("x-amz-date").is_some(), "{request:?}");
            assert!(!format!("{request:?}").contains(SECRET));
        }
        let zone_change = "/2013-04-01/hostedzone/Z0EXAMPLE/rrset";
        // The addition keeps the values there and adds its own.
        let add = changes[0];
        assert_eq!(add.target, zone_change);
        for part in [
            "<Action>UPSERT</Action>",
            "<Name>_acme-challenge.www.example.com.</Name>",
            "<Type>TXT</Type>",
            "<Value>\"keep-me\"</Value>",
            "<Value>\"value-1\"</Value>",
            "<Value>\"value-2\"</Value>",
        ] {
            assert!(add.body.contains(part), "{part} not in {}", add.body);
        }
        // The removal keeps every other value.
        let remove = changes[1];
        assert!(
            remove.body.contains("<Action>UPSERT</Action>"),
            "{}",
            remove.body
        );
        assert!(
            remove.body.contains("<Value>\"keep-me\"</Value>"),
            "{}",
            remove.body
        );
        assert!(!remove.body.contains("value-1"), "{}", remove.body);
    }

    #[tokio::test]
    async fn route53_refusing_the_key_is_not_authenticated() {
        let limit = Duration::from_secs(5);
        let (url, _, server) = fake_api(Box::new(|_: &Received| {
            (
                403,
                "<ErrorResponse><Error><Code>InvalidClientTokenId</Code></Error></ErrorResponse>"
                    .to_owned(),
            )
        }))
        .await;
        let provider = DnsProvider::route53("AKIDEXAMPLE", SECRET).api_url(&url);
        let updater = provider.updater(Naming::Environment, limit).unwrap();
        let failure = provider
            .update(&updater, &target(), "value-1", 60, true, limit)
            .await
            .unwrap_err();
        server.abort();
        assert_eq!(failure.problem, DnsProblem::NotAuthenticated, "{failure:?}");
        assert!(!failure.message.contains(SECRET));
    }

    #[test]
    fn each_provider_takes_its_fields_and_names_the_missing_one() {
        let token = || Some(Zeroizing::new(TOKEN.to_owned()));
        // Every provider builds from the settings it requires.
        for kind in Kind::ALL {
            let [t, k, s, u] = kind.takes().map(|takes| takes == Required);
            let provider = DnsProvider::from_settings(
                kind.name(),
                t.then(token).flatten(),
                k.then(|| "key-id".to_owned()),
                s.then(|| Zeroizing::new(SECRET.to_owned())),
                u.then(|| "http://127.0.0.1:8081".to_owned()),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            assert!(provider
                .updater(Naming::Environment, Duration::from_secs(5))
                .is_ok());
        }
        let err = DnsProvider::from_settings("cloudflare", None, None, None, None).unwrap_err();
        assert!(matches!(&err, Error::Config { name, .. } if name == Setting::Dns01Token.name()));
        let err = DnsProvider::from_settings("cloudflare", token(), Some("x".into()), None, None)
            .unwrap_err();
        assert!(matches!(&err, Error::Config { name, .. } if name == Setting::Dns01KeyId.name()));
        let err = DnsProvider::from_settings("pdns", token(), None, None, Some("127.0.0.1".into()))
            .unwrap_err();
        assert!(matches!(&err, Error::Config { name, .. } if name == Setting::Dns01ApiUrl.name()));
        let err = DnsProvider::from_settings("nope", token(), None, None, None).unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, reason } if name == Setting::Dns01Provider.name() && reason.contains("cloudflare"))
        );
        let err = DnsProvider::ovh("a", "b", "c")
            .api_url("ovh-mars")
            .check(Naming::Builder)
            .unwrap_err();
        assert!(matches!(&err, Error::Config { name, .. } if name == "DnsProvider::api_url"));
        assert_eq!(
            DnsProvider::route53("id", SECRET).credential_names(Naming::Environment),
            format!("{}, {}", Setting::Dns01KeyId, Setting::Dns01Secret)
        );
        assert_eq!(
            DnsProvider::cloudflare(TOKEN).credential_names(Naming::Builder),
            "DnsProvider::cloudflare"
        );
    }
}
