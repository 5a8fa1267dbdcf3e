//! What a cycle passes over, and the notices that must not go unsaid:
//! certificates at the attempt limit and certificates about to expire.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use time::Duration;
use tracing::warn;

use super::{CycleReport, Renewer, PASSED_OVER_LISTED};
use crate::events::{Event, EXPIRING_SOON_DAYS};
use crate::store::{CertRecord, DueEntry, PassedOver, StoredCert};
use crate::Domain;

/// Splits what the cap leaves for later off `due` (read with
/// `cap + PASSED_OVER_LISTED + 1` as its limit).
pub(super) fn left_for_later(due: &mut Vec<DueEntry>, cap: usize) -> PassedOver {
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

/// The store setting that remembers the expiry notice of one certificate
/// (by domain and fingerprint), so that it is sent once across restarts
/// and instances.
fn expiry_notice_key(domain: &Domain, cert: &StoredCert) -> String {
    let digest = Sha256::digest(domain.as_str().as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let fingerprint: String = cert
        .fingerprint
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("expiring-soon.{hex}.{fingerprint}")
}

/// Whether `record`'s certificate in force expires within
/// [`EXPIRING_SOON_DAYS`] at `now` while its renewal is due and not done.
pub(super) fn is_expiring_unrenewed(record: &CertRecord, now: time::OffsetDateTime) -> bool {
    record.certificate.as_ref().is_some_and(|cert| {
        cert.not_after - now <= Duration::days(EXPIRING_SOON_DAYS) && record.renew_date <= now
    })
}

impl Renewer {
    /// The certificates at the attempt limit; `None` when the store failed
    /// to tell.
    pub(super) async fn passed_over_at_limit(&self) -> Option<PassedOver> {
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
    /// over (a bounded set), and sends [`Event::ExpiringSoon`] for each one
    /// in force that expires within [`EXPIRING_SOON_DAYS`] days, once per
    /// certificate. Returns those expiring, notified now or before.
    pub(super) async fn notice_expiring(&self, report: &CycleReport) -> Vec<Domain> {
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

    /// Sends [`Event::ExpiringSoon`] for `record` unless it was sent
    /// before, by this or another instance.
    pub(super) async fn notify_expiring(&self, record: &CertRecord) {
        let Some(cert) = &record.certificate else {
            return;
        };
        let key = expiry_notice_key(&record.domain, cert);
        // A claim no earlier claim (of this instance too) can equal.
        static CLAIMS: AtomicU64 = AtomicU64::new(0);
        let claim = format!(
            "{} {} {}",
            self.inner.instance_id,
            time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
            CLAIMS.fetch_add(1, Ordering::Relaxed)
        );
        match self.store().put_meta_if_absent(&key, &claim).await {
            Ok(winner) if winner == claim => {}
            Ok(_) => return,
            Err(e) => {
                // Better twice than never: the operator still hears of it.
                warn!(domain = %record.domain, error = %e, "could not remember an expiry notice");
            }
        }
        warn!(
            domain = %record.domain,
            not_after = %crate::error::rfc3339(cert.not_after),
            attempts = record.attempts,
            "certificate expires soon and was not renewed"
        );
        self.emit(Event::ExpiringSoon {
            domain: record.domain.clone(),
            not_after: cert.not_after,
            attempts: record.attempts,
            last_error: record
                .log
                .iter()
                .rev()
                .find(|entry| !entry.success)
                .map(|entry| entry.message.clone()),
        });
    }

    /// Forgets the expiry notice of `cert` (renewed or removed), so the
    /// store keeps no setting for a certificate that is gone.
    pub(super) async fn forget_expiry_notice(&self, domain: &Domain, cert: &StoredCert) {
        let now = self.inner.clock.now();
        // Only a certificate this close to expiry can have a notice.
        if cert.not_after - now > Duration::days(EXPIRING_SOON_DAYS) {
            return;
        }
        match self
            .store()
            .delete_meta(&expiry_notice_key(domain, cert))
            .await
        {
            Ok(_) => {}
            Err(e) => warn!(%domain, error = %e, "could not forget an expiry notice"),
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

    #[test]
    fn expiry_notice_keys_are_valid_store_keys() {
        let domain = Domain::new("a-very-long-name.example.com").unwrap();
        let cert = StoredCert {
            chain_pem: String::new(),
            sealed_key: crate::cipher::Sealed::from_bytes(vec![0; 40]),
            not_before: datetime!(2030-01-01 0:00 UTC),
            not_after: datetime!(2030-04-01 0:00 UTC),
            fingerprint: "AB".repeat(32),
            issuer: crate::cert::IssuerKind::ACME,
        };
        let key = expiry_notice_key(&domain, &cert);
        crate::store::check_key("meta key", &key).unwrap();
        assert!(key.ends_with(".abababababababab"));
    }
}
