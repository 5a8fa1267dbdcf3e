//! Serving the stored certificates: a rustls [`ResolvesServerCert`] that picks
//! the certificate by SNI and is updated in place when one is renewed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::cert::chain_der;
use crate::error::CertProblem;
use crate::{Domain, Error, Result};

/// Picks the certificate for a TLS handshake by its server name (SNI).
///
/// Certificates are swapped in place ([`insert_pem`](Self::insert_pem)), so
/// a renewed certificate is served from the next handshake on without a
/// restart, and the old one is served until then. A handshake without SNI,
/// or for a name with no certificate, gets the fallback certificate if one
/// is set (for example a self-signed one for the main domain), else fails.
/// Clones share the same certificates.
#[derive(Clone, Default)]
pub struct CertResolver {
    inner: Arc<RwLock<State>>,
}

#[derive(Default)]
struct State {
    by_name: HashMap<Domain, Arc<CertifiedKey>>,
    fallback: Option<Domain>,
}

impl CertResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads (or replaces) the certificate for `domain` from its PEM chain and
    /// its PKCS#8 PEM private key.
    pub fn insert_pem(&self, domain: &Domain, chain_pem: &str, key_pem: &[u8]) -> Result<()> {
        let chain = chain_der(chain_pem).map_err(|e| match e {
            Error::Certificate {
                problem, source, ..
            } => Error::Certificate {
                domain: Some(domain.clone()),
                problem,
                source,
            },
            other => other,
        })?;
        // The PEM decoder's error could quote key bytes: keep only the kind.
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| Error::certificate_problem(Some(domain), CertProblem::BadKey))?;
        let signing_key = crate::provider::signing_key(key)
            .map_err(|e| Error::certificate(Some(domain), CertProblem::UnsupportedKey, e))?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|e| Error::certificate(Some(domain), CertProblem::KeyMismatch, e))?;
        self.write()
            .by_name
            .insert(domain.clone(), Arc::new(certified));
        Ok(())
    }

    /// Stops serving `domain`; `true` if it was served.
    pub fn remove(&self, domain: &Domain) -> bool {
        self.write().by_name.remove(domain).is_some()
    }

    /// Whether a certificate for `domain` is loaded.
    pub fn serves(&self, domain: &Domain) -> bool {
        self.read().by_name.contains_key(domain)
    }

    /// Serves `domain`'s certificate to handshakes without SNI or for unknown names.
    pub fn set_fallback(&self, domain: Option<Domain>) {
        self.write().fallback = domain;
    }

    /// The domains served, sorted.
    pub fn domains(&self) -> Vec<Domain> {
        let mut v: Vec<_> = self.read().by_name.keys().cloned().collect();
        v.sort();
        v
    }

    /// The certificate served for `server_name` (`None`: the fallback).
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let state = self.read();
        // Served names are normalised (lowercase, no trailing dot); a SNI
        // name is matched as sent, then lowercased, without parsing it again.
        let by_name = server_name.and_then(|n| {
            let n = n.strip_suffix('.').unwrap_or(n);
            state.by_name.get(n).or_else(|| {
                n.bytes()
                    .any(|b| b.is_ascii_uppercase())
                    .then(|| state.by_name.get(n.to_ascii_lowercase().as_str()))
                    .flatten()
            })
        });
        by_name.cloned().or_else(|| {
            state
                .fallback
                .as_ref()
                .and_then(|d| state.by_name.get(d).cloned())
        })
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, with certkeeper's
    /// crypto provider: see the `aws-lc-rs` and `ring` features) that resolves
    /// through this resolver, offering the application protocols (ALPN)
    /// your server speaks, in order of preference: `&[b"http/1.1"]` for an
    /// HTTP/1.1 server, `&[b"h2", b"http/1.1"]` when it also speaks HTTP/2.
    /// Offering a protocol the server does not speak breaks clients that
    /// pick it.
    pub fn server_config(&self, alpn_protocols: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(crate::provider::provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Tls { source })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = alpn_protocols.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(client_hello.server_name())
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("CertResolver")
            .field("domains", &state.by_name.len())
            .field("fallback", &state.fallback)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::fingerprint;
    use crate::issuer::SelfSignedIssuer;

    fn served_fingerprint(resolver: &CertResolver, name: Option<&str>) -> Option<String> {
        resolver
            .lookup(name)
            .map(|key| fingerprint(key.end_entity_cert().unwrap()))
    }

    #[test]
    fn picks_by_name_falls_back_and_swaps_in_place() {
        let issuer = SelfSignedIssuer::new();
        let a = Domain::new("a.test").unwrap();
        let b = Domain::new("b.test").unwrap();
        let cert_a = issuer.issue_blocking(&a).unwrap();
        let cert_b = issuer.issue_blocking(&b).unwrap();
        let resolver = CertResolver::new();
        resolver
            .insert_pem(&a, &cert_a.chain_pem, cert_a.key_pem.as_bytes())
            .unwrap();
        resolver
            .insert_pem(&b, &cert_b.chain_pem, cert_b.key_pem.as_bytes())
            .unwrap();

        assert_eq!(
            served_fingerprint(&resolver, Some("a.test")),
            Some(cert_a.fingerprint.clone())
        );
        // SNI is matched after normalisation.
        assert_eq!(
            served_fingerprint(&resolver, Some("B.TEST")),
            Some(cert_b.fingerprint.clone())
        );
        // Unknown names and no SNI: nothing until a fallback is set.
        assert_eq!(served_fingerprint(&resolver, Some("c.test")), None);
        assert_eq!(served_fingerprint(&resolver, None), None);
        assert_eq!(served_fingerprint(&resolver, Some("../bad")), None);
        resolver.set_fallback(Some(a.clone()));
        assert_eq!(
            served_fingerprint(&resolver, Some("c.test")),
            Some(cert_a.fingerprint.clone())
        );
        assert_eq!(
            served_fingerprint(&resolver, None),
            Some(cert_a.fingerprint.clone())
        );

        // A renewal replaces the certificate for the next handshake; clones share it.
        let shared = resolver.clone();
        let renewed = issuer.issue_blocking(&a).unwrap();
        resolver
            .insert_pem(&a, &renewed.chain_pem, renewed.key_pem.as_bytes())
            .unwrap();
        assert_eq!(
            served_fingerprint(&shared, Some("a.test")),
            Some(renewed.fingerprint)
        );

        assert!(resolver.serves(&b));
        assert!(resolver.remove(&b));
        assert!(!resolver.remove(&b));
        assert!(!resolver.serves(&b));
        assert_eq!(resolver.domains(), vec![a]);
    }

    #[test]
    fn refuses_mismatched_or_broken_material_without_panicking() {
        let issuer = SelfSignedIssuer::new();
        let a = Domain::new("a.test").unwrap();
        let one = issuer.issue_blocking(&a).unwrap();
        let other = issuer.issue_blocking(&a).unwrap();
        let resolver = CertResolver::new();
        let err = resolver
            .insert_pem(&a, &one.chain_pem, other.key_pem.as_bytes())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Certificate {
                    problem: CertProblem::KeyMismatch,
                    ..
                }
            ),
            "{err}"
        );
        assert!(resolver
            .insert_pem(&a, "garbage", one.key_pem.as_bytes())
            .is_err());
        assert!(resolver.insert_pem(&a, &one.chain_pem, b"garbage").is_err());
        let err = resolver
            .insert_pem(
                &a,
                &one.chain_pem,
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            )
            .unwrap_err();
        // The error names the domain, never the key bytes.
        assert!(!err.to_string().contains("AAAA"), "{err}");
        assert!(resolver.domains().is_empty());
        let config = resolver.server_config(&[b"http/1.1"]).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
