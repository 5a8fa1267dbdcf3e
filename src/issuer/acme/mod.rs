//! Certificates from an ACME CA (RFC 8555) through instant-acme.
//!
//! - `mod.rs`: the [`AcmeIssuer`], its builder and the bounded call.
//! - `account.rs`: the ACME account, created once and stored sealed.
//! - `client.rs`: the HTTPS client to the CA, on certkeeper's crypto provider.
//! - `order.rs`: one order, from new-order to the checked chain.
//! - `problem.rs`: the CA's answers as typed errors.
//! - `settings.rs`: the checks shared with [`Config`](crate::Config).
//! - `renewal.rs`: ACME Renewal Information (RFC 9773) and revocation.

use std::fmt::{self, Debug};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use instant_acme::HttpClient;
use tokio::time::timeout;
use zeroize::Zeroizing;

use super::{IssuedCert, Issuer, IssuerKind, RenewalWindow};
use crate::challenge::{ChallengeKind, ChallengeSolver};
use crate::cipher::SecretCipher;
use crate::email::parse_email;
use crate::store::CertStore;
use crate::vault::Vault;
use crate::{Domain, Error, Result};
use order::Presented;

/// The setting that holds the account's contact address.
const EMAIL_SETTING: &str = "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS";
/// The setting that holds the directory URL.
const DIRECTORY_SETTING: &str = "_APP_ACME_DIRECTORY_URL";
/// The setting that holds the extra trusted root.
const CA_ROOT_SETTING: &str = "_APP_ACME_CA_ROOT";
/// The setting that names the certificate profile.
pub(crate) const PROFILE_SETTING: &str = "_APP_ACME_PROFILE";
/// The setting that names the certificate key type.
pub(crate) const KEY_TYPE_SETTING: &str = "_APP_ACME_KEY_TYPE";
/// The setting that holds the external account binding's key id.
pub(crate) const EAB_KID_SETTING: &str = "_APP_ACME_EAB_KID";
/// The setting that holds the external account binding's HMAC key.
pub(crate) const EAB_HMAC_KEY_SETTING: &str = "_APP_ACME_EAB_HMAC_KEY";

/// Tries of one call whose nonce the CA keeps rejecting. instant-acme sends
/// each request up to three times with fresh nonces; a CA that rejects half
/// of them would still fail one call in eight, and an order makes about ten
/// calls, so the call is repeated a few more times.
const BAD_NONCE_ATTEMPTS: u32 = 8;

/// One call to the CA, bounded by the request timeout (or the given limit)
/// and tried again (a bounded number of times) while the CA rejects its
/// nonce; `$call` is evaluated anew for each try and must be safe to repeat
/// (a request refused for its nonce was not acted upon). A macro, not a
/// function, because the call borrows the order mutably at every try.
macro_rules! retry {
    ($issuer:expr, $step:expr, $domain:expr, $call:expr) => {
        retry!(limit: $issuer.request_timeout, $step, $domain, $call)
    };
    (limit: $limit:expr, $step:expr, $domain:expr, $call:expr) => {{
        let limit = $limit;
        let mut attempt = 1;
        loop {
            match tokio::time::timeout(limit, $call).await {
                Ok(Ok(value)) => break Ok(value),
                Ok(Err(e)) if problem::is_bad_nonce(&e) && attempt < BAD_NONCE_ATTEMPTS => {
                    tracing::debug!(
                        domain = $domain.map(Domain::as_str).unwrap_or("-"),
                        step = $step,
                        attempt,
                        "the CA rejected the nonce again; retrying"
                    );
                    attempt += 1;
                }
                // instant-acme's own polling gave up.
                Ok(Err(instant_acme::Error::Timeout(_))) | Err(_) => {
                    break Err(Error::Timeout {
                        step: $step,
                        after: limit,
                    })
                }
                Ok(Err(e)) => break Err(problem::acme_error($domain, $step, e)),
            }
        }
    }};
}

mod account;
mod client;
mod order;
mod problem;
mod renewal;
pub(crate) mod settings;

pub use settings::{ExternalAccountBinding, KeyType};

/// Issues certificates from an ACME CA (Let's Encrypt or any RFC 8555 CA),
/// proving control of each domain with a [`ChallengeSolver`].
///
/// The ACME account is created on first use and stored in the
/// [`CertStore`], its credentials sealed by the [`SecretCipher`] under the
/// account id (see [`account_id`](Self::account_id)); every later issue, in
/// this process or another one sharing the store, reuses it. Concurrent
/// issues share one account. A CA that no longer knows it
/// (`accountDoesNotExist`, after its database was reset) gets a new one,
/// registered once and stored in its place, and the order is sent again.
///
/// With a CA that offers ACME Renewal Information (RFC 9773),
/// [`renewal_window`](Issuer::renewal_window) gives its suggested renewal
/// window and [`issue_replacing`](Issuer::issue_replacing) names the
/// replaced certificate in the order (`replaces`).
///
/// Every call to the CA is bounded by the request timeout and a whole
/// [`issue`](Issuer::issue) by the order timeout, so a CA that stops
/// answering fails with [`Error::Timeout`] instead of hanging. A CA's refusal
/// comes back as [`Error::Acme`] carrying the CA's problem document
/// ([`Error::acme_problem`], typed by [`ProblemKind`](crate::error::ProblemKind)).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use certkeeper::challenge::Http01Solver;
/// # use certkeeper::issuer::{AcmeIssuer, Issuer};
/// # use certkeeper::store::MemoryStore;
/// # use certkeeper::Domain;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> certkeeper::Result<()> {
/// let solver = Http01Solver::new();
/// let _listener = solver.serve("[::]:80".parse().unwrap()).await?;
/// let issuer = AcmeIssuer::builder("https://acme-v02.api.letsencrypt.org/directory")
///     .contact_email("admin@example.com")
///     .solver(Arc::new(solver))
///     .store(Arc::new(MemoryStore::new()))
///     .cipher(Arc::new(certkeeper::Config::from_env()?.keyring()?)) // _APP_OPENSSL_KEY_V1, V2 ...
///     .build()?;
/// let cert = issuer.issue(&Domain::new("www.example.com")?).await?;
/// println!("valid until {}", cert.not_after);
/// # Ok(())
/// # }
/// ```
pub struct AcmeIssuer {
    directory_url: String,
    contact: String,
    ca_root: Option<PathBuf>,
    http: Option<Arc<dyn HttpClient>>,
    profile: Option<String>,
    key_type: KeyType,
    eab: Option<account::Eab>,
    solver: Arc<dyn ChallengeSolver>,
    vault: Vault,
    request_timeout: Duration,
    order_timeout: Duration,
    account_id: String,
    account: tokio::sync::Mutex<Option<account::Current>>,
    /// Whether the CA offers ARI, as learned (`renewal::ARI_*`).
    ari: std::sync::atomic::AtomicU8,
}

/// Builds an [`AcmeIssuer`]; get one from [`AcmeIssuer::builder`].
///
/// A contact email, a solver, a store and a cipher are required.
pub struct AcmeIssuerBuilder {
    directory_url: String,
    contact_email: Option<String>,
    ca_root: Option<PathBuf>,
    http: Option<Arc<dyn HttpClient>>,
    profile: Option<String>,
    key_type: KeyType,
    eab: Option<(String, Zeroizing<String>)>,
    solver: Option<Arc<dyn ChallengeSolver>>,
    store: Option<Arc<dyn CertStore>>,
    cipher: Option<Arc<dyn SecretCipher>>,
    request_timeout: Duration,
    order_timeout: Duration,
}

impl AcmeIssuer {
    /// Time limit of one call to the CA unless set otherwise.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Time limit of a whole [`issue`](Issuer::issue) unless set otherwise.
    pub const DEFAULT_ORDER_TIMEOUT: Duration = Duration::from_secs(5 * 60);

    /// Starts building an issuer for the CA whose ACME directory is at
    /// `directory_url` (an `https://` URL, for example
    /// [`LETS_ENCRYPT_DIRECTORY`](crate::config::LETS_ENCRYPT_DIRECTORY)).
    pub fn builder(directory_url: impl Into<String>) -> AcmeIssuerBuilder {
        AcmeIssuerBuilder {
            directory_url: directory_url.into(),
            contact_email: None,
            ca_root: None,
            http: None,
            profile: None,
            key_type: KeyType::default(),
            eab: None,
            solver: None,
            store: None,
            cipher: None,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            order_timeout: Self::DEFAULT_ORDER_TIMEOUT,
        }
    }

    /// The id the ACME account is stored under: `acme-` and 16 hex digits of
    /// SHA-256 over the directory URL and the contact address, so each CA and
    /// contact pair gets its own account.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> &str {
        &self.directory_url
    }

    /// The certificate profile asked for (`_APP_ACME_PROFILE`), if any.
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// The type of the certificate keys generated (`_APP_ACME_KEY_TYPE`).
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// certkeeper's own HTTP client to the CA, the one an issuer uses when
    /// [`AcmeIssuerBuilder::http_client`] is not set: HTTPS only, HTTP/1.1
    /// and HTTP/2, `TCP_NODELAY`, on certkeeper's crypto provider, trusting
    /// the root in the PEM file `ca_root` or else the system's roots. A
    /// client of one's own can wrap it (to count, log or add headers).
    ///
    /// Fails with [`Error::Config`] naming `_APP_ACME_CA_ROOT` when that
    /// file holds no usable certificate.
    pub fn default_http_client(ca_root: Option<&std::path::Path>) -> Result<Box<dyn HttpClient>> {
        client::http_client(ca_root).map_err(|e| Error::config(CA_ROOT_SETTING, e.to_string()))
    }
}

#[async_trait]
impl Issuer for AcmeIssuer {
    async fn issue(&self, domain: &Domain) -> Result<IssuedCert> {
        self.issue_order(domain, None).await
    }

    fn kind(&self) -> IssuerKind {
        IssuerKind::ACME
    }

    fn challenge(&self) -> Option<ChallengeKind> {
        Some(self.solver.kind())
    }

    async fn renewal_window(&self, chain_pem: &str) -> Result<Option<RenewalWindow>> {
        self.fetch_renewal_window(chain_pem).await
    }

    async fn issue_replacing(
        &self,
        domain: &Domain,
        previous_chain_pem: &str,
    ) -> Result<IssuedCert> {
        self.issue_order(domain, Some(previous_chain_pem)).await
    }
}

impl AcmeIssuer {
    /// One issue, bounded by the order timeout; `replaces` is the chain of
    /// the certificate it replaces (RFC 9773), if any.
    async fn issue_order(&self, domain: &Domain, replaces: Option<&str>) -> Result<IssuedCert> {
        let challenge = self.solver.kind();
        if domain.is_wildcard() && challenge != ChallengeKind::Dns01 {
            return Err(Error::WildcardNeedsDns01 {
                domain: domain.clone(),
                challenge: challenge.as_str(),
            });
        }
        let mut presented = Presented::new(self.solver.clone(), self.request_timeout);
        let outcome = timeout(
            self.order_timeout,
            self.run_order(domain, replaces, &mut presented),
        )
        .await;
        // Whatever happened, nothing stays presented.
        presented.clean_up().await;
        match outcome {
            Ok(result) => {
                if let Err(e) = &result {
                    tracing::info!(%domain, error = %e, code = e.code(), "ACME issuance failed");
                }
                result
            }
            Err(_) => {
                tracing::info!(%domain, after = ?self.order_timeout, "ACME issuance timed out");
                Err(Error::Timeout {
                    step: "order",
                    after: self.order_timeout,
                })
            }
        }
    }
}

impl Debug for AcmeIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("directory_url", &self.directory_url)
            .field("account_id", &self.account_id)
            .field("contact", &self.contact)
            .field("ca_root", &self.ca_root)
            .field("http_client", &self.http.as_ref().map(|_| "custom"))
            .field("profile", &self.profile)
            .field("key_type", &self.key_type)
            .field("eab", &self.eab)
            .field("solver", &self.solver)
            .field("request_timeout", &self.request_timeout)
            .field("order_timeout", &self.order_timeout)
            .finish_non_exhaustive()
    }
}

impl AcmeIssuerBuilder {
    /// The account's contact address (`_APP_SYSTEM_SECURITY_EMAIL_ADDRESS`);
    /// required, checked by [`build`](Self::build).
    pub fn contact_email(mut self, email: &str) -> Self {
        self.contact_email = Some(email.to_owned());
        self
    }

    /// A PEM file with the root certificate of the CA's HTTPS listener
    /// (`_APP_ACME_CA_ROOT`), for a private or test CA. When set, this root is
    /// trusted **instead of** the system roots for the connection to the CA.
    pub fn ca_root_pem_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_root = Some(path.into());
        self
    }

    /// The HTTP client that carries every request to the CA, instead of
    /// certkeeper's own (see [`AcmeIssuer::default_http_client`]): for a
    /// proxy, custom roots or instrumentation. It is instant-acme's
    /// [`HttpClient`] trait (re-exported as
    /// [`certkeeper::issuer::instant_acme`](crate::issuer::instant_acme)).
    /// The client is then in charge of trusting the CA, so
    /// [`ca_root_pem_file`](Self::ca_root_pem_file) cannot be set with it.
    pub fn http_client(mut self, client: impl HttpClient) -> Self {
        self.http = Some(Arc::new(client));
        self
    }

    /// The certificate profile to order (`_APP_ACME_PROFILE`), one of those
    /// the CA's directory lists (Let's Encrypt: `classic`, `tlsserver`,
    /// `shortlived`). Unset: the CA's default. A name the CA does not offer
    /// fails every issue with [`Error::Config`] naming `_APP_ACME_PROFILE`
    /// and the profiles it does offer.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The type of the certificate keys generated (`_APP_ACME_KEY_TYPE`):
    /// ECDSA P-256 (the default) or P-384.
    pub fn key_type(mut self, key_type: KeyType) -> Self {
        self.key_type = key_type;
        self
    }

    /// External account binding (RFC 8555 section 7.3.4), which CAs such
    /// as ZeroSSL and Google require to register an account: the key id
    /// (`_APP_ACME_EAB_KID`) and the HMAC key, base64url as CAs hand it out
    /// (`_APP_ACME_EAB_HMAC_KEY`). The key is only used to sign the
    /// registration; it is never logged, never in `Debug`, never stored.
    pub fn external_account_binding(mut self, key_id: impl Into<String>, hmac_key: &str) -> Self {
        self.eab = Some((key_id.into(), Zeroizing::new(hmac_key.to_owned())));
        self
    }

    /// The solver that answers the CA's challenges; required. Its
    /// [`kind`](ChallengeSolver::kind) is the challenge type asked for.
    pub fn solver(mut self, solver: Arc<dyn ChallengeSolver>) -> Self {
        self.solver = Some(solver);
        self
    }

    /// The store that keeps the ACME account; required.
    pub fn store(mut self, store: Arc<dyn CertStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The cipher that seals the account credentials; required.
    pub fn cipher(mut self, cipher: Arc<dyn SecretCipher>) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// Time limit of every single call to the CA (default 30 s).
    pub fn request_timeout(mut self, limit: Duration) -> Self {
        self.request_timeout = limit;
        self
    }

    /// Time limit of a whole issue, validation and polling included
    /// (default 5 minutes).
    pub fn order_timeout(mut self, limit: Duration) -> Self {
        self.order_timeout = limit;
        self
    }

    /// Checks the settings and builds the issuer. Nothing is sent to the CA
    /// yet: the account is created or restored by the first issue.
    ///
    /// Fails with [`Error::Config`] naming the setting at fault: a missing or
    /// invalid contact address, a directory URL that is not `https://`, an
    /// unreadable CA root file, a zero timeout, or a missing solver, store or
    /// cipher.
    pub fn build(self) -> Result<AcmeIssuer> {
        let email = self
            .contact_email
            .ok_or_else(|| Error::config(EMAIL_SETTING, "an ACME account needs a contact email"))?;
        let contact = parse_email(EMAIL_SETTING, &email)?;
        let directory_url = settings::directory_url(DIRECTORY_SETTING, &self.directory_url)?;
        if let Some(path) = &self.ca_root {
            settings::read_ca_root(CA_ROOT_SETTING, path)?;
            if self.http.is_some() {
                return Err(Error::config(
                    CA_ROOT_SETTING,
                    "cannot be set with AcmeIssuerBuilder::http_client: that client decides which roots it trusts",
                ));
            }
        }
        let profile = match &self.profile {
            Some(profile) => Some(settings::profile(PROFILE_SETTING, profile)?),
            None => None,
        };
        let eab = match &self.eab {
            Some((kid, key)) => Some(account::Eab::new(kid, key)?),
            None => None,
        };
        for (name, limit) in [
            ("AcmeIssuerBuilder::request_timeout", self.request_timeout),
            ("AcmeIssuerBuilder::order_timeout", self.order_timeout),
        ] {
            if limit.is_zero() {
                return Err(Error::config(name, "must be longer than zero"));
            }
        }
        let required = |name: &str| Error::config(name, "required");
        let account_id = account::account_id(&directory_url, &contact);
        let store = self
            .store
            .ok_or_else(|| required("AcmeIssuerBuilder::store"))?;
        let cipher = self
            .cipher
            .ok_or_else(|| required("AcmeIssuerBuilder::cipher"))?;
        Ok(AcmeIssuer {
            solver: self
                .solver
                .ok_or_else(|| required("AcmeIssuerBuilder::solver"))?,
            vault: Vault::new(store, cipher),
            directory_url,
            contact,
            ca_root: self.ca_root,
            http: self.http,
            profile,
            key_type: self.key_type,
            eab,
            request_timeout: self.request_timeout,
            order_timeout: self.order_timeout,
            account_id,
            account: tokio::sync::Mutex::new(None),
            ari: std::sync::atomic::AtomicU8::new(renewal::ARI_UNKNOWN),
        })
    }
}

impl Debug for AcmeIssuerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeIssuerBuilder")
            .field("directory_url", &self.directory_url)
            .field("contact_email", &self.contact_email)
            .field("ca_root", &self.ca_root)
            .field("http_client", &self.http.as_ref().map(|_| "custom"))
            .field("profile", &self.profile)
            .field("key_type", &self.key_type)
            .field(
                "eab_key_id",
                &self.eab.as_ref().map(|(kid, _)| kid.as_str()),
            )
            .field("request_timeout", &self.request_timeout)
            .field("order_timeout", &self.order_timeout)
            .finish_non_exhaustive()
    }
}
