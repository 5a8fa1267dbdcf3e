//! [`ConsoleAccessPolicy`]: the reference platform's console rules, and the
//! root seat that makes root-only signup safe under concurrency.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::client_ip::TrustedProxies;
use super::whitelist::{shorten, EmailWhitelist, IpWhitelist};
use super::{AccessPolicy, AccessRequest, Action, Decision, DenyReason};
use crate::config::Setting;
use crate::email::normalize_email;
use crate::store::CertStore;
use crate::{Error, Result};

/// The IP/CIDR whitelist variable.
pub const WHITELIST_IPS_VAR: &str = Setting::ConsoleWhitelistIps.name();
/// The email whitelist variable.
pub const WHITELIST_EMAILS_VAR: &str = Setting::ConsoleWhitelistEmails.name();
/// The root-only signup variable.
pub const WHITELIST_ROOT_VAR: &str = Setting::ConsoleWhitelistRoot.name();
/// The store setting under which [`StoreRootSeat`] keeps the root's email.
pub const ROOT_SEAT_META_KEY: &str = "console-root";

/// Who holds the console's root seat: the right, under root-only signup, to
/// create the first account without an invitation.
///
/// # Contract
/// - [`try_claim`](Self::try_claim) is atomic: when any number of callers
///   race on a free seat, in one process or across instances sharing a
///   backend, exactly one email wins, and every later call answers the same.
/// - The seat is never given to another email once taken. The holder's own
///   email may claim again and gets `true`, so a first signup that failed
///   after the policy allowed it (a database error) can be retried.
/// - Emails are passed normalised ([`normalize_email`]); implementations
///   compare them as plain strings.
#[async_trait]
pub trait RootSeat: Debug + Send + Sync + 'static {
    /// Takes the seat for `email` if it is free; returns whether `email`
    /// holds it afterwards.
    async fn try_claim(&self, email: &str) -> Result<bool>;
}

/// A [`RootSeat`] in the memory of one process, the default.
#[derive(Debug, Default)]
pub struct MemoryRootSeat {
    holder: Mutex<Option<String>>,
}

impl MemoryRootSeat {
    /// A free seat.
    pub fn new() -> Self {
        Self::default()
    }

    /// The email holding the seat, if any.
    pub fn holder(&self) -> Option<String> {
        self.holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl RootSeat for MemoryRootSeat {
    async fn try_claim(&self, email: &str) -> Result<bool> {
        let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
        let holder = holder.get_or_insert_with(|| email.to_string());
        Ok(holder == email)
    }
}

/// A [`RootSeat`] kept as the setting [`ROOT_SEAT_META_KEY`] of a
/// [`CertStore`], through its atomic
/// [`put_meta_if_absent`](CertStore::put_meta_if_absent): every instance
/// sharing the store (a SQL backend in a cluster) sees one root.
///
/// The setting holds the root's normalised email. certkeeper never clears
/// it; to give the seat back (the root account was a mistake), an operator
/// deletes the setting `console-root` from the store together with the
/// stray user: with a `FileStore`, stop the
/// server and delete the file `meta/console-root` in its folder.
#[derive(Debug, Clone)]
pub struct StoreRootSeat {
    store: Arc<dyn CertStore>,
}

impl StoreRootSeat {
    /// The seat kept in `store`.
    pub fn new(store: Arc<dyn CertStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl RootSeat for StoreRootSeat {
    async fn try_claim(&self, email: &str) -> Result<bool> {
        let holder = self
            .store
            .put_meta_if_absent(ROOT_SEAT_META_KEY, email)
            .await?;
        Ok(holder == email)
    }
}

/// The default [`AccessPolicy`], the reference platform's console rules:
///
/// - **IP whitelist** (`_APP_CONSOLE_WHITELIST_IPS`, see [`IpWhitelist`]):
///   when not empty, signups and sign-ins from other addresses are denied
///   with [`DenyReason::IpNotWhitelisted`].
/// - **Email whitelist** (`_APP_CONSOLE_WHITELIST_EMAILS`, see
///   [`EmailWhitelist`]): when not empty, other emails are denied with
///   [`DenyReason::EmailNotWhitelisted`].
/// - **Root-only signup** (`_APP_CONSOLE_WHITELIST_ROOT`, default enabled):
///   only the first user may sign up without an invitation; later uninvited
///   signups are denied with [`DenyReason::InvitationRequired`]. Racing
///   signups on an empty console are settled by a [`RootSeat`]
///   ([`MemoryRootSeat`] by default; [`StoreRootSeat`] when instances share a
///   store), so exactly one of them becomes root.
/// - An optional limit on console users ([`with_max_users`](Self::with_max_users)),
///   invitations included: [`DenyReason::UserCountExceeded`]. Advisory: see
///   there.
/// - An email that [`normalize_email`] refuses (not an address, or a local
///   part that is not plain ASCII) is denied with
///   [`DenyReason::InvalidEmail`], whitelist or not. Store users under
///   `normalize_email`'s output.
/// - A client address that is itself a trusted proxy
///   ([`with_trusted_proxies`](Self::with_trusted_proxies)) is never on the
///   IP whitelist.
///
/// The whitelists apply to sign-ins too, so an account created before an
/// address or email was removed from a list cannot keep using the console.
/// The IP is checked first, so a client off the IP list learns nothing about
/// which emails are listed.
///
/// The reference platform answers a second uninvited signup with
/// `user_console_count_exceeded` and status 401, and its whitelist denials
/// with 401; certkeeper answers 403 with the codes of [`DenyReason`].
#[derive(Debug, Clone)]
pub struct ConsoleAccessPolicy {
    ips: IpWhitelist,
    emails: EmailWhitelist,
    root_only: bool,
    max_users: Option<u64>,
    root_seat: Arc<dyn RootSeat>,
    proxies: TrustedProxies,
}

impl Default for ConsoleAccessPolicy {
    /// No whitelist, root-only signup enabled, an in-memory root seat.
    fn default() -> Self {
        Self {
            ips: IpWhitelist::default(),
            emails: EmailWhitelist::default(),
            root_only: true,
            max_users: None,
            root_seat: Arc::new(MemoryRootSeat::new()),
            proxies: TrustedProxies::none(),
        }
    }
}

impl ConsoleAccessPolicy {
    /// The policy from parsed whitelists (empty: everyone) and the root-only
    /// switch. [`Config`](crate::Config) builds it from the `_APP_CONSOLE_*`
    /// settings ([`Config::console_access_policy`](crate::Config::console_access_policy)).
    pub fn new(ips: IpWhitelist, emails: EmailWhitelist, root_only: bool) -> Self {
        Self {
            ips,
            emails,
            root_only,
            ..Self::default()
        }
    }

    /// Builds the policy from the three variables' values: comma-separated
    /// lists for `ips` and `emails`, and `enabled` / `disabled` for `root`
    /// (also `true`/`false`, `on`/`off`, `yes`/`no`, `1`/`0`; empty means
    /// the default, `enabled`).
    ///
    /// A bad entry fails with [`Error::Config`] naming the variable and the
    /// entry; nothing is silently dropped.
    ///
    /// ```
    /// use certkeeper::access::ConsoleAccessPolicy;
    /// let policy = ConsoleAccessPolicy::from_values("10.0.0.0/8", "*@example.com", "enabled")?;
    /// assert!(policy.root_only());
    /// assert!(ConsoleAccessPolicy::from_values("10.0.0.0/8, intranet", "", "").is_err());
    /// # Ok::<(), certkeeper::Error>(())
    /// ```
    pub fn from_values(ips: &str, emails: &str, root: &str) -> Result<Self> {
        Ok(Self::new(
            IpWhitelist::parse(WHITELIST_IPS_VAR, ips)?,
            EmailWhitelist::parse(WHITELIST_EMAILS_VAR, emails)?,
            parse_switch(WHITELIST_ROOT_VAR, root)?,
        ))
    }

    /// Keeps the root seat in `seat` instead of this process's memory, for
    /// instances that share a store.
    pub fn with_root_seat(mut self, seat: Arc<dyn RootSeat>) -> Self {
        self.root_seat = seat;
        self
    }

    /// Turns root-only signup on or off.
    pub fn with_root_only(mut self, root_only: bool) -> Self {
        self.root_only = root_only;
        self
    }

    /// Caps the number of console users (`None`, the default: no cap).
    ///
    /// **Advisory.** The policy compares the
    /// [`user_count`](AccessRequest::user_count) the server passes with the
    /// cap, and the server creates the user afterwards: two signups racing
    /// at `max - 1` users both see room, and both are allowed. A server that
    /// needs a hard cap must enforce it where the user is created, in one
    /// atomic step (for example `INSERT ... SELECT ... WHERE (SELECT count(*)
    /// FROM users) < $max` in a transaction, or a counter row updated with
    /// a check). Only the root seat of root-only signup is race-free by
    /// itself (see [`RootSeat`]).
    pub fn with_max_users(mut self, max_users: Option<u64>) -> Self {
        self.max_users = max_users;
        self
    }

    /// The proxies in front of the server, the same list given to
    /// [`client_ip`](super::client_ip) (none by default).
    ///
    /// `client_ip` answers with a trusted proxy's own address when the
    /// X-Forwarded-For chain ends on it: no header, a hop that is not an
    /// address, or only trusted hops. The real client of such a request is
    /// unknown, so a client address that is a trusted proxy is denied with
    /// [`DenyReason::IpNotWhitelisted`] whenever the IP whitelist is set,
    /// even if a whitelisted range covers it (an internal range that also
    /// holds the proxies, say). Without this, never put a proxy's address on
    /// the IP whitelist.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// The trusted proxies (see [`with_trusted_proxies`](Self::with_trusted_proxies)).
    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.proxies
    }

    /// The IP whitelist.
    pub fn ip_whitelist(&self) -> &IpWhitelist {
        &self.ips
    }

    /// The email whitelist.
    pub fn email_whitelist(&self) -> &EmailWhitelist {
        &self.emails
    }

    /// Whether only the first user may sign up without an invitation.
    pub fn root_only(&self) -> bool {
        self.root_only
    }

    async fn decide(&self, request: &AccessRequest) -> Result<Decision> {
        use Decision::{Allowed, Denied};
        if !self.ips.is_empty()
            && (!self.ips.contains(request.client_ip) || self.proxies.contains(request.client_ip))
        {
            return Ok(Denied(DenyReason::IpNotWhitelisted));
        }
        let Some(email) = normalize_email(&request.email) else {
            return Ok(Denied(DenyReason::InvalidEmail));
        };
        if !self.emails.is_empty() && !self.emails.contains(&email) {
            return Ok(Denied(DenyReason::EmailNotWhitelisted));
        }
        if request.action != Action::SignUp {
            return Ok(Allowed);
        }
        if self.max_users.is_some_and(|max| request.user_count >= max) {
            return Ok(Denied(DenyReason::UserCountExceeded));
        }
        if !self.root_only || request.invited {
            return Ok(Allowed);
        }
        if request.user_count > 0 {
            return Ok(Denied(DenyReason::InvitationRequired));
        }
        if self.root_seat.try_claim(&email).await? {
            Ok(Allowed)
        } else {
            Ok(Denied(DenyReason::InvitationRequired))
        }
    }
}

#[async_trait]
impl AccessPolicy for ConsoleAccessPolicy {
    async fn check(&self, request: &AccessRequest) -> Result<Decision> {
        let decision = self.decide(request).await?;
        match decision {
            Decision::Allowed => tracing::debug!(
                action = ?request.action,
                client_ip = %request.client_ip,
                "console access allowed"
            ),
            Decision::Denied(reason) => tracing::info!(
                action = ?request.action,
                client_ip = %request.client_ip,
                code = reason.code(),
                "console access denied"
            ),
        }
        Ok(decision)
    }
}

/// An on/off setting (`enabled`/`disabled` and the usual synonyms; empty: on).
pub(crate) fn parse_switch(name: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "enabled" | "enable" | "true" | "on" | "yes" | "1" => Ok(true),
        "disabled" | "disable" | "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(Error::config(
            name,
            format!("{:?} is not enabled or disabled", shorten(value)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    async fn check(policy: &ConsoleAccessPolicy, request: AccessRequest) -> Decision {
        policy.check(&request).await.unwrap()
    }

    #[tokio::test]
    async fn empty_whitelists_let_everyone_in_and_only_the_first_user_sign_up() {
        let policy = ConsoleAccessPolicy::from_values("", "", "").unwrap();
        assert!(policy.root_only());
        let a = ip("198.51.100.1");
        assert_eq!(
            check(&policy, AccessRequest::sign_up(a, "root@example.com", 0)).await,
            Decision::Allowed
        );
        // The root retrying its own signup (its user creation failed) is fine.
        assert_eq!(
            check(&policy, AccessRequest::sign_up(a, "ROOT@example.com ", 0)).await,
            Decision::Allowed
        );
        // Someone else with the count still at 0: the seat is taken.
        assert_eq!(
            check(&policy, AccessRequest::sign_up(a, "second@example.com", 0)).await,
            Decision::Denied(DenyReason::InvitationRequired)
        );
        assert_eq!(
            check(&policy, AccessRequest::sign_up(a, "third@example.com", 1)).await,
            Decision::Denied(DenyReason::InvitationRequired)
        );
        assert_eq!(
            check(
                &policy,
                AccessRequest::sign_up(a, "third@example.com", 1).with_invitation(true)
            )
            .await,
            Decision::Allowed
        );
        assert_eq!(
            check(&policy, AccessRequest::sign_in(a, "anyone@example.org")).await,
            Decision::Allowed
        );
    }

    #[tokio::test]
    async fn an_instance_with_users_already_gives_no_root_seat() {
        let seat = Arc::new(MemoryRootSeat::new());
        let policy = ConsoleAccessPolicy::default().with_root_seat(seat.clone());
        let d = check(
            &policy,
            AccessRequest::sign_up(ip("::1"), "late@example.com", 3),
        )
        .await;
        assert_eq!(d, Decision::Denied(DenyReason::InvitationRequired));
        assert_eq!(seat.holder(), None);
    }

    #[tokio::test]
    async fn root_only_disabled_lets_anyone_sign_up() {
        let policy = ConsoleAccessPolicy::from_values("", "", "disabled").unwrap();
        for n in 0..3 {
            let d = check(
                &policy,
                AccessRequest::sign_up(ip("::1"), format!("u{n}@example.com"), n),
            )
            .await;
            assert_eq!(d, Decision::Allowed);
        }
    }

    #[tokio::test]
    async fn whitelists_apply_to_signups_and_sign_ins_ip_first() {
        let policy =
            ConsoleAccessPolicy::from_values("10.0.0.0/8, 2001:db8::/32", "*@example.com", "off")
                .unwrap();
        let inside = ip("10.1.2.3");
        let outside = ip("192.0.2.1");
        for request in [
            AccessRequest::sign_up(outside, "a@example.com", 0),
            AccessRequest::sign_in(outside, "a@example.com"),
            AccessRequest::sign_in(outside, "a@elsewhere.org"),
        ] {
            assert_eq!(
                check(&policy, request).await,
                Decision::Denied(DenyReason::IpNotWhitelisted)
            );
        }
        for request in [
            AccessRequest::sign_up(inside, "a@elsewhere.org", 0).with_invitation(true),
            AccessRequest::sign_in(inside, "a@sub.example.com"),
            AccessRequest::sign_in(ip("2001:db8::5"), "a@example.org"),
        ] {
            assert_eq!(
                check(&policy, request).await,
                Decision::Denied(DenyReason::EmailNotWhitelisted)
            );
        }
        assert!(check(
            &policy,
            AccessRequest::sign_in(ip("::ffff:10.9.9.9"), "A@Example.com")
        )
        .await
        .is_allowed());
    }

    #[tokio::test]
    async fn emails_normalize_email_refuses_are_denied_as_invalid() {
        // No whitelist at all: the address still has to be one.
        let policy = ConsoleAccessPolicy::from_values("", "", "disabled").unwrap();
        let a = ip("192.0.2.1");
        for email in [
            "not an email",
            "admin\u{200B}@example.com",
            "\u{FEFF}admin@example.com",
            "jürgen@example.com",
        ] {
            for request in [
                AccessRequest::sign_up(a, email, 0),
                AccessRequest::sign_in(a, email),
            ] {
                let d = check(&policy, request).await;
                assert_eq!(d, Decision::Denied(DenyReason::InvalidEmail), "{email:?}");
                assert_eq!(d.denial().unwrap().http_status(), 400);
                assert_eq!(d.denial().unwrap().code(), "user_email_invalid");
            }
        }
        // A domain whitelist does not let an invisible character through.
        let listed = ConsoleAccessPolicy::from_values("", "*@example.com", "disabled").unwrap();
        assert_eq!(
            check(
                &listed,
                AccessRequest::sign_up(a, "admin\u{200B}@example.com", 0)
            )
            .await,
            Decision::Denied(DenyReason::InvalidEmail)
        );
        // The root seat is taken under the normalised address.
        let seat = Arc::new(MemoryRootSeat::new());
        let root = ConsoleAccessPolicy::default().with_root_seat(seat.clone());
        assert!(
            check(&root, AccessRequest::sign_up(a, " Root@Example.COM ", 0))
                .await
                .is_allowed()
        );
        assert_eq!(seat.holder().as_deref(), Some("root@example.com"));
    }

    #[tokio::test]
    async fn a_trusted_proxy_is_never_a_whitelisted_client() {
        let proxies = TrustedProxies::parse(
            Setting::ConsoleTrustedProxies.name(),
            "10.0.0.2, 10.9.0.0/16",
        )
        .unwrap();
        let plain = ConsoleAccessPolicy::from_values("10.0.0.0/8", "", "disabled").unwrap();
        let guarded = plain.clone().with_trusted_proxies(proxies.clone());
        assert_eq!(guarded.trusted_proxies(), &proxies);
        for proxy in ["10.0.0.2", "10.9.4.4", "::ffff:10.0.0.2"] {
            let request = AccessRequest::sign_in(ip(proxy), "ops@example.com");
            assert_eq!(
                check(&guarded, request.clone()).await,
                Decision::Denied(DenyReason::IpNotWhitelisted),
                "{proxy}"
            );
            // What the policy alone would have said.
            assert!(check(&plain, request).await.is_allowed());
        }
        let client = AccessRequest::sign_in(ip("10.0.0.3"), "ops@example.com");
        assert!(check(&guarded, client).await.is_allowed());
        // Without an IP whitelist, proxies are not singled out.
        let open = ConsoleAccessPolicy::from_values("", "", "disabled")
            .unwrap()
            .with_trusted_proxies(proxies);
        let request = AccessRequest::sign_in(ip("10.0.0.2"), "ops@example.com");
        assert!(check(&open, request).await.is_allowed());
    }

    #[tokio::test]
    async fn a_user_cap_applies_to_invitations_too() {
        let policy = ConsoleAccessPolicy::default().with_max_users(Some(2));
        let req = AccessRequest::sign_up(ip("::1"), "x@example.com", 2).with_invitation(true);
        let d = check(&policy, req).await;
        assert_eq!(d, Decision::Denied(DenyReason::UserCountExceeded));
        assert_eq!(d.denial().unwrap().code(), "user_count_exceeded");
        assert_eq!(d.denial().unwrap().http_status(), 403);
    }

    #[test]
    fn bad_values_name_their_variable_and_entry() {
        for (ips, emails, root, var, entry) in [
            (
                "10.0.0.0/8, localhost",
                "",
                "",
                WHITELIST_IPS_VAR,
                "localhost",
            ),
            ("", "a@example.com, bob", "", WHITELIST_EMAILS_VAR, "bob"),
            ("", "", "maybe", WHITELIST_ROOT_VAR, "maybe"),
        ] {
            match ConsoleAccessPolicy::from_values(ips, emails, root) {
                Err(Error::Config { name, reason }) => {
                    assert_eq!(name, var);
                    assert!(reason.contains(entry), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn codes_are_stable() {
        let all = [
            (DenyReason::IpNotWhitelisted, "user_ip_not_whitelisted", 403),
            (
                DenyReason::EmailNotWhitelisted,
                "user_email_not_whitelisted",
                403,
            ),
            (
                DenyReason::InvitationRequired,
                "user_invitation_required",
                403,
            ),
            (DenyReason::UserCountExceeded, "user_count_exceeded", 403),
            (DenyReason::InvalidEmail, "user_email_invalid", 400),
        ];
        for (reason, code, status) in all {
            assert_eq!(reason.code(), code);
            assert_eq!(reason.http_status(), status);
            assert!(reason.to_string().contains(code));
        }
    }
}
