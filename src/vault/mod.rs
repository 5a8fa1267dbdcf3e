//! The vault: a [`CertStore`] and a [`SecretCipher`] together, so secrets
//! reach the store only sealed, each bound to its record, and can be
//! re-sealed under a new key ([`rotate`]).
//!
//! Every private key is sealed with [`cert_key_aad`]`(domain)` as associated
//! data and every ACME account's credentials with [`account_aad`]`(id)`, so
//! a sealed value moved to another record does not open.

mod rotate;

pub use rotate::{
    rotate, rotate_batch, RotationFailure, RotationReport, SealedValue, MAX_CAS_RETRIES,
};

use std::sync::Arc;

use crate::cert::{IssuedCert, IssuerKind};
use crate::cipher::{Plaintext, Sealed, SecretCipher};
use crate::store::{AccountRecord, CertStore, StoredCert};
use crate::{Domain, Result};

/// Associated data for a certificate's private key: binds it to its domain.
pub fn cert_key_aad(domain: &Domain) -> Vec<u8> {
    [
        b"certkeeper/cert-key/".as_slice(),
        domain.as_str().as_bytes(),
    ]
    .concat()
}

/// Associated data for ACME account credentials: binds them to the account id.
pub fn account_aad(account_id: &str) -> Vec<u8> {
    [
        b"certkeeper/acme-account/".as_slice(),
        account_id.as_bytes(),
    ]
    .concat()
}

/// A store and the cipher that seals what goes into it. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use certkeeper::cipher::Keyring;
/// use certkeeper::store::MemoryStore;
/// use certkeeper::vault::Vault;
/// use certkeeper::Domain;
/// let keyring = Keyring::from_keys(false, [(1, "a development passphrase")])?;
/// let vault = Vault::new(Arc::new(MemoryStore::new()), Arc::new(keyring));
/// let domain = Domain::new("app.test")?;
/// let sealed = vault.seal_cert_key(&domain, b"-----BEGIN PRIVATE KEY-----...")?;
/// assert_eq!(&vault.open_sealed_cert_key(&domain, &sealed)?[..5], b"-----");
/// # Ok::<(), certkeeper::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Vault {
    store: Arc<dyn CertStore>,
    cipher: Arc<dyn SecretCipher>,
}

impl Vault {
    /// A vault over `store`, sealing with `cipher`.
    pub fn new(store: Arc<dyn CertStore>, cipher: Arc<dyn SecretCipher>) -> Self {
        Self { store, cipher }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CertStore> {
        &self.store
    }

    /// The cipher.
    pub fn cipher(&self) -> &Arc<dyn SecretCipher> {
        &self.cipher
    }

    /// Seals a certificate's private key (PEM) for `domain`.
    pub fn seal_cert_key(&self, domain: &Domain, key_pem: &[u8]) -> Result<Sealed> {
        self.cipher.seal(key_pem, &cert_key_aad(domain))
    }

    /// Opens a private key sealed for `domain`.
    pub fn open_sealed_cert_key(&self, domain: &Domain, sealed: &Sealed) -> Result<Plaintext> {
        self.cipher.open(sealed, &cert_key_aad(domain))
    }

    /// Opens the private key of a stored certificate of `domain`.
    pub fn open_cert_key(&self, domain: &Domain, cert: &StoredCert) -> Result<Plaintext> {
        self.open_sealed_cert_key(domain, &cert.sealed_key)
    }

    /// The stored form of a freshly issued certificate: its key sealed for
    /// `domain`, the rest as issued.
    pub fn seal_issued(
        &self,
        domain: &Domain,
        issued: &IssuedCert,
        issuer: IssuerKind,
    ) -> Result<StoredCert> {
        Ok(StoredCert {
            chain_pem: issued.chain_pem.clone(),
            sealed_key: self.seal_cert_key(domain, issued.key_pem.as_bytes())?,
            not_before: issued.not_before,
            not_after: issued.not_after,
            fingerprint: issued.fingerprint.clone(),
            issuer,
        })
    }

    /// Seals an ACME account's credentials for the account `id`.
    pub fn seal_account(&self, id: &str, credentials: &[u8]) -> Result<Sealed> {
        self.cipher.seal(credentials, &account_aad(id))
    }

    /// Opens a stored account's credentials.
    pub fn open_account(&self, record: &AccountRecord) -> Result<Plaintext> {
        self.cipher
            .open(&record.sealed_credentials, &account_aad(&record.id))
    }

    /// Re-seals every stored secret under the cipher's newest key; see [`rotate`].
    pub async fn rotate(&self) -> Result<RotationReport> {
        rotate(&*self.store, &*self.cipher).await
    }
}
