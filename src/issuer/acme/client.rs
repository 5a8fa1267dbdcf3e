//! The HTTPS client that talks to the CA, built on certkeeper's crypto
//! provider rather than instant-acme's default client, which takes rustls'
//! process-wide default and panics in an application that has two
//! providers compiled in.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{Account, AccountBuilder, BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::provider::provider;

/// The HTTP client instant-acme drives.
type HttpsClient = Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// An account builder whose connections to the CA go through `shared`
/// (a caller's client) or else through [`http_client`], either one behind
/// [`Checked`].
pub(super) fn account_builder(
    shared: Option<&Arc<dyn HttpClient>>,
    ca_root: Option<&Path>,
) -> Result<AccountBuilder, instant_acme::Error> {
    let client: Arc<dyn HttpClient> = match shared {
        Some(client) => client.clone(),
        None => Arc::from(http_client(ca_root).map_err(ClientFailure::wrap)?),
    };
    Ok(Account::builder_with_http(Box::new(Checked(client))))
}

/// The client to the CA (a caller's, shared by every account builder of
/// one issuer, or certkeeper's), with each answer read whole and checked
/// before instant-acme sees it, so that its errors can be classed:
///
/// - the client's own failure (no connection, TLS, a connection cut while
///   the answer was read) comes back as [`ClientFailure`]: the CA is
///   unavailable;
/// - an error status without a problem document (a proxy's HTML 502 page,
///   an empty 503) comes back as [`ErrorStatus`], classed by its status;
/// - a problem document without `status` gets the answer's HTTP status, so
///   a 5xx problem is known as one;
/// - inside [`capturing`], a `201 Created` answer is noted (its `Location`
///   and `replaces`), for a CA that does not echo `replaces`.
///
/// Anything else instant-acme then refuses (JSON that does not decode, a
/// missing `Location`, a mismatched field) is the CA breaking the protocol.
struct Checked(Arc<dyn HttpClient>);

impl HttpClient for Checked {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let post = req.method() == hyper::Method::POST;
        let answer = self.0.request(req);
        Box::pin(async move {
            let BytesResponse { parts, mut body } = match answer.await {
                Ok(response) => response,
                // A problem document a client made itself is left as it is.
                Err(e @ instant_acme::Error::Api(_)) => return Err(e),
                Err(e) => return Err(ClientFailure::wrap(e)),
            };
            let mut bytes = body
                .into_bytes()
                .await
                .map_err(|e| ClientFailure::wrap(instant_acme::Error::Other(e)))?;
            let status = parts.status;
            if status.is_client_error() || status.is_server_error() {
                match problem_document(&parts, &bytes) {
                    Some(problem) => bytes = problem,
                    None => {
                        return Err(instant_acme::Error::Other(Box::new(ErrorStatus::new(
                            &parts,
                            bytes.len(),
                        ))))
                    }
                }
            }
            if post && status == hyper::StatusCode::CREATED {
                note_created(&parts, &bytes);
            }
            Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            })
        })
    }
}

/// The body of an error answer as a problem document (RFC 7807): a JSON
/// object served as `application/problem+json` or naming a `type` or a
/// `detail`; its `status` set to the answer's when missing. `None` for
/// anything else (an HTML page, an empty body, other JSON).
fn problem_document(parts: &hyper::http::response::Parts, body: &Bytes) -> Option<Bytes> {
    let serde_json::Value::Object(mut problem) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let problem_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/problem+json"));
    let named = |field: &str| problem.get(field).is_some_and(serde_json::Value::is_string);
    if !problem_type && !named("type") && !named("detail") {
        return None;
    }
    if problem
        .get("status")
        .and_then(serde_json::Value::as_u64)
        .is_some()
    {
        return Some(body.clone());
    }
    problem.insert("status".into(), parts.status.as_u16().into());
    serde_json::to_vec(&problem).ok().map(Bytes::from)
}

/// The HTTP client failed (no connection, TLS, the answer cut short): the
/// CA is unavailable, as far as certkeeper can tell.
#[derive(Debug)]
pub(super) struct ClientFailure(instant_acme::Error);

impl ClientFailure {
    pub(super) fn wrap(e: instant_acme::Error) -> instant_acme::Error {
        instant_acme::Error::Other(Box::new(Self(e)))
    }
}

impl std::fmt::Display for ClientFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer from the CA: {}", self.0)
    }
}

impl std::error::Error for ClientFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// An error status without a problem document: a proxy's error page, an
/// empty 503, a 404 page.
#[derive(Debug)]
pub(super) struct ErrorStatus {
    pub(super) status: hyper::StatusCode,
    content_type: Option<String>,
    retry_after: Option<String>,
    length: usize,
}

impl ErrorStatus {
    pub(super) fn new(parts: &hyper::http::response::Parts, length: usize) -> Self {
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                .map(|v| v.chars().take(80).collect())
        };
        Self {
            status: parts.status,
            content_type: header(hyper::header::CONTENT_TYPE),
            retry_after: header(hyper::header::RETRY_AFTER),
            length,
        }
    }

    /// Whether the status says the CA is unavailable: a server error
    /// (5xx), `429 Too Many Requests` or `408 Request Timeout`. Any other
    /// error status without a problem document breaks the protocol.
    pub(super) fn is_outage(&self) -> bool {
        self.status.is_server_error()
            || self.status == hyper::StatusCode::TOO_MANY_REQUESTS
            || self.status == hyper::StatusCode::REQUEST_TIMEOUT
    }
}

impl std::fmt::Display for ErrorStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the CA answered HTTP {} without a problem document (",
            self.status
        )?;
        match &self.content_type {
            Some(content_type) => write!(f, "{content_type}, ")?,
            None => f.write_str("no content type, ")?,
        }
        write!(f, "{} bytes)", self.length)?;
        if let Some(retry_after) = &self.retry_after {
            write!(f, "; Retry-After: {retry_after}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorStatus {}

/// A `201 Created` answer noted inside [`capturing`]: the new-order's.
#[derive(Debug, Default, Clone)]
pub(super) struct Created {
    /// Its `Location`: the order's URL.
    pub(super) location: Option<String>,
    /// Whether the body is a JSON object (an order).
    pub(super) is_object: bool,
    /// The `replaces` field of that object, when it has one.
    pub(super) replaces: Option<String>,
}

/// Where [`capturing`] notes the answer.
pub(super) type CreatedSlot = Arc<std::sync::Mutex<Option<Created>>>;

tokio::task_local! {
    static CREATED: CreatedSlot;
}

/// Runs `call` (one new-order) noting its `201 Created` answer in `slot`,
/// so that an order instant-acme refuses after the CA created it (no
/// `replaces` echoed) can still be found and kept.
pub(super) async fn capturing<F: Future>(slot: &CreatedSlot, call: F) -> F::Output {
    CREATED.scope(slot.clone(), call).await
}

fn note_created(parts: &hyper::http::response::Parts, body: &Bytes) {
    let _ = CREATED.try_with(|slot| {
        let object = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| match v {
                serde_json::Value::Object(object) => Some(object),
                _ => None,
            });
        let created = Created {
            location: parts
                .headers
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            is_object: object.is_some(),
            replaces: object
                .as_ref()
                .and_then(|o| o.get("replaces"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(created);
    });
}

/// certkeeper's client to the CA, trusting the root in `ca_root` (a PEM
/// file) or, without one, the system's roots (the platform verifier).
/// HTTPS only, HTTP/1.1 and HTTP/2.
pub(super) fn http_client(
    ca_root: Option<&Path>,
) -> Result<Box<dyn HttpClient>, instant_acme::Error> {
    let other = |e: Box<dyn std::error::Error + Send + Sync>| instant_acme::Error::Other(e);
    let connector = HttpsConnectorBuilder::new();
    let connector = match ca_root {
        Some(path) => {
            let root = CertificateDer::from_pem_file(path).map_err(|e| other(e.into()))?;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root).map_err(|e| other(e.into()))?;
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| other(e.into()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            connector.with_tls_config(config)
        }
        None => connector
            .with_provider_and_platform_verifier(provider())
            .map_err(|e| other(e.into()))?,
    };
    // Each ACME request goes out in small writes; without TCP_NODELAY the
    // second waits for the CA's delayed acknowledgement (tens of ms per
    // request, every request of every order).
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let client: HttpsClient = Client::builder(TokioExecutor::new()).build(
        connector
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http),
    );
    Ok(Box::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(status: u16, content_type: &str) -> hyper::http::response::Parts {
        hyper::Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn only_a_json_problem_is_a_problem_document_and_it_gets_the_status() {
        let problem = |status, content_type, body: &'static str| {
            problem_document(&parts(status, content_type), &Bytes::from(body))
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
        };
        let typed = problem(
            503,
            "application/problem+json",
            r#"{"type": "urn:ietf:params:acme:error:serverInternal"}"#,
        )
        .unwrap();
        assert_eq!(typed["status"], 503);
        // A status of its own is kept, the content type is not required.
        let own = problem(400, "text/plain", r#"{"detail": "bad", "status": 400}"#).unwrap();
        assert_eq!(own["status"], 400);
        assert!(problem(502, "text/html", "<html><body>Bad Gateway</body></html>").is_none());
        assert!(problem(503, "text/plain", "").is_none());
        assert!(problem(404, "application/json", r#"{"error": "no route"}"#).is_none());
        assert!(problem(500, "application/json", "[1, 2]").is_none());
        assert!(problem(500, "application/problem+json", "{}").is_some());
    }
}
