//! The login throttle's counters in the cluster's database: the SQL stores
//! are [`ThrottleBackend`]s, so every instance counts against the same
//! limits.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::throttle::{ThrottleBackend, WindowCount};
use crate::store::sql::{clamp_date, db_error};
use crate::{Error, Result};

/// Expired windows deleted per hit, so the table stays small without a
/// separate job.
const PRUNE_PER_HIT: i64 = 16;

fn check_throttle_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 64 || !key.is_ascii() {
        return Err(Error::InvalidKey {
            kind: "throttle key",
            key: key.chars().take(80).collect(),
            reason: "not 1 to 64 ASCII characters",
        });
    }
    Ok(())
}

fn window_end(now: OffsetDateTime, window: time::Duration) -> OffsetDateTime {
    clamp_date(now.checked_add(window).unwrap_or(now))
}

fn window_count(store: &'static str, count: i64, resets_at: OffsetDateTime) -> Result<WindowCount> {
    Ok(WindowCount {
        count: u64::try_from(count)
            .map_err(|_| Error::store(store, "a login throttle count is negative"))?,
        resets_at,
    })
}

/// `PostgresStore` keeps the counters in `certkeeper_login_throttle`, one
/// upsert per hit.
#[cfg(feature = "postgres")]
#[async_trait]
impl ThrottleBackend for crate::store::PostgresStore {
    async fn hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: time::Duration,
        _limit: u64,
    ) -> Result<WindowCount> {
        check_throttle_key(key)?;
        let now = clamp_date(now);
        let (count, resets_at): (i64, OffsetDateTime) = sqlx::query_as(
            "INSERT INTO certkeeper_login_throttle (key, count, resets_at) VALUES ($1, 1, $3) \
             ON CONFLICT (key) DO UPDATE SET \
               count = CASE WHEN certkeeper_login_throttle.resets_at <= $2 THEN 1 \
                            ELSE certkeeper_login_throttle.count + 1 END, \
               resets_at = CASE WHEN certkeeper_login_throttle.resets_at <= $2 THEN $3 \
                                ELSE certkeeper_login_throttle.resets_at END \
             RETURNING count, resets_at",
        )
        .bind(key)
        .bind(now)
        .bind(window_end(now, window))
        .fetch_one(self.pool())
        .await
        .map_err(|e| db_error("postgres", "counting a login attempt", e))?;
        sqlx::query(
            "DELETE FROM certkeeper_login_throttle WHERE key IN \
             (SELECT key FROM certkeeper_login_throttle WHERE resets_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(PRUNE_PER_HIT)
        .execute(self.pool())
        .await
        .map_err(|e| db_error("postgres", "pruning expired login windows", e))?;
        window_count("postgres", count, resets_at)
    }

    async fn refund(&self, key: &str, now: OffsetDateTime) -> Result<()> {
        check_throttle_key(key)?;
        sqlx::query(
            "UPDATE certkeeper_login_throttle SET count = count - 1 \
             WHERE key = $1 AND resets_at > $2 AND count > 0",
        )
        .bind(key)
        .bind(clamp_date(now))
        .execute(self.pool())
        .await
        .map_err(|e| db_error("postgres", "refunding a login attempt", e))?;
        Ok(())
    }

    async fn reset(&self, key: &str) -> Result<()> {
        check_throttle_key(key)?;
        sqlx::query("DELETE FROM certkeeper_login_throttle WHERE key = $1")
            .bind(key)
            .execute(self.pool())
            .await
            .map_err(|e| db_error("postgres", "resetting a login counter", e))?;
        Ok(())
    }
}

/// `MySqlStore` keeps the counters in `certkeeper_login_throttle`: an
/// upsert and a read of the row it locked, in one transaction.
#[cfg(feature = "mysql")]
#[async_trait]
impl ThrottleBackend for crate::store::MySqlStore {
    async fn hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: time::Duration,
        _limit: u64,
    ) -> Result<WindowCount> {
        check_throttle_key(key)?;
        let now = naive(clamp_date(now));
        let error = |what| move |e| db_error("mysql", what, e);
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(error("counting a login attempt"))?;
        // MySQL applies the assignments left to right: `count` is decided
        // on the old `resets_at`, which is only then moved.
        sqlx::query(
            "INSERT INTO certkeeper_login_throttle (throttle_key, count, resets_at) VALUES (?, 1, ?) \
             ON DUPLICATE KEY UPDATE \
               count = IF(resets_at <= ?, 1, count + 1), \
               resets_at = IF(resets_at <= ?, VALUES(resets_at), resets_at)",
        )
        .bind(key)
        .bind(naive(window_end(clamp_date(now.assume_utc()), window)))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(error("counting a login attempt"))?;
        let (count, resets_at): (i64, time::PrimitiveDateTime) = sqlx::query_as(
            "SELECT count, resets_at FROM certkeeper_login_throttle WHERE throttle_key = ?",
        )
        .bind(key)
        .fetch_one(&mut *tx)
        .await
        .map_err(error("counting a login attempt"))?;
        tx.commit()
            .await
            .map_err(error("counting a login attempt"))?;
        sqlx::query("DELETE FROM certkeeper_login_throttle WHERE resets_at <= ? LIMIT ?")
            .bind(now)
            .bind(PRUNE_PER_HIT)
            .execute(self.pool())
            .await
            .map_err(error("pruning expired login windows"))?;
        window_count("mysql", count, resets_at.assume_utc())
    }

    async fn refund(&self, key: &str, now: OffsetDateTime) -> Result<()> {
        check_throttle_key(key)?;
        sqlx::query(
            "UPDATE certkeeper_login_throttle SET count = count - 1 \
             WHERE throttle_key = ? AND resets_at > ? AND count > 0",
        )
        .bind(key)
        .bind(naive(clamp_date(now)))
        .execute(self.pool())
        .await
        .map_err(|e| db_error("mysql", "refunding a login attempt", e))?;
        Ok(())
    }

    async fn reset(&self, key: &str) -> Result<()> {
        check_throttle_key(key)?;
        sqlx::query("DELETE FROM certkeeper_login_throttle WHERE throttle_key = ?")
            .bind(key)
            .execute(self.pool())
            .await
            .map_err(|e| db_error("mysql", "resetting a login counter", e))?;
        Ok(())
    }
}

/// A date as a `DATETIME(6)` column holds it: UTC, without offset.
#[cfg(feature = "mysql")]
fn naive(date: OffsetDateTime) -> time::PrimitiveDateTime {
    let utc = date.to_offset(time::UtcOffset::UTC);
    time::PrimitiveDateTime::new(utc.date(), utc.time())
}
