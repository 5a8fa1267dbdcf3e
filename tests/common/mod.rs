//! Helpers shared by the integration tests.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]
// Test helpers are `pub` for the test crates that include them.
#![allow(unreachable_pub)]

pub mod acme;
pub mod bind9;
pub mod fault_proxy;
pub mod knot;
pub mod logs;
pub mod pebble;
pub mod powerdns;
pub mod smtp;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use certkeeper::cipher::Keyring;
use certkeeper::{Domain, TestClock};

/// Sends `tracing` events to the test output: installs the test binary's
/// one subscriber ([`logs::install`]); `RUST_LOG` filters them,
/// `certkeeper=debug` by default.
pub fn init_tracing() {
    logs::install();
}

/// Runs the body of an async test with [`init_tracing`], failing it with
/// "the test hung" when it takes longer than `limit`: a guard against a
/// hang, set far above what the test needs.
pub async fn limited<T>(limit: Duration, test: impl Future<Output = T>) -> T {
    init_tracing();
    tokio::time::timeout(limit, test)
        .await
        .expect("the test hung")
}

/// `name` as a [`Domain`]; the tests only use valid names.
pub fn domain(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

/// A test clock standing at the current second.
pub fn clock_at_now() -> TestClock {
    TestClock::new(
        time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap(),
    )
}

/// A production keyring with one key (version 1) made from `passphrase`.
pub fn keyring(passphrase: &str) -> Arc<Keyring> {
    Arc::new(Keyring::from_keys(true, [(1, passphrase)]).expect("a strong test key"))
}

/// A strong test passphrase.
pub const TEST_KEY: &str = "Zq4uT9pLw2nX7cVb5mKr8sHd3fJg6yEa";
/// Another strong passphrase, for "wrong key" cases.
pub const OTHER_TEST_KEY: &str = "Hn7bRt2xWq9mLp4vKc6sZd8fYg3jUe5a";
/// The ACME account contact address the tests register with.
pub const CONTACT_EMAIL: &str = "ops@certkeeper-test.com";
