//! The CA's budgets end to end: renewers issuing from a real Pebble that
//! really validates HTTP-01, keeping within an order budget that two
//! instances share through their store, and leaving a name that keeps
//! failing validation alone once its failed-validation budget is spent.
//! Time is a `TestClock`, so the windows slide without waiting.

use crate::common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use certkeeper::challenge::Http01Solver;
use certkeeper::error::SkipReason;
use certkeeper::issuer::CaBudgets;
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{RenewalPolicy, Renewer, TestClock};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions};
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

#[tokio::test]
async fn instances_sharing_a_store_share_the_order_budget_and_leave_the_rest_for_later() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions {
            nonce_reject_percent: 20,
            ..PebbleOptions::default()
        })
        .await;
        let solver = Http01Solver::new();
        let _listener = serve_http01(&solver, &pebble).await;
        let clock = clock_at_now();
        // The budgets follow the store's clock.
        let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
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
        let pebble = Pebble::start(PebbleOptions {
            dns_ipv4: None,
            ..PebbleOptions::default()
        })
        .await;
        let solver = Http01Solver::new();
        let _listener = serve_http01(&solver, &pebble).await;
        let clock = clock_at_now();
        // The budgets follow the store's clock.
        let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        let budgets = CaBudgets {
            failed_validations: 2,
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
