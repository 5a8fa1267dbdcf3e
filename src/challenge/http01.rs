//! The HTTP-01 challenge (RFC 8555 section 8.3): the CA fetches
//! `http://<domain>/.well-known/acme-challenge/<token>` on port 80 and expects
//! the key authorization as the body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::{self, Debug};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use super::{Challenge, ChallengeKind, ChallengeSolver};
use crate::store::CertStore;
use crate::{Error, Result};

/// The path every HTTP-01 response lives under.
pub const CHALLENGE_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// Longest token answered. CAs use 43 characters (256 bits in base64url);
/// the bound keeps a hostile request from costing more than a short lookup.
const MAX_TOKEN_LEN: usize = 128;

/// Longest key authorization served (`token.thumbprint`, under 200 bytes in
/// practice).
const MAX_KEY_AUTHORIZATION_LEN: usize = 512;

/// Connections served at once by [`Http01Server`]; more are closed at once.
/// Only the CA's validators need this listener.
const MAX_CONNECTIONS: usize = 256;

/// Time a client gets to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a connection stays open, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Key authorizations by token.
type Answers = Arc<RwLock<HashMap<String, String>>>;

/// The default [`ChallengeSolver`]: answers `http-01` challenges from a token
/// map shared by every clone.
///
/// Serve the answers in one of two ways:
/// - [`serve`](Self::serve) starts a standalone HTTP/1.1 listener (the CA
///   connects to port 80 of the domain, so production binds port 80;
///   binding `[::]:80` serves IPv4 and IPv6 on Linux, where
///   `net.ipv6.bindv6only` is 0 by default);
/// - [`responder`](Self::responder) gives an embedding server a handle to
///   answer `/.well-known/acme-challenge/{token}` on its own port 80 route.
///
/// A solver knows the challenges presented through it (or a clone of it).
/// Instances of a cluster behind one name share the answers through their
/// store: [`with_store`](Self::with_store) keeps each answer in the
/// [`CertStore`] too (until it is cleaned up, or for an hour at most), and the
/// listener and [`Http01Responder::answer`] look there for a token this
/// instance did not present, so the CA may reach any instance.
///
/// ```
/// use certkeeper::challenge::Http01Solver;
/// let solver = Http01Solver::new();
/// let responder = solver.responder();
/// assert_eq!(responder.respond("/.well-known/acme-challenge/unknown"), None);
/// ```
#[derive(Clone, Default)]
pub struct Http01Solver {
    answers: Answers,
    shared: Option<Arc<dyn CertStore>>,
}

/// How long an answer kept in a shared store stays valid at most, should
/// the instance that presented it die before cleaning it up.
const SHARED_ANSWER_LIFETIME: Duration = Duration::from_secs(3600);

/// How long [`Http01Responder::answer`] waits for the shared store, retries
/// of a failed read included, before answering 404.
pub const SHARED_ANSWER_PATIENCE: Duration = Duration::from_millis(500);

impl Http01Solver {
    /// A solver with no challenge presented.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps every answer in `store`'s [`ClusterStore`](crate::store::ClusterStore)
    /// too, for the other instances that share it. A store that offers no
    /// cluster (one process alone) keeps nothing: the answers this solver
    /// presented are all there is.
    pub fn with_store(mut self, store: Arc<dyn CertStore>) -> Self {
        self.shared = Some(store);
        self
    }

    /// A handle that answers challenge paths for an embedding server.
    pub fn responder(&self) -> Http01Responder {
        Http01Responder {
            answers: self.answers.clone(),
            shared: self.shared.clone(),
        }
    }

    /// How many challenges are presented right now.
    pub fn pending(&self) -> usize {
        read(&self.answers).len()
    }

    /// Starts a standalone HTTP/1.1 listener on `addr` that answers challenge
    /// paths (`GET` and `HEAD`) and 404 for anything else.
    ///
    /// Port 80 is what a CA validates against; a port below 1024 needs the
    /// `CAP_NET_BIND_SERVICE` capability on Linux. Port 0 picks a free port,
    /// see [`Http01Server::local_addr`]. The listener stops when the returned
    /// [`Http01Server`] is dropped.
    ///
    /// Fails with [`Error::Io`] (naming the address) when the address cannot
    /// be bound.
    pub async fn serve(&self, addr: SocketAddr) -> Result<Http01Server> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(addr.to_string(), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io(addr.to_string(), e))?;
        let responder = self.responder();
        let task = tokio::spawn(accept_loop(listener, responder));
        tracing::info!(address = %local_addr, "HTTP-01 challenge listener started");
        Ok(Http01Server { local_addr, task })
    }
}

impl Debug for Http01Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http01Solver")
            .field("pending", &self.pending())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

#[async_trait]
impl ChallengeSolver for Http01Solver {
    fn kind(&self) -> ChallengeKind {
        ChallengeKind::Http01
    }

    async fn present(&self, challenge: &Challenge) -> Result<()> {
        let refuse = |message: &str| Error::Challenge {
            kind: ChallengeKind::Http01.as_str(),
            domain: challenge.domain.to_string(),
            message: message.into(),
        };
        if !is_token(&challenge.token) {
            return Err(refuse(
                "the CA's token is not 1 to 128 base64url characters",
            ));
        }
        if !is_key_authorization(&challenge.key_authorization, &challenge.token) {
            return Err(refuse(
                "the key authorization is not the token, a dot and a base64url thumbprint",
            ));
        }
        write(&self.answers).insert(challenge.token.clone(), challenge.key_authorization.clone());
        if let Some(cluster) = self.shared.as_ref().and_then(|store| store.cluster()) {
            cluster
                .put_challenge(
                    &challenge.token,
                    &challenge.key_authorization,
                    SHARED_ANSWER_LIFETIME,
                )
                .await?;
        }
        tracing::debug!(domain = %challenge.domain, token = %challenge.token, "HTTP-01 challenge presented");
        Ok(())
    }

    async fn cleanup(&self, challenge: &Challenge) -> Result<()> {
        if write(&self.answers).remove(&challenge.token).is_some() {
            tracing::debug!(domain = %challenge.domain, token = %challenge.token, "HTTP-01 challenge removed");
        }
        if let Some(cluster) = self.shared.as_ref().and_then(|store| store.cluster()) {
            cluster.delete_challenge(&challenge.token).await?;
        }
        Ok(())
    }
}

/// Answers `/.well-known/acme-challenge/{token}` for a server that serves
/// port 80 itself; get one from [`Http01Solver::responder`].
///
/// Cheap to clone; every clone sees the challenges presented to the solver.
#[derive(Clone)]
pub struct Http01Responder {
    answers: Answers,
    shared: Option<Arc<dyn CertStore>>,
}

impl Http01Responder {
    /// The body to send for the request path `path` (the path only, without
    /// the query), or `None` when the server should answer 404.
    ///
    /// Only `/.well-known/acme-challenge/` followed by a token of 1 to 128
    /// base64url characters (`A-Z a-z 0-9 - _`) is looked up; any other
    /// path, an unknown token, `..`, `/` or a percent-encoding gives `None`.
    /// Send the body with status 200 and `Content-Type:
    /// application/octet-stream` (RFC 8555 section 8.3), for `GET` and `HEAD`.
    ///
    /// Answers only what this instance presented; in a cluster, use
    /// [`answer`](Self::answer), which also asks the shared store.
    pub fn respond(&self, path: &str) -> Option<String> {
        self.lookup(path)
    }

    /// [`respond`](Self::respond), then, for a token this instance did not
    /// present, the answer kept in the shared store (see
    /// [`Http01Solver::with_store`]). It only reads the store. A store that
    /// fails is asked again within [`SHARED_ANSWER_PATIENCE`] (a CA waits
    /// a few seconds at most); one that still fails is logged and the
    /// request answered 404, so the CA tries again.
    pub async fn answer(&self, path: &str) -> Option<String> {
        if let Some(found) = self.lookup(path) {
            return Some(found);
        }
        let token = token_of(path)?;
        let cluster = self.shared.as_ref()?.cluster()?;
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(25);
        loop {
            let asked = tokio::time::timeout(
                SHARED_ANSWER_PATIENCE.saturating_sub(started.elapsed()),
                cluster.get_challenge(token),
            )
            .await;
            match asked {
                Ok(Ok(found)) => return found,
                Ok(Err(e)) if started.elapsed() + pause < SHARED_ANSWER_PATIENCE => {
                    tracing::debug!(error = %e, "the shared store failed to answer an HTTP-01 challenge; asking again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the shared store could not answer an HTTP-01 challenge");
                    return None;
                }
                Err(_) => {
                    tracing::warn!(
                        "the shared store did not answer an HTTP-01 challenge in {} ms",
                        SHARED_ANSWER_PATIENCE.as_millis()
                    );
                    return None;
                }
            }
        }
    }

    fn lookup(&self, path: &str) -> Option<String> {
        read(&self.answers).get(token_of(path)?).cloned()
    }
}

impl Debug for Http01Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http01Responder")
            .field("pending", &read(&self.answers).len())
            .finish()
    }
}

/// A running standalone HTTP-01 listener, from [`Http01Solver::serve`].
///
/// Dropping it stops the listener and closes its connections.
#[derive(Debug)]
pub struct Http01Server {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Http01Server {
    /// The address the listener is bound to (with the real port when port 0
    /// was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the listener and waits until its socket is closed.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // Only the cancellation can come back: the accept loop never ends by itself.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Http01Server {
    fn drop(&mut self) {
        self.task.abort();
        tracing::debug!(address = %self.local_addr, "HTTP-01 challenge listener stopped");
    }
}

async fn accept_loop(listener: TcpListener, responder: Http01Responder) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owned here, so aborting this task also ends every connection.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "HTTP-01 listener failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "HTTP-01 listener busy, connection closed");
            continue;
        };
        let responder = responder.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let responder = responder.clone();
                async move { Ok::<_, Infallible>(answer(&responder, &request, peer).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP-01 connection failed"),
                Err(_) => tracing::debug!(%peer, "HTTP-01 connection closed after its time limit"),
            }
        });
    }
}

async fn answer(
    responder: &Http01Responder,
    request: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match responder.answer(request.uri().path()).await {
        Some(key_authorization) => {
            tracing::debug!(%peer, path = request.uri().path(), "HTTP-01 challenge answered");
            let mut response = Response::new(Full::new(Bytes::from(key_authorization)));
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        None => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The token of a challenge path, if it is one.
fn token_of(path: &str) -> Option<&str> {
    path.strip_prefix(CHALLENGE_PATH_PREFIX)
        .filter(|token| is_token(token))
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 1 to [`MAX_TOKEN_LEN`] base64url characters.
fn is_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_LEN && is_base64url(token)
}

/// `token.thumbprint` with a base64url thumbprint, bounded in length.
fn is_key_authorization(key_authorization: &str, token: &str) -> bool {
    key_authorization.len() <= MAX_KEY_AUTHORIZATION_LEN
        && key_authorization
            .strip_prefix(token)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|thumbprint| !thumbprint.is_empty() && is_base64url(thumbprint))
}

// A panic while holding the lock cannot leave the map half-updated (every
// write is one insert or remove), so a poisoned lock is still safe to use.
fn read(answers: &Answers) -> std::sync::RwLockReadGuard<'_, HashMap<String, String>> {
    answers.read().unwrap_or_else(|e| e.into_inner())
}

fn write(answers: &Answers) -> std::sync::RwLockWriteGuard<'_, HashMap<String, String>> {
    answers.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;

    const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    const KEY_AUTH: &str =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";

    fn challenge(token: &str, key_authorization: &str) -> Challenge {
        Challenge {
            domain: Domain::new("www.example.com").unwrap(),
            token: token.into(),
            key_authorization: key_authorization.into(),
            dns_value: String::new(),
        }
    }

    #[tokio::test]
    async fn answers_only_well_formed_known_tokens() {
        let solver = Http01Solver::new();
        solver.present(&challenge(TOKEN, KEY_AUTH)).await.unwrap();
        let responder = solver.responder();
        let path = format!("{CHALLENGE_PATH_PREFIX}{TOKEN}");
        assert_eq!(responder.respond(&path).as_deref(), Some(KEY_AUTH));
        let long = format!("{CHALLENGE_PATH_PREFIX}{}", "a".repeat(129));
        for refused in [
            "",
            "/",
            CHALLENGE_PATH_PREFIX,
            "/.well-known/acme-challenge",
            &format!("/.well-known/acme-challenge/{TOKEN}/"),
            &format!("/.well-known/acme-challenge/../{TOKEN}"),
            &format!("/.well-known/acme-challenge/%2e%2e/{TOKEN}"),
            &format!("/.well-known/acme-challenge/{TOKEN}%00"),
            &format!("/.well-known/acme-challenge/{TOKEN}?x=1"),
            &format!("/.well-known/acme-challenge/{TOKEN}.txt"),
            &format!("//.well-known/acme-challenge/{TOKEN}"),
            &format!("/other/.well-known/acme-challenge/{TOKEN}"),
            &format!("/.WELL-KNOWN/acme-challenge/{TOKEN}"),
            "/.well-known/acme-challenge/unknownToken",
            "/.well-known/acme-challenge/..",
            &long,
        ] {
            assert_eq!(responder.respond(refused), None, "{refused:?}");
        }
        solver.cleanup(&challenge(TOKEN, KEY_AUTH)).await.unwrap();
        assert_eq!(responder.respond(&path), None);
        // Cleaning up an unknown token is not an error.
        solver.cleanup(&challenge(TOKEN, KEY_AUTH)).await.unwrap();
    }

    #[tokio::test]
    async fn refuses_to_present_malformed_challenges() {
        let solver = Http01Solver::new();
        for (token, key_authorization) in [
            ("", "x.y"),
            ("../etc", "../etc.abc"),
            ("tok en", "tok en.abc"),
            (TOKEN, "other.abc"),
            (TOKEN, &format!("{TOKEN}.")),
            (TOKEN, &format!("{TOKEN}.a b")),
            (TOKEN, &format!("{TOKEN}.{}", "a".repeat(600))),
        ] {
            let err = solver
                .present(&challenge(token, key_authorization))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Challenge { .. }), "{err}");
            // The error never repeats the key authorization.
            assert!(!err.to_string().contains(key_authorization), "{err}");
        }
        assert_eq!(solver.pending(), 0);
    }

    #[test]
    fn debug_shows_no_key_authorization() {
        let solver = Http01Solver::new();
        write(&solver.answers).insert(TOKEN.into(), KEY_AUTH.into());
        for shown in [format!("{solver:?}"), format!("{:?}", solver.responder())] {
            assert!(!shown.contains(KEY_AUTH), "{shown}");
            assert!(shown.contains("pending: 1"), "{shown}");
        }
    }

    #[tokio::test]
    async fn an_answer_kept_in_the_store_is_given_by_another_instance() {
        let store: Arc<dyn CertStore> = Arc::new(crate::store::MemoryStore::new());
        let presenting = Http01Solver::new().with_store(store.clone());
        let other = Http01Solver::new().with_store(store.clone()).responder();
        let challenge = Challenge {
            domain: crate::Domain::new("www.example.com").unwrap(),
            token: TOKEN.into(),
            key_authorization: KEY_AUTH.into(),
            dns_value: String::new(),
        };
        let path = format!("{CHALLENGE_PATH_PREFIX}{TOKEN}");
        presenting.present(&challenge).await.unwrap();
        assert_eq!(other.respond(&path), None, "not presented by this instance");
        assert_eq!(other.answer(&path).await.as_deref(), Some(KEY_AUTH));
        presenting.cleanup(&challenge).await.unwrap();
        assert_eq!(other.answer(&path).await, None);
    }

    /// A store whose cluster fails the first `failures` reads of an answer,
    /// then answers from a `LocalCluster`.
    #[derive(Debug)]
    struct Flaky {
        records: crate::store::testing::Alone<crate::store::MemoryStore>,
        cluster: FlakyCluster,
    }

    #[derive(Debug)]
    struct FlakyCluster {
        inner: crate::store::LocalCluster,
        failures: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl crate::store::ChallengeAnswers for FlakyCluster {
        async fn put_challenge(&self, token: &str, answer: &str, ttl: Duration) -> Result<()> {
            self.inner.put_challenge(token, answer, ttl).await
        }
        async fn get_challenge(&self, token: &str) -> Result<Option<String>> {
            use std::sync::atomic::Ordering;
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(Error::store("flaky", "connection reset"));
            }
            self.inner.get_challenge(token).await
        }
        async fn delete_challenge(&self, token: &str) -> Result<()> {
            self.inner.delete_challenge(token).await
        }
        async fn purge_expired_challenges(&self) -> Result<u64> {
            self.inner.purge_expired_challenges().await
        }
    }

    #[async_trait]
    impl crate::store::Leases for FlakyCluster {
        async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
            self.inner.acquire_lease(name, holder, ttl).await
        }
        async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
            self.inner.release_lease(name, holder).await
        }
        async fn mark_age(&self, name: &str) -> Result<Option<Duration>> {
            self.inner.mark_age(name).await
        }
        async fn set_mark(&self, name: &str, ago: Duration) -> Result<()> {
            self.inner.set_mark(name, ago).await
        }
    }

    #[async_trait]
    impl crate::store::ChangeFeed for FlakyCluster {
        async fn changes_since(&self, cursor: u64, limit: usize) -> Result<crate::store::Changes> {
            self.inner.changes_since(cursor, limit).await
        }
    }

    #[async_trait]
    impl crate::store::Budgets for FlakyCluster {
        async fn take_budget(&self, key: &str, window: Duration, limit: u32) -> Result<bool> {
            self.inner.take_budget(key, window, limit).await
        }
        async fn budget_used(&self, key: &str, window: Duration) -> Result<u32> {
            self.inner.budget_used(key, window).await
        }
    }

    #[async_trait]
    impl CertStore for Flaky {
        async fn load(&self, d: &Domain) -> Result<Option<crate::store::CertRecord>> {
            self.records.load(d).await
        }
        async fn save(&self, r: &crate::store::CertRecord) -> Result<u64> {
            self.records.save(r).await
        }
        async fn delete(&self, d: &Domain) -> Result<bool> {
            self.records.delete(d).await
        }
        async fn list(&self) -> Result<Vec<Domain>> {
            self.records.list().await
        }
        async fn due(
            &self,
            now: time::OffsetDateTime,
            max: u32,
            limit: usize,
        ) -> Result<Vec<crate::store::DueEntry>> {
            self.records.due(now, max, limit).await
        }
        async fn at_attempt_limit(
            &self,
            max: u32,
            limit: usize,
        ) -> Result<crate::store::PassedOver> {
            self.records.at_attempt_limit(max, limit).await
        }
        async fn load_account(&self, id: &str) -> Result<Option<crate::store::AccountRecord>> {
            self.records.load_account(id).await
        }
        async fn save_account(&self, r: &crate::store::AccountRecord) -> Result<u64> {
            self.records.save_account(r).await
        }
        async fn delete_account(&self, id: &str) -> Result<bool> {
            self.records.delete_account(id).await
        }
        async fn list_accounts(&self) -> Result<Vec<String>> {
            self.records.list_accounts().await
        }
        async fn get_meta(&self, k: &str) -> Result<Option<String>> {
            self.records.get_meta(k).await
        }
        async fn put_meta_if_absent(&self, k: &str, v: &str) -> Result<String> {
            self.records.put_meta_if_absent(k, v).await
        }
        async fn set_meta(&self, k: &str, v: &str) -> Result<()> {
            self.records.set_meta(k, v).await
        }
        async fn delete_meta(&self, k: &str) -> Result<bool> {
            self.records.delete_meta(k).await
        }
        fn cluster(&self) -> Option<&dyn crate::store::ClusterStore> {
            Some(&self.cluster)
        }
    }

    fn flaky(failures: usize) -> Arc<dyn CertStore> {
        Arc::new(Flaky {
            records: crate::store::testing::Alone(crate::store::MemoryStore::new()),
            cluster: FlakyCluster {
                inner: crate::store::LocalCluster::new(),
                failures: failures.into(),
            },
        })
    }

    #[tokio::test]
    async fn a_store_read_that_fails_is_asked_again_then_given_up_with_404() {
        let path = format!("{CHALLENGE_PATH_PREFIX}{TOKEN}");
        for (failures, answered) in [(2, true), (usize::MAX, false)] {
            let store = flaky(failures);
            let challenge = Challenge {
                domain: Domain::new("www.example.com").unwrap(),
                token: TOKEN.into(),
                key_authorization: KEY_AUTH.into(),
                dns_value: String::new(),
            };
            Http01Solver::new()
                .with_store(store.clone())
                .present(&challenge)
                .await
                .unwrap();
            let other = Http01Solver::new().with_store(store).responder();
            let got = other.answer(&path).await;
            assert_eq!(got.is_some(), answered, "{failures} failures");
        }
    }
}
