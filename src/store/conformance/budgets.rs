//! The CA's budgets ([`CertStore::take_budget`], [`CertStore::budget_used`]):
//! a sliding window that grants at most its limit, atomically, through
//! every handle of a shared store.

use std::time::Duration as StdDuration;

use time::Duration;

use super::concurrency::join_all;
use super::expect::ok;
use super::scope::Scope;
use super::{LATER, RACERS};
use crate::store::CertStore;
use crate::Error;

/// A budget grants up to its limit in its window, frees units as they
/// leave it, counts what was taken, and refuses bad keys.
pub async fn budgets(store: &dyn CertStore) {
    budgets_between(store, store, "budgets").await;
}

/// Budgets through two handles of one backend: what one takes, the other
/// sees, and racing takers through both never get more than the limit.
pub async fn shared_budgets(a: &dyn CertStore, b: &dyn CertStore) {
    budgets_between(a, b, "shared_budgets").await;
}

async fn budgets_between(a: &dyn CertStore, b: &dyn CertStore, check: &'static str) {
    let scope = Scope::new(check);
    let key = scope.key("orders");
    let hour = StdDuration::from_secs(3600);
    let now = LATER;
    match a.take_budget(&key, now, hour, 2).await {
        Err(Error::Unsupported { .. }) => {
            tracing::info!(check, "the store does not support budgets; check skipped");
            return;
        }
        taken => assert!(
            ok("take_budget", taken),
            "conformance: an empty budget must grant a unit"
        ),
    }
    assert!(
        ok(
            "take_budget",
            b.take_budget(&key, now + Duration::seconds(10), hour, 2)
                .await
        ),
        "conformance: a budget must grant up to its limit"
    );
    assert!(
        !ok(
            "take_budget",
            a.take_budget(&key, now + Duration::seconds(20), hour, 2)
                .await
        ),
        "conformance: a budget must refuse a unit past its limit"
    );
    assert_eq!(
        ok(
            "budget_used",
            b.budget_used(&key, now + Duration::seconds(20), hour).await
        ),
        2,
        "conformance: budget_used must count the units taken in the window (not the refused one)"
    );
    // The first unit leaves the window one hour after it was taken.
    let later = now + Duration::seconds(3600);
    assert_eq!(ok("budget_used", a.budget_used(&key, later, hour).await), 1);
    assert!(
        ok("take_budget", b.take_budget(&key, later, hour, 2).await),
        "conformance: a unit older than the window must free its place"
    );
    assert_eq!(
        ok(
            "budget_used",
            a.budget_used(&scope.key("unknown"), now, hour).await
        ),
        0,
        "conformance: an unknown budget has used nothing"
    );
    assert!(
        matches!(
            a.take_budget("../budget", now, hour, 2).await,
            Err(Error::InvalidKey { .. })
        ),
        "conformance: take_budget must refuse a key outside [a-z0-9._-]"
    );

    // Racing takers, half through each handle: exactly the limit wins.
    let race = scope.key("race");
    let limit = 5;
    let takers = (0..RACERS)
        .map(|i| {
            let store = if i % 2 == 0 { a } else { b };
            store.take_budget(&race, now, hour, limit)
        })
        .collect();
    let granted = join_all(takers)
        .await
        .into_iter()
        .map(|taken| ok("take_budget", taken))
        .filter(|taken| *taken)
        .count();
    assert_eq!(
        granted, limit as usize,
        "conformance: of {RACERS} racing takers, exactly the limit ({limit}) must be granted"
    );
}
