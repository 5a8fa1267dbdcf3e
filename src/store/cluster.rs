//! What the instances sharing a store coordinate through: leases, HTTP-01
//! answers, the change feed and the CA's budgets, offered whole by
//! [`CertStore::cluster`](super::CertStore::cluster).
//!
//! A store answers [`ClusterStore`] for all four traits or for none. A store
//! that one process uses alone needs none of them: certkeeper then plugs in
//! a [`LocalCluster`] (this module's in-process implementation) once, when a
//! renewer, an ACME issuer or an HTTP-01 solver is built, and everything
//! works for that process. A store shared by several processes must offer
//! them, or the instances would each run their own cycle, order the same
//! names and spend the CA's budgets apart.
//!
//! # Whose clock
//! None of these methods takes a `now`. Every time they keep (a lease's
//! expiry, an answer's expiry, a budget's window, a mark) is read from the
//! store's own clock inside the operation: a database server's clock for a
//! SQL store, the clock the store was built with for an in-process one. The
//! instances' clocks may drift apart; the store's is one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::{self, Debug};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::budget::{check_budget_key, BudgetWindow};
use super::keys::{check_key, check_token};
use super::{Change, Changes};
use crate::clock::{Clock, SystemClock};
use crate::{Domain, Result};

/// Leases (one holder at a time per name) and marks (when something last
/// happened, for "once per interval" rules), on the store's clock.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Grants the lease `name` to `holder` for `ttl` from the store's now
    /// when it is free (never granted, released, or expired) or already
    /// held by `holder` (which renews it); `false` when another holder has
    /// it. Atomic across every instance sharing the store. Names and
    /// holders follow the key rules ([`check_key`](super::check_key)).
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Releases the lease `name` if `holder` holds it; `true` if it did.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool>;

    /// How long ago the mark `name` was set, on the store's clock; `None`
    /// when it never was. A mark set in the future (by a clock that went
    /// back) reads as zero.
    async fn mark_age(&self, name: &str) -> Result<Option<Duration>>;

    /// Sets the mark `name` to the store's now minus `ago` (the work it
    /// marks started `ago` before, as measured by the caller).
    async fn set_mark(&self, name: &str, ago: Duration) -> Result<()>;
}

/// HTTP-01 key authorizations kept for any instance to answer the CA.
#[async_trait]
pub trait ChallengeAnswers: Send + Sync {
    /// Keeps `key_authorization` for `token` for `ttl` from the store's now,
    /// replacing what was kept for it. Tokens follow
    /// [`check_token`](super::check_token).
    async fn put_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<()>;

    /// The key authorization kept for `token`, unless it expired.
    ///
    /// Anyone on the internet can make a server call this (the CA's
    /// validation path is public): it must only read, never write, and
    /// should be one indexed lookup.
    async fn get_challenge(&self, token: &str) -> Result<Option<String>>;

    /// Forgets the key authorization of `token` (nothing when there is none).
    async fn delete_challenge(&self, token: &str) -> Result<()>;

    /// Forgets every expired answer; returns how many. The renewer calls
    /// it on its own schedule, never on the validation path.
    async fn purge_expired_challenges(&self) -> Result<u64>;
}

/// What changed among the certificate records, for instances to serve
/// what the others stored.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The certificate records saved or deleted after `cursor` (0: from
    /// the start), oldest first, at most `limit`, with the cursor to ask
    /// from next. When the store no longer knows what happened after
    /// `cursor`, it answers with [`Changes::reset`] set, and the caller
    /// reloads everything. A cursor beyond the newest change (`u64::MAX`)
    /// is answered with `reset` and the newest cursor: that is how a reader
    /// learns where the feed stands before loading everything
    /// ([`Renewer::load`](crate::Renewer::load) does).
    async fn changes_since(&self, cursor: u64, limit: usize) -> Result<Changes>;
}

/// Sliding-window budgets (a CA's new orders per account, its failed
/// validations per name), on the store's clock.
#[async_trait]
pub trait Budgets: Send + Sync {
    /// Takes one unit of the budget `key` when fewer than `limit` units
    /// were taken in the sliding window of length `window` ending at the
    /// store's now; `false` (nothing taken) when the budget is spent.
    /// Atomic across every instance sharing the store. Units older than
    /// the window may be forgotten. `key` follows the key rules, at most
    /// 120 characters ([`check_budget_key`](super::check_budget_key)).
    async fn take_budget(&self, key: &str, window: Duration, limit: u32) -> Result<bool>;

    /// How many units of the budget `key` were taken in the sliding window
    /// of length `window` ending at the store's now.
    async fn budget_used(&self, key: &str, window: Duration) -> Result<u32>;
}

/// Everything the instances sharing a store coordinate through; a store
/// offers it whole through [`CertStore::cluster`](super::CertStore::cluster).
/// Every type that implements the four traits is one.
///
/// The [`conformance`](super::conformance) suite (feature `conformance`)
/// checks an implementation with [`run_cluster`](super::conformance::run_cluster)
/// and, through two handles of one backend,
/// [`run_shared`](super::conformance::run_shared).
pub trait ClusterStore: Leases + ChallengeAnswers + ChangeFeed + Budgets + Debug {}

impl<T: Leases + ChallengeAnswers + ChangeFeed + Budgets + Debug + ?Sized> ClusterStore for T {}

/// Changes kept for [`ChangeFeed::changes_since`]: the newest ones, enough
/// for readers that poll every few seconds.
const CHANGES_KEPT: usize = 65_536;

/// The in-process [`ClusterStore`]: leases, answers, the change feed and
/// budgets in this process's memory, on the clock it was made with.
///
/// certkeeper plugs one in when a store offers no [`ClusterStore`]; the
/// in-memory store uses one so that several renewers of one process can
/// share it. A custom single-process store can keep one too and feed its
/// change feed with [`record_change`](Self::record_change) on each save
/// and delete, so an embedding server that saves records itself sees them
/// served.
///
/// Cheap to clone: clones share the same state.
#[derive(Clone)]
pub struct LocalCluster {
    state: Arc<Mutex<LocalState>>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct LocalState {
    leases: HashMap<String, (String, OffsetDateTime)>,
    challenges: HashMap<String, (String, OffsetDateTime)>,
    marks: HashMap<String, OffsetDateTime>,
    changes: VecDeque<Change>,
    seq: u64,
    budgets: BTreeMap<String, BudgetWindow>,
}

impl Default for LocalCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Debug for LocalCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("LocalCluster")
            .field("leases", &state.leases.len())
            .field("challenges", &state.challenges.len())
            .field("changes", &state.seq)
            .finish_non_exhaustive()
    }
}

fn plus(now: OffsetDateTime, ttl: Duration) -> OffsetDateTime {
    time::Duration::try_from(ttl)
        .ok()
        .and_then(|ttl| now.checked_add(ttl))
        .unwrap_or(OffsetDateTime::new_utc(
            time::Date::MAX,
            time::Time::MIDNIGHT,
        ))
}

impl LocalCluster {
    /// An empty one on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty one on `clock` (a [`TestClock`](crate::TestClock) in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            clock,
        }
    }

    fn state(&self) -> MutexGuard<'_, LocalState> {
        // Every critical section leaves the state consistent before anything
        // that could panic, so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `domain`'s record was saved (`deleted` false) or
    /// deleted, for [`ChangeFeed::changes_since`].
    pub fn record_change(&self, domain: &Domain, deleted: bool) {
        let mut state = self.state();
        state.seq += 1;
        let seq = state.seq;
        state.changes.push_back(Change {
            seq,
            domain: domain.clone(),
            deleted,
        });
        if state.changes.len() > CHANGES_KEPT {
            state.changes.pop_front();
        }
    }
}

#[async_trait]
impl Leases for LocalCluster {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        check_key("lease name", name)?;
        check_key("lease holder", holder)?;
        let now = self.clock.now();
        let mut state = self.state();
        let free = match state.leases.get(name) {
            None => true,
            Some((current, expires)) => current == holder || *expires <= now,
        };
        if free {
            state
                .leases
                .insert(name.to_owned(), (holder.to_owned(), plus(now, ttl)));
        }
        Ok(free)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        check_key("lease name", name)?;
        let mut state = self.state();
        match state.leases.get(name) {
            Some((current, _)) if current == holder => {
                state.leases.remove(name);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn mark_age(&self, name: &str) -> Result<Option<Duration>> {
        check_key("mark name", name)?;
        let now = self.clock.now();
        Ok(self
            .state()
            .marks
            .get(name)
            .map(|at| Duration::try_from(now - *at).unwrap_or(Duration::ZERO)))
    }

    async fn set_mark(&self, name: &str, ago: Duration) -> Result<()> {
        check_key("mark name", name)?;
        let now = self.clock.now();
        let at = time::Duration::try_from(ago)
            .ok()
            .and_then(|ago| now.checked_sub(ago))
            .unwrap_or(now);
        self.state().marks.insert(name.to_owned(), at);
        Ok(())
    }
}

#[async_trait]
impl ChallengeAnswers for LocalCluster {
    async fn put_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<()> {
        check_token(token)?;
        let expires = plus(self.clock.now(), ttl);
        self.state()
            .challenges
            .insert(token.to_owned(), (key_authorization.to_owned(), expires));
        Ok(())
    }

    async fn get_challenge(&self, token: &str) -> Result<Option<String>> {
        check_token(token)?;
        let now = self.clock.now();
        Ok(self
            .state()
            .challenges
            .get(token)
            .filter(|(_, expires)| *expires > now)
            .map(|(answer, _)| answer.clone()))
    }

    async fn delete_challenge(&self, token: &str) -> Result<()> {
        check_token(token)?;
        self.state().challenges.remove(token);
        Ok(())
    }

    async fn purge_expired_challenges(&self) -> Result<u64> {
        let now = self.clock.now();
        let mut state = self.state();
        let before = state.challenges.len();
        state.challenges.retain(|_, (_, expires)| *expires > now);
        Ok((before - state.challenges.len()) as u64)
    }
}

#[async_trait]
impl ChangeFeed for LocalCluster {
    async fn changes_since(&self, cursor: u64, limit: usize) -> Result<Changes> {
        let state = self.state();
        let oldest_kept = state.changes.front().map_or(state.seq + 1, |c| c.seq);
        // A cursor from before what is kept (or from another store) cannot
        // be answered change by change.
        let reset = cursor > state.seq || (cursor + 1 < oldest_kept && cursor < state.seq);
        if reset {
            return Ok(Changes {
                changes: Vec::new(),
                cursor: state.seq,
                reset: true,
            });
        }
        let changes: Vec<Change> = state
            .changes
            .iter()
            .filter(|c| c.seq > cursor)
            .take(limit)
            .cloned()
            .collect();
        let cursor = changes.last().map_or(cursor, |c| c.seq);
        Ok(Changes {
            changes,
            cursor,
            reset: false,
        })
    }
}

#[async_trait]
impl Budgets for LocalCluster {
    async fn take_budget(&self, key: &str, window: Duration, limit: u32) -> Result<bool> {
        check_budget_key(key)?;
        let now = self.clock.now();
        Ok(self
            .state()
            .budgets
            .entry(key.to_owned())
            .or_default()
            .take(now, window, limit))
    }

    async fn budget_used(&self, key: &str, window: Duration) -> Result<u32> {
        check_budget_key(key)?;
        let now = self.clock.now();
        Ok(self
            .state()
            .budgets
            .get(key)
            .map_or(0, |budget| budget.used(now, window)))
    }
}

/// A store's [`ClusterStore`], or a [`LocalCluster`] plugged in when the
/// store has none: what a renewer, an ACME issuer or an HTTP-01 solver
/// holds.
#[derive(Clone, Debug)]
pub(crate) struct Coordinator {
    store: Arc<dyn super::CertStore>,
    local: LocalCluster,
}

impl Coordinator {
    /// The store's own cluster parts, or else a [`LocalCluster`] on `clock`.
    pub(crate) fn new(store: Arc<dyn super::CertStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            local: LocalCluster::with_clock(clock),
        }
    }

    /// What the instances share.
    pub(crate) fn get(&self) -> &dyn ClusterStore {
        self.store.cluster().unwrap_or(&self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestClock;
    use time::macros::datetime;

    fn cluster() -> (LocalCluster, TestClock) {
        let clock = TestClock::new(datetime!(2030-01-01 0:00 UTC));
        (LocalCluster::with_clock(Arc::new(clock.clone())), clock)
    }

    #[tokio::test]
    async fn leases_go_to_one_holder_until_released_or_expired() {
        let (c, clock) = cluster();
        let ttl = Duration::from_secs(30);
        let s = time::Duration::seconds;
        assert!(c.acquire_lease("cycle", "a", ttl).await.unwrap());
        assert!(!c.acquire_lease("cycle", "b", ttl).await.unwrap());
        clock.advance(s(10));
        assert!(c.acquire_lease("cycle", "a", ttl).await.unwrap());
        clock.advance(s(29));
        assert!(!c.acquire_lease("cycle", "b", ttl).await.unwrap());
        clock.advance(s(1));
        assert!(c.acquire_lease("cycle", "b", ttl).await.unwrap());
        assert!(!c.release_lease("cycle", "a").await.unwrap());
        assert!(c.release_lease("cycle", "b").await.unwrap());
        assert!(c.acquire_lease("cycle", "a", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn marks_age_with_the_clusters_clock() {
        let (c, clock) = cluster();
        assert_eq!(c.mark_age("cycle").await.unwrap(), None);
        c.set_mark("cycle", Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            c.mark_age("cycle").await.unwrap(),
            Some(Duration::from_secs(5))
        );
        clock.advance(time::Duration::seconds(10));
        assert_eq!(
            c.mark_age("cycle").await.unwrap(),
            Some(Duration::from_secs(15))
        );
        clock.advance(time::Duration::seconds(-60));
        assert_eq!(c.mark_age("cycle").await.unwrap(), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn answers_expire_and_reading_one_never_purges() {
        let (c, clock) = cluster();
        let minute = Duration::from_secs(60);
        c.put_challenge("tok", "tok.thumb", minute).await.unwrap();
        c.put_challenge("old", "old.thumb", minute / 2)
            .await
            .unwrap();
        clock.advance(time::Duration::seconds(40));
        assert_eq!(c.get_challenge("old").await.unwrap(), None);
        assert_eq!(c.state().challenges.len(), 2, "a read must not write");
        assert_eq!(c.purge_expired_challenges().await.unwrap(), 1);
        assert_eq!(
            c.get_challenge("tok").await.unwrap().as_deref(),
            Some("tok.thumb")
        );
        c.delete_challenge("tok").await.unwrap();
        assert_eq!(c.get_challenge("tok").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_change_feed_resets_a_reader_that_fell_behind() {
        let (c, _) = cluster();
        let d = Domain::new("a.example.com").unwrap();
        for _ in 0..3 {
            c.record_change(&d, false);
        }
        let all = c.changes_since(0, 10).await.unwrap();
        assert_eq!(all.changes.len(), 3);
        assert_eq!(all.cursor, 3);
        assert!(c.changes_since(3, 10).await.unwrap().changes.is_empty());
        assert!(c.changes_since(99, 10).await.unwrap().reset);
        for _ in 0..CHANGES_KEPT {
            c.record_change(&d, true);
        }
        assert!(c.changes_since(0, 10).await.unwrap().reset);
        let seq = c.state().seq;
        assert!(!c.changes_since(seq - 1, 10).await.unwrap().reset);
    }

    #[tokio::test]
    async fn budgets_slide_with_the_clusters_clock() {
        let (c, clock) = cluster();
        let hour = Duration::from_secs(3600);
        assert!(c.take_budget("orders.a", hour, 2).await.unwrap());
        assert!(c.take_budget("orders.a", hour, 2).await.unwrap());
        assert!(!c.take_budget("orders.a", hour, 2).await.unwrap());
        assert_eq!(c.budget_used("orders.a", hour).await.unwrap(), 2);
        clock.advance(time::Duration::hours(1));
        assert_eq!(c.budget_used("orders.a", hour).await.unwrap(), 0);
        assert!(c.take_budget("orders.a", hour, 2).await.unwrap());
    }
}
