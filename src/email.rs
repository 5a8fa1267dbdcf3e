//! Email addresses: the one rule for every address certkeeper reads (the
//! ACME contact, console whitelists, console users).

use crate::domain::Domain;
use crate::error::{Error, Result};

/// Longest address accepted (RFC 5321's path limit less the angle brackets).
const MAX_EMAIL_LEN: usize = 254;
/// Longest local part (RFC 5321).
const MAX_LOCAL_LEN: usize = 64;
/// Characters a local part may hold besides ASCII letters, digits and
/// single inner dots: RFC 5322's `atext` without `#`, `%`, `/` and `?`,
/// which change the meaning of a `mailto:` URI or route mail elsewhere.
const LOCAL_SPECIALS: &str = "!$&'*+-=^_`{|}~";

/// The canonical form of an email address: trimmed, the local part
/// lowercased, the domain normalised as a [`Domain`] (lowercase, punycode,
/// no trailing dot). `None` when `input` is not an address.
///
/// One rule for every address: the ACME contact
/// (`_APP_SYSTEM_SECURITY_EMAIL_ADDRESS`), the console email whitelist and
/// the console's users. An address is `local@domain` where
/// - the local part is 1 to 64 characters of ASCII letters, digits, single
///   inner dots and `! $ & ' * + - = ^ _ ` { | } ~` (RFC 5322's dot-atom
///   without `#`, `%`, `/` and `?`, which would change a `mailto:` URI or
///   route mail through another host);
/// - the domain is a hostname with at least two labels, not an IP literal;
/// - the whole is at most 254 characters, without whitespace or control
///   characters.
///
/// Internationalised local parts (RFC 6531) are refused because, without
/// Unicode normalisation, invisible and look-alike characters
/// (`admin\u{200B}@example.com`, a U+FEFF, a Cyrillic `а`) would make
/// distinct strings of one visible address. Internationalised domains are
/// fine: they are compared in punycode.
///
/// ```
/// use certkeeper::email::normalize_email;
/// assert_eq!(normalize_email(" Ops@Example.COM ").as_deref(), Some("ops@example.com"));
/// assert_eq!(normalize_email("a@example.com@evil.net"), None);
/// assert_eq!(normalize_email("admin\u{200B}@example.com"), None);
/// assert_eq!(normalize_email("a?b@example.com"), None);
/// ```
pub fn normalize_email(input: &str) -> Option<String> {
    let input = input.trim();
    if input.len() > MAX_EMAIL_LEN || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = input.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && local.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'.' || LOCAL_SPECIALS.as_bytes().contains(&b)
        })
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    if !local_ok {
        return None;
    }
    let domain = email_domain(domain)?;
    Some(format!("{}@{domain}", local.to_ascii_lowercase()))
}

/// The domain part of an address, normalised; `None` unless it is a
/// hostname of at least two labels (never a wildcard).
pub(crate) fn email_domain(domain: &str) -> Option<Domain> {
    if domain.is_empty() || domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Domain::new(domain)
        .ok()
        .filter(|d| d.ip().is_none() && !d.is_wildcard() && d.as_str().contains('.'))
}

/// [`normalize_email`] for a setting: an [`Error::Config`] naming `setting`
/// when `input` is not an address.
pub fn parse_email(setting: &str, input: &str) -> Result<String> {
    normalize_email(input).ok_or_else(|| {
        Error::config(
            setting,
            format!(
                "{:?} is not a valid email address",
                input.chars().take(80).collect::<String>()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_address() {
        for (input, expected) in [
            ("ops@example.com", Some("ops@example.com")),
            (
                " Ops.Team+certs@Example.COM ",
                Some("ops.team+certs@example.com"),
            ),
            ("o'brien@example.ie", Some("o'brien@example.ie")),
            ("leser@Bücher.de", Some("leser@xn--bcher-kva.de")),
            ("a?b@example.com", None),
            ("a%40b@example.com", None),
            ("a#b@example.com", None),
            ("a/b@example.com", None),
            (".a@example.com", None),
            ("a.@example.com", None),
            ("a..b@example.com", None),
            ("a@localhost", None),
            ("a@127.0.0.1", None),
            ("a@[::1]", None),
            ("a@example.com@evil.net", None),
            ("jürgen@example.com", None),
            ("admin\u{200B}@example.com", None),
            ("not an email", None),
            ("", None),
        ] {
            assert_eq!(normalize_email(input).as_deref(), expected, "{input:?}");
            assert_eq!(
                parse_email("X", input).ok().as_deref(),
                expected,
                "{input:?}"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(normalize_email(&long_local), None);
    }
}
