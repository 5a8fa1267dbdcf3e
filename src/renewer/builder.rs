//! [`RenewerBuilder`]: how a [`Renewer`] is put together.

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use super::cycle::Cycles;
use super::issue::Issuing;
use super::lease::{Leases, LEASE_TTL, MIN_LEASE_TTL};
use super::on_demand::Pending;
use super::schedule::Schedule;
use super::{DomainPolicy, Inner, OnDemand, RenewalPolicy, Renewer};
use crate::clock::{Clock, SystemClock};
use crate::config::Naming;
use crate::events::{EventBus, Subscriber, DEFAULT_QUEUE};
use crate::issuer::{Issuer, IssuerRouter, Revoker, SelfSignedIssuer};
use crate::resolver::CertResolver;
use crate::store::Coordinator;
use crate::vault::Vault;
use crate::Domain;

/// Builds a [`Renewer`]; get one from [`Renewer::builder`].
#[derive(Debug)]
pub struct RenewerBuilder {
    pub(super) vault: Vault,
    pub(super) acme: Option<Arc<dyn Issuer>>,
    pub(super) self_signed: Option<Arc<dyn Issuer>>,
    pub(super) issuer: Option<Arc<dyn Issuer>>,
    pub(super) revoker: Option<Arc<dyn Revoker>>,
    pub(super) main_domain: Option<Domain>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) renewal: RenewalPolicy,
    pub(super) concurrency: usize,
    pub(super) issue_timeout: StdDuration,
    pub(super) lease_ttl: StdDuration,
    pub(super) production: bool,
    pub(super) resolver: Option<CertResolver>,
    pub(super) instance_id: Option<String>,
    pub(super) refresh_interval: StdDuration,
    pub(super) on_demand: Option<OnDemand>,
    pub(super) subscribers: Vec<(Arc<dyn Subscriber>, usize)>,
    pub(super) naming: Naming,
}

impl RenewerBuilder {
    pub(super) fn new(vault: Vault) -> Self {
        Self {
            vault,
            acme: None,
            self_signed: None,
            issuer: None,
            revoker: None,
            main_domain: None,
            clock: Arc::new(SystemClock),
            renewal: RenewalPolicy::default(),
            concurrency: 8,
            issue_timeout: StdDuration::from_secs(600),
            lease_ttl: LEASE_TTL,
            production: true,
            resolver: None,
            instance_id: None,
            refresh_interval: StdDuration::from_secs(10),
            on_demand: None,
            subscribers: Vec::new(),
            naming: Naming::Builder,
        }
    }

    /// Whether errors name this builder's methods (the default) or the
    /// settings' environment variables (a renewer built from the
    /// environment's settings).
    pub(crate) fn naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// The ACME issuer for public names (in production) of the default
    /// [`IssuerRouter`]. Without one, a public name in production fails with
    /// [`Error::Config`](crate::Error::Config).
    pub fn acme(mut self, issuer: Arc<dyn Issuer>) -> Self {
        self.acme = Some(issuer);
        self
    }

    /// Replaces the local issuer of the default [`IssuerRouter`] (default:
    /// [`SelfSignedIssuer`] on the renewer's clock).
    pub fn self_signed(mut self, issuer: Arc<dyn Issuer>) -> Self {
        self.self_signed = Some(issuer);
        self
    }

    /// Every name's issuer, in place of the default [`IssuerRouter`] made of
    /// [`acme`](Self::acme), [`self_signed`](Self::self_signed) and
    /// [`production`](Self::production), which are then unused: for a rule
    /// of one's own (an [`IssuerRouter`] set up elsewhere, a private CA for
    /// some names ...).
    pub fn issuer(mut self, issuer: Arc<dyn Issuer>) -> Self {
        self.issuer = Some(issuer);
        self
    }

    /// What revokes certificates ([`Renewer::revoke`],
    /// [`Renewer::remove_domain_revoking`]): usually the same
    /// [`AcmeIssuer`](crate::issuer::AcmeIssuer) as [`acme`](Self::acme).
    /// None by default.
    pub fn revoker(mut self, revoker: Arc<dyn Revoker>) -> Self {
        self.revoker = Some(revoker);
        self
    }

    /// The main domain (`_APP_DOMAIN`); unset or `localhost` means it is learned.
    pub fn main_domain(mut self, domain: Option<Domain>) -> Self {
        self.main_domain = domain;
        self
    }

    /// The clock for every date decision (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The date rules (default: [`RenewalPolicy::default`]).
    pub fn renewal_policy(mut self, policy: RenewalPolicy) -> Self {
        self.renewal = policy;
        self
    }

    /// How many certificates a cycle issues at once (default 8, at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The longest one issuance may take (default 10 minutes); one that
    /// takes longer is given up as the CA's failure ([`Error::Timeout`](crate::Error::Timeout)),
    /// not counted as an attempt. The ACME issuer also bounds each call to
    /// the CA; this bounds any issuer. The domain's lease is renewed
    /// meanwhile ([`lease_ttl`](Self::lease_ttl)).
    pub fn issue_timeout(mut self, timeout: StdDuration) -> Self {
        self.issue_timeout = timeout;
        self
    }

    /// How long this renewer's leases in the store last without renewal
    /// (default [`LEASE_TTL`], a minute; at least one second): the cycle
    /// lease, and each domain's lease while the domain is issued. The
    /// holder renews a lease every third of this while its work goes on,
    /// however long an issuance takes
    /// ([`issue_timeout`](Self::issue_timeout)), so a holder that died or
    /// lost its database frees the cycle and its names within this time.
    /// Shorter frees them sooner and writes to the store more often (one
    /// renewal per lease held every third of it).
    pub fn lease_ttl(mut self, ttl: StdDuration) -> Self {
        self.lease_ttl = ttl.max(MIN_LEASE_TTL);
        self
    }

    /// Production mode (`_APP_ENV=production`, the default) of the default
    /// [`IssuerRouter`]: public names go to the ACME issuer. Otherwise every
    /// name gets a self-signed certificate.
    pub fn production(mut self, production: bool) -> Self {
        self.production = production;
        self
    }

    /// A TLS resolver to update whenever a certificate is stored; it loads
    /// stored certificates from this renewer's vault on first use.
    pub fn resolver(mut self, resolver: CertResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Who this renewer is in the store's leases: 1 to 128 characters of
    /// `a-z`, `0-9`, `.`, `_`, `-` (default: a random id, new at each start).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// How often [`Renewer::run`] reads the store's change feed, so this
    /// instance serves the certificates other instances stored (default 10
    /// s; at least one second). It is also how often `run` asks whether the
    /// cluster's next cycle is due.
    pub fn refresh_interval(mut self, interval: StdDuration) -> Self {
        self.refresh_interval = interval.max(StdDuration::from_secs(1));
        self
    }

    /// Sends the renewer's [`Event`](crate::events::Event)s to
    /// `subscriber` (a notifier, a metrics recorder ...), through a queue of
    /// [`DEFAULT_QUEUE`] events of its own; see [`events`](crate::events).
    /// Its task starts once a Tokio runtime is there (at build, or at
    /// [`Renewer::load`] or [`Renewer::run`]).
    pub fn subscriber(self, subscriber: Arc<dyn Subscriber>) -> Self {
        self.subscriber_with_queue(subscriber, DEFAULT_QUEUE)
    }

    /// [`subscriber`](Self::subscriber) with a queue of `capacity` events
    /// (at least 1).
    pub fn subscriber_with_queue(
        mut self,
        subscriber: Arc<dyn Subscriber>,
        capacity: usize,
    ) -> Self {
        self.subscribers.push((subscriber, capacity));
        self
    }

    /// Issues on demand: a handshake for an allowed name that has no
    /// certificate (the main domain, a custom domain, or a name `rules`
    /// allow) starts its issuance in the background, within the limits of
    /// `rules` ([`OnDemand`]); that handshake, and those until the
    /// certificate is stored, get the fallback, and none waits for the CA.
    /// Needs a [`resolver`](Self::resolver), and a Tokio runtime when the
    /// renewer is built or when [`Renewer::load`] or [`Renewer::run`] is
    /// called. Off by default.
    pub fn on_demand(mut self, rules: OnDemand) -> Self {
        self.on_demand = Some(rules);
        self
    }

    /// Builds the renewer.
    pub fn build(self) -> Renewer {
        let mut on_demand = None;
        if let Some(resolver) = &self.resolver {
            // Stored certificates are loaded on first use, from this vault.
            resolver.set_source(Arc::new(self.vault.clone()));
            if let Some(rules) = self.on_demand {
                let (sink, names) = tokio::sync::mpsc::channel(rules.queue);
                resolver.report_misses_to(sink);
                on_demand = Some(Pending { rules, names });
            }
        }
        let issuer = self.issuer.unwrap_or_else(|| {
            let local = self
                .self_signed
                .unwrap_or_else(|| Arc::new(SelfSignedIssuer::with_clock(self.clock.clone())));
            let mut router = IssuerRouter::new(local).production(self.production);
            if let Some(acme) = self.acme {
                router = router.public(acme);
            }
            Arc::new(router)
        });
        let events = EventBus::default();
        #[cfg(feature = "metrics")]
        events.add(
            Arc::new(crate::events::metrics::MetricsSubscriber::new(
                self.clock.clone(),
            )),
            DEFAULT_QUEUE,
        );
        for (subscriber, capacity) in self.subscribers {
            events.add(subscriber, capacity);
        }
        let cluster = Coordinator::new(self.vault.store().clone(), self.clock.clone());
        let instance_id = self.instance_id.unwrap_or_else(random_instance_id);
        let renewer = Renewer {
            inner: Arc::new(Inner {
                policy: DomainPolicy::new(self.main_domain, self.vault.store().clone()),
                vault: self.vault,
                clock: self.clock,
                renewal: self.renewal,
                leases: Leases::new(cluster.clone(), instance_id, self.lease_ttl),
                cluster,
                resolver: self.resolver,
                events,
                issuing: Issuing {
                    issuer,
                    revoker: self.revoker,
                    timeout: self.issue_timeout,
                    naming: self.naming,
                },
                cycle: Cycles::new(self.concurrency),
                schedule: Schedule::new(self.refresh_interval),
                on_demand: Mutex::new(on_demand),
            }),
        };
        renewer.start_on_demand();
        renewer
    }
}

/// `i-` and 16 random hex digits.
fn random_instance_id() -> String {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = [0u8; 8];
    chacha20poly1305::aead::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("i-{hex}")
}
