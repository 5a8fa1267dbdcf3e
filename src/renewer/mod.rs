//! The maintenance cycle: which certificates to (re)issue, and doing it.
//!
//! - [`Renewer`]: registration of domains, the cycle, manual generation,
//!   revocation, the run loop of a cluster's instances.
//! - [`RenewalPolicy`]: the date and attempt rules.
//! - [`DomainPolicy`]: which names this server may get certificates for,
//!   and the main-domain rule (`_APP_DOMAIN`, or learned from the first
//!   public name seen).
//! - [`CycleReport`]: what a cycle did, typed.
//! - [`OnDemand`]: issuance started by a handshake, and its limits.
//!
//! # Failures that are not the domain's
//! A failed issuance is an attempt of its domain (attempts + 1; after
//! [`RenewalPolicy::max_attempts`] the cycle no longer picks it) only when
//! the failure is the domain's. None of these is an attempt, nor charged to
//! the CA's failed-validation budget: the CA down or rate limiting, a
//! wrong setting ([`Error::is_settings_error`](crate::Error::is_settings_error),
//! a keyring that cannot open the stored account among them), or a failure
//! of certkeeper's own infrastructure
//! ([`Error::is_infrastructure_failure`](crate::Error::is_infrastructure_failure):
//! the store, the disk, stored data that cannot be read back). Each is
//! logged on the record when the record can be saved, listed in
//! [`CycleReport::deferred`], and tried again next cycle (or sooner, at
//! its retry date, when the certificate in force would expire first: see
//! [`RenewalPolicy::on_not_attempted`]), so a flapping
//! database never walks domains to the attempt limit. (What the CA itself
//! refuses still counts: when a shared store fails while the CA fetches an
//! HTTP-01 answer kept in it, the CA finds no answer and refuses the
//! validation.)
//!
//! A cycle stops ordering after [`RenewalPolicy::max_ca_failures`] CA
//! failures in a row ([`SkipReason::CaUnavailable`]) or
//! [`RenewalPolicy::max_store_failures`] store failures in a row
//! ([`SkipReason::StoreUnavailable`]), and at once on a rate limit or a
//! wrong setting; [`CycleReport::stopped`] (and so
//! [`Event::CycleFinished`]) says why.
//!
//! # Leases
//! Through the store's cluster (or this process's, when the store has
//! none), one instance at a time runs a cycle (the cycle lease) and one
//! task of one instance issues a name (the domain's lease). Every lease is
//! short ([`LEASE_TTL`], a minute, or
//! [`RenewerBuilder::lease_ttl`]) and its holder renews it every third of
//! that while the work goes on, however long an issuance takes; a holder
//! that died, was cancelled or lost its database frees the cycle and its
//! names within one TTL. A holder whose renewal finds the lease taken by
//! another goes on: its writes are fenced by the record's version
//! (compare-and-swap), so it never overwrites newer work. A release that
//! fails is tried again in the background a few times, with back-off.

// One file a responsibility of the one `Renewer`:
// - mod.rs: `Renewer`, what its clones share (`Inner`), accessors, events;
// - builder.rs: `RenewerBuilder`;
// - domains.rs: `DomainPolicy`, the main-domain rule (`MainDomain`), the
//   records of the domains (add, remove, observe);
// - cycle.rs: one cycle: the due records, bounded concurrency, the cap,
//   stopping on CA or store failures, the report; the off-cycle pass of
//   what came due between cycles, within the interval's cap;
// - issue.rs: issuing one domain and storing the outcome; manual generation;
// - lease.rs: the domain lease and the cycle lease, in the cluster, their
//   heartbeat and their release;
// - schedule.rs: the run loop, cycle spacing by the cluster's mark, the
//   start-up load and the change feed;
// - revoke.rs, notice.rs (the expiry notice), on_demand.rs, policy.rs.
// `CycleReport` lives in `crate::report`, below both this and `events`.

mod builder;
mod cycle;
mod domains;
mod issue;
mod lease;
mod notice;
mod on_demand;
mod policy;
mod revoke;
mod schedule;

pub use crate::error::SkipReason;
pub use crate::report::{CycleFailure, CycleReport, PASSED_OVER_LISTED};
pub use builder::RenewerBuilder;
pub use cycle::{ORDER_BUDGET, PASS_MARK};
pub use domains::{DomainPolicy, MAIN_DOMAIN_META_KEY};
pub use lease::LEASE_TTL;
pub use on_demand::{Decision, OnDemand};
pub use policy::{RenewalPolicy, MIN_RETRY_SPACING};
pub use schedule::CYCLE_MARK;

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::cipher::{Plaintext, SecretCipher};
use crate::clock::Clock;
use crate::events::{Event, EventBus, Subscription};
use crate::resolver::CertResolver;
use crate::store::{CertStore, ClusterStore, Coordinator, StoredCert};
use crate::vault::Vault;
use crate::{Domain, Result};

/// Keeps certificates issued and renewed.
///
/// Composes a [`Vault`] (a [`CertStore`] and the [`SecretCipher`] that seals
/// private keys before they reach it), one [`Issuer`](crate::issuer::Issuer)
/// (by default an [`IssuerRouter`](crate::issuer::IssuerRouter): an ACME
/// issuer for public names in production, a self-signed issuer for local
/// names and development), a [`DomainPolicy`] and a [`Clock`]. Cheap to
/// clone; clones share everything.
#[derive(Clone)]
pub struct Renewer {
    inner: Arc<Inner>,
}

/// What the clones of a renewer share: what every part reads first, then
/// one group per part.
struct Inner {
    vault: Vault,
    clock: Arc<dyn Clock>,
    /// Which names may get certificates, and the main domain.
    policy: DomainPolicy,
    /// The date and attempt rules.
    renewal: RenewalPolicy,
    /// The store's cluster, or this process's when it has none.
    cluster: Coordinator,
    /// The resolver that serves what is issued, if any.
    resolver: Option<CertResolver>,
    /// Every event subscriber's queue.
    events: EventBus,
    /// The issuer, the revoker, the time one issuance may take (`issue.rs`).
    issuing: issue::Issuing,
    /// One cycle at a time, and how many issuances at once (`cycle.rs`).
    cycle: cycle::Cycles,
    /// This instance's name in the leases, the domains in flight (`lease.rs`).
    leases: lease::Leases,
    /// The run loop's wake-up, refresh interval and feed cursor (`schedule.rs`).
    schedule: schedule::Schedule,
    /// The on-demand queue and rules, until the on-demand task takes them
    /// (`on_demand.rs`).
    on_demand: Mutex<Option<on_demand::Pending>>,
}

impl fmt::Debug for Renewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Renewer")
            .field("vault", &i.vault)
            .field("issuer", &i.issuing.issuer)
            .field("policy", &i.policy)
            .field("renewal", &i.renewal)
            .field("concurrency", &i.cycle.concurrency())
            .field("instance_id", &i.leases.instance_id())
            .field("lease_ttl", &i.leases.ttl())
            .finish_non_exhaustive()
    }
}

impl Renewer {
    /// Starts building a renewer over `store`, sealing keys with `cipher`.
    pub fn builder(store: Arc<dyn CertStore>, cipher: Arc<dyn SecretCipher>) -> RenewerBuilder {
        RenewerBuilder::new(Vault::new(store, cipher))
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CertStore> {
        self.inner.vault.store()
    }

    /// What this renewer coordinates through: the store's
    /// [`ClusterStore`], or the [`LocalCluster`](crate::store::LocalCluster)
    /// it plugged in when the store offers none.
    pub fn cluster(&self) -> &dyn ClusterStore {
        self.inner.cluster.get()
    }

    /// The vault (store and cipher).
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The domain policy (main and custom domains).
    pub fn policy(&self) -> &DomainPolicy {
        &self.inner.policy
    }

    /// The date rules in force.
    pub fn renewal_policy(&self) -> RenewalPolicy {
        self.inner.renewal
    }

    /// A channel of the renewer's [`Event`]s from now on, with a queue of
    /// `capacity` events (at least 1); see [`events`](crate::events). The
    /// renewer never waits for it: when the queue is full, events are
    /// dropped for this subscription, counted, and told by
    /// [`Event::Lagged`].
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        self.inner
            .events
            .subscribe(capacity, format!("subscription-{capacity}"))
    }

    /// Events dropped so far, over every subscriber, because a subscriber's
    /// queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.inner.events.dropped()
    }

    fn emit(&self, event: Event) {
        self.inner.events.emit(event);
    }

    /// The stored certificate of `domain` with its private key opened, for
    /// serving. `None` when nothing was issued yet.
    pub async fn certificate(&self, domain: &Domain) -> Result<Option<(StoredCert, Plaintext)>> {
        let Some(record) = self.store().load(domain).await? else {
            return Ok(None);
        };
        let Some(cert) = record.certificate else {
            return Ok(None);
        };
        let key = self.inner.vault.open_cert_key(domain, &cert)?;
        Ok(Some((cert, key)))
    }
}
