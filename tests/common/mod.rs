//! Helpers shared by the integration tests.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod pebble;

/// Sends `tracing` events to the test output (once per test binary);
/// `RUST_LOG` filters them, `certkeeper=debug` by default.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "certkeeper=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

use certkeeper::cipher::{Sealed, SecretCipher};
use certkeeper::{Error, Result};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// A minimal XChaCha20-Poly1305 [`SecretCipher`] with one key (version 1),
/// for tests that need sealing but not key rotation.
pub struct TestCipher {
    key: [u8; 32],
}

impl TestCipher {
    /// A cipher whose key is `seed` repeated.
    pub fn new(seed: u8) -> Self {
        Self { key: [seed; 32] }
    }
}

impl std::fmt::Debug for TestCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCipher")
    }
}

impl SecretCipher for TestCipher {
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Sealed> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = XChaCha20Poly1305::new(&self.key.into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated_data,
                },
            )
            .map_err(|_| Error::Decrypt)?;
        Ok(Sealed::with_header(1, &[&nonce[..], &ciphertext].concat()))
    }

    fn open(&self, sealed: &Sealed, associated_data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (version, payload) = sealed.parse()?;
        if version != 1 {
            return Err(Error::MissingKey { version });
        }
        if payload.len() < 24 {
            return Err(Error::Envelope("shorter than its nonce"));
        }
        let (nonce, ciphertext) = payload.split_at(24);
        XChaCha20Poly1305::new(&self.key.into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated_data,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt)
    }

    fn sealing_version(&self) -> u32 {
        1
    }
}
