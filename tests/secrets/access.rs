//! Console access end to end: the `console_guard` example's router on a real
//! socket, driven by real HTTP requests; racing signups producing one root,
//! in memory and through a shared store.

#![cfg(feature = "access")]

#[allow(dead_code)]
#[allow(unreachable_pub)]
#[path = "../../examples/console_guard.rs"]
mod console_guard;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certkeeper::access::{
    AccessPolicy, AccessRequest, ConsoleAccessPolicy, Decision, DenyReason, LoginThrottle,
    MemoryRootSeat, MemoryThrottleBackend, RootSeat, StoreRootSeat, ThrottleBackend,
    ThrottleLimits, TrustedProxies, ROOT_SEAT_META_KEY,
};
use certkeeper::store::{CertStore, FileStore, MemoryStore};
use certkeeper::{Clock, TestClock};
use console_guard::Console;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A guard that serves the example's router on a free loopback port until dropped.
struct Server {
    addr: SocketAddr,
    console: Arc<Console>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(policy: ConsoleAccessPolicy, throttle: LoginThrottle, proxies: &str) -> Server {
    let proxies = TrustedProxies::parse("_APP_CONSOLE_TRUSTED_PROXIES", proxies).unwrap();
    // As the example's main does: the policy knows the proxies too.
    let policy = policy.with_trusted_proxies(proxies.clone());
    let console = Arc::new(Console::new(Arc::new(policy), throttle, proxies).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        console_guard::router(console.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        addr,
        console,
        task,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// One HTTP/1.1 POST over a fresh connection, read to its end.
async fn post(addr: SocketAddr, path: &str, extra_headers: &[(&str, &str)], body: Value) -> Reply {
    let body = body.to_string();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    // A bound on a stuck server, so a hang fails with a message.
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        parse_reply(&raw)
    })
    .await
    .expect("the server did not answer")
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

fn creds(email: &str, password: &str) -> Value {
    json!({ "email": email, "password": password })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_login_and_throttle_answer_with_the_right_statuses_and_headers() {
    let clock = TestClock::at_system_time();
    let throttle = LoginThrottle::builder()
        .clock(Arc::new(clock.clone()))
        .limits(ThrottleLimits {
            per_email: 3,
            ..ThrottleLimits::default()
        })
        .build()
        .unwrap();
    let server = serve(ConsoleAccessPolicy::default(), throttle, "").await;
    let a = server.addr;

    let root = post(
        a,
        "/signup",
        &[],
        creds("Root@Example.com", "root password 1"),
    )
    .await;
    assert_eq!(root.status, 201, "{root:?}");
    assert_eq!(root.body["email"], "root@example.com");

    let second = post(
        a,
        "/signup",
        &[],
        creds("second@example.com", "second pw 22"),
    )
    .await;
    assert_eq!(second.status, 403);
    assert_eq!(second.code(), "user_invitation_required");

    let bad = post(a, "/signup", &[], creds("not-an-email", "long enough pw")).await;
    assert_eq!(bad.status, 400);

    let token = server.console.invite("third@example.com").unwrap();
    let mut invited = creds("third@example.com", "third password");
    invited["invitation"] = json!(token);
    let third = post(a, "/signup", &[], invited.clone()).await;
    assert_eq!(third.status, 201, "{third:?}");
    // The invitation was used up.
    let replay = post(a, "/signup", &[], invited).await;
    assert_eq!(replay.status, 403);
    assert_eq!(server.console.user_count(), 2);

    // A wrong password: 401, and the rate headers count down.
    let wrong = post(a, "/login", &[], creds("root@example.com", "nope")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.code(), "user_invalid_credentials");
    assert_eq!(wrong.headers["x-ratelimit-limit"], "3");
    assert_eq!(wrong.headers["x-ratelimit-remaining"], "2");
    let reset: i64 = wrong.headers["x-ratelimit-reset"].parse().unwrap();
    assert_eq!(
        reset,
        (clock.now() + time::Duration::hours(1)).unix_timestamp()
    );

    // The right one: 200, and the count starts again.
    let ok = post(
        a,
        "/login",
        &[],
        creds("ROOT@example.com", "root password 1"),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(!ok.headers.contains_key("retry-after"));

    // Three wrong attempts on the third account, then 429.
    for left in ["2", "1", "0"] {
        let r = post(a, "/login", &[], creds("third@example.com", "guess")).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.headers["x-ratelimit-remaining"], left);
    }
    clock.advance(time::Duration::minutes(10));
    let limited = post(
        a,
        "/login",
        &[],
        creds("third@example.com", "third password"),
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.code(), "general_rate_limit_exceeded");
    assert_eq!(limited.headers["retry-after"], "3000");
    assert_eq!(limited.headers["x-ratelimit-limit"], "3");
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
    // Root, on its own count, is not affected.
    let root_again = post(
        a,
        "/login",
        &[],
        creds("root@example.com", "root password 1"),
    )
    .await;
    assert_eq!(root_again.status, 200);
    // Once the window is over, the right password works again.
    clock.advance(time::Duration::minutes(50));
    let later = post(
        a,
        "/login",
        &[],
        creds("third@example.com", "third password"),
    )
    .await;
    assert_eq!(later.status, 200, "{later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitelists_see_the_client_behind_trusted_proxies_only() {
    let policy =
        ConsoleAccessPolicy::from_values("203.0.113.0/24", "*@example.com", "enabled").unwrap();
    // The test's connections come from 127.0.0.1, here a trusted proxy.
    let behind_proxy = serve(policy.clone(), LoginThrottle::new(), "127.0.0.1").await;
    let a = behind_proxy.addr;
    let user = creds("admin@example.com", "a long password");

    let direct = post(a, "/signup", &[], user.clone()).await;
    assert_eq!(direct.status, 403);
    assert_eq!(direct.code(), "user_ip_not_whitelisted");

    // The proxy appended the real client after a value the client forged.
    let forged = [("X-Forwarded-For", "203.0.113.7, 198.51.100.1")];
    let r = post(a, "/signup", &forged, user.clone()).await;
    assert_eq!(r.code(), "user_ip_not_whitelisted");
    let r = post(a, "/login", &forged, user.clone()).await;
    assert_eq!(r.code(), "user_ip_not_whitelisted");

    let via_proxy = [("X-Forwarded-For", "203.0.113.7")];
    let r = post(
        a,
        "/signup",
        &via_proxy,
        creds("admin@evil-example.com", "a long password"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "user_email_not_whitelisted");
    let r = post(
        a,
        "/signup",
        &via_proxy,
        creds("admin@sub.example.com", "a long password"),
    )
    .await;
    assert_eq!(r.code(), "user_email_not_whitelisted");
    let r = post(a, "/signup", &via_proxy, user.clone()).await;
    assert_eq!(r.status, 201, "{r:?}");

    // Without trusted proxies the same header is the client's word: ignored.
    let direct_server = serve(
        ConsoleAccessPolicy::from_values("203.0.113.0/24", "", "disabled").unwrap(),
        LoginThrottle::new(),
        "",
    )
    .await;
    let r = post(direct_server.addr, "/signup", &via_proxy, user).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "user_ip_not_whitelisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_resolves_to_the_proxy_itself_is_not_whitelisted() {
    // The proxy (127.0.0.1, where the test connects from) sits inside a
    // whitelisted range, as an internal network often does.
    let policy =
        ConsoleAccessPolicy::from_values("127.0.0.0/8, 203.0.113.0/24", "", "disabled").unwrap();
    let server = serve(policy, LoginThrottle::new(), "127.0.0.1").await;
    let a = server.addr;
    let user = creds("admin@example.com", "a long password");
    // No header, a garbage hop, or only the proxy: the client is unknown.
    for headers in [
        vec![],
        vec![("X-Forwarded-For", "unknown")],
        vec![("X-Forwarded-For", "203.0.113.7, nonsense")],
        vec![("X-Forwarded-For", "127.0.0.1")],
    ] {
        let r = post(a, "/signup", &headers, user.clone()).await;
        assert_eq!(r.status, 403, "{headers:?}: {r:?}");
        assert_eq!(r.code(), "user_ip_not_whitelisted");
    }
    let r = post(a, "/signup", &[("X-Forwarded-For", "203.0.113.7")], user).await;
    assert_eq!(r.status, 201, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_with_an_invisible_character_is_refused() {
    let policy = ConsoleAccessPolicy::from_values("", "*@example.com", "disabled").unwrap();
    let server = serve(policy, LoginThrottle::new(), "").await;
    let a = server.addr;
    for path in ["/signup", "/login"] {
        let r = post(
            a,
            path,
            &[],
            creds("admin\u{200B}@example.com", "a long password"),
        )
        .await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    assert_eq!(server.console.user_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_http_signups_on_an_empty_console_make_one_root() {
    let server = serve(ConsoleAccessPolicy::default(), LoginThrottle::new(), "").await;
    let a = server.addr;
    let mut tasks = Vec::new();
    for n in 0..24 {
        tasks.push(tokio::spawn(async move {
            post(
                a,
                "/signup",
                &[],
                creds(&format!("user{n}@example.com"), "a long password"),
            )
            .await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        if reply.status == 403 {
            assert_eq!(reply.code(), "user_invitation_required");
        }
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 23);
    assert_eq!(server.console.user_count(), 1);
}

/// Many concurrent signups through several policies sharing one seat.
async fn race(policies: Vec<Arc<dyn AccessPolicy>>, round: &str, contenders: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for n in 0..contenders {
        let policy = policies[n % policies.len()].clone();
        let email = format!("{round}-racer{n}@example.com");
        tasks.push(tokio::spawn(async move {
            let request = AccessRequest::sign_up("192.0.2.1".parse().unwrap(), email.clone(), 0);
            (email, policy.check(&request).await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (email, decision) = task.await.unwrap();
        match decision {
            Decision::Allowed => winners.push(email),
            Decision::Denied(reason) => assert_eq!(reason, DenyReason::InvitationRequired),
        }
    }
    winners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_root_with_an_in_memory_seat() {
    let seat = Arc::new(MemoryRootSeat::new());
    let policy: Arc<dyn AccessPolicy> =
        Arc::new(ConsoleAccessPolicy::default().with_root_seat(seat.clone()));
    let winners = race(vec![policy], "only", 200).await;
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(seat.holder().as_deref(), Some(winners[0].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_root_across_instances_sharing_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn CertStore> = Arc::new(FileStore::open(dir.path()).await.unwrap());
    let memory: Arc<dyn CertStore> = Arc::new(MemoryStore::new());
    for store in [file, memory] {
        // Three "instances", each with its own policy, one shared store.
        let policies: Vec<Arc<dyn AccessPolicy>> = (0..3)
            .map(|_| {
                let seat: Arc<dyn RootSeat> = Arc::new(StoreRootSeat::new(store.clone()));
                Arc::new(ConsoleAccessPolicy::default().with_root_seat(seat))
                    as Arc<dyn AccessPolicy>
            })
            .collect();
        let winners = race(policies.clone(), "first", 120).await;
        assert_eq!(winners.len(), 1, "{store:?}: {winners:?}");
        assert_eq!(
            store.get_meta(ROOT_SEAT_META_KEY).await.unwrap().as_deref(),
            Some(winners[0].as_str())
        );
        // A later round, even from a fresh instance, finds the seat taken;
        // the holder itself may retry.
        assert!(race(policies, "second", 30).await.is_empty());
        let fresh = ConsoleAccessPolicy::default()
            .with_root_seat(Arc::new(StoreRootSeat::new(store.clone())));
        let retry = AccessRequest::sign_up("192.0.2.1".parse().unwrap(), winners[0].clone(), 0);
        assert!(fresh.check(&retry).await.unwrap().is_allowed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_sharing_a_backend_see_each_others_counts() {
    // Two instances of a server, one shared counter store.
    let clock = TestClock::at_system_time();
    let backend: Arc<dyn ThrottleBackend> = Arc::new(MemoryThrottleBackend::new());
    let instance = || {
        LoginThrottle::builder()
            .backend(backend.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    };
    let (a, b) = (instance(), instance());
    let ip = "198.51.100.20".parse().unwrap();
    // Ten attempts on one account, spread over both instances.
    for n in 0..10u64 {
        let throttle = if n % 2 == 0 { &a } else { &b };
        let d = throttle.check("victim@example.com", ip).await.unwrap();
        assert!(d.is_allowed(), "attempt {n}");
        assert_eq!(d.rate().remaining, 9 - n);
    }
    // The eleventh is refused by either instance.
    for throttle in [&a, &b] {
        let d = throttle.check("Victim@Example.com", ip).await.unwrap();
        assert!(!d.is_allowed());
        assert_eq!(d.rate().limit, 10);
    }
    // A success recorded by one instance frees the account on the other.
    a.record_success("victim@example.com", ip).await.unwrap();
    let d = b.check("victim@example.com", ip).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.rate().remaining, 9);
    // Separate backends would not have known of each other.
    let alone = LoginThrottle::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    assert_eq!(
        alone
            .check("victim@example.com", ip)
            .await
            .unwrap()
            .rate()
            .remaining,
        9
    );
}
