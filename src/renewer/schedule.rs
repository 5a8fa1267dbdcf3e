//! When cycles run across a cluster, and how an instance learns what the
//! others stored.
//!
//! Through the store's cluster (or this process's, when the store has
//! none), one instance at a time holds the cycle lease (renewed while the
//! cycle runs, so an instance that dies loses it after its TTL,
//! [`LEASE_TTL`](super::LEASE_TTL) by default), and the cluster marks when the last completed
//! scheduled cycle started ([`CYCLE_MARK`], on the store's clock), so the
//! cluster runs one cycle per maintenance interval, however many instances
//! call [`Renewer::run`] and whatever their clocks say. Each instance tells
//! its resolver what is stored at start-up ([`Renewer::load`]), then reads
//! the change feed every refresh interval ([`Renewer::refresh`]), serves
//! what the others stored, and stops serving what they removed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::{CycleReport, RenewalPolicy, Renewer};
use crate::resolver::CertResolver;
use crate::store::CertRecord;
use crate::Result;

/// The cluster's mark ([`Leases::mark_age`](crate::store::Leases::mark_age))
/// of when the last completed scheduled cycle started.
pub const CYCLE_MARK: &str = "maintenance-cycle";
/// Changes read from the feed in one call.
const FEED_PAGE: usize = 1000;

/// What [`Renewer::run`] keeps between rounds.
pub(super) struct Schedule {
    /// Wakes [`Renewer::run`] early when a domain is added.
    wake: Notify,
    /// How often [`Renewer::run`] reads the store's change feed.
    refresh_interval: StdDuration,
    /// Where this renewer stands in the store's change feed (`None`:
    /// nothing was loaded yet).
    feed_cursor: tokio::sync::Mutex<Option<u64>>,
    /// The maintenance interval of [`Renewer::run`], in seconds (0: not
    /// running): the spacing of a certificate's attempts.
    interval_secs: AtomicU64,
}

impl Schedule {
    pub(super) fn new(refresh_interval: StdDuration) -> Self {
        Self {
            wake: Notify::new(),
            refresh_interval,
            feed_cursor: tokio::sync::Mutex::new(None),
            interval_secs: AtomicU64::new(0),
        }
    }

    /// Wakes [`Renewer::run`], so a cycle runs soon: a domain was added,
    /// learned, or revoked.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The maintenance interval [`Renewer::run`] was given, if it runs.
    pub(super) fn interval(&self) -> Option<StdDuration> {
        match self.interval_secs.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(StdDuration::from_secs(secs)),
        }
    }
}

impl Renewer {
    /// Runs the maintenance cycle every `interval` (`_APP_MAINTENANCE_INTERVAL`)
    /// forever, and soon after a domain is added or the main domain is
    /// learned; reads the store's change feed every refresh interval (10 s
    /// by default, see
    /// [`RenewerBuilder::refresh_interval`](super::RenewerBuilder::refresh_interval)).
    ///
    /// Every instance sharing a store may call it: the store's cycle lease
    /// and the start of the last cycle it remembers make the cluster run one
    /// cycle per interval, so the per-cycle cap holds for the whole
    /// cluster. A cycle that fails as a whole (the store is down) is logged
    /// and tried again at the next refresh.
    ///
    /// Between cycles, each certificate is renewed at its own time: at
    /// every refresh, one instance (the one that gets the cycle lease)
    /// issues what came due since the last pass, so a renew date, a retry
    /// date ([`RenewalPolicy::retry_date`]) or a renewal window of the CA
    /// that falls between two cycles waits at most one refresh interval,
    /// not until the next cycle. Those off-cycle passes and the cycle
    /// share the cap: at most
    /// [`per_cycle`](RenewalPolicy::per_cycle) certificates from the start
    /// of one cycle to the next, counted in the cluster. Only cycles send
    /// [`Event::CycleFinished`](crate::events::Event::CycleFinished) (one
    /// report per interval); an off-cycle pass logs what it did, and each
    /// certificate's events are sent as always. Attempts are spaced by
    /// `interval`, or less for a certificate whose remaining life is too
    /// short for that ([`RenewalPolicy::retry_date`]).
    pub async fn run(&self, interval: StdDuration) -> Result<()> {
        self.start_on_demand();
        let interval = interval.max(StdDuration::from_secs(1));
        self.inner
            .schedule
            .interval_secs
            .store(interval.as_secs(), Ordering::Relaxed);
        let tick = self.inner.schedule.refresh_interval.min(interval);
        let mut woken = false;
        loop {
            if let Err(e) = self.refresh().await {
                warn!(error = %e, "could not read the store's change feed");
            }
            match self.scheduled_cycle(interval, woken).await {
                // Logged by the cycle or pass; subscribers got a cycle's
                // as `Event::CycleFinished`.
                Ok(_) => {}
                Err(e) => warn!(error = %e, code = e.code(), "maintenance cycle failed"),
            }
            woken = tokio::select! {
                _ = tokio::time::sleep(tick) => false,
                _ = self.inner.schedule.wake.notified() => {
                    debug!("cycle woken by a new domain");
                    true
                }
            };
        }
    }

    /// One round of [`run`](Self::run), for a server that schedules the
    /// renewer itself: if this instance gets the cycle lease, the
    /// maintenance cycle when the cluster's last one started `interval` ago
    /// or more (or never ran), else the renewals that came due since the
    /// last pass, within what the interval's cap leaves. Returns the
    /// report of what ran; `None` when it was not this instance's turn or
    /// nothing came due. Call it at least every few minutes, so
    /// certificates are renewed at their own time.
    pub async fn run_round(&self, interval: StdDuration) -> Result<Option<CycleReport>> {
        let interval = interval.max(StdDuration::from_secs(1));
        self.inner
            .schedule
            .interval_secs
            .store(interval.as_secs(), Ordering::Relaxed);
        self.scheduled_cycle(interval, false).await
    }

    /// The date rules in force: [`RenewalPolicy::retry_spacing`] is the
    /// interval of [`run`](Self::run) while it runs.
    pub(super) fn renewal_in_force(&self) -> RenewalPolicy {
        let mut renewal = self.inner.renewal;
        if let Some(interval) = self.inner.schedule.interval() {
            renewal.retry_spacing =
                time::Duration::try_from(interval).unwrap_or(renewal.retry_spacing);
        }
        renewal
    }

    /// Runs a cycle if this instance gets the cycle lease and the cluster's
    /// last scheduled cycle started `interval` ago or more (or `now` is true,
    /// after a domain was added), else the off-cycle renewals (see
    /// [`run`](Self::run)); `None` when it is not this instance's turn or
    /// nothing came due.
    pub(super) async fn scheduled_cycle(
        &self,
        interval: StdDuration,
        now: bool,
    ) -> Result<Option<CycleReport>> {
        let _one_at_a_time = self.inner.cycle.one_at_a_time().await;
        let Some(lease) = self.inner.leases.cycle().await? else {
            return Ok(None);
        };
        let started = self.inner.clock.now();
        let last_age = match self.cluster().mark_age(CYCLE_MARK).await {
            Ok(age) => age,
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        };
        let spaced = last_age.is_none_or(|age| age >= interval);
        if !spaced && !now {
            let report = self.off_cycle_body(last_age.unwrap_or_default()).await;
            lease.release().await;
            return report;
        }
        // Answers left by instances that died before cleaning up; the
        // validation path itself never writes.
        match self.cluster().purge_expired_challenges().await {
            Ok(0) => {}
            Ok(purged) => debug!(purged, "expired HTTP-01 answers purged"),
            Err(e) => warn!(error = %e, "could not purge expired HTTP-01 answers"),
        }
        // What was ordered since the interval after the last recorded
        // cycle ended: nothing, unless recording a cycle's start failed.
        let ordered_within = match last_age {
            Some(age) if spaced => Some(age.saturating_sub(interval)),
            _ => None,
        };
        let report = self.cycle_body(ordered_within).await;
        if report.is_ok() && spaced {
            // The mark is the cluster's clock at the cycle's start: the
            // store's now less how long this instance saw the cycle take.
            let took = StdDuration::try_from(self.inner.clock.now() - started).unwrap_or_default();
            if let Err(e) = self.cluster().set_mark(CYCLE_MARK, took).await {
                warn!(error = %e, "could not record the start of the cycle");
            }
        }
        lease.release().await;
        report.map(Some)
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
        *self.inner.schedule.feed_cursor.lock().await = Some(head);
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

    /// Reads the store's change feed since the last call (or since
    /// [`load`](Self::load)) and updates the resolver: a record saved by any
    /// instance is served anew, a removed one is no longer served. Returns
    /// how many changes were applied; 0 when the store has no change feed
    /// or there is no resolver. [`run`](Self::run) calls it every refresh
    /// interval.
    pub async fn refresh(&self) -> Result<usize> {
        let Some(resolver) = &self.inner.resolver else {
            return Ok(0);
        };
        let mut cursor_slot = self.inner.schedule.feed_cursor.lock().await;
        let Some(mut cursor) = *cursor_slot else {
            return Ok(0);
        };
        let mut applied = 0;
        loop {
            let page = self.cluster().changes_since(cursor, FEED_PAGE).await?;
            if page.reset {
                info!("the change feed moved past this instance; reloading every certificate");
                drop(cursor_slot);
                let loaded = self.load().await?;
                return Ok(loaded);
            }
            if page.changes.is_empty() {
                break;
            }
            for change in &page.changes {
                if change.deleted {
                    resolver.remove(&change.domain);
                } else {
                    match self.store().load(&change.domain).await? {
                        Some(record) => {
                            if !self.publish_stored(&record, resolver) {
                                resolver.remove(&change.domain);
                            }
                        }
                        None => {
                            resolver.remove(&change.domain);
                        }
                    }
                }
                applied += 1;
            }
            cursor = page.cursor;
            *cursor_slot = Some(cursor);
        }
        if applied > 0 {
            debug!(
                applied,
                "certificates refreshed from the store's change feed"
            );
        }
        Ok(applied)
    }

    /// Hands a stored certificate to the resolver, opening its key; `false`
    /// if there is none or it cannot be used (logged).
    fn publish_stored(&self, record: &CertRecord, resolver: &CertResolver) -> bool {
        let Some(cert) = &record.certificate else {
            return false;
        };
        let result = self
            .inner
            .vault
            .open_cert_key(&record.domain, cert)
            .and_then(|key| resolver.insert_stored(&record.domain, &cert.chain_pem, &key));
        if let Err(e) = &result {
            warn!(domain = %record.domain, error = %e, "stored certificate could not be loaded for serving");
        }
        result.is_ok()
    }
}
