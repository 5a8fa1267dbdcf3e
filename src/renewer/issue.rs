//! Issuing one domain, under its lease: manual generation
//! ([`Renewer::issue_now`]), the issuer's call bounded in time, the CA's
//! renewal window (ARI), and storing the outcome with compare-and-swap,
//! then telling the resolver and the subscribers.
//!
//! Who asks lives with the asker: the cycle's issuance of a due record in
//! `cycle.rs`, a handshake's in `on_demand.rs`.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use time::Duration;
use tracing::{debug, info, warn};

use super::{Renewer, SkipReason, MIN_RETRY_SPACING};
use crate::cert::IssuedCert;
use crate::config::{Naming, Setting};
use crate::error::{rfc3339, Budget, CertProblem};
use crate::events::{problem_type, Event};
use crate::issuer::{IssueRequest, Issued, IssuedChain, Issuer, RenewalWindow, Revoker};
use crate::resolver::CertResolver;
use crate::store::{CertRecord, StoredCert};
use crate::{Domain, Error, Result};

/// What issues and revokes, and how long one issuance may take.
pub(super) struct Issuing {
    /// Every name's issuer (an [`IssuerRouter`](crate::issuer::IssuerRouter)
    /// by default).
    pub(super) issuer: Arc<dyn Issuer>,
    /// Revokes on request ([`Renewer::revoke`]).
    pub(super) revoker: Option<Arc<dyn Revoker>>,
    /// The longest one issuance may take.
    pub(super) timeout: StdDuration,
    /// Whether errors name the builder's methods or the settings' variables.
    pub(super) naming: Naming,
}

/// How one issuance ended.
pub(super) enum Outcome {
    Issued(Box<CertRecord>),
    Failed(Error),
    /// Failed through no fault of the domain (the CA, a setting, the
    /// store): not an attempt.
    Deferred(Error),
    Skipped(SkipReason),
}

impl Renewer {
    /// Manual generation: issues a certificate for `domain` (the main domain
    /// when `None`) now, whatever its renew date and however many attempts
    /// failed before. The domain must still be allowed by the policy: the
    /// main domain (registered if it has no record yet) or a stored custom
    /// domain; anything else is [`Error::DomainNotAllowed`]. Returns the
    /// stored record, with its log; a failure is recorded on the record and
    /// returned as the error.
    pub async fn issue_now(&self, domain: Option<&Domain>) -> Result<CertRecord> {
        let policy = &self.inner.policy;
        let main = policy.main_domain().await?;
        let domain = match domain {
            Some(d) => d.clone(),
            None => main.clone().ok_or_else(|| {
                Error::config(
                    self.inner
                        .issuing
                        .naming
                        .of(Setting::Domain, "RenewerBuilder::main_domain"),
                    "no main domain is set or learned yet; name a domain",
                )
            })?,
        };
        let Some(lease) = self.inner.leases.domain(&domain).await? else {
            return Err(Error::InProgress {
                domain,
                reason: SkipReason::AlreadyBeingIssued,
            });
        };
        // The one read of the record, under the lease.
        let record = match self.store().load(&domain).await? {
            Some(record) => record,
            None if policy.is_main(&domain, main.as_ref()) => self.create_record(&domain).await?,
            None => return Err(Error::DomainNotAllowed { domain, main }),
        };
        let outcome = self.issue_leased(record, true).await;
        lease.release().await;
        match outcome {
            Outcome::Issued(record) => Ok(*record),
            Outcome::Failed(error) | Outcome::Deferred(error) => Err(error),
            Outcome::Skipped(reason) => Err(Error::InProgress { domain, reason }),
        }
    }

    /// Issues for `record`'s domain, whose lease the caller holds, and
    /// stores the outcome.
    pub(super) async fn issue_leased(&self, record: CertRecord, manual: bool) -> Outcome {
        let step = if manual {
            "manual"
        } else if record.certificate.is_some() {
            "renew"
        } else {
            "issue"
        };
        let result = self.issue_sealed(&request_for(&record)).await;
        // Nothing was asked of the CA: not an attempt.
        if let Err(e @ Error::BudgetSpent { .. }) = &result {
            return self.leave_for_budget(record, e).await;
        }
        self.store_outcome(record, result, step).await
    }

    /// Leaves `record`, whose lease the caller holds, for later when a
    /// budget of the CA is spent (`error`): not an attempt. A budget of the
    /// name's own (its failed validations, its registered domain's new
    /// certificates, its duplicates) moves its renew date by the budget's
    /// window over its limit (the pace at which units free up on average),
    /// never past the retry date of a certificate in force, so the name
    /// does not come first in every pass meanwhile; the account's order
    /// budget leaves the record as it is.
    pub(super) async fn leave_for_budget(&self, mut record: CertRecord, error: &Error) -> Outcome {
        let domain = record.domain.clone();
        info!(%domain, error = %error, "left for later: a budget of the CA is spent");
        let (budget, wait) = match *error {
            Error::BudgetSpent {
                budget,
                limit,
                window,
                ..
            } => (budget, window / limit.max(1)),
            _ => (Budget::Orders, StdDuration::ZERO),
        };
        if budget != Budget::Orders {
            let now = self.inner.clock.now();
            let wait = Duration::try_from(wait)
                .unwrap_or(Duration::days(1))
                .max(MIN_RETRY_SPACING);
            // Never past the retry date of a certificate in force, so one
            // of short life is asked for again before it lapses.
            let later = now
                .checked_add(wait)
                .map(|later| match &record.certificate {
                    Some(cert) if cert.not_after > now => {
                        later.min(self.inner.renewal.retry_date(&record, now))
                    }
                    _ => later,
                });
            if let Some(later) = later.filter(|later| record.renew_date < *later) {
                record.renew_date = later.replace_nanosecond(0).unwrap_or(later);
                match self.store().save(&record).await {
                    Ok(_) => {}
                    Err(Error::Conflict { .. }) => {
                        return Outcome::Skipped(SkipReason::KeptChanging)
                    }
                    Err(e) => return not_attempted(&domain, e),
                }
            }
        }
        Outcome::Skipped(budget.skip_reason())
    }

    /// Asks the CA again for its renewal window (ARI) of `record`'s
    /// certificate, whose lease the caller holds, and stores what it says;
    /// issues at once when the window has begun. A CA that does not answer
    /// leaves the record as it was (not an attempt), so the next cycle asks
    /// again.
    pub(super) async fn check_renewal_window(&self, record: CertRecord) -> Outcome {
        let domain = record.domain.clone();
        let Some(chain_pem) = record.certificate.as_ref().map(|c| c.chain_pem.clone()) else {
            return self.issue_leased(record, false).await;
        };
        let issuer = self.inner.issuing.issuer.clone();
        if let Err(e) = issuer.check(&domain) {
            return self.issue_leased_failed(record, e).await;
        }
        let limit = self.inner.issuing.timeout;
        let window = match tokio::time::timeout(limit, issuer.renewal_window(&domain, &chain_pem))
            .await
        {
            Ok(Ok(window)) => window,
            Ok(Err(e)) => {
                warn!(%domain, error = %e, "could not ask the CA for the renewal window; asking again next cycle");
                return Outcome::Deferred(e);
            }
            Err(_) => {
                let e = Error::Timeout {
                    step: "renewal-info",
                    after: limit,
                };
                warn!(%domain, error = %e, "could not ask the CA for the renewal window; asking again next cycle");
                return Outcome::Deferred(e);
            }
        };
        let now = self.inner.clock.now();
        let mut next = record.clone();
        if self
            .inner
            .renewal
            .on_renewal_window(&mut next, window.as_ref(), now)
        {
            next.push_log(window_log(&next, now));
        }
        match self.store().save(&next).await {
            Ok(version) => next.version = version,
            Err(Error::Conflict { .. }) => return Outcome::Skipped(SkipReason::KeptChanging),
            Err(e) => return not_attempted(&domain, e),
        }
        if next.is_due(now, self.inner.renewal.max_attempts)
            && next.ari.as_ref().is_none_or(|ari| ari.renew_at <= now)
        {
            info!(%domain, "the CA's renewal window has begun; renewing");
            self.issue_leased(next, false).await
        } else {
            debug!(%domain, renew_date = %rfc3339(next.renew_date), "renewal window checked; not begun");
            Outcome::Skipped(SkipReason::RenewalWindowAhead)
        }
    }

    /// Records a failure that happened before the issuer was called.
    async fn issue_leased_failed(&self, record: CertRecord, e: Error) -> Outcome {
        self.store_outcome(record, Err(e), "renew").await
    }

    /// Compare-and-swap against the version read. On a lost race the
    /// outcome is applied to the newer record, unless that one carries a
    /// certificate stored by someone else meanwhile: theirs stands.
    async fn store_outcome(
        &self,
        record: CertRecord,
        result: Result<(IssuedCert, StoredCert, Option<RenewalWindow>)>,
        step: &str,
    ) -> Outcome {
        let domain = record.domain.clone();
        let renewal = self.renewal_in_force();
        let now = self.inner.clock.now();
        let read_fingerprint = fingerprint_of(&record);
        let mut current = record;
        // An issued certificate is worth waiting for the store: the CA
        // issued it, and giving up means ordering the name again.
        let mut patience = StoreRetry::new(result.is_ok());
        let mut conflicts = 0;
        loop {
            let mut next = current.clone();
            match &result {
                Ok((_, cert, window)) => {
                    renewal.on_success(&mut next, cert.clone(), now, step);
                    if window.is_some() {
                        renewal.on_renewal_window(&mut next, window.as_ref(), now);
                        next.push_log(window_log(&next, now));
                    }
                }
                Err(e) if e.counts_no_attempt() => {
                    renewal.on_not_attempted(&mut next, e, now, step)
                }
                Err(e) => renewal.on_failure(&mut next, e, now, step),
            }
            let saved = match self.store().save(&next).await {
                Ok(version) => Ok(version),
                Err(Error::Conflict { .. }) => {
                    conflicts += 1;
                    match self.store().load(&domain).await {
                        // Our own save, whose answer was lost on the way
                        // back: it stands.
                        Ok(Some(fresh)) if stored_ours(&fresh, &result) => {
                            next = fresh;
                            Ok(next.version)
                        }
                        Ok(Some(fresh)) if fingerprint_of(&fresh) != read_fingerprint => {
                            info!(%domain, "renewed elsewhere meanwhile; keeping that certificate");
                            return Outcome::Skipped(SkipReason::RenewedElsewhere);
                        }
                        Ok(Some(fresh)) if conflicts < 3 => {
                            current = fresh;
                            continue;
                        }
                        Ok(Some(_)) => return Outcome::Skipped(SkipReason::KeptChanging),
                        Ok(None) => return Outcome::Skipped(SkipReason::RemovedWhileIssuing),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match saved {
                Ok(version) => {
                    next.version = version;
                    return match result {
                        Ok((issued, stored, _)) => {
                            info!(%domain, renew_date = %rfc3339(next.renew_date), "certificate issued and stored");
                            if let Some(resolver) = &self.inner.resolver {
                                publish_issued(&domain, &issued, resolver);
                            }
                            self.announce_issued(&current, &stored, step).await;
                            Outcome::Issued(Box::new(next))
                        }
                        Err(e) if e.counts_no_attempt() => {
                            warn!(%domain, error = %e, code = e.code(), "could not issue now (CA unavailable or rate limiting, wrong settings, or the store failing); not counted as an attempt");
                            Outcome::Deferred(e)
                        }
                        Err(e) => {
                            warn!(%domain, attempts = next.attempts, error = %e, code = e.code(), "certificate attempt failed");
                            self.announce_failed(&next, &e);
                            Outcome::Failed(e)
                        }
                    };
                }
                Err(e) => match patience.pause(&e) {
                    Some(pause) => {
                        warn!(%domain, error = %e, retry_in = ?pause, "could not store the issued certificate; trying again");
                        tokio::time::sleep(pause).await;
                    }
                    None => return store_failed(&domain, e, &result),
                },
            }
        }
    }

    /// Tells subscribers of a certificate stored over `before` (the record
    /// as it was), and forgets an expiry notice of the one it replaced.
    async fn announce_issued(&self, before: &CertRecord, stored: &StoredCert, step: &str) {
        let domain = before.domain.clone();
        let (issuer, not_after, manual) =
            (stored.issuer.clone(), stored.not_after, step == "manual");
        match &before.certificate {
            Some(old) => {
                self.forget_expiry_notice(&domain, old).await;
                self.emit(Event::Renewed {
                    domain,
                    issuer,
                    not_after,
                    manual,
                });
            }
            None => self.emit(Event::Issued {
                domain,
                issuer,
                not_after,
                manual,
            }),
        }
    }

    /// Tells subscribers of a failed attempt stored in `record`, and when it
    /// was the one that reached the attempt limit, that the cycle gives up
    /// on the certificate.
    fn announce_failed(&self, record: &CertRecord, error: &Error) {
        let max_attempts = self.inner.renewal.max_attempts;
        let problem = problem_type(error);
        let message = error.to_string();
        self.emit(Event::Failed {
            domain: record.domain.clone(),
            attempt: record.attempts,
            max_attempts,
            code: error.code(),
            problem: problem.clone(),
            message: message.clone(),
        });
        // Saved with compare-and-swap, the step to the limit happens once.
        if record.attempts == max_attempts {
            warn!(
                domain = %record.domain,
                attempts = record.attempts,
                "attempt limit reached: the maintenance cycle no longer picks this certificate; manual generation still works"
            );
            self.emit(Event::GaveUp {
                domain: record.domain.clone(),
                attempts: record.attempts,
                not_after: record.certificate.as_ref().map(|c| c.not_after),
                code: error.code(),
                problem,
                message,
            });
        }
    }

    /// Issues what `request` asks and seals the key: the certificate in
    /// clear (to serve at once), as it is stored, and the CA's renewal
    /// window for it (ARI), if it has one.
    async fn issue_sealed(
        &self,
        request: &IssueRequest,
    ) -> Result<(IssuedCert, StoredCert, Option<RenewalWindow>)> {
        let domain = &request.domain;
        let issuer = &self.inner.issuing.issuer;
        issuer.check(domain)?;
        let timeout = self.inner.issuing.timeout;
        let Issued {
            cert: issued,
            issuer: kind,
            ..
        } = tokio::time::timeout(timeout, issuer.issue(request))
            .await
            .map_err(|_| Error::Timeout {
                step: "issue",
                after: timeout,
            })??;
        // An issuer (a CA, or a user's own) that hands out a certificate that
        // is not valid now must not replace a working one.
        let now = self.inner.clock.now();
        if issued.not_after <= now || issued.not_before > now + Duration::minutes(5) {
            return Err(Error::certificate_problem(
                Some(domain),
                CertProblem::NotValidNow {
                    not_before: issued.not_before,
                    not_after: issued.not_after,
                },
            ));
        }
        let stored = self.inner.vault.seal_issued(domain, &issued, kind)?;
        // The certificate stands whatever this says: without a window, the
        // lifetime rule applies.
        let window = match tokio::time::timeout(
            timeout,
            issuer.renewal_window(domain, &issued.chain_pem),
        )
        .await
        {
            Ok(Ok(window)) => window,
            Ok(Err(e)) => {
                warn!(%domain, error = %e, "could not ask the CA for the new certificate's renewal window");
                None
            }
            Err(_) => {
                warn!(%domain, "the CA did not give the new certificate's renewal window in time");
                None
            }
        };
        Ok((issued, stored, window))
    }
}

/// Hands a certificate just issued to the resolver, with the key still in
/// hand (no need to open what was just sealed).
fn publish_issued(domain: &Domain, issued: &IssuedCert, resolver: &CertResolver) {
    if let Err(e) = resolver.insert_stored(domain, &issued.chain_pem, issued.key_pem.as_bytes()) {
        warn!(%domain, error = %e, "issued certificate could not be loaded for serving");
    }
}

/// The log line of a renew time set from the CA's renewal window.
fn window_log(record: &CertRecord, now: time::OffsetDateTime) -> crate::store::LogEntry {
    let message = match &record.ari {
        Some(ari) => format!(
            "the CA's renewal window (ARI) runs from {} to {}; renew at {}{}",
            rfc3339(ari.window_start),
            rfc3339(ari.window_end),
            rfc3339(ari.renew_at),
            ari.explanation_url
                .as_deref()
                .map(|url| format!(" (explanation: {url})"))
                .unwrap_or_default()
        ),
        None => format!(
            "the CA gives no renewal window (ARI) any more; renew from {}",
            rfc3339(record.renew_date)
        ),
    };
    crate::store::LogEntry {
        time: now,
        step: "renewal-window".into(),
        success: true,
        message,
    }
}

fn fingerprint_of(record: &CertRecord) -> Option<String> {
    record.certificate.as_ref().map(|c| c.fingerprint.clone())
}

/// The store failed to keep the outcome of an issuance (`result`): nothing
/// was stored, so nothing is charged to the domain, and the next cycle
/// tries again. A certificate the CA issued is lost with it.
/// How long an issued certificate waits for a failing store before the
/// renewer gives up on it (and orders the name again at the next cycle):
/// pauses of half a second doubling up to 8 s, for at most a minute. The
/// domain's lease is renewed meanwhile, and the save stays fenced by the
/// record's version.
pub(super) const STORE_PATIENCE: StdDuration = StdDuration::from_secs(60);

/// The pauses between tries to store an issued certificate.
struct StoreRetry {
    /// When to give up; `None` for an outcome that is not worth waiting for.
    until: Option<std::time::Instant>,
    next: StdDuration,
}

impl StoreRetry {
    fn new(worth_waiting: bool) -> Self {
        Self {
            until: worth_waiting.then(|| std::time::Instant::now() + STORE_PATIENCE),
            next: StdDuration::from_millis(500),
        }
    }

    /// The pause before trying again after `e`, or `None` to give up.
    fn pause(&mut self, e: &Error) -> Option<StdDuration> {
        let until = self.until?;
        let pause = self.next;
        if !e.is_store_failure() || std::time::Instant::now() + pause > until {
            return None;
        }
        self.next = (pause * 2).min(StdDuration::from_secs(8));
        Some(pause)
    }
}

/// Whether `fresh` holds the certificate `result` issued: a save of ours
/// that landed although its answer was lost.
fn stored_ours(
    fresh: &CertRecord,
    result: &Result<(IssuedCert, StoredCert, Option<RenewalWindow>)>,
) -> bool {
    match (result, &fresh.certificate) {
        (Ok((_, ours, _)), Some(theirs)) => ours.fingerprint == theirs.fingerprint,
        _ => false,
    }
}

fn store_failed<T>(domain: &Domain, e: Error, result: &Result<T>) -> Outcome {
    match result {
        Ok(_) => {
            warn!(%domain, error = %e, "could not store the issued certificate; not counted as an attempt")
        }
        Err(failure) => {
            warn!(%domain, error = %e, failure = %failure, "could not store the outcome of an attempt; not counted as one")
        }
    }
    Outcome::Deferred(e)
}

/// The store failed before anything was asked of the issuer (reading the
/// record, the lease): nothing was stored, so nothing is charged to the
/// domain, and the next cycle tries again.
/// What issuing `record` asks: its name, and the certificate it replaces
/// (the issuer decides whether its CA is told, ARI's `replaces`).
pub(super) fn request_for(record: &CertRecord) -> IssueRequest {
    let request = IssueRequest::new(record.domain.clone());
    match &record.certificate {
        Some(cert) => request.replacing(IssuedChain::new(
            cert.chain_pem.clone(),
            cert.issuer.clone(),
        )),
        None => request,
    }
}

pub(super) fn not_attempted(domain: &Domain, e: Error) -> Outcome {
    warn!(%domain, error = %e, code = e.code(), "the store failed before the attempt; not attempted");
    Outcome::Deferred(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_waits_for_a_failing_store_then_gives_up() {
        let store_down = Error::store("postgres", "pool timed out");
        let mut retry = StoreRetry::new(true);
        let mut waited = StdDuration::ZERO;
        let mut pauses = Vec::new();
        while let Some(pause) = retry.pause(&store_down) {
            pauses.push(pause);
            waited += pause;
            // As if the pause had passed.
            retry.until = retry.until.map(|until| until - pause);
        }
        assert_eq!(
            pauses[..5],
            [500, 1000, 2000, 4000, 8000].map(StdDuration::from_millis)
        );
        assert!(pauses.iter().all(|p| *p <= StdDuration::from_secs(8)));
        assert!(waited <= STORE_PATIENCE, "{waited:?}");
        assert!(
            waited >= STORE_PATIENCE - StdDuration::from_secs(8),
            "{waited:?}"
        );
        // Not for another failure, nor for an outcome not worth waiting for.
        let mut retry = StoreRetry::new(true);
        assert_eq!(retry.pause(&Error::config("x", "wrong")), None);
        assert_eq!(StoreRetry::new(false).pause(&store_down), None);
    }
}
