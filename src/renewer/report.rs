//! [`CycleReport`]: what one maintenance cycle did, typed.

use std::fmt;
use std::sync::Arc;

pub use crate::error::SkipReason;
use crate::{Domain, Error};

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
    /// unavailable or rate limited): not counted as attempts, tried again
    /// next cycle.
    pub deferred: Vec<CycleFailure>,
    /// Why the cycle stopped ordering before the end, if it did
    /// ([`SkipReason::CaUnavailable`] or [`SkipReason::RateLimited`]).
    pub stopped: Option<SkipReason>,
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
        if let Some(reason) = self.stopped {
            write!(f, " (stopped: {reason})")?;
        }
        Ok(())
    }
}
