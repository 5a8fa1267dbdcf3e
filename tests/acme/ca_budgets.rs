//! The CA's budgets end to end: renewers issuing from a real Pebble that
//! really validates HTTP-01, keeping within an order budget that two
//! instances share through their store, and leaving a name that keeps
//! failing validation alone once its failed-validation budget is spent.
//! Time is a `TestClock`, so the windows slide without waiting.

use crate::common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use certkeeper::challenge::{Http01Server, Http01Solver};
use certkeeper::error::SkipReason;
use certkeeper::issuer::CaBudgets;
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{Clock, RenewalPolicy, Renewer, TestClock};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions, PebbleVersion};
use common::{clock_at_now, domain, keyring, limited, TEST_KEY};
use time::Duration;

const TEST_LIMIT: StdDuration = StdDuration::from_secs(180);

/// One instance: its own issuer (and budget counter) over the shared store.
fn instance(
    pebble: &Pebble,
    solver: &Http01Solver,
    store: Arc<MemoryStore>,
    clock: &TestClock,
    budgets: CaBudgets,
    main: &str,
) -> Renewer {
    let issuer = pebble_issuer(
        pebble,
        Arc::new(solver.clone()),
        store.clone(),
        keyring(TEST_KEY),
    )
    .budgets(budgets)
    .clock(Arc::new(clock.clone()))
    .request_timeout(StdDuration::from_secs(30))
    .order_timeout(StdDuration::from_secs(120))
    .build()
    .unwrap();
    Renewer::builder(store, keyring(TEST_KEY))
        .acme(Arc::new(issuer))
        .main_domain(Some(domain(main)))
        .clock(Arc::new(clock.clone()))
        // A failed name is due again a minute later, so that the tests can
        // walk a budget's window cycle by cycle.
        .renewal_policy(RenewalPolicy {
            retry_spacing: Duration::minutes(1),
            ..RenewalPolicy::default()
        })
        .build()
}

/// A Pebble with `options`, an HTTP-01 solver on its port, and a store
/// whose clock (which the budgets follow) is the returned test clock.
async fn stage(
    options: PebbleOptions,
) -> (
    Pebble,
    Http01Solver,
    Http01Server,
    TestClock,
    Arc<MemoryStore>,
) {
    let pebble = Pebble::start(options).await;
    let solver = Http01Solver::new();
    let listener = serve_http01(&solver, &pebble).await;
    let clock = clock_at_now();
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    (pebble, solver, listener, clock, store)
}

#[tokio::test]
async fn instances_sharing_a_store_share_the_order_budget_and_leave_the_rest_for_later() {
    limited(TEST_LIMIT, async {
        let (pebble, solver, _listener, clock, store) = stage(PebbleOptions {
            nonce_reject_percent: 20,
            ..PebbleOptions::default()
        })
        .await;
        let budgets = CaBudgets {
            orders: 2,
            ..CaBudgets::default()
        };
        let main = "www.certkeeper-test.com";
        let a = instance(&pebble, &solver, store.clone(), &clock, budgets, main);
        let b = instance(&pebble, &solver, store.clone(), &clock, budgets, main);
        for name in [main, "api.certkeeper-test.com", "shop.certkeeper-test.com"] {
            a.add_domain(&domain(name)).await.unwrap();
        }

        let report = a.run_cycle().await.unwrap();
        assert_eq!(report.issued.len(), 2, "{report:?}");
        assert_eq!(report.stopped, Some(SkipReason::OrderBudget), "{report:?}");
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        let (left, reason) = report.skipped[0].clone();
        assert_eq!(reason, SkipReason::OrderBudget);
        // Left for later, not a failed attempt: the record is as it was.
        let record = store.load(&left).await.unwrap().unwrap();
        assert_eq!(record.attempts, 0);
        assert!(record.certificate.is_none());
        let orders = || pebble.log("pebble").matches("Added order").count();
        assert_eq!(orders(), 2);

        // The other instance counts from the same store: nothing left now.
        clock.advance(Duration::hours(1));
        let report = b.run_cycle().await.unwrap();
        assert!(report.issued.is_empty(), "{report:?}");
        assert_eq!(
            report.skipped,
            vec![(left.clone(), SkipReason::OrderBudget)]
        );
        assert_eq!(orders(), 2, "no order was sent over the budget");

        // Three hours after the first orders, the window has room again.
        clock.advance(Duration::hours(2));
        let report = b.run_cycle().await.unwrap();
        assert_eq!(report.issued, vec![left.clone()], "{report:?}");
        assert_eq!(orders(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_name_that_keeps_failing_validation_waits_once_its_budget_is_spent() {
    limited(TEST_LIMIT, async {
        // No A record anywhere: every validation fails (the name's fault).
        let (pebble, solver, _listener, clock, store) = stage(PebbleOptions {
            dns_ipv4: None,
            ..PebbleOptions::default()
        })
        .await;
        // Failed orders issue nothing: they use none of the registered
        // domain's budget of 1 (only issued certificates count).
        let budgets = CaBudgets {
            failed_validations: 2,
            certificates_per_registered_domain: 1,
            ..CaBudgets::default()
        };
        let main = "www.certkeeper-test.com";
        let renewer = instance(&pebble, &solver, store.clone(), &clock, budgets, main);
        renewer.add_domain(&domain(main)).await.unwrap();
        let orders = || pebble.log("pebble").matches("Added order").count();

        for attempt in 1..=2 {
            let report = renewer.run_cycle().await.unwrap();
            assert_eq!(report.failed.len(), 1, "{report:?}");
            let record = store.load(&domain(main)).await.unwrap().unwrap();
            assert_eq!(record.attempts, attempt);
            clock.advance(Duration::minutes(1));
        }
        assert_eq!(orders(), 2);

        // The budget is spent: no order, no attempt counted, the reason reported.
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(
            report.skipped,
            vec![(domain(main), SkipReason::FailedValidationBudget)],
            "{report:?}"
        );
        assert_eq!(
            report.stopped, None,
            "one name's budget does not stop the cycle"
        );
        assert_eq!(
            store.load(&domain(main)).await.unwrap().unwrap().attempts,
            2
        );
        assert_eq!(orders(), 2);

        // An hour after the first failure, the name is tried again.
        clock.advance(Duration::minutes(58));
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.failed.len(), 1, "{report:?}");
        assert_eq!(orders(), 3);
    })
    .await;
}

#[tokio::test]
async fn new_names_under_a_spent_registered_domain_wait_without_attempts_while_renewals_go_through()
{
    limited(TEST_LIMIT, async {
        let (pebble, solver, _listener, clock, store) = stage(PebbleOptions::default()).await;
        let budgets = CaBudgets {
            certificates_per_registered_domain: 3,
            duplicate_certificates: 2,
            ..CaBudgets::default()
        };
        let main = "www.certkeeper-test.com";
        let renewer = instance(&pebble, &solver, store.clone(), &clock, budgets, main);
        // Six names under one registered domain, two under another.
        let onboarded: Vec<String> = (0..5)
            .map(|i| format!("shop{i}.certkeeper-test.com"))
            .chain(["a.other-test.co.uk".into(), "b.other-test.co.uk".into()])
            .collect();
        renewer.add_domain(&domain(main)).await.unwrap();
        for name in &onboarded {
            renewer.add_domain(&domain(name)).await.unwrap();
        }
        let orders = || pebble.log("pebble").matches("Added order").count();

        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(
            report.stopped, None,
            "one domain's budget does not stop the cycle"
        );
        assert_eq!(report.issued.len(), 5, "{report:?}");
        let waiting: Vec<_> = report
            .skipped
            .iter()
            .filter(|(_, why)| *why == SkipReason::RegisteredDomainBudget)
            .map(|(d, _)| d.clone())
            .collect();
        assert_eq!(waiting.len(), 3, "{report:?}");
        assert!(report.failed.is_empty(), "{report:?}");
        // Both names of the other registered domain were issued.
        for name in ["a.other-test.co.uk", "b.other-test.co.uk"] {
            assert!(report.issued.contains(&domain(name)), "{report:?}");
        }
        assert_eq!(orders(), 5, "nothing was ordered over the budget");
        // Not an attempt; the name waits about as long as a unit takes to
        // free up (7 days over 3), so passes meanwhile do not pick it.
        for name in &waiting {
            let record = store.load(name).await.unwrap().unwrap();
            assert_eq!(record.attempts, 0);
            assert!(record.certificate.is_none());
            let wait = record.renew_date - clock.now();
            assert!(
                (Duration::hours(55)..=Duration::hours(57)).contains(&wait),
                "{wait}"
            );
        }
        clock.advance(Duration::days(1));
        let report = renewer.run_cycle().await.unwrap();
        assert!(
            report.issued.is_empty() && report.skipped.is_empty(),
            "{report:?}"
        );

        // A renewal is exempt: manual generation renews an issued name of
        // the spent domain at once (it counts as its first duplicate).
        let renewed = report_issued_name(&store, "certkeeper-test.com").await;
        let before = store.load(&renewed).await.unwrap().unwrap();
        let after = renewer.issue_now(Some(&renewed)).await.unwrap();
        assert_ne!(
            after.certificate.as_ref().unwrap().fingerprint,
            before.certificate.as_ref().unwrap().fingerprint
        );
        assert_eq!(orders(), 6);
        // Without ARI (Debian's Pebble has none), renewals count as
        // duplicates: the first certificate and one renewal spend 2.
        let err = renewer.issue_now(Some(&renewed)).await.unwrap_err();
        assert!(
            matches!(
                &err,
                certkeeper::Error::InProgress {
                    reason: SkipReason::DuplicateBudget,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(orders(), 6);

        // A week after the first certificates, the waiting names are issued.
        clock.advance(Duration::days(6));
        let report = renewer.run_cycle().await.unwrap();
        for name in &waiting {
            assert!(report.issued.contains(name), "{report:?}");
        }
        assert_eq!(orders(), 9);
    })
    .await;
}

/// An issued name under `registered` in the store.
async fn report_issued_name(store: &MemoryStore, registered: &str) -> certkeeper::Domain {
    for i in 0..5 {
        let name = domain(&format!("shop{i}.{registered}"));
        if let Some(record) = store.load(&name).await.unwrap() {
            if record.certificate.is_some() {
                return name;
            }
        }
    }
    let main = domain(&format!("www.{registered}"));
    assert!(store
        .load(&main)
        .await
        .unwrap()
        .unwrap()
        .certificate
        .is_some());
    main
}

#[tokio::test]
async fn renewals_sent_with_replaces_are_exempt_from_the_duplicate_budget() {
    limited(TEST_LIMIT, async {
        let (pebble, solver, _listener, clock, store) = stage(PebbleOptions {
            version: PebbleVersion::V2_10,
            ..PebbleOptions::default()
        })
        .await;
        let budgets = CaBudgets {
            duplicate_certificates: 1,
            ..CaBudgets::default()
        };
        let main = "www.certkeeper-test.com";
        let renewer = instance(&pebble, &solver, store.clone(), &clock, budgets, main);
        renewer.add_domain(&domain(main)).await.unwrap();
        let first = renewer.issue_now(Some(&domain(main))).await.unwrap();
        // Renewals name the certificate they replace (ARI): not duplicates.
        let mut last = first.certificate.unwrap().fingerprint;
        for _ in 0..2 {
            let renewed = renewer.issue_now(Some(&domain(main))).await.unwrap();
            let fingerprint = renewed.certificate.unwrap().fingerprint;
            assert_ne!(fingerprint, last);
            last = fingerprint;
        }
        let log = pebble.log("pebble");
        assert_eq!(log.matches("Added order").count(), 3, "{log}");
    })
    .await;
}

#[tokio::test]
async fn onboarding_200_custom_domains_under_one_registered_domain_burns_no_attempt() {
    limited(TEST_LIMIT, async {
        let (pebble, solver, _listener, clock, store) = stage(PebbleOptions::default()).await;
        // Let's Encrypt's limits: 50 new certificates per registered domain.
        let main = "www.certkeeper-test.com";
        let renewer = instance(
            &pebble,
            &solver,
            store.clone(),
            &clock,
            CaBudgets::default(),
            main,
        );
        renewer.add_domain(&domain(main)).await.unwrap();
        for i in 0..200 {
            renewer
                .add_domain(&domain(&format!("customer{i:03}.certkeeper-test.com")))
                .await
                .unwrap();
        }
        let orders = || pebble.log("pebble").matches("Added order").count();

        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued.len(), 50, "{report}");
        assert!(
            report.failed.is_empty() && report.deferred.is_empty(),
            "{report}"
        );
        assert_eq!(report.stopped, None, "{report}");
        let waiting = |report: &certkeeper::CycleReport| {
            report
                .skipped
                .iter()
                .filter(|(_, why)| *why == SkipReason::RegisteredDomainBudget)
                .count()
        };
        // 201 names, 200 a cycle: one left for the next cycle.
        assert_eq!(waiting(&report), 150, "{report}");
        assert_eq!(report.left_for_later.total, 1, "{report}");
        assert_eq!(orders(), 50, "nothing was ordered over the budget");

        // A day later the budget is still spent: nothing ordered, and no
        // name has an attempt charged.
        clock.advance(Duration::days(1));
        let report = renewer.run_cycle().await.unwrap();
        assert!(report.issued.is_empty(), "{report}");
        assert_eq!(waiting(&report), 151, "{report}");
        assert_eq!(orders(), 50);
        for i in 0..200 {
            let name = domain(&format!("customer{i:03}.certkeeper-test.com"));
            assert_eq!(
                store.load(&name).await.unwrap().unwrap().attempts,
                0,
                "{name}"
            );
        }
    })
    .await;
}
