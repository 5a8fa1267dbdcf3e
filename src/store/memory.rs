//! [`MemoryStore`]: every record in memory, for tests and short-lived processes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::keys::{check_key, next_version};
use super::{AccountRecord, CertRecord, CertStore};
use crate::{Domain, Error, Result};

/// A [`CertStore`] that keeps everything in memory and loses it on drop.
///
/// It follows the whole [`CertStore`] contract (it is the reference the
/// [`conformance`](super::conformance) suite is written against): versions
/// and compare-and-swap, and [`due`](CertStore::due) answered from an index
/// ordered by `(renew_date, domain)`, so a cycle walks only the due records.
/// Dates are kept to the nanosecond.
///
/// Account ids and meta keys follow the same rule as in the file store
/// (`FileStore`): 1 to 128 characters of `a-z`, `0-9`, `.`, `_` and `-`, not
/// starting with a dot; anything else is an [`Error::InvalidKey`]. Code
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
}

#[derive(Default)]
struct State {
    records: BTreeMap<Domain, CertRecord>,
    // Mirrors `records`: one entry per record, so `due` reads a prefix.
    due_index: BTreeSet<(OffsetDateTime, Domain)>,
    accounts: BTreeMap<String, AccountRecord>,
    meta: BTreeMap<String, String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        if found != record.version {
            return Err(Error::Conflict {
                key: record.domain.to_string(),
                expected: record.version,
                found,
            });
        }
        let version = next_version("memory", record.domain.as_str(), record.version)?;
        let mut stored = record.clone();
        stored.version = version;
        let key = (stored.renew_date, stored.domain.clone());
        if let Some(old) = state.records.insert(stored.domain.clone(), stored) {
            state.due_index.remove(&(old.renew_date, old.domain));
        }
        state.due_index.insert(key);
        Ok(version)
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
        let mut state = self.state();
        match state.records.remove(domain) {
            Some(old) => {
                state.due_index.remove(&(old.renew_date, old.domain));
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
    ) -> Result<Vec<CertRecord>> {
        let state = self.state();
        Ok(state
            .due_index
            .iter()
            .take_while(|(renew_date, _)| *renew_date <= now)
            .filter_map(|(_, domain)| state.records.get(domain))
            .filter(|record| record.attempts < max_attempts)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        check_key("account id", id)?;
        Ok(self.state().accounts.get(id).cloned())
    }

    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        check_key("account id", &record.id)?;
        let mut state = self.state();
        let found = state.accounts.get(&record.id).map_or(0, |a| a.version);
        if found != record.version {
            return Err(Error::Conflict {
                key: record.id.clone(),
                expected: record.version,
                found,
            });
        }
        let version = next_version("memory", &record.id, record.version)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
