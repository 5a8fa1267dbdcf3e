//! [`MemoryStore`]: every record in memory, for tests and short-lived processes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::keys::{check_key, check_version};
use super::local::DueIndex;
use super::{
    AccountRecord, CertRecord, CertStore, ClusterStore, DueEntry, LocalCluster, PassedOver,
};
use crate::clock::Clock;
use crate::{Domain, Result};

/// A [`CertStore`] that keeps everything in memory and loses it on drop.
///
/// It follows the whole [`CertStore`] contract (it is the reference the
/// [`conformance`](super::conformance) suite is written against): versions
/// and compare-and-swap, and [`due`](CertStore::due) answered from an index
/// ordered by `(renew_date, domain)`, so a cycle walks only the due records.
/// Dates are kept to the nanosecond.
///
/// Several renewers of one process may share it: it offers a
/// [`LocalCluster`] as its [`cluster`](CertStore::cluster), on the system
/// clock or on the one given to [`with_clock`](Self::with_clock).
///
/// Account ids and meta keys follow the same rule as in the file store
/// (`FileStore`): 1 to 128 characters of `a-z`, `0-9`, `.`, `_` and `-`, not
/// starting with a dot; anything else is an [`Error::InvalidKey`](crate::Error::InvalidKey). Code
/// tested against a `MemoryStore` therefore behaves the same on disk.
///
/// ```
/// use certkeeper::store::{CertRecord, CertStore, MemoryStore};
/// use certkeeper::Domain;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> certkeeper::Result<()> {
/// let store = MemoryStore::new();
/// let now = time::OffsetDateTime::now_utc();
/// let record = CertRecord::new(Domain::new("app.example.com")?, now);
/// assert_eq!(store.save(&record).await?, 1);
/// assert_eq!(store.due(now, 5, 200).await?.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    cluster: LocalCluster,
}

#[derive(Default)]
struct State {
    records: BTreeMap<Domain, CertRecord>,
    // Mirrors `records`: one entry per record.
    due_index: DueIndex,
    accounts: BTreeMap<String, AccountRecord>,
    meta: BTreeMap<String, String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose leases, answers and budgets follow `clock` (a
    /// [`TestClock`](crate::TestClock) in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::default(),
            cluster: LocalCluster::with_clock(clock),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything
        // that could panic, so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryStore")
            .field("records", &state.records.len())
            .field("accounts", &state.accounts.len())
            .field("meta", &state.meta.len())
            .finish()
    }
}

#[async_trait]
impl CertStore for MemoryStore {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        Ok(self.state().records.get(domain).cloned())
    }

    async fn save(&self, record: &CertRecord) -> Result<u64> {
        let mut state = self.state();
        let found = state.records.get(&record.domain).map_or(0, |r| r.version);
        let version = check_version(STORE, record.domain.as_str(), found, record.version)?;
        let mut stored = record.clone();
        stored.version = version;
        let entry = DueEntry::of(&stored);
        if let Some(old) = state.records.insert(stored.domain.clone(), stored) {
            state.due_index.remove(&DueEntry::of(&old));
        }
        state.due_index.insert(&entry);
        drop(state);
        self.cluster.record_change(&record.domain, false);
        Ok(version)
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
        let mut state = self.state();
        match state.records.remove(domain) {
            Some(old) => {
                state.due_index.remove(&DueEntry::of(&old));
                drop(state);
                self.cluster.record_change(domain, true);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn list(&self) -> Result<Vec<Domain>> {
        Ok(self.state().records.keys().cloned().collect())
    }

    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<DueEntry>> {
        Ok(self.state().due_index.due(now, max_attempts, limit))
    }

    async fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> Result<PassedOver> {
        Ok(self.state().due_index.at_attempt_limit(max_attempts, limit))
    }

    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        check_key("account id", id)?;
        Ok(self.state().accounts.get(id).cloned())
    }

    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        check_key("account id", &record.id)?;
        let mut state = self.state();
        let found = state.accounts.get(&record.id).map_or(0, |r| r.version);
        let version = check_version(STORE, &record.id, found, record.version)?;
        let mut stored = record.clone();
        stored.version = version;
        state.accounts.insert(stored.id.clone(), stored);
        Ok(version)
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        Ok(self.state().accounts.keys().cloned().collect())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        check_key("meta key", key)?;
        Ok(self.state().meta.get(key).cloned())
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        check_key("meta key", key)?;
        Ok(self
            .state()
            .meta
            .entry(key.to_owned())
            .or_insert_with(|| value.to_owned())
            .clone())
    }

    async fn delete_account(&self, id: &str) -> Result<bool> {
        check_key("account id", id)?;
        Ok(self.state().accounts.remove(id).is_some())
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        check_key("meta key", key)?;
        self.state().meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        check_key("meta key", key)?;
        Ok(self.state().meta.remove(key).is_some())
    }

    fn cluster(&self) -> Option<&dyn ClusterStore> {
        Some(&self.cluster)
    }
}

const STORE: &str = "memory";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn keys_that_could_name_a_path_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "UPPER",
            "a b",
            "a\0b",
            "caf\u{e9}",
            &"a".repeat(129),
        ] {
            let err = check_key("meta key", bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidKey { .. }), "{bad:?}: {err}");
        }
        for good in ["main-domain", "acme_v02.le-1", "a", &"z".repeat(128)] {
            check_key("meta key", good).expect(good);
        }
    }
}
