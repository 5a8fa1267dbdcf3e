//! Certificates for IP addresses (RFC 8738) from a real Pebble 2.10: the
//! order names an IP identifier, HTTP-01 or TLS-ALPN-01 is validated at the
//! address, the IP profile is ordered, and the certificate is served to a
//! client that connects to the address (no SNI) and verifies it against
//! Pebble's root.

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use certkeeper::cert::fingerprint;
use certkeeper::challenge::{Http01Solver, TlsAlpn01Solver};
use certkeeper::issuer::{IssueRequest, Issuer};
use certkeeper::store::MemoryStore;
use certkeeper::{CertResolver, Error};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions, PebbleVersion};
use common::tls::{provider, verify_chain};
use common::{domain, keyring, limited, TEST_KEY};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A guard against a hung test: far above what any case here needs.
const TEST_LIMIT: Duration = Duration::from_secs(180);
const NINETY_DAYS: u64 = 90 * 86_400;
/// Let's Encrypt's `shortlived` profile, the one it issues addresses under:
/// 160 hours.
const SHORTLIVED: u64 = 160 * 3600;

/// The IP addresses among the subject alternative names of `chain_pem`'s
/// leaf, and its DNS names.
fn sans(chain_pem: &str) -> (Vec<IpAddr>, Vec<String>) {
    let leaf = certkeeper::cert::chain_der(chain_pem).unwrap().remove(0);
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let mut ips = Vec::new();
    let mut names = Vec::new();
    if let Some(san) = parsed.subject_alternative_name().unwrap() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                    _ => panic!("an IP address SAN of {} bytes", b.len()),
                },
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                _ => {}
            }
        }
    }
    (ips, names)
}

async fn pebble(profiles: &[(&str, u64)]) -> Pebble {
    Pebble::start(PebbleOptions {
        version: PebbleVersion::V2_10,
        validity_seconds: Some(NINETY_DAYS),
        profiles: profiles
            .iter()
            .map(|(name, validity)| (name.to_string(), *validity))
            .collect(),
        ..PebbleOptions::default()
    })
    .await
}

#[tokio::test]
async fn ip_address_certificate_from_pebble_is_served_to_a_client_connecting_to_the_address() {
    limited(TEST_LIMIT, async {
        let pebble = pebble(&[("classic", NINETY_DAYS), ("shortlived", SHORTLIVED)]).await;
        let solver = Http01Solver::new();
        let _http01 = serve_http01(&solver, &pebble).await;
        let issuer = pebble_issuer(
            &pebble,
            Arc::new(solver),
            Arc::new(MemoryStore::new()),
            keyring(TEST_KEY),
        )
        .profile("classic")
        .ip_profile("shortlived")
        .request_timeout(Duration::from_secs(30))
        .order_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
        assert_eq!(issuer.ip_profile(), Some("shortlived"));

        // Pebble reaches 127.0.0.1 itself for HTTP-01: an address no public
        // CA would validate, which is why the issuer is used directly here
        // and not through the router, which keeps it self-signed.
        let address = domain("127.0.0.1");
        assert!(address.is_local());
        let issued = issuer
            .issue(&IssueRequest::new(address.clone()))
            .await
            .unwrap();
        let cert = &issued.cert;
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (ips, names) = sans(&cert.chain_pem);
        assert_eq!(ips, vec![localhost], "IP address SANs");
        assert!(
            names.is_empty(),
            "DNS SANs in an address's certificate: {names:?}"
        );
        // Under the IP profile.
        let lifetime = (cert.not_after - cert.not_before).whole_seconds();
        assert!(
            (SHORTLIVED as i64 - 60..=SHORTLIVED as i64 + 60).contains(&lifetime),
            "{lifetime}"
        );
        let roots = pebble.issuer_roots().await;
        verify_chain(&cert.chain_pem, roots.clone(), "127.0.0.1");

        // A name from the same issuer gets the other profile.
        let name = issuer
            .issue(&IssueRequest::new(domain("www.certkeeper-test.com")))
            .await
            .unwrap();
        let lifetime = (name.cert.not_after - name.cert.not_before).whole_seconds();
        assert!(
            (NINETY_DAYS as i64 - 60..=NINETY_DAYS as i64 + 60).contains(&lifetime),
            "{lifetime}"
        );

        // Served: a client connecting to 127.0.0.1 sends no SNI, and gets
        // the address's certificate, which it verifies against Pebble's root.
        let resolver = CertResolver::new();
        resolver
            .insert_pem(&address, &cert.chain_pem, cert.key_pem.as_bytes())
            .unwrap();
        resolver
            .insert_pem(
                &domain("www.certkeeper-test.com"),
                &name.cert.chain_pem,
                name.cert.key_pem.as_bytes(),
            )
            .unwrap();
        resolver.set_fallback(Some(domain("www.certkeeper-test.com")));
        let config = resolver.server_config(&[b"http/1.1"]).unwrap();
        let listener = tokio::net::TcpListener::bind((localhost, 0)).await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn({
            let resolver = resolver.clone();
            async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let local = tcp.local_addr().ok().map(|a| a.ip());
                let mut tls = resolver.accept_at(config, tcp, local).await.unwrap();
                let mut buf = [0u8; 5];
                tls.read_exact(&mut buf).await.unwrap();
                tls.write_all(&buf).await.unwrap();
                tls.shutdown().await.unwrap();
            }
        });
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::IpAddress(localhost.into()), tcp)
            .await
            .unwrap_or_else(|e| panic!("the handshake with 127.0.0.1 failed: {e}"));
        tls.write_all(b"hello").await.unwrap();
        let mut echoed = Vec::new();
        tls.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"hello");
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(fingerprint(&leaf), cert.fingerprint);
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn ip_profile_the_ca_does_not_offer_is_a_config_error_naming_it() {
    limited(TEST_LIMIT, async {
        let pebble = pebble(&[("classic", NINETY_DAYS)]).await;
        let solver = Http01Solver::new();
        let _http01 = serve_http01(&solver, &pebble).await;
        let issuer = pebble_issuer(
            &pebble,
            Arc::new(solver),
            Arc::new(MemoryStore::new()),
            keyring(TEST_KEY),
        )
        .ip_profile("shortlived")
        .build()
        .unwrap();
        let err = issuer
            .issue(&IssueRequest::new(domain("127.0.0.1")))
            .await
            .unwrap_err();
        match &err {
            Error::Config { name, reason } => {
                assert_eq!(name, "AcmeIssuerBuilder::ip_profile");
                assert!(reason.contains("classic"), "{reason}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        assert!(
            !pebble.log("pebble").contains("POST /order-plz"),
            "an order was sent"
        );
        // A name is not concerned: it gets the CA's default profile.
        issuer
            .issue(&IssueRequest::new(domain("www.certkeeper-test.com")))
            .await
            .unwrap();
    })
    .await;
}

#[cfg(feature = "fs")]
#[tokio::test]
async fn the_environments_ip_profile_reaches_the_embedded_issuer_and_is_named_by_its_variable() {
    limited(TEST_LIMIT, async {
        let pebble = pebble(&[("classic", NINETY_DAYS)]).await;
        let dir = tempfile::tempdir().unwrap();
        let address = format!("[::]:{}", pebble.http_port());
        // A public address as the main domain, ordered from the CA under
        // the IP profile of the environment, which this CA does not offer.
        let config = certkeeper::Config::from_vars([
            ("_APP_ENV", "production"),
            ("_APP_DOMAIN", "8.8.8.8"),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", common::CONTACT_EMAIL),
            ("_APP_OPENSSL_KEY_V1", TEST_KEY),
            ("_APP_ACME_DIRECTORY_URL", pebble.directory_url().as_str()),
            (
                "_APP_ACME_CA_ROOT",
                pebble.ca_root_pem_path().to_str().unwrap(),
            ),
            ("_APP_ACME_IP_PROFILE", "shortlived"),
            ("_APP_ACME_CHALLENGE_ADDRESS", address.as_str()),
            ("_APP_CERTIFICATES_PATH", dir.path().to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(config.acme().ip_profile(), Some("shortlived"));
        let embedded = certkeeper::Embedded::start(config).await.unwrap();
        let err = embedded.renewer.issue_now(None).await.unwrap_err();
        match &err {
            Error::Config { name, reason } => {
                assert_eq!(name, "_APP_ACME_IP_PROFILE");
                assert!(reason.contains("classic"), "{reason}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        assert!(
            !pebble.log("pebble").contains("POST /order-plz"),
            "an order was sent"
        );
    })
    .await;
}

/// Serves `resolver` on `listener` through `accept_at`, echoing what each client
/// sends, until aborted.
fn serve_at_local_address(
    resolver: &CertResolver,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let config = resolver.server_config(&[b"http/1.1"]).unwrap();
    let resolver = resolver.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (resolver, config) = (resolver.clone(), config.clone());
            tokio::spawn(async move {
                let local = tcp.local_addr().ok().map(|a| a.ip());
                let Ok(mut tls) = resolver.accept_at(config, tcp, local).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    })
}

#[tokio::test]
async fn ip_address_validated_through_tls_alpn_01_on_the_listener_that_then_serves_it() {
    limited(TEST_LIMIT, async {
        let pebble = pebble(&[]).await;
        let resolver = CertResolver::new();
        let solver = TlsAlpn01Solver::new(&resolver);
        // One TLS listener on Pebble's tlsPort (standing for 443): Pebble
        // validates there (SNI 1.0.0.127.in-addr.arpa, acme-tls/1), and a
        // client of the address is served there.
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let listener = tokio::net::TcpListener::bind((localhost, pebble.tls_port()))
            .await
            .unwrap();
        let server = serve_at_local_address(&resolver, listener);
        let issuer = pebble_issuer(
            &pebble,
            Arc::new(solver),
            Arc::new(MemoryStore::new()),
            keyring(TEST_KEY),
        )
        .request_timeout(Duration::from_secs(30))
        .order_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
        let address = domain("127.0.0.1");
        let issued = issuer
            .issue(&IssueRequest::new(address.clone()))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", pebble.logs()));
        let cert = &issued.cert;
        assert_eq!(sans(&cert.chain_pem).0, vec![localhost]);
        let roots = pebble.issuer_roots().await;
        verify_chain(&cert.chain_pem, roots.clone(), "127.0.0.1");

        resolver
            .insert_pem(&address, &cert.chain_pem, cert.key_pem.as_bytes())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect((localhost, pebble.tls_port()))
            .await
            .unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::IpAddress(localhost.into()), tcp)
            .await
            .unwrap_or_else(|e| panic!("the handshake with 127.0.0.1 failed: {e}"));
        tls.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        tls.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello");
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(fingerprint(&leaf), cert.fingerprint);
        server.abort();
    })
    .await;
}
