//! Key rules and versions shared by every built-in store.

use crate::{Error, Result};

/// The compare-and-swap rule of [`CertStore::save`](super::CertStore::save)
/// for a custom store: `found` is the stored version (0 when the record does
/// not exist), `expected` the version of the record being saved. Returns
/// the version to store, or [`Error::Conflict`] naming `key`.
///
/// ```
/// use certkeeper::store::check_version;
/// assert_eq!(check_version("my-store", "a.example.com", 3, 3).unwrap(), 4);
/// assert!(check_version("my-store", "a.example.com", 4, 3).is_err());
/// ```
pub fn check_version(store: &'static str, key: &str, found: u64, expected: u64) -> Result<u64> {
    if found != expected {
        return Err(Error::Conflict {
            key: key.to_string(),
            expected,
            found,
        });
    }
    next_version(store, key, expected)
}

/// The stored version after a successful compare-and-swap from `version`.
pub(crate) fn next_version(store: &'static str, key: &str, version: u64) -> Result<u64> {
    version
        .checked_add(1)
        .ok_or_else(|| Error::store(store, format!("version of {key} overflows")))
}

/// Checks an account id or meta key: 1 to 128 characters of `a-z`, `0-9`,
/// `.`, `_`, `-`, not starting with a dot.
///
/// Lowercase only, so that two keys never name the same file on a
/// case-insensitive filesystem; no leading dot, so that `.`, `..` and hidden
/// names are impossible. Shared by every built-in store so that they accept
/// exactly the same keys.
pub fn check_key(kind: &'static str, key: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidKey {
        kind,
        key: key.chars().take(80).collect(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("empty"));
    }
    if key.len() > 128 {
        return Err(invalid("longer than 128 characters"));
    }
    if key.starts_with('.') {
        return Err(invalid("starts with a dot"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "contains a character other than a-z, 0-9, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Checks an ACME challenge token: 1 to 256 characters of base64url
/// (`A-Z`, `a-z`, `0-9`, `-`, `_`), as RFC 8555 tokens are.
pub fn check_token(token: &str) -> Result<()> {
    let valid = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidKey {
            kind: "challenge token",
            key: token.chars().take(80).collect(),
            reason: "not 1 to 256 characters of base64url",
        })
    }
}
