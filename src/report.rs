//! [`CycleReport`]: what one maintenance cycle did, typed.
//!
//! Below both the renewer, which writes reports, and the events, which
//! carry them ([`Event::CycleFinished`](crate::events::Event::CycleFinished)),
//! so neither imports the other for it. Reached as
//! `certkeeper::renewer::{CycleReport, CycleFailure, SkipReason,
//! PASSED_OVER_LISTED}` and `certkeeper::CycleReport`.

use std::fmt;
use std::sync::Arc;

use crate::error::SkipReason;
use crate::store::PassedOver;
use crate::{Domain, Error};

/// How many domains a [`CycleReport`] names per kind of passed-over
/// certificate (left for later by the cap, at the attempt limit); the
/// counts cover the rest.
pub const PASSED_OVER_LISTED: usize = 20;

/// What one maintenance cycle did.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    /// Certificates issued and stored.
    pub issued: Vec<Domain>,
    /// Certificates whose attempt failed, with the error (sorted by domain).
    pub failed: Vec<CycleFailure>,
    /// Certificates picked but left alone, and why.
    pub skipped: Vec<(Domain, SkipReason)>,
    /// Issuances that failed through no fault of their domain (the CA was
    /// unavailable or rate limited, a setting is wrong, or certkeeper's own
    /// store, disk or keyring failed: [`Error::is_infrastructure_failure`]):
    /// not counted as attempts, tried again next cycle.
    pub deferred: Vec<CycleFailure>,
    /// Why the cycle stopped ordering before the end, if it did
    /// ([`SkipReason::CaUnavailable`], [`SkipReason::StoreUnavailable`],
    /// [`SkipReason::RateLimited`], [`SkipReason::OrderBudget`] or
    /// [`SkipReason::Misconfigured`]); the domains it did not reach are in
    /// [`skipped`](Self::skipped) with that reason.
    pub stopped: Option<SkipReason>,
    /// Due certificates the per-cycle cap left for a later cycle: the
    /// first [`PASSED_OVER_LISTED`] by renew
    /// date, and how many at least.
    pub left_for_later: PassedOver,
    /// Certificates that used up their attempts, which the cycle no longer
    /// picks (manual generation still works): how many, and the first
    /// [`PASSED_OVER_LISTED`]. `None` when the
    /// store cannot tell ([`CertStore::at_attempt_limit`](crate::store::CertStore::at_attempt_limit)).
    pub at_attempt_limit: Option<PassedOver>,
    /// Certificates in force that expire within
    /// [`EXPIRING_SOON_DAYS`](crate::events::EXPIRING_SOON_DAYS) days and
    /// were not renewed, among those this cycle tried or passed over.
    pub expiring_soon: Vec<Domain>,
}

/// One failed attempt of a cycle.
#[derive(Debug, Clone)]
pub struct CycleFailure {
    /// The domain.
    pub domain: Domain,
    /// Why it failed: match on it, or on [`Error::code`]. Shared, so the
    /// report stays cheap to clone.
    pub error: Arc<Error>,
}

impl fmt::Display for CycleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} issued, {} failed, {} skipped",
            self.issued.len(),
            self.failed.len(),
            self.skipped.len()
        )?;
        if !self.deferred.is_empty() {
            write!(f, ", {} deferred", self.deferred.len())?;
        }
        if self.left_for_later.total > 0 {
            let more = if self.left_for_later.exact { "" } else { "+" };
            write!(
                f,
                ", {}{more} left for a later cycle",
                self.left_for_later.total
            )?;
        }
        if let Some(limit) = self.at_attempt_limit.as_ref().filter(|l| l.total > 0) {
            write!(f, ", {} at the attempt limit", limit.total)?;
        }
        if !self.expiring_soon.is_empty() {
            write!(f, ", {} expiring soon", self.expiring_soon.len())?;
        }
        if let Some(reason) = self.stopped {
            write!(f, " (stopped: {reason})")?;
        }
        Ok(())
    }
}
