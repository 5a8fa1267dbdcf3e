//! The conformance suite every [`CertStore`] must pass.
//!
//! A store is correct when it passes the same checks as the built-in ones.
//! Call [`run_all`] from a test of your own store, or call the checks one by
//! one; each is a `pub async fn` over `&dyn CertStore` that panics with a
//! message naming the broken rule.
//!
//! ```
//! use certkeeper::store::{conformance, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a test of your own store: `#[tokio::test] async fn conforms() { ... }`.
//! let store = MemoryStore::new();
//! conformance::run_all(&store).await;
//! for check in conformance::checks() {
//!     println!("passed {}: {}", check.name, check.description);
//! }
//! # }
//! ```
//!
//! # What the checks assume
//!
//! - **Dates to the second.** A store must give back every date to at least
//!   the second; sub-second precision is allowed but not required (SQL
//!   timestamp columns keep microseconds, some keep seconds). The checks only
//!   use whole-second dates, and certkeeper's own rules never depend on less
//!   than a second.
//! - **A store that already holds data.** Every check works under names of
//!   its own, unique to the call: domains such as
//!   `a.due-order-3f2a9c1b7d04.conformance.certkeeper.dev` (and IPv6
//!   documentation addresses `2001:db8:…`), account ids and meta keys such as
//!   `conformance-accounts-3f2a9c1b7d04-a`. It asserts only about those names, and
//!   deletes the records it created when it passes (the trait has no way to
//!   delete accounts or meta keys, so those stay).
//! - **`due` and other data.** `due` answers with every due record, so the
//!   checks that call it put their records around a `now` of
//!   2000-01-01T00:00:00Z, where real records (renew dates near today) never
//!   are, while every other check uses dates from 2030 on, so that none of
//!   its records is ever due in a `due` check. Records of the store due at
//!   that `now` anyway (left over by an interrupted run, say) are read first
//!   and taken into account: a `due` with a limit must return exactly the
//!   first records of the full answer. The `due` checks therefore need that
//!   nobody adds or removes records due before 2000-01-02 while they run:
//!   run the checks one after another (as [`run_all`] does), not as parallel
//!   tests over one shared store.
//! - **Keys.** Account ids and meta keys used here are made of `a-z`, `0-9`
//!   and `-` only, which every built-in store accepts.
//! - **Concurrency.** The concurrent checks start 16 calls at once from one
//!   task and wait for all of them; with a multi-threaded runtime the store's
//!   own work (blocking file IO, database round trips) runs in parallel.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use sha2::{Digest, Sha256};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::{AccountRecord, CertRecord, CertStore, LogEntry, StoredCert};
use crate::cert::IssuerKind;
use crate::cipher::Sealed;
use crate::{Domain, Error, Result};

/// The `now` of the checks that call `due`.
const DUE_NOW: OffsetDateTime = datetime!(2000-01-01 00:00:00 UTC);
/// Dates of records that must never be due in a `due` check.
const LATER: OffsetDateTime = datetime!(2030-06-15 12:34:56 UTC);
/// The limit used to read the full answer of `due`.
const FULL: usize = 10_000;
/// How many calls the concurrent checks start at once.
const RACERS: usize = 16;

/// The future a check returns.
type CheckFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One check of the suite.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// The name of the function that runs it.
    pub name: &'static str,
    /// The rule it checks.
    pub description: &'static str,
    run: for<'a> fn(&'a dyn CertStore) -> CheckFuture<'a>,
}

impl Check {
    /// Runs the check on `store`; panics when the store breaks the rule.
    pub async fn run(&self, store: &dyn CertStore) {
        (self.run)(store).await;
    }
}

macro_rules! checks {
    ($($name:ident: $description:literal,)*) => {
        const CHECKS: &[Check] = &[$(Check {
            name: stringify!($name),
            description: $description,
            run: |store| Box::pin($name(store)),
        },)*];
    };
}

checks! {
    round_trip: "a saved record loads back equal, every field included",
    missing_keys: "unknown keys load as None and delete as false",
    compare_and_swap: "save succeeds only at the stored version and changes nothing otherwise",
    delete: "delete removes a record from load, list and due, and resets its version",
    list_sorted: "list returns every domain, sorted byte-wise",
    due_order_and_limit: "due orders by renew date then domain and returns exactly the first `limit`",
    due_attempts: "due leaves out records with max_attempts failed attempts or more",
    due_follows_updates: "due follows renew date and attempt changes, and deletions",
    accounts: "accounts round-trip with compare-and-swap and are listed sorted",
    meta_first_writer_wins: "put_meta_if_absent keeps the first value",
    meta_concurrent_racers: "racing put_meta_if_absent calls all get the same value",
    concurrent_saves: "of racing saves at the same version, exactly one wins",
}

/// Every check, in the order [`run_all`] runs them.
pub fn checks() -> &'static [Check] {
    CHECKS
}

/// Runs every check on `store`, one after another; panics at the first
/// failure. Each passed check is logged at `info` level.
pub async fn run_all(store: &dyn CertStore) {
    for check in checks() {
        check.run(store).await;
        tracing::info!(check = check.name, "store conformance check passed");
    }
}

/// Names unique to one call of a check.
struct Scope {
    nonce: String,
    check: &'static str,
}

impl Scope {
    fn new(check: &'static str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hash = Sha256::new();
        hash.update(
            OffsetDateTime::now_utc()
                .unix_timestamp_nanos()
                .to_be_bytes(),
        );
        hash.update(std::process::id().to_be_bytes());
        hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let digest = hash.finalize();
        let nonce = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self { nonce, check }
    }

    /// The zone every domain of this scope sits in.
    fn zone(&self) -> String {
        format!("{}-{}.conformance.certkeeper.dev", self.check, self.nonce)
    }

    fn domain(&self, label: &str) -> Domain {
        let name = format!("{label}.{}", self.zone());
        Domain::new(&name).unwrap_or_else(|e| panic!("conformance: bad test name {name}: {e}"))
    }

    /// Three 16-bit groups taken from the nonce.
    fn groups(&self) -> [u16; 3] {
        let group = |i: usize| u16::from_str_radix(&self.nonce[4 * i..4 * i + 4], 16).unwrap_or(0);
        [group(0), group(1), group(2)]
    }

    /// An IPv6 literal in the documentation range (`2001:db8::/32`), unique
    /// to this scope.
    fn ipv6(&self, last: u16) -> Domain {
        let [a, b, c] = self.groups();
        let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, a, b, c, 0, 0, last);
        Domain::new(&ip.to_string())
            .unwrap_or_else(|e| panic!("conformance: bad test address {ip}: {e}"))
    }

    /// A name of 253 characters, the longest a domain can be.
    fn longest_domain(&self) -> Domain {
        let mut name = self.zone();
        loop {
            let remaining = 253 - name.len();
            if remaining < 2 {
                break;
            }
            // A label and its dot; never leave exactly one character to fill.
            let mut len = (remaining - 1).min(63);
            if remaining - (len + 1) == 1 {
                len -= 1;
            }
            name = format!("{}.{name}", "l".repeat(len));
        }
        Domain::new(&name).unwrap_or_else(|e| panic!("conformance: bad test name {name}: {e}"))
    }

    fn owns(&self, domain: &Domain) -> bool {
        let zone = self.zone();
        domain
            .as_str()
            .strip_suffix(zone.as_str())
            .is_some_and(|rest| rest.ends_with('.'))
            || match domain.ip() {
                Some(std::net::IpAddr::V6(ip)) => {
                    let s = ip.segments();
                    s[..2] == [0x2001, 0xdb8] && s[2..5] == self.groups()
                }
                _ => false,
            }
    }

    fn key(&self, suffix: &str) -> String {
        format!("conformance-{}-{}-{suffix}", self.check, self.nonce)
    }
}

/// Polls every future until all have finished, from the calling task.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn ok<T>(what: &str, result: Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("conformance: {what} failed: {e}"))
}

#[track_caller]
fn assert_conflict<T: Debug>(what: &str, result: Result<T>, key: &str, expected: u64, found: u64) {
    match result {
        Err(Error::Conflict {
            key: k,
            expected: e,
            found: f,
        }) => {
            assert_eq!(
                (k.as_str(), e, f),
                (key, expected, found),
                "conformance: {what}: Error::Conflict must name the key, the version the \
                 writer had and the stored version"
            );
        }
        other => panic!(
            "conformance: {what} must fail with Error::Conflict {{ key: {key}, expected: \
             {expected}, found: {found} }}, got {other:?}"
        ),
    }
}

fn sealed(seed: u8) -> Sealed {
    let payload: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ seed).collect();
    Sealed::with_header(u32::from(seed) + 1, &payload)
}

/// A record with every field set, dates to the second.
fn full_record(domain: Domain, renew_date: OffsetDateTime) -> CertRecord {
    let not_before = datetime!(2030-01-02 03:04:05 UTC);
    CertRecord {
        certificate: Some(StoredCert {
            chain_pem: format!(
                "-----BEGIN CERTIFICATE-----\nMIIB{}\n-----END CERTIFICATE-----\n",
                domain.as_str().len()
            ),
            sealed_key: sealed(domain.as_str().len() as u8),
            not_before,
            not_after: not_before + Duration::days(90),
            fingerprint: "ab".repeat(32),
            issuer: IssuerKind::ACME,
        }),
        issue_date: Some(not_before),
        renew_date,
        attempts: 2,
        log: vec![
            LogEntry {
                time: datetime!(2030-01-01 00:00:01 UTC),
                step: "issue".into(),
                success: false,
                message: "CA said: rate limited, \"retry\" after 1h; ünïcödé ✓\nsecond line".into(),
            },
            LogEntry {
                time: datetime!(2030-01-02 03:04:05 UTC),
                step: "renew".into(),
                success: true,
                message: String::new(),
            },
        ],
        ..CertRecord::new(domain, renew_date)
    }
}

fn due_record(domain: Domain, renew_date: OffsetDateTime, attempts: u32) -> CertRecord {
    CertRecord {
        attempts,
        ..CertRecord::new(domain, renew_date)
    }
}

async fn create(store: &dyn CertStore, record: &CertRecord) -> CertRecord {
    let what = format!("creating {} with version 0", record.domain);
    let version = ok(&what, store.save(record).await);
    assert_eq!(version, 1, "conformance: {what} must return version 1");
    CertRecord {
        version,
        ..record.clone()
    }
}

async fn cleanup(store: &dyn CertStore, domains: impl IntoIterator<Item = &Domain>) {
    for domain in domains {
        ok(&format!("deleting {domain}"), store.delete(domain).await);
    }
}

async fn load_expect(store: &dyn CertStore, domain: &Domain) -> Option<CertRecord> {
    ok(&format!("loading {domain}"), store.load(domain).await)
}

/// `domain` must load as `expected`; `rule` is the rule broken otherwise.
async fn assert_loads(
    store: &dyn CertStore,
    domain: &Domain,
    expected: Option<&CertRecord>,
    rule: &str,
) {
    assert_eq!(
        load_expect(store, domain).await.as_ref(),
        expected,
        "conformance: {rule}"
    );
}

/// Saving `record` must fail with [`Error::Conflict`] naming its domain, its
/// version and the stored version `found`.
async fn assert_save_conflicts(store: &dyn CertStore, what: &str, record: &CertRecord, found: u64) {
    let key = record.domain.as_str();
    assert_conflict(what, store.save(record).await, key, record.version, found);
}

/// Creates a record of this scope for the `due` checks.
async fn create_due(
    store: &dyn CertStore,
    scope: &Scope,
    label: &str,
    renew_date: OffsetDateTime,
    attempts: u32,
) -> CertRecord {
    create(
        store,
        &due_record(scope.domain(label), renew_date, attempts),
    )
    .await
}

/// Saving a record and loading it gives it back with every field, the
/// sealed key, the log and the dates (to the second) intact; also for a
/// record without a certificate, an IPv6 literal and a 253-character name.
pub async fn round_trip(store: &dyn CertStore) {
    let scope = Scope::new("round-trip");
    let records = [
        full_record(scope.domain("full"), LATER),
        CertRecord::new(scope.domain("bare"), LATER + Duration::seconds(1)),
        full_record(scope.ipv6(1), LATER),
        full_record(scope.longest_domain(), LATER),
    ];
    for record in &records {
        let stored = create(store, record).await;
        let rule = format!(
            "{} must load back exactly as saved, with version 1",
            record.domain
        );
        assert_loads(store, &record.domain, Some(&stored), &rule).await;
    }
    let domains: Vec<Domain> = records.iter().map(|r| r.domain.clone()).collect();
    let listed = ok("list", store.list().await);
    for domain in &domains {
        assert!(
            listed.contains(domain),
            "conformance: list must contain the saved {domain}"
        );
    }
    cleanup(store, &domains).await;
}

/// Unknown keys are not errors: `load`, `load_account` and `get_meta` return
/// `None`, and `delete` returns `false`.
pub async fn missing_keys(store: &dyn CertStore) {
    let scope = Scope::new("missing");
    let domain = scope.domain("never-saved");
    let rule = "loading a domain never saved must return None";
    assert_loads(store, &domain, None, rule).await;
    assert!(
        !ok("deleting a missing domain", store.delete(&domain).await),
        "conformance: deleting a domain never saved must return false"
    );
    assert_eq!(
        ok(
            "load_account",
            store.load_account(&scope.key("account")).await
        ),
        None,
        "conformance: loading an account never saved must return None"
    );
    assert_eq!(
        ok("get_meta", store.get_meta(&scope.key("meta")).await),
        None,
        "conformance: reading a meta key never set must return None"
    );
    assert!(
        !ok("list", store.list().await).contains(&domain),
        "conformance: list must not contain a domain never saved"
    );
}

/// `save` stores at version 0 (missing) or the stored version, returns the
/// next version, and otherwise fails with [`Error::Conflict`] without
/// changing anything.
pub async fn compare_and_swap(store: &dyn CertStore) {
    let scope = Scope::new("cas");
    let domain = scope.domain("www");
    let v1 = create(store, &full_record(domain.clone(), LATER)).await;

    let again = CertRecord {
        version: 0,
        attempts: 4,
        ..v1.clone()
    };
    let what = "creating an existing record with version 0";
    assert_save_conflicts(store, what, &again, 1).await;
    let ahead = CertRecord {
        version: 7,
        ..again.clone()
    };
    let what = "saving with a version the store never had";
    assert_save_conflicts(store, what, &ahead, 1).await;
    let rule = "a conflicting save must change nothing";
    assert_loads(store, &domain, Some(&v1), rule).await;

    let mut next = v1.clone();
    next.attempts = 3;
    next.renew_date = LATER + Duration::days(1);
    next.push_log(LogEntry {
        time: LATER,
        step: "renew".into(),
        success: false,
        message: "timeout".into(),
    });
    let version = ok("saving at the stored version", store.save(&next).await);
    assert_eq!(version, 2, "conformance: saving version 1 must return 2");
    let v2 = CertRecord { version, ..next };
    let rule = "an update must load back as saved, with version 2";
    assert_loads(store, &domain, Some(&v2), rule).await;

    let stale = CertRecord {
        attempts: 0,
        ..v1.clone()
    };
    assert_save_conflicts(store, "saving with a stale version", &stale, 2).await;
    let rule = "a stale save must change nothing";
    assert_loads(store, &domain, Some(&v2), rule).await;

    let missing = CertRecord {
        version: 3,
        ..CertRecord::new(scope.domain("missing"), LATER)
    };
    let what = "saving a missing record with a version other than 0";
    assert_save_conflicts(store, what, &missing, 0).await;
    let rule = "a conflicting save must not create the record";
    assert_loads(store, &missing.domain, None, rule).await;
    cleanup(store, [&domain]).await;
}

/// `delete` returns `true` for a stored record and `false` once it is gone;
/// the record disappears from `load`, `list` and `due`, and its version
/// starts again from 0.
pub async fn delete(store: &dyn CertStore) {
    let scope = Scope::new("delete");
    let kept = create_due(store, &scope, "kept", DUE_NOW, 0).await;
    let gone = create_due(store, &scope, "gone", DUE_NOW, 0).await;

    assert!(
        ok("deleting a stored record", store.delete(&gone.domain).await),
        "conformance: deleting a stored record must return true"
    );
    assert!(
        !ok("deleting it again", store.delete(&gone.domain).await),
        "conformance: deleting a deleted record must return false"
    );
    let rule = "a deleted record must load as None";
    assert_loads(store, &gone.domain, None, rule).await;
    let rule = "deleting one record must not touch another";
    assert_loads(store, &kept.domain, Some(&kept), rule).await;
    let listed = ok("list", store.list().await);
    assert!(
        !listed.contains(&gone.domain) && listed.contains(&kept.domain),
        "conformance: list must drop the deleted record and keep the other"
    );
    let due: Vec<Domain> = ok("due", store.due(DUE_NOW, u32::MAX, FULL).await)
        .into_iter()
        .map(|r| r.domain)
        .filter(|d| scope.owns(d))
        .collect();
    assert_eq!(
        due,
        vec![kept.domain.clone()],
        "conformance: due must not return a deleted record"
    );

    let what = "saving a deleted record with its old version";
    assert_save_conflicts(store, what, &gone, 0).await;
    let fresh = CertRecord {
        version: 0,
        ..gone.clone()
    };
    assert_eq!(
        ok("re-creating a deleted record", store.save(&fresh).await),
        1,
        "conformance: re-creating a deleted record with version 0 must return 1"
    );
    cleanup(store, [&kept.domain, &gone.domain]).await;
}

/// `list` returns every stored domain once, sorted in byte order (as
/// [`Domain`]'s `Ord`; SQL stores need a binary collation).
pub async fn list_sorted(store: &dyn CertStore) {
    let scope = Scope::new("list");
    // Byte order: '-' < '.' < '0' < 'a'; locale collations disagree.
    let labels = ["b", "ab", "a0", "a-z", "a", "a.b", "0"];
    let mut domains: Vec<Domain> = labels.iter().map(|l| scope.domain(l)).collect();
    for domain in &domains {
        create(store, &CertRecord::new(domain.clone(), LATER)).await;
    }
    let listed = ok("list", store.list().await);
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "conformance: list must be strictly increasing (sorted, no duplicates)"
    );
    let ours: Vec<Domain> = listed.into_iter().filter(|d| scope.owns(d)).collect();
    domains.sort();
    assert_eq!(
        ours, domains,
        "conformance: list must contain every saved domain, sorted"
    );
    cleanup(store, &domains).await;
}

/// Reads the full answer of `due` and checks it is sorted and due.
async fn full_due(
    store: &dyn CertStore,
    now: OffsetDateTime,
    max_attempts: u32,
) -> Vec<CertRecord> {
    let all = ok("due", store.due(now, max_attempts, FULL).await);
    assert!(
        all.len() < FULL,
        "conformance: the store holds {FULL} or more records due before 2000; run the suite on \
         another store"
    );
    for pair in all.windows(2) {
        assert!(
            (pair[0].renew_date, &pair[0].domain) < (pair[1].renew_date, &pair[1].domain),
            "conformance: due must order by renew date then domain, without duplicates: {} \
             ({}) came before {} ({})",
            pair[0].domain,
            pair[0].renew_date,
            pair[1].domain,
            pair[1].renew_date
        );
    }
    let unlimited = ok("due", store.due(now, max_attempts, usize::MAX).await);
    assert_eq!(
        unlimited.iter().map(|r| &r.domain).collect::<Vec<_>>(),
        all.iter().map(|r| &r.domain).collect::<Vec<_>>(),
        "conformance: due with limit usize::MAX must return every due record"
    );
    for record in &all {
        assert!(
            record.is_due(now, max_attempts),
            "conformance: due({now}, {max_attempts}) returned {} with renew date {} and {} \
             attempts",
            record.domain,
            record.renew_date,
            record.attempts
        );
    }
    all
}

/// Checks that `due` with each limit returns exactly the first records of
/// the full answer, and that our records in the full answer are `expected`.
async fn assert_due(
    store: &dyn CertStore,
    scope: &Scope,
    now: OffsetDateTime,
    max_attempts: u32,
    expected: &[&CertRecord],
    what: &str,
) {
    let all = full_due(store, now, max_attempts).await;
    let ours: Vec<&CertRecord> = all.iter().filter(|r| scope.owns(&r.domain)).collect();
    let expected_domains: Vec<&Domain> = expected.iter().map(|r| &r.domain).collect();
    assert_eq!(
        ours.iter().map(|r| &r.domain).collect::<Vec<_>>(),
        expected_domains,
        "conformance: {what}: due({now}, max_attempts {max_attempts}) returned the wrong records \
         or order"
    );
    assert_eq!(
        ours,
        expected.to_vec(),
        "conformance: {what}: due must return the stored records whole"
    );
    // Every limit up to one past the end (bounded, should the store hold
    // many foreign records due that early).
    let limits = (0..=all.len().min(64)).chain([all.len() + 1]);
    for limit in limits {
        let limited = ok(
            "due with a limit",
            store.due(now, max_attempts, limit).await,
        );
        let got: Vec<&Domain> = limited.iter().map(|r| &r.domain).collect();
        let want: Vec<&Domain> = all.iter().take(limit).map(|r| &r.domain).collect();
        assert_eq!(
            got, want,
            "conformance: {what}: due with limit {limit} must return exactly the first {limit} \
             records of the full answer"
        );
    }
}

/// [`assert_due`] at [`DUE_NOW`], for the steps of one check.
struct DueAtNow<'a> {
    store: &'a dyn CertStore,
    scope: &'a Scope,
}

impl DueAtNow<'_> {
    async fn assert(&self, max_attempts: u32, expected: &[&CertRecord], what: &str) {
        assert_due(
            self.store,
            self.scope,
            DUE_NOW,
            max_attempts,
            expected,
            what,
        )
        .await;
    }
}

/// `due` returns the records with `renew_date <= now`, ordered by renew date
/// then domain, at most `limit` of them, and never a future one.
pub async fn due_order_and_limit(store: &dyn CertStore) {
    let scope = Scope::new("due-order");
    let day = Duration::days(1);
    // Domain order differs from creation order, and two share a renew date.
    let oldest = create_due(store, &scope, "z-oldest", DUE_NOW - 3 * day, 0).await;
    let tie_b = create_due(store, &scope, "tie-b", DUE_NOW - day, 1).await;
    let tie_a = create_due(store, &scope, "tie-a", DUE_NOW - day, 0).await;
    let at_now = create(store, &full_record(scope.domain("at-now"), DUE_NOW)).await;
    let second_later = DUE_NOW + Duration::seconds(1);
    let next_second = create_due(store, &scope, "a-next-second", second_later, 0).await;
    let future = create_due(store, &scope, "a-future", DUE_NOW + 30 * day, 0).await;

    for (now, expected, what) in [
        (
            DUE_NOW,
            vec![&oldest, &tie_a, &tie_b, &at_now],
            "records due at now",
        ),
        (
            second_later,
            vec![&oldest, &tie_a, &tie_b, &at_now, &next_second],
            "one second later",
        ),
        (DUE_NOW - 2 * day, vec![&oldest], "two days earlier"),
    ] {
        assert_due(store, &scope, now, u32::MAX, &expected, what).await;
    }
    cleanup(
        store,
        [&oldest, &tie_b, &tie_a, &at_now, &next_second, &future].map(|r| &r.domain),
    )
    .await;
}

/// `due` leaves out records whose `attempts` reach `max_attempts`, and the
/// limit counts only the records it returns.
pub async fn due_attempts(store: &dyn CertStore) {
    let scope = Scope::new("due-attempts");
    let day = Duration::days(1);
    // The exhausted records come first by date, so a limit applied before
    // the attempt filter would return too few.
    let five = create_due(store, &scope, "five", DUE_NOW - 4 * day, 5).await;
    let six = create_due(store, &scope, "six", DUE_NOW - 3 * day, 6).await;
    let four = create_due(store, &scope, "four", DUE_NOW - 2 * day, 4).await;
    let zero = create_due(store, &scope, "zero", DUE_NOW - day, 0).await;

    for (max_attempts, expected, what) in [
        (5, vec![&four, &zero], "max_attempts 5"),
        (1, vec![&zero], "max_attempts 1"),
        (0, vec![], "max_attempts 0"),
        (6, vec![&five, &four, &zero], "max_attempts 6"),
        (
            u32::MAX,
            vec![&five, &six, &four, &zero],
            "max_attempts u32::MAX",
        ),
    ] {
        assert_due(store, &scope, DUE_NOW, max_attempts, &expected, what).await;
    }
    cleanup(store, [&five, &six, &four, &zero].map(|r| &r.domain)).await;
}

/// `due` reflects every save: moving the renew date into the past or the
/// future, raising or resetting `attempts`, and deleting.
pub async fn due_follows_updates(store: &dyn CertStore) {
    let scope = Scope::new("due-updates");
    let day = Duration::days(1);
    let steady = create_due(store, &scope, "steady", DUE_NOW - day, 0).await;
    let mut moving = create_due(store, &scope, "moving", DUE_NOW + day, 0).await;
    let due = DueAtNow {
        store,
        scope: &scope,
    };
    due.assert(5, &[&steady], "a future record").await;

    let save = |record: CertRecord| async move {
        let version = ok(
            &format!("updating {}", record.domain),
            store.save(&record).await,
        );
        CertRecord { version, ..record }
    };

    moving.renew_date = DUE_NOW - 2 * day;
    moving = save(moving).await;
    due.assert(5, &[&moving, &steady], "a renew date moved into the past")
        .await;

    moving.attempts = 5;
    moving = save(moving).await;
    due.assert(5, &[&steady], "attempts raised to 5").await;
    due.assert(6, &[&moving, &steady], "attempts 5 under max_attempts 6")
        .await;

    moving.attempts = 0;
    moving.renew_date = DUE_NOW + 60 * day;
    moving = save(moving).await;
    due.assert(5, &[&steady], "a renew date moved into the future")
        .await;

    moving.renew_date = DUE_NOW;
    moving = save(moving).await;
    due.assert(5, &[&steady, &moving], "a renew date moved to now")
        .await;

    ok("deleting", store.delete(&moving.domain).await);
    due.assert(5, &[&steady], "a deleted record").await;
    cleanup(store, [&steady.domain]).await;
}

/// ACME accounts round-trip, follow the same compare-and-swap rule as
/// records, and `list_accounts` returns every id once, sorted.
pub async fn accounts(store: &dyn CertStore) {
    let scope = Scope::new("accounts");
    let id = scope.key("b");
    assert_eq!(
        ok("load_account", store.load_account(&id).await),
        None,
        "conformance: an account never saved must load as None"
    );
    let account = AccountRecord {
        id: id.clone(),
        version: 0,
        sealed_credentials: sealed(9),
        created: LATER,
    };
    assert_eq!(
        ok("creating an account", store.save_account(&account).await),
        1,
        "conformance: creating an account with version 0 must return 1"
    );
    let v1 = AccountRecord {
        version: 1,
        ..account.clone()
    };
    assert_eq!(
        ok("load_account", store.load_account(&id).await).as_ref(),
        Some(&v1),
        "conformance: an account must load back as saved, with version 1"
    );
    assert_conflict(
        "creating an existing account with version 0",
        store
            .save_account(&AccountRecord {
                sealed_credentials: sealed(10),
                ..account.clone()
            })
            .await,
        &id,
        0,
        1,
    );
    let v2 = AccountRecord {
        sealed_credentials: sealed(11),
        ..v1.clone()
    };
    assert_eq!(
        ok("updating an account", store.save_account(&v2).await),
        2,
        "conformance: saving an account at version 1 must return 2"
    );
    let v2 = AccountRecord { version: 2, ..v2 };
    assert_conflict(
        "saving an account with a stale version",
        store.save_account(&v1).await,
        &id,
        1,
        2,
    );
    assert_eq!(
        ok("load_account", store.load_account(&id).await).as_ref(),
        Some(&v2),
        "conformance: a conflicting account save must change nothing"
    );

    let others = [scope.key("a"), scope.key("a-1"), scope.key("c")];
    for other in &others {
        let record = AccountRecord {
            id: other.clone(),
            ..account.clone()
        };
        ok("creating an account", store.save_account(&record).await);
    }
    let listed = ok("list_accounts", store.list_accounts().await);
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "conformance: list_accounts must be strictly increasing (sorted, no duplicates)"
    );
    let prefix = scope.key("");
    let ours: Vec<&String> = listed.iter().filter(|i| i.starts_with(&prefix)).collect();
    let mut expected: Vec<&String> = others.iter().chain([&id]).collect();
    expected.sort();
    assert_eq!(
        ours, expected,
        "conformance: list_accounts must contain every saved id, sorted"
    );
}

/// `put_meta_if_absent` stores the first value and then keeps it;
/// `get_meta` reads it back.
pub async fn meta_first_writer_wins(store: &dyn CertStore) {
    let scope = Scope::new("meta");
    let key = scope.key("main-domain");
    let first = "first value, with spaces and ünïcödé\nand a second line";
    assert_eq!(
        ok(
            "put_meta_if_absent",
            store.put_meta_if_absent(&key, first).await
        ),
        first,
        "conformance: put_meta_if_absent on a new key must return the value given"
    );
    assert_eq!(
        ok(
            "put_meta_if_absent",
            store.put_meta_if_absent(&key, "second").await
        ),
        first,
        "conformance: put_meta_if_absent on a set key must return the value in force"
    );
    assert_eq!(
        ok("get_meta", store.get_meta(&key).await).as_deref(),
        Some(first),
        "conformance: get_meta must return the first value"
    );
    let other = scope.key("other");
    assert_eq!(
        ok("get_meta", store.get_meta(&other).await),
        None,
        "conformance: setting one meta key must not set another"
    );
}

/// Racing `put_meta_if_absent` calls on one key all return the same value,
/// one of theirs, and that value is the one stored.
pub async fn meta_concurrent_racers(store: &dyn CertStore) {
    let scope = Scope::new("meta-race");
    let key = scope.key("race");
    let values: Vec<String> = (0..RACERS).map(|i| format!("racer-{i}")).collect();
    let answers = join_all(
        values
            .iter()
            .map(|v| store.put_meta_if_absent(&key, v))
            .collect(),
    )
    .await;
    let answers: Vec<String> = answers
        .into_iter()
        .map(|a| ok("racing put_meta_if_absent", a))
        .collect();
    let winner = &answers[0];
    assert!(
        values.contains(winner),
        "conformance: racing put_meta_if_absent returned {winner:?}, which no racer wrote"
    );
    assert!(
        answers.iter().all(|a| a == winner),
        "conformance: racing put_meta_if_absent calls must all get the same value, got \
         {answers:?}"
    );
    assert_eq!(
        ok("get_meta", store.get_meta(&key).await).as_ref(),
        Some(winner),
        "conformance: get_meta must return the value the racers got"
    );
}

/// Of racing saves of one record at the same version, exactly one succeeds
/// and the others get [`Error::Conflict`]; the same for racing creations.
pub async fn concurrent_saves(store: &dyn CertStore) {
    let scope = Scope::new("race");
    for (case, existing) in [("creations", false), ("updates", true)] {
        let domain = scope.domain(case);
        let base = if existing {
            create(store, &due_record(domain.clone(), LATER, 0)).await
        } else {
            due_record(domain.clone(), LATER, 0)
        };
        let candidates: Vec<CertRecord> = (0..RACERS as u32)
            .map(|i| CertRecord {
                attempts: i + 1,
                renew_date: LATER + Duration::seconds(i64::from(i)),
                ..base.clone()
            })
            .collect();
        let results = join_all(candidates.iter().map(|r| store.save(r)).collect()).await;
        let mut winners = Vec::new();
        for (candidate, result) in candidates.iter().zip(results) {
            match result {
                Ok(version) => winners.push((candidate, version)),
                Err(Error::Conflict { .. }) => {}
                Err(e) => panic!("conformance: racing {case}: a save failed with {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "conformance: of {RACERS} racing {case} at version {}, exactly one must win",
            base.version
        );
        let (winner, version) = winners[0];
        assert_eq!(
            version,
            base.version + 1,
            "conformance: the winning save must return the next version"
        );
        let expected = CertRecord {
            version,
            ..winner.clone()
        };
        let rule = format!("after racing {case}, the store must hold the winner's record");
        assert_loads(store, &domain, Some(&expected), &rule).await;
        cleanup(store, [&domain]).await;
    }
}
