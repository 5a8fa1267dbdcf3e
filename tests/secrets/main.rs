//! Secrets: the keyring and key rotation on a real file store, console access
//! end to end, and a full run that logs no secret.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod keyring;
mod no_secrets_in_logs;
