//! Where certificates come from: the [`Issuer`] trait, the ACME issuer, the
//! self-signed issuer, and the [`FallbackIssuer`] made of issuers.

mod acme;
mod budget;
mod fallback;
mod self_signed;

pub(crate) use acme::settings as acme_settings;
pub use acme::{AcmeIssuer, AcmeIssuerBuilder, ExternalAccountBinding, KeyType};
pub(crate) use acme::{EAB_HMAC_KEY_SETTING, EAB_KID_SETTING, KEY_TYPE_SETTING, PROFILE_SETTING};
pub(crate) use budget::BudgetCounter;
pub use budget::CaBudgets;
pub use fallback::FallbackIssuer;
/// instant-acme, the ACME client certkeeper builds on, re-exported so that
/// a client given to [`AcmeIssuerBuilder::http_client`] implements the same
/// version of its [`HttpClient`](instant_acme::HttpClient) trait.
pub use instant_acme;
pub use self_signed::SelfSignedIssuer;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use crate::cert::{IssuedCert, IssuerKind};
use crate::challenge::ChallengeKind;
use crate::{Domain, Result};

/// Produces a certificate and its private key for a domain.
///
/// # Contract
/// - The returned chain starts with a leaf valid for `domain`.
/// - The private key is returned to the caller only; an issuer must not log
///   it or keep it beyond the call.
/// - An issuer that talks to a network puts a time limit on every call, so
///   `issue` always finishes.
/// - [`kind`](Self::kind) names the issuer in the stored record; a custom
///   issuer names itself with [`IssuerKind::new`].
#[async_trait]
pub trait Issuer: Debug + Send + Sync + 'static {
    /// Issues a certificate for `domain`.
    async fn issue(&self, domain: &Domain) -> Result<IssuedCert>;

    /// What kind of issuer this is.
    fn kind(&self) -> IssuerKind;

    /// Issues like [`issue`](Self::issue) and names the issuer that did:
    /// [`kind`](Self::kind) by default; an issuer made of issuers
    /// ([`FallbackIssuer`]) names the one that issued. The renewer stores
    /// that name in the record.
    ///
    /// With `previous_chain_pem`, the certificate it replaces (ARI's
    /// `replaces`), through [`issue_replacing`](Self::issue_replacing).
    async fn issue_with_kind(
        &self,
        domain: &Domain,
        previous_chain_pem: Option<&str>,
    ) -> Result<(IssuedCert, IssuerKind)> {
        let issued = match previous_chain_pem {
            Some(previous) => self.issue_replacing(domain, previous).await?,
            None => self.issue(domain).await?,
        };
        Ok((issued, self.kind()))
    }

    /// The ACME challenge type this issuer proves control of a name with;
    /// `None` (the default) for an issuer that needs none (self-signed, a
    /// private CA). The renewer reads it to refuse, before ordering, what
    /// the challenge cannot validate: a wildcard name needs DNS-01.
    fn challenge(&self) -> Option<ChallengeKind> {
        None
    }

    /// The challenge type this issuer would prove control of `domain`
    /// with (an issuer with solvers of several types picks one per name:
    /// DNS-01 for a wildcard when it has a DNS-01 solver). The default is
    /// [`challenge`](Self::challenge) for every name.
    fn challenge_for(&self, domain: &Domain) -> Option<ChallengeKind> {
        let _ = domain;
        self.challenge()
    }

    /// The CA's suggested renewal window for the certificate whose chain
    /// (PEM, leaf first) is `chain_pem`: ACME Renewal Information (ARI,
    /// RFC 9773). `Ok(None)` (the default) when the issuer or its CA has
    /// none; the renewer then renews a third of the lifetime (at most
    /// [`RenewalPolicy::renew_before`](crate::RenewalPolicy::renew_before))
    /// ahead of expiry.
    ///
    /// Called by the renewer after each issuance and again, as
    /// [`RenewalWindow::retry_after`] allows, in the maintenance cycle;
    /// never on a TLS handshake.
    async fn renewal_window(&self, chain_pem: &str) -> Result<Option<RenewalWindow>> {
        let _ = chain_pem;
        Ok(None)
    }

    /// Issues a certificate for `domain` that replaces the one whose chain
    /// is `previous_chain_pem`. An ACME issuer tells the CA which
    /// certificate is replaced (the `replaces` field of RFC 9773), which CAs
    /// use to exempt renewals from rate limits. The default is
    /// [`issue`](Self::issue).
    async fn issue_replacing(
        &self,
        domain: &Domain,
        previous_chain_pem: &str,
    ) -> Result<IssuedCert> {
        let _ = previous_chain_pem;
        self.issue(domain).await
    }
}

/// A CA's suggested renewal window for one certificate (RFC 9773 section
/// 4.2): renew at a random time between [`start`](Self::start) and
/// [`end`](Self::end), at once when the window has begun already.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenewalWindow {
    /// The window's start.
    pub start: OffsetDateTime,
    /// The window's end.
    pub end: OffsetDateTime,
    /// How long until the CA may be asked again (its `Retry-After`).
    pub retry_after: Duration,
    /// The CA's page explaining the window, when it gives one (for example
    /// why a certificate must be renewed early).
    pub explanation_url: Option<String>,
}

impl RenewalWindow {
    /// A window from `start` to `end`, asked again after `retry_after`.
    pub fn new(start: OffsetDateTime, end: OffsetDateTime, retry_after: Duration) -> Self {
        Self {
            start,
            end,
            retry_after,
            explanation_url: None,
        }
    }
}
