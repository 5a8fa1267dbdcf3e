//! Automatic HTTPS in an axum server: certificates for `_APP_DOMAIN` (and
//! every custom domain) ordered on the first handshake that needs one,
//! renewed by the maintenance cycle, served by SNI.
//!
//! ```text
//! _APP_DOMAIN=example.com _APP_SYSTEM_SECURITY_EMAIL_ADDRESS=ops@example.com \
//! _APP_OPENSSL_KEY_V1=$(openssl rand -base64 32) \
//!   cargo run --example axum_server --features axum
//! ```
//!
//! Port 80 answers the CA's HTTP-01 challenges and redirects everything
//! else to HTTPS; port 443 serves the application. `HTTP_ADDRESS` and
//! `HTTPS_ADDRESS` move them (default `[::]:80` and `[::]:443`).

use std::error::Error;
use std::net::SocketAddr;

use axum::routing::get;
use axum::serve::Listener;
use axum::Router;
use certkeeper::serve::{challenges_and_redirect, TlsListener};
use certkeeper::{Config, Embedded};
use tokio::task::JoinHandle;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "certkeeper=info".into()),
        )
        .init();
    let http = address("HTTP_ADDRESS", "[::]:80")?;
    let https = address("HTTPS_ADDRESS", "[::]:443")?;
    let server = start(Config::from_env()?, http, https).await?;
    let main = server.embedded.config.renewal().main_domain();
    let main = main.map_or_else(|| "the first host seen".into(), ToString::to_string);
    println!(
        "serving {main} on {} (TLS) and {} (challenges, redirect); Ctrl-C to stop",
        server.https, server.http
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// The server's own setting `name`, else `default`.
fn address(name: &str, default: &str) -> Result<SocketAddr, Box<dyn Error + Send + Sync>> {
    let value = std::env::var(name).unwrap_or_else(|_| default.into());
    value
        .parse()
        .map_err(|e| format!("{name}={value:?} is not an address: {e}").into())
}

/// A running server: its certkeeper and where it listens. Dropping it
/// stops both listeners.
pub(crate) struct Server {
    /// The default stack (renewer, resolver, store ...).
    pub(crate) embedded: Embedded,
    /// Where port 80's router listens.
    pub(crate) http: SocketAddr,
    /// Where the application listens over TLS.
    pub(crate) https: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Starts the default stack from `config`, port 80's router on `http` and
/// the application on `https`.
pub(crate) async fn start(
    config: Config,
    http: SocketAddr,
    https: SocketAddr,
) -> Result<Server, Box<dyn Error + Send + Sync>> {
    // Port 80 is served below, challenges included.
    let config = config.into_builder().challenge_address(None).build()?;
    let embedded = Embedded::start(config).await?;
    let maintenance = embedded.spawn_maintenance();

    let app = Router::new().route("/", get(|| async { "hello over automatic HTTPS\n" }));
    let port80 = challenges_and_redirect(embedded.challenge_responder.clone(), https.port());
    let http_listener = tokio::net::TcpListener::bind(http).await?;
    let https_listener = TlsListener::bind(https, &embedded.resolver).await?;
    let (http, https) = (http_listener.local_addr()?, https_listener.local_addr()?);

    let tasks = vec![
        tokio::spawn(async move {
            let _ = axum::serve(http_listener, port80).await;
        }),
        tokio::spawn(async move {
            let _ = axum::serve(https_listener, app).await;
        }),
        tokio::spawn(async move {
            if let Ok(Err(e)) = maintenance.await {
                tracing::error!(error = %e, "maintenance stopped");
            }
        }),
    ];
    Ok(Server {
        embedded,
        http,
        https,
        tasks,
    })
}
