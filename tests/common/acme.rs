//! Wiring certkeeper's ACME issuer and HTTP-01 solver to a test [`Pebble`].

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

use certkeeper::challenge::{ChallengeSolver, Http01Server, Http01Solver};
use certkeeper::cipher::SecretCipher;
use certkeeper::issuer::{AcmeIssuer, AcmeIssuerBuilder};
use certkeeper::store::CertStore;

use super::pebble::Pebble;
use super::CONTACT_EMAIL;

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
}
