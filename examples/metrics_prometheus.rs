//! Prometheus metrics of certkeeper (feature `metrics`): the renewer's
//! counters, gauges and histograms served on `/metrics` by
//! metrics-exporter-prometheus, next to a renewer that keeps a certificate
//! for `localhost` (self-signed, development mode).
//!
//! ```text
//! cargo run --features metrics --example metrics_prometheus            # until Ctrl-C
//! cargo run --features metrics --example metrics_prometheus -- --check # one cycle, one scrape
//! ```
//!
//! Settings: `_APP_CERTIFICATES_PATH` (default a temporary folder),
//! `_APP_OPENSSL_KEY_V1` (a development key when unset),
//! `METRICS_ADDRESS` (default `127.0.0.1:9464`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use certkeeper::cipher::Keyring;
use certkeeper::store::FileStore;
use certkeeper::{Domain, Renewer};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEVELOPMENT_KEY: &str = "metrics-example-development-key-change-me";

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().any(|a| a == "--check")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metrics_prometheus failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(check: bool) -> Result<(), Box<dyn std::error::Error>> {
    let address: SocketAddr = std::env::var("METRICS_ADDRESS")
        .unwrap_or_else(|_| "127.0.0.1:9464".into())
        .parse()?;
    // The exporter: every `metrics` call of the process, on /metrics.
    PrometheusBuilder::new()
        .with_http_listener(address)
        .install()?;

    let temporary = tempfile::tempdir()?;
    let dir = std::env::var("_APP_CERTIFICATES_PATH")
        .map(Into::into)
        .unwrap_or_else(|_| temporary.path().to_path_buf());
    let key = std::env::var("_APP_OPENSSL_KEY_V1").unwrap_or_else(|_| DEVELOPMENT_KEY.into());
    let store = Arc::new(FileStore::open(&dir).await?);
    let cipher = Arc::new(Keyring::from_keys(false, [(1, key.as_str())])?);
    // With the `metrics` feature the renewer records its own metrics.
    let localhost = Domain::new("localhost")?;
    let renewer = Renewer::builder(store, cipher)
        .production(false)
        .main_domain(Some(localhost.clone()))
        .build();
    renewer.load().await?;
    renewer.add_domain(&localhost).await?;

    if !check {
        println!("metrics on http://{address}/metrics");
        return Ok(renewer.run(Duration::from_secs(86_400)).await?);
    }
    let report = renewer.run_cycle().await?;
    println!("maintenance cycle: {report}");
    // The recorder gets the events from the renewer's queue: give it a moment.
    for _ in 0..100 {
        let body = scrape(address).await?;
        if body.contains("certkeeper_orders_total{outcome=\"issued\"} 1") {
            println!("scraped http://{address}/metrics:");
            for line in body.lines().filter(|l| l.starts_with("certkeeper_")) {
                println!("  {line}");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the issuance did not show on /metrics".into())
}

async fn scrape(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}
