//! Opening sealed envelopes: any bytes given to `Keyring::open` (through
//! `Sealed::parse`) fail with a typed error, never a panic, and never open
//! (no forgery without the key); what the keyring seals opens to the same
//! bytes, and not under other associated data.
#![no_main]

use std::sync::OnceLock;

use certkeeper::cipher::{Keyring, Sealed, SecretCipher};
use libfuzzer_sys::fuzz_target;

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| {
        Keyring::from_keys(
            true,
            [
                (1, "fuzz-key-version-one-0123456789abcdef"),
                (2, "fuzz-key-version-two-fedcba9876543210"),
            ],
        )
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let keyring = keyring();
    let sealed = Sealed::from_bytes(data.to_vec());
    let _ = sealed.key_version();
    assert!(keyring.open(&sealed, b"aad").is_err());

    if let Ok(resealed) = keyring.seal(data, b"domain:a.example.com") {
        let opened = keyring.open(&resealed, b"domain:a.example.com").unwrap();
        assert_eq!(&opened[..], data);
        assert!(keyring.open(&resealed, b"domain:b.example.com").is_err());
    }
});
