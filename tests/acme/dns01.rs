//! DNS-01 for real: the `Dns01Solver` sends RFC 2136 updates signed with
//! TSIG to a bind9 (`named`) started by the test, and Pebble resolves every
//! name through that same bind9, so it validates the TXT records the solver
//! published.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper::challenge::{
    Challenge, ChallengeKind, ChallengeSolver, Dns01Solver, TsigAlgorithm,
};
use certkeeper::error::DnsProblem;
use certkeeper::issuer::{AcmeIssuer, IssuerExt};
use certkeeper::Error;
use common::acme::{memory_issuer, pebble_issuer};
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
    memory_issuer(pebble, Arc::new(solver))
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
        assert_eq!(
            issuer.challenge_for(&domain("www.example.test")),
            ChallengeKind::Dns01
        );

        // Both orders publish at `_acme-challenge.example.test` at once:
        // each adds and removes only its own value.
        let wildcard = domain("*.example.test");
        let bare = domain(ZONE);
        let (wild_cert, bare_cert) =
            tokio::join!(issuer.issue_for(&wildcard), issuer.issue_for(&bare));
        let (wild_cert, bare_cert) = (
            wild_cert.unwrap_or_else(|e| panic!("wildcard: {e}\n{}", pebble.logs())),
            bare_cert.unwrap_or_else(|e| panic!("bare name: {e}\n{}", pebble.logs())),
        );
        // Pebble's only DNS server is bind9, where the solver published.
        let pebble_log = pebble.log("pebble");
        assert!(
            pebble_log.contains(&format!(
                "custom DNS resolver for ACME challenges: {}",
                bind.addr()
            )),
            "{pebble_log}"
        );
        let log = bind.log();
        assert_eq!(
            log.matches("adding an RR at '_acme-challenge.example.test' TXT")
                .count(),
            2,
            "{log}"
        );

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
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
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
        // A settings error (no attempt charged), naming what to fix.
        assert!(err.is_settings_error());
        assert!(
            err.to_string().contains("Dns01SolverBuilder::tsig_key"),
            "{err}"
        );
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
            .issue_for(&domain("www.example.test"))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                &err,
                Error::Dns {
                    problem: DnsProblem::NotAuthenticated,
                    ..
                }
            ),
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
            .issue_for(&domain("www.example.test"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Acme {
                    step: "validation",
                    ..
                }
            ),
            "{err:?}"
        );
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

/// The renewer holds `*.certkeeper-test.com` and serves it for any one
/// label under it, issued through DNS-01, while the main domain goes
/// through HTTP-01: one issuer, one solver per challenge type, picked per
/// name. Stored on the file store (a `*` in a file name) and served again
/// after a restart.
#[tokio::test]
async fn the_renewer_issues_a_wildcard_through_dns01_and_other_names_through_http01() {
    use certkeeper::challenge::Http01Solver;
    use certkeeper::store::{CertStore, FileStore};
    use certkeeper::{CertResolver, Renewer};

    limited(TEST_LIMIT, async {
        let zone = "certkeeper-test.com";
        let bind = Bind9::start(&[zone]).await;
        let pebble = Pebble::start(PebbleOptions {
            dns_server: Some(bind.addr()),
            ..PebbleOptions::default()
        })
        .await;
        let http01 = Http01Solver::new();
        let _listener = common::acme::serve_http01(&http01, &pebble).await;
        let dns01 = Dns01Solver::builder(bind.addr(), zone)
            .tsig_key(TSIG_KEY_NAME, bind.secret(), TsigAlgorithm::HmacSha256)
            .propagation_timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cipher = keyring(TEST_KEY);
        let start = || async {
            let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
            let issuer = pebble_issuer(
                &pebble,
                Arc::new(dns01.clone()),
                store.clone(),
                cipher.clone(),
            )
            .solver(Arc::new(http01.clone()))
            .request_timeout(Duration::from_secs(30))
            .order_timeout(Duration::from_secs(120))
            .build()
            .unwrap();
            assert_eq!(
                issuer.challenge_for(&domain("www.certkeeper-test.com")),
                ChallengeKind::Http01
            );
            assert_eq!(
                issuer.challenge_for(&domain("*.certkeeper-test.com")),
                ChallengeKind::Dns01
            );
            let resolver = CertResolver::new();
            let renewer = Renewer::builder(store.clone(), cipher.clone())
                .acme(Arc::new(issuer))
                .main_domain(Some(domain(zone)))
                .resolver(resolver.clone())
                .build();
            renewer.load().await.unwrap();
            (store, resolver, renewer)
        };
        let (store, resolver, renewer) = start().await;
        let wildcard = domain("*.certkeeper-test.com");
        renewer.add_domain(&domain(zone)).await.unwrap();
        renewer.add_domain(&wildcard).await.unwrap();
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued.len(), 2, "{report:?}\n{}", pebble.logs());

        // Only the wildcard went through DNS-01: one TXT record, removed since.
        let log = bind.log();
        assert_eq!(log.matches("adding an RR").count(), 1, "{log}");
        assert!(
            log.contains("adding an RR at '_acme-challenge.certkeeper-test.com' TXT"),
            "{log}"
        );
        assert!(dns01
            .txt_values("_acme-challenge.certkeeper-test.com")
            .await
            .unwrap()
            .is_empty());

        let stored = store.load(&wildcard).await.unwrap().unwrap();
        let wildcard_fp = stored.certificate.as_ref().unwrap().fingerprint.clone();
        let main_fp = store
            .load(&domain(zone))
            .await
            .unwrap()
            .unwrap()
            .certificate
            .unwrap()
            .fingerprint;
        let roots = pebble.issuer_roots().await;
        let handshake = |resolver: CertResolver, name: &'static str| {
            let roots = roots.clone();
            async move { round_trip(resolver.server_config(&[]).unwrap(), roots, name).await }
        };
        assert_eq!(
            handshake(resolver.clone(), "foo.certkeeper-test.com").await,
            wildcard_fp
        );
        assert_eq!(
            handshake(resolver.clone(), "bar.certkeeper-test.com").await,
            wildcard_fp
        );
        assert_eq!(
            handshake(resolver.clone(), "certkeeper-test.com").await,
            main_fp
        );
        drop((store, resolver, renewer));

        // A restart reads the wildcard's record back from its file and serves it.
        let (_store, resolver, renewer) = start().await;
        // As `CertResolver::accept` does before a handshake: the resolver
        // loads stored certificates on first use.
        assert!(resolver.prepare(Some("baz.certkeeper-test.com")).await);
        assert_eq!(
            handshake(resolver, "baz.certkeeper-test.com").await,
            wildcard_fp
        );
        // Nothing is due: a second cycle orders nothing.
        let report = renewer.run_cycle().await.unwrap();
        assert!(
            report.issued.is_empty() && report.failed.is_empty(),
            "{report:?}"
        );
    })
    .await;
}
