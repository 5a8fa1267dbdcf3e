//! When cycles run across a cluster, and how an instance learns what the
//! others stored.
//!
//! Through the store's cluster (or this process's, when the store has
//! none), one instance at a time holds the cycle lease ([`CYCLE_LEASE`],
//! renewed while the cycle runs, so an instance that dies loses it after
//! [`CYCLE_LEASE_TTL`]), and the cluster marks when the last completed
//! scheduled cycle started ([`CYCLE_MARK`], on the store's clock), so the
//! cluster runs one cycle per maintenance interval, however many instances
//! call [`Renewer::run`] and whatever their clocks say. Each instance reads
//! the change feed every refresh interval and serves what the others
//! stored, and stops serving what they removed.

use std::time::Duration as StdDuration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::issue::SharedLease;
use super::{CycleReport, Renewer};
use crate::Result;

/// The store's lease of the maintenance cycle.
pub(super) const CYCLE_LEASE: &str = "maintenance-cycle";
/// How long the cycle lease lasts without renewal; the holder renews it
/// every third of that while its cycle runs.
pub const CYCLE_LEASE_TTL: StdDuration = StdDuration::from_secs(60);
/// The cluster's mark ([`Leases::mark_age`](crate::store::Leases::mark_age))
/// of when the last completed scheduled cycle started.
pub const CYCLE_MARK: &str = "maintenance-cycle";
/// Changes read from the feed in one call.
const FEED_PAGE: usize = 1000;

/// The cycle lease, renewed in the background until released.
pub(super) struct CycleLease {
    shared: Option<(SharedLease, JoinHandle<()>)>,
}

impl CycleLease {
    pub(super) async fn release(mut self) {
        if let Some((shared, renewal)) = self.shared.take() {
            renewal.abort();
            // Wait until the renewal task is gone, so nothing of the cycle
            // (its handle of the store, above all) outlives it.
            let _ = renewal.await;
            shared.release().await;
        }
    }
}

impl Drop for CycleLease {
    fn drop(&mut self) {
        if let Some((_, renewal)) = &self.shared {
            renewal.abort();
        }
    }
}

impl Renewer {
    /// The cycle lease: `None` when another instance holds it.
    pub(super) async fn cycle_lease(&self) -> Result<Option<CycleLease>> {
        let cluster = self.inner.cluster.clone();
        let holder = self.inner.instance_id.clone();
        if !cluster
            .get()
            .acquire_lease(CYCLE_LEASE, &holder, CYCLE_LEASE_TTL)
            .await?
        {
            return Ok(None);
        }
        let renewal = {
            let (cluster, holder) = (cluster.clone(), holder.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CYCLE_LEASE_TTL / 3).await;
                    match cluster
                        .get()
                        .acquire_lease(CYCLE_LEASE, &holder, CYCLE_LEASE_TTL)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            warn!("the cycle lease went to another instance; this cycle's writes are fenced by record versions");
                            return;
                        }
                        Err(e) => warn!(error = %e, "could not renew the cycle lease"),
                    }
                }
            })
        };
        let shared = SharedLease {
            cluster,
            name: CYCLE_LEASE.into(),
            holder,
        };
        Ok(Some(CycleLease {
            shared: Some((shared, renewal)),
        }))
    }

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
    pub async fn run(&self, interval: StdDuration) -> Result<()> {
        self.start_on_demand();
        let interval = interval.max(StdDuration::from_secs(1));
        let tick = self.inner.refresh_interval.min(interval);
        let mut woken = false;
        loop {
            if let Err(e) = self.refresh().await {
                warn!(error = %e, "could not read the store's change feed");
            }
            match self.scheduled_cycle(interval, woken).await {
                // Subscribers got it as `Event::CycleFinished`.
                Ok(Some(report)) => info!(%report, "scheduled cycle done"),
                Ok(None) => {}
                Err(e) => warn!(error = %e, code = e.code(), "maintenance cycle failed"),
            }
            woken = tokio::select! {
                _ = tokio::time::sleep(tick) => false,
                _ = self.inner.wake.notified() => {
                    debug!("cycle woken by a new domain");
                    true
                }
            };
        }
    }

    /// Runs a cycle if this instance gets the cycle lease and the cluster's
    /// last scheduled cycle started `interval` ago or more (or `now` is true,
    /// after a domain was added); `None` when it is not this instance's turn.
    pub(super) async fn scheduled_cycle(
        &self,
        interval: StdDuration,
        now: bool,
    ) -> Result<Option<CycleReport>> {
        let _one_at_a_time = self.inner.cycle.lock().await;
        let Some(lease) = self.cycle_lease().await? else {
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
            lease.release().await;
            return Ok(None);
        }
        // Answers left by instances that died before cleaning up; the
        // validation path itself never writes.
        match self.cluster().purge_expired_challenges().await {
            Ok(0) => {}
            Ok(purged) => debug!(purged, "expired HTTP-01 answers purged"),
            Err(e) => warn!(error = %e, "could not purge expired HTTP-01 answers"),
        }
        let report = self.cycle_body().await;
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
        let mut cursor_slot = self.inner.feed_cursor.lock().await;
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
}
