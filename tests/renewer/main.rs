//! The renewer: the maintenance cycle's rules on a settable clock, the same
//! cycle against a real Pebble (also over a store that fails), on-demand
//! issuance through real handshakes, its events, and what reads them (SMTP
//! notices through a real server, Prometheus metrics).

#[path = "../common/mod.rs"]
mod common;

#[cfg(feature = "fs")]
mod embedded_cipher;
mod events;
mod fault_store;
#[cfg(all(feature = "metrics", feature = "fs"))]
mod metrics_prometheus;
#[cfg(all(feature = "smtp", feature = "fs"))]
mod notify_smtp;
mod on_demand;
mod renewer_pebble;
mod renewer_rules;
mod short_lived;
mod store_faults;
