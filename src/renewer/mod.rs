//! The maintenance cycle: which certificates to (re)issue, and doing it.
//!
//! - [`Renewer`]: registration of domains, the cycle, manual generation.
//! - [`RenewalPolicy`]: the date and attempt rules.
//! - [`DomainPolicy`]: which names this server may get certificates for.
//! - [`CycleReport`]: what a cycle did, typed.
//! - [`OnDemand`]: issuance started by a handshake, and its limits.

mod builder;
mod domains;
mod issue;
mod notice;
mod on_demand;
mod policy;
mod report;
mod schedule;

pub use builder::RenewerBuilder;
pub use domains::{DomainPolicy, MAIN_DOMAIN_META_KEY};
pub use notice::PASSED_OVER_LISTED;
pub use on_demand::{Decision, OnDemand};
pub use policy::RenewalPolicy;
pub use report::{CycleFailure, CycleReport, SkipReason};
pub use schedule::{CYCLE_LEASE_TTL, CYCLE_MARK};

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::cipher::{Plaintext, SecretCipher};
use crate::clock::Clock;
use crate::config::Setting;
use crate::events::{Event, EventBus, Subscription};
use crate::issuer::{IssuedChain, Issuer, RevocationReason, Revoker};
use crate::resolver::CertResolver;
use crate::store::{CertRecord, CertStore, ClusterStore, Coordinator, StoredCert};
use crate::vault::Vault;
use crate::{Domain, Error, Result};
use issue::Outcome;

/// Keeps certificates issued and renewed.
///
/// Composes a [`Vault`] (a [`CertStore`] and the [`SecretCipher`] that seals
/// private keys before they reach it), one [`Issuer`] (by default an
/// [`IssuerRouter`](crate::issuer::IssuerRouter): an ACME issuer for public
/// names in production, a self-signed issuer for local names and
/// development), a [`DomainPolicy`] and a [`Clock`]. Cheap to clone; clones
/// share everything.
#[derive(Clone)]
pub struct Renewer {
    inner: Arc<Inner>,
}

struct Inner {
    vault: Vault,
    /// Every name's issuer (an [`IssuerRouter`](crate::issuer::IssuerRouter)
    /// by default).
    issuer: Arc<dyn Issuer>,
    /// Revokes on request ([`Renewer::revoke`]).
    revoker: Option<Arc<dyn Revoker>>,
    policy: DomainPolicy,
    clock: Arc<dyn Clock>,
    renewal: RenewalPolicy,
    concurrency: usize,
    issue_timeout: StdDuration,
    resolver: Option<CertResolver>,
    in_flight: Mutex<HashSet<Domain>>,
    /// One cycle at a time per renewer, so two never pick the same records.
    cycle: tokio::sync::Mutex<()>,
    /// Wakes [`Renewer::run`] early when a domain is added.
    wake: Notify,
    /// Who this renewer is in the store's leases.
    instance_id: String,
    /// How often [`Renewer::run`] reads the store's change feed.
    refresh_interval: StdDuration,
    /// Where this renewer stands in the store's change feed (`None`: the
    /// store has none, or nothing was loaded yet).
    feed_cursor: tokio::sync::Mutex<Option<u64>>,
    /// The store's cluster, or this process's when it has none.
    cluster: Coordinator,
    /// The on-demand queue and rules, until the on-demand task takes them.
    on_demand: Mutex<Option<on_demand::Pending>>,
    /// Every event subscriber's queue.
    events: EventBus,
}

impl fmt::Debug for Renewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Renewer")
            .field("vault", &i.vault)
            .field("issuer", &i.issuer)
            .field("policy", &i.policy)
            .field("renewal", &i.renewal)
            .field("concurrency", &i.concurrency)
            .field("instance_id", &i.instance_id)
            .finish_non_exhaustive()
    }
}

impl Renewer {
    /// Starts building a renewer over `store`, sealing keys with `cipher`.
    pub fn builder(store: Arc<dyn CertStore>, cipher: Arc<dyn SecretCipher>) -> RenewerBuilder {
        RenewerBuilder::new(Vault::new(store, cipher))
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CertStore> {
        self.inner.vault.store()
    }

    /// What this renewer coordinates through: the store's
    /// [`ClusterStore`], or the [`LocalCluster`](crate::store::LocalCluster)
    /// it plugged in when the store offers none.
    pub fn cluster(&self) -> &dyn ClusterStore {
        self.inner.cluster.get()
    }

    /// The vault (store and cipher).
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The domain policy (main and custom domains).
    pub fn policy(&self) -> &DomainPolicy {
        &self.inner.policy
    }

    /// The date rules in force.
    pub fn renewal_policy(&self) -> RenewalPolicy {
        self.inner.renewal
    }

    /// A channel of the renewer's [`Event`]s from now on, with a queue of
    /// `capacity` events (at least 1); see [`events`](crate::events). The
    /// renewer never waits for it: when the queue is full, events are
    /// dropped for this subscription, counted, and told by
    /// [`Event::Lagged`].
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        self.inner
            .events
            .subscribe(capacity, format!("subscription-{capacity}"))
    }

    /// Events dropped so far, over every subscriber, because a subscriber's
    /// queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.inner.events.dropped()
    }

    pub(super) fn emit(&self, event: Event) {
        self.inner.events.emit(event);
    }

    /// Tells the resolver (when there is one) which domains are stored, and
    /// sets the main domain as its fallback. Call once at start-up. Returns
    /// how many domains are stored.
    ///
    /// No other certificate is read here, so start-up does not grow with
    /// the number of certificates: the resolver loads each on its first
    /// handshake, and preloads them in the background up to its capacity
    /// (see [`CertResolver`]). The main domain's certificate, which serves
    /// handshakes for unknown names, is loaded before this returns. A
    /// record that cannot be read is logged when its name is first served,
    /// and that name gets the fallback, so one damaged record never stops a
    /// server from starting.
    ///
    /// The main domain gets a record, due now, if it has none and may get a
    /// certificate (see [`run_cycle`](Self::run_cycle)), so the first cycle
    /// issues it without any call from the server.
    pub async fn load(&self) -> Result<usize> {
        self.start_on_demand();
        let store = self.store();
        // Where the change feed stands, before reading: what changes while
        // loading is replayed by the next refresh.
        let head = self.cluster().changes_since(u64::MAX, 0).await?.cursor;
        *self.inner.feed_cursor.lock().await = Some(head);
        if let Some(e) = self.ensure_main_record().await? {
            warn!(error = %e, "the main domain cannot get a certificate");
        }
        let domains = store.list().await?;
        if let Some(resolver) = &self.inner.resolver {
            resolver.set_stored(&domains);
            if let Some(main) = self.inner.policy.main_domain().await? {
                resolver.set_fallback(Some(main.clone()));
                resolver.prepare(Some(main.as_str())).await;
            }
            resolver.preload();
        }
        Ok(domains.len())
    }

    /// Adds a custom domain the operator owns: stores a record for it, due
    /// now, unless the store already has one, and wakes [`run`](Self::run)
    /// so the certificate is issued without waiting for the next interval.
    /// Every instance sharing the store sees the domain from then on.
    pub async fn add_domain(&self, domain: &Domain) -> Result<()> {
        self.ensure_record(domain).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Removes a custom domain and its stored certificate; `true` if stored.
    pub async fn remove_domain(&self, domain: &Domain) -> Result<bool> {
        self.remove_domain_revoking(domain, None).await
    }

    /// [`remove_domain`](Self::remove_domain), revoking its certificate
    /// first when `revoke` gives a reason (the operator no longer serves
    /// the name: [`RevocationReason::CessationOfOperation`]). The record is
    /// removed only once the CA revoked the certificate; a failed revocation
    /// leaves everything as it was and returns the error. A record without
    /// a certificate, or with a self-signed one, is removed with nothing to
    /// revoke.
    pub async fn remove_domain_revoking(
        &self,
        domain: &Domain,
        revoke: Option<RevocationReason>,
    ) -> Result<bool> {
        let record = self.store().load(domain).await?;
        if let Some(reason) = revoke {
            if let Some(cert) = record.as_ref().and_then(|r| r.certificate.as_ref()) {
                if cert.issuer != crate::cert::IssuerKind::SELF_SIGNED {
                    self.revoke_stored(domain, cert, reason).await?;
                }
            }
        }
        if let Some(resolver) = &self.inner.resolver {
            resolver.remove(domain);
        }
        let removed = self.store().delete(domain).await?;
        if removed {
            if let Some(cert) = record.as_ref().and_then(|r| r.certificate.as_ref()) {
                self.forget_expiry_notice(domain, cert).await;
            }
            self.emit(Event::DomainRemoved {
                domain: domain.clone(),
            });
        }
        Ok(removed)
    }

    /// Revokes `domain`'s stored certificate for `reason` through the
    /// renewer's [`Revoker`] ([`RenewerBuilder::revoker`]); the record stays,
    /// due now, so the next cycle issues a new certificate (a revoked one
    /// must not be served: it is removed from the resolver at once).
    /// Fails with [`Error::NotFound`] when there is no certificate, with
    /// [`Error::Config`] when no revoker is set, and with the revoker's
    /// error ([`Error::NotRevocable`], the CA's problem) otherwise.
    pub async fn revoke(&self, domain: &Domain, reason: RevocationReason) -> Result<CertRecord> {
        let not_found = || Error::NotFound {
            what: "certificate",
            key: domain.to_string(),
        };
        let record = self.store().load(domain).await?.ok_or_else(not_found)?;
        let cert = record.certificate.as_ref().ok_or_else(not_found)?;
        self.revoke_stored(domain, cert, reason).await?;
        if let Some(resolver) = &self.inner.resolver {
            resolver.remove(domain);
        }
        let now = self.inner.clock.now();
        let mut current = record;
        for _ in 0..3 {
            let mut next = current.clone();
            next.certificate = None;
            next.renew_date = now;
            next.ari = None;
            next.push_log(crate::store::LogEntry {
                time: now,
                step: "revoke".into(),
                success: true,
                message: format!("certificate revoked ({})", reason.as_str()),
            });
            match self.store().save(&next).await {
                Ok(version) => {
                    next.version = version;
                    self.inner.wake.notify_one();
                    return Ok(next);
                }
                Err(Error::Conflict { .. }) => {
                    current = self.store().load(domain).await?.ok_or_else(not_found)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::InProgress {
            domain: domain.clone(),
            reason: SkipReason::KeptChanging,
        })
    }

    async fn revoke_stored(
        &self,
        domain: &Domain,
        cert: &StoredCert,
        reason: RevocationReason,
    ) -> Result<()> {
        let revoker = self.inner.revoker.as_ref().ok_or_else(|| {
            Error::config(
                "RenewerBuilder::revoker",
                "no revoker is set, so no certificate can be revoked",
            )
        })?;
        let chain = IssuedChain::new(cert.chain_pem.clone(), cert.issuer.clone());
        revoker.revoke(domain, &chain, reason).await?;
        info!(%domain, reason = reason.as_str(), "certificate revoked");
        Ok(())
    }

    /// Tells the renewer a request arrived for `domain` (for example the
    /// `Host` of an HTTP request or a TLS handshake's server name). With a
    /// learned main domain (`_APP_DOMAIN` unset or `localhost`), the first
    /// public domain seen becomes the main domain: it is remembered in the
    /// store, registered, served as the resolver's fallback, and
    /// [`run`](Self::run) is woken to issue it. Returns whether `domain` may
    /// get a certificate.
    ///
    /// Cheap for the usual request: a domain the resolver already serves,
    /// or the known main domain, is answered from memory.
    pub async fn observe(&self, domain: &Domain) -> Result<bool> {
        if let Some(resolver) = &self.inner.resolver {
            if resolver.serves(domain) {
                return Ok(true);
            }
        }
        let policy = &self.inner.policy;
        let before = policy.main_domain().await?;
        if before.as_ref() == Some(domain) {
            return Ok(true);
        }
        let unknown = before.as_ref().is_none_or(|d| d.as_str() == "localhost");
        if policy.learns_main_domain() && unknown {
            let main = policy.observe(domain).await?;
            if main.as_ref() == Some(domain) {
                self.ensure_record(domain).await?;
                if let Some(resolver) = &self.inner.resolver {
                    resolver.set_fallback(Some(domain.clone()));
                }
                self.inner.wake.notify_one();
                return Ok(true);
            }
        }
        Ok(policy.check(domain).await.is_ok())
    }

    /// [`observe`](Self::observe) for what a server has in hand: an HTTP
    /// `Host` header or `:authority` (`example.com:443`, `[::1]:8443`), or
    /// a TLS server name, read with [`Domain::from_host`]. A host that is
    /// not a valid name is [`Error::InvalidDomain`].
    pub async fn observe_host(&self, host: &str) -> Result<bool> {
        self.observe(&Domain::from_host(host)?).await
    }

    /// Makes sure the main domain in force has a record, so the cycle
    /// issues its certificate: a new record, due now, when there is none.
    /// Nothing to do while no main domain is set or learned. `Some` with
    /// the reason when the main domain cannot get a certificate: a public
    /// name in production without an ACME issuer, where each attempt would
    /// only fail.
    async fn ensure_main_record(&self) -> Result<Option<Error>> {
        let policy = &self.inner.policy;
        let Some(main) = policy.main_domain().await? else {
            return Ok(None);
        };
        // `localhost` configured means "learn the main domain": it stands
        // for no domain of its own until a request names one.
        if policy.learns_main_domain() && main.as_str() == "localhost" {
            return Ok(None);
        }
        if let Err(e) = self.inner.issuer.check(&main) {
            return Ok(Some(e));
        }
        self.ensure_record(&main).await?;
        Ok(None)
    }

    /// The stored record of `domain`, or a new one stored now, due now.
    async fn ensure_record(&self, domain: &Domain) -> Result<CertRecord> {
        if let Some(record) = self.store().load(domain).await? {
            return Ok(record);
        }
        self.create_record(domain).await
    }

    /// Stores a new record for `domain`, due now; when another caller
    /// stored one first, that one.
    async fn create_record(&self, domain: &Domain) -> Result<CertRecord> {
        let store = self.store();
        let mut record = CertRecord::new(domain.clone(), self.inner.clock.now());
        match store.save(&record).await {
            Ok(version) => {
                record.version = version;
                info!(%domain, "domain registered for the next maintenance cycle");
                self.emit(Event::DomainAdded {
                    domain: domain.clone(),
                });
                Ok(record)
            }
            // Someone registered it first: theirs is as good.
            Err(Error::Conflict { .. }) => {
                store.load(domain).await?.ok_or_else(|| Error::NotFound {
                    what: "certificate record",
                    key: domain.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// One maintenance cycle now: takes up to `per_cycle` due certificates
    /// with fewer than `max_attempts` failures, oldest renew date first, and
    /// issues them with bounded concurrency. A failure is recorded on its
    /// certificate (attempts + 1, renew date now, a log line) and the cycle
    /// goes on; only a failure of the store itself to list what is due is an
    /// error of the cycle.
    ///
    /// The main domain (configured, or learned) is part of every cycle: when
    /// it has no record (a first start, or after
    /// [`remove_domain`](Self::remove_domain)), one is stored, due now,
    /// before the due certificates are picked, as long as it may get a
    /// certificate: a public name in production with an ACME issuer, a local
    /// name, or any name in development.
    ///
    /// Cycles of one renewer run one at a time; a second call waits for the
    /// first to finish. With a store that keeps leases, one instance of a
    /// cluster runs a cycle at a time: while another holds the cycle lease,
    /// this fails with [`Error::LeaseHeld`]. [`run`](Self::run) also spaces
    /// cycles by the maintenance interval across the cluster.
    pub async fn run_cycle(&self) -> Result<CycleReport> {
        let _one_at_a_time = self.inner.cycle.lock().await;
        let Some(lease) = self.cycle_lease().await? else {
            return Err(Error::LeaseHeld {
                lease: schedule::CYCLE_LEASE.into(),
            });
        };
        let report = self.cycle_body().await;
        lease.release().await;
        report
    }

    /// The cycle itself, under the cycle lease (when the store keeps leases).
    async fn cycle_body(&self) -> Result<CycleReport> {
        match self.ensure_main_record().await {
            Ok(None) => {}
            Ok(Some(e)) => debug!(error = %e, "the main domain cannot get a certificate"),
            // The store is failing: listing what is due says so below.
            Err(e) => warn!(error = %e, "could not register the main domain"),
        }
        let started = std::time::Instant::now();
        let now = self.inner.clock.now();
        let renewal = self.inner.renewal;
        // A few more than the cap, to name what the cap leaves for later.
        let mut due = self
            .store()
            .due(
                now,
                renewal.max_attempts,
                renewal.per_cycle.saturating_add(PASSED_OVER_LISTED + 1),
            )
            .await?;
        let mut report = CycleReport {
            left_for_later: notice::left_for_later(&mut due, renewal.per_cycle),
            ..CycleReport::default()
        };
        info!(due = due.len(), "maintenance cycle started");
        let semaphore = Arc::new(Semaphore::new(self.inner.concurrency));
        let gate = Arc::new(CaGate::new(renewal.max_ca_failures));
        let mut tasks = JoinSet::new();
        for entry in due {
            let this = self.clone();
            let semaphore = semaphore.clone();
            let gate = gate.clone();
            let span = tracing::info_span!("renew", domain = %entry.domain);
            tasks.spawn(
                async move {
                    let _permit = semaphore.acquire_owned().await;
                    let domain = entry.domain;
                    // Once the CA is down or asks to slow down, the rest of
                    // the cycle waits for the next one.
                    if let Some(reason) = gate.stopped() {
                        return (domain, Outcome::Skipped(reason));
                    }
                    let outcome = this.renew(&domain).await;
                    gate.record(&outcome);
                    (domain, outcome)
                }
                .instrument(span),
            );
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((domain, Outcome::Issued(_))) => report.issued.push(domain),
                Ok((domain, Outcome::Failed(e))) => report.failed.push(CycleFailure {
                    domain,
                    error: Arc::new(e),
                }),
                Ok((domain, Outcome::Deferred(e))) => report.deferred.push(CycleFailure {
                    domain,
                    error: Arc::new(e),
                }),
                Ok((domain, Outcome::Skipped(reason))) => report.skipped.push((domain, reason)),
                Err(e) => warn!(error = %e, "renewal task ended abnormally"),
            }
        }
        report.stopped = gate.stopped();
        if let Some(reason) = report.stopped {
            warn!(%reason, "the cycle stopped ordering; the rest waits for the next cycle");
        }
        report.deferred.sort_by(|a, b| a.domain.cmp(&b.domain));
        report.issued.sort();
        report.failed.sort_by(|a, b| a.domain.cmp(&b.domain));
        report.skipped.sort();
        report.at_attempt_limit = self.passed_over_at_limit().await;
        report.expiring_soon = self.notice_expiring(&report).await;
        info!(%report, "maintenance cycle finished");
        self.emit(Event::CycleFinished {
            report: Arc::new(report.clone()),
            duration: started.elapsed(),
        });
        Ok(report)
    }

    /// Manual generation: issues a certificate for `domain` (the main domain
    /// when `None`) now, whatever its renew date and however many attempts
    /// failed before. The domain must still be allowed by the policy: the
    /// main domain (registered if it has no record yet) or a stored custom
    /// domain; anything else is [`Error::DomainNotAllowed`]. Returns the
    /// stored record, with its log; a failure is recorded on the record and
    /// returned as the error.
    pub async fn issue_now(&self, domain: Option<&Domain>) -> Result<CertRecord> {
        let policy = &self.inner.policy;
        let main = policy.main_domain().await?;
        let domain = match domain {
            Some(d) => d.clone(),
            None => main.clone().ok_or_else(|| {
                Error::config(
                    Setting::Domain.name(),
                    "no main domain is set or learned yet; name a domain",
                )
            })?,
        };
        let Some(lease) = self.lease(&domain).await? else {
            return Err(Error::InProgress {
                domain,
                reason: SkipReason::AlreadyBeingIssued,
            });
        };
        // The one read of the record, under the lease.
        let record = match self.store().load(&domain).await? {
            Some(record) => record,
            None if policy.is_main(&domain, main.as_ref()) => self.create_record(&domain).await?,
            None => return Err(Error::DomainNotAllowed { domain, main }),
        };
        let outcome = self.issue_leased(record, true).await;
        lease.release().await;
        match outcome {
            Outcome::Issued(record) => Ok(*record),
            Outcome::Failed(error) | Outcome::Deferred(error) => Err(error),
            Outcome::Skipped(reason) => Err(Error::InProgress { domain, reason }),
        }
    }

    /// The stored certificate of `domain` with its private key opened, for
    /// serving. `None` when nothing was issued yet.
    pub async fn certificate(&self, domain: &Domain) -> Result<Option<(StoredCert, Plaintext)>> {
        let Some(record) = self.store().load(domain).await? else {
            return Ok(None);
        };
        let Some(cert) = record.certificate else {
            return Ok(None);
        };
        let key = self.inner.vault.open_cert_key(domain, &cert)?;
        Ok(Some((cert, key)))
    }
}

/// Stops a cycle's ordering when the CA is down (several CA failures in a
/// row) or rate limits.
struct CaGate {
    max_failures: u32,
    failures_in_a_row: std::sync::atomic::AtomicU32,
    stopped: Mutex<Option<SkipReason>>,
}

impl CaGate {
    fn new(max_failures: u32) -> Self {
        Self {
            max_failures: max_failures.max(1),
            failures_in_a_row: std::sync::atomic::AtomicU32::new(0),
            stopped: Mutex::new(None),
        }
    }

    fn stopped(&self) -> Option<SkipReason> {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self, reason: SkipReason) {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
    }

    fn record(&self, outcome: &Outcome) {
        use std::sync::atomic::Ordering;
        match outcome {
            Outcome::Deferred(e) if e.is_rate_limited() => self.stop(SkipReason::RateLimited),
            Outcome::Deferred(e) if e.is_settings_error() => self.stop(SkipReason::Misconfigured),
            Outcome::Deferred(_) => {
                let in_a_row = self.failures_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
                if in_a_row >= self.max_failures {
                    self.stop(SkipReason::CaUnavailable);
                }
            }
            // The CA answered about the domain: it is up.
            Outcome::Issued(_) | Outcome::Failed(_) => {
                self.failures_in_a_row.store(0, Ordering::SeqCst)
            }
            // The account's order budget is spent: the rest waits too.
            Outcome::Skipped(SkipReason::OrderBudget) => self.stop(SkipReason::OrderBudget),
            Outcome::Skipped(_) => {}
        }
    }
}
