//! The CA's budgets ([`Budgets`]): a sliding window on the store's clock
//! that grants at most its limit, atomically, through every handle of a
//! shared store.

use std::time::Duration as StdDuration;

use super::concurrency::join_all;
use super::expect::ok;
use super::scope::Scope;
use super::RACERS;
use crate::store::{Budgets, ClusterStore};
use crate::Error;

/// A budget grants up to its limit in its window, frees units as they
/// leave it, counts what was taken, and refuses bad keys.
pub async fn budgets(cluster: &dyn ClusterStore) {
    budgets_between(cluster, cluster, "budgets").await;
}

/// Budgets through two handles of one backend: what one takes, the other
/// sees, and racing takers through both never get more than the limit.
pub async fn shared_budgets(a: &dyn ClusterStore, b: &dyn ClusterStore) {
    budgets_between(a, b, "shared_budgets").await;
}

async fn budgets_between(a: &dyn Budgets, b: &dyn Budgets, check: &'static str) {
    let scope = Scope::new(check);
    let key = scope.key("orders");
    // Units are kept to the second: a window of 2 s frees a unit 2 to 3 s
    // after it was taken.
    let window = StdDuration::from_secs(2);
    assert!(
        ok("take_budget", a.take_budget(&key, window, 2).await),
        "conformance: an empty budget must grant a unit"
    );
    assert!(
        ok("take_budget", b.take_budget(&key, window, 2).await),
        "conformance: a budget must grant up to its limit"
    );
    assert!(
        !ok("take_budget", a.take_budget(&key, window, 2).await),
        "conformance: a budget must refuse a unit past its limit"
    );
    assert_eq!(
        ok("budget_used", b.budget_used(&key, window).await),
        2,
        "conformance: budget_used must count the units taken in the window (not the refused one)"
    );
    tokio::time::sleep(StdDuration::from_millis(3100)).await;
    assert_eq!(
        ok("budget_used", a.budget_used(&key, window).await),
        0,
        "conformance: units older than the window must not be counted"
    );
    assert!(
        ok("take_budget", b.take_budget(&key, window, 2).await),
        "conformance: a unit older than the window must free its place"
    );
    let hour = StdDuration::from_secs(3600);
    assert_eq!(
        ok(
            "budget_used",
            a.budget_used(&scope.key("unknown"), hour).await
        ),
        0,
        "conformance: an unknown budget has used nothing"
    );
    assert!(
        matches!(
            a.take_budget("../budget", hour, 2).await,
            Err(Error::InvalidKey { .. })
        ),
        "conformance: take_budget must refuse a key outside [a-z0-9._-]"
    );

    // Racing takers, half through each handle: exactly the limit wins.
    let race = scope.key("race");
    let limit = 5;
    let takers = (0..RACERS)
        .map(|i| {
            let budgets = if i % 2 == 0 { a } else { b };
            budgets.take_budget(&race, hour, limit)
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
