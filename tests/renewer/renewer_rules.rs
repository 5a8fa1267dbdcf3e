//! The maintenance cycle's rules, each checked with a settable clock: the
//! renew window, the cap per cycle, the attempt limit, manual generation and
//! the reset on success. The issuer here is a scripted one (real self-signed
//! certificates, or a failure on demand): these are unit tests of the rules;
//! tests/renewer/renewer_pebble.rs runs the same cycle against a real ACME CA.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use certkeeper::cert::IssuerKind;
use certkeeper::cipher::{Keyring, SecretCipher};
use certkeeper::error::AcmeProblem;
use certkeeper::issuer::{IssueRequest, Issued, Issuer, SelfSignedIssuer};
use certkeeper::renewer::SkipReason;
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::vault::cert_key_aad;
use certkeeper::{Clock, Domain, Error, RenewalPolicy, Renewer, TestClock};
use time::{Duration, OffsetDateTime};

/// Issues real self-signed certificates of a chosen lifetime, or fails, or hangs.
#[derive(Debug)]
struct ScriptedIssuer {
    inner: SelfSignedIssuer,
    /// When set, each issuance waits here for the others (to force races).
    meet: std::sync::OnceLock<Arc<tokio::sync::Barrier>>,
    fail: AtomicBool,
    /// Fails as a CA that cannot be reached does.
    ca_down: AtomicBool,
    /// Fails as a CA that rate limits does.
    rate_limited: AtomicBool,
    hang: AtomicBool,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl ScriptedIssuer {
    fn new(clock: Arc<dyn Clock>, lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: SelfSignedIssuer::with_clock(clock).validity(lifetime),
            meet: std::sync::OnceLock::new(),
            fail: AtomicBool::new(false),
            ca_down: AtomicBool::new(false),
            rate_limited: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Issuer for ScriptedIssuer {
    async fn issue(&self, request: &IssueRequest) -> certkeeper::Result<Issued> {
        let domain = &request.domain;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Let other tasks start, so the concurrency bound is really exercised.
        tokio::task::yield_now().await;
        if let Some(barrier) = self.meet.get() {
            barrier.wait().await;
        }
        tokio::time::sleep(StdDuration::from_millis(2)).await;
        let result = if self.hang.load(Ordering::SeqCst) {
            std::future::pending().await
        } else if self.ca_down.load(Ordering::SeqCst) {
            Err(Error::Acme {
                domain: Some(domain.clone()),
                step: "new-order",
                problem: None,
                message: "connection refused".into(),
                source: Some("connection refused".into()),
            })
        } else if self.fail.load(Ordering::SeqCst) || self.rate_limited.load(Ordering::SeqCst) {
            let (kind, detail, status) = if self.rate_limited.load(Ordering::SeqCst) {
                ("rateLimited", "too many certificates", 429)
            } else {
                (
                    "rejectedIdentifier",
                    "the CA will not issue for this name",
                    400,
                )
            };
            let problem = AcmeProblem {
                type_uri: Some(format!("urn:ietf:params:acme:error:{kind}")),
                detail: Some(detail.into()),
                status: Some(status),
                subproblems: Vec::new(),
            };
            Err(Error::Acme {
                domain: Some(domain.clone()),
                step: "new-order",
                message: problem.to_string(),
                problem: Some(Box::new(problem)),
                source: None,
            })
        } else {
            self.inner.issue_blocking(domain)
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(Issued::new(result?, self.kind()))
    }

    fn kind(&self) -> IssuerKind {
        IssuerKind::SELF_SIGNED
    }
}

struct Setup {
    clock: TestClock,
    store: Arc<MemoryStore>,
    cipher: Arc<Keyring>,
    issuer: Arc<ScriptedIssuer>,
    renewer: Renewer,
}

fn start() -> OffsetDateTime {
    // A whole second, as stored dates are compared at second precision.
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::from_keys(true, [(1, "renewer-rules-test-key-0123456789")]).unwrap())
}

/// A renewer builder in development mode over `store`, issuing through
/// `issuer`, on `clock`.
fn scripted(
    store: Arc<MemoryStore>,
    issuer: Arc<ScriptedIssuer>,
    clock: &TestClock,
) -> certkeeper::RenewerBuilder {
    Renewer::builder(store, keyring())
        .self_signed(issuer)
        .production(false)
        .clock(Arc::new(clock.clone()))
}

fn setup(lifetime: Duration, concurrency: usize) -> Setup {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::new());
    let cipher = keyring();
    let issuer = ScriptedIssuer::new(Arc::new(clock.clone()), lifetime);
    let renewer = Renewer::builder(store.clone(), cipher.clone())
        .self_signed(issuer.clone())
        .production(false)
        .clock(Arc::new(clock.clone()))
        .concurrency(concurrency)
        .main_domain(Some(Domain::new("main.example.com").unwrap()))
        .build();
    Setup {
        clock,
        store,
        cipher,
        issuer,
        renewer,
    }
}

fn d(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

#[test]
fn renew_date_is_thirty_days_before_expiry_but_at_most_a_third_of_the_lifetime() {
    let p = RenewalPolicy::default();
    let t = start();
    assert_eq!(
        p.renew_date(t, t + Duration::days(90)),
        t + Duration::days(60)
    );
    assert_eq!(
        p.renew_date(t, t + Duration::days(6)),
        t + Duration::days(4)
    );
    assert_eq!(
        p.renew_date(t, t + Duration::days(365)),
        t + Duration::days(335)
    );
    // A certificate that ends before it starts renews at once, never panics.
    assert_eq!(
        p.renew_date(t, t - Duration::days(1)),
        t - Duration::days(1)
    );
    // CAs end validity a second short of whole days (Let's Encrypt, Pebble):
    // such a 90-day certificate still renews exactly 30 days before expiry.
    let end = t + Duration::days(90) - Duration::seconds(1);
    assert_eq!(p.renew_date(t, end), end - Duration::days(30));
    // Renew dates are whole seconds.
    let odd = t + Duration::days(6) + Duration::seconds(1);
    assert_eq!(p.renew_date(t, odd).nanosecond(), 0);
}

#[tokio::test]
async fn renews_only_inside_the_window() {
    let s = setup(Duration::days(90), 4);
    let domain = d("main.example.com");
    s.renewer.add_domain(&domain).await.unwrap();
    let first = s.renewer.run_cycle().await.unwrap();
    assert_eq!(first.issued, vec![domain.clone()]);
    let record = s.store.load(&domain).await.unwrap().unwrap();
    let cert = record.certificate.clone().unwrap();
    assert_eq!(record.issue_date, Some(start()));
    assert_eq!(record.renew_date, cert.not_after - Duration::days(30));

    // One second before the window: nothing to do.
    s.clock.set(record.renew_date - Duration::seconds(1));
    let idle = s.renewer.run_cycle().await.unwrap();
    assert!(idle.issued.is_empty() && idle.failed.is_empty(), "{idle}");
    assert_eq!(s.issuer.calls.load(Ordering::SeqCst), 1);

    // Inside the window: renewed, with a new certificate and a later renew date.
    s.clock.set(record.renew_date);
    let renewed = s.renewer.run_cycle().await.unwrap();
    assert_eq!(renewed.issued, vec![domain.clone()]);
    let after = s.store.load(&domain).await.unwrap().unwrap();
    let new_cert = after.certificate.clone().unwrap();
    assert_ne!(new_cert.fingerprint, cert.fingerprint);
    assert_eq!(after.issue_date, Some(record.renew_date));
    assert_eq!(after.renew_date, new_cert.not_after - Duration::days(30));
    assert!(after.log.last().unwrap().success);
    assert_eq!(after.log.last().unwrap().step, "renew");
}

#[tokio::test]
async fn short_lived_certificates_renew_after_two_thirds_of_their_life() {
    let s = setup(Duration::days(6), 4);
    let domain = d("main.example.com");
    s.renewer.add_domain(&domain).await.unwrap();
    s.renewer.run_cycle().await.unwrap();
    let record = s.store.load(&domain).await.unwrap().unwrap();
    let cert = record.certificate.unwrap();
    // The window is a third of the lifetime (the self-signed issuer starts
    // validity a minute early, so the lifetime is 6 days and a minute).
    let lifetime = cert.not_after - cert.not_before;
    assert_eq!(record.renew_date, cert.not_after - lifetime / 3);
    assert_eq!(lifetime, Duration::days(6) + Duration::minutes(1));
    assert!(record.renew_date > start() + Duration::days(3));
    assert!(record.renew_date < cert.not_after - Duration::days(1));
    // The next daily cycle does not reissue it.
    s.clock.advance(Duration::days(1));
    assert!(s.renewer.run_cycle().await.unwrap().issued.is_empty());
}

#[tokio::test]
async fn one_cycle_issues_at_most_two_hundred_oldest_first() {
    let s = setup(Duration::days(90), 16);
    // 250 domains, registered one second apart: the first 200 are the oldest.
    let mut names = Vec::new();
    for i in 0..250 {
        let domain = d(&format!("site{i:03}.example.com"));
        s.renewer.add_domain(&domain).await.unwrap();
        names.push(domain);
        s.clock.advance(Duration::seconds(1));
    }
    let first = s.renewer.run_cycle().await.unwrap();
    assert_eq!(first.issued.len(), 200, "{first}");
    let mut expected: Vec<_> = names[..200].to_vec();
    expected.sort();
    assert_eq!(first.issued, expected);
    assert!(s.issuer.max_in_flight.load(Ordering::SeqCst) <= 16);

    // The main domain, registered by the first cycle (the newest record),
    // comes with the rest.
    let second = s.renewer.run_cycle().await.unwrap();
    assert_eq!(second.issued.len(), 51, "{second}");
    let mut expected = names[200..].to_vec();
    expected.push(d("main.example.com"));
    expected.sort();
    assert_eq!(second.issued, expected);
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let s = setup(Duration::days(90), 3);
    for i in 0..30 {
        s.renewer
            .add_domain(&d(&format!("c{i}.example.com")))
            .await
            .unwrap();
    }
    let report = s.renewer.run_cycle().await.unwrap();
    // The 30 custom domains and the main domain.
    assert_eq!(report.issued.len(), 31);
    let max = s.issuer.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=3).contains(&max), "max in flight {max}");
}

#[tokio::test]
async fn failures_count_and_stop_at_five_then_manual_generation_still_works() {
    let s = setup(Duration::days(90), 4);
    let domain = d("main.example.com");
    s.renewer.add_domain(&domain).await.unwrap();
    s.issuer.fail.store(true, Ordering::SeqCst);
    for attempt in 1..=5u32 {
        let report = s.renewer.run_cycle().await.unwrap();
        assert_eq!(report.failed.len(), 1, "cycle {attempt}: {report}");
        assert_eq!(
            report.failed[0].error.code(),
            "acme_rejected_identifier",
            "{report:?}"
        );
        let record = s.store.load(&domain).await.unwrap().unwrap();
        assert_eq!(record.attempts, attempt);
        // Tried again a day later; after the last attempt, nothing is.
        let retry = if attempt < 5 {
            Duration::days(1)
        } else {
            Duration::ZERO
        };
        assert_eq!(
            record.renew_date,
            s.clock.now() + retry,
            "a failure is due again next cycle, a day later"
        );
        s.clock.advance(Duration::days(1));
    }
    // Five failures: the cycle no longer picks it.
    let report = s.renewer.run_cycle().await.unwrap();
    assert!(
        report.failed.is_empty() && report.issued.is_empty(),
        "{report}"
    );
    assert_eq!(s.issuer.calls.load(Ordering::SeqCst), 5);
    let record = s.store.load(&domain).await.unwrap().unwrap();
    assert_eq!(record.log.iter().filter(|e| !e.success).count(), 5);
    assert!(
        record.log_lines()[0].contains("attempt 1"),
        "{:?}",
        record.log_lines()
    );

    // Manual generation ignores the limit; while the CA still fails it counts a sixth failure.
    let err = s.renewer.issue_now(Some(&domain)).await.unwrap_err();
    assert!(matches!(err, Error::Acme { .. }), "{err}");
    assert_eq!(s.store.load(&domain).await.unwrap().unwrap().attempts, 6);

    // Once the CA works, manual generation succeeds and resets the count.
    s.issuer.fail.store(false, Ordering::SeqCst);
    let record = s.renewer.issue_now(Some(&domain)).await.unwrap();
    assert_eq!(record.attempts, 0);
    assert_eq!(record.issue_date, Some(s.clock.now()));
    assert!(record.certificate.is_some());
    assert_eq!(record.log.last().unwrap().step, "manual");
    // Without a name, manual generation is for the main domain.
    let again = s.renewer.issue_now(None).await.unwrap();
    assert_eq!(again.domain, domain);
}

#[tokio::test]
async fn a_success_resets_attempts_and_keeps_the_old_certificate_until_then() {
    let s = setup(Duration::days(90), 4);
    let domain = d("main.example.com");
    s.renewer.add_domain(&domain).await.unwrap();
    s.renewer.run_cycle().await.unwrap();
    let issued = s.store.load(&domain).await.unwrap().unwrap();
    let old = issued.certificate.clone().unwrap();

    s.clock.set(issued.renew_date);
    s.issuer.fail.store(true, Ordering::SeqCst);
    s.renewer.run_cycle().await.unwrap();
    s.clock.advance(Duration::days(1));
    s.renewer.run_cycle().await.unwrap();
    let failing = s.store.load(&domain).await.unwrap().unwrap();
    assert_eq!(failing.attempts, 2);
    // The certificate in force is kept (and served) while renewals fail.
    assert_eq!(
        failing.certificate.as_ref().unwrap().fingerprint,
        old.fingerprint
    );

    s.issuer.fail.store(false, Ordering::SeqCst);
    s.clock.advance(Duration::days(1));
    let report = s.renewer.run_cycle().await.unwrap();
    assert_eq!(report.issued, vec![domain.clone()]);
    let ok = s.store.load(&domain).await.unwrap().unwrap();
    assert_eq!(ok.attempts, 0);
    assert_eq!(ok.issue_date, Some(s.clock.now()));
    assert_ne!(ok.certificate.unwrap().fingerprint, old.fingerprint);
}

#[tokio::test]
async fn a_hanging_issuer_is_deferred_not_an_attempt_and_the_cycle_finishes() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::new());
    let issuer = ScriptedIssuer::new(Arc::new(clock.clone()), Duration::days(90));
    issuer.hang.store(true, Ordering::SeqCst);
    let renewer = scripted(store.clone(), issuer.clone(), &clock)
        .issue_timeout(StdDuration::from_millis(200))
        .build();
    let a = d("a.example.com");
    let b = d("b.example.com");
    renewer.add_domain(&a).await.unwrap();
    renewer.add_domain(&b).await.unwrap();
    let report = renewer.run_cycle().await.unwrap();
    assert_eq!(report.deferred.len(), 2, "{report}");
    assert!(report.failed.is_empty(), "{report}");
    assert!(
        matches!(*report.deferred[0].error, Error::Timeout { .. }),
        "{report:?}"
    );
    // A CA that does not answer is not the domain's fault.
    let record = store.load(&a).await.unwrap().unwrap();
    assert_eq!(record.attempts, 0);
    assert!(record.log_lines()[0].contains("not counted as an attempt"));
}

#[tokio::test]
async fn a_ca_outage_stops_the_cycle_and_costs_no_attempts() {
    let s = setup(Duration::days(90), 1);
    for i in 0..10 {
        s.renewer
            .add_domain(&d(&format!("d{i}.example.com")))
            .await
            .unwrap();
    }
    s.issuer.ca_down.store(true, Ordering::SeqCst);
    let report = s.renewer.run_cycle().await.unwrap();
    // Three failures of the CA in a row stop the ordering.
    assert_eq!(report.deferred.len(), 3, "{report}");
    assert_eq!(report.stopped, Some(SkipReason::CaUnavailable), "{report}");
    assert_eq!(report.skipped.len(), 10 + 1 - 3, "{report}");
    assert!(
        report.failed.is_empty() && report.issued.is_empty(),
        "{report}"
    );
    assert_eq!(
        s.issuer.calls.load(Ordering::SeqCst),
        3,
        "no order after the third failure"
    );
    for domain in s.store.list().await.unwrap() {
        let record = s.store.load(&domain).await.unwrap().unwrap();
        assert_eq!(record.attempts, 0, "{domain}");
    }
    // Five cycles of outage give up nothing; the CA back, everything issues.
    for _ in 0..5 {
        s.clock.advance(Duration::days(1));
        s.renewer.run_cycle().await.unwrap();
    }
    s.issuer.ca_down.store(false, Ordering::SeqCst);
    s.clock.advance(Duration::days(1));
    let report = s.renewer.run_cycle().await.unwrap();
    assert_eq!(report.issued.len(), 11, "{report}");
}

#[tokio::test]
async fn a_rate_limit_stops_the_cycle_at_once_and_costs_no_attempt() {
    let s = setup(Duration::days(90), 1);
    for i in 0..5 {
        s.renewer
            .add_domain(&d(&format!("r{i}.example.com")))
            .await
            .unwrap();
    }
    s.issuer.rate_limited.store(true, Ordering::SeqCst);
    let report = s.renewer.run_cycle().await.unwrap();
    assert_eq!(report.deferred.len(), 1, "{report}");
    assert_eq!(report.deferred[0].error.code(), "acme_rate_limited");
    assert_eq!(report.stopped, Some(SkipReason::RateLimited), "{report}");
    assert_eq!(s.issuer.calls.load(Ordering::SeqCst), 1);
    let deferred = &report.deferred[0].domain;
    assert_eq!(s.store.load(deferred).await.unwrap().unwrap().attempts, 0);
}

#[tokio::test]
async fn private_keys_are_sealed_to_their_domain() {
    let s = setup(Duration::days(90), 4);
    let a = d("main.example.com");
    let b = d("other.example.com");
    s.renewer.add_domain(&a).await.unwrap();
    s.renewer.add_domain(&b).await.unwrap();
    s.renewer.run_cycle().await.unwrap();
    let rec_a = s.store.load(&a).await.unwrap().unwrap();
    let sealed = &rec_a.certificate.as_ref().unwrap().sealed_key;
    let key = s.cipher.open(sealed, &cert_key_aad(&a)).unwrap();
    assert!(std::str::from_utf8(&key)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    // The stored record holds no plaintext key.
    let stored = serde_json::to_string(&rec_a).unwrap();
    assert!(!stored.contains("PRIVATE KEY"));
    // Moved to another domain's record, the envelope does not open.
    assert!(matches!(
        s.cipher.open(sealed, &cert_key_aad(&b)),
        Err(Error::Decrypt)
    ));
    // And the renewer hands out the opened key for serving.
    let (cert, key2) = s.renewer.certificate(&a).await.unwrap().unwrap();
    assert_eq!(cert.fingerprint, rec_a.certificate.unwrap().fingerprint);
    assert_eq!(*key, *key2);
}

#[tokio::test]
async fn only_the_main_domain_and_custom_domains_get_certificates() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::new());
    let issuer = ScriptedIssuer::new(Arc::new(clock.clone()), Duration::days(90));
    // `_APP_DOMAIN` unset: the first domain seen becomes the main domain.
    let renewer = scripted(store.clone(), issuer.clone(), &clock).build();
    let stranger = d("stranger.example.net");
    let err = renewer.issue_now(Some(&stranger)).await.unwrap_err();
    assert!(matches!(err, Error::DomainNotAllowed { .. }), "{err}");
    // Built in code, the error names the builder's method, not a variable.
    match renewer.issue_now(None).await {
        Err(Error::Config { name, .. }) => assert_eq!(name, "RenewerBuilder::main_domain"),
        other => panic!("no main domain yet: {other:?}"),
    }

    // localhost is seen first but is never learned as the main domain.
    assert!(renewer.observe(&d("localhost")).await.unwrap());
    assert_eq!(renewer.policy().main_domain().await.unwrap(), None);
    // Nor is the server's public address, reached without a name.
    renewer.observe(&d("8.8.4.4")).await.unwrap();
    renewer.observe(&d("2a00:1450::1")).await.unwrap();
    assert_eq!(renewer.policy().main_domain().await.unwrap(), None);
    let first = d("console.example.org");
    assert!(renewer.observe(&first).await.unwrap());
    assert!(!renewer.observe(&stranger).await.unwrap());
    assert_eq!(
        renewer.policy().main_domain().await.unwrap(),
        Some(first.clone())
    );
    // The main domain is remembered in the store: a new renewer over it agrees.
    let again = Renewer::builder(store.clone(), keyring())
        .production(false)
        .build();
    assert_eq!(
        again.policy().main_domain().await.unwrap(),
        Some(first.clone())
    );

    let report = renewer.run_cycle().await.unwrap();
    assert_eq!(report.issued, vec![first.clone()]);
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);

    // A custom domain the operator adds is allowed; after removal it is not.
    let custom = d("shop.example.net");
    renewer.add_domain(&custom).await.unwrap();
    renewer.issue_now(Some(&custom)).await.unwrap();
    assert!(renewer.remove_domain(&custom).await.unwrap());
    assert!(store.load(&custom).await.unwrap().is_none());
    assert!(matches!(
        renewer.issue_now(Some(&custom)).await,
        Err(Error::DomainNotAllowed { .. })
    ));
}

#[tokio::test]
async fn a_domain_added_by_another_instance_sharing_the_store_is_issued() {
    let s = setup(Duration::days(90), 4);
    // A second instance over the same store, knowing nothing in memory.
    let other = scripted(s.store.clone(), s.issuer.clone(), &s.clock).build();
    let shop = d("shop.example.net");
    s.renewer.add_domain(&shop).await.unwrap();
    let report = other.run_cycle().await.unwrap();
    assert_eq!(report.issued, vec![shop.clone()], "{report:?}");
    assert_eq!(s.store.load(&shop).await.unwrap().unwrap().attempts, 0);
    // And it may be issued manually there too: it is a custom domain.
    other.issue_now(Some(&shop)).await.unwrap();
}

#[tokio::test]
async fn two_instances_racing_on_one_record_keep_one_certificate() {
    // A store without leases (one written for an older certkeeper, say):
    // both instances order, and compare-and-swap keeps one certificate.
    let s = setup(Duration::days(90), 4);
    let no_leases = Arc::new(NoLeases(s.store.clone()));
    let this = Renewer::builder(no_leases.clone(), keyring())
        .self_signed(s.issuer.clone())
        .production(false)
        .clock(Arc::new(s.clock.clone()))
        .build();
    let other = Renewer::builder(no_leases, keyring())
        .self_signed(s.issuer.clone())
        .production(false)
        .clock(Arc::new(s.clock.clone()))
        .build();
    let domain = d("main.example.com");
    this.add_domain(&domain).await.unwrap();
    // Both issue at the same moment; the second to store loses the
    // compare-and-swap, sees the other's certificate and keeps it.
    s.issuer
        .meet
        .set(Arc::new(tokio::sync::Barrier::new(2)))
        .unwrap();
    let (a, b) = tokio::join!(this.run_cycle(), other.run_cycle());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.issued.len() + b.issued.len(), 1, "{a:?} {b:?}");
    let skipped: Vec<_> = a.skipped.iter().chain(&b.skipped).collect();
    assert_eq!(skipped.len(), 1, "{a:?} {b:?}");
    assert_eq!(skipped[0].1, SkipReason::RenewedElsewhere, "{skipped:?}");
    let record = s.store.load(&domain).await.unwrap().unwrap();
    assert_eq!(record.version, 2, "created once, stored once");
    assert_eq!(record.attempts, 0);
    assert_eq!(record.log.len(), 1);
}

#[tokio::test]
async fn two_instances_sharing_a_store_with_leases_order_a_record_once() {
    let s = setup(Duration::days(90), 4);
    let other = scripted(s.store.clone(), s.issuer.clone(), &s.clock).build();
    let domain = d("main.example.com");
    s.renewer.add_domain(&domain).await.unwrap();
    let (a, b) = tokio::join!(s.renewer.run_cycle(), other.run_cycle());
    // One holds the cycle lease; the other is told so, or (if it came
    // second) finds nothing left to do.
    let issued: usize = [&a, &b]
        .iter()
        .map(|r| match r {
            Ok(report) => report.issued.len(),
            Err(Error::LeaseHeld { .. }) => 0,
            Err(e) => panic!("{e}"),
        })
        .sum();
    assert_eq!(issued, 1);
    assert_eq!(s.issuer.calls.load(Ordering::SeqCst), 1, "ordered once");
}

/// A store that one process uses alone: a `MemoryStore`'s records,
/// accounts and settings, and no cluster (the default).
#[derive(Debug)]
struct NoLeases(Arc<MemoryStore>);

#[async_trait]
impl CertStore for NoLeases {
    async fn load(
        &self,
        domain: &Domain,
    ) -> certkeeper::Result<Option<certkeeper::store::CertRecord>> {
        self.0.load(domain).await
    }
    async fn save(&self, record: &certkeeper::store::CertRecord) -> certkeeper::Result<u64> {
        self.0.save(record).await
    }
    async fn delete(&self, domain: &Domain) -> certkeeper::Result<bool> {
        self.0.delete(domain).await
    }
    async fn list(&self) -> certkeeper::Result<Vec<Domain>> {
        self.0.list().await
    }
    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> certkeeper::Result<Vec<certkeeper::store::DueEntry>> {
        self.0.due(now, max_attempts, limit).await
    }
    async fn load_account(
        &self,
        id: &str,
    ) -> certkeeper::Result<Option<certkeeper::store::AccountRecord>> {
        self.0.load_account(id).await
    }
    async fn save_account(
        &self,
        record: &certkeeper::store::AccountRecord,
    ) -> certkeeper::Result<u64> {
        self.0.save_account(record).await
    }
    async fn list_accounts(&self) -> certkeeper::Result<Vec<String>> {
        self.0.list_accounts().await
    }
    async fn get_meta(&self, key: &str) -> certkeeper::Result<Option<String>> {
        self.0.get_meta(key).await
    }
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> certkeeper::Result<String> {
        self.0.put_meta_if_absent(key, value).await
    }
    async fn at_attempt_limit(
        &self,
        max_attempts: u32,
        limit: usize,
    ) -> certkeeper::Result<certkeeper::store::PassedOver> {
        self.0.at_attempt_limit(max_attempts, limit).await
    }
    async fn delete_account(&self, id: &str) -> certkeeper::Result<bool> {
        self.0.delete_account(id).await
    }
    async fn set_meta(&self, key: &str, value: &str) -> certkeeper::Result<()> {
        self.0.set_meta(key, value).await
    }
    async fn delete_meta(&self, key: &str) -> certkeeper::Result<bool> {
        self.0.delete_meta(key).await
    }
}

#[tokio::test]
async fn overlapping_cycles_of_one_renewer_order_each_domain_once() {
    let s = setup(Duration::days(90), 1);
    for i in 0..3 {
        s.renewer
            .add_domain(&d(&format!("o{i}.example.com")))
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(s.renewer.run_cycle(), s.renewer.run_cycle());
    let (a, b) = (a.unwrap(), b.unwrap());
    // The three custom domains and the main domain, each once.
    assert_eq!(a.issued.len() + b.issued.len(), 4, "{a:?} {b:?}");
    assert_eq!(s.issuer.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn manual_generation_while_the_same_domain_is_being_issued_is_refused_clearly() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::new());
    let issuer = ScriptedIssuer::new(Arc::new(clock.clone()), Duration::days(90));
    issuer.hang.store(true, Ordering::SeqCst);
    let renewer = scripted(store.clone(), issuer.clone(), &clock)
        .issue_timeout(StdDuration::from_millis(500))
        .build();
    let domain = d("busy.example.com");
    renewer.add_domain(&domain).await.unwrap();
    let cycle = tokio::spawn({
        let renewer = renewer.clone();
        async move { renewer.run_cycle().await }
    });
    for _ in 0..1000 {
        if issuer.calls.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(1)).await;
    }
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        1,
        "the cycle started issuing"
    );
    let err = renewer.issue_now(Some(&domain)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InProgress {
                reason: SkipReason::AlreadyBeingIssued,
                ..
            }
        ),
        "{err}"
    );
    let report = cycle.await.unwrap().unwrap();
    // The hanging issuance times out: the CA's fault, not an attempt.
    assert_eq!(report.deferred.len(), 1, "{report}");
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1, "no second order");
}

#[tokio::test]
async fn a_public_name_in_production_without_an_acme_issuer_fails_naming_the_setting() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::new());
    let issuer = ScriptedIssuer::new(Arc::new(clock.clone()), Duration::days(90));
    let renewer = Renewer::builder(store.clone(), keyring())
        .self_signed(issuer.clone())
        .production(true)
        .clock(Arc::new(clock.clone()))
        .build();
    let public = d("shop.example.com");
    let local = d("localhost");
    renewer.add_domain(&public).await.unwrap();
    renewer.add_domain(&local).await.unwrap();
    let report = renewer.run_cycle().await.unwrap();
    // Local names still get self-signed certificates in production.
    assert_eq!(report.issued, vec![local], "{report:?}");
    // The missing setting is the operator's to fix: no attempt is charged
    // to the domain, and the cycle stops ordering until it is set.
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.deferred.len(), 1, "{report:?}");
    assert!(
        matches!(
            &*report.deferred[0].error,
            Error::Config { name, .. } if name == "RenewerBuilder::acme"
        ),
        "{report:?}"
    );
    assert_eq!(
        report.stopped,
        Some(SkipReason::Misconfigured),
        "{report:?}"
    );
    assert_eq!(store.load(&public).await.unwrap().unwrap().attempts, 0);
}

#[tokio::test]
async fn a_certificate_that_is_not_valid_now_never_replaces_a_working_one() {
    let s = setup(Duration::days(90), 4);
    let domain = d("main.example.com");
    s.renewer.add_domain(&domain).await.unwrap();
    s.renewer.run_cycle().await.unwrap();
    let good = s.store.load(&domain).await.unwrap().unwrap();

    // An issuer whose clock is 200 days behind hands out expired certificates.
    let behind = TestClock::new(start());
    let stale = ScriptedIssuer::new(Arc::new(behind.clone()), Duration::days(90));
    s.clock.set(good.renew_date);
    behind.set(good.renew_date - Duration::days(200));
    let renewer = scripted(s.store.clone(), stale, &s.clock).build();
    let report = renewer.run_cycle().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(
        matches!(
            &*report.failed[0].error,
            Error::Certificate {
                problem: certkeeper::error::CertProblem::NotValidNow { .. },
                ..
            }
        ),
        "{report:?}"
    );
    let after = s.store.load(&domain).await.unwrap().unwrap();
    assert_eq!(after.certificate, good.certificate);
    assert_eq!(after.attempts, 1);
}

#[test]
fn the_log_keeps_the_latest_entries_and_cuts_long_messages() {
    use certkeeper::store::{CertRecord, LogEntry, MAX_LOG_ENTRIES, MAX_LOG_MESSAGE};
    let mut record = CertRecord::new(d("log.example.com"), start());
    for i in 0..(MAX_LOG_ENTRIES + 8) {
        record.push_log(LogEntry {
            time: start(),
            step: "renew".into(),
            success: false,
            message: format!("attempt {i} {}", "é".repeat(3000)),
        });
    }
    assert_eq!(record.log.len(), MAX_LOG_ENTRIES);
    assert!(record.log[0].message.starts_with("attempt 8 "));
    assert!(record
        .log
        .iter()
        .all(|e| e.message.len() <= MAX_LOG_MESSAGE + 8));
    assert!(record.log[0].message.ends_with("[cut]"));
}

#[tokio::test]
async fn start_up_skips_a_damaged_record_and_serves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let good = d("good.test");
    let bad = d("bad.test");
    {
        let store = Arc::new(
            certkeeper::store::FileStore::open(dir.path())
                .await
                .unwrap(),
        );
        let renewer = Renewer::builder(store, keyring()).production(false).build();
        renewer.add_domain(&good).await.unwrap();
        renewer.add_domain(&bad).await.unwrap();
        assert_eq!(renewer.run_cycle().await.unwrap().issued.len(), 2);
    }
    std::fs::write(dir.path().join("certs").join("bad.test"), b"{ not json").unwrap();
    let store = Arc::new(
        certkeeper::store::FileStore::open(dir.path())
            .await
            .unwrap(),
    );
    let resolver = certkeeper::CertResolver::new();
    let renewer = Renewer::builder(store.clone(), keyring())
        .production(false)
        .resolver(resolver.clone())
        .build();
    // Start-up reads only the names: both are known.
    assert_eq!(renewer.load().await.unwrap(), 2);
    // The damaged record is found when its name is first served: it gets
    // the self-signed fallback, and the other name its own certificate.
    assert!(resolver.prepare(Some("good.test")).await);
    assert!(!resolver.prepare(Some("bad.test")).await);
    let stored = store.load(&good).await.unwrap().unwrap();
    let served = |name| {
        let key = resolver.lookup(Some(name)).unwrap();
        certkeeper::cert::fingerprint(key.end_entity_cert().unwrap())
    };
    assert_eq!(served("good.test"), stored.certificate.unwrap().fingerprint);
    assert_eq!(served("bad.test"), served("unknown.test"));
    assert_ne!(served("bad.test"), served("good.test"));
}

#[tokio::test]
async fn learning_the_main_domain_needs_a_public_name_and_wakes_the_cycle() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::new());
    let resolver = certkeeper::CertResolver::new();
    let renewer = Renewer::builder(store.clone(), keyring())
        .production(false)
        .clock(Arc::new(clock.clone()))
        .resolver(resolver.clone())
        .build();
    // Neither a local name nor a name without a public suffix is learned.
    for name in ["app.test", "intranet", "10.0.0.1"] {
        renewer.observe(&d(name)).await.unwrap();
    }
    assert_eq!(renewer.policy().main_domain().await.unwrap(), None);
    // The background loop issues the learned main domain without waiting a day.
    let running = tokio::spawn({
        let renewer = renewer.clone();
        async move { renewer.run(StdDuration::from_secs(86_400)).await }
    });
    // Let the loop's first (immediate) cycle pass, so what follows is the wake-up.
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let main = d("console.example.org");
    assert!(renewer.observe(&main).await.unwrap());
    let mut issued = false;
    for _ in 0..2000 {
        if resolver.domains() == vec![main.clone()] {
            issued = true;
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    running.abort();
    assert!(
        issued,
        "the learned main domain was issued by the running loop"
    );
    // It is the resolver's fallback for handshakes without SNI.
    assert!(resolver.lookup(None).is_some());
}

#[tokio::test]
async fn the_embedded_stack_refuses_a_weak_key_in_production_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    for key in ["your-secret-key", "your-secret-key1", "1234567890123456"] {
        // Refused as the configuration is read, before anything starts.
        let err = certkeeper::Config::from_vars([
            ("_APP_ENV", "production"),
            ("_APP_OPENSSL_KEY_V1", key),
            ("_APP_CERTIFICATES_PATH", path.as_str()),
            ("_APP_ACME_CHALLENGE_ADDRESS", "off"),
        ])
        .unwrap_err();
        match err {
            Error::WeakKey { name, .. } => assert_eq!(name, "_APP_OPENSSL_KEY_V1"),
            other => panic!("{key}: {other}"),
        }
    }
    // The same key is accepted, with a warning, in development.
    let config = certkeeper::Config::from_vars([
        ("_APP_ENV", "development"),
        ("_APP_OPENSSL_KEY_V1", "your-secret-key"),
        ("_APP_CERTIFICATES_PATH", path.as_str()),
    ])
    .unwrap();
    let embedded = certkeeper::Embedded::start(config).await.unwrap();
    assert!(embedded.challenge_server.is_none());
}

#[cfg(feature = "access")]
#[tokio::test]
async fn the_console_policy_from_config_never_whitelists_a_trusted_proxy() {
    use certkeeper::access::{AccessPolicy, AccessRequest};
    let config = certkeeper::Config::from_vars([
        ("_APP_CONSOLE_WHITELIST_IPS", "10.0.0.0/8"),
        ("_APP_CONSOLE_TRUSTED_PROXIES", "10.0.0.5"),
        ("_APP_CONSOLE_WHITELIST_ROOT", "disabled"),
    ])
    .unwrap();
    let policy = config.console_access_policy();
    let client = AccessRequest::sign_in("10.1.2.3".parse().unwrap(), "ops@example.com");
    assert!(policy.check(&client).await.unwrap().is_allowed());
    let proxy = AccessRequest::sign_in("10.0.0.5".parse().unwrap(), "ops@example.com");
    assert!(!policy.check(&proxy).await.unwrap().is_allowed());
}

#[tokio::test]
async fn the_embedded_stack_names_the_challenge_address_it_cannot_listen_on() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let config = certkeeper::Config::from_vars([
        ("_APP_ENV", "production"),
        (
            "_APP_OPENSSL_KEY_V1",
            "q8Vt2LmZ0rKx7WbN4cYh1PfJ6sDg9AeU3o5iTnRw",
        ),
        ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", "ops@example.com"),
        ("_APP_CERTIFICATES_PATH", dir.path().to_str().unwrap()),
        ("_APP_ACME_CHALLENGE_ADDRESS", address.as_str()),
    ])
    .unwrap();
    match certkeeper::Embedded::start(config).await.unwrap_err() {
        Error::Config { name, reason } => {
            assert_eq!(name, "_APP_ACME_CHALLENGE_ADDRESS");
            assert!(reason.contains(&address), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn the_configured_main_domain_is_registered_when_it_may_get_a_certificate() {
    let clock = TestClock::new(start());
    let issuer = ScriptedIssuer::new(Arc::new(clock.clone()), Duration::days(90));
    let renewer_over = |store: Arc<MemoryStore>, main: &str, production: bool| {
        Renewer::builder(store, keyring())
            .self_signed(issuer.clone())
            .production(production)
            .clock(Arc::new(clock.clone()))
            .main_domain(Some(d(main)))
            .build()
    };

    // Development: any name. `load` registers it, due now; the first cycle
    // issues it, with no add_domain or issue_now.
    let store = Arc::new(MemoryStore::new());
    let main = d("console.example.com");
    let renewer = renewer_over(store.clone(), main.as_str(), false);
    renewer.load().await.unwrap();
    let record = store
        .load(&main)
        .await
        .unwrap()
        .expect("registered by load");
    assert_eq!(record.renew_date, clock.now());
    assert!(record.certificate.is_none());
    assert_eq!(
        renewer.run_cycle().await.unwrap().issued,
        vec![main.clone()]
    );
    // Removed, it comes back at the next cycle: the main domain always has
    // a certificate.
    assert!(renewer.remove_domain(&main).await.unwrap());
    assert_eq!(
        renewer.run_cycle().await.unwrap().issued,
        vec![main.clone()]
    );

    // A cycle alone registers it too, without `load`.
    let store = Arc::new(MemoryStore::new());
    let renewer = renewer_over(store.clone(), main.as_str(), false);
    assert_eq!(
        renewer.run_cycle().await.unwrap().issued,
        vec![main.clone()]
    );

    // Production without an ACME issuer: a public main domain could only
    // fail, so it gets no record; a local one gets a self-signed certificate.
    let store = Arc::new(MemoryStore::new());
    let renewer = renewer_over(store.clone(), main.as_str(), true);
    renewer.load().await.unwrap();
    let report = renewer.run_cycle().await.unwrap();
    assert!(
        report.issued.is_empty() && report.failed.is_empty(),
        "{report}"
    );
    assert!(store.list().await.unwrap().is_empty());
    let local = d("console.test");
    let renewer = renewer_over(store.clone(), local.as_str(), true);
    assert_eq!(renewer.run_cycle().await.unwrap().issued, vec![local]);

    // `localhost` configured means the main domain is learned: nothing is
    // registered until a request names one.
    let store = Arc::new(MemoryStore::new());
    let renewer = renewer_over(store.clone(), "localhost", false);
    renewer.load().await.unwrap();
    assert!(renewer.run_cycle().await.unwrap().issued.is_empty());
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wildcard_is_never_ordered_through_http_01_and_is_self_signed_locally() {
    use certkeeper::challenge::Http01Solver;
    use certkeeper::issuer::{AcmeIssuer, IssuerExt};
    let store = Arc::new(MemoryStore::new());
    // Never contacted: the wildcard is refused before any order.
    let acme = AcmeIssuer::builder("https://127.0.0.1:9/dir")
        .contact_email("ops@certkeeper-test.com")
        .solver(Arc::new(Http01Solver::new()))
        .store(store.clone())
        .cipher(keyring())
        .build()
        .unwrap();
    let wildcard = d("*.shop.example.com");
    let refused = |err: &Error| {
        matches!(
            err,
            Error::WildcardNeedsDns01 { domain, challenge: "http-01" } if *domain == wildcard
        ) && err.code() == "wildcard_needs_dns01"
    };
    let direct = acme.issue_for(&wildcard).await.unwrap_err();
    assert!(refused(&acme.check(&wildcard).unwrap_err()));
    assert!(refused(&direct), "{direct}");

    let clock = TestClock::new(start());
    let renewer = Renewer::builder(store.clone(), keyring())
        .acme(Arc::new(acme))
        .clock(Arc::new(clock.clone()))
        .build();
    renewer.add_domain(&wildcard).await.unwrap();
    let manual = renewer.issue_now(Some(&wildcard)).await.unwrap_err();
    assert!(refused(&manual), "{manual}");
    // The failed attempt is tried again a day later.
    clock.advance(Duration::days(1));
    let report = renewer.run_cycle().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(refused(&report.failed[0].error), "{report:?}");
    let record = store.load(&wildcard).await.unwrap().unwrap();
    assert_eq!(record.attempts, 2);
    assert!(record.log[1].message.contains("dns-01"), "{:?}", record.log);

    // A local wildcard gets a self-signed certificate that serves one label.
    let resolver = certkeeper::CertResolver::new();
    let local = Renewer::builder(Arc::new(MemoryStore::new()), keyring())
        .resolver(resolver.clone())
        .build();
    let local_wildcard = d("*.app.test");
    local.add_domain(&local_wildcard).await.unwrap();
    let issued = local.issue_now(Some(&local_wildcard)).await.unwrap();
    let fingerprint = issued.certificate.unwrap().fingerprint;
    let served = resolver.lookup(Some("api.app.test")).unwrap();
    assert_eq!(
        certkeeper::cert::fingerprint(served.end_entity_cert().unwrap()),
        fingerprint
    );
}
