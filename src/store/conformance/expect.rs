//! Judging the store's answers: unwrapping results and asserting on
//! conflicts and loaded records, with messages naming the broken rule.

use std::fmt::Debug;

use crate::store::{CertRecord, CertStore};
use crate::{Domain, Error, Result};

pub(super) fn ok<T>(what: &str, result: Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("conformance: {what} failed: {e}"))
}

#[track_caller]
pub(super) fn assert_conflict<T: Debug>(
    what: &str,
    result: Result<T>,
    key: &str,
    expected: u64,
    found: u64,
) {
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

async fn load_expect(store: &dyn CertStore, domain: &Domain) -> Option<CertRecord> {
    ok(&format!("loading {domain}"), store.load(domain).await)
}

/// `domain` must load as `expected`; `rule` is the rule broken otherwise.
pub(super) async fn assert_loads(
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
pub(super) async fn assert_save_conflicts(
    store: &dyn CertStore,
    what: &str,
    record: &CertRecord,
    found: u64,
) {
    let key = record.domain.as_str();
    assert_conflict(what, store.save(record).await, key, record.version, found);
}
