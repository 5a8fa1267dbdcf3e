//! DNS-01 with the zone found by itself, CNAME delegation, and publishing
//! on every real DNS server the tests start, each with Pebble validating
//! through it: bind9 and Knot by RFC 2136 with TSIG, PowerDNS
//! Authoritative through its HTTP API (`dns-update`'s PowerDNS provider),
//! and a bind9 secondary that `present` waits for. Each issue prints how
//! long `present` took, from the update sent to the record answered by
//! every server checked (`eprintln`, shown with `--nocapture`).

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certkeeper::challenge::{
    Challenge, ChallengeKind, ChallengeSolver, Dns01Solver, DnsProvider, TsigAlgorithm,
};
use certkeeper::error::DnsProblem;
use certkeeper::issuer::{AcmeIssuer, IssuerExt};
use certkeeper::renewer::SkipReason;
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{async_trait, Error, Renewer};
use common::acme::{memory_issuer, pebble_issuer, pebble_through};
use common::bind9::{Bind9, BindZone, TSIG_KEY_NAME};
use common::knot::Knot;
use common::pebble::{Pebble, PebbleOptions};
use common::powerdns::PowerDns;
use common::tls::verify_chain;
use common::{domain, keyring, limited, TEST_KEY};

const TEST_LIMIT: Duration = Duration::from_secs(180);
const ZONE: &str = "example.test";

/// A solver that times each `present`: the update, then the wait until
/// the servers answer with the record.
#[derive(Debug)]
struct Timed {
    solver: Dns01Solver,
    presents: Mutex<Vec<Duration>>,
}

impl Timed {
    fn new(solver: Dns01Solver) -> Arc<Self> {
        Arc::new(Self {
            solver,
            presents: Mutex::new(Vec::new()),
        })
    }

    /// Prints and returns the times `present` took.
    fn report(&self, server: &str) -> Vec<Duration> {
        let presents = self.presents.lock().unwrap().clone();
        eprintln!(
            "{server}: present (update sent until the record is answered) took {:?}",
            presents
        );
        presents
    }
}

#[async_trait]
impl ChallengeSolver for Timed {
    fn kind(&self) -> ChallengeKind {
        ChallengeKind::Dns01
    }

    async fn present(&self, challenge: &Challenge) -> certkeeper::Result<()> {
        let started = Instant::now();
        let presented = self.solver.present(challenge).await;
        self.presents.lock().unwrap().push(started.elapsed());
        presented
    }

    async fn cleanup(&self, challenge: &Challenge) -> certkeeper::Result<()> {
        self.solver.cleanup(challenge).await
    }
}

fn issuer(pebble: &Pebble, solver: Arc<dyn ChallengeSolver>) -> AcmeIssuer {
    memory_issuer(pebble, solver)
}

/// An RFC 2136 solver for `server` with no zone set.
fn rfc2136(server: SocketAddr, secret: &str) -> Dns01Solver {
    Dns01Solver::rfc2136(server)
        .tsig_key(TSIG_KEY_NAME, secret, TsigAlgorithm::HmacSha256)
        .request_timeout(Duration::from_secs(5))
        .propagation_timeout(Duration::from_secs(20))
        .build()
        .expect("valid solver settings")
}

/// A PowerDNS API solver; the server itself answers for the zones and
/// the record (its NS records name port 53, where nothing listens here).
fn pdns(server: &PowerDns, api_key: &str) -> Dns01Solver {
    Dns01Solver::provider(DnsProvider::pdns(server.api_url(), api_key))
        .resolver(server.addr())
        .nameservers([server.addr()])
        .request_timeout(Duration::from_secs(5))
        .propagation_timeout(Duration::from_secs(20))
        .build()
        .expect("valid solver settings")
}

fn challenge(name: &str, value: &str) -> Challenge {
    Challenge {
        domain: domain(name),
        token: "token".into(),
        key_authorization: "token.thumbprint".into(),
        dns_value: value.into(),
    }
}

/// Issues `names` at once through `solver`, checks each chain, and
/// returns the times `present` took.
async fn issue_together(
    pebble: &Pebble,
    solver: Arc<Timed>,
    names: &[&str],
    server: &str,
) -> Vec<Duration> {
    let issuer = Arc::new(issuer(pebble, solver.clone()));
    let mut orders = tokio::task::JoinSet::new();
    for name in names {
        let (issuer, name) = (issuer.clone(), name.to_string());
        orders.spawn(async move {
            let issued = issuer.issue_for(&domain(&name)).await;
            (name, issued)
        });
    }
    let roots = pebble.issuer_roots().await;
    while let Some(joined) = orders.join_next().await {
        let (name, cert) = joined.expect("the order's task ended");
        let cert = cert.unwrap_or_else(|e| panic!("{name}: {e}\n{}", pebble.logs()));
        verify_chain(&cert.chain_pem, roots.clone(), &name.replace('*', "foo"));
    }
    let presents = solver.report(server);
    assert_eq!(presents.len(), names.len(), "{presents:?}");
    presents
}

/// An order for `www.example.test` whose validation fails (Pebble asks its
/// own challtestsrv, which never sees the record): the solver published
/// the record, and removed it after.
async fn fails_validation_and_cleans_up(solver: &Dns01Solver, server: &str) {
    let blind = Pebble::start(PebbleOptions::default()).await;
    let timed = Timed::new(solver.clone());
    let err = issuer(&blind, timed.clone())
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
    assert_eq!(
        timed.report(&format!("{server} (failed validation)")).len(),
        1
    );
    assert!(solver
        .txt_values("_acme-challenge.www.example.test")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn one_rfc2136_solver_without_a_zone_serves_every_zone_of_the_server_on_bind9() {
    limited(TEST_LIMIT, async {
        let bind = Bind9::start(&[ZONE, "other.test"]).await;
        let pebble = pebble_through(bind.addr()).await;
        let solver = rfc2136(bind.addr(), bind.secret());
        assert_eq!(solver.zone(), None);
        // Found from the SOA in bind9's answers, for names at any depth.
        for (name, owner, zone) in [
            ("*.example.test", "_acme-challenge.example.test", ZONE),
            ("a.b.example.test", "_acme-challenge.a.b.example.test", ZONE),
            (
                "www.other.test",
                "_acme-challenge.www.other.test",
                "other.test",
            ),
        ] {
            assert_eq!(
                solver.record_location(&domain(name)).await.unwrap(),
                (owner.to_owned(), zone.to_owned()),
                "{name}"
            );
        }
        let err = solver
            .record_location(&domain("www.elsewhere.test"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Dns {
                    problem: DnsProblem::NotInZone,
                    ..
                }
            ),
            "{err:?}"
        );

        // A wildcard, its bare name and a name of the other zone at once.
        let timed = Timed::new(solver.clone());
        issue_together(
            &pebble,
            timed,
            &["*.example.test", ZONE, "www.other.test"],
            "bind9",
        )
        .await;
        let log = bind.log();
        assert_eq!(
            log.matches("adding an RR at '_acme-challenge.example.test' TXT")
                .count(),
            2,
            "{log}"
        );
        assert!(
            log.contains("adding an RR at '_acme-challenge.www.other.test' TXT"),
            "{log}"
        );
        for name in [
            "_acme-challenge.example.test",
            "_acme-challenge.www.other.test",
        ] {
            assert!(solver.txt_values(name).await.unwrap().is_empty(), "{name}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_cname_into_a_validation_zone_is_followed_on_bind9() {
    limited(TEST_LIMIT, async {
        // The key may update validation.test only; example.test delegates
        // its challenges there by CNAME, and holds a CNAME loop.
        let bind = Bind9::start_zones(&[
            BindZone {
                name: ZONE,
                records: &[
                    "_acme-challenge IN CNAME example-test.validation.test.",
                    "_acme-challenge.a IN CNAME _acme-challenge.b",
                    "_acme-challenge.b IN CNAME _acme-challenge.a",
                ],
                updatable: false,
            },
            BindZone::new("validation.test"),
        ])
        .await;
        // A recursive resolver in front, as a CA has: bind9 answers the
        // CNAME alone, the resolver follows it to the validation zone.
        let resolver = Bind9::start_resolver(bind.addr()).await;
        let pebble = pebble_through(resolver.addr()).await;
        let solver = Dns01Solver::rfc2136(bind.addr())
            .tsig_key(TSIG_KEY_NAME, bind.secret(), TsigAlgorithm::HmacSha256)
            .resolver(resolver.addr())
            .request_timeout(Duration::from_secs(5))
            .propagation_timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        // Through the resolver, or asking bind9 itself.
        let direct = rfc2136(bind.addr(), bind.secret());
        for solver in [&solver, &direct] {
            assert_eq!(
                solver
                    .record_location(&domain("*.example.test"))
                    .await
                    .unwrap(),
                (
                    "example-test.validation.test".to_owned(),
                    "validation.test".to_owned()
                )
            );
        }
        let started = Instant::now();
        let err = direct
            .record_location(&domain("a.example.test"))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(
                &err,
                Error::Dns {
                    problem: DnsProblem::NotInZone,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("loop"), "{err}");

        // Without the CNAME followed (the zone set by hand), example.test
        // refuses the key: the delegation is what makes issuing possible.
        let pinned = Dns01Solver::builder(bind.addr(), ZONE)
            .tsig_key(TSIG_KEY_NAME, bind.secret(), TsigAlgorithm::HmacSha256)
            .build()
            .unwrap();
        let err = pinned
            .present(&challenge("*.example.test", "never-published"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Dns {
                    problem: DnsProblem::Refused,
                    ..
                }
            ),
            "{err:?}"
        );

        issue_together(
            &pebble,
            Timed::new(solver.clone()),
            &["*.example.test", ZONE],
            "bind9 (CNAME)",
        )
        .await;
        let log = bind.log();
        assert_eq!(
            log.matches("adding an RR at 'example-test.validation.test' TXT")
                .count(),
            2,
            "{log}"
        );
        assert!(solver
            .txt_values("example-test.validation.test")
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn knot_takes_a_wildcard_and_its_bare_name_with_the_zone_found_and_cleans_up_a_failed_validation(
) {
    limited(TEST_LIMIT, async {
        let knot = Knot::start(&[ZONE]).await;
        let solver = rfc2136(knot.addr(), knot.secret());
        assert_eq!(
            solver
                .record_location(&domain("*.example.test"))
                .await
                .unwrap()
                .1,
            ZONE
        );
        let pebble = pebble_through(knot.addr()).await;
        issue_together(
            &pebble,
            Timed::new(solver.clone()),
            &["*.example.test", ZONE],
            "knot",
        )
        .await;
        assert!(solver
            .txt_values("_acme-challenge.example.test")
            .await
            .unwrap()
            .is_empty());

        fails_validation_and_cleans_up(&solver, "knot").await;
    })
    .await;
}

#[tokio::test]
async fn powerdns_takes_records_through_its_api_beside_the_values_already_there() {
    limited(TEST_LIMIT, async {
        let pdns_server = PowerDns::start(&[ZONE]).await;
        // A value someone else keeps at the shared name.
        let (status, answer) = pdns_server
            .api(
                "PATCH",
                "/api/v1/servers/localhost/zones/example.test.",
                Some(
                    r#"{"rrsets":[{"name":"_acme-challenge.example.test.","type":"TXT","ttl":60,"changetype":"REPLACE","records":[{"content":"\"keep-me\"","disabled":false}]}]}"#,
                ),
            )
            .await;
        assert_eq!(status, 204, "{answer}");
        let solver = pdns(&pdns_server, pdns_server.api_key());
        assert_eq!(solver.provider_name(), "pdns");
        assert_eq!(
            solver.record_location(&domain(ZONE)).await.unwrap(),
            ("_acme-challenge.example.test".to_owned(), ZONE.to_owned())
        );
        let pebble = pebble_through(pdns_server.addr()).await;
        issue_together(&pebble, Timed::new(solver.clone()), &["*.example.test", ZONE], "powerdns").await;
        assert_eq!(
            solver
                .txt_values("_acme-challenge.example.test")
                .await
                .unwrap(),
            vec!["keep-me".to_owned()]
        );

        fails_validation_and_cleans_up(&solver, "powerdns").await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_api_key_is_refused_at_once_as_a_settings_error_and_charges_no_attempt() {
    limited(TEST_LIMIT, async {
        // A name under a public suffix: the renewer orders it from the CA.
        let zone = "certkeeper-test.com";
        let pdns_server = PowerDns::start(&[zone]).await;
        let wrong = "wrong-api-key-0123456789";
        let solver = pdns(&pdns_server, wrong);
        let started = Instant::now();
        let err = solver
            .present(&challenge("www.certkeeper-test.com", "never-published"))
            .await
            .unwrap_err();
        let took = started.elapsed();
        eprintln!("powerdns: a wrong API key refused in {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
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
        assert!(err.is_settings_error());
        assert_eq!(err.code(), "dns_not_authenticated");
        // It names what to fix, and never the key.
        assert!(err.to_string().contains("DnsProvider::pdns"), "{err}");
        let shown = format!("{err} {err:?} {solver:?}");
        assert!(
            !shown.contains(wrong) && !shown.contains(pdns_server.api_key()),
            "{shown}"
        );

        // Through the renewer: no attempt counted, the cycle stops ordering.
        let pebble = pebble_through(pdns_server.addr()).await;
        let store = Arc::new(MemoryStore::new());
        let cipher = keyring(TEST_KEY);
        let issuer = pebble_issuer(&pebble, Arc::new(solver), store.clone(), cipher.clone())
            .request_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let renewer = Renewer::builder(store.clone(), cipher)
            .acme(Arc::new(issuer))
            .main_domain(Some(domain(zone)))
            .build();
        let wildcard = domain("*.certkeeper-test.com");
        renewer.add_domain(&wildcard).await.unwrap();
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(
            report.stopped,
            Some(SkipReason::Misconfigured),
            "{report:?}"
        );
        assert!(
            report.failed.is_empty() && report.issued.is_empty(),
            "{report:?}"
        );
        for name in [wildcard, domain(zone)] {
            let record = store.load(&name).await.unwrap().unwrap();
            assert_eq!(record.attempts, 0, "{name}");
        }
    })
    .await;
}

#[tokio::test]
async fn present_waits_until_a_secondary_answers_and_the_wait_is_measured() {
    limited(TEST_LIMIT, async {
        // The secondary gets each change by NOTIFY and IXFR, after the
        // primary's notify delay (BIND's default).
        let (primary, secondary) = Bind9::start_with_secondary(&[ZONE]).await;
        let solver = Dns01Solver::rfc2136(primary.addr())
            .tsig_key(TSIG_KEY_NAME, primary.secret(), TsigAlgorithm::HmacSha256)
            .nameservers([primary.addr(), secondary.addr()])
            .propagation_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        // Pebble asks the secondary only: had `present` returned before
        // the record reached it, validation would fail.
        let pebble = pebble_through(secondary.addr()).await;
        let presents = issue_together(
            &pebble,
            Timed::new(solver.clone()),
            &["*.example.test", ZONE],
            "bind9 primary and secondary",
        )
        .await;
        // The records reached it by a NOTIFY and a transfer.
        let log = secondary.log();
        assert!(
            log.contains("received notify for zone 'example.test'"),
            "{log}"
        );
        assert!(log.matches("transferred serial").count() >= 2, "{log}");
        // The primary answered at once; the wait was for the secondary.
        assert!(
            presents
                .iter()
                .all(|took| *took > Duration::from_millis(100)),
            "{presents:?}"
        );
        assert!(solver
            .txt_values("_acme-challenge.example.test")
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}
