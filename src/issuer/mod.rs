//! Where certificates come from: the [`Issuer`] trait, the ACME issuer and the
//! self-signed issuer.

mod acme;
mod self_signed;

pub use acme::{AcmeIssuer, AcmeIssuerBuilder};
pub use self_signed::SelfSignedIssuer;

use std::fmt::{self, Debug};

use async_trait::async_trait;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::store::IssuerKind;
use crate::{Domain, Error, Result};

/// Produces a certificate and its private key for a domain.
///
/// # Contract
/// - The returned chain starts with a leaf valid for `domain`.
/// - The private key is returned to the caller only; an issuer must not log
///   it or keep it beyond the call.
/// - An issuer that talks to a network puts a time limit on every call, so
///   `issue` always finishes.
#[async_trait]
pub trait Issuer: Debug + Send + Sync + 'static {
    /// Issues a certificate for `domain`.
    async fn issue(&self, domain: &Domain) -> Result<IssuedCert>;

    /// What kind of issuer this is.
    fn kind(&self) -> IssuerKind;
}

/// A freshly issued certificate with its private key in clear (in memory only).
///
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
    /// Start of the leaf's validity.
    pub not_before: OffsetDateTime,
    /// End of the leaf's validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the leaf's DER, lowercase hex.
    pub fingerprint: String,
}

impl IssuedCert {
    /// Builds an `IssuedCert` from PEM, reading the validity of the leaf.
    pub fn from_pem(chain_pem: String, key_pem: Zeroizing<String>) -> Result<Self> {
        let leaf = leaf_der(&chain_pem)?;
        let (not_before, not_after) = validity(&leaf)?;
        Ok(Self {
            fingerprint: fingerprint(&leaf),
            chain_pem,
            key_pem,
            not_before,
            not_after,
        })
    }
}

impl Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The first certificate of a PEM chain, as DER.
pub fn leaf_der(chain_pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| Error::Certificate("no certificate in PEM chain".into()))?
        .map_err(|e| Error::Certificate(format!("bad PEM certificate: {e}")))
}

/// Every certificate of a PEM chain, as DER, leaf first.
pub fn chain_der(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate(format!("bad PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Certificate("no certificate in PEM chain".into()));
    }
    Ok(chain)
}

/// The validity period of a DER certificate.
pub fn validity(der: &[u8]) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::Certificate(format!("cannot parse certificate: {e}")))?;
    let v = cert.validity();
    Ok((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

/// SHA-256 of `der`, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
