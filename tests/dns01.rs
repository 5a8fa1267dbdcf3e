//! DNS-01 for real: the `Dns01Solver` sends RFC 2136 updates signed with
//! TSIG to a bind9 (`named`) started by the test, and Pebble resolves every
//! name through that same bind9, so it validates the TXT records the solver
//! published.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper::challenge::{
    Challenge, ChallengeKind, ChallengeSolver, Dns01Solver, TsigAlgorithm,
};
use certkeeper::error::DnsProblem;
use certkeeper::issuer::{AcmeIssuer, Issuer};
use certkeeper::store::MemoryStore;
use certkeeper::Error;
use common::acme::pebble_issuer;
use common::bind9::{Bind9, TSIG_KEY_NAME};
use common::pebble::{Pebble, PebbleOptions};
use common::tls::{round_trip, serving, verify_chain};
use common::{domain, keyring, limited, TEST_KEY};

const TEST_LIMIT: Duration = Duration::from_secs(180);
const ZONE: &str = "example.test";

fn solver(bind: &Bind9, secret: &str) -> Dns01Solver {
    Dns01Solver::builder(bind.addr(), ZONE)
        .tsig_key(TSIG_KEY_NAME, secret, TsigAlgorithm::HmacSha256)
        .request_timeout(Duration::from_secs(5))
        .propagation_timeout(Duration::from_secs(20))
        .build()
        .expect("valid solver settings")
}

fn issuer(pebble: &Pebble, solver: Dns01Solver) -> AcmeIssuer {
    pebble_issuer(
        pebble,
        Arc::new(solver),
        Arc::new(MemoryStore::new()),
        keyring(TEST_KEY),
    )
    .request_timeout(Duration::from_secs(30))
    .order_timeout(Duration::from_secs(120))
    .build()
    .expect("valid issuer settings")
}

#[tokio::test]
async fn a_wildcard_and_its_bare_name_are_issued_through_dns01_and_the_records_removed() {
    limited(TEST_LIMIT, async {
        let bind = Bind9::start(&[ZONE]).await;
        let pebble = Pebble::start(PebbleOptions {
            dns_server: Some(bind.addr()),
            // Nonces refused now and then: the issuer retries them.
            nonce_reject_percent: 20,
            ..PebbleOptions::default()
        })
        .await;
        let solver = solver(&bind, bind.secret());
        let issuer = issuer(&pebble, solver.clone());
        assert_eq!(issuer.challenge(), Some(ChallengeKind::Dns01));

        // Both orders publish at `_acme-challenge.example.test` at once:
        // each adds and removes only its own value.
        let wildcard = domain("*.example.test");
        let bare = domain(ZONE);
        let (wild_cert, bare_cert) = tokio::join!(issuer.issue(&wildcard), issuer.issue(&bare));
        let (wild_cert, bare_cert) = (
            wild_cert.unwrap_or_else(|e| panic!("wildcard: {e}\n{}", pebble.logs())),
            bare_cert.unwrap_or_else(|e| panic!("bare name: {e}\n{}", pebble.logs())),
        );
        // Pebble's only DNS server is bind9, where the solver published.
        let pebble_log = pebble.log("pebble");
        assert!(
            pebble_log.contains(&format!("custom DNS resolver for ACME challenges: {}", bind.addr())),
            "{pebble_log}"
        );
        let log = bind.log();
        assert_eq!(log.matches("adding an RR at '_acme-challenge.example.test' TXT").count(), 2, "{log}");

        assert!(
            solver
                .txt_values("_acme-challenge.example.test")
                .await
                .unwrap()
                .is_empty(),
            "the TXT records were not removed"
        );

        let roots = pebble.issuer_roots().await;
        verify_chain(&wild_cert.chain_pem, roots.clone(), "foo.example.test");
        verify_chain(&bare_cert.chain_pem, roots.clone(), ZONE);
        // A real handshake for a name under the wildcard gets its leaf.
        assert_eq!(
            round_trip(serving(&wild_cert), roots, "foo.example.test").await,
            wild_cert.fingerprint
        );
    })
    .await;
}

#[tokio::test]
async fn a_wrong_tsig_secret_is_a_typed_error_not_a_hang() {
    limited(TEST_LIMIT, async {
        let bind = Bind9::start(&[ZONE]).await;
        let wrong = "d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3JvbmchIQ==";
        let solver = solver(&bind, wrong);
        let challenge = Challenge {
            domain: domain("www.example.test"),
            token: "token".into(),
            key_authorization: "token.thumbprint".into(),
            dns_value: "value-never-published".into(),
        };
        let started = Instant::now();
        let err = solver.present(&challenge).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(
            matches!(
                &err,
                Error::Dns {
                    problem: DnsProblem::NotAuthenticated,
                    step: "present",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), "dns_not_authenticated");
        let shown = format!("{err} {err:?} {solver:?}");
        assert!(!shown.contains(wrong) && !shown.contains(bind.secret()));
        assert!(solver
            .txt_values("_acme-challenge.www.example.test")
            .await
            .unwrap()
            .is_empty());

        // Through the issuer: the order fails with that error, quickly.
        let pebble = Pebble::start(PebbleOptions {
            dns_server: Some(bind.addr()),
            ..PebbleOptions::default()
        })
        .await;
        let started = Instant::now();
        let err = issuer(&pebble, solver)
            .issue(&domain("www.example.test"))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        assert!(
            matches!(&err, Error::Dns { problem: DnsProblem::NotAuthenticated, .. }),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_record_is_removed_when_validation_fails() {
    limited(TEST_LIMIT, async {
        let bind = Bind9::start(&[ZONE]).await;
        // Pebble asks its own challtestsrv, which never sees bind9's record.
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let solver = solver(&bind, bind.secret());
        let err = issuer(&pebble, solver.clone())
            .issue(&domain("www.example.test"))
            .await
            .unwrap_err();
        assert!(matches!(&err, Error::Acme { step: "validation", .. }), "{err:?}");
        assert!(!err.is_ca_unavailable());
        assert!(solver
            .txt_values("_acme-challenge.www.example.test")
            .await
            .unwrap()
            .is_empty());
        // The solver did publish it: bind9 logged the add and the delete.
        let log = bind.log();
        assert!(log.contains("adding an RR"), "{log}");
        assert!(log.contains("deleting an RR"), "{log}");
    })
    .await;
}
