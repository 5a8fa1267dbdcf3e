//! The TLS-ALPN-01 challenge (RFC 8737): the CA connects to port 443 of the
//! domain offering only the `acme-tls/1` protocol, with the domain as its
//! server name, and expects a self-signed certificate for the domain whose
//! critical `id-pe-acmeIdentifier` extension (1.3.6.1.5.5.7.1.31) holds the
//! SHA-256 of the key authorization. For a server that can only open port
//! 443, this validates through the TLS listener it already has.

use std::net::IpAddr;

use async_trait::async_trait;
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use super::{Challenge, ChallengeKind, ChallengeSolver};
use crate::error::CertProblem;
use crate::resolver::CertResolver;
use crate::{Error, Result};

/// Answers `tls-alpn-01` challenges through a [`CertResolver`]: `present`
/// makes the challenge certificate and hands it to the resolver, which
/// serves it to handshakes offering `acme-tls/1` for that name, and only to
/// those; other clients keep getting the name's own certificate.
///
/// Make the solver before the TLS configuration:
/// [`CertResolver::server_config`] then offers `acme-tls/1` besides the
/// server's own protocols. Validation connects to port 443 of the name, so
/// the server's TLS listener must be on 443 and use that configuration (or
/// [`CertResolver::accept`]). A CA validates a wildcard name only through
/// DNS-01, never through this challenge.
///
/// Instances of a cluster behind one name must each be able to answer:
/// the challenge certificate lives in the memory of the instance that
/// presented it, so route the CA to it (or use HTTP-01 with a shared store).
///
/// ```
/// use certkeeper::challenge::{ChallengeKind, ChallengeSolver, TlsAlpn01Solver};
/// use certkeeper::CertResolver;
/// let resolver = CertResolver::new();
/// let solver = TlsAlpn01Solver::new(&resolver);
/// assert_eq!(solver.kind(), ChallengeKind::TlsAlpn01);
/// let config = resolver.server_config(&[b"h2", b"http/1.1"]).unwrap();
/// assert_eq!(config.alpn_protocols[0], b"acme-tls/1");
/// ```
#[derive(Clone, Debug)]
pub struct TlsAlpn01Solver {
    resolver: CertResolver,
}

impl TlsAlpn01Solver {
    /// A solver whose challenge certificates `resolver` (and its clones)
    /// serve.
    pub fn new(resolver: &CertResolver) -> Self {
        resolver.enable_tls_alpn01();
        Self {
            resolver: resolver.clone(),
        }
    }
}

#[async_trait]
impl ChallengeSolver for TlsAlpn01Solver {
    fn kind(&self) -> ChallengeKind {
        ChallengeKind::TlsAlpn01
    }

    async fn present(&self, challenge: &Challenge) -> Result<()> {
        let domain = &challenge.domain;
        if domain.is_wildcard() {
            return Err(Error::WildcardNeedsDns01 {
                domain: domain.clone(),
                challenge: ChallengeKind::TlsAlpn01.as_str(),
            });
        }
        let (cert, key) = challenge_certificate(challenge)?;
        self.resolver.present_tls_alpn01(
            domain,
            &server_name(challenge),
            &challenge.token,
            cert,
            key,
        )
    }

    async fn cleanup(&self, challenge: &Challenge) -> Result<()> {
        self.resolver
            .clear_tls_alpn01(&server_name(challenge), &challenge.token);
        Ok(())
    }
}

/// The server name the CA sends: the domain, or for an IP address its
/// reverse-mapping name (RFC 8738 section 6).
fn server_name(challenge: &Challenge) -> String {
    match challenge.domain.ip() {
        Some(IpAddr::V4(ip)) => {
            let [a, b, c, d] = ip.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        Some(IpAddr::V6(ip)) => {
            let mut name = String::with_capacity(73);
            for byte in ip.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
        None => challenge.domain.to_string(),
    }
}

/// The self-signed certificate of RFC 8737 section 3: the domain (or
/// address) as its only subject alternative name, and the critical
/// acmeIdentifier extension holding the DER OCTET STRING of SHA-256 of the
/// key authorization.
fn challenge_certificate(
    challenge: &Challenge,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let domain = &challenge.domain;
    let cert_error = |e: rcgen::Error| Error::certificate(Some(domain), CertProblem::Generation, e);
    let digest = Sha256::digest(challenge.key_authorization.as_bytes());
    let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(cert_error)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "certkeeper tls-alpn-01 challenge");
    params.distinguished_name = name;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(&digest)];
    let key = KeyPair::generate()
        .map_err(|e| Error::certificate(Some(domain), CertProblem::KeyGeneration, e))?;
    let cert = params.self_signed(&key).map_err(cert_error)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key_der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;
    use x509_parser::extensions::GeneralName;

    fn challenge(name: &str) -> Challenge {
        Challenge {
            domain: Domain::new(name).unwrap(),
            token: "token-1".into(),
            key_authorization: "token-1.thumbprint".into(),
            dns_value: String::new(),
        }
    }

    #[test]
    fn the_certificate_carries_the_name_and_the_critical_digest() {
        let challenge = challenge("www.example.com");
        let (cert, _) = challenge_certificate(&challenge).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::DNSName("www.example.com")]
        );
        let acme = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(acme.critical);
        // DER OCTET STRING (tag 4, length 32) of SHA-256("token-1.thumbprint").
        let digest = Sha256::digest(b"token-1.thumbprint");
        assert_eq!(acme.value[..2], [0x04, 0x20]);
        assert_eq!(&acme.value[2..], digest.as_slice());
    }

    #[test]
    fn addresses_are_named_by_their_reverse_mapping() {
        assert_eq!(
            server_name(&challenge("192.0.2.7")),
            "7.2.0.192.in-addr.arpa"
        );
        let v6 = server_name(&challenge("2001:db8::1"));
        assert!(v6.starts_with("1.0.0.0.0.0.0.0."), "{v6}");
        assert!(v6.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa"), "{v6}");
        assert_eq!(v6.split('.').count(), 34);
        assert_eq!(server_name(&challenge("app.test")), "app.test");
    }
}
