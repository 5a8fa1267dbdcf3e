//! Names unique to one call of a check, so that the checks can run on a
//! store that already holds data.

use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::Domain;

/// Names unique to one call of a check.
pub(super) struct Scope {
    nonce: String,
    check: String,
}

impl Scope {
    /// A scope for the check `check` (underscores become hyphens, so that
    /// it can name a domain).
    pub(super) fn new(check: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hash = Sha256::new();
        hash.update(
            OffsetDateTime::now_utc()
                .unix_timestamp_nanos()
                .to_be_bytes(),
        );
        hash.update(std::process::id().to_be_bytes());
        hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let digest = hash.finalize();
        let nonce = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            nonce,
            check: check.replace('_', "-"),
        }
    }

    /// The zone every domain of this scope sits in.
    fn zone(&self) -> String {
        format!("{}-{}.conformance.certkeeper.dev", self.check, self.nonce)
    }

    pub(super) fn domain(&self, label: &str) -> Domain {
        let name = format!("{label}.{}", self.zone());
        Domain::new(&name).unwrap_or_else(|e| panic!("conformance: bad test name {name}: {e}"))
    }

    /// Three 16-bit groups taken from the nonce.
    fn groups(&self) -> [u16; 3] {
        let group = |i: usize| u16::from_str_radix(&self.nonce[4 * i..4 * i + 4], 16).unwrap_or(0);
        [group(0), group(1), group(2)]
    }

    /// An IPv6 literal in the documentation range (`2001:db8::/32`), unique
    /// to this scope.
    pub(super) fn ipv6(&self, last: u16) -> Domain {
        let [a, b, c] = self.groups();
        let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, a, b, c, 0, 0, last);
        Domain::new(&ip.to_string())
            .unwrap_or_else(|e| panic!("conformance: bad test address {ip}: {e}"))
    }

    /// A name of 253 characters, the longest a domain can be.
    pub(super) fn longest_domain(&self) -> Domain {
        let mut name = self.zone();
        loop {
            let remaining = 253 - name.len();
            if remaining < 2 {
                break;
            }
            // A label and its dot; never leave exactly one character to fill.
            let mut len = (remaining - 1).min(63);
            if remaining - (len + 1) == 1 {
                len -= 1;
            }
            name = format!("{}.{name}", "l".repeat(len));
        }
        Domain::new(&name).unwrap_or_else(|e| panic!("conformance: bad test name {name}: {e}"))
    }

    pub(super) fn owns(&self, domain: &Domain) -> bool {
        let zone = self.zone();
        domain
            .as_str()
            .strip_suffix(zone.as_str())
            .is_some_and(|rest| rest.ends_with('.'))
            || match domain.ip() {
                Some(std::net::IpAddr::V6(ip)) => {
                    let s = ip.segments();
                    s[..2] == [0x2001, 0xdb8] && s[2..5] == self.groups()
                }
                _ => false,
            }
    }

    pub(super) fn key(&self, suffix: &str) -> String {
        format!("conformance-{}-{}-{suffix}", self.check, self.nonce)
    }
}
