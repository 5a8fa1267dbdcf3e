//! Domain names: validation, normalisation, and which names can get a public certificate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Top-level labels that never get a public certificate (RFC 2606, RFC 6761,
/// RFC 6762 and ICANN's `.internal`).
const LOCAL_TLDS: &[&str] = &[
    "test",
    "localhost",
    "local",
    "internal",
    "invalid",
    "example",
];

/// Longest input looked at before refusing: anything longer cannot become a
/// valid name, and refusing early bounds the work done on garbage.
const MAX_INPUT_LEN: usize = 1024;

/// A validated, normalised hostname or IP literal.
///
/// Construction (`Domain::new`, `parse`, `try_from`, deserialisation) lowercases
/// the name, converts internationalised names to punycode (`bücher.de` becomes
/// `xn--bcher-kva.de`), drops one trailing dot, and enforces the DNS rules:
/// at most 253 characters, labels of 1 to 63 characters made of `a-z`, `0-9`
/// and `-`, not starting or ending with `-`. IP addresses are accepted in their
/// canonical text form (`[::1]` becomes `::1`). Anything else is an
/// [`Error::InvalidDomain`]. A `Domain` never contains `/`, `\`, `..`, spaces or
/// control characters, so it is safe as a file name.
///
/// ```
/// use certkeeper::Domain;
/// let d = Domain::new("WWW.Example.COM.").unwrap();
/// assert_eq!(d.as_str(), "www.example.com");
/// assert!(d.is_public());
/// assert!(Domain::new("app.localhost").unwrap().is_local());
/// assert!(Domain::new("../etc/passwd").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain(String);

impl Domain {
    /// Validates and normalises `input`.
    pub fn new(input: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidDomain {
            input: input.chars().take(80).collect(),
            reason,
        };
        if input.len() > MAX_INPUT_LEN {
            return Err(invalid("longer than 253 characters"));
        }
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Self(ip.to_string()));
        }
        if trimmed.chars().any(|c| {
            c.is_control()
                || c.is_whitespace()
                || matches!(c, '/' | '\\' | '*' | ':' | '@' | '%' | '?' | '#')
        }) {
            return Err(invalid(
                "contains a character that is not allowed in a hostname",
            ));
        }
        let without_dot = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if without_dot.is_empty() {
            return Err(invalid("empty"));
        }
        if without_dot.split('.').any(str::is_empty) {
            return Err(invalid("empty label"));
        }
        let ascii = idna::domain_to_ascii(without_dot)
            .map_err(|_| invalid("not a valid internationalised domain name"))?;
        Self::check_ascii(&ascii).map_err(invalid)?;
        Ok(Self(ascii))
    }

    fn check_ascii(name: &str) -> std::result::Result<(), &'static str> {
        if name.is_empty() {
            return Err("empty");
        }
        if name.len() > 253 {
            return Err("longer than 253 characters");
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err("empty label");
            }
            if label.len() > 63 {
                return Err("label longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err("label with a character other than a-z, 0-9 and -");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("label starting or ending with -");
            }
        }
        Ok(())
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address, when this is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.0.parse().ok()
    }

    /// Whether no public CA can issue for this name: `localhost`, IP literals,
    /// and names under `.test`, `.localhost`, `.local`, `.internal`,
    /// `.invalid` or `.example`. Such names get self-signed certificates.
    pub fn is_local(&self) -> bool {
        if self.ip().is_some() {
            return true;
        }
        let tld = self.0.rsplit('.').next().unwrap_or_default();
        LOCAL_TLDS.contains(&tld)
    }

    /// Whether a public CA can issue for this name: it is not local and it
    /// sits under a known public suffix with at least one label of its own
    /// (`example.co.uk` yes, `co.uk` and `foo.unknowntld` no).
    pub fn is_public(&self) -> bool {
        if self.is_local() {
            return false;
        }
        match psl::suffix(self.0.as_bytes()) {
            Some(suffix) if suffix.is_known() => suffix.as_bytes().len() < self.0.len(),
            _ => false,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({:?})", self.0)
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Hash and Eq are those of the inner String, so maps keyed by `Domain` can be
// searched with a plain `&str` (the TLS handshake path does, without
// validating the name again).
impl std::borrow::Borrow<str> for Domain {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for Domain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for Domain {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for Domain {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(&s)
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Domain::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_trailing_dot_and_idn() {
        assert_eq!(
            Domain::new("WWW.Example.COM.").unwrap().as_str(),
            "www.example.com"
        );
        assert_eq!(
            Domain::new("bücher.de").unwrap().as_str(),
            "xn--bcher-kva.de"
        );
        assert_eq!(Domain::new("[::1]").unwrap().as_str(), "::1");
        assert_eq!(Domain::new(" 127.0.0.1 ").unwrap().as_str(), "127.0.0.1");
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        let huge = "a".repeat(1 << 20);
        for bad in [
            "",
            " ",
            ".",
            "..",
            "a..b",
            ".a.com",
            "../etc/passwd",
            "a/b.com",
            "a\\b.com",
            "-a.com",
            "a-.com",
            "a_b.com",
            "*.example.com",
            "a b.com",
            "a\0.com",
            "ex@mple.com",
            "a.com:443",
            "héllo\u{202e}.com",
            &long_label,
            &long_name,
            &huge,
            "xn--.com",
        ] {
            let err = Domain::new(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidDomain { .. }), "{bad:?}: {err}");
            // The error never echoes more than 80 characters of input.
            assert!(err.to_string().len() < 200, "{bad:?}");
        }
    }

    #[test]
    fn length_limits_are_the_dns_ones() {
        let label63 = "a".repeat(63);
        assert!(Domain::new(&format!("{label63}.com")).is_ok());
        // 4 labels of 63 + 3 dots = 255 > 253.
        let too_long = [label63.as_str(); 4].join(".");
        assert!(Domain::new(&too_long).is_err());
        let just_fits = format!("{}.{}.{}.{}", label63, label63, label63, "a".repeat(61));
        assert_eq!(just_fits.len(), 253);
        assert!(Domain::new(&just_fits).is_ok());
    }

    #[test]
    fn local_names_are_never_public() {
        for local in [
            "localhost",
            "app.localhost",
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "web.test",
            "printer.local",
            "db.internal",
            "x.invalid",
            "www.example",
        ] {
            let d = Domain::new(local).unwrap();
            assert!(d.is_local(), "{local}");
            assert!(!d.is_public(), "{local}");
        }
    }

    #[test]
    fn public_needs_a_known_suffix_and_a_label_of_its_own() {
        for public in [
            "example.com",
            "www.example.co.uk",
            "xn--bcher-kva.de",
            "app.certkeeper.dev",
        ] {
            assert!(Domain::new(public).unwrap().is_public(), "{public}");
        }
        for not_public in ["com", "co.uk", "server.unknowntld", "intranet"] {
            assert!(
                !Domain::new(not_public).unwrap().is_public(),
                "{not_public}"
            );
        }
    }

    #[test]
    fn deserialising_validates() {
        let ok: Domain = serde_json::from_str("\"Example.COM\"").unwrap();
        assert_eq!(ok.as_str(), "example.com");
        assert!(serde_json::from_str::<Domain>("\"../x\"").is_err());
    }
}
