//! The `certkeeper` command as a real process.

#[path = "../common/mod.rs"]
mod common;

mod cli;
