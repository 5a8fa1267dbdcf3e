//! The ACME issuer against a real Pebble CA that really validates HTTP-01
//! through `Http01Solver::serve`.

use crate::common;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use certkeeper::cert::IssuerKind;
use certkeeper::challenge::{
    Challenge, ChallengeKind, ChallengeSolver, Http01Server, Http01Solver,
};
use certkeeper::cipher::Keyring;
use certkeeper::cipher::SecretCipher;
use certkeeper::issuer::{AcmeIssuer, Issuer, IssuerExt};
use certkeeper::store::{AccountRecord, CertRecord, CertStore, FileStore, MemoryStore};
use certkeeper::vault::account_aad;
use certkeeper::{Domain, Error};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions};
use common::tls::{round_trip, serving, verify_chain};
use common::{domain, keyring, limited, CONTACT_EMAIL, OTHER_TEST_KEY, TEST_KEY};

/// A guard against a hung test: far above what any case here needs.
const TEST_LIMIT: Duration = Duration::from_secs(180);

/// The parts of one issuer under test.
struct Setup {
    solver: Http01Solver,
    store: Arc<MemoryStore>,
    cipher: Arc<Keyring>,
}

impl Setup {
    fn new() -> Self {
        Self {
            solver: Http01Solver::new(),
            store: Arc::new(MemoryStore::new()),
            cipher: keyring(TEST_KEY),
        }
    }

    /// An issuer for `pebble` over this setup's solver, store and cipher.
    fn issuer(&self, pebble: &Pebble) -> AcmeIssuer {
        pebble_issuer(
            pebble,
            Arc::new(self.solver.clone()),
            self.store.clone(),
            self.cipher.clone(),
        )
        .request_timeout(Duration::from_secs(30))
        .order_timeout(Duration::from_secs(120))
        .build()
        .expect("valid issuer settings")
    }

    /// The ids of the stored accounts.
    async fn accounts(&self) -> Vec<String> {
        self.store.list_accounts().await.unwrap()
    }

    /// The stored account `id`, which must exist.
    async fn account(&self, id: &str) -> AccountRecord {
        self.store
            .load_account(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no stored account {id}"))
    }
}

/// Pebble started with `options`, and a setup whose solver listens on its
/// HTTP-01 port until the returned server is dropped.
async fn start(options: PebbleOptions) -> (Pebble, Setup, Http01Server) {
    let pebble = Pebble::start(options).await;
    let setup = Setup::new();
    let listener = serve_http01(&setup.solver, &pebble).await;
    (pebble, setup, listener)
}

/// How many accounts Pebble was asked to create.
fn accounts_created(pebble: &Pebble) -> usize {
    pebble.log("pebble").matches("POST /sign-me-up").count()
}

/// The domain, step and message of an [`Error::Acme`]; any other error
/// fails the test.
fn acme_failure(err: &Error) -> (Option<&str>, &'static str, &str) {
    match err {
        Error::Acme {
            domain,
            step,
            message,
            ..
        } => (domain.as_ref().map(Domain::as_str), step, message),
        other => panic!("expected Error::Acme, got {other:?}"),
    }
}

#[tokio::test]
async fn issues_a_certificate_that_verifies_and_serves_tls() {
    limited(TEST_LIMIT, async {
        let (pebble, setup, _listener) = start(PebbleOptions::default()).await;
        let issuer = setup.issuer(&pebble);
        assert_eq!(issuer.kind(), IssuerKind::ACME);

        let name = "www.certkeeper-test.com";
        let cert = issuer.issue_for(&domain(name)).await.unwrap();
        assert!(cert.not_after > cert.not_before);
        assert!(cert.not_after > time::OffsetDateTime::now_utc());
        assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        // The challenge was cleaned up once validated.
        assert_eq!(setup.solver.pending(), 0);

        let roots = pebble.issuer_roots().await;
        verify_chain(&cert.chain_pem, roots.clone(), name);
        // A real handshake presents the issued leaf and carries data.
        assert_eq!(
            round_trip(serving(&cert), roots, name).await,
            cert.fingerprint
        );
    })
    .await;
}

#[tokio::test]
async fn the_account_is_stored_sealed_once_and_reused() {
    limited(TEST_LIMIT, async {
        let (pebble, setup, _listener) = start(PebbleOptions::default()).await;
        let issuer = Arc::new(setup.issuer(&pebble));
        let id = issuer.account_id().to_owned();
        assert!(setup.store.load_account(&id).await.unwrap().is_none());

        // Concurrent first issues create one account between them.
        let mut tasks = Vec::new();
        for i in 0..4 {
            let issuer = issuer.clone();
            tasks.push(tokio::spawn(async move {
                issuer
                    .issue_for(&domain(&format!("app{i}.certkeeper-test.com")))
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(setup.accounts().await, vec![id.clone()]);
        let record = setup.account(&id).await;
        assert_eq!(record.version, 1);

        // Sealed: the stored bytes hold no credentials in clear, and they
        // open only under this account id.
        let bytes = record.sealed_credentials.as_bytes();
        assert!(!bytes.windows(9).any(|w| w == b"key_pkcs8"));
        let opened = setup
            .cipher
            .open(&record.sealed_credentials, &account_aad(&id))
            .unwrap();
        let credentials: serde_json::Value = serde_json::from_slice(&opened).unwrap();
        let account_key = credentials["key_pkcs8"].as_str().unwrap();
        assert!(!format!("{issuer:?}").contains(account_key));
        assert_eq!(credentials["directory"], pebble.directory_url().as_str());
        assert!(matches!(
            setup
                .cipher
                .open(&record.sealed_credentials, &account_aad("acme-other")),
            Err(Error::Decrypt)
        ));

        // A new issuer over the same store (a restart) restores the account
        // instead of creating another.
        let restarted = setup.issuer(&pebble);
        assert_eq!(restarted.account_id(), id);
        restarted
            .issue_for(&domain("www.certkeeper-test.com"))
            .await
            .unwrap();
        assert_eq!(setup.accounts().await, vec![id.clone()]);
        assert_eq!(setup.account(&id).await, record);
    })
    .await;
}

#[tokio::test]
async fn the_account_survives_a_restart_on_the_file_store() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let solver = Http01Solver::new();
        let _listener = serve_http01(&solver, &pebble).await;
        let folder = tempfile::tempdir().unwrap();
        let issuer_on = |store: FileStore| {
            pebble_issuer(
                &pebble,
                Arc::new(solver.clone()),
                Arc::new(store),
                keyring(TEST_KEY),
            )
            .build()
            .unwrap()
        };

        let first = issuer_on(FileStore::open(folder.path()).await.unwrap());
        first
            .issue_for(&domain("www.certkeeper-test.com"))
            .await
            .unwrap();
        let id = first.account_id().to_owned();
        drop(first);

        // On disk: one account file, sealed (no credential field in clear).
        let files: Vec<_> = std::fs::read_dir(folder.path().join("accounts"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let on_disk = std::fs::read_to_string(&files[0]).unwrap();
        assert!(on_disk.contains(&id));
        assert!(!on_disk.contains("key_pkcs8"), "{on_disk}");

        // A new process opens the folder and signs with the same account.
        let store = FileStore::open(folder.path()).await.unwrap();
        let before = store.load_account(&id).await.unwrap().unwrap();
        let second = issuer_on(store);
        second
            .issue_for(&domain("api.certkeeper-test.com"))
            .await
            .unwrap();
        drop(second);
        let store = FileStore::open(folder.path()).await.unwrap();
        assert_eq!(store.list_accounts().await.unwrap(), vec![id.clone()]);
        assert_eq!(store.load_account(&id).await.unwrap().unwrap(), before);
        // Pebble knows a single account: the second issuer created none.
        assert_eq!(accounts_created(&pebble), 1);
    })
    .await;
}

#[tokio::test]
async fn two_instances_sharing_a_store_use_one_account() {
    limited(TEST_LIMIT, async {
        let (pebble, setup, _listener) = start(PebbleOptions::default()).await;
        // Two issuers (two server instances) over one shared store, racing
        // to create the account.
        let (a, b) = (setup.issuer(&pebble), setup.issuer(&pebble));
        let (name_a, name_b) = (
            domain("a.certkeeper-test.com"),
            domain("b.certkeeper-test.com"),
        );
        let (first, second) = tokio::join!(a.issue_for(&name_a), b.issue_for(&name_b));
        first.unwrap();
        second.unwrap();
        let id = a.account_id().to_owned();
        assert_eq!(setup.accounts().await, vec![id.clone()]);
        assert_eq!(setup.account(&id).await.version, 1);
    })
    .await;
}

/// A shared store seen by an instance that looked just before another one
/// stored the account: its first `load_account` finds nothing.
#[derive(Debug)]
struct LateLooker {
    shared: Arc<MemoryStore>,
    looked: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl CertStore for LateLooker {
    async fn load(&self, d: &Domain) -> certkeeper::Result<Option<CertRecord>> {
        self.shared.load(d).await
    }
    async fn save(&self, record: &CertRecord) -> certkeeper::Result<u64> {
        self.shared.save(record).await
    }
    async fn delete(&self, d: &Domain) -> certkeeper::Result<bool> {
        self.shared.delete(d).await
    }
    async fn list(&self) -> certkeeper::Result<Vec<Domain>> {
        self.shared.list().await
    }
    async fn due(
        &self,
        now: time::OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> certkeeper::Result<Vec<certkeeper::store::DueEntry>> {
        self.shared.due(now, max_attempts, limit).await
    }
    async fn load_account(&self, id: &str) -> certkeeper::Result<Option<AccountRecord>> {
        if !self.looked.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        self.shared.load_account(id).await
    }
    async fn save_account(&self, record: &AccountRecord) -> certkeeper::Result<u64> {
        self.shared.save_account(record).await
    }
    async fn list_accounts(&self) -> certkeeper::Result<Vec<String>> {
        self.shared.list_accounts().await
    }
    async fn get_meta(&self, key: &str) -> certkeeper::Result<Option<String>> {
        self.shared.get_meta(key).await
    }
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> certkeeper::Result<String> {
        self.shared.put_meta_if_absent(key, value).await
    }
    async fn at_attempt_limit(
        &self,
        max_attempts: u32,
        limit: usize,
    ) -> certkeeper::Result<certkeeper::store::PassedOver> {
        self.shared.at_attempt_limit(max_attempts, limit).await
    }
    async fn delete_account(&self, id: &str) -> certkeeper::Result<bool> {
        self.shared.delete_account(id).await
    }
    async fn set_meta(&self, key: &str, value: &str) -> certkeeper::Result<()> {
        self.shared.set_meta(key, value).await
    }
    async fn delete_meta(&self, key: &str) -> certkeeper::Result<bool> {
        self.shared.delete_meta(key).await
    }
    fn cluster(&self) -> Option<&dyn certkeeper::store::ClusterStore> {
        self.shared.cluster()
    }
}

#[tokio::test]
async fn an_instance_that_loses_the_account_race_uses_the_stored_one() {
    limited(TEST_LIMIT, async {
        let (pebble, setup, _listener) = start(PebbleOptions::default()).await;
        let first = setup.issuer(&pebble);
        first
            .issue_for(&domain("a.certkeeper-test.com"))
            .await
            .unwrap();
        let stored = setup.account(first.account_id()).await;

        let late_looker = LateLooker {
            shared: setup.store.clone(),
            looked: Default::default(),
        };
        let late = pebble_issuer(
            &pebble,
            Arc::new(setup.solver.clone()),
            Arc::new(late_looker),
            setup.cipher.clone(),
        )
        .build()
        .unwrap();
        late.issue_for(&domain("b.certkeeper-test.com"))
            .await
            .unwrap();

        // It created an account at the CA, lost the compare-and-swap, and
        // kept the stored one instead of overwriting it.
        assert_eq!(accounts_created(&pebble), 2);
        assert_eq!(setup.accounts().await, vec![first.account_id().to_owned()]);
        assert_eq!(setup.account(first.account_id()).await, stored);
    })
    .await;
}

#[tokio::test]
async fn an_account_the_cipher_cannot_open_is_an_error_not_a_new_account() {
    limited(TEST_LIMIT, async {
        let (pebble, setup, _listener) = start(PebbleOptions::default()).await;
        setup
            .issuer(&pebble)
            .issue_for(&domain("www.certkeeper-test.com"))
            .await
            .unwrap();
        let stored = setup.accounts().await;

        // Same store, another key: the stored account cannot be opened.
        let other_key = pebble_issuer(
            &pebble,
            Arc::new(setup.solver.clone()),
            setup.store.clone(),
            keyring(OTHER_TEST_KEY),
        )
        .build()
        .unwrap();
        let err = other_key
            .issue_for(&domain("www.certkeeper-test.com"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Decrypt), "{err}");
        assert_eq!(setup.accounts().await, stored);
    })
    .await;
}

#[tokio::test]
async fn a_blocked_name_fails_with_the_cas_rejection() {
    limited(TEST_LIMIT, async {
        let (pebble, setup, _listener) = start(PebbleOptions {
            domain_blocklist: vec!["blocked.certkeeper-test.com".into()],
            ..PebbleOptions::default()
        })
        .await;
        let issuer = setup.issuer(&pebble);

        let err = issuer
            .issue_for(&domain("blocked.certkeeper-test.com"))
            .await
            .unwrap_err();
        let (failed_for, step, message) = acme_failure(&err);
        assert_eq!(failed_for, Some("blocked.certkeeper-test.com"));
        assert_eq!(step, "new-order");
        for needle in ["rejectedIdentifier", "blocked.certkeeper-test.com"] {
            assert!(message.contains(needle), "no {needle} in: {message}");
        }
        assert!(err.to_string().contains("rejectedIdentifier"), "{err}");
        assert_eq!(setup.solver.pending(), 0);

        // The same account still gets certificates for other names.
        issuer
            .issue_for(&domain("allowed.certkeeper-test.com"))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn issues_while_the_ca_rejects_half_of_the_nonces() {
    limited(TEST_LIMIT, async {
        let (pebble, setup, _listener) = start(PebbleOptions {
            nonce_reject_percent: 50,
            ..PebbleOptions::default()
        })
        .await;
        let issuer = setup.issuer(&pebble);
        let roots = pebble.issuer_roots().await;
        for i in 0..3 {
            let name = format!("nonce{i}.certkeeper-test.com");
            let cert = issuer
                .issue_for(&domain(&name))
                .await
                .unwrap_or_else(|e| panic!("issue {i} failed: {e}"));
            verify_chain(&cert.chain_pem, roots.clone(), &name);
        }
        // Without rejections each of these requests is sent exactly once
        // per order (the account once): anything more is a rejected nonce.
        let log = pebble.log("pebble");
        assert!(log.contains("Configured to reject 50% of good nonces"));
        let sent: usize = [
            "POST /sign-me-up",
            "POST /order-plz",
            "POST /authZ/",
            "POST /chalZ/",
            "POST /finalize-order/",
            "POST /certZ/",
        ]
        .iter()
        .map(|request| log.matches(request).count())
        .sum();
        assert!(sent > 1 + 3 * 5, "no nonce was rejected ({sent} requests)");
    })
    .await;
}

#[tokio::test]
async fn a_challenge_the_ca_cannot_reach_fails_with_its_reason() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        // Nothing listens on Pebble's HTTP-01 port.
        let setup = Setup::new();
        let issuer = setup.issuer(&pebble);
        let err = issuer
            .issue_for(&domain("unreachable.certkeeper-test.com"))
            .await
            .unwrap_err();
        let (_, step, message) = acme_failure(&err);
        assert_eq!(step, "validation");
        for needle in [
            "http-01",
            "urn:ietf:params:acme:error:connection",
            "refused",
        ] {
            assert!(message.contains(needle), "no {needle} in: {message}");
        }
        // Cleaned up on failure too.
        assert_eq!(setup.solver.pending(), 0);
    })
    .await;
}

/// The real HTTP-01 solver, telling the test when a challenge is presented.
#[derive(Debug)]
struct Signalling {
    inner: Http01Solver,
    presented: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl ChallengeSolver for Signalling {
    fn kind(&self) -> ChallengeKind {
        self.inner.kind()
    }

    async fn present(&self, challenge: &Challenge) -> certkeeper::Result<()> {
        self.inner.present(challenge).await?;
        self.presented.notify_one();
        Ok(())
    }

    async fn cleanup(&self, challenge: &Challenge) -> certkeeper::Result<()> {
        self.inner.cleanup(challenge).await
    }
}

#[tokio::test]
async fn an_issue_dropped_halfway_still_cleans_up_its_challenge() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let setup = Setup::new();
        let presented = Arc::new(tokio::sync::Notify::new());
        let signalling = Signalling {
            inner: setup.solver.clone(),
            presented: presented.clone(),
        };
        let issuer = pebble_issuer(
            &pebble,
            Arc::new(signalling),
            setup.store.clone(),
            setup.cipher.clone(),
        )
        .build()
        .unwrap();

        // The caller gives up (drops the issue) right after the challenge is
        // presented, before the issue can clean it up itself.
        let name = domain("dropped.certkeeper-test.com");
        tokio::select! {
            biased;
            _ = presented.notified() => {}
            result = issuer.issue_for(&name) => {
                panic!("the issue ended before its challenge was presented: {result:?}")
            }
        }
        let mut waited = 0;
        while setup.solver.pending() > 0 {
            assert!(waited < 400, "the challenge is still presented");
            tokio::time::sleep(Duration::from_millis(25)).await;
            waited += 1;
        }
    })
    .await;
}

#[tokio::test]
async fn validates_over_ipv6() {
    limited(TEST_LIMIT, async {
        // Only an AAAA record, and the solver listens on [::1] only.
        let pebble = Pebble::start(PebbleOptions {
            dns_ipv4: None,
            dns_ipv6: Some(Ipv6Addr::LOCALHOST),
            ..PebbleOptions::default()
        })
        .await;
        let setup = Setup::new();
        let _listener = setup
            .solver
            .serve(SocketAddr::from((Ipv6Addr::LOCALHOST, pebble.http_port())))
            .await
            .unwrap();
        let name = "v6.certkeeper-test.com";
        let cert = setup
            .issuer(&pebble)
            .issue_for(&domain(name))
            .await
            .unwrap();
        verify_chain(&cert.chain_pem, pebble.issuer_roots().await, name);
    })
    .await;
}

#[tokio::test]
async fn the_configured_validity_period_is_used() {
    limited(TEST_LIMIT, async {
        let (pebble, setup, _listener) = start(PebbleOptions {
            validity_seconds: Some(3600),
            ..PebbleOptions::default()
        })
        .await;
        let cert = setup
            .issuer(&pebble)
            .issue_for(&domain("short.certkeeper-test.com"))
            .await
            .unwrap();
        let lifetime = cert.not_after - cert.not_before;
        assert!(
            lifetime > time::Duration::minutes(30) && lifetime <= time::Duration::hours(2),
            "{lifetime}"
        );
    })
    .await;
}

/// A "CA" that accepts connections and never says a word.
async fn silent_ca() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/directory", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_ca_that_never_answers_times_out() {
    limited(TEST_LIMIT, async {
        let (url, ca) = silent_ca().await;
        let setup = Setup::new();
        let issuer_with = |request_timeout, order_timeout| {
            AcmeIssuer::builder(url.clone())
                .contact_email(CONTACT_EMAIL)
                .solver(Arc::new(setup.solver.clone()))
                .store(setup.store.clone())
                .cipher(setup.cipher.clone())
                .request_timeout(request_timeout)
                .order_timeout(order_timeout)
                .build()
                .unwrap()
        };
        let issuer = issuer_with(
            Duration::from_millis(300),
            AcmeIssuer::DEFAULT_ORDER_TIMEOUT,
        );
        let err = issuer
            .issue_for(&domain("www.certkeeper-test.com"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { step: "account", after } if after == Duration::from_millis(300)),
            "{err:?}"
        );
        // Nothing was stored for an account the CA never confirmed.
        assert!(setup.accounts().await.is_empty());

        // The order timeout bounds the whole issue even when each call may
        // take longer.
        let issuer = issuer_with(Duration::from_secs(3600), Duration::from_millis(300));
        let err = issuer
            .issue_for(&domain("www.certkeeper-test.com"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { step: "order", .. }),
            "{err:?}"
        );
        ca.abort();
    })
    .await;
}

#[test]
fn the_builder_refuses_bad_settings() {
    const DIRECTORY: &str = "https://ca.certkeeper-test.com/dir";
    // A store and a cipher; the contact address and the solver are added
    // below, as some cases leave one of them out.
    let parts = |url: &str| {
        AcmeIssuer::builder(url)
            .store(Arc::new(MemoryStore::new()))
            .cipher(keyring(TEST_KEY))
    };
    let complete_for = |url: &str| {
        parts(url)
            .contact_email(CONTACT_EMAIL)
            .solver(Arc::new(Http01Solver::new()))
    };
    let complete = || complete_for(DIRECTORY);
    assert!(complete().build().is_ok());

    let setting_of = |result: certkeeper::Result<AcmeIssuer>| match result {
        Err(Error::Config { name, .. }) => name,
        other => panic!("expected Error::Config, got {other:?}"),
    };
    for email in [
        "",
        "ops",
        "ops@",
        "@certkeeper-test.com",
        "ops@localhost",
        "a b@x.com",
        "ops@127.0.0.1",
    ] {
        assert_eq!(
            setting_of(complete().contact_email(email).build()),
            "AcmeIssuerBuilder::contact_email",
            "{email:?}"
        );
    }
    let no_email = parts(DIRECTORY)
        .solver(Arc::new(Http01Solver::new()))
        .build();
    assert_eq!(setting_of(no_email), "AcmeIssuerBuilder::contact_email");

    for url in [
        "http://ca.certkeeper-test.com/dir",
        "https://",
        "ca.certkeeper-test.com",
        "https://ca .com/dir",
    ] {
        assert_eq!(
            setting_of(complete_for(url).build()),
            "AcmeIssuer::builder",
            "{url:?}"
        );
    }
    assert_eq!(
        setting_of(complete().ca_root_pem_file("/nonexistent/root.pem").build()),
        "AcmeIssuerBuilder::ca_root_pem_file"
    );
    assert!(
        setting_of(complete().request_timeout(Duration::ZERO).build()).contains("request_timeout")
    );
    assert!(setting_of(complete().order_timeout(Duration::ZERO).build()).contains("order_timeout"));
    let no_solver = parts(DIRECTORY).contact_email(CONTACT_EMAIL).build();
    assert!(setting_of(no_solver).contains("solver"));
}
