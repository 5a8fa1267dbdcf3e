//! A CA that bends the protocol: a real Pebble 2.10 behind a caller's HTTP
//! client (`AcmeIssuerBuilder::http_client`) that rewrites the answer of one
//! chosen request and leaves the others alone. Each failure is classed by
//! what it is: an outage (the CA unavailable, `acme_unreachable`), the CA's
//! problem document (its type), or an answer that breaks the protocol
//! (`acme_protocol`, the CA's error for that order, not an outage), and only
//! an outage stops a maintenance cycle. A CA that creates a renewal order
//! without echoing `replaces` (RFC 9773 section 5) still renews, with one
//! order per name, and is remembered.

use crate::common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use certkeeper::challenge::{Http01Server, Http01Solver};
use certkeeper::cipher::Keyring;
use certkeeper::error::SkipReason;
use certkeeper::events::Event;
use certkeeper::issuer::instant_acme::{self, BodyWrapper, BytesResponse, HttpClient};
use certkeeper::issuer::{
    AcmeIssuer, AcmeIssuerBuilder, IssueRequest, IssuedChain, Issuer, IssuerExt,
};
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::{Error, RenewalPolicy, Renewer, TestClock};
use common::acme::{forward, serve_http01};
use common::logs::{captured, Captured};
use common::pebble::{Pebble, PebbleOptions, PebbleVersion};
use common::{clock_at_now, domain, keyring, limited, TEST_KEY};
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use hyper::{Method, StatusCode};

/// A guard against a hung test: far above what any case here needs.
const TEST_LIMIT: Duration = Duration::from_secs(120);
const MAIN: &str = "www.certkeeper-test.com";
const NEW_ORDER: &str = "/order-plz";

/// An answer as the rewriting client hands it on.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_slice(&self.body) {
            Ok(serde_json::Value::Object(object)) => object,
            _ => panic!("expected a JSON object from Pebble"),
        }
    }

    fn set_json(&mut self, object: serde_json::Map<String, serde_json::Value>) {
        self.body = serde_json::to_vec(&object).unwrap();
    }

    fn page(&mut self, status: u16, content_type: &'static str, body: &str) {
        self.status = StatusCode::from_u16(status).unwrap();
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.body = body.as_bytes().to_vec();
    }
}

/// What the client does to the matching request.
#[derive(Clone, Copy)]
enum Shape {
    /// Sends it to Pebble and rewrites the answer.
    Rewrite(fn(&mut Answer)),
    /// Sends it to a port nobody listens on: a real refused connection.
    Refuse,
    /// Never answers.
    Hang,
}

/// Which request a shape applies to, and how many times more.
struct Rule {
    method: Method,
    path: &'static str,
    /// Only requests whose JWS payload names this identifier, when set.
    only_for: Option<&'static str>,
    times: usize,
    shape: Shape,
}

/// A request as it reached the client: method, path and the JWS payload
/// (`None` for a GET, a HEAD or a POST-as-GET).
#[derive(Clone, Debug)]
struct Sent {
    method: Method,
    path: String,
    payload: Option<serde_json::Value>,
}

/// The caller's client: certkeeper's own to Pebble, with one rule at a time
/// rewriting what Pebble answers.
#[derive(Clone)]
struct Rewriting {
    inner: Arc<dyn HttpClient>,
    rule: Arc<Mutex<Option<Rule>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    closed_port: u16,
}

impl Rewriting {
    fn new(pebble: &Pebble) -> Self {
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            inner: Arc::from(
                AcmeIssuer::default_http_client(Some(pebble.ca_root_pem_path())).unwrap(),
            ),
            rule: Arc::default(),
            sent: Arc::default(),
            closed_port,
        }
    }

    /// From now on, the next `times` requests `method path...` get `shape`.
    fn set(&self, method: Method, path: &'static str, times: usize, shape: Shape) {
        *self.rule.lock().unwrap() = Some(Rule {
            method,
            path,
            only_for: None,
            times,
            shape,
        });
    }

    /// From now on, every new order naming `identifier` gets `shape`.
    fn set_for_name(&self, identifier: &'static str, shape: Shape) {
        *self.rule.lock().unwrap() = Some(Rule {
            method: Method::POST,
            path: NEW_ORDER,
            only_for: Some(identifier),
            times: usize::MAX,
            shape,
        });
    }

    /// The CA answers every request as it would again.
    fn clear(&self) {
        *self.rule.lock().unwrap() = None;
    }

    /// The new orders sent so far that name `identifier`.
    fn new_orders_for(&self, identifier: &str) -> usize {
        self.new_orders()
            .iter()
            .filter(|order| names(order, identifier))
            .count()
    }

    /// How many more times the rule applies (0: it was served each time).
    fn rule_left(&self) -> usize {
        self.rule.lock().unwrap().as_ref().map_or(0, |r| r.times)
    }

    /// Every new-order payload sent so far.
    fn new_orders(&self) -> Vec<serde_json::Value> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::POST && s.path == NEW_ORDER)
            .filter_map(|s| s.payload.clone())
            .collect()
    }

    fn take_shape(
        &self,
        method: &Method,
        path: &str,
        payload: Option<&serde_json::Value>,
    ) -> Option<Shape> {
        let mut rule = self.rule.lock().unwrap();
        let rule = rule.as_mut()?;
        if rule.times == 0 || rule.method != method || !path.starts_with(rule.path) {
            return None;
        }
        if let Some(identifier) = rule.only_for {
            if !payload.is_some_and(|payload| names(payload, identifier)) {
                return None;
            }
        }
        rule.times -= 1;
        Some(rule.shape)
    }
}

/// Whether a new-order payload names `identifier`.
fn names(payload: &serde_json::Value, identifier: &str) -> bool {
    payload["identifiers"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|id| id["value"] == identifier))
}

/// The payload of a JWS request body, decoded; `None` when it is empty.
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = URL_SAFE_NO_PAD.decode(jws["payload"].as_str()?).ok()?;
    serde_json::from_slice(&payload).ok()
}

impl HttpClient for Rewriting {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_owned();
            let payload = jws_payload(&body);
            let shape = this.take_shape(&parts.method, &path, payload.as_ref());
            this.sent.lock().unwrap().push(Sent {
                method: parts.method.clone(),
                path: path.clone(),
                payload,
            });
            match shape {
                Some(Shape::Refuse) => {
                    parts.uri = format!("https://127.0.0.1:{}{path}", this.closed_port)
                        .parse()
                        .unwrap();
                }
                Some(Shape::Hang) => std::future::pending::<()>().await,
                _ => {}
            }
            let (mut parts, body) = forward(this.inner.as_ref(), parts, body).await?;
            let Some(Shape::Rewrite(rewrite)) = shape else {
                return Ok(BytesResponse {
                    parts,
                    body: Box::new(body),
                });
            };
            let mut answer = Answer {
                status: parts.status,
                headers: std::mem::take(&mut parts.headers),
                body: body.to_vec(),
            };
            rewrite(&mut answer);
            answer.headers.remove(CONTENT_LENGTH);
            parts.status = answer.status;
            parts.headers = answer.headers;
            Ok(BytesResponse {
                parts,
                body: Box::new(Bytes::from(answer.body)),
            })
        })
    }
}

/// A Pebble 2.10, the HTTP-01 solver on its port, one store for every
/// issuer (so they share one account) and a rewriting client.
struct Stage {
    pebble: Pebble,
    solver: Http01Solver,
    store: Arc<MemoryStore>,
    cipher: Arc<Keyring>,
    clock: TestClock,
    client: Rewriting,
    _listener: Http01Server,
}

impl Stage {
    async fn start() -> Self {
        let pebble = Pebble::start(PebbleOptions {
            version: PebbleVersion::V2_10,
            validity_seconds: Some(90 * 86_400),
            ..PebbleOptions::default()
        })
        .await;
        let solver = Http01Solver::new();
        let listener = serve_http01(&solver, &pebble).await;
        let client = Rewriting::new(&pebble);
        Self {
            pebble,
            solver,
            store: Arc::new(MemoryStore::new()),
            cipher: keyring(TEST_KEY),
            clock: clock_at_now(),
            client,
            _listener: listener,
        }
    }

    /// An issuer over the stage's rewriting client.
    fn issuer(&self) -> AcmeIssuerBuilder {
        AcmeIssuer::builder(self.pebble.directory_url())
            .contact_email(common::CONTACT_EMAIL)
            .solver(Arc::new(self.solver.clone()))
            .store(self.store.clone())
            .cipher(self.cipher.clone())
            .http_client(self.client.clone())
            .request_timeout(Duration::from_secs(10))
            .order_timeout(Duration::from_secs(60))
    }
}

/// Pebble's answer to a new order without the `replaces` it was sent.
fn strip_replaces(answer: &mut Answer) {
    let mut order = answer.json();
    order.remove("replaces");
    answer.set_json(order);
}

#[test]
fn a_ca_that_drops_replaces_still_renews_with_one_order_and_is_remembered() {
    captured(drops_replaces);
}

async fn drops_replaces(captured: Captured) {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let issuer = stage.issuer().build().unwrap();
        let first = issuer.issue_for(&domain(MAIN)).await.unwrap();
        assert_eq!(stage.client.new_orders().len(), 1);

        // The CA creates renewal orders but never echoes `replaces`.
        stage.client.set(
            Method::POST,
            NEW_ORDER,
            usize::MAX,
            Shape::Rewrite(strip_replaces),
        );
        let replaced = IssuedChain::new(first.chain_pem.clone(), issuer.kind());
        let renewed = issuer
            .issue(&IssueRequest::new(domain(MAIN)).replacing(replaced))
            .await
            .expect("the renewal goes through although the CA dropped replaces");
        assert_ne!(renewed.cert.fingerprint, first.fingerprint);
        let orders = stage.client.new_orders();
        // One order for the renewal, the one created: none left pending.
        assert_eq!(orders.len(), 2, "{orders:?}");
        assert!(orders[1]["replaces"].is_string(), "{orders:?}");
        assert!(captured.text().contains("without echoing replaces"));

        // Remembered, in this issuer and in the store: a later renewal,
        // by this issuer or a new one, is sent without `replaces`.
        let replaced = IssuedChain::new(renewed.cert.chain_pem.clone(), issuer.kind());
        let again = issuer
            .issue(&IssueRequest::new(domain(MAIN)).replacing(replaced.clone()))
            .await
            .unwrap();
        let fresh = stage.issuer().build().unwrap();
        fresh
            .issue(
                &IssueRequest::new(domain(MAIN))
                    .replacing(IssuedChain::new(again.cert.chain_pem.clone(), fresh.kind())),
            )
            .await
            .unwrap();
        let orders = stage.client.new_orders();
        assert_eq!(orders.len(), 4, "{orders:?}");
        assert!(orders[2].get("replaces").is_none(), "{orders:?}");
        assert!(orders[3].get("replaces").is_none(), "{orders:?}");
        let log = captured.text();
        assert!(
            log.contains("renewal ordered without replaces")
                && log.contains("without echoing replaces (RFC 9773 section 5)"),
            "{log}"
        );
    })
    .await;
}

/// A CA failing to look the replaced certificate up: a 500
/// `serverInternal` to a new order naming it.
fn server_internal(answer: &mut Answer) {
    answer.page(
        500,
        "application/problem+json",
        r#"{"type": "urn:ietf:params:acme:error:serverInternal", "detail": "could not find order resulting in the given certificate serial number", "status": 500}"#,
    );
}

#[tokio::test]
async fn a_renewal_whose_replaces_the_ca_fails_on_is_ordered_again_without_it() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let issuer = stage.issuer().build().unwrap();
        let first = issuer.issue_for(&domain(MAIN)).await.unwrap();
        stage
            .client
            .set(Method::POST, NEW_ORDER, 1, Shape::Rewrite(server_internal));
        let replaced = IssuedChain::new(first.chain_pem.clone(), issuer.kind());
        let renewed = issuer
            .issue(&IssueRequest::new(domain(MAIN)).replacing(replaced))
            .await
            .expect("the renewal goes through without replaces");
        assert_ne!(renewed.cert.fingerprint, first.fingerprint);
        let orders = stage.client.new_orders();
        assert_eq!(orders.len(), 3, "{orders:?}");
        assert!(orders[1]["replaces"].is_string(), "{orders:?}");
        assert!(orders[2].get("replaces").is_none(), "{orders:?}");

        // In an outage, the order without replaces fails the same way.
        let replaced = IssuedChain::new(renewed.cert.chain_pem.clone(), issuer.kind());
        stage
            .client
            .set(Method::POST, NEW_ORDER, 2, Shape::Rewrite(server_internal));
        let err = issuer
            .issue(&IssueRequest::new(domain(MAIN)).replacing(replaced))
            .await
            .unwrap_err();
        assert!(err.is_ca_unavailable(), "{err}");
        assert_eq!(stage.client.new_orders().len(), 5);
    })
    .await;
}

/// What a shape must come to.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The issue fails with this code at this step; an outage or not.
    Fails {
        code: &'static str,
        step: &'static str,
        outage: bool,
    },
    /// The answer is still good enough: the certificate is issued.
    Issued,
}

const fn fails(code: &'static str, step: &'static str) -> Expect {
    Expect::Fails {
        code,
        step,
        outage: false,
    }
}

const fn outage(code: &'static str, step: &'static str) -> Expect {
    Expect::Fails {
        code,
        step,
        outage: true,
    }
}

/// One malformed shape: its name, the request it applies to, what it does,
/// and what it must come to.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    shape: Shape,
    expect: Expect,
}

fn case(
    name: &'static str,
    method: Method,
    path: &'static str,
    shape: Shape,
    expect: Expect,
) -> Case {
    Case {
        name,
        method,
        path,
        shape,
        expect,
    }
}

const HTML_502: &str = "<html><head><title>502 Bad Gateway</title></head>\
                        <body><center><h1>502 Bad Gateway</h1></center></body></html>";

fn cases() -> Vec<Case> {
    use Shape::Rewrite;
    let post = || Method::POST;
    vec![
        case(
            "truncated JSON",
            post(),
            NEW_ORDER,
            Rewrite(|a| a.body.truncate(a.body.len() / 2)),
            fails("acme_protocol", "new-order"),
        ),
        case(
            "HTML 502 page",
            post(),
            NEW_ORDER,
            Rewrite(|a| a.page(502, "text/html", HTML_502)),
            outage("acme_unreachable", "new-order"),
        ),
        case(
            "empty 200",
            post(),
            NEW_ORDER,
            Rewrite(|a| {
                a.status = StatusCode::OK;
                a.body.clear();
            }),
            fails("acme_protocol", "new-order"),
        ),
        case(
            "no Location",
            post(),
            NEW_ORDER,
            Rewrite(|a| {
                a.headers.remove(LOCATION);
            }),
            fails("acme_protocol", "new-order"),
        ),
        case(
            "503 with Retry-After",
            post(),
            NEW_ORDER,
            Rewrite(|a| {
                a.page(503, "text/plain", "");
                a.headers
                    .insert(RETRY_AFTER, HeaderValue::from_static("30"));
            }),
            outage("acme_unreachable", "new-order"),
        ),
        case(
            "order without status",
            post(),
            NEW_ORDER,
            Rewrite(|a| {
                let mut order = a.json();
                order.remove("status");
                a.set_json(order);
            }),
            fails("acme_protocol", "new-order"),
        ),
        case(
            "HTML 404 page",
            post(),
            NEW_ORDER,
            Rewrite(|a| a.page(404, "text/html", "<html><body>Not Found</body></html>")),
            fails("acme_protocol", "new-order"),
        ),
        case(
            "problem without status on a 500",
            post(),
            NEW_ORDER,
            Rewrite(|a| {
                a.page(
                    500,
                    "application/problem+json",
                    r#"{"type": "urn:ietf:params:acme:error:malformed", "detail": "oops"}"#,
                )
            }),
            outage("acme_malformed", "new-order"),
        ),
        case(
            "no nonce",
            Method::HEAD,
            "/nonce-plz",
            Rewrite(|a| {
                a.headers.remove("replay-nonce");
            }),
            fails("acme_protocol", "new-order"),
        ),
        case(
            "authorization with an unknown status",
            post(),
            "/authZ/",
            Rewrite(|a| {
                let mut authz = a.json();
                authz.insert("status".into(), "bogus".into());
                a.set_json(authz);
            }),
            fails("acme_protocol", "authorization"),
        ),
        case(
            "HTML page for finalize",
            post(),
            "/finalize-order/",
            Rewrite(|a| a.page(200, "text/html", "<html><body>Welcome</body></html>")),
            fails("acme_protocol", "finalize"),
        ),
        case(
            "HTML page for the certificate",
            post(),
            "/certZ/",
            Rewrite(|a| a.page(200, "text/html", "<html><body>Welcome</body></html>")),
            fails("certificate", "-"),
        ),
        case(
            "wrong content type",
            post(),
            NEW_ORDER,
            Rewrite(|a| {
                a.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            }),
            Expect::Issued,
        ),
        case(
            "connection refused",
            post(),
            NEW_ORDER,
            Shape::Refuse,
            outage("acme_unreachable", "new-order"),
        ),
        case(
            "no answer",
            post(),
            NEW_ORDER,
            Shape::Hang,
            outage("timeout", "new-order"),
        ),
    ]
}

#[tokio::test]
async fn each_malformed_answer_is_classed_by_what_it_is() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        // The account exists before the shapes, so each one meets its step.
        let warm = stage.issuer().build().unwrap();
        warm.issue_for(&domain("warm.certkeeper-test.com"))
            .await
            .unwrap();
        let mut wrong = Vec::new();
        for (i, case) in cases().into_iter().enumerate() {
            let issuer = stage
                .issuer()
                .request_timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let name = domain(&format!("shape{i}.certkeeper-test.com"));
            stage.client.set(case.method.clone(), case.path, 1, case.shape);
            let result = issuer.issue_for(&name).await;
            if stage.client.rule_left() != 0 {
                wrong.push(format!("{}: the shape was never served", case.name));
                continue;
            }
            let verdict = match (case.expect, &result) {
                (Expect::Issued, Ok(_)) => None,
                (Expect::Issued, Err(e)) => Some(format!("expected a certificate, got {e}")),
                (Expect::Fails { .. }, Ok(_)) => Some("expected a failure, got a certificate".into()),
                (Expect::Fails { code, step, outage }, Err(e)) => {
                    let got_step = match e {
                        Error::Acme { step, .. } | Error::Timeout { step, .. } => *step,
                        _ => "-",
                    };
                    (e.code() != code || got_step != step || e.is_ca_unavailable() != outage)
                        .then(|| {
                            format!(
                                "expected {code} at {step} (outage: {outage}), got {} at {got_step} \
                                 (outage: {}): {e}",
                                e.code(),
                                e.is_ca_unavailable()
                            )
                        })
                }
            };
            if let Some(verdict) = verdict {
                wrong.push(format!("{}: {verdict}", case.name));
            }
            // The CA answers well again: the same issuer issues at once.
            let next = domain(&format!("after{i}.certkeeper-test.com"));
            if let Err(e) = issuer.issue_for(&next).await {
                wrong.push(format!("{}: the next order failed: {e}", case.name));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    })
    .await;
}

/// A renewer issuing the stage's names one at a time, stopping after three
/// outages in a row (the default).
fn renewer(stage: &Stage) -> Renewer {
    Renewer::builder(stage.store.clone(), stage.cipher.clone())
        .acme(Arc::new(stage.issuer().build().unwrap()))
        .main_domain(Some(domain(MAIN)))
        .clock(Arc::new(stage.clock.clone()))
        .concurrency(1)
        .build()
}

#[tokio::test]
async fn only_an_outage_stops_the_cycle_for_the_other_names() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let renewer = renewer(&stage);
        // Four names: the main domain and three custom ones.
        for i in 0..3 {
            renewer
                .add_domain(&domain(&format!("app{i}.certkeeper-test.com")))
                .await
                .unwrap();
        }
        // The first three orders get a truncated answer: the CA's error for
        // those orders, charged as attempts; the fourth name is issued all
        // the same.
        stage.client.set(
            Method::POST,
            NEW_ORDER,
            3,
            Shape::Rewrite(|a| a.body.truncate(a.body.len() / 2)),
        );
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(stage.client.rule_left(), 0);
        assert_eq!(report.stopped, None, "{report:?}");
        assert_eq!(report.issued.len(), 1, "{report:?}");
        assert_eq!(report.failed.len(), 3, "{report:?}");
        assert!(report.deferred.is_empty(), "{report:?}");
        // One order per name, none sent twice.
        assert_eq!(stage.client.new_orders().len(), 4);
        for failure in &report.failed {
            assert_eq!(failure.error.code(), "acme_protocol", "{}", failure.error);
            let record = stage.store.load(&failure.domain).await.unwrap().unwrap();
            assert_eq!(record.attempts, 1);
        }

        // An HTML 502 page is an outage: after three in a row the cycle
        // stops, the rest is left for the next one, and no attempt is
        // charged. A day later, the three failed names are due again.
        stage.clock.advance(time::Duration::days(1));
        renewer
            .add_domain(&domain("app3.certkeeper-test.com"))
            .await
            .unwrap();
        stage.client.set(
            Method::POST,
            NEW_ORDER,
            3,
            Shape::Rewrite(|a| a.page(502, "text/html", HTML_502)),
        );
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(
            report.stopped,
            Some(SkipReason::CaUnavailable),
            "{report:?}"
        );
        assert_eq!(report.deferred.len(), 3, "{report:?}");
        assert!(report.issued.is_empty(), "{report:?}");
        assert_eq!(
            report
                .skipped
                .iter()
                .filter(|(_, why)| *why == SkipReason::CaUnavailable)
                .count(),
            1,
            "{report:?}"
        );
        for failure in &report.deferred {
            assert_eq!(
                failure.error.code(),
                "acme_unreachable",
                "{}",
                failure.error
            );
        }
    })
    .await;
}

const PAUSED: &str = "a-paused.certkeeper-test.com";
const UNPAUSE_URL: &str =
    "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=eyJhbGciOiJIUzI1NiJ9.e30.c2ln";

/// Let's Encrypt's answer to a new order for an identifier it paused after
/// a long run of failed validations (its wording, with a 429 and the
/// `rateLimited` type).
fn paused_answer(answer: &mut Answer) {
    let detail = format!(
        "Your account is temporarily prevented from requesting certificates for {PAUSED} \
         and possibly others. Please visit: {UNPAUSE_URL}"
    );
    let problem = serde_json::json!({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": detail,
        "status": 429,
    });
    answer.page(429, "application/problem+json", &problem.to_string());
}

#[tokio::test]
async fn a_paused_name_names_its_unpause_page_and_is_no_longer_ordered_while_the_others_are() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start().await;
        let renewer = renewer(&stage);
        renewer.add_domain(&domain(PAUSED)).await.unwrap();
        for i in 0..2 {
            renewer
                .add_domain(&domain(&format!("app{i}.certkeeper-test.com")))
                .await
                .unwrap();
        }
        let mut events = renewer.subscribe(64);
        stage
            .client
            .set_for_name(PAUSED, Shape::Rewrite(paused_answer));

        // The pause is that name's alone: the cycle goes on for the others.
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.stopped, None, "{report:?}");
        assert_eq!(report.issued.len(), 3, "{report:?}");
        assert_eq!(report.failed.len(), 1, "{report:?}");
        let failure = &report.failed[0];
        assert_eq!(failure.domain, domain(PAUSED));
        assert_eq!(failure.error.code(), "acme_paused", "{}", failure.error);
        assert!(failure.error.is_paused());
        assert!(!failure.error.is_rate_limited());
        assert_eq!(failure.error.unpause_url(), Some(UNPAUSE_URL));

        // The operator is told where to unpause, and the cycle stops
        // ordering that name: it is at the attempt limit at once.
        let record = stage.store.load(&domain(PAUSED)).await.unwrap().unwrap();
        assert_eq!(record.attempts, RenewalPolicy::default().max_attempts);
        let last = record.log.last().unwrap();
        assert!(last.message.contains(UNPAUSE_URL), "{last:?}");
        let mut gave_up = None;
        while let Some(event) = events.try_recv() {
            if let Event::GaveUp {
                domain,
                code,
                message,
                ..
            } = event
            {
                gave_up = Some((domain, code, message));
            }
        }
        let (gave_up_domain, code, message) = gave_up.expect("a GaveUp event for the paused name");
        assert_eq!(gave_up_domain, domain(PAUSED));
        assert_eq!(code, "acme_paused");
        assert!(message.contains(UNPAUSE_URL), "{message}");

        // Cycles later, the paused name is not ordered again.
        stage.clock.advance(time::Duration::days(3));
        renewer.run_cycle().await.unwrap();
        stage.clock.advance(time::Duration::days(3));
        renewer.run_cycle().await.unwrap();
        assert_eq!(stage.client.new_orders_for(PAUSED), 1);

        // Unpaused on the CA's page, manual generation issues it.
        stage.client.clear();
        let record = renewer.issue_now(Some(&domain(PAUSED))).await.unwrap();
        assert_eq!(record.attempts, 0);
        assert!(record.certificate.is_some());
    })
    .await;
}
