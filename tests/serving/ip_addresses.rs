//! Certificates of IP addresses through real TLS handshakes: a client that
//! connects to an address sends no SNI, and gets the certificate of the
//! local address its connection arrived on.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use certkeeper::cert::{fingerprint, IssuedCert};
use certkeeper::issuer::SelfSignedIssuer;
use certkeeper::store::FileStore;
use certkeeper::{CertResolver, Renewer};
use common::tls::{provider, trusting};
use common::{domain, keyring, limited, TEST_KEY};
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TEST_LIMIT: Duration = Duration::from_secs(120);

fn insert(resolver: &CertResolver, name: &str) -> IssuedCert {
    let cert = SelfSignedIssuer::new()
        .issue_blocking(&domain(name))
        .unwrap();
    resolver
        .insert_pem(&domain(name), &cert.chain_pem, cert.key_pem.as_bytes())
        .unwrap();
    cert
}

/// How the test server accepts its connections.
#[derive(Clone, Copy, PartialEq)]
enum Accept {
    /// `CertResolver::accept_at` with the TCP stream's local address.
    AtLocalAddress,
    /// `CertResolver::accept`, which does not know the local address.
    Plain,
}

/// Serves `resolver` on `address` until the task is aborted, echoing what
/// each client sends.
async fn serve(
    resolver: &CertResolver,
    address: SocketAddr,
    how: Accept,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(address)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {address}: {e}"));
    let bound = listener.local_addr().unwrap();
    let config = resolver.server_config(&[b"http/1.1"]).unwrap();
    let resolver = resolver.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (resolver, config) = (resolver.clone(), config.clone());
            tokio::spawn(async move {
                let accepted = match how {
                    Accept::AtLocalAddress => {
                        let local = tcp.local_addr().ok().map(|a| a.ip());
                        resolver.accept_at(config, tcp, local).await
                    }
                    Accept::Plain => resolver.accept(config, tcp).await,
                };
                if let Ok(tls) = accepted {
                    echo(tls).await;
                }
            });
        }
    });
    (bound, task)
}

async fn echo(mut tls: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
    let mut buf = [0u8; 64];
    while let Ok(n) = tls.read(&mut buf).await {
        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = tls.shutdown().await;
}

/// Connects to `port` on `ip` as a browser does when given an address:
/// the server name is the IP address, so no SNI is sent; the chain is
/// verified against `roots` for that address (an IP address SAN), or with
/// `roots` `None` taken as is. Returns the leaf's fingerprint.
async fn connect_to_ip(ip: IpAddr, port: u16, sni: Option<&str>, roots: RootCertStore) -> String {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).unwrap(),
        None => ServerName::IpAddress(ip.into()),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake with {ip} (SNI {sni:?}) failed: {e}"));
    tls.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    fingerprint(&leaf)
}

/// Roots trusting every certificate in `certs`.
fn trusting_all(certs: &[&IssuedCert]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.roots.extend(trusting(&cert.chain_pem).roots);
    }
    roots
}

#[tokio::test]
async fn a_client_without_sni_gets_the_certificate_of_the_address_it_connected_to() {
    limited(TEST_LIMIT, async {
        let resolver = CertResolver::new();
        let v4 = insert(&resolver, "127.0.0.1");
        let v6 = insert(&resolver, "::1");
        let main = insert(&resolver, "app.test");
        resolver.set_fallback(Some(domain("app.test")));
        let roots = trusting_all(&[&v4, &v6, &main]);
        let localhost_v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let localhost_v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);

        // A listener on one address: its certificate, verified by the
        // client for that address (webpki checks the IP address SAN).
        let (at, on_v4) = serve(&resolver, (localhost_v4, 0).into(), Accept::AtLocalAddress).await;
        let got = connect_to_ip(localhost_v4, at.port(), None, roots.clone()).await;
        assert_eq!(got, v4.fingerprint);
        // A client sending SNI is served by its name, on any address.
        let got = connect_to_ip(localhost_v4, at.port(), Some("app.test"), roots.clone()).await;
        assert_eq!(got, main.fingerprint);

        // IPv6, then one listener on both families: an IPv4 client arrives
        // on an IPv4-mapped address and still gets the IPv4 certificate.
        let (v6_only, on_v6) =
            serve(&resolver, (localhost_v6, 0).into(), Accept::AtLocalAddress).await;
        let got = connect_to_ip(localhost_v6, v6_only.port(), None, roots.clone()).await;
        assert_eq!(got, v6.fingerprint);
        let (dual, on_both) = serve(
            &resolver,
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            Accept::AtLocalAddress,
        )
        .await;
        let got = connect_to_ip(localhost_v4, dual.port(), None, roots.clone()).await;
        assert_eq!(got, v4.fingerprint);
        let got = connect_to_ip(localhost_v6, dual.port(), None, roots.clone()).await;
        assert_eq!(got, v6.fingerprint);

        // Without the local address, the client gets the fallback: the main
        // domain's certificate, which does not verify for the address.
        let (plain, on_plain) = serve(&resolver, (localhost_v4, 0).into(), Accept::Plain).await;
        let got = connect_to_ip(localhost_v4, plain.port(), Some("app.test"), roots.clone()).await;
        assert_eq!(got, main.fingerprint);
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
        let refused = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(localhost_v4.into()), tcp)
            .await;
        assert!(
            refused.is_err(),
            "the fallback certificate verified for 127.0.0.1"
        );

        // An address without a certificate of its own: the fallback too.
        assert!(resolver.remove(&domain("127.0.0.1")));
        let got = connect_to_ip(localhost_v4, at.port(), Some("app.test"), roots).await;
        assert_eq!(got, main.fingerprint);
        for server in [on_v4, on_v6, on_both, on_plain] {
            server.abort();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_address_certificate_is_loaded_before_the_client_is_answered() {
    limited(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let names = [domain("127.0.0.1"), domain("main.test")];
        {
            let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
            let renewer = Renewer::builder(store, keyring(TEST_KEY))
                .production(false)
                .build();
            for name in &names {
                renewer.add_domain(name).await.unwrap();
            }
            let report = renewer.run_cycle().await.unwrap();
            assert_eq!(report.issued.len(), 2, "{report:?}");
        }
        // A restart with room for one certificate: the main domain's is
        // read, the address's only listed.
        let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
        let record = certkeeper::store::CertStore::load(&*store, &names[0])
            .await
            .unwrap()
            .unwrap();
        let stored = record.certificate.unwrap();
        let resolver = CertResolver::with_capacity(1);
        let renewer = Renewer::builder(store, keyring(TEST_KEY))
            .production(false)
            .main_domain(Some(domain("main.test")))
            .resolver(resolver.clone())
            .build();
        assert_eq!(renewer.load().await.unwrap(), 2);
        assert!(resolver.serves(&names[0]));

        let (at, server) = serve(
            &resolver,
            (Ipv4Addr::LOCALHOST, 0).into(),
            Accept::AtLocalAddress,
        )
        .await;
        let mut roots = RootCertStore::empty();
        roots
            .add(
                certkeeper::cert::chain_der(&stored.chain_pem)
                    .unwrap()
                    .remove(0),
            )
            .unwrap();
        let got = connect_to_ip(Ipv4Addr::LOCALHOST.into(), at.port(), None, roots).await;
        assert_eq!(got, stored.fingerprint);
        server.abort();
    })
    .await;
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_tls_listener_serves_a_client_without_sni_by_its_local_address() {
    use axum::serve::Listener as _;
    limited(TEST_LIMIT, async {
        let resolver = CertResolver::new();
        let v4 = insert(&resolver, "127.0.0.1");
        let main = insert(&resolver, "app.test");
        resolver.set_fallback(Some(domain("app.test")));
        let mut listener = certkeeper::serve::TlsListener::bind("127.0.0.1:0", &resolver)
            .await
            .unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (tls, _) = listener.accept().await;
                tokio::spawn(echo(tls));
            }
        });
        let roots = trusting_all(&[&v4, &main]);
        let got = connect_to_ip(Ipv4Addr::LOCALHOST.into(), at.port(), None, roots.clone()).await;
        assert_eq!(got, v4.fingerprint);
        let got = connect_to_ip(
            Ipv4Addr::LOCALHOST.into(),
            at.port(),
            Some("app.test"),
            roots,
        )
        .await;
        assert_eq!(got, main.fingerprint);
        server.abort();
    })
    .await;
}
