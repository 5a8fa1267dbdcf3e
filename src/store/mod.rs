//! Where certificates, ACME accounts and settings live: the [`CertStore`]
//! trait, its records, and the built-in stores.

#[cfg(feature = "fs")]
mod file;
mod keys;
mod memory;

pub mod conformance;

#[cfg(feature = "fs")]
#[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
pub use file::FileStore;
pub use memory::MemoryStore;

use std::fmt::Debug;

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

/// Storage for certificate records, ACME account credentials and a few settings.
///
/// Hold it as `Arc<dyn CertStore>`. Every method may be called concurrently
/// from many tasks (and, for shared backends, from many processes).
///
/// # Contract
/// - **Never plaintext secrets.** Private keys and account credentials reach
///   the store already sealed ([`Sealed`]); a store keeps them as opaque bytes.
/// - **Versions and compare-and-swap.** Every record carries a `version`;
///   0 means "not stored yet". [`save`](Self::save) succeeds only when the
///   stored version equals the record's `version` (a missing record counts as
///   0) and then stores it with `version + 1`, which it returns. Otherwise it
///   fails with [`Error::Conflict`](crate::Error::Conflict) and changes nothing.
/// - **Atomic.** A reader sees the old record or the new one, never a mix, and
///   a crash during `save` leaves one of the two.
/// - **Missing is not an error.** `load` of an unknown key returns `Ok(None)`;
///   `delete` of an unknown key returns `Ok(false)`.
/// - **`due` is answered by the backend.** It returns the records with
///   `renew_date <= now` and `attempts < max_attempts`, ordered by
///   `renew_date` then domain, at most `limit` of them, without reading every
///   record (an index, or a query).
///
/// - **Keys.** Domains are [`Domain`]s (safe as file names). Account ids and
///   setting keys come from callers: a store may refuse anything outside
///   `[a-z0-9._-]{1,128}` (no leading dot) with
///   [`Error::InvalidKey`](crate::Error::InvalidKey); the built-in stores do.
/// - **Dates** must be kept to the second at least; sub-second precision is
///   optional.
/// - **`limit`** may be anything up to `usize::MAX`; a backend that cannot
///   express it clamps it.
///
/// The [`conformance`] module checks all of this; run it on your own store.
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
    /// failed attempts, oldest renew date first.
    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<CertRecord>>;

    /// The ACME account stored under `id`, if any.
    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>>;

    /// Stores an account with the same compare-and-swap rule as [`save`](Self::save).
    async fn save_account(&self, record: &AccountRecord) -> Result<u64>;

    /// The ids of every stored account, sorted.
    async fn list_accounts(&self) -> Result<Vec<String>>;

    /// A setting stored under `key` (for example the remembered main domain).
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;

    /// Stores `value` under `key` unless a value is already there; returns the
    /// value in force afterwards (the existing one, or `value`). Atomic: when
    /// several callers race, all of them get the same answer.
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String>;
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
