//! ACME account key rollover (RFC 8555 section 7.3.5) against a real
//! Pebble: `AcmeIssuer::rotate_account_key` stores the new key in place of
//! the old one with compare-and-swap; orders after it succeed, from the same
//! issuer and from any issuer reading the store, and the CA refuses the old
//! key. Two instances rolling it over at once leave the store holding the
//! key the CA takes; a save that fails, whose answer is lost or that a
//! re-seal or another account races is understood; a key-change request
//! whose answer is lost is told apart from one that never arrived.

use crate::common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use certkeeper::challenge::{Http01Server, Http01Solver};
use certkeeper::cipher::Keyring;
use certkeeper::issuer::instant_acme::{
    self, Account, AccountCredentials, BodyWrapper, BytesResponse, HttpClient, Identifier, NewOrder,
};
use certkeeper::issuer::{AcmeIssuer, AcmeIssuerBuilder, IssuerExt, RevocationReason};
use certkeeper::store::{AccountRecord, CertRecord, CertStore, DueEntry, MemoryStore, PassedOver};
use certkeeper::vault::Vault;
use certkeeper::{Domain, Error};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions, PebbleVersion};
use common::{domain, keyring, limited, TEST_KEY};
use time::OffsetDateTime;

/// A guard against a hung test: far above what any case here needs.
const TEST_LIMIT: Duration = Duration::from_secs(180);

/// What the store under test does to the account record.
#[derive(Clone, Debug, Default)]
enum Fault {
    /// Nothing: every call reaches the memory store.
    #[default]
    None,
    /// Every account save fails (a database down).
    FailSaves,
    /// The next account save is stored, and its answer lost.
    LoseAnswer,
    /// Before the next account save, the stored record is re-sealed (an
    /// encryption key rotation), so that save's version is stale.
    ResealFirst,
    /// Before the next account save, this record (another instance's
    /// account) is stored over the stored one.
    ReplaceFirst(AccountRecord),
}

/// A memory store whose account calls a test can hold up or break.
#[derive(Debug)]
struct Gated {
    inner: MemoryStore,
    cipher: Arc<Keyring>,
    fault: Mutex<Fault>,
    /// Account loads still to hold at `barrier` (one per rollover).
    held_loads: AtomicUsize,
    barrier: tokio::sync::Barrier,
    saves: AtomicUsize,
}

impl Gated {
    fn new(cipher: Arc<Keyring>) -> Self {
        Self {
            inner: MemoryStore::new(),
            cipher,
            fault: Mutex::new(Fault::None),
            held_loads: AtomicUsize::new(0),
            barrier: tokio::sync::Barrier::new(2),
            saves: AtomicUsize::new(0),
        }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// The next two account loads wait for each other, so that two
    /// rollovers read the same version.
    fn hold_next_two_loads(&self) {
        self.held_loads.store(2, Ordering::SeqCst);
    }
}

#[async_trait]
impl CertStore for Gated {
    async fn load(&self, domain: &Domain) -> certkeeper::Result<Option<CertRecord>> {
        self.inner.load(domain).await
    }
    async fn save(&self, record: &CertRecord) -> certkeeper::Result<u64> {
        self.inner.save(record).await
    }
    async fn delete(&self, domain: &Domain) -> certkeeper::Result<bool> {
        self.inner.delete(domain).await
    }
    async fn list(&self) -> certkeeper::Result<Vec<Domain>> {
        self.inner.list().await
    }
    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> certkeeper::Result<Vec<DueEntry>> {
        self.inner.due(now, max_attempts, limit).await
    }
    async fn at_attempt_limit(
        &self,
        max_attempts: u32,
        limit: usize,
    ) -> certkeeper::Result<PassedOver> {
        self.inner.at_attempt_limit(max_attempts, limit).await
    }
    async fn load_account(&self, id: &str) -> certkeeper::Result<Option<AccountRecord>> {
        let held = self
            .held_loads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let loaded = self.inner.load_account(id).await;
        if held {
            self.barrier.wait().await;
        }
        loaded
    }
    async fn save_account(&self, record: &AccountRecord) -> certkeeper::Result<u64> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let fault = std::mem::take(&mut *self.fault.lock().unwrap());
        match fault {
            Fault::None => {}
            Fault::FailSaves => {
                self.set(Fault::FailSaves);
                return Err(Error::store("memory", "the database is down"));
            }
            Fault::LoseAnswer => {
                self.inner.save_account(record).await?;
                return Err(Error::store(
                    "memory",
                    "the connection dropped before the answer",
                ));
            }
            Fault::ResealFirst => {
                let vault = Vault::new(Arc::new(MemoryStore::new()), self.cipher.clone());
                let mut stored = self.inner.load_account(&record.id).await?.unwrap();
                let plaintext = vault.open_account(&stored)?;
                stored.sealed_credentials = vault.seal_account(&stored.id, &plaintext)?;
                self.inner.save_account(&stored).await?;
            }
            Fault::ReplaceFirst(mut theirs) => {
                let stored = self.inner.load_account(&record.id).await?.unwrap();
                theirs.version = stored.version;
                self.inner.save_account(&theirs).await?;
            }
        }
        self.inner.save_account(record).await
    }
    async fn delete_account(&self, id: &str) -> certkeeper::Result<bool> {
        self.inner.delete_account(id).await
    }
    async fn list_accounts(&self) -> certkeeper::Result<Vec<String>> {
        self.inner.list_accounts().await
    }
    async fn get_meta(&self, key: &str) -> certkeeper::Result<Option<String>> {
        self.inner.get_meta(key).await
    }
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> certkeeper::Result<String> {
        self.inner.put_meta_if_absent(key, value).await
    }
    async fn set_meta(&self, key: &str, value: &str) -> certkeeper::Result<()> {
        self.inner.set_meta(key, value).await
    }
    async fn delete_meta(&self, key: &str) -> certkeeper::Result<bool> {
        self.inner.delete_meta(key).await
    }
}

/// What the HTTP client under test does to the key-change request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyChangeFault {
    None,
    /// Sent, and the answer lost (the connection cut after the CA acted).
    LoseAnswer,
    /// Never sent (the connection cut before).
    NeverSent,
}

/// certkeeper's own client to the CA, with a switch for key changes.
struct Switching {
    inner: Box<dyn HttpClient>,
    fault: Arc<Mutex<KeyChangeFault>>,
    key_changes: Arc<AtomicUsize>,
}

impl HttpClient for Switching {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        // Pebble's keyChange URL.
        let key_change = req.uri().path().contains("rollover-account-key");
        let fault = if key_change {
            self.key_changes.fetch_add(1, Ordering::SeqCst);
            *self.fault.lock().unwrap()
        } else {
            KeyChangeFault::None
        };
        let answer = match fault {
            KeyChangeFault::NeverSent => None,
            _ => Some(self.inner.request(req)),
        };
        Box::pin(async move {
            let cut = || instant_acme::Error::Other("connection reset by peer".into());
            match (fault, answer) {
                (KeyChangeFault::None, Some(answer)) => answer.await,
                (_, Some(answer)) => {
                    let _ = answer.await?.body.into_bytes().await;
                    Err(cut())
                }
                (_, None) => Err(cut()),
            }
        })
    }
}

/// Pebble, a solver on its HTTP-01 port, and one store and cipher that
/// every issuer of a test shares (the instances of a cluster).
struct Stage {
    pebble: Pebble,
    solver: Http01Solver,
    store: Arc<Gated>,
    cipher: Arc<Keyring>,
    _listener: Http01Server,
}

impl Stage {
    async fn start() -> Self {
        Self::start_version(PebbleVersion::V2_4).await
    }

    async fn start_version(version: PebbleVersion) -> Self {
        let pebble = Pebble::start(PebbleOptions {
            version,
            ..PebbleOptions::default()
        })
        .await;
        let solver = Http01Solver::new();
        let listener = serve_http01(&solver, &pebble).await;
        let cipher = keyring(TEST_KEY);
        Self {
            store: Arc::new(Gated::new(cipher.clone())),
            cipher,
            pebble,
            solver,
            _listener: listener,
        }
    }

    fn builder(&self) -> AcmeIssuerBuilder {
        pebble_issuer(
            &self.pebble,
            Arc::new(self.solver.clone()),
            self.store.clone(),
            self.cipher.clone(),
        )
        .request_timeout(Duration::from_secs(30))
        .order_timeout(Duration::from_secs(120))
    }

    /// An issuer over the shared store: another instance of the cluster.
    fn issuer(&self) -> AcmeIssuer {
        self.builder().build().unwrap()
    }

    /// An issuer whose key-change requests go through `fault`.
    fn switching_issuer(
        &self,
        fault: Arc<Mutex<KeyChangeFault>>,
    ) -> (AcmeIssuer, Arc<AtomicUsize>) {
        let key_changes = Arc::new(AtomicUsize::new(0));
        let client = Switching {
            inner: AcmeIssuer::default_http_client(Some(self.pebble.ca_root_pem_path())).unwrap(),
            fault,
            key_changes: key_changes.clone(),
        };
        let issuer = AcmeIssuer::builder(self.pebble.directory_url())
            .contact_email(common::CONTACT_EMAIL)
            .solver(Arc::new(self.solver.clone()))
            .store(self.store.clone())
            .cipher(self.cipher.clone())
            .request_timeout(Duration::from_secs(30))
            .order_timeout(Duration::from_secs(120))
            .http_client(client)
            .build()
            .unwrap();
        (issuer, key_changes)
    }

    /// The stored account record, which must exist.
    async fn record(&self, issuer: &AcmeIssuer) -> AccountRecord {
        self.store
            .inner
            .load_account(issuer.account_id())
            .await
            .unwrap()
            .expect("a stored account")
    }

    /// The stored credentials, opened: the JSON instant-acme reads back.
    async fn credentials(&self, issuer: &AcmeIssuer) -> Vec<u8> {
        let vault = Vault::new(self.store.clone(), self.cipher.clone());
        vault
            .open_account(&self.record(issuer).await)
            .unwrap()
            .to_vec()
    }

    /// How many accounts Pebble registered.
    fn accounts_registered(&self) -> usize {
        self.pebble
            .log("pebble")
            .matches("accounts in memory")
            .count()
    }

    /// An instant-acme account signing with `credentials` (JSON), as a
    /// client that kept them would.
    async fn account_from(&self, credentials: &[u8]) -> Account {
        let credentials: AccountCredentials = serde_json::from_slice(credentials).unwrap();
        let http = AcmeIssuer::default_http_client(Some(self.pebble.ca_root_pem_path())).unwrap();
        Account::builder_with_http(http)
            .from_credentials(credentials)
            .await
            .unwrap()
    }
}

/// The account URL and the key of serialised credentials.
fn url_and_key(credentials: &[u8]) -> (String, String) {
    let json: serde_json::Value = serde_json::from_slice(credentials).unwrap();
    (
        json["id"].as_str().unwrap().to_owned(),
        json["key_pkcs8"].as_str().unwrap().to_owned(),
    )
}

/// The CA's answer to a new order signed with `credentials`: it must be a
/// refusal for the key, whose problem type is returned.
async fn refused_order(stage: &Stage, credentials: &[u8], name: &str) -> String {
    let account = stage.account_from(credentials).await;
    let identifiers = [Identifier::Dns(name.into())];
    match account.new_order(&NewOrder::new(&identifiers)).await {
        Ok(_) => panic!("the CA took an order signed with the old key"),
        Err(instant_acme::Error::Api(problem)) => {
            let kind = problem.r#type.clone().unwrap_or_default();
            assert!(
                [
                    "urn:ietf:params:acme:error:malformed",
                    "urn:ietf:params:acme:error:unauthorized",
                    "urn:ietf:params:acme:error:accountDoesNotExist",
                ]
                .contains(&kind.as_str()),
                "{problem:?}"
            );
            kind
        }
        Err(other) => panic!("expected the CA's refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn orders_after_a_rollover_succeed_and_the_old_key_is_refused() {
    limited(TEST_LIMIT, rollover_at(PebbleVersion::V2_4)).await;
}

#[tokio::test]
async fn orders_after_a_rollover_succeed_and_the_old_key_is_refused_by_pebble_2_10() {
    limited(TEST_LIMIT, rollover_at(PebbleVersion::V2_10)).await;
}

/// A rollover between orders, at the Pebble of `version`.
async fn rollover_at(version: PebbleVersion) {
    let stage = Stage::start_version(version).await;
    let issuer = stage.issuer();

    // Nothing stored yet: nothing to roll over, nothing sent.
    let err = issuer.rotate_account_key().await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { what: "ACME account", key } if key == issuer.account_id()),
        "{err:?}"
    );
    assert_eq!(stage.accounts_registered(), 0);

    issuer
        .issue_for(&domain("before.certkeeper-test.com"))
        .await
        .unwrap();
    let before = stage.record(&issuer).await;
    let old = stage.credentials(&issuer).await;
    let (old_url, old_key) = url_and_key(&old);
    // The old key works, as a client that kept it sees.
    let account = stage.account_from(&old).await;
    let old_thumbprint = account.key_thumbprint().to_owned();

    let rollover = issuer.rotate_account_key().await.unwrap();
    assert_eq!(rollover.account_id, issuer.account_id());
    assert_eq!(rollover.account_url, old_url);
    assert_eq!(rollover.old_key_thumbprint, old_thumbprint);
    assert_ne!(rollover.new_key_thumbprint, old_thumbprint);
    // Stored in place, compare-and-swap over the version read.
    let after = stage.record(&issuer).await;
    assert!(after.version > before.version, "{before:?} -> {after:?}");
    assert_eq!(rollover.version, after.version);
    assert_eq!(after.created, before.created);
    let new = stage.credentials(&issuer).await;
    let (new_url, new_key) = url_and_key(&new);
    assert_eq!(new_url, old_url);
    assert_ne!(new_key, old_key);
    assert_eq!(
        stage.account_from(&new).await.key_thumbprint(),
        rollover.new_key_thumbprint
    );
    // Nothing secret in what it reports.
    let shown = format!("{rollover:?}");
    assert!(!shown.contains(&old_key[..16]) && !shown.contains(&new_key[..16]));

    // The same issuer orders with the new key.
    issuer
        .issue_for(&domain("same-issuer.certkeeper-test.com"))
        .await
        .unwrap();
    // So does a fresh one reading the store: the same account.
    let fresh = stage.issuer();
    assert_eq!(fresh.account_id(), issuer.account_id());
    fresh
        .issue_for(&domain("fresh-issuer.certkeeper-test.com"))
        .await
        .unwrap();
    assert_eq!(url_and_key(&stage.credentials(&fresh).await).0, old_url);
    assert_eq!(stage.accounts_registered(), 1);

    // The CA refuses the old key.
    let refusal = refused_order(&stage, &old, "old-key.certkeeper-test.com").await;
    tracing::info!(%refusal, "the CA refused the old key");

    // Rolled over again: the key before is refused too.
    let again = issuer.rotate_account_key().await.unwrap();
    assert_eq!(again.old_key_thumbprint, rollover.new_key_thumbprint);
    refused_order(&stage, &new, "second-old-key.certkeeper-test.com").await;
    fresh
        .issue_for(&domain("after-two.certkeeper-test.com"))
        .await
        .unwrap();
    assert_eq!(stage.accounts_registered(), 1);
}

#[tokio::test]
async fn another_instance_follows_the_new_key_and_rollovers_at_once_leave_the_cas_key_stored() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let (a, b) = (stage.issuer(), stage.issuer());
        a.issue_for(&domain("a.certkeeper-test.com")).await.unwrap();
        let b_cert = b.issue_for(&domain("b.certkeeper-test.com")).await.unwrap();
        let url = url_and_key(&stage.credentials(&a).await).0;

        // A rolls it over; B still holds the old key, is refused once,
        // reads the store again and revokes with the new one.
        let first = a.rotate_account_key().await.unwrap();
        b.revoke_chain(&b_cert.chain_pem, RevocationReason::Superseded)
            .await
            .unwrap();
        let status = stage.pebble.cert_status(&b_cert.chain_pem).await;
        assert!(status.contains("\"Revoked\""), "{status}");
        b.issue_for(&domain("b-after.certkeeper-test.com"))
            .await
            .unwrap();
        // B rolls it over in turn, from the stored key (not its old copy);
        // A, holding the key before, is refused once and orders with it.
        let second = b.rotate_account_key().await.unwrap();
        assert_eq!(second.old_key_thumbprint, first.new_key_thumbprint);
        a.issue_for(&domain("a-after.certkeeper-test.com"))
            .await
            .unwrap();

        // Both at once, from the same stored version: the CA takes one new
        // key, and the store ends up holding the key the CA takes.
        let read = stage.record(&a).await.version;
        stage.store.hold_next_two_loads();
        let (ra, rb) = tokio::join!(a.rotate_account_key(), b.rotate_account_key());
        let won: Vec<_> = [&ra, &rb].into_iter().filter(|r| r.is_ok()).collect();
        assert!(!won.is_empty(), "{ra:?} {rb:?}");
        for result in [&ra, &rb] {
            match result {
                Ok(rollover) => assert_eq!(rollover.old_key_thumbprint, second.new_key_thumbprint),
                // Another instance changed it meanwhile; nothing of ours stored.
                Err(Error::Conflict { key, expected, .. }) => {
                    assert_eq!((key.as_str(), *expected), (a.account_id(), read))
                }
                // The CA refused the loser's key change (signed with the
                // key it no longer takes) before the winner stored its own.
                Err(
                    e @ Error::Acme {
                        step: "key-change", ..
                    },
                ) => {
                    assert!(e.acme_problem().is_some(), "{e:?}")
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        // Whichever won: every instance orders, the stored key works.
        let fresh = stage.issuer();
        fresh
            .issue_for(&domain("fresh.certkeeper-test.com"))
            .await
            .unwrap();
        a.issue_for(&domain("a-last.certkeeper-test.com"))
            .await
            .unwrap();
        b.issue_for(&domain("b-last.certkeeper-test.com"))
            .await
            .unwrap();
        assert_eq!(url_and_key(&stage.credentials(&a).await).0, url);
        assert_eq!(stage.accounts_registered(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_stale_compare_and_swap_never_overwrites_another_account() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let issuer = stage.issuer();
        issuer
            .issue_for(&domain("ours.certkeeper-test.com"))
            .await
            .unwrap();
        let ours = url_and_key(&stage.credentials(&issuer).await).0;

        // Another instance's account for the same CA and contact,
        // registered through a store of its own, sealed the same way.
        let elsewhere = Arc::new(MemoryStore::new());
        let other = pebble_issuer(
            &stage.pebble,
            Arc::new(stage.solver.clone()),
            elsewhere.clone(),
            stage.cipher.clone(),
        )
        .build()
        .unwrap();
        other
            .issue_for(&domain("theirs.certkeeper-test.com"))
            .await
            .unwrap();
        let theirs = elsewhere
            .load_account(other.account_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stage.accounts_registered(), 2);

        // It lands in the store between our read and our save: our save
        // at the stale version is refused, and theirs stays.
        let read = stage.record(&issuer).await.version;
        stage.store.set(Fault::ReplaceFirst(theirs.clone()));
        let err = issuer.rotate_account_key().await.unwrap_err();
        assert!(
            matches!(&err, Error::Conflict { expected, .. } if *expected == read),
            "{err:?}"
        );
        let stored = stage.record(&issuer).await;
        assert_eq!(stored.sealed_credentials, theirs.sealed_credentials);
        let stored_url = url_and_key(&stage.credentials(&issuer).await).0;
        assert_ne!(stored_url, ours);
        // The issuer follows what is stored.
        issuer
            .issue_for(&domain("after-conflict.certkeeper-test.com"))
            .await
            .unwrap();
        assert_eq!(url_and_key(&stage.credentials(&issuer).await).0, stored_url);
        assert_eq!(stage.accounts_registered(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_reseal_or_a_lost_answer_between_read_and_save_still_stores_the_new_key() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let issuer = stage.issuer();
        issuer
            .issue_for(&domain("reseal.certkeeper-test.com"))
            .await
            .unwrap();

        // The old credentials re-sealed meanwhile (a version later): they
        // are the key the CA now refuses, so the new key goes over them.
        let read = stage.record(&issuer).await.version;
        stage.store.set(Fault::ResealFirst);
        let rollover = issuer.rotate_account_key().await.unwrap();
        assert_eq!(rollover.version, read + 2);
        let fresh = stage.issuer();
        fresh
            .issue_for(&domain("after-reseal.certkeeper-test.com"))
            .await
            .unwrap();

        // The save went through but its answer was lost: the next try is
        // refused, reads the store and finds our key there.
        stage.store.set(Fault::LoseAnswer);
        let read = stage.record(&issuer).await.version;
        let rollover = issuer.rotate_account_key().await.unwrap();
        assert_eq!(rollover.version, read + 1);
        stage
            .issuer()
            .issue_for(&domain("after-lost-answer.certkeeper-test.com"))
            .await
            .unwrap();
        assert_eq!(stage.accounts_registered(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_new_key_the_store_refuses_is_kept_signing_and_stored_once_it_is_back() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let issuer = stage.issuer();
        issuer
            .issue_for(&domain("first.certkeeper-test.com"))
            .await
            .unwrap();
        let before = stage.record(&issuer).await;
        let old = stage.credentials(&issuer).await;

        // The database is down for good: tried for a while, then a typed
        // error naming the account, never the key.
        stage.store.set(Fault::FailSaves);
        let started = Instant::now();
        let saves = stage.store.saves.load(Ordering::SeqCst);
        let err = issuer.rotate_account_key().await.unwrap_err();
        let Error::AccountKeyNotStored {
            account_id,
            account_url,
            source,
        } = &err
        else {
            panic!("expected AccountKeyNotStored, got {err:?}");
        };
        assert_eq!(account_id, issuer.account_id());
        assert_eq!(account_url, &url_and_key(&old).0);
        assert!(source.is_store_failure(), "{source:?}");
        assert_eq!(err.code(), "account_key_not_stored");
        assert!(
            started.elapsed() >= Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(stage.store.saves.load(Ordering::SeqCst) - saves >= 5);
        assert_eq!(stage.record(&issuer).await, before);
        let message = err.to_string();
        assert!(!message.contains(&url_and_key(&old).1[..16]), "{message}");

        // This issuer signs with the new key, the store still down.
        issuer
            .issue_for(&domain("while-down.certkeeper-test.com"))
            .await
            .unwrap();
        assert!(matches!(
            issuer.store_pending_account_key().await,
            Err(Error::AccountKeyNotStored { .. })
        ));
        // An instance reading the store has only the old key: refused.
        let other = stage.issuer();
        let refused = other
            .issue_for(&domain("other-while-down.certkeeper-test.com"))
            .await
            .unwrap_err();
        assert!(refused.acme_problem().is_some(), "{refused:?}");

        // The store is back: stored at once, and the other instance follows.
        stage.store.set(Fault::None);
        let stored = issuer.store_pending_account_key().await.unwrap().unwrap();
        assert_eq!(stored.version, before.version + 1);
        assert_ne!(stored.new_key_thumbprint, stored.old_key_thumbprint);
        assert!(issuer.store_pending_account_key().await.unwrap().is_none());
        other
            .issue_for(&domain("other-after.certkeeper-test.com"))
            .await
            .unwrap();
        refused_order(&stage, &old, "old.certkeeper-test.com").await;

        // Down again for a moment: the rollover waits and stores it.
        stage.store.set(Fault::FailSaves);
        let healer = {
            let store = stage.store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                store.set(Fault::None);
            })
        };
        let rollover = issuer.rotate_account_key().await.unwrap();
        healer.await.unwrap();
        assert_eq!(rollover.version, stage.record(&issuer).await.version);
        stage
            .issuer()
            .issue_for(&domain("last.certkeeper-test.com"))
            .await
            .unwrap();
        assert_eq!(stage.accounts_registered(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_key_change_whose_answer_is_lost_is_told_from_one_never_sent() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let fault = Arc::new(Mutex::new(KeyChangeFault::None));
        let (issuer, key_changes) = stage.switching_issuer(fault.clone());
        issuer
            .issue_for(&domain("first.certkeeper-test.com"))
            .await
            .unwrap();
        let before = stage.record(&issuer).await;
        let old = stage.credentials(&issuer).await;

        // Never sent: the CA still takes the old key, nothing changed.
        *fault.lock().unwrap() = KeyChangeFault::NeverSent;
        let err = issuer.rotate_account_key().await.unwrap_err();
        assert!(err.is_ca_unavailable(), "{err:?}");
        assert!(
            matches!(
                &err,
                Error::Acme {
                    step: "key-change",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(key_changes.load(Ordering::SeqCst), 1);
        assert_eq!(stage.record(&issuer).await, before);
        stage
            .issuer()
            .issue_for(&domain("unchanged.certkeeper-test.com"))
            .await
            .unwrap();

        // Sent, and the answer lost: the CA took a key no one has, so the
        // account is lost; a new one is registered in its place.
        *fault.lock().unwrap() = KeyChangeFault::LoseAnswer;
        let err = issuer.rotate_account_key().await.unwrap_err();
        let Error::AccountKeyLost {
            account_url,
            replaced_by,
            ..
        } = &err
        else {
            panic!("expected AccountKeyLost, got {err:?}");
        };
        assert_eq!(account_url, &url_and_key(&old).0);
        let replaced_by = replaced_by.clone().expect("a new account registered");
        assert_ne!(&replaced_by, account_url);
        assert_eq!(err.code(), "account_key_lost");
        refused_order(&stage, &old, "lost.certkeeper-test.com").await;
        assert_eq!(
            url_and_key(&stage.credentials(&issuer).await).0,
            replaced_by
        );
        assert_eq!(stage.accounts_registered(), 2);
        *fault.lock().unwrap() = KeyChangeFault::None;
        issuer
            .issue_for(&domain("replaced.certkeeper-test.com"))
            .await
            .unwrap();
        stage
            .issuer()
            .issue_for(&domain("replaced-fresh.certkeeper-test.com"))
            .await
            .unwrap();
        assert_eq!(stage.accounts_registered(), 2);
    })
    .await;
}
