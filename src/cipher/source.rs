//! Where a keyring's key versions come from: [`KeySource`] (async, for keys
//! held by a KMS or an HSM), [`KeySet`] (the versions it gives, also the
//! fixed source of `_APP_OPENSSL_KEY_Vn` passphrases) and [`DataKey`].

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::keyring::{weakness, Keyring};
use crate::config::{Naming, Setting};
use crate::{Error, Result};

/// Bytes of a [`DataKey`]: a 256-bit XChaCha20-Poly1305 key.
pub const DATA_KEY_LEN: usize = 32;

/// The 256-bit key of one keyring version, as XChaCha20-Poly1305 uses it:
/// derived from a passphrase ([`DataKey::from_passphrase`]) or unwrapped by a
/// KMS or an HSM ([`DataKey::from_slice`]).
///
/// Wiped when dropped; `Debug` prints `DataKey(..)`, never the bytes. There
/// is no `PartialEq`: a key is compared in constant time or not at all.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; DATA_KEY_LEN]>);

impl DataKey {
    /// A key from its 32 bytes. The array given is moved in, but a copy the
    /// caller kept elsewhere is the caller's to wipe.
    pub fn new(bytes: [u8; DATA_KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A key from a buffer, such as the plaintext a KMS returns when it
    /// unwraps a data key; the buffer stays the caller's (wipe it, or hold
    /// it in a `Zeroizing`). Fails with [`Error::KeySource`] unless it is
    /// exactly [`DATA_KEY_LEN`] (32) bytes long.
    ///
    /// ```
    /// use certkeeper::cipher::DataKey;
    /// assert!(DataKey::from_slice(&[7; 32]).is_ok());
    /// assert!(DataKey::from_slice(&[7; 16]).is_err());
    /// ```
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        if bytes.len() != DATA_KEY_LEN {
            return Err(Error::key_source(format!(
                "a data key is {DATA_KEY_LEN} bytes long, not {}",
                bytes.len()
            )));
        }
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// The key a passphrase stands for, by [`Keyring::derive_key`]
    /// (HKDF-SHA256, the derivation of `_APP_OPENSSL_KEY_Vn`). No weak-key
    /// check here: [`KeySet::from_passphrases`] makes it.
    pub fn from_passphrase(passphrase: &str) -> Self {
        Self(Keyring::derive_key(passphrase))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

// The array lives in a `Zeroizing`.
impl ZeroizeOnDrop for DataKey {}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Key versions and their [`DataKey`]s: what a [`KeySource`] gives and a
/// [`Keyring`] is built from ([`Keyring::from_key_set`]).
///
/// Versions are numbered from 1; gaps are allowed. The highest version
/// seals unless [`set_sealing_version`](Self::set_sealing_version) names
/// another one, which lets a cluster load a new key everywhere before any
/// instance seals under it. `Debug` shows the versions only.
///
/// A key set is itself a [`KeySource`] that always gives the same keys:
/// [`KeySet::from_passphrases`] is the source of the
/// `_APP_OPENSSL_KEY_Vn` variables.
///
/// ```
/// use certkeeper::cipher::{DataKey, KeySet, Keyring, SecretCipher};
/// let mut keys = KeySet::new();
/// keys.insert(1, DataKey::new([1; 32]))?;
/// keys.insert(2, DataKey::new([2; 32]))?;
/// assert_eq!(keys.sealing_version(), Some(2));
/// keys.set_sealing_version(1);
/// let keyring = Keyring::from_key_set(keys)?;
/// assert_eq!(keyring.versions(), [1, 2]);
/// assert_eq!(keyring.sealing_version(), 1);
/// # Ok::<(), certkeeper::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct KeySet {
    keys: BTreeMap<u32, DataKey>,
    sealing_version: Option<u32>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys of `(version, passphrase)` pairs, such as the values of
    /// `_APP_OPENSSL_KEY_V1`, `_APP_OPENSSL_KEY_V2` ..., each derived by
    /// [`Keyring::derive_key`], the highest version sealing. This is what
    /// [`Keyring::from_keys`] builds its keyring from, with the same checks:
    /// [`Error::Config`] when no key is given or a version is 0 or given
    /// twice, and (in production) [`Error::WeakKey`] for a weak passphrase;
    /// in development a weak one is accepted with a warning, never showing
    /// the key. Errors name this function and the version
    /// (`KeySet::from_passphrases(version 1)`); the keyring a
    /// [`Config`](crate::Config) reads from the environment names the
    /// variable (`_APP_OPENSSL_KEY_V1`) instead.
    pub fn from_passphrases<I, S>(production: bool, passphrases: I) -> Result<Self>
    where
        I: IntoIterator<Item = (u32, S)>,
        S: AsRef<str>,
    {
        Self::from_passphrases_named(
            production,
            passphrases,
            &|_| Naming::Builder,
            "KeySet::from_passphrases",
        )
    }

    /// [`from_passphrases`](Self::from_passphrases), naming in errors the
    /// variable of a version whose `naming` is the environment, otherwise
    /// `method` and the version.
    pub(crate) fn from_passphrases_named<I, S>(
        production: bool,
        passphrases: I,
        naming: &dyn Fn(u32) -> Naming,
        method: &'static str,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = (u32, S)>,
        S: AsRef<str>,
    {
        let name_of = |version: u32| match naming(version) {
            Naming::Environment => Setting::openssl_key(version),
            Naming::Builder => format!("{method}(version {version})"),
        };
        let mut keys = BTreeMap::new();
        for (version, passphrase) in passphrases {
            let name = name_of(version);
            if version == 0 {
                return Err(Error::config(name, "key versions are numbered from 1"));
            }
            if keys.contains_key(&version) {
                return Err(Error::config(name, "this key version is given twice"));
            }
            let passphrase = passphrase.as_ref();
            if let Some(reason) = weakness(passphrase) {
                if production {
                    return Err(Error::WeakKey { name, reason });
                }
                tracing::warn!(
                    setting = %name,
                    reason,
                    "weak encryption key accepted because this is not production"
                );
            }
            keys.insert(version, DataKey::from_passphrase(passphrase));
        }
        if keys.is_empty() {
            let name = match naming(1) {
                Naming::Environment => Setting::openssl_key(1),
                Naming::Builder => method.to_owned(),
            };
            return Err(Error::config(
                name,
                "no encryption key is set; set it to a long random secret (openssl rand -base64 32)",
            ));
        }
        Ok(Self {
            keys,
            sealing_version: None,
        })
    }

    /// Adds the key of `version`. Fails with [`Error::KeySource`] when the
    /// version is 0 or already in the set.
    pub fn insert(&mut self, version: u32, key: DataKey) -> Result<()> {
        if version == 0 {
            return Err(Error::key_source("key versions are numbered from 1"));
        }
        if self.keys.contains_key(&version) {
            return Err(Error::key_source(format!(
                "key version {version} is given twice"
            )));
        }
        self.keys.insert(version, key);
        Ok(())
    }

    /// Makes `version` the one new seals use instead of the highest.
    /// [`Keyring::from_key_set`] fails when the set has no key of that
    /// version.
    pub fn set_sealing_version(&mut self, version: u32) {
        self.sealing_version = Some(version);
    }

    /// The version new seals use: the one set, else the highest; `None`
    /// for an empty set.
    pub fn sealing_version(&self) -> Option<u32> {
        self.sealing_version
            .or_else(|| self.keys.keys().next_back().copied())
    }

    /// The versions in the set, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// The key of `version`.
    pub fn get(&self, version: u32) -> Option<&DataKey> {
        self.keys.get(&version)
    }

    /// How many versions the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys by version, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &DataKey)> + '_ {
        self.keys.iter().map(|(version, key)| (*version, key))
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("versions", &self.versions())
            .field("sealing_version", &self.sealing_version())
            .finish()
    }
}

/// Where the key versions of a keyring come from when they are held
/// elsewhere: a KMS or an HSM that unwraps data keys (envelope
/// encryption), a secret manager, a vault service.
///
/// # What is asynchronous and what is not
/// Sealing and opening ([`SecretCipher`](super::SecretCipher)) are
/// synchronous and local: they run on every renewal and whenever a stored
/// certificate is first served, so they never wait on a network. Only
/// *fetching* the keys is asynchronous: [`keys`](Self::keys) is called when
/// a keyring is built ([`Keyring::from_source`],
/// [`SourcedKeyring::new`](super::SourcedKeyring::new)) and when it is
/// refreshed ([`SourcedKeyring::refresh`](super::SourcedKeyring::refresh)),
/// never per secret. With a KMS, its master key never leaves it: `keys`
/// asks it to unwrap (decrypt) the wrapped data keys kept beside the
/// application, and the keyring holds the unwrapped data keys in memory.
///
/// # Contract
/// - `keys` returns every version that may still be needed to open a
///   stored secret, not only the newest; see [`KeySet`] for which one
///   seals. An empty set is refused by the keyring.
/// - **A version names one key forever.** Never give another key under a
///   version that was used: what was sealed under it would no longer open.
///   A new key is a new, higher version, followed by a
///   [rotation](crate::vault::rotate).
///   [`SourcedKeyring::refresh`](super::SourcedKeyring::refresh) refuses a
///   set that changes the key of a version it holds.
/// - It may be slow (a round trip to a KMS) and may fail: return the
///   failure as an [`Error`], typically [`Error::KeySource`] with the
///   client's error as its source. A failed refresh keeps the keys in force.
///   It may be called concurrently, and its future may be dropped before it
///   ends (a timeout); neither may leave the source in a broken state.
///
/// # Security duties
/// - Hand keys over only as [`DataKey`]s (wiped when dropped), and wipe
///   every other copy: hold a KMS's plaintext response in a `Zeroizing`
///   buffer, or wipe it, once the [`DataKey`] is made.
/// - Never log, print or put into an error a key, a passphrase, or the
///   credentials used to reach the KMS; `Debug` of a source shows none of
///   them (its endpoint and key ids are fine).
/// - Authenticate the KMS or HSM (TLS to its endpoint, the platform's
///   credentials): whoever answers `keys` decides which key seals every
///   secret.
#[async_trait]
pub trait KeySource: fmt::Debug + Send + Sync + 'static {
    /// The key versions in force now.
    async fn keys(&self) -> Result<KeySet>;
}

/// A fixed set: always the same keys (the `_APP_OPENSSL_KEY_Vn` path,
/// through [`KeySet::from_passphrases`]).
#[async_trait]
impl KeySource for KeySet {
    async fn keys(&self) -> Result<KeySet> {
        Ok(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_key_is_32_bytes_and_never_shown() {
        let key = DataKey::from_slice(&[0xAB; 32]).unwrap();
        assert_eq!(key.as_bytes(), &[0xAB; 32]);
        assert_eq!(format!("{key:?}"), "DataKey(..)");
        for len in [0, 16, 31, 33, 64] {
            match DataKey::from_slice(&vec![1; len]) {
                Err(Error::KeySource { message, .. }) => {
                    assert!(message.contains(&len.to_string()), "{message}")
                }
                other => panic!("{len}: {other:?}"),
            }
        }
        let passphrase = "a passphrase of the source tests 01234";
        assert_eq!(
            DataKey::from_passphrase(passphrase).as_bytes(),
            &*Keyring::derive_key(passphrase)
        );
    }

    #[test]
    fn versions_are_numbered_from_one_and_given_once() {
        let mut keys = KeySet::new();
        assert!(keys.is_empty());
        assert_eq!(keys.sealing_version(), None);
        assert!(matches!(
            keys.insert(0, DataKey::new([1; 32])),
            Err(Error::KeySource { .. })
        ));
        keys.insert(3, DataKey::new([3; 32])).unwrap();
        keys.insert(1, DataKey::new([1; 32])).unwrap();
        assert!(matches!(
            keys.insert(3, DataKey::new([9; 32])),
            Err(Error::KeySource { .. })
        ));
        // The first key of version 3 was kept.
        assert_eq!(keys.get(3).unwrap().as_bytes(), &[3; 32]);
        assert_eq!(keys.versions(), [1, 3]);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.sealing_version(), Some(3));
        keys.set_sealing_version(1);
        assert_eq!(keys.sealing_version(), Some(1));
        assert_eq!(keys.iter().map(|(v, _)| v).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(
            format!("{keys:?}"),
            "KeySet { versions: [1, 3], sealing_version: Some(1) }"
        );
    }

    #[test]
    fn passphrases_become_their_derived_keys() {
        let (a, b) = (
            "first passphrase of the source tests 0123",
            "second passphrase of the source tests 4567",
        );
        let keys = KeySet::from_passphrases(true, [(2, b), (1, a)]).unwrap();
        assert_eq!(keys.versions(), [1, 2]);
        assert_eq!(keys.sealing_version(), Some(2));
        assert_eq!(keys.get(1).unwrap().as_bytes(), &*Keyring::derive_key(a));
        assert_eq!(keys.get(2).unwrap().as_bytes(), &*Keyring::derive_key(b));
        assert!(matches!(
            KeySet::from_passphrases(true, [(1, "changeme")]),
            Err(Error::WeakKey { .. })
        ));
        assert_eq!(
            KeySet::from_passphrases(false, [(1, "changeme")])
                .unwrap()
                .versions(),
            [1]
        );
    }

    #[tokio::test]
    async fn a_key_set_is_a_source_of_itself() {
        let mut keys = KeySet::new();
        keys.insert(4, DataKey::new([4; 32])).unwrap();
        keys.set_sealing_version(4);
        let source: &dyn KeySource = &keys;
        let given = source.keys().await.unwrap();
        assert_eq!(given.versions(), [4]);
        assert_eq!(given.sealing_version(), Some(4));
        assert_eq!(given.get(4).unwrap().as_bytes(), &[4; 32]);
    }
}
