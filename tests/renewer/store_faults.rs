//! The renewer when its own store fails, against a real Pebble that really
//! validates HTTP-01: a failure of the store (saving or loading the ACME
//! account, storing the issued certificate) is never an attempt of the
//! domain nor a failed validation of its name, and a cycle whose store
//! keeps failing stops ordering and says why; a keyring that cannot open
//! the stored account is a wrong setting, not an attempt either. The store
//! is a fault double over the memory store (tests/renewer/fault_store.rs).

use crate::common;
use crate::fault_store::FaultStore;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use certkeeper::challenge::Http01Solver;
use certkeeper::events::{Event, Subscription};
use certkeeper::renewer::SkipReason;
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{Domain, Renewer};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions};
use common::{domain, keyring, limited};

const TEST_LIMIT: StdDuration = StdDuration::from_secs(240);
const KEY: &str = "renewer-store-faults-test-key-0123456789";

/// Pebble, its HTTP-01 listener, and a renewer (one order at a time) over a
/// fault store, its ACME issuer keeping the account in that store.
struct Stage {
    _pebble: Pebble,
    _listener: certkeeper::challenge::Http01Server,
    store: Arc<FaultStore>,
    renewer: Renewer,
}

async fn stage(main: &Domain) -> Stage {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let solver = Http01Solver::new();
    let listener = serve_http01(&solver, &pebble).await;
    let store = FaultStore::new(MemoryStore::new());
    let keyring = keyring(KEY);
    let issuer = pebble_issuer(
        &pebble,
        Arc::new(solver.clone()),
        store.clone(),
        keyring.clone(),
    )
    .request_timeout(StdDuration::from_secs(30))
    .order_timeout(StdDuration::from_secs(120))
    .build()
    .unwrap();
    let renewer = Renewer::builder(store.clone(), keyring)
        .acme(Arc::new(issuer))
        .main_domain(Some(main.clone()))
        .concurrency(1)
        .build();
    Stage {
        _pebble: pebble,
        _listener: listener,
        store,
        renewer,
    }
}

fn drain(events: &mut Subscription) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv()).collect()
}

/// The attempts stored for each domain.
async fn attempts(store: &FaultStore) -> Vec<(Domain, u32)> {
    let mut out = Vec::new();
    for domain in store.list().await.unwrap() {
        let record = store.load(&domain).await.unwrap().unwrap();
        out.push((domain, record.attempts));
    }
    out
}

#[tokio::test]
async fn a_store_that_keeps_failing_stops_the_cycle_and_charges_no_domain() {
    limited(TEST_LIMIT, async {
        // The metrics of this test's renewer: this thread's recorder (every
        // task of the test runs here, on `#[tokio::test]`'s runtime).
        #[cfg(feature = "metrics")]
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        #[cfg(feature = "metrics")]
        let _recorder = metrics::set_default_local_recorder(&recorder);
        let main = domain("www.store-faults-test.com");
        let s = stage(&main).await;
        for i in 0..5 {
            s.renewer
                .add_domain(&domain(&format!("s{i}.store-faults-test.com")))
                .await
                .unwrap();
        }
        let mut events = s.renewer.subscribe(256);
        // The ACME account can be registered but not stored: every order
        // fails on the store.
        s.store.faults.save_account.store(true, Ordering::SeqCst);
        let report = s.renewer.run_cycle().await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.deferred.len(), 3, "{report}");
        assert!(
            report.deferred.iter().all(|f| f.error.code() == "store"),
            "{report:?}"
        );
        assert_eq!(
            report.stopped.map(SkipReason::code),
            Some("store_unavailable"),
            "{report}"
        );
        assert!(report.to_string().contains("store"), "{report}");
        // The main domain and the five others: three tried, the rest left.
        assert_eq!(report.skipped.len(), 3, "{report}");
        for (domain, attempts) in attempts(&s.store).await {
            assert_eq!(attempts, 0, "{domain} was charged an attempt");
        }
        let taken = s.store.fault_cluster().budgets_taken();
        assert!(
            !taken.iter().any(|k| k.starts_with("failed-validations")),
            "a failed validation was counted: {taken:?}"
        );
        let events = drain(&mut events);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::Failed { .. } | Event::GaveUp { .. })),
            "{events:?}"
        );
        let finished = events
            .iter()
            .find_map(|e| match e {
                Event::CycleFinished { report, .. } => Some(report.clone()),
                _ => None,
            })
            .expect("the cycle's event");
        assert_eq!(finished.stopped, report.stopped);
        #[cfg(feature = "metrics")]
        {
            let handle = recorder.handle();
            let started = std::time::Instant::now();
            let stopped = "certkeeper_cycles_stopped_total{reason=\"store_unavailable\"} 1";
            while !handle.render().contains(stopped) {
                assert!(
                    started.elapsed() < StdDuration::from_secs(20),
                    "{}",
                    handle.render()
                );
                tokio::time::sleep(StdDuration::from_millis(50)).await;
            }
            let body = handle.render();
            assert!(
                body.contains("certkeeper_deferred_total{code=\"store\"} 3"),
                "{body}"
            );
            assert!(!body.contains("certkeeper_failed_attempts_total"), "{body}");
        }

        // Five more cycles of a failing store give up on nothing; the store
        // back, everything issues.
        for _ in 0..5 {
            s.renewer.run_cycle().await.unwrap();
        }
        for (domain, attempts) in attempts(&s.store).await {
            assert_eq!(attempts, 0, "{domain} was charged an attempt");
        }
        s.store.faults.save_account.store(false, Ordering::SeqCst);
        let report = s.renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued.len(), 6, "{report:?}");
        assert_eq!(report.stopped, None);
    })
    .await;
}

#[tokio::test]
async fn an_account_or_certificate_the_store_failed_to_keep_is_not_an_attempt() {
    limited(TEST_LIMIT, async {
        let name = domain("app.store-faults-test.com");
        let s = stage(&name).await;
        s.renewer.add_domain(&name).await.unwrap();
        let mut events = s.renewer.subscribe(256);

        // The stored account cannot be read: manual generation fails with
        // the store's error, and the record keeps its attempts.
        s.store.faults.load_account.store(true, Ordering::SeqCst);
        let err = s.renewer.issue_now(Some(&name)).await.unwrap_err();
        assert_eq!(err.code(), "store", "{err}");
        let record = s.store.load(&name).await.unwrap().unwrap();
        assert_eq!(record.attempts, 0, "{:?}", record.log_lines());
        assert!(
            record.log_lines()[0].contains("not counted as an attempt"),
            "{:?}",
            record.log_lines()
        );
        s.store.faults.load_account.store(false, Ordering::SeqCst);

        // The CA issues, but storing the certificate fails three times in a
        // row: the renewer keeps the certificate and tries again (0.5, 1,
        // 2 s later), so the name is issued in this cycle, with one order.
        s.store.faults.save_times.store(3, Ordering::SeqCst);
        let report = s.renewer.run_cycle().await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(report.deferred.is_empty(), "{report:?}");
        assert_eq!(report.issued, std::slice::from_ref(&name), "{report:?}");
        let record = s.store.load(&name).await.unwrap().unwrap();
        assert_eq!(record.attempts, 0);
        assert!(record.certificate.is_some());
        assert_eq!(s.store.faults.save_times.load(Ordering::SeqCst), 0);

        // The certificate of a custom domain is stored, but the store's
        // answer is lost: the retry finds the renewer's own certificate
        // stored and counts it issued, without another save or order.
        let custom = domain("api.store-faults-test.com");
        s.renewer.add_domain(&custom).await.unwrap();
        s.store.faults.save_lost_times.store(1, Ordering::SeqCst);
        let report = s.renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued, std::slice::from_ref(&custom), "{report:?}");
        assert!(report.deferred.is_empty(), "{report:?}");
        assert_eq!(s.store.faults.save_lost_times.load(Ordering::SeqCst), 0);
        let record = s.store.load(&custom).await.unwrap().unwrap();
        assert!(record.certificate.is_some());
        assert_eq!(record.version, 2, "{:?}", record.log_lines());

        let taken = s.store.fault_cluster().budgets_taken();
        assert!(
            !taken.iter().any(|k| k.starts_with("failed-validations")),
            "a failed validation was counted: {taken:?}"
        );
        let events = drain(&mut events);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Failed { .. })),
            "{events:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_keyring_that_cannot_open_the_stored_account_is_a_setting_not_an_attempt() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let solver = Http01Solver::new();
        let _listener = serve_http01(&solver, &pebble).await;
        let store = Arc::new(MemoryStore::new());
        let renewer_with = |passphrase: &str| {
            let keyring = keyring(passphrase);
            let issuer = pebble_issuer(
                &pebble,
                Arc::new(solver.clone()),
                store.clone(),
                keyring.clone(),
            )
            .request_timeout(StdDuration::from_secs(30))
            .order_timeout(StdDuration::from_secs(120))
            .build()
            .unwrap();
            Renewer::builder(store.clone(), keyring)
                .acme(Arc::new(issuer))
                .concurrency(1)
                .build()
        };
        // The account is stored sealed under one key ...
        let first = domain("first.keyring-test.com");
        let before = renewer_with(KEY);
        before.add_domain(&first).await.unwrap();
        before.issue_now(Some(&first)).await.unwrap();
        // ... and the server restarts with another (a key changed without
        // rotation): no order can be signed, through no fault of a domain.
        let after = renewer_with(common::OTHER_TEST_KEY);
        let names: Vec<Domain> = (0..3)
            .map(|i| domain(&format!("k{i}.keyring-test.com")))
            .collect();
        for name in &names {
            after.add_domain(name).await.unwrap();
        }
        let report = after.run_cycle().await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.deferred.len(), 1, "{report}");
        assert_eq!(report.deferred[0].error.code(), "decrypt");
        assert_eq!(report.stopped, Some(SkipReason::Misconfigured), "{report}");
        for name in &names {
            let record = store.load(name).await.unwrap().unwrap();
            assert_eq!(record.attempts, 0, "{name}: {:?}", record.log_lines());
        }
    })
    .await;
}
