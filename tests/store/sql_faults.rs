//! `PostgresStore` and `MySqlStore` when things go wrong between them and
//! their server: real deadlocks, serialization failures and lock wait
//! timeouts (run again, and the call succeeds), a network that goes silent
//! (every call ends within its deadline with a typed error, and works again
//! once the network is back), a moment of connection resets on the HTTP-01
//! answer's read (the CA still gets the answer), and the public validation
//! path, which must never make the database write.
//!
//! The faults come from [`FaultProxy`] between a store's pool and the
//! server. Each test works in a schema (PostgreSQL) or database (MariaDB)
//! of its own, as `sql_stores` does.

#![cfg(any(feature = "postgres", feature = "mysql"))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper::challenge::{Challenge, ChallengeSolver, Http01Solver, CHALLENGE_PATH_PREFIX};
use certkeeper::store::{CertRecord, CertStore};
use certkeeper::Error;
use time::macros::datetime;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::fault_proxy::{server_of, via, Direction, FaultProxy, Mode};
use crate::common::{domain, limited};
use crate::sql_stores::unique;

const T: OffsetDateTime = datetime!(2031-05-01 10:00:00 UTC);

#[test]
fn urls_are_pointed_at_the_proxy() {
    let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    assert_eq!(
        via("postgres://postgres@127.0.0.1:5432/test?options=x", proxy),
        "postgres://postgres@127.0.0.1:4000/test?options=x"
    );
    assert_eq!(
        via("mysql://root:pw@db.internal/test", proxy),
        "mysql://root:pw@127.0.0.1:4000/test"
    );
    assert_eq!(via("mysql://db:3306", proxy), "mysql://127.0.0.1:4000");
}

// ---------------------------------------------------------------------------
// The proxy itself, against an echo server.

/// An echo server on a free port.
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// Sends `message` and waits up to `wait` for its echo.
async fn echo(stream: &mut TcpStream, message: &[u8], wait: Duration) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut back = vec![0; message.len()];
    match tokio::time::timeout(wait, stream.read_exact(&mut back)).await {
        Ok(read) => read.map(|_| back),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_proxy_passes_resets_drops_delays_and_half_opens() {
    limited(Duration::from_secs(60), async {
        let proxy = FaultProxy::start(echo_server().await).await;
        let quiet = Duration::from_millis(300);
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut stream, b"one", quiet * 10).await.unwrap(), b"one");

        // Latency: each chunk waits, each way.
        proxy.set_mode(Mode::Latency(Duration::from_millis(200)));
        let started = Instant::now();
        assert_eq!(echo(&mut stream, b"two", quiet * 10).await.unwrap(), b"two");
        assert!(started.elapsed() >= Duration::from_millis(400));

        // Silent drop: the socket stays open, nothing comes back.
        proxy.set_mode(Mode::SilentDrop);
        let dropped = echo(&mut stream, b"lost", quiet).await.unwrap_err();
        assert_eq!(dropped.kind(), std::io::ErrorKind::TimedOut);
        let mut silent = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            echo(&mut silent, b"x", quiet).await.unwrap_err().kind(),
            std::io::ErrorKind::TimedOut
        );

        // Half-open: towards the server only, then back only.
        proxy.set_mode(Mode::Pass);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut fresh, b"ok", quiet * 10).await.unwrap(), b"ok");
        proxy.set_mode(Mode::OneWay(Direction::ToTarget));
        assert!(echo(&mut fresh, b"half", quiet).await.is_err());
        proxy.set_mode(Mode::OneWay(Direction::ToClient));
        assert!(echo(&mut fresh, b"open", quiet).await.is_err());

        // Reset: open connections and new ones are reset.
        proxy.set_mode(Mode::Pass);
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut open, b"up", quiet * 10).await.unwrap(), b"up");
        proxy.set_mode(Mode::Reset);
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(quiet * 10, open.read(&mut buf))
            .await
            .expect("the reset arrives");
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        // The reset may come before the connect returns, or after.
        let read = match TcpStream::connect(proxy.addr()).await {
            Ok(mut refused) => tokio::time::timeout(quiet * 10, refused.read(&mut buf))
                .await
                .expect("the reset arrives"),
            Err(e) => Err(e),
        };
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );

        // And back to normal.
        proxy.set_mode(Mode::Pass);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            echo(&mut again, b"back", quiet * 10).await.unwrap(),
            b"back"
        );
        assert_eq!(proxy.accepted(), 6);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Scenarios shared by both backends.

/// Every kind of call (load, save, acquire_lease, get_challenge), through a
/// proxy gone silent, ends with a store error within about the deadline;
/// twice each, more calls than the pool has connections, so a connection
/// that timed out and was pooled again would starve the calls after. With
/// the proxy passing again, every call works.
async fn calls_end_within_the_deadline(
    store: &dyn CertStore,
    proxy: &FaultProxy,
    deadline: Duration,
) {
    let cluster = store.cluster().unwrap();
    let record = CertRecord::new(domain("silent.example.com"), T);
    let saved = CertRecord {
        version: store.save(&record).await.unwrap(),
        ..record
    };
    let token = format!("silent-{}", unique());
    cluster
        .put_challenge(&token, "key.authorization", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(store.load(&saved.domain).await.unwrap().is_some());

    proxy.set_mode(Mode::SilentDrop);
    // Generous: the deadline is the bound tested, the rest is a busy machine.
    let bound = deadline + Duration::from_secs(5);
    for round in 0..2 {
        expect_deadline("load", bound, store.load(&saved.domain)).await;
        expect_deadline("save", bound, store.save(&saved)).await;
        expect_deadline(
            "acquire_lease",
            bound,
            cluster.acquire_lease("cycle", "node-a", Duration::from_secs(30)),
        )
        .await;
        expect_deadline("get_challenge", bound, cluster.get_challenge(&token)).await;
        eprintln!("round {round} ended within the deadline");
    }

    proxy.set_mode(Mode::Pass);
    // The pool opens fresh connections once the network is back; on a busy
    // machine the first may take longer than the deadline.
    let healed = Instant::now() + Duration::from_secs(30);
    let loaded = loop {
        match store.load(&saved.domain).await {
            Ok(loaded) => break loaded,
            Err(e) if Instant::now() < healed => {
                eprintln!("the network is back, the store not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not recover within 30 s: {e}"),
        }
    };
    assert_eq!(loaded.as_ref(), Some(&saved));
    assert_eq!(store.save(&saved).await.unwrap(), saved.version + 1);
    assert!(cluster
        .acquire_lease("cycle", "node-a", Duration::from_secs(30))
        .await
        .unwrap());
    assert_eq!(
        cluster.get_challenge(&token).await.unwrap().as_deref(),
        Some("key.authorization")
    );
    // Many calls at once, each on a sound connection.
    let loads = (0..32).map(|_| store.load(&saved.domain));
    for loaded in crate::sql_stores::join_all(loads).await {
        assert_eq!(loaded.unwrap().unwrap().version, saved.version + 1);
    }
}

/// `call` fails with `Error::Store` naming the deadline, within `bound`.
async fn expect_deadline<T: std::fmt::Debug>(
    name: &str,
    bound: Duration,
    call: impl std::future::Future<Output = certkeeper::Result<T>>,
) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(bound + Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{name} hung through a silent network"));
    let took = started.elapsed();
    match outcome {
        Err(Error::Store { ref message, .. }) if message.contains("deadline") => {}
        other => panic!("{name} through a silent network: {other:?}"),
    }
    assert!(took <= bound, "{name} took {took:?}, more than {bound:?}");
    eprintln!("{name} through a silent network failed after {took:?}");
}

/// The challenge answer kept in the store reaches the CA although the
/// answering instance's connections are reset for a moment when the CA
/// asks: the read runs again within the CA's patience.
async fn answer_survives_a_moment_of_resets(
    direct: Arc<dyn CertStore>,
    proxied: Arc<dyn CertStore>,
    proxy: &FaultProxy,
) {
    let token = format!("reset-{}", unique());
    let key_authorization = format!("{token}.thumbprint-of-the-account-key");
    // One instance presents the challenge ...
    let presenter = Http01Solver::new().with_store(direct);
    presenter
        .present(&Challenge {
            domain: domain("www.certkeeper-test.com"),
            token: token.clone(),
            key_authorization: key_authorization.clone(),
            dns_value: String::new(),
        })
        .await
        .unwrap();
    // ... the CA reaches another, whose connections to the database are
    // reset when the request comes.
    let answering = Http01Solver::new().with_store(proxied.clone());
    let server = answering
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Its pool has a connection open, reset below.
    assert_eq!(
        proxied
            .cluster()
            .unwrap()
            .get_challenge(&token)
            .await
            .unwrap()
            .as_deref(),
        Some(key_authorization.as_str())
    );
    for _ in 0..3 {
        proxy.set_mode(Mode::Reset);
        let heal = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            proxy.set_mode(Mode::Pass);
        };
        let path = format!("{CHALLENGE_PATH_PREFIX}{token}");
        let (reply, ()) = tokio::join!(get_once(server.local_addr(), &path), heal);
        assert_eq!(reply.0, 200, "{reply:?}");
        assert_eq!(reply.1, key_authorization.as_bytes());
    }
    assert!(proxy.accepted() > 1, "the pool reconnected");
}

/// A GET of `path` on a fresh connection: status and body.
async fn get_once(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: www.certkeeper-test.com\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let status = std::str::from_utf8(&raw[..split])
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, raw[split + 4..].to_vec())
}

/// A keep-alive HTTP/1.1 client for many requests on one connection.
struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// GETs `path`; the status.
    async fn get(&mut self, path: &str) -> u16 {
        self.stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: www.certkeeper-test.com\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .unwrap()
            .to_owned();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a Content-Length");
        while self.buf.len() < head_end + length {
            self.fill().await;
        }
        self.buf.drain(..head_end + length);
        status
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed a keep-alive connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// Requests sent by the validation-path test, and the connections they
/// are spread over.
const VALIDATION_REQUESTS: usize = 10_000;
const VALIDATION_CONNECTIONS: usize = 25;

/// Sends 10,000 requests for random tokens to an HTTP-01 listener that
/// answers from `store` (none of them is there): every one is answered
/// 404. Returns how long they took.
async fn random_tokens_are_answered_404(store: Arc<dyn CertStore>) -> Duration {
    let solver = Http01Solver::new().with_store(store);
    let server = solver.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr();
    let started = Instant::now();
    let clients = (0..VALIDATION_CONNECTIONS).map(|_| {
        tokio::spawn(async move {
            let mut client = KeepAlive::connect(addr).await;
            let mut statuses = Vec::new();
            for _ in 0..VALIDATION_REQUESTS / VALIDATION_CONNECTIONS {
                // 43 base64url characters, as CAs send.
                let token = format!("{}{}{}{}", unique(), unique(), unique(), unique());
                let token = &token[..43.min(token.len())];
                statuses.push(client.get(&format!("{CHALLENGE_PATH_PREFIX}{token}")).await);
            }
            statuses
        })
    });
    let mut answered = 0;
    for client in clients.collect::<Vec<_>>() {
        for status in client.await.unwrap() {
            assert_eq!(status, 404);
            answered += 1;
        }
    }
    assert_eq!(answered, VALIDATION_REQUESTS);
    started.elapsed()
}

// ---------------------------------------------------------------------------
// PostgreSQL

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crate::sql_stores::postgres::{base_url, Schema};
    use certkeeper::store::sql::SqlOptions;
    use certkeeper::store::PostgresStore;
    use sqlx::postgres::{PgConnection, PgPoolOptions};
    use sqlx::Executor;

    async fn proxy_to_server() -> FaultProxy {
        FaultProxy::start(server_of(&base_url(), 5432).await).await
    }

    /// Waits until a session is waiting for a lock the session `pid` holds.
    async fn until_blocked_by(conn: &mut PgConnection, pid: i32) {
        for _ in 0..400 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(pid)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the store's call never waited for the test's lock");
    }

    /// A save and another transaction lock the record's row and the change
    /// counter in opposite orders: a real deadlock, which the store's
    /// session detects and loses. The save runs again and succeeds, and the
    /// other transaction is untouched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_save_that_deadlocks_runs_again() {
        limited(Duration::from_secs(120), async {
            let schema = Schema::new().await;
            let store = schema.store().await;
            let record = CertRecord::new(domain("deadlock.example.com"), T);
            let saved = CertRecord {
                version: store.save(&record).await.unwrap(),
                ..record
            };
            let mut other = schema.connection().await;
            let mut watcher = schema.connection().await;
            // The store's sessions check for deadlocks after the default
            // second, this one much later: the store's is the victim.
            other.execute("SET deadlock_timeout = '60s'").await.unwrap();
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut other)
                .await
                .unwrap();
            other.execute("BEGIN").await.unwrap();
            other
                .execute("UPDATE certkeeper_change_seq SET last_seq = last_seq WHERE id = 1")
                .await
                .unwrap();
            // The save locks the record's row, then waits for the counter.
            let save = tokio::spawn({
                let store = store.clone();
                let update = CertRecord {
                    attempts: 1,
                    ..saved.clone()
                };
                async move { store.save(&update).await }
            });
            until_blocked_by(&mut watcher, pid).await;
            // Only once the save's transaction is rolled back can this
            // lock the row it holds: the deadlock.
            other
                .execute(
                    "UPDATE certkeeper_certificates SET attempts = attempts \
                     WHERE domain = 'deadlock.example.com'",
                )
                .await
                .expect("the other transaction is not the victim");
            other.execute("COMMIT").await.unwrap();
            let version = save.await.unwrap().expect("the deadlocked save ran again");
            assert_eq!(version, 2);
            let stored = store.load(&saved.domain).await.unwrap().unwrap();
            assert_eq!((stored.version, stored.attempts), (2, 1));
        })
        .await;
    }

    /// Under repeatable read (a pool that asks for it), a lease upsert that
    /// waited for another transaction's update of the row fails with a
    /// serialization failure (40001): the call runs again and takes the
    /// lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_serialization_failure_runs_again() {
        limited(Duration::from_secs(120), async {
            let schema = Schema::new().await;
            schema.store().await;
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("SET default_transaction_isolation = 'repeatable read'")
                            .await
                            .map(|_| ())
                    })
                })
                .connect(&schema.url())
                .await
                .unwrap();
            let store = PostgresStore::from_pool(pool).await.unwrap();
            let cluster = store.cluster().unwrap();
            // An expired lease of another holder.
            assert!(cluster
                .acquire_lease("cycle", "node-a", Duration::from_millis(1))
                .await
                .unwrap());
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut other = schema.connection().await;
            let mut watcher = schema.connection().await;
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut other)
                .await
                .unwrap();
            other.execute("BEGIN").await.unwrap();
            other
                .execute("UPDATE certkeeper_leases SET holder = holder WHERE name = 'cycle'")
                .await
                .unwrap();
            let acquire = tokio::spawn({
                let store = store.clone();
                async move {
                    store
                        .cluster()
                        .unwrap()
                        .acquire_lease("cycle", "node-b", Duration::from_secs(30))
                        .await
                }
            });
            until_blocked_by(&mut watcher, pid).await;
            other.execute("COMMIT").await.unwrap();
            let granted = acquire
                .await
                .unwrap()
                .expect("the lease upsert ran again after the serialization failure");
            assert!(granted);
            assert!(!cluster
                .acquire_lease("cycle", "node-a", Duration::from_secs(30))
                .await
                .unwrap());
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_calls_end_within_the_deadline_when_the_network_goes_silent() {
        limited(Duration::from_secs(300), async {
            let schema = Schema::new().await;
            schema.store().await;
            let proxy = proxy_to_server().await;
            let deadline = Duration::from_secs(2);
            let store = PostgresStore::connect_with(
                &via(&schema.url(), proxy.addr()),
                SqlOptions::new()
                    .statement_timeout(deadline)
                    .max_connections(2),
            )
            .await
            .unwrap();
            assert_eq!(store.statement_timeout(), deadline);
            calls_end_within_the_deadline(&store, &proxy, deadline).await;
        })
        .await;
    }

    /// The server stops a statement at the deadline too: one that sleeps
    /// longer is cancelled there (its locks freed), and the store reports it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_the_server_stops_statements_at_the_deadline() {
        limited(Duration::from_secs(60), async {
            let schema = Schema::new().await;
            let store = PostgresStore::connect_with(
                &schema.url(),
                SqlOptions::new().statement_timeout(Duration::from_millis(700)),
            )
            .await
            .unwrap();
            let limit: String = sqlx::query_scalar("SHOW statement_timeout")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(limit, "700ms");
            let slept = sqlx::query("SELECT pg_sleep(3)")
                .execute(store.pool())
                .await
                .unwrap_err();
            assert_eq!(
                slept.as_database_error().and_then(|e| e.code()).as_deref(),
                Some("57014"),
                "{slept}"
            );
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_the_challenge_answer_survives_a_moment_of_resets() {
        limited(Duration::from_secs(120), async {
            let schema = Schema::new().await;
            let direct: Arc<dyn CertStore> = Arc::new(schema.store().await);
            let proxy = proxy_to_server().await;
            let proxied: Arc<dyn CertStore> = Arc::new(
                PostgresStore::connect(&via(&schema.url(), proxy.addr()))
                    .await
                    .unwrap(),
            );
            answer_survives_a_moment_of_resets(direct, proxied, &proxy).await;
        })
        .await;
    }

    /// Rows inserted, updated and deleted in the schema's tables, as the
    /// statistics collector counts them (the sessions that wrote must have
    /// ended: they flush their counts as they exit).
    async fn rows_written(conn: &mut PgConnection, schema: &str) -> i64 {
        conn.execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8 \
             FROM pg_stat_user_tables WHERE schemaname = $1",
        )
        .bind(schema)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
    }

    /// A store whose sessions carry the application name `app`.
    async fn store_named(schema: &Schema, app: &str) -> PostgresStore {
        PostgresStore::connect(&format!("{}&application_name={app}", schema.url()))
            .await
            .unwrap()
    }

    /// Closes the store's pool and waits until its sessions are gone: a
    /// session flushes its counts as it exits.
    async fn close(store: PostgresStore, app: &str, watcher: &mut PgConnection) {
        store.pool().close().await;
        // A connection returned to the pool while it closes may be left
        // idle in it: the pool's last handle closes it.
        drop(store);
        for _ in 0..400 {
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(app)
            .fetch_one(&mut *watcher)
            .await
            .unwrap();
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let left: Vec<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT state, query FROM pg_stat_activity WHERE application_name = $1")
                .bind(app)
                .fetch_all(&mut *watcher)
                .await
                .unwrap();
        panic!("the sessions of {app} did not end: {left:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_the_validation_path_never_writes() {
        limited(Duration::from_secs(300), async {
            let schema = Schema::new().await;
            let mut watcher = schema.connection().await;
            let app = |step: &str| format!("certkeeper_{}_{step}", unique());
            // Migrated by a store whose counts are flushed before counting.
            let (migrating, name) = (app("migrate"), app("validate"));
            close(
                store_named(&schema, &migrating).await,
                &migrating,
                &mut watcher,
            )
            .await;
            let before = rows_written(&mut watcher, &schema.name).await;
            let store = store_named(&schema, &name).await;
            let took = random_tokens_are_answered_404(Arc::new(store.clone())).await;
            close(store, &name, &mut watcher).await;
            let after = rows_written(&mut watcher, &schema.name).await;
            eprintln!("{VALIDATION_REQUESTS} validation requests answered in {took:?}");
            assert_eq!(after - before, 0, "rows written by the validation path");
            assert!(took < Duration::from_secs(60), "{took:?}");

            // The counters do see the store's writes: one answer stored.
            let name = app("control");
            let store = store_named(&schema, &name).await;
            store
                .cluster()
                .unwrap()
                .put_challenge("counted", "counted.key", Duration::from_secs(60))
                .await
                .unwrap();
            close(store, &name, &mut watcher).await;
            assert_eq!(rows_written(&mut watcher, &schema.name).await - after, 1);
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// MariaDB / MySQL

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use crate::sql_stores::mysql::{base_url, Database};
    use certkeeper::store::sql::SqlOptions;
    use certkeeper::store::MySqlStore;
    use sqlx::mysql::{MySqlConnection, MySqlPoolOptions};
    use sqlx::Executor;

    async fn proxy_to_server() -> FaultProxy {
        FaultProxy::start(server_of(&base_url(), 3306).await).await
    }

    /// Waits until a transaction waits for a lock the transaction `trx`
    /// holds. InnoDB refreshes what `INNODB_LOCK_WAITS` shows only when it
    /// was last read 0.1 s ago or more: the polls are further apart.
    async fn until_blocked_by(conn: &mut MySqlConnection, trx: &str) {
        for _ in 0..80 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.INNODB_LOCK_WAITS \
                 WHERE blocking_trx_id = ?",
            )
            .bind(trx)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the store's call never waited for the test's lock");
    }

    /// The InnoDB transaction id of the connection's open transaction.
    async fn trx_id(conn: &mut MySqlConnection) -> String {
        sqlx::query_scalar(
            "SELECT CAST(trx_id AS CHAR) FROM information_schema.INNODB_TRX \
             WHERE trx_mysql_thread_id = CONNECTION_ID()",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap()
    }

    /// A save and another transaction lock the record's row and the change
    /// counter in opposite orders: a real deadlock (1213). InnoDB rolls
    /// back the lighter transaction, the save's (the other one wrote many
    /// rows first); the save runs again and succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_a_save_that_deadlocks_runs_again() {
        limited(Duration::from_secs(120), async {
            let db = Database::new().await;
            let store = db.store().await;
            let record = CertRecord::new(domain("deadlock.example.com"), T);
            let saved = CertRecord {
                version: store.save(&record).await.unwrap(),
                ..record
            };
            let mut other = db.connection().await;
            let mut watcher = db.connection().await;
            other.execute("BEGIN").await.unwrap();
            for i in 0..200 {
                sqlx::query("INSERT INTO certkeeper_meta (name, value) VALUES (?, 'x')")
                    .bind(format!("weight-{i}"))
                    .execute(&mut other)
                    .await
                    .unwrap();
            }
            other
                .execute("UPDATE certkeeper_change_seq SET last_seq = last_seq WHERE id = 1")
                .await
                .unwrap();
            let trx = trx_id(&mut other).await;
            let save = tokio::spawn({
                let store = store.clone();
                let update = CertRecord {
                    attempts: 1,
                    ..saved.clone()
                };
                async move { store.save(&update).await }
            });
            until_blocked_by(&mut watcher, &trx).await;
            other
                .execute(
                    "UPDATE certkeeper_certificates SET attempts = attempts \
                     WHERE domain = 'deadlock.example.com'",
                )
                .await
                .expect("the other transaction is not the victim");
            other.execute("COMMIT").await.unwrap();
            let version = save.await.unwrap().expect("the deadlocked save ran again");
            assert_eq!(version, 2);
            let stored = store.load(&saved.domain).await.unwrap().unwrap();
            assert_eq!((stored.version, stored.attempts), (2, 1));
            let deadlocks: i64 = sqlx::query_scalar(
                "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS \
                 WHERE VARIABLE_NAME = 'INNODB_DEADLOCKS'",
            )
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            assert!(deadlocks > 0);
        })
        .await;
    }

    /// A lease upsert that waits longer than the session's
    /// `innodb_lock_wait_timeout` fails with error 1205 (SQLSTATE HY000):
    /// it runs again, and takes the lease once the other transaction ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_a_lock_wait_timeout_runs_again() {
        limited(Duration::from_secs(120), async {
            let db = Database::new().await;
            db.store().await;
            let pool = MySqlPoolOptions::new()
                .max_connections(2)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("SET SESSION innodb_lock_wait_timeout = 1")
                            .await
                            .map(|_| ())
                    })
                })
                .connect(&db.url())
                .await
                .unwrap();
            let store = MySqlStore::from_pool(pool).await.unwrap();
            let cluster = store.cluster().unwrap();
            assert!(cluster
                .acquire_lease("cycle", "node-a", Duration::from_millis(1))
                .await
                .unwrap());
            let mut other = db.connection().await;
            other.execute("BEGIN").await.unwrap();
            other
                .execute("SELECT holder FROM certkeeper_leases WHERE name = 'cycle' FOR UPDATE")
                .await
                .unwrap();
            let started = Instant::now();
            let acquire = tokio::spawn({
                let store = store.clone();
                async move {
                    store
                        .cluster()
                        .unwrap()
                        .acquire_lease("cycle", "node-b", Duration::from_secs(30))
                        .await
                }
            });
            // Past one lock wait timeout, then the row is free.
            tokio::time::sleep(Duration::from_millis(1600)).await;
            other.execute("COMMIT").await.unwrap();
            let granted = acquire
                .await
                .unwrap()
                .expect("the lease upsert ran again after the lock wait timeout");
            assert!(granted);
            assert!(started.elapsed() >= Duration::from_millis(1600));
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_calls_end_within_the_deadline_when_the_network_goes_silent() {
        limited(Duration::from_secs(300), async {
            let db = Database::new().await;
            db.store().await;
            let proxy = proxy_to_server().await;
            let deadline = Duration::from_secs(2);
            let store = MySqlStore::connect_with(
                &via(&db.url(), proxy.addr()),
                SqlOptions::new()
                    .statement_timeout(deadline)
                    .max_connections(2),
            )
            .await
            .unwrap();
            assert_eq!(store.statement_timeout(), deadline);
            calls_end_within_the_deadline(&store, &proxy, deadline).await;
        })
        .await;
    }

    /// The server stops a statement at the deadline too (MariaDB's
    /// `max_statement_time`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_the_server_stops_statements_at_the_deadline() {
        limited(Duration::from_secs(60), async {
            let db = Database::new().await;
            let store = MySqlStore::connect_with(
                &db.url(),
                SqlOptions::new().statement_timeout(Duration::from_millis(700)),
            )
            .await
            .unwrap();
            let limit: f64 = sqlx::query_scalar("SELECT @@SESSION.max_statement_time")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(limit, 0.7);
            let started = Instant::now();
            let slept = sqlx::query("SELECT SLEEP(3) FROM certkeeper_meta, (SELECT 1) one")
                .execute(store.pool())
                .await;
            // MariaDB ends a SLEEP() at the limit quietly (it returns 1) or
            // with error 1969; either way well before the 3 seconds.
            assert!(started.elapsed() < Duration::from_millis(2500), "{slept:?}");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_the_challenge_answer_survives_a_moment_of_resets() {
        limited(Duration::from_secs(120), async {
            let db = Database::new().await;
            let direct: Arc<dyn CertStore> = Arc::new(db.store().await);
            let proxy = proxy_to_server().await;
            let proxied: Arc<dyn CertStore> = Arc::new(
                MySqlStore::connect(&via(&db.url(), proxy.addr()))
                    .await
                    .unwrap(),
            );
            answer_survives_a_moment_of_resets(direct, proxied, &proxy).await;
        })
        .await;
    }

    /// Rows inserted, updated and deleted in the database's tables
    /// (`information_schema.TABLE_STATISTICS`, kept while `userstat` is
    /// on: this test turns it on).
    async fn rows_written(conn: &mut MySqlConnection, database: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(ROWS_CHANGED), 0) AS SIGNED) \
             FROM information_schema.TABLE_STATISTICS WHERE TABLE_SCHEMA = ?",
        )
        .bind(database)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_the_validation_path_never_writes() {
        limited(Duration::from_secs(300), async {
            let db = Database::new().await;
            let mut watcher = db.connection().await;
            // Per-table counters (server-wide, cheap; only this database's
            // rows are read).
            watcher.execute("SET GLOBAL userstat = 1").await.unwrap();
            let store = db.store().await;
            let before = rows_written(&mut watcher, &db.name).await;
            let took = random_tokens_are_answered_404(Arc::new(store.clone())).await;
            let after = rows_written(&mut watcher, &db.name).await;
            eprintln!("{VALIDATION_REQUESTS} validation requests answered in {took:?}");
            assert_eq!(after - before, 0, "rows written by the validation path");
            assert!(took < Duration::from_secs(60), "{took:?}");

            // The counters do see the store's writes: one answer stored.
            store
                .cluster()
                .unwrap()
                .put_challenge("counted", "counted.key", Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(rows_written(&mut watcher, &db.name).await - after, 1);
        })
        .await;
    }
}
