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

/// A TLS listener on `127.0.0.1` serving any number of clients until
/// dropped; each client's bytes are echoed back until it closes.
pub struct TlsListener {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    handshakes: Arc<std::sync::atomic::AtomicUsize>,
    failures: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves `config` on a free port; with `resolver`, accepts through
    /// [`CertResolver::accept`](certkeeper::CertResolver::accept) (which
    /// loads a stored certificate before answering), else with a plain
    /// acceptor.
    pub async fn start(
        config: Arc<ServerConfig>,
        resolver: Option<certkeeper::CertResolver>,
    ) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config, resolver).await
    }

    /// As [`start`](Self::start), on `address`.
    pub async fn start_on(
        address: std::net::SocketAddr,
        config: Arc<ServerConfig>,
        resolver: Option<certkeeper::CertResolver>,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {address}: {e}"));
        let address = listener.local_addr().unwrap();
        let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (done, failed) = (handshakes.clone(), failures.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (config, resolver) = (config.clone(), resolver.clone());
                let (done, failed) = (done.clone(), failed.clone());
                tokio::spawn(async move {
                    let accepted = match &resolver {
                        Some(resolver) => resolver.accept(config, tcp).await,
                        None => tokio_rustls::TlsAcceptor::from(config).accept(tcp).await,
                    };
                    let Ok(mut tls) = accepted else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    done.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            address,
            handshakes,
            failures,
            task,
        }
    }

    /// Handshakes that failed on the server's side.
    pub fn failures(&self) -> usize {
        self.failures.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Handshakes completed on the server's side.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a client saw of a completed handshake.
#[derive(Debug)]
pub struct Handshake {
    /// The leaf the server presented.
    pub leaf: rustls::pki_types::CertificateDer<'static>,
    /// Its SHA-256, lowercase hex.
    pub fingerprint: String,
    /// The application protocol negotiated.
    pub alpn: Option<Vec<u8>>,
}

impl Handshake {
    /// The DNS names of the leaf's subject alternative names.
    pub fn dns_names(&self) -> Vec<String> {
        let (_, parsed) = x509_parser::parse_x509_certificate(&self.leaf).unwrap();
        parsed
            .subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Connects to `address` and completes a real TLS handshake: with SNI
/// `server_name` (none when `None`), offering `alpn`, verifying the chain
/// against `roots` for that name (with `None`, any certificate is taken,
/// but the handshake signature is still checked); then sends a few bytes
/// and checks they come back. An error says why it failed.
pub async fn handshake(
    address: std::net::SocketAddr,
    server_name: Option<&str>,
    roots: Option<RootCertStore>,
    alpn: &[&[u8]],
) -> Result<Handshake, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let mut config = match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = match server_name {
        Some(name) => self::server_name(name),
        None => {
            config.enable_sni = false;
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().ok_or("no certificate")?[0].clone();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(GREETING)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut echoed = [0u8; GREETING.len()];
    tls.read_exact(&mut echoed)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if echoed != GREETING {
        return Err("the session lost data".into());
    }
    Ok(Handshake {
        fingerprint: fingerprint(&leaf),
        leaf,
        alpn,
    })
}

/// Takes any certificate, but checks the handshake signatures with it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // With the key read from the certificate, as the certificate parser
        // refuses a TLS-ALPN-01 certificate's critical extension.
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| rustls::Error::General(format!("unparsable certificate: {e}")))?;
        let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from(
            parsed.tbs_certificate.subject_pki.raw,
        );
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &spki,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A trust store holding `chain_pem`'s leaf itself, as a client that
/// trusts a self-signed certificate has.
pub fn trusting(chain_pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(chain_der(chain_pem).unwrap().remove(0)).unwrap();
    roots
}
