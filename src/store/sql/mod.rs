//! SQL stores: [`PostgresStore`] (feature `postgres`) and [`MySqlStore`]
//! (feature `mysql`, for MariaDB and MySQL), shared by every instance of a
//! cluster.
//!
//! Both implement the whole [`CertStore`](super::CertStore) contract, the
//! optional methods included (leases, HTTP-01 answers, the change feed), and
//! pass the [`conformance`](super::conformance) suite against real servers.
//!
//! # Connecting
//!
//! `connect(url)` opens a connection pool and brings the schema up to date;
//! `from_pool(pool)` does the same over a pool the application already has
//! (its own tables can live beside certkeeper's: every name starts with
//! `certkeeper_`). Both need rights to create tables the first time.
//!
//! - PostgreSQL: `postgres://user:password@host:5432/database`. The tables go
//!   into the first schema of the `search_path`; to keep them in a schema of
//!   their own, create it and add `?options=-c%20search_path%3Dcertkeeper` to
//!   the URL.
//! - MariaDB / MySQL: `mysql://user:password@host:3306/database`; the URL must
//!   name the database.
//!
//! TLS is rustls with the ring provider and the Web PKI roots (sqlx's
//! `tls-rustls-ring-webpki`), set in the URL as sqlx reads it: for example
//! `?sslmode=require` or `?sslmode=verify-full` for PostgreSQL, `?ssl-mode=...`
//! for MySQL.
//!
//! # Schema
//!
//! | table | columns | what for |
//! | --- | --- | --- |
//! | `certkeeper_certificates` | `domain` (primary key), `version`, `renew_date`, `attempts`, `record` | certificate records; index `(attempts, renew_date, domain)` for `due` |
//! | `certkeeper_accounts` | `id` (primary key), `version`, `record` | ACME accounts |
//! | `certkeeper_meta` | `name` (primary key), `value` | settings (`main-domain`, `console-root` ...) |
//! | `certkeeper_leases` | `name` (primary key), `holder`, `expires_at` | leases |
//! | `certkeeper_challenges` | `token` (primary key), `key_authorization`, `expires_at` | HTTP-01 answers |
//! | `certkeeper_change_seq` | `id` (always 1), `last_seq` | the last change number handed out |
//! | `certkeeper_changes` | `seq` (primary key), `domain`, `deleted`, `changed_at` | the change feed |
//! | `certkeeper_migrations` | `version` (primary key), `description`, `checksum`, `applied_at` | the migrations applied |
//!
//! `record` is the [`CertRecord`] (or
//! [`AccountRecord`]) as JSON text, the same document
//! the file store writes. Private keys and account credentials in it are
//! sealed before they reach the store: the database only ever holds the
//! base64 of their ciphertext, so neither a dump nor a replica holds a
//! usable key. The `version`, `renew_date` and `attempts` columns repeat
//! what `due` and compare-and-swap need; `version` is the authoritative one.
//!
//! Names (domains, account ids, setting names, lease names, tokens) compare
//! byte-wise: PostgreSQL columns use the `"C"` collation, MySQL columns are
//! ASCII with binary collation, so `list` and `due` sort as
//! [`Domain`] does and tokens are case-sensitive. Dates are
//! `TIMESTAMPTZ` (PostgreSQL) or `DATETIME(6)` in UTC (MySQL), kept to the
//! microsecond; the record itself keeps its dates to the nanosecond, `due`
//! answers with the microsecond of the column. Renew dates must lie between
//! the years 1000 and 9999 (what both databases keep); other dates (lease
//! and challenge expiries, the `now` of a call) are brought into that range.
//!
//! # Migrations
//!
//! The schema is an embedded, versioned list of SQL files (`migrations/postgres`
//! and `migrations/mysql` in the source tree), applied in order at connect and
//! recorded in `certkeeper_migrations` with a SHA-256 checksum. They are not
//! recorded in sqlx's `_sqlx_migrations`, so an application that runs its own
//! sqlx migrations in the same database is not disturbed. Instances that
//! start together are safe: on PostgreSQL the pending migrations run in one
//! transaction that first takes the transaction-level advisory lock
//! `pg_advisory_xact_lock(7162256626746943281)` (`0x6365_7274_6b70_6731`,
//! per database); on MySQL the migrator holds the named lock
//! `certkeeper-migrate-<the first 32 hex digits of the SHA-256 of the
//! database name>` (`GET_LOCK`, waiting up to 5 minutes) while it runs, and
//! every statement of a MySQL migration can run again after an interrupted
//! run. An applied
//! migration whose checksum changed stops `connect` with an error; a
//! database migrated by a newer certkeeper is used as it is (migrations only
//! add).
//!
//! # Guarantees
//!
//! - **Compare-and-swap in the statement.** `save` is one conditional
//!   `UPDATE ... WHERE domain = ? AND version = ?` (or an `INSERT` that fails
//!   on an existing key for version 0), checked by its affected rows; no
//!   read-then-write. A loser gets [`Error::Conflict`]
//!   naming the version stored when it lost.
//! - **One transaction per change.** Every save and delete of a record writes
//!   its change-feed row in the same transaction, so the feed never misses a
//!   change nor reports one that did not happen.
//! - **`due` by index.** `due` reads one ordered range of the
//!   `(attempts, renew_date, domain)` index per attempt count below
//!   `max_attempts` (`UNION ALL` of per-count `ORDER BY renew_date, domain
//!   LIMIT n`, then merged): records that used up their attempts are never
//!   read, however many there are. Up to 16 attempts the counts are
//!   `0..max_attempts`; above, `due` first walks the index for the counts
//!   stored below `max_attempts` (one probe each), and only when there are
//!   more than 16 of them runs one plain range query (`attempts < max`)
//!   instead.
//! - **Leases** are one atomic upsert that takes the lease only when it is
//!   free, expired or already held by the caller. PostgreSQL: `INSERT ... ON
//!   CONFLICT DO UPDATE ... WHERE holder = $me OR expires_at <= $now`,
//!   granted when it affected a row. MySQL: `INSERT ... ON DUPLICATE KEY
//!   UPDATE` with `IF()`; sqlx connects with `CLIENT_FOUND_ROWS`, under which
//!   an untouched row and a new one both count as one affected row, so the
//!   holder is read back in the same transaction, under the row lock the
//!   upsert took.
//! - **The change feed** numbers changes in commit order (the counter row is
//!   locked until the writer commits, so a reader never sees change `n + 1`
//!   before change `n`). It keeps the newest 100,000 changes and those of
//!   the last day (each store's `with_change_retention` sets other limits),
//!   pruning the oldest at each write; a reader whose cursor fell behind
//!   what is kept gets [`Changes::reset`].
//! - **Errors.** A failure of the database is [`Error::Store`]
//!   with the sqlx error as its source; a record that does not decode is
//!   [`Error::Corrupt`]. A deadlock or serialization
//!   failure is retried a few times before it is reported.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStore;

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::macros::datetime;
use time::OffsetDateTime;

use super::{AccountRecord, CertRecord, Change, Changes};
use crate::{Domain, Error, Result};

/// One embedded migration.
#[derive(Debug)]
pub(crate) struct Migration {
    /// Its version: migrations run in increasing version order.
    pub(crate) version: i64,
    /// What it does.
    pub(crate) description: &'static str,
    /// The SQL text, several statements.
    pub(crate) sql: &'static str,
}

impl Migration {
    /// SHA-256 of the SQL text, lowercase hex.
    pub(crate) fn checksum(&self) -> String {
        hex(&Sha256::digest(self.sql.as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Checks the migrations already applied (`(version, checksum)`) against the
/// embedded ones; returns the embedded ones still to apply, in order.
pub(crate) fn pending<'a>(
    store: &'static str,
    embedded: &'a [Migration],
    applied: &[(i64, String)],
) -> Result<Vec<&'a Migration>> {
    let mut out = Vec::new();
    for migration in embedded {
        match applied.iter().find(|(v, _)| *v == migration.version) {
            Some((_, checksum)) if *checksum == migration.checksum() => {}
            Some(_) => {
                return Err(Error::store(
                    store,
                    format!(
                        "migration {} ({}) differs from the one applied to this database",
                        migration.version, migration.description
                    ),
                ))
            }
            None => out.push(migration),
        }
    }
    if let Some((newest, _)) = applied.iter().max_by_key(|(v, _)| *v) {
        let known = embedded.iter().map(|m| m.version).max().unwrap_or(0);
        if *newest > known {
            tracing::warn!(
                store,
                applied = newest,
                known,
                "the database was migrated by a newer certkeeper; using it as it is"
            );
        }
    }
    Ok(out)
}

/// How much of the change feed a store keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retention {
    /// The newest changes kept (1 or more).
    pub(crate) rows: i64,
    /// Changes younger than this are kept, in whole seconds (1 or more).
    pub(crate) age_secs: i64,
}

impl Retention {
    pub(crate) const DEFAULT: Self = Self {
        rows: 100_000,
        age_secs: 86_400,
    };

    pub(crate) fn new(rows: u64, age: Duration) -> Self {
        Self {
            rows: i64::try_from(rows).unwrap_or(i64::MAX).max(1),
            age_secs: i64::try_from(age.as_secs()).unwrap_or(i64::MAX).max(1),
        }
    }

    /// The highest change number to prune once change `seq` is written,
    /// given the newest change older than the age limit (0: none).
    pub(crate) fn cut(&self, seq: i64, newest_too_old: i64) -> i64 {
        // Never the change just written.
        seq.saturating_sub(self.rows)
            .max(newest_too_old)
            .min(seq - 1)
    }
}

/// The answer of `changes_since` from the rows read after `cursor` and, read
/// after them, the oldest and newest change kept.
pub(crate) fn changes_answer(
    cursor: u64,
    rows: Vec<Change>,
    oldest: Option<u64>,
    newest: Option<u64>,
) -> Changes {
    let newest = newest.unwrap_or(0);
    // Changes are pruned from the oldest and the newest one is always kept,
    // so every change after `oldest - 1` is still there.
    let oldest = oldest.unwrap_or(newest + 1);
    let reset = cursor > newest || (cursor + 1 < oldest && cursor < newest);
    if reset {
        return Changes {
            changes: Vec::new(),
            cursor: newest,
            reset: true,
        };
    }
    let cursor = rows.last().map_or(cursor, |c| c.seq);
    Changes {
        changes: rows,
        cursor,
        reset: false,
    }
}

/// At most this many attempt counts are merged range by range.
pub(crate) const DUE_LANES_MAX: usize = 16;

/// How `due` reads the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DuePlan {
    /// One ordered range per attempt count (sorted), merged.
    Lanes(Vec<u32>),
    /// One range over every attempt count below `max_attempts`.
    Plain,
}

impl DuePlan {
    /// The plan for `max_attempts` (1 or more) when it can be told without
    /// reading the database: one range per count up to 16 attempts. Above,
    /// [`attempt_counts_sql`] reads the counts stored first and
    /// [`from_counts`](Self::from_counts) decides.
    pub(crate) fn for_max_attempts(max_attempts: u32) -> Option<Self> {
        (max_attempts as usize <= DUE_LANES_MAX).then(|| Self::Lanes((0..max_attempts).collect()))
    }

    /// The plan for the attempt counts below `max_attempts` that are stored
    /// (at most `DUE_LANES_MAX + 1` of them, sorted).
    pub(crate) fn from_counts(counts: Vec<u32>) -> Self {
        if counts.len() <= DUE_LANES_MAX {
            Self::Lanes(counts)
        } else {
            Self::Plain
        }
    }

    /// The plan `due_statement` shows for `max_attempts`: its own lanes, or
    /// the plain range when more than 16 counts could be stored below it.
    pub(crate) fn shown(max_attempts: u32) -> Self {
        Self::for_max_attempts(max_attempts).unwrap_or(Self::Plain)
    }

    /// The statement. With `dollar` (PostgreSQL) the parameters are `$1` the
    /// `now`, `$2` the limit and, for [`Plain`](Self::Plain), `$3`
    /// `max_attempts`; otherwise (MySQL, `?`) they come in the order
    /// [`binds`](Self::binds) gives.
    pub(crate) fn sql(&self, dollar: bool) -> String {
        const COLUMNS: &str =
            "SELECT domain, version, renew_date, attempts FROM certkeeper_certificates";
        let (now, limit, max) = if dollar {
            ("$1", "$2", "$3")
        } else {
            ("?", "?", "?")
        };
        let lanes = match self {
            Self::Plain => {
                return format!(
                    "{COLUMNS} WHERE attempts < {max} AND renew_date <= {now} \
                     ORDER BY renew_date, domain LIMIT {limit}"
                )
            }
            Self::Lanes(lanes) => lanes,
        };
        if let [attempts] = lanes[..] {
            // PostgreSQL takes no ORDER BY around a single parenthesised one.
            return format!(
                "{COLUMNS} WHERE attempts = {attempts} AND renew_date <= {now} \
                 ORDER BY renew_date, domain LIMIT {limit}"
            );
        }
        let mut sql = String::new();
        for (i, attempts) in lanes.iter().enumerate() {
            if i > 0 {
                sql.push_str(" UNION ALL ");
            }
            let _ = write!(
                sql,
                "({COLUMNS} WHERE attempts = {attempts} AND renew_date <= {now} \
                 ORDER BY renew_date, domain LIMIT {limit})"
            );
        }
        let _ = write!(sql, " ORDER BY renew_date, domain LIMIT {limit}");
        sql
    }

    /// The parameters of the `?` form of [`sql`](Self::sql), in order.
    #[cfg(any(feature = "mysql", test))]
    pub(crate) fn binds(&self) -> Vec<DueBind> {
        match self {
            Self::Plain => vec![DueBind::MaxAttempts, DueBind::Now, DueBind::Limit],
            Self::Lanes(lanes) => {
                let mut binds = Vec::new();
                for _ in lanes {
                    binds.extend([DueBind::Now, DueBind::Limit]);
                }
                if lanes.len() > 1 {
                    binds.push(DueBind::Limit);
                }
                binds
            }
        }
    }
}

/// A parameter of the `?` form of [`DuePlan::sql`].
#[cfg(any(feature = "mysql", test))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DueBind {
    Now,
    Limit,
    MaxAttempts,
}

/// The attempt counts below `max_attempts` (the one parameter) that are
/// stored, sorted, at most `DUE_LANES_MAX + 1`: a walk down the index, one
/// probe per count (a recursive query on PostgreSQL, a loose index scan of
/// `DISTINCT` on MySQL).
pub(crate) fn attempt_counts_sql(dollar: bool) -> &'static str {
    if dollar {
        "WITH RECURSIVE counts(attempts) AS ( \
             SELECT min(attempts) FROM certkeeper_certificates WHERE attempts < $1 \
             UNION ALL \
             SELECT (SELECT min(c.attempts) FROM certkeeper_certificates c \
                     WHERE c.attempts > counts.attempts AND c.attempts < $1) \
             FROM counts WHERE counts.attempts IS NOT NULL \
         ) SELECT attempts FROM counts WHERE attempts IS NOT NULL LIMIT 17"
    } else {
        "SELECT DISTINCT attempts FROM certkeeper_certificates WHERE attempts < ? \
         ORDER BY attempts LIMIT 17"
    }
}

/// Attempt counts read by [`attempt_counts_sql`].
pub(crate) fn attempt_counts(counts: Vec<i64>) -> Result<Vec<u32>> {
    counts
        .into_iter()
        .map(|c| from_column_attempts("attempt counts", c))
        .collect()
}

/// The earliest date the columns keep.
pub(crate) const MIN_DATE: OffsetDateTime = datetime!(1000-01-01 00:00:00 UTC);
/// The latest date the columns keep.
pub(crate) const MAX_DATE: OffsetDateTime = datetime!(9999-12-31 23:59:59.999999 UTC);

/// A renew date as its column keeps it, or an error outside the years
/// 1000 to 9999.
pub(crate) fn column_date(
    store: &'static str,
    key: &str,
    date: OffsetDateTime,
) -> Result<OffsetDateTime> {
    if (MIN_DATE..=MAX_DATE).contains(&date) {
        Ok(date.to_offset(time::UtcOffset::UTC))
    } else {
        Err(Error::store(
            store,
            format!(
                "renew date of {key} is outside the years 1000 to 9999, which the database keeps"
            ),
        ))
    }
}

/// `date` in UTC, brought into the range the columns keep.
pub(crate) fn clamp_date(date: OffsetDateTime) -> OffsetDateTime {
    date.clamp(MIN_DATE, MAX_DATE)
        .to_offset(time::UtcOffset::UTC)
}

/// Longest time to live a lease or an answer is given (ten years): a
/// longer one is kept that long, within what every date column keeps.
const MAX_TTL_MICROS: i64 = 10 * 366 * 86_400 * 1_000_000;

/// A time to live (or an age) in microseconds, as the SQL statements add
/// it to the server's clock.
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros())
        .unwrap_or(i64::MAX)
        .min(MAX_TTL_MICROS)
}

/// The server's clock, read as unix microseconds, as a date.
pub(crate) fn server_now(unix_micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_micros) * 1000).unwrap_or(MIN_DATE)
}

/// The setting that keeps the mark `name` (the server's clock, in unix
/// microseconds, when it was set).
pub(crate) fn mark_key(name: &str) -> Result<String> {
    crate::store::check_key("mark name", name)?;
    let key = format!("mark.{name}");
    crate::store::check_key("mark name", &key)?;
    Ok(key)
}

/// How long ago a mark kept as `value` was set, with the server's clock at
/// `now_micros`; a value that is not a mark is logged and read as none.
pub(crate) fn mark_age(key: &str, value: &str, now_micros: i64) -> Option<Duration> {
    match value.parse::<i64>() {
        Ok(at) => Some(Duration::from_micros(
            u64::try_from(now_micros.saturating_sub(at)).unwrap_or(0),
        )),
        Err(_) => {
            tracing::warn!(key, value, "a stored mark is not a time; read as never set");
            None
        }
    }
}

/// A limit as SQL takes it.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A version as its column keeps it.
pub(crate) fn to_column_version(store: &'static str, key: &str, version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| {
        Error::store(
            store,
            format!("version of {key} is too large for the database"),
        )
    })
}

/// A version read from its column.
pub(crate) fn from_column_version(key: &str, version: i64) -> Result<u64> {
    u64::try_from(version).map_err(|_| corrupt(key, format!("negative version {version}")))
}

/// An attempt count read from its column.
pub(crate) fn from_column_attempts(key: &str, attempts: i64) -> Result<u32> {
    u32::try_from(attempts)
        .map_err(|_| corrupt(key, format!("attempt count {attempts} out of range")))
}

/// A domain read from a column.
pub(crate) fn column_domain(domain: &str) -> Result<Domain> {
    Domain::new(domain).map_err(|e| corrupt(domain, format!("stored domain is invalid: {e}")))
}

fn corrupt(key: &str, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        key: key.chars().take(256).collect(),
        reason: reason.into(),
    }
}

/// The JSON text of `record` as stored at `version`.
pub(crate) fn encode_record(
    store: &'static str,
    record: &CertRecord,
    version: u64,
) -> Result<String> {
    let stored = CertRecord {
        version,
        ..record.clone()
    };
    serde_json::to_string(&stored).map_err(|e| Error::Store {
        store,
        message: format!("could not encode the record of {}", record.domain),
        source: Some(Box::new(e)),
    })
}

/// A certificate record from its row: the JSON text, with the version of the
/// `version` column.
pub(crate) fn decode_record(domain: &str, version: i64, json: &str) -> Result<CertRecord> {
    let mut record: CertRecord = serde_json::from_str(json).map_err(|e| {
        corrupt(
            domain,
            format!("record is not valid JSON of a certificate record: {e}"),
        )
    })?;
    if record.domain.as_str() != domain {
        return Err(corrupt(
            domain,
            format!("the row of {domain} holds the record of {}", record.domain),
        ));
    }
    record.version = from_column_version(domain, version)?;
    Ok(record)
}

/// The JSON text of `record` as stored at `version`.
pub(crate) fn encode_account(
    store: &'static str,
    record: &AccountRecord,
    version: u64,
) -> Result<String> {
    let stored = AccountRecord {
        version,
        ..record.clone()
    };
    serde_json::to_string(&stored).map_err(|e| Error::Store {
        store,
        message: format!("could not encode the account {}", record.id),
        source: Some(Box::new(e)),
    })
}

/// An account from its row.
pub(crate) fn decode_account(id: &str, version: i64, json: &str) -> Result<AccountRecord> {
    let mut record: AccountRecord = serde_json::from_str(json)
        .map_err(|e| corrupt(id, format!("record is not valid JSON of an account: {e}")))?;
    if record.id != id {
        return Err(corrupt(
            id,
            format!("the row of {id} holds the account {}", record.id),
        ));
    }
    record.version = from_column_version(id, version)?;
    Ok(record)
}

/// An [`Error::Store`] for a failed database call.
pub(crate) fn db_error(store: &'static str, what: &str, e: sqlx::Error) -> Error {
    Error::Store {
        store,
        message: format!("{what}: {e}"),
        source: Some(Box::new(e)),
    }
}

/// Whether `e` is a deadlock or serialization failure, after which the
/// whole transaction may simply run again.
fn is_transient(e: &Error) -> bool {
    let Error::Store {
        source: Some(source),
        ..
    } = e
    else {
        return false;
    };
    let Some(sqlx::Error::Database(db)) = source.downcast_ref::<sqlx::Error>() else {
        return false;
    };
    // 40001: serialization failure (and MySQL's deadlock); 40P01: PostgreSQL's deadlock.
    matches!(db.code().as_deref(), Some("40001" | "40P01"))
}

/// Runs `attempt` again (up to 5 times in all) while it fails with a
/// deadlock or serialization failure.
pub(crate) async fn retry_transient<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    const TRIES: u32 = 5;
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < TRIES && is_transient(&e) => {
                tracing::debug!(error = %e, tries, "transaction retried");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64) -> Change {
        Change {
            seq,
            domain: Domain::new("a.example.com").unwrap(),
            deleted: false,
        }
    }

    #[test]
    fn the_feed_answer_matches_the_reference_rules() {
        // Nothing ever changed.
        assert_eq!(changes_answer(0, vec![], None, None), Changes::default());
        assert!(changes_answer(3, vec![], None, None).reset);
        // Changes 5..=9 kept: a reader at 4 misses nothing, one at 3 does.
        let answer = changes_answer(4, vec![change(5), change(6)], Some(5), Some(9));
        assert_eq!(
            (answer.cursor, answer.reset, answer.changes.len()),
            (6, false, 2)
        );
        let answer = changes_answer(3, vec![change(5)], Some(5), Some(9));
        assert_eq!((answer.cursor, answer.reset), (9, true));
        assert!(answer.changes.is_empty());
        // Up to date, and ahead of the store.
        assert_eq!(changes_answer(9, vec![], Some(5), Some(9)).cursor, 9);
        assert!(!changes_answer(9, vec![], Some(5), Some(9)).reset);
        assert!(changes_answer(10, vec![], Some(5), Some(9)).reset);
    }

    #[test]
    fn pruning_keeps_the_newest_rows_and_the_change_just_written() {
        let keep = Retention::new(3, Duration::from_secs(60));
        assert_eq!(keep.cut(10, 0), 7);
        assert_eq!(keep.cut(2, 0), 0);
        assert_eq!(keep.cut(10, 8), 8);
        assert_eq!(keep.cut(10, 12), 9);
        assert_eq!(Retention::new(0, Duration::ZERO).rows, 1);
    }

    #[test]
    fn due_statements_merge_one_range_per_attempt_count() {
        let sql = DuePlan::shown(3).sql(true);
        assert_eq!(sql.matches("UNION ALL").count(), 2);
        for attempts in 0..3 {
            assert!(sql.contains(&format!("attempts = {attempts} AND")), "{sql}");
        }
        assert!(!sql.contains("attempts = 3"), "{sql}");
        assert!(
            sql.ends_with(" ORDER BY renew_date, domain LIMIT $2"),
            "{sql}"
        );
        assert_eq!(DuePlan::for_max_attempts(17), None);
        assert!(DuePlan::shown(17).sql(true).contains("attempts < $3"));
        let stored = DuePlan::from_counts(vec![0, 3, 40]);
        assert!(stored.sql(true).contains("attempts = 40 AND"));
        assert_eq!(DuePlan::from_counts((0..17).collect()), DuePlan::Plain);
        assert!(!DuePlan::from_counts(vec![7]).sql(true).contains("UNION"));
        for plan in [
            DuePlan::shown(1),
            DuePlan::shown(2),
            DuePlan::shown(16),
            DuePlan::Plain,
            stored,
        ] {
            assert_eq!(plan.sql(false).matches('?').count(), plan.binds().len());
        }
    }

    #[test]
    fn dates_outside_the_columns_range_are_refused_or_clamped() {
        let early = datetime!(0999-12-31 23:59:59 UTC);
        assert!(column_date("test", "a.example.com", early).is_err());
        assert!(column_date("test", "a.example.com", MIN_DATE).is_ok());
        assert_eq!(clamp_date(early), MIN_DATE);
    }

    #[test]
    fn lifetimes_and_marks_in_microseconds_of_the_servers_clock() {
        assert_eq!(micros(Duration::from_secs(30)), 30_000_000);
        assert_eq!(micros(Duration::MAX), MAX_TTL_MICROS);
        assert_eq!(
            server_now(1_800_000_000_500_000),
            datetime!(2027-01-15 08:00:00.5 UTC)
        );
        assert_eq!(
            mark_key("maintenance-cycle").unwrap(),
            "mark.maintenance-cycle"
        );
        assert!(mark_key("../x").is_err());
        assert_eq!(
            mark_age("k", "1000000", 3_500_000),
            Some(Duration::from_millis(2500))
        );
        // A mark from a clock ahead reads as zero; one that is not a time as none.
        assert_eq!(mark_age("k", "9000000", 3_500_000), Some(Duration::ZERO));
        assert_eq!(mark_age("k", "yesterday", 3_500_000), None);
    }

    #[test]
    fn records_decode_only_under_their_own_key() {
        let record = CertRecord::new(Domain::new("a.example.com").unwrap(), MIN_DATE);
        let json = encode_record("test", &record, 3).unwrap();
        assert_eq!(decode_record("a.example.com", 4, &json).unwrap().version, 4);
        assert!(matches!(
            decode_record("b.example.com", 4, &json),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_record("a.example.com", 4, "{"),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_record("a.example.com", -1, &json),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn an_edited_migration_is_refused() {
        const LIST: &[Migration] = &[
            Migration {
                version: 1,
                description: "one",
                sql: "SELECT 1",
            },
            Migration {
                version: 2,
                description: "two",
                sql: "SELECT 2",
            },
        ];
        let applied = vec![(1, LIST[0].checksum())];
        let todo = pending("test", LIST, &applied).unwrap();
        assert_eq!(todo.iter().map(|m| m.version).collect::<Vec<_>>(), [2]);
        assert!(pending("test", LIST, &[(1, "0".repeat(64))]).is_err());
        assert!(
            pending("test", LIST, &[(1, LIST[0].checksum()), (3, String::new())])
                .unwrap()
                .len()
                == 1
        );
    }
}
