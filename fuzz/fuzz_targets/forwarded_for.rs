//! X-Forwarded-For on any header values: `client_ip` never panics; a peer
//! that is not a trusted proxy is the client whatever the headers say, and
//! the client found is canonical, and the peer or an address written in the
//! headers.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use certkeeper::access::{client_ip, TrustedProxies};
use libfuzzer_sys::fuzz_target;

fn trusted() -> &'static TrustedProxies {
    static TRUSTED: OnceLock<TrustedProxies> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        TrustedProxies::parse("fuzz", "10.0.0.0/8, 127.0.0.1, 2001:db8::/32").unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let peer = match selector % 4 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        1 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)),
        _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
    };
    let text = String::from_utf8_lossy(rest);
    let headers: Vec<&str> = text.split('\n').collect();
    let client = client_ip(peer, &headers, trusted());
    // Answers are canonical (IPv4-mapped IPv6 comes back as IPv4).
    assert_eq!(client, client.to_canonical());
    if !trusted().contains(peer) {
        assert_eq!(client, peer);
    } else if client != peer {
        // Some hop written in the headers names the client.
        let named = headers
            .iter()
            .flat_map(|h| h.split(','))
            .filter_map(hop)
            .any(|ip| ip.to_canonical() == client);
        assert!(named, "{client} is not in {headers:?}");
    }
});

fn hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}
