//! A console's signup and login routes behind certkeeper's access rules: the
//! `_APP_CONSOLE_WHITELIST_*` policy, the client address through trusted
//! proxies, and the login throttle, on an axum server.
//!
//! ```text
//! cargo run --example console_guard
//! curl -i localhost:8080/signup -H 'content-type: application/json' \
//!      -d '{"email":"root@example.com","password":"a long passphrase"}'    # 201, the root
//! curl -i localhost:8080/signup -H 'content-type: application/json' \
//!      -d '{"email":"next@example.com","password":"a long passphrase"}'    # 403 user_invitation_required
//! curl -i localhost:8080/login -H 'content-type: application/json' \
//!      -d '{"email":"root@example.com","password":"wrong"}'                # 401, then 429 after 10
//! ```
//!
//! Answers: `201`/`200` on success, `400` for a malformed request (the
//! policy's `user_email_invalid` for an email `normalize_email` refuses),
//! `401` for a wrong password, `403` with the policy's code
//! (`user_ip_not_whitelisted`, `user_email_not_whitelisted`,
//! `user_invitation_required`, `user_count_exceeded`), `409` for an
//! existing account, `429` with `Retry-After` when the throttle says so, and
//! `X-RateLimit-*` headers on every login answer.
//!
//! Settings: `_APP_CONSOLE_WHITELIST_IPS`, `_APP_CONSOLE_WHITELIST_EMAILS`,
//! `_APP_CONSOLE_WHITELIST_ROOT`, `_APP_CONSOLE_TRUSTED_PROXIES`, and
//! `CONSOLE_GUARD_ADDR` (default `127.0.0.1:8080`). `CONSOLE_GUARD_INVITE=<email>`
//! prints an invitation token for that email at start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use certkeeper::access::{
    client_ip, normalize_email, AccessPolicy, AccessRequest, Decision, LoginThrottle,
    ThrottleDecision, TrustedProxies,
};
use certkeeper::access::{hash_password, verify_password};
use certkeeper::Config;
use serde::Deserialize;
use serde_json::json;

/// The console's state: its rules and an in-memory user table.
#[derive(Debug)]
pub struct Console {
    policy: Arc<dyn AccessPolicy>,
    throttle: LoginThrottle,
    proxies: TrustedProxies,
    /// Normalised email -> Argon2id hash.
    users: Mutex<HashMap<String, String>>,
    /// Invitation token -> the normalised email it is for.
    invitations: Mutex<HashMap<String, String>>,
    /// Verified for unknown emails, so that a wrong email costs the same
    /// time as a wrong password and does not reveal who has an account.
    dummy_hash: String,
}

impl Console {
    /// A console with no users.
    pub fn new(
        policy: Arc<dyn AccessPolicy>,
        throttle: LoginThrottle,
        proxies: TrustedProxies,
    ) -> certkeeper::Result<Self> {
        Ok(Self {
            policy,
            throttle,
            proxies,
            users: Mutex::default(),
            invitations: Mutex::default(),
            dummy_hash: hash_password("no user has this password")?,
        })
    }

    /// Issues an invitation for `email` (as a member of the console would);
    /// returns its token.
    pub fn invite(&self, email: &str) -> Option<String> {
        use chacha20poly1305::aead::rand_core::RngCore;
        let email = normalize_email(email)?;
        let mut bytes = [0u8; 16];
        chacha20poly1305::aead::OsRng.fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        lock(&self.invitations).insert(token.clone(), email);
        Some(token)
    }

    /// How many users exist.
    pub fn user_count(&self) -> usize {
        lock(&self.users).len()
    }

    fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> std::net::IpAddr {
        // A value that is not text is kept as an empty hop: dropping it would
        // let the client's own values move one step closer.
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        client_ip(peer.ip(), &forwarded, &self.proxies)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The signup and login routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/signup", post(sign_up))
        .route("/login", post(sign_in))
        .with_state(console)
}

#[derive(Deserialize)]
struct SignUp {
    email: String,
    password: String,
    #[serde(default)]
    invitation: Option<String>,
}

#[derive(Deserialize)]
struct SignIn {
    email: String,
    password: String,
}

fn answer(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

fn with_rate_headers(mut response: Response, decision: &ThrottleDecision) -> Response {
    for (name, value) in decision.headers() {
        // `from_bytes` lowercases `X-RateLimit-Limit` and friends.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn denied(decision: Decision) -> Option<Response> {
    let reason = decision.denial()?;
    let status = StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    Some(answer(status, reason.code(), reason.message()))
}

fn unavailable() -> Response {
    // The policy could not decide: refuse (fail closed).
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "general_server_error",
        "Try again later.",
    )
}

async fn sign_up(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<SignUp>,
) -> Response {
    let Some(email) = normalize_email(&body.email) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "general_argument_invalid",
            "Not an email address.",
        );
    };
    if body.password.chars().count() < 8 {
        return answer(
            StatusCode::BAD_REQUEST,
            "general_argument_invalid",
            "The password needs at least 8 characters.",
        );
    }
    let invited = body
        .invitation
        .as_ref()
        .is_some_and(|token| lock(&console.invitations).get(token) == Some(&email));
    let request = AccessRequest::sign_up(
        console.client(peer, &headers),
        email.clone(),
        console.user_count() as u64,
    )
    .with_invitation(invited);
    match console.policy.check(&request).await {
        Ok(decision) => {
            if let Some(response) = denied(decision) {
                return response;
            }
        }
        Err(_) => return unavailable(),
    }
    let password = body.password;
    let hash = match tokio::task::spawn_blocking(move || hash_password(&password)).await {
        Ok(Ok(hash)) => hash,
        _ => return unavailable(),
    };
    {
        let mut users = lock(&console.users);
        if users.contains_key(&email) {
            return answer(
                StatusCode::CONFLICT,
                "user_already_exists",
                "An account with this email exists.",
            );
        }
        users.insert(email.clone(), hash);
    }
    if let Some(token) = body.invitation {
        lock(&console.invitations).remove(&token);
    }
    (StatusCode::CREATED, Json(json!({ "email": email }))).into_response()
}

async fn sign_in(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Response {
    let ip = console.client(peer, &headers);
    match console
        .policy
        .check(&AccessRequest::sign_in(ip, body.email.clone()))
        .await
    {
        Ok(decision) => {
            if let Some(response) = denied(decision) {
                return response;
            }
        }
        Err(_) => return unavailable(),
    }
    let throttle = match console.throttle.check(&body.email, ip).await {
        Ok(decision) => decision,
        Err(_) => return unavailable(),
    };
    if !throttle.is_allowed() {
        let response = answer(
            StatusCode::TOO_MANY_REQUESTS,
            "general_rate_limit_exceeded",
            "Too many login attempts. Try again later.",
        );
        return with_rate_headers(response, &throttle);
    }
    let email = normalize_email(&body.email);
    let stored = email
        .as_ref()
        .and_then(|email| lock(&console.users).get(email).cloned());
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| console.dummy_hash.clone());
    let password = body.password;
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await;
    let response = match matches {
        Ok(Ok(true)) if known => {
            if console
                .throttle
                .record_success(&body.email, ip)
                .await
                .is_err()
            {
                return unavailable();
            }
            (StatusCode::OK, Json(json!({ "email": email }))).into_response()
        }
        Ok(Ok(_)) => answer(
            StatusCode::UNAUTHORIZED,
            "user_invalid_credentials",
            "Invalid email or password.",
        ),
        _ => return unavailable(),
    };
    with_rate_headers(response, &throttle)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Also reads _APP_CONSOLE_TRUSTED_PROXIES, so that a proxy's own
    // address never passes the IP whitelist.
    let policy = Config::from_env()?.console_access_policy();
    let proxies = policy.trusted_proxies().clone();
    println!(
        "policy: IPs {:?}, emails {:?}, root-only {}; trusted proxies {:?}",
        policy.ip_whitelist(),
        policy.email_whitelist(),
        policy.root_only(),
        proxies
    );
    let console = Arc::new(Console::new(
        Arc::new(policy),
        LoginThrottle::new(),
        proxies,
    )?);
    if let Ok(email) = std::env::var("CONSOLE_GUARD_INVITE") {
        match console.invite(&email) {
            Some(token) => println!("invitation for {email}: {token}"),
            None => eprintln!("CONSOLE_GUARD_INVITE: {email:?} is not an email address"),
        }
    }
    let addr = std::env::var("CONSOLE_GUARD_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("console on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        router(console).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
