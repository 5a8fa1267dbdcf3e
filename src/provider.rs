//! The one crypto provider certkeeper uses, chosen by Cargo feature:
//! `aws-lc-rs` (the default, as in rustls itself) or `ring`. Every TLS
//! configuration, signing key and connection to a CA that certkeeper builds
//! takes it explicitly. certkeeper never installs, changes or reads rustls'
//! process-wide default provider, so it never decides the provider of the
//! application's own TLS, nor depends on it.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!(
    "certkeeper needs a crypto provider: enable its `aws-lc-rs` feature (the default) or its \
     `ring` feature"
);

/// The crypto provider; with both features on, aws-lc-rs.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            #[cfg(feature = "aws-lc-rs")]
            let provider = rustls::crypto::aws_lc_rs::default_provider();
            #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
            let provider = rustls::crypto::ring::default_provider();
            Arc::new(provider)
        })
        .clone()
}

/// `key` (PKCS#8, PKCS#1 or SEC1: RSA, ECDSA or Ed25519) as a rustls
/// signing key of the [`provider`].
pub(crate) fn signing_key(
    key: PrivateKeyDer<'static>,
) -> Result<Arc<dyn SigningKey>, rustls::Error> {
    provider().key_provider.load_private_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_is_the_one_the_features_choose_and_never_the_process_default() {
        let provider = provider();
        #[cfg(feature = "aws-lc-rs")]
        let expected = rustls::crypto::aws_lc_rs::default_provider();
        #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
        let expected = rustls::crypto::ring::default_provider();
        let names = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&provider), names(&expected));
        assert!(provider.fips() == expected.fips());
        // Using it installs nothing process-wide.
        assert!(CryptoProvider::get_default().is_none());
    }
}
