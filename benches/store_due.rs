//! `due(now, 5, 200)`, the maintenance cycle's one question to the store,
//! at 10,000 and 100,000 records (and 1,000,000 with
//! `CERTKEEPER_BENCH_DUE_MAX=1000000`) for every store present: memory,
//! file, and PostgreSQL and MariaDB / MySQL when their servers answer
//! (skipped with a message otherwise).
//!
//! ```text
//! cargo bench --all-features --bench store_due
//! CERTKEEPER_BENCH_DUE_MAX=1000000 cargo bench --all-features --bench store_due
//! ```
//!
//! The records: one in ten used up its attempts (5 to 9) with a renew date
//! older than every other record, so a `due` that read them would have to
//! skip them all; the others have 0 to 4 attempts and renew dates from 60
//! days ago to 90 days ahead (about 40% due). They are built in bulk, not
//! through `save` (which flushes three times per record): the memory store
//! through `save` (no disk), the file store as record files written
//! directly in its documented layout and indexed by `FileStore::open`,
//! PostgreSQL with `COPY`, MariaDB with multi-row `INSERT`s of 1,000 rows.
//! The SQL servers are named by `CERTKEEPER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and
//! `CERTKEEPER_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`);
//! the benchmark works in a schema / database of its own, dropped at the end.

// criterion_group! makes an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::Path;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::time::Duration;
use std::time::Instant;

use certkeeper::store::{CertRecord, CertStore, FileStore, MemoryStore};
use certkeeper::Domain;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

const MAX_ATTEMPTS: u32 = 5;
const LIMIT: usize = 200;
const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

/// The record sizes to measure: up to `CERTKEEPER_BENCH_DUE_MAX` (100,000
/// by default).
fn sizes() -> Vec<usize> {
    let max = std::env::var("CERTKEEPER_BENCH_DUE_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    SIZES.into_iter().filter(|n| *n <= max).collect()
}

/// Record `i`: one in ten exhausted and due long ago, the others with 0 to 4
/// attempts and renew dates from 60 days ago to 90 days ahead.
fn record(i: usize, now: OffsetDateTime) -> CertRecord {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    let (attempts, renew_date) = if i.is_multiple_of(10) {
        let age = time::Duration::seconds(65 * 86_400 + (x % (300 * 86_400)) as i64);
        (5 + (x % 5) as u32, now - age)
    } else {
        let offset = time::Duration::seconds((x % (150 * 86_400)) as i64);
        ((x % 5) as u32, now - time::Duration::days(60) + offset)
    };
    let domain = Domain::new(&format!("host{i:07}.bench.example.com")).unwrap();
    CertRecord {
        version: 1,
        attempts,
        ..CertRecord::new(domain, renew_date.replace_nanosecond(0).unwrap())
    }
}

/// Checks the answer once: 200 due records, none exhausted, in order.
fn check(store: &dyn CertStore, rt: &Runtime, now: OffsetDateTime) {
    let due = rt
        .block_on(store.due(now, MAX_ATTEMPTS, LIMIT))
        .expect("due");
    assert_eq!(due.len(), LIMIT);
    assert!(due
        .iter()
        .all(|e| e.attempts < MAX_ATTEMPTS && e.renew_date <= now));
    assert!(due
        .windows(2)
        .all(|w| (w[0].renew_date, &w[0].domain) < (w[1].renew_date, &w[1].domain)));
}

fn measure(c: &mut Criterion, rt: &Runtime, store: &dyn CertStore, name: &str, n: usize) {
    let now = now();
    check(store, rt, now);
    let mut group = c.benchmark_group("due");
    if n >= 1_000_000 {
        group.sample_size(20);
    }
    group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
        b.iter(|| black_box(rt.block_on(store.due(now, MAX_ATTEMPTS, LIMIT)).unwrap()))
    });
    group.finish();
}

/// Whole seconds, the same for every store of a run.
fn now() -> OffsetDateTime {
    use std::sync::OnceLock;
    static NOW: OnceLock<OffsetDateTime> = OnceLock::new();
    *NOW.get_or_init(|| OffsetDateTime::now_utc().replace_nanosecond(0).unwrap())
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    for n in sizes() {
        let start = Instant::now();
        let store = MemoryStore::new();
        rt.block_on(async {
            for i in 0..n {
                store
                    .save(&CertRecord {
                        version: 0,
                        ..record(i, now())
                    })
                    .await
                    .unwrap();
            }
        });
        eprintln!("memory: {n} records built in {:.1?}", start.elapsed());
        measure(c, &rt, &store, "memory", n);
    }
}

/// Writes the record files of `n` records in the layout documented on
/// `FileStore` (`certs/<domain>`, one JSON record each).
fn write_record_files(dir: &Path, n: usize) {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for i in 0..n {
        let record = record(i, now());
        std::fs::write(
            certs.join(record.domain.as_str()),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
    }
}

fn file(c: &mut Criterion) {
    let rt = runtime();
    for n in sizes() {
        let tmp = tempfile::tempdir().unwrap();
        let start = Instant::now();
        write_record_files(tmp.path(), n);
        let written = start.elapsed();
        let store = rt.block_on(FileStore::open(tmp.path())).unwrap();
        eprintln!(
            "file: {n} record files written in {written:.1?}, indexed by open in {:.1?}",
            start.elapsed() - written
        );
        measure(c, &rt, &store, "file", n);
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn env_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
/// Connects within a few seconds, or says why the store is skipped.
async fn reachable<T, F>(name: &str, connect: F) -> Option<T>
where
    F: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => {
            eprintln!("{name}: skipped, the server cannot be reached: {e}");
            None
        }
        Err(_) => {
            eprintln!("{name}: skipped, the server did not answer in 5 s");
            None
        }
    }
}

#[cfg(feature = "postgres")]
fn postgres(c: &mut Criterion) {
    use certkeeper::store::PostgresStore;
    use sqlx::postgres::{PgConnection, PgPoolCopyExt};
    use sqlx::{Connection, Executor};

    let rt = runtime();
    let base = env_url(
        "CERTKEEPER_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let Some(mut admin) = rt.block_on(reachable("postgres", PgConnection::connect(&base))) else {
        return;
    };
    let schema = format!("certkeeper_bench_due_{}", std::process::id());
    rt.block_on(admin.execute(format!("CREATE SCHEMA {schema}").as_str()))
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = rt
        .block_on(PostgresStore::connect_with(&url, bulk_fill_options()))
        .unwrap();
    let pool = store.pool().clone();
    for n in sizes() {
        let start = Instant::now();
        rt.block_on(async {
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
            for i in 0..n {
                let record = record(i, now());
                let date = record
                    .renew_date
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap();
                let json = serde_json::to_string(&record).unwrap();
                // COPY's text format: tab-separated, backslashes doubled.
                chunk.push_str(&format!(
                    "{}\t1\t{date}\t{}\t{}\n",
                    record.domain,
                    record.attempts,
                    json.replace('\\', "\\\\")
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
        });
        eprintln!("postgres: {n} records copied in {:.1?}", start.elapsed());
        measure(c, &rt, &store, "postgres", n);
    }
    drop(store);
    rt.block_on(async {
        pool.close().await;
        admin
            .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
            .await
            .unwrap();
    });
}

#[cfg(feature = "mysql")]
fn mysql(c: &mut Criterion) {
    use certkeeper::store::MySqlStore;
    use sqlx::mysql::MySqlConnection;
    use sqlx::{Connection, Executor, MySql, QueryBuilder};

    let rt = runtime();
    let base = env_url(
        "CERTKEEPER_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    );
    let Some(mut admin) = rt.block_on(reachable("mysql", MySqlConnection::connect(&base))) else {
        return;
    };
    let database = format!("certkeeper_bench_due_{}", std::process::id());
    rt.block_on(admin.execute(format!("CREATE DATABASE {database}").as_str()))
        .unwrap();
    // The same server and options, another database.
    let (without_query, query) = base.split_once('?').unwrap_or((&base, ""));
    let authority = without_query.find("://").map_or(0, |i| i + 3);
    let host_end = without_query[authority..]
        .find('/')
        .map_or(without_query.len(), |i| authority + i);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let url = format!("{}/{database}{query}", &without_query[..host_end]);
    let store = rt
        .block_on(MySqlStore::connect_with(&url, bulk_fill_options()))
        .unwrap();
    let pool = store.pool().clone();
    for n in sizes() {
        let start = Instant::now();
        rt.block_on(async {
            pool.execute("TRUNCATE TABLE certkeeper_certificates")
                .await
                .unwrap();
            for first in (0..n).step_by(1000) {
                let records: Vec<(CertRecord, String)> = (first..(first + 1000).min(n))
                    .map(|i| {
                        let record = record(i, now());
                        let json = serde_json::to_string(&record).unwrap();
                        (record, json)
                    })
                    .collect();
                let mut insert = QueryBuilder::<MySql>::new(
                    "INSERT INTO certkeeper_certificates (domain, version, renew_date, attempts, record) ",
                );
                insert.push_values(&records, |mut values, (record, json)| {
                    let utc = record.renew_date;
                    values
                        .push_bind(record.domain.as_str())
                        .push_bind(1i64)
                        .push_bind(time::PrimitiveDateTime::new(utc.date(), utc.time()))
                        .push_bind(i64::from(record.attempts))
                        .push_bind(json);
                });
                insert.build().execute(&pool).await.unwrap();
            }
            pool.execute("ANALYZE TABLE certkeeper_certificates")
                .await
                .unwrap();
        });
        eprintln!("mysql: {n} records inserted in {:.1?}", start.elapsed());
        measure(c, &rt, &store, "mysql", n);
    }
    drop(store);
    rt.block_on(async {
        pool.close().await;
        admin
            .execute(format!("DROP DATABASE {database}").as_str())
            .await
            .unwrap();
    });
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &mut Criterion) {
    eprintln!("postgres: skipped, built without the `postgres` feature");
}

#[cfg(not(feature = "mysql"))]
fn mysql(_: &mut Criterion) {
    eprintln!("mysql: skipped, built without the `mysql` feature");
}

criterion_group!(benches, memory, file, postgres, mysql);
criterion_main!(benches);

/// The store's options for filling it in bulk through its pool: a statement
/// deadline long enough for a `COPY` or an `INSERT` of many rows.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn bulk_fill_options() -> certkeeper::store::sql::SqlOptions {
    certkeeper::store::sql::SqlOptions::new()
        .statement_timeout(std::time::Duration::from_secs(3600))
}
