//! Certificate chain and PEM parsing on any text: `chain_der`, `leaf_der`,
//! `validity`, `fingerprint` and `IssuedCert::from_pem` (a chain and a key,
//! the input split at its first NUL) never panic; a chain that parses has a
//! leaf, and the leaf is its first certificate.
#![no_main]

use certkeeper::cert::{chain_der, fingerprint, leaf_der, validity};
use certkeeper::issuer::IssuedCert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (chain, key) = text.split_once('\0').unwrap_or((&text, ""));
    if let Ok(certs) = chain_der(chain) {
        assert!(!certs.is_empty());
        let leaf = leaf_der(chain).expect("a chain that parses has a leaf");
        assert_eq!(leaf.as_ref(), certs[0].as_ref());
        for der in &certs {
            if let Ok((not_before, not_after)) = validity(der) {
                let _ = (not_before, not_after);
            }
            assert_eq!(fingerprint(der).len(), 64);
        }
    }
    let _ = validity(data);
    let _ = IssuedCert::from_pem(chain.to_owned(), key.to_owned().into());
});
