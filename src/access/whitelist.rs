//! The IP/CIDR and email whitelists of the console.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::email::{email_domain, normalize_email};
use crate::{Error, Result};

/// A set of IP addresses and CIDR ranges (IPv4 and IPv6).
///
/// Entries are written as `203.0.113.7`, `10.0.0.0/8`, `2001:db8::1` or
/// `2001:db8::/32`, separated by commas; spaces around entries and empty
/// entries are ignored. A range written with host bits (`10.1.2.3/8`) is
/// refused, since it is most likely a typo for one address or a narrower
/// range and would silently open the whole network. IPv4-mapped IPv6 entries
/// (`::ffff:203.0.113.7`, `::ffff:10.0.0.0/104`) are stored as their IPv4
/// form, and addresses are compared in their canonical form, so a client
/// reaching a dual-stack socket as `::ffff:203.0.113.7` matches the entry
/// `203.0.113.7` and the other way round.
///
/// ```
/// use certkeeper::access::IpWhitelist;
/// use certkeeper::config::Setting;
/// let list = IpWhitelist::parse(Setting::ConsoleWhitelistIps.name(), "10.0.0.0/8, 2001:db8::1")?;
/// assert!(list.contains("10.20.30.40".parse().unwrap()));
/// assert!(list.contains("::ffff:10.0.0.1".parse().unwrap()));
/// assert!(!list.contains("11.0.0.1".parse().unwrap()));
/// # Ok::<(), certkeeper::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IpWhitelist {
    nets: Vec<IpNet>,
}

impl IpWhitelist {
    /// Parses a comma-separated list; `variable` names the setting in the
    /// [`Error::Config`] for an entry that is neither an address nor a range,
    /// or a range with host bits set.
    pub fn parse(variable: &str, list: &str) -> Result<Self> {
        let mut nets = Vec::new();
        for entry in entries(list) {
            let net = parse_net(entry).map_err(|reason| Error::config(variable, reason))?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(Self { nets })
    }

    /// Whether the list has no entry (an empty whitelist lets everyone in).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is one of the addresses or inside one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The entries, normalised.
    pub fn entries(&self) -> &[IpNet] {
        &self.nets
    }
}

impl fmt::Debug for IpWhitelist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.nets.iter().map(|n| n.to_string()))
            .finish()
    }
}

/// The non-empty, trimmed entries of a comma-separated list.
pub(crate) fn entries(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// An entry cut to 80 characters for an error message.
pub(crate) fn shorten(entry: &str) -> String {
    entry.chars().take(80).collect()
}

/// An address (as a one-address range) or a CIDR range, IPv4-mapped IPv6
/// turned into IPv4; the error is a sentence naming the entry.
pub(crate) fn parse_net(entry: &str) -> std::result::Result<IpNet, String> {
    let not_a_net = || {
        format!(
            "entry {:?} is not an IP address or CIDR range",
            shorten(entry)
        )
    };
    let net = match entry.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => entry.parse::<IpNet>().map_err(|_| not_a_net())?,
    };
    if net != net.trunc() {
        return Err(format!(
            "entry {:?} has host bits set: write the network {} or the single address {}",
            shorten(entry),
            net.trunc(),
            net.addr()
        ));
    }
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).map_err(|_| not_a_net())?),
            None => net,
        },
        _ => net,
    })
}

/// A set of email addresses and whole email domains.
///
/// Entries are exact addresses (`ops@example.com`) or `*@domain`
/// (`*@example.com`), separated by commas, trimmed, compared without regard
/// to case. `*@example.com` matches addresses whose domain is exactly
/// `example.com`: not `sub.example.com`, not `evil-example.com`, not
/// `example.com.evil.net`. Internationalised domains are compared in their
/// punycode form.
///
/// ```
/// use certkeeper::access::EmailWhitelist;
/// use certkeeper::config::Setting;
/// let list = EmailWhitelist::parse(Setting::ConsoleWhitelistEmails.name(), "*@example.com, Boss@Corp.io")?;
/// assert!(list.contains(" Alice@EXAMPLE.com "));
/// assert!(list.contains("boss@corp.io"));
/// assert!(!list.contains("alice@sub.example.com"));
/// assert!(!list.contains("alice@evil-example.com"));
/// # Ok::<(), certkeeper::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EmailWhitelist {
    addresses: BTreeSet<String>,
    domains: BTreeSet<String>,
}

impl EmailWhitelist {
    /// Parses a comma-separated list; `variable` names the setting in the
    /// [`Error::Config`] for an entry that is neither an address nor `*@domain`.
    pub fn parse(variable: &str, list: &str) -> Result<Self> {
        let mut out = Self::default();
        for entry in entries(list) {
            let bad = || {
                Error::config(
                    variable,
                    format!(
                        "entry {:?} is not an email address or *@domain",
                        shorten(entry)
                    ),
                )
            };
            if let Some(domain) = entry.strip_prefix("*@") {
                out.domains
                    .insert(email_domain(domain).ok_or_else(bad)?.to_string());
            } else {
                out.addresses
                    .insert(normalize_email(entry).ok_or_else(bad)?);
            }
        }
        Ok(out)
    }

    /// Whether the list has no entry (an empty whitelist lets everyone in).
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.domains.is_empty()
    }

    /// Whether `email` is listed, or its domain is. An input that is not an
    /// email address is never listed.
    pub fn contains(&self, email: &str) -> bool {
        let Some(email) = normalize_email(email) else {
            return false;
        };
        if self.addresses.contains(&email) {
            return true;
        }
        match email.rsplit_once('@') {
            Some((_, domain)) => self.domains.contains(domain),
            None => false,
        }
    }
}

impl fmt::Debug for EmailWhitelist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.addresses.iter())
            .entries(self.domains.iter().map(|d| format!("*@{d}")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Setting;
    use proptest::prelude::*;

    const IPS: &str = Setting::ConsoleWhitelistIps.name();
    const EMAILS: &str = Setting::ConsoleWhitelistEmails.name();

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_ranges_of_both_families() {
        let list = IpWhitelist::parse(
            IPS,
            " 203.0.113.7 ,10.0.0.0/8,,2001:db8::/32, ::1 , 192.168.1.0/24",
        )
        .unwrap();
        for yes in [
            "203.0.113.7",
            "10.0.0.0",
            "10.255.255.255",
            "2001:db8::1",
            "2001:db8:ffff::",
            "::1",
            "192.168.1.1",
        ] {
            assert!(list.contains(ip(yes)), "{yes}");
        }
        for no in [
            "203.0.113.8",
            "11.0.0.0",
            "9.255.255.255",
            "2001:db9::",
            "::2",
            "192.168.2.1",
        ] {
            assert!(!list.contains(ip(no)), "{no}");
        }
        assert_eq!(
            format!("{list:?}"),
            r#"["203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32", "::1/128", "192.168.1.0/24"]"#
        );
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_entries_both_ways() {
        let list = IpWhitelist::parse(IPS, "203.0.113.7, 10.0.0.0/8").unwrap();
        assert!(list.contains(ip("::ffff:203.0.113.7")));
        assert!(list.contains(ip("::ffff:10.1.2.3")));
        assert!(!list.contains(ip("::ffff:203.0.113.8")));
        let mapped = IpWhitelist::parse(IPS, "::ffff:203.0.113.7, ::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("203.0.113.7")));
        assert!(mapped.contains(ip("10.9.9.9")));
        assert!(mapped.contains(ip("::ffff:10.9.9.9")));
        assert!(!mapped.contains(ip("11.0.0.1")));
        // Not mapped: the IPv4-compatible form and a plain v6 range.
        assert!(!mapped.contains(ip("::203.0.113.7")));
    }

    #[test]
    fn ranges_with_host_bits_are_refused() {
        for (bad, network) in [
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.168.1.77/24", "192.168.1.0/24"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("::ffff:10.1.2.3/104", "::ffff:10.0.0.0/104"),
            ("0.0.0.1/0", "0.0.0.0/0"),
        ] {
            match IpWhitelist::parse(IPS, &format!("203.0.113.7, {bad}")) {
                Err(Error::Config { name, reason }) => {
                    assert_eq!(name, IPS);
                    assert!(reason.contains(&format!("{bad:?}")), "{reason}");
                    assert!(reason.contains("host bits"), "{reason}");
                    assert!(reason.contains(network), "{reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Exact networks, and single addresses with their full prefix, are fine.
        assert!(IpWhitelist::parse(IPS, "10.0.0.0/8, 10.1.2.3/32, 2001:db8::1/128, ::/0").is_ok());
    }

    #[test]
    fn bad_ip_entries_name_the_variable_and_the_entry() {
        for bad in [
            "10.0.0.0/33",
            "example.com",
            "10.0.0",
            "10.0.0.1/8/8",
            "*",
            "fe80::1%eth0",
            "2001:db8::/129",
        ] {
            match IpWhitelist::parse(IPS, &format!("10.0.0.1, {bad}")) {
                Err(Error::Config { name, reason }) => {
                    assert_eq!(name, IPS);
                    assert!(reason.contains(bad), "{reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn email_entries_are_exact_or_whole_domains() {
        let list =
            EmailWhitelist::parse(EMAILS, " *@Example.com , boss@corp.io, *@bücher.de").unwrap();
        for yes in [
            "alice@example.com",
            "ALICE@EXAMPLE.COM",
            "  bob@example.com\t",
            "alice@example.com.",
            "Boss@Corp.IO",
            "leser@BÜCHER.de",
            "leser@xn--bcher-kva.de",
        ] {
            assert!(list.contains(yes), "{yes}");
        }
        for no in [
            "alice@sub.example.com",
            "alice@evil-example.com",
            "alice@example.com.evil.net",
            "alice@examplexcom",
            "alice@example.co",
            "example.com",
            "@example.com",
            "alice@example.com@evil.net",
            "alice@exa mple.com",
            "boss@corp.io.evil.net",
            "other@corp.io",
            "xboss@corp.io",
            "",
        ] {
            assert!(!list.contains(no), "{no}");
        }
    }

    #[test]
    fn local_parts_must_be_ascii_so_invisible_characters_cannot_hide() {
        for sneaky in [
            "admin\u{200B}@example.com",
            "\u{FEFF}admin@example.com",
            "ad\u{00AD}min@example.com",
            "ad\u{2060}min@example.com",
            "\u{0430}dmin@example.com",
            "jürgen@example.com",
            "Ａdmin@example.com",
        ] {
            assert_eq!(normalize_email(sneaky), None, "{sneaky:?}");
        }
        let list = EmailWhitelist::parse(EMAILS, "*@example.com, admin@corp.io").unwrap();
        assert!(!list.contains("admin\u{200B}@example.com"));
        assert!(!list.contains("admin\u{FEFF}@corp.io"));
        assert!(list.contains("admin@corp.io"));
        // A whitelist entry with such a local part is refused at start-up.
        assert!(EmailWhitelist::parse(EMAILS, "admin\u{200B}@corp.io").is_err());
        // Internationalised domains still work.
        assert_eq!(
            normalize_email("leser@Bücher.de").as_deref(),
            Some("leser@xn--bcher-kva.de")
        );
    }

    #[test]
    fn bad_email_entries_name_the_variable_and_the_entry() {
        for bad in [
            "not-an-email",
            "@example.com",
            "*.example.com",
            "*@",
            "*@*.example.com",
            "a@b@c.com",
            "a b@c.com",
            "*@exa mple.com",
            "a@",
        ] {
            match EmailWhitelist::parse(EMAILS, &format!("ok@example.com,{bad}")) {
                Err(Error::Config { name, reason }) => {
                    assert_eq!(name, EMAILS);
                    assert!(reason.contains(&format!("{bad:?}")), "{reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_lists_are_empty() {
        assert!(IpWhitelist::parse(IPS, " , ").unwrap().is_empty());
        assert!(EmailWhitelist::parse(EMAILS, "").unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn a_v4_range_holds_exactly_its_addresses(addr in any::<u32>(), prefix in 0u8..=32, probe in any::<u32>()) {
            let net = Ipv4Net::new(addr.into(), prefix).unwrap().trunc();
            let list = IpWhitelist::parse(IPS, &net.to_string()).unwrap();
            let probe_ip = std::net::Ipv4Addr::from(probe);
            let inside = u64::from(probe ^ addr) >> (32 - u32::from(prefix)) == 0;
            prop_assert_eq!(list.contains(IpAddr::V4(probe_ip)), inside);
            prop_assert_eq!(list.contains(IpAddr::V6(probe_ip.to_ipv6_mapped())), inside);
            prop_assert!(list.contains(IpAddr::V4(net.addr())));
            prop_assert!(list.contains(IpAddr::V4(net.broadcast())));
        }

        #[test]
        fn a_v6_range_holds_exactly_its_addresses(addr in any::<u128>(), prefix in 0u8..=128, probe in any::<u128>()) {
            let net = ipnet::Ipv6Net::new(addr.into(), prefix).unwrap().trunc();
            let list = IpWhitelist::parse(IPS, &net.to_string()).unwrap();
            let probe_ip = std::net::Ipv6Addr::from(probe);
            let inside = if prefix == 0 { true } else { (probe ^ addr) >> (128 - u32::from(prefix)) == 0 };
            // Mapped ranges become IPv4 ones, which canonical probes also hit.
            let canonical_inside = match (probe_ip.to_ipv4_mapped(), prefix) {
                (Some(_), p) if p < 96 => false,
                _ => inside,
            };
            prop_assert_eq!(list.contains(IpAddr::V6(probe_ip)), canonical_inside);
        }

        #[test]
        fn any_ip_entry_parses_or_errors_without_panic(s in ".{0,60}") {
            let _ = IpWhitelist::parse(IPS, &s);
        }

        #[test]
        fn a_domain_entry_never_matches_a_lookalike(local in "[a-z0-9_+-]{1,10}(\\.[a-z0-9_+-]{1,9})?", label in "[a-z0-9]{1,12}", prefix in "[a-z0-9-]{1,8}") {
            let domain = format!("{label}.com");
            let list = EmailWhitelist::parse(EMAILS, &format!("*@{domain}")).unwrap();
            let same = format!("{local}@{domain}");
            let shouted = same.to_uppercase();
            prop_assert!(list.contains(&same));
            prop_assert!(list.contains(&shouted));
            for lookalike in [
                format!("{local}@{prefix}.{domain}"),
                format!("{local}@{prefix}{domain}"),
                format!("{local}@{domain}.{prefix}"),
                format!("{local}@{domain}@{prefix}.net"),
            ] {
                prop_assert!(!list.contains(&lookalike), "{}", lookalike);
            }
        }

        #[test]
        fn an_exact_entry_matches_only_itself(a in "[a-z0-9]{1,12}", b in "[a-z0-9]{1,12}") {
            let list = EmailWhitelist::parse(EMAILS, &format!("{a}@example.com")).unwrap();
            let (exact, other, elsewhere) = (
                format!("{a}@example.com"),
                format!("{b}@example.com"),
                format!("{a}@example.org"),
            );
            prop_assert!(list.contains(&exact));
            prop_assert_eq!(list.contains(&other), a == b);
            prop_assert!(!list.contains(&elsewhere));
        }

        #[test]
        fn any_email_input_is_matched_or_not_without_panic(list in ".{0,60}", email in ".{0,80}") {
            if let Ok(list) = EmailWhitelist::parse(EMAILS, &list) {
                let _ = list.contains(&email);
            }
            let _ = normalize_email(&email);
        }
    }
}
