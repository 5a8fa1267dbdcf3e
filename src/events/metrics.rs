//! [`MetricsSubscriber`]: the renewer's events as `metrics` counters,
//! gauges and histograms (feature `metrics`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Event, Subscriber};
use crate::clock::Clock;
use crate::Domain;

/// Orders placed with a CA, by `outcome` (`issued`, `renewed`, `failed`).
pub const ORDERS: &str = "certkeeper_orders_total";
/// Failed attempts, by error `code`.
pub const FAILED_ATTEMPTS: &str = "certkeeper_failed_attempts_total";
/// Certificates the cycle gave up on (attempt limit reached).
pub const GAVE_UP: &str = "certkeeper_gave_up_total";
/// How long maintenance cycles take, in seconds.
pub const CYCLE_DURATION: &str = "certkeeper_cycle_duration_seconds";
/// Cycles that stopped ordering before their end, by `reason`
/// ([`SkipReason::code`](crate::renewer::SkipReason::code): `ca_unavailable`,
/// `store_unavailable`, `rate_limited`, `order_budget`, `misconfigured`).
pub const CYCLES_STOPPED: &str = "certkeeper_cycles_stopped_total";
/// Issuances deferred (failed through no fault of their domain, not counted
/// as attempts), by error `code`: the CA's (`acme_unreachable`, `timeout`
/// ...), a setting's, or certkeeper's own store's (`store`, `io`).
pub const DEFERRED: &str = "certkeeper_deferred_total";
/// Certificates by `state` after the last cycle: `picked` (tried by it),
/// `left_for_later` (the cap), `at_attempt_limit`, `expiring_soon`.
pub const CERTIFICATES: &str = "certkeeper_certificates";
/// Seconds until the earliest expiry among the certificates this instance
/// saw issued, renewed or about to expire since it started (negative once
/// expired).
pub const EARLIEST_EXPIRY: &str = "certkeeper_earliest_expiry_seconds";
/// Handshakes answered with the fallback certificate (nothing loaded for
/// their name), counted by the resolver.
pub const FALLBACK_HANDSHAKES: &str = "certkeeper_fallback_handshakes_total";
/// Events dropped because a subscriber's queue was full.
pub const EVENTS_DROPPED: &str = "certkeeper_events_dropped_total";

/// Records the renewer's events through the `metrics` facade; install any
/// recorder (`metrics-exporter-prometheus`, for one) to read them. The
/// renewer adds one by itself when the `metrics` feature is on.
#[derive(Debug)]
pub struct MetricsSubscriber {
    clock: Arc<dyn Clock>,
    expiries: Mutex<BTreeMap<Domain, OffsetDateTime>>,
}

impl MetricsSubscriber {
    /// A subscriber measuring time with `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            expiries: Mutex::default(),
        }
    }

    fn track_expiry(&self, domain: &Domain, not_after: Option<OffsetDateTime>) {
        let mut expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
        match not_after {
            Some(date) => expiries.insert(domain.clone(), date),
            None => expiries.remove(domain),
        };
        if let Some(earliest) = expiries.values().min() {
            let seconds = (*earliest - self.clock.now()).as_seconds_f64();
            metrics::gauge!(EARLIEST_EXPIRY).set(seconds);
        }
    }
}

#[async_trait]
impl Subscriber for MetricsSubscriber {
    async fn on_event(&self, event: &Event) {
        match event {
            Event::Issued {
                domain, not_after, ..
            } => {
                metrics::counter!(ORDERS, "outcome" => "issued").increment(1);
                self.track_expiry(domain, Some(*not_after));
            }
            Event::Renewed {
                domain, not_after, ..
            } => {
                metrics::counter!(ORDERS, "outcome" => "renewed").increment(1);
                self.track_expiry(domain, Some(*not_after));
            }
            Event::Failed { code, .. } => {
                metrics::counter!(ORDERS, "outcome" => "failed").increment(1);
                metrics::counter!(FAILED_ATTEMPTS, "code" => *code).increment(1);
            }
            Event::GaveUp { .. } => metrics::counter!(GAVE_UP).increment(1),
            Event::ExpiringSoon {
                domain, not_after, ..
            } => self.track_expiry(domain, Some(*not_after)),
            Event::DomainRemoved { domain } => self.track_expiry(domain, None),
            Event::CycleFinished { report, duration } => {
                metrics::histogram!(CYCLE_DURATION).record(duration.as_secs_f64());
                if let Some(reason) = report.stopped {
                    metrics::counter!(CYCLES_STOPPED, "reason" => reason.code()).increment(1);
                }
                for deferred in &report.deferred {
                    metrics::counter!(DEFERRED, "code" => deferred.error.code()).increment(1);
                }
                let picked = report.issued.len()
                    + report.failed.len()
                    + report.deferred.len()
                    + report.skipped.len();
                let states = [
                    ("picked", picked as f64),
                    ("left_for_later", report.left_for_later.total as f64),
                    (
                        "at_attempt_limit",
                        report
                            .at_attempt_limit
                            .as_ref()
                            .map_or(0.0, |l| l.total as f64),
                    ),
                    ("expiring_soon", report.expiring_soon.len() as f64),
                ];
                for (state, count) in states {
                    metrics::gauge!(CERTIFICATES, "state" => state).set(count);
                }
            }
            Event::Lagged { missed } => metrics::counter!(EVENTS_DROPPED).increment(*missed),
            _ => {}
        }
    }
}
