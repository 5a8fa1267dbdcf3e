//! Where certificates come from: the [`Issuer`] trait, the ACME issuer, the
//! self-signed issuer, the [`FallbackIssuer`] and [`IssuerRouter`] made of
//! issuers, and revocation ([`Revoker`]).

mod acme;
mod budget;
mod fallback;
mod router;
mod self_signed;

pub(crate) use acme::settings as acme_settings;
pub use acme::{
    AccountKeyRollover, AcmeIssuer, AcmeIssuerBuilder, ExternalAccountBinding, KeyType,
};
pub(crate) use budget::BudgetCounter;
pub use budget::CaBudgets;
pub use fallback::FallbackIssuer;
/// instant-acme, the ACME client certkeeper builds on, re-exported so that
/// a client given to [`AcmeIssuerBuilder::http_client`] implements the same
/// version of its [`HttpClient`](instant_acme::HttpClient) trait.
pub use instant_acme;
pub use router::IssuerRouter;
pub use self_signed::SelfSignedIssuer;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use crate::cert::{IssuedCert, IssuerKind};
use crate::{Domain, Result};

/// Produces a certificate and its private key for a domain.
///
/// One request value in ([`IssueRequest`]: the name, the certificate it
/// replaces, and room for later per-order options as fields), one result
/// out ([`Issued`]: the certificate and the issuer that issued it). A
/// wrapper that forwards [`issue`](Self::issue) forwards everything an
/// order carries; it forwards [`admit`](Self::admit) too, or the renewer
/// learns of a spent budget only from `issue` (the name is still left for
/// later, but after it was counted in the interval's cap).
///
/// # Contract
/// - The returned chain starts with a leaf valid for the requested domain.
/// - The private key is returned to the caller only; an issuer must not log
///   it or keep it beyond the call.
/// - An issuer that talks to a network puts a time limit on every call, so
///   `issue` always finishes.
/// - [`Issued::issuer`] names the issuer that issued, stored in the record:
///   a custom issuer names itself with [`IssuerKind::new`]; an issuer made
///   of issuers ([`FallbackIssuer`], [`IssuerRouter`]) names the one that
///   did.
/// - The issuer decides about [`IssueRequest::replaces`] itself: an ACME
///   issuer tells its CA (RFC 9773 `replaces`) only when it issued the
///   replaced certificate ([`IssuedChain::issuer`] is its own kind).
#[async_trait]
pub trait Issuer: Debug + Send + Sync + 'static {
    /// Issues a certificate for `request.domain`.
    async fn issue(&self, request: &IssueRequest) -> Result<Issued>;

    /// What kind of issuer this is (for an issuer made of issuers, the one
    /// it tries first).
    fn kind(&self) -> IssuerKind;

    /// Refuses, before anything is ordered, a name this issuer cannot
    /// issue for (a wildcard without a DNS-01 solver:
    /// [`Error::WildcardNeedsDns01`](crate::Error::WildcardNeedsDns01); a
    /// public name with no public CA configured:
    /// [`Error::Config`](crate::Error::Config)). The default accepts every
    /// name. [`issue`](Self::issue) fails the same way.
    fn check(&self, domain: &Domain) -> Result<()> {
        let _ = domain;
        Ok(())
    }

    /// Whether `request` may be ordered now, within the CA's limits the
    /// issuer keeps: [`Error::BudgetSpent`](crate::Error::BudgetSpent)
    /// when a budget of the name is spent (for an
    /// [`AcmeIssuer`]: its failed validations, its registered domain's new
    /// certificates, its duplicates; see [`CaBudgets`]). Counts nothing
    /// and sends nothing to the CA; [`issue`](Self::issue) fails the same
    /// way. The renewer asks it before the name takes a place of the
    /// maintenance interval's cap, so a name waiting on its own budget
    /// does not hold one. The default admits every request.
    async fn admit(&self, request: &IssueRequest) -> Result<()> {
        let _ = request;
        Ok(())
    }

    /// The CA's suggested renewal window for `domain`'s certificate whose
    /// chain (PEM, leaf first) is `chain_pem`: ACME Renewal Information
    /// (ARI, RFC 9773). `Ok(None)` (the default) when the issuer or its CA
    /// has none; the renewer then renews a third of the lifetime (at most
    /// [`RenewalPolicy::renew_before`](crate::RenewalPolicy::renew_before))
    /// ahead of expiry.
    ///
    /// Called by the renewer after each issuance and again, as
    /// [`RenewalWindow::retry_after`] allows, in the maintenance cycle;
    /// never on a TLS handshake.
    async fn renewal_window(
        &self,
        domain: &Domain,
        chain_pem: &str,
    ) -> Result<Option<RenewalWindow>> {
        let _ = (domain, chain_pem);
        Ok(None)
    }
}

/// Conveniences every [`Issuer`] gets.
#[async_trait]
pub trait IssuerExt: Issuer {
    /// Issues a first certificate for `domain` ([`IssueRequest::new`]) and
    /// returns the certificate alone.
    async fn issue_for(&self, domain: &Domain) -> Result<IssuedCert> {
        Ok(self.issue(&IssueRequest::new(domain.clone())).await?.cert)
    }
}

impl<T: Issuer + ?Sized> IssuerExt for T {}

/// What to issue: one value, so that a new per-order option is a new field
/// (the type is `#[non_exhaustive]`: build it with [`new`](Self::new) and
/// its `with_*` methods).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssueRequest {
    /// The name to certify.
    pub domain: Domain,
    /// The certificate in force for the name, which the new one replaces.
    pub replaces: Option<IssuedChain>,
}

impl IssueRequest {
    /// A request for a first certificate of `domain`.
    pub fn new(domain: Domain) -> Self {
        Self {
            domain,
            replaces: None,
        }
    }

    /// The new certificate replaces `replaced`.
    pub fn replacing(mut self, replaced: IssuedChain) -> Self {
        self.replaces = Some(replaced);
        self
    }
}

/// A certificate by its chain, and the issuer that issued it: what a new
/// one replaces ([`IssueRequest::replaces`]), or what is revoked.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedChain {
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The issuer that issued it.
    pub issuer: IssuerKind,
}

impl IssuedChain {
    /// The certificate of `chain_pem`, issued by `issuer`.
    pub fn new(chain_pem: impl Into<String>, issuer: IssuerKind) -> Self {
        Self {
            chain_pem: chain_pem.into(),
            issuer,
        }
    }
}

impl Debug for IssuedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedChain")
            .field("issuer", &self.issuer)
            .field("chain_pem_len", &self.chain_pem.len())
            .finish()
    }
}

/// What an [`Issuer`] issued, and which issuer did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Issued {
    /// The certificate and its private key.
    pub cert: IssuedCert,
    /// The issuer that issued it (stored in the record).
    pub issuer: IssuerKind,
}

impl Issued {
    /// `cert`, issued by `issuer`.
    pub fn new(cert: IssuedCert, issuer: IssuerKind) -> Self {
        Self { cert, issuer }
    }
}

/// Why a certificate is revoked (RFC 5280 section 5.3.1, the codes ACME
/// takes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason given.
    #[default]
    Unspecified,
    /// Its private key was, or may have been, disclosed.
    KeyCompromise,
    /// Replaced by another certificate.
    Superseded,
    /// The name is no longer served (a custom domain removed).
    CessationOfOperation,
}

impl RevocationReason {
    /// The name the command takes (`unspecified`, `key-compromise`,
    /// `superseded`, `cessation-of-operation`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
        }
    }

    /// The reason named `name` (see [`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Unspecified,
            Self::KeyCompromise,
            Self::Superseded,
            Self::CessationOfOperation,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == name)
    }
}

/// Revokes certificates (RFC 8555 section 7.6): the CA stops vouching for
/// them. Its own small trait, beside [`Issuer`]; [`AcmeIssuer`] is one.
///
/// # Contract
/// A revoker revokes only what its CA issued: a certificate whose
/// [`IssuedChain::issuer`] is another issuer fails with
/// [`Error::NotRevocable`](crate::Error::NotRevocable), and nothing is sent.
#[async_trait]
pub trait Revoker: Debug + Send + Sync + 'static {
    /// Revokes `domain`'s certificate `cert` for `reason`.
    async fn revoke(
        &self,
        domain: &Domain,
        cert: &IssuedChain,
        reason: RevocationReason,
    ) -> Result<()>;
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
