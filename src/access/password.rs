//! One-way hashing of console passwords and API keys with Argon2id.
//!
//! Unlike [`SecretCipher`](super::SecretCipher), which must give secrets
//! back, these hashes can only be compared: the server keeps the hash and
//! checks a presented password against it.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`)
//! that carry their algorithm, parameters and random salt, so a hash made
//! today still verifies after the defaults change; [`needs_rehash`] tells
//! when to replace it at the next successful login.
//!
//! Argon2id is deliberately slow (tens of milliseconds and 19 MiB of memory
//! per call with the defaults): an async server should call these functions
//! through `tokio::task::spawn_blocking`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::OsRng;

use crate::{Error, Result};

/// Largest Argon2 memory cost (KiB) a stored hash may ask for: 256 MiB.
///
/// A corrupt or hostile hash asking for more is refused instead of letting
/// one verification exhaust the server's memory.
pub const MAX_VERIFY_MEMORY_KIB: u32 = 256 * 1024;
/// Largest Argon2 time cost (passes) a stored hash may ask for.
pub const MAX_VERIFY_TIME_COST: u32 = 32;
/// Largest Argon2 parallelism a stored hash may ask for.
pub const MAX_VERIFY_PARALLELISM: u32 = 16;

/// The hasher for new hashes: Argon2id, version 0x13, the `argon2` crate's
/// defaults (m = 19 MiB, t = 2, p = 1; the OWASP recommendation).
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes a password or API key with Argon2id and a fresh random salt;
/// returns the PHC string to store.
///
/// ```
/// use certkeeper::access::{hash_password, verify_password};
/// let hash = hash_password("correct horse battery staple")?;
/// assert!(hash.starts_with("$argon2id$v=19$"));
/// assert!(verify_password("correct horse battery staple", &hash)?);
/// assert!(!verify_password("Tr0ub4dor&3", &hash)?);
/// # Ok::<(), certkeeper::Error>(())
/// ```
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        // Only a password beyond 4 GiB can fail with the fixed parameters.
        .map_err(|_| Error::config("password", "longer than Argon2 accepts"))
}

/// Checks `password` against a stored PHC string, in constant time.
///
/// `Ok(false)` when the password does not match. A stored value that is not
/// an Argon2 PHC string, or asks for parameters beyond
/// [`MAX_VERIFY_MEMORY_KIB`], [`MAX_VERIFY_TIME_COST`] or
/// [`MAX_VERIFY_PARALLELISM`], is an [`Error::Corrupt`]. Argon2i and
/// Argon2d hashes verify too, under the parameters they carry.
pub fn verify_password(password: &str, stored_hash: &str) -> Result<bool> {
    let parsed = parse(stored_hash)?;
    let params = Params::try_from(&parsed).map_err(|_| corrupt("bad Argon2 parameters"))?;
    if params.m_cost() > MAX_VERIFY_MEMORY_KIB
        || params.t_cost() > MAX_VERIFY_TIME_COST
        || params.p_cost() > MAX_VERIFY_PARALLELISM
    {
        return Err(corrupt(
            "Argon2 parameters beyond the limits this server verifies",
        ));
    }
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        // `Password` is both "no match" and "password too long to hash".
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(corrupt("the hash cannot be verified")),
    }
}

/// Whether a stored hash was made with other settings than [`hash_password`]
/// uses now (another Argon2 variant, version or cost), so the server should
/// replace it with a fresh hash after the next successful login.
pub fn needs_rehash(stored_hash: &str) -> Result<bool> {
    let parsed = parse(stored_hash)?;
    let params = Params::try_from(&parsed).map_err(|_| corrupt("bad Argon2 parameters"))?;
    let current = Params::default();
    Ok(parsed.algorithm != argon2::ARGON2ID_IDENT
        || parsed.version != Some(Version::V0x13 as u32)
        || params.m_cost() != current.m_cost()
        || params.t_cost() != current.t_cost()
        || params.p_cost() != current.p_cost())
}

fn parse(stored_hash: &str) -> Result<PasswordHash<'_>> {
    let parsed = PasswordHash::new(stored_hash).map_err(|_| corrupt("not a PHC string"))?;
    if Algorithm::try_from(parsed.algorithm).is_err() {
        return Err(corrupt("not an Argon2 hash"));
    }
    Ok(parsed)
}

fn corrupt(reason: &str) -> Error {
    Error::Corrupt {
        key: "password hash".into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_with_their_parameters() {
        let a = hash_password("same password").unwrap();
        let b = hash_password("same password").unwrap();
        assert_ne!(a, b, "a fresh salt every time");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert!(!a.contains("same password"));
        assert!(verify_password("same password", &b).unwrap());
        assert!(!verify_password("same passworD", &a).unwrap());
        assert!(!verify_password("", &a).unwrap());
        assert!(!needs_rehash(&a).unwrap());
    }

    #[test]
    fn older_or_cheaper_hashes_verify_and_ask_for_a_rehash() {
        let salt = SaltString::generate(&mut OsRng);
        let cheap = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
        assert!(verify_password("pw", &cheap).unwrap());
        assert!(!verify_password("pW", &cheap).unwrap());
        assert!(needs_rehash(&cheap).unwrap());
    }

    #[test]
    fn malformed_or_hostile_hashes_are_corrupt_not_panics() {
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$\
                    YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo";
        for bad in [
            "",
            "plain text",
            "$2y$10$abcdefghijklmnopqrstuv",
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$YWJj",
            huge,
        ] {
            assert!(
                matches!(verify_password("pw", bad), Err(Error::Corrupt { .. })),
                "{bad:?}"
            );
        }
        assert!(needs_rehash("nope").is_err());
    }
}
