//! `PostgresStore` and `MySqlStore` against real servers: the whole
//! conformance suite, two stores (two pools) sharing one database for
//! compare-and-swap, leases, challenges and the change feed, concurrent
//! first starts, corrupt rows, and a dump of the database that must hold no
//! private key.
//!
//! Each test works in a schema (PostgreSQL) or database (MariaDB / MySQL) of
//! its own, dropped at the end. The servers come from
//! `CERTKEEPER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `CERTKEEPER_TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`).

#![cfg(any(feature = "postgres", feature = "mysql"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use base64::prelude::{Engine, BASE64_STANDARD};
use certkeeper::cert::IssuerKind;
use certkeeper::cipher::Keyring;
use certkeeper::issuer::SelfSignedIssuer;
use certkeeper::store::{CertRecord, CertStore, MemoryStore, StoredCert};
use certkeeper::vault::Vault;
use certkeeper::{Domain, Error};
use sha2::{Digest, Sha256};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T: OffsetDateTime = datetime!(2031-05-01 10:00:00 UTC);

/// A name unique to this call: 12 hex digits.
pub(crate) fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hash = Sha256::new();
    hash.update(
        OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes(),
    );
    hash.update(std::process::id().to_be_bytes());
    hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    hash.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn domain(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

/// Runs `cleanup` to completion on a runtime of its own, from a thread of its
/// own: usable in `Drop`, also while a test panics.
fn run_to_completion<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cleanup);
    })
    .join();
}

/// `url` naming `database` instead of its own.
fn with_database(url: &str, database: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[authority..]
        .find('/')
        .map_or(url.len(), |i| authority + i);
    format!("{}/{database}{query}", &url[..host_end])
}

// ---------------------------------------------------------------------------
// Scenarios shared by both backends.

/// Two stores over separate pools on one database: what one writes the
/// other reads, compare-and-swap and leases hold across them.
async fn two_stores_share_one_database(a: &dyn CertStore, b: &dyn CertStore) {
    let name = domain("shared.example.com");
    let v1 = CertRecord {
        version: a.save(&CertRecord::new(name.clone(), T)).await.unwrap(),
        ..CertRecord::new(name.clone(), T)
    };
    assert_eq!(v1.version, 1);
    assert_eq!(b.load(&name).await.unwrap().as_ref(), Some(&v1));

    // Compare-and-swap across the two pools.
    let mut update = v1.clone();
    update.attempts = 1;
    update.version = b.save(&update).await.unwrap();
    assert_eq!(update.version, 2);
    match a.save(&v1).await {
        Err(Error::Conflict {
            key,
            expected: 1,
            found: 2,
        }) => assert_eq!(key, "shared.example.com"),
        other => panic!("a stale save through the other pool: {other:?}"),
    }
    assert_eq!(a.load(&name).await.unwrap().as_ref(), Some(&update));

    // Racing saves of one version through both pools: one wins.
    for (case, base) in [
        ("updates", update.clone()),
        ("creations", CertRecord::new(domain("race.example.com"), T)),
    ] {
        let saves = (0..16u32).map(|i| {
            let store = if i % 2 == 0 { a } else { b };
            let record = CertRecord {
                attempts: i,
                ..base.clone()
            };
            async move { store.save(&record).await }
        });
        let results = join_all(saves).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "racing {case}: {results:?}");
        for r in &results {
            assert!(
                matches!(r, Ok(_) | Err(Error::Conflict { .. })),
                "racing {case}: {r:?}"
            );
        }
    }

    // Leases across the two pools (expiry on the server's clock is in
    // the conformance suite's run_shared).
    let (ca, cb) = (a.cluster().unwrap(), b.cluster().unwrap());
    let ttl = StdDuration::from_secs(30);
    assert!(ca.acquire_lease("cycle", "node-a", ttl).await.unwrap());
    assert!(!cb.acquire_lease("cycle", "node-b", ttl).await.unwrap());
    assert!(ca.acquire_lease("cycle", "node-a", ttl).await.unwrap());
    assert!(!cb.release_lease("cycle", "node-b").await.unwrap());
    assert!(ca.release_lease("cycle", "node-a").await.unwrap());
    assert!(cb.acquire_lease("cycle", "node-b", ttl).await.unwrap());
    // The holder, whichever pool it goes through, renews it.
    assert!(ca.acquire_lease("cycle", "node-b", ttl).await.unwrap());
    assert!(cb.release_lease("cycle", "node-b").await.unwrap());

    // Racing holders of a free lease: exactly one gets it.
    let tries = (0..16).map(|i| {
        let cluster = if i % 2 == 0 { ca } else { cb };
        async move {
            cluster
                .acquire_lease("race", &format!("node-{i}"), ttl)
                .await
                .unwrap()
        }
    });
    let granted = join_all(tries).await;
    assert_eq!(granted.iter().filter(|g| **g).count(), 1, "{granted:?}");

    // HTTP-01 answers put by one are served by the other, until they
    // expire on the server's clock.
    let minute = StdDuration::from_secs(60);
    ca.put_challenge("Tok-en_1", "Tok-en_1.thumb", minute)
        .await
        .unwrap();
    assert_eq!(
        cb.get_challenge("Tok-en_1").await.unwrap().as_deref(),
        Some("Tok-en_1.thumb")
    );
    assert_eq!(cb.get_challenge("tok-en_1").await.unwrap(), None);
    ca.put_challenge("Tok-en_2", "Tok-en_2.thumb", minute)
        .await
        .unwrap();
    ca.delete_challenge("Tok-en_2").await.unwrap();
    assert_eq!(cb.get_challenge("Tok-en_2").await.unwrap(), None);
    ca.put_challenge("Tok-en_3", "Tok-en_3.thumb", StdDuration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert_eq!(cb.get_challenge("Tok-en_3").await.unwrap(), None);
    assert!(cb.purge_expired_challenges().await.unwrap() >= 1);
    assert!(cb.get_challenge("Tok-en_1").await.unwrap().is_some());

    // Settings: racing first writers through both pools agree.
    let puts = (0..16).map(|i| {
        let store = if i % 2 == 0 { a } else { b };
        async move {
            store
                .put_meta_if_absent("main-domain", &format!("site{i}.example.com"))
                .await
                .unwrap()
        }
    });
    let answers = join_all(puts).await;
    assert!(answers.iter().all(|v| *v == answers[0]), "{answers:?}");
    assert_eq!(
        b.get_meta("main-domain").await.unwrap(),
        Some(answers[0].clone())
    );

    // The change feed written through one is read through the other.
    let feed = cb.changes_since(0, 100).await.unwrap();
    assert!(!feed.reset);
    let ours: Vec<&str> = feed.changes.iter().map(|c| c.domain.as_str()).collect();
    assert_eq!(
        ours,
        [
            "shared.example.com",
            "shared.example.com",
            "shared.example.com",
            "race.example.com"
        ]
    );
    assert!(a.delete(&name).await.unwrap());
    let next = cb.changes_since(feed.cursor, 100).await.unwrap();
    assert_eq!(next.changes.len(), 1);
    assert!(next.changes[0].deleted);
}

/// `due` answers as the reference `MemoryStore` for attempt counts below
/// and above 16 distinct values, with limits that cut inside a renew date.
async fn due_matches_the_reference(store: &dyn CertStore) {
    let reference = MemoryStore::new();
    let mut saved = Vec::new();
    for i in 0..90u32 {
        // Three records per renew date, attempt counts 0 to 29.
        let record = CertRecord {
            attempts: (i * 7) % 30,
            ..CertRecord::new(
                domain(&format!("h{:02}.due.example.com", (i * 37) % 90)),
                T - Duration::minutes(i64::from(i / 3)),
            )
        };
        store.save(&record).await.unwrap();
        reference.save(&record).await.unwrap();
        saved.push(record);
    }
    for max_attempts in [1, 2, 5, 16, 17, 18, 29, 30, 31, u32::MAX] {
        for limit in [1, 7, 50, usize::MAX] {
            for now in [T, T - Duration::minutes(10), T - Duration::days(1)] {
                assert_eq!(
                    store.due(now, max_attempts, limit).await.unwrap(),
                    reference.due(now, max_attempts, limit).await.unwrap(),
                    "due(now {now}, max_attempts {max_attempts}, limit {limit})"
                );
            }
        }
    }
    // Few distinct counts under a large max_attempts: merged by range.
    for record in &saved {
        if record.attempts % 10 != 0 {
            store.delete(&record.domain).await.unwrap();
            reference.delete(&record.domain).await.unwrap();
        }
    }
    for max_attempts in [17, 21, 1000] {
        assert_eq!(
            store.due(T, max_attempts, 1000).await.unwrap(),
            reference.due(T, max_attempts, 1000).await.unwrap(),
        );
    }
}

/// The feed keeps the newest `3` changes and the last hour's; `age` moves
/// every change written so far two hours back.
async fn change_feed_pruning<F, Fut>(store: &dyn CertStore, age: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let name = domain("feed.example.com");
    let mut record = CertRecord::new(name.clone(), T);
    for _ in 0..5 {
        record.version = store.save(&record).await.unwrap();
        record.attempts += 1;
    }
    let feed = store.cluster().unwrap();
    let from = |cursor| feed.changes_since(cursor, 10);
    let seqs = |c: &certkeeper::store::Changes| c.changes.iter().map(|c| c.seq).collect::<Vec<_>>();
    // Changes 1 and 2 were pruned.
    let reset = from(0).await.unwrap();
    assert!(
        reset.reset && reset.changes.is_empty() && reset.cursor == 5,
        "{reset:?}"
    );
    assert!(from(1).await.unwrap().reset);
    let kept = from(2).await.unwrap();
    assert!(!kept.reset);
    assert_eq!((seqs(&kept), kept.cursor), (vec![3, 4, 5], 5));
    let page = feed.changes_since(2, 2).await.unwrap();
    assert_eq!((seqs(&page), page.cursor), (vec![3, 4], 4));
    assert!(from(6).await.unwrap().reset, "a cursor ahead of the store");

    // Changes older than the age limit go at the next write.
    age().await;
    store.delete(&name).await.unwrap();
    let latest = from(5).await.unwrap();
    assert!(!latest.reset);
    assert_eq!(seqs(&latest), [6]);
    assert!(latest.changes[0].deleted);
    assert!(from(4).await.unwrap().reset);
}

/// A record whose key is a real private key sealed by a real keyring, for
/// the dump tests; returns it with the key's PEM.
async fn save_sealed_record(store: Arc<dyn CertStore>) -> (CertRecord, String) {
    let keyring = Keyring::from_keys(true, [(1, "sql dump test passphrase, long enough")]).unwrap();
    let vault = Vault::new(store.clone(), Arc::new(keyring));
    let name = domain("dump.example.com");
    let issued = SelfSignedIssuer::new().issue_blocking(&name).unwrap();
    assert!(issued.key_pem.contains("PRIVATE KEY"));
    let mut record = CertRecord::new(name.clone(), issued.not_after);
    record.certificate = Some(StoredCert {
        chain_pem: issued.chain_pem.clone(),
        sealed_key: vault
            .seal_cert_key(&name, issued.key_pem.as_bytes())
            .unwrap(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        fingerprint: issued.fingerprint.clone(),
        issuer: IssuerKind::SELF_SIGNED,
    });
    record.version = store.save(&record).await.unwrap();
    let loaded = store.load(&name).await.unwrap().unwrap();
    assert_eq!(loaded, record);
    let opened = vault
        .open_cert_key(&name, loaded.certificate.as_ref().unwrap())
        .unwrap();
    assert_eq!(&opened[..], issued.key_pem.as_bytes());
    (record, issued.key_pem.to_string())
}

/// The dump holds the record (its chain and sealed key) but neither the
/// private key nor any base64 of it.
fn assert_dump_holds_no_key(dump: &str, record: &CertRecord, key_pem: &str) {
    let sealed = BASE64_STANDARD.encode(record.certificate.as_ref().unwrap().sealed_key.as_bytes());
    assert!(
        dump.contains("dump.example.com"),
        "the dump misses the record"
    );
    assert!(dump.contains(&sealed), "the dump misses the sealed key");
    assert!(
        dump.contains("BEGIN CERTIFICATE"),
        "the dump misses the chain"
    );
    assert!(
        !dump.contains("PRIVATE KEY"),
        "the dump holds a PEM private key"
    );
    // The PEM body is the base64 of the key's DER; no line of it may appear,
    // nor the base64 of the whole PEM text.
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(line.len() >= 16, "{line:?}");
        assert!(!dump.contains(line), "the dump holds the key's base64");
    }
    let pem_base64 = BASE64_STANDARD.encode(key_pem.as_bytes());
    assert!(!dump.contains(&pem_base64[..40]));
    let der = BASE64_STANDARD
        .decode(
            key_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    assert!(!dump.contains(&BASE64_STANDARD.encode(&der)[..40]));
}

/// Polls every future until all have finished, from the calling task.
pub(crate) async fn join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The login throttle's counters through two instances' backends: every
/// hit counted once, refunds and resets seen by both, a window that ends
/// starts again, and the per-email limit holds across instances.
/// The CA's order budget through two instances sharing one database: the
/// first issuer takes the only order of the window (its CA is not even up,
/// so that order fails as the CA's fault), and the second, on another
/// connection pool, is refused with `Error::BudgetSpent` before anything is
/// sent.
async fn ca_order_budget_is_shared(a: Arc<dyn CertStore>, b: Arc<dyn CertStore>) {
    use certkeeper::error::Budget;
    use certkeeper::issuer::{AcmeIssuer, CaBudgets, IssuerExt};
    // A port nothing listens on: the order after the budget fails fast.
    let directory = "https://127.0.0.1:9/dir";
    let issuer = |store: Arc<dyn CertStore>| {
        AcmeIssuer::builder(directory)
            .contact_email("ops@certkeeper-test.com")
            .solver(Arc::new(certkeeper::challenge::Http01Solver::new()))
            .store(store)
            .cipher(Arc::new(
                Keyring::from_keys(true, [(1, "Zq4uT9pLw2nX7cVb5mKr8sHd3fJg6yEa")]).unwrap(),
            ))
            .budgets(CaBudgets {
                orders: 1,
                ..CaBudgets::default()
            })
            .request_timeout(StdDuration::from_secs(5))
            .build()
            .unwrap()
    };
    let name = Domain::new(&format!("budget-{}.certkeeper-test.com", unique())).unwrap();
    let first = issuer(a).issue_for(&name).await.unwrap_err();
    assert!(first.is_ca_unavailable(), "{first:?}");
    let second = issuer(b).issue_for(&name).await.unwrap_err();
    assert!(
        matches!(
            second,
            Error::BudgetSpent {
                budget: Budget::Orders,
                limit: 1,
                ..
            }
        ),
        "{second:?}"
    );
}

#[cfg(feature = "access")]
async fn login_throttle_is_shared(
    a: Arc<dyn certkeeper::access::ThrottleBackend>,
    b: Arc<dyn certkeeper::access::ThrottleBackend>,
) {
    use certkeeper::access::{LoginThrottle, ThrottleLimits};
    let hour = time::Duration::hours(1);
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let key = "test-key";
    let hits = (0..40).map(|i| {
        let backend = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { backend.hit(key, now, hour, 10).await.unwrap() }
    });
    let mut counts: Vec<u64> = join_all(hits).await.iter().map(|w| w.count).collect();
    counts.sort();
    assert_eq!(
        counts,
        (1..=40).collect::<Vec<_>>(),
        "each hit counted once"
    );
    b.refund(key, now).await.unwrap();
    assert_eq!(a.hit(key, now, hour, 10).await.unwrap().count, 40);
    a.reset(key).await.unwrap();
    let first = b.hit(key, now, hour, 10).await.unwrap();
    assert_eq!(first.count, 1);
    assert_eq!(first.resets_at, now + hour);
    // The window ends: the next hit opens a new one.
    assert_eq!(a.hit(key, now + hour, hour, 10).await.unwrap().count, 1);

    // The limit holds for the cluster: 10 sign-in attempts per email,
    // wherever they land.
    let limits = ThrottleLimits::default();
    let one = LoginThrottle::builder()
        .backend(a)
        .limits(limits)
        .build()
        .unwrap();
    let two = LoginThrottle::builder()
        .backend(b)
        .limits(limits)
        .build()
        .unwrap();
    let ip: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    for attempt in 0..10 {
        let throttle = if attempt % 2 == 0 { &one } else { &two };
        assert!(throttle
            .check("ops@example.com", ip)
            .await
            .unwrap()
            .is_allowed());
    }
    assert!(!one.check("ops@example.com", ip).await.unwrap().is_allowed());
    assert!(!two.check("ops@example.com", ip).await.unwrap().is_allowed());
}

// ---------------------------------------------------------------------------
// PostgreSQL

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use super::*;
    #[cfg(feature = "conformance")]
    use certkeeper::store::conformance;
    use certkeeper::store::PostgresStore;
    use sqlx::postgres::PgConnection;
    use sqlx::{Connection, Executor};

    /// The lock the migrator takes (documented with the store).
    const MIGRATION_LOCK: i64 = 0x6365_7274_6b70_6731;

    pub(crate) fn base_url() -> String {
        std::env::var("CERTKEEPER_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A schema of its own, dropped with the value.
    pub(crate) struct Schema {
        pub(crate) name: String,
    }

    impl Schema {
        pub(crate) async fn new() -> Self {
            let name = format!("certkeeper_test_{}", unique());
            let mut conn = PgConnection::connect(&base_url()).await.unwrap();
            conn.execute(format!("CREATE SCHEMA {name}").as_str())
                .await
                .unwrap();
            Self { name }
        }

        /// The URL of the test database with this schema first in the
        /// search path.
        pub(crate) fn url(&self) -> String {
            let base = base_url();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{}", self.name)
        }

        pub(crate) async fn connection(&self) -> PgConnection {
            PgConnection::connect(&self.url()).await.unwrap()
        }

        pub(crate) async fn store(&self) -> PostgresStore {
            PostgresStore::connect(&self.url()).await.unwrap()
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let name = self.name.clone();
            run_to_completion(async move {
                if let Ok(mut conn) = PgConnection::connect(&base_url()).await {
                    let _ = conn
                        .execute(format!("DROP SCHEMA IF EXISTS {name} CASCADE").as_str())
                        .await;
                }
            });
        }
    }

    #[cfg(feature = "conformance")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_conforms() {
        let schema = Schema::new().await;
        let store = schema.store().await;
        conformance::run_all(&store).await;
        // Again over a second pool on the migrated schema, then the checks
        // through two pools.
        let other = schema.store().await;
        conformance::run_all(&other).await;
        conformance::run_shared(&store, &other).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_ca_order_budget_is_shared_by_every_instance() {
        let schema = Schema::new().await;
        let (a, b) = (schema.store().await, schema.store().await);
        ca_order_budget_is_shared(Arc::new(a), Arc::new(b)).await;
    }

    #[cfg(feature = "access")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_login_throttle_is_shared_by_every_instance() {
        let schema = Schema::new().await;
        let (a, b) = (schema.store().await, schema.store().await);
        login_throttle_is_shared(Arc::new(a), Arc::new(b)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_due_matches_the_reference_store() {
        let schema = Schema::new().await;
        due_matches_the_reference(&schema.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_two_stores_share_one_database() {
        let schema = Schema::new().await;
        let (a, b) = (schema.store().await, schema.store().await);
        two_stores_share_one_database(&a, &b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_four_instances_start_together_on_a_fresh_schema() {
        let schema = Schema::new().await;
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = schema.url();
                tokio::spawn(async move { PostgresStore::connect(&url).await })
            })
            .collect();
        let mut stores = Vec::new();
        for start in starts {
            stores.push(
                start
                    .await
                    .unwrap()
                    .expect("a concurrent first start failed"),
            );
        }
        let mut conn = schema.connection().await;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM certkeeper_migrations ORDER BY version")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(applied, [1, 2, 3], "each migration applied once");
        let record = CertRecord::new(domain("a.example.com"), T);
        assert_eq!(stores[0].save(&record).await.unwrap(), 1);
        assert_eq!(stores[3].list().await.unwrap(), [domain("a.example.com")]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_start_waits_for_the_migration_lock() {
        let schema = Schema::new().await;
        let mut holder = schema.connection().await;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut holder)
            .await
            .unwrap();
        let url = schema.url();
        let start = tokio::spawn(async move { PostgresStore::connect(&url).await });
        tokio::time::sleep(StdDuration::from_millis(700)).await;
        assert!(!start.is_finished(), "migrated without the lock");
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut holder)
            .await
            .unwrap();
        let store = start.await.unwrap().unwrap();
        assert!(store.list().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_change_feed_is_pruned_and_resets_readers_behind() {
        let schema = Schema::new().await;
        let store = schema
            .store()
            .await
            .with_change_retention(3, StdDuration::from_secs(3600));
        let url = schema.url();
        change_feed_pruning(&store, || async {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            conn.execute(
                "UPDATE certkeeper_changes SET changed_at = changed_at - interval '2 hours'",
            )
            .await
            .unwrap();
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_corrupt_rows_and_failures_are_typed() {
        let schema = Schema::new().await;
        let store = schema.store().await;
        let record = CertRecord::new(domain("broken.example.com"), T);
        store.save(&record).await.unwrap();
        let mut conn = schema.connection().await;
        conn.execute("UPDATE certkeeper_certificates SET record = '{\"domain\": 1'")
            .await
            .unwrap();
        let loaded = store.load(&record.domain).await;
        assert!(
            matches!(loaded, Err(Error::Corrupt { ref key, .. }) if key == "broken.example.com"),
            "{loaded:?}"
        );
        assert!(store.delete(&record.domain).await.unwrap());
        // A renew date outside what the column keeps is refused.
        let ancient = CertRecord::new(domain("old.example.com"), datetime!(0999-01-01 0:00 UTC));
        assert!(matches!(
            store.save(&ancient).await,
            Err(Error::Store { .. })
        ));
        // A failing database is a store error with the driver's error as source.
        let url = with_database(&base_url(), "certkeeper_no_such_database");
        match PostgresStore::connect(&url).await {
            Err(Error::Store {
                store: "postgres",
                source: Some(source),
                ..
            }) => assert!(source.downcast_ref::<sqlx::Error>().is_some()),
            other => panic!("{other:?}"),
        }
        // The Debug output shows no connection details.
        let debug = format!("{store:?}");
        assert!(
            debug.starts_with("PostgresStore") && !debug.contains("127.0.0.1"),
            "{debug}"
        );
    }

    /// The TLS stack the store is built with (rustls over ring) talks to the
    /// server; skipped when the server has TLS off.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_over_tls() {
        let schema = Schema::new().await;
        let mut conn = schema.connection().await;
        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if ssl != "on" {
            eprintln!("the PostgreSQL server has TLS off; nothing to check");
            return;
        }
        let store = PostgresStore::connect(&format!("{}&sslmode=require", schema.url()))
            .await
            .unwrap();
        let encrypted: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(encrypted);
        let record = CertRecord::new(domain("tls.example.com"), T);
        assert_eq!(store.save(&record).await.unwrap(), 1);
        assert_eq!(store.list().await.unwrap(), [record.domain]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_dump_holds_no_private_key() {
        let schema = Schema::new().await;
        let store: Arc<dyn CertStore> = Arc::new(schema.store().await);
        let (record, key_pem) = save_sealed_record(store).await;
        let out = std::process::Command::new("pg_dump")
            .arg(format!("--dbname={}", base_url()))
            .arg(format!("--schema={}", schema.name))
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = String::from_utf8(out.stdout).unwrap();
        assert!(dump.contains("certkeeper_certificates"));
        assert_dump_holds_no_key(&dump, &record, &key_pem);
    }
}

// ---------------------------------------------------------------------------
// MariaDB / MySQL

#[cfg(feature = "mysql")]
pub(crate) mod mysql {
    use super::*;
    #[cfg(feature = "conformance")]
    use certkeeper::store::conformance;
    use certkeeper::store::MySqlStore;
    use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
    use sqlx::{Connection, Executor};

    pub(crate) fn base_url() -> String {
        std::env::var("CERTKEEPER_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
    }

    /// A database of its own, dropped with the value.
    pub(crate) struct Database {
        pub(crate) name: String,
    }

    impl Database {
        pub(crate) async fn new() -> Self {
            let name = format!("certkeeper_test_{}", unique());
            let mut conn = MySqlConnection::connect(&base_url()).await.unwrap();
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            Self { name }
        }

        pub(crate) fn url(&self) -> String {
            with_database(&base_url(), &self.name)
        }

        pub(crate) async fn connection(&self) -> MySqlConnection {
            MySqlConnection::connect(&self.url()).await.unwrap()
        }

        pub(crate) async fn store(&self) -> MySqlStore {
            MySqlStore::connect(&self.url()).await.unwrap()
        }
    }

    impl Drop for Database {
        fn drop(&mut self) {
            let name = self.name.clone();
            run_to_completion(async move {
                if let Ok(mut conn) = MySqlConnection::connect(&base_url()).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                        .await;
                }
            });
        }
    }

    #[cfg(feature = "conformance")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_store_conforms() {
        let db = Database::new().await;
        let store = db.store().await;
        conformance::run_all(&store).await;
        let other = db.store().await;
        conformance::run_all(&other).await;
        conformance::run_shared(&store, &other).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_ca_order_budget_is_shared_by_every_instance() {
        let db = Database::new().await;
        let (a, b) = (db.store().await, db.store().await);
        ca_order_budget_is_shared(Arc::new(a), Arc::new(b)).await;
    }

    #[cfg(feature = "access")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_login_throttle_is_shared_by_every_instance() {
        let db = Database::new().await;
        let (a, b) = (db.store().await, db.store().await);
        login_throttle_is_shared(Arc::new(a), Arc::new(b)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_due_matches_the_reference_store() {
        let db = Database::new().await;
        due_matches_the_reference(&db.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_two_stores_share_one_database() {
        let db = Database::new().await;
        let (a, b) = (db.store().await, db.store().await);
        two_stores_share_one_database(&a, &b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_four_instances_start_together_on_a_fresh_database() {
        let db = Database::new().await;
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url();
                tokio::spawn(async move { MySqlStore::connect(&url).await })
            })
            .collect();
        let mut stores = Vec::new();
        for start in starts {
            stores.push(
                start
                    .await
                    .unwrap()
                    .expect("a concurrent first start failed"),
            );
        }
        let mut conn = db.connection().await;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM certkeeper_migrations ORDER BY version")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(applied, [1, 2, 3], "each migration applied once");
        let seq_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certkeeper_change_seq")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(seq_rows, 1);
        let record = CertRecord::new(domain("a.example.com"), T);
        assert_eq!(stores[0].save(&record).await.unwrap(), 1);
        assert_eq!(stores[3].list().await.unwrap(), [domain("a.example.com")]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_a_start_waits_for_the_migration_lock() {
        let db = Database::new().await;
        // The lock's name (documented with the store).
        let digest: String = Sha256::digest(db.name.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let lock = format!("certkeeper-migrate-{}", &digest[..32]);
        let mut holder = db.connection().await;
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
            .bind(&lock)
            .fetch_one(&mut holder)
            .await
            .unwrap();
        assert_eq!(locked, Some(1));
        let url = db.url();
        let start = tokio::spawn(async move { MySqlStore::connect(&url).await });
        tokio::time::sleep(StdDuration::from_millis(700)).await;
        assert!(!start.is_finished(), "migrated without the lock");
        sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(&lock)
            .execute(&mut holder)
            .await
            .unwrap();
        let store = start.await.unwrap().unwrap();
        assert!(store.list().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_change_feed_is_pruned_and_resets_readers_behind() {
        let db = Database::new().await;
        let store = db
            .store()
            .await
            .with_change_retention(3, StdDuration::from_secs(3600));
        let url = db.url();
        change_feed_pruning(&store, || async {
            let mut conn = MySqlConnection::connect(&url).await.unwrap();
            conn.execute("UPDATE certkeeper_changes SET changed_at = changed_at - INTERVAL 2 HOUR")
                .await
                .unwrap();
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_corrupt_rows_and_failures_are_typed() {
        let db = Database::new().await;
        let store = db.store().await;
        let record = CertRecord::new(domain("broken.example.com"), T);
        store.save(&record).await.unwrap();
        let mut conn = db.connection().await;
        conn.execute("UPDATE certkeeper_certificates SET record = '{\"domain\": 1'")
            .await
            .unwrap();
        let loaded = store.load(&record.domain).await;
        assert!(
            matches!(loaded, Err(Error::Corrupt { ref key, .. }) if key == "broken.example.com"),
            "{loaded:?}"
        );
        assert!(store.delete(&record.domain).await.unwrap());
        let ancient = CertRecord::new(domain("old.example.com"), datetime!(0999-01-01 0:00 UTC));
        assert!(matches!(
            store.save(&ancient).await,
            Err(Error::Store { .. })
        ));
        let url = with_database(&base_url(), "certkeeper_no_such_database");
        match MySqlStore::connect(&url).await {
            Err(Error::Store {
                store: "mysql",
                source: Some(source),
                ..
            }) => assert!(source.downcast_ref::<sqlx::Error>().is_some()),
            other => panic!("{other:?}"),
        }
        // A URL without a database is refused with a plain explanation.
        let url = with_database(&base_url(), "");
        match MySqlStore::connect(url.trim_end_matches('/')).await {
            Err(Error::Store { message, .. }) => {
                assert!(message.contains("names no database"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let debug = format!("{store:?}");
        assert!(
            debug.starts_with("MySqlStore") && !debug.contains("127.0.0.1"),
            "{debug}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_dump_holds_no_private_key() {
        let db = Database::new().await;
        let store: Arc<dyn CertStore> = Arc::new(db.store().await);
        let (record, key_pem) = save_sealed_record(store).await;
        let options: MySqlConnectOptions = base_url().parse().unwrap();
        let dump_tool = if std::process::Command::new("mariadb-dump")
            .arg("--version")
            .output()
            .is_ok()
        {
            "mariadb-dump"
        } else {
            "mysqldump"
        };
        let mut command = std::process::Command::new(dump_tool);
        command
            .arg(format!("--host={}", options.get_host()))
            .arg(format!("--port={}", options.get_port()))
            .arg(format!("--user={}", options.get_username()))
            .arg(&db.name);
        if let Some(password) = url_password(&base_url()) {
            command.env("MYSQL_PWD", password);
        }
        let out = command.output().expect("the dump tool runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = String::from_utf8(out.stdout).unwrap();
        assert!(dump.contains("certkeeper_certificates"));
        assert_dump_holds_no_key(&dump, &record, &key_pem);
    }

    /// The password of `url`, if it has one.
    fn url_password(url: &str) -> Option<String> {
        let rest = &url[url.find("://")? + 3..];
        let userinfo = &rest[..rest.find('@')?];
        userinfo.split_once(':').map(|(_, p)| p.to_owned())
    }
}
