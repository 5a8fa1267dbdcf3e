//! The embedded migrations of the MariaDB / MySQL schema, applied under a
//! named lock so that instances starting together migrate one at a time.

use sha2::{Digest, Sha256};
use sqlx::mysql::{MySqlConnection, MySqlPool};
use sqlx::Executor;

use super::{limit_statements, STORE};
use crate::store::sql::{db_error, hex, pending, Migration, MIGRATION_LIMIT};
use crate::{Error, Result};

/// The embedded migrations, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "certificates, accounts, meta, leases, challenges and the change feed",
        sql: include_str!("../../../../migrations/mysql/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "the console's login throttle",
        sql: include_str!("../../../../migrations/mysql/0002_login_throttle.sql"),
    },
    Migration {
        version: 3,
        description: "the CA's budgets",
        sql: include_str!("../../../../migrations/mysql/0003_ca_budgets.sql"),
    },
];

/// How long a starting instance waits for another one's migrations.
const MIGRATION_LOCK_WAIT_SECS: i64 = 300;

/// Applies the pending migrations while holding a named lock for this
/// database, so that instances starting together migrate one at a time;
/// within [`MIGRATION_LIMIT`].
pub(super) async fn migrate(pool: &MySqlPool) -> Result<()> {
    tokio::time::timeout(MIGRATION_LIMIT, migrate_under_lock(pool))
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

async fn migrate_under_lock(pool: &MySqlPool) -> Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| db_error(STORE, "could not migrate", e))?;
    // Waiting for another instance's migrations is no statement to cut
    // short: the connection's server-side limit is lifted, and the
    // connection closed afterwards rather than pooled without its limit.
    conn.close_on_drop();
    limit_statements(&mut conn, 0)
        .await
        .map_err(|e| db_error(STORE, "could not migrate", e))?;
    let database: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error(STORE, "could not read the database name", e))?;
    let database = database.ok_or_else(|| {
        Error::store(
            STORE,
            "the connection URL names no database (mysql://host/database)",
        )
    })?;
    // Lock names are server-wide and at most 64 characters.
    let lock = format!(
        "certkeeper-migrate-{}",
        &hex(&Sha256::digest(database.as_bytes()))[..32]
    );
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(&lock)
        .bind(MIGRATION_LOCK_WAIT_SECS)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error(STORE, "could not take the migration lock", e))?;
    if locked != Some(1) {
        return Err(Error::store(
            STORE,
            format!(
                "another instance held the migration lock for {MIGRATION_LOCK_WAIT_SECS} seconds"
            ),
        ));
    }
    let applied = apply_migrations(&mut conn).await;
    // Should this fail, closing the connection (see above) frees the lock.
    let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut *conn)
        .await;
    applied
}

async fn apply_migrations(conn: &mut MySqlConnection) -> Result<()> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS certkeeper_migrations (
             version BIGINT NOT NULL,
             description VARCHAR(255) NOT NULL,
             checksum CHAR(64) CHARACTER SET ascii NOT NULL,
             applied_at DATETIME(6) NOT NULL,
             PRIMARY KEY (version)
         ) ENGINE = InnoDB",
    )
    .await
    .map_err(|e| db_error(STORE, "could not create the migrations table", e))?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, checksum FROM certkeeper_migrations")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error(STORE, "could not read the migrations applied", e))?;
    for migration in pending(STORE, MIGRATIONS, &applied)? {
        // DDL commits on its own in MySQL: every statement of a migration
        // can run again, and the migration is recorded once it all ran.
        (&mut *conn)
            .execute(sqlx::raw_sql(migration.sql))
            .await
            .map_err(|e| db_error(STORE, &format!("migration {} failed", migration.version), e))?;
        sqlx::query(
            "INSERT INTO certkeeper_migrations (version, description, checksum, applied_at) \
             VALUES (?, ?, ?, UTC_TIMESTAMP(6))",
        )
        .bind(migration.version)
        .bind(migration.description)
        .bind(migration.checksum())
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(STORE, "could not record a migration", e))?;
        tracing::info!(
            store = STORE,
            version = migration.version,
            "migration applied"
        );
    }
    Ok(())
}
