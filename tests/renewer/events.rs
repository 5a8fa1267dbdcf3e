//! The renewer's events: what each step sends, the cycle report's passed-
//! over domains, and subscribers that never slow a cycle down. The issuer
//! is the self-signed one (development mode): real certificates, no CA;
//! tests/renewer/notify_smtp.rs covers the failures against a real CA.

use crate::common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use certkeeper::events::{Event, Subscriber, Subscription};
use certkeeper::store::MemoryStore;
use certkeeper::{RenewalPolicy, Renewer};
use common::{domain, keyring, limited, TEST_KEY};

fn renewer(per_cycle: usize) -> certkeeper::RenewerBuilder {
    Renewer::builder(Arc::new(MemoryStore::new()), keyring(TEST_KEY))
        .production(false)
        .renewal_policy(RenewalPolicy {
            per_cycle,
            ..RenewalPolicy::default()
        })
}

fn drain(events: &mut Subscription) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv()).collect()
}

#[tokio::test]
async fn each_step_sends_its_event_and_the_report_names_what_the_cap_left() {
    limited(StdDuration::from_secs(60), async {
        let renewer = renewer(2).build();
        let mut events = renewer.subscribe(64);
        let names: Vec<_> = (1..=5)
            .map(|i| domain(&format!("app{i}.example.com")))
            .collect();
        for name in &names {
            renewer.add_domain(name).await.unwrap();
        }
        let added: Vec<_> = drain(&mut events)
            .into_iter()
            .map(|e| match e {
                Event::DomainAdded { domain } => domain,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(added, names);
        // Adding a stored domain again is no news.
        renewer.add_domain(&names[0]).await.unwrap();
        assert!(drain(&mut events).is_empty());

        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued, names[..2]);
        let left = &report.left_for_later;
        assert_eq!((left.total, left.exact), (3, true));
        assert_eq!(left.domains, names[2..]);
        assert_eq!(report.at_attempt_limit.as_ref().map(|l| l.total), Some(0));
        assert!(
            report.to_string().contains("3 left for a later cycle"),
            "{report}"
        );
        let sent = drain(&mut events);
        let issued: Vec<_> = sent
            .iter()
            .filter_map(|e| match e {
                Event::Issued {
                    domain,
                    manual: false,
                    ..
                } => Some(domain.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(issued.len(), 2);
        match sent.last() {
            Some(Event::CycleFinished {
                report: finished, ..
            }) => {
                assert_eq!(finished.issued, report.issued);
                assert_eq!(finished.left_for_later, report.left_for_later);
            }
            other => panic!("the cycle ends with CycleFinished: {other:?}"),
        }

        // Manual generation of an issued domain is a renewal.
        renewer.issue_now(Some(&names[0])).await.unwrap();
        assert!(matches!(
            drain(&mut events).as_slice(),
            [Event::Renewed { domain, manual: true, .. }] if *domain == names[0]
        ));
        assert!(renewer.remove_domain(&names[4]).await.unwrap());
        assert!(matches!(
            drain(&mut events).as_slice(),
            [Event::DomainRemoved { domain }] if *domain == names[4]
        ));
        assert!(!renewer.remove_domain(&names[4]).await.unwrap());
        assert!(drain(&mut events).is_empty());
        assert_eq!(renewer.events_dropped(), 0);
    })
    .await;
}

/// Takes its first event and then never returns.
#[derive(Debug)]
struct Stuck;

#[async_trait]
impl Subscriber for Stuck {
    async fn on_event(&self, _event: &Event) {
        std::future::pending::<()>().await
    }
}

#[tokio::test]
async fn subscribers_that_never_read_never_slow_a_cycle_and_drops_are_told() {
    limited(StdDuration::from_secs(60), async {
        let renewer = renewer(200).subscriber_with_queue(Arc::new(Stuck), 1).build();
        let mut unread = renewer.subscribe(2);
        for i in 1..=20 {
            renewer.add_domain(&domain(&format!("app{i}.example.com"))).await.unwrap();
        }
        // Bounded by `limited`: a cycle that waited for a subscriber would hang.
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued.len(), 20);
        // 20 added + 20 issued + 1 cycle finished; the channel kept 2.
        assert_eq!(unread.dropped(), 39);
        assert!(renewer.events_dropped() >= 39 + 38, "{}", renewer.events_dropped());
        assert!(matches!(unread.recv().await, Some(Event::DomainAdded { .. })));
        assert!(matches!(unread.recv().await, Some(Event::DomainAdded { .. })));
        assert!(matches!(unread.recv().await, Some(Event::Lagged { missed: 39 })));
        assert!(unread.try_recv().is_none());
        // Once read, the channel gets events again.
        renewer.add_domain(&domain("late.example.com")).await.unwrap();
        assert!(matches!(unread.recv().await, Some(Event::DomainAdded { domain }) if domain.as_str() == "late.example.com"));
    })
    .await;
}
