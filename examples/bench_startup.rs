//! Benchmark: how long a server with many stored certificates takes from
//! start to its first TLS handshake, and how much memory it uses.
//!
//! A child process first writes N certificate records into a `FileStore`
//! folder (records written directly in the store's layout, as
//! `bench_due` does, each with its private key sealed for its own domain;
//! the certificates are `DISTINCT` self-signed `*.bench.test` certificates
//! reused in turn, as making N key pairs would take a while). Then this
//! process, like a server starting:
//!
//! 1. opens the store;
//! 2. builds a `Renewer` with a `CertResolver` (main domain: the first
//!    name) and calls `Renewer::load`;
//! 3. listens on 127.0.0.1 with `CertResolver::server_config` and a plain
//!    `TlsAcceptor`, and connects with a rustls client that trusts the
//!    benchmark's certificates, for a name in the middle of the store,
//!    until the server presents that name's own certificate.
//!
//! It prints the time of each step from the start, the first handshake
//! that verified, the first with the name's own certificate, and the peak
//! resident memory (`VmHWM`) right then and after 10 more seconds (once
//! any background loading is done). Only APIs that older certkeepers have
//! are used, so the same file measures an older version too.
//!
//! ```text
//! cargo run --release --example bench_startup                 # 100,000 records, 1,000 distinct certificates
//! cargo run --release --example bench_startup -- 20000 100    # N, DISTINCT
//! ```

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper::cert::IssuerKind;
use certkeeper::cipher::Keyring;
use certkeeper::issuer::IssuedCert;
use certkeeper::store::{CertRecord, FileStore, MemoryStore, StoredCert};
use certkeeper::vault::Vault;
use certkeeper::{CertResolver, Domain, Renewer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// A development key: the benchmark's records are sealed with it.
const KEY: &str = "bench-startup-development-key-0123456789";
/// The longest the benchmark waits for the name's own certificate.
const OWN_CERTIFICATE_LIMIT: Duration = Duration::from_secs(120);

fn name(i: usize) -> String {
    format!("site-{i:07}.bench.test")
}

/// `distinct` self-signed certificates for `*.bench.test`, made with rcgen
/// directly (older certkeepers have no wildcard names).
fn certificates(distinct: usize) -> Vec<IssuedCert> {
    (0..distinct)
        .map(|_| {
            let mut params = rcgen::CertificateParams::new(vec!["*.bench.test".to_string()])
                .expect("valid parameters");
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::minutes(1);
            params.not_after = now + time::Duration::days(90);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            let key = rcgen::KeyPair::generate().expect("a key pair");
            let cert = params.self_signed(&key).expect("a certificate");
            IssuedCert::from_pem(cert.pem(), Zeroizing::new(key.serialize_pem()))
                .expect("a readable certificate")
        })
        .collect()
}

/// Writes `n` records into a new store folder `dir`; certificate `i %
/// distinct` for record `i`.
fn prepare(dir: &Path, n: usize, certs: &[IssuedCert]) {
    let keyring = Keyring::from_keys(false, [(1, KEY)]).expect("a key");
    let vault = Vault::new(Arc::new(MemoryStore::new()), Arc::new(keyring));
    let certs_dir = dir.join("certs");
    std::fs::create_dir_all(&certs_dir).expect("create the certs folder");
    for i in 0..n {
        let domain = Domain::new(&name(i)).expect("a valid name");
        let cert = &certs[i % certs.len()];
        let stored = StoredCert {
            chain_pem: cert.chain_pem.clone(),
            sealed_key: vault
                .seal_cert_key(&domain, cert.key_pem.as_bytes())
                .expect("seal"),
            not_before: cert.not_before,
            not_after: cert.not_after,
            fingerprint: cert.fingerprint.clone(),
            issuer: IssuerKind::SELF_SIGNED,
        };
        let mut record = CertRecord::new(domain.clone(), cert.not_before);
        record.renew_date = cert.not_after - time::Duration::days(30);
        record.issue_date = Some(cert.not_before);
        record.certificate = Some(stored);
        record.version = 1;
        let json = serde_json::to_vec(&record).expect("encode a record");
        std::fs::write(certs_dir.join(domain.as_str()), json).expect("write a record");
    }
    // The certificates, for the measuring process's client to trust.
    let all: String = certs.iter().map(|c| c.chain_pem.as_str()).collect();
    std::fs::write(dir.join("bench-certificates.pem"), all).expect("write the certificates");
}

/// Peak and current resident memory of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// One handshake for `name`; the fingerprint of the leaf presented, or why
/// it failed.
async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    address: std::net::SocketAddr,
    name: &str,
) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?[0]
        .clone();
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut echo = [0u8; 1];
    tls.read_exact(&mut echo).await.map_err(|e| e.to_string())?;
    Ok(certkeeper::cert::fingerprint(&leaf))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--prepare") {
        let dir = Path::new(&args[1]);
        let n: usize = args[2].parse()?;
        let distinct: usize = args[3].parse()?;
        let started = Instant::now();
        prepare(dir, n, &certificates(distinct));
        println!(
            "prepared {n} records ({distinct} distinct certificates) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let n: usize = args.first().map_or(Ok(100_000), |a| a.parse())?;
    let distinct: usize = args.get(1).map_or(Ok(1_000), |a| a.parse())?;
    let distinct = distinct.clamp(2, n.max(2));
    let tmp = tempfile::Builder::new()
        .prefix("certkeeper-bench-startup-")
        .tempdir()?;
    let dir = tmp.path().join("store");
    // Written by another process, so this one's memory is the server's only.
    let status = Command::new(std::env::current_exe()?)
        .args(["--prepare", dir.to_str().ok_or("path")?])
        .args([n.to_string(), distinct.to_string()])
        .status()?;
    if !status.success() {
        return Err("preparing the records failed".into());
    }
    let target = name(n / 2 + 1);
    let pem = std::fs::read(dir.join("bench-certificates.pem"))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut fingerprints = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der?;
        fingerprints.push(certkeeper::cert::fingerprint(&der));
        roots.add(der)?;
    }
    if fingerprints.len() != distinct {
        return Err(format!(
            "{} certificates read back, {distinct} written",
            fingerprints.len()
        )
        .into());
    }
    let own = &fingerprints[(n / 2 + 1) % distinct];
    let (hwm_before, _) = memory();

    // A server that stored these records has the store's due-index journal
    // (`index.log`): the first open builds it from the record files (a
    // one-time repair), as a server's own saves would have; the restart
    // measured below replays it.
    let rebuilt = Instant::now();
    drop(FileStore::open(&dir).await?);
    println!(
        "journal built from the record files (once): {:.1} ms",
        rebuilt.elapsed().as_secs_f64() * 1e3
    );

    // The server starts.
    let start = Instant::now();
    let store = Arc::new(FileStore::open(&dir).await?);
    let opened = start.elapsed();
    let keyring = Arc::new(Keyring::from_keys(false, [(1, KEY)])?);
    let resolver = CertResolver::new();
    let renewer = Renewer::builder(store, keyring)
        .production(false)
        .main_domain(Some(Domain::new(&name(0))?))
        .resolver(resolver.clone())
        .build();
    let loaded_count = renewer.load().await?;
    let loaded = start.elapsed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(resolver.server_config(&[b"http/1.1"])?);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1];
                    if tls.read_exact(&mut buf).await.is_ok() {
                        let _ = tls.write_all(&buf).await;
                    }
                }
            });
        }
    });
    let listening = start.elapsed();
    // A client for a name in the middle, verifying against the benchmark's
    // certificates.
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let provider = rustls::crypto::ring::default_provider();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake a full one: a resumed session reports the
    // certificate of the session it resumes.
    client.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let mut first_verified = None;
    let mut first_own = None;
    let mut handshakes = 0;
    while first_own.is_none() && start.elapsed() < OWN_CERTIFICATE_LIMIT {
        handshakes += 1;
        match handshake(&connector, address, &target).await {
            Ok(fingerprint) => {
                first_verified.get_or_insert_with(|| start.elapsed());
                if fingerprint == *own {
                    first_own = Some(start.elapsed());
                }
            }
            Err(e) => eprintln!("handshake {handshakes} failed: {e}"),
        }
    }
    let (hwm_first, rss_first) = memory();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (hwm_end, rss_end) = memory();

    let ms = |d: Option<Duration>| {
        d.map_or("never".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    println!("records:                       {n} ({distinct} distinct certificates)");
    println!("store opened:                  {}", ms(Some(opened)));
    println!(
        "Renewer::load returned ({loaded_count}): {}",
        ms(Some(loaded))
    );
    println!("listening:                     {}", ms(Some(listening)));
    println!("first verified handshake:      {}", ms(first_verified));
    println!(
        "first with {target}'s own certificate: {} ({handshakes} handshakes)",
        ms(first_own)
    );
    println!("peak RSS before the start:     {hwm_before:.1} MiB");
    println!("peak RSS at that handshake:    {hwm_first:.1} MiB (current {rss_first:.1} MiB)");
    println!("peak RSS 10 s later:           {hwm_end:.1} MiB (current {rss_end:.1} MiB)");
    if first_own.is_none() {
        return Err("the name's own certificate was never served".into());
    }
    Ok(())
}
