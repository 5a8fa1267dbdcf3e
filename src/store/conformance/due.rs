//! `due`: which records it returns, in which order, under which limit, and
//! how it follows updates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::expect::ok;
use super::fixtures::{cleanup, create, create_due, full_record};
use super::scope::Scope;
use super::{DUE_NOW, FULL};
use crate::store::{CertRecord, CertStore, DueEntry};
use crate::Domain;

/// Reads the full answer of `due` and checks it is sorted and due.
async fn full_due(store: &dyn CertStore, now: OffsetDateTime, max_attempts: u32) -> Vec<DueEntry> {
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
            record.renew_date <= now && record.attempts < max_attempts,
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
    let ours: Vec<&DueEntry> = all.iter().filter(|r| scope.owns(&r.domain)).collect();
    let expected_domains: Vec<&Domain> = expected.iter().map(|r| &r.domain).collect();
    assert_eq!(
        ours.iter().map(|r| &r.domain).collect::<Vec<_>>(),
        expected_domains,
        "conformance: {what}: due({now}, max_attempts {max_attempts}) returned the wrong records \
         or order"
    );
    let expected_entries: Vec<DueEntry> = expected.iter().map(|r| DueEntry::of(r)).collect();
    assert_eq!(
        ours.into_iter().cloned().collect::<Vec<_>>(),
        expected_entries,
        "conformance: {what}: due must return each record's domain, version, renew date and \
         attempts"
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

/// [`CertStore::at_attempt_limit`] counts and names the records with
/// `max_attempts` attempts or more, whatever their renew date, by attempts,
/// renew date, then domain, and leaves out the others.
pub async fn at_attempt_limit(store: &dyn CertStore) {
    let scope = Scope::new("at_attempt_limit");
    // A limit no other record of a shared store is likely to reach.
    let base =
        2_000_000_000 + (OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000) as u32;
    let below = create_due(store, &scope, "below", DUE_NOW, base - 1).await;
    let later = create_due(store, &scope, "later", super::LATER, base).await;
    let early = create_due(store, &scope, "early", DUE_NOW, base).await;
    let more = create_due(store, &scope, "more", DUE_NOW - Duration::days(1), base + 7).await;
    let answer = ok("at_attempt_limit", store.at_attempt_limit(base, FULL).await);
    let ours: Vec<&Domain> = answer.domains.iter().filter(|d| scope.owns(d)).collect();
    assert_eq!(
        ours,
        [&early.domain, &later.domain, &more.domain],
        "conformance: at_attempt_limit({base}) must name the records with {base} attempts or \
         more, by attempts, renew date, then domain"
    );
    assert!(
        answer.exact && answer.total >= 3 && answer.total >= answer.domains.len() as u64,
        "conformance: at_attempt_limit({base}) counted {} (exact: {}) for at least 3 records",
        answer.total,
        answer.exact
    );
    let one = ok("at_attempt_limit", store.at_attempt_limit(base, 1).await);
    assert_eq!(
        one.domains.len(),
        1,
        "conformance: at_attempt_limit with limit 1 must name exactly one record"
    );
    assert_eq!(
        one.total, answer.total,
        "conformance: the count must not depend on the limit"
    );
    cleanup(
        store,
        [&below.domain, &later.domain, &early.domain, &more.domain],
    )
    .await;
    let after = ok("at_attempt_limit", store.at_attempt_limit(base, FULL).await);
    assert!(
        !after.domains.iter().any(|d| scope.owns(d)),
        "conformance: at_attempt_limit must forget deleted records"
    );
}

/// Counts the records a store reads from its storage: the store under test
/// adds to it for each record it reads (a `load` of its backend, a row or
/// file decoded), so that [`due_reads_only_due`] can tell a `due` that
/// consults an index from one that reads every record. Clones share the
/// count.
#[derive(Clone, Debug, Default)]
pub struct RecordReads(Arc<AtomicU64>);

impl RecordReads {
    /// A count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `records` reads.
    pub fn add(&self, records: u64) {
        self.0.fetch_add(records, Ordering::Relaxed);
    }

    /// The reads so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How many records a store that is not due may read beyond the ones `due`
/// returns (a store may read a few to check its index).
const SPARE_READS: u64 = 8;
/// How many records the check keeps out of `due`'s answer.
const NOT_DUE: usize = 120;

/// `due` reads no record it does not return: with 3 due records beside
/// 120 that are not (60 with a future renew date, 60 at the attempt limit),
/// the store reads at most the records it returns and a few more, as counted
/// by `reads` ([`RecordReads`], which the store adds to for each record it
/// reads from its storage). A `due` that reads every record works on a
/// small store and takes the whole store into memory at each cycle on a
/// large one. The check first makes sure the store counts at all: loading a
/// record must add to `reads`.
pub async fn due_reads_only_due(store: &dyn CertStore, reads: &RecordReads) {
    let scope = Scope::new("due-reads");
    let day = Duration::days(1);
    let mut ours = Vec::with_capacity(NOT_DUE + 3);
    for i in 0..3 {
        ours.push(create_due(store, &scope, &format!("due-{i}"), DUE_NOW - day, 0).await);
    }
    for i in 0..NOT_DUE / 2 {
        ours.push(create_due(store, &scope, &format!("future-{i}"), super::LATER, 0).await);
        ours.push(create_due(store, &scope, &format!("exhausted-{i}"), DUE_NOW - day, 5).await);
    }
    let before = reads.count();
    ok("loading a record", store.load(&ours[0].domain).await);
    assert!(
        reads.count() > before,
        "conformance: loading a record did not add to the read count: the store must add to \
         RecordReads for each record it reads from its storage"
    );
    let before = reads.count();
    let answer = ok("due", store.due(DUE_NOW, 5, FULL).await);
    let read = reads.count() - before;
    let returned = answer.len() as u64;
    assert!(
        read <= returned + SPARE_READS,
        "conformance: due read {read} records to return {returned}: it must find the due \
         records without reading the others (keep an index of renew dates and attempts, such \
         as DueIndex, or query one)"
    );
    assert_eq!(
        answer.iter().filter(|r| scope.owns(&r.domain)).count(),
        3,
        "conformance: due must return the 3 due records of this check"
    );
    let domains: Vec<Domain> = ours.into_iter().map(|r| r.domain).collect();
    cleanup(store, &domains).await;
}
