//! Automatic HTTPS in an axum (or any tower) server: the port 80 router
//! and a TLS listener for `axum::serve`.
//!
//! - [`challenges`] / [`challenges_and_redirect`]: a [`Router`] for port
//!   80 answering `/.well-known/acme-challenge/{token}` from an
//!   [`Http01Responder`], and 404 (or a 308 redirect to HTTPS) for
//!   everything else.
//! - [`TlsListener`]: a TCP listener and a [`CertResolver`] that
//!   `axum::serve` accepts directly: each connection's TLS handshake runs
//!   on its own task, the client's certificate (by SNI, or by the local
//!   address for a client without SNI) is loaded before it is answered
//!   ([`CertResolver::accept_at`]), and a failed handshake is logged
//!   and skipped, never ending the accept loop.
//!
//! ```no_run
//! # async fn run(embedded: certkeeper::Embedded) -> std::io::Result<()> {
//! use axum::{routing::get, Router};
//! use certkeeper::serve::{challenges_and_redirect, TlsListener};
//!
//! let app = Router::new().route("/", get(|| async { "hello over HTTPS" }));
//! let port80 = challenges_and_redirect(embedded.challenge_responder.clone(), 443);
//! let http = tokio::net::TcpListener::bind("[::]:80").await?;
//! tokio::spawn(async move { axum::serve(http, port80).await });
//! let https = TlsListener::bind("[::]:443", &embedded.resolver).await?;
//! axum::serve(https, app).await
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;

use crate::challenge::{Http01Responder, CHALLENGE_PATH_PREFIX};
use crate::{CertResolver, Domain};

/// A router answering `GET` and `HEAD` on
/// `/.well-known/acme-challenge/{token}` from `responder` (what
/// [`Http01Responder::answer`] gives, as `application/octet-stream`; 404
/// for an unknown token) and 404 for every other path. Mount it on port
/// 80, alone or [merged](Router::merge) into the application's port 80
/// router.
pub fn challenges(responder: Http01Responder) -> Router {
    let route = format!("{CHALLENGE_PATH_PREFIX}{{token}}");
    Router::new()
        .route(&route, get(answer_challenge))
        .with_state(responder)
}

/// [`challenges`], and every other request redirected with `308 Permanent
/// Redirect` to `https://<host>[:<https_port>]<path>?<query>`: the host is
/// the request's `Host` header (or its URI's authority), read with
/// [`Domain::from_host`], so a request naming no valid host gets `400 Bad
/// Request` instead of a redirect to wherever it pointed; the port is left
/// out when it is 443.
pub fn challenges_and_redirect(responder: Http01Responder, https_port: u16) -> Router {
    challenges(responder)
        .fallback(move |request: Request| async move { redirect_to_https(&request, https_port) })
}

async fn answer_challenge(State(responder): State<Http01Responder>, request: Request) -> Response {
    match responder.answer(request.uri().path()).await {
        Some(body) => (
            [
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn redirect_to_https(request: &Request, https_port: u16) -> Response {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let Some(domain) = host.as_deref().and_then(|h| Domain::from_host(h).ok()) else {
        return (StatusCode::BAD_REQUEST, "no valid host in the request\n").into_response();
    };
    let host = match domain.ip() {
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => domain.as_str().to_owned(),
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    match HeaderValue::from_str(&location) {
        Ok(location) => Response::builder()
            .status(StatusCode::PERMANENT_REDIRECT)
            .header(LOCATION, location)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// How long a client has to complete its TLS handshake by default.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most by default; past it, new connections
/// wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 1024;

/// A TLS listener that `axum::serve` takes as it takes a
/// [`TcpListener`]: the certificates come from a [`CertResolver`].
///
/// Each accepted connection's handshake runs on its own task (at most
/// 1024 at once by default, each within 10 s), through
/// [`CertResolver::accept_at`], so a stored name's certificate is loaded
/// before the client is answered, and a client without SNI (one that
/// connects to an IP address) gets the certificate of the local address
/// it connected to. A handshake that fails or times out is
/// logged at debug level and skipped; an error of the TCP listener
/// itself (out of file descriptors ...) is logged and retried after a
/// pause. [`accept`](axum::serve::Listener::accept) never ends the loop.
pub struct TlsListener {
    tcp: TcpListener,
    resolver: CertResolver,
    config: Arc<rustls::ServerConfig>,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    handshake_timeout: Duration,
    max_handshakes: usize,
}

impl TlsListener {
    /// Listens on `address` with the resolver's configuration for an
    /// HTTP/1.1 server (`resolver.server_config(&[b"http/1.1"])`).
    pub async fn bind(address: impl ToSocketAddrs, resolver: &CertResolver) -> io::Result<Self> {
        let config = resolver
            .server_config(&[b"http/1.1"])
            .map_err(io::Error::other)?;
        Ok(Self::new(
            TcpListener::bind(address).await?,
            resolver.clone(),
            config,
        ))
    }

    /// Serves `config` (from [`CertResolver::server_config`], with the
    /// protocols the server speaks) on `tcp`.
    pub fn new(
        tcp: TcpListener,
        resolver: CertResolver,
        config: Arc<rustls::ServerConfig>,
    ) -> Self {
        Self {
            tcp,
            resolver,
            config,
            handshakes: JoinSet::new(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_handshakes: MAX_HANDSHAKES,
        }
    }

    /// How long a client has to complete its handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How many handshakes may be in progress at once (default 1024, at
    /// least 1).
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// Starts the handshake of a new connection on its own task.
    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        let (resolver, config, timeout) = (
            self.resolver.clone(),
            self.config.clone(),
            self.handshake_timeout,
        );
        self.handshakes.spawn(async move {
            let local = tcp.local_addr().ok().map(|addr| addr.ip());
            match tokio::time::timeout(timeout, resolver.accept_at(config, tcp, local)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.tcp.local_addr().ok())
            .field("handshakes", &self.handshakes.len())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < self.max_handshakes;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((tcp, peer)) => self.start_handshake(tcp, peer),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not accept a connection; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
