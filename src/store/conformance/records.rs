//! Certificate records: `load`, `save`, `delete` and `list`, and the
//! compare-and-swap rule of `save`.

use time::Duration;

use super::expect::{assert_loads, assert_save_conflicts, ok};
use super::fixtures::{cleanup, create, create_due, full_record};
use super::scope::Scope;
use super::{DUE_NOW, FULL, LATER};
use crate::store::{CertRecord, CertStore, LogEntry};
use crate::Domain;

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
/// next version, and otherwise fails with
/// [`Error::Conflict`](crate::Error::Conflict) without changing anything.
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
