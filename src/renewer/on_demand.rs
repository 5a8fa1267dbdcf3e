//! On-demand issuance: a handshake for an allowed name without a
//! certificate starts its issuance in the background.
//!
//! The resolver reports such names through a bounded queue, with
//! `try_send`, so a handshake never waits; one task of the renewer reads
//! the queue and applies the rules: which names are allowed, at most one
//! attempt at a time per name and a back-off after each, and a cap on the
//! orders started per minute, so a flood of handshakes with made-up or
//! repeated names cannot spend the CA's rate limits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use super::issue::{not_attempted, Outcome};
use super::{Inner, Renewer};
use crate::{Domain, Result};

/// A user's rule for names beyond the main and custom domains: `true`
/// lets a handshake for the name start its issuance (the name is then
/// stored as a custom domain and renewed by the cycle). Called on the
/// renewer's on-demand task, never on the handshake path; keep it quick.
pub type Decision = Arc<dyn Fn(&Domain) -> bool + Send + Sync>;

/// The rules of on-demand issuance; give them to
/// [`RenewerBuilder::on_demand`](super::RenewerBuilder::on_demand).
///
/// A name may be issued on demand when it is the main domain, a custom
/// domain (a record the operator stored with
/// [`Renewer::add_domain`]), or when the [`allow`](Self::allow) decision
/// says so. Names that are not allowed never cause an order.
///
/// ```
/// use certkeeper::renewer::OnDemand;
/// use std::time::Duration;
/// let on_demand = OnDemand::new()
///     .allow(|domain| domain.as_str().ends_with(".customers.example.com"))
///     .per_minute(10)
///     .backoff(Duration::from_secs(600));
/// # let _ = on_demand;
/// ```
#[derive(Clone)]
pub struct OnDemand {
    pub(super) decision: Option<Decision>,
    pub(super) per_minute: usize,
    pub(super) backoff: Duration,
    pub(super) queue: usize,
}

impl Default for OnDemand {
    fn default() -> Self {
        Self {
            decision: None,
            per_minute: 10,
            backoff: Duration::from_secs(600),
            queue: 1024,
        }
    }
}

impl OnDemand {
    /// On-demand issuance for the main domain and the custom domains, at
    /// most 10 orders a minute, a name tried again 10 minutes after its
    /// last attempt ended at the earliest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also allows the names `decision` returns `true` for (see [`Decision`]).
    pub fn allow(mut self, decision: impl Fn(&Domain) -> bool + Send + Sync + 'static) -> Self {
        self.decision = Some(Arc::new(decision));
        self
    }

    /// [`allow`](Self::allow) with a decision already shared.
    pub fn decision(mut self, decision: Decision) -> Self {
        self.decision = Some(decision);
        self
    }

    /// At most `n` on-demand orders started in any minute, over all names
    /// (default 10). A name over the limit is not remembered: a later
    /// handshake reports it again.
    pub fn per_minute(mut self, n: usize) -> Self {
        self.per_minute = n;
        self
    }

    /// How long after an attempt for a name ended (in failure; a success
    /// is served and reported no more) that name may be ordered again
    /// (default 10 minutes).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many reported names wait for the on-demand task at most
    /// (default 1024, at least 1); a report that finds the queue full is
    /// dropped.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }
}

impl fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnDemand")
            .field("decision", &self.decision.is_some())
            .field("per_minute", &self.per_minute)
            .field("backoff", &self.backoff)
            .field("queue", &self.queue)
            .finish()
    }
}

/// Names remembered at most in the back-off table; past it, the entries
/// whose back-off ended are dropped.
const MAX_REMEMBERED: usize = 10_000;

/// What the on-demand task knows between reports.
#[derive(Default)]
struct State {
    /// When each order of the last minute started.
    started: VecDeque<Instant>,
    /// Names being issued on demand now.
    active: HashSet<Domain>,
    /// Names not to order again before the instant given.
    not_before: HashMap<Domain, Instant>,
}

/// The queue of reported names and its rules, until the task starts.
pub(super) struct Pending {
    pub(super) rules: OnDemand,
    pub(super) names: mpsc::Receiver<Box<str>>,
}

impl Renewer {
    /// Starts the on-demand task, once, when on-demand issuance is set and
    /// a Tokio runtime is running. Called when the renewer is built and
    /// again by [`load`](Self::load) and [`run`](Self::run).
    pub(super) fn start_on_demand(&self) {
        self.inner.events.start();
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let pending = self
            .inner
            .on_demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(pending) = pending {
            let weak = Arc::downgrade(&self.inner);
            tokio::spawn(on_demand_task(weak, pending));
        }
    }

    /// Whether a handshake for `domain` may start its issuance: the main
    /// domain, a stored (custom) domain, or one the user's decision allows.
    async fn allowed_on_demand(
        &self,
        domain: &Domain,
        decision: Option<&Decision>,
    ) -> Result<bool> {
        let policy = &self.inner.policy;
        let main = policy.main_domain().await?;
        if main.as_ref() == Some(domain) {
            return Ok(true);
        }
        if decision.is_some_and(|decide| decide(domain)) {
            return Ok(true);
        }
        Ok(self.store().load(domain).await?.is_some())
    }

    /// One on-demand attempt for `domain`: under its lease, the record is
    /// read (or stored, due now) and issued unless a certificate that is
    /// not due is stored meanwhile.
    async fn issue_on_demand(&self, domain: &Domain) -> Outcome {
        let lease = match self.inner.leases.domain(domain).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Outcome::Skipped(super::SkipReason::AlreadyBeingIssued),
            Err(e) => return not_attempted(domain, e),
        };
        let now = self.inner.clock.now();
        let record = match self.store().load(domain).await {
            Ok(Some(record))
                if record.certificate.is_some()
                    && !record.is_due(now, self.inner.renewal.max_attempts) =>
            {
                lease.release().await;
                return Outcome::Skipped(super::SkipReason::NoLongerDue);
            }
            Ok(Some(record)) => record,
            Ok(None) => match self.create_record(domain).await {
                Ok(record) => record,
                Err(e) => {
                    lease.release().await;
                    return not_attempted(domain, e);
                }
            },
            Err(e) => {
                lease.release().await;
                return not_attempted(domain, e);
            }
        };
        let outcome = self.issue_leased(record, false).await;
        lease.release().await;
        outcome
    }
}

/// Reads reported names until the renewer is dropped, and starts the
/// orders the rules allow.
async fn on_demand_task(renewer: Weak<Inner>, pending: Pending) {
    let Pending { rules, mut names } = pending;
    let state = Arc::new(Mutex::new(State::default()));
    while let Some(name) = names.recv().await {
        let Some(inner) = renewer.upgrade() else {
            return;
        };
        let this = Renewer { inner };
        let Ok(domain) = Domain::new(&name) else {
            continue;
        };
        if this
            .inner
            .resolver
            .as_ref()
            .is_some_and(|r| r.serves(&domain))
        {
            continue;
        }
        let now = Instant::now();
        {
            let state = lock(&state);
            if state.active.contains(&domain)
                || state.not_before.get(&domain).is_some_and(|t| now < *t)
            {
                continue;
            }
        }
        match this
            .allowed_on_demand(&domain, rules.decision.as_ref())
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(%domain, error = %e, "could not decide on an on-demand certificate");
                continue;
            }
        }
        {
            let mut state = lock(&state);
            let minute_ago = now.checked_sub(Duration::from_secs(60));
            while state
                .started
                .front()
                .is_some_and(|t| minute_ago.is_some_and(|m| *t <= m))
            {
                state.started.pop_front();
            }
            if state.started.len() >= rules.per_minute {
                debug!(%domain, "on-demand order limit reached; the name waits for a later handshake");
                continue;
            }
            state.started.push_back(now);
            state.active.insert(domain.clone());
        }
        info!(%domain, "certificate ordered on demand (first handshake without one)");
        let (state, backoff) = (state.clone(), rules.backoff);
        let span = tracing::info_span!("on_demand", %domain);
        tokio::spawn(
            async move {
                let outcome = this.issue_on_demand(&domain).await;
                match &outcome {
                    Outcome::Failed(e) => {
                        warn!(error = %e, code = e.code(), "on-demand certificate attempt failed")
                    }
                    Outcome::Deferred(e) => {
                        warn!(error = %e, code = e.code(), "on-demand certificate not issued now; not counted as an attempt")
                    }
                    Outcome::Issued(_) | Outcome::Skipped(_) => {}
                }
                let mut state = lock(&state);
                state.active.remove(&domain);
                let ended = Instant::now();
                if state.not_before.len() >= MAX_REMEMBERED {
                    state.not_before.retain(|_, t| ended < *t);
                }
                state.not_before.insert(domain, ended + backoff);
            }
            .instrument(span),
        );
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}
