//! Console access: who may sign up and sign in ([`AccessPolicy`], default
//! [`ConsoleAccessPolicy`]), which address a request really comes from
//! ([`client_ip`]), and brute-force protection ([`LoginThrottle`]).
//!
//! A console route asks, in this order:
//!
//! 1. [`client_ip`] for the client's address (the socket's peer, or the
//!    X-Forwarded-For hop a trusted proxy vouches for);
//! 2. the [`AccessPolicy`] whether this signup or sign-in may go on at all
//!    (answer `403` with [`DenyReason::code`] when not);
//! 3. for a sign-in, the [`LoginThrottle`] whether this email and address
//!    may try a password now (answer `429` with its headers when not), and
//!    after a correct password [`LoginThrottle::record_success`].
//!
//! `examples/console_guard.rs` is an axum server wired this way.

mod client_ip;
mod console;
mod password;
mod throttle;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod throttle_sql;
mod whitelist;

pub use crate::email::normalize_email;
pub use client_ip::{client_ip, TrustedProxies, TRUSTED_PROXIES_VAR};
pub(crate) use console::parse_switch;
pub use console::{
    ConsoleAccessPolicy, MemoryRootSeat, RootSeat, StoreRootSeat, ROOT_SEAT_META_KEY,
    WHITELIST_EMAILS_VAR, WHITELIST_IPS_VAR, WHITELIST_ROOT_VAR,
};
pub use password::{
    hash_password, needs_rehash, verify_password, MAX_VERIFY_MEMORY_KIB, MAX_VERIFY_PARALLELISM,
    MAX_VERIFY_TIME_COST,
};
pub use throttle::{
    LoginThrottle, LoginThrottleBuilder, MemoryThrottleBackend, RateLimit, ThrottleBackend,
    ThrottleDecision, ThrottleLimits, WindowCount, DEFAULT_MEMORY_CAPACITY,
};
pub use whitelist::{EmailWhitelist, IpWhitelist};

use std::fmt::{self, Debug};
use std::net::IpAddr;

use async_trait::async_trait;

use crate::Result;

/// Decides whether a console signup or sign-in may go on.
///
/// Hold it as `Arc<dyn AccessPolicy>`; it is called concurrently from every
/// request.
///
/// # Contract
/// - `check` is asked before the action is carried out, with the client
///   address already resolved (see [`client_ip`]) and the facts the server
///   knows (existing user count, whether the signup carries a valid
///   invitation: the server verifies invitations, the policy trusts the flag).
/// - [`Decision::Allowed`] lets the action go on; [`Decision::Denied`]
///   carries the reason, with a stable [`code`](DenyReason::code) and the
///   [`HTTP status`](DenyReason::http_status) to answer with.
/// - An allowed signup may have taken a one-time right (for example the
///   root seat of [`ConsoleAccessPolicy`]); ask only once the request is
///   otherwise valid, so a malformed request does not spend it.
/// - `Err` means the policy could not decide (a shared store failed). The
///   server must then refuse the request (fail closed), for example with
///   `503`.
/// - Must never log secrets; the request holds none (no password).
#[async_trait]
pub trait AccessPolicy: Debug + Send + Sync + 'static {
    /// The decision for `request`.
    async fn check(&self, request: &AccessRequest) -> Result<Decision>;
}

/// What a console request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Create a console account.
    SignUp,
    /// Sign in to an existing console account.
    SignIn,
}

/// The facts an [`AccessPolicy`] decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRequest {
    /// Signup or sign-in.
    pub action: Action,
    /// The client's address, as [`client_ip`] resolved it.
    pub client_ip: IpAddr,
    /// The email address the request is for, as the client sent it.
    pub email: String,
    /// How many console users exist now.
    pub user_count: u64,
    /// Whether the signup carries an invitation the server verified.
    pub invited: bool,
}

impl AccessRequest {
    /// A signup of `email` from `client_ip` while `user_count` users exist,
    /// without an invitation.
    pub fn sign_up(client_ip: IpAddr, email: impl Into<String>, user_count: u64) -> Self {
        Self {
            action: Action::SignUp,
            client_ip,
            email: email.into(),
            user_count,
            invited: false,
        }
    }

    /// A sign-in of `email` from `client_ip`.
    pub fn sign_in(client_ip: IpAddr, email: impl Into<String>) -> Self {
        Self {
            action: Action::SignIn,
            client_ip,
            email: email.into(),
            user_count: 0,
            invited: false,
        }
    }

    /// Marks the request as carrying a verified invitation.
    pub fn with_invitation(mut self, invited: bool) -> Self {
        self.invited = invited;
        self
    }
}

/// An [`AccessPolicy`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The action may go on.
    Allowed,
    /// The action is refused, for this reason.
    Denied(DenyReason),
}

impl Decision {
    /// Whether the action may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed)
    }

    /// The reason of a denial.
    pub fn denial(&self) -> Option<DenyReason> {
        match self {
            Self::Allowed => None,
            Self::Denied(reason) => Some(*reason),
        }
    }
}

/// Why an [`AccessPolicy`] refused a request.
///
/// Codes are stable and use the reference platform's names where it has one
/// for the same case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// The client's address is not on the IP whitelist.
    IpNotWhitelisted,
    /// The email address is not on the email whitelist.
    EmailNotWhitelisted,
    /// Root-only signup is on, the console already has its first user, and
    /// the signup carries no invitation.
    InvitationRequired,
    /// The console has as many users as its configured limit allows
    /// (see [`ConsoleAccessPolicy::with_max_users`]); invitations included.
    UserCountExceeded,
    /// The email is not an address [`normalize_email`] accepts (for
    /// example a local part with invisible or non-ASCII characters).
    InvalidEmail,
}

impl DenyReason {
    /// The stable machine-readable code, for API answers and logs:
    /// `user_ip_not_whitelisted`, `user_email_not_whitelisted` (the
    /// reference platform's codes), `user_invitation_required`,
    /// `user_count_exceeded`, `user_email_invalid`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::IpNotWhitelisted => "user_ip_not_whitelisted",
            Self::EmailNotWhitelisted => "user_email_not_whitelisted",
            Self::InvitationRequired => "user_invitation_required",
            Self::UserCountExceeded => "user_count_exceeded",
            Self::InvalidEmail => "user_email_invalid",
        }
    }

    /// The HTTP status to answer with: `400 Bad Request` for
    /// [`InvalidEmail`](Self::InvalidEmail) (the request itself is wrong),
    /// `403 Forbidden` for every other reason (the request is understood
    /// and refused; retrying with other credentials does not help, so `401`
    /// would be wrong).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidEmail => 400,
            _ => 403,
        }
    }

    /// A sentence a console can show the user.
    pub fn message(&self) -> &'static str {
        match self {
            Self::IpNotWhitelisted => "Console access is not allowed from this address.",
            Self::EmailNotWhitelisted => "This email address may not use the console.",
            Self::InvitationRequired => {
                "Console registration is restricted: ask an administrator for an invitation."
            }
            Self::UserCountExceeded => "The console has reached its maximum number of users.",
            Self::InvalidEmail => "This is not a valid email address.",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.code())
    }
}
