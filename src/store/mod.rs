//! Where certificates, ACME accounts and settings live: the [`CertStore`]
//! trait, its records, and the built-in stores.

mod budget;
mod cluster;
#[cfg(feature = "fs")]
mod file;
mod keys;
mod local;
mod memory;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "mysql"))))]
pub mod sql;

pub use budget::{check_budget_key, BudgetWindow};
pub(crate) use cluster::Coordinator;
pub use cluster::{Budgets, ChallengeAnswers, ChangeFeed, ClusterStore, Leases, LocalCluster};
#[cfg(feature = "fs")]
#[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
pub use file::FileStore;
pub use keys::{check_key, check_token, check_version};
pub use local::DueIndex;
pub use memory::MemoryStore;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use sql::MySqlStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use sql::PostgresStore;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cert::IssuerKind;
use crate::cipher::Sealed;
use crate::{Domain, Result};

/// How many log entries a [`CertRecord`] keeps; older ones are dropped first.
pub const MAX_LOG_ENTRIES: usize = 32;
/// Longest log message kept, in bytes (a CA's problem document can be long).
pub const MAX_LOG_MESSAGE: usize = 1024;

/// Storage for certificate records, ACME account credentials and settings.
///
/// Hold it as `Arc<dyn CertStore>`; `Arc<T>` and `Box<T>` of a store are
/// stores too, so a wrapper needs no forwarding code. Every method may be
/// called concurrently from many tasks (and, for shared backends, from many
/// processes).
///
/// # Every method is required, but one
/// Records, accounts and settings are what every store keeps; certkeeper
/// calls each of these methods and relies on its answer. The one optional
/// method, [`cluster`](Self::cluster), says whether the store also
/// coordinates the instances that share it (leases, HTTP-01 answers, the
/// change feed, the CA's budgets: a [`ClusterStore`]), all of it or none.
///
/// Without it (the default, `None`), certkeeper coordinates in the process
/// through a [`LocalCluster`] plugged in once, when the renewer, the ACME
/// issuer and the HTTP-01 solver are built. That is exact for one process,
/// and what it costs for several processes sharing the store:
/// - each runs its own maintenance cycle, so the per-cycle cap is per
///   process, and two may order the same name at the same time (the
///   record's compare-and-swap still keeps one certificate, but the CA
///   counts both orders);
/// - the CA's budgets (orders per account, failed validations per name) are
///   counted per process and restart from zero with it;
/// - an HTTP-01 answer is known only to the process that presented it, so
///   the CA must reach that one;
/// - a certificate stored by one process is served by the others only after
///   they restart ([`Renewer::load`](crate::Renewer::load)).
///
/// # Contract
/// - **Never plaintext secrets.** Private keys and account credentials reach
///   the store already sealed ([`Sealed`]); a store keeps them as opaque bytes.
/// - **Versions and compare-and-swap.** Every record and account carries a
///   `version`; 0 means "not stored yet". [`save`](Self::save) succeeds only
///   when the stored version equals the record's `version` (a missing record
///   counts as 0) and then stores it with `version + 1`, which it returns.
///   Otherwise it fails with [`Error::Conflict`](crate::Error::Conflict) and changes nothing.
///   [`check_version`] does the comparison for a custom store.
/// - **Atomic.** A reader sees the old record or the new one, never a mix, and
///   a crash during `save` leaves one of the two.
/// - **Missing is not an error.** `load` of an unknown key returns `Ok(None)`;
///   `delete` of an unknown key returns `Ok(false)`.
/// - **`due` is answered by the backend.** It returns the records with
///   `renew_date <= now` and `attempts < max_attempts`, ordered by
///   `renew_date` then domain, at most `limit` of them, as [`DueEntry`]s,
///   without reading every record (an index, or a query), and in a time that
///   does not grow with the records at or over `max_attempts` (they keep
///   their last renew date, so they would otherwise sit in front forever).
///   An in-process store keeps a [`DueIndex`] beside its records and asks it.
/// - **Keys.** Domains are [`Domain`]s (safe as file names). Account ids and
///   setting keys come from callers: a store may refuse anything outside
///   `[a-z0-9._-]{1,128}` (no leading dot) with [`Error::InvalidKey`](crate::Error::InvalidKey)
///   ([`check_key`]); the built-in stores do.
/// - **Dates** must be kept to the second at least; sub-second precision is
///   optional.
/// - **`limit`** may be anything up to `usize::MAX`; a backend that cannot
///   express it clamps it.
///
/// The [`conformance`] module (feature `conformance`) checks all of this;
/// run it on your own store.
#[async_trait]
pub trait CertStore: Debug + Send + Sync + 'static {
    /// The record for `domain`, if any.
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>>;

    /// Stores `record` if the stored version equals `record.version`;
    /// returns the new version.
    async fn save(&self, record: &CertRecord) -> Result<u64>;

    /// Removes the record for `domain`; `true` if there was one.
    async fn delete(&self, domain: &Domain) -> Result<bool>;

    /// Every stored domain, sorted.
    async fn list(&self) -> Result<Vec<Domain>>;

    /// Up to `limit` records due at `now` with fewer than `max_attempts`
    /// failed attempts, oldest renew date first (then by domain). It reads
    /// no record it does not return: keep a [`DueIndex`] beside the records
    /// (or query an index), as the renewer calls it at every cycle on
    /// stores of any size; the conformance check
    /// `conformance::due_reads_only_due` tells.
    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<DueEntry>>;

    /// The records that used up their attempts (`attempts >= max_attempts`,
    /// whatever their renew date): how many there are, and the first
    /// `limit` of them by attempts, renew date, then domain. Answered from
    /// the same index as [`due`](Self::due), in a time that grows with the
    /// records at the limit only for the count (an index-only count in SQL),
    /// never with the others. A cycle reports them as passed over, and the
    /// operator is told.
    async fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> Result<PassedOver>;

    /// The ACME account stored under `id`, if any.
    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>>;

    /// Stores an account with the same compare-and-swap rule as [`save`](Self::save).
    async fn save_account(&self, record: &AccountRecord) -> Result<u64>;

    /// Removes the account stored under `id`; `true` if there was one.
    async fn delete_account(&self, id: &str) -> Result<bool>;

    /// The ids of every stored account, sorted.
    async fn list_accounts(&self) -> Result<Vec<String>>;

    /// A setting stored under `key` (for example the remembered main domain).
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;

    /// Stores `value` under `key` unless a value is already there; returns the
    /// value in force afterwards (the existing one, or `value`). Atomic: when
    /// several callers race, all of them get the same answer.
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String>;

    /// Stores `value` under `key`, replacing what was there.
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;

    /// Removes the setting `key`; `true` if there was one. certkeeper
    /// removes the settings it no longer needs (an expiry notice once the
    /// certificate is renewed), so they do not pile up.
    async fn delete_meta(&self, key: &str) -> Result<bool>;

    /// What the instances sharing this store coordinate through, when the
    /// store offers it; `None` (the default) for a store that one process
    /// uses alone (see the costs above).
    fn cluster(&self) -> Option<&dyn ClusterStore> {
        None
    }
}

/// Forwards every method to the inner store.
macro_rules! forward_store {
    ($($wrapper:ident),*) => {$(
        #[async_trait]
        impl<T: CertStore + ?Sized> CertStore for $wrapper<T> {
            async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
                (**self).load(domain).await
            }
            async fn save(&self, record: &CertRecord) -> Result<u64> {
                (**self).save(record).await
            }
            async fn delete(&self, domain: &Domain) -> Result<bool> {
                (**self).delete(domain).await
            }
            async fn list(&self) -> Result<Vec<Domain>> {
                (**self).list().await
            }
            async fn due(
                &self,
                now: OffsetDateTime,
                max_attempts: u32,
                limit: usize,
            ) -> Result<Vec<DueEntry>> {
                (**self).due(now, max_attempts, limit).await
            }
            async fn at_attempt_limit(
                &self,
                max_attempts: u32,
                limit: usize,
            ) -> Result<PassedOver> {
                (**self).at_attempt_limit(max_attempts, limit).await
            }
            async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
                (**self).load_account(id).await
            }
            async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
                (**self).save_account(record).await
            }
            async fn delete_account(&self, id: &str) -> Result<bool> {
                (**self).delete_account(id).await
            }
            async fn list_accounts(&self) -> Result<Vec<String>> {
                (**self).list_accounts().await
            }
            async fn get_meta(&self, key: &str) -> Result<Option<String>> {
                (**self).get_meta(key).await
            }
            async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
                (**self).put_meta_if_absent(key, value).await
            }
            async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
                (**self).set_meta(key, value).await
            }
            async fn delete_meta(&self, key: &str) -> Result<bool> {
                (**self).delete_meta(key).await
            }
            fn cluster(&self) -> Option<&dyn ClusterStore> {
                (**self).cluster()
            }
        }
    )*};
}

forward_store!(Arc, Box);

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A store that one process uses alone: the inner store's records,
    /// accounts and settings, without its cluster.
    #[derive(Debug)]
    pub(crate) struct Alone<S>(pub(crate) S);

    #[async_trait]
    impl<S: CertStore> CertStore for Alone<S> {
        async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
            self.0.load(domain).await
        }
        async fn save(&self, record: &CertRecord) -> Result<u64> {
            self.0.save(record).await
        }
        async fn delete(&self, domain: &Domain) -> Result<bool> {
            self.0.delete(domain).await
        }
        async fn list(&self) -> Result<Vec<Domain>> {
            self.0.list().await
        }
        async fn due(&self, now: OffsetDateTime, max: u32, limit: usize) -> Result<Vec<DueEntry>> {
            self.0.due(now, max, limit).await
        }
        async fn at_attempt_limit(&self, max: u32, limit: usize) -> Result<PassedOver> {
            self.0.at_attempt_limit(max, limit).await
        }
        async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
            self.0.load_account(id).await
        }
        async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
            self.0.save_account(record).await
        }
        async fn delete_account(&self, id: &str) -> Result<bool> {
            self.0.delete_account(id).await
        }
        async fn list_accounts(&self) -> Result<Vec<String>> {
            self.0.list_accounts().await
        }
        async fn get_meta(&self, key: &str) -> Result<Option<String>> {
            self.0.get_meta(key).await
        }
        async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
            self.0.put_meta_if_absent(key, value).await
        }
        async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
            self.0.set_meta(key, value).await
        }
        async fn delete_meta(&self, key: &str) -> Result<bool> {
            self.0.delete_meta(key).await
        }
    }
}

/// What a maintenance cycle needs to pick a record: [`CertStore::due`]'s
/// answer, without the certificate and its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueEntry {
    /// The domain.
    pub domain: Domain,
    /// The stored version.
    pub version: u64,
    /// When it is due.
    pub renew_date: OffsetDateTime,
    /// Failed attempts since the last success.
    pub attempts: u32,
}

impl DueEntry {
    /// The entry of a stored record.
    pub fn of(record: &CertRecord) -> Self {
        Self {
            domain: record.domain.clone(),
            version: record.version,
            renew_date: record.renew_date,
            attempts: record.attempts,
        }
    }
}

/// Domains a cycle passed over: how many, and the first few by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassedOver {
    /// How many there are (when `exact` is false: at least this many).
    pub total: u64,
    /// Whether `total` is the exact count.
    pub exact: bool,
    /// The first of them, at most as many as were asked for.
    pub domains: Vec<Domain>,
}

/// One change of a certificate record, from [`ChangeFeed::changes_since`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The position of the change in the store's feed (increasing).
    pub seq: u64,
    /// The domain whose record changed.
    pub domain: Domain,
    /// `true` when the record was deleted, `false` when it was saved.
    pub deleted: bool,
}

/// An answer of [`ChangeFeed::changes_since`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The changes after the cursor asked from, oldest first.
    pub changes: Vec<Change>,
    /// The cursor to ask from next time.
    pub cursor: u64,
    /// The store no longer knows every change after the cursor asked from:
    /// reload every record.
    pub reset: bool,
}

/// What the store keeps for one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertRecord {
    /// The domain the certificate is for.
    pub domain: Domain,
    /// The stored version (0: not stored yet). See [`CertStore`].
    pub version: u64,
    /// The certificate in force, if one was ever issued.
    pub certificate: Option<StoredCert>,
    /// When the certificate in force was issued.
    #[serde(with = "time::serde::rfc3339::option")]
    pub issue_date: Option<OffsetDateTime>,
    /// When the maintenance cycle should (re)issue it.
    #[serde(with = "time::serde::rfc3339")]
    pub renew_date: OffsetDateTime,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// The latest attempts, oldest first, at most [`MAX_LOG_ENTRIES`].
    pub log: Vec<LogEntry>,
    /// The CA's renewal window for the certificate in force (ACME Renewal
    /// Information, RFC 9773), when its CA offers one. The renew date is
    /// then the earlier of [`AriState::renew_at`] and
    /// [`AriState::next_check`]. Absent in records stored before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari: Option<AriState>,
}

/// The CA's suggested renewal window for a certificate (RFC 9773) and the
/// time picked inside it, stored on the record so that every instance
/// sharing the store renews at the same time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AriState {
    /// The window's start, as the CA last said.
    #[serde(with = "time::serde::rfc3339")]
    pub window_start: OffsetDateTime,
    /// The window's end, as the CA last said.
    #[serde(with = "time::serde::rfc3339")]
    pub window_end: OffsetDateTime,
    /// When to renew: a random time inside the window, kept while the
    /// window still holds it.
    #[serde(with = "time::serde::rfc3339")]
    pub renew_at: OffsetDateTime,
    /// When the CA may be asked again (its `Retry-After`).
    #[serde(with = "time::serde::rfc3339")]
    pub next_check: OffsetDateTime,
    /// The CA's explanation of the window, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
}

impl CertRecord {
    /// A record for a domain that has no certificate yet and is due at `now`.
    pub fn new(domain: Domain, now: OffsetDateTime) -> Self {
        Self {
            domain,
            version: 0,
            certificate: None,
            issue_date: None,
            renew_date: now,
            attempts: 0,
            log: Vec::new(),
            ari: None,
        }
    }

    /// Appends a log entry, dropping the oldest past [`MAX_LOG_ENTRIES`];
    /// a message longer than [`MAX_LOG_MESSAGE`] bytes is cut.
    pub fn push_log(&mut self, mut entry: LogEntry) {
        if entry.message.len() > MAX_LOG_MESSAGE {
            let mut end = MAX_LOG_MESSAGE;
            while !entry.message.is_char_boundary(end) {
                end -= 1;
            }
            entry.message.truncate(end);
            entry.message.push_str(" [cut]");
        }
        self.log.push(entry);
        if self.log.len() > MAX_LOG_ENTRIES {
            let excess = self.log.len() - MAX_LOG_ENTRIES;
            self.log.drain(..excess);
        }
    }

    /// The log as readable lines, oldest first.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.iter().map(LogEntry::to_string).collect()
    }

    /// Whether the record is due at `now` under `max_attempts`.
    pub fn is_due(&self, now: OffsetDateTime, max_attempts: u32) -> bool {
        self.renew_date <= now && self.attempts < max_attempts
    }
}

/// An issued certificate as stored: the public chain in clear, the private
/// key sealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredCert {
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The private key (PKCS#8 PEM), sealed with [`cert_key_aad`](crate::vault::cert_key_aad).
    pub sealed_key: Sealed,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of the leaf certificate's DER, lowercase hex.
    pub fingerprint: String,
    /// Who issued it.
    pub issuer: IssuerKind,
}

/// One line of a certificate's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The step (`issue`, `renew`, `store` ...).
    pub step: String,
    /// Whether it worked.
    pub success: bool,
    /// What happened, or the error (never a secret).
    pub message: String,
}

impl std::fmt::Display for LogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = self
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.time.unix_timestamp().to_string());
        let outcome = if self.success { "ok" } else { "failed" };
        write!(f, "{time} {} {outcome}: {}", self.step, self.message)
    }
}

/// Stored ACME account credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// The account's id in this store (derived from the directory URL and contact).
    pub id: String,
    /// The stored version, as for [`CertRecord::version`].
    pub version: u64,
    /// The serialised credentials, sealed with [`account_aad`](crate::vault::account_aad).
    pub sealed_credentials: Sealed,
    /// When the account was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}
