//! The CA's budgets an ACME issuer keeps within: new orders per account,
//! failed validations per name, new certificates per registered domain and
//! duplicate certificates, counted in the store so that the instances
//! sharing it share them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::error::Budget;
use crate::store::{CertStore, Coordinator};
use crate::{Domain, Error, Result};

/// The limits of a CA that an [`AcmeIssuer`](super::AcmeIssuer) keeps
/// within, so it never asks what the CA would refuse. The defaults are
/// Let's Encrypt's: 300 new orders per account per 3 hours, 5 failed
/// validations per name (and account) per hour, 50 new certificates per
/// registered domain per 7 days, and 5 duplicate certificates (the same
/// set of names) per 7 days.
///
/// Let's Encrypt's exemptions for renewals are kept: a renewal (an order
/// for the names of a certificate of this CA issued within the last 120
/// days) does not count as a new certificate of its registered domain, and
/// a renewal sent with `replaces` (ARI, RFC 9773) counts against neither
/// of those two budgets.
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
    /// New certificates per registered domain (`example.com` for
    /// `www.example.com`, by the Public Suffix List) in
    /// [`registered_domain_window`](Self::registered_domain_window);
    /// renewals are exempt.
    pub certificates_per_registered_domain: u32,
    /// The sliding window of the registered-domain budget.
    pub registered_domain_window: Duration,
    /// Certificates for one same set of names in
    /// [`duplicate_window`](Self::duplicate_window); renewals sent with
    /// `replaces` (ARI) are exempt.
    pub duplicate_certificates: u32,
    /// The sliding window of the duplicate-certificate budget.
    pub duplicate_window: Duration,
}

impl Default for CaBudgets {
    fn default() -> Self {
        Self {
            orders: 300,
            orders_window: Duration::from_secs(3 * 3600),
            failed_validations: 5,
            failed_validations_window: Duration::from_secs(3600),
            certificates_per_registered_domain: 50,
            registered_domain_window: WEEK,
            duplicate_certificates: 5,
            duplicate_window: WEEK,
        }
    }
}

const WEEK: Duration = Duration::from_secs(7 * 86_400);

/// How long a renewed certificate's names stay a renewal for the
/// registered-domain budget: Let's Encrypt looks back 120 days.
pub(crate) const RENEWAL_LOOKBACK: time::Duration = time::Duration::days(120);

/// What kind of order a new certificate comes from, for the budgets that
/// exempt renewals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderKind {
    /// A first certificate for the names (or one whose previous certificate
    /// is older than [`RENEWAL_LOOKBACK`]).
    New,
    /// A renewal not sent with `replaces`: exempt from the registered-domain
    /// budget only.
    Renewal,
    /// A renewal sent with `replaces` (ARI): exempt from both.
    AriRenewal,
}

/// Counts the budgets in the store's [`Budgets`](crate::store::Budgets),
/// or in this process when the store offers no cluster.
pub(crate) struct BudgetCounter {
    shared: Coordinator,
    clock: Arc<dyn Clock>,
    limits: CaBudgets,
    /// New certificates being ordered in this process, per budget key:
    /// counted with what the store holds, so orders in flight at once do
    /// not pass a budget together.
    in_flight: InFlight,
}

type InFlight = Arc<Mutex<HashMap<String, u32>>>;

/// A new certificate's place in the budgets it counts against, held while
/// its order runs ([`BudgetCounter::reserve_new_certificate`]): counted in
/// the store by [`BudgetCounter::commit`] once the certificate is issued,
/// given back when dropped (the order failed), so that only issued
/// certificates count, as the CA counts them.
pub(crate) struct Reservation {
    keys: Vec<(String, Duration)>,
    in_flight: InFlight,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in &self.keys {
            if let Some(count) = in_flight.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    in_flight.remove(key);
                }
            }
        }
    }
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
            shared: Coordinator::new(store, clock.clone()),
            clock,
            limits,
            in_flight: InFlight::default(),
        }
    }

    /// The kind of an order replacing `replaced` (the chain of a
    /// certificate of this CA, if any), sent with `replaces` or not: a
    /// renewal only when that certificate was issued within
    /// [`RENEWAL_LOOKBACK`].
    pub(crate) fn order_kind(&self, replaced: Option<&str>, with_replaces: bool) -> OrderKind {
        let Some(chain_pem) = replaced else {
            return OrderKind::New;
        };
        if with_replaces {
            return OrderKind::AriRenewal;
        }
        let now = self.clock.now();
        let recent = crate::cert::leaf_der(chain_pem)
            .and_then(|der| crate::cert::validity(&der))
            .is_ok_and(|(not_before, _)| now - not_before < RENEWAL_LOOKBACK);
        if recent {
            OrderKind::Renewal
        } else {
            OrderKind::New
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
        Err(spent(Budget::FailedValidations, domain, limit, window))
    }

    /// Fails with [`Error::BudgetSpent`] ([`Budget::DuplicateCertificates`]
    /// or [`Budget::RegisteredDomain`]) when a new certificate for
    /// `domain`, from an order of `kind`, would exceed one of those
    /// budgets, with the orders in flight in this process; counts nothing.
    pub(crate) async fn check_new_certificate(
        &self,
        account_id: &str,
        domain: &Domain,
        kind: OrderKind,
    ) -> Result<()> {
        self.reserve_new_certificate(account_id, domain, kind)
            .await
            .map(drop)
    }

    /// Holds a place for a new certificate of `domain`, from an order of
    /// `kind`, in the budgets it is not exempt from, or fails with
    /// [`Error::BudgetSpent`] when one is spent (the store's count and the
    /// orders in flight in this process). Nothing is counted in the store
    /// until [`commit`](Self::commit).
    pub(crate) async fn reserve_new_certificate(
        &self,
        account_id: &str,
        domain: &Domain,
        kind: OrderKind,
    ) -> Result<Reservation> {
        let budgets = self.certificate_budgets(account_id, domain, kind);
        let mut used = Vec::with_capacity(budgets.len());
        for (_, key, _, window) in &budgets {
            used.push(self.used(key, *window).await?);
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for ((budget, key, limit, window), used) in budgets.iter().zip(used) {
            let flying = in_flight.get(key).copied().unwrap_or(0);
            if used.saturating_add(flying) >= *limit {
                return Err(spent(*budget, domain, *limit, *window));
            }
        }
        for (_, key, _, _) in &budgets {
            *in_flight.entry(key.clone()).or_default() += 1;
        }
        Ok(Reservation {
            keys: budgets
                .into_iter()
                .map(|(_, key, _, window)| (key, window))
                .collect(),
            in_flight: self.in_flight.clone(),
        })
    }

    /// Counts the issued certificate `reservation` held a place for in the
    /// store, then frees the place; a store failure is logged.
    pub(crate) async fn commit(&self, reservation: Reservation) {
        for (key, window) in &reservation.keys {
            if let Err(e) = self.take(key, *window, u32::MAX).await {
                tracing::warn!(error = %e, "could not count an issued certificate in the CA's budgets");
            }
        }
    }

    /// The budgets a new certificate of `domain` from an order of `kind`
    /// counts against: budget, key, limit, window.
    fn certificate_budgets(
        &self,
        account_id: &str,
        domain: &Domain,
        kind: OrderKind,
    ) -> Vec<(Budget, String, u32, Duration)> {
        let limits = &self.limits;
        let mut budgets = Vec::new();
        if kind != OrderKind::AriRenewal {
            budgets.push((
                Budget::DuplicateCertificates,
                hashed_key("duplicates", account_id, domain.as_str()),
                limits.duplicate_certificates,
                limits.duplicate_window,
            ));
        }
        if kind == OrderKind::New {
            budgets.push((
                Budget::RegisteredDomain,
                hashed_key("registered-domain", account_id, &registered_domain(domain)),
                limits.certificates_per_registered_domain,
                limits.registered_domain_window,
            ));
        }
        budgets
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

fn spent(budget: Budget, domain: &Domain, limit: u32, window: Duration) -> Error {
    Error::BudgetSpent {
        budget,
        domain: Some(domain.clone()),
        limit,
        window,
    }
}

/// The budget key of `domain`'s failed validations with `account_id`.
fn failed_key(account_id: &str, domain: &Domain) -> String {
    hashed_key("failed-validations", account_id, domain.as_str())
}

/// `<prefix>.<hash>` over the account and `subject`: a hash, as names can
/// be longer than a key may be.
fn hashed_key(prefix: &str, account_id: &str, subject: &str) -> String {
    let digest = Sha256::digest(format!("{account_id}\n{subject}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}.{hex}")
}

/// The registered domain a CA counts `domain`'s certificates under: the
/// name one label below its public suffix (`example.co.uk` for
/// `www.example.co.uk`, by the Public Suffix List), the base name of a
/// wildcard, and an IP address itself.
pub(crate) fn registered_domain(domain: &Domain) -> String {
    let name = domain.as_str();
    let name = name.strip_prefix("*.").unwrap_or(name);
    if domain.ip().is_some() {
        return name.to_owned();
    }
    psl::domain(name.as_bytes())
        .and_then(|d| std::str::from_utf8(d.as_bytes()).ok())
        .unwrap_or(name)
        .to_owned()
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
            ..CaBudgets::default()
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

    #[test]
    fn the_registered_domain_is_one_label_below_the_public_suffix() {
        for (name, registered) in [
            ("www.example.com", "example.com"),
            ("example.com", "example.com"),
            ("a.b.example.co.uk", "example.co.uk"),
            ("*.shop.example.com", "example.com"),
            ("203.0.113.9", "203.0.113.9"),
        ] {
            assert_eq!(
                registered_domain(&Domain::new(name).unwrap()),
                registered,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn new_certificates_count_per_registered_domain_and_duplicates_with_the_exemptions() {
        let clock = clock();
        let store: Arc<dyn CertStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        let limits = CaBudgets {
            certificates_per_registered_domain: 2,
            duplicate_certificates: 2,
            ..CaBudgets::default()
        };
        let counter = BudgetCounter::new(store, Arc::new(clock.clone()), limits);
        let name = |n: &str| Domain::new(n).unwrap();
        let take = |d: Domain, kind| {
            let counter = &counter;
            async move {
                let reservation = counter.reserve_new_certificate("acme-a", &d, kind).await?;
                counter.commit(reservation).await;
                Ok::<(), Error>(())
            }
        };
        take(name("a.example.com"), OrderKind::New).await.unwrap();
        take(name("b.example.com"), OrderKind::New).await.unwrap();
        // A third new name under example.com waits; another domain does not.
        let err = take(name("c.example.com"), OrderKind::New)
            .await
            .unwrap_err();
        assert!(matches!(
            &err,
            Error::BudgetSpent {
                budget: Budget::RegisteredDomain,
                limit: 2,
                ..
            }
        ));
        assert_eq!(err.code(), "budget_registered_domain");
        take(name("a.example.org"), OrderKind::New).await.unwrap();
        // Renewals are exempt from the registered domain's budget, not
        // from duplicates: a.example.com has had 1 + 1.
        take(name("a.example.com"), OrderKind::Renewal)
            .await
            .unwrap();
        let err = take(name("a.example.com"), OrderKind::Renewal)
            .await
            .unwrap_err();
        assert!(matches!(
            &err,
            Error::BudgetSpent {
                budget: Budget::DuplicateCertificates,
                ..
            }
        ));
        // A renewal sent with `replaces` is exempt from both.
        for _ in 0..3 {
            take(name("a.example.com"), OrderKind::AriRenewal)
                .await
                .unwrap();
        }
        // A refused check counts nothing: after the week, both free up.
        clock.advance(time::Duration::days(7));
        take(name("c.example.com"), OrderKind::New).await.unwrap();
        take(name("a.example.com"), OrderKind::Renewal)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn only_issued_certificates_count_and_orders_in_flight_hold_their_place() {
        let clock = clock();
        let store: Arc<dyn CertStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        let limits = CaBudgets {
            duplicate_certificates: 2,
            ..CaBudgets::default()
        };
        let counter = BudgetCounter::new(store, Arc::new(clock), limits);
        let d = Domain::new("www.example.com").unwrap();
        let reserve = || counter.reserve_new_certificate("acme-a", &d, OrderKind::Renewal);
        // Two orders in flight hold both places: a third waits.
        let first = reserve().await.unwrap();
        let second = reserve().await.unwrap();
        assert!(reserve().await.is_err());
        // One failed (dropped): its place is free again, nothing counted.
        drop(first);
        let third = reserve().await.unwrap();
        // Issued ones count in the store and keep their place.
        counter.commit(second).await;
        counter.commit(third).await;
        let err = counter
            .check_new_certificate("acme-a", &d, OrderKind::Renewal)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::BudgetSpent {
                budget: Budget::DuplicateCertificates,
                ..
            }
        ));
        assert!(counter.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn an_order_is_a_renewal_for_a_certificate_of_the_last_120_days() {
        let clock = TestClock::new(time::OffsetDateTime::now_utc());
        let store: Arc<dyn CertStore> = Arc::new(MemoryStore::new());
        let counter = BudgetCounter::new(store, Arc::new(clock.clone()), CaBudgets::default());
        let d = Domain::new("www.example.com").unwrap();
        let now = clock.now();
        let chain = crate::cert::self_signed(&d, now, now + time::Duration::days(90))
            .unwrap()
            .chain_pem;
        assert_eq!(counter.order_kind(None, false), OrderKind::New);
        assert_eq!(
            counter.order_kind(Some(&chain), true),
            OrderKind::AriRenewal
        );
        assert_eq!(counter.order_kind(Some(&chain), false), OrderKind::Renewal);
        clock.advance(time::Duration::days(121));
        assert_eq!(counter.order_kind(Some(&chain), false), OrderKind::New);
        assert_eq!(
            counter.order_kind(Some("not a chain"), false),
            OrderKind::New
        );
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
