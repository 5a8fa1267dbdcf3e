//! The Renewer end to end against a real Pebble CA that really validates
//! HTTP-01: issue, store encrypted on the file store, reload, serve over a
//! real TLS handshake, renew when the clock enters the window, fail cleanly
//! for a refused name, and survive a CA that rejects half its nonces.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use certkeeper::cert::{fingerprint, IssuerKind};
use certkeeper::challenge::{Http01Server, Http01Solver};
use certkeeper::store::{CertStore, FileStore};
use certkeeper::{CertResolver, Clock, Config, Domain, Renewer, TestClock};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions};
use common::tls::{round_trip, verify_chain};
use common::{clock_at_now, domain, keyring, limited, CONTACT_EMAIL};
use rustls::RootCertStore;
use time::Duration;

const TEST_LIMIT: StdDuration = StdDuration::from_secs(240);
const KEY: &str = "renewer-pebble-test-key-0123456789";
const NINETY_DAYS: u64 = 90 * 86_400;

/// A Pebble, the HTTP-01 solver listening on its port, a store folder and a
/// test clock: what the servers of one test share.
struct Stage {
    pebble: Pebble,
    solver: Http01Solver,
    _listener: Http01Server,
    dir: tempfile::TempDir,
    clock: TestClock,
}

impl Stage {
    /// Starts Pebble with `options`; the clock stands at the current second.
    async fn start(options: PebbleOptions) -> Self {
        let pebble = Pebble::start(options).await;
        let solver = Http01Solver::new();
        let listener = serve_http01(&solver, &pebble).await;
        Self {
            pebble,
            solver,
            _listener: listener,
            dir: tempfile::tempdir().unwrap(),
            clock: clock_at_now(),
        }
    }

    /// One server's certkeeper over the shared folder, with its stored
    /// certificates loaded: a new one after a drop is a restart.
    async fn server(&self) -> Server {
        let store = Arc::new(FileStore::open(self.dir.path()).await.unwrap());
        let keyring = keyring(KEY);
        let issuer = pebble_issuer(
            &self.pebble,
            Arc::new(self.solver.clone()),
            store.clone(),
            keyring.clone(),
        )
        .request_timeout(StdDuration::from_secs(30))
        .order_timeout(StdDuration::from_secs(120))
        .build()
        .unwrap();
        let resolver = CertResolver::new();
        let renewer = Renewer::builder(store.clone(), keyring)
            .acme(Arc::new(issuer))
            .main_domain(Some(domain("www.certkeeper-test.com")))
            .clock(Arc::new(self.clock.clone()))
            .resolver(resolver.clone())
            .concurrency(4)
            .build();
        renewer.load().await.unwrap();
        Server {
            store,
            resolver,
            renewer,
        }
    }
}

/// One server's certkeeper: file store, keyring, solver, ACME issuer, renewer.
struct Server {
    store: Arc<FileStore>,
    resolver: CertResolver,
    renewer: Renewer,
}

/// A real handshake against a server that resolves through `resolver`;
/// returns the SHA-256 fingerprint of the leaf the server presented.
async fn handshake(resolver: &CertResolver, roots: RootCertStore, name: &str) -> String {
    round_trip(resolver.server_config(&[]).unwrap(), roots, name).await
}

/// Every byte of every file under `dir`.
fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn issues_stores_encrypted_reloads_serves_and_renews() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions {
            validity_seconds: Some(NINETY_DAYS),
            ..PebbleOptions::default()
        })
        .await;
        let clock = &stage.clock;
        let name = "www.certkeeper-test.com";
        let main = domain(name);
        let roots = stage.pebble.issuer_roots().await;

        // First run: a real ACME order validated over HTTP-01.
        let first = stage.server().await;
        first.renewer.add_domain(&main).await.unwrap();
        let report = first.renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued, vec![main.clone()], "{report:?}");
        let record = first.store.load(&main).await.unwrap().unwrap();
        let cert = record.certificate.clone().unwrap();
        assert_eq!(cert.issuer, IssuerKind::ACME);
        assert_eq!(record.attempts, 0);
        assert_eq!(record.issue_date, Some(clock.now()));
        // Ninety days of validity: renew thirty days before expiry.
        assert_eq!(record.renew_date, cert.not_after - Duration::days(30));
        verify_chain(&cert.chain_pem, roots.clone(), name);
        assert_eq!(
            handshake(&first.resolver, roots.clone(), name).await,
            cert.fingerprint
        );

        // Nothing in the store folder holds a private key in clear.
        let (_, key_pem) = first.renewer.certificate(&main).await.unwrap().unwrap();
        let key_pem = String::from_utf8(key_pem.to_vec()).unwrap();
        let key_body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(key_body.len() > 40);
        let files = all_files(stage.dir.path());
        assert!(files.len() >= 2, "{files:?}");
        for (path, bytes) in &files {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains("PRIVATE KEY"),
                "{} holds a PEM private key",
                path.display()
            );
            assert!(
                !text.contains(&key_body[..40]),
                "{} holds key material",
                path.display()
            );
            assert!(
                !text.contains("key_pkcs8"),
                "{} holds account credentials",
                path.display()
            );
        }
        assert_eq!(first.store.list_accounts().await.unwrap().len(), 1);
        drop(first);

        // A restart: a new store over the same folder serves what was stored.
        let second = stage.server().await;
        assert_eq!(second.resolver.domains(), vec![main.clone()]);
        assert_eq!(
            handshake(&second.resolver, roots.clone(), name).await,
            cert.fingerprint
        );
        // Not due yet: a cycle does nothing.
        assert!(second.renewer.run_cycle().await.unwrap().issued.is_empty());

        // The clock enters the renew window: the next cycle renews, and the
        // next handshake gets the new certificate without a restart.
        clock.set(record.renew_date);
        let report = second.renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued, vec![main.clone()], "{report:?}");
        let renewed = second.store.load(&main).await.unwrap().unwrap();
        let new_cert = renewed.certificate.clone().unwrap();
        assert_ne!(new_cert.fingerprint, cert.fingerprint);
        assert_eq!(renewed.issue_date, Some(record.renew_date));
        assert_eq!(renewed.log.len(), 2);
        assert_eq!(renewed.log[1].step, "renew");
        verify_chain(&new_cert.chain_pem, roots.clone(), name);
        assert_eq!(
            handshake(&second.resolver, roots, name).await,
            new_cert.fingerprint
        );
        // The stored account was reused, not a second one created.
        assert_eq!(second.store.list_accounts().await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_refused_name_fails_cleanly_and_the_cycle_goes_on() {
    limited(TEST_LIMIT, async {
        let blocked = "blocked.certkeeper-test.com";
        let stage = Stage::start(PebbleOptions {
            domain_blocklist: vec![blocked.to_string()],
            ..PebbleOptions::default()
        })
        .await;
        let s = stage.server().await;
        let good = domain("good.certkeeper-test.com");
        s.renewer.add_domain(&domain(blocked)).await.unwrap();
        s.renewer.add_domain(&good).await.unwrap();

        let report = s.renewer.run_cycle().await.unwrap();
        // The main domain is issued with them, without being added.
        let main = domain("www.certkeeper-test.com");
        assert_eq!(report.issued, vec![good, main], "{report:?}");
        assert_eq!(report.failed.len(), 1, "{report:?}");
        let reason = report.failed[0].error.to_string();
        assert!(
            reason.contains("rejectedIdentifier") || reason.contains("policy"),
            "the CA's reason is lost: {reason}"
        );
        let record = s.store.load(&domain(blocked)).await.unwrap().unwrap();
        assert_eq!(record.attempts, 1);
        assert!(record.certificate.is_none());
        // No certificate yet: tried again a day later.
        assert_eq!(record.renew_date, stage.clock.now() + Duration::days(1));
        let line = record.log_lines().pop().unwrap();
        assert!(line.contains("failed") && line.contains(blocked), "{line}");
    })
    .await;
}

#[tokio::test]
async fn survives_a_ca_that_rejects_half_its_nonces() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions {
            nonce_reject_percent: 50,
            ..PebbleOptions::default()
        })
        .await;
        let s = stage.server().await;
        let mut names: Vec<Domain> = (0..4)
            .map(|i| domain(&format!("n{i}.certkeeper-test.com")))
            .collect();
        for name in &names {
            s.renewer.add_domain(name).await.unwrap();
        }
        let report = s.renewer.run_cycle().await.unwrap();
        // The main domain is issued with them, without being added.
        names.push(domain("www.certkeeper-test.com"));
        assert_eq!(report.issued, names, "{report:?}");
    })
    .await;
}

#[tokio::test]
async fn the_embedded_stack_from_the_environment_does_manual_generation() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let address = format!("[::]:{}", pebble.http_port());
        let config = Config::from_vars([
            ("_APP_ENV", "production"),
            ("_APP_DOMAIN", "console.certkeeper-test.com"),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", CONTACT_EMAIL),
            ("_APP_OPENSSL_KEY_V1", KEY),
            ("_APP_ACME_DIRECTORY_URL", pebble.directory_url().as_str()),
            (
                "_APP_ACME_CA_ROOT",
                pebble.ca_root_pem_path().to_str().unwrap(),
            ),
            ("_APP_ACME_TIMEOUT", "30"),
            ("_APP_ACME_CHALLENGE_ADDRESS", address.as_str()),
            ("_APP_CERTIFICATES_PATH", dir.path().to_str().unwrap()),
        ])
        .unwrap();
        let embedded = certkeeper::Embedded::start(config).await.unwrap();
        assert!(embedded.challenge_server.is_some());

        // Manual generation for the main domain, like `ssl` without a domain.
        let record = embedded.renewer.issue_now(None).await.unwrap();
        assert_eq!(record.domain, domain("console.certkeeper-test.com"));
        assert!(
            record.log_lines()[0].contains("manual ok"),
            "{:?}",
            record.log_lines()
        );
        let roots = pebble.issuer_roots().await;
        let name = "console.certkeeper-test.com";
        verify_chain(
            &record.certificate.as_ref().unwrap().chain_pem,
            roots.clone(),
            name,
        );
        assert_eq!(
            handshake(&embedded.resolver, roots, name).await,
            record.certificate.unwrap().fingerprint
        );
        // A name the operator never added is refused before any order.
        let err = embedded
            .renewer
            .issue_now(Some(&domain("stranger.certkeeper-test.com")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, certkeeper::Error::DomainNotAllowed { .. }),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_embedded_stack_issues_the_configured_main_domain_by_itself() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let address = format!("[::]:{}", pebble.http_port());
        let name = "console.certkeeper-test.com";
        let config = Config::from_vars([
            ("_APP_ENV", "production"),
            ("_APP_DOMAIN", name),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", CONTACT_EMAIL),
            ("_APP_OPENSSL_KEY_V1", KEY),
            ("_APP_ACME_DIRECTORY_URL", pebble.directory_url().as_str()),
            (
                "_APP_ACME_CA_ROOT",
                pebble.ca_root_pem_path().to_str().unwrap(),
            ),
            ("_APP_ACME_TIMEOUT", "30"),
            ("_APP_ACME_CHALLENGE_ADDRESS", address.as_str()),
            ("_APP_CERTIFICATES_PATH", dir.path().to_str().unwrap()),
        ])
        .unwrap();
        let embedded = certkeeper::Embedded::start(config).await.unwrap();
        let main = domain(name);
        // Registered at start-up, due now, without add_domain or issue_now.
        let record = embedded.store.load(&main).await.unwrap();
        assert!(
            record.is_some(),
            "the configured main domain has no record after start"
        );

        // The background loop's first cycle issues it; nothing else is called.
        let maintenance = embedded.spawn_maintenance();
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(120);
        while !embedded.resolver.serves(&main) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the main domain was never issued by the maintenance loop: {:?}",
                embedded
                    .store
                    .load(&main)
                    .await
                    .unwrap()
                    .map(|r| r.log_lines())
            );
            assert!(!maintenance.is_finished(), "the maintenance loop ended");
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
        maintenance.abort();

        let record = embedded.store.load(&main).await.unwrap().unwrap();
        let cert = record.certificate.expect("a stored certificate");
        assert_eq!(cert.issuer, IssuerKind::ACME);
        let roots = pebble.issuer_roots().await;
        verify_chain(&cert.chain_pem, roots.clone(), name);
        assert_eq!(
            handshake(&embedded.resolver, roots.clone(), name).await,
            cert.fingerprint
        );
        // The main domain is the fallback for a handshake without SNI.
        let fallback = embedded.resolver.lookup(None).expect("a fallback");
        assert_eq!(fingerprint(&fallback.cert[0]), cert.fingerprint);
    })
    .await;
}

/// A renewer over a store of its own for `stage`'s Pebble, whose calls to
/// the CA time out after `request_timeout`.
async fn quick_server(stage: &Stage, request_timeout: StdDuration) -> (Arc<FileStore>, Renewer) {
    let dir = stage.dir.path().join("quick");
    let store = Arc::new(FileStore::open(&dir).await.unwrap());
    let keyring = keyring(KEY);
    let issuer = pebble_issuer(
        &stage.pebble,
        Arc::new(stage.solver.clone()),
        store.clone(),
        keyring.clone(),
    )
    .request_timeout(request_timeout)
    .order_timeout(StdDuration::from_secs(60))
    .build()
    .unwrap();
    let renewer = Renewer::builder(store.clone(), keyring)
        .acme(Arc::new(issuer))
        .clock(Arc::new(stage.clock.clone()))
        .concurrency(2)
        .build();
    (store, renewer)
}

/// How many stored records of `store` hold a certificate.
async fn issued_count(store: &FileStore) -> usize {
    let mut count = 0;
    for name in store.list().await.unwrap() {
        if store
            .load(&name)
            .await
            .unwrap()
            .unwrap()
            .certificate
            .is_some()
        {
            count += 1;
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_goes_silent_mid_cycle_costs_no_attempt_and_the_next_cycle_issues_everything() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions::default()).await;
        let request_timeout = StdDuration::from_secs(3);
        let (store, renewer) = quick_server(&stage, request_timeout).await;
        let names: Vec<Domain> = (0..12)
            .map(|i| domain(&format!("silent{i}.certkeeper-test.com")))
            .collect();
        for name in &names {
            renewer.add_domain(name).await.unwrap();
        }
        let cycle = tokio::spawn({
            let renewer = renewer.clone();
            async move { renewer.run_cycle().await }
        });
        while issued_count(&store).await < 2 {
            assert!(
                !cycle.is_finished(),
                "the cycle ended before the CA went silent"
            );
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        // The CA accepts connections and never answers.
        stage.pebble.signal("STOP");
        let silent_since = std::time::Instant::now();
        let report = cycle.await.unwrap().unwrap();
        let took = silent_since.elapsed();
        assert_eq!(
            report.stopped,
            Some(certkeeper::renewer::SkipReason::CaUnavailable),
            "{report}"
        );
        assert!(report.failed.is_empty(), "{report:?}");
        // In-flight calls end at their request timeout; nothing is ordered
        // after the CA is found down. Generous bound for a loaded machine.
        assert!(
            took < request_timeout * 3 + StdDuration::from_secs(5),
            "the cycle took {took:?} after the CA went silent"
        );
        for name in &names {
            let record = store.load(name).await.unwrap().unwrap();
            assert_eq!(
                record.attempts, 0,
                "{name}: the CA's silence is not the domain's fault"
            );
        }
        let issued_before = issued_count(&store).await;
        assert!(issued_before < names.len());

        // The CA is back: the next cycle issues everything left.
        stage.pebble.signal("CONT");
        let report = renewer.run_cycle().await.unwrap();
        assert!(
            report.failed.is_empty() && report.stopped.is_none(),
            "{report}"
        );
        assert_eq!(issued_count(&store).await, names.len(), "{report}");
    })
    .await;
}

#[tokio::test]
async fn a_dead_ca_costs_no_attempts() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions::default()).await;
        let (store, renewer) = quick_server(&stage, StdDuration::from_secs(3)).await;
        let names: Vec<Domain> = (0..6)
            .map(|i| domain(&format!("dead{i}.certkeeper-test.com")))
            .collect();
        for name in &names {
            renewer.add_domain(name).await.unwrap();
        }
        // Connections are refused from now on.
        stage.pebble.signal("KILL");
        for _ in 0..5 {
            let report = renewer.run_cycle().await.unwrap();
            assert_eq!(
                report.stopped,
                Some(certkeeper::renewer::SkipReason::CaUnavailable),
                "{report}"
            );
            // Three failures in a row stop the ordering; the one other
            // order in flight (concurrency 2) may fail too.
            assert!(
                (3..=4).contains(&report.deferred.len()),
                "three in a row, then no more orders: {report}"
            );
            stage.clock.advance(Duration::days(1));
        }
        // Five days of outage give up nothing.
        for name in &names {
            let record = store.load(name).await.unwrap().unwrap();
            assert_eq!(record.attempts, 0, "{name}");
        }
        assert_eq!(
            store.due(stage.clock.now(), 5, 200).await.unwrap().len(),
            names.len()
        );
    })
    .await;
}
