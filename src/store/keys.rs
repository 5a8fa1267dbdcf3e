//! Key rules and versions shared by every built-in store.

use crate::{Error, Result};

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
pub(crate) fn check_key(kind: &'static str, key: &str) -> Result<()> {
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
