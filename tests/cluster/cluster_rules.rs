//! Several renewers sharing one store, in one process: the cycle lease and
//! the remembered start of the last cycle (one cycle per interval, the cap
//! for the whole cluster), the per-domain lease (no name ordered twice), and
//! the change feed (each instance serves what another stored), and the
//! domain lease's life: renewed while its issuance goes on, freed within its
//! TTL when its holder stops, released again when a release failed. The SQL
//! stores run the same rules across processes in tests/cluster/cluster_sql.rs.

// The fault double of a store (a memory store whose chosen calls fail),
// shared with the renewer's tests.
#[path = "../renewer/fault_store.rs"]
mod fault_store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;
use certkeeper::cert::{fingerprint, leaf_der, IssuerKind};
use certkeeper::cipher::Keyring;
use certkeeper::issuer::{IssueRequest, Issued, Issuer, SelfSignedIssuer};
use certkeeper::renewer::SkipReason;
use certkeeper::store::{CertRecord, CertStore, MemoryStore};
use certkeeper::{CertResolver, Domain, Error, Renewer, RenewerBuilder, TestClock};
use fault_store::FaultStore;

/// Real self-signed certificates, each issuance recorded with its time.
#[derive(Debug, Default)]
struct CountingIssuer {
    inner: SelfSignedIssuer,
    issued: Mutex<Vec<(Domain, Instant)>>,
    /// When set, each issuance waits until it is opened.
    gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Issuances that reached the gate.
    entered: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Issuer for CountingIssuer {
    async fn issue(&self, request: &IssueRequest) -> certkeeper::Result<Issued> {
        let domain = &request.domain;
        self.entered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            let _pass = gate.acquire().await;
        }
        self.issued
            .lock()
            .unwrap()
            .push((domain.clone(), Instant::now()));
        Ok(Issued::new(self.inner.issue_blocking(domain)?, self.kind()))
    }

    fn kind(&self) -> IssuerKind {
        IssuerKind::SELF_SIGNED
    }
}

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::from_keys(true, [(1, "cluster-rules-test-key-0123456789")]).unwrap())
}

fn renewer(store: &Arc<MemoryStore>, issuer: &Arc<CountingIssuer>, id: &str) -> Renewer {
    Renewer::builder(store.clone(), keyring())
        .self_signed(issuer.clone())
        .production(false)
        .instance_id(id)
        .refresh_interval(StdDuration::from_secs(1))
        .resolver(CertResolver::new())
        .build()
}

fn d(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_run_one_cycle_per_interval_and_never_order_a_name_twice() {
    let store = Arc::new(MemoryStore::new());
    let now = time::OffsetDateTime::now_utc();
    for i in 0..300 {
        store
            .save(&CertRecord::new(d(&format!("site{i:03}.test")), now))
            .await
            .unwrap();
    }
    let issuer = Arc::new(CountingIssuer::default());
    let interval = StdDuration::from_secs(4);
    let instances: Vec<_> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|id| {
            let renewer = renewer(&store, &issuer, id);
            tokio::spawn(async move { renewer.run(interval).await })
        })
        .collect();
    let deadline = Instant::now() + StdDuration::from_secs(60);
    while issuer.issued.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    // A moment more: nothing beyond the 300 may follow.
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    for instance in instances {
        instance.abort();
    }
    let issued = issuer.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 300, "every due name issued once, none twice");
    let mut per_domain: HashMap<&Domain, usize> = HashMap::new();
    for (domain, _) in &issued {
        *per_domain.entry(domain).or_default() += 1;
    }
    assert!(
        per_domain.values().all(|n| *n == 1),
        "a name was ordered twice"
    );
    // The first cycle took exactly the cap; the rest waited for the next
    // interval of the cluster, whichever instance ran it.
    let first = issued[0].1;
    let after_cap = issued[200].1;
    assert!(
        after_cap.duration_since(first) >= interval - StdDuration::from_millis(50),
        "the 201st certificate came {:?} after the first, within one interval",
        after_cap.duration_since(first)
    );
    assert!(
        issued[199].1.duration_since(first) < interval,
        "the first cycle must issue its 200 within the interval"
    );
}

#[tokio::test]
async fn an_instance_serves_what_another_stored_and_drops_what_it_removed() {
    let store = Arc::new(MemoryStore::new());
    let issuer = Arc::new(CountingIssuer::default());
    let resolver_b = CertResolver::new();
    let a = renewer(&store, &issuer, "node-a");
    let b = Renewer::builder(store.clone(), keyring())
        .production(false)
        .instance_id("node-b")
        .resolver(resolver_b.clone())
        .build();
    b.load().await.unwrap();
    let domain = d("shop.test");
    a.add_domain(&domain).await.unwrap();
    let record = a.issue_now(Some(&domain)).await.unwrap();
    assert!(!resolver_b.serves(&domain));
    assert!(b.refresh().await.unwrap() >= 1);
    let served = resolver_b.lookup(Some("shop.test")).expect("served by B");
    let leaf = leaf_der(&record.certificate.unwrap().chain_pem).unwrap();
    assert_eq!(
        fingerprint(served.end_entity_cert().unwrap()),
        fingerprint(&leaf),
        "B serves the very certificate A stored"
    );
    assert!(a.remove_domain(&domain).await.unwrap());
    b.refresh().await.unwrap();
    assert!(
        !resolver_b.serves(&domain),
        "B still serves a removed domain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_being_issued_by_one_instance_is_not_ordered_by_another() {
    let store = Arc::new(MemoryStore::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = Arc::new(CountingIssuer {
        gate: Some(gate.clone()),
        ..CountingIssuer::default()
    });
    let fast = Arc::new(CountingIssuer::default());
    let a = renewer(&store, &slow, "node-a");
    let b = renewer(&store, &fast, "node-b");
    let domain = d("busy.test");
    a.add_domain(&domain).await.unwrap();
    let issuing = {
        let (a, domain) = (a.clone(), domain.clone());
        tokio::spawn(async move { a.issue_now(Some(&domain)).await })
    };
    // A holds the lease once its issuer waits at the gate.
    while slow.entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(!issuing.is_finished(), "A's issuance ended early");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    let err = b.issue_now(Some(&domain)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InProgress {
                reason: SkipReason::AlreadyBeingIssued,
                ..
            }
        ),
        "{err}"
    );
    assert!(fast.issued.lock().unwrap().is_empty(), "B ordered it too");
    gate.add_permits(1);
    issuing.await.unwrap().unwrap();
    // Released: B may issue it now.
    b.issue_now(Some(&domain)).await.unwrap();
    assert_eq!(fast.issued.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_cycle_while_another_instance_holds_the_cycle_lease_is_refused() {
    let store = Arc::new(MemoryStore::new());
    let issuer = Arc::new(CountingIssuer::default());
    let a = renewer(&store, &issuer, "node-a");
    let cluster = store.cluster().unwrap();
    assert!(cluster
        .acquire_lease("maintenance-cycle", "node-b", StdDuration::from_secs(60))
        .await
        .unwrap());
    let err = a.run_cycle().await.unwrap_err();
    assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
    assert_eq!(err.code(), "lease_held");
    cluster
        .release_lease("maintenance-cycle", "node-b")
        .await
        .unwrap();
    a.run_cycle().await.unwrap();
}

/// A renewer named `id` over `store` (whose cluster runs on a test clock),
/// issuing through `issuer`.
fn leasing(store: &Arc<FaultStore>, issuer: &Arc<CountingIssuer>, id: &str) -> RenewerBuilder {
    Renewer::builder(store.clone(), keyring())
        .self_signed(issuer.clone())
        .production(false)
        .instance_id(id)
}

/// Waits (generously) until `issuer` has an issuance at its gate.
async fn until_entered(issuer: &CountingIssuer, issuing: &tokio::task::JoinHandle<impl Sized>) {
    let deadline = Instant::now() + StdDuration::from_secs(30);
    while issuer.entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(!issuing.is_finished(), "the issuance ended early");
        assert!(Instant::now() < deadline, "the issuance never started");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

fn being_issued(result: certkeeper::Result<CertRecord>) -> bool {
    match result {
        Err(Error::InProgress {
            reason: SkipReason::AlreadyBeingIssued,
            ..
        }) => true,
        Ok(_) => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_slower_than_the_lease_ttl_keeps_its_lease() {
    let clock = TestClock::at_system_time();
    let store = FaultStore::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let cluster = store.fault_cluster();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = Arc::new(CountingIssuer {
        gate: Some(gate.clone()),
        ..CountingIssuer::default()
    });
    let fast = Arc::new(CountingIssuer::default());
    let ttl = StdDuration::from_millis(1500);
    let a = leasing(&store, &slow, "node-a").lease_ttl(ttl).build();
    let b = leasing(&store, &fast, "node-b").lease_ttl(ttl).build();
    let domain = d("slow.test");
    a.add_domain(&domain).await.unwrap();
    let issuing = {
        let (a, domain) = (a.clone(), domain.clone());
        tokio::spawn(async move { a.issue_now(Some(&domain)).await })
    };
    until_entered(&slow, &issuing).await;
    // Four TTLs of the store's clock go by, a second at a time; after each
    // step A's heartbeat renews the lease, and B may not order the name.
    for _ in 0..6 {
        let renewals = cluster.acquires_by("node-a");
        clock.advance(time::Duration::seconds(1));
        let deadline = Instant::now() + StdDuration::from_secs(30);
        while cluster.acquires_by("node-a") == renewals {
            assert!(Instant::now() < deadline, "A never renewed its lease");
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        assert!(being_issued(b.issue_now(Some(&domain)).await));
    }
    assert!(fast.issued.lock().unwrap().is_empty(), "B ordered it too");
    gate.add_permits(1);
    issuing.await.unwrap().unwrap();
    // Released, its heartbeat gone: B may issue, and A renews nothing more.
    let renewals = cluster.acquires_by("node-a");
    b.issue_now(Some(&domain)).await.unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        cluster.acquires_by("node-a"),
        renewals,
        "a heartbeat outlived its lease"
    );
    assert_eq!(fast.issued.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_frees_the_name_within_the_lease_ttl() {
    let clock = TestClock::at_system_time();
    let store = FaultStore::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stuck = Arc::new(CountingIssuer {
        gate: Some(gate.clone()),
        ..CountingIssuer::default()
    });
    let fast = Arc::new(CountingIssuer::default());
    let a = leasing(&store, &stuck, "node-a").build();
    let b = leasing(&store, &fast, "node-b").build();
    let domain = d("stopped.test");
    a.add_domain(&domain).await.unwrap();
    let issuing = {
        let (a, domain) = (a.clone(), domain.clone());
        tokio::spawn(async move { a.issue_now(Some(&domain)).await })
    };
    until_entered(&stuck, &issuing).await;
    // A dies with its lease held: it lost its database, so no release
    // reaches the store, and its task ends where it stands.
    store
        .faults
        .release
        .store(true, std::sync::atomic::Ordering::SeqCst);
    issuing.abort();
    assert!(issuing.await.unwrap_err().is_cancelled());
    drop(a);
    // The lease stands until its TTL runs out on the store's clock ...
    clock.advance(time::Duration::seconds(50));
    assert!(being_issued(b.issue_now(Some(&domain)).await));
    // ... which is a minute at most: then B may order the name.
    clock.advance(time::Duration::seconds(11));
    let record = b.issue_now(Some(&domain)).await.unwrap();
    assert!(record.certificate.is_some());
    assert_eq!(fast.issued.lock().unwrap().len(), 1);
    assert!(stuck.issued.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_failed_is_retried_and_frees_the_name_soon() {
    // The store's clock stands still: only a release frees the name.
    let clock = TestClock::at_system_time();
    let store = FaultStore::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let issuer = Arc::new(CountingIssuer::default());
    let a = leasing(&store, &issuer, "node-a").build();
    let b = leasing(&store, &issuer, "node-b").build();
    let domain = d("released.test");
    a.add_domain(&domain).await.unwrap();
    store
        .faults
        .release_times
        .store(1, std::sync::atomic::Ordering::SeqCst);
    a.issue_now(Some(&domain)).await.unwrap();
    // The first release failed; a retry in the background frees the name.
    let deadline = Instant::now() + StdDuration::from_secs(30);
    while being_issued(b.issue_now(Some(&domain)).await) {
        assert!(
            Instant::now() < deadline,
            "the lease was never released after its failed release"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert_eq!(issuer.issued.lock().unwrap().len(), 2);
    assert!(
        store.fault_cluster().releases() >= 3,
        "released by A twice, by B once"
    );
}
