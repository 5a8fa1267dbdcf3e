//! DNS-01 over RFC 2136: TXT records published at `_acme-challenge.<name>`
//! by dynamic updates signed with TSIG (RFC 8945), sent to the zone's
//! authoritative server.

use std::fmt::{self, Debug};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::{DnsError, DnsMultiplexer, NetError};
use hickory_proto::op::{DnsResponse, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm as HickoryTsigAlgorithm;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use zeroize::Zeroizing;

use super::{Challenge, ChallengeKind, ChallengeSolver};
use crate::config::{Naming, Setting};
use crate::error::DnsProblem;
use crate::{Domain, Error, Result};

/// The HMAC a TSIG key signs updates with (RFC 8945 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TsigAlgorithm {
    /// `hmac-sha256`, the default and what RFC 8945 requires servers to offer.
    #[default]
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    /// The algorithm's name as key files and `_APP_DNS01_TSIG_ALGORITHM` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    /// Parses `hmac-sha256`, `hmac-sha384` or `hmac-sha512` (any case);
    /// `setting` names the setting in the error.
    pub fn parse(setting: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "hmac-sha256" => Ok(Self::HmacSha256),
            "hmac-sha384" => Ok(Self::HmacSha384),
            "hmac-sha512" => Ok(Self::HmacSha512),
            _ => Err(Error::config(
                setting,
                "expected hmac-sha256, hmac-sha384 or hmac-sha512",
            )),
        }
    }

    fn hickory(self) -> HickoryTsigAlgorithm {
        match self {
            Self::HmacSha256 => HickoryTsigAlgorithm::HmacSha256,
            Self::HmacSha384 => HickoryTsigAlgorithm::HmacSha384,
            Self::HmacSha512 => HickoryTsigAlgorithm::HmacSha512,
        }
    }
}

/// Answers `dns-01` challenges by publishing TXT records with RFC 2136
/// dynamic updates, signed with a TSIG key, on the zone's authoritative
/// server (BIND, Knot, PowerDNS ... any server that accepts them).
///
/// [`present`](ChallengeSolver::present) adds the record
/// `_acme-challenge.<name> TXT "<value>"` (for `*.example.com`:
/// `_acme-challenge.example.com`), next to any other value there (a
/// wildcard and its bare name share that name), then waits until the
/// server answers a query with it, so the CA is told only once the record
/// can be seen; past the propagation timeout it fails with
/// [`Error::Dns`] ([`DnsProblem::NotVisible`]).
/// [`cleanup`](ChallengeSolver::cleanup) deletes exactly that value.
///
/// The TSIG secret appears in no `Debug` output, log line or error.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use certkeeper::challenge::{Dns01Solver, TsigAlgorithm};
/// # fn main() -> certkeeper::Result<()> {
/// let solver = Dns01Solver::builder("192.0.2.53:53".parse().unwrap(), "example.com")
///     .tsig_key("certkeeper-key", "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IQ==", TsigAlgorithm::HmacSha256)
///     .build()?;
/// // AcmeIssuer::builder(...).solver(Arc::new(solver)) ...
/// # let _ = solver; Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Dns01Solver {
    inner: Arc<Inner>,
}

struct Inner {
    server: SocketAddr,
    zone: Name,
    signer: TSigner,
    key_name: String,
    algorithm: TsigAlgorithm,
    ttl: u32,
    request_timeout: Duration,
    propagation_timeout: Duration,
}

/// Builds a [`Dns01Solver`]; get one from [`Dns01Solver::builder`].
pub struct Dns01SolverBuilder {
    server: SocketAddr,
    zone: String,
    key: Option<(String, Zeroizing<String>, TsigAlgorithm)>,
    ttl: u32,
    request_timeout: Duration,
    propagation_timeout: Duration,
    /// Whether errors name the `_APP_DNS01_*` variables or the methods.
    naming: Naming,
}

/// The builder's method of each setting, named in its errors.
const ZONE_METHOD: &str = "Dns01Solver::builder(zone)";
const TSIG_METHOD: &str = "Dns01SolverBuilder::tsig_key";
const PROPAGATION_METHOD: &str = "Dns01SolverBuilder::propagation_timeout";

impl Dns01Solver {
    /// Time the record gets to become visible unless set otherwise.
    pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);
    /// Time limit of one DNS exchange unless set otherwise.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// The TTL of the published records unless set otherwise, in seconds.
    pub const DEFAULT_TTL: u32 = 60;

    /// Starts building a solver that sends updates for `zone` (the zone's
    /// apex, `example.com`) to its authoritative server at `server`
    /// (`_APP_DNS01_SERVER`, `_APP_DNS01_ZONE`).
    pub fn builder(server: SocketAddr, zone: impl Into<String>) -> Dns01SolverBuilder {
        Dns01SolverBuilder {
            server,
            zone: zone.into(),
            key: None,
            ttl: Self::DEFAULT_TTL,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            propagation_timeout: Self::DEFAULT_PROPAGATION_TIMEOUT,
            naming: Naming::default(),
        }
    }

    /// The authoritative server the updates go to.
    pub fn server(&self) -> SocketAddr {
        self.inner.server
    }

    /// The zone, without its trailing dot.
    pub fn zone(&self) -> String {
        self.inner.zone.to_string().trim_end_matches('.').to_owned()
    }

    /// The TSIG key's name.
    pub fn key_name(&self) -> &str {
        &self.inner.key_name
    }

    /// The TSIG key's algorithm.
    pub fn algorithm(&self) -> TsigAlgorithm {
        self.inner.algorithm
    }

    /// How long a record gets to become visible.
    pub fn propagation_timeout(&self) -> Duration {
        self.inner.propagation_timeout
    }

    /// The name whose TXT record answers the challenge for `domain`:
    /// `_acme-challenge.` and the name (a wildcard's base for a wildcard).
    pub fn record_name(domain: &Domain) -> String {
        let base = domain.wildcard_base().unwrap_or(domain.as_str());
        format!("_acme-challenge.{base}")
    }

    /// The values of the TXT records at `name` as the authoritative server
    /// answers them now (unsigned query). For checks and tests.
    pub async fn txt_values(&self, name: &str) -> Result<Vec<String>> {
        let owner = self.owner_name(name, None)?;
        self.query_txt(&owner, None).await
    }

    fn owner_name(&self, name: &str, domain: Option<&Domain>) -> Result<Name> {
        let mut owner = Name::from_ascii(name).map_err(|e| {
            self.error(
                domain,
                "present",
                DnsProblem::NotInZone,
                format!("{name} is not a DNS name: {e}"),
            )
        })?;
        owner.set_fqdn(true);
        if !self.inner.zone.zone_of(&owner) {
            return Err(self.error(
                domain,
                "present",
                DnsProblem::NotInZone,
                format!("{name} is not in the zone {}", self.inner.zone),
            ));
        }
        Ok(owner)
    }

    fn error(
        &self,
        domain: Option<&Domain>,
        step: &'static str,
        problem: DnsProblem,
        message: impl Into<String>,
    ) -> Error {
        Error::Dns {
            domain: domain.cloned(),
            step,
            server: self.inner.server,
            problem,
            message: message.into(),
            source: None,
        }
    }

    /// A client on a new TCP connection to the server; `signed`: its
    /// requests carry the TSIG signature and the answers are verified.
    async fn client(
        &self,
        domain: Option<&Domain>,
        step: &'static str,
        signed: bool,
    ) -> Result<Client<TokioRuntimeProvider>> {
        let inner = &self.inner;
        let (connect, handle) = TcpClientStream::new(
            inner.server,
            None,
            Some(inner.request_timeout),
            TokioRuntimeProvider::new(),
        );
        let stream = tokio::time::timeout(inner.request_timeout, connect)
            .await
            .map_err(|_| {
                self.error(
                    domain,
                    step,
                    DnsProblem::Unreachable,
                    format!("no connection within {:?}", inner.request_timeout),
                )
            })?
            .map_err(|e| self.proto_error(domain, step, false, e))?;
        let mut multiplexer =
            DnsMultiplexer::new(stream, handle).with_timeout(inner.request_timeout);
        if signed {
            multiplexer = multiplexer.with_signer(inner.signer.clone());
        }
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
        tokio::spawn(background);
        Ok(client)
    }

    /// A failed exchange. On a signed exchange, an answer that fails TSIG
    /// verification (the server did not know the key or the signature) is
    /// a [`DnsProblem::NotAuthenticated`].
    fn proto_error(
        &self,
        domain: Option<&Domain>,
        step: &'static str,
        signed: bool,
        e: NetError,
    ) -> Error {
        let problem = match &e {
            NetError::Io(_) | NetError::Timeout | NetError::Busy | NetError::NoConnections => {
                DnsProblem::Unreachable
            }
            NetError::Dns(DnsError::ResponseCode(code)) => response_problem(*code),
            _ if signed => DnsProblem::NotAuthenticated,
            _ => DnsProblem::Failed,
        };
        Error::Dns {
            domain: domain.cloned(),
            step,
            server: self.inner.server,
            problem,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// Checks the answer to an update.
    fn check_update(
        &self,
        domain: &Domain,
        step: &'static str,
        response: &DnsResponse,
    ) -> Result<()> {
        let code = response.response_code;
        if code == ResponseCode::NoError {
            return Ok(());
        }
        let problem = response_problem(code);
        Err(self.error(
            Some(domain),
            step,
            problem,
            format!(
                "the server answered the update for zone {} with {code}",
                self.inner.zone
            ),
        ))
    }

    fn record(&self, owner: Name, value: &str) -> Record {
        let mut record = Record::from_rdata(
            owner,
            self.inner.ttl,
            RData::TXT(TXT::new(vec![value.to_owned()])),
        );
        record.dns_class = DNSClass::IN;
        record
    }

    async fn query_txt(&self, owner: &Name, domain: Option<&Domain>) -> Result<Vec<String>> {
        let mut client = self.client(domain, "lookup", false).await?;
        let response = tokio::time::timeout(
            self.inner.request_timeout,
            client.query(owner.clone(), DNSClass::IN, RecordType::TXT),
        )
        .await
        .map_err(|_| {
            self.error(
                domain,
                "lookup",
                DnsProblem::Unreachable,
                "no answer in time",
            )
        })?
        .map_err(|e| self.proto_error(domain, "lookup", false, e))?;
        Ok(response
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Waits, polling the server at growing intervals, until `value` is
    /// among the TXT values at `owner`.
    async fn await_visible(&self, owner: &Name, value: &str, domain: &Domain) -> Result<()> {
        let limit = self.inner.propagation_timeout;
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(50);
        loop {
            let remaining = limit.saturating_sub(started.elapsed());
            let answered =
                tokio::time::timeout(remaining, self.query_txt(owner, Some(domain))).await;
            match answered {
                Ok(Ok(values)) if values.iter().any(|v| v == value) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%domain, error = %e, "TXT lookup failed; trying again")
                }
                Err(_) => {}
            }
            if started.elapsed() + wait >= limit {
                return Err(self.error(
                    Some(domain),
                    "propagation",
                    DnsProblem::NotVisible,
                    format!(
                        "the TXT record at {owner} was not visible at the server within {}s",
                        limit.as_secs_f64()
                    ),
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    async fn update(&self, challenge: &Challenge, step: &'static str, add: bool) -> Result<Name> {
        let domain = &challenge.domain;
        let owner = self.owner_name(&Self::record_name(domain), Some(domain))?;
        let record = self.record(owner.clone(), &challenge.dns_value);
        let mut client = self.client(Some(domain), step, true).await?;
        let zone = self.inner.zone.clone();
        let sent = if add {
            client.append(record, zone, false)
        } else {
            client.delete_by_rdata(record, zone)
        };
        let response = tokio::time::timeout(self.inner.request_timeout, sent)
            .await
            .map_err(|_| {
                self.error(
                    Some(domain),
                    step,
                    DnsProblem::Unreachable,
                    "no answer in time",
                )
            })?
            .map_err(|e| self.proto_error(Some(domain), step, true, e))?;
        self.check_update(domain, step, &response)?;
        Ok(owner)
    }
}

#[async_trait]
impl ChallengeSolver for Dns01Solver {
    fn kind(&self) -> ChallengeKind {
        ChallengeKind::Dns01
    }

    async fn present(&self, challenge: &Challenge) -> Result<()> {
        let owner = self.update(challenge, "present", true).await?;
        tracing::debug!(domain = %challenge.domain, record = %owner, "TXT record added; waiting until it is visible");
        self.await_visible(&owner, &challenge.dns_value, &challenge.domain)
            .await
    }

    async fn cleanup(&self, challenge: &Challenge) -> Result<()> {
        // Deleting a value that is not there is a success for the server too.
        let owner = self.update(challenge, "cleanup", false).await?;
        tracing::debug!(domain = %challenge.domain, record = %owner, "TXT record removed");
        Ok(())
    }
}

/// The problem an update's answer code names.
fn response_problem(code: ResponseCode) -> DnsProblem {
    match code {
        ResponseCode::NotAuth
        | ResponseCode::BADSIG
        | ResponseCode::BADKEY
        | ResponseCode::BADTIME => DnsProblem::NotAuthenticated,
        ResponseCode::Refused => DnsProblem::Refused,
        ResponseCode::NotZone => DnsProblem::NotInZone,
        _ => DnsProblem::Failed,
    }
}

impl Debug for Dns01Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Dns01Solver")
            .field("server", &inner.server)
            .field("zone", &inner.zone.to_string())
            .field("key_name", &inner.key_name)
            .field("algorithm", &inner.algorithm)
            .field("ttl", &inner.ttl)
            .field("propagation_timeout", &inner.propagation_timeout)
            .finish_non_exhaustive()
    }
}

impl Dns01SolverBuilder {
    /// The TSIG key updates are signed with: its name as the server knows
    /// it (`_APP_DNS01_TSIG_KEY_NAME`), its secret in base64 as key files
    /// hold it (`_APP_DNS01_TSIG_SECRET`), and its algorithm
    /// (`_APP_DNS01_TSIG_ALGORITHM`). Required.
    pub fn tsig_key(
        mut self,
        name: impl Into<String>,
        secret_base64: impl Into<String>,
        algorithm: TsigAlgorithm,
    ) -> Self {
        self.key = Some((name.into(), Zeroizing::new(secret_base64.into()), algorithm));
        self
    }

    /// The TTL of the published records in seconds (default 60).
    pub fn ttl(mut self, seconds: u32) -> Self {
        self.ttl = seconds;
        self
    }

    /// Time limit of one exchange with the server (default 10 s).
    pub fn request_timeout(mut self, limit: Duration) -> Self {
        self.request_timeout = limit;
        self
    }

    /// How long [`present`](ChallengeSolver::present) waits for the record
    /// to be visible at the server (`_APP_DNS01_PROPAGATION_TIMEOUT`,
    /// default 120 s).
    pub fn propagation_timeout(mut self, limit: Duration) -> Self {
        self.propagation_timeout = limit;
        self
    }

    /// Errors name the `_APP_DNS01_*` variables: for a solver built from
    /// the environment.
    pub(crate) fn naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// Checks the settings and builds the solver; nothing is sent yet.
    ///
    /// Fails with [`Error::Config`] naming the method of the setting at
    /// fault (`Dns01SolverBuilder::tsig_key` ...; the `_APP_DNS01_*`
    /// variable for the solver a [`Config`](crate::Config) reads from the
    /// environment): a zone that is not a DNS name, a missing key, a key
    /// name that is not a DNS name, a secret that is not base64 or shorter
    /// than 16 bytes, a zero timeout. The error never shows the secret.
    pub fn build(self) -> Result<Dns01Solver> {
        let n = self.naming;
        let zone_name = n.of(Setting::Dns01Zone, ZONE_METHOD);
        let key_name_name = n.of(Setting::Dns01TsigKeyName, TSIG_METHOD);
        let secret_name = n.of(Setting::Dns01TsigSecret, TSIG_METHOD);
        let zone_text = self.zone.trim().trim_end_matches('.');
        if zone_text.is_empty() {
            return Err(Error::config(zone_name, "required"));
        }
        let mut zone =
            Name::from_ascii(zone_text).map_err(|_| Error::config(zone_name, "not a DNS name"))?;
        zone.set_fqdn(true);
        let (key_name, secret, algorithm) = self
            .key
            .ok_or_else(|| Error::config(key_name_name, "a TSIG key is required"))?;
        let signer_name = Name::from_ascii(key_name.trim())
            .ok()
            .filter(|name| !name.is_root())
            .ok_or_else(|| Error::config(key_name_name, "not a DNS name"))?;
        let key = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(secret.trim().as_bytes())
                .map_err(|_| Error::config(secret_name, "not base64"))?,
        );
        if key.len() < 16 {
            return Err(Error::config(
                secret_name,
                "shorter than 16 bytes; make one with `tsig-keygen`",
            ));
        }
        for (name, limit) in [
            ("Dns01SolverBuilder::request_timeout", self.request_timeout),
            (
                n.of(Setting::Dns01PropagationTimeout, PROPAGATION_METHOD),
                self.propagation_timeout,
            ),
        ] {
            if limit.is_zero() {
                return Err(Error::config(name, "must be longer than zero"));
            }
        }
        // The fudge is RFC 8945's recommended 300 s of clock difference.
        let signer =
            TSigner::new(key.to_vec(), algorithm.hickory(), signer_name, 300).map_err(|e| {
                Error::config(
                    n.of(Setting::Dns01TsigAlgorithm, TSIG_METHOD),
                    e.to_string(),
                )
            })?;
        Ok(Dns01Solver {
            inner: Arc::new(Inner {
                server: self.server,
                zone,
                signer,
                key_name: key_name.trim().to_owned(),
                algorithm,
                ttl: self.ttl,
                request_timeout: self.request_timeout,
                propagation_timeout: self.propagation_timeout,
            }),
        })
    }
}

impl Debug for Dns01SolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns01SolverBuilder")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key.as_ref().map(|(name, _, _)| name))
            .field("algorithm", &self.key.as_ref().map(|(_, _, a)| a))
            .field("ttl", &self.ttl)
            .field("propagation_timeout", &self.propagation_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IQ==";

    fn builder() -> Dns01SolverBuilder {
        Dns01Solver::builder("127.0.0.1:53".parse().unwrap(), "example.com")
    }

    #[test]
    fn record_names_follow_rfc_8555_for_names_and_wildcards() {
        let name = |n: &str| Dns01Solver::record_name(&Domain::new(n).unwrap());
        assert_eq!(name("www.example.com"), "_acme-challenge.www.example.com");
        assert_eq!(name("*.example.com"), "_acme-challenge.example.com");
    }

    /// Each bad setting, with the variable and the method its error names.
    fn bad_builders() -> Vec<(Dns01SolverBuilder, Setting, &'static str)> {
        vec![
            (builder(), Setting::Dns01TsigKeyName, TSIG_METHOD),
            (
                builder().tsig_key("k", "not base64 at all!", TsigAlgorithm::HmacSha256),
                Setting::Dns01TsigSecret,
                TSIG_METHOD,
            ),
            (
                builder().tsig_key("k", "c2hvcnQ=", TsigAlgorithm::HmacSha256),
                Setting::Dns01TsigSecret,
                TSIG_METHOD,
            ),
            (
                builder()
                    .tsig_key("k", SECRET, TsigAlgorithm::HmacSha256)
                    .propagation_timeout(Duration::ZERO),
                Setting::Dns01PropagationTimeout,
                PROPAGATION_METHOD,
            ),
            (
                Dns01Solver::builder("127.0.0.1:53".parse().unwrap(), "").tsig_key(
                    "k",
                    SECRET,
                    TsigAlgorithm::HmacSha256,
                ),
                Setting::Dns01Zone,
                ZONE_METHOD,
            ),
        ]
    }

    #[test]
    fn bad_settings_name_the_method_and_never_show_the_secret() {
        for (builder, _, method) in bad_builders() {
            let err = builder.build().unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == method),
                "{method}: {err:?}"
            );
            assert!(!err.to_string().contains(SECRET));
            assert!(!err.to_string().contains(Setting::PREFIX), "{err}");
        }
    }

    #[test]
    fn bad_settings_from_the_environment_name_the_variable() {
        for (builder, setting, _) in bad_builders() {
            let err = builder.naming(Naming::Environment).build().unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == setting.name()),
                "{setting}: {err:?}"
            );
            assert!(!err.to_string().contains(SECRET));
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let b = builder().tsig_key("certkeeper-key", SECRET, TsigAlgorithm::HmacSha512);
        assert!(!format!("{b:?}").contains(SECRET));
        let solver = b.build().unwrap();
        let shown = format!("{solver:?}");
        assert!(shown.contains("certkeeper-key") && shown.contains("HmacSha512"));
        assert!(!shown.contains(SECRET));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(SECRET)
            .unwrap();
        assert!(!shown.contains(&String::from_utf8_lossy(&raw).to_string()));
    }

    #[test]
    fn algorithms_parse_by_their_key_file_names() {
        for algorithm in [
            TsigAlgorithm::HmacSha256,
            TsigAlgorithm::HmacSha384,
            TsigAlgorithm::HmacSha512,
        ] {
            assert_eq!(
                TsigAlgorithm::parse("x", algorithm.as_str()).unwrap(),
                algorithm
            );
        }
        assert!(matches!(
            TsigAlgorithm::parse(Setting::Dns01TsigAlgorithm.name(), "hmac-md5"),
            Err(Error::Config { name, .. }) if name == Setting::Dns01TsigAlgorithm.name()
        ));
    }

    #[tokio::test]
    async fn a_name_outside_the_zone_is_a_typed_error_before_anything_is_sent() {
        let solver = builder()
            .tsig_key("k", SECRET, TsigAlgorithm::HmacSha256)
            .build()
            .unwrap();
        let challenge = Challenge {
            domain: Domain::new("www.example.org").unwrap(),
            token: "t".into(),
            key_authorization: "t.k".into(),
            dns_value: "v".into(),
        };
        let err = solver.present(&challenge).await.unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Dns {
                    problem: DnsProblem::NotInZone,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
