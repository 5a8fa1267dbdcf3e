//! ACME accounts and meta settings: `save_account`, `load_account`,
//! `list_accounts`, `put_meta_if_absent` and `get_meta`.

use super::expect::{assert_conflict, ok};
use super::fixtures::sealed;
use super::scope::Scope;
use super::LATER;
use crate::store::{AccountRecord, CertStore};

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
    for id in others.iter().chain([&id]) {
        ok("delete_account", store.delete_account(id).await);
    }
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
    ok("delete_meta", store.delete_meta(&key).await);
}
