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
/// (a caller's client) or else through [`http_client`].
pub(super) fn account_builder(
    shared: Option<&Arc<dyn HttpClient>>,
    ca_root: Option<&Path>,
) -> Result<AccountBuilder, instant_acme::Error> {
    Ok(match shared {
        Some(client) => Account::builder_with_http(Box::new(Shared(client.clone()))),
        None => Account::builder_with_http(http_client(ca_root)?),
    })
}

/// A caller's client, shared by every account builder of one issuer.
struct Shared(Arc<dyn HttpClient>);

impl HttpClient for Shared {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        self.0.request(req)
    }
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
