//! The stores: the built-in ones against the conformance suite (and the suite
//! against broken stores), what only the file store promises, and the SQL stores
//! against real PostgreSQL and MariaDB servers, also when the network or the
//! server misbehaves.

#[path = "../common/mod.rs"]
mod common;

mod sql_faults;
mod sql_stores;
#[cfg(feature = "conformance")]
mod store_conformance;
