//! Your own `CertStore`, checked by certkeeper's conformance suite.
//!
//! The store below keeps everything in one ordered key-value map, the way a
//! store over Redis, sled, DynamoDB or etcd would: records as JSON values,
//! and the due index as keys that sort by renew date, so `due` reads a range
//! of keys instead of every record.
//!
//! ```sh
//! cargo run --example custom_store
//! ```
//!
//! It runs every conformance check (each panics on a broken rule) and prints
//! the rules the store follows.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

// certkeeper re-exports what its trait signatures need: no async-trait
// nor time dependency to add (serde is this store's own choice of format).
use certkeeper::store::{conformance, AccountRecord, CertRecord, CertStore, DueEntry};
use certkeeper::time::OffsetDateTime;
use certkeeper::{async_trait, Domain, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An ordered map of keys to bytes, standing in for a real key-value store.
#[derive(Debug, Default)]
struct KvStore {
    kv: Mutex<BTreeMap<String, Vec<u8>>>,
}

fn cert_key(domain: &Domain) -> String {
    format!("cert/{domain}")
}

fn account_key(id: &str) -> String {
    format!("account/{id}")
}

fn meta_key(key: &str) -> String {
    format!("meta/{key}")
}

/// A renew date as 39 digits that sort like the date (flipping the sign bit
/// maps i128 onto u128 in order).
fn sortable(date: OffsetDateTime) -> u128 {
    (date.unix_timestamp_nanos() as u128) ^ (1 << 127)
}

/// The index key of a record: `due/<renew date>/<domain>`, ordered by renew
/// date then domain, which is the order `due` must answer in.
fn due_key(record: &CertRecord) -> String {
    format!("due/{:039}/{}", sortable(record.renew_date), record.domain)
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::store("kv", e.to_string()))
}

fn next_version(version: u64) -> Result<u64> {
    version
        .checked_add(1)
        .ok_or_else(|| Error::store("kv", "version overflow"))
}

impl KvStore {
    fn kv(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.kv.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl CertStore for KvStore {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        let key = cert_key(domain);
        self.kv()
            .get(&key)
            .map(|bytes| decode(&key, bytes))
            .transpose()
    }

    async fn save(&self, record: &CertRecord) -> Result<u64> {
        let key = cert_key(&record.domain);
        // One lock around read, compare and write: that is the whole
        // compare-and-swap. A networked store would use its own
        // transaction or conditional write here.
        let mut kv = self.kv();
        let old: Option<CertRecord> = kv.get(&key).map(|b| decode(&key, b)).transpose()?;
        let found = old.as_ref().map_or(0, |r| r.version);
        if found != record.version {
            return Err(Error::Conflict {
                key: record.domain.to_string(),
                expected: record.version,
                found,
            });
        }
        let mut stored = record.clone();
        stored.version = next_version(record.version)?;
        kv.insert(key, encode(&stored)?);
        if let Some(old) = old {
            kv.remove(&due_key(&old));
        }
        kv.insert(due_key(&stored), Vec::new());
        Ok(stored.version)
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
        let key = cert_key(domain);
        let mut kv = self.kv();
        let Some(bytes) = kv.remove(&key) else {
            return Ok(false);
        };
        let old: CertRecord = decode(&key, &bytes)?;
        kv.remove(&due_key(&old));
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<Domain>> {
        self.kv()
            .range("cert/".to_owned().."cert0".to_owned())
            .map(|(key, _)| Domain::new(&key["cert/".len()..]))
            .collect()
    }

    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<DueEntry>> {
        let kv = self.kv();
        // Every key of a record due at `now` sorts before this one.
        let end = format!("due/{:039}", sortable(now).saturating_add(1));
        let mut due = Vec::new();
        for (key, _) in kv.range("due/".to_owned()..end) {
            if due.len() == limit {
                break;
            }
            let domain = key.rsplit('/').next().unwrap_or_default();
            let cert = format!("cert/{domain}");
            let Some(bytes) = kv.get(&cert) else {
                continue;
            };
            let record: CertRecord = decode(&cert, bytes)?;
            if record.attempts < max_attempts {
                due.push(DueEntry::of(&record));
            }
        }
        Ok(due)
    }

    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        let key = account_key(id);
        self.kv()
            .get(&key)
            .map(|bytes| decode(&key, bytes))
            .transpose()
    }

    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        let key = account_key(&record.id);
        let mut kv = self.kv();
        let found = match kv.get(&key) {
            Some(bytes) => decode::<AccountRecord>(&key, bytes)?.version,
            None => 0,
        };
        if found != record.version {
            return Err(Error::Conflict {
                key: record.id.clone(),
                expected: record.version,
                found,
            });
        }
        let mut stored = record.clone();
        stored.version = next_version(record.version)?;
        kv.insert(key, encode(&stored)?);
        Ok(stored.version)
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        Ok(self
            .kv()
            .range("account/".to_owned().."account0".to_owned())
            .map(|(key, _)| key["account/".len()..].to_owned())
            .collect())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let key = meta_key(key);
        self.kv()
            .get(&key)
            .map(|bytes| decode(&key, bytes))
            .transpose()
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let key = meta_key(key);
        let mut kv = self.kv();
        match kv.get(&key) {
            Some(bytes) => decode(&key, bytes),
            None => {
                kv.insert(key, encode(&value)?);
                Ok(value.to_owned())
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let store = KvStore::default();
    // Panics, naming the broken rule, if the store gets anything wrong.
    conformance::run_all(&store).await;
    for check in conformance::checks() {
        println!("passed  {:<24} {}", check.name, check.description);
    }
    println!(
        "KvStore follows the CertStore contract ({} checks).",
        conformance::checks().len()
    );
}
