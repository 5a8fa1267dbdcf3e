//! What the renewer did, as typed [`Event`]s, for any number of subscribers.
//!
//! A subscriber is either a channel ([`Renewer::subscribe`], read with
//! [`Subscription::recv`]) or a [`Subscriber`] handed to
//! [`RenewerBuilder::subscriber`] (a notifier, a metrics recorder ...).
//! Every subscriber has a bounded queue of its own: the renewer never waits
//! for a subscriber. When a queue is full the event is dropped for that
//! subscriber only, the drop is counted ([`Subscription::dropped`],
//! [`Renewer::events_dropped`]) and logged, and the subscriber's next read
//! is an [`Event::Lagged`] saying how many it missed.
//!
//! The resolver is not one of these subscribers: it must see a new
//! certificate before [`Renewer::issue_now`] returns and must never miss
//! one, so the renewer hands certificates to it directly.
//!
//! [`Renewer::subscribe`]: crate::Renewer::subscribe
//! [`Renewer::events_dropped`]: crate::Renewer::events_dropped
//! [`Renewer::issue_now`]: crate::Renewer::issue_now
//! [`RenewerBuilder::subscriber`]: crate::renewer::RenewerBuilder::subscriber

#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::cert::IssuerKind;
use crate::report::CycleReport;
use crate::{Domain, Error};

/// How many days before expiry a certificate in force that was not renewed
/// is reported as [`Event::ExpiringSoon`].
pub const EXPIRING_SOON_DAYS: i64 = 7;

/// The queue of one subscriber, in events, unless set otherwise.
pub const DEFAULT_QUEUE: usize = 256;

/// Something the renewer did or noticed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A first certificate for a domain was issued and stored.
    Issued {
        /// The domain.
        domain: Domain,
        /// Who issued it.
        issuer: IssuerKind,
        /// When it expires.
        not_after: OffsetDateTime,
        /// Whether manual generation ([`Renewer::issue_now`](crate::Renewer::issue_now)) asked for it.
        manual: bool,
    },
    /// A domain that had a certificate got a new one, stored.
    Renewed {
        /// The domain.
        domain: Domain,
        /// Who issued it.
        issuer: IssuerKind,
        /// When the new certificate expires.
        not_after: OffsetDateTime,
        /// Whether manual generation asked for it.
        manual: bool,
    },
    /// An attempt failed and was counted on the certificate's record.
    Failed {
        /// The domain.
        domain: Domain,
        /// The failed attempts since the last success, this one included.
        attempt: u32,
        /// The attempts after which the cycle stops picking the certificate.
        max_attempts: u32,
        /// The error's stable code ([`Error::code`]).
        code: &'static str,
        /// The CA's problem type (`urn:ietf:params:acme:error:...`), when
        /// the CA answered with a problem document.
        problem: Option<String>,
        /// Why it failed, readable (the error's `Display`, never a secret).
        message: String,
    },
    /// The attempt that reached the attempt limit failed: the maintenance
    /// cycle no longer picks this certificate; manual generation still
    /// works and, when it succeeds, resets the attempts. Sent once, by the
    /// instance whose failure reached the limit.
    GaveUp {
        /// The domain.
        domain: Domain,
        /// The failed attempts (the limit).
        attempts: u32,
        /// When the certificate in force expires, if there is one.
        not_after: Option<OffsetDateTime>,
        /// The stable code of the last failure ([`Error::code`]).
        code: &'static str,
        /// The CA's problem type of the last failure, if any.
        problem: Option<String>,
        /// The last failure, readable.
        message: String,
    },
    /// A certificate in force expires in [`EXPIRING_SOON_DAYS`] days or less
    /// and its renewal has not succeeded. Sent once per certificate (the
    /// store remembers it), by whichever instance notices first.
    ExpiringSoon {
        /// The domain.
        domain: Domain,
        /// When the certificate in force expires.
        not_after: OffsetDateTime,
        /// The failed attempts since the last success.
        attempts: u32,
        /// The last failure in the record's log, if any.
        last_error: Option<String>,
    },
    /// A maintenance cycle finished.
    CycleFinished {
        /// What it did and what it passed over.
        report: Arc<CycleReport>,
        /// How long it took.
        duration: StdDuration,
    },
    /// A domain was registered for certificates (a custom domain added, or
    /// the main domain registered).
    DomainAdded {
        /// The domain.
        domain: Domain,
    },
    /// A domain and its certificate were removed.
    DomainRemoved {
        /// The domain.
        domain: Domain,
    },
    /// This subscriber's queue was full and it missed events.
    Lagged {
        /// How many events it missed since its last read.
        missed: u64,
    },
}

impl Event {
    /// A stable name for the kind of event (`issued`, `renewed`, `failed`,
    /// `gave_up`, `expiring_soon`, `cycle_finished`, `domain_added`,
    /// `domain_removed`, `lagged`), for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Issued { .. } => "issued",
            Self::Renewed { .. } => "renewed",
            Self::Failed { .. } => "failed",
            Self::GaveUp { .. } => "gave_up",
            Self::ExpiringSoon { .. } => "expiring_soon",
            Self::CycleFinished { .. } => "cycle_finished",
            Self::DomainAdded { .. } => "domain_added",
            Self::DomainRemoved { .. } => "domain_removed",
            Self::Lagged { .. } => "lagged",
        }
    }

    /// The domain the event is about, if it is about one.
    pub fn domain(&self) -> Option<&Domain> {
        match self {
            Self::Issued { domain, .. }
            | Self::Renewed { domain, .. }
            | Self::Failed { domain, .. }
            | Self::GaveUp { domain, .. }
            | Self::ExpiringSoon { domain, .. }
            | Self::DomainAdded { domain }
            | Self::DomainRemoved { domain } => Some(domain),
            Self::CycleFinished { .. } | Self::Lagged { .. } => None,
        }
    }
}

/// The CA's problem type of an error, when the CA sent a problem document.
pub(crate) fn problem_type(error: &Error) -> Option<String> {
    match error {
        Error::Acme {
            problem: Some(problem),
            ..
        } => problem.type_uri.clone(),
        _ => None,
    }
}

/// Receives the renewer's events, one at a time, in order, on a task of its
/// own: a slow subscriber delays only itself (its queue fills, and then it
/// misses events, told by [`Event::Lagged`]).
///
/// Implementations must not log or store secrets: an event's error never
/// holds one, and neither must what a subscriber adds.
#[async_trait]
pub trait Subscriber: fmt::Debug + Send + Sync + 'static {
    /// Handles one event.
    async fn on_event(&self, event: &Event);
}

/// A channel subscriber: the events the renewer sends, in order, from
/// [`Renewer::subscribe`](crate::Renewer::subscribe) on.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
    reported: u64,
}

impl Subscription {
    /// The next event; `None` once the renewer is gone and the queue is
    /// empty. When events were dropped because the queue was full, an
    /// [`Event::Lagged`] follows the events that were queued at the time.
    pub async fn recv(&mut self) -> Option<Event> {
        if let Some(event) = self.try_recv() {
            return Some(event);
        }
        match self.rx.recv().await {
            Some(event) => Some(event),
            None => self.lagged(),
        }
    }

    /// The next event if one is queued (or a [`Event::Lagged`] notice is
    /// due), without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            // Drops happen only while the queue is full, so what is queued
            // is older than them: the notice comes once it is read.
            Err(_) => self.lagged(),
        }
    }

    /// Events dropped for this subscriber so far because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lagged(&mut self) -> Option<Event> {
        let dropped = self.dropped();
        if dropped > self.reported {
            let missed = dropped - self.reported;
            self.reported = dropped;
            return Some(Event::Lagged { missed });
        }
        None
    }
}

/// One subscriber's queue, as the sender holds it.
#[derive(Debug)]
struct Sink {
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
    name: String,
}

/// The renewer's side: every subscriber's queue.
#[derive(Debug, Default)]
pub(crate) struct EventBus {
    sinks: Mutex<Vec<Sink>>,
    dropped: AtomicU64,
    /// Trait subscribers whose task waits for a runtime.
    pending: Mutex<Vec<(Arc<dyn Subscriber>, Subscription)>>,
}

impl EventBus {
    /// A new channel subscriber with a queue of `capacity` events (at least 1).
    pub(crate) fn subscribe(&self, capacity: usize, name: String) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sink {
                tx,
                dropped: dropped.clone(),
                name,
            });
        Subscription {
            rx,
            dropped,
            reported: 0,
        }
    }

    /// Adds a trait subscriber; its task starts with [`start`](Self::start).
    pub(crate) fn add(&self, subscriber: Arc<dyn Subscriber>, capacity: usize) {
        let subscription = self.subscribe(capacity, format!("{subscriber:?}"));
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((subscriber, subscription));
        self.start();
    }

    /// Starts the tasks of trait subscribers, when inside a Tokio runtime.
    pub(crate) fn start(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (subscriber, mut subscription) in pending {
            tokio::spawn(async move {
                while let Some(event) = subscription.recv().await {
                    subscriber.on_event(&event).await;
                }
            });
        }
    }

    /// Queues `event` for every subscriber without waiting: a full queue
    /// drops it for that subscriber (counted and logged), a closed one is
    /// forgotten.
    pub(crate) fn emit(&self, event: Event) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks.retain(|sink| match sink.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let missed = sink.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                self.dropped.fetch_add(1, Ordering::Relaxed);
                // Logged at the first drop and then at each power of two,
                // so a stuck subscriber cannot flood the log.
                if missed.is_power_of_two() {
                    tracing::warn!(
                        subscriber = %sink.name,
                        event = event.kind(),
                        dropped = missed,
                        "an event subscriber's queue is full; events are dropped for it"
                    );
                }
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Events dropped for any subscriber so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether anyone listens.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(name: &str) -> Event {
        Event::DomainAdded {
            domain: Domain::new(name).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_counts_and_tells_the_subscriber() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe(2, "slow".into());
        let mut fast = bus.subscribe(16, "fast".into());
        for i in 0..5 {
            bus.emit(added(&format!("d{i}.example.com")));
        }
        assert_eq!(slow.dropped(), 3);
        assert_eq!(fast.dropped(), 0);
        assert_eq!(bus.dropped(), 3);
        // The two queued events, then the notice of the three missed.
        let first = slow.recv().await.unwrap();
        assert_eq!(first.domain().unwrap().as_str(), "d0.example.com");
        let second = slow.recv().await.unwrap();
        assert_eq!(second.domain().unwrap().as_str(), "d1.example.com");
        assert!(matches!(
            slow.recv().await,
            Some(Event::Lagged { missed: 3 })
        ));
        assert!(slow.try_recv().is_none());
        for i in 0..5 {
            let event = fast.recv().await.unwrap();
            assert_eq!(
                event.domain().unwrap().as_str(),
                format!("d{i}.example.com")
            );
        }
    }

    #[tokio::test]
    async fn a_closed_subscription_is_forgotten() {
        let bus = EventBus::default();
        let gone = bus.subscribe(1, "gone".into());
        drop(gone);
        bus.emit(added("a.example.com"));
        assert!(bus.is_empty());
        assert_eq!(bus.dropped(), 0);
    }

    #[derive(Debug)]
    struct Collect(tokio::sync::mpsc::UnboundedSender<&'static str>);

    #[async_trait]
    impl Subscriber for Collect {
        async fn on_event(&self, event: &Event) {
            let _ = self.0.send(event.kind());
        }
    }

    #[tokio::test]
    async fn a_trait_subscriber_gets_every_event_in_order() {
        let bus = EventBus::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        bus.add(Arc::new(Collect(tx)), 8);
        bus.emit(added("a.example.com"));
        bus.emit(Event::DomainRemoved {
            domain: Domain::new("a.example.com").unwrap(),
        });
        assert_eq!(rx.recv().await, Some("domain_added"));
        assert_eq!(rx.recv().await, Some("domain_removed"));
    }
}
