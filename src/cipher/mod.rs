//! Secrets encrypted at rest: the [`SecretCipher`] trait, sealed envelopes,
//! opened secrets ([`Plaintext`]), the default [`Keyring`], and keys held
//! elsewhere ([`KeySource`], [`SourcedKeyring`]).
//!
//! # Keys held in a KMS or an HSM
//! certkeeper uses envelope encryption: the KMS keeps its master key and
//! only unwraps 256-bit data keys, once at start-up and again at each
//! refresh ([`KeySource::keys`], asynchronous); the keyring holds the data
//! keys and seals and opens locally, synchronously, without a network round
//! trip per secret. `examples/kms_cipher.rs` shows the whole path.

mod keyring;
mod plaintext;
mod source;
mod sourced;

pub use keyring::{
    key_variable_version, Keyring, KEY_DERIVATION_INFO, KEY_DERIVATION_SALT, MAX_PLAINTEXT_LEN,
    MIN_DISTINCT_KEY_CHARS, MIN_KEY_CHARS, NONCE_LEN, OPENSSL_KEY_PREFIX, PLACEHOLDER_KEYS,
    TAG_LEN,
};
pub use plaintext::Plaintext;
pub use source::{DataKey, KeySet, KeySource, DATA_KEY_LEN};
pub use sourced::SourcedKeyring;

use std::fmt::{self, Debug};

use base64::prelude::{Engine, BASE64_STANDARD};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// First bytes of every envelope: `CK`, then the envelope format version.
pub const ENVELOPE_MAGIC: [u8; 2] = *b"CK";
/// The envelope format this crate writes.
pub const ENVELOPE_FORMAT: u8 = 1;
/// Bytes before the cipher's own payload: magic, format, key version (u32, big endian).
pub const ENVELOPE_HEADER_LEN: usize = 2 + 1 + 4;
/// Largest envelope accepted (1 MiB): a certificate key or account is a few hundred bytes.
pub const MAX_ENVELOPE_LEN: usize = 1 << 20;

/// Encrypts and authenticates secrets before they reach a store.
///
/// # Contract
/// - `seal` output is an envelope that starts with [`ENVELOPE_MAGIC`],
///   [`ENVELOPE_FORMAT`] and the big-endian key version it was sealed under
///   (see [`Sealed::key_version`]), so any cipher can tell which key opens it.
/// - `open` must authenticate both the ciphertext and the associated data:
///   an envelope opened with other associated data than it was sealed with
///   (for example moved to another domain's record) must fail with
///   [`Error::Decrypt`], never return data.
/// - `open` of an envelope whose key version is not configured fails with
///   [`Error::MissingKey`]; a malformed envelope fails with
///   [`Error::Envelope`]. Neither may panic, whatever the bytes.
/// - **Synchronous and local.** `seal`, `open` and `sealing_version` run
///   on the renewal and serving paths (every issued certificate, every
///   stored certificate when first served), from async tasks and from
///   several threads at once: they must not block on a network, a disk or
///   a lock held across either. A cipher whose keys live in a KMS or an HSM
///   fetches or unwraps them ahead of time, asynchronously, through a
///   [`KeySource`] (when it is built, and when it is refreshed, as
///   [`SourcedKeyring`] does), and seals and opens with the keys it holds.
///   A CPU-bound cipher is fine: a 4 KiB secret takes a few microseconds.
/// - `sealing_version` is the version `seal` writes at that moment. A
///   cipher whose versions change at run time (a refresh) may return
///   another one at the next call, so a caller that needs one version
///   throughout (a [rotation](crate::vault::rotate)) runs over a snapshot
///   ([`SourcedKeyring::current`]).
///
/// # Security duties
/// - Never log, print or put into errors any plaintext or key material;
///   `Debug` of a cipher shows versions at most.
/// - Return opened secrets in a [`Plaintext`], which wipes them when
///   dropped, and wipe every other copy made on the way (a decryption
///   buffer that failed, a sealing buffer).
/// - Zeroize key material when dropped.
pub trait SecretCipher: Debug + Send + Sync + 'static {
    /// Encrypts `plaintext`, binding it to `associated_data`.
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Sealed>;

    /// Decrypts an envelope sealed with the same `associated_data`.
    fn open(&self, sealed: &Sealed, associated_data: &[u8]) -> Result<Plaintext>;

    /// The key version new seals use.
    fn sealing_version(&self) -> u32;
}

/// An encrypted envelope, as stored.
///
/// Serialises as a base64 string. `Debug` shows the key version and the
/// length, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(Vec<u8>);

impl Sealed {
    /// Wraps envelope bytes (for example read back from a database column).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The envelope bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The envelope bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Builds an envelope header followed by a cipher's payload.
    pub fn with_header(key_version: u32, payload: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(ENVELOPE_HEADER_LEN + payload.len());
        bytes.extend_from_slice(&ENVELOPE_MAGIC);
        bytes.push(ENVELOPE_FORMAT);
        bytes.extend_from_slice(&key_version.to_be_bytes());
        bytes.extend_from_slice(payload);
        Self(bytes)
    }

    /// The key version named by the header.
    pub fn key_version(&self) -> Result<u32> {
        Ok(self.parse()?.0)
    }

    /// Splits the envelope into its key version and the cipher's payload,
    /// checking the header and the size limit.
    pub fn parse(&self) -> Result<(u32, &[u8])> {
        let b = &self.0;
        if b.len() > MAX_ENVELOPE_LEN {
            return Err(Error::Envelope("larger than 1 MiB"));
        }
        if b.len() < ENVELOPE_HEADER_LEN {
            return Err(Error::Envelope("shorter than its header"));
        }
        if b[..2] != ENVELOPE_MAGIC {
            return Err(Error::Envelope("not a certkeeper envelope"));
        }
        if b[2] != ENVELOPE_FORMAT {
            return Err(Error::Envelope("unknown envelope format"));
        }
        let version = u32::from_be_bytes([b[3], b[4], b[5], b[6]]);
        Ok((version, &b[ENVELOPE_HEADER_LEN..]))
    }
}

impl Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Sealed");
        match self.key_version() {
            Ok(v) => d.field("key_version", &v),
            Err(_) => d.field("key_version", &"malformed"),
        };
        d.field("len", &self.0.len()).finish()
    }
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64_STANDARD.encode(&self.0))
    }
}

/// Longest base64 text of an envelope of at most [`MAX_ENVELOPE_LEN`] bytes.
const MAX_ENVELOPE_BASE64_LEN: usize = 4 * MAX_ENVELOPE_LEN / 3 + 4;

impl<'de> Deserialize<'de> for Sealed {
    /// Decodes the base64 string; a string longer than a 1 MiB envelope
    /// needs is refused before decoding, with the text of
    /// [`Error::Envelope`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > MAX_ENVELOPE_BASE64_LEN {
            return Err(serde::de::Error::custom(Error::Envelope(
                "larger than 1 MiB",
            )));
        }
        BASE64_STANDARD
            .decode(s.as_bytes())
            .map(Sealed)
            .map_err(|_| serde::de::Error::custom("sealed envelope is not valid base64"))
    }
}
