//! Short-lived certificates under `Renewer::run_round` (one round of
//! `Renewer::run`) on a settable clock, with a 24 h maintenance interval:
//! each certificate is renewed at its own renew date, not at the next
//! cycle; a failing CA gets its five attempts hours apart, all before
//! expiry; and the cap per interval holds across cycles, off-cycle passes
//! and instances.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use certkeeper::cert::IssuerKind;
use certkeeper::cipher::Keyring;
use certkeeper::error::{AcmeProblem, Budget, SkipReason};
use certkeeper::events::Event;
use certkeeper::issuer::{IssueRequest, Issued, Issuer, SelfSignedIssuer};
use certkeeper::renewer::CYCLE_MARK;
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{Clock, Domain, Error, RenewalPolicy, Renewer, TestClock};
use time::{Duration, OffsetDateTime};

const DAY: StdDuration = StdDuration::from_secs(86_400);
/// How often the simulated server calls `run_round` (its refresh interval).
const STEP: Duration = Duration::minutes(10);

/// Issues real self-signed certificates of one lifetime, or refuses the
/// name as a CA does; remembers when it was asked.
#[derive(Debug)]
struct ShortLivedIssuer {
    inner: SelfSignedIssuer,
    clock: TestClock,
    refuse: AtomicBool,
    /// Answers as an ACME issuer whose duplicate-certificate budget is spent.
    budget_spent: AtomicBool,
    calls: Mutex<Vec<(Domain, OffsetDateTime)>>,
}

impl ShortLivedIssuer {
    fn new(clock: &TestClock, lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: SelfSignedIssuer::with_clock(Arc::new(clock.clone())).validity(lifetime),
            clock: clock.clone(),
            refuse: AtomicBool::new(false),
            budget_spent: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<(Domain, OffsetDateTime)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Issuer for ShortLivedIssuer {
    async fn issue(&self, request: &IssueRequest) -> certkeeper::Result<Issued> {
        let domain = &request.domain;
        self.calls
            .lock()
            .unwrap()
            .push((domain.clone(), self.clock.now()));
        if self.budget_spent.load(Ordering::SeqCst) {
            return Err(Error::BudgetSpent {
                budget: Budget::DuplicateCertificates,
                domain: Some(domain.clone()),
                limit: 5,
                window: 7 * DAY,
            });
        }
        if self.refuse.load(Ordering::SeqCst) {
            let problem = AcmeProblem {
                type_uri: Some("urn:ietf:params:acme:error:rejectedIdentifier".into()),
                detail: Some("the CA will not issue for this name".into()),
                status: Some(400),
                subproblems: Vec::new(),
            };
            return Err(Error::Acme {
                domain: Some(domain.clone()),
                step: "new-order",
                message: problem.to_string(),
                problem: Some(Box::new(problem)),
                source: None,
            });
        }
        Ok(Issued::new(self.inner.issue_blocking(domain)?, self.kind()))
    }

    fn kind(&self) -> IssuerKind {
        IssuerKind::SELF_SIGNED
    }
}

fn start() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

fn d(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

fn renewer(
    store: &Arc<MemoryStore>,
    issuer: &Arc<ShortLivedIssuer>,
    clock: &TestClock,
    per_cycle: usize,
) -> Renewer {
    let keyring =
        Arc::new(Keyring::from_keys(true, [(1, "short-lived-test-key-0123456789ab")]).unwrap());
    Renewer::builder(store.clone(), keyring)
        .self_signed(issuer.clone())
        .production(false)
        .clock(Arc::new(clock.clone()))
        .main_domain(Some(d("main.example.com")))
        .renewal_policy(RenewalPolicy {
            per_cycle,
            ..RenewalPolicy::default()
        })
        .build()
}

/// When the cluster's last cycle started.
async fn last_cycle(renewer: &Renewer, clock: &TestClock) -> Option<OffsetDateTime> {
    let age = renewer.cluster().mark_age(CYCLE_MARK).await.unwrap()?;
    Some(clock.now() - Duration::try_from(age).unwrap())
}

#[tokio::test]
async fn six_day_certificates_renew_at_their_own_time_and_never_lapse() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let issuer = ShortLivedIssuer::new(&clock, Duration::days(6));
    let renewer = renewer(&store, &issuer, &clock, 200);
    let domains = [
        d("main.example.com"),
        d("b.example.com"),
        d("c.example.com"),
    ];
    // Added at different hours, so their renew dates fall between cycles.
    let added = [Duration::ZERO, Duration::hours(5), Duration::hours(13)];
    let mut renew_dates: Vec<Option<OffsetDateTime>> = vec![None; 3];
    let mut issued_at: Vec<Vec<OffsetDateTime>> = vec![Vec::new(); 3];
    let mut cycles = std::collections::BTreeSet::new();
    let end = start() + Duration::days(30);
    while clock.now() < end {
        for (i, at) in added.iter().enumerate() {
            if clock.now() == start() + *at {
                renewer.add_domain(&domains[i]).await.unwrap();
            }
        }
        renewer.run_round(DAY).await.unwrap();
        cycles.extend(last_cycle(&renewer, &clock).await);
        for (i, domain) in domains.iter().enumerate() {
            let Some(record) = store.load(domain).await.unwrap() else {
                continue;
            };
            let Some(cert) = &record.certificate else {
                continue;
            };
            assert!(
                cert.not_before <= clock.now() && clock.now() < cert.not_after,
                "{domain} lapsed at {}",
                clock.now()
            );
            if issued_at[i].last() != record.issue_date.as_ref() {
                issued_at[i].push(record.issue_date.unwrap());
                // Renewed within one round of its renew date.
                if let Some(due) = renew_dates[i] {
                    let late = clock.now() - due;
                    assert!(
                        late >= Duration::ZERO && late < STEP,
                        "{domain} renewed {late} after its renew date"
                    );
                }
            }
            renew_dates[i] = Some(record.renew_date);
        }
        clock.advance(STEP);
    }
    // One cycle a day, and each name renewed every four days or so
    // (about two thirds of its life), mostly between cycles.
    assert!((29..=31).contains(&cycles.len()), "{} cycles", cycles.len());
    let mut between_cycles = 0;
    for times in &issued_at {
        assert!(times.len() >= 7, "{times:?}");
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap > Duration::days(3) + Duration::hours(23) && gap <= Duration::days(4),
                "{gap}"
            );
        }
        between_cycles += times.iter().filter(|t| !cycles.contains(t)).count();
    }
    assert!(
        between_cycles >= 14,
        "{between_cycles} renewals between cycles"
    );
}

#[tokio::test]
async fn a_failing_ca_gets_five_attempts_hours_apart_before_a_six_day_certificate_expires() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let issuer = ShortLivedIssuer::new(&clock, Duration::days(6));
    let renewer = renewer(&store, &issuer, &clock, 200);
    let mut events = renewer.subscribe(64);
    let domain = d("main.example.com");
    renewer.add_domain(&domain).await.unwrap();
    renewer.run_round(DAY).await.unwrap();
    let cert = store
        .load(&domain)
        .await
        .unwrap()
        .unwrap()
        .certificate
        .unwrap();
    issuer.refuse.store(true, Ordering::SeqCst);
    while clock.now() < cert.not_after {
        clock.advance(STEP);
        renewer.run_round(DAY).await.unwrap();
    }
    let attempts: Vec<OffsetDateTime> = issuer.calls().iter().skip(1).map(|(_, t)| *t).collect();
    assert_eq!(attempts.len(), 5, "{attempts:?}");
    let renew_date = cert.not_after - (cert.not_after - cert.not_before) / 3;
    assert!(attempts[0] >= renew_date && attempts[0] - renew_date < STEP);
    for pair in attempts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::hours(4) && gap < Duration::hours(9),
            "attempts {gap} apart: {attempts:?}"
        );
    }
    // The operator was told with about a day to spare.
    assert!(
        cert.not_after - attempts[4] > Duration::hours(20),
        "{attempts:?}"
    );
    let record = store.load(&domain).await.unwrap().unwrap();
    assert_eq!(record.attempts, 5);
    let gave_up = std::iter::from_fn(|| events.try_recv())
        .any(|e| matches!(e, Event::GaveUp { attempts: 5, .. }));
    assert!(gave_up);
}

#[tokio::test]
async fn the_cap_per_interval_holds_across_cycles_off_cycle_passes_and_instances() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let issuer = ShortLivedIssuer::new(&clock, Duration::days(6));
    // Ten names issued two hours apart, so they come due two hours apart.
    let setup = renewer(&store, &issuer, &clock, 200);
    let names: Vec<Domain> = (0..10)
        .map(|i| match i {
            0 => d("main.example.com"),
            _ => d(&format!("n{i}.example.com")),
        })
        .collect();
    for name in &names {
        setup.add_domain(name).await.unwrap();
        setup.issue_now(Some(name)).await.unwrap();
        clock.advance(Duration::hours(2));
    }
    let first_orders = issuer.calls().len();
    // Two instances with a cap of 3 per interval take turns from day 3.
    let a = renewer(&store, &issuer, &clock, 3);
    let b = renewer(&store, &issuer, &clock, 3);
    clock.set(start() + Duration::days(3));
    let mut cycles = std::collections::BTreeSet::new();
    let mut turn = 0usize;
    while clock.now() < start() + Duration::days(9) {
        let instance = if turn.is_multiple_of(2) { &a } else { &b };
        turn += 1;
        instance.run_round(DAY).await.unwrap();
        cycles.extend(last_cycle(instance, &clock).await);
        clock.advance(STEP);
    }
    let orders: Vec<OffsetDateTime> = issuer
        .calls()
        .iter()
        .skip(first_orders)
        .map(|(_, t)| *t)
        .collect();
    let cycles: Vec<OffsetDateTime> = cycles.into_iter().collect();
    assert!(cycles.len() >= 5, "{cycles:?}");
    for period in cycles.windows(2) {
        let in_period = orders
            .iter()
            .filter(|t| (period[0]..period[1]).contains(*t))
            .count();
        assert!(
            in_period <= 3,
            "{in_period} orders from {} to {}",
            period[0],
            period[1]
        );
    }
    // The first interval ordered at renew dates between cycles, up to the
    // cap: the fourth name waited for the next cycle.
    let first = cycles.iter().rposition(|c| *c <= orders[0]).unwrap();
    let (from, to) = (cycles[first], cycles[first + 1]);
    let in_first: Vec<_> = orders.iter().filter(|t| (from..to).contains(*t)).collect();
    assert_eq!(in_first.len(), 3, "{orders:?} {cycles:?}");
    assert!(in_first.iter().any(|t| !cycles.contains(t)), "{orders:?}");
    assert_eq!(orders.iter().filter(|t| **t == to).count(), 3, "{orders:?}");
}

#[tokio::test]
async fn a_name_waiting_on_a_spent_budget_is_asked_for_again_before_its_certificate_lapses() {
    let clock = TestClock::new(start());
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let issuer = ShortLivedIssuer::new(&clock, Duration::days(1));
    let renewer = renewer(&store, &issuer, &clock, 200);
    let name = d("main.example.com");
    renewer.run_cycle().await.unwrap();
    let record = store.load(&name).await.unwrap().unwrap();
    let not_after = record.certificate.as_ref().unwrap().not_after;

    // At its renew date (8 h before expiry) the duplicate budget is spent:
    // 5 per 7 days frees a unit every 33.6 h on average, far past expiry.
    clock.set(record.renew_date);
    issuer.budget_spent.store(true, Ordering::SeqCst);
    let report = renewer.run_cycle().await.unwrap();
    assert_eq!(
        report.skipped,
        vec![(name.clone(), SkipReason::DuplicateBudget)]
    );
    let record = store.load(&name).await.unwrap().unwrap();
    assert_eq!(record.attempts, 0, "not an attempt");
    assert!(record.renew_date > clock.now(), "{}", record.renew_date);
    assert!(
        record.renew_date < not_after,
        "asked for again at {} although it expires at {not_after}",
        record.renew_date
    );
}
