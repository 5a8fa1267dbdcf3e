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
    /// Only the domain's own failures are attempts: one of the CA (down,
    /// rate limiting), of a setting, or of certkeeper's own store, disk or
    /// keyring is not counted ([`Error::is_infrastructure_failure`]).
    pub max_attempts: u32,
    /// Most certificates one cycle issues (200), to stay inside the CA's rate limits.
    pub per_cycle: usize,
    /// Failures of the CA itself in a row (see
    /// [`Error::is_ca_unavailable`]) after which a cycle stops ordering (3).
    pub max_ca_failures: u32,
    /// Failures of certkeeper's own store in a row (see
    /// [`Error::is_store_failure`]) after which a cycle stops ordering (3).
    pub max_store_failures: u32,
    /// The longest wait between two attempts of one certificate (1 day, the
    /// default maintenance interval): what a 90-day certificate and a first
    /// issuance wait after a failed attempt. [`Renewer::run`](crate::Renewer::run)
    /// uses its own interval instead. A certificate whose remaining life is
    /// too short for that waits less (see [`retry_date`](Self::retry_date)).
    pub retry_spacing: Duration,
}

/// The shortest wait between two attempts of one certificate that lives an
/// hour or more. A shorter-lived one waits at least a sixtieth of its life
/// (a second at the least), so a certificate of minutes still gets its
/// attempts before it expires.
pub const MIN_RETRY_SPACING: Duration = Duration::minutes(1);

/// The shortest wait of all, whatever the certificate's life.
const MIN_RETRY_SPACING_SHORT_LIVED: Duration = Duration::seconds(1);

/// The shortest wait between two attempts of `cert`:
/// [`MIN_RETRY_SPACING`], or a sixtieth of the life of a certificate that
/// lives less than an hour, at least [`MIN_RETRY_SPACING_SHORT_LIVED`].
fn min_retry_spacing(cert: &StoredCert) -> Duration {
    let lifetime = (cert.not_after - cert.not_before).max(Duration::ZERO);
    (lifetime / 60_i32).clamp(MIN_RETRY_SPACING_SHORT_LIVED, MIN_RETRY_SPACING)
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            renew_before: Duration::days(30),
            max_attempts: 5,
            per_cycle: 200,
            max_ca_failures: 3,
            max_store_failures: 3,
            retry_spacing: Duration::days(1),
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
    /// CA is unavailable or rate limited, a setting is wrong, or
    /// certkeeper's own store, disk or keyring failed): a log line, and no
    /// attempt counted, so the next cycle tries again.
    ///
    /// The renew date stays as it was, unless the certificate in force is
    /// due and its remaining life is too short to wait for the next cycle
    /// (its [`retry_date`](Self::retry_date) comes before
    /// [`retry_spacing`](Self::retry_spacing) has passed): then it is tried
    /// again at that retry date, between cycles, as a failed attempt would
    /// be, so an outage of the CA shorter than the certificate's remaining
    /// life does not let it lapse. A 90-day certificate is tried again at
    /// the next cycle, as before; a certificate of minutes seconds later.
    pub fn on_not_attempted(
        &self,
        record: &mut CertRecord,
        error: &Error,
        now: OffsetDateTime,
        step: &str,
    ) {
        let in_force = record
            .certificate
            .as_ref()
            .is_some_and(|cert| cert.not_after > now);
        let mut message = format!("not counted as an attempt: {error}");
        if in_force && record.renew_date <= now && record.attempts < self.max_attempts {
            let retry = self.retry_date(record, now);
            if retry - now < self.retry_spacing.max(MIN_RETRY_SPACING) {
                record.renew_date = retry;
                message.push_str(&format!("; tried again from {}", rfc3339(retry)));
            }
        }
        record.push_log(LogEntry {
            time: now,
            step: step.to_string(),
            success: false,
            message,
        });
    }

    /// When a certificate whose attempt failed at `now` is tried again,
    /// `record.attempts` counting that failure: after
    /// [`retry_spacing`](Self::retry_spacing), or sooner when the
    /// certificate in force would not outlive the attempts left at that
    /// pace.
    ///
    /// With `left` attempts left and `remaining` life (`not_after - now`),
    /// the wait is `remaining / (2 * (left + 1))`, at most `retry_spacing`
    /// and at least [`MIN_RETRY_SPACING`] (a sixtieth of the life, at least a
    /// second, for a certificate that lives less than an hour). Each wait
    /// takes a shrinking share
    /// of what remains, so the last attempt comes with about half of the
    /// remaining life still ahead (with 4 left: 0.9 x 0.875 x 0.83 x 0.75
    /// = 0.49), and the operator hears of the last failure well before the
    /// certificate lapses. A 90-day certificate renewing 30 days ahead
    /// waits `retry_spacing` (its shares are days); a 6-day one renewing 2
    /// days ahead waits about 5, 5, 6 and 8 hours; a 1-hour one renewing 20
    /// minutes ahead about 2 minutes; a 90-second one renewing at half of
    /// its life about 4 seconds. Without a certificate in force (a
    /// first issuance, or one that expired) the wait is `retry_spacing`;
    /// after the last attempt there is none (nothing is tried again).
    pub fn retry_date(&self, record: &CertRecord, now: OffsetDateTime) -> OffsetDateTime {
        let left = self.max_attempts.saturating_sub(record.attempts);
        if left == 0 {
            return now;
        }
        let spacing = self.retry_spacing.max(MIN_RETRY_SPACING);
        let wait = match &record.certificate {
            Some(cert) if cert.not_after > now => {
                let share = (cert.not_after - now) / (2.0 * (f64::from(left) + 1.0));
                share.clamp(min_retry_spacing(cert), spacing)
            }
            _ => spacing,
        };
        let date = now.checked_add(wait).unwrap_or(now);
        date.replace_nanosecond(0).unwrap_or(date)
    }

    /// Applies a failed attempt: attempts + 1, and the renew date moved to
    /// when it is tried again ([`retry_date`](Self::retry_date)), until
    /// `max_attempts`. A name the CA paused ([`Error::is_paused`]) goes to
    /// `max_attempts` at once: ordering it again is refused until the
    /// operator unpauses it. The certificate in force (if any) is kept and
    /// still served.
    pub fn on_failure(
        &self,
        record: &mut CertRecord,
        error: &Error,
        now: OffsetDateTime,
        step: &str,
    ) {
        record.attempts = record.attempts.saturating_add(1);
        if error.is_paused() {
            record.attempts = record.attempts.max(self.max_attempts);
        }
        record.renew_date = self.retry_date(record, now);
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
        // A failed attempt's retry date stands unless the window comes first.
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

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use time::macros::datetime;

    use super::*;
    use crate::cert::IssuerKind;
    use crate::cipher::Sealed;
    use crate::Domain;

    const NOT_BEFORE: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);

    /// A record holding a 90-day certificate issued at [`NOT_BEFORE`].
    fn record() -> CertRecord {
        let mut record = CertRecord::new(Domain::new("a.example.com").unwrap(), NOT_BEFORE);
        RenewalPolicy::default().on_success(
            &mut record,
            StoredCert {
                chain_pem: String::new(),
                sealed_key: Sealed::with_header(1, b"sealed"),
                not_before: NOT_BEFORE,
                not_after: NOT_BEFORE + Duration::days(90),
                fingerprint: "00".repeat(32),
                issuer: IssuerKind::ACME,
            },
            NOT_BEFORE,
            "issue",
        );
        record
    }

    fn window(start_day: i64, end_day: i64, retry_hours: u64) -> RenewalWindow {
        RenewalWindow::new(
            NOT_BEFORE + Duration::days(start_day),
            NOT_BEFORE + Duration::days(end_day),
            StdDuration::from_secs(retry_hours * 3600),
        )
    }

    #[test]
    fn a_future_window_gives_a_time_inside_it_kept_while_the_window_holds() {
        let policy = RenewalPolicy::default();
        let mut r = record();
        let now = NOT_BEFORE + Duration::hours(1);
        assert!(policy.on_renewal_window(&mut r, Some(&window(59, 61, 6)), now));
        let ari = r.ari.clone().unwrap();
        assert!(
            (NOT_BEFORE + Duration::days(59)..=NOT_BEFORE + Duration::days(61))
                .contains(&ari.renew_at)
        );
        assert_eq!(ari.next_check, now + Duration::hours(6));
        assert_eq!(r.renew_date, ari.next_check);

        // The same window asked again: the same time.
        let later = now + Duration::hours(7);
        assert!(!policy.on_renewal_window(&mut r, Some(&window(59, 61, 6)), later));
        assert_eq!(r.ari.as_ref().unwrap().renew_at, ari.renew_at);
        assert_eq!(r.renew_date, later + Duration::hours(6));

        // A Retry-After beyond the renew time: the renew time comes first.
        let mut long = window(59, 61, 6);
        long.retry_after = StdDuration::from_secs(200 * 86_400);
        policy.on_renewal_window(&mut r, Some(&long), later);
        assert_eq!(r.renew_date, ari.renew_at);
    }

    #[test]
    fn the_random_time_spreads_over_the_window() {
        let policy = RenewalPolicy::default();
        let times: std::collections::HashSet<_> = (0..20)
            .map(|_| {
                let mut r = record();
                policy.on_renewal_window(&mut r, Some(&window(59, 61, 6)), NOT_BEFORE);
                r.ari.unwrap().renew_at
            })
            .collect();
        assert!(times.len() > 10, "{times:?}");
    }

    #[test]
    fn a_window_that_has_begun_renews_now_and_none_after_expiry() {
        let policy = RenewalPolicy::default();
        let mut r = record();
        let now = NOT_BEFORE + Duration::days(10);
        assert!(policy.on_renewal_window(&mut r, Some(&window(9, 11, 6)), now));
        assert_eq!(r.ari.as_ref().unwrap().renew_at, now);
        assert_eq!(r.renew_date, now);

        let mut late = record();
        policy.on_renewal_window(&mut late, Some(&window(100, 120, 6)), NOT_BEFORE);
        assert_eq!(
            late.ari.unwrap().renew_at,
            NOT_BEFORE + Duration::days(90),
            "never after expiry"
        );
    }

    #[test]
    fn without_a_window_the_lifetime_rule_applies_and_a_failure_stands() {
        let policy = RenewalPolicy::default();
        let mut r = record();
        policy.on_renewal_window(&mut r, Some(&window(59, 61, 6)), NOT_BEFORE);
        assert!(policy.on_renewal_window(&mut r, None, NOT_BEFORE));
        assert_eq!(r.ari, None);
        assert_eq!(r.renew_date, NOT_BEFORE + Duration::days(60));

        // A failed attempt's retry date is not pushed back by a window.
        let failed_at = NOT_BEFORE + Duration::days(60);
        let mut failed = record();
        policy.on_failure(&mut failed, &Error::config("x", "y"), failed_at, "renew");
        policy.on_renewal_window(&mut failed, Some(&window(70, 71, 6)), failed_at);
        assert_eq!(failed.renew_date, failed_at + Duration::days(1));
        assert_eq!(failed.attempts, 1);
    }

    /// A record holding a certificate of `lifetime` issued at
    /// [`NOT_BEFORE`].
    fn record_of(lifetime: Duration) -> CertRecord {
        let mut r = record();
        let cert = r.certificate.as_mut().unwrap();
        cert.not_after = NOT_BEFORE + lifetime;
        r.renew_date = RenewalPolicy::default().renew_date(NOT_BEFORE, cert.not_after);
        r
    }

    /// Fails `r` at its renew date, then at each retry date, until the
    /// attempts run out; returns the failure times.
    fn fail_until_given_up(policy: &RenewalPolicy, r: &mut CertRecord) -> Vec<OffsetDateTime> {
        let mut times = Vec::new();
        while r.attempts < policy.max_attempts {
            let now = r.renew_date;
            times.push(now);
            policy.on_failure(r, &Error::config("x", "y"), now, "renew");
        }
        times
    }

    #[test]
    fn a_ninety_day_certificate_retries_a_day_apart_as_the_cycle_did() {
        let policy = RenewalPolicy::default();
        let mut r = record_of(Duration::days(90));
        let times = fail_until_given_up(&policy, &mut r);
        assert_eq!(times.len(), 5);
        assert_eq!(times[0], NOT_BEFORE + Duration::days(60));
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::days(1), "{times:?}");
        }
        // After the last attempt nothing is scheduled.
        assert_eq!(r.renew_date, times[4]);
        // A first issuance has no life to fit: the full spacing.
        let mut first = CertRecord::new(Domain::new("b.example.com").unwrap(), NOT_BEFORE);
        policy.on_failure(&mut first, &Error::config("x", "y"), NOT_BEFORE, "issue");
        assert_eq!(first.renew_date, NOT_BEFORE + Duration::days(1));
        // The spacing is the policy's.
        let hourly = RenewalPolicy {
            retry_spacing: Duration::hours(1),
            ..policy
        };
        let mut r = record_of(Duration::days(90));
        let times = fail_until_given_up(&hourly, &mut r);
        assert_eq!(times[1] - times[0], Duration::hours(1));
    }

    #[test]
    fn a_six_day_certificate_gets_its_five_attempts_hours_apart_before_expiry() {
        let policy = RenewalPolicy::default();
        let mut r = record_of(Duration::days(6));
        let not_after = NOT_BEFORE + Duration::days(6);
        let times = fail_until_given_up(&policy, &mut r);
        assert_eq!(times.len(), 5);
        assert_eq!(times[0], NOT_BEFORE + Duration::days(4));
        let gaps: Vec<i64> = times
            .windows(2)
            .map(|p| (p[1] - p[0]).whole_minutes())
            .collect();
        // 48 h / 10, then a growing share of a shrinking rest.
        assert_eq!(gaps, vec![288, 324, 378, 472], "{times:?}");
        // The operator hears of the last failure with about half of the
        // two days left.
        let left_at_last = not_after - times[4];
        assert!(
            left_at_last > Duration::hours(22) && left_at_last < Duration::hours(26),
            "{left_at_last}"
        );
    }

    #[test]
    fn a_one_hour_certificate_retries_minutes_apart_and_never_below_a_minute() {
        let policy = RenewalPolicy::default();
        let mut r = record_of(Duration::hours(1));
        let not_after = NOT_BEFORE + Duration::hours(1);
        let times = fail_until_given_up(&policy, &mut r);
        assert_eq!(times[0], NOT_BEFORE + Duration::minutes(40));
        assert_eq!(times[1] - times[0], Duration::minutes(2));
        assert!(times[4] < not_after - Duration::minutes(8), "{times:?}");
        // Seconds before expiry, the wait does not shrink to nothing.
        let mut late = record_of(Duration::hours(1));
        let now = not_after - Duration::seconds(30);
        policy.on_failure(&mut late, &Error::config("x", "y"), now, "renew");
        assert_eq!(late.renew_date, now + MIN_RETRY_SPACING);
        // An expired certificate waits as a first issuance does.
        let mut expired = record_of(Duration::hours(1));
        let now = not_after + Duration::minutes(5);
        policy.on_failure(&mut expired, &Error::config("x", "y"), now, "renew");
        assert_eq!(expired.renew_date, now + Duration::days(1));
    }

    #[test]
    fn a_certificate_of_minutes_gets_its_attempts_seconds_apart_before_expiry() {
        let policy = RenewalPolicy {
            retry_spacing: Duration::minutes(1),
            ..RenewalPolicy::default()
        };
        let mut r = record_of(Duration::seconds(90));
        let not_after = NOT_BEFORE + Duration::seconds(90);
        // The life rounded up to two minutes: renewed 40 s ahead.
        assert_eq!(r.renew_date, NOT_BEFORE + Duration::seconds(50));
        let times = fail_until_given_up(&policy, &mut r);
        assert_eq!(times.len(), 5);
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            // A sixtieth of the life at the least, never the minute.
            assert!(
                gap >= Duration::seconds(1) && gap < Duration::seconds(10),
                "{times:?}"
            );
        }
        assert!(times[4] < not_after - Duration::seconds(10), "{times:?}");
    }

    #[test]
    fn an_outage_near_expiry_is_tried_again_within_the_life_without_an_attempt() {
        let policy = RenewalPolicy {
            retry_spacing: Duration::minutes(1),
            ..RenewalPolicy::default()
        };
        let outage = Error::Timeout {
            step: "issue",
            after: std::time::Duration::from_secs(10),
        };
        // 90 seconds: due at 50, tried again seconds later, again and again
        // while the outage lasts, each time before expiry.
        let mut r = record_of(Duration::seconds(90));
        let due = r.renew_date;
        let not_after = NOT_BEFORE + Duration::seconds(90);
        let mut times = Vec::new();
        loop {
            let now = r.renew_date;
            policy.on_not_attempted(&mut r, &outage, now, "renew");
            if r.renew_date == now {
                break;
            }
            assert!(r.renew_date > now, "{times:?}");
            times.push(r.renew_date);
            assert!(times.len() < 40, "{times:?}");
        }
        assert_eq!(r.attempts, 0);
        assert!(times.len() >= 5, "{times:?}");
        assert!(times[0] - due < Duration::seconds(5), "{times:?}");
        assert!(times.iter().all(|t| *t < not_after + Duration::seconds(2)));
        let line = r.log_lines().pop().unwrap();
        assert!(line.contains("not counted as an attempt"), "{line}");

        // A 90-day certificate waits for the next cycle, its renew date as
        // it was; so does one not due yet, and a first issuance.
        let mut long = record_of(Duration::days(90));
        let due = long.renew_date;
        policy.on_not_attempted(&mut long, &outage, due + Duration::hours(1), "renew");
        assert_eq!(long.renew_date, due);
        let mut early = record_of(Duration::seconds(90));
        let due = early.renew_date;
        policy.on_not_attempted(&mut early, &outage, due - Duration::seconds(5), "manual");
        assert_eq!(early.renew_date, due);
        let mut first = CertRecord::new(Domain::new("b.example.com").unwrap(), NOT_BEFORE);
        policy.on_not_attempted(&mut first, &outage, NOT_BEFORE, "issue");
        assert_eq!(first.renew_date, NOT_BEFORE);
    }
}
