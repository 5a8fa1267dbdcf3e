//! Your own `CertStore`, checked by certkeeper's conformance suite.
//!
//! `MapStore` is a store that one process uses alone, with the required
//! methods only: records, accounts and settings in maps, and the due index
//! that certkeeper exports (`DueIndex`), so `due` never reads a record it
//! does not return. A store over a key-value service (Redis, sled, etcd,
//! DynamoDB) has the same shape: its calls replace the maps, its
//! conditional write replaces the lock around compare-and-swap.
//!
//! `SharedStore` is the same store offering a cluster (`CertStore::cluster`):
//! here the in-process `LocalCluster`, fed with each save and delete, so
//! several renewers of one process coordinate through it. A store over a
//! networked backend implements the four cluster traits (`Leases`,
//! `ChallengeAnswers`, `ChangeFeed`, `Budgets`) over that backend instead,
//! on its clock, and also passes `conformance::run_shared` over two
//! connections.
//!
//! ```sh
//! cargo run --features conformance --example custom_store
//! ```
//!
//! It runs every conformance check on both (each panics on a broken rule)
//! and prints the rules they follow. A store needs no crate beyond
//! certkeeper: the trait's signatures use `certkeeper::async_trait` and
//! `certkeeper::time`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use certkeeper::async_trait;
use certkeeper::store::{
    check_key, check_version, conformance, AccountRecord, CertRecord, CertStore, ClusterStore,
    DueEntry, DueIndex, LocalCluster, PassedOver,
};
use certkeeper::time::OffsetDateTime;
use certkeeper::{Domain, Result};

/// Records, accounts and settings of one process.
#[derive(Debug, Default)]
struct MapStore {
    maps: Mutex<Maps>,
    // The records read from the maps, for the conformance check that `due`
    // reads none it does not return (a test of your store can count the
    // same way, around its backend's reads).
    reads: conformance::RecordReads,
}

#[derive(Debug, Default)]
struct Maps {
    records: BTreeMap<Domain, CertRecord>,
    // One entry per record, updated with it.
    due: DueIndex,
    accounts: BTreeMap<String, AccountRecord>,
    meta: BTreeMap<String, String>,
}

impl MapStore {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl CertStore for MapStore {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        let record = self.maps().records.get(domain).cloned();
        self.reads.add(u64::from(record.is_some()));
        Ok(record)
    }

    async fn save(&self, record: &CertRecord) -> Result<u64> {
        // One lock around read, compare and write: the compare-and-swap.
        let mut maps = self.maps();
        let found = maps.records.get(&record.domain).map_or(0, |r| r.version);
        let version = check_version("map", record.domain.as_str(), found, record.version)?;
        let stored = CertRecord {
            version,
            ..record.clone()
        };
        maps.due.insert(&DueEntry::of(&stored));
        if let Some(old) = maps.records.insert(stored.domain.clone(), stored) {
            maps.due.remove(&DueEntry::of(&old));
        }
        Ok(version)
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
        let mut maps = self.maps();
        let old = maps.records.remove(domain);
        if let Some(old) = &old {
            maps.due.remove(&DueEntry::of(old));
        }
        Ok(old.is_some())
    }

    async fn list(&self) -> Result<Vec<Domain>> {
        Ok(self.maps().records.keys().cloned().collect())
    }

    async fn due(&self, now: OffsetDateTime, max: u32, limit: usize) -> Result<Vec<DueEntry>> {
        Ok(self.maps().due.due(now, max, limit))
    }

    async fn at_attempt_limit(&self, max: u32, limit: usize) -> Result<PassedOver> {
        Ok(self.maps().due.at_attempt_limit(max, limit))
    }

    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        check_key("account id", id)?;
        Ok(self.maps().accounts.get(id).cloned())
    }

    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        check_key("account id", &record.id)?;
        let mut maps = self.maps();
        let found = maps.accounts.get(&record.id).map_or(0, |r| r.version);
        let version = check_version("map", &record.id, found, record.version)?;
        let stored = AccountRecord {
            version,
            ..record.clone()
        };
        maps.accounts.insert(stored.id.clone(), stored);
        Ok(version)
    }

    async fn delete_account(&self, id: &str) -> Result<bool> {
        check_key("account id", id)?;
        Ok(self.maps().accounts.remove(id).is_some())
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        Ok(self.maps().accounts.keys().cloned().collect())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        check_key("meta key", key)?;
        Ok(self.maps().meta.get(key).cloned())
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        check_key("meta key", key)?;
        let mut maps = self.maps();
        Ok(maps.meta.entry(key.into()).or_insert(value.into()).clone())
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        check_key("meta key", key)?;
        self.maps().meta.insert(key.into(), value.into());
        Ok(())
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        check_key("meta key", key)?;
        Ok(self.maps().meta.remove(key).is_some())
    }
}

/// A [`MapStore`] that offers a cluster: what several renewers sharing it
/// coordinate through.
#[derive(Debug, Default)]
struct SharedStore {
    records: MapStore,
    cluster: LocalCluster,
}

#[async_trait]
impl CertStore for SharedStore {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        self.records.load(domain).await
    }

    async fn save(&self, record: &CertRecord) -> Result<u64> {
        let version = self.records.save(record).await?;
        // The change feed tells the other renewers to serve it.
        self.cluster.record_change(&record.domain, false);
        Ok(version)
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
        let deleted = self.records.delete(domain).await?;
        if deleted {
            self.cluster.record_change(domain, true);
        }
        Ok(deleted)
    }

    async fn list(&self) -> Result<Vec<Domain>> {
        self.records.list().await
    }

    async fn due(&self, now: OffsetDateTime, max: u32, limit: usize) -> Result<Vec<DueEntry>> {
        self.records.due(now, max, limit).await
    }

    async fn at_attempt_limit(&self, max: u32, limit: usize) -> Result<PassedOver> {
        self.records.at_attempt_limit(max, limit).await
    }

    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        self.records.load_account(id).await
    }

    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        self.records.save_account(record).await
    }

    async fn delete_account(&self, id: &str) -> Result<bool> {
        self.records.delete_account(id).await
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        self.records.list_accounts().await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.records.get_meta(key).await
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        self.records.put_meta_if_absent(key, value).await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.records.set_meta(key, value).await
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        self.records.delete_meta(key).await
    }

    fn cluster(&self) -> Option<&dyn ClusterStore> {
        Some(&self.cluster)
    }
}

#[tokio::main]
async fn main() {
    // Each panics, naming the broken rule, if the store gets anything wrong.
    let store = MapStore::default();
    conformance::run_all_counting_reads(&store, &store.reads).await;
    let shared = SharedStore::default();
    conformance::run_all_counting_reads(&shared, &shared.records.reads).await;
    for check in conformance::checks() {
        println!("passed  {:<24} {}", check.name, check.description);
    }
    println!(
        "passed  {:<24} due reads no record it does not return",
        "due_reads_only_due"
    );
    println!(
        "MapStore and SharedStore follow the CertStore contract ({} checks), \
         and SharedStore's cluster passed conformance::run_cluster.",
        conformance::checks().len() + 1
    );
}
