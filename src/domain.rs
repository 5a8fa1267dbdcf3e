//! Domain names: validation, normalisation, and which names can get a public certificate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use idna::uts46::{AsciiDenyList, Hyphens, Uts46};
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

const REASON_INVISIBLE: &str =
    "contains an invisible character (zero-width, joiner, soft hyphen, bidi control, variation selector)";
const REASON_MAPPED: &str =
    "contains a character IDNA2008 disallows (a compatibility form that IDNA mapping would replace)";
const REASON_NOT_NFC: &str = "not in Unicode normalisation form C (NFC)";
const REASON_SYMBOL: &str =
    "contains a character IDNA2008 disallows (only letters, digits and combining marks are allowed)";
const REASON_NOT_IDN: &str = "not a valid internationalised domain name";
const REASON_WILDCARD: &str =
    "a wildcard is `*.` followed by a name of two labels or more under a public suffix, or a local name";
const REASON_NUMERIC: &str =
    "last label is a number (digits, or 0x and hex digits) that resolvers read as an IPv4 address";

/// A validated, normalised hostname or IP literal.
///
/// Construction (`Domain::new`, `parse`, `try_from`, deserialisation) lowercases
/// the name, converts internationalised names to punycode (`bücher.de` becomes
/// `xn--bcher-kva.de`), drops one trailing dot, and enforces the DNS rules:
/// at most 253 characters, labels of 1 to 63 characters made of `a-z`, `0-9`
/// and `-`, not starting or ending with `-`. IP addresses are accepted in their
/// canonical text form (`[::1]` becomes `::1`, `127.0.0.1.` becomes
/// `127.0.0.1`). Anything else is an [`Error::InvalidDomain`]. A `Domain`
/// never contains `/`, `\`, `..`, spaces or control characters, so it is safe
/// as a file name (a wildcard's `*` is allowed on Unix file systems).
///
/// # Wildcards
///
/// `*.example.com` is a wildcard name: a certificate stored for it serves
/// every name of exactly one more label (`a.example.com`, not `example.com`
/// nor `a.b.example.com`). It is accepted only as a leading `*.` label
/// followed by a valid name of at least two labels that is either under a
/// known public suffix with a label of its own (`*.example.co.uk`, not
/// `*.co.uk`) or a local name (`*.app.test`, `*.app.localhost`); never an IP
/// address, and never a `*` anywhere else (`a*.example.com`,
/// `*.*.example.com`, `a.*.example.com`). See [`is_wildcard`](Self::is_wildcard).
/// A public CA validates a wildcard only through DNS-01: certkeeper refuses
/// to order one through an HTTP-01 or TLS-ALPN-01 solver
/// ([`Error::WildcardNeedsDns01`]).
///
/// A name is refused rather than silently changed when:
///
/// - IDNA mapping (UTS #46) would change a label beyond letter case: every
///   code point of a non-ASCII label must map to itself or to its own
///   single-code-point case partner (`Ü` and `ü`). Compatibility forms
///   (fullwidth `ａ`, ligatures such as `ﬁ`, `①`, the ideographic full stop
///   `。`) are refused, and so is a label not in Unicode NFC (`u` followed by a
///   combining diaeresis; type `ü`).
/// - A code point of a Unicode label (typed, or decoded from an `xn--` label)
///   is not one IDNA2008 (RFC 5892) allows: it must be a letter, a digit or a
///   combining mark, which refuses symbols and punctuation such as the
///   look-alikes of `/` (U+2215 DIVISION SLASH, U+2044 FRACTION SLASH) and of
///   `-` (U+2010 HYPHEN), and emoji. RFC 5892's own exceptions apply: the
///   Arabic tatweel, the old Hangul jamo and the combining marks for symbols
///   are refused; the Catalan middle dot is allowed between two `l`
///   (`col·legi.cat`); the other context-dependent punctuation (Greek keraia,
///   Hebrew geresh and gershayim, katakana middle dot) is refused.
/// - It holds an invisible character: zero-width space, zero-width
///   (non-)joiner, soft hyphen, word joiner, byte order mark, a variation
///   selector, a bidi control (U+200E, U+200F, U+202A to U+202E, U+2066 to
///   U+2069), or any other default-ignorable code point, which IDNA mapping
///   would delete (`a\u{200b}b.com` is refused, not turned into `ab.com`).
/// - The last label is a number: all digits, or `0x` followed by hexadecimal
///   digits (the URL Standard's "ends in a number" rule), because resolvers
///   read such names as IPv4 addresses (`0x7f.1`, `1.2.3`, `example.123`).
///   Labels before the last may be numeric (`123.example.com`), and a label
///   may start with digits (`1password.com`).
///
/// ```
/// use certkeeper::Domain;
/// let d = Domain::new("WWW.Example.COM.").unwrap();
/// assert_eq!(d.as_str(), "www.example.com");
/// assert!(d.is_public());
/// assert!(Domain::new("app.localhost").unwrap().is_local());
/// assert!(Domain::new("../etc/passwd").is_err());
/// assert_eq!(Domain::new("Bücher.de").unwrap().as_str(), "xn--bcher-kva.de");
/// assert!(Domain::new("evil.com\u{2215}.example.org").is_err());
/// assert!(Domain::new("a\u{200b}b.com").is_err());
/// assert!(Domain::new("0x7f.1").is_err());
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
        if let Some(base) = trimmed.strip_prefix("*.") {
            return Self::wildcard(base).map_err(invalid);
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
        // An IPv4 address written with a trailing dot is still that address.
        if let Ok(ip) = without_dot.parse::<Ipv4Addr>() {
            return Ok(Self(ip.to_string()));
        }
        let lowered = without_dot.to_ascii_lowercase();
        if !lowered.is_ascii() || lowered.split('.').any(|label| label.starts_with("xn--")) {
            Self::check_unicode(&lowered).map_err(invalid)?;
        }
        let ascii = idna::domain_to_ascii(&lowered).map_err(|_| invalid(REASON_NOT_IDN))?;
        Self::check_ascii(&ascii).map_err(invalid)?;
        if ends_in_a_number(&ascii) {
            return Err(invalid(REASON_NUMERIC));
        }
        Ok(Self(ascii))
    }

    /// The name in what a server has in hand: an HTTP `Host` header or
    /// `:authority` (`example.com:443`, `[::1]:8443`), or a TLS server name
    /// (`Example.COM.`). The port is dropped, brackets around an IPv6
    /// address are removed, then the name is checked and normalised as by
    /// [`new`](Self::new). A wildcard, a port that is not a number from 0
    /// to 65535, user information (`user@host`) or anything else that is
    /// not a host is [`Error::InvalidDomain`].
    ///
    /// ```
    /// use certkeeper::Domain;
    /// assert_eq!(Domain::from_host("Example.COM.:443").unwrap().as_str(), "example.com");
    /// assert_eq!(Domain::from_host("[::1]:8443").unwrap().as_str(), "::1");
    /// assert!(Domain::from_host("example.com:https").is_err());
    /// ```
    pub fn from_host(host: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidDomain {
            input: host.chars().take(80).collect(),
            reason,
        };
        if host.len() > MAX_INPUT_LEN + 8 {
            return Err(invalid("longer than 253 characters"));
        }
        let trimmed = host.trim();
        let name = if let Some(rest) = trimmed.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| invalid("an opening [ without a closing ]"))?;
            if inside.parse::<Ipv6Addr>().is_err() {
                return Err(invalid("not an IPv6 address between [ and ]"));
            }
            if !after.is_empty() {
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid("something other than a port after ]"))?;
                check_port(port).map_err(invalid)?;
            }
            inside
        } else if trimmed.parse::<Ipv6Addr>().is_ok() {
            // An IPv6 address without brackets (never valid with a port).
            trimmed
        } else if let Some((name, port)) = trimmed.rsplit_once(':') {
            check_port(port).map_err(invalid)?;
            name
        } else {
            trimmed
        };
        if name.starts_with('*') {
            return Err(invalid("a wildcard is not a host"));
        }
        Self::new(name).map_err(|e| match e {
            Error::InvalidDomain { reason, .. } => invalid(reason),
            other => other,
        })
    }

    /// `*.` and `base`, when `base` is a name a wildcard may stand under.
    fn wildcard(base: &str) -> std::result::Result<Self, &'static str> {
        let base = Self::new(base).map_err(|e| match e {
            Error::InvalidDomain { reason, .. } => reason,
            _ => REASON_WILDCARD,
        })?;
        if base.ip().is_some() || base.is_wildcard() {
            return Err(REASON_WILDCARD);
        }
        if base.0.split('.').count() < 2 || !(base.is_public() || base.is_local()) {
            return Err(REASON_WILDCARD);
        }
        if base.0.len() + 2 > 253 {
            return Err("longer than 253 characters");
        }
        Ok(Self(format!("*.{}", base.0)))
    }

    /// Refuses what IDNA processing would change beyond letter case, and code
    /// points that IDNA2008 disallows, in `name` (ASCII already lowercased).
    fn check_unicode(name: &str) -> std::result::Result<(), &'static str> {
        if name.chars().any(is_invisible) {
            return Err(REASON_INVISIBLE);
        }
        let uts46 = Uts46::new();
        let (mapped, result) =
            uts46.to_unicode(name.as_bytes(), AsciiDenyList::EMPTY, Hyphens::Allow);
        if result.is_err() {
            return Err(REASON_NOT_IDN);
        }
        if mapped.split('.').count() != name.split('.').count() {
            // Something mapped to a dot (U+3002 IDEOGRAPHIC FULL STOP) or
            // merged labels.
            return Err(why_changed(&uts46, name));
        }
        for (label, mapped_label) in name.split('.').zip(mapped.split('.')) {
            // An `xn--` label was decoded, and UTS #46 checked that what it
            // decodes to is NFC and unchanged by mapping; other labels must
            // come out of the mapping as they went in, but for letter case.
            if !label.starts_with("xn--") && !same_but_case(label, mapped_label) {
                return Err(why_changed(&uts46, label));
            }
            check_code_points(&uts46, mapped_label)?;
        }
        Ok(())
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

    /// Whether this is a wildcard name (`*.example.com`): its certificate
    /// serves every name of exactly one more label. A public CA issues one
    /// only through DNS-01.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The name a wildcard stands under (`example.com` for `*.example.com`);
    /// `None` for a name that is not a wildcard.
    pub fn wildcard_base(&self) -> Option<&str> {
        self.0.strip_prefix("*.")
    }

    /// Whether this wildcard name covers `name` (lowercase, without a
    /// trailing dot): `name` is one label followed by the wildcard's base.
    /// Always `false` for a name that is not a wildcard.
    ///
    /// ```
    /// use certkeeper::Domain;
    /// let wildcard = Domain::new("*.example.com").unwrap();
    /// assert!(wildcard.covers("a.example.com"));
    /// assert!(!wildcard.covers("example.com"));
    /// assert!(!wildcard.covers("a.b.example.com"));
    /// ```
    pub fn covers(&self, name: &str) -> bool {
        let Some(base) = self.wildcard_base() else {
            return false;
        };
        match name.split_once('.') {
            Some((label, rest)) => !label.is_empty() && label != "*" && rest == base,
            None => false,
        }
    }

    /// Whether no public CA can issue for this name: `localhost`, names
    /// under `.test`, `.localhost`, `.local`, `.internal`, `.invalid` or
    /// `.example` (a wildcard: when its base is local), and IP addresses
    /// that are not globally routable (see [`is_public`](Self::is_public)).
    /// Such names get self-signed certificates.
    ///
    /// ```
    /// use certkeeper::Domain;
    /// assert!(Domain::new("127.0.0.1").unwrap().is_local());
    /// assert!(Domain::new("192.168.1.10").unwrap().is_local());
    /// assert!(Domain::new("fe80::1").unwrap().is_local());
    /// assert!(!Domain::new("8.8.8.8").unwrap().is_local());
    /// ```
    pub fn is_local(&self) -> bool {
        if let Some(ip) = self.ip() {
            return !is_global(ip);
        }
        let tld = self.0.rsplit('.').next().unwrap_or_default();
        LOCAL_TLDS.contains(&tld)
    }

    /// Whether a public CA can issue for this name: it is not local and it
    /// sits under a known public suffix with at least one label of its own
    /// (`example.co.uk` yes, `co.uk` and `foo.unknowntld` no). A wildcard is
    /// public when its base is, but a public CA validates it only through
    /// DNS-01, never HTTP-01 or TLS-ALPN-01.
    ///
    /// An IP address is public when it is globally routable unicast (RFC
    /// 8738 certificates, validated through HTTP-01 or TLS-ALPN-01, never
    /// DNS-01). IPv4: every address but `0.0.0.0/8`, private (`10/8`,
    /// `172.16/12`, `192.168/16`), shared CGNAT (`100.64/10`), loopback
    /// (`127/8`), link-local (`169.254/16`), IETF protocol assignments
    /// (`192.0.0/24`), documentation (`192.0.2/24`, `198.51.100/24`,
    /// `203.0.113/24`), the old 6to4 relay (`192.88.99/24`), benchmarking
    /// (`198.18/15`), multicast (`224/4`), reserved (`240/4`) and broadcast.
    /// IPv6: global unicast (`2000::/3`) but IETF protocol assignments
    /// (`2001::/23`), documentation (`2001:db8::/32`, `3fff::/20`) and
    /// 6to4 (`2002::/16`); everything outside `2000::/3` (loopback,
    /// unspecified, IPv4-mapped, NAT64, unique local `fc00::/7`, link-local
    /// `fe80::/10`, multicast ...) is local.
    ///
    /// ```
    /// use certkeeper::Domain;
    /// assert!(Domain::new("8.8.8.8").unwrap().is_public());
    /// assert!(Domain::new("2606:4700:4700::1111").unwrap().is_public());
    /// assert!(!Domain::new("100.64.0.1").unwrap().is_public());
    /// assert!(!Domain::new("2001:db8::1").unwrap().is_public());
    /// ```
    pub fn is_public(&self) -> bool {
        if let Some(ip) = self.ip() {
            return is_global(ip);
        }
        if self.is_local() {
            return false;
        }
        let name = self.wildcard_base().unwrap_or(&self.0);
        match psl::suffix(name.as_bytes()) {
            Some(suffix) if suffix.is_known() => suffix.as_bytes().len() < name.len(),
            _ => false,
        }
    }
}

/// Whether `ip` is globally routable unicast, so that a public CA may
/// issue for it (see [`Domain::is_public`]). Conservative: an address of a
/// special-purpose block (IANA's IPv4 and IPv6 special-purpose registries)
/// is never global, even where the registry marks a few as reachable, as
/// no certificate is wanted for them.
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_global_v4(ip),
        IpAddr::V6(ip) => is_global_v6(ip),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0 included
        || ip.is_private()
        || (a == 100 && (b & 0xc0) == 64) // shared address space (CGNAT), 100.64/10
        || ip.is_loopback()
        || ip.is_link_local()
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a == 192 && b == 88 && c == 99) // deprecated 6to4 relay anycast
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18/15
        || ip.is_multicast()
        || a >= 240) // reserved, 240/4, and the broadcast address
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    if first & 0xe000 != 0x2000 {
        // Outside global unicast, 2000::/3.
        return false;
    }
    match first {
        // IETF protocol assignments (2001::/23) and documentation (2001:db8::/32).
        0x2001 => second >= 0x0200 && second != 0x0db8,
        // 6to4.
        0x2002 => false,
        // Documentation, 3fff::/20.
        0x3fff => second >= 0x1000,
        _ => true,
    }
}

/// Whether the URL Standard's "ends in a number" rule holds for `name`
/// (lowercase ASCII): its last label is all digits, or `0x` and hex digits.
/// Resolvers (`inet_aton`) read such a name as an IPv4 address.
fn ends_in_a_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or_default();
    let all_digits = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()));
    all_digits || hex
}

/// Invisible code points refused up front with a precise reason: zero-width
/// space and (non-)joiners, soft hyphen, combining grapheme joiner, word
/// joiner and invisible operators, byte order mark, variation selectors and
/// bidi controls. Other default-ignorable code points are caught because IDNA
/// mapping deletes them (see [`why_changed`]) or refuses them.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{61C}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// Whether `a` and `b` hold the same code points but for letter case: each
/// pair is equal, or a letter and its single-code-point case partner. (This
/// refuses U+212A KELVIN SIGN, whose lowercase is `k` but whose partner is not.)
fn same_but_case(a: &str, b: &str) -> bool {
    fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
        let c = it.next()?;
        it.next().is_none().then_some(c)
    }
    let case_pair = |x: char, y: char| {
        single(x.to_lowercase()) == Some(y) && single(y.to_uppercase()) == Some(x)
    };
    a.chars().count() == b.chars().count()
        && a.chars()
            .zip(b.chars())
            .all(|(x, y)| x == y || case_pair(x, y) || case_pair(y, x))
}

/// Why IDNA mapping changed `text`: a code point it deletes is invisible
/// (default-ignorable), one it replaces is a compatibility form; when each code
/// point is kept on its own, composition changed the text, which was not NFC.
fn why_changed(uts46: &Uts46, text: &str) -> &'static str {
    for c in text.chars().filter(|c| !c.is_ascii()) {
        let alone = c.to_string();
        let (mapped, result) =
            uts46.to_unicode(alone.as_bytes(), AsciiDenyList::EMPTY, Hyphens::Allow);
        if mapped.is_empty() {
            return REASON_INVISIBLE;
        }
        // An error here is a combining mark alone or a code point refused
        // anyway; only a successful mapping to something else is telling.
        if result.is_ok() && !same_but_case(&alone, &mapped) {
            return REASON_MAPPED;
        }
    }
    REASON_NOT_NFC
}

/// Refuses code points of a mapped Unicode label (lowercase, NFC) that
/// IDNA2008 (RFC 5892) disallows. Its PVALID code points are letters, digits
/// and combining marks; symbols and punctuation are DISALLOWED. The fixed
/// exceptions the RFC itself lists are applied on top.
fn check_code_points(uts46: &Uts46, label: &str) -> std::result::Result<(), &'static str> {
    let chars: Vec<char> = label.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii() {
            continue;
        }
        if is_invisible(c) {
            return Err(REASON_INVISIBLE);
        }
        let allowed = if rfc5892_disallowed(c) {
            false
        } else if c.is_alphanumeric() {
            true
        } else if c == '\u{B7}' {
            // MIDDLE DOT, CONTEXTO: only between two `l` (Catalan `l·l`).
            i > 0 && chars[i - 1] == 'l' && chars.get(i + 1) == Some(&'l')
        } else {
            // ARABIC SIGN SINDHI AMPERSAND and POSTPOSITION MEN, TIBETAN MARK
            // INTERSYLLABIC TSHEG: PVALID by exception (RFC 5892 section 2.6).
            matches!(c, '\u{6FD}' | '\u{6FE}' | '\u{F0B}') || is_combining_mark(uts46, c)
        };
        if !allowed {
            return Err(REASON_SYMBOL);
        }
    }
    Ok(())
}

/// Code points RFC 5892 makes DISALLOWED whatever their category: the
/// exceptions of section 2.6 (ARABIC TATWEEL, NKO LAJANYALAN, HANGUL tone
/// marks, vertical kana repeat marks, VERTICAL IDEOGRAPHIC ITERATION MARK),
/// the IgnorableBlocks of section 2.4 (combining marks for symbols, musical
/// symbols) and the OldHangulJamo of section 2.9.
fn rfc5892_disallowed(c: char) -> bool {
    matches!(
        c,
        '\u{640}'
            | '\u{7FA}'
            | '\u{302E}'
            | '\u{302F}'
            | '\u{3031}'..='\u{3035}'
            | '\u{303B}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{1D100}'..='\u{1D24F}'
            | '\u{1100}'..='\u{11FF}'
            | '\u{A960}'..='\u{A97F}'
            | '\u{D7B0}'..='\u{D7FF}'
    )
}

/// Whether `c`, a code point IDNA mapping keeps, is a combining mark
/// (General_Category M). The idna crate knows the category but does not
/// export it; it shows through UTS #46's rule that a label must not begin with
/// a combining mark: `c` alone is refused, and after a letter it is not
/// (which also tells a mark from an Arabic number separator, refused alone by
/// the bidi rule and after a Latin letter as well).
fn is_combining_mark(uts46: &Uts46, c: char) -> bool {
    let alone = c.to_string();
    let after_letter = format!("a{c}");
    let refused = |text: &str| {
        uts46
            .to_unicode(text.as_bytes(), AsciiDenyList::EMPTY, Hyphens::Allow)
            .1
            .is_err()
    };
    refused(&alone) && !refused(&after_letter)
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

/// `Ok` when `port` is a port number: 1 to 5 digits, at most 65535.
fn check_port(port: &str) -> std::result::Result<(), &'static str> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a port that is not a number");
    }
    port.parse::<u16>()
        .map(drop)
        .map_err(|_| "a port above 65535")
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
    fn ip_addresses_are_public_only_when_globally_routable() {
        // Each block's first and last addresses, and its neighbours outside.
        let table: &[(&str, bool)] = &[
            // IPv4
            ("0.0.0.0", false),
            ("0.255.255.255", false),
            ("1.0.0.0", true),
            ("1.1.1.1", true),
            ("8.8.8.8", true),
            ("9.255.255.255", true),
            ("10.0.0.0", false),
            ("10.255.255.255", false),
            ("11.0.0.0", true),
            ("100.63.255.255", true),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("100.128.0.0", true),
            ("126.255.255.255", true),
            ("127.0.0.1", false),
            ("127.255.255.255", false),
            ("128.0.0.0", true),
            ("169.253.255.255", true),
            ("169.254.0.0", false),
            ("169.254.255.255", false),
            ("169.255.0.0", true),
            ("172.15.255.255", true),
            ("172.16.0.0", false),
            ("172.31.255.255", false),
            ("172.32.0.0", true),
            ("191.255.255.255", true),
            ("192.0.0.0", false),
            ("192.0.0.255", false),
            ("192.0.1.0", true),
            ("192.0.2.0", false),
            ("192.0.2.255", false),
            ("192.0.3.0", true),
            ("192.88.98.255", true),
            ("192.88.99.0", false),
            ("192.88.99.255", false),
            ("192.88.100.0", true),
            ("192.167.255.255", true),
            ("192.168.0.0", false),
            ("192.168.255.255", false),
            ("192.169.0.0", true),
            ("198.17.255.255", true),
            ("198.18.0.0", false),
            ("198.19.255.255", false),
            ("198.20.0.0", true),
            ("198.51.99.255", true),
            ("198.51.100.0", false),
            ("198.51.100.255", false),
            ("198.51.101.0", true),
            ("203.0.112.255", true),
            ("203.0.113.0", false),
            ("203.0.113.255", false),
            ("203.0.114.0", true),
            ("223.255.255.255", true),
            ("224.0.0.0", false),
            ("239.255.255.255", false),
            ("240.0.0.0", false),
            ("255.255.255.254", false),
            ("255.255.255.255", false),
            // IPv6
            ("::", false),
            ("::1", false),
            ("::ffff:8.8.8.8", false),
            ("64:ff9b::808:808", false),
            ("100::1", false),
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2000::", true),
            ("2001::1", false),
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:200::", true),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:db8::", false),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:db9::", true),
            ("2001:4860:4860::8888", true),
            ("2002::1", false),
            ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2003::", true),
            ("2606:4700:4700::1111", true),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("3fff::", false),
            ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("3fff:1000::", true),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("4000::", false),
            ("5f00::1", false),
            ("fc00::", false),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fe80::1", false),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
        ];
        for (input, public) in table {
            let d = Domain::new(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert!(d.ip().is_some(), "{input}");
            assert_eq!(d.is_public(), *public, "{input}");
            assert_eq!(d.is_local(), !*public, "{input}");
        }
        // The same address however it is written.
        for written in ["[2606:4700:4700::1111]", "2606:4700:4700:0:0:0:0:1111"] {
            let d = Domain::new(written).unwrap();
            assert_eq!(d.as_str(), "2606:4700:4700::1111");
            assert!(d.is_public(), "{written}");
        }
        assert!(Domain::new("8.8.8.8.").unwrap().is_public());
    }

    /// Asserts that each input is refused with a reason containing the text.
    fn assert_refused(table: &[(&str, &str)]) {
        for (input, reason) in table {
            match Domain::new(input) {
                Err(Error::InvalidDomain { reason: got, .. }) => {
                    assert!(
                        got.contains(reason),
                        "{input:?}: {got:?}, wanted {reason:?}"
                    )
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_code_points_idna2008_disallows() {
        let slash_a_label = format!(
            "xn--{}.com",
            idna::punycode::encode_str("a\u{2215}b").unwrap()
        );
        assert_refused(&[
            // Look-alikes of `/` and `-`, which UTS #46 keeps as valid.
            ("a\u{2215}b.com", "IDNA2008"),
            ("evil.com\u{2215}.example.org", "IDNA2008"),
            ("a\u{2044}b.com", "IDNA2008"),
            ("a\u{2010}b.com", "IDNA2008"),
            ("a\u{2011}b.com", "IDNA2008"),
            ("\u{5D0}\u{5BE}\u{5D1}.com", "IDNA2008"),
            (&slash_a_label, "IDNA2008"),
            // Symbols and punctuation.
            ("\u{2603}.com", "IDNA2008"),
            ("\u{1F4A9}.la", "IDNA2008"),
            ("a\u{B7}b.com", "IDNA2008"),
            ("\u{4F8B}\u{30FB}\u{3048}.jp", "IDNA2008"),
            // Compatibility forms the mapping would replace.
            ("\u{FF45}\u{FF58}ample.com", "IDNA2008"),
            ("\u{FB01}le.com", "IDNA2008"),
            ("\u{2460}.com", "IDNA2008"),
            ("\u{24B6}bc.com", "IDNA2008"),
            ("\u{212A}elvin.com", "IDNA2008"),
            ("\u{2160}\u{2161}.com", "IDNA2008"),
            ("a\u{3002}com", "IDNA2008"),
            ("example\u{FF0E}com", "IDNA2008"),
            // RFC 5892 exceptions, ignorable blocks and old Hangul jamo.
            ("\u{645}\u{640}\u{62B}\u{627}\u{644}.com", "IDNA2008"),
            ("a\u{20E5}b.com", "IDNA2008"),
            ("\u{1100}\u{119E}.kr", "IDNA2008"),
            // Not NFC: `u` and a combining diaeresis.
            ("bu\u{308}cher.de", "NFC"),
        ]);
    }

    #[test]
    fn refuses_invisible_characters() {
        let zwnj_a_label = format!(
            "xn--{}.in",
            idna::punycode::encode_str("\u{915}\u{94D}\u{200C}\u{937}").unwrap()
        );
        assert_refused(&[
            ("a\u{200B}b.com", "invisible"),
            ("a\u{200C}b.com", "invisible"),
            ("a\u{200D}b.com", "invisible"),
            ("\u{915}\u{94D}\u{200C}\u{937}.in", "invisible"),
            (&zwnj_a_label, "invisible"),
            ("a\u{AD}b.com", "invisible"),
            ("a\u{2060}b.com", "invisible"),
            ("\u{FEFF}ab.com", "invisible"),
            ("a\u{FE0F}b.com", "invisible"),
            ("a\u{E0100}b.com", "invisible"),
            ("a\u{180B}b.com", "invisible"),
            ("a\u{34F}b.com", "invisible"),
            ("a\u{200E}b.com", "invisible"),
            ("a\u{200F}b.com", "invisible"),
            ("a\u{202A}b.com", "invisible"),
            ("a\u{202B}b.com", "invisible"),
            ("a\u{202C}b.com", "invisible"),
            ("a\u{202D}b.com", "invisible"),
            ("h\u{E9}llo\u{202E}.com", "invisible"),
            ("a\u{2066}b.com", "invisible"),
            ("a\u{2067}b.com", "invisible"),
            ("a\u{2068}b.com", "invisible"),
            ("a\u{2069}b.com", "invisible"),
            ("a\u{61C}b.com", "invisible"),
            // Not listed, found because the mapping deletes them.
            ("a\u{3164}b.com", "invisible"),
            ("a\u{115F}b.com", "invisible"),
            ("a\u{17B4}b.com", "invisible"),
            ("a\u{1D173}b.com", "invisible"),
        ]);
    }

    #[test]
    fn refuses_a_numeric_last_label() {
        assert_refused(&[
            ("0x7f.1", "IPv4"),
            ("01.02.03.004", "IPv4"),
            ("1.2.3", "IPv4"),
            ("example.123", "IPv4"),
            ("example.123.", "IPv4"),
            ("host.0x1f", "IPv4"),
            ("HOST.0X1F", "IPv4"),
            ("host.0x", "IPv4"),
            ("0xffffffff", "IPv4"),
            ("2130706433", "IPv4"),
            ("256.1.1.1", "IPv4"),
            ("1.2.3.4.5", "IPv4"),
            ("127.0.0.01", "IPv4"),
        ]);
        // IP literals, and names whose last label is not a number, still pass.
        for (input, expected) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("1password.com", "1password.com"),
            ("123.example.com", "123.example.com"),
            ("0x7f.example.com", "0x7f.example.com"),
            ("host.1a", "host.1a"),
            ("host.0x1g", "host.0x1g"),
            ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ] {
            assert_eq!(Domain::new(input).unwrap().as_str(), expected, "{input:?}");
        }
    }

    #[test]
    fn still_accepts_plain_idns() {
        for (input, expected) in [
            ("b\u{FC}cher.de", "xn--bcher-kva.de"),
            ("B\u{DC}CHER.DE", "xn--bcher-kva.de"),
            ("\u{4F8B}\u{3048}.jp", "xn--r8jz45g.jp"),
            ("\u{43F}\u{440}\u{438}\u{43C}\u{435}\u{440}.\u{440}\u{444}", "xn--e1afmkfd.xn--p1ai"),
            ("\u{41F}\u{420}\u{418}\u{41C}\u{415}\u{420}.\u{420}\u{424}", "xn--e1afmkfd.xn--p1ai"),
            // The IANA IDN test names (RFC 5892 scripts with combining marks,
            // right-to-left scripts, uppercase Greek with tonos).
            ("\u{645}\u{62B}\u{627}\u{644}.\u{625}\u{62E}\u{62A}\u{628}\u{627}\u{631}", "xn--mgbh0fb.xn--kgbechtv"),
            ("\u{909}\u{926}\u{93E}\u{939}\u{930}\u{923}.\u{92A}\u{930}\u{940}\u{915}\u{94D}\u{937}\u{93E}", "xn--p1b6ci4b4b3a.xn--11b5bs3a9aj6g"),
            ("\u{B89}\u{BA4}\u{BBE}\u{BB0}\u{BA3}\u{BAE}\u{BCD}.\u{BAA}\u{BB0}\u{BBF}\u{B9F}\u{BCD}\u{B9A}\u{BC8}", "xn--zkc6cc5bi7f6e.xn--hlcj6aya9esc7a"),
            ("\u{5D8}\u{5E2}\u{5E1}\u{5D8}", "xn--deba0ad"),
            ("\u{C2E4}\u{B840}.\u{D14C}\u{C2A4}\u{D2B8}", "xn--9n2bp8q.xn--9t4b11yi5a"),
            ("\u{3A0}\u{391}\u{3A1}\u{386}\u{394}\u{395}\u{399}\u{393}\u{39C}\u{391}.\u{394}\u{39F}\u{39A}\u{399}\u{39C}\u{389}", "xn--hxajbheg2az3al.xn--jxalpdlp"),
            ("\u{4F8B}\u{3048}.\u{30C6}\u{30B9}\u{30C8}", "xn--r8jz45g.xn--zckzah"),
            // The Catalan middle dot between two `l`.
            ("col\u{B7}legi.cat", "xn--collegi-xma.cat"),
            ("stra\u{DF}e.de", "xn--strae-oqa.de"),
        ] {
            let got = Domain::new(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.as_str(), expected, "{input:?}");
        }
    }

    #[test]
    fn wildcards_are_a_leading_label_over_a_public_or_local_name() {
        for (input, expected, public, local) in [
            ("*.example.com", "*.example.com", true, false),
            ("*.Example.COM.", "*.example.com", true, false),
            ("*.shop.example.co.uk", "*.shop.example.co.uk", true, false),
            ("*.example.co.uk", "*.example.co.uk", true, false),
            ("*.b\u{FC}cher.de", "*.xn--bcher-kva.de", true, false),
            ("*.app.test", "*.app.test", false, true),
            ("*.app.localhost", "*.app.localhost", false, true),
            ("*.printer.local", "*.printer.local", false, true),
        ] {
            let d = Domain::new(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(d.as_str(), expected, "{input:?}");
            assert!(d.is_wildcard(), "{input:?}");
            assert_eq!(d.is_public(), public, "{input:?}");
            assert_eq!(d.is_local(), local, "{input:?}");
            assert_eq!(d.ip(), None);
            assert_eq!(d.wildcard_base(), Some(&expected[2..]));
        }
        assert!(!Domain::new("example.com").unwrap().is_wildcard());
        assert_refused(&[
            // A public suffix, a single label, or an unknown suffix.
            ("*.com", "wildcard"),
            ("*.co.uk", "wildcard"),
            ("*.test", "wildcard"),
            ("*.localhost", "wildcard"),
            ("*.intranet", "wildcard"),
            ("*.server.unknowntld", "wildcard"),
            // IP addresses.
            ("*.127.0.0.1", "wildcard"),
            ("*.[::1]", "wildcard"),
            // A star anywhere but a whole leading label.
            ("*.*.example.com", "wildcard"),
            ("*", "not allowed"),
            ("*.", "empty"),
            ("**.example.com", "not allowed"),
            ("a*.example.com", "not allowed"),
            ("*a.example.com", "not allowed"),
            ("a.*.example.com", "not allowed"),
            ("example.*", "not allowed"),
            ("*..example.com", "empty label"),
            ("*.-a.example.com", "starting or ending"),
            ("*.a_b.example.com", "a-z, 0-9"),
        ]);
        let label63 = "a".repeat(63);
        // 253 characters in all is the limit, the `*.` included.
        let fits = format!("{label63}.{label63}.{label63}.{}.com", "a".repeat(55));
        assert_eq!(fits.len() + 2, 253);
        assert!(Domain::new(&format!("*.{fits}")).is_ok());
        let over = format!("{label63}.{label63}.{label63}.{}.com", "a".repeat(56));
        assert!(Domain::new(&over).is_ok());
        assert_refused(&[(&format!("*.{over}"), "253")]);
    }

    #[test]
    fn a_wildcard_covers_exactly_one_more_label() {
        let wildcard = Domain::new("*.example.com").unwrap();
        for (name, covered) in [
            ("a.example.com", true),
            ("www.example.com", true),
            ("xn--bcher-kva.example.com", true),
            ("example.com", false),
            ("a.b.example.com", false),
            (".example.com", false),
            ("*.example.com", false),
            ("a.example.org", false),
            ("aexample.com", false),
            ("a.notexample.com", false),
        ] {
            assert_eq!(wildcard.covers(name), covered, "{name}");
        }
        assert!(!Domain::new("a.example.com")
            .unwrap()
            .covers("b.a.example.com"));
    }

    #[test]
    fn deserialising_validates() {
        let ok: Domain = serde_json::from_str("\"Example.COM\"").unwrap();
        assert_eq!(ok.as_str(), "example.com");
        assert!(serde_json::from_str::<Domain>("\"../x\"").is_err());
    }

    #[test]
    fn hosts_as_servers_have_them() {
        let table: &[(&str, Option<&str>)] = &[
            ("example.com", Some("example.com")),
            ("example.com:443", Some("example.com")),
            ("Example.COM.", Some("example.com")),
            ("Example.COM.:8443", Some("example.com")),
            ("www.example.com:0", Some("www.example.com")),
            ("www.example.com:65535", Some("www.example.com")),
            (" shop.example.com:80 ", Some("shop.example.com")),
            ("[::1]:8443", Some("::1")),
            ("[::1]", Some("::1")),
            ("[2001:DB8::1]:443", Some("2001:db8::1")),
            ("::1", Some("::1")),
            ("127.0.0.1:8080", Some("127.0.0.1")),
            ("localhost:3000", Some("localhost")),
            ("bücher.de:443", Some("xn--bcher-kva.de")),
            ("", None),
            (":443", None),
            ("example.com:", None),
            ("example.com:https", None),
            ("example.com:65536", None),
            ("example.com:123456", None),
            ("example.com:-1", None),
            ("example.com:443:443", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[::1]:", None),
            ("[example.com]:443", None),
            ("[127.0.0.1]", None),
            ("user@example.com", None),
            ("user@example.com:443", None),
            ("*.example.com", None),
            ("*.example.com:443", None),
            ("example.com/path", None),
            ("exa mple.com", None),
            ("example..com", None),
            ("0x7f.1:80", None),
        ];
        for (input, expected) in table {
            match (Domain::from_host(input), expected) {
                (Ok(got), Some(want)) => assert_eq!(got.as_str(), *want, "{input:?}"),
                (Err(Error::InvalidDomain { .. }), None) => {}
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
