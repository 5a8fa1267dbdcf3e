//! On-demand issuance through real TLS handshakes: a handshake for an
//! allowed name without a certificate starts one order in the background
//! (the handshake gets the fallback), names not allowed never order, and
//! floods of handshakes are held to one order per name and the per-minute
//! cap.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use certkeeper::issuer::{IssueRequest, Issued, Issuer, IssuerExt, IssuerKind, SelfSignedIssuer};
use certkeeper::renewer::OnDemand;
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{CertResolver, Domain, Error, Renewer};
use common::tls::{handshake, trusting, TlsListener};
use common::{domain, keyring, limited, TEST_KEY};

const TEST_LIMIT: Duration = Duration::from_secs(300);
const FLOOD: usize = 10_000;
const MAIN: &str = "www.example.com";

/// How the counting issuer answers.
#[derive(Clone, Copy)]
enum Behaviour {
    /// A self-signed certificate, at once.
    Issue,
    /// A self-signed certificate after a delay.
    Slowly(Duration),
    /// An error.
    Fail,
}

/// Counts its calls, per name too.
#[derive(Debug)]
struct Counting {
    inner: SelfSignedIssuer,
    behaviour: std::sync::Mutex<Vec<u8>>,
    calls: AtomicUsize,
    names: std::sync::Mutex<Vec<Domain>>,
    delay_ms: AtomicUsize,
}

impl Counting {
    fn new(behaviour: Behaviour) -> Arc<Self> {
        let (code, delay) = match behaviour {
            Behaviour::Issue => (0, 0),
            Behaviour::Slowly(d) => (1, d.as_millis() as usize),
            Behaviour::Fail => (2, 0),
        };
        Arc::new(Self {
            inner: SelfSignedIssuer::new(),
            behaviour: std::sync::Mutex::new(vec![code]),
            calls: AtomicUsize::new(0),
            names: std::sync::Mutex::default(),
            delay_ms: AtomicUsize::new(delay),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn names(&self) -> Vec<Domain> {
        self.names.lock().unwrap().clone()
    }
}

#[async_trait]
impl Issuer for Counting {
    async fn issue(&self, request: &IssueRequest) -> certkeeper::Result<Issued> {
        let domain = &request.domain;
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.names.lock().unwrap().push(domain.clone());
        let code = self.behaviour.lock().unwrap()[0];
        let delay = self.delay_ms.load(Ordering::SeqCst) as u64;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match code {
            // A refusal about the name: a failed attempt of the domain.
            2 => {
                let problem = certkeeper::error::AcmeProblem {
                    type_uri: Some("urn:ietf:params:acme:error:rejectedIdentifier".into()),
                    detail: Some("the CA will not issue for this name".into()),
                    status: Some(400),
                    subproblems: Vec::new(),
                };
                Err(Error::Acme {
                    domain: Some(domain.clone()),
                    step: "new-order",
                    message: problem.to_string(),
                    problem: Some(Box::new(problem)),
                    source: None,
                })
            }
            _ => Ok(Issued::new(
                self.inner.issue_for(domain).await?,
                self.kind(),
            )),
        }
    }

    fn kind(&self) -> IssuerKind {
        IssuerKind::new("counting").unwrap()
    }
}

/// A renewer in development mode (every name self-signed, through the
/// counting issuer) with on-demand issuance set by `rules`, its resolver
/// served on a TLS listener.
struct Server {
    store: Arc<MemoryStore>,
    resolver: CertResolver,
    renewer: Renewer,
    listener: TlsListener,
}

async fn server(issuer: Arc<Counting>, rules: OnDemand) -> Server {
    let store = Arc::new(MemoryStore::new());
    let resolver = CertResolver::new();
    let renewer = Renewer::builder(store.clone(), keyring(TEST_KEY))
        .production(false)
        .self_signed(issuer)
        .main_domain(Some(domain(MAIN)))
        .resolver(resolver.clone())
        .on_demand(rules)
        .build();
    renewer.load().await.unwrap();
    let listener = TlsListener::start(resolver.server_config(&[b"http/1.1"]).unwrap(), None).await;
    Server {
        store,
        resolver,
        renewer,
        listener,
    }
}

/// `count` real handshakes, 16 at a time, with the names `name(i)` gives;
/// each must complete (with the fallback or a certificate).
async fn flood(at: std::net::SocketAddr, count: usize, name: impl Fn(usize) -> String) {
    let names: Vec<String> = (0..count).map(name).collect();
    let names = Arc::new(names);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (names, next) = (names.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(name) = names.get(i) else {
                    return;
                };
                handshake(at, Some(name), None, &[])
                    .await
                    .unwrap_or_else(|e| panic!("handshake {i} for {name} failed: {e}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// A random-looking name for handshake `i` (a distinct name each time).
fn random_name(i: usize) -> String {
    let mixed = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("r{mixed:016x}.example.com")
}

/// Gives the on-demand task time to drain what the handshakes reported.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_with_names_not_allowed_order_nothing() {
    limited(TEST_LIMIT, async {
        let issuer = Counting::new(Behaviour::Issue);
        let s = server(issuer.clone(), OnDemand::new().per_minute(1000)).await;
        let started = Instant::now();
        flood(s.listener.address, FLOOD, random_name).await;
        // Repeated names that are not allowed, and names that are not names.
        flood(s.listener.address, 200, |_| "stranger.example.org".into()).await;
        for garbage in ["..", "a..b", "-x-.example.com"] {
            let _ = s.resolver.lookup(Some(garbage));
        }
        settle().await;
        eprintln!("{} handshakes in {:?}", FLOOD + 200, started.elapsed());
        assert_eq!(issuer.calls(), 0, "ordered: {:?}", issuer.names());
        assert_eq!(s.store.list().await.unwrap(), vec![domain(MAIN)]);
        assert_eq!(s.listener.failures(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_for_one_allowed_name_orders_once() {
    limited(TEST_LIMIT, async {
        // The order takes long enough for the whole flood to arrive meanwhile.
        let issuer = Counting::new(Behaviour::Slowly(Duration::from_secs(600)));
        let rules = OnDemand::new()
            .allow(|d| d.as_str() == "shop.example.net")
            .per_minute(1000);
        let s = server(issuer.clone(), rules).await;
        flood(s.listener.address, FLOOD, |_| "shop.example.net".into()).await;
        settle().await;
        assert_eq!(issuer.names(), vec![domain("shop.example.net")]);
        assert_eq!(s.listener.failures(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_name_waits_for_its_backoff() {
    // Long enough for the flood below on a busy 2-core machine.
    const BACKOFF: Duration = Duration::from_secs(20);
    limited(TEST_LIMIT, async {
        let issuer = Counting::new(Behaviour::Fail);
        let rules = OnDemand::new()
            .allow(|d| d.as_str() == "shop.example.net")
            .per_minute(1000)
            .backoff(BACKOFF);
        let s = server(issuer.clone(), rules).await;
        let started = Instant::now();
        flood(s.listener.address, 300, |_| "shop.example.net".into()).await;
        settle().await;
        assert!(
            started.elapsed() < BACKOFF,
            "the flood outlasted the back-off; this test proves nothing on so slow a machine"
        );
        assert_eq!(issuer.calls(), 1, "one attempt, then the back-off");
        let record = s
            .store
            .load(&domain("shop.example.net"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.attempts, 1);
        // After the back-off the name may be tried again, once.
        tokio::time::sleep(BACKOFF.saturating_sub(started.elapsed()) + Duration::from_millis(200))
            .await;
        flood(s.listener.address, 500, |_| "shop.example.net".into()).await;
        settle().await;
        assert_eq!(issuer.calls(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_capped_per_minute() {
    limited(TEST_LIMIT, async {
        let issuer = Counting::new(Behaviour::Issue);
        let rules = OnDemand::new()
            .allow(|d| d.as_str().ends_with(".customers.example.net"))
            .per_minute(3);
        let s = server(issuer.clone(), rules).await;
        flood(s.listener.address, 2_000, |i| {
            format!("c{}.customers.example.net", i % 50)
        })
        .await;
        settle().await;
        assert_eq!(issuer.calls(), 3, "ordered: {:?}", issuer.names());
        let mut ordered = issuer.names();
        ordered.sort();
        ordered.dedup();
        assert_eq!(ordered.len(), 3, "no name ordered twice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_handshake_gets_the_fallback_and_a_later_one_the_certificate() {
    limited(TEST_LIMIT, async {
        let issuer = Counting::new(Behaviour::Slowly(Duration::from_millis(300)));
        let rules = OnDemand::new().allow(|d| d.as_str() == "shop.example.net");
        let s = server(issuer.clone(), rules).await;
        let at = s.listener.address;
        let started = Instant::now();
        let first = handshake(at, Some("shop.example.net"), None, &[])
            .await
            .unwrap();
        // The handshake did not wait for the order (300 ms).
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(first.dns_names(), vec![MAIN.to_string()], "the fallback");
        let record = loop {
            if let Some(record) = s.store.load(&domain("shop.example.net")).await.unwrap() {
                if record.certificate.is_some() {
                    break record;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cert = record.certificate.unwrap();
        let later = handshake(
            at,
            Some("shop.example.net"),
            Some(trusting(&cert.chain_pem)),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(later.fingerprint, cert.fingerprint);
        assert_eq!(later.dns_names(), vec!["shop.example.net".to_string()]);
        // The main domain is allowed without a decision.
        let main = handshake(at, Some(MAIN), None, &[]).await.unwrap();
        assert_eq!(main.dns_names(), vec![MAIN.to_string()]);
        while !s.resolver.domains().contains(&domain(MAIN)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(issuer.calls(), 2);
        drop(s.renewer);
    })
    .await;
}
