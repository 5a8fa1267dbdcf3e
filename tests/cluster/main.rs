//! Several renewers sharing one store: in one process over the memory store,
//! and as separate processes over a real PostgreSQL database against a real
//! Pebble.

#[path = "../common/mod.rs"]
mod common;

mod cluster_rules;
mod cluster_sql;
