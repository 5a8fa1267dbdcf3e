//! The conformance suite every [`CertStore`] must pass.
//!
//! A store is correct when it passes the same checks as the built-in ones.
//! Call [`run_all`] from a test of your own store, or call the checks one by
//! one; each is a `pub async fn` over `&dyn CertStore` that panics with a
//! message naming the broken rule.
//!
//! ```
//! use certkeeper::store::{conformance, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a test of your own store: `#[tokio::test] async fn conforms() { ... }`.
//! let store = MemoryStore::new();
//! conformance::run_all(&store).await;
//! for check in conformance::checks() {
//!     println!("passed {}: {}", check.name, check.description);
//! }
//! # }
//! ```
//!
//! What the checks cannot see from outside, a store shows by counting:
//! [`due_reads_only_due`] needs the store to add to a [`RecordReads`] for
//! each record it reads from its storage, and then fails a `due` that reads
//! records it does not return (one that scans every record at each cycle).
//! [`run_all_counting_reads`] runs it after [`run_all`].
//!
//! # What the checks assume
//!
//! - **Dates to the second.** A store must give back every date to at least
//!   the second; sub-second precision is allowed but not required (SQL
//!   timestamp columns keep microseconds, some keep seconds). The checks only
//!   use whole-second dates, and certkeeper's own rules never depend on less
//!   than a second.
//! - **A store that already holds data.** Every check works under names of
//!   its own, unique to the call: domains such as
//!   `a.due-order-3f2a9c1b7d04.conformance.certkeeper.dev` (and IPv6
//!   documentation addresses `2001:db8:…`), account ids and meta keys such as
//!   `conformance-accounts-3f2a9c1b7d04-a`. It asserts only about those names, and
//!   deletes the records, accounts and settings it created when it passes.
//! - **`due` and other data.** `due` answers with every due record, so the
//!   checks that call it put their records around a `now` of
//!   2000-01-01T00:00:00Z, where real records (renew dates near today) never
//!   are, while every other check uses dates from 2030 on, so that none of
//!   its records is ever due in a `due` check. Records of the store due at
//!   that `now` anyway (left over by an interrupted run, say) are read first
//!   and taken into account: a `due` with a limit must return exactly the
//!   first records of the full answer. The `due` checks therefore need that
//!   nobody adds or removes records due before 2000-01-02 while they run:
//!   run the checks one after another (as [`run_all`] does), not as parallel
//!   tests over one shared store.
//! - **Keys.** Account ids and meta keys used here are made of `a-z`, `0-9`
//!   and `-` only, which every built-in store accepts.
//! - **Concurrency.** The concurrent checks start 16 calls at once from one
//!   task and wait for all of them; with a multi-threaded runtime the store's
//!   own work (blocking file IO, database round trips) runs in parallel.

mod accounts;
mod budgets;
mod cluster;
mod concurrency;
mod due;
mod expect;
mod fixtures;
mod records;
mod scope;

use std::future::Future;
use std::pin::Pin;

use time::macros::datetime;
use time::OffsetDateTime;

use super::CertStore;

pub use accounts::{accounts, meta_first_writer_wins};
pub use budgets::{budgets, shared_budgets};
pub use cluster::{
    challenges, change_feed, deletion_and_settings, leases, marks, run_cluster, run_shared,
    shared_challenges, shared_change_feed, shared_compare_and_swap, shared_leases, shared_marks,
};
pub use concurrency::{concurrent_saves, meta_concurrent_racers};
pub use due::{
    at_attempt_limit, due_attempts, due_follows_updates, due_order_and_limit, due_reads_only_due,
    RecordReads,
};
pub use records::{compare_and_swap, delete, list_sorted, missing_keys, round_trip};

/// The `now` of the checks that call `due`.
const DUE_NOW: OffsetDateTime = datetime!(2000-01-01 00:00:00 UTC);
/// Dates of records that must never be due in a `due` check.
const LATER: OffsetDateTime = datetime!(2030-06-15 12:34:56 UTC);
/// The limit used to read the full answer of `due`.
const FULL: usize = 10_000;
/// How many calls the concurrent checks start at once.
const RACERS: usize = 16;

/// The future a check returns.
type CheckFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One check of the suite.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// The name of the function that runs it.
    pub name: &'static str,
    /// The rule it checks.
    pub description: &'static str,
    run: for<'a> fn(&'a dyn CertStore) -> CheckFuture<'a>,
}

impl Check {
    /// Runs the check on `store`; panics when the store breaks the rule.
    pub async fn run(&self, store: &dyn CertStore) {
        (self.run)(store).await;
    }
}

macro_rules! checks {
    ($($name:ident: $description:literal,)*) => {
        const CHECKS: &[Check] = &[$(Check {
            name: stringify!($name),
            description: $description,
            run: |store| Box::pin($name(store)),
        },)*];
    };
}

checks! {
    round_trip: "a saved record loads back equal, every field included",
    missing_keys: "unknown keys load as None and delete as false",
    compare_and_swap: "save succeeds only at the stored version and changes nothing otherwise",
    delete: "delete removes a record from load, list and due, and resets its version",
    list_sorted: "list returns every domain, sorted byte-wise",
    due_order_and_limit: "due orders by renew date then domain and returns exactly the first `limit`",
    due_attempts: "due leaves out records with max_attempts failed attempts or more",
    due_follows_updates: "due follows renew date and attempt changes, and deletions",
    accounts: "accounts round-trip with compare-and-swap and are listed sorted",
    meta_first_writer_wins: "put_meta_if_absent keeps the first value",
    meta_concurrent_racers: "racing put_meta_if_absent calls all get the same value",
    deletion_and_settings: "delete_account and delete_meta remove what is there; set_meta replaces",
    at_attempt_limit: "at_attempt_limit counts and names the records at or over the limit, in order",
    concurrent_saves: "of racing saves at the same version, exactly one wins",
}

/// Every check, in the order [`run_all`] runs them.
pub fn checks() -> &'static [Check] {
    CHECKS
}

/// Runs every check on `store`, one after another; panics at the first
/// failure. Each passed check is logged at `info` level. Then, when the
/// store offers a cluster ([`CertStore::cluster`]), the checks of the
/// cluster ([`run_cluster`]: leases, marks, HTTP-01 answers, the change
/// feed, budgets; about 12 s, as they wait for lifetimes to pass on the
/// store's clock). A store that several instances share must also pass
/// [`run_shared`] over two handles.
pub async fn run_all(store: &dyn CertStore) {
    for check in checks() {
        check.run(store).await;
        tracing::info!(check = check.name, "store conformance check passed");
    }
    if store.cluster().is_some() {
        run_cluster(store).await;
    }
}

/// [`run_all`], then [`due_reads_only_due`] with the store's count of the
/// records it reads: for a store that counts them ([`RecordReads`]).
pub async fn run_all_counting_reads(store: &dyn CertStore, reads: &RecordReads) {
    run_all(store).await;
    due_reads_only_due(store, reads).await;
    tracing::info!(
        check = "due_reads_only_due",
        "store conformance check passed"
    );
}
