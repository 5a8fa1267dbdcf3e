//! Proving control of a domain to the CA: the [`ChallengeSolver`] trait, the
//! default [`Http01Solver`], the [`TlsAlpn01Solver`] for servers that
//! only have port 443, and (feature `dns01`) the `Dns01Solver` (RFC 2136
//! updates with TSIG; with `dns-providers`, DNS providers' HTTP APIs) for
//! wildcard names and servers the CA cannot reach.

#[cfg(feature = "dns01")]
mod dns01;
mod http01;
mod tls_alpn01;

#[cfg(feature = "dns-providers")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns-providers")))]
pub use dns01::DnsProvider;
#[cfg(feature = "dns01")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns01")))]
pub use dns01::{Dns01Solver, Dns01SolverBuilder, TsigAlgorithm};
pub use http01::{
    Http01Responder, Http01Server, Http01Solver, CHALLENGE_PATH_PREFIX, SHARED_ANSWER_PATIENCE,
};
pub use tls_alpn01::TlsAlpn01Solver;

use std::fmt::{self, Debug};

use async_trait::async_trait;

use crate::{Domain, Result};

/// The ACME challenge types (RFC 8555 section 8, RFC 8737).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChallengeKind {
    /// `http-01`: the CA fetches `http://<domain>/.well-known/acme-challenge/<token>`.
    Http01,
    /// `dns-01`: the CA reads a TXT record at `_acme-challenge.<domain>`.
    Dns01,
    /// `tls-alpn-01`: the CA connects on 443 with the `acme-tls/1` protocol.
    TlsAlpn01,
}

impl ChallengeKind {
    /// The name the CA uses (`http-01` ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// One challenge to answer.
#[derive(Clone)]
pub struct Challenge {
    /// The domain being validated.
    pub domain: Domain,
    /// The token the CA chose (base64url).
    pub token: String,
    /// The key authorization (`token.thumbprint`) to serve for `http-01`;
    /// its SHA-256 goes into the `tls-alpn-01` certificate.
    pub key_authorization: String,
    /// The value to publish for `dns-01` (base64url SHA-256 of the key authorization).
    pub dns_value: String,
}

impl Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenge")
            .field("domain", &self.domain)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Answers ACME challenges for the issuer.
///
/// # Contract
/// - After `present` returns `Ok`, the CA must be able to validate the
///   challenge (the response is served, the record published).
/// - `cleanup` removes what `present` added; it is called after validation
///   whether it worked or not, and must succeed for an unknown token.
/// - Both may be called concurrently for different domains and tokens.
#[async_trait]
pub trait ChallengeSolver: Debug + Send + Sync + 'static {
    /// The challenge type this solver answers.
    fn kind(&self) -> ChallengeKind;

    /// Makes the challenge answerable.
    async fn present(&self, challenge: &Challenge) -> Result<()>;

    /// Stops answering the challenge.
    async fn cleanup(&self, challenge: &Challenge) -> Result<()>;
}
