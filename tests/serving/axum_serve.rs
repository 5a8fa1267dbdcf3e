//! The axum integration: the port 80 router (challenge answers, redirect
//! to HTTPS), the TLS listener under `axum::serve` (failed handshakes
//! skipped), and `examples/axum_server.rs` getting a real certificate from
//! Pebble on its first visit.

use crate::common;

#[allow(dead_code)]
#[path = "../../examples/axum_server.rs"]
mod axum_server;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use certkeeper::challenge::{Challenge, ChallengeSolver, Http01Solver};
use certkeeper::issuer::SelfSignedIssuer;
use certkeeper::serve::{challenges, challenges_and_redirect, TlsListener};
use certkeeper::{CertResolver, Config};
use common::pebble::{Pebble, PebbleOptions};
use common::tls::{provider, trusting};
use common::{domain, limited, CONTACT_EMAIL};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TEST_LIMIT: Duration = Duration::from_secs(240);

/// One HTTP/1.1 request (`raw`, sent as is) and the whole response.
async fn http(at: SocketAddr, raw: &str) -> String {
    let mut tcp = TcpStream::connect(at).await.unwrap();
    tcp.write_all(raw.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response
}

/// `GET /` over TLS to `at` for `name`, verified against `roots`: the
/// response, or why it failed.
async fn https_get(at: SocketAddr, name: &str, roots: RootCertStore) -> Result<String, String> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(at).await.map_err(|e| e.to_string())?;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    tls.read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response)
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    at
}

fn location(response: &str) -> Option<&str> {
    response
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::trim)
}

#[tokio::test]
async fn port_80_answers_challenges_and_redirects_the_rest() {
    limited(TEST_LIMIT, async {
        let solver = Http01Solver::new();
        let challenge = Challenge {
            domain: domain("www.example.com"),
            token: "tok_EN-123".into(),
            key_authorization: "tok_EN-123.thumbprint".into(),
            dns_value: String::new(),
        };
        solver.present(&challenge).await.unwrap();
        let only = serve(challenges(solver.responder())).await;
        let both = serve(challenges_and_redirect(solver.responder(), 8443)).await;

        for at in [only, both] {
            let r = http(at, "GET /.well-known/acme-challenge/tok_EN-123 HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            assert!(r.contains("application/octet-stream"), "{r}");
            assert!(r.ends_with("tok_EN-123.thumbprint"), "{r}");
            let r = http(at, "GET /.well-known/acme-challenge/unknown HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        }
        let r = http(only, "GET /page HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");

        let cases = [
            ("/a/b?x=1&y=2", "Example.COM:80", Some("https://example.com:8443/a/b?x=1&y=2")),
            ("/", "[::1]:80", Some("https://[::1]:8443/")),
            ("/x", "shop.example.com.", Some("https://shop.example.com:8443/x")),
            ("/", "evil.com/@x", None),
            ("/", "a..b", None),
        ];
        for (path, host, want) in cases {
            let r = http(both, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).await;
            match want {
                Some(want) => {
                    assert!(r.starts_with("HTTP/1.1 308"), "{host}: {r}");
                    assert_eq!(location(&r), Some(want), "{host}: {r}");
                }
                None => assert!(r.starts_with("HTTP/1.1 400"), "{host}: {r}"),
            }
        }
        let at443 = serve(challenges_and_redirect(solver.responder(), 443)).await;
        let r = http(at443, "POST /form?q HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        assert_eq!(location(&r), Some("https://example.com/form?q"), "{r}");
    })
    .await;
}

#[tokio::test]
async fn the_tls_listener_skips_failed_handshakes() {
    limited(TEST_LIMIT, async {
        let resolver = CertResolver::new();
        let cert = SelfSignedIssuer::new()
            .issue_blocking(&domain("app.test"))
            .unwrap();
        resolver
            .insert_pem(
                &domain("app.test"),
                &cert.chain_pem,
                cert.key_pem.as_bytes(),
            )
            .unwrap();
        let listener = TlsListener::bind("127.0.0.1:0", &resolver)
            .await
            .unwrap()
            .handshake_timeout(Duration::from_millis(500));
        let at = axum::serve::Listener::local_addr(&listener).unwrap();
        let app = Router::new().route("/", get(|| async { "hello" }));
        tokio::spawn(async move { axum::serve(listener, app).await });

        // Garbage, a client that says nothing, a client that hangs up.
        let mut garbage = TcpStream::connect(at).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let _silent = TcpStream::connect(at).await.unwrap();
        drop(TcpStream::connect(at).await.unwrap());
        // A client that does not trust the certificate aborts its handshake.
        assert!(https_get(at, "app.test", RootCertStore::empty())
            .await
            .is_err());

        for _ in 0..3 {
            let r = https_get(at, "app.test", trusting(&cert.chain_pem))
                .await
                .unwrap();
            assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("hello"), "{r}");
        }
        // After the silent client's handshake timed out, still serving.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = https_get(at, "app.test", trusting(&cert.chain_pem))
            .await
            .unwrap();
        assert!(r.ends_with("hello"), "{r}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_gets_a_real_certificate_on_its_first_visit() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let name = "www.certkeeper-test.com";
        let config = Config::from_vars([
            ("_APP_DOMAIN", name.to_string()),
            (
                "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS",
                CONTACT_EMAIL.to_string(),
            ),
            ("_APP_OPENSSL_KEY_V1", common::TEST_KEY.to_string()),
            ("_APP_ACME_DIRECTORY_URL", pebble.directory_url()),
            (
                "_APP_ACME_CA_ROOT",
                pebble.ca_root_pem_path().display().to_string(),
            ),
            ("_APP_ACME_TIMEOUT", "30".to_string()),
            ("_APP_CERTIFICATES_PATH", dir.path().display().to_string()),
        ])
        .unwrap();
        let http = SocketAddr::from((Ipv6Addr::UNSPECIFIED, pebble.http_port()));
        let https: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = axum_server::start(config, http, https).await.unwrap();

        // Port 80 redirects to the TLS port.
        let r = http_get_local(pebble.http_port(), name).await;
        assert!(r.starts_with("HTTP/1.1 308"), "{r}");

        // The first visit: the fallback (not trusted by Pebble's roots)
        // or, if the first cycle was quicker, Pebble's chain already.
        let roots = pebble.issuer_roots().await;
        let first = https_get(server.https, name, roots.clone()).await;
        let mut verified = None;
        for _ in 0..600 {
            match https_get(server.https, name, roots.clone()).await {
                Ok(response) => {
                    verified = Some(response);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let response = verified.unwrap_or_else(|| {
            panic!(
                "no certificate from Pebble after 60 s (first visit: {first:?})\n{}",
                pebble.logs()
            )
        });
        assert!(
            response.ends_with("hello over automatic HTTPS\n"),
            "{response}"
        );
        let record = server
            .embedded
            .store
            .load(&domain(name))
            .await
            .unwrap()
            .unwrap();
        assert!(record.certificate.is_some());
    })
    .await;
}

/// `GET /` to port `port` on 127.0.0.1 with `Host: name`, over plain HTTP.
async fn http_get_local(port: u16, name: &str) -> String {
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    http(
        at,
        &format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"),
    )
    .await
}
