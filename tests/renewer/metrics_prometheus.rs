//! The `metrics` feature end to end: a real issuance from Pebble, a
//! handshake served by the fallback, then the Prometheus endpoint (as
//! `examples/metrics_prometheus.rs` starts it, recording this test's
//! thread only) scraped over HTTP.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use certkeeper::challenge::Http01Solver;
use certkeeper::store::FileStore;
use certkeeper::{CertResolver, Renewer};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions};
use common::{domain, keyring, limited};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NINETY_DAYS: u64 = 90 * 86_400;

/// The body of `GET /metrics` on `addr`.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample `series` (name and labels as exposed).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_real_issuance_shows_on_the_prometheus_endpoint() {
    limited(StdDuration::from_secs(180), async {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // The exporter the example installs, but its recorder is this
        // thread's rather than the process's: other tests of this binary
        // run renewers beside this one, on threads of their own. Every task
        // of this test runs here (`#[tokio::test]`'s current-thread runtime).
        let (recorder, exporter) = PrometheusBuilder::new()
            .with_http_listener(addr)
            .build()
            .expect("the Prometheus exporter starts");
        tokio::spawn(exporter);
        let _recorder = metrics::set_default_local_recorder(&recorder);

        let pebble = Pebble::start(PebbleOptions {
            validity_seconds: Some(NINETY_DAYS),
            ..PebbleOptions::default()
        })
        .await;
        let solver = Http01Solver::new();
        let _listener = serve_http01(&solver, &pebble).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
        let keyring = keyring("metrics-prometheus-test-key-0123456");
        let issuer = pebble_issuer(
            &pebble,
            Arc::new(solver.clone()),
            store.clone(),
            keyring.clone(),
        )
        .build()
        .unwrap();
        let resolver = CertResolver::new();
        let renewer = Renewer::builder(store, keyring)
            .acme(Arc::new(issuer))
            .main_domain(Some(domain("www.certkeeper-test.com")))
            .resolver(resolver.clone())
            .build();
        renewer.load().await.unwrap();
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued.len(), 1, "{report:?}");
        // A name with nothing to serve gets the fallback.
        assert!(resolver
            .lookup(Some("unknown.certkeeper-test.com"))
            .is_some());

        let started = Instant::now();
        let body = loop {
            let body = scrape(addr).await;
            if body.contains("certkeeper_cycle_duration_seconds_count") {
                break body;
            }
            assert!(started.elapsed() < StdDuration::from_secs(20), "{body}");
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        };
        assert_eq!(
            value(&body, "certkeeper_orders_total{outcome=\"issued\"}"),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value(&body, "certkeeper_cycle_duration_seconds_count"),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value(&body, "certkeeper_certificates{state=\"picked\"}"),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value(&body, "certkeeper_certificates{state=\"at_attempt_limit\"}"),
            Some(0.0),
            "{body}"
        );
        let fallback = value(&body, "certkeeper_fallback_handshakes_total").unwrap_or(0.0);
        assert!(fallback >= 1.0, "{body}");
        let earliest =
            value(&body, "certkeeper_earliest_expiry_seconds").expect("the expiry gauge");
        assert!(
            earliest > (NINETY_DAYS - 3_600) as f64 && earliest <= NINETY_DAYS as f64,
            "{earliest}: {body}"
        );
    })
    .await;
}
