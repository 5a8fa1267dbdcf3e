//! [`RenewalPolicy`]: the date and attempt rules of the maintenance cycle.

use time::{Duration, OffsetDateTime};

use crate::error::{rfc3339, Error};
use crate::issuer::RenewalWindow;
use crate::store::{AriState, CertRecord, LogEntry, StoredCert};

/// The date rules of the maintenance cycle.
///
/// The defaults are the reference platform's: renew 30 days before expiry,
/// at most 200 certificates a cycle, give up after 5 failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// How long before `not_after` renewal starts (30 days).
    pub renew_before: Duration,
    /// Failed attempts after which the cycle stops picking a certificate (5).
    pub max_attempts: u32,
    /// Most certificates one cycle issues (200), to stay inside the CA's rate limits.
    pub per_cycle: usize,
    /// Failures of the CA itself in a row (see
    /// [`Error::is_ca_unavailable`]) after which a cycle stops ordering (3).
    pub max_ca_failures: u32,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            renew_before: Duration::days(30),
            max_attempts: 5,
            per_cycle: 200,
            max_ca_failures: 3,
        }
    }
}

impl RenewalPolicy {
    /// When a certificate valid from `not_before` to `not_after` should be
    /// renewed: `renew_before` ahead of expiry, but the window is never more
    /// than a third of the lifetime, so a 90-day certificate renews 30 days
    /// before expiry and a 6-day one after 4 days.
    ///
    /// The lifetime is rounded up to whole minutes first (CAs commonly end
    /// validity one second short of whole days), and the renew date is kept
    /// to whole seconds.
    pub fn renew_date(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> OffsetDateTime {
        let lifetime = (not_after - not_before).max(Duration::ZERO);
        let minutes = lifetime.whole_seconds().saturating_add(59).div_euclid(60);
        let window = self
            .renew_before
            .max(Duration::ZERO)
            .min(Duration::minutes(minutes) / 3);
        // Dates near the end of the representable range must not panic.
        let date = not_after.checked_sub(window).unwrap_or(not_after);
        date.replace_nanosecond(0).unwrap_or(date)
    }

    /// Applies a successful issuance to `record`: new certificate, attempts
    /// reset, issue date now, renew date from the new validity.
    pub fn on_success(
        &self,
        record: &mut CertRecord,
        cert: StoredCert,
        now: OffsetDateTime,
        step: &str,
    ) {
        record.renew_date = self.renew_date(cert.not_before, cert.not_after);
        record.issue_date = Some(now);
        record.attempts = 0;
        // The window of the certificate replaced does not apply to the new one.
        record.ari = None;
        record.push_log(LogEntry {
            time: now,
            step: step.to_string(),
            success: true,
            message: format!(
                "issued by {}, valid until {}, renew from {}, sha256 {}",
                cert.issuer,
                rfc3339(cert.not_after),
                rfc3339(record.renew_date),
                cert.fingerprint
            ),
        });
        record.certificate = Some(cert);
    }

    /// Records an issuance that failed through no fault of the domain (the
    /// CA is unavailable or rate limited): a log line, and nothing else, so
    /// the attempts and the renew date stay as they were and the next cycle
    /// tries again.
    pub fn on_not_attempted(
        &self,
        record: &mut CertRecord,
        error: &Error,
        now: OffsetDateTime,
        step: &str,
    ) {
        record.push_log(LogEntry {
            time: now,
            step: step.to_string(),
            success: false,
            message: format!("not counted as an attempt: {error}"),
        });
    }

    /// Applies a failed attempt: attempts + 1 and renew date now, so the next
    /// cycle tries again until `max_attempts`. The certificate in force (if
    /// any) is kept and still served.
    pub fn on_failure(
        &self,
        record: &mut CertRecord,
        error: &Error,
        now: OffsetDateTime,
        step: &str,
    ) {
        record.attempts = record.attempts.saturating_add(1);
        record.renew_date = now;
        record.push_log(LogEntry {
            time: now,
            step: step.to_string(),
            success: false,
            message: format!("attempt {}: {error}", record.attempts),
        });
    }

    /// Applies the CA's renewal window (ARI, RFC 9773) for the record's
    /// certificate, asked at `now`: the renew time is a random time inside
    /// the window (the one picked before while the window still holds it,
    /// so a window the CA repeats does not move it), never after the
    /// certificate expires, and `now` once the window has begun; the renew
    /// date is the earlier of that and when the CA may be asked again. With
    /// no window (the CA has no ARI), the renew date follows
    /// [`renew_date`](Self::renew_date). Returns whether the renew time
    /// changed.
    pub fn on_renewal_window(
        &self,
        record: &mut CertRecord,
        window: Option<&RenewalWindow>,
        now: OffsetDateTime,
    ) -> bool {
        let Some(cert) = &record.certificate else {
            return false;
        };
        let Some(window) = window else {
            let had = record.ari.take().is_some();
            if had || record.attempts == 0 {
                record.renew_date = self.renew_date(cert.not_before, cert.not_after);
            }
            return had;
        };
        let end = window.end.min(cert.not_after);
        let start = window.start.min(end);
        let kept = record
            .ari
            .as_ref()
            .map(|ari| ari.renew_at)
            .filter(|at| (start..=end).contains(at));
        // A window that has begun: renew now.
        let renew_at = if start <= now {
            now
        } else {
            kept.unwrap_or_else(|| random_between(start, end))
        };
        let renew_at = renew_at.replace_nanosecond(0).unwrap_or(renew_at);
        let retry_after = Duration::try_from(window.retry_after).unwrap_or(Duration::days(1));
        let next_check = now.checked_add(retry_after).unwrap_or(now);
        let next_check = next_check.replace_nanosecond(0).unwrap_or(next_check);
        let changed = record.ari.as_ref().map(|ari| ari.renew_at) != Some(renew_at);
        record.ari = Some(AriState {
            window_start: window.start,
            window_end: window.end,
            renew_at,
            next_check,
            explanation_url: window.explanation_url.clone(),
        });
        // A failed attempt's "try again now" stands.
        if record.attempts == 0 || renew_at < record.renew_date {
            record.renew_date = renew_at.min(next_check);
        }
        changed
    }
}

/// A uniformly random time between `start` and `end` (whole seconds).
fn random_between(start: OffsetDateTime, end: OffsetDateTime) -> OffsetDateTime {
    let span = (end - start).whole_seconds().max(0) as u64;
    if span == 0 {
        return start;
    }
    let mut bytes = [0u8; 8];
    // The provider's generator fails only when the system has no entropy;
    // then the window's middle is as good a time as any.
    let offset = match crate::provider::provider().secure_random.fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes) % (span + 1),
        Err(_) => span / 2,
    };
    start + Duration::seconds(offset as i64)
}
