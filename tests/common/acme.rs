//! Wiring certkeeper's ACME issuer and HTTP-01 solver to a test [`Pebble`].

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use certkeeper::challenge::{ChallengeSolver, Http01Server, Http01Solver};
use certkeeper::cipher::SecretCipher;
use certkeeper::issuer::{AcmeIssuer, AcmeIssuerBuilder, CaBudgets};
use certkeeper::store::{CertStore, MemoryStore};

use super::pebble::{Pebble, PebbleOptions};
use super::{keyring, CONTACT_EMAIL, TEST_KEY};

/// `solver`'s listener on Pebble's HTTP-01 port, on `[::]` so that both
/// address families reach it.
pub async fn serve_http01(solver: &Http01Solver, pebble: &Pebble) -> Http01Server {
    let port = pebble.http_port();
    solver
        .serve(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on Pebble's HTTP-01 port {port}: {e}"))
}

/// An issuer builder for `pebble`'s directory, trusting its listener's CA,
/// registering [`CONTACT_EMAIL`], with `solver`, `store` and `cipher`; the
/// timeouts are left at their defaults.
pub fn pebble_issuer(
    pebble: &Pebble,
    solver: Arc<dyn ChallengeSolver>,
    store: Arc<dyn CertStore>,
    cipher: Arc<dyn SecretCipher>,
) -> AcmeIssuerBuilder {
    AcmeIssuer::builder(pebble.directory_url())
        .contact_email(CONTACT_EMAIL)
        .ca_root_pem_file(pebble.ca_root_pem_path())
        .solver(solver)
        .store(store)
        .cipher(cipher)
        .budgets(pebble_budgets())
}

/// The CA budgets of a test against Pebble, which has no rate limits:
/// Let's Encrypt's orders and failed validations, but no limit on new
/// certificates per registered domain (tests put hundreds of names under
/// one) nor on duplicates (tests renew one name many times). A test of
/// those budgets sets its own.
pub fn pebble_budgets() -> CaBudgets {
    CaBudgets {
        certificates_per_registered_domain: u32::MAX,
        duplicate_certificates: u32::MAX,
        ..CaBudgets::default()
    }
}

/// A DNS-01 test's issuer: [`pebble_issuer`] with `solver`, a memory
/// store, the test keyring, 30 s per call to the CA and 120 s per order.
pub fn memory_issuer(pebble: &Pebble, solver: Arc<dyn ChallengeSolver>) -> AcmeIssuer {
    pebble_issuer(
        pebble,
        solver,
        Arc::new(MemoryStore::new()),
        keyring(TEST_KEY),
    )
    .request_timeout(Duration::from_secs(30))
    .order_timeout(Duration::from_secs(120))
    .build()
    .expect("valid issuer settings")
}

/// A Pebble that resolves every name through the DNS server at `dns`.
pub async fn pebble_through(dns: SocketAddr) -> Pebble {
    Pebble::start(PebbleOptions {
        dns_server: Some(dns),
        ..PebbleOptions::default()
    })
    .await
}

/// Sends a request taken apart by a test's HTTP client (`parts`, and its
/// `body` read whole) on through `client`, and reads the answer whole: the
/// forwarding half of a client that stands in front of Pebble to count or
/// rewrite what passes.
pub async fn forward(
    client: &dyn certkeeper::issuer::instant_acme::HttpClient,
    parts: hyper::http::request::Parts,
    body: bytes::Bytes,
) -> Result<(hyper::http::response::Parts, bytes::Bytes), certkeeper::issuer::instant_acme::Error> {
    use certkeeper::issuer::instant_acme::{BodyWrapper, BytesResponse, Error};
    let request = hyper::Request::from_parts(parts, BodyWrapper::from(body.to_vec()));
    let BytesResponse { parts, mut body } = client.request(request).await?;
    let body = body.into_bytes().await.map_err(Error::Other)?;
    Ok((parts, body))
}
