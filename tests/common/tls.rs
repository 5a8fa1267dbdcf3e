//! Checking issued certificates the way a TLS client does: chain
//! verification against a trust store and a real handshake.

use std::sync::Arc;

use certkeeper::cert::{chain_der, fingerprint, IssuedCert};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the client sends and the server echoes in [`round_trip`].
const GREETING: &[u8] = b"hello";

/// The crypto provider certkeeper is built with (its `aws-lc-rs` or `ring`
/// feature), named explicitly as certkeeper does: the tests never rely on
/// rustls' process default.
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned())
        .unwrap_or_else(|e| panic!("{name} is not a TLS server name: {e}"))
}

/// Verifies `chain_pem` (leaf first) for `name` against `roots` as a TLS
/// client would, panicking with the reason when it does not verify.
pub fn verify_chain(chain_pem: &str, roots: RootCertStore, name: &str) {
    let chain = chain_der(chain_pem).unwrap();
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap()
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &server_name(name),
            &[],
            UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("the certificate chain does not verify for {name}: {e}"));
}

/// A server configuration that presents `cert` to every client.
pub fn serving(cert: &IssuedCert) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain_der(&cert.chain_pem).unwrap(),
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    Arc::new(config)
}

/// Serves `server` on 127.0.0.1 and connects to it with SNI `name`,
/// trusting only `roots`; checks that what the client sends comes back over
/// the session, and returns the SHA-256 fingerprint of the leaf the server
/// presented.
pub async fn round_trip(server: Arc<ServerConfig>, roots: RootCertStore, name: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = [0u8; GREETING.len()];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.shutdown().await.unwrap();
    });

    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut tls = connector
        .connect(server_name(name), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake for {name} failed: {e}"));
    tls.write_all(GREETING).await.unwrap();
    let mut echoed = Vec::new();
    tls.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, GREETING, "the TLS session for {name} lost data");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    server.await.unwrap();
    fingerprint(&leaf)
}
