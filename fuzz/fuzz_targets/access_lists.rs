//! The console's lists on any text: `IpWhitelist`, `TrustedProxies`
//! (addresses and CIDR ranges) and `EmailWhitelist` never panic, and a list
//! that parses answers `contains` for any address or email without
//! panicking; every entry of an IP whitelist contains its own network
//! address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use certkeeper::access::{EmailWhitelist, IpWhitelist, TrustedProxies};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let probes = [
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
    ];
    if let Ok(list) = IpWhitelist::parse("_APP_CONSOLE_WHITELIST_IPS", &text) {
        for net in list.entries() {
            assert!(list.contains(net.network()), "{net}");
        }
        for ip in probes {
            let _ = list.contains(ip);
        }
    }
    if let Ok(proxies) = TrustedProxies::parse("_APP_CONSOLE_TRUSTED_PROXIES", &text) {
        for ip in probes {
            let _ = proxies.contains(ip);
        }
    }
    if let Ok(emails) = EmailWhitelist::parse("_APP_CONSOLE_WHITELIST_EMAILS", &text) {
        let _ = emails.contains("root@example.com");
        for entry in text.split(',') {
            let _ = emails.contains(entry.trim());
        }
    }
});
