//! The renewer's leases, in the store's cluster (or this process's when the
//! store has none): a domain's lease, so one task of one instance orders a
//! name at a time, and the cycle lease, so one instance runs a cycle at a
//! time.

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
/// How long the cycle lease lasts without renewal; the holder renews it
/// every third of that while its cycle runs.
pub const CYCLE_LEASE_TTL: StdDuration = StdDuration::from_secs(60);

/// Who holds which lease: this renewer's name in the cluster, and the
/// domains this process is issuing.
pub(super) struct Leases {
    cluster: Coordinator,
    /// Who this renewer is in the cluster's leases.
    instance_id: String,
    /// The domains being issued in this process.
    in_flight: Mutex<HashSet<Domain>>,
    /// How long a domain's lease lasts: as long as one issuance may
    /// ([`RenewerBuilder::issue_timeout`](super::RenewerBuilder::issue_timeout))
    /// and a minute more.
    domain_ttl: StdDuration,
}

impl Leases {
    pub(super) fn new(
        cluster: Coordinator,
        instance_id: String,
        issue_timeout: StdDuration,
    ) -> Self {
        Self {
            cluster,
            instance_id,
            in_flight: Mutex::default(),
            domain_ttl: issue_timeout + StdDuration::from_secs(60),
        }
    }

    /// Who this renewer is in the cluster's leases.
    pub(super) fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The lease of `domain`, unless another task (or instance) holds it.
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
            shared: None,
        };
        let cluster = self.cluster.clone();
        let name = domain_lease_name(domain);
        let holder = self.instance_id.clone();
        if cluster
            .get()
            .acquire_lease(&name, &holder, self.domain_ttl)
            .await?
        {
            lease.shared = Some(SharedLease {
                cluster,
                name,
                holder,
            });
            Ok(Some(lease))
        } else {
            debug!(%domain, "being issued by another instance");
            Ok(None)
        }
    }

    /// The cycle lease: `None` when another instance holds it. Renewed in
    /// the background every third of [`CYCLE_LEASE_TTL`] until released.
    pub(super) async fn cycle(&self) -> Result<Option<CycleLease>> {
        let cluster = self.cluster.clone();
        let holder = self.instance_id.clone();
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
}

/// Holds a domain's lease: in this process, and in the store's cluster (so
/// no other instance orders the same name meanwhile). The in-process part
/// is released when dropped, however the issuance ends; the cluster's part
/// by [`release`](Self::release), or by a task spawned on drop, or at worst
/// when it expires.
pub(super) struct DomainLease<'a> {
    set: &'a Mutex<HashSet<Domain>>,
    domain: Domain,
    shared: Option<SharedLease>,
}

impl DomainLease<'_> {
    /// Releases the cluster's lease now.
    pub(super) async fn release(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release().await;
        }
    }
}

impl Drop for DomainLease<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.domain);
        if let Some(shared) = self.shared.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(shared.release());
            }
        }
    }
}

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

/// A lease held in the store's cluster (or this process's).
struct SharedLease {
    cluster: Coordinator,
    name: String,
    holder: String,
}

impl SharedLease {
    async fn release(self) {
        if let Err(e) = self
            .cluster
            .get()
            .release_lease(&self.name, &self.holder)
            .await
        {
            warn!(lease = %self.name, error = %e, "could not release a lease; it expires by itself");
        }
    }
}

/// The cluster's name of `domain`'s lease: a hash, as domains can be
/// longer than a lease name may be.
fn domain_lease_name(domain: &Domain) -> String {
    let digest = Sha256::digest(domain.as_str().as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("domain-{hex}")
}
