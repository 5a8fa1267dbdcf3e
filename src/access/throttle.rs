//! [`LoginThrottle`]: brute-force protection for console sign-ins.

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Debug};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipnet::Ipv6Net;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::email::normalize_email;
use crate::{Error, Result};

/// How many keys [`MemoryThrottleBackend::new`] keeps at most.
pub const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

/// A counter's state after a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowCount {
    /// Hits in the current window, this one included.
    pub count: u64,
    /// When the current window ends and the count starts again from zero.
    pub resets_at: OffsetDateTime,
}

/// Where a [`LoginThrottle`] keeps its counters: in memory for one process
/// ([`MemoryThrottleBackend`]), or in a store shared by every instance.
///
/// Counters use fixed windows: a key's window opens at its first hit, lasts
/// `window`, and the first hit after it ends opens a new one at count 1.
///
/// # Contract
/// - `hit` is atomic per key: concurrent hits (from one process or many)
///   are each counted exactly once, and each caller gets the count that
///   includes its own hit.
/// - `refund` takes back one hit of the key's live window, atomically too;
///   the count never goes below zero, and a key without a live window is
///   left alone.
/// - `reset` forgets a key; the next hit opens a new window.
/// - Keys are ASCII, at most 64 bytes, and name no person in clear (emails
///   are hashed), so a backend may store and log them as they are.
/// - A backend may forget expired windows at any time, and may forget live
///   ones to bound its memory (which lets an attacker try again sooner, so
///   only under pressure). It must then forget windows still under the
///   `limit` given with their last hit before any window that reached it,
///   so that flooding the table with new keys cannot clear an exhausted
///   counter. A backend that never forgets live windows (a SQL table) can
///   ignore `limit`.
///
/// A SQL backend is one statement per hit, for example in PostgreSQL:
///
/// ```sql
/// INSERT INTO login_throttle (key, count, resets_at) VALUES ($1, 1, $2 + $3)
/// ON CONFLICT (key) DO UPDATE SET
///   count     = CASE WHEN login_throttle.resets_at <= $2 THEN 1 ELSE login_throttle.count + 1 END,
///   resets_at = CASE WHEN login_throttle.resets_at <= $2 THEN $2 + $3 ELSE login_throttle.resets_at END
/// RETURNING count, resets_at;
/// ```
///
/// with `$2` = `now` and `$3` = `window`; a refund is
/// `UPDATE login_throttle SET count = count - 1 WHERE key = $1 AND resets_at > $2 AND count > 0`,
/// plus a periodic `DELETE ... WHERE resets_at <= now`.
#[async_trait]
pub trait ThrottleBackend: Debug + Send + Sync + 'static {
    /// Counts one hit on `key` at `now`; a new window lasts `window`.
    /// `limit` is the count the caller allows in a window, for a backend
    /// that has to choose which windows to forget (see the contract).
    async fn hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: time::Duration,
        limit: u64,
    ) -> Result<WindowCount>;

    /// Takes back one hit on `key` if its window is still open at `now`.
    async fn refund(&self, key: &str, now: OffsetDateTime) -> Result<()>;

    /// Forgets `key`'s count.
    async fn reset(&self, key: &str) -> Result<()>;
}

/// A [`ThrottleBackend`] in this process's memory, the default.
///
/// Bounded: expired windows are evicted as time passes, and at `capacity`
/// keys one live window is dropped to make room: the one closest to its end
/// among the windows still under their limit, and an exhausted window only
/// when every window is exhausted. So filling the table with made-up emails
/// pushes out other made-up emails, not a victim's exhausted counter; to
/// reach it an attacker would have to exhaust `capacity` counters first,
/// and every sign-in attempt also counts against the client's address.
#[derive(Debug)]
pub struct MemoryThrottleBackend {
    state: Mutex<MemoryState>,
    capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    count: WindowCount,
    limit: u64,
}

impl Slot {
    fn exhausted(&self) -> bool {
        self.count.count >= self.limit
    }
}

#[derive(Debug, Default)]
struct MemoryState {
    counts: HashMap<String, Slot>,
    // Together they mirror `counts`, ordered by end of window: windows
    // under their limit, and windows that reached it (evicted last).
    under: BTreeSet<(OffsetDateTime, String)>,
    exhausted: BTreeSet<(OffsetDateTime, String)>,
}

impl MemoryState {
    fn queue(&mut self, slot: &Slot) -> &mut BTreeSet<(OffsetDateTime, String)> {
        if slot.exhausted() {
            &mut self.exhausted
        } else {
            &mut self.under
        }
    }

    fn insert(&mut self, key: &str, slot: Slot) {
        if let Some(old) = self.counts.insert(key.to_string(), slot) {
            self.queue(&old)
                .remove(&(old.count.resets_at, key.to_string()));
        }
        self.queue(&slot)
            .insert((slot.count.resets_at, key.to_string()));
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.counts.remove(key) {
            self.queue(&old)
                .remove(&(old.count.resets_at, key.to_string()));
        }
    }

    fn evict_expired(&mut self, now: OffsetDateTime) {
        for queue in [&mut self.under, &mut self.exhausted] {
            while queue.first().is_some_and(|(end, _)| *end <= now) {
                if let Some((_, key)) = queue.pop_first() {
                    self.counts.remove(&key);
                }
            }
        }
    }

    /// Drops one live window, under-limit ones first.
    fn evict_one(&mut self) -> bool {
        let victim = match self.under.pop_first() {
            Some(entry) => Some(entry),
            None => self.exhausted.pop_first(),
        };
        match victim {
            Some((_, key)) => {
                self.counts.remove(&key);
                true
            }
            None => false,
        }
    }
}

impl MemoryThrottleBackend {
    /// A backend keeping at most [`DEFAULT_MEMORY_CAPACITY`] keys.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_CAPACITY)
    }

    /// A backend keeping at most `capacity` keys (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            state: Mutex::new(MemoryState::default()),
            capacity: capacity.max(1),
        }
    }

    /// How many keys are held now.
    pub fn len(&self) -> usize {
        self.state().counts.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every critical section leaves the maps in step before anything
        // that could panic, so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for MemoryThrottleBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ThrottleBackend for MemoryThrottleBackend {
    async fn hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: time::Duration,
        limit: u64,
    ) -> Result<WindowCount> {
        let mut state = self.state();
        state.evict_expired(now);
        if let Some(&current) = state.counts.get(key) {
            let mut count = current.count;
            count.count = count.count.saturating_add(1);
            state.insert(key, Slot { count, limit });
            return Ok(count);
        }
        while state.counts.len() >= self.capacity && state.evict_one() {}
        let fresh = WindowCount {
            count: 1,
            resets_at: now.saturating_add(window),
        };
        state.insert(
            key,
            Slot {
                count: fresh,
                limit,
            },
        );
        Ok(fresh)
    }

    async fn refund(&self, key: &str, now: OffsetDateTime) -> Result<()> {
        let mut state = self.state();
        if let Some(&current) = state.counts.get(key) {
            if current.count.resets_at > now && current.count.count > 0 {
                let mut slot = current;
                slot.count.count -= 1;
                state.insert(key, slot);
            }
        }
        Ok(())
    }

    async fn reset(&self, key: &str) -> Result<()> {
        self.state().remove(key);
        Ok(())
    }
}

/// How many sign-in attempts are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Attempts per account email per window (default 10, the reference's).
    pub per_email: u64,
    /// Attempts per client address per window (default 100). An IPv6
    /// client counts per /64 network, what one subscriber usually holds.
    /// Higher than `per_email` because many users may share one address
    /// (an office NAT), while still stopping one host from trying many
    /// accounts. Successful sign-ins do not use it up (see
    /// [`LoginThrottle::record_success`]).
    pub per_ip: u64,
    /// Attempts per IPv6 /48 network per window (default 1,000), on top of
    /// `per_ip` for its /64: a /48 is what one site is commonly given, so a
    /// single host holding one cannot multiply `per_ip` by the 65,536 /64
    /// networks inside it. IPv4 clients are not counted here.
    pub per_ipv6_48: u64,
    /// The window (default one hour).
    pub window: std::time::Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            per_email: 10,
            per_ip: 100,
            per_ipv6_48: 1000,
            window: std::time::Duration::from_secs(3600),
        }
    }
}

/// The numbers behind the `X-RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Attempts allowed per window.
    pub limit: u64,
    /// Attempts left in this window.
    pub remaining: u64,
    /// When the window ends.
    pub reset: OffsetDateTime,
}

/// A [`LoginThrottle`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleDecision {
    /// The attempt may go on (check the password).
    Allowed(RateLimit),
    /// Too many attempts: answer `429 Too Many Requests`.
    Limited {
        /// The exhausted limit.
        rate: RateLimit,
        /// Seconds until a new attempt can succeed (at least 1), for
        /// `Retry-After`.
        retry_after: u64,
    },
}

impl ThrottleDecision {
    /// Whether the attempt may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed(_))
    }

    /// The limit closest to running out (the exhausted one when limited).
    pub fn rate(&self) -> RateLimit {
        match self {
            Self::Allowed(rate) | Self::Limited { rate, .. } => *rate,
        }
    }

    /// Seconds to wait, when limited.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Allowed(_) => None,
            Self::Limited { retry_after, .. } => Some(*retry_after),
        }
    }

    /// The response headers to send: `X-RateLimit-Limit`,
    /// `X-RateLimit-Remaining`, `X-RateLimit-Reset` (Unix seconds), and
    /// `Retry-After` (seconds) when limited.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let rate = self.rate();
        let mut headers = vec![
            ("X-RateLimit-Limit", rate.limit.to_string()),
            ("X-RateLimit-Remaining", rate.remaining.to_string()),
            ("X-RateLimit-Reset", rate.reset.unix_timestamp().to_string()),
        ];
        if let Some(seconds) = self.retry_after() {
            headers.push(("Retry-After", seconds.to_string()));
        }
        headers
    }
}

/// Counts console sign-in attempts per account email and per client
/// address, and says when there were too many.
///
/// By default 10 attempts per email and 100 per address (per /64 for IPv6,
/// and 1,000 per IPv6 /48) in a fixed one-hour window ([`ThrottleLimits`]),
/// counted in memory ([`MemoryThrottleBackend`]); give a shared
/// [`ThrottleBackend`] to count across instances (every `LoginThrottle`
/// over one backend sees the same counts). Time comes from a [`Clock`].
///
/// Call [`check`](Self::check) before verifying a password: it counts the
/// attempt and answers [`ThrottleDecision::Limited`] past a limit, without
/// the password being looked at. After a correct password call
/// [`record_success`](Self::record_success), which resets the email's count
/// and takes back the attempt's own hit on the address, so that the users
/// behind one office address do not lock each other out by signing in.
/// Failed attempts on the address are not forgiven: one host cannot test
/// many accounts by signing in to its own now and then, since each success
/// only cancels itself.
///
/// Emails are compared normalised ([`normalize_email`]) and kept only as a
/// hash in the backend.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    backend: Arc<dyn ThrottleBackend>,
    clock: Arc<dyn Clock>,
    limits: ThrottleLimits,
    window: time::Duration,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginThrottle {
    /// The default throttle: [`ThrottleLimits::default`], in memory, the
    /// system clock.
    pub fn new() -> Self {
        let limits = ThrottleLimits::default();
        Self {
            backend: Arc::new(MemoryThrottleBackend::new()),
            clock: Arc::new(SystemClock),
            window: time::Duration::seconds(3600),
            limits,
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> LoginThrottleBuilder {
        LoginThrottleBuilder {
            backend: None,
            clock: None,
            limits: ThrottleLimits::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ThrottleLimits {
        self.limits
    }

    /// Counts a sign-in attempt for `email` from `client_ip` and says
    /// whether it may go on. The address is counted first (its /64, then
    /// its /48 for IPv6); an attempt refused for its address does not count
    /// against the email.
    pub async fn check(&self, email: &str, client_ip: IpAddr) -> Result<ThrottleDecision> {
        let now = self.clock.now();
        let mut tightest: Option<RateLimit> = None;
        for (kind, key, limit) in self.address_keys(client_ip) {
            let count = self.backend.hit(&key, now, self.window, limit).await?;
            if count.count > limit {
                return Ok(self.limited(kind, client_ip, count, limit, now));
            }
            tightest = Some(tighter(tightest, rate(count, limit)));
        }
        let limit = self.limits.per_email;
        let mail = self
            .backend
            .hit(&email_key(email), now, self.window, limit)
            .await?;
        if mail.count > limit {
            return Ok(self.limited("email", client_ip, mail, limit, now));
        }
        Ok(ThrottleDecision::Allowed(tighter(
            tightest,
            rate(mail, limit),
        )))
    }

    /// Records a correct password for `email` from `client_ip`: the email's
    /// count starts again, and the hit this attempt made on the address is
    /// taken back (its earlier failures still count).
    pub async fn record_success(&self, email: &str, client_ip: IpAddr) -> Result<()> {
        self.backend.reset(&email_key(email)).await?;
        let now = self.clock.now();
        for (_, key, _) in self.address_keys(client_ip) {
            self.backend.refund(&key, now).await?;
        }
        Ok(())
    }

    /// The address counters an attempt from `ip` hits: its address (or /64),
    /// and for IPv6 its /48.
    fn address_keys(&self, ip: IpAddr) -> Vec<(&'static str, String, u64)> {
        let mut keys = vec![("ip", ip_key(ip), self.limits.per_ip)];
        if let Some(site) = ipv6_48_key(ip) {
            keys.push(("ipv6 /48", site, self.limits.per_ipv6_48));
        }
        keys
    }

    fn limited(
        &self,
        kind: &'static str,
        client_ip: IpAddr,
        count: WindowCount,
        limit: u64,
        now: OffsetDateTime,
    ) -> ThrottleDecision {
        let wait = (count.resets_at - now).whole_seconds().max(0);
        // Round up: retrying a moment early would be refused again.
        let subsec = (count.resets_at - now).subsec_nanoseconds() > 0;
        let retry_after = u64::try_from(wait).unwrap_or(0) + u64::from(subsec);
        let retry_after = retry_after.max(1);
        tracing::warn!(
            kind,
            client_ip = %client_ip,
            limit,
            retry_after,
            "login attempts over the limit"
        );
        ThrottleDecision::Limited {
            rate: rate(count, limit),
            retry_after,
        }
    }
}

/// The limit with fewer attempts left; `other` on a tie (the email's,
/// checked last, is the one a user can act on).
fn tighter(current: Option<RateLimit>, other: RateLimit) -> RateLimit {
    match current {
        Some(current) if current.remaining < other.remaining => current,
        _ => other,
    }
}

fn rate(count: WindowCount, limit: u64) -> RateLimit {
    RateLimit {
        limit,
        remaining: limit.saturating_sub(count.count),
        reset: count.resets_at,
    }
}

/// `email:` and 32 hex digits of SHA-256 of the normalised email.
fn email_key(email: &str) -> String {
    let normalized = normalize_email(email).unwrap_or_else(|| email.trim().to_lowercase());
    let digest = Sha256::digest(normalized.as_bytes());
    let mut key = String::from("email:");
    for byte in &digest[..16] {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

/// `ip:` and the canonical address, or its /64 network for IPv6.
fn ip_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match Ipv6Net::new(v6, 64) {
            Ok(net) => format!("ip:{}", net.trunc()),
            Err(_) => format!("ip:{v6}"),
        },
    }
}

/// `ip48:` and the /48 network of an IPv6 client; `None` for IPv4.
fn ipv6_48_key(ip: IpAddr) -> Option<String> {
    match ip.to_canonical() {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Ipv6Net::new(v6, 48)
            .ok()
            .map(|net| format!("ip48:{}", net.trunc())),
    }
}

/// Builds a [`LoginThrottle`].
#[derive(Debug)]
pub struct LoginThrottleBuilder {
    backend: Option<Arc<dyn ThrottleBackend>>,
    clock: Option<Arc<dyn Clock>>,
    limits: ThrottleLimits,
}

impl LoginThrottleBuilder {
    /// Keeps the counters in `backend` (default: a [`MemoryThrottleBackend`]).
    pub fn backend(mut self, backend: Arc<dyn ThrottleBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Reads the time from `clock` (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The limits (default: [`ThrottleLimits::default`]).
    pub fn limits(mut self, limits: ThrottleLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Checks the limits (each at least 1, a window from one second to 366
    /// days) and builds the throttle.
    pub fn build(self) -> Result<LoginThrottle> {
        let limits = self.limits;
        const NAME: &str = "LoginThrottle limits";
        if limits.per_email == 0 || limits.per_ip == 0 || limits.per_ipv6_48 == 0 {
            return Err(Error::config(NAME, "limits must be at least 1"));
        }
        let window = time::Duration::try_from(limits.window)
            .ok()
            .filter(|w| *w >= time::Duration::SECOND && *w <= time::Duration::days(366))
            .ok_or_else(|| Error::config(NAME, "the window must be between 1 s and 366 days"))?;
        Ok(LoginThrottle {
            backend: self
                .backend
                .unwrap_or_else(|| Arc::new(MemoryThrottleBackend::new())),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            limits,
            window,
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} left until {}",
            self.remaining,
            self.limit,
            self.reset.unix_timestamp()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestClock;

    fn start() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000)
    }

    fn throttle(clock: &TestClock, limits: ThrottleLimits) -> LoginThrottle {
        LoginThrottle::builder()
            .clock(Arc::new(clock.clone()))
            .limits(limits)
            .build()
            .unwrap()
    }

    /// These limits in the default one-hour window.
    fn limits(per_email: u64, per_ip: u64, per_ipv6_48: u64) -> ThrottleLimits {
        ThrottleLimits {
            per_email,
            per_ip,
            per_ipv6_48,
            ..ThrottleLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    async fn allowed(t: &LoginThrottle, email: &str, from: IpAddr) -> bool {
        t.check(email, from).await.unwrap().is_allowed()
    }

    #[tokio::test]
    async fn ten_attempts_per_email_per_hour_then_retry_after() {
        let clock = TestClock::new(start());
        let t = throttle(&clock, ThrottleLimits::default());
        let a = ip("198.51.100.1");
        for n in 1..=10u64 {
            let d = t.check("victim@example.com", a).await.unwrap();
            assert!(d.is_allowed(), "attempt {n}");
            assert_eq!(d.rate().remaining, 10 - n);
            clock.advance(time::Duration::minutes(1));
        }
        // Same account, other case and spacing, other address: still limited.
        let d = t
            .check(" Victim@Example.COM", ip("203.0.113.5"))
            .await
            .unwrap();
        let expected_wait = 3600 - 10 * 60;
        assert_eq!(d.retry_after(), Some(expected_wait));
        assert_eq!(
            d.rate(),
            RateLimit {
                limit: 10,
                remaining: 0,
                reset: start() + time::Duration::hours(1)
            }
        );
        let headers = d.headers();
        assert!(headers.contains(&("Retry-After", expected_wait.to_string())));
        assert!(headers.contains(&("X-RateLimit-Remaining", "0".into())));
        assert!(headers.contains(&(
            "X-RateLimit-Reset",
            (start() + time::Duration::hours(1))
                .unix_timestamp()
                .to_string()
        )));
        // Another account is not affected.
        assert!(allowed(&t, "other@example.com", a).await);
        // One second before the window ends: still limited, 1 s to wait.
        clock.set(start() + time::Duration::hours(1) - time::Duration::SECOND);
        let d = t.check("victim@example.com", a).await.unwrap();
        assert_eq!(d.retry_after(), Some(1));
        // The window ends: a fresh one.
        clock.set(start() + time::Duration::hours(1));
        let d = t.check("victim@example.com", a).await.unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.rate().remaining, 9);
    }

    #[tokio::test]
    async fn a_success_resets_the_email_and_takes_back_only_its_own_hit_on_the_address() {
        let clock = TestClock::new(start());
        let t = throttle(&clock, limits(3, 5, 1000));
        let a = ip("198.51.100.1");
        // Two failures, then the right password.
        for _ in 0..3 {
            assert!(allowed(&t, "me@example.com", a).await);
        }
        t.record_success("ME@example.com", a).await.unwrap();
        // The email starts again; the address keeps its two failures.
        let d = t.check("me@example.com", a).await.unwrap();
        assert_eq!(d.rate().limit, 3);
        assert_eq!(d.rate().remaining, 2);
        assert!(allowed(&t, "me@example.com", a).await);
        assert!(allowed(&t, "someone@example.com", a).await);
        // Sixth attempt counted on this address: the address limit.
        let d = t.check("someone@example.com", a).await.unwrap();
        assert_eq!(d.rate().limit, 5);
        assert_eq!(d.retry_after(), Some(3600));
    }

    #[tokio::test]
    async fn successful_sign_ins_do_not_use_up_a_shared_address() {
        let clock = TestClock::new(start());
        let t = throttle(&clock, limits(10, 3, 3));
        for a in [ip("198.51.100.1"), ip("2001:db8:7::1")] {
            // Twenty colleagues behind one address sign in correctly.
            for n in 0..20 {
                let email = format!("user{n}@example.com");
                let d = t.check(&email, a).await.unwrap();
                assert!(d.is_allowed(), "{a} {n}");
                t.record_success(&email, a).await.unwrap();
            }
            // Failures still count: three, then the address is limited.
            for _ in 0..3 {
                assert!(allowed(&t, "guess@example.com", a).await);
            }
            assert!(!allowed(&t, "guess@example.com", a).await);
            // A success now cannot buy a failure back for the guesser.
            t.record_success("user0@example.com", a).await.unwrap();
            assert!(!allowed(&t, "guess@example.com", a).await);
        }
    }

    #[tokio::test]
    async fn ipv6_clients_also_count_per_48() {
        let clock = TestClock::new(start());
        let t = throttle(&clock, limits(100, 100, 3));
        // Three /64 networks of one /48: the fourth attempt is over the /48's limit.
        for net in 1..=3 {
            let a = ip(&format!("2001:db8:1:{net}::1"));
            assert!(allowed(&t, "a@x.io", a).await);
        }
        let d = t.check("b@x.io", ip("2001:db8:1:ffff::9")).await.unwrap();
        assert_eq!(d.rate().limit, 3);
        assert_eq!(d.retry_after(), Some(3600));
        // Another /48 is counted apart; IPv4 has no /48 count.
        assert!(allowed(&t, "c@x.io", ip("2001:db8:2::1")).await);
        for _ in 0..5 {
            assert!(allowed(&t, "d@x.io", ip("192.0.2.1")).await);
        }
    }

    #[tokio::test]
    async fn ipv6_clients_count_per_64_and_mapped_v4_as_v4() {
        let clock = TestClock::new(start());
        let t = throttle(&clock, limits(100, 2, 1000));
        // In order: one /64 takes two, another /64 is apart, and a mapped
        // IPv4 address counts as the IPv4 address itself.
        for (email, from, expected) in [
            ("a@x.io", "2001:db8:1:2::1", true),
            ("b@x.io", "2001:db8:1:2::ffff", true),
            ("c@x.io", "2001:db8:1:2:abcd::9", false),
            ("d@x.io", "2001:db8:1:3::1", true),
            ("e@x.io", "192.0.2.1", true),
            ("f@x.io", "::ffff:192.0.2.1", true),
            ("g@x.io", "192.0.2.1", false),
        ] {
            assert_eq!(
                allowed(&t, email, ip(from)).await,
                expected,
                "{email} from {from}"
            );
        }
    }

    #[tokio::test]
    async fn allowed_answers_report_the_tighter_limit() {
        let clock = TestClock::new(start());
        let t = throttle(&clock, limits(10, 3, 1000));
        let d = t.check("a@x.io", ip("192.0.2.1")).await.unwrap();
        assert_eq!(d.rate().limit, 3);
        assert_eq!(d.rate().remaining, 2);
        assert_eq!(d.headers().len(), 3);
    }

    fn assert_in_step(backend: &MemoryThrottleBackend) {
        let state = backend.state();
        assert_eq!(
            state.under.len() + state.exhausted.len(),
            state.counts.len()
        );
        for (key, slot) in &state.counts {
            let queue = if slot.exhausted() {
                &state.exhausted
            } else {
                &state.under
            };
            assert!(
                queue.contains(&(slot.count.resets_at, key.clone())),
                "{key}"
            );
        }
    }

    #[tokio::test]
    async fn memory_is_bounded_and_expired_windows_go() {
        let backend = MemoryThrottleBackend::with_capacity(100);
        let window = time::Duration::hours(1);
        for n in 0..1000u32 {
            let now = start() + time::Duration::seconds(i64::from(n));
            backend
                .hit(&format!("k{n}"), now, window, 10)
                .await
                .unwrap();
            assert!(backend.len() <= 100);
        }
        // The newest keys stayed; the oldest were pushed out.
        let now = start() + time::Duration::seconds(1000);
        assert_eq!(backend.hit("k999", now, window, 10).await.unwrap().count, 2);
        assert_eq!(backend.hit("k0", now, window, 10).await.unwrap().count, 1);
        assert_in_step(&backend);
        // Two hours later every window has ended.
        let later = start() + time::Duration::hours(3);
        backend.hit("fresh", later, window, 10).await.unwrap();
        assert_eq!(backend.len(), 1);
        assert_in_step(&backend);
        backend.reset("fresh").await.unwrap();
        assert!(backend.is_empty());
    }

    #[tokio::test]
    async fn flooding_a_full_table_does_not_clear_an_exhausted_counter() {
        let backend = MemoryThrottleBackend::with_capacity(50);
        let window = time::Duration::hours(1);
        // The victim's counter is the oldest in the table, and exhausted.
        for _ in 0..10 {
            backend.hit("victim", start(), window, 10).await.unwrap();
        }
        for n in 0..5000u32 {
            let now = start() + time::Duration::seconds(1 + i64::from(n / 10));
            backend
                .hit(&format!("flood{n}"), now, window, 10)
                .await
                .unwrap();
            assert!(backend.len() <= 50);
        }
        assert_in_step(&backend);
        let now = start() + time::Duration::minutes(30);
        assert_eq!(
            backend.hit("victim", now, window, 10).await.unwrap().count,
            11
        );
        // When every counter is exhausted, the oldest exhausted one goes.
        let full = MemoryThrottleBackend::with_capacity(2);
        for key in ["a", "b"] {
            full.hit(key, start(), window, 1).await.unwrap();
        }
        full.hit("c", start() + time::Duration::SECOND, window, 1)
            .await
            .unwrap();
        assert_eq!(full.len(), 2);
        assert_eq!(full.hit("b", now, window, 1).await.unwrap().count, 2);
        assert_in_step(&full);
    }

    #[tokio::test]
    async fn the_throttle_keeps_a_victims_exhausted_count_under_a_flood() {
        let clock = TestClock::new(start());
        let backend = Arc::new(MemoryThrottleBackend::with_capacity(64));
        let t = LoginThrottle::builder()
            .clock(Arc::new(clock.clone()))
            .backend(backend.clone())
            .limits(limits(3, 5, 1000))
            .build()
            .unwrap();
        let attacker = ip("203.0.113.1");
        for _ in 0..3 {
            t.check("victim@example.com", attacker).await.unwrap();
        }
        assert!(!allowed(&t, "victim@example.com", ip("203.0.113.2")).await);
        // Made-up emails from many addresses, each under every limit; their
        // windows end after the victim's.
        for n in 0..2000u32 {
            clock.advance(time::Duration::SECOND);
            let from = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            t.check(&format!("made-up-{n}@example.com"), from)
                .await
                .unwrap();
        }
        assert!(backend.len() <= 64);
        let d = t
            .check("victim@example.com", ip("198.51.100.77"))
            .await
            .unwrap();
        assert!(!d.is_allowed(), "{d:?}");
        assert_eq!(d.rate().limit, 3);
    }

    #[tokio::test]
    async fn refunds_never_go_below_zero_nor_into_a_new_window() {
        let backend = MemoryThrottleBackend::new();
        let window = time::Duration::hours(1);
        backend.refund("unknown", start()).await.unwrap();
        assert!(backend.is_empty());
        backend.hit("k", start(), window, 2).await.unwrap();
        backend.hit("k", start(), window, 2).await.unwrap();
        // Exhausted, then under its limit again after a refund.
        backend.refund("k", start()).await.unwrap();
        assert_in_step(&backend);
        backend.refund("k", start()).await.unwrap();
        backend.refund("k", start()).await.unwrap();
        assert_eq!(backend.hit("k", start(), window, 2).await.unwrap().count, 1);
        // Once the window has ended, a refund does nothing.
        let later = start() + time::Duration::hours(2);
        backend.refund("k", later).await.unwrap();
        assert_eq!(backend.hit("k", later, window, 2).await.unwrap().count, 1);
        assert_in_step(&backend);
    }

    #[tokio::test]
    async fn concurrent_hits_are_each_counted_once() {
        let backend = Arc::new(MemoryThrottleBackend::new());
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let backend = backend.clone();
            tasks.push(tokio::spawn(async move {
                backend
                    .hit("k", start(), time::Duration::hours(1), 10)
                    .await
                    .unwrap()
                    .count
            }));
        }
        let mut counts = Vec::new();
        for t in tasks {
            counts.push(t.await.unwrap());
        }
        counts.sort_unstable();
        assert_eq!(counts, (1..=64).collect::<Vec<u64>>());
    }

    #[test]
    fn keys_hold_no_email_in_clear_and_are_short() {
        let k = email_key("Someone@Example.com");
        assert_eq!(k, email_key("someone@example.com "));
        assert!(!k.contains("someone"));
        assert_eq!(k.len(), "email:".len() + 32);
        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6")), "ip:2001:db8:1:2::/64");
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), "ip:192.0.2.1");
        assert_eq!(
            ipv6_48_key(ip("2001:db8:1:2:3:4:5:6")).as_deref(),
            Some("ip48:2001:db8:1::/48")
        );
        assert_eq!(ipv6_48_key(ip("::ffff:192.0.2.1")), None);
        assert!(
            ipv6_48_key(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
                .unwrap()
                .len()
                <= 64
        );
    }

    #[test]
    fn bad_limits_are_config_errors() {
        // Each with one value out of range, the others at their defaults.
        let window = |window| ThrottleLimits {
            window,
            ..ThrottleLimits::default()
        };
        for limits in [
            limits(0, 100, 1000),
            limits(10, 0, 1000),
            limits(10, 100, 0),
            window(std::time::Duration::from_millis(10)),
            window(std::time::Duration::from_secs(u64::MAX)),
        ] {
            assert!(
                matches!(
                    LoginThrottle::builder().limits(limits).build(),
                    Err(Error::Config { .. })
                ),
                "{limits:?}"
            );
        }
    }
}
