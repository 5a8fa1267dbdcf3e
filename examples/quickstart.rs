//! The main job on the embedded defaults: a certificate for `localhost` from
//! the self-signed issuer, its key stored encrypted in a local folder, a
//! maintenance cycle, then an HTTPS server on 127.0.0.1 serving with it.
//!
//! ```text
//! cargo run --example quickstart            # serves until Ctrl-C
//! cargo run --example quickstart -- --check # one real handshake, then exits
//! ```
//!
//! Settings: `_APP_CERTIFICATES_PATH` (default `./certkeeper-quickstart`),
//! `_APP_OPENSSL_KEY_V1` (a development key is used when unset),
//! `QUICKSTART_ADDRESS` (default `127.0.0.1:8443`).

use std::process::ExitCode;
use std::sync::Arc;

use certkeeper::cipher::Keyring;
use certkeeper::store::{CertStore, FileStore};
use certkeeper::{CertResolver, Domain, Renewer};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const DEVELOPMENT_KEY: &str = "quickstart-development-key-change-me";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "certkeeper=info".into()),
        )
        .init();
    match run(std::env::args().any(|a| a == "--check")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(check: bool) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var("_APP_CERTIFICATES_PATH")
        .unwrap_or_else(|_| "./certkeeper-quickstart".into());
    let key = std::env::var("_APP_OPENSSL_KEY_V1").unwrap_or_else(|_| {
        eprintln!(
            "_APP_OPENSSL_KEY_V1 is unset: using a development key (never do this in production)"
        );
        DEVELOPMENT_KEY.into()
    });

    // The embedded defaults: a folder store, keys sealed by the keyring.
    let store = Arc::new(FileStore::open(&dir).await?);
    let cipher = Arc::new(Keyring::from_keys(false, [(1, key.as_str())])?);
    let resolver = CertResolver::new();
    let localhost = Domain::new("localhost")?;
    let renewer = Renewer::builder(store.clone(), cipher)
        .production(false)
        .main_domain(Some(localhost.clone()))
        .resolver(resolver.clone())
        .build();

    // Load what an earlier run stored, register localhost, run a cycle.
    renewer.load().await?;
    renewer.add_domain(&localhost).await?;
    let report = renewer.run_cycle().await?;
    println!("maintenance cycle: {report}");

    let record = store
        .load(&localhost)
        .await?
        .ok_or("the certificate was not stored")?;
    let cert = record
        .certificate
        .as_ref()
        .ok_or("no certificate issued; see the log below")?;
    println!("domain:      {}", record.domain);
    println!("expires:     {}", cert.not_after);
    println!("renews from: {}", record.renew_date);
    println!("sha256:      {}", cert.fingerprint);
    println!("store:       {dir} (private key sealed, never in clear on disk)");
    for line in record.log_lines() {
        println!("log:         {line}");
    }

    resolver.set_fallback(Some(localhost.clone()));
    let address = if check {
        "127.0.0.1:0".to_string()
    } else {
        std::env::var("QUICKSTART_ADDRESS").unwrap_or_else(|_| "127.0.0.1:8443".into())
    };
    let listener = TcpListener::bind(&address).await?;
    let local = listener.local_addr()?;
    // The server below speaks HTTP/1.1 only, so that is all it offers.
    let acceptor = TlsAcceptor::from(resolver.server_config(&[b"http/1.1"])?);
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|_req| async {
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                        "hello from certkeeper\n",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    if check {
        let body = fetch(local.port(), &cert.chain_pem).await?;
        if !body.contains("hello from certkeeper") {
            return Err(format!("unexpected response: {body:?}").into());
        }
        println!(
            "check:       TLS handshake with localhost:{} ok, certificate verified",
            local.port()
        );
        server.abort();
        return Ok(());
    }
    println!(
        "serving:     https://localhost:{}/  (Ctrl-C to stop)",
        local.port()
    );
    tokio::signal::ctrl_c().await?;
    server.abort();
    Ok(())
}

/// One HTTPS request to the server, trusting only the stored certificate.
async fn fetch(port: u16, chain_pem: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certkeeper::cert::chain_der(chain_pem)? {
        roots.add(cert)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Offer HTTP/2 first, as browsers and curl do: the server must pick 1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"http/1.1".as_slice()) {
        return Err("the server did not settle on HTTP/1.1 through ALPN".into());
    }
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

/// The crypto provider certkeeper was built with (its `aws-lc-rs` or `ring`
/// feature), named explicitly: rustls' process default is the
/// application's business.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}
