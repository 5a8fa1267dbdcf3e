//! certkeeper in an application that uses rustls with its default crypto
//! provider. Panics (and so exits non-zero) when the two clash.

use std::sync::Arc;
use std::time::Duration;

use certkeeper::challenge::Http01Solver;
use certkeeper::cipher::Keyring;
use certkeeper::issuer::{AcmeIssuer, IssuerExt, SelfSignedIssuer};
use certkeeper::store::MemoryStore;
use certkeeper::{CertResolver, Domain};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

fn main() {
    // certkeeper's side: a certificate (rcgen), loaded into the resolver
    // (the signing key), and the resolver's server configuration.
    let domain = Domain::new("localhost").unwrap();
    let issued = SelfSignedIssuer::new().issue_blocking(&domain).unwrap();
    let resolver = CertResolver::new();
    resolver
        .insert_pem(&domain, &issued.chain_pem, issued.key_pem.as_bytes())
        .unwrap();
    let certkeeper_server = resolver.server_config(&[b"http/1.1"]).unwrap();

    // certkeeper's ACME client builds its own TLS too: a CA that is not
    // there is a typed error, never a panic over the provider.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        let issuer = AcmeIssuer::builder("https://127.0.0.1:9/directory")
            .contact_email("ops@example.com")
            .solver(Arc::new(Http01Solver::new()))
            .store(Arc::new(MemoryStore::new()))
            .cipher(Arc::new(
                Keyring::from_keys(false, [(1, "provider-clash-key")]).unwrap(),
            ))
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        issuer
            .issue_for(&Domain::new("www.example.com").unwrap())
            .await
    });
    // The application's side: rustls' process-default provider, as an
    // application builds its own TLS.
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    let app_client = Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let app_server = Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver.clone())),
    );

    // Both servers complete a handshake with the application's client.
    for server in [certkeeper_server, app_server] {
        handshake(app_client.clone(), server);
    }

    let error = outcome.expect_err("no CA listens on port 9");
    println!(
        "certkeeper and the application's rustls share one crypto provider; ACME without a CA: {}",
        error.code()
    );
}

/// A TLS 1.3 handshake in memory between `client` and `server`.
fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client, name).unwrap();
    let mut server = ServerConnection::new(server).unwrap();
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return;
        }
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        buf.clear();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets().unwrap();
    }
    panic!("the handshake did not finish");
}
