//! The ACME issuer against a real Pebble CA that really validates HTTP-01
//! through `Http01Solver::serve`.

mod common;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use certkeeper::challenge::{
    Challenge, ChallengeKind, ChallengeSolver, Http01Server, Http01Solver,
};
use certkeeper::cipher::Keyring;
use certkeeper::cipher::{account_aad, SecretCipher};
use certkeeper::issuer::{chain_der, AcmeIssuer, IssuedCert, Issuer};
use certkeeper::store::{AccountRecord, CertRecord, CertStore, FileStore, IssuerKind, MemoryStore};
use certkeeper::{Domain, Error};
use common::pebble::{Pebble, PebbleOptions};
use common::{init_tracing, keyring, OTHER_TEST_KEY, TEST_KEY};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    fn issuer(&self, pebble: &Pebble) -> AcmeIssuer {
        AcmeIssuer::builder(pebble.directory_url())
            .contact_email("ops@certkeeper-test.com")
            .ca_root_pem_file(pebble.ca_root_pem_path())
            .solver(Arc::new(self.solver.clone()))
            .store(self.store.clone())
            .cipher(self.cipher.clone())
            .request_timeout(Duration::from_secs(30))
            .order_timeout(Duration::from_secs(120))
            .build()
            .expect("valid issuer settings")
    }

    /// The solver's listener on Pebble's HTTP-01 port, both address families.
    async fn serve(&self, pebble: &Pebble) -> Http01Server {
        self.solver
            .serve(SocketAddr::from((
                Ipv6Addr::UNSPECIFIED,
                pebble.http_port(),
            )))
            .await
            .expect("the HTTP-01 port is free")
    }
}

async fn limited<T>(test: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test hung")
}

fn domain(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

/// Verifies `cert`'s chain for `name` against `roots` as a TLS client would.
fn verify_chain(cert: &IssuedCert, roots: RootCertStore, name: &str) {
    let chain = chain_der(&cert.chain_pem).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("the issued chain does not verify for {name}: {e}"));
}

/// Serves `cert` on 127.0.0.1 and connects to it with SNI `name`, trusting
/// only `roots`; returns what the server echoed.
async fn tls_round_trip(cert: &IssuedCert, roots: RootCertStore, name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain_der(&cert.chain_pem).unwrap(),
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.shutdown().await.unwrap();
    });

    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with the issued certificate failed: {e}"));
    tls.write_all(b"hello").await.unwrap();
    let mut echoed = Vec::new();
    tls.read_to_end(&mut echoed).await.unwrap();
    server.await.unwrap();
    echoed
}

#[tokio::test]
async fn issues_a_certificate_that_verifies_and_serves_tls() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let setup = Setup::new();
        let _listener = setup.serve(&pebble).await;
        let issuer = setup.issuer(&pebble);
        assert_eq!(issuer.kind(), IssuerKind::Acme);

        let name = "www.certkeeper-test.com";
        let cert = issuer.issue(&domain(name)).await.unwrap();
        assert!(cert.not_after > cert.not_before);
        assert!(cert.not_after > time::OffsetDateTime::now_utc());
        assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        // The challenge was cleaned up once validated.
        assert_eq!(setup.solver.pending(), 0);

        let roots = pebble.issuer_roots().await;
        verify_chain(&cert, roots.clone(), name);
        assert_eq!(tls_round_trip(&cert, roots, name).await, b"hello");
    })
    .await;
}

#[tokio::test]
async fn the_account_is_stored_sealed_once_and_reused() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let setup = Setup::new();
        let _listener = setup.serve(&pebble).await;
        let issuer = Arc::new(setup.issuer(&pebble));
        let id = issuer.account_id().to_owned();
        assert!(setup.store.load_account(&id).await.unwrap().is_none());

        // Concurrent first issues create one account between them.
        let mut tasks = Vec::new();
        for i in 0..4 {
            let issuer = issuer.clone();
            tasks.push(tokio::spawn(async move {
                issuer
                    .issue(&domain(&format!("app{i}.certkeeper-test.com")))
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(setup.store.list_accounts().await.unwrap(), vec![id.clone()]);
        let record = setup.store.load_account(&id).await.unwrap().unwrap();
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
            .issue(&domain("www.certkeeper-test.com"))
            .await
            .unwrap();
        assert_eq!(setup.store.list_accounts().await.unwrap(), vec![id.clone()]);
        assert_eq!(
            setup.store.load_account(&id).await.unwrap().unwrap(),
            record
        );
    })
    .await;
}

#[tokio::test]
async fn the_account_survives_a_restart_on_the_file_store() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let solver = Http01Solver::new();
        let _listener = solver
            .serve(SocketAddr::from((
                Ipv6Addr::UNSPECIFIED,
                pebble.http_port(),
            )))
            .await
            .unwrap();
        let folder = tempfile::tempdir().unwrap();
        let issuer_on = |store: FileStore| {
            AcmeIssuer::builder(pebble.directory_url())
                .contact_email("ops@certkeeper-test.com")
                .ca_root_pem_file(pebble.ca_root_pem_path())
                .solver(Arc::new(solver.clone()))
                .store(Arc::new(store))
                .cipher(keyring(TEST_KEY))
                .build()
                .unwrap()
        };

        let first = issuer_on(FileStore::open(folder.path()).await.unwrap());
        first
            .issue(&domain("www.certkeeper-test.com"))
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
            .issue(&domain("api.certkeeper-test.com"))
            .await
            .unwrap();
        drop(second);
        let store = FileStore::open(folder.path()).await.unwrap();
        assert_eq!(store.list_accounts().await.unwrap(), vec![id.clone()]);
        assert_eq!(store.load_account(&id).await.unwrap().unwrap(), before);
        // Pebble knows a single account: the second issuer created none.
        assert_eq!(pebble.log("pebble").matches("POST /sign-me-up").count(), 1);
    })
    .await;
}

#[tokio::test]
async fn two_instances_sharing_a_store_use_one_account() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let setup = Setup::new();
        let _listener = setup.serve(&pebble).await;
        // Two issuers (two server instances) over one shared store, racing
        // to create the account.
        let (a, b) = (setup.issuer(&pebble), setup.issuer(&pebble));
        let (name_a, name_b) = (
            domain("a.certkeeper-test.com"),
            domain("b.certkeeper-test.com"),
        );
        let (first, second) = tokio::join!(a.issue(&name_a), b.issue(&name_b));
        first.unwrap();
        second.unwrap();
        let id = a.account_id().to_owned();
        assert_eq!(setup.store.list_accounts().await.unwrap(), vec![id.clone()]);
        assert_eq!(
            setup
                .store
                .load_account(&id)
                .await
                .unwrap()
                .unwrap()
                .version,
            1
        );
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
    ) -> certkeeper::Result<Vec<CertRecord>> {
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
}

#[tokio::test]
async fn an_instance_that_loses_the_account_race_uses_the_stored_one() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let setup = Setup::new();
        let _listener = setup.serve(&pebble).await;
        let first = setup.issuer(&pebble);
        first.issue(&domain("a.certkeeper-test.com")).await.unwrap();
        let stored = setup
            .store
            .load_account(first.account_id())
            .await
            .unwrap()
            .unwrap();

        let late = AcmeIssuer::builder(pebble.directory_url())
            .contact_email("ops@certkeeper-test.com")
            .ca_root_pem_file(pebble.ca_root_pem_path())
            .solver(Arc::new(setup.solver.clone()))
            .store(Arc::new(LateLooker {
                shared: setup.store.clone(),
                looked: Default::default(),
            }))
            .cipher(setup.cipher.clone())
            .build()
            .unwrap();
        late.issue(&domain("b.certkeeper-test.com")).await.unwrap();

        // It created an account at the CA, lost the compare-and-swap, and
        // kept the stored one instead of overwriting it.
        assert_eq!(pebble.log("pebble").matches("POST /sign-me-up").count(), 2);
        assert_eq!(
            setup.store.list_accounts().await.unwrap(),
            vec![first.account_id().to_owned()]
        );
        assert_eq!(
            setup
                .store
                .load_account(first.account_id())
                .await
                .unwrap()
                .unwrap(),
            stored
        );
    })
    .await;
}

#[tokio::test]
async fn an_account_the_cipher_cannot_open_is_an_error_not_a_new_account() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let setup = Setup::new();
        let _listener = setup.serve(&pebble).await;
        setup
            .issuer(&pebble)
            .issue(&domain("www.certkeeper-test.com"))
            .await
            .unwrap();
        let stored = setup.store.list_accounts().await.unwrap();

        // Same store, another key: the stored account cannot be opened.
        let other_key = AcmeIssuer::builder(pebble.directory_url())
            .contact_email("ops@certkeeper-test.com")
            .ca_root_pem_file(pebble.ca_root_pem_path())
            .solver(Arc::new(setup.solver.clone()))
            .store(setup.store.clone())
            .cipher(keyring(OTHER_TEST_KEY))
            .build()
            .unwrap();
        let err = other_key
            .issue(&domain("www.certkeeper-test.com"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Decrypt), "{err}");
        assert_eq!(setup.store.list_accounts().await.unwrap(), stored);
    })
    .await;
}

#[tokio::test]
async fn a_blocked_name_fails_with_the_cas_rejection() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions {
            domain_blocklist: vec!["blocked.certkeeper-test.com".into()],
            ..PebbleOptions::default()
        })
        .await;
        let setup = Setup::new();
        let _listener = setup.serve(&pebble).await;
        let issuer = setup.issuer(&pebble);

        let err = issuer
            .issue(&domain("blocked.certkeeper-test.com"))
            .await
            .unwrap_err();
        match &err {
            Error::Acme {
                domain,
                step,
                message,
            } => {
                assert_eq!(domain.as_deref(), Some("blocked.certkeeper-test.com"));
                assert_eq!(*step, "new-order");
                assert!(message.contains("rejectedIdentifier"), "{message}");
                assert!(message.contains("blocked.certkeeper-test.com"), "{message}");
            }
            other => panic!("expected Error::Acme, got {other:?}"),
        }
        assert!(err.to_string().contains("rejectedIdentifier"), "{err}");
        assert_eq!(setup.solver.pending(), 0);

        // The same account still gets certificates for other names.
        issuer
            .issue(&domain("allowed.certkeeper-test.com"))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn issues_while_the_ca_rejects_half_of_the_nonces() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions {
            nonce_reject_percent: 50,
            ..PebbleOptions::default()
        })
        .await;
        let setup = Setup::new();
        let _listener = setup.serve(&pebble).await;
        let issuer = setup.issuer(&pebble);
        let roots = pebble.issuer_roots().await;
        for i in 0..3 {
            let name = format!("nonce{i}.certkeeper-test.com");
            let cert = issuer
                .issue(&domain(&name))
                .await
                .unwrap_or_else(|e| panic!("issue {i} failed: {e}"));
            verify_chain(&cert, roots.clone(), &name);
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
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        // Nothing listens on Pebble's HTTP-01 port.
        let setup = Setup::new();
        let issuer = setup.issuer(&pebble);
        let err = issuer
            .issue(&domain("unreachable.certkeeper-test.com"))
            .await
            .unwrap_err();
        match &err {
            Error::Acme { step, message, .. } => {
                assert_eq!(*step, "validation");
                assert!(message.contains("http-01"), "{message}");
                assert!(
                    message.contains("urn:ietf:params:acme:error:connection"),
                    "{message}"
                );
                assert!(message.contains("refused"), "{message}");
            }
            other => panic!("expected Error::Acme, got {other:?}"),
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
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let setup = Setup::new();
        let presented = Arc::new(tokio::sync::Notify::new());
        let issuer = AcmeIssuer::builder(pebble.directory_url())
            .contact_email("ops@certkeeper-test.com")
            .ca_root_pem_file(pebble.ca_root_pem_path())
            .solver(Arc::new(Signalling {
                inner: setup.solver.clone(),
                presented: presented.clone(),
            }))
            .store(setup.store.clone())
            .cipher(setup.cipher.clone())
            .build()
            .unwrap();

        // The caller gives up (drops the issue) right after the challenge is
        // presented, before the issue can clean it up itself.
        let name = domain("dropped.certkeeper-test.com");
        tokio::select! {
            biased;
            _ = presented.notified() => {}
            result = issuer.issue(&name) => {
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
    init_tracing();
    limited(async {
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
        let cert = setup.issuer(&pebble).issue(&domain(name)).await.unwrap();
        verify_chain(&cert, pebble.issuer_roots().await, name);
    })
    .await;
}

#[tokio::test]
async fn the_configured_validity_period_is_used() {
    init_tracing();
    limited(async {
        let pebble = Pebble::start(PebbleOptions {
            validity_seconds: Some(3600),
            ..PebbleOptions::default()
        })
        .await;
        let setup = Setup::new();
        let _listener = setup.serve(&pebble).await;
        let cert = setup
            .issuer(&pebble)
            .issue(&domain("short.certkeeper-test.com"))
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
    init_tracing();
    limited(async {
        let (url, ca) = silent_ca().await;
        let setup = Setup::new();
        let issuer = AcmeIssuer::builder(url.clone())
            .contact_email("ops@certkeeper-test.com")
            .solver(Arc::new(setup.solver.clone()))
            .store(setup.store.clone())
            .cipher(setup.cipher.clone())
            .request_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let err = issuer
            .issue(&domain("www.certkeeper-test.com"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { step: "account", after } if after == Duration::from_millis(300)),
            "{err:?}"
        );
        // Nothing was stored for an account the CA never confirmed.
        assert!(setup.store.list_accounts().await.unwrap().is_empty());

        // The order timeout bounds the whole issue even when each call may
        // take longer.
        let issuer = AcmeIssuer::builder(url)
            .contact_email("ops@certkeeper-test.com")
            .solver(Arc::new(setup.solver.clone()))
            .store(setup.store.clone())
            .cipher(setup.cipher.clone())
            .request_timeout(Duration::from_secs(3600))
            .order_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let err = issuer
            .issue(&domain("www.certkeeper-test.com"))
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
    let complete = || {
        AcmeIssuer::builder("https://ca.certkeeper-test.com/dir")
            .contact_email("ops@certkeeper-test.com")
            .solver(Arc::new(Http01Solver::new()))
            .store(Arc::new(MemoryStore::new()))
            .cipher(keyring(TEST_KEY))
    };
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
            "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS",
            "{email:?}"
        );
    }
    let no_email = AcmeIssuer::builder("https://ca.certkeeper-test.com/dir")
        .solver(Arc::new(Http01Solver::new()))
        .store(Arc::new(MemoryStore::new()))
        .cipher(keyring(TEST_KEY))
        .build();
    assert_eq!(setting_of(no_email), "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS");

    for url in [
        "http://ca.certkeeper-test.com/dir",
        "https://",
        "ca.certkeeper-test.com",
        "https://ca .com/dir",
    ] {
        let built = AcmeIssuer::builder(url)
            .contact_email("ops@certkeeper-test.com")
            .solver(Arc::new(Http01Solver::new()))
            .store(Arc::new(MemoryStore::new()))
            .cipher(keyring(TEST_KEY))
            .build();
        assert_eq!(setting_of(built), "_APP_ACME_DIRECTORY_URL", "{url:?}");
    }
    assert_eq!(
        setting_of(complete().ca_root_pem_file("/nonexistent/root.pem").build()),
        "_APP_ACME_CA_ROOT"
    );
    assert!(
        setting_of(complete().request_timeout(Duration::ZERO).build()).contains("request_timeout")
    );
    assert!(setting_of(complete().order_timeout(Duration::ZERO).build()).contains("order_timeout"));
    let no_solver = AcmeIssuer::builder("https://ca.certkeeper-test.com/dir")
        .contact_email("ops@certkeeper-test.com")
        .store(Arc::new(MemoryStore::new()))
        .cipher(keyring(TEST_KEY))
        .build();
    assert!(setting_of(no_solver).contains("solver"));
}
