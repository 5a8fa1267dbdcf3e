//! Benchmark: `due(now, 5, 200)` on `PostgresStore` and `MySqlStore` holding
//! N certificate records (default 1,000,000), 10% of them exhausted (5 to 9
//! failed attempts) with renew dates older than every other record, so that
//! a query that read them would have to skip them all. Prints the plan of the
//! `due` statement (EXPLAIN), then the median of 50 calls per database.
//!
//! ```text
//! cargo run --release --features postgres,mysql --example bench_sql_due
//! cargo run --release --features postgres,mysql --example bench_sql_due -- 100000
//! cargo run --release --features postgres,mysql --example bench_sql_due -- 1000000 --keep
//! ```
//!
//! The records go into the schema `certkeeper_bench` (PostgreSQL) and the
//! database `certkeeper_bench` (MariaDB / MySQL) of the servers named by
//! `CERTKEEPER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `CERTKEEPER_TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`), in bulk (`COPY` on
//! PostgreSQL, multi-row `INSERT` on MySQL). Both are dropped at the end
//! unless `--keep` is given; a kept one that already holds N records is
//! measured again without refilling.

use std::time::{Duration, Instant};

use certkeeper::store::{CertRecord, CertStore, MySqlStore, PostgresStore};
use certkeeper::Domain;
use sqlx::postgres::PgPoolCopyExt;
use sqlx::{Connection, Executor, Row};
use time::OffsetDateTime;

const NAME: &str = "certkeeper_bench";
const CALLS: usize = 50;
const MAX_ATTEMPTS: u32 = 5;
const LIMIT: usize = 200;
const BATCH: usize = 1000;

/// The records of the benchmark, the same on both databases.
struct Fill {
    count: usize,
    now: OffsetDateTime,
}

/// One record as a row: domain, renew date, attempts, JSON text.
struct BenchRow {
    domain: String,
    renew_date: OffsetDateTime,
    attempts: u32,
    json: String,
}

impl Fill {
    /// Record `i`: one in ten exhausted (5 to 9 attempts) and due long ago,
    /// the others with 0 to 4 attempts and renew dates from 60 days ago to
    /// 90 days ahead (about 40% due now).
    fn row(&self, i: usize) -> BenchRow {
        let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        let (attempts, renew_date) = if i.is_multiple_of(10) {
            let age = time::Duration::seconds(65 * 86_400 + (x % (300 * 86_400)) as i64);
            (5 + (x % 5) as u32, self.now - age)
        } else {
            let offset = time::Duration::seconds((x % (150 * 86_400)) as i64);
            ((x % 5) as u32, self.now - time::Duration::days(60) + offset)
        };
        let renew_date = renew_date.replace_nanosecond(0).unwrap();
        let domain = Domain::new(&format!("host{i:07}.bench.example")).unwrap();
        let record = CertRecord {
            version: 1,
            attempts,
            ..CertRecord::new(domain.clone(), renew_date)
        };
        BenchRow {
            domain: domain.to_string(),
            renew_date,
            attempts,
            json: serde_json::to_string(&record).unwrap(),
        }
    }
}

fn base_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

/// `url` naming `database` instead of its own.
fn with_database(url: &str, database: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[authority..]
        .find('/')
        .map_or(url.len(), |i| authority + i);
    format!("{}/{database}{query}", &url[..host_end])
}

/// Median, 90th percentile, min and max of `store.due(now, 5, 200)` over
/// 50 calls (after 5 unmeasured ones).
async fn measure(store: &dyn CertStore, now: OffsetDateTime) -> Vec<Duration> {
    for _ in 0..5 {
        store.due(now, MAX_ATTEMPTS, LIMIT).await.unwrap();
    }
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        let due = store.due(now, MAX_ATTEMPTS, LIMIT).await.unwrap();
        times.push(start.elapsed());
        assert_eq!(due.len(), LIMIT);
        assert!(due
            .iter()
            .all(|e| e.attempts < MAX_ATTEMPTS && e.renew_date <= now));
        assert!(due
            .windows(2)
            .all(|w| (w[0].renew_date, &w[0].domain) < (w[1].renew_date, &w[1].domain)));
    }
    times.sort();
    times
}

fn report(name: &str, count: usize, fill: Option<Duration>, times: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let filled = fill.map_or("reused".to_string(), |d| {
        format!("filled in {:.0} s", d.as_secs_f64())
    });
    println!(
        "{name}: {count} records ({} exhausted, {filled}): due(now, {MAX_ATTEMPTS}, {LIMIT}) \
         median {:.2} ms, p90 {:.2} ms, min {:.2} ms, max {:.2} ms over {CALLS} calls",
        count.div_ceil(10),
        ms(times[CALLS / 2]),
        ms(times[CALLS * 9 / 10]),
        ms(times[0]),
        ms(times[CALLS - 1]),
    );
}

async fn postgres(fill: &Fill, keep: bool) {
    use sqlx::postgres::PgConnection;

    let base = base_url(
        "CERTKEEPER_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let mut admin = PgConnection::connect(&base).await.unwrap();
    admin
        .execute(format!("CREATE SCHEMA IF NOT EXISTS {NAME}").as_str())
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{NAME}");
    let store = PostgresStore::connect_with(&url, bulk_fill_options())
        .await
        .unwrap();
    let pool = store.pool().clone();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM certkeeper_certificates")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut filled = None;
    if stored != fill.count as i64 {
        let start = Instant::now();
        pool.execute("TRUNCATE certkeeper_certificates")
            .await
            .unwrap();
        let mut copy = pool
            .copy_in_raw(
                "COPY certkeeper_certificates (domain, version, renew_date, attempts, record) \
                 FROM STDIN",
            )
            .await
            .unwrap();
        let mut chunk = String::new();
        for i in 0..fill.count {
            let row = fill.row(i);
            let date = row
                .renew_date
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            // COPY's text format: tab-separated, backslashes doubled.
            chunk.push_str(&format!(
                "{}\t1\t{date}\t{}\t{}\n",
                row.domain,
                row.attempts,
                row.json.replace('\\', "\\\\")
            ));
            if chunk.len() > 1 << 20 {
                copy.send(std::mem::take(&mut chunk).into_bytes())
                    .await
                    .unwrap();
            }
        }
        copy.send(chunk.into_bytes()).await.unwrap();
        copy.finish().await.unwrap();
        pool.execute("VACUUM ANALYZE certkeeper_certificates")
            .await
            .unwrap();
        filled = Some(start.elapsed());
    }

    println!("\npostgres: EXPLAIN ANALYZE of due(now, {MAX_ATTEMPTS}, {LIMIT}):");
    let sql = PostgresStore::due_statement(MAX_ATTEMPTS);
    let explain_sql = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}");
    let plan: Vec<String> = sqlx::query_scalar(&explain_sql)
        .bind(fill.now)
        .bind(LIMIT as i64)
        .fetch_all(&pool)
        .await
        .unwrap();
    for line in &plan {
        println!("  {line}");
    }
    let by_index = plan
        .iter()
        .filter(|l| l.contains("Scan using certkeeper_certificates_due"))
        .count();
    println!(
        "postgres: {by_index} of {MAX_ATTEMPTS} branches read the index certkeeper_certificates_due"
    );

    let times = measure(&store, fill.now).await;
    report("postgres", fill.count, filled, &times);
    drop(store);
    pool.close().await;
    if !keep {
        admin
            .execute(format!("DROP SCHEMA {NAME} CASCADE").as_str())
            .await
            .unwrap();
    }
}

async fn mysql(fill: &Fill, keep: bool) {
    use sqlx::mysql::MySqlConnection;
    use sqlx::{MySql, QueryBuilder};

    let base = base_url(
        "CERTKEEPER_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    );
    let mut admin = MySqlConnection::connect(&base).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE IF NOT EXISTS {NAME}").as_str())
        .await
        .unwrap();
    let store = MySqlStore::connect_with(&with_database(&base, NAME), bulk_fill_options())
        .await
        .unwrap();
    let pool = store.pool().clone();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certkeeper_certificates")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut filled = None;
    if stored != fill.count as i64 {
        let start = Instant::now();
        pool.execute("TRUNCATE TABLE certkeeper_certificates")
            .await
            .unwrap();
        for first in (0..fill.count).step_by(BATCH) {
            let rows: Vec<BenchRow> = (first..(first + BATCH).min(fill.count))
                .map(|i| fill.row(i))
                .collect();
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO certkeeper_certificates (domain, version, renew_date, attempts, record) ",
            );
            insert.push_values(&rows, |mut values, row| {
                let utc = row.renew_date;
                values
                    .push_bind(&row.domain)
                    .push_bind(1i64)
                    .push_bind(time::PrimitiveDateTime::new(utc.date(), utc.time()))
                    .push_bind(i64::from(row.attempts))
                    .push_bind(&row.json);
            });
            insert.build().execute(&pool).await.unwrap();
        }
        pool.execute("ANALYZE TABLE certkeeper_certificates")
            .await
            .unwrap();
        filled = Some(start.elapsed());
    }

    println!("\nmysql: EXPLAIN of due(now, {MAX_ATTEMPTS}, {LIMIT}):");
    let sql = MySqlStore::due_statement(MAX_ATTEMPTS);
    let now = time::PrimitiveDateTime::new(fill.now.date(), fill.now.time());
    let explain_sql = format!("EXPLAIN {sql}");
    let mut explain = sqlx::query(&explain_sql);
    for _ in 0..MAX_ATTEMPTS {
        explain = explain.bind(now).bind(LIMIT as i64);
    }
    let rows = explain.bind(LIMIT as i64).fetch_all(&pool).await.unwrap();
    let text = |row: &sqlx::mysql::MySqlRow, column: &str| -> String {
        if let Ok(Some(v)) = row.try_get::<Option<String>, _>(column) {
            return v;
        }
        if let Ok(Some(v)) = row.try_get::<Option<Vec<u8>>, _>(column) {
            return String::from_utf8_lossy(&v).into_owned();
        }
        if let Ok(Some(v)) = row.try_get::<Option<u64>, _>(column) {
            return v.to_string();
        }
        if let Ok(Some(v)) = row.try_get::<Option<i64>, _>(column) {
            return v.to_string();
        }
        "NULL".into()
    };
    println!("  id | select_type | table | type | key | rows | Extra");
    let mut by_index = 0;
    for row in &rows {
        let key = text(row, "key");
        if key == "certkeeper_certificates_due" {
            by_index += 1;
        }
        println!(
            "  {} | {} | {} | {} | {key} | {} | {}",
            text(row, "id"),
            text(row, "select_type"),
            text(row, "table"),
            text(row, "type"),
            text(row, "rows"),
            text(row, "Extra"),
        );
    }
    println!(
        "mysql: {by_index} of {MAX_ATTEMPTS} branches read the index certkeeper_certificates_due"
    );

    let times = measure(&store, fill.now).await;
    report("mysql", fill.count, filled, &times);
    drop(store);
    pool.close().await;
    if !keep {
        admin
            .execute(format!("DROP DATABASE {NAME}").as_str())
            .await
            .unwrap();
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = args.iter().any(|a| a == "--keep");
    let count = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or(1_000_000, |n| n.parse().expect("N: a number of records"));
    assert!(count >= 10 * LIMIT, "N must be at least {}", 10 * LIMIT);
    // Whole seconds, the same for both databases and every run.
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let fill = Fill { count, now };
    postgres(&fill, keep).await;
    mysql(&fill, keep).await;
}

/// The store's options for filling it in bulk through its pool: a statement
/// deadline long enough for a `COPY` or an `INSERT` of many rows.
fn bulk_fill_options() -> certkeeper::store::sql::SqlOptions {
    certkeeper::store::sql::SqlOptions::new()
        .statement_timeout(std::time::Duration::from_secs(3600))
}
