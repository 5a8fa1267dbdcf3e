//! Certificate material: PEM chains, validity, fingerprints, freshly issued
//! certificates and which issuer made them.

use std::borrow::Cow;
use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::domain::Domain;
use crate::error::{CertProblem, Error, Result};

/// Which issuer produced a certificate: [`ACME`](Self::ACME),
/// [`SELF_SIGNED`](Self::SELF_SIGNED), or a name of a user's own
/// [`Issuer`](crate::issuer::Issuer) (`IssuerKind::new("vault-pki")`).
///
/// Stored as its name, so records written before a custom issuer existed
/// still read.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IssuerKind(Cow<'static, str>);

impl IssuerKind {
    /// An ACME CA.
    pub const ACME: Self = Self(Cow::Borrowed("acme"));
    /// Self-signed, for local names and development.
    pub const SELF_SIGNED: Self = Self(Cow::Borrowed("self_signed"));

    /// A custom issuer's name: 1 to 64 characters of `a-z`, `0-9`, `_` and
    /// `-`; anything else is an [`Error::Config`].
    pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Self> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(Error::config(
                "IssuerKind::new",
                format!(
                    "{:?} is not 1 to 64 characters of a-z, 0-9, '_' and '-'",
                    name.chars().take(80).collect::<String>()
                ),
            ));
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IssuerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IssuerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuerKind({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for IssuerKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "acme" => Ok(Self::ACME),
            "self_signed" => Ok(Self::SELF_SIGNED),
            _ => Self::new(name).map_err(serde::de::Error::custom),
        }
    }
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

impl fmt::Debug for IssuedCert {
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
        .ok_or_else(|| Error::certificate_problem(None, CertProblem::NoCertificate))?
        .map_err(|e| Error::certificate(None, CertProblem::BadPem, e))
}

/// Every certificate of a PEM chain, as DER, leaf first.
pub fn chain_der(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::certificate(None, CertProblem::BadPem, e))?;
    if chain.is_empty() {
        return Err(Error::certificate_problem(None, CertProblem::NoCertificate));
    }
    Ok(chain)
}

/// The validity period of a DER certificate.
pub fn validity(der: &[u8]) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::certificate(None, CertProblem::Unparsable, e.to_string()))?;
    let v = cert.validity();
    Ok((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

/// A self-signed certificate for `domain` (an ECDSA P-256 leaf, not a CA,
/// whose subject alternative name is the domain or the IP address), valid
/// from `not_before` to `not_after`: what the self-signed issuer issues and
/// what the resolver serves when it has nothing better.
pub(crate) fn self_signed(
    domain: &Domain,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<IssuedCert> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let cert_error = |e: rcgen::Error| Error::certificate(Some(domain), CertProblem::Generation, e);
    let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(cert_error)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, domain.as_str());
    name.push(DnType::OrganizationName, "certkeeper self-signed");
    params.distinguished_name = name;
    params.not_before = not_before;
    params.not_after = not_after;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = false;
    let key = KeyPair::generate()
        .map_err(|e| Error::certificate(Some(domain), CertProblem::KeyGeneration, e))?;
    let cert = params.self_signed(&key).map_err(cert_error)?;
    IssuedCert::from_pem(cert.pem(), Zeroizing::new(key.serialize_pem()))
}

/// SHA-256 of `der`, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_kinds_keep_their_stored_names_and_custom_ones_are_checked() {
        assert_eq!(
            serde_json::to_string(&IssuerKind::ACME).unwrap(),
            "\"acme\""
        );
        let read: IssuerKind = serde_json::from_str("\"self_signed\"").unwrap();
        assert_eq!(read, IssuerKind::SELF_SIGNED);
        let own = IssuerKind::new("vault-pki").unwrap();
        let read: IssuerKind = serde_json::from_str("\"vault-pki\"").unwrap();
        assert_eq!(read, own);
        for bad in ["", "Vault", "a b", "../x", &"a".repeat(65)] {
            assert!(IssuerKind::new(bad.to_string()).is_err(), "{bad:?}");
            assert!(serde_json::from_str::<IssuerKind>(&format!("{bad:?}")).is_err());
        }
    }

    #[test]
    fn broken_pem_is_a_typed_certificate_error() {
        for bad in [
            "",
            "garbage",
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        ] {
            match chain_der(bad) {
                Err(Error::Certificate { problem, .. }) => {
                    assert!(matches!(
                        problem,
                        CertProblem::NoCertificate | CertProblem::BadPem
                    ))
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            validity(b"not der"),
            Err(Error::Certificate {
                problem: CertProblem::Unparsable,
                ..
            })
        ));
    }
}
