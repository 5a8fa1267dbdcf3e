//! The client's real address: the socket's peer, or what trusted proxies
//! say in X-Forwarded-For.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::whitelist::{entries, parse_net};
use crate::config::Setting;
use crate::{Error, Result};

/// The variable listing the proxies whose X-Forwarded-For is believed.
pub const TRUSTED_PROXIES_VAR: &str = Setting::ConsoleTrustedProxies.name();

/// The reverse proxies and load balancers in front of the server, as
/// addresses and CIDR ranges (`10.0.0.0/8, 2001:db8::1`).
///
/// Empty by default: then X-Forwarded-For is never read, and the client is
/// the socket's peer. List only proxies that overwrite or append to
/// X-Forwarded-For; any other listed address could claim to be anyone.
///
/// Never put a proxy's address on the IP whitelist: a request whose
/// forwarding chain ends on a proxy resolves to that proxy (see
/// [`client_ip`]), and would then pass as a whitelisted client. Give the
/// same list to
/// [`ConsoleAccessPolicy::with_trusted_proxies`](super::ConsoleAccessPolicy::with_trusted_proxies)
/// ([`Config`](crate::Config) does), which refuses such clients even when a
/// whitelisted range covers the proxies.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// No trusted proxy.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses a comma-separated list of addresses and CIDR ranges (same
    /// syntax as [`IpWhitelist`](super::IpWhitelist), host bits refused);
    /// `variable` names the setting in the [`Error::Config`] for a bad entry.
    pub fn parse(variable: &str, list: &str) -> Result<Self> {
        let mut nets = Vec::new();
        for entry in entries(list) {
            nets.push(parse_net(entry).map_err(|reason| Error::config(variable, reason))?);
        }
        Ok(Self { nets })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.nets.iter().map(|n| n.to_string()))
            .finish()
    }
}

/// The client address of a request that reached the server from `peer`
/// carrying the X-Forwarded-For header values `forwarded_for` (in the order
/// they appear; pass every X-Forwarded-For header, and a value that is not
/// valid UTF-8 as an empty string rather than dropping it).
///
/// - When `peer` is not a trusted proxy, the answer is `peer`, whatever the
///   header says: a client's own X-Forwarded-For is never believed.
/// - Otherwise the hops are read from the right (the nearest proxy appended
///   the last one), skipping trusted proxies; the first hop that is not a
///   trusted proxy is the client.
/// - A hop that is not an address (empty, garbage, a name) stops the walk:
///   nothing left of it can be trusted, so the answer is the last trusted
///   proxy reached. The same when every hop is a trusted proxy.
///
/// Hops may carry a port (`203.0.113.7:4711`, `[2001:db8::7]:443`).
/// Answers are canonical: an IPv4-mapped IPv6 address comes back as IPv4.
///
/// An answer that is itself a trusted proxy means the real client is
/// unknown: such an address must not be let in by an IP whitelist (see
/// [`TrustedProxies`]).
///
/// ```
/// use certkeeper::access::{client_ip, TrustedProxies};
/// use certkeeper::config::Setting;
/// let proxies = TrustedProxies::parse(Setting::ConsoleTrustedProxies.name(), "10.0.0.0/8")?;
/// let from_proxy = "10.0.0.2".parse().unwrap();
/// let forged = ["6.6.6.6, 203.0.113.7, 10.0.0.9"];
/// assert_eq!(client_ip(from_proxy, &forged, &proxies).to_string(), "203.0.113.7");
/// let direct = "198.51.100.4".parse().unwrap();
/// assert_eq!(client_ip(direct, &forged, &proxies), direct);
/// # Ok::<(), certkeeper::Error>(())
/// ```
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &TrustedProxies) -> IpAddr {
    let mut current = peer.to_canonical();
    if !trusted.contains(current) {
        return current;
    }
    let hops = forwarded_for
        .iter()
        .rev()
        .flat_map(|value| value.rsplit(','));
    for hop in hops {
        let Some(ip) = parse_hop(hop) else {
            return current;
        };
        current = ip.to_canonical();
        if !trusted.contains(current) {
            return current;
        }
    }
    current
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &str) -> TrustedProxies {
        TrustedProxies::parse(TRUSTED_PROXIES_VAR, list).unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::none();
        let peer = ip("198.51.100.4");
        assert_eq!(client_ip(peer, &["203.0.113.7"], &none), peer);
        assert_eq!(client_ip(peer, &[], &none), peer);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies("10.0.0.0/8");
        let peer = ip("198.51.100.4");
        assert_eq!(client_ip(peer, &["10.0.0.1"], &p), peer);
        assert_eq!(client_ip(peer, &["203.0.113.7, 10.0.0.1"], &p), peer);
    }

    #[test]
    fn hops_are_read_from_the_right_skipping_trusted_proxies() {
        let p = proxies("10.0.0.0/8, 2001:db8:ffff::/48");
        let peer = ip("10.0.0.2");
        // The client forged the first value; the proxies appended the rest.
        assert_eq!(
            client_ip(peer, &["1.1.1.1, 203.0.113.7, 10.0.0.9"], &p),
            ip("203.0.113.7")
        );
        // Several headers count as one list, in order.
        assert_eq!(
            client_ip(peer, &["1.1.1.1", "203.0.113.7", "10.1.1.1"], &p),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(
                ip("2001:db8:ffff::1"),
                &["[2001:db8::7]:443, 10.0.0.3:8080"],
                &p
            ),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &["::ffff:203.0.113.7"], &p),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let p = proxies("10.0.0.0/8");
        let peer = ip("10.0.0.2");
        assert_eq!(client_ip(peer, &["203.0.113.7, unknown"], &p), peer);
        assert_eq!(
            client_ip(peer, &["203.0.113.7,,10.0.0.5"], &p),
            ip("10.0.0.5")
        );
        assert_eq!(client_ip(peer, &["203.0.113.7", ""], &p), peer);
        assert_eq!(client_ip(peer, &[], &p), peer);
        assert_eq!(client_ip(peer, &["10.0.0.7"], &p), ip("10.0.0.7"));
    }

    #[test]
    fn bad_proxy_entries_name_the_variable() {
        for bad in ["proxy.local", "10.0.0.9/8"] {
            match TrustedProxies::parse(TRUSTED_PROXIES_VAR, &format!("10.0.0.0/8, {bad}")) {
                Err(Error::Config { name, reason }) => {
                    assert_eq!(name, TRUSTED_PROXIES_VAR);
                    assert!(reason.contains(bad), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn a_client_behind_untrusted_peers_is_never_what_the_header_says(peer in any::<u32>(), header in ".{0,120}") {
            let p = proxies("10.0.0.0/8");
            let peer = IpAddr::V4(peer.into());
            prop_assume!(!p.contains(peer));
            prop_assert_eq!(client_ip(peer, &[&header], &p), peer);
        }

        #[test]
        fn any_header_gives_some_hop_of_it_or_the_peer(header in ".{0,120}") {
            let p = proxies("10.0.0.0/8");
            let peer = ip("10.0.0.1");
            let got = client_ip(peer, &[&header], &p);
            prop_assert!(got == peer || header.split(',').filter_map(parse_hop).any(|h| h.to_canonical() == got));
        }
    }
}
