//! [`Plaintext`]: an opened secret, wiped when dropped.

use std::fmt;
use std::ops::{Deref, DerefMut};

use zeroize::{Zeroize, ZeroizeOnDrop};

/// The bytes of an opened secret ([`SecretCipher::open`](super::SecretCipher::open)),
/// wiped when dropped.
///
/// It derefs to `[u8]` (read it as `&plaintext[..]`, `&*plaintext` or
/// [`as_bytes`](Self::as_bytes)); its length cannot change, so the buffer is
/// never reallocated and no copy is left behind in freed memory. `Debug`
/// shows the length only, never the bytes. There is no `Clone` and no
/// `PartialEq`: copy the bytes out on purpose, and compare secrets in
/// constant time.
///
/// When dropped, every byte of the buffer (its spare capacity too) is set to
/// zero through zeroize's bulk path for byte slices (one `memset`, then an
/// optimisation barrier that the compiler cannot see through, so the writes
/// are not removed as dead stores). That is what `Zeroizing<Vec<u8>>` does
/// as well, but at memory speed rather than one volatile write per byte.
///
/// ```
/// use certkeeper::cipher::{Keyring, SecretCipher};
/// let keyring = Keyring::from_keys(false, [(1, "a development passphrase")])?;
/// let sealed = keyring.seal(b"account credentials", b"acme-account/main")?;
/// let opened = keyring.open(&sealed, b"acme-account/main")?;
/// assert_eq!(&opened[..], b"account credentials");
/// assert_eq!(format!("{opened:?}"), "Plaintext { len: 19 }");
/// # Ok::<(), certkeeper::Error>(())
/// ```
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    /// Takes ownership of `bytes`, to wipe them when dropped. Bytes of an
    /// earlier allocation of that vector (left behind when it grew) are out
    /// of reach: build it at its final capacity.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Sets every byte of the buffer, spare capacity included, to zero.
    fn wipe(&mut self) {
        // Over the spare capacity too (bytes cut off by a `truncate`, or the
        // tag an AEAD removed): `resize` within the capacity never moves
        // the buffer. Then zeroize's bulk path for `[u8]`: a fill and
        // `zeroize::optimization_barrier`.
        let capacity = self.0.capacity();
        self.0.resize(capacity, 0);
        self.0.as_mut_slice().zeroize();
    }
}

impl From<Vec<u8>> for Plaintext {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl Deref for Plaintext {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Plaintext {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// Wipes the bytes and leaves the plaintext empty.
impl Zeroize for Plaintext {
    fn zeroize(&mut self) {
        self.wipe();
        self.0.clear();
    }
}

impl ZeroizeOnDrop for Plaintext {}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plaintext")
            .field("len", &self.0.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_zeroes_the_bytes_and_the_spare_capacity() {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&[0xA5; 64]);
        // The 24 bytes cut off still hold the secret, past the length.
        bytes.truncate(40);
        let address = bytes.as_ptr();
        let mut plaintext = Plaintext::new(bytes);
        plaintext.wipe();
        assert_eq!(plaintext.0.as_ptr(), address, "the buffer moved");
        assert!(plaintext.0.len() >= 64);
        assert!(plaintext.0.iter().all(|b| *b == 0));
    }

    #[test]
    fn zeroize_empties_it() {
        let mut plaintext = Plaintext::from(b"secret".to_vec());
        plaintext.zeroize();
        assert!(plaintext.is_empty());
    }

    #[test]
    fn debug_shows_the_length_only() {
        let plaintext = Plaintext::from(b"hunter2".to_vec());
        assert_eq!(format!("{plaintext:?}"), "Plaintext { len: 7 }");
        assert_eq!(&plaintext[..], b"hunter2");
        assert_eq!(plaintext.as_ref(), b"hunter2");
    }
}
