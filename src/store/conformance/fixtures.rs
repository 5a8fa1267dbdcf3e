//! The records the checks write, and writing and removing them.

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::expect::ok;
use super::scope::Scope;
use crate::cert::IssuerKind;
use crate::cipher::Sealed;
use crate::store::{AriState, CertRecord, CertStore, LogEntry, StoredCert};
use crate::Domain;

pub(super) fn sealed(seed: u8) -> Sealed {
    let payload: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ seed).collect();
    Sealed::with_header(u32::from(seed) + 1, &payload)
}

/// A record with every field set, dates to the second.
pub(super) fn full_record(domain: Domain, renew_date: OffsetDateTime) -> CertRecord {
    let not_before = datetime!(2030-01-02 03:04:05 UTC);
    CertRecord {
        certificate: Some(StoredCert {
            chain_pem: format!(
                "-----BEGIN CERTIFICATE-----\nMIIB{}\n-----END CERTIFICATE-----\n",
                domain.as_str().len()
            ),
            sealed_key: sealed(domain.as_str().len() as u8),
            not_before,
            not_after: not_before + Duration::days(90),
            fingerprint: "ab".repeat(32),
            issuer: IssuerKind::ACME,
        }),
        issue_date: Some(not_before),
        renew_date,
        attempts: 2,
        log: vec![
            LogEntry {
                time: datetime!(2030-01-01 00:00:01 UTC),
                step: "issue".into(),
                success: false,
                message: "CA said: rate limited, \"retry\" after 1h; ünïcödé ✓\nsecond line".into(),
            },
            LogEntry {
                time: datetime!(2030-01-02 03:04:05 UTC),
                step: "renew".into(),
                success: true,
                message: String::new(),
            },
        ],
        ari: Some(AriState {
            window_start: not_before + Duration::days(59),
            window_end: not_before + Duration::days(61),
            renew_at: datetime!(2030-03-03 04:05:06 UTC),
            next_check: datetime!(2030-01-02 09:04:05 UTC),
            explanation_url: Some("https://ca.example/why".into()),
        }),
        ..CertRecord::new(domain, renew_date)
    }
}

pub(super) fn due_record(domain: Domain, renew_date: OffsetDateTime, attempts: u32) -> CertRecord {
    CertRecord {
        attempts,
        ..CertRecord::new(domain, renew_date)
    }
}

pub(super) async fn create(store: &dyn CertStore, record: &CertRecord) -> CertRecord {
    let what = format!("creating {} with version 0", record.domain);
    let version = ok(&what, store.save(record).await);
    assert_eq!(version, 1, "conformance: {what} must return version 1");
    CertRecord {
        version,
        ..record.clone()
    }
}

pub(super) async fn cleanup(store: &dyn CertStore, domains: impl IntoIterator<Item = &Domain>) {
    for domain in domains {
        ok(&format!("deleting {domain}"), store.delete(domain).await);
    }
}

/// Creates a record of this scope for the `due` checks.
pub(super) async fn create_due(
    store: &dyn CertStore,
    scope: &Scope,
    label: &str,
    renew_date: OffsetDateTime,
    attempts: u32,
) -> CertRecord {
    create(
        store,
        &due_record(scope.domain(label), renew_date, attempts),
    )
    .await
}
