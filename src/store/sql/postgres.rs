//! [`PostgresStore`]: the store in a PostgreSQL database.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Postgres, Transaction};
use time::OffsetDateTime;

use super::{
    attempt_counts, attempt_counts_sql, call, changes_answer, checked_timeout, clamp_date,
    column_date, column_domain, db_error, decode_account, decode_record, encode_account,
    encode_record, from_column_attempts, from_column_version, mark_age as sql_mark_age, mark_key,
    micros, pending, retry_contention, server_now, sql_limit, to_column_version, Access, DuePlan,
    Migration, Retention, Scope, SqlOptions, Work, DEFAULT_STATEMENT_TIMEOUT, MIGRATION_LIMIT,
    MIN_DATE,
};
use crate::store::keys::{check_key, check_token, next_version};
use crate::store::{
    check_budget_key, AccountRecord, BudgetWindow, Budgets, CertRecord, CertStore,
    ChallengeAnswers, Change, ChangeFeed, Changes, ClusterStore, DueEntry, Leases, PassedOver,
};
use crate::{Domain, Error, Result};

const STORE: &str = "postgres";

/// The embedded migrations, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "certificates, accounts, meta, leases, challenges and the change feed",
        sql: include_str!("../../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "the console's login throttle",
        sql: include_str!("../../../migrations/postgres/0002_login_throttle.sql"),
    },
    Migration {
        version: 3,
        description: "the CA's budgets",
        sql: include_str!("../../../migrations/postgres/0003_ca_budgets.sql"),
    },
];

/// The advisory lock the migrator holds (per database): "certkpg1".
const MIGRATION_LOCK: i64 = 0x6365_7274_6b70_6731;

/// A [`CertStore`] in PostgreSQL, shared by every instance that connects to
/// the same database and schema. The schema needs PostgreSQL 11 or later
/// (covering indexes); the tests run on PostgreSQL 15.
///
/// The schema, the migrations and what the store guarantees are described
/// in the [module documentation](super). Clones share one connection pool.
///
/// Every time the store keeps (lease and answer expiries, marks, budget
/// windows, the change feed's dates) is read from the database server's
/// clock (`clock_timestamp()`), never from an instance's. Every call has a
/// deadline, 10 seconds unless set otherwise ([`connect_with`](Self::connect_with),
/// [`with_statement_timeout`](Self::with_statement_timeout)): see
/// [Deadlines](super#deadlines).
///
/// ```no_run
/// use certkeeper::store::{CertStore, PostgresStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> certkeeper::Result<()> {
/// let store = PostgresStore::connect("postgres://certkeeper@db.internal/app").await?;
/// let due = store.due(time::OffsetDateTime::now_utc(), 5, 200).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    retention: Retention,
    deadline: Duration,
}

impl PostgresStore {
    /// Connects a pool of up to 10 connections to `url`
    /// (`postgres://user:password@host:port/database`, see the
    /// [module documentation](super)) with a statement deadline of 10
    /// seconds, and applies the migrations this version needs:
    /// [`connect_with`](Self::connect_with) with the default
    /// [`SqlOptions`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, SqlOptions::default()).await
    }

    /// Connects a pool to `url` as `options` say and applies the
    /// migrations this version needs. Every connection is opened with the
    /// server-side `statement_timeout` set to the options' deadline, and
    /// every call of the store is bounded by it on the client side too
    /// (see [Deadlines](super#deadlines)); opening a connection is bounded
    /// by it as well. The migrations have their own, longer limit (another
    /// instance may be migrating): 6 minutes.
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<Self> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e| db_error(STORE, "invalid connection URL", e))?;
        let connect = connect.options([(
            "statement_timeout",
            format!("{}ms", options.server_timeout_millis()),
        )]);
        let pool = PgPoolOptions::new()
            .max_connections(options.get_max_connections())
            .acquire_timeout(options.get_statement_timeout())
            .connect_with(connect)
            .await
            .map_err(|e| db_error(STORE, "could not connect", e))?;
        Ok(Self::from_pool(pool)
            .await?
            .with_statement_timeout(options.get_statement_timeout()))
    }

    /// A store over an existing pool; applies the migrations this version
    /// needs. The pool's connections must all see the same `search_path`.
    ///
    /// The store's calls get the client-side deadline of 10 seconds
    /// ([`with_statement_timeout`](Self::with_statement_timeout) sets
    /// another); the server-side `statement_timeout` is whatever the pool's
    /// connections were opened with (`PgConnectOptions::options`).
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
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
    /// server-side `statement_timeout` of connections already opened is
    /// left as it is: pass the deadline to
    /// [`connect_with`](Self::connect_with) to set both.
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
    /// count). Its parameters are `$1` the `now`, `$2` the limit and, in
    /// the plain statement, `$3` `max_attempts`.
    pub fn due_statement(max_attempts: u32) -> String {
        DuePlan::shown(max_attempts).sql(true)
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `work` on a connection within the deadline, retried as
    /// [`call`](super::call) says.
    async fn run<'a, T, F>(&'a self, what: &'static str, access: Access, work: F) -> Result<T>
    where
        T: Send,
        F: for<'c> FnMut(&'c mut PgConnection, Scope<'c, 'a>) -> Work<'c, T> + Send,
    {
        call(STORE, &self.pool, self.deadline, what, access, work).await
    }
}

async fn stored_version(conn: &mut PgConnection, domain: &str) -> Result<u64> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT version FROM certkeeper_certificates WHERE domain = $1")
            .bind(domain)
            .fetch_optional(conn)
            .await
            .map_err(|e| db_error(STORE, "reading a version", e))?;
    found.map_or(Ok(0), |v| from_column_version(domain, v))
}

async fn stored_account_version(conn: &mut PgConnection, id: &str) -> Result<u64> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT version FROM certkeeper_accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(|e| db_error(STORE, "reading a version", e))?;
    found.map_or(Ok(0), |v| from_column_version(id, v))
}

/// One run of `save`: the conditional write and its change, in one
/// transaction.
async fn try_save(
    conn: &mut PgConnection,
    retention: Retention,
    record: &CertRecord,
    version: u64,
    json: &str,
) -> Result<u64> {
    let domain = record.domain.as_str();
    let renew_date = column_date(STORE, domain, record.renew_date)?;
    let expected = to_column_version(STORE, domain, record.version)?;
    let new = to_column_version(STORE, domain, version)?;
    let mut tx = begin(conn).await?;
    let mut query = sqlx::query(if expected == 0 {
        "INSERT INTO certkeeper_certificates (domain, version, renew_date, attempts, record) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (domain) DO NOTHING"
    } else {
        "UPDATE certkeeper_certificates \
         SET version = $2, renew_date = $3, attempts = $4, record = $5 \
         WHERE domain = $1 AND version = $6"
    })
    .bind(domain)
    .bind(new)
    .bind(renew_date)
    .bind(i64::from(record.attempts))
    .bind(json);
    if expected != 0 {
        query = query.bind(expected);
    }
    let written = query
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(STORE, "saving a record", e))?
        .rows_affected();
    if written == 0 {
        rollback(tx).await?;
        return Err(Error::Conflict {
            key: domain.to_owned(),
            expected: record.version,
            found: stored_version(conn, domain).await?,
        });
    }
    record_change(&mut tx, retention, domain, false).await?;
    commit(tx).await?;
    Ok(version)
}

/// One run of `delete`: the delete and its change, in one transaction.
async fn try_delete(
    conn: &mut PgConnection,
    retention: Retention,
    domain: &Domain,
) -> Result<bool> {
    let mut tx = begin(conn).await?;
    let deleted = sqlx::query("DELETE FROM certkeeper_certificates WHERE domain = $1")
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

async fn begin(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>> {
    conn.begin()
        .await
        .map_err(|e| db_error(STORE, "could not start a transaction", e))
}

/// Writes the change-feed row of a save or delete in its transaction, and
/// prunes what the retention no longer keeps. The counter row stays locked
/// until the transaction ends, so changes commit in order.
async fn record_change(
    conn: &mut PgConnection,
    retention: Retention,
    domain: &str,
    deleted: bool,
) -> Result<()> {
    let (seq, too_old): (i64, i64) = sqlx::query_as(
        "WITH next AS (
             UPDATE certkeeper_change_seq SET last_seq = last_seq + 1 WHERE id = 1
             RETURNING last_seq
         ), written AS (
             INSERT INTO certkeeper_changes (seq, domain, deleted, changed_at)
             SELECT last_seq, $1, $2, clock_timestamp() FROM next
             RETURNING seq
         )
         SELECT (SELECT seq FROM written),
                (SELECT COALESCE(MAX(seq), 0) FROM certkeeper_changes
                 WHERE changed_at < clock_timestamp() - make_interval(secs => $3))",
    )
    .bind(domain)
    .bind(deleted)
    .bind(retention.age_secs as f64)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error(STORE, "writing the change feed", e))?;
    let cut = retention.cut(seq, too_old);
    if cut > 0 {
        sqlx::query("DELETE FROM certkeeper_changes WHERE seq <= $1")
            .bind(cut)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error(STORE, "pruning the change feed", e))?;
    }
    Ok(())
}

async fn rollback(tx: Transaction<'_, Postgres>) -> Result<()> {
    tx.rollback()
        .await
        .map_err(|e| db_error(STORE, "could not roll back", e))
}

async fn commit(tx: Transaction<'_, Postgres>) -> Result<()> {
    tx.commit()
        .await
        .map_err(|e| db_error(STORE, "could not commit", e))
}

/// Applies the pending migrations in one transaction under the advisory
/// lock, within [`MIGRATION_LIMIT`].
async fn migrate(pool: &PgPool) -> Result<()> {
    tokio::time::timeout(MIGRATION_LIMIT, retry_contention(|| migrate_once(pool)))
        .await
        .map_err(|elapsed| Error::Store {
            store: STORE,
            message: format!(
                "the migrations did not finish within {MIGRATION_LIMIT:?} \
                 (another instance holding the migration lock, or the server not answering)"
            ),
            source: Some(Box::new(elapsed)),
        })?
}

async fn migrate_once(pool: &PgPool) -> Result<()> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| db_error(STORE, "could not migrate", e))?;
    // Waiting for another instance's migrations is no statement to cut
    // short; the transaction's own limit is MIGRATION_LIMIT.
    (&mut *tx)
        .execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(|e| db_error(STORE, "could not migrate", e))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(STORE, "could not take the migration lock", e))?;
    (&mut *tx)
        .execute(
            "CREATE TABLE IF NOT EXISTS certkeeper_migrations (
                 version BIGINT PRIMARY KEY,
                 description TEXT NOT NULL,
                 checksum TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| db_error(STORE, "could not create the migrations table", e))?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, checksum FROM certkeeper_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error(STORE, "could not read the migrations applied", e))?;
    for migration in pending(STORE, MIGRATIONS, &applied)? {
        (&mut *tx)
            .execute(sqlx::raw_sql(migration.sql))
            .await
            .map_err(|e| db_error(STORE, &format!("migration {} failed", migration.version), e))?;
        sqlx::query(
            "INSERT INTO certkeeper_migrations (version, description, checksum) \
             VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .bind(migration.checksum())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(STORE, "could not record a migration", e))?;
        tracing::info!(
            store = STORE,
            version = migration.version,
            "migration applied"
        );
    }
    commit(tx).await
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the pool's options: they hold the password.
        f.debug_struct("PostgresStore")
            .field("connections", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("statement_timeout", &self.deadline)
            .finish()
    }
}

#[async_trait]
impl CertStore for PostgresStore {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        const WHAT: &str = "loading a record";
        let row: Option<(i64, String)> = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    sqlx::query_as(
                        "SELECT version, record FROM certkeeper_certificates WHERE domain = $1",
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
        let rows: Vec<String> = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    sqlx::query_scalar("SELECT domain FROM certkeeper_certificates ORDER BY domain")
                        .fetch_all(conn)
                        .await
                        .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?;
        rows.iter().map(|d| column_domain(d)).collect()
    }

    async fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> Result<PassedOver> {
        const WHAT: &str = "listing records at the attempt limit";
        // Both read the (attempts, renew_date, domain) index from
        // `max_attempts` on: records under the limit are never visited.
        let (total, rows): (i64, Vec<String>) = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    let total: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM certkeeper_certificates WHERE attempts >= $1",
                    )
                    .bind(i64::from(max_attempts))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))?;
                    let rows: Vec<String> = sqlx::query_scalar(
                        "SELECT domain FROM certkeeper_certificates WHERE attempts >= $1 \
                         ORDER BY attempts, renew_date, domain LIMIT $2",
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
            .map(|domain| column_domain(&domain))
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
                            let counts: Vec<i64> = sqlx::query_scalar(attempt_counts_sql(true))
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
                    let sql = plan.sql(true);
                    let mut query = sqlx::query_as::<_, (String, i64, OffsetDateTime, i64)>(&sql)
                        .bind(clamp_date(now))
                        .bind(sql_limit(limit));
                    if plan == DuePlan::Plain {
                        query = query.bind(i64::from(max_attempts));
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
                    sqlx::query_as("SELECT version, record FROM certkeeper_accounts WHERE id = $1")
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
        const WHAT: &str = "saving an account";
        let id = record.id.as_str();
        check_key("account id", id)?;
        let version = next_version(STORE, id, record.version)?;
        let json = encode_account(STORE, record, version)?;
        let json = json.as_str();
        let expected = to_column_version(STORE, id, record.version)?;
        let new = to_column_version(STORE, id, version)?;
        self.run(WHAT, Access::Write, |conn, _| {
            Box::pin(async move {
                let mut query = sqlx::query(if expected == 0 {
                    "INSERT INTO certkeeper_accounts (id, version, record) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO NOTHING"
                } else {
                    "UPDATE certkeeper_accounts SET version = $2, record = $3 \
                     WHERE id = $1 AND version = $4"
                })
                .bind(id)
                .bind(new)
                .bind(json);
                if expected != 0 {
                    query = query.bind(expected);
                }
                let written = query
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))?
                    .rows_affected();
                if written == 0 {
                    return Err(Error::Conflict {
                        key: id.to_owned(),
                        expected: record.version,
                        found: stored_account_version(conn, id).await?,
                    });
                }
                Ok(version)
            })
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        const WHAT: &str = "listing accounts";
        self.run(WHAT, Access::Read, |conn, _| {
            Box::pin(async move {
                sqlx::query_scalar("SELECT id FROM certkeeper_accounts ORDER BY id")
                    .fetch_all(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        const WHAT: &str = "reading a setting";
        check_key("meta key", key)?;
        self.run(WHAT, Access::Read, |conn, _| {
            Box::pin(async move {
                sqlx::query_scalar("SELECT value FROM certkeeper_meta WHERE name = $1")
                    .bind(key)
                    .fetch_optional(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        const WHAT: &str = "writing a setting";
        check_key("meta key", key)?;
        // The no-op update locks the existing row and returns its value:
        // one statement answers with what is in force.
        self.run(WHAT, Access::Write, |conn, _| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "INSERT INTO certkeeper_meta (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = certkeeper_meta.value \
                     RETURNING value",
                )
                .bind(key)
                .bind(value)
                .fetch_one(conn)
                .await
                .map_err(|e| db_error(STORE, WHAT, e))
            })
        })
        .await
    }

    async fn delete_account(&self, id: &str) -> Result<bool> {
        const WHAT: &str = "deleting an account";
        check_key("account id", id)?;
        let deleted = self
            .run(WHAT, Access::Write, |conn, _| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM certkeeper_accounts WHERE id = $1")
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
                    "INSERT INTO certkeeper_meta (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
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
                    sqlx::query("DELETE FROM certkeeper_meta WHERE name = $1")
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

// Every time below is the server's (`clock_timestamp()`), never an
// instance's: the instances' clocks drift, the database's is one.
#[async_trait]
impl Leases for PostgresStore {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        const WHAT: &str = "acquiring a lease";
        check_key("lease name", name)?;
        check_key("lease holder", holder)?;
        let ttl = micros(ttl);
        let granted = self
            .run(WHAT, Access::Write, |conn, _| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO certkeeper_leases (name, holder, expires_at) \
                         VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::float8 / 1e6)) \
                         ON CONFLICT (name) DO UPDATE \
                         SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                         WHERE certkeeper_leases.holder = EXCLUDED.holder \
                            OR certkeeper_leases.expires_at <= clock_timestamp()",
                    )
                    .bind(name)
                    .bind(holder)
                    .bind(ttl)
                    .execute(conn)
                    .await
                    .map_err(|e| db_error(STORE, WHAT, e))
                })
            })
            .await?
            .rows_affected();
        Ok(granted == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        const WHAT: &str = "releasing a lease";
        check_key("lease name", name)?;
        let released = self
            .run(WHAT, Access::Write, |conn, _| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM certkeeper_leases WHERE name = $1 AND holder = $2")
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
                    sqlx::query_as(
                        "SELECT value, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::int8 \
                         FROM certkeeper_meta WHERE name = $1",
                    )
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
                sqlx::query(
                    "INSERT INTO certkeeper_meta (name, value) \
                     VALUES ($1, ((EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::int8 - $2)::text) \
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                )
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
impl ChallengeAnswers for PostgresStore {
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
                     VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::float8 / 1e6)) \
                     ON CONFLICT (token) DO UPDATE \
                     SET key_authorization = EXCLUDED.key_authorization, \
                         expires_at = EXCLUDED.expires_at",
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
                     WHERE token = $1 AND expires_at > clock_timestamp()",
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
                sqlx::query("DELETE FROM certkeeper_challenges WHERE token = $1")
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
                        "DELETE FROM certkeeper_challenges WHERE expires_at <= clock_timestamp()",
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
impl Budgets for PostgresStore {
    async fn take_budget(&self, key: &str, window: Duration, limit: u32) -> Result<bool> {
        check_budget_key(key)?;
        self.run("taking a budget", Access::Write, |conn, _| {
            Box::pin(async move {
                // The row first, on its own: the transaction below then only
                // locks it.
                sqlx::query(
                    "INSERT INTO certkeeper_budgets (budget_key, taken) VALUES ($1, '') \
                     ON CONFLICT (budget_key) DO NOTHING",
                )
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error(STORE, "creating a budget", e))?;
                let mut tx = begin(conn).await?;
                let (text, now): (String, i64) = sqlx::query_as(
                    "SELECT taken, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::int8 \
                     FROM certkeeper_budgets WHERE budget_key = $1 FOR UPDATE",
                )
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db_error(STORE, "reading a budget", e))?;
                let mut budget = BudgetWindow::parse(key, &text)?;
                let taken = budget.take(server_now(now), window, limit);
                sqlx::query("UPDATE certkeeper_budgets SET taken = $2 WHERE budget_key = $1")
                    .bind(key)
                    .bind(budget.encode())
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
                    sqlx::query_as(
                        "SELECT taken, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::int8 \
                         FROM certkeeper_budgets WHERE budget_key = $1",
                    )
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
impl ChangeFeed for PostgresStore {
    async fn changes_since(&self, cursor: u64, limit: usize) -> Result<Changes> {
        const WHAT: &str = "reading the change feed";
        let (rows, (oldest, newest)) = self
            .run(WHAT, Access::Read, |conn, _| {
                Box::pin(async move {
                    let rows: Vec<(i64, String, bool)> = sqlx::query_as(
                        "SELECT seq, domain, deleted FROM certkeeper_changes \
                         WHERE seq > $1 ORDER BY seq LIMIT $2",
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
