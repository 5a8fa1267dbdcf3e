//! The HTTP-01 solver's listener and responder, over real TCP connections.

use crate::common;

use std::fmt::Display;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use certkeeper::challenge::{
    Challenge, ChallengeSolver, Http01Server, Http01Solver, CHALLENGE_PATH_PREFIX,
};
use certkeeper::{Domain, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
const KEY_AUTH: &str =
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";
/// A guard against a hung request; far above what a local request needs.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);
/// Any free port on 127.0.0.1.
const LOCAL: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 0);

fn challenge() -> Challenge {
    Challenge {
        domain: Domain::new("www.certkeeper-test.com").unwrap(),
        token: TOKEN.into(),
        key_authorization: KEY_AUTH.into(),
        dns_value: String::new(),
    }
}

/// A response read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Checks that this is the answer to the test challenge: 200 and the key
    /// authorization, byte for byte, nothing after it.
    fn assert_key_authorization(&self, context: impl Display) {
        assert_eq!(self.status, 200, "{context}: {self:?}");
        assert_eq!(self.body, KEY_AUTH.as_bytes(), "{context}");
    }
}

/// A solver listening on `addr`.
async fn listening(addr: impl Into<SocketAddr>) -> (Http01Solver, Http01Server) {
    let solver = Http01Solver::new();
    let server = solver.serve(addr.into()).await.unwrap();
    (solver, server)
}

/// A solver listening on `addr` with the test challenge presented.
async fn presenting(addr: impl Into<SocketAddr>) -> (Http01Solver, Http01Server) {
    let (solver, server) = listening(addr).await;
    solver.present(&challenge()).await.unwrap();
    (solver, server)
}

/// Sends `method target` over a fresh connection and reads the whole reply.
async fn request(addr: SocketAddr, method: &str, target: &str) -> Reply {
    tokio::time::timeout(REQUEST_LIMIT, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: www.certkeeper-test.com\r\n\
             Connection: close\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        parse(&raw)
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {target} to {addr} got no answer"))
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn challenge_path() -> String {
    format!("{CHALLENGE_PATH_PREFIX}{TOKEN}")
}

/// A GET of the test challenge's path.
async fn get_challenge(addr: SocketAddr) -> Reply {
    request(addr, "GET", &challenge_path()).await
}

#[tokio::test]
async fn answers_over_ipv4_and_ipv6_from_one_dual_stack_listener() {
    common::init_tracing();
    let (_solver, server) = presenting((Ipv6Addr::UNSPECIFIED, 0)).await;
    let port = server.local_addr().port();

    for addr in [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ] {
        let reply = get_challenge(addr).await;
        reply.assert_key_authorization(addr);
        assert_eq!(
            reply.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(
            reply.header("content-length"),
            Some(KEY_AUTH.len().to_string().as_str())
        );

        let head = request(addr, "HEAD", &challenge_path()).await;
        assert_eq!(head.status, 200, "{addr}: {head:?}");
        assert!(head.body.is_empty());
    }
}

#[tokio::test]
async fn anything_but_a_presented_token_is_404() {
    common::init_tracing();
    let (_solver, server) = presenting(LOCAL).await;
    let addr = server.local_addr();

    let long = format!("{CHALLENGE_PATH_PREFIX}{}", "a".repeat(5000));
    for target in [
        "/",
        "/index.html",
        CHALLENGE_PATH_PREFIX,
        "/.well-known/acme-challenge/unknownToken",
        &format!("/.well-known/acme-challenge/../acme-challenge/{TOKEN}"),
        &format!("/.well-known/acme-challenge/%2e%2e/{TOKEN}"),
        &format!("/.well-known/acme-challenge/{TOKEN}%2F"),
        &format!("/.well-known/acme-challenge/{TOKEN}/extra"),
        &format!("/.well-known//acme-challenge/{TOKEN}"),
        &format!("/static/.well-known/acme-challenge/{TOKEN}"),
        "/.well-known/acme-challenge/..",
        "/.well-known/acme-challenge/%00",
        &long,
    ] {
        let reply = request(addr, "GET", target).await;
        assert_eq!(reply.status, 404, "{target}: {reply:?}");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(!body.contains(KEY_AUTH), "{target}: {body}");
    }
    // The query string is not part of the path: the token is still found.
    let reply = request(addr, "GET", &format!("{}?x=1", challenge_path())).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn methods_other_than_get_and_head_are_refused() {
    let (_solver, server) = presenting(LOCAL).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let reply = request(server.local_addr(), method, &challenge_path()).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method}");
        assert!(!String::from_utf8_lossy(&reply.body).contains(KEY_AUTH));
    }
}

#[tokio::test]
async fn cleanup_stops_the_answer() {
    let (solver, server) = listening(LOCAL).await;
    // A clone presents, the original's listener answers: one shared map.
    solver.clone().present(&challenge()).await.unwrap();
    assert_eq!(get_challenge(server.local_addr()).await.status, 200);
    solver.cleanup(&challenge()).await.unwrap();
    assert_eq!(get_challenge(server.local_addr()).await.status, 404);
    assert_eq!(solver.pending(), 0);
}

#[tokio::test]
async fn a_silent_connection_does_not_hold_up_the_next_one() {
    let (_solver, server) = presenting(LOCAL).await;
    // Connected, never sends a byte.
    let _silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut half = TcpStream::connect(server.local_addr()).await.unwrap();
    half.write_all(b"GET /.well-known/acme-chal").await.unwrap();
    get_challenge(server.local_addr())
        .await
        .assert_key_authorization("past a silent and a half-sent connection");
}

#[tokio::test]
async fn shutdown_and_drop_close_the_port() {
    let (solver, server) = listening(LOCAL).await;
    let addr = server.local_addr();
    assert_eq!(request(addr, "GET", "/").await.status, 404);
    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());

    // The port is free again, and dropping the server also closes it.
    let server = solver.serve(addr).await.unwrap();
    assert_eq!(server.local_addr(), addr);
    drop(server);
    // The listener task ends at its next poll; wait for it, boundedly.
    let mut closed = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(closed, "{addr} still accepts connections after drop");
}

#[tokio::test]
async fn an_address_in_use_is_a_typed_error_naming_it() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Http01Solver::new().serve(addr).await.unwrap_err();
    match &err {
        Error::Io { path, source } => {
            assert_eq!(path.to_str(), Some(addr.to_string().as_str()));
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn the_responder_serves_from_an_embedding_axum_server() {
    use axum::http::{header, StatusCode, Uri};
    use axum::response::IntoResponse;

    let solver = Http01Solver::new();
    let responder = solver.responder();
    let app = axum::Router::new().route(
        "/.well-known/acme-challenge/{token}",
        axum::routing::get(move |uri: Uri| {
            let responder = responder.clone();
            async move {
                match responder.respond(uri.path()) {
                    Some(body) => {
                        ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    assert_eq!(get_challenge(addr).await.status, 404);
    solver.present(&challenge()).await.unwrap();
    get_challenge(addr)
        .await
        .assert_key_authorization("through the axum router");
    server.abort();
}
