//! DNS-01: TXT records published at `_acme-challenge.<name>`, by RFC 2136
//! dynamic updates signed with TSIG (RFC 8945) or (feature
//! `dns-providers`) through a DNS provider's HTTP API, in the zone found
//! from the SOA answers (CNAMEs followed) unless one is set; the CA is
//! told only once the zone's authoritative servers answer with the record.

mod lookup;
#[cfg(feature = "dns-providers")]
mod provider;
mod rfc2136;

#[cfg(feature = "dns-providers")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns-providers")))]
pub use provider::DnsProvider;
pub use rfc2136::TsigAlgorithm;

use std::collections::HashMap;
use std::fmt::{self, Debug};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use hickory_proto::rr::{Name, TSigner};
use zeroize::Zeroizing;

use super::{Challenge, ChallengeKind, ChallengeSolver};
use crate::config::{Naming, Setting};
use crate::error::DnsProblem;
use crate::{Domain, Error, Result};
use lookup::{Failure, Target};
use rfc2136::Rfc2136;

/// Answers `dns-01` challenges by publishing TXT records in the DNS:
/// through RFC 2136 dynamic updates signed with a TSIG key, sent to the
/// zone's primary server (BIND, Knot, PowerDNS ... any server that accepts
/// them), or (feature `dns-providers`) through a provider's HTTP API
/// ([`DnsProvider`]: Cloudflare, Route 53, DigitalOcean, Hetzner, OVH,
/// Gandi, deSEC, PowerDNS ...).
///
/// [`present`](ChallengeSolver::present) adds the record
/// `_acme-challenge.<name> TXT "<value>"` (for `*.example.com`:
/// `_acme-challenge.example.com`), next to any other value there (a
/// wildcard and its bare name share that name), then waits until the
/// zone's authoritative servers answer with it, so the CA is told only
/// once the record can be seen; past the propagation timeout it fails
/// with [`Error::Dns`] ([`DnsProblem::NotVisible`]).
/// [`cleanup`](ChallengeSolver::cleanup) deletes exactly that value (the
/// issuer calls it after a failed validation or a failed `present` too).
///
/// The zone is found by itself unless [set](Dns01SolverBuilder::zone): a
/// CNAME at `_acme-challenge.<name>` is followed (to a validation zone the
/// credentials may update), then the zone is the owner of the SOA record
/// the resolver answers for that name; one solver serves every zone its
/// credentials reach. Each name's answer is kept for the solver's life.
///
/// A credential the server or provider refuses is an [`Error::Dns`] with
/// [`DnsProblem::NotAuthenticated`] whose message names the settings to
/// fix; it is a settings error ([`Error::is_settings_error`]), so the
/// renewer counts no attempt for it. No credential appears in any `Debug`
/// output, log line or error.
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
    backend: Backend,
    /// The zone set by hand; `None`: found per name.
    zone: Option<Name>,
    /// Asked for SOA, CNAME and NS records; `None` only when nothing needs it.
    resolver: Option<SocketAddr>,
    /// The servers the record must be seen at; empty: the zone's own.
    nameservers: Vec<SocketAddr>,
    ttl: u32,
    request_timeout: Duration,
    propagation_timeout: Duration,
    naming: Naming,
    /// Each record name's target, looked up at most [`CACHED_FOR`] ago.
    targets: Mutex<HashMap<Name, Cached<Target>>>,
    /// One update at a time per record name: a provider's API replaces the
    /// whole set of values at a name, so two additions at once (a wildcard
    /// and its bare name) could lose one.
    updating: Mutex<HashMap<Name, Arc<tokio::sync::Mutex<()>>>>,
    #[cfg(feature = "dns-providers")]
    zone_servers: Mutex<HashMap<Name, Cached<Vec<SocketAddr>>>>,
}

enum Backend {
    Rfc2136(Rfc2136),
    #[cfg(feature = "dns-providers")]
    Provider {
        provider: DnsProvider,
        updater: Box<dns_update::DnsUpdater>,
    },
}

/// Builds a [`Dns01Solver`]; get one from [`Dns01Solver::builder`],
/// [`Dns01Solver::rfc2136`] or [`Dns01Solver::provider`].
pub struct Dns01SolverBuilder {
    backend: BackendSettings,
    zone: Option<String>,
    key: Option<(String, Zeroizing<String>, TsigAlgorithm)>,
    resolver: Option<SocketAddr>,
    nameservers: Vec<SocketAddr>,
    ttl: u32,
    request_timeout: Duration,
    propagation_timeout: Duration,
    /// Whether errors name the `_APP_DNS01_*` variables or the methods.
    naming: Naming,
}

enum BackendSettings {
    Rfc2136(SocketAddr),
    #[cfg(feature = "dns-providers")]
    Provider(DnsProvider),
}

/// The builder's method of each setting, named in its errors.
const ZONE_METHOD: &str = "Dns01SolverBuilder::zone";
const TSIG_METHOD: &str = "Dns01SolverBuilder::tsig_key";
const PROPAGATION_METHOD: &str = "Dns01SolverBuilder::propagation_timeout";
const RESOLVER_METHOD: &str = "Dns01SolverBuilder::resolver";

impl Dns01Solver {
    /// Time the record gets to become visible unless set otherwise.
    pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);
    /// Time limit of one DNS exchange unless set otherwise.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// The TTL of the published records unless set otherwise, in seconds.
    pub const DEFAULT_TTL: u32 = 60;

    /// Starts building a solver that sends RFC 2136 updates for `zone`
    /// (the zone's apex, `example.com`) to its primary server at `server`
    /// (`_APP_DNS01_SERVER`, `_APP_DNS01_ZONE`): [`rfc2136`](Self::rfc2136)
    /// with the zone [set](Dns01SolverBuilder::zone).
    pub fn builder(server: SocketAddr, zone: impl Into<String>) -> Dns01SolverBuilder {
        Self::rfc2136(server).zone(zone)
    }

    /// Starts building a solver that sends RFC 2136 updates to the primary
    /// server at `server` (`_APP_DNS01_SERVER`), finding each name's zone
    /// by asking that server (or the [resolver](Dns01SolverBuilder::resolver)).
    pub fn rfc2136(server: SocketAddr) -> Dns01SolverBuilder {
        Self::with_backend(BackendSettings::Rfc2136(server))
    }

    /// Starts building a solver that publishes through a DNS provider's
    /// HTTP API (`_APP_DNS01_PROVIDER` and its credentials), finding each
    /// name's zone by asking the system's resolver (or the
    /// [resolver](Dns01SolverBuilder::resolver)).
    ///
    /// ```no_run
    /// use certkeeper::challenge::{Dns01Solver, DnsProvider};
    /// # fn main() -> certkeeper::Result<()> {
    /// let solver = Dns01Solver::provider(DnsProvider::cloudflare("<api token>")).build()?;
    /// # let _ = solver; Ok(())
    /// # }
    /// ```
    #[cfg(feature = "dns-providers")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dns-providers")))]
    pub fn provider(provider: DnsProvider) -> Dns01SolverBuilder {
        Self::with_backend(BackendSettings::Provider(provider))
    }

    fn with_backend(backend: BackendSettings) -> Dns01SolverBuilder {
        Dns01SolverBuilder {
            backend,
            zone: None,
            key: None,
            resolver: None,
            nameservers: Vec::new(),
            ttl: Self::DEFAULT_TTL,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            propagation_timeout: Self::DEFAULT_PROPAGATION_TIMEOUT,
            naming: Naming::default(),
        }
    }

    /// The primary server RFC 2136 updates go to; `None` for a provider.
    pub fn server(&self) -> Option<SocketAddr> {
        match &self.inner.backend {
            Backend::Rfc2136(rfc2136) => Some(rfc2136.server),
            #[cfg(feature = "dns-providers")]
            Backend::Provider { .. } => None,
        }
    }

    /// How the records are published: `rfc2136`, or the provider's name
    /// (`cloudflare` ...), as `_APP_DNS01_PROVIDER` writes it.
    pub fn provider_name(&self) -> &'static str {
        match &self.inner.backend {
            Backend::Rfc2136(_) => "rfc2136",
            #[cfg(feature = "dns-providers")]
            Backend::Provider { provider, .. } => provider.name(),
        }
    }

    /// The zone set by hand, without its trailing dot; `None`: each name's
    /// zone is found by itself.
    pub fn zone(&self) -> Option<String> {
        self.inner.zone.as_ref().map(display_name)
    }

    /// The server asked for the zones, CNAMEs and name servers of names.
    pub fn resolver(&self) -> Option<SocketAddr> {
        self.inner.resolver
    }

    /// The servers a record must be answered by before the CA is told,
    /// when set; empty: the RFC 2136 server, or the zone's name servers.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.inner.nameservers
    }

    /// The TSIG key's name (RFC 2136).
    pub fn key_name(&self) -> Option<&str> {
        match &self.inner.backend {
            Backend::Rfc2136(rfc2136) => Some(&rfc2136.key_name),
            #[cfg(feature = "dns-providers")]
            Backend::Provider { .. } => None,
        }
    }

    /// The TSIG key's algorithm (RFC 2136).
    pub fn algorithm(&self) -> Option<TsigAlgorithm> {
        match &self.inner.backend {
            Backend::Rfc2136(rfc2136) => Some(rfc2136.algorithm),
            #[cfg(feature = "dns-providers")]
            Backend::Provider { .. } => None,
        }
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

    /// Where the record for `domain` goes: the owner name (the end of any
    /// CNAMEs from [`record_name`](Self::record_name)) and its zone, both
    /// without the trailing dot. Looked up once per name for the solver's
    /// life; with a zone set by hand, nothing is looked up.
    pub async fn record_location(&self, domain: &Domain) -> Result<(String, String)> {
        let target = self.target(domain, "lookup").await?;
        Ok((display_name(&target.owner), display_name(&target.zone)))
    }

    /// The values of the TXT records at `name` as the first server the
    /// record is checked at answers them now (unsigned query). For checks
    /// and tests.
    pub async fn txt_values(&self, name: &str) -> Result<Vec<String>> {
        let owner = parse_name(name).map_err(|message| {
            self.error(
                None,
                "lookup",
                self.publisher(),
                Failure::new(DnsProblem::NotInZone, message),
            )
        })?;
        let zone = match &self.inner.zone {
            Some(zone) => zone.clone(),
            None => {
                let resolver = self.resolver_for(None, "lookup")?;
                lookup::find_target(resolver, &owner, self.inner.request_timeout)
                    .await
                    .map_err(|f| self.error(None, "lookup", resolver.to_string(), f))?
                    .zone
            }
        };
        let servers = self.check_servers(&zone, None).await?;
        lookup::txt_values(servers[0], &owner, self.inner.request_timeout)
            .await
            .map_err(|f| self.error(None, "lookup", servers[0].to_string(), f))
    }

    /// Where errors say the records are published.
    fn publisher(&self) -> String {
        match &self.inner.backend {
            Backend::Rfc2136(rfc2136) => rfc2136.server.to_string(),
            #[cfg(feature = "dns-providers")]
            Backend::Provider { provider, .. } => provider.server(),
        }
    }

    fn error(
        &self,
        domain: Option<&Domain>,
        step: &'static str,
        server: String,
        failure: Failure,
    ) -> Error {
        let mut message = failure.message;
        if failure.problem == DnsProblem::NotAuthenticated {
            message.push_str(&format!("; check {}", self.credential_names()));
        }
        Error::Dns {
            domain: domain.cloned(),
            step,
            server,
            problem: failure.problem,
            message,
            source: failure.source,
        }
    }

    /// The settings (or builder methods) of the credentials.
    fn credential_names(&self) -> String {
        let n = self.inner.naming;
        match &self.inner.backend {
            Backend::Rfc2136(_) => {
                let mut names = vec![
                    n.of(Setting::Dns01TsigKeyName, TSIG_METHOD),
                    n.of(Setting::Dns01TsigSecret, TSIG_METHOD),
                    n.of(Setting::Dns01TsigAlgorithm, TSIG_METHOD),
                ];
                names.dedup();
                names.join(", ")
            }
            #[cfg(feature = "dns-providers")]
            Backend::Provider { provider, .. } => provider.credential_names(n),
        }
    }

    fn resolver_for(&self, domain: Option<&Domain>, step: &'static str) -> Result<SocketAddr> {
        self.inner.resolver.ok_or_else(|| {
            self.error(
                domain,
                step,
                self.publisher(),
                Failure::new(
                    DnsProblem::Unreachable,
                    format!(
                        "no resolver: /etc/resolv.conf names none; set {}",
                        self.inner
                            .naming
                            .of(Setting::Dns01Resolver, RESOLVER_METHOD)
                    ),
                ),
            )
        })
    }

    /// Where the record for `domain` goes (see [`record_location`](Self::record_location)).
    async fn target(&self, domain: &Domain, step: &'static str) -> Result<Target> {
        let name = parse_name(&Self::record_name(domain)).map_err(|message| {
            self.error(
                Some(domain),
                step,
                self.publisher(),
                Failure::new(DnsProblem::NotInZone, message),
            )
        })?;
        if let Some(zone) = &self.inner.zone {
            if !zone.zone_of(&name) {
                return Err(self.error(
                    Some(domain),
                    step,
                    self.publisher(),
                    Failure::new(
                        DnsProblem::NotInZone,
                        format!("{name} is not in the zone {zone}"),
                    ),
                ));
            }
            return Ok(Target {
                owner: name,
                zone: zone.clone(),
            });
        }
        if let Some(target) = lock(&self.inner.targets).get(&name).and_then(Cached::fresh) {
            return Ok(target.clone());
        }
        let resolver = self.resolver_for(Some(domain), step)?;
        let target = lookup::find_target(resolver, &name, self.inner.request_timeout)
            .await
            .map_err(|f| self.error(Some(domain), step, resolver.to_string(), f))?;
        tracing::debug!(%domain, record = %target.owner, zone = %target.zone, "DNS-01 zone found");
        lock(&self.inner.targets).insert(name, Cached::new(target.clone()));
        Ok(target)
    }

    /// The servers the record must be seen at: those set, the RFC 2136
    /// server, or the zone's name servers (looked up once per zone).
    #[cfg_attr(not(feature = "dns-providers"), allow(unused_variables))]
    async fn check_servers(&self, zone: &Name, domain: Option<&Domain>) -> Result<Vec<SocketAddr>> {
        if !self.inner.nameservers.is_empty() {
            return Ok(self.inner.nameservers.clone());
        }
        match &self.inner.backend {
            Backend::Rfc2136(rfc2136) => Ok(vec![rfc2136.server]),
            #[cfg(feature = "dns-providers")]
            Backend::Provider { .. } => {
                if let Some(servers) = lock(&self.inner.zone_servers)
                    .get(zone)
                    .and_then(Cached::fresh)
                {
                    return Ok(servers.clone());
                }
                let resolver = self.resolver_for(domain, "propagation")?;
                let servers = lookup::nameservers(resolver, zone, self.inner.request_timeout)
                    .await
                    .map_err(|f| self.error(domain, "propagation", resolver.to_string(), f))?;
                lock(&self.inner.zone_servers).insert(zone.clone(), Cached::new(servers.clone()));
                Ok(servers)
            }
        }
    }

    /// Adds (`add`) or removes exactly `value` at the target.
    async fn update(
        &self,
        target: &Target,
        value: &str,
        add: bool,
        domain: &Domain,
        step: &'static str,
    ) -> Result<()> {
        let inner = &self.inner;
        let turn = lock(&inner.updating)
            .entry(target.owner.clone())
            .or_default()
            .clone();
        let guard = turn.lock().await;
        let sent = match &inner.backend {
            Backend::Rfc2136(rfc2136) => {
                rfc2136
                    .update(
                        &target.owner,
                        &target.zone,
                        value,
                        inner.ttl,
                        add,
                        inner.request_timeout,
                    )
                    .await
            }
            #[cfg(feature = "dns-providers")]
            Backend::Provider { provider, updater } => {
                provider
                    .update(
                        updater,
                        target,
                        value,
                        inner.ttl,
                        add,
                        inner.request_timeout,
                    )
                    .await
            }
        };
        drop(guard);
        {
            // The entry goes when no other update holds or waits for it:
            // only the map and this update have it, and a new holder takes
            // it under the map's lock.
            let mut updating = lock(&inner.updating);
            if Arc::strong_count(&turn) == 2
                && updating
                    .get(&target.owner)
                    .is_some_and(|held| Arc::ptr_eq(held, &turn))
            {
                updating.remove(&target.owner);
            }
        }
        sent.map_err(|f| self.error(Some(domain), step, self.publisher(), f))
    }

    /// Forgets what was looked up for `domain`'s record (its zone or CNAME
    /// target, and the zone's name servers) after an update or a
    /// propagation check failed: a zone that moved or a CNAME that changed
    /// is looked up again on the next attempt.
    fn forget(&self, domain: &Domain, target: &Target) {
        if let Ok(name) = parse_name(&Self::record_name(domain)) {
            lock(&self.inner.targets).remove(&name);
        }
        #[cfg(feature = "dns-providers")]
        lock(&self.inner.zone_servers).remove(&target.zone);
        #[cfg(not(feature = "dns-providers"))]
        let _ = target;
    }

    /// Waits, polling each server at growing intervals, until every one
    /// answers with `value` among the TXT values at the target.
    async fn await_visible(&self, target: &Target, value: &str, domain: &Domain) -> Result<()> {
        let limit = self.inner.propagation_timeout;
        let started = tokio::time::Instant::now();
        let mut waiting = self.check_servers(&target.zone, Some(domain)).await?;
        let mut wait = Duration::from_millis(50);
        loop {
            let mut still = Vec::new();
            for server in waiting {
                let remaining = limit.saturating_sub(started.elapsed());
                let asked = lookup::txt_values(server, &target.owner, self.inner.request_timeout);
                match tokio::time::timeout(remaining, asked).await {
                    Ok(Ok(values)) if values.iter().any(|v| v == value) => {}
                    Ok(Err(f)) => {
                        tracing::debug!(%domain, %server, error = %f.message, "TXT lookup failed; trying again");
                        still.push(server);
                    }
                    _ => still.push(server),
                }
            }
            if still.is_empty() {
                tracing::debug!(%domain, record = %target.owner, waited_ms = started.elapsed().as_millis() as u64, "TXT record visible");
                return Ok(());
            }
            if started.elapsed() + wait >= limit {
                let servers: Vec<String> = still.iter().map(ToString::to_string).collect();
                return Err(self.error(
                    Some(domain),
                    "propagation",
                    servers.join(", "),
                    Failure::new(
                        DnsProblem::NotVisible,
                        format!(
                            "the TXT record at {} was not visible at these servers within {}s",
                            target.owner,
                            limit.as_secs_f64()
                        ),
                    ),
                ));
            }
            waiting = still;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

#[async_trait]
impl ChallengeSolver for Dns01Solver {
    fn kind(&self) -> ChallengeKind {
        ChallengeKind::Dns01
    }

    async fn present(&self, challenge: &Challenge) -> Result<()> {
        let domain = &challenge.domain;
        let target = self.target(domain, "present").await?;
        let result = async {
            self.update(&target, &challenge.dns_value, true, domain, "present")
                .await?;
            tracing::debug!(%domain, record = %target.owner, zone = %target.zone, "TXT record added; waiting until it is visible");
            self.await_visible(&target, &challenge.dns_value, domain)
                .await
        }
        .await;
        if result.is_err() {
            self.forget(domain, &target);
        }
        result
    }

    async fn cleanup(&self, challenge: &Challenge) -> Result<()> {
        let domain = &challenge.domain;
        let target = self.target(domain, "cleanup").await?;
        // Deleting a value that is not there is a success too.
        self.update(&target, &challenge.dns_value, false, domain, "cleanup")
            .await
            .inspect_err(|_| self.forget(domain, &target))?;
        tracing::debug!(%domain, record = %target.owner, "TXT record removed");
        Ok(())
    }
}

/// How long a looked-up zone, CNAME target or zone's name servers is used
/// before it is looked up again.
const CACHED_FOR: Duration = Duration::from_secs(60 * 60);

/// A lookup's result and when it was made.
struct Cached<T> {
    at: Instant,
    value: T,
}

impl<T> Cached<T> {
    fn new(value: T) -> Self {
        Self {
            at: Instant::now(),
            value,
        }
    }

    /// The value, unless it is older than [`CACHED_FOR`].
    fn fresh(&self) -> Option<&T> {
        self.fresh_at(Instant::now())
    }

    /// The value, unless it is older than [`CACHED_FOR`] at `now`.
    fn fresh_at(&self, now: Instant) -> Option<&T> {
        (now.saturating_duration_since(self.at) < CACHED_FOR).then_some(&self.value)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold finished lookups only: a panic elsewhere leaves them whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A name as the DNS writes it, fully qualified.
fn parse_name(name: &str) -> std::result::Result<Name, String> {
    let mut parsed =
        Name::from_ascii(name).map_err(|e| format!("{name} is not a DNS name: {e}"))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

fn display_name(name: &Name) -> String {
    name.to_string().trim_end_matches('.').to_owned()
}

impl Debug for Dns01Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut d = f.debug_struct("Dns01Solver");
        match &inner.backend {
            Backend::Rfc2136(rfc2136) => d
                .field("server", &rfc2136.server)
                .field("key_name", &rfc2136.key_name)
                .field("algorithm", &rfc2136.algorithm),
            #[cfg(feature = "dns-providers")]
            Backend::Provider { provider, .. } => d.field("provider", provider),
        };
        d.field("zone", &self.zone())
            .field("resolver", &inner.resolver)
            .field("ttl", &inner.ttl)
            .field("propagation_timeout", &inner.propagation_timeout)
            .finish_non_exhaustive()
    }
}

impl Dns01SolverBuilder {
    /// The TSIG key RFC 2136 updates are signed with: its name as the
    /// server knows it (`_APP_DNS01_TSIG_KEY_NAME`), its secret in base64
    /// as key files hold it (`_APP_DNS01_TSIG_SECRET`), and its algorithm
    /// (`_APP_DNS01_TSIG_ALGORITHM`). Required for RFC 2136; refused for a
    /// provider.
    pub fn tsig_key(
        mut self,
        name: impl Into<String>,
        secret_base64: impl Into<String>,
        algorithm: TsigAlgorithm,
    ) -> Self {
        self.key = Some((name.into(), Zeroizing::new(secret_base64.into()), algorithm));
        self
    }

    /// Sets the zone the records go to (`_APP_DNS01_ZONE`, `example.com`)
    /// instead of finding it per name; CNAMEs are then not followed and
    /// nothing is looked up before the update.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// The DNS server asked for each name's zone (SOA), CNAME and name
    /// servers (`_APP_DNS01_RESOLVER`). Default: for RFC 2136, the
    /// primary server itself; for a provider, the first `nameserver` of
    /// `/etc/resolv.conf`.
    pub fn resolver(mut self, resolver: SocketAddr) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The servers [`present`](ChallengeSolver::present) waits to see the
    /// record at (`_APP_DNS01_NAMESERVERS`). Default: for RFC 2136, the
    /// primary server; for a provider, the zone's name servers (its NS
    /// records, port 53).
    pub fn nameservers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.nameservers = servers.into_iter().collect();
        self
    }

    /// The TTL of the published records in seconds (default 60).
    pub fn ttl(mut self, seconds: u32) -> Self {
        self.ttl = seconds;
        self
    }

    /// Time limit of one exchange with a server or the provider's API
    /// (default 10 s).
    pub fn request_timeout(mut self, limit: Duration) -> Self {
        self.request_timeout = limit;
        self
    }

    /// How long [`present`](ChallengeSolver::present) waits for the record
    /// to be visible at the servers (`_APP_DNS01_PROPAGATION_TIMEOUT`,
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
    /// fault (`Dns01SolverBuilder::tsig_key`, `DnsProvider::cloudflare`
    /// ...; the `_APP_DNS01_*` variable for the solver a
    /// [`Config`](crate::Config) reads from the environment): a zone that
    /// is not a DNS name, a missing key or credential, a key name that is
    /// not a DNS name, a secret that is not base64 or shorter than 16
    /// bytes, a zero timeout, no resolver where one is needed. The error
    /// never shows a secret.
    pub fn build(self) -> Result<Dns01Solver> {
        let n = self.naming;
        let zone = match &self.zone {
            None => None,
            Some(text) => {
                let name = n.of(Setting::Dns01Zone, ZONE_METHOD);
                let text = text.trim().trim_end_matches('.');
                if text.is_empty() {
                    return Err(Error::config(
                        name,
                        "empty; leave it unset to find the zone",
                    ));
                }
                Some(parse_name(text).map_err(|_| Error::config(name, "not a DNS name"))?)
            }
        };
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
        let (backend, resolver) = match self.backend {
            BackendSettings::Rfc2136(server) => {
                let key = self.key.ok_or_else(|| {
                    Error::config(
                        n.of(Setting::Dns01TsigKeyName, TSIG_METHOD),
                        "a TSIG key is required",
                    )
                })?;
                let rfc2136 = rfc2136_backend(server, key, n)?;
                (Backend::Rfc2136(rfc2136), self.resolver.or(Some(server)))
            }
            #[cfg(feature = "dns-providers")]
            BackendSettings::Provider(provider) => {
                if self.key.is_some() {
                    return Err(Error::config(
                        n.of(Setting::Dns01TsigKeyName, TSIG_METHOD),
                        format!("the {} provider takes no TSIG key", provider.name()),
                    ));
                }
                let resolver = self.resolver.or_else(lookup::system_resolver);
                if resolver.is_none() && (zone.is_none() || self.nameservers.is_empty()) {
                    return Err(Error::config(
                        n.of(Setting::Dns01Resolver, RESOLVER_METHOD),
                        "required: /etc/resolv.conf names no nameserver",
                    ));
                }
                let updater = Box::new(provider.updater(n, self.request_timeout)?);
                (Backend::Provider { provider, updater }, resolver)
            }
        };
        Ok(Dns01Solver {
            inner: Arc::new(Inner {
                backend,
                zone,
                resolver,
                nameservers: self.nameservers,
                ttl: self.ttl,
                request_timeout: self.request_timeout,
                propagation_timeout: self.propagation_timeout,
                naming: n,
                targets: Mutex::new(HashMap::new()),
                updating: Mutex::new(HashMap::new()),
                #[cfg(feature = "dns-providers")]
                zone_servers: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// The RFC 2136 client of a checked key.
fn rfc2136_backend(
    server: SocketAddr,
    (key_name, secret, algorithm): (String, Zeroizing<String>, TsigAlgorithm),
    n: Naming,
) -> Result<Rfc2136> {
    let key_name_name = n.of(Setting::Dns01TsigKeyName, TSIG_METHOD);
    let secret_name = n.of(Setting::Dns01TsigSecret, TSIG_METHOD);
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
    // The fudge is RFC 8945's recommended 300 s of clock difference.
    let signer =
        TSigner::new(key.to_vec(), algorithm.hickory(), signer_name, 300).map_err(|e| {
            Error::config(
                n.of(Setting::Dns01TsigAlgorithm, TSIG_METHOD),
                e.to_string(),
            )
        })?;
    Ok(Rfc2136 {
        server,
        signer,
        key_name: key_name.trim().to_owned(),
        algorithm,
    })
}

impl Debug for Dns01SolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Dns01SolverBuilder");
        match &self.backend {
            BackendSettings::Rfc2136(server) => d.field("server", server),
            #[cfg(feature = "dns-providers")]
            BackendSettings::Provider(provider) => d.field("provider", provider),
        };
        d.field("zone", &self.zone)
            .field("key_name", &self.key.as_ref().map(|(name, _, _)| name))
            .field("algorithm", &self.key.as_ref().map(|(_, _, a)| a))
            .field("resolver", &self.resolver)
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

    #[tokio::test]
    async fn a_set_zone_is_the_location_without_a_lookup() {
        // Nothing answers on this port: any lookup would fail.
        let solver = Dns01Solver::builder("127.0.0.1:9".parse().unwrap(), "example.com.")
            .tsig_key("k", SECRET, TsigAlgorithm::HmacSha256)
            .build()
            .unwrap();
        assert_eq!(solver.zone().as_deref(), Some("example.com"));
        assert_eq!(solver.provider_name(), "rfc2136");
        assert_eq!(
            solver
                .record_location(&Domain::new("*.www.example.com").unwrap())
                .await
                .unwrap(),
            (
                "_acme-challenge.www.example.com".to_owned(),
                "example.com".to_owned()
            )
        );
    }

    #[tokio::test]
    async fn no_per_name_lock_is_kept_after_present_or_cleanup() {
        // Nothing listens on port 9: each update fails at once.
        let solver = Dns01Solver::builder("127.0.0.1:9".parse().unwrap(), "example.com")
            .tsig_key("k", SECRET, TsigAlgorithm::HmacSha256)
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let challenge = |name: &str| Challenge {
            domain: Domain::new(name).unwrap(),
            dns_value: "value".into(),
            token: "token".into(),
            key_authorization: "token.thumbprint".into(),
        };
        for name in ["a.example.com", "*.b.example.com", "b.example.com"] {
            assert!(solver.present(&challenge(name)).await.is_err());
            assert!(solver.cleanup(&challenge(name)).await.is_err());
        }
        assert!(lock(&solver.inner.updating).is_empty());
    }

    /// A solver whose API and resolver (port 9, where nothing listens)
    /// fail at once, with `www.example.com`'s record name and target.
    #[cfg(feature = "dns-providers")]
    fn unreachable_provider() -> (Dns01Solver, Domain, Name, Target) {
        let solver = Dns01Solver::provider(DnsProvider::pdns("http://127.0.0.1:9", "api-key"))
            .resolver("127.0.0.1:9".parse().unwrap())
            .request_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let domain = Domain::new("www.example.com").unwrap();
        let name = parse_name(&Dns01Solver::record_name(&domain)).unwrap();
        let target = Target {
            owner: name.clone(),
            zone: parse_name("example.com").unwrap(),
        };
        (solver, domain, name, target)
    }

    #[cfg(feature = "dns-providers")]
    #[tokio::test]
    async fn a_failed_update_forgets_the_zone_and_its_servers() {
        let (solver, domain, name, target) = unreachable_provider();
        let zone = target.zone.clone();
        for add in [true, false] {
            lock(&solver.inner.targets).insert(name.clone(), Cached::new(target.clone()));
            lock(&solver.inner.zone_servers).insert(
                zone.clone(),
                Cached::new(vec!["127.0.0.1:9".parse().unwrap()]),
            );
            let challenge = Challenge {
                domain: domain.clone(),
                dns_value: "value".into(),
                token: "token".into(),
                key_authorization: "token.thumbprint".into(),
            };
            let result = if add {
                solver.present(&challenge).await
            } else {
                solver.cleanup(&challenge).await
            };
            assert!(result.is_err());
            assert!(lock(&solver.inner.targets).is_empty(), "add: {add}");
            assert!(lock(&solver.inner.zone_servers).is_empty(), "add: {add}");
            assert!(lock(&solver.inner.updating).is_empty(), "add: {add}");
        }
    }

    #[cfg(feature = "dns-providers")]
    #[tokio::test]
    async fn a_cached_target_is_looked_up_again_after_an_hour() {
        let (solver, domain, name, target) = unreachable_provider();
        lock(&solver.inner.targets).insert(name.clone(), Cached::new(target.clone()));
        // Fresh: used without a lookup (the provider's server is closed).
        assert_eq!(solver.target(&domain, "present").await.unwrap(), target);
        let cached = Cached::new(target);
        assert!(cached.fresh_at(cached.at + CACHED_FOR / 2).is_some());
        // An hour old: looked up again.
        assert!(cached.fresh_at(cached.at + CACHED_FOR).is_none());
    }

    #[cfg(feature = "dns-providers")]
    #[test]
    fn a_provider_takes_no_tsig_key_and_shows_no_credential() {
        let token = "cf-token-0123456789";
        let err = Dns01Solver::provider(DnsProvider::cloudflare(token))
            .tsig_key("k", SECRET, TsigAlgorithm::HmacSha256)
            .resolver("127.0.0.1:53".parse().unwrap())
            .build()
            .unwrap_err();
        assert!(matches!(&err, Error::Config { name, .. } if name == TSIG_METHOD));
        let solver = Dns01Solver::provider(DnsProvider::cloudflare(token))
            .resolver("127.0.0.1:53".parse().unwrap())
            .build()
            .unwrap();
        assert_eq!(solver.provider_name(), "cloudflare");
        assert_eq!(solver.server(), None);
        let shown = format!("{solver:?}");
        assert!(
            shown.contains("cloudflare") && !shown.contains(token),
            "{shown}"
        );
    }
}
