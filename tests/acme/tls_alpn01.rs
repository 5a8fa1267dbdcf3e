//! TLS-ALPN-01 (RFC 8737) through the resolver: what other clients see
//! while a challenge is presented, and a real CA (Pebble) validating
//! through certkeeper's TLS listener, then that listener serving the
//! certificate issued.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use certkeeper::challenge::{Challenge, ChallengeSolver, TlsAlpn01Solver};
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{CertResolver, Renewer};
use common::acme::pebble_issuer;
use common::pebble::{Pebble, PebbleOptions};
use common::tls::{handshake, trusting, verify_chain, TlsListener};
use common::{domain, keyring, limited, TEST_KEY};
use sha2::{Digest, Sha256};

const TEST_LIMIT: Duration = Duration::from_secs(180);
const ACME_TLS_1: &[u8] = b"acme-tls/1";

/// The acmeIdentifier extension of a leaf: (critical, value).
fn acme_identifier(leaf: &[u8]) -> Option<(bool, Vec<u8>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).unwrap();
    parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .map(|e| (e.critical, e.value.to_vec()))
}

#[tokio::test]
async fn only_clients_offering_acme_tls_1_get_the_challenge_certificate() {
    limited(TEST_LIMIT, async {
        let resolver = CertResolver::new();
        let solver = TlsAlpn01Solver::new(&resolver);
        let name = "www.shop.test";
        let own = certkeeper::issuer::SelfSignedIssuer::new()
            .issue_blocking(&domain(name))
            .unwrap();
        resolver
            .insert_pem(&domain(name), &own.chain_pem, own.key_pem.as_bytes())
            .unwrap();
        let config = resolver.server_config(&[b"h2", b"http/1.1"]).unwrap();
        let server = TlsListener::start(config, None).await;
        let at = server.address;

        // Nothing presented: an acme-tls/1 client is refused, never given
        // the name's own certificate.
        assert!(handshake(at, Some(name), None, &[ACME_TLS_1])
            .await
            .is_err());

        let challenge = Challenge {
            domain: domain(name),
            token: "tok".into(),
            key_authorization: "tok.thumbprint".into(),
            dns_value: String::new(),
        };
        solver.present(&challenge).await.unwrap();
        let validator = handshake(at, Some(name), None, &[ACME_TLS_1])
            .await
            .unwrap();
        assert_eq!(validator.alpn.as_deref(), Some(ACME_TLS_1));
        assert_eq!(validator.dns_names(), vec![name]);
        let (critical, value) = acme_identifier(&validator.leaf).expect("acmeIdentifier");
        assert!(critical);
        let mut expected = vec![0x04, 0x20];
        expected.extend_from_slice(&Sha256::digest(b"tok.thumbprint"));
        assert_eq!(value, expected);

        // Every other client negotiates as before and gets the name's own
        // certificate, verified.
        for (offered, negotiated) in [
            (vec![&b"h2"[..], b"http/1.1"], Some(&b"h2"[..])),
            (vec![&b"http/1.1"[..]], Some(&b"http/1.1"[..])),
            (vec![], None),
        ] {
            let got = handshake(at, Some(name), Some(trusting(&own.chain_pem)), &offered)
                .await
                .unwrap();
            assert_eq!(got.fingerprint, own.fingerprint);
            assert_eq!(got.alpn.as_deref(), negotiated);
            assert!(acme_identifier(&got.leaf).is_none());
        }
        // Another name offering acme-tls/1 has no challenge.
        assert!(handshake(at, Some("other.shop.test"), None, &[ACME_TLS_1])
            .await
            .is_err());

        // Another order's cleanup (another token) leaves it; its own removes it.
        solver
            .cleanup(&Challenge {
                token: "older".into(),
                ..challenge.clone()
            })
            .await
            .unwrap();
        assert!(handshake(at, Some(name), None, &[ACME_TLS_1]).await.is_ok());
        solver.cleanup(&challenge).await.unwrap();
        assert!(handshake(at, Some(name), None, &[ACME_TLS_1])
            .await
            .is_err());
    })
    .await;
}

#[tokio::test]
async fn pebble_validates_tls_alpn_01_through_the_resolver_which_then_serves_the_certificate() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let resolver = CertResolver::new();
        let solver = TlsAlpn01Solver::new(&resolver);
        // The server's one TLS listener, where Pebble connects for
        // validation (its tlsPort stands for 443).
        let listener = TlsListener::start_on(
            SocketAddr::from((Ipv4Addr::LOCALHOST, pebble.tls_port())),
            resolver.server_config(&[b"http/1.1"]).unwrap(),
            Some(resolver.clone()),
        )
        .await;

        let store = Arc::new(MemoryStore::new());
        let keyring = keyring(TEST_KEY);
        let issuer = pebble_issuer(&pebble, Arc::new(solver), store.clone(), keyring.clone())
            .request_timeout(Duration::from_secs(30))
            .order_timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let name = "www.certkeeper-test.com";
        let main = domain(name);
        let renewer = Renewer::builder(store.clone(), keyring)
            .acme(Arc::new(issuer))
            .main_domain(Some(main.clone()))
            .resolver(resolver.clone())
            .build();
        renewer.load().await.unwrap();
        renewer.add_domain(&main).await.unwrap();
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(
            report.issued,
            vec![main.clone()],
            "{report:?}\n{}",
            pebble.logs()
        );
        assert!(
            listener.handshakes() >= 1,
            "Pebble never completed a handshake with the listener"
        );

        let cert = store
            .load(&main)
            .await
            .unwrap()
            .unwrap()
            .certificate
            .unwrap();
        let roots = pebble.issuer_roots().await;
        verify_chain(&cert.chain_pem, roots.clone(), name);
        // The same listener serves it to a normal client, verified against
        // Pebble's root.
        let got = handshake(listener.address, Some(name), Some(roots), &[b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(got.fingerprint, cert.fingerprint);
        assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
        // The challenge was withdrawn after validation.
        assert!(handshake(listener.address, Some(name), None, &[ACME_TLS_1])
            .await
            .is_err());
    })
    .await;
}
