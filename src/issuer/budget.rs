//! The CA's budgets an ACME issuer keeps within: new orders per account
//! and failed validations per name, counted in the store so that the
//! instances sharing it share them.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::error::Budget;
use crate::store::{CertStore, Coordinator};
use crate::{Domain, Error, Result};

/// The limits of a CA that an [`AcmeIssuer`](super::AcmeIssuer) keeps
/// within, so it never asks what the CA would refuse. The defaults are
/// Let's Encrypt's: 300 new orders per account per 3 hours, 5 failed
/// validations per name (and account) per hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaBudgets {
    /// New orders per account in [`orders_window`](Self::orders_window)
    /// (`_APP_ACME_ORDER_BUDGET`).
    pub orders: u32,
    /// The sliding window of the order budget.
    pub orders_window: Duration,
    /// Failed validations per name in
    /// [`failed_validations_window`](Self::failed_validations_window)
    /// (`_APP_ACME_FAILED_VALIDATION_BUDGET`).
    pub failed_validations: u32,
    /// The sliding window of the failed-validation budget.
    pub failed_validations_window: Duration,
}

impl Default for CaBudgets {
    fn default() -> Self {
        Self {
            orders: 300,
            orders_window: Duration::from_secs(3 * 3600),
            failed_validations: 5,
            failed_validations_window: Duration::from_secs(3600),
        }
    }
}

/// Counts the budgets in the store's [`Budgets`](crate::store::Budgets),
/// or in this process when the store offers no cluster.
pub(crate) struct BudgetCounter {
    shared: Coordinator,
    limits: CaBudgets,
}

impl std::fmt::Debug for BudgetCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetCounter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl BudgetCounter {
    pub(crate) fn new(store: Arc<dyn CertStore>, clock: Arc<dyn Clock>, limits: CaBudgets) -> Self {
        Self {
            shared: Coordinator::new(store, clock),
            limits,
        }
    }

    /// Takes one new order of `account_id`'s budget, or fails with
    /// [`Error::BudgetSpent`] ([`Budget::Orders`]) when it is spent.
    pub(crate) async fn take_order(&self, account_id: &str, domain: &Domain) -> Result<()> {
        let key = format!("orders.{account_id}");
        let (limit, window) = (self.limits.orders, self.limits.orders_window);
        if self.take(&key, window, limit).await? {
            return Ok(());
        }
        Err(Error::BudgetSpent {
            budget: Budget::Orders,
            domain: Some(domain.clone()),
            limit,
            window,
        })
    }

    /// Fails with [`Error::BudgetSpent`] ([`Budget::FailedValidations`])
    /// when `domain` already failed validation as often as its budget allows.
    pub(crate) async fn check_failed_validations(
        &self,
        account_id: &str,
        domain: &Domain,
    ) -> Result<()> {
        let key = failed_key(account_id, domain);
        let (limit, window) = (
            self.limits.failed_validations,
            self.limits.failed_validations_window,
        );
        if self.used(&key, window).await? < limit {
            return Ok(());
        }
        Err(Error::BudgetSpent {
            budget: Budget::FailedValidations,
            domain: Some(domain.clone()),
            limit,
            window,
        })
    }

    /// Counts one failed validation of `domain`; a store failure is logged.
    pub(crate) async fn record_failed_validation(&self, account_id: &str, domain: &Domain) {
        let key = failed_key(account_id, domain);
        if let Err(e) = self
            .take(&key, self.limits.failed_validations_window, u32::MAX)
            .await
        {
            tracing::warn!(%domain, error = %e, "could not count a failed validation");
        }
    }

    async fn take(&self, key: &str, window: Duration, limit: u32) -> Result<bool> {
        self.shared.get().take_budget(key, window, limit).await
    }

    async fn used(&self, key: &str, window: Duration) -> Result<u32> {
        self.shared.get().budget_used(key, window).await
    }
}

/// The budget key of `domain`'s failed validations with `account_id`: a
/// hash, as names can be longer than a key may be.
fn failed_key(account_id: &str, domain: &Domain) -> String {
    let digest = Sha256::digest(format!("{account_id}\n{domain}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("failed-validations.{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testing::Alone, MemoryStore};
    use crate::TestClock;

    fn limits() -> CaBudgets {
        CaBudgets {
            orders: 3,
            orders_window: Duration::from_secs(3 * 3600),
            failed_validations: 2,
            failed_validations_window: Duration::from_secs(3600),
        }
    }

    async fn rules_hold(counter: BudgetCounter, other: BudgetCounter, clock: TestClock) {
        let d = Domain::new("www.example.com").unwrap();

        // Orders: 3 per 3 hours per account, whoever takes them.
        counter.take_order("acme-a", &d).await.unwrap();
        other.take_order("acme-a", &d).await.unwrap();
        counter.take_order("acme-a", &d).await.unwrap();
        let err = other.take_order("acme-a", &d).await.unwrap_err();
        assert!(
            matches!(
                &err,
                Error::BudgetSpent {
                    budget: Budget::Orders,
                    limit: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), "budget_orders");
        // Another account has its own budget.
        counter.take_order("acme-b", &d).await.unwrap();
        clock.advance(time::Duration::hours(3));
        counter.take_order("acme-a", &d).await.unwrap();

        // Failed validations: 2 per hour per name.
        counter
            .check_failed_validations("acme-a", &d)
            .await
            .unwrap();
        counter.record_failed_validation("acme-a", &d).await;
        other.record_failed_validation("acme-a", &d).await;
        let err = counter
            .check_failed_validations("acme-a", &d)
            .await
            .unwrap_err();
        assert!(matches!(
            &err,
            Error::BudgetSpent {
                budget: Budget::FailedValidations,
                ..
            }
        ));
        let other_name = Domain::new("api.example.com").unwrap();
        counter
            .check_failed_validations("acme-a", &other_name)
            .await
            .unwrap();
        clock.advance(time::Duration::minutes(60));
        counter
            .check_failed_validations("acme-a", &d)
            .await
            .unwrap();
    }

    fn clock() -> TestClock {
        TestClock::new(time::macros::datetime!(2030-01-01 00:00:00 UTC))
    }

    #[tokio::test]
    async fn budgets_are_shared_through_a_store_that_keeps_them() {
        let clock = clock();
        let store: Arc<dyn CertStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        // The counters' own clock is not the store's: the store's counts.
        let elsewhere = Arc::new(TestClock::new(time::macros::datetime!(2001-01-01 0:00 UTC)));
        let counter = BudgetCounter::new(store.clone(), elsewhere.clone(), limits());
        let other = BudgetCounter::new(store, elsewhere, limits());
        rules_hold(counter, other, clock).await;
    }

    #[tokio::test]
    async fn budgets_are_counted_per_process_without_one() {
        let store = Arc::new(Alone(MemoryStore::new()));
        let clock = clock();
        let counter = BudgetCounter::new(store.clone(), Arc::new(clock.clone()), limits());
        let d = Domain::new("www.example.com").unwrap();
        for _ in 0..3 {
            counter.take_order("acme-a", &d).await.unwrap();
        }
        assert!(counter.take_order("acme-a", &d).await.is_err());
        // Another counter (another process) counts on its own.
        let other = BudgetCounter::new(store, Arc::new(clock), limits());
        other.take_order("acme-a", &d).await.unwrap();
    }
}
