//! Short-lived certificates end to end, for minutes on the system clock: a
//! Pebble 2.10 whose profile gives certificates a life of ninety seconds
//! and rejects a share of nonces, behind a client that refuses a share of
//! new orders (503, `serverInternal`, `Retry-After: 1`), and a `Renewer`
//! running as a server runs it, while real TLS handshakes ask for each name
//! four times a second. No handshake gets a certificate outside its
//! validity, every name is renewed over and over, each renewal comes at the
//! certificate's renew date (or soon after a refusal) and well before
//! expiry, and the figures are printed.
//!
//! The client hides Pebble's renewal information (ARI) from its directory,
//! so certkeeper renews by its own rule (`RenewalPolicy::renew_date`, a
//! third of the life ahead). Pebble 2.10's ARI is not made for lives of
//! minutes: its window is two days wide around two thirds of the life, so
//! for a certificate of ninety seconds it began a day before the
//! certificate was issued and RFC 9773 says to renew at once; and it
//! refuses, with `serverInternal`, every renewal order whose `replaces`
//! names a certificate whose serial number is encoded with a leading zero
//! byte (it looks the serial up with that byte), so such a certificate is
//! never renewed.
//!
//! `CERTKEEPER_SOAK_SECONDS` sets how long the handshakes go on (default
//! 180), `CERTKEEPER_SOAK_SEED` which orders are refused.

use crate::common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use bytes::Bytes;
use certkeeper::challenge::Http01Solver;
use certkeeper::issuer::instant_acme::{self, BodyWrapper, BytesResponse, HttpClient};
use certkeeper::issuer::{AcmeIssuer, CaBudgets};
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{CertResolver, Renewer};
use common::acme::{forward, serve_http01};
use common::pebble::{Pebble, PebbleOptions, PebbleVersion};
use common::tls::{handshake, TlsListener};
use common::{domain, keyring, limited, CONTACT_EMAIL, TEST_KEY};
use http_body_util::BodyExt;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, StatusCode};
use time::{Duration, OffsetDateTime};

/// The life of the profile's certificates, in seconds.
const LIFETIME: u64 = 90;
const PROFILE: &str = "shortlived";
/// Percent of new orders the client refuses once the soak begins.
const REFUSED_PERCENT: u64 = 20;
/// Percent of nonces Pebble rejects.
const NONCE_REJECT_PERCENT: u8 = 15;
/// How often each name is asked for.
const PROBE_EVERY: StdDuration = StdDuration::from_millis(250);
/// The renewer's maintenance interval and refresh tick.
const INTERVAL: StdDuration = StdDuration::from_secs(60);
const REFRESH: StdDuration = StdDuration::from_secs(1);
const DEFAULT_SOAK_SECONDS: u64 = 180;
/// Refuses three orders in a row early on, among others.
const DEFAULT_SEED: u64 = 3;
/// How long the first certificates of every name may take.
const FIRST_ISSUANCE: StdDuration = StdDuration::from_secs(150);
/// Renew dates are whole seconds and a handshake that began just before
/// the new certificate was handed to the resolver may still get it.
const TOLERANCE: Duration = Duration::seconds(1);
/// The latest point of its life a certificate may be replaced at: a fifth
/// of the life left (renewed at 55%, a refused order is tried again
/// seconds later; the next cycle can be a minute away).
const LATEST_RENEWAL: f64 = 0.8;
const NEW_ORDER: &str = "/order-plz";
const NAMES: [&str; 5] = [
    "www.soak.certkeeper-test.com",
    "a.soak.certkeeper-test.com",
    "b.soak.certkeeper-test.com",
    "c.soak.certkeeper-test.com",
    "d.soak.certkeeper-test.com",
];

/// What the client saw and did, counted from the start of the soak.
#[derive(Default)]
struct CaCounts {
    /// Whether new orders are refused at all (from the start of the soak).
    refusing: bool,
    /// xorshift64 state: which orders are refused.
    rng: u64,
    orders: u64,
    refused: u64,
    bad_nonces: u64,
    /// Directories served without their `renewalInfo`.
    ari_hidden: u64,
}

impl CaCounts {
    fn refuse_next(&mut self) -> bool {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x % 100 < REFUSED_PERCENT
    }
}

/// certkeeper's own client to Pebble, refusing a share of new orders
/// without sending them, and hiding the CA's renewal information.
#[derive(Clone)]
struct FlakyCa {
    inner: Arc<dyn HttpClient>,
    counts: Arc<Mutex<CaCounts>>,
}

impl FlakyCa {
    fn new(pebble: &Pebble, seed: u64) -> Self {
        Self {
            inner: Arc::from(
                AcmeIssuer::default_http_client(Some(pebble.ca_root_pem_path())).unwrap(),
            ),
            counts: Arc::new(Mutex::new(CaCounts {
                rng: seed.max(1),
                ..CaCounts::default()
            })),
        }
    }

    /// From now on, refuse a share of new orders, counting from zero.
    fn start_refusing(&self) {
        let mut counts = self.counts.lock().unwrap();
        counts.refusing = true;
        counts.orders = 0;
        counts.refused = 0;
        counts.bad_nonces = 0;
    }
}

/// What a CA under load answers a request it does not take.
fn service_unavailable() -> BytesResponse {
    let (parts, ()) = hyper::Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(CONTENT_TYPE, "application/problem+json")
        .header(RETRY_AFTER, "1")
        .body(())
        .unwrap()
        .into_parts();
    let problem = serde_json::json!({
        "type": "urn:ietf:params:acme:error:serverInternal",
        "detail": "the CA is busy; try again",
        "status": 503,
    });
    BytesResponse {
        parts,
        body: Box::new(Bytes::from(serde_json::to_vec(&problem).unwrap())),
    }
}

/// The leaf's serial and validity.
fn leaf_facts(der: &[u8]) -> (Vec<u8>, OffsetDateTime, OffsetDateTime) {
    let (_, leaf) = x509_parser::parse_x509_certificate(der).expect("a parsable leaf");
    let validity = leaf.validity();
    let at = |t: x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap()
    };
    (
        leaf.raw_serial().to_vec(),
        at(validity.not_before),
        at(validity.not_after),
    )
}

impl HttpClient for FlakyCa {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_owned();
            let method = parts.method.clone();
            if method == Method::POST && path == NEW_ORDER {
                let mut counts = this.counts.lock().unwrap();
                counts.orders += 1;
                if counts.refusing && counts.refuse_next() {
                    counts.refused += 1;
                    return Ok(service_unavailable());
                }
            }
            let (mut parts, body) = forward(this.inner.as_ref(), parts, body).await?;
            let mut counts = this.counts.lock().unwrap();
            if parts.status == StatusCode::BAD_REQUEST
                && String::from_utf8_lossy(&body).contains("urn:ietf:params:acme:error:badNonce")
            {
                counts.bad_nonces += 1;
            }
            // The directory, without `renewalInfo`: no ARI.
            if let Ok(serde_json::Value::Object(mut directory)) =
                serde_json::from_slice::<serde_json::Value>(&body)
            {
                if directory.contains_key("newOrder") && directory.remove("renewalInfo").is_some() {
                    counts.ari_hidden += 1;
                    parts.headers.remove(CONTENT_LENGTH);
                    return Ok(BytesResponse {
                        parts,
                        body: Box::new(Bytes::from(serde_json::to_vec(&directory).unwrap())),
                    });
                }
            }
            Ok(BytesResponse {
                parts,
                body: Box::new(body),
            })
        })
    }
}

/// One certificate as the handshakes for one name saw it.
#[derive(Clone, Debug)]
struct Served {
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// When a handshake first got it (when that handshake began).
    first: OffsetDateTime,
    /// The renew date certkeeper stored with it, read when first served.
    renew_date: Option<OffsetDateTime>,
}

/// What the handshakes saw, for every name.
#[derive(Default)]
struct Seen {
    served: HashMap<String, Vec<Served>>,
    /// Each certificate served outside its validity, told.
    lapses: Vec<String>,
    /// A handshake that failed, or got a certificate for another name or
    /// one replaced before: name, when, what.
    failures: Vec<(String, OffsetDateTime, String)>,
    handshakes: u64,
}

/// Asks for `name` every [`PROBE_EVERY`] until dropped.
async fn probe(
    address: std::net::SocketAddr,
    name: &'static str,
    store: Arc<MemoryStore>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let began = OffsetDateTime::now_utc();
        let result = handshake(address, Some(name), None, &[]).await;
        let ended = OffsetDateTime::now_utc();
        let shook = match result {
            Ok(shook) => shook,
            Err(e) => {
                seen.lock().unwrap().failures.push((name.into(), began, e));
                continue;
            }
        };
        let (serial, not_before, not_after) = leaf_facts(&shook.leaf);
        let is_new = {
            let mut seen = seen.lock().unwrap();
            seen.handshakes += 1;
            // Validity is inclusive of not_after (RFC 5280).
            if began > not_after || ended < not_before {
                let serial = hex(&serial);
                seen.lapses.push(format!(
                    "{name}: {serial}, valid from {not_before} to {not_after}, served at {began}"
                ));
            }
            if !shook.dns_names().iter().any(|n| n == name) {
                let names = shook.dns_names().join(", ");
                seen.failures
                    .push((name.into(), began, format!("a certificate for {names}")));
            }
            let certs = seen.served.entry(name.into()).or_default();
            match certs.iter().position(|c| c.serial == serial) {
                Some(i) if i + 1 == certs.len() => false,
                Some(_) => {
                    let old = hex(&serial);
                    seen.failures
                        .push((name.into(), began, format!("replaced certificate {old}")));
                    false
                }
                None => {
                    certs.push(Served {
                        serial: serial.clone(),
                        not_before,
                        not_after,
                        first: began,
                        renew_date: None,
                    });
                    true
                }
            }
        };
        if is_new {
            // The renew date stored with it.
            let record = store.load(&domain(name)).await.unwrap();
            let renew_date = record.filter(|r| {
                r.certificate
                    .as_ref()
                    .is_some_and(|c| c.fingerprint == shook.fingerprint)
            });
            let renew_date = renew_date.map(|r| r.renew_date);
            let mut seen = seen.lock().unwrap();
            if let Some(current) = seen
                .served
                .get_mut(name)
                .and_then(|certs| certs.iter_mut().find(|c| c.serial == serial))
            {
                current.renew_date = renew_date;
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}")),
        Err(_) => default,
    }
}

/// One renewal: the certificate replaced, and when its successor was first
/// served.
struct Renewal {
    name: String,
    point: f64,
    at: OffsetDateTime,
    old: Served,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificates_renew_over_and_over_without_lapse_while_the_ca_refuses_orders_and_nonces(
) {
    let soak = StdDuration::from_secs(env_u64("CERTKEEPER_SOAK_SECONDS", DEFAULT_SOAK_SECONDS));
    let seed = env_u64("CERTKEEPER_SOAK_SEED", DEFAULT_SEED);
    let limit = FIRST_ISSUANCE + soak + StdDuration::from_secs(120);
    limited(limit, async {
        let wall = Instant::now();
        let pebble = Pebble::start(PebbleOptions {
            version: PebbleVersion::V2_10,
            profiles: vec![(PROFILE.into(), LIFETIME)],
            nonce_reject_percent: NONCE_REJECT_PERCENT,
            ..PebbleOptions::default()
        })
        .await;
        let solver = Http01Solver::new();
        let _http01 = serve_http01(&solver, &pebble).await;
        let store = Arc::new(MemoryStore::new());
        let cipher = keyring(TEST_KEY);
        let ca = FlakyCa::new(&pebble, seed);
        let issuer = AcmeIssuer::builder(pebble.directory_url())
            .contact_email(CONTACT_EMAIL)
            .solver(Arc::new(solver.clone()))
            .store(store.clone())
            .cipher(cipher.clone())
            .http_client(ca.clone())
            .profile(PROFILE)
            // Certificates of minutes renew many times a week: Let's
            // Encrypt's duplicate budget (5 per 7 days) is for 90-day ones.
            .budgets(CaBudgets {
                duplicate_certificates: u32::MAX,
                ..CaBudgets::default()
            })
            .request_timeout(StdDuration::from_secs(10))
            .order_timeout(StdDuration::from_secs(30))
            .build()
            .unwrap();
        let resolver = CertResolver::new();
        let renewer = Renewer::builder(store.clone(), cipher)
            .acme(Arc::new(issuer))
            .main_domain(Some(domain(NAMES[0])))
            .resolver(resolver.clone())
            .refresh_interval(REFRESH)
            .issue_timeout(StdDuration::from_secs(40))
            .concurrency(4)
            .build();
        renewer.load().await.unwrap();
        for name in &NAMES[1..] {
            renewer.add_domain(&domain(name)).await.unwrap();
        }
        let running = tokio::spawn({
            let renewer = renewer.clone();
            async move { renewer.run(INTERVAL).await }
        });
        let listener =
            TlsListener::start(resolver.server_config(&[]).unwrap(), Some(resolver.clone())).await;

        // Every name gets its first certificate while the CA takes every order.
        let deadline = Instant::now() + FIRST_ISSUANCE;
        loop {
            let mut issued = 0;
            for name in NAMES {
                let record = store.load(&domain(name)).await.unwrap();
                issued += usize::from(record.is_some_and(|r| r.certificate.is_some()));
            }
            if issued == NAMES.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{issued} of {} names got a first certificate within {FIRST_ISSUANCE:?}",
                NAMES.len()
            );
            tokio::time::sleep(StdDuration::from_millis(200)).await;
        }
        let first_issued = wall.elapsed();

        // The soak: the CA refuses a share of orders; handshakes go on.
        ca.start_refusing();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let probes: Vec<_> = NAMES
            .iter()
            .map(|name| tokio::spawn(probe(listener.address, name, store.clone(), seen.clone())))
            .collect();
        tokio::time::sleep(soak).await;
        for probe in &probes {
            probe.abort();
        }
        assert!(!running.is_finished(), "the renewer's run loop ended");
        running.abort();

        let seen = std::mem::take(&mut *seen.lock().unwrap());
        let (orders, refused, bad_nonces, ari_hidden) = {
            let counts = ca.counts.lock().unwrap();
            (
                counts.orders,
                counts.refused,
                counts.bad_nonces,
                counts.ari_hidden,
            )
        };
        let policy = renewer.renewal_policy();
        let mut renewals = Vec::new();
        for name in NAMES {
            let certs = seen.served.get(name).cloned().unwrap_or_default();
            for pair in certs.windows(2) {
                let (old, new) = (&pair[0], &pair[1]);
                let life = (old.not_after - old.not_before).as_seconds_f64();
                renewals.push(Renewal {
                    name: name.into(),
                    point: (new.first - old.not_before).as_seconds_f64() / life,
                    at: new.first,
                    old: old.clone(),
                });
            }
        }
        let mut points: Vec<f64> = renewals.iter().map(|r| r.point).collect();
        points.sort_by(f64::total_cmp);
        let percent = |p: Option<&f64>| p.map_or("-".into(), |p| format!("{:.1}%", p * 100.0));
        let median = points.get(points.len() / 2);
        let longest_wait = renewals
            .iter()
            .filter_map(|r| Some((r.at - r.old.renew_date?, &r.name)))
            .max_by_key(|(wait, _)| *wait);
        let per_name: Vec<String> = NAMES
            .iter()
            .map(|n| {
                let certs = seen.served.get(*n).map_or(0, Vec::len);
                certs.saturating_sub(1).to_string()
            })
            .collect();
        eprintln!(
            "soak: {} s of handshakes ({:.1} s to the first certificates, {:.0} s in all), \
             certificates of {LIFETIME} s, maintenance interval {} s, refresh {} s\n\
             soak: renewals {} (per name: {}), lapses {}, handshakes {}, failed handshakes {}\n\
             soak: orders sent {orders}, refused {refused}, nonces rejected {bad_nonces}\n\
             soak: point of life at renewal: median {}, min {}, max {}\n\
             soak: longest wait from the renew date to the renewal: {}",
            soak.as_secs(),
            first_issued.as_secs_f64(),
            wall.elapsed().as_secs_f64(),
            INTERVAL.as_secs(),
            REFRESH.as_secs(),
            renewals.len(),
            per_name.join(" "),
            seen.lapses.len(),
            seen.handshakes,
            seen.failures.len(),
            percent(median),
            percent(points.first()),
            percent(points.last()),
            longest_wait.map_or("-".into(), |(wait, name)| format!(
                "{:.1} s ({name})",
                wait.as_seconds_f64()
            )),
        );

        assert!(
            seen.lapses.is_empty(),
            "certificates served outside their validity: {:?}",
            seen.lapses
        );
        assert!(
            seen.failures.is_empty(),
            "{} handshakes failed or got the wrong certificate, the first: {:?}",
            seen.failures.len(),
            &seen.failures[..seen.failures.len().min(5)]
        );
        assert!(ari_hidden > 0, "the CA's directory was never read");
        // Faults the soak is about happened.
        assert!(
            refused > 0 && bad_nonces > 0,
            "{refused} refused, {bad_nonces} bad nonces"
        );
        // Each certificate replaced by `LATEST_RENEWAL` of its life at
        // the latest: that many renewals at the least.
        let expected = (soak.as_secs_f64() / (LIFETIME as f64 * LATEST_RENEWAL)).max(1.0) as usize;
        for name in NAMES {
            let renewed = seen
                .served
                .get(name)
                .map_or(0, |c| c.len().saturating_sub(1));
            assert!(
                renewed >= expected,
                "{name} was renewed {renewed} times in {soak:?}, expected {expected} or more"
            );
        }
        for r in &renewals {
            let old = &r.old;
            let renew_date = old.renew_date.unwrap_or_else(|| {
                panic!("{}: no renew date read for {}", r.name, hex(&old.serial))
            });
            // The rule's date: a third of the life (rounded up to whole
            // minutes) ahead of expiry.
            assert_eq!(
                renew_date,
                policy.renew_date(old.not_before, old.not_after),
                "{}: {}",
                r.name,
                hex(&old.serial)
            );
            assert!(
                r.at >= renew_date - TOLERANCE,
                "{}: renewed at {} before its renew date {renew_date}",
                r.name,
                r.at
            );
            // Well before expiry: a refused order is tried again within
            // seconds, not at the next cycle.
            assert!(
                r.point <= LATEST_RENEWAL,
                "{}: {} renewed at {:.1}% of its life ({}, expiring at {})",
                r.name,
                hex(&old.serial),
                r.point * 100.0,
                r.at,
                old.not_after
            );
        }
        // Most renewals came at their renew date, within a few seconds.
        let median = median.copied().unwrap_or(1.0);
        let due = renewals.first().map_or(0.0, |r| {
            let old = &r.old;
            let life = (old.not_after - old.not_before).as_seconds_f64();
            (policy.renew_date(old.not_before, old.not_after) - old.not_before).as_seconds_f64()
                / life
        });
        assert!(
            (due - 0.02..due + 0.08).contains(&median),
            "median point of life at renewal {median}, renew date at {due}"
        );
    })
    .await;
}
