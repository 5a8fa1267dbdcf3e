use std::sync::Arc;

use async_trait::async_trait;
use time::Duration;

use super::IssuerKind;
use super::{IssueRequest, Issued, IssuedCert, Issuer};
use crate::cert::self_signed;
use crate::clock::{Clock, SystemClock};
use crate::error::CertProblem;
use crate::{Domain, Error, Result};

/// Issues self-signed certificates, for names no public CA can certify
/// (`localhost`, IP literals, `.test` ...) and for development mode.
///
/// Each certificate is its own trust anchor: an ECDSA P-256 leaf (not a CA)
/// whose subject alternative name is the domain (or the IP address). A client
/// that must trust it adds the leaf itself as a root.
#[derive(Debug, Clone)]
pub struct SelfSignedIssuer {
    validity: Duration,
    clock: Arc<dyn Clock>,
}

impl SelfSignedIssuer {
    /// Certificates valid for 90 days, like a public CA's, so they renew
    /// through the same cycle.
    pub const DEFAULT_VALIDITY: Duration = Duration::days(90);

    /// An issuer of certificates valid for [`Self::DEFAULT_VALIDITY`] from the system time.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An issuer whose certificates start at `clock`'s time.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            validity: Self::DEFAULT_VALIDITY,
            clock,
        }
    }

    /// Sets how long certificates are valid (from one hour to ten years).
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = validity.clamp(Duration::hours(1), Duration::days(3650));
        self
    }

    /// Issues synchronously; [`Issuer::issue`] runs this off the async runtime.
    pub fn issue_blocking(&self, domain: &Domain) -> Result<IssuedCert> {
        // A minute of slack for clients whose clock runs a little behind.
        let now = self.clock.now();
        let not_after = now.checked_add(self.validity).ok_or_else(|| {
            Error::certificate(
                Some(domain),
                CertProblem::Generation,
                "validity past the year 9999",
            )
        })?;
        self_signed(domain, now - Duration::minutes(1), not_after)
    }
}

impl Default for SelfSignedIssuer {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Issuer for SelfSignedIssuer {
    async fn issue(&self, request: &IssueRequest) -> Result<Issued> {
        let this = self.clone();
        let domain = request.domain.clone();
        let cert = tokio::task::spawn_blocking(move || this.issue_blocking(&domain))
            .await
            .map_err(|e| Error::certificate(None, CertProblem::Generation, e))??;
        Ok(Issued::new(cert, IssuerKind::SELF_SIGNED))
    }

    fn kind(&self) -> IssuerKind {
        IssuerKind::SELF_SIGNED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TestClock;
    use time::OffsetDateTime;
    use x509_parser::extensions::GeneralName;

    #[test]
    fn leaf_covers_the_name_and_the_clock_sets_validity() {
        let start = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let issuer = SelfSignedIssuer::with_clock(Arc::new(TestClock::new(start)));
        for name in ["localhost", "127.0.0.1", "::1", "app.test"] {
            let domain = Domain::new(name).unwrap();
            let cert = issuer.issue_blocking(&domain).unwrap();
            assert_eq!(cert.not_after, start + Duration::days(90));
            assert_eq!(cert.not_before, start - Duration::minutes(1));
            let der = crate::cert::leaf_der(&cert.chain_pem).unwrap();
            let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
            let san = parsed.subject_alternative_name().unwrap().unwrap();
            let names: Vec<String> = san
                .value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(d) => d.to_string(),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                        _ => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                    },
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(names, vec![domain.to_string()]);
            assert!(cert.key_pem.contains("BEGIN PRIVATE KEY"));
            assert!(!format!("{cert:?}").contains("PRIVATE"));
        }
    }
}
