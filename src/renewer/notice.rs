//! The expiry notice: a certificate in force about to expire and not
//! renewed is told once ([`Event::ExpiringSoon`]), by whichever instance
//! sees it first, and forgotten once the certificate is renewed or removed.

use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use time::Duration;
use tracing::warn;

use super::Renewer;
use crate::events::{Event, EXPIRING_SOON_DAYS};
use crate::store::{CertRecord, StoredCert};
use crate::Domain;

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
/// [`EXPIRING_SOON_DAYS`] at `now` while its renewal is due and not done
/// (due now, or failed and waiting for its retry date).
pub(super) fn is_expiring_unrenewed(record: &CertRecord, now: time::OffsetDateTime) -> bool {
    record.certificate.as_ref().is_some_and(|cert| {
        cert.not_after - now <= Duration::days(EXPIRING_SOON_DAYS)
            && (record.renew_date <= now || record.attempts > 0)
    })
}

impl Renewer {
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
            self.inner.leases.instance_id(),
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
