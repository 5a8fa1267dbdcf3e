//! What the instances sharing a store coordinate through
//! ([`ClusterStore`]): leases and marks, HTTP-01 answers, the change feed;
//! deletion of accounts and settings; and the checks through two handles
//! of one backend.
//!
//! Expiry is on the store's clock, which the checks cannot move: they use
//! lifetimes of a few seconds and wait them out (about 12 s in all).

use std::time::Duration as StdDuration;

use super::expect::{assert_conflict, ok};
use super::fixtures::{cleanup, create, full_record, sealed};
use super::scope::Scope;
use super::LATER;
use crate::store::{AccountRecord, CertStore, ClusterStore};
use crate::Error;

/// Waits `seconds` of real time (the store's clock runs on its own).
async fn wait(seconds: f64) {
    tokio::time::sleep(StdDuration::from_secs_f64(seconds)).await;
}

/// The cluster a store offers; panics naming the rule when it offers none.
pub(super) fn cluster_of<'a>(store: &'a dyn CertStore, check: &str) -> &'a dyn ClusterStore {
    store.cluster().unwrap_or_else(|| {
        panic!("conformance: {check} needs a store that offers a cluster (CertStore::cluster)")
    })
}

/// `delete_account` and `delete_meta` remove what is there and say whether
/// it was; `set_meta` replaces a value.
pub async fn deletion_and_settings(store: &dyn CertStore) {
    let scope = Scope::new("deletion");
    let key = scope.key("setting");
    ok("set_meta", store.set_meta(&key, "first").await);
    ok("set_meta", store.set_meta(&key, "second").await);
    assert_eq!(
        ok("get_meta", store.get_meta(&key).await).as_deref(),
        Some("second"),
        "conformance: set_meta must replace the value"
    );
    assert!(
        ok("delete_meta", store.delete_meta(&key).await),
        "conformance: delete_meta of a stored key must return true"
    );
    assert_eq!(ok("get_meta", store.get_meta(&key).await), None);
    assert!(
        !ok("delete_meta", store.delete_meta(&key).await),
        "conformance: delete_meta of a missing key must return false"
    );
    // A deleted setting can be claimed again.
    assert_eq!(
        ok(
            "put_meta_if_absent",
            store.put_meta_if_absent(&key, "third").await
        ),
        "third"
    );
    ok("delete_meta", store.delete_meta(&key).await);

    let id = scope.key("account");
    let account = AccountRecord {
        id: id.clone(),
        version: 0,
        sealed_credentials: sealed(7),
        created: LATER,
    };
    ok("save_account", store.save_account(&account).await);
    assert!(ok("delete_account", store.delete_account(&id).await));
    assert_eq!(ok("load_account", store.load_account(&id).await), None);
    assert!(
        !ok("list_accounts", store.list_accounts().await).contains(&id),
        "conformance: a deleted account must not be listed"
    );
    assert!(!ok("delete_account", store.delete_account(&id).await));
    // Its version starts again from 0.
    assert_eq!(ok("save_account", store.save_account(&account).await), 1);
    ok("delete_account", store.delete_account(&id).await);
}

/// A lease goes to one holder at a time: refused to others until it expires
/// or is released, renewed by its holder, on the store's clock.
pub async fn leases(cluster: &dyn ClusterStore) {
    leases_between(cluster, cluster, "leases").await;
}

/// Leases through two handles of one backend (two connections, two
/// processes): what one grants, the other refuses.
pub async fn shared_leases(a: &dyn ClusterStore, b: &dyn ClusterStore) {
    leases_between(a, b, "shared_leases").await;
}

async fn leases_between(a: &dyn ClusterStore, b: &dyn ClusterStore, check: &'static str) {
    let scope = Scope::new(check);
    let name = scope.key("lease");
    let ttl = StdDuration::from_secs(3);
    assert!(
        ok(
            "acquire_lease",
            a.acquire_lease(&name, "holder-a", ttl).await
        ),
        "conformance: a free lease must be granted"
    );
    assert!(
        !ok(
            "acquire_lease",
            b.acquire_lease(&name, "holder-b", ttl).await
        ),
        "conformance: a held lease must be refused to another holder"
    );
    wait(1.5).await;
    assert!(
        ok(
            "acquire_lease",
            a.acquire_lease(&name, "holder-a", ttl).await
        ),
        "conformance: the holder must be able to renew its lease"
    );
    wait(2.0).await;
    assert!(
        !ok(
            "acquire_lease",
            b.acquire_lease(&name, "holder-b", ttl).await
        ),
        "conformance: a renewed lease must last ttl from the renewal"
    );
    wait(1.5).await;
    assert!(
        ok(
            "acquire_lease",
            b.acquire_lease(&name, "holder-b", ttl).await
        ),
        "conformance: an expired lease must go to the next holder"
    );
    assert!(
        !ok("release_lease", a.release_lease(&name, "holder-a").await),
        "conformance: a holder that lost its lease must not release it"
    );
    assert!(
        !ok(
            "acquire_lease",
            a.acquire_lease(&name, "holder-a", ttl).await
        ),
        "conformance: a lease must stay with its new holder"
    );
    assert!(ok(
        "release_lease",
        b.release_lease(&name, "holder-b").await
    ));
    assert!(
        ok(
            "acquire_lease",
            a.acquire_lease(&name, "holder-a", ttl).await
        ),
        "conformance: a released lease must be free at once"
    );
    assert!(
        matches!(
            a.acquire_lease("../lease", "holder-a", ttl).await,
            Err(Error::InvalidKey { .. })
        ),
        "conformance: acquire_lease must refuse a name outside [a-z0-9._-]"
    );
    // Racing holders: exactly one wins.
    let race = scope.key("race");
    let long = StdDuration::from_secs(60);
    let holders: Vec<String> = (0..super::RACERS).map(|i| format!("racer-{i}")).collect();
    let attempts = holders.iter().enumerate().map(|(i, holder)| {
        let cluster = if i % 2 == 0 { a } else { b };
        cluster.acquire_lease(&race, holder, long)
    });
    let won = super::concurrency::join_all(attempts.collect())
        .await
        .into_iter()
        .map(|r| ok("acquire_lease", r))
        .filter(|granted| *granted)
        .count();
    assert_eq!(
        won, 1,
        "conformance: of racing holders exactly one must get a lease"
    );
    for holder in &holders {
        let _ = a.release_lease(&race, holder).await;
    }
    ok("release_lease", a.release_lease(&name, "holder-a").await);
}

/// A mark reads back its age on the store's clock, from the time it was
/// set minus the `ago` it was given; a mark never set reads as none.
pub async fn marks(cluster: &dyn ClusterStore) {
    marks_between(cluster, cluster, "marks").await;
}

/// A mark set through one handle is read through another.
pub async fn shared_marks(a: &dyn ClusterStore, b: &dyn ClusterStore) {
    marks_between(a, b, "shared_marks").await;
}

async fn marks_between(a: &dyn ClusterStore, b: &dyn ClusterStore, check: &'static str) {
    let scope = Scope::new(check);
    let name = scope.key("mark");
    assert_eq!(
        ok("mark_age", b.mark_age(&name).await),
        None,
        "conformance: a mark never set must read as none"
    );
    ok(
        "set_mark",
        a.set_mark(&name, StdDuration::from_secs(100)).await,
    );
    let age = ok("mark_age", b.mark_age(&name).await)
        .expect("conformance: a mark that was set must read back");
    assert!(
        (StdDuration::from_secs(99)..StdDuration::from_secs(110)).contains(&age),
        "conformance: a mark set 100 s ago must read about 100 s old, read {age:?}"
    );
    ok("set_mark", a.set_mark(&name, StdDuration::ZERO).await);
    let age = ok("mark_age", b.mark_age(&name).await).unwrap_or(StdDuration::MAX);
    assert!(
        age < StdDuration::from_secs(10),
        "conformance: a mark set again must read its new age, read {age:?}"
    );
}

/// HTTP-01 answers are kept until they expire or are deleted; expired ones
/// are purged on request.
pub async fn challenges(cluster: &dyn ClusterStore) {
    challenges_between(cluster, cluster, "challenges").await;
}

/// An answer kept through one handle is read through another.
pub async fn shared_challenges(a: &dyn ClusterStore, b: &dyn ClusterStore) {
    challenges_between(a, b, "shared_challenges").await;
}

async fn challenges_between(a: &dyn ClusterStore, b: &dyn ClusterStore, check: &'static str) {
    let scope = Scope::new(check);
    let token = |label: &str| format!("Tok_{}-{}", check.len(), scope.key(label).replace('.', "_"));
    let (long, short) = (token("long"), token("short"));
    let hour = StdDuration::from_secs(3600);
    ok(
        "put_challenge",
        a.put_challenge(&long, "long.thumbprint", hour).await,
    );
    ok(
        "put_challenge",
        a.put_challenge(&short, "short.thumbprint", StdDuration::from_secs(1))
            .await,
    );
    assert_eq!(
        ok("get_challenge", b.get_challenge(&long).await).as_deref(),
        Some("long.thumbprint"),
        "conformance: a kept answer must be found before it expires"
    );
    wait(1.5).await;
    assert_eq!(
        ok("get_challenge", b.get_challenge(&short).await),
        None,
        "conformance: an answer must not be given after its expiry"
    );
    assert!(
        ok(
            "purge_expired_challenges",
            b.purge_expired_challenges().await
        ) >= 1,
        "conformance: purge_expired_challenges must forget (and count) an expired answer"
    );
    a.put_challenge(&long, "long.other", hour)
        .await
        .expect("conformance: put_challenge must replace an answer");
    assert_eq!(
        ok("get_challenge", b.get_challenge(&long).await).as_deref(),
        Some("long.other"),
        "conformance: a replaced answer must be given, and purging must keep live ones"
    );
    ok("delete_challenge", a.delete_challenge(&long).await);
    assert_eq!(
        ok("get_challenge", b.get_challenge(&long).await),
        None,
        "conformance: a deleted answer must be gone"
    );
    assert!(
        matches!(
            b.get_challenge("../etc").await,
            Err(Error::InvalidKey { .. })
        ),
        "conformance: a token that is not base64url must be refused"
    );
}

/// Every save and delete of a record through `store` shows in its
/// cluster's change feed, in order.
pub async fn change_feed(store: &dyn CertStore) {
    let cluster = cluster_of(store, "change_feed");
    change_feed_between(store, cluster, "change_feed").await;
}

/// Changes made through one handle show in the feed read through another.
pub async fn shared_change_feed(a: &dyn CertStore, b: &dyn CertStore) {
    change_feed_between(a, cluster_of(b, "shared_change_feed"), "shared_change_feed").await;
}

async fn change_feed_between(a: &dyn CertStore, b: &dyn ClusterStore, check: &'static str) {
    let scope = Scope::new(check);
    let start = ok("changes_since", b.changes_since(0, 0).await);
    // Read up to the end first, as a server does at start-up.
    let mut cursor = start.cursor;
    loop {
        let page = ok("changes_since", b.changes_since(cursor, 10_000).await);
        if page.changes.is_empty() {
            cursor = page.cursor;
            break;
        }
        cursor = page.cursor;
    }
    let head = ok("changes_since", b.changes_since(u64::MAX, 0).await);
    assert!(
        head.reset && head.cursor == cursor,
        "conformance: changes_since(u64::MAX, _) must answer reset with the newest cursor \
         ({cursor}), got {head:?}"
    );
    let record = create(a, &full_record(scope.domain("feed"), LATER)).await;
    let mut updated = record.clone();
    updated.attempts = 1;
    ok("save", a.save(&updated).await);
    ok("delete", a.delete(&record.domain).await);
    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    for _ in 0..100 {
        let page = ok("changes_since", b.changes_since(cursor, 2).await);
        assert!(!page.reset, "conformance: a fresh cursor must not be reset");
        if page.changes.is_empty() {
            break;
        }
        assert!(
            page.cursor > cursor,
            "conformance: the cursor must move forward"
        );
        cursor = page.cursor;
        for change in page.changes {
            seqs.push(change.seq);
            if scope.owns(&change.domain) {
                seen.push(change.deleted);
            }
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "conformance: changes must come oldest first, each once: {seqs:?}"
    );
    assert_eq!(
        seen,
        vec![false, false, true],
        "conformance: two saves and a delete must show as two changes then a deletion"
    );
}

/// Compare-and-swap through two handles: a version read through one and
/// saved through the other wins once; the stale writer gets a conflict.
pub async fn shared_compare_and_swap(a: &dyn CertStore, b: &dyn CertStore) {
    let scope = Scope::new("shared-cas");
    let record = create(a, &full_record(scope.domain("cas"), LATER)).await;
    let loaded = ok("load", b.load(&record.domain).await)
        .expect("conformance: saved through one handle, the record must load through the other");
    assert_eq!(
        loaded, record,
        "conformance: both handles must see the same record"
    );
    let mut through_b = loaded.clone();
    through_b.attempts = 2;
    let version = ok("save", b.save(&through_b).await);
    let mut stale = record.clone();
    stale.attempts = 3;
    assert_conflict(
        "a save through one handle at a version the other moved past",
        a.save(&stale).await,
        record.domain.as_str(),
        record.version,
        version,
    );
    cleanup(a, [&record.domain]).await;
}

/// Every check of a store's cluster (leases, marks, HTTP-01 answers, the
/// change feed, budgets); panics when the store offers no cluster.
/// [`run_all`](super::run_all) calls it for a store that offers one.
pub async fn run_cluster(store: &dyn CertStore) {
    let cluster = cluster_of(store, "run_cluster");
    leases(cluster).await;
    marks(cluster).await;
    challenges(cluster).await;
    change_feed(store).await;
    super::budgets(cluster).await;
    tracing::info!("store cluster conformance checks passed");
}

/// Every check that needs two handles of one backend: for a store that
/// several instances share, `a` and `b` must be separate connections (or
/// processes), not one object. Panics when the store offers no cluster,
/// which a store shared by several instances must.
pub async fn run_shared(a: &dyn CertStore, b: &dyn CertStore) {
    let (ca, cb) = (cluster_of(a, "run_shared"), cluster_of(b, "run_shared"));
    shared_compare_and_swap(a, b).await;
    shared_leases(ca, cb).await;
    shared_marks(ca, cb).await;
    shared_challenges(ca, cb).await;
    shared_change_feed(a, b).await;
    super::shared_budgets(ca, cb).await;
    tracing::info!("store conformance checks over two handles passed");
}
