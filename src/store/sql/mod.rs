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
//!   [`Error::Corrupt`].
//! - **Retries.** Every call runs again, up to 6 runs in all, after a
//!   deadlock, a serialization failure or a lock wait timeout (PostgreSQL
//!   SQLSTATE `40001` and `40P01`; MariaDB / MySQL error 1213, SQLSTATE
//!   `40001`, and 1205, whose SQLSTATE is the generic `HY000`): the
//!   server rolled the work back, and a transaction runs again whole. The
//!   pause before each retry is jittered and grows (between half and all
//!   of 4, 8, 16 ... ms, at most 250 ms), so that calls that met do not
//!   meet again. A call that only reads also runs again after its
//!   connection failed (reset, closed by the server); a write does not,
//!   since nobody knows whether it took effect.
//!
//! # Clocks
//!
//! Every time the stores keep (a lease's or an answer's expiry, a mark, a
//! budget's window, the change feed's dates) is read from the database
//! server's clock inside the statement: `clock_timestamp()` on PostgreSQL,
//! `UTC_TIMESTAMP(6)` / `NOW(6)` on MariaDB / MySQL. The instances' clocks
//! may drift apart; the server's is one. Only `due(now, ...)` and the
//! records' own dates come from the caller.
//!
//! # Deadlines
//!
//! Every call of a store has a deadline, the *statement timeout*: 10
//! seconds unless [`SqlOptions::statement_timeout`] (through
//! `connect_with`) or the store's `with_statement_timeout` sets another.
//! - **On the client**, the whole call (waiting for a free connection or
//!   opening one, every statement, every retry) is bounded by it: a server
//!   that went silent (a dropped network, a half-open connection, a stuck
//!   proxy) cannot hang a call, which fails within the deadline with
//!   [`Error::Store`], its message naming the call and the deadline, its
//!   source tokio's `Elapsed`. The connection of a call that ran out of
//!   time may be in the middle of a statement: it is closed, never
//!   returned to the pool, and the next call gets a fresh one. A
//!   connection that failed is closed the same way.
//! - **On the server**, each connection that `connect` / `connect_with`
//!   opens limits its statements to the same time: PostgreSQL's
//!   `statement_timeout` (set when connecting), MariaDB's
//!   `max_statement_time`, MySQL's `max_execution_time` (which limits
//!   `SELECT`s only). A statement stopped there fails with
//!   [`Error::Store`] too, and the server frees its locks at once. A pool
//!   given to `from_pool` keeps its own settings.
//! - The migrations at connect are exempt: waiting for another instance's
//!   migrations is no failure. They have 6 minutes in all.

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
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::macros::datetime;
use time::OffsetDateTime;

use super::{AccountRecord, CertRecord, Change, Changes};
use crate::{Domain, Error, Result};

/// How a SQL store connects and how long it waits for its database: for
/// `PostgresStore::connect_with` and `MySqlStore::connect_with`.
///
/// ```
/// use std::time::Duration;
/// use certkeeper::store::sql::SqlOptions;
/// let options = SqlOptions::new()
///     .statement_timeout(Duration::from_secs(5))
///     .max_connections(20);
/// assert_eq!(options.get_statement_timeout(), Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlOptions {
    max_connections: u32,
    statement_timeout: Duration,
}

impl Default for SqlOptions {
    /// 10 connections, a statement deadline of 10 seconds.
    fn default() -> Self {
        Self {
            max_connections: 10,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

/// The statement deadline of a store unless set otherwise.
pub(crate) const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest statement deadline (a shorter one is raised to it).
const MIN_STATEMENT_TIMEOUT: Duration = Duration::from_millis(1);

/// The longest statement deadline the server is told (PostgreSQL keeps
/// `statement_timeout` in milliseconds in a 32-bit integer); the client
/// side keeps the deadline as given.
const MAX_SERVER_STATEMENT_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl SqlOptions {
    /// The defaults: 10 connections, a statement deadline of 10 seconds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps up to `max` connections open (at least 1).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The deadline of every call of the store (see the
    /// [module documentation](self#deadlines)); at least a millisecond.
    pub fn statement_timeout(mut self, limit: Duration) -> Self {
        self.statement_timeout = limit.max(MIN_STATEMENT_TIMEOUT);
        self
    }

    /// The most connections kept open.
    pub fn get_max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The deadline of every call.
    pub fn get_statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// The deadline as the server is told it, in whole milliseconds (at
    /// least 1).
    pub(crate) fn server_timeout_millis(&self) -> u64 {
        u64::try_from(
            self.statement_timeout
                .min(MAX_SERVER_STATEMENT_TIMEOUT)
                .as_millis(),
        )
        .unwrap_or(u64::MAX)
        .max(1)
    }
}

/// How long `connect` waits for the migrations in all: another instance's
/// migrations (5 minutes at most on MariaDB / MySQL), then its own.
pub(crate) const MIGRATION_LIMIT: Duration = Duration::from_secs(360);

/// A statement deadline as a store keeps it.
pub(crate) fn checked_timeout(limit: Duration) -> Duration {
    limit.max(MIN_STATEMENT_TIMEOUT)
}

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

/// How a failed statement may be met again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A deadlock, a serialization failure or a lock wait that timed out:
    /// the server rolled the work back (the transaction, or on MariaDB /
    /// MySQL after a lock wait timeout the statement, and the dropped
    /// transaction rolls back the rest), so the whole call may run again.
    Contention,
    /// The connection failed (I/O, TLS, protocol, the server going away):
    /// whether a write took effect is unknown, but a read may run again on
    /// another connection.
    Connection,
    /// Anything else: reported at once.
    Other,
}

/// The failure a database error names: by SQLSTATE (`40001` serialization
/// failure, and MariaDB / MySQL's deadlock; `40P01` PostgreSQL's deadlock;
/// class `08` and `57P01` to `57P03`: the connection or the server went
/// away) and, on MariaDB / MySQL, by error number (1213 deadlock, 1205 lock
/// wait timeout, whose SQLSTATE is the generic `HY000`; 1053 and 1927: the
/// server shut down or killed the connection).
pub(crate) fn failure_of_codes(sqlstate: Option<&str>, mysql_number: Option<u16>) -> Failure {
    match mysql_number {
        Some(1213 | 1205) => return Failure::Contention,
        Some(1053 | 1927) => return Failure::Connection,
        _ => {}
    }
    match sqlstate {
        Some("40001" | "40P01") => Failure::Contention,
        Some(code) if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") => {
            Failure::Connection
        }
        _ => Failure::Other,
    }
}

/// The failure of a driver error.
pub(crate) fn failure_of_sqlx(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(db) => {
            #[cfg(feature = "mysql")]
            let number = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number());
            #[cfg(not(feature = "mysql"))]
            let number = None;
            failure_of_codes(db.code().as_deref(), number)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Failure::Connection,
        _ => Failure::Other,
    }
}

/// The failure of a store error: that of the driver's error it carries.
pub(crate) fn failure_of(e: &Error) -> Failure {
    match e {
        Error::Store {
            source: Some(source),
            ..
        } => source
            .downcast_ref::<sqlx::Error>()
            .map_or(Failure::Other, failure_of_sqlx),
        _ => Failure::Other,
    }
}

/// What a store call does to the database, which decides what is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Only reads: run again after contention or a failed connection.
    Read,
    /// Writes: run again after contention only (after a failed connection
    /// nobody knows whether the write took effect).
    Write,
}

impl Access {
    /// Whether a call of this kind that failed with `failure` runs again.
    pub(crate) fn retries(self, failure: Failure) -> bool {
        match failure {
            Failure::Contention => true,
            Failure::Connection => self == Self::Read,
            Failure::Other => false,
        }
    }
}

/// Runs of one call at most, the first included.
pub(crate) const TRIES: u32 = 6;
/// The pause before the first retry is at most this long ...
const BACKOFF_FIRST: Duration = Duration::from_millis(4);
/// ... doubles with each retry, and never exceeds this.
const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// The pause before retry number `retry` (1: the first), from a random
/// number: between half and all of `4 ms * 2^(retry - 1)`, capped at
/// 250 ms. The jitter spreads the retries of calls that met each other, so
/// that they do not meet again.
pub(crate) fn backoff(retry: u32, random: u64) -> Duration {
    let ceiling = BACKOFF_FIRST
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let ceiling = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    let floor = ceiling / 2;
    Duration::from_micros(floor + random % (ceiling - floor + 1))
}

/// A random number for [`backoff`]: hashed by a freshly keyed hasher (the
/// standard library keys each from the system's randomness), which is all
/// the randomness a jitter needs.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// The error of a call that did not finish within its deadline.
fn deadline_error(
    store: &'static str,
    what: &str,
    deadline: Duration,
    elapsed: tokio::time::error::Elapsed,
) -> Error {
    Error::Store {
        store,
        message: format!(
            "{what}: no answer from the database within the statement deadline of {deadline:?}; \
             the connection was closed"
        ),
        source: Some(Box::new(elapsed)),
    }
}

/// Ties the lifetime `'c` of a connection lent to a call's work to the
/// lifetime `'a` of what the work borrows (`'a` outlives `'c`).
pub(crate) type Scope<'c, 'a> = PhantomData<&'c &'a ()>;

/// The work of a call, on the connection lent to it.
pub(crate) type Work<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// Runs `work` on a connection of `pool`, within `deadline` in all:
///
/// - the connection is acquired, and `work` run, under a client-side
///   timeout, so that a server that went silent (a dropped network, a
///   half-open connection) cannot hang the call. A connection whose work
///   did not finish in time is closed, never returned to the pool: it may
///   be in the middle of a statement;
/// - a connection whose work failed on the connection itself is closed too;
/// - `work` runs again (up to [`TRIES`] times, with a jittered exponential
///   [`backoff`]) after a deadlock, a serialization failure or a lock wait
///   timeout, and for an [`Access::Read`] after a failed connection,
///   while the deadline allows.
///
/// `what` names the call in errors (`loading a record`).
pub(crate) async fn call<'a, DB, T, F>(
    store: &'static str,
    pool: &sqlx::Pool<DB>,
    deadline: Duration,
    what: &'static str,
    access: Access,
    mut work: F,
) -> Result<T>
where
    DB: sqlx::Database,
    T: Send,
    F: for<'c> FnMut(&'c mut DB::Connection, Scope<'c, 'a>) -> Work<'c, T> + Send,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut tries = 1;
    loop {
        let outcome = match tokio::time::timeout_at(end, pool.acquire()).await {
            Err(elapsed) => Err(deadline_error(store, what, deadline, elapsed)),
            Ok(Err(e @ sqlx::Error::PoolTimedOut)) => Err(Error::Store {
                store,
                message: format!(
                    "{what}: no connection of the pool was free, or could be opened, \
                     within the statement deadline of {deadline:?}"
                ),
                source: Some(Box::new(e)),
            }),
            Ok(Err(e)) => Err(db_error(store, what, e)),
            Ok(Ok(mut conn)) => {
                match tokio::time::timeout_at(end, work(&mut conn, PhantomData)).await {
                    Ok(done) => {
                        if matches!(&done, Err(e) if failure_of(e) == Failure::Connection) {
                            drop(conn.detach());
                        }
                        done
                    }
                    Err(elapsed) => {
                        // Possibly mid-statement: closed, not pooled.
                        drop(conn.detach());
                        Err(deadline_error(store, what, deadline, elapsed))
                    }
                }
            }
        };
        match outcome {
            Err(e) if tries < TRIES && access.retries(failure_of(&e)) => {
                let pause = backoff(tries, random());
                if tokio::time::Instant::now() + pause >= end {
                    return Err(e);
                }
                tracing::debug!(store, error = %e, tries, "{what}: retried");
                tries += 1;
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

/// Runs `attempt` again (up to [`TRIES`] runs in all, with the jittered
/// [`backoff`]) while it fails with a deadlock, a serialization failure or
/// a lock wait timeout: for PostgreSQL's migrations, which hold one
/// connection throughout.
#[cfg(feature = "postgres")]
pub(crate) async fn retry_contention<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < TRIES && failure_of(&e) == Failure::Contention => {
                tracing::debug!(error = %e, tries, "transaction retried");
                tokio::time::sleep(backoff(tries, random())).await;
                tries += 1;
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
    fn deadlocks_serialization_failures_and_lock_wait_timeouts_are_contention() {
        // PostgreSQL: by SQLSTATE.
        assert_eq!(failure_of_codes(Some("40001"), None), Failure::Contention);
        assert_eq!(failure_of_codes(Some("40P01"), None), Failure::Contention);
        // MariaDB / MySQL: by number, whatever the SQLSTATE (1205's is HY000).
        assert_eq!(
            failure_of_codes(Some("40001"), Some(1213)),
            Failure::Contention
        );
        assert_eq!(
            failure_of_codes(Some("HY000"), Some(1205)),
            Failure::Contention
        );
        assert_eq!(failure_of_codes(None, Some(1213)), Failure::Contention);
        assert_eq!(failure_of_codes(None, Some(1205)), Failure::Contention);
        // HY000 alone says nothing: a duplicate key, a syntax error, a
        // statement the server stopped at its deadline are reported.
        assert_eq!(failure_of_codes(Some("HY000"), Some(1062)), Failure::Other);
        assert_eq!(failure_of_codes(Some("HY000"), None), Failure::Other);
        assert_eq!(failure_of_codes(Some("23505"), None), Failure::Other);
        assert_eq!(failure_of_codes(Some("57014"), None), Failure::Other);
        assert_eq!(failure_of_codes(Some("70100"), Some(1969)), Failure::Other);
        assert_eq!(failure_of_codes(None, None), Failure::Other);
        // The connection or the server went away.
        assert_eq!(failure_of_codes(Some("08006"), None), Failure::Connection);
        assert_eq!(failure_of_codes(Some("57P01"), None), Failure::Connection);
        assert_eq!(
            failure_of_codes(Some("08S01"), Some(1053)),
            Failure::Connection
        );
        assert_eq!(
            failure_of_codes(Some("70100"), Some(1927)),
            Failure::Connection
        );
    }

    #[test]
    fn driver_errors_are_classified_through_the_store_error() {
        let reset = || {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            ))
        };
        assert_eq!(failure_of_sqlx(&reset()), Failure::Connection);
        assert_eq!(
            failure_of_sqlx(&sqlx::Error::Protocol("garbled".into())),
            Failure::Connection
        );
        assert_eq!(failure_of_sqlx(&sqlx::Error::PoolTimedOut), Failure::Other);
        assert_eq!(failure_of_sqlx(&sqlx::Error::RowNotFound), Failure::Other);
        assert_eq!(
            failure_of(&db_error("test", "loading", reset())),
            Failure::Connection
        );
        assert_eq!(
            failure_of(&Error::Conflict {
                key: "a.example.com".into(),
                expected: 1,
                found: 2
            }),
            Failure::Other
        );
        assert_eq!(
            failure_of(&Error::store("test", "no source")),
            Failure::Other
        );
    }

    #[test]
    fn reads_run_again_after_a_failed_connection_writes_only_after_contention() {
        for access in [Access::Read, Access::Write] {
            assert!(access.retries(Failure::Contention));
            assert!(!access.retries(Failure::Other));
        }
        assert!(Access::Read.retries(Failure::Connection));
        assert!(!Access::Write.retries(Failure::Connection));
    }

    #[test]
    fn the_backoff_grows_is_bounded_and_jittered() {
        let micros = |d: Duration| d.as_micros();
        for retry in 1..=TRIES + 20 {
            let ceiling = (4_000u128 << (retry - 1).min(16)).min(250_000);
            let low = backoff(retry, 0);
            let high = backoff(retry, u64::MAX - 1);
            assert_eq!(micros(low), ceiling / 2, "retry {retry}");
            assert!(micros(high) <= ceiling, "retry {retry}");
            for random in [1, 7, 1 << 40, u64::MAX] {
                let pause = micros(backoff(retry, random));
                assert!((ceiling / 2..=ceiling).contains(&pause), "retry {retry}");
            }
        }
        assert_eq!(backoff(1, 0), Duration::from_millis(2));
        assert!(backoff(1, u64::MAX) <= Duration::from_millis(4));
        assert!(backoff(3, 0) >= Duration::from_millis(8));
        assert_eq!(backoff(40, 0), Duration::from_millis(125));
        assert!(backoff(40, u64::MAX) <= Duration::from_millis(250));
        // Every run of a call waits at most this long in all.
        let worst: Duration = (1..TRIES).map(|r| backoff(r, u64::MAX - 1)).sum();
        assert!(worst <= Duration::from_millis(150), "{worst:?}");
        // Random numbers spread the pauses of calls that met.
        let pauses: std::collections::HashSet<_> = (0..64).map(|_| backoff(5, random())).collect();
        assert!(pauses.len() > 32, "{} distinct pauses", pauses.len());
    }

    #[test]
    fn statement_deadlines_are_kept_within_what_the_servers_take() {
        let options = SqlOptions::default();
        assert_eq!(options.get_statement_timeout(), Duration::from_secs(10));
        assert_eq!(options.get_max_connections(), 10);
        assert_eq!(options.server_timeout_millis(), 10_000);
        let options = SqlOptions::new()
            .statement_timeout(Duration::ZERO)
            .max_connections(0);
        assert_eq!(options.get_statement_timeout(), Duration::from_millis(1));
        assert_eq!(options.get_max_connections(), 1);
        assert_eq!(options.server_timeout_millis(), 1);
        let long = SqlOptions::new().statement_timeout(Duration::MAX);
        assert_eq!(long.server_timeout_millis(), i32::MAX as u64);
        assert_eq!(checked_timeout(Duration::ZERO), Duration::from_millis(1));
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
