//! `Domain::new` on any text: never panics, and a name it accepts is
//! normalised for good: parsing it again gives the same name, at most 253
//! characters of lower-case ASCII (punycode for international names).
#![no_main]

use certkeeper::Domain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(domain) = Domain::new(text) {
        let name = domain.as_str();
        assert!(name.len() <= 253, "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii() && !b.is_ascii_uppercase()),
            "{name:?}"
        );
        let again = Domain::new(name).unwrap_or_else(|e| panic!("{name:?} reparsed: {e}"));
        assert_eq!(again, domain);
    }
});
