//! [`Keyring`]: the default [`SecretCipher`], XChaCha20-Poly1305 under
//! versioned keys from `_APP_OPENSSL_KEY_V1`, `_APP_OPENSSL_KEY_V2` ...

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{
    DataKey, KeySet, KeySource, Plaintext, Sealed, SecretCipher, ENVELOPE_HEADER_LEN,
    MAX_ENVELOPE_LEN,
};
use crate::config::{Naming, Setting};
use crate::{Error, Result};

/// HKDF-SHA256 salt of the key derivation (see [`Keyring::derive_key`]).
pub const KEY_DERIVATION_SALT: &[u8] = b"certkeeper keyring v1";
/// HKDF-SHA256 info of the key derivation (see [`Keyring::derive_key`]).
pub const KEY_DERIVATION_INFO: &[u8] = b"xchacha20poly1305";
/// Bytes of the random nonce at the start of a keyring payload.
pub const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag at the end of a keyring payload.
pub const TAG_LEN: usize = 16;
/// Fewest characters a production key may have (`openssl rand -base64 32`
/// gives 44).
pub const MIN_KEY_CHARS: usize = 32;
/// Fewest distinct characters a production key may have.
pub const MIN_DISTINCT_KEY_CHARS: usize = 10;
/// Placeholder words from sample `.env` files and tutorials: a production
/// key containing one of them, in any case, is refused.
pub const PLACEHOLDER_KEYS: &[&str] = &[
    "your-secret-key",
    "changeme",
    "change-me",
    "secret",
    "password",
    "example",
];

/// Largest plaintext a keyring seals: what fits in a [`MAX_ENVELOPE_LEN`] envelope.
pub const MAX_PLAINTEXT_LEN: usize = MAX_ENVELOPE_LEN - ENVELOPE_HEADER_LEN - NONCE_LEN - TAG_LEN;

/// Seals and opens secrets with XChaCha20-Poly1305 under versioned keys.
///
/// # Keys
/// One key per version, from `_APP_OPENSSL_KEY_V1`, `_APP_OPENSSL_KEY_V2`
/// ... (read by [`Config`](crate::Config)) or given in code ([`Keyring::from_keys`]),
/// or 256-bit data keys from elsewhere: a [`KeySet`]
/// ([`Keyring::from_key_set`]) or a [`KeySource`] such as a KMS
/// ([`Keyring::from_source`]; [`SourcedKeyring`](super::SourcedKeyring) to
/// refresh them while running).
/// The highest version seals (unless the key set names another); every
/// configured version opens. Gaps are allowed: after a
/// [rotation](crate::vault::rotate) to V2 the operator
/// removes V1, and a keyring with only V2 (or V1 and V3) is valid. At least
/// one key is required.
///
/// Each environment string (a passphrase) becomes a 256-bit key by
/// [`Keyring::derive_key`]: HKDF-SHA256 with the passphrase's UTF-8 bytes,
/// exactly as given (not trimmed), as input key material, salt
/// [`KEY_DERIVATION_SALT`] and info [`KEY_DERIVATION_INFO`]. The same
/// passphrase always gives the same key, on any machine.
///
/// # Weak keys
/// In production a key is refused with [`Error::WeakKey`] naming its
/// variable when it is empty (or only whitespace), contains one of the
/// placeholder words [`PLACEHOLDER_KEYS`] in any case (`secret`,
/// `password`, `changeme` ...), is shorter than [`MIN_KEY_CHARS`] (32)
/// characters, is made of fewer than [`MIN_DISTINCT_KEY_CHARS`] (10)
/// distinct characters (`aaaa...`, `abab...`, `1234567890...` repeated), or
/// repeats one character in a row over more than a quarter of its length, or
/// is a shorter sequence repeated (`1234567890123...`).
/// These are rough floors against typed-in keys, not a measure of entropy:
/// use a random key. In development such keys are accepted with a warning
/// that names the variable, never the key. A random 32-byte key in base64
/// (`openssl rand -base64 32`, 44 characters) or hex (`openssl rand -hex
/// 32`, 64 characters) always passes.
///
/// # Envelope
/// [`Sealed::with_header`]`(version, nonce || ciphertext || tag)`, with a
/// random 24-byte nonce from the operating system for every seal (random
/// XChaCha20 nonces never repeat in practice, so one key can seal without
/// limit). The AEAD's associated data is the envelope's 7-byte header
/// (magic, format, key version) followed by the caller's associated data,
/// so the header is authenticated too. The envelope is the same whatever
/// the keys came from: a key set holding the derived key of a passphrase
/// opens what that passphrase sealed.
///
/// The keys are zeroized when the keyring is dropped; `Debug`
/// shows only the versions. A keyring never changes once built: it is a
/// snapshot, cheap to share as an `Arc<Keyring>`.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<u32, VersionKey>,
    sealing_version: u32,
    /// Whether [`Error::MissingKey`] names the version's variable.
    naming: Naming,
}

/// The cipher of one version, and a check value of its key.
#[derive(Clone)]
struct VersionKey {
    cipher: XChaCha20Poly1305,
    /// SHA-256 of [`KEY_CHECK_LABEL`] and the key: tells whether two
    /// keyrings hold the same key under a version without keeping the key
    /// bytes a second time (a hash of a 256-bit random key reveals nothing
    /// of it).
    check: [u8; 32],
}

/// Prefix of the hashed check value of a key.
const KEY_CHECK_LABEL: &[u8] = b"certkeeper keyring key check v1";

// Every key lives in an `XChaCha20Poly1305`, which zeroizes its key on drop.
impl ZeroizeOnDrop for Keyring {}

impl Keyring {
    /// Builds a keyring from `(version, passphrase)` pairs, for example the
    /// values of `_APP_OPENSSL_KEY_V1`, `_APP_OPENSSL_KEY_V2` ...: the keys
    /// of [`KeySet::from_passphrases`].
    ///
    /// Fails with [`Error::Config`] when no key is given, a version is 0 or
    /// given twice, and (in production) with [`Error::WeakKey`] for a weak key.
    ///
    /// ```
    /// use certkeeper::cipher::{Keyring, SecretCipher};
    /// let keyring = Keyring::from_keys(true, [
    ///     (1, "an old passphrase of some length"),
    ///     (2, "the new passphrase, also long enough"),
    /// ])?;
    /// assert_eq!(keyring.sealing_version(), 2);
    /// assert!(Keyring::from_keys(true, [(1, "your-secret-key")]).is_err());
    /// assert!(Keyring::from_keys(true, [(1, "short passphrase")]).is_err());
    /// # Ok::<(), certkeeper::Error>(())
    /// ```
    pub fn from_keys<I, S>(production: bool, keys: I) -> Result<Self>
    where
        I: IntoIterator<Item = (u32, S)>,
        S: AsRef<str>,
    {
        Self::from_keys_named(production, keys, &|_| Naming::Builder, "Keyring::from_keys")
    }

    /// [`from_keys`](Self::from_keys), naming in errors the variable of a
    /// version whose `naming` is the environment, otherwise `method` and
    /// the version.
    pub(crate) fn from_keys_named<I, S>(
        production: bool,
        keys: I,
        naming: &dyn Fn(u32) -> Naming,
        method: &'static str,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = (u32, S)>,
        S: AsRef<str>,
    {
        Self::from_key_set(KeySet::from_passphrases_named(
            production, keys, naming, method,
        )?)
    }

    /// Builds a keyring from data keys, sealing under
    /// [`KeySet::sealing_version`]. Fails with [`Error::KeySource`] when the
    /// set is empty or names a sealing version it holds no key of.
    pub fn from_key_set(keys: KeySet) -> Result<Self> {
        let Some(sealing_version) = keys.sealing_version() else {
            return Err(Error::key_source("the key set holds no key"));
        };
        if keys.get(sealing_version).is_none() {
            return Err(Error::key_source(format!(
                "the sealing version {sealing_version} has no key in the set"
            )));
        }
        let keys: BTreeMap<u32, VersionKey> = keys
            .iter()
            .map(|(version, key)| (version, VersionKey::new(key)))
            .collect();
        tracing::debug!(
            versions = ?keys.keys().collect::<Vec<_>>(),
            sealing_version,
            "keyring ready"
        );
        Ok(Self {
            keys,
            sealing_version,
            naming: Naming::default(),
        })
    }

    /// [`Error::MissingKey`] names the variable of the missing version: for
    /// a keyring read from the environment.
    pub(crate) fn with_naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// The error for an envelope under `version`, which this keyring lacks.
    fn missing_key(&self, version: u32) -> Error {
        Error::MissingKey {
            version,
            variable: (self.naming == Naming::Environment).then(|| Setting::openssl_key(version)),
        }
    }

    /// Builds a keyring from the keys `source` gives now (see
    /// [`KeySource`]: a KMS unwrapping data keys, say). The keyring keeps
    /// them: to follow later changes of the source, use a
    /// [`SourcedKeyring`](super::SourcedKeyring).
    pub async fn from_source(source: &dyn KeySource) -> Result<Self> {
        Self::from_key_set(source.keys().await?)
    }

    /// The 256-bit key a passphrase stands for: HKDF-SHA256 with
    /// `ikm` = the passphrase's UTF-8 bytes, `salt` = [`KEY_DERIVATION_SALT`],
    /// `info` = [`KEY_DERIVATION_INFO`], 32 bytes of output.
    ///
    /// Deterministic, so another program can derive the same key. HKDF is not
    /// a password hash: the passphrase must itself be a high-entropy secret,
    /// which is why production refuses short and repetitive ones.
    pub fn derive_key(passphrase: &str) -> Zeroizing<[u8; 32]> {
        let hkdf = Hkdf::<Sha256>::new(Some(KEY_DERIVATION_SALT), passphrase.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf.expand(KEY_DERIVATION_INFO, key.as_mut())
            .expect("32 bytes is far below HKDF-SHA256's output limit of 255 * 32");
        key
    }

    /// The configured key versions, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Whether a key of `version` is configured.
    pub fn has_version(&self, version: u32) -> bool {
        self.keys.contains_key(&version)
    }

    /// A version held by both keyrings with a different key in each, if
    /// any: the lowest one.
    pub(crate) fn changed_version(&self, other: &Keyring) -> Option<u32> {
        self.keys.iter().find_map(|(version, key)| {
            let theirs = other.keys.get(version)?;
            (theirs.check != key.check).then_some(*version)
        })
    }
}

impl VersionKey {
    fn new(key: &DataKey) -> Self {
        let check = Sha256::new()
            .chain_update(KEY_CHECK_LABEL)
            .chain_update(key.as_bytes())
            .finalize()
            .into();
        Self {
            cipher: XChaCha20Poly1305::new(key.as_bytes().into()),
            check,
        }
    }
}

/// The prefix of the versioned encryption key variables.
pub const OPENSSL_KEY_PREFIX: &str = Setting::OpensslKey.name();

/// The key version a variable name stands for: `None` when `name` is not an
/// encryption key variable, an [`Error::Config`] naming it when it is one
/// with a bad version (`V0`, `V01`, `Vx` ...), else the version. The one
/// rule for key variable names: digits only, from 1, no leading zero, so
/// `V01` and `V1` never both name version 1.
pub fn key_variable_version(name: &str) -> Option<Result<u32>> {
    let suffix = name.strip_prefix(OPENSSL_KEY_PREFIX)?;
    Some(parse_version(suffix).ok_or_else(|| {
        Error::config(
            name,
            "key variables are numbered V1, V2 ... (digits, no leading zeros)",
        )
    }))
}

/// `Some(n)` for a version suffix of plain digits naming n >= 1, without
/// leading zeros.
fn parse_version(suffix: &str) -> Option<u32> {
    if suffix.is_empty() || suffix.starts_with('0') || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    suffix.parse().ok().filter(|v| *v >= 1)
}

/// Why a passphrase is too weak for production, if it is.
pub(super) fn weakness(passphrase: &str) -> Option<&'static str> {
    let trimmed = passphrase.trim();
    if trimmed.is_empty() {
        return Some("the key is empty");
    }
    let lower = trimmed.to_lowercase();
    if PLACEHOLDER_KEYS.iter().any(|word| lower.contains(word)) {
        return Some(
            "the key contains a placeholder word (your-secret-key, changeme, change-me, secret, \
             password, example); use a random key (openssl rand -base64 32)",
        );
    }
    let chars = passphrase.chars().count();
    if chars < MIN_KEY_CHARS {
        return Some(
            "the key is shorter than 32 characters; use a random key (openssl rand -base64 32)",
        );
    }
    let distinct: BTreeSet<char> = passphrase.chars().collect();
    if distinct.len() < MIN_DISTINCT_KEY_CHARS {
        return Some("the key has fewer than 10 distinct characters");
    }
    if longest_run(passphrase) * 4 > chars {
        return Some("the key repeats one character over more than a quarter of its length");
    }
    if shortest_period(passphrase) * 2 <= chars {
        return Some("the key repeats a shorter sequence (1234567890123..., abcabc...)");
    }
    None
}

/// The smallest `p` such that every character equals the one `p` places
/// later (the length itself when there is none shorter), by the prefix
/// function of Knuth, Morris and Pratt.
fn shortest_period(s: &str) -> usize {
    let chars: Vec<char> = s.chars().collect();
    let mut border = vec![0usize; chars.len()];
    for i in 1..chars.len() {
        let mut k = border[i - 1];
        while k > 0 && chars[i] != chars[k] {
            k = border[k - 1];
        }
        if chars[i] == chars[k] {
            k += 1;
        }
        border[i] = k;
    }
    chars.len() - border.last().copied().unwrap_or(0)
}

/// The length of the longest run of one character.
fn longest_run(s: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    let mut previous = None;
    for c in s.chars() {
        run = if previous == Some(c) { run + 1 } else { 1 };
        previous = Some(c);
        longest = longest.max(run);
    }
    longest
}

/// Room on the stack for the associated data of [`with_bound_aad`]: the
/// 7-byte header and the caller's (`certkeeper/cert-key/<domain>` is at
/// most 20 + 253 bytes).
const AAD_ON_STACK: usize = 288;

/// Calls `f` with the associated data the AEAD authenticates: the envelope
/// header (magic, format, key version), then the caller's, so a header
/// cannot be edited (to another version holding the same key, say) without
/// the seal failing. Concatenated on the stack when it fits, so sealing and
/// opening allocate nothing but their output.
fn with_bound_aad<T>(header: &[u8], associated_data: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    let len = header.len() + associated_data.len();
    if len <= AAD_ON_STACK {
        let mut buffer = [0u8; AAD_ON_STACK];
        buffer[..header.len()].copy_from_slice(header);
        buffer[header.len()..len].copy_from_slice(associated_data);
        f(&buffer[..len])
    } else {
        f(&[header, associated_data].concat())
    }
}

impl SecretCipher for Keyring {
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Sealed> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::Envelope("secret too large to seal (over 1 MiB)"));
        }
        let version = self.sealing_version;
        let Some(key) = self.keys.get(&version) else {
            return Err(self.missing_key(version));
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // One buffer, encrypted in place: header || nonce || ciphertext || tag,
        // with no copy of the ciphertext (sealing runs at the raw cipher's speed).
        let mut envelope = Sealed::with_header(version, &[]).into_bytes();
        let header_len = envelope.len();
        envelope.reserve_exact(NONCE_LEN + plaintext.len() + TAG_LEN);
        envelope.extend_from_slice(&nonce);
        let start = envelope.len();
        envelope.extend_from_slice(plaintext);
        let (header, body) = envelope.split_at_mut(start);
        let sealed = with_bound_aad(&header[..header_len], associated_data, |aad| {
            key.cipher.encrypt_in_place_detached(&nonce, aad, body)
        });
        let tag = match sealed {
            Ok(tag) => tag,
            Err(_) => {
                // The plaintext is still in the buffer.
                envelope.zeroize();
                return Err(Error::Envelope("secret too large to seal"));
            }
        };
        envelope.extend_from_slice(&tag);
        tracing::trace!(key_version = version, "sealed a secret");
        Ok(Sealed::from_bytes(envelope))
    }

    fn open(&self, sealed: &Sealed, associated_data: &[u8]) -> Result<Plaintext> {
        let (version, payload) = sealed.parse()?;
        let key = self
            .keys
            .get(&version)
            .ok_or_else(|| self.missing_key(version))?;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Envelope("shorter than a nonce and a tag"));
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let header = &sealed.as_bytes()[..ENVELOPE_HEADER_LEN];
        // Decrypted in place, in a buffer of exactly the plaintext's size
        // that wipes itself when dropped, on failure too.
        let mut plaintext = Plaintext::new(ciphertext.to_vec());
        with_bound_aad(header, associated_data, |aad| {
            key.cipher.decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                aad,
                &mut plaintext,
                Tag::from_slice(tag),
            )
        })
        .map_err(|_| {
            tracing::debug!(key_version = version, "a sealed secret failed to open");
            Error::Decrypt
        })?;
        tracing::trace!(key_version = version, "opened a secret");
        Ok(plaintext)
    }

    fn sealing_version(&self) -> u32 {
        self.sealing_version
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("versions", &self.versions())
            .field("sealing_version", &self.sealing_version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "first passphrase of the tests 0123456789";
    const V2: &str = "second passphrase of the tests 9876543210";

    #[test]
    fn derivation_is_hkdf_sha256_with_the_documented_salt_and_info() {
        // Recomputed by hand from RFC 5869: PRK = HMAC(salt, ikm), OKM = HMAC(PRK, info || 0x01).
        use sha2::Digest;
        fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
            let mut k = [0u8; 64];
            k[..key.len()].copy_from_slice(key);
            let inner: Vec<u8> = k
                .iter()
                .map(|b| b ^ 0x36)
                .chain(msg.iter().copied())
                .collect();
            let inner = Sha256::digest(inner);
            let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner).collect();
            Sha256::digest(outer).into()
        }
        let prk = hmac(KEY_DERIVATION_SALT, V1.as_bytes());
        let okm = hmac(&prk, &[KEY_DERIVATION_INFO, &[1]].concat());
        assert_eq!(*Keyring::derive_key(V1), okm);
        assert_eq!(Keyring::derive_key(V1), Keyring::derive_key(V1));
        assert_ne!(*Keyring::derive_key(V1), *Keyring::derive_key(V2));
    }

    #[test]
    fn newest_seals_and_every_version_opens() {
        let old = Keyring::from_keys(true, [(1, V1)]).unwrap();
        let both = Keyring::from_keys(true, [(2, V2), (1, V1)]).unwrap();
        assert_eq!(both.sealing_version(), 2);
        let sealed_v1 = old.seal(b"secret", b"aad").unwrap();
        assert_eq!(sealed_v1.key_version().unwrap(), 1);
        assert_eq!(&*both.open(&sealed_v1, b"aad").unwrap(), b"secret");
        let sealed_v2 = both.seal(b"secret", b"aad").unwrap();
        assert_eq!(sealed_v2.key_version().unwrap(), 2);
        match old.open(&sealed_v2, b"aad") {
            Err(err @ Error::MissingKey { version: 2, .. }) => {
                // Built in code: the version, not a variable.
                assert!(!err.to_string().contains(Setting::PREFIX), "{err}");
                assert!(err.to_string().contains("key version 2"), "{err}");
            }
            other => panic!("{other:?}"),
        }
        match old
            .clone()
            .with_naming(Naming::Environment)
            .open(&sealed_v2, b"aad")
        {
            Err(err @ Error::MissingKey { version: 2, .. }) => {
                assert!(err.to_string().contains(&Setting::openssl_key(2)), "{err}");
            }
            other => panic!("{other:?}"),
        }
        let only_v2 = Keyring::from_keys(true, [(2, V2)]).unwrap();
        assert_eq!(&*only_v2.open(&sealed_v2, b"aad").unwrap(), b"secret");
    }

    #[test]
    fn wrong_aad_and_tampering_fail_to_decrypt() {
        let k = Keyring::from_keys(true, [(1, V1)]).unwrap();
        let sealed = k.seal(b"secret", b"domain-a").unwrap();
        assert!(matches!(k.open(&sealed, b"domain-b"), Err(Error::Decrypt)));
        let mut bytes = sealed.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = Sealed::from_bytes(bytes);
        assert!(matches!(
            k.open(&tampered, b"domain-a"),
            Err(Error::Decrypt)
        ));
        let other = Keyring::from_keys(true, [(1, V2)]).unwrap();
        assert!(matches!(
            other.open(&sealed, b"domain-a"),
            Err(Error::Decrypt)
        ));
    }

    #[test]
    fn the_header_is_authenticated() {
        // Two versions holding the same key: only the header tells them apart.
        let k = Keyring::from_keys(true, [(1, V1), (2, V1)]).unwrap();
        let sealed = k.seal(b"secret", b"aad").unwrap();
        assert_eq!(sealed.key_version().unwrap(), 2);
        let mut bytes = sealed.as_bytes().to_vec();
        bytes[ENVELOPE_HEADER_LEN - 1] = 1;
        let relabelled = Sealed::from_bytes(bytes);
        assert_eq!(relabelled.key_version().unwrap(), 1);
        assert!(matches!(k.open(&relabelled, b"aad"), Err(Error::Decrypt)));
        assert_eq!(&*k.open(&sealed, b"aad").unwrap(), b"secret");
    }

    #[test]
    fn two_seals_of_the_same_secret_differ() {
        let k = Keyring::from_keys(true, [(1, V1)]).unwrap();
        assert_ne!(k.seal(b"s", b"").unwrap(), k.seal(b"s", b"").unwrap());
    }

    #[test]
    fn weak_keys_are_refused_in_production_only() {
        for (key, reason_part) in [
            ("", "empty"),
            ("   ", "empty"),
            ("your-secret-key", "placeholder"),
            ("YOUR-SECRET-KEY", "placeholder"),
            ("your-secret-key1", "placeholder"),
            ("passwordpassword", "placeholder"),
            ("my long PassWord for the keyring 42", "placeholder"),
            ("changeme-changeme-changeme-changeme", "placeholder"),
            ("please-change-me-before-production-1", "placeholder"),
            ("an example key that is long enough 7", "placeholder"),
            ("top SECRET key that is long enough 7", "placeholder"),
            ("short-key", "shorter"),
            ("aaaaaaaaaaaabcde", "shorter"),
            ("1234567890123456", "shorter"),
            ("q8Zr2mX0cVbN4tLw", "shorter"),
            // 31 characters, every one distinct.
            ("q8Zr2mX0cVbN4tLwA1B2C3D4E5F6G7H", "shorter"),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "distinct"),
            ("abababababababababababababababababab", "distinct"),
            ("12345678901234567890123456789012", "sequence"),
            ("q8Zr2mX0cVbN4tLwq8Zr2mX0cVbN4tLw", "sequence"),
            ("abcdefghijaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "quarter"),
            ("q8Zr2mX0cVbN4tLw!!!!!!!!!!!!!!!!!!!!", "quarter"),
        ] {
            match Keyring::from_keys(true, [(3, key)]) {
                Err(Error::WeakKey { name, reason }) => {
                    assert_eq!(name, "Keyring::from_keys(version 3)");
                    assert!(reason.contains(reason_part), "{key:?}: {reason}");
                }
                other => panic!("{key:?}: {other:?}"),
            }
            let dev = Keyring::from_keys(false, [(3, key)]).unwrap();
            let sealed = dev.seal(b"x", b"").unwrap();
            assert_eq!(&*dev.open(&sealed, b"").unwrap(), b"x");
        }
        for strong in [
            // openssl rand -base64 32
            "3q2+7w0bXgJ8kM1vQn5yZr9tLc4pHs6dFa2eUo8iWjE=",
            // openssl rand -hex 32
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "q8Zr2mX0cVbN4tLwA1B2C3D4E5F6G7H8",
            // A run of exactly a quarter is fine.
            "q8Zr2mX0cVbN4tLwA1B2C3D4aaaaaaaa",
        ] {
            assert!(Keyring::from_keys(true, [(1, strong)]).is_ok(), "{strong}");
        }
    }

    #[test]
    fn longest_runs() {
        assert_eq!(longest_run(""), 0);
        assert_eq!(longest_run("a"), 1);
        assert_eq!(longest_run("abba"), 2);
        assert_eq!(longest_run("aabbbcaaaa"), 4);
        assert_eq!(longest_run("éé"), 2);
        assert_eq!(shortest_period(""), 0);
        assert_eq!(shortest_period("a"), 1);
        assert_eq!(shortest_period("abcab"), 3);
        assert_eq!(shortest_period("abcd"), 4);
        assert_eq!(shortest_period("aaaa"), 1);
        assert_eq!(shortest_period("ababa"), 2);
    }

    #[test]
    fn bad_key_sets_name_the_function_in_code_and_the_variable_from_the_environment() {
        let none: [(u32, &str); 0] = [];
        let method = "Keyring::from_keys";
        // Given in code: the function and the version.
        assert!(matches!(
            Keyring::from_keys(false, none),
            Err(Error::Config { name, .. }) if name == method
        ));
        assert!(matches!(
            Keyring::from_keys(false, [(0, V1)]),
            Err(Error::Config { name, .. }) if name == "Keyring::from_keys(version 0)"
        ));
        assert!(matches!(
            Keyring::from_keys(false, [(2, V1), (2, V2)]),
            Err(Error::Config { name, .. }) if name == "Keyring::from_keys(version 2)"
        ));
        assert!(matches!(
            KeySet::from_passphrases(true, [(1, "qwerty12")]),
            Err(Error::WeakKey { name, .. }) if name == "KeySet::from_passphrases(version 1)"
        ));
        // Read from the environment: the variable.
        let env = |keys: &[(u32, &str)]| {
            Keyring::from_keys_named(true, keys.iter().copied(), &|_| Naming::Environment, method)
                .unwrap_err()
        };
        assert!(matches!(env(&[]), Error::Config { name, .. } if name == Setting::openssl_key(1)));
        assert!(matches!(
            env(&[(2, V1), (2, V2)]),
            Error::Config { name, .. } if name == Setting::openssl_key(2)
        ));
        assert!(matches!(
            env(&[(1, "qwerty12")]),
            Error::WeakKey { name, .. } if name == Setting::openssl_key(1)
        ));
        for err in [
            env(&[(1, "qwerty12")]),
            Keyring::from_keys(true, [(1, "qwerty12")]).unwrap_err(),
        ] {
            assert!(!err.to_string().contains("qwerty12"), "{err}");
        }
        for err in [
            Keyring::from_keys(false, none).unwrap_err(),
            Keyring::from_keys(false, [(0, V1)]).unwrap_err(),
            Keyring::from_keys(true, [(1, "qwerty12")]).unwrap_err(),
        ] {
            assert!(!err.to_string().contains(Setting::PREFIX), "{err}");
        }
    }

    #[test]
    fn version_suffixes() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("12"), Some(12));
        for bad in ["", "0", "01", "007", "x", "+1", "-1", " 1", "99999999999"] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
        assert!(key_variable_version(Setting::Domain.name()).is_none());
        assert_eq!(
            key_variable_version(&Setting::openssl_key(2))
                .unwrap()
                .unwrap(),
            2
        );
        assert!(key_variable_version(&format!("{}01", Setting::OpensslKey))
            .unwrap()
            .is_err());
    }

    #[test]
    fn debug_shows_only_versions() {
        let k = Keyring::from_keys(true, [(1, V1), (4, V2)]).unwrap();
        let shown = format!("{k:?}");
        assert_eq!(shown, "Keyring { versions: [1, 4], sealing_version: 4 }");
    }

    #[test]
    fn associated_data_of_any_length_is_bound() {
        let k = Keyring::from_keys(true, [(1, V1)]).unwrap();
        // Around the end of the stack buffer, and far past it (the heap).
        let stack_room = AAD_ON_STACK - ENVELOPE_HEADER_LEN;
        for len in [0, 1, stack_room - 1, stack_room, stack_room + 1, 5000] {
            let aad: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = k.seal(b"secret", &aad).unwrap();
            assert_eq!(&*k.open(&sealed, &aad).unwrap(), b"secret", "{len}");
            let mut other = aad.clone();
            match other.last_mut() {
                Some(last) => *last ^= 1,
                None => other.push(0),
            }
            assert!(
                matches!(k.open(&sealed, &other), Err(Error::Decrypt)),
                "{len}"
            );
            // Cut short: a prefix of the associated data is not it.
            if len > 0 {
                assert!(
                    matches!(k.open(&sealed, &aad[..len - 1]), Err(Error::Decrypt)),
                    "{len}"
                );
            }
        }
    }

    #[test]
    fn a_key_set_builds_the_same_keyring_as_its_passphrases() {
        let from_passphrases = Keyring::from_keys(true, [(1, V1), (2, V2)]).unwrap();
        let mut keys = KeySet::new();
        keys.insert(2, DataKey::from_passphrase(V2)).unwrap();
        keys.insert(1, DataKey::from_passphrase(V1)).unwrap();
        let from_set = Keyring::from_key_set(keys).unwrap();
        assert_eq!(from_set.versions(), [1, 2]);
        assert_eq!(from_set.sealing_version(), 2);
        assert_eq!(from_set.changed_version(&from_passphrases), None);
        let sealed = from_passphrases.seal(b"secret", b"aad").unwrap();
        assert_eq!(&*from_set.open(&sealed, b"aad").unwrap(), b"secret");

        let other = Keyring::from_keys(true, [(2, V1), (3, V2)]).unwrap();
        assert_eq!(from_set.changed_version(&other), Some(2));
        let disjoint = Keyring::from_keys(true, [(3, V1)]).unwrap();
        assert_eq!(from_set.changed_version(&disjoint), None);
    }

    #[test]
    fn a_key_set_must_hold_its_sealing_version() {
        assert!(matches!(
            Keyring::from_key_set(KeySet::new()),
            Err(Error::KeySource { .. })
        ));
        let mut keys = KeySet::new();
        keys.insert(1, DataKey::new([1; 32])).unwrap();
        keys.set_sealing_version(2);
        match Keyring::from_key_set(keys.clone()) {
            Err(Error::KeySource { message, .. }) => assert!(message.contains('2'), "{message}"),
            other => panic!("{other:?}"),
        }
        keys.insert(2, DataKey::new([2; 32])).unwrap();
        keys.insert(3, DataKey::new([3; 32])).unwrap();
        let k = Keyring::from_key_set(keys).unwrap();
        assert_eq!(k.sealing_version(), 2);
        assert_eq!(k.seal(b"s", b"").unwrap().key_version().unwrap(), 2);
    }

    #[test]
    fn oversized_plaintext_is_refused() {
        let k = Keyring::from_keys(true, [(1, V1)]).unwrap();
        let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(k.seal(&big, b""), Err(Error::Envelope(_))));
        let fits = vec![7u8; MAX_PLAINTEXT_LEN];
        let sealed = k.seal(&fits, b"").unwrap();
        assert_eq!(sealed.as_bytes().len(), MAX_ENVELOPE_LEN);
        assert_eq!(k.open(&sealed, b"").unwrap().len(), MAX_PLAINTEXT_LEN);
    }
}
