//! Benchmark: one maintenance cycle over N due domains (default 200) against
//! a local Pebble CA with real HTTP-01 validation, on the default file store
//! and (with the `postgres` feature) on a PostgreSQL store in the same run.
//! Prints each cycle's wall time and the per-certificate latency (median,
//! p99), and the ratio of the two wall times.
//!
//! ```text
//! cargo run --release --example bench_cycle            # N = 200, 16 in flight
//! cargo run --release --features postgres --example bench_cycle   # and on PostgreSQL
//! cargo run --release --example bench_cycle -- 50 8    # N = 50, 8 in flight
//! ```
//!
//! Needs Debian's `pebble` package. Pebble's in-memory store deadlocks under
//! many concurrent orders, so keep 16 or fewer in flight.

#[allow(unreachable_pub)]
#[path = "../tests/common/pebble.rs"]
#[allow(dead_code)]
mod pebble;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use certkeeper::cert::IssuerKind;
use certkeeper::challenge::Http01Solver;
use certkeeper::cipher::Keyring;
use certkeeper::issuer::{AcmeIssuer, IssueRequest, Issued, Issuer};
use certkeeper::store::{CertStore, FileStore};
use certkeeper::{CycleReport, Domain, Renewer};
use pebble::{Pebble, PebbleOptions};

/// Wraps an issuer and records how long each issuance took.
#[derive(Debug)]
struct Timed<I> {
    inner: I,
    latencies: Mutex<Vec<Duration>>,
}

#[async_trait]
impl<I: Issuer> Issuer for Timed<I> {
    async fn issue(&self, request: &IssueRequest) -> certkeeper::Result<Issued> {
        let start = Instant::now();
        let result = self.inner.issue(request).await;
        if result.is_ok() {
            self.latencies.lock().unwrap().push(start.elapsed());
        }
        result
    }

    fn kind(&self) -> IssuerKind {
        self.inner.kind()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One cycle over `n` new due domains (named under `prefix`) in `store`.
async fn one_cycle(
    store: Arc<dyn CertStore>,
    solver: &Http01Solver,
    pebble: &Pebble,
    n: usize,
    concurrency: usize,
    prefix: &str,
) -> (CycleReport, Duration, Vec<Duration>) {
    let keyring =
        Arc::new(Keyring::from_keys(true, [(1, "bench-cycle-key-0123456789abcdef")]).unwrap());
    let acme = AcmeIssuer::builder(pebble.directory_url())
        .contact_email("bench@certkeeper-test.com")
        .ca_root_pem_file(pebble.ca_root_pem_path())
        .solver(Arc::new(solver.clone()))
        .store(store.clone())
        .cipher(keyring.clone())
        .request_timeout(Duration::from_secs(30))
        .order_timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let timed = Arc::new(Timed {
        inner: acme,
        latencies: Mutex::default(),
    });
    let renewer = Renewer::builder(store, keyring)
        .acme(timed.clone())
        .concurrency(concurrency)
        .build();
    for i in 0..n {
        let domain = Domain::new(&format!("{prefix}{i:05}.certkeeper-test.com")).unwrap();
        renewer.add_domain(&domain).await.unwrap();
    }
    let start = Instant::now();
    let report = renewer.run_cycle().await.expect("the cycle runs");
    let wall = start.elapsed();
    let mut latencies = timed.latencies.lock().unwrap().clone();
    latencies.sort();
    (report, wall, latencies)
}

fn print(label: &str, report: &CycleReport, wall: Duration, latencies: &[Duration]) {
    println!("{label}:");
    println!("  cycle:       {report}");
    println!("  wall time:   {:.2} s", wall.as_secs_f64());
    println!(
        "  throughput:  {:.1} certificates/s",
        report.issued.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "  latency:     median {:.0} ms, p99 {:.0} ms, max {:.0} ms (per certificate, order to stored chain)",
        percentile(latencies, 50.0).as_secs_f64() * 1e3,
        percentile(latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    for failure in report.failed.iter().take(5) {
        println!("  failed:      {}: {}", failure.domain, failure.error);
    }
}

/// A PostgreSQL store in a schema of its own on the database of
/// `CERTKEEPER_TEST_POSTGRES_URL` (default: the local test database).
#[cfg(feature = "postgres")]
async fn postgres_store() -> Arc<dyn CertStore> {
    use sqlx::{Connection, Executor};
    let base = std::env::var("CERTKEEPER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("certkeeper_bench_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    conn.execute(
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}").as_str(),
    )
    .await
    .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    Arc::new(
        certkeeper::store::PostgresStore::connect(&url)
            .await
            .unwrap(),
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(200, |a| a.parse().expect("N is a number"));
    let concurrency: usize = args
        .next()
        .map_or(16, |a| a.parse().expect("concurrency is a number"));

    let pebble = Pebble::start(PebbleOptions::default()).await;
    let solver = Http01Solver::new();
    let _listener = solver
        .serve(SocketAddr::from((
            Ipv6Addr::UNSPECIFIED,
            pebble.http_port(),
        )))
        .await
        .expect("bind the HTTP-01 port");
    println!("bench_cycle: {n} due domains, {concurrency} in flight, per-cycle cap 200");

    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn CertStore> = Arc::new(FileStore::open(dir.path()).await.unwrap());
    let (report, wall, latencies) = one_cycle(file, &solver, &pebble, n, concurrency, "file").await;
    print("file store", &report, wall, &latencies);
    #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
    let mut failed = !report.failed.is_empty();

    #[cfg(feature = "postgres")]
    {
        let file_wall = wall;
        let store = postgres_store().await;
        let (report, wall, latencies) =
            one_cycle(store, &solver, &pebble, n, concurrency, "pg").await;
        print("PostgreSQL store", &report, wall, &latencies);
        println!(
            "PostgreSQL / file store wall time, same run: {:.2}x",
            wall.as_secs_f64() / file_wall.as_secs_f64()
        );
        failed |= !report.failed.is_empty();
    }
    if failed {
        std::process::exit(1);
    }
}
