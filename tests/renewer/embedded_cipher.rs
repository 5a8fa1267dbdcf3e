//! `Embedded` sealing with a cipher given in code: a `SourcedKeyring` whose
//! keys a KMS holds (no `_APP_OPENSSL_KEY_V*` at all), following the KMS
//! when it is refreshed.

use std::sync::{Arc, Mutex};

use certkeeper::cipher::{DataKey, KeySet, KeySource, Keyring, SecretCipher, SourcedKeyring};
use certkeeper::vault::cert_key_aad;
use certkeeper::{async_trait, Config, Domain, Embedded, Error, Result, Setting};

/// A KMS stand-in whose key versions change while the server runs.
#[derive(Debug, Default)]
struct Kms {
    keys: Mutex<KeySet>,
}

#[async_trait]
impl KeySource for Kms {
    async fn keys(&self) -> Result<KeySet> {
        Ok(self.keys.lock().unwrap().clone())
    }
}

fn development_config(dir: &tempfile::TempDir) -> Config {
    Config::from_vars([
        (Setting::Env.name(), "development"),
        (Setting::Domain.name(), "app.example.com"),
        (
            Setting::CertificatesPath.name(),
            dir.path().to_str().unwrap(),
        ),
    ])
    .unwrap()
}

#[tokio::test]
async fn the_embedded_stack_seals_with_a_sourced_keyring_and_follows_its_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(Kms::default());
    kms.keys
        .lock()
        .unwrap()
        .insert(1, DataKey::new([1; 32]))
        .unwrap();
    let cipher = Arc::new(SourcedKeyring::new(kms.clone()).await.unwrap());
    let config = development_config(&dir);
    // No key in the config: `start` refuses, naming the variable ...
    assert!(matches!(
        Embedded::start(config.clone()).await.unwrap_err(),
        Error::Config { name, .. } if name == Setting::openssl_key(1)
    ));
    // ... and the KMS-backed cipher is enough.
    let embedded = Embedded::start_with_cipher(config, cipher.clone())
        .await
        .unwrap();
    let main = Domain::new("app.example.com").unwrap();

    embedded.renewer.issue_now(None).await.unwrap();
    let first = embedded.store.load(&main).await.unwrap().unwrap();
    let first_key = first.certificate.unwrap().sealed_key;
    assert_eq!(first_key.key_version().unwrap(), 1);
    // Sealed by the KMS's key: a keyring of that key alone opens it.
    let v1_only = Keyring::from_key_set(kms.keys().await.unwrap()).unwrap();
    assert!(v1_only.open(&first_key, &cert_key_aad(&main)).is_ok());

    // The KMS gains version 2; after a refresh, new seals use it and the
    // old envelope still opens through the embedded stack's cipher.
    kms.keys
        .lock()
        .unwrap()
        .insert(2, DataKey::new([2; 32]))
        .unwrap();
    cipher.refresh().await.unwrap();
    embedded.renewer.issue_now(None).await.unwrap();
    let second = embedded.store.load(&main).await.unwrap().unwrap();
    let second_key = second.certificate.unwrap().sealed_key;
    assert_eq!(second_key.key_version().unwrap(), 2);
    assert!(v1_only.open(&second_key, &cert_key_aad(&main)).is_err());
    for sealed in [&first_key, &second_key] {
        assert!(embedded.cipher.open(sealed, &cert_key_aad(&main)).is_ok());
    }
    // The resolver serves what was issued.
    assert!(embedded.resolver.lookup(Some(main.as_str())).is_some());
}

#[tokio::test]
async fn the_embedded_stack_takes_a_keyring_built_in_code() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Arc::new(Keyring::from_keys(false, [(4, "a development passphrase")]).unwrap());
    let embedded = Embedded::start_with_cipher(development_config(&dir), keyring.clone())
        .await
        .unwrap();
    embedded.renewer.issue_now(None).await.unwrap();
    let main = Domain::new("app.example.com").unwrap();
    let record = embedded.store.load(&main).await.unwrap().unwrap();
    let sealed = record.certificate.unwrap().sealed_key;
    assert_eq!(sealed.key_version().unwrap(), 4);
    assert!(keyring.open(&sealed, &cert_key_aad(&main)).is_ok());
}
