//! The renewer's leases, in the store's cluster (or this process's when the
//! store has none): a domain's lease, so one task of one instance orders a
//! name at a time, and the cycle lease, so one instance runs a cycle at a
//! time.
//!
//! Every lease is short ([`LEASE_TTL`], or
//! [`RenewerBuilder::lease_ttl`](super::RenewerBuilder::lease_ttl)) and
//! renewed by a heartbeat every third of its TTL while its work goes on, so
//! a holder that died, hangs in a dropped task or lost its database frees
//! the name (or the cycle) within one TTL. A holder whose heartbeat finds
//! the lease taken goes on: every write of its work is fenced by the
//! record's version (compare-and-swap), so it cannot overwrite newer work.
//! A release that fails is tried again in the background, a few times with
//! back-off, while the lease has not expired anyway.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::store::Coordinator;
use crate::{Domain, Result};

/// The store's lease of the maintenance cycle.
pub(super) const CYCLE_LEASE: &str = "maintenance-cycle";

/// How long a lease (the cycle's, or a domain's) lasts without renewal,
/// unless set with
/// [`RenewerBuilder::lease_ttl`](super::RenewerBuilder::lease_ttl): a
/// minute. Its holder renews it every third of that while its work goes on.
pub const LEASE_TTL: StdDuration = StdDuration::from_secs(60);

/// The shortest lease TTL a renewer takes.
pub(super) const MIN_LEASE_TTL: StdDuration = StdDuration::from_secs(1);

/// The waits before each new try of a release that failed. A retry stops
/// once the lease has expired by itself.
const RELEASE_RETRIES: [StdDuration; 4] = [
    StdDuration::from_millis(500),
    StdDuration::from_secs(1),
    StdDuration::from_secs(2),
    StdDuration::from_secs(4),
];

/// Who holds which lease: this renewer's name in the cluster, and the
/// domains this process is issuing.
pub(super) struct Leases {
    cluster: Coordinator,
    /// Who this renewer is in the cluster's leases.
    instance_id: String,
    /// The domains being issued in this process.
    in_flight: Mutex<HashSet<Domain>>,
    /// How long a lease lasts without renewal.
    ttl: StdDuration,
}

impl Leases {
    pub(super) fn new(cluster: Coordinator, instance_id: String, ttl: StdDuration) -> Self {
        Self {
            cluster,
            instance_id,
            in_flight: Mutex::default(),
            ttl: ttl.max(MIN_LEASE_TTL),
        }
    }

    /// Who this renewer is in the cluster's leases.
    pub(super) fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// How long a lease lasts without renewal.
    pub(super) fn ttl(&self) -> StdDuration {
        self.ttl
    }

    /// The lease of `domain`, unless another task (or instance) holds it.
    /// Renewed in the background until released or dropped.
    pub(super) async fn domain(&self, domain: &Domain) -> Result<Option<DomainLease<'_>>> {
        let set = &self.in_flight;
        if !set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.clone())
        {
            debug!(%domain, "already being issued");
            return Ok(None);
        }
        let mut lease = DomainLease {
            set,
            domain: domain.clone(),
            held: None,
        };
        match self.acquire(domain_lease_name(domain)).await? {
            Some(held) => {
                lease.held = Some(held);
                Ok(Some(lease))
            }
            None => {
                debug!(%domain, "being issued by another instance");
                Ok(None)
            }
        }
    }

    /// The cycle lease: `None` when another instance holds it. Renewed in
    /// the background until released or dropped.
    pub(super) async fn cycle(&self) -> Result<Option<CycleLease>> {
        Ok(self
            .acquire(CYCLE_LEASE.into())
            .await?
            .map(|held| CycleLease { held: Some(held) }))
    }

    /// Takes the lease `name` and starts its heartbeat.
    async fn acquire(&self, name: String) -> Result<Option<HeldLease>> {
        let shared = SharedLease {
            cluster: self.cluster.clone(),
            name,
            holder: self.instance_id.clone(),
            ttl: self.ttl,
        };
        if !shared.renew().await? {
            return Ok(None);
        }
        let heartbeat = tokio::spawn(shared.clone().heartbeat());
        Ok(Some(HeldLease { shared, heartbeat }))
    }
}

/// Holds a domain's lease: in this process, and in the store's cluster (so
/// no other instance orders the same name meanwhile). The in-process part
/// is released when dropped, however the issuance ends; the cluster's part
/// by [`release`](Self::release), or by a task spawned on drop, or at worst
/// when it expires, one TTL after its last heartbeat.
pub(super) struct DomainLease<'a> {
    set: &'a Mutex<HashSet<Domain>>,
    domain: Domain,
    held: Option<HeldLease>,
}

impl DomainLease<'_> {
    /// Stops the heartbeat and releases the cluster's lease now.
    pub(super) async fn release(mut self) {
        if let Some(held) = self.held.take() {
            held.release().await;
        }
    }
}

impl Drop for DomainLease<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.domain);
        if let Some(held) = self.held.take() {
            held.release_on_drop();
        }
    }
}

/// The cycle lease, renewed in the background until released.
pub(super) struct CycleLease {
    held: Option<HeldLease>,
}

impl CycleLease {
    /// Stops the heartbeat and releases the lease now.
    pub(super) async fn release(mut self) {
        if let Some(held) = self.held.take() {
            held.release().await;
        }
    }
}

impl Drop for CycleLease {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.release_on_drop();
        }
    }
}

/// A lease held in the cluster, and its heartbeat.
struct HeldLease {
    shared: SharedLease,
    heartbeat: JoinHandle<()>,
}

impl HeldLease {
    async fn release(self) {
        self.heartbeat.abort();
        // Wait until the heartbeat is gone, so nothing of the work (its
        // handle of the store, above all) outlives it.
        let _ = self.heartbeat.await;
        self.shared.release().await;
    }

    /// Stops the heartbeat at once and releases in the background (when a
    /// runtime is there; otherwise the lease expires by itself).
    fn release_on_drop(self) {
        self.heartbeat.abort();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.shared.release());
        }
    }
}

/// A lease in the store's cluster (or this process's).
#[derive(Clone)]
struct SharedLease {
    cluster: Coordinator,
    name: String,
    holder: String,
    ttl: StdDuration,
}

impl SharedLease {
    /// Takes or renews the lease for one more TTL; `false` when another
    /// holder has it.
    async fn renew(&self) -> Result<bool> {
        self.cluster
            .get()
            .acquire_lease(&self.name, &self.holder, self.ttl)
            .await
    }

    /// Renews the lease every third of its TTL, until aborted or until
    /// another holder has it.
    async fn heartbeat(self) {
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            match self.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(lease = %self.name, "the lease went to another holder; this work goes on, its writes fenced by record versions");
                    return;
                }
                Err(e) => {
                    warn!(lease = %self.name, error = %e, "could not renew a lease; trying again");
                }
            }
        }
    }

    /// Releases the lease. When that fails, tries again in the background
    /// a few times with back-off, until the lease would have expired.
    async fn release(self) {
        let Err(e) = self.release_once().await else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(lease = %self.name, error = %e, "could not release a lease; it expires by itself");
            return;
        };
        warn!(lease = %self.name, error = %e, "could not release a lease; trying again");
        runtime.spawn(self.retry_release());
    }

    async fn release_once(&self) -> Result<bool> {
        self.cluster
            .get()
            .release_lease(&self.name, &self.holder)
            .await
    }

    async fn retry_release(self) {
        let started = tokio::time::Instant::now();
        for wait in RELEASE_RETRIES {
            if started.elapsed() + wait >= self.ttl {
                break;
            }
            tokio::time::sleep(wait).await;
            match self.release_once().await {
                Ok(_) => {
                    debug!(lease = %self.name, "lease released on a later try");
                    return;
                }
                Err(e) => {
                    warn!(lease = %self.name, error = %e, "could not release a lease; trying again")
                }
            }
        }
        warn!(lease = %self.name, "could not release a lease; it expires by itself");
    }
}

/// The cluster's name of `domain`'s lease: a hash, as domains can be
/// longer than a lease name may be.
fn domain_lease_name(domain: &Domain) -> String {
    let digest = Sha256::digest(domain.as_str().as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("domain-{hex}")
}
