//! Benchmark: certkeeper's ACME issuer next to a minimal instant-acme client
//! that also sets TCP_NODELAY, against the same local Pebble in the same run,
//! with real HTTP-01 validation served by the same listener.
//!
//! 1. One certificate at a time: the median time per certificate, order to
//!    chain in hand, over N certificates each (the two clients alternate).
//! 2. A maintenance cycle: certkeeper's `Renewer::run_cycle` over C due
//!    domains on the default file store, next to the minimal client ordering
//!    C certificates with the same number in flight.
//!
//! Prints both figures and the ratios certkeeper / minimal client.
//!
//! ```text
//! cargo run --release --example bench_acme_client              # N = 30, C = 200, 16 in flight
//! cargo run --release --example bench_acme_client -- 20 100 8  # N = 20, C = 100, 8 in flight
//! ```
//!
//! Runs Pebble 2.10.0, which `scripts/test` fetches into
//! `target/pebble-2.10.0/`; `CERTKEEPER_BENCH_PEBBLE=2.4` runs Debian 12's
//! `pebble` package instead.

#[allow(unreachable_pub)]
#[path = "../tests/common/pebble.rs"]
#[allow(dead_code)]
mod pebble;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use certkeeper::challenge::{Challenge, ChallengeSolver, Http01Solver};
use certkeeper::cipher::Keyring;
use certkeeper::issuer::{AcmeIssuer, IssuerExt};
use certkeeper::store::{CertStore, FileStore, MemoryStore};
use certkeeper::{Domain, Renewer};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use pebble::{Pebble, PebbleOptions, PebbleVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The minimal client's first wait before polling an order, doubling after
/// (instant-acme's default first wait is 250 ms).
const POLL_FIRST_MS: u64 = 50;

/// The minimal client: one instant-acme account over a hyper-rustls client
/// with TCP_NODELAY, the HTTP-01 answers put in the shared listener.
struct Minimal {
    account: Account,
    solver: Http01Solver,
}

impl Minimal {
    async fn new(pebble: &Pebble, solver: Http01Solver) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let root = CertificateDer::from_pem_file(pebble.ca_root_pem_path()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client: Client<_, BodyWrapper<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let (account, _) = Account::builder_with_http(Box::new(client))
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                pebble.directory_url(),
                None,
            )
            .await
            .expect("the minimal client registers");
        Self { account, solver }
    }

    /// Orders one certificate for `name` and returns its chain (PEM).
    async fn issue(&self, name: &str) -> String {
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .unwrap();
        let mut presented = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.unwrap();
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut challenge = authz.challenge(ChallengeType::Http01).unwrap();
            let key_authorization = challenge.key_authorization();
            let answer = Challenge {
                domain: Domain::new(name).unwrap(),
                token: challenge.token.clone(),
                key_authorization: key_authorization.as_str().to_owned(),
                dns_value: key_authorization.dns_value(),
            };
            self.solver.present(&answer).await.unwrap();
            challenge.set_ready().await.unwrap();
            presented.push(answer);
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(POLL_FIRST_MS))
            .backoff(2.0)
            .timeout(Duration::from_secs(300));
        let status = order.poll_ready(&retries).await.unwrap();
        assert_eq!(status, OrderStatus::Ready, "the order for {name} is ready");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).unwrap();
        order.finalize_csr(csr.der()).await.unwrap();
        let chain = order.poll_certificate(&retries).await.unwrap();
        for answer in &presented {
            self.solver.cleanup(answer).await.unwrap();
        }
        chain
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::from_keys(true, [(1, "bench-acme-client-key-0123456789")]).unwrap())
}

fn certkeeper_issuer(
    pebble: &Pebble,
    solver: &Http01Solver,
    store: Arc<dyn CertStore>,
    keyring: Arc<Keyring>,
) -> Arc<AcmeIssuer> {
    Arc::new(
        AcmeIssuer::builder(pebble.directory_url())
            .contact_email("bench@certkeeper-test.com")
            .ca_root_pem_file(pebble.ca_root_pem_path())
            .solver(Arc::new(solver.clone()))
            .store(store)
            .cipher(keyring)
            .request_timeout(Duration::from_secs(30))
            .order_timeout(Duration::from_secs(300))
            .build()
            .unwrap(),
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: usize| {
        args.next()
            .map_or(default, |a| a.parse().expect("arguments are numbers"))
    };
    let n = arg(30);
    let cycle = arg(200);
    let in_flight = arg(16);

    // Pebble 2.10 (as `scripts/test` fetches it), or Debian 12's 2.4 with
    // `CERTKEEPER_BENCH_PEBBLE=2.4`.
    let version = match std::env::var("CERTKEEPER_BENCH_PEBBLE").as_deref() {
        Ok("2.4") => PebbleVersion::V2_4,
        _ => PebbleVersion::V2_10,
    };
    let pebble = Pebble::start(PebbleOptions {
        version,
        ..PebbleOptions::default()
    })
    .await;
    let solver = Http01Solver::new();
    let _listener = solver
        .serve(SocketAddr::from((
            Ipv6Addr::UNSPECIFIED,
            pebble.http_port(),
        )))
        .await
        .expect("bind the HTTP-01 port");
    println!(
        "bench_acme_client: Pebble {version:?}, {n} certificates one at a time each, then a cycle of {cycle} at {in_flight} in flight"
    );

    // One at a time; both warmed up (account registered, connections open).
    let store: Arc<dyn CertStore> = Arc::new(MemoryStore::new());
    let ours = certkeeper_issuer(&pebble, &solver, store, keyring());
    let minimal = Arc::new(Minimal::new(&pebble, solver.clone()).await);
    ours.issue_for(&Domain::new("warm-ck.certkeeper-test.com").unwrap())
        .await
        .expect("certkeeper issues");
    minimal.issue("warm-min.certkeeper-test.com").await;
    let (mut ck, mut min) = (Vec::new(), Vec::new());
    for i in 0..n {
        let domain = Domain::new(&format!("seq-ck-{i:04}.certkeeper-test.com")).unwrap();
        let start = Instant::now();
        ours.issue_for(&domain).await.expect("certkeeper issues");
        ck.push(start.elapsed());
        let start = Instant::now();
        minimal
            .issue(&format!("seq-min-{i:04}.certkeeper-test.com"))
            .await;
        min.push(start.elapsed());
    }
    let (ck, min) = (median(ck), median(min));
    println!("one at a time, median per certificate:");
    println!("  certkeeper AcmeIssuer:            {:.0} ms", ms(ck));
    println!("  minimal instant-acme, TCP_NODELAY: {:.0} ms", ms(min));
    println!(
        "  ratio certkeeper / minimal:        {:.2}x",
        ck.as_secs_f64() / min.as_secs_f64()
    );

    // A cycle: certkeeper's Renewer on the default file store.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CertStore> = if std::env::var_os("BENCH_MEMORY_STORE").is_some() {
        Arc::new(MemoryStore::new())
    } else {
        Arc::new(FileStore::open(dir.path()).await.unwrap())
    };
    let keys = keyring();
    let issuer = certkeeper_issuer(&pebble, &solver, store.clone(), keys.clone());
    issuer
        .issue_for(&Domain::new("warm-cycle.certkeeper-test.com").unwrap())
        .await
        .expect("certkeeper issues");
    let renewer = Renewer::builder(store, keys)
        .acme(issuer)
        .concurrency(in_flight)
        .build();
    for i in 0..cycle {
        let domain = Domain::new(&format!("cyc-ck-{i:04}.certkeeper-test.com")).unwrap();
        renewer.add_domain(&domain).await.unwrap();
    }
    let start = Instant::now();
    let report = renewer.run_cycle().await.expect("the cycle runs");
    let ck_wall = start.elapsed();
    assert_eq!(report.issued.len(), cycle, "certkeeper's cycle: {report}");

    // The same number of orders from the minimal client, as many in flight.
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for i in 0..cycle {
        let (gate, minimal) = (gate.clone(), minimal.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            minimal
                .issue(&format!("cyc-min-{i:04}.certkeeper-test.com"))
                .await
        });
    }
    while let Some(chain) = tasks.join_next().await {
        assert!(chain.unwrap().contains("BEGIN CERTIFICATE"));
    }
    let min_wall = start.elapsed();
    println!("a cycle of {cycle}, {in_flight} in flight, wall time:");
    println!(
        "  certkeeper Renewer (file store):   {:.2} s",
        ck_wall.as_secs_f64()
    );
    println!(
        "  minimal instant-acme, TCP_NODELAY: {:.2} s",
        min_wall.as_secs_f64()
    );
    println!(
        "  ratio certkeeper / minimal:        {:.2}x",
        ck_wall.as_secs_f64() / min_wall.as_secs_f64()
    );
}
