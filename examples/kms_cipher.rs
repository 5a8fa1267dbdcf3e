//! Keys held by a KMS: envelope encryption with a keyring whose versions
//! come from an async source.
//!
//! ```text
//! cargo run --example kms_cipher
//! ```
//!
//! The KMS here is a fake one in the same process (`FakeKms`): it keeps its
//! master key to itself and only wraps and unwraps 32-byte data keys, after
//! a simulated network delay. The application keeps the *wrapped* data keys
//! (in its settings or a database table) and a [`KeySource`] asks the KMS to
//! unwrap them when the keyring is built and at each refresh. Sealing and
//! opening then run locally, without a call to the KMS: the example shows
//! them going on while the KMS is down. With AWS KMS, Google Cloud KMS or
//! an HSM, `FakeKms::unwrap` is the client's `Decrypt` call.
//!
//! Steps: seal under V1; the operator adds V2 at the KMS; a refresh puts it
//! in force; a rotation re-seals everything under V2; the KMS goes down and
//! the keyring keeps working.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use certkeeper::cipher::{DataKey, KeySet, KeySource, SecretCipher, SourcedKeyring};
use certkeeper::store::{AccountRecord, CertStore, MemoryStore};
use certkeeper::vault::{rotate, Vault};
use certkeeper::{Error, Result};
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// A stand-in for a KMS: a master key that never leaves it.
struct FakeKms {
    master: XChaCha20Poly1305,
    up: Mutex<bool>,
}

impl FakeKms {
    fn new() -> Self {
        let master = XChaCha20Poly1305::generate_key(&mut OsRng);
        Self {
            master: XChaCha20Poly1305::new(&master),
            up: Mutex::new(true),
        }
    }

    /// A new random data key, returned wrapped only (the KMS's
    /// `GenerateDataKeyWithoutPlaintext`). `context` is bound to it.
    fn generate_wrapped_data_key(&self, context: &str) -> Vec<u8> {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *key);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: key.as_slice(),
            aad: context.as_bytes(),
        };
        let wrapped = self.master.encrypt(&nonce, payload).expect("32 bytes seal");
        [nonce.as_slice(), &wrapped].concat()
    }

    /// Unwraps a data key (the KMS's `Decrypt`), after a network round trip.
    async fn unwrap(&self, wrapped: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !*self.up.lock().unwrap() {
            return Err(Error::key_source("the KMS did not answer"));
        }
        if wrapped.len() < 24 {
            return Err(Error::key_source("a wrapped data key is too short"));
        }
        let (nonce, ciphertext) = wrapped.split_at(24);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        self.master
            .decrypt(XNonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| Error::key_source(format!("the KMS refused to unwrap {context}")))
    }
}

/// The application's side: the wrapped data keys by version, unwrapped by
/// the KMS on demand.
struct KmsKeys {
    kms: Arc<FakeKms>,
    wrapped: Mutex<Vec<(u32, Vec<u8>)>>,
}

impl KmsKeys {
    fn context(version: u32) -> String {
        format!("certkeeper data key v{version}")
    }
}

// Shows where the keys come from, never a key.
impl std::fmt::Debug for KmsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KmsKeys { kms: \"fake\" }")
    }
}

#[async_trait]
impl KeySource for KmsKeys {
    async fn keys(&self) -> Result<KeySet> {
        let wrapped = self.wrapped.lock().unwrap().clone();
        let mut keys = KeySet::new();
        for (version, blob) in wrapped {
            // The unwrapped bytes are wiped when this buffer drops.
            let plain = self.kms.unwrap(&blob, &Self::context(version)).await?;
            keys.insert(version, DataKey::from_slice(&plain)?)?;
        }
        Ok(keys)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let kms = Arc::new(FakeKms::new());
    let source = Arc::new(KmsKeys {
        wrapped: Mutex::new(vec![(
            1,
            kms.generate_wrapped_data_key(&KmsKeys::context(1)),
        )]),
        kms: kms.clone(),
    });
    let keyring = Arc::new(SourcedKeyring::new(source.clone()).await?);
    println!("keys unwrapped by the KMS: {keyring:?}");

    let store = Arc::new(MemoryStore::new());
    let vault = Vault::new(store.clone(), keyring.clone());
    let credentials = br#"{"id":"https://ca.example/acct/1","key_pkcs8":"..."}"#;
    store
        .save_account(&AccountRecord {
            id: "acme-main".into(),
            version: 0,
            sealed_credentials: vault.seal_account("acme-main", credentials)?,
            created: time::OffsetDateTime::now_utc(),
        })
        .await?;

    // The operator creates V2 at the KMS and stores its wrapped form.
    let v2 = kms.generate_wrapped_data_key(&KmsKeys::context(2));
    source.wrapped.lock().unwrap().push((2, v2));
    keyring.refresh().await?;
    println!(
        "after the refresh, sealing under V{}",
        keyring.sealing_version()
    );

    // Re-seal what V1 sealed, over one snapshot of the keys.
    let report = rotate(&*store, &*keyring.current()).await?;
    assert!(report.is_complete() && report.resealed == 1, "{report:?}");
    println!(
        "rotation: {} re-sealed under V{}",
        report.resealed, report.target_version
    );

    // The KMS goes down: refreshing fails, sealing and opening do not.
    *kms.up.lock().unwrap() = false;
    let refreshed = keyring.refresh().await;
    assert!(matches!(refreshed, Err(Error::KeySource { .. })));
    println!("KMS down, refresh failed: {}", refreshed.unwrap_err());
    let record = store.load_account("acme-main").await?.expect("stored");
    assert_eq!(record.sealed_credentials.key_version()?, 2);
    let opened = vault.open_account(&record)?;
    assert_eq!(&opened[..], credentials);
    let sealed = keyring.seal(b"a new private key", b"certkeeper/cert-key/app.example.com")?;
    let opened = keyring.open(&sealed, b"certkeeper/cert-key/app.example.com")?;
    assert_eq!(&opened[..], b"a new private key");
    println!("sealed and opened under V2 with the KMS down: ok");
    Ok(())
}
