//! Issuing through ACME: the issuer against real Pebble CAs (2.4 and 2.10),
//! a fallback CA, the CA budgets, a CA whose answers break the protocol,
//! ACME account key rollover, and
//! the HTTP-01, TLS-ALPN-01 and DNS-01 (bind9, Knot, PowerDNS) challenges,
//! each validated for real, the Knot and PowerDNS servers taking records,
//! certificates for IP addresses (RFC 8738), and a soak of certificates of
//! minutes renewed over and over while the CA refuses orders and nonces.

#[path = "../common/mod.rs"]
mod common;

mod acme_issuer;
mod acme_modern;
mod ca_budgets;
#[cfg(feature = "dns01")]
mod dns01;
#[cfg(feature = "dns01")]
mod dns01_logs;
#[cfg(feature = "dns-providers")]
mod dns_providers;
#[cfg(feature = "dns01")]
mod dns_servers;
mod fallback_ca;
mod http01;
mod ip_addresses;
mod key_rollover;
mod malformed_ca;
mod short_lived_soak;
mod tls_alpn01;
