//! A fault double of a store: a [`MemoryStore`] (with its cluster) whose
//! chosen methods fail with [`Error::Store`] while their switch is on, and
//! which counts the lease calls and budget units it forwards. For the
//! renewer's rules under a failing store; the stores themselves are tested
//! against real databases in tests/store.
//!
//! Included by the renewer tests and, through a `#[path]`, by
//! tests/cluster/cluster_rules.rs.
// Each test crate uses a different part of it.
#![allow(dead_code)]
// `pub` for the test crates that include it.
#![allow(unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use certkeeper::store::{
    AccountRecord, Budgets, CertRecord, CertStore, ChallengeAnswers, ChangeFeed, Changes,
    ClusterStore, DueEntry, Leases, MemoryStore, PassedOver,
};
use certkeeper::{Domain, Error, Result};
use time::OffsetDateTime;

/// The methods a [`FaultStore`] can make fail.
#[derive(Debug, Default)]
pub struct Faults {
    /// `load` of a record.
    pub load: AtomicBool,
    /// `save` of a record: every save while on.
    pub save: AtomicBool,
    /// `save` of a record: the next this many saves.
    pub save_times: AtomicUsize,
    /// `save` of a record: the next this many saves land, then report a
    /// failure (an answer lost on the way back).
    pub save_lost_times: AtomicUsize,
    /// `load_account`.
    pub load_account: AtomicBool,
    /// `save_account`.
    pub save_account: AtomicBool,
    /// The cluster's `release_lease`: every release while on.
    pub release: AtomicBool,
    /// The cluster's `release_lease`: the next this many releases.
    pub release_times: AtomicUsize,
}

/// A [`MemoryStore`] with [`Faults`], and a record of the cluster calls.
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<MemoryStore>,
    pub faults: Arc<Faults>,
    cluster: FaultCluster,
}

/// The cluster of a [`FaultStore`]: the memory store's, with the release
/// faults, counting calls.
#[derive(Debug)]
pub struct FaultCluster {
    inner: Arc<MemoryStore>,
    faults: Arc<Faults>,
    /// `acquire_lease` calls per holder (granted or not).
    acquires: Mutex<HashMap<String, usize>>,
    /// `release_lease` calls, failed ones included.
    releases: AtomicUsize,
    /// Every budget key a unit was taken of.
    budgets_taken: Mutex<Vec<String>>,
}

fn injected(what: &str) -> Error {
    Error::store("memory", format!("injected fault: {what} failed"))
}

/// Whether a fault is on: the switch, or one of the remaining `times`.
fn fires(switch: &AtomicBool, times: &AtomicUsize) -> bool {
    switch.load(Ordering::SeqCst)
        || times
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
}

impl FaultStore {
    /// Over `inner`, no fault on.
    pub fn new(inner: MemoryStore) -> Arc<Self> {
        let inner = Arc::new(inner);
        let faults = Arc::new(Faults::default());
        Arc::new(Self {
            cluster: FaultCluster {
                inner: inner.clone(),
                faults: faults.clone(),
                acquires: Mutex::default(),
                releases: AtomicUsize::new(0),
                budgets_taken: Mutex::default(),
            },
            inner,
            faults,
        })
    }

    /// The cluster with its counters.
    pub fn fault_cluster(&self) -> &FaultCluster {
        &self.cluster
    }
}

impl FaultCluster {
    /// How many times `holder` asked for (or renewed) a lease.
    pub fn acquires_by(&self, holder: &str) -> usize {
        self.acquires
            .lock()
            .unwrap()
            .get(holder)
            .copied()
            .unwrap_or(0)
    }

    /// How many releases were asked, failed ones included.
    pub fn releases(&self) -> usize {
        self.releases.load(Ordering::SeqCst)
    }

    /// The keys of every budget unit taken.
    pub fn budgets_taken(&self) -> Vec<String> {
        self.budgets_taken.lock().unwrap().clone()
    }

    fn inner(&self) -> &dyn ClusterStore {
        self.inner
            .cluster()
            .expect("the memory store has a cluster")
    }
}

#[async_trait]
impl CertStore for FaultStore {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        if self.faults.load.load(Ordering::SeqCst) {
            return Err(injected("load"));
        }
        self.inner.load(domain).await
    }
    async fn save(&self, record: &CertRecord) -> Result<u64> {
        if fires(&self.faults.save, &self.faults.save_times) {
            return Err(injected("save"));
        }
        if fires(&AtomicBool::new(false), &self.faults.save_lost_times) {
            self.inner.save(record).await?;
            return Err(injected("save's answer"));
        }
        self.inner.save(record).await
    }
    async fn delete(&self, domain: &Domain) -> Result<bool> {
        self.inner.delete(domain).await
    }
    async fn list(&self) -> Result<Vec<Domain>> {
        self.inner.list().await
    }
    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<DueEntry>> {
        self.inner.due(now, max_attempts, limit).await
    }
    async fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> Result<PassedOver> {
        self.inner.at_attempt_limit(max_attempts, limit).await
    }
    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        if self.faults.load_account.load(Ordering::SeqCst) {
            return Err(injected("load_account"));
        }
        self.inner.load_account(id).await
    }
    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        if self.faults.save_account.load(Ordering::SeqCst) {
            return Err(injected("save_account"));
        }
        self.inner.save_account(record).await
    }
    async fn delete_account(&self, id: &str) -> Result<bool> {
        self.inner.delete_account(id).await
    }
    async fn list_accounts(&self) -> Result<Vec<String>> {
        self.inner.list_accounts().await
    }
    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.inner.get_meta(key).await
    }
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        self.inner.put_meta_if_absent(key, value).await
    }
    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.inner.set_meta(key, value).await
    }
    async fn delete_meta(&self, key: &str) -> Result<bool> {
        self.inner.delete_meta(key).await
    }
    fn cluster(&self) -> Option<&dyn ClusterStore> {
        Some(&self.cluster)
    }
}

#[async_trait]
impl Leases for FaultCluster {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        *self
            .acquires
            .lock()
            .unwrap()
            .entry(holder.to_owned())
            .or_default() += 1;
        self.inner().acquire_lease(name, holder, ttl).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        self.releases.fetch_add(1, Ordering::SeqCst);
        if fires(&self.faults.release, &self.faults.release_times) {
            return Err(injected("release_lease"));
        }
        self.inner().release_lease(name, holder).await
    }
    async fn mark_age(&self, name: &str) -> Result<Option<Duration>> {
        self.inner().mark_age(name).await
    }
    async fn set_mark(&self, name: &str, ago: Duration) -> Result<()> {
        self.inner().set_mark(name, ago).await
    }
}

#[async_trait]
impl ChallengeAnswers for FaultCluster {
    async fn put_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<()> {
        self.inner()
            .put_challenge(token, key_authorization, ttl)
            .await
    }
    async fn get_challenge(&self, token: &str) -> Result<Option<String>> {
        self.inner().get_challenge(token).await
    }
    async fn delete_challenge(&self, token: &str) -> Result<()> {
        self.inner().delete_challenge(token).await
    }
    async fn purge_expired_challenges(&self) -> Result<u64> {
        self.inner().purge_expired_challenges().await
    }
}

#[async_trait]
impl ChangeFeed for FaultCluster {
    async fn changes_since(&self, cursor: u64, limit: usize) -> Result<Changes> {
        self.inner().changes_since(cursor, limit).await
    }
}

#[async_trait]
impl Budgets for FaultCluster {
    async fn take_budget(&self, key: &str, window: Duration, limit: u32) -> Result<bool> {
        let taken = self.inner().take_budget(key, window, limit).await?;
        if taken {
            self.budgets_taken.lock().unwrap().push(key.to_owned());
        }
        Ok(taken)
    }
    async fn budget_used(&self, key: &str, window: Duration) -> Result<u32> {
        self.inner().budget_used(key, window).await
    }
}
