//! The optional methods a store shared by several instances needs: deletion
//! of accounts and settings, replaceable settings, leases, HTTP-01 answers
//! and the change feed; and the checks through two handles of one backend.

use std::time::Duration as StdDuration;

use time::Duration;

use super::expect::{assert_conflict, ok};
use super::fixtures::{cleanup, create, full_record, sealed};
use super::scope::Scope;
use super::LATER;
use crate::store::{AccountRecord, CertStore};
use crate::{Error, Result};

/// The answer of an optional method, or `None` when the store does not
/// support it (the check is then skipped, and says so).
fn optional<T>(check: &str, what: &str, result: Result<T>) -> Option<T> {
    match result {
        Err(Error::Unsupported { .. }) => {
            tracing::info!(check, "the store does not support {what}; check skipped");
            None
        }
        other => Some(ok(what, other)),
    }
}

/// `delete_account` and `delete_meta` remove what is there and say whether
/// it was; `set_meta` replaces a value.
pub async fn deletion_and_settings(store: &dyn CertStore) {
    let scope = Scope::new("deletion");
    let key = scope.key("setting");
    let Some(()) = optional(
        "deletion_and_settings",
        "set_meta",
        store.set_meta(&key, "first").await,
    ) else {
        return;
    };
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
/// or is released, renewed by its holder.
pub async fn leases(store: &dyn CertStore) {
    leases_between(store, store, "leases").await;
}

/// Leases through two handles of one backend (two connections, two
/// processes): what one grants, the other refuses.
pub async fn shared_leases(a: &dyn CertStore, b: &dyn CertStore) {
    leases_between(a, b, "shared_leases").await;
}

async fn leases_between(a: &dyn CertStore, b: &dyn CertStore, check: &'static str) {
    let scope = Scope::new(check);
    let name = scope.key("lease");
    let ttl = StdDuration::from_secs(30);
    let t0 = LATER;
    let Some(granted) = optional(
        check,
        "leases",
        a.acquire_lease(&name, "holder-a", t0, ttl).await,
    ) else {
        return;
    };
    assert!(granted, "conformance: a free lease must be granted");
    let later = |s: i64| t0 + Duration::seconds(s);
    assert!(
        !ok(
            "acquire_lease",
            b.acquire_lease(&name, "holder-b", later(1), ttl).await
        ),
        "conformance: a held lease must be refused to another holder"
    );
    assert!(
        ok(
            "acquire_lease",
            a.acquire_lease(&name, "holder-a", later(20), ttl).await
        ),
        "conformance: the holder must be able to renew its lease"
    );
    assert!(
        !ok(
            "acquire_lease",
            b.acquire_lease(&name, "holder-b", later(45), ttl).await
        ),
        "conformance: a renewed lease must last ttl from the renewal"
    );
    assert!(
        ok(
            "acquire_lease",
            b.acquire_lease(&name, "holder-b", later(50), ttl).await
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
            a.acquire_lease(&name, "holder-a", later(51), ttl).await
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
            a.acquire_lease(&name, "holder-a", later(52), ttl).await
        ),
        "conformance: a released lease must be free at once"
    );
    // Racing holders: exactly one wins.
    let race = scope.key("race");
    let holders: Vec<String> = (0..super::RACERS).map(|i| format!("racer-{i}")).collect();
    let attempts = holders.iter().enumerate().map(|(i, holder)| {
        let store = if i % 2 == 0 { a } else { b };
        store.acquire_lease(&race, holder, t0, ttl)
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

/// HTTP-01 answers are kept until they expire or are deleted.
pub async fn challenges(store: &dyn CertStore) {
    challenges_between(store, store, "challenges").await;
}

/// An answer kept through one handle is read through another.
pub async fn shared_challenges(a: &dyn CertStore, b: &dyn CertStore) {
    challenges_between(a, b, "shared_challenges").await;
}

async fn challenges_between(a: &dyn CertStore, b: &dyn CertStore, check: &'static str) {
    let scope = Scope::new(check);
    let token = format!("Tok_{}-{}", check.len(), scope.key("t").replace('.', "_"));
    let expires = LATER;
    let Some(()) = optional(
        check,
        "challenges",
        a.put_challenge(&token, "token.thumbprint", expires).await,
    ) else {
        return;
    };
    assert_eq!(
        ok(
            "get_challenge",
            b.get_challenge(&token, expires - Duration::seconds(1))
                .await
        )
        .as_deref(),
        Some("token.thumbprint"),
        "conformance: a kept answer must be found before it expires"
    );
    assert_eq!(
        ok("get_challenge", b.get_challenge(&token, expires).await),
        None,
        "conformance: an answer must not be given at or after its expiry"
    );
    a.put_challenge(&token, "token.other", expires)
        .await
        .expect("conformance: put_challenge must replace an answer");
    assert_eq!(
        ok(
            "get_challenge",
            b.get_challenge(&token, expires - Duration::hours(1)).await
        )
        .as_deref(),
        Some("token.other")
    );
    ok("delete_challenge", a.delete_challenge(&token).await);
    assert_eq!(
        ok(
            "get_challenge",
            b.get_challenge(&token, expires - Duration::hours(1)).await
        ),
        None,
        "conformance: a deleted answer must be gone"
    );
    assert!(
        matches!(
            b.get_challenge("../etc", expires).await,
            Err(Error::InvalidKey { .. })
        ),
        "conformance: a token that is not base64url must be refused"
    );
}

/// Every save and delete of a record shows in the change feed, in order.
pub async fn change_feed(store: &dyn CertStore) {
    change_feed_between(store, store, "change_feed").await;
}

/// Changes made through one handle show in the feed read through another.
pub async fn shared_change_feed(a: &dyn CertStore, b: &dyn CertStore) {
    change_feed_between(a, b, "shared_change_feed").await;
}

async fn change_feed_between(a: &dyn CertStore, b: &dyn CertStore, check: &'static str) {
    let scope = Scope::new(check);
    let Some(start) = optional(check, "changes", b.changes_since(0, 0).await) else {
        return;
    };
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

/// Every optional check on one store (skipping what it does not support).
pub(super) async fn run_optional(store: &dyn CertStore) {
    deletion_and_settings(store).await;
    leases(store).await;
    challenges(store).await;
    change_feed(store).await;
    super::at_attempt_limit(store).await;
    super::budgets(store).await;
}

/// Every check that needs two handles of one backend: for a store that
/// several instances share, `a` and `b` must be separate connections (or
/// processes), not one object. Panics when the store does not support
/// leases, HTTP-01 answers or the change feed, which such a store must.
pub async fn run_shared(a: &dyn CertStore, b: &dyn CertStore) {
    for (what, supported) in [
        (
            "leases",
            !matches!(
                a.release_lease("conformance-probe", "nobody").await,
                Err(Error::Unsupported { .. })
            ),
        ),
        (
            "changes",
            !matches!(a.changes_since(0, 0).await, Err(Error::Unsupported { .. })),
        ),
        (
            "challenges",
            !matches!(
                a.delete_challenge("conformance-probe").await,
                Err(Error::Unsupported { .. })
            ),
        ),
    ] {
        assert!(
            supported,
            "conformance: a store shared by several instances must support {what}"
        );
    }
    shared_compare_and_swap(a, b).await;
    shared_leases(a, b).await;
    shared_challenges(a, b).await;
    shared_change_feed(a, b).await;
    // Optional: without it, each instance counts the CA's budgets alone.
    super::shared_budgets(a, b).await;
    tracing::info!("store conformance checks over two handles passed");
}
