//! One maintenance cycle: the due records it picks (oldest renew date
//! first, at most the per-cycle cap, fewer than the attempt limit), issuing
//! them with bounded concurrency, stopping when the CA fails or limits or
//! the store keeps failing, and the [`CycleReport`] of it all.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use super::issue::{not_attempted, request_for, Outcome};
use super::lease::CYCLE_LEASE;
use super::notice::is_expiring_unrenewed;
use super::{CycleFailure, CycleReport, Renewer, SkipReason, PASSED_OVER_LISTED};
use crate::events::Event;
use crate::store::{DueEntry, PassedOver};
use crate::{Domain, Error, Result};

/// The cluster's mark ([`Leases::mark_age`](crate::store::Leases::mark_age))
/// of when the last renewal pass (a maintenance cycle, or the renewals that
/// came due between two) started: what came due after it is picked by the
/// next pass.
pub const PASS_MARK: &str = "renewal-pass";
/// The cluster's budget ([`Budgets`](crate::store::Budgets)) that counts the
/// certificates cycles and off-cycle passes picked, one unit each, so that
/// [`RenewalPolicy::per_cycle`](super::RenewalPolicy::per_cycle) holds per
/// maintenance interval across all of them.
pub const ORDER_BUDGET: &str = "renewal-orders";
/// How long the units of [`ORDER_BUDGET`] are kept outside
/// [`run`](Renewer::run) (which keeps them twice its interval): longer than
/// an off-cycle pass counts over (since the last cycle started), and short
/// enough that the budget's stored value stays small.
const ORDERS_KEPT: StdDuration = StdDuration::from_secs(2 * 86_400);
/// Budget units are kept in whole seconds: the window since a cycle's
/// start is widened by this, so its own first units are counted.
const BUDGET_SLACK: StdDuration = StdDuration::from_secs(2);

/// How a renewer runs its cycles.
pub(super) struct Cycles {
    /// How many certificates a cycle issues at once.
    concurrency: usize,
    /// One cycle at a time per renewer, so two never pick the same records.
    running: tokio::sync::Mutex<()>,
}

impl Cycles {
    pub(super) fn new(concurrency: usize) -> Self {
        Self {
            concurrency,
            running: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Waits until no other cycle of this renewer runs; the cycle holds the
    /// guard while it runs.
    pub(super) async fn one_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.running.lock().await
    }
}

impl Renewer {
    /// One maintenance cycle now: takes up to `per_cycle` due certificates
    /// with fewer than `max_attempts` failures, oldest renew date first, and
    /// issues them with bounded concurrency. A failure is recorded on its
    /// certificate (attempts + 1, renew date its retry date
    /// ([`RenewalPolicy::retry_date`](super::RenewalPolicy::retry_date)), a log line) and the cycle
    /// goes on; only a failure of the store itself to list what is due is an
    /// error of the cycle.
    ///
    /// A failure that is not the domain's is no attempt: the CA down or
    /// rate limiting, a wrong setting, or certkeeper's own store, disk or
    /// keyring failing ([`Error::is_infrastructure_failure`]). It is listed
    /// in [`CycleReport::deferred`] and the next cycle tries again (a
    /// certificate in force too close to expiry to wait for it sooner:
    /// [`RenewalPolicy::on_not_attempted`](super::RenewalPolicy::on_not_attempted)).
    /// The cycle stops ordering ([`CycleReport::stopped`]) after
    /// [`max_ca_failures`](super::RenewalPolicy::max_ca_failures) CA
    /// failures in a row ([`SkipReason::CaUnavailable`]), after
    /// [`max_store_failures`](super::RenewalPolicy::max_store_failures)
    /// store failures in a row ([`SkipReason::StoreUnavailable`]), at once
    /// on a rate limit or a wrong setting; the rest is skipped for the next
    /// cycle, with that reason.
    ///
    /// The main domain (configured, or learned) is part of every cycle: when
    /// it has no record (a first start, or after
    /// [`remove_domain`](Self::remove_domain)), one is stored, due now,
    /// before the due certificates are picked, as long as it may get a
    /// certificate: a public name in production with an ACME issuer, a local
    /// name, or any name in development.
    ///
    /// Cycles of one renewer run one at a time; a second call waits for the
    /// first to finish. With a store that keeps leases, one instance of a
    /// cluster runs a cycle at a time: while another holds the cycle lease,
    /// this fails with [`Error::LeaseHeld`]. [`run`](Self::run) also spaces
    /// cycles by the maintenance interval across the cluster.
    ///
    /// Each certificate a cycle picks counts in the cluster's
    /// [`ORDER_BUDGET`], which caps the renewals [`run`](Self::run) makes
    /// between cycles; a cycle marks its start as the last pass
    /// ([`PASS_MARK`]), so what it left waits for the next cycle.
    pub async fn run_cycle(&self) -> Result<CycleReport> {
        let _one_at_a_time = self.inner.cycle.one_at_a_time().await;
        let Some(lease) = self.inner.leases.cycle().await? else {
            return Err(Error::LeaseHeld {
                lease: CYCLE_LEASE.into(),
            });
        };
        let report = self.cycle_body(None).await;
        lease.release().await;
        report
    }

    /// The cycle itself, under the cycle lease. With `ordered_within`, the
    /// certificates picked in that window (the cluster's
    /// [`ORDER_BUDGET`]) are taken off the cap: a scheduled cycle run again
    /// because the start of the last one could not be recorded does not
    /// order a second cap's worth in the same interval.
    pub(super) async fn cycle_body(
        &self,
        ordered_within: Option<StdDuration>,
    ) -> Result<CycleReport> {
        match self.ensure_main_record().await {
            Ok(None) => {}
            Ok(Some(e)) => debug!(error = %e, "the main domain cannot get a certificate"),
            // The store is failing: listing what is due says so below.
            Err(e) => warn!(error = %e, "could not register the main domain"),
        }
        // `now` first: the pass's mark (its start less what it took) is
        // then not before it, so what was due at `now` is not new to the
        // next pass.
        let now = self.inner.clock.now();
        let started = std::time::Instant::now();
        let renewal = self.inner.renewal;
        // A few more than the cap, to name what the cap leaves for later.
        let mut due = self
            .store()
            .due(
                now,
                renewal.max_attempts,
                renewal.per_cycle.saturating_add(PASSED_OVER_LISTED + 1),
            )
            .await?;
        let used = match ordered_within {
            Some(window) => {
                self.cluster()
                    .budget_used(ORDER_BUDGET, window.saturating_add(BUDGET_SLACK))
                    .await? as usize
            }
            None => 0,
        };
        let mut report = CycleReport {
            left_for_later: left_for_later(&mut due, renewal.per_cycle.saturating_sub(used)),
            ..CycleReport::default()
        };
        info!(due = due.len(), "maintenance cycle started");
        self.issue_due(due, &mut report).await;
        report.at_attempt_limit = self.passed_over_at_limit().await;
        report.expiring_soon = self.notice_expiring(&report).await;
        info!(%report, "maintenance cycle finished");
        self.mark_pass(started.elapsed()).await;
        self.emit(Event::CycleFinished {
            report: Arc::new(report.clone()),
            duration: started.elapsed(),
        });
        Ok(report)
    }

    /// Issues the picked `due` entries with bounded concurrency, each
    /// charged to the interval's order budget, into `report`.
    async fn issue_due(&self, due: Vec<DueEntry>, report: &mut CycleReport) {
        let renewal = self.inner.renewal;
        let semaphore = Arc::new(Semaphore::new(self.inner.cycle.concurrency()));
        let gate = Arc::new(Gate::new(&renewal));
        let mut tasks = JoinSet::new();
        for entry in due {
            let this = self.clone();
            let semaphore = semaphore.clone();
            let gate = gate.clone();
            let span = tracing::info_span!("renew", domain = %entry.domain);
            tasks.spawn(
                async move {
                    let _permit = semaphore.acquire_owned().await;
                    let domain = entry.domain;
                    // Once the CA is down or asks to slow down, a setting is
                    // wrong or the store keeps failing, the rest of the
                    // cycle waits for the next one.
                    if let Some(reason) = gate.stopped() {
                        return (domain, Outcome::Skipped(reason));
                    }
                    let outcome = this.renew(&domain).await;
                    gate.record(&outcome);
                    (domain, outcome)
                }
                .instrument(span),
            );
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((domain, Outcome::Issued(_))) => report.issued.push(domain),
                Ok((domain, Outcome::Failed(e))) => report.failed.push(CycleFailure {
                    domain,
                    error: Arc::new(e),
                }),
                Ok((domain, Outcome::Deferred(e))) => report.deferred.push(CycleFailure {
                    domain,
                    error: Arc::new(e),
                }),
                Ok((domain, Outcome::Skipped(reason))) => report.skipped.push((domain, reason)),
                Err(e) => warn!(error = %e, "renewal task ended abnormally"),
            }
        }
        report.stopped = gate.stopped();
        if let Some(reason) = report.stopped {
            warn!(%reason, "the cycle stopped ordering; the rest waits for the next cycle");
        }
        report.deferred.sort_by(|a, b| a.domain.cmp(&b.domain));
        report.issued.sort();
        report.failed.sort_by(|a, b| a.domain.cmp(&b.domain));
        report.skipped.sort();
    }

    /// Renewals that came due since the last pass (a cycle or one of
    /// these), between two maintenance cycles: what
    /// [`run`](Self::run) does when it is not the cycle's time, under the
    /// cycle lease. `since_cycle` is the age of the cluster's cycle mark.
    ///
    /// Only records whose renew date came after the last pass started are
    /// picked (a retry date, a renewal window that opened, the CA's
    /// renewal window to ask again, a new domain); what a pass left (not
    /// attempted, or over the cap) waits for the next cycle, as before,
    /// unless its certificate is too close to expiry to wait: its renew
    /// date is then a retry date
    /// ([`RenewalPolicy::on_not_attempted`](super::RenewalPolicy::on_not_attempted)).
    /// The pass orders only what the maintenance interval's cap leaves:
    /// `per_cycle` less the orders since the last cycle started, counted in
    /// the cluster's order budget ([`ORDER_BUDGET`]), so the cap holds for
    /// the cycle and every pass of every instance together. `None` when
    /// nothing came due.
    pub(super) async fn off_cycle_body(
        &self,
        since_cycle: StdDuration,
    ) -> Result<Option<CycleReport>> {
        let since_pass = self
            .cluster()
            .mark_age(PASS_MARK)
            .await?
            .map_or(since_cycle, |age| age.min(since_cycle));
        // `now` first: the pass's mark (its start less what it took) is
        // then not before it, so what was due at `now` is not new to the
        // next pass.
        let now = self.inner.clock.now();
        let started = std::time::Instant::now();
        let from = time::Duration::try_from(since_pass)
            .ok()
            .and_then(|age| now.checked_sub(age))
            .unwrap_or(now);
        let renewal = self.inner.renewal;
        let mut due = self
            .store()
            .due(
                now,
                renewal.max_attempts,
                renewal.per_cycle.saturating_add(PASSED_OVER_LISTED + 1),
            )
            .await?;
        due.retain(|entry| entry.renew_date > from);
        if due.is_empty() {
            return Ok(None);
        }
        // The orders since the cycle started: the units taken after it, in
        // whole seconds (hence the slack).
        let used = self
            .cluster()
            .budget_used(ORDER_BUDGET, since_cycle.saturating_add(BUDGET_SLACK))
            .await?;
        let cap = renewal.per_cycle.saturating_sub(used as usize);
        let mut report = CycleReport {
            left_for_later: left_for_later(&mut due, cap),
            ..CycleReport::default()
        };
        debug!(due = due.len(), cap, "off-cycle renewals started");
        self.issue_due(due, &mut report).await;
        report.expiring_soon = self.notice_expiring(&report).await;
        if report.left_for_later.total > 0 {
            info!(
                left = report.left_for_later.total,
                "the maintenance interval's cap is spent; the rest waits for the next cycle"
            );
        }
        info!(%report, "off-cycle renewals done");
        self.mark_pass(started.elapsed()).await;
        Ok(Some(report))
    }

    /// Counts one order in the cluster's [`ORDER_BUDGET`].
    async fn charge_order(&self) -> Result<()> {
        let kept = self
            .inner
            .schedule
            .interval()
            .map_or(ORDERS_KEPT, |interval| interval.saturating_mul(2));
        self.cluster()
            .take_budget(ORDER_BUDGET, kept, u32::MAX)
            .await
            .map(|_| ())
    }

    /// Marks, in the cluster, that a pass started `took` ago.
    async fn mark_pass(&self, took: StdDuration) {
        if let Err(e) = self.cluster().set_mark(PASS_MARK, took).await {
            warn!(error = %e, "could not record the start of the renewal pass");
        }
    }

    /// A cycle's issuance of `domain`: under its lease, the record is read
    /// (once) and issued only if still due, so an issuance another task or
    /// instance finished meanwhile is not repeated. A name whose own CA
    /// budget is spent ([`Issuer::admit`](crate::issuer::Issuer::admit)) is
    /// left for later before it takes a place of the interval's cap; an
    /// order the cap cannot count is not made.
    async fn renew(&self, domain: &Domain) -> Outcome {
        let lease = match self.inner.leases.domain(domain).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Outcome::Skipped(SkipReason::AlreadyBeingIssued),
            Err(e) => return not_attempted(domain, e),
        };
        let now = self.inner.clock.now();
        let max_attempts = self.inner.renewal.max_attempts;
        let outcome = match self.store().load(domain).await {
            // Due only because the CA's renewal window may be asked again
            // (after a failed attempt, it is tried again as always).
            Ok(Some(record))
                if record.is_due(now, max_attempts)
                    && record.attempts == 0
                    && record.ari.as_ref().is_some_and(|ari| ari.renew_at > now) =>
            {
                match self.charge_order().await {
                    Ok(()) => self.check_renewal_window(record).await,
                    Err(e) => not_attempted(domain, e),
                }
            }
            Ok(Some(record)) if record.is_due(now, max_attempts) => {
                let admitted = self.inner.issuing.issuer.admit(&request_for(&record)).await;
                match admitted {
                    Err(e @ Error::BudgetSpent { .. }) => self.leave_for_budget(record, &e).await,
                    Err(e) if e.is_store_failure() => not_attempted(domain, e),
                    // Anything else is the issuance's to meet and record.
                    Ok(()) | Err(_) => match self.charge_order().await {
                        Ok(()) => self.issue_leased(record, false).await,
                        Err(e) => not_attempted(domain, e),
                    },
                }
            }
            Ok(Some(_)) => Outcome::Skipped(SkipReason::NoLongerDue),
            Ok(None) => Outcome::Skipped(SkipReason::Removed),
            Err(e) => not_attempted(domain, e),
        };
        lease.release().await;
        outcome
    }

    /// The certificates at the attempt limit; `None` when the store failed
    /// to tell.
    async fn passed_over_at_limit(&self) -> Option<PassedOver> {
        let max = self.inner.renewal.max_attempts;
        match self.store().at_attempt_limit(max, PASSED_OVER_LISTED).await {
            Ok(limit) => Some(limit),
            Err(e) => {
                warn!(error = %e, "could not count the certificates at the attempt limit");
                None
            }
        }
    }

    /// Looks at every certificate the cycle tried without success or passed
    /// over (a bounded set), and sends
    /// [`Event::ExpiringSoon`] for each one in force that expires within
    /// [`EXPIRING_SOON_DAYS`](crate::events::EXPIRING_SOON_DAYS) days, once
    /// per certificate. Returns those expiring, notified now or before.
    async fn notice_expiring(&self, report: &CycleReport) -> Vec<Domain> {
        let mut candidates: BTreeSet<&Domain> = BTreeSet::new();
        candidates.extend(report.failed.iter().map(|f| &f.domain));
        candidates.extend(report.deferred.iter().map(|f| &f.domain));
        candidates.extend(report.skipped.iter().map(|(d, _)| d));
        candidates.extend(&report.left_for_later.domains);
        if let Some(limit) = &report.at_attempt_limit {
            candidates.extend(&limit.domains);
        }
        let now = self.inner.clock.now();
        let mut expiring = Vec::new();
        for domain in candidates {
            let record = match self.store().load(domain).await {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(e) => {
                    warn!(%domain, error = %e, "could not read a certificate to check its expiry");
                    continue;
                }
            };
            if !is_expiring_unrenewed(&record, now) {
                continue;
            }
            expiring.push(domain.clone());
            self.notify_expiring(&record).await;
        }
        expiring
    }
}

/// Splits what the cap leaves for later off `due` (read with
/// `cap + PASSED_OVER_LISTED + 1` as its limit).
fn left_for_later(due: &mut Vec<DueEntry>, cap: usize) -> PassedOver {
    if due.len() <= cap {
        return PassedOver {
            exact: true,
            ..PassedOver::default()
        };
    }
    let rest = due.split_off(cap);
    PassedOver {
        total: rest.len() as u64,
        // A full read means there may be more behind it.
        exact: rest.len() <= PASSED_OVER_LISTED,
        domains: rest
            .into_iter()
            .take(PASSED_OVER_LISTED)
            .map(|e| e.domain)
            .collect(),
    }
}

/// Stops a cycle's ordering when the CA is down (several CA failures in a
/// row) or rate limits, when a setting is wrong, or when certkeeper's own
/// store keeps failing (several store failures in a row).
struct Gate {
    max_ca_failures: u32,
    ca_failures_in_a_row: AtomicU32,
    max_store_failures: u32,
    store_failures_in_a_row: AtomicU32,
    stopped: Mutex<Option<SkipReason>>,
}

impl Gate {
    fn new(renewal: &super::RenewalPolicy) -> Self {
        Self {
            max_ca_failures: renewal.max_ca_failures.max(1),
            ca_failures_in_a_row: AtomicU32::new(0),
            max_store_failures: renewal.max_store_failures.max(1),
            store_failures_in_a_row: AtomicU32::new(0),
            stopped: Mutex::new(None),
        }
    }

    fn stopped(&self) -> Option<SkipReason> {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self, reason: SkipReason) {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
    }

    fn record(&self, outcome: &Outcome) {
        let one_more = |count: &AtomicU32, max: u32, reason: SkipReason| {
            if count.fetch_add(1, Ordering::SeqCst) + 1 >= max {
                self.stop(reason);
            }
        };
        match outcome {
            Outcome::Deferred(e) if e.is_store_failure() => one_more(
                &self.store_failures_in_a_row,
                self.max_store_failures,
                SkipReason::StoreUnavailable,
            ),
            // Anything else deferred: the store answered.
            Outcome::Deferred(_) => self.store_failures_in_a_row.store(0, Ordering::SeqCst),
            _ => {}
        }
        match outcome {
            Outcome::Deferred(e) if e.is_rate_limited() => self.stop(SkipReason::RateLimited),
            Outcome::Deferred(e) if e.is_settings_error() => self.stop(SkipReason::Misconfigured),
            Outcome::Deferred(e) if e.is_ca_unavailable() => one_more(
                &self.ca_failures_in_a_row,
                self.max_ca_failures,
                SkipReason::CaUnavailable,
            ),
            // The store's failure, or stored data that cannot be read: the
            // CA was not asked, or answered.
            Outcome::Deferred(_) => {}
            // The CA answered about the domain, and the store kept it.
            Outcome::Issued(_) | Outcome::Failed(_) => {
                self.ca_failures_in_a_row.store(0, Ordering::SeqCst);
                self.store_failures_in_a_row.store(0, Ordering::SeqCst);
            }
            // The account's order budget is spent: the rest waits too.
            Outcome::Skipped(SkipReason::OrderBudget) => self.stop(SkipReason::OrderBudget),
            Outcome::Skipped(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn entries(n: usize) -> Vec<DueEntry> {
        (0..n)
            .map(|i| DueEntry {
                domain: Domain::new(&format!("d{i:04}.example.com")).unwrap(),
                version: 1,
                renew_date: datetime!(2030-01-01 0:00 UTC),
                attempts: 0,
            })
            .collect()
    }

    #[test]
    fn the_store_failing_in_a_row_stops_the_cycle_and_anything_it_kept_resets_the_count() {
        let store_down = || Outcome::Deferred(Error::store("memory", "down"));
        let ca_down = || {
            Outcome::Deferred(Error::Timeout {
                step: "issue",
                after: std::time::Duration::from_secs(1),
            })
        };
        let gate = Gate::new(&crate::RenewalPolicy::default());
        gate.record(&store_down());
        gate.record(&store_down());
        // A CA failure was stored: the store answered.
        gate.record(&ca_down());
        gate.record(&store_down());
        gate.record(&store_down());
        assert_eq!(gate.stopped(), None);
        gate.record(&store_down());
        assert_eq!(gate.stopped(), Some(SkipReason::StoreUnavailable));

        // Store failures say nothing of the CA, and stored data that
        // cannot be read says nothing of either.
        let gate = Gate::new(&crate::RenewalPolicy::default());
        gate.record(&ca_down());
        gate.record(&ca_down());
        gate.record(&store_down());
        gate.record(&Outcome::Deferred(Error::Corrupt {
            key: "a.example.com".into(),
            reason: "truncated".into(),
        }));
        assert_eq!(gate.stopped(), None);
        gate.record(&ca_down());
        assert_eq!(gate.stopped(), Some(SkipReason::CaUnavailable));

        // A keyring that cannot open what the store holds is a setting.
        let gate = Gate::new(&crate::RenewalPolicy::default());
        gate.record(&Outcome::Deferred(Error::Decrypt));
        assert_eq!(gate.stopped(), Some(SkipReason::Misconfigured));
    }

    #[test]
    fn the_cap_leaves_the_rest_for_later_counted_and_named() {
        let mut due = entries(5);
        let left = left_for_later(&mut due, 10);
        assert_eq!((due.len(), left.total, left.exact), (5, 0, true));

        let mut due = entries(13);
        let left = left_for_later(&mut due, 10);
        assert_eq!(due.len(), 10);
        assert_eq!((left.total, left.exact), (3, true));
        assert_eq!(left.domains[0].as_str(), "d0010.example.com");

        // Read with cap + LISTED + 1: a full read means "at least".
        let mut due = entries(10 + PASSED_OVER_LISTED + 1);
        let left = left_for_later(&mut due, 10);
        assert_eq!(left.total, PASSED_OVER_LISTED as u64 + 1);
        assert!(!left.exact);
        assert_eq!(left.domains.len(), PASSED_OVER_LISTED);
    }
}
