//! Benchmark: what records that used up their attempts cost `due`.
//!
//! For the memory store and the file store, builds two stores: one with N
//! records, 90% of them due (renew dates in the last month, attempts 0 to 4)
//! and 10% that used up their attempts (attempts 5, renew dates a year old,
//! so first in renew-date order), and one with the same due records only.
//! Calls `due(now, 5, 200)` 50 times on each, alternating, and prints the
//! medians and their ratio: near 1.0x when `due` never visits the exhausted
//! records.
//!
//! ```text
//! cargo run --release --example bench_due                  # 1,000,000 in memory, 100,000 on disk
//! cargo run --release --example bench_due -- 200000 20000  # smaller
//! ```
//!
//! The file stores live in a temporary directory (under `$TMPDIR`). Their
//! record files are written directly, in the layout documented on
//! `FileStore`, without a journal, so that opening indexes every file: a
//! `save` flushes three times (record, journal line, directory) and the
//! store's writes are serialised, so storing 200,000 records through
//! `save` would take minutes of disk time whatever the concurrency.

use std::path::Path;
use std::time::{Duration, Instant};

use certkeeper::store::{CertRecord, CertStore, FileStore, MemoryStore};
use certkeeper::Domain;
use time::OffsetDateTime;

const MAX_ATTEMPTS: u32 = 5;
const LIMIT: usize = 200;
const CALLS: usize = 50;

/// Record `i` of N: every tenth one used up its attempts long ago, the
/// others are due.
fn record(i: usize, now: OffsetDateTime) -> CertRecord {
    let exhausted = i.is_multiple_of(10);
    let name = format!(
        "{}-{i:07}.bench.example.com",
        if exhausted { "x" } else { "d" }
    );
    let domain = Domain::new(&name).expect("a valid domain");
    let mut record = if exhausted {
        CertRecord::new(domain, now - time::Duration::days(365))
    } else {
        let age = time::Duration::seconds((i % 2_000_000) as i64);
        CertRecord::new(domain, now - time::Duration::days(30) + age)
    };
    record.attempts = if exhausted {
        MAX_ATTEMPTS
    } else {
        (i % MAX_ATTEMPTS as usize) as u32
    };
    record
}

/// Records `0..n`, with or without the exhausted ones.
fn records(
    n: usize,
    with_exhausted: bool,
    now: OffsetDateTime,
) -> impl Iterator<Item = CertRecord> {
    (0..n)
        .filter(move |i| with_exhausted || !i.is_multiple_of(10))
        .map(move |i| record(i, now))
}

async fn memory_store(n: usize, with_exhausted: bool, now: OffsetDateTime) -> MemoryStore {
    let store = MemoryStore::new();
    for record in records(n, with_exhausted, now) {
        store.save(&record).await.expect("save");
    }
    store
}

/// Writes the record files of a file store in `dir`, as stored records.
fn write_record_files(dir: &Path, n: usize, with_exhausted: bool, now: OffsetDateTime) {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("create the certs directory");
    for mut record in records(n, with_exhausted, now) {
        record.version = 1;
        let json = serde_json::to_vec(&record).expect("encode a record");
        std::fs::write(certs.join(record.domain.as_str()), json).expect("write a record");
    }
}

/// The median of `times`.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Checks what `due(now, 5, 200)` answers, then calls it `CALLS` times on
/// each store, alternating; returns the median time of each.
async fn compare(
    without: &dyn CertStore,
    with: &dyn CertStore,
    now: OffsetDateTime,
) -> (Duration, Duration) {
    for store in [without, with] {
        let answer = store.due(now, MAX_ATTEMPTS, LIMIT).await.expect("due");
        assert_eq!(answer.len(), LIMIT, "enough due records");
        assert!(answer.iter().all(|e| e.attempts < MAX_ATTEMPTS));
        assert!(answer
            .windows(2)
            .all(|w| w[0].renew_date <= w[1].renew_date));
    }
    let mut times = [Vec::with_capacity(CALLS), Vec::with_capacity(CALLS)];
    for _ in 0..CALLS {
        for (store, times) in [without, with].into_iter().zip(&mut times) {
            let start = Instant::now();
            let answer = store.due(now, MAX_ATTEMPTS, LIMIT).await.expect("due");
            times.push(start.elapsed());
            std::hint::black_box(answer);
        }
    }
    let [a, b] = times;
    (median(a), median(b))
}

fn report((without, with): (Duration, Duration)) {
    println!(
        "  due(now, {MAX_ATTEMPTS}, {LIMIT}), median of {CALLS}: without the exhausted records \
         {without:.1?}, with them {with:.1?}, ratio {:.2}x",
        with.as_secs_f64() / without.as_secs_f64()
    );
}

fn heading(name: &str, n: usize) {
    let exhausted = n.div_ceil(10);
    println!(
        "{name}: {n} records, {exhausted} with attempts = {MAX_ATTEMPTS} and old renew dates, \
         {} due",
        n - exhausted
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut count = |default: usize| {
        args.next()
            .map_or(default, |a| a.parse().expect("a record count"))
    };
    let memory_n = count(1_000_000);
    let file_n = count(100_000);
    let now = OffsetDateTime::now_utc();

    heading("MemoryStore", memory_n);
    let start = Instant::now();
    let without = memory_store(memory_n, false, now).await;
    let with = memory_store(memory_n, true, now).await;
    println!("  built both stores in {:.1?}", start.elapsed());
    report(compare(&without, &with, now).await);
    drop((without, with));

    heading("FileStore", file_n);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (without_dir, with_dir) = (tmp.path().join("without"), tmp.path().join("with"));
    let start = Instant::now();
    write_record_files(&without_dir, file_n, false, now);
    write_record_files(&with_dir, file_n, true, now);
    println!("  wrote the record files in {:.1?}", start.elapsed());
    let start = Instant::now();
    let without = FileStore::open(&without_dir).await.expect("open");
    let with = FileStore::open(&with_dir).await.expect("open");
    println!(
        "  opened both stores (indexing every record file) in {:.1?}",
        start.elapsed()
    );
    report(compare(&without, &with, now).await);
}
