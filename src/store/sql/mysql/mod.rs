//! [`MySqlStore`]: the store in a MariaDB or MySQL database.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySql, Transaction};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::{
    attempt_counts, attempt_counts_sql, call, changes_answer, checked_timeout, clamp_date,
    column_date, column_domain, db_error, decode_account, decode_record, encode_account,
    encode_record, from_column_attempts, from_column_version, mark_age as sql_mark_age, mark_key,
    micros, server_now, sql_limit, to_column_version, Access, DueBind, DuePlan, Retention, Scope,
    SqlOptions, Work, DEFAULT_STATEMENT_TIMEOUT, MIN_DATE,
};
use crate::store::keys::{check_key, check_token, next_version};
use crate::store::{
    check_budget_key, AccountRecord, BudgetWindow, Budgets, CertRecord, CertStore,
    ChallengeAnswers, Change, ChangeFeed, Changes, ClusterStore, DueEntry, Leases, PassedOver,
};
use crate::{Domain, Error, Result};

mod migrate;

use migrate::migrate;

const STORE: &str = "mysql";

/// A [`CertStore`] in MariaDB or MySQL, shared by every instance that
/// connects to the same database. The statements are written for MariaDB
/// 10.5 or later and MySQL 8.0 or later; the tests run on MariaDB 10.11.
///
/// The schema, the migrations and what the store guarantees are described
/// in the [module documentation](super). Clones share one connection pool.
///
/// Every time the store keeps (lease and answer expiries, marks, budget
/// windows, the change feed's dates) is read from the database server's
/// clock (`UTC_TIMESTAMP(6)`, `NOW(6)`), never from an instance's. Every
/// call has a deadline, 10 seconds unless set otherwise
/// ([`connect_with`](Self::connect_with),
/// [`with_statement_timeout`](Self::with_statement_timeout)): see
/// [Deadlines](super#deadlines).
///
/// ```no_run
/// use certkeeper::store::{CertStore, MySqlStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> certkeeper::Result<()> {
/// let store = MySqlStore::connect("mysql://certkeeper@db.internal/app").await?;
/// let due = store.due(time::OffsetDateTime::now_utc(), 5, 200).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    retention: Retention,
    deadline: Duration,
}

/// A date as a `DATETIME(6)` column keeps it: UTC without offset.
fn datetime(date: OffsetDateTime) -> PrimitiveDateTime {
    let utc = date.to_offset(UtcOffset::UTC);
    PrimitiveDateTime::new(utc.date(), utc.time())
}

/// A name read from an ASCII, binary-collated column (which sqlx reads as
/// bytes).
fn ascii(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(e.as_bytes())
            .chars()
            .take(256)
            .collect(),
        reason: "a stored name is not ASCII".into(),
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// MariaDB and MySQL's "unknown system variable".
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

fn is_unknown_variable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|db| db.number() == ER_UNKNOWN_SYSTEM_VARIABLE)
}

/// Limits every statement of the session on the server: MariaDB's
/// `max_statement_time` (seconds, every statement), or, on MySQL, which
/// has no such variable, `max_execution_time` (milliseconds, `SELECT`s
/// only). `0`: no limit.
pub(super) async fn limit_statements(
    conn: &mut MySqlConnection,
    millis: u64,
) -> std::result::Result<(), sqlx::Error> {
    let mariadb = format!(
        "SET SESSION max_statement_time = {}.{:03}",
        millis / 1000,
        millis % 1000
    );
    match conn.execute(mariadb.as_str()).await {
        Ok(_) => Ok(()),
        Err(e) if is_unknown_variable(&e) => {
            let mysql = format!("SET SESSION max_execution_time = {millis}");
            match conn.execute(mysql.as_str()).await {
                Err(e) if !is_unknown_variable(&e) => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

impl MySqlStore {
    /// Connects a pool of up to 10 connections to `url`
    /// (`mysql://user:password@host:port/database`, see the
    /// [module documentation](super)) with a statement deadline of 10
    /// seconds, and applies the migrations this version needs:
    /// [`connect_with`](Self::connect_with) with the default
    /// [`SqlOptions`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, SqlOptions::default()).await
    }

    /// Connects a pool to `url` as `options` say and applies the
    /// migrations this version needs. Every connection is opened with the
    /// server-side limit set to the options' deadline (MariaDB's
    /// `max_statement_time`; MySQL's `max_execution_time`, which limits
    /// `SELECT`s only), and every call of the store is bounded by it on the
    /// client side too (see [Deadlines](super#deadlines)); opening a
    /// connection is bounded by it as well. The migrations have their own,
    /// longer limit (another instance may be migrating): 6 minutes.
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<Self> {
        let millis = options.server_timeout_millis();
        let pool = MySqlPoolOptions::new()
            .max_connections(options.get_max_connections())
            .acquire_timeout(options.get_statement_timeout())
            .after_connect(move |conn, _| Box::pin(limit_statements(conn, millis)))
            .connect(url)
            .await
            .map_err(|e| db_error(STORE, "could not connect", e))?;
        Ok(Self::from_pool(pool)
            .await?
            .with_statement_timeout(options.get_statement_timeout()))
    }

    /// A store over an existing pool (whose connections name a database);
    /// applies the migrations this version needs.
    ///
    /// The store's calls get the client-side deadline of 10 seconds
    /// ([`with_statement_timeout`](Self::with_statement_timeout) sets
    /// another); the server-side limit is whatever the pool's connections
    /// were opened with.
    pub async fn from_pool(pool: MySqlPool) -> Result<Self> {
        migrate(&pool).await?;
        Ok(Self {
            pool,
            retention: Retention::DEFAULT,
            deadline: DEFAULT_STATEMENT_TIMEOUT,
        })
    }

    /// Sets the deadline of every call of the store, on the client side
    /// (at least a millisecond): a call that has not finished by then
    /// fails with [`Error::Store`], and its connection is closed. The
    /// server-side limit of connections already opened is left as it is:
    /// pass the deadline to [`connect_with`](Self::connect_with) to set
    /// both.
    pub fn with_statement_timeout(mut self, limit: Duration) -> Self {
        self.deadline = checked_timeout(limit);
        self
    }

    /// The deadline of every call (see
    /// [`with_statement_timeout`](Self::with_statement_timeout)).
    pub fn statement_timeout(&self) -> Duration {
        self.deadline
    }

    /// Keeps the newest `changes` changes (at least 1) and every change
    /// younger than `age` (at least a second) in the change feed, instead of
    /// 100,000 and a day. A reader further behind gets
    /// [`Changes::reset`].
    pub fn with_change_retention(mut self, changes: u64, age: Duration) -> Self {
        self.retention = Retention::new(changes, age);
        self
    }

    /// The statement [`due`](CertStore::due) runs for `max_attempts` (1 or
    /// more), to `EXPLAIN` it on a database: up to 16, one index range per
    /// attempt count below `max_attempts`, merged; above, the plain range
    /// query `due` falls back to when more than 16 counts below
    /// `max_attempts` are stored (with fewer, it merges one range per stored
    /// count). Its parameters are `?`: per attempt count the `now` then
    /// the limit, then the limit again (the plain statement: `max_attempts`,
    /// the `now`, the limit).
    pub fn due_statement(max_attempts: u32) -> String {
        DuePlan::shown(max_attempts).sql(false)
    }

    /// The connection pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Runs `work` on a connection within the deadline, retried as
    /// [`call`](super::call) says.
    async fn run<'a, T, F>(&'a self, what: &'static str, access: Access, work: F) -> Result<T>
    where
        T: Send,
        F: for<'c> FnMut(&'c mut MySqlConnection, Scope<'c, 'a>) -> Work<'c, T> + Send,
    {
        call(STORE, &self.pool, self.deadline, what, access, work).await
    }
}

async fn stored_version(
    conn: &mut MySqlConnection,
    table_query: &'static str,
    key: &str,
) -> Result<u64> {
    let found: Option<i64> = sqlx::query_scalar(table_query)
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error(STORE, "reading a version", e))?;
    found.map_or(Ok(0), |v| from_column_version(key, v))
}

/// One run of `save`: the conditional write and its change, in one
/// transaction.
async fn try_save(
    conn: &mut MySqlConnection,
    retention: Retention,
    record: &CertRecord,
    version: u64,
    json: &str,
) -> Result<u64> {
    let domain = record.domain.as_str();
    let renew_date = datetime(column_date(STORE, domain, record.renew_date)?);
    let expected = to_column_version(STORE, domain, record.version)?;
    let new = to_column_version(STORE, domain, version)?;
    let mut tx = begin(conn).await?;
    let written = if expected == 0 {
        let inserted = sqlx::query(
            "INSERT INTO certkeeper_certificates (domain, version, renew_date, attempts, record) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(domain)
        .bind(new)
        .bind(renew_date)
        .bind(i64::from(record.attempts))
        .bind(json)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(done) => done.rows_affected(),
            Err(e) if is_unique_violation(&e) => 0,
            Err(e) => return Err(db_error(STORE, "saving a record", e)),
        }
    } else {
        // The version changes, so a matched row is a changed row.
        sqlx::query(
            "UPDATE certkeeper_certificates \
             SET version = ?, renew_date = ?, attempts = ?, record = ? \
             WHERE domain = ? AND version = ?",
        )
        .bind(new)
        .bind(renew_date)
        .bind(i64::from(record.attempts))
        .bind(json)
        .bind(domain)
        .bind(expected)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(STORE, "saving a record", e))?
        .rows_affected()
    };
    if written == 0 {
        rollback(tx).await?;
        return Err(Error::Conflict {
            key: domain.to_owned(),
            expected: record.version,
            found: stored_version(
                conn,
                "SELECT version FROM certkeeper_certificates WHERE domain = ?",
                domain,
            )
            .await?,
        });
    }
    record_change(&mut tx, retention, domain, false).await?;
    commit(tx).await?;
    Ok(version)
}

/// One run of `delete`: the delete and its change, in one transaction.
async fn try_delete(
    conn: &mut MySqlConnection,
    retention: Retention,
    domain: &Domain,
) -> Result<bool> {
    let mut tx = begin(conn).await?;
    let deleted = sqlx::query("DELETE FROM certkeeper_certificates WHERE domain = ?")
        .bind(domain.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(STORE, "deleting a record", e))?
        .rows_affected();
    if deleted == 0 {
        rollback(tx).await?;
        return Ok(false);
    }
    record_change(&mut tx, retention, domain.as_str(), true).await?;
    commit(tx).await?;
    Ok(true)
}

/// One run of `save_account`: one conditional statement.
async fn try_save_account(
    conn: &mut MySqlConnection,
    record: &AccountRecord,
    version: u64,
    json: &str,
) -> Result<u64> {
    let id = record.id.as_str();
    let expected = to_column_version(STORE, id, record.version)?;
    let new = to_column_version(STORE, id, version)?;
    let written = if expected == 0 {
        let inserted =
            sqlx::query("INSERT INTO certkeeper_accounts (id, version, record) VALUES (?, ?, ?)")
                .bind(id)
                .bind(new)
                .bind(json)
                .execute(&mut *conn)
                .await;
        match inserted {
            Ok(done) => done.rows_affected(),
            Err(e) if is_unique_violation(&e) => 0,
            Err(e) => return Err(db_error(STORE, "saving an account", e)),
        }
    } else {
        sqlx::query(
            "UPDATE certkeeper_accounts SET version = ?, record = ? \
             WHERE id = ? AND version = ?",
        )
        .bind(new)
        .bind(json)
        .bind(id)
        .bind(expected)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(STORE, "saving an account", e))?
        .rows_affected()
    };
    if written == 0 {
        return Err(Error::Conflict {
            key: id.to_owned(),
            expected: record.version,
            found: stored_version(
                conn,
                "SELECT version FROM certkeeper_accounts WHERE id = ?",
                id,
            )
            .await?,
        });
    }
    Ok(version)
}

/// One run of `put_meta_if_absent`.
async fn try_put_meta_if_absent(
    conn: &mut MySqlConnection,
    key: &str,
    value: &str,
) -> Result<String> {
    let failed = |e| db_error(STORE, "writing a setting", e);
    let mut tx = begin(conn).await?;
    // Inserts, or locks the row in force without changing it; the read
    // under that lock answers with the value in force.
    sqlx::query(
        "INSERT INTO certkeeper_meta (name, value) VALUES (?, ?) \
         ON DUPLICATE KEY UPDATE value = value",
    )
    .bind(key)
    .bind(value)
    .execute(&mut *tx)
    .await
    .map_err(failed)?;
    let value: String =
        sqlx::query_scalar("SELECT value FROM certkeeper_meta WHERE name = ? FOR UPDATE")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(failed)?;
    commit(tx).await?;
    Ok(value)
}

/// One run of `acquire_lease`.
async fn try_acquire_lease(
    conn: &mut MySqlConnection,
    name: &str,
    holder: &str,
    ttl_micros: i64,
) -> Result<bool> {
    let failed = |e| db_error(STORE, "acquiring a lease", e);
    let mut tx = begin(conn).await?;
    // One statement takes the lease when it is free, expired or ours.
    // Both conditions read the row as it was: `holder` is assigned
    // first, and once it is ours the second test is true as well, so
    // the statement means the same whether the server assigns left to
    // right (MySQL's default) or all at once (MariaDB's
    // SIMULTANEOUS_ASSIGNMENT).
    // The server's clock (UTC_TIMESTAMP is read once per statement).
    sqlx::query(
        "INSERT INTO certkeeper_leases (name, holder, expires_at) \
         VALUES (?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND) \
         ON DUPLICATE KEY UPDATE \
         holder = IF(holder = VALUES(holder) OR expires_at <= UTC_TIMESTAMP(6), \
                     VALUES(holder), holder), \
         expires_at = IF(holder = VALUES(holder) OR expires_at <= UTC_TIMESTAMP(6), \
                         VALUES(expires_at), expires_at)",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl_micros)
    .execute(&mut *tx)
    .await
    .map_err(failed)?;
    // sqlx connects with CLIENT_FOUND_ROWS, under which an untouched
    // existing row and an inserted one both count 1 affected row: the
    // grant is read back under the row lock the upsert holds instead.
    let current: Vec<u8> =
        sqlx::query_scalar("SELECT holder FROM certkeeper_leases WHERE name = ? FOR UPDATE")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(failed)?;
    commit(tx).await?;
    Ok(current == holder.as_bytes())
}

async fn begin(conn: &mut MySqlConnection) -> Result<Transaction<'_, MySql>> {
    conn.begin()
        .await
        .map_err(|e| db_error(STORE, "could not start a transaction", e))
}

/// Writes the change-feed row of a save or delete in its transaction, and
/// prunes what the retention no longer keeps. The counter row stays locked
/// until the transaction ends, so changes commit in order.
async fn record_change(
    conn: &mut MySqlConnection,
    retention: Retention,
    domain: &str,
    deleted: bool,
) -> Result<()> {
    let failed = |e| db_error(STORE, "writing the change feed", e);
    let seq = sqlx::query(
        "UPDATE certkeeper_change_seq SET last_seq = LAST_INSERT_ID(last_seq + 1) WHERE id = 1",
    )
    .execute(&mut *conn)
    .await
    .map_err(failed)?
    .last_insert_id();
    let seq = i64::try_from(seq)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| Error::store(STORE, "the change counter is missing"))?;
    sqlx::query(
        "INSERT INTO certkeeper_changes (seq, domain, deleted, changed_at) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(6))",
    )
    .bind(seq)
    .bind(domain)
    .bind(deleted)
    .execute(&mut *conn)
    .await
    .map_err(failed)?;
    let too_old: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(seq), 0) AS SIGNED) FROM certkeeper_changes \
         WHERE changed_at < UTC_TIMESTAMP(6) - INTERVAL ? SECOND",
    )
    .bind(retention.age_secs)
    .fetch_one(&mut *conn)
    .await
    .map_err(failed)?;
    let cut = retention.cut(seq, too_old);
    if cut > 0 {
        sqlx::query("DELETE FROM certkeeper_changes WHERE seq <= ?")
            .bind(cut)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error(STORE, "pruning the change feed", e))?;
    }
    Ok(())
}

async fn rollback(tx: Transaction<'_, MySql>) -> Result<()> {
    tx.rollback()
        .await
        .map_err(|e| db_error(STORE, "could not roll back", e))
}

async fn commit(tx: Transaction<'_, MySql>) -> Result<()> {
    tx.commit()
        .await
        .map_err(|e| db_error(STORE, "could not commit", e))
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the pool's options: they hold the password.
        f.debug_struct("MySqlStore")
            .field("connections", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("statement_timeout", &self.deadline)
            .finish()
    }
}

#[async_trait]
impl CertStore for MySqlStore {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        const WHAT: &str = "loading a record";
        let row: Option<(i64, String)> = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    sqlx::query_as(
                        "SELECT version, record FROM certkeeper_certificates WHERE domain = ?",
                    )
                    .bind(domain.as_str())
                    .fetch_optional(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        row.map(|(version, json)| decode_record(domain.as_str(), version, &json))
            .transpose()
    }

    async fn save(&self, record: &CertRecord) -> Result<u64> {
        let version = next_version(STORE, record.domain.as_str(), record.version)?;
        let json = encode_record(STORE, record, version)?;
        let (json, retention) = (json.as_str(), self.retention);
        self.run("saving a record", Access::Write, |conn, _| {
            Box::pin(try_save(conn, retention, record, version, json))
        })
        .await
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
        let retention = self.retention;
        self.run("deleting a record", Access::Write, |conn, _| {
            Box::pin(try_delete(conn, retention, domain))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Domain>> {
        const WHAT: &str = "listing records";
        let rows: Vec<Vec<u8>> = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    sqlx::query_scalar("SELECT domain FROM certkeeper_certificates ORDER BY domain")
                        .fetch_all(conn)
                        .await
                        .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        rows.into_iter()
            .map(|d| column_domain(&ascii(d)?))
            .collect()
    }

    async fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> Result<PassedOver> {
        const WHAT: &str = "listing records at the attempt limit";
        // Both read the (attempts, renew_date, domain) index from
        // `max_attempts` on: records under the limit are never visited.
        let (total, rows): (i64, Vec<Vec<u8>>) = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    let total: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM certkeeper_certificates WHERE attempts >= ?",
                    )
                    .bind(i64::from(max_attempts))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))?;
                    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
                        "SELECT domain FROM certkeeper_certificates WHERE attempts >= ? \
                         ORDER BY attempts, renew_date, domain LIMIT ?",
                    )
                    .bind(i64::from(max_attempts))
                    .bind(sql_limit(limit))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))?;
                    Ok((total, rows))
                })
            })
            .await?;
        let domains = rows
            .into_iter()
            .map(|domain| column_domain(&ascii(domain)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(PassedOver {
            total: u64::try_from(total).unwrap_or(0),
            exact: true,
            domains,
        })
    }

    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<DueEntry>> {
        const WHAT: &str = "listing due records";
        if max_attempts == 0 || limit == 0 || now < MIN_DATE {
            return Ok(Vec::new());
        }
        let rows = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    let plan = match DuePlan::for_max_attempts(max_attempts) {
                        Some(plan) => plan,
                        None => {
                            let counts: Vec<i64> = sqlx::query_scalar(attempt_counts_sql(false))
                                .bind(i64::from(max_attempts))
                                .fetch_all(&mut *conn)
                                .await
                                .map_err(|e| db_error(STORE, WHAT, e))?;
                            DuePlan::from_counts(attempt_counts(counts)?)
                        }
                    };
                    if plan == DuePlan::Lanes(Vec::new()) {
                        return Ok(Vec::new());
                    }
                    let sql = plan.sql(false);
                    let now = datetime(clamp_date(now));
                    let limit = sql_limit(limit);
                    let mut query = sqlx::query_as::<_, (Vec<u8>, i64, OffsetDateTime, i64)>(&sql);
                    for bind in plan.binds() {
                        query = match bind {
                            DueBind::Now => query.bind(now),
                            DueBind::Limit => query.bind(limit),
                            DueBind::MaxAttempts => query.bind(i64::from(max_attempts)),
                        };
                    }
                    query
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        rows.into_iter()
            .map(|(domain, version, renew_date, attempts)| {
                let domain = ascii(domain)?;
                Ok(DueEntry {
                    version: from_column_version(&domain, version)?,
                    attempts: from_column_attempts(&domain, attempts)?,
                    domain: column_domain(&domain)?,
                    renew_date,
                })
            })
            .collect()
    }

    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        const WHAT: &str = "loading an account";
        check_key("account id", id)?;
        let row: Option<(i64, String)> = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    sqlx::query_as("SELECT version, record FROM certkeeper_accounts WHERE id = ?")
                        .bind(id)
                        .fetch_optional(conn)
                        .await
                        .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        row.map(|(version, json)| decode_account(id, version, &json))
            .transpose()
    }

    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        check_key("account id", &record.id)?;
        let version = next_version(STORE, &record.id, record.version)?;
        let json = encode_account(STORE, record, version)?;
        let json = json.as_str();
        self.run("saving an account", Access::Write, |conn, _| {
            Box::pin(try_save_account(conn, record, version, json))
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        const WHAT: &str = "listing accounts";
        let rows: Vec<Vec<u8>> = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    sqlx::query_scalar("SELECT id FROM certkeeper_accounts ORDER BY id")
                        .fetch_all(conn)
                        .await
                        .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        rows.into_iter().map(ascii).collect()
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        const WHAT: &str = "reading a setting";
        check_key("meta key", key)?;
        self.run(WHAT, Access::Read, |conn, _| {
            Box::pin(async move {
                sqlx::query_scalar("SELECT value FROM certkeeper_meta WHERE name = ?")
                    .bind(key)
                    .fetch_optional(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        check_key("meta key", key)?;
        self.run("writing a setting", Access::Write, |conn, _| {
            Box::pin(try_put_meta_if_absent(conn, key, value))
        })
        .await
    }

    async fn delete_account(&self, id: &str) -> Result<bool> {
        const WHAT: &str = "deleting an account";
        check_key("account id", id)?;
        let deleted = self
            .run(WHAT, Access::Write, |conn, _| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM certkeeper_accounts WHERE id = ?")
                        .bind(id)
                        .execute(conn)
                        .await
                        .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        const WHAT: &str = "writing a setting";
        check_key("meta key", key)?;
        self.run(WHAT, Access::Write, |conn, _| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO certkeeper_meta (name, value) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE value = VALUES(value)",
                )
                .bind(key)
                .bind(value)
                .execute(conn)
                .await
                .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await?;
        Ok(())
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        const WHAT: &str = "deleting a setting";
        check_key("meta key", key)?;
        let deleted = self
            .run(WHAT, Access::Write, |conn, _| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM certkeeper_meta WHERE name = ?")
                        .bind(key)
                        .execute(conn)
                        .await
                        .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    fn cluster(&self) -> Option<&dyn ClusterStore> {
        Some(self)
    }
}

/// The server's clock in unix microseconds, in a select list.
const SERVER_NOW_MICROS: &str = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)";

// Every time below is the server's (`UTC_TIMESTAMP(6)`, `NOW(6)`), never an
// instance's: the instances' clocks drift, the database's is one.
#[async_trait]
impl Leases for MySqlStore {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        check_key("lease name", name)?;
        check_key("lease holder", holder)?;
        let ttl = micros(ttl);
        self.run("acquiring a lease", Access::Write, |conn, _| {
            Box::pin(try_acquire_lease(conn, name, holder, ttl))
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        const WHAT: &str = "releasing a lease";
        check_key("lease name", name)?;
        let released = self
            .run(WHAT, Access::Write, |conn, _| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM certkeeper_leases WHERE name = ? AND holder = ?")
                        .bind(name)
                        .bind(holder)
                        .execute(conn)
                        .await
                        .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?
            .rows_affected();
        Ok(released > 0)
    }

    async fn mark_age(&self, name: &str) -> Result<Option<Duration>> {
        const WHAT: &str = "reading a mark";
        let key = mark_key(name)?;
        let key = key.as_str();
        let row: Option<(String, i64)> = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    sqlx::query_as(&format!(
                        "SELECT value, {SERVER_NOW_MICROS} FROM certkeeper_meta WHERE name = ?"
                    ))
                    .bind(key)
                    .fetch_optional(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        Ok(row.and_then(|(value, now)| sql_mark_age(key, &value, now)))
    }

    async fn set_mark(&self, name: &str, ago: Duration) -> Result<()> {
        const WHAT: &str = "setting a mark";
        let key = mark_key(name)?;
        let (key, ago) = (key.as_str(), micros(ago));
        self.run(WHAT, Access::Write, |conn, _| {
            Box::pin(async move {
                sqlx::query(&format!(
                    "INSERT INTO certkeeper_meta (name, value) \
                     VALUES (?, CAST({SERVER_NOW_MICROS} - ? AS CHAR)) \
                     ON DUPLICATE KEY UPDATE value = VALUES(value)"
                ))
                .bind(key)
                .bind(ago)
                .execute(conn)
                .await
                .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl ChallengeAnswers for MySqlStore {
    async fn put_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<()> {
        const WHAT: &str = "storing a challenge answer";
        check_token(token)?;
        let ttl = micros(ttl);
        self.run(WHAT, Access::Write, |conn, _| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO certkeeper_challenges (token, key_authorization, expires_at) \
                     VALUES (?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND) \
                     ON DUPLICATE KEY UPDATE \
                     key_authorization = VALUES(key_authorization), expires_at = VALUES(expires_at)",
                )
                .bind(token)
                .bind(key_authorization)
                .bind(ttl)
                .execute(conn)
                .await
                .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await?;
        Ok(())
    }

    async fn get_challenge(&self, token: &str) -> Result<Option<String>> {
        const WHAT: &str = "reading a challenge answer";
        check_token(token)?;
        // A plain read (no locking read, no write): the CA's requests, and
        // anyone's, never make the database write or wait on a lock.
        self.run(WHAT, Access::Read, |conn, _| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "SELECT key_authorization FROM certkeeper_challenges \
                     WHERE token = ? AND expires_at > UTC_TIMESTAMP(6)",
                )
                .bind(token)
                .fetch_optional(conn)
                .await
                .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await
    }

    async fn delete_challenge(&self, token: &str) -> Result<()> {
        const WHAT: &str = "deleting a challenge answer";
        check_token(token)?;
        self.run(WHAT, Access::Write, |conn, _| {
            Box::pin(async move {
                sqlx::query("DELETE FROM certkeeper_challenges WHERE token = ?")
                    .bind(token)
                    .execute(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await?;
        Ok(())
    }

    async fn purge_expired_challenges(&self) -> Result<u64> {
        const WHAT: &str = "purging expired challenge answers";
        let purged = self
            .run(WHAT, Access::Write, |conn, _| {
                Box::pin(async move {
                    sqlx::query(
                        "DELETE FROM certkeeper_challenges WHERE expires_at <= UTC_TIMESTAMP(6)",
                    )
                    .execute(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        Ok(purged.rows_affected())
    }
}

#[async_trait]
impl Budgets for MySqlStore {
    async fn take_budget(&self, key: &str, window: Duration, limit: u32) -> Result<bool> {
        check_budget_key(key)?;
        self.run("taking a budget", Access::Write, |conn, _| {
            Box::pin(async move {
                // The row first, on its own: the transaction below then only
                // locks it.
                sqlx::query(
                    "INSERT IGNORE INTO certkeeper_budgets (budget_key, taken) VALUES (?, '')",
                )
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error(STORE, "creating a budget", e))?;
                let mut tx = begin(conn).await?;
                let (text, now): (String, i64) = sqlx::query_as(&format!(
                    "SELECT taken, {SERVER_NOW_MICROS} FROM certkeeper_budgets \
                     WHERE budget_key = ? FOR UPDATE"
                ))
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db_error(STORE, "reading a budget", e))?;
                let mut budget = BudgetWindow::parse(key, &text)?;
                let taken = budget.take(server_now(now), window, limit);
                sqlx::query("UPDATE certkeeper_budgets SET taken = ? WHERE budget_key = ?")
                    .bind(budget.encode())
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(STORE, "updating a budget", e))?;
                commit(tx).await?;
                Ok(taken)
            })
        })
        .await
    }

    async fn budget_used(&self, key: &str, window: Duration) -> Result<u32> {
        const WHAT: &str = "reading a budget";
        check_budget_key(key)?;
        let row: Option<(String, i64)> = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    sqlx::query_as(&format!(
                        "SELECT taken, {SERVER_NOW_MICROS} FROM certkeeper_budgets \
                         WHERE budget_key = ?"
                    ))
                    .bind(key)
                    .fetch_optional(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        match row {
            Some((text, now)) => Ok(BudgetWindow::parse(key, &text)?.used(server_now(now), window)),
            None => Ok(0),
        }
    }
}

#[async_trait]
impl ChangeFeed for MySqlStore {
    async fn changes_since(&self, cursor: u64, limit: usize) -> Result<Changes> {
        const WHAT: &str = "reading the change feed";
        let (rows, (oldest, newest)) = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    let rows: Vec<(i64, Vec<u8>, bool)> = sqlx::query_as(
                        "SELECT seq, domain, deleted FROM certkeeper_changes \
                         WHERE seq > ? ORDER BY seq LIMIT ?",
                    )
                    .bind(i64::try_from(cursor).unwrap_or(i64::MAX))
                    .bind(sql_limit(limit))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))?;
                    // Read after the rows: if nothing after `cursor` was
                    // pruned by now, nothing was pruned before the rows were
                    // read either.
                    let bounds: (Option<i64>, Option<i64>) =
                        sqlx::query_as("SELECT MIN(seq), MAX(seq) FROM certkeeper_changes")
                            .fetch_one(&mut *conn)
                            .await
                            .map_err(|e| db_error(STORE, WHAT, e))?;
                    Ok((rows, bounds))
                })
            })
            .await?;
        let changes = rows
            .into_iter()
            .map(|(seq, domain, deleted)| {
                let domain = ascii(domain)?;
                Ok(Change {
                    seq: from_column_version(&domain, seq)?,
                    domain: column_domain(&domain)?,
                    deleted,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let seq = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        Ok(changes_answer(cursor, changes, seq(oldest), seq(newest)))
    }
}
