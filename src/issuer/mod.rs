//! Where certificates come from: the [`Issuer`] trait, the ACME issuer, the
//! self-signed issuer, and the [`FallbackIssuer`] made of issuers.

mod acme;
mod budget;
mod fallback;
mod self_signed;

pub(crate) use acme::settings as acme_settings;
pub use acme::{AcmeIssuer, AcmeIssuerBuilder};
pub(crate) use budget::BudgetCounter;
pub use budget::CaBudgets;
pub use fallback::FallbackIssuer;
pub use self_signed::SelfSignedIssuer;

use std::fmt::Debug;

use async_trait::async_trait;

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
    async fn issue_with_kind(&self, domain: &Domain) -> Result<(IssuedCert, IssuerKind)> {
        let issued = self.issue(domain).await?;
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
}
