//! Certificates from an ACME CA (RFC 8555) through instant-acme.
//!
//! - `mod.rs`: the [`AcmeIssuer`], its builder and the bounded call.
//! - `account.rs`: the ACME account, created once and stored sealed; its
//!   key rollover.
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

use super::{BudgetCounter, CaBudgets};
use super::{
    IssueRequest, Issued, IssuedCert, IssuedChain, Issuer, IssuerKind, RenewalWindow,
    RevocationReason, Revoker,
};
use crate::challenge::{ChallengeKind, ChallengeSolver};
use crate::cipher::SecretCipher;
use crate::clock::{Clock, SystemClock};
use crate::config::{Naming, Setting};
use crate::email::parse_email;
use crate::store::CertStore;
use crate::vault::Vault;
use crate::{Domain, Error, Result};
use order::Presented;

/// The builder method that sets the contact address, named in errors.
const EMAIL_METHOD: &str = "AcmeIssuerBuilder::contact_email";
/// The builder method that sets the CA root, named in errors.
const CA_ROOT_METHOD: &str = "AcmeIssuerBuilder::ca_root_pem_file";
/// The builder method that sets the profile, named in errors.
const PROFILE_METHOD: &str = "AcmeIssuerBuilder::profile";
/// The builder method that sets the profile of IP addresses, named in errors.
const IP_PROFILE_METHOD: &str = "AcmeIssuerBuilder::ip_profile";
/// The builder method that sets the external account binding, named in errors.
const EAB_METHOD: &str = "AcmeIssuerBuilder::external_account_binding";

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

pub use account::AccountKeyRollover;
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
/// [`rotate_account_key`](Self::rotate_account_key) rolls the account's key
/// over (RFC 8555 section 7.3.5) and stores the new one, sealed, in place of
/// the old one with compare-and-swap, so one instance of a cluster wins;
/// the others switch to it when the CA first refuses their old key.
///
/// With a CA that offers ACME Renewal Information (RFC 9773),
/// [`renewal_window`](Issuer::renewal_window) gives its suggested renewal
/// window and a renewal it issued names the replaced certificate in the
/// order (`replaces`). As a [`Revoker`] it revokes what its account
/// ordered.
///
/// Every call to the CA is bounded by the request timeout and a whole
/// [`issue`](Issuer::issue) by the order timeout, so a CA that stops
/// answering fails with [`Error::Timeout`] instead of hanging. A CA's refusal
/// comes back as [`Error::Acme`] carrying the CA's problem document
/// ([`Error::acme_problem`], typed by [`ProblemKind`](crate::error::ProblemKind)).
/// Other failures are classed by what they are: no answer (a refused
/// connection, TLS, a timeout) or a server error (5xx, with or without a
/// problem document or `Retry-After`) means the CA is unavailable
/// ([`Error::is_ca_unavailable`], code `acme_unreachable`); an answer that
/// breaks the protocol (JSON that does not decode, a missing `Location` or
/// nonce, another error status without a problem document, an HTML page)
/// is the CA's error for that order, not an outage
/// ([`Error::acme_protocol_error`], code `acme_protocol`).
///
/// A CA that offers ARI but creates a renewal order without echoing its
/// `replaces` (RFC 9773 section 5 says it must) still renews: the order it
/// created is kept, and the CA is remembered (in the issuer and in the
/// store's setting `acme-drops-replaces-` and 16 hex digits of SHA-256 over
/// the directory URL; remove it to try `replaces` again), so later renewals
/// with it are ordered without `replaces`, with a warning saying why.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use certkeeper::challenge::Http01Solver;
/// # use certkeeper::issuer::{AcmeIssuer, IssueRequest, Issuer};
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
/// let issued = issuer.issue(&IssueRequest::new(Domain::new("www.example.com")?)).await?;
/// println!("valid until {}, from {}", issued.cert.not_after, issued.issuer);
/// # Ok(())
/// # }
/// ```
pub struct AcmeIssuer {
    directory_url: String,
    contact: String,
    ca_root: Option<PathBuf>,
    solvers: Solvers,
    http: Option<Arc<dyn HttpClient>>,
    profile: Option<String>,
    ip_profile: Option<String>,
    key_type: KeyType,
    eab: Option<account::Eab>,
    vault: Vault,
    request_timeout: Duration,
    order_timeout: Duration,
    account_id: String,
    account: tokio::sync::Mutex<Option<account::Current>>,
    /// Whether the CA offers ARI, as learned (`renewal::ARI_*`).
    ari: std::sync::atomic::AtomicU8,
    /// Whether the CA answers orders without echoing `replaces`, as
    /// learned (`renewal::REPLACES_*`).
    replaces_memory: std::sync::atomic::AtomicU8,
    kind: IssuerKind,
    budgets: BudgetCounter,
    naming: Naming,
}

/// Builds an [`AcmeIssuer`]; get one from [`AcmeIssuer::builder`].
///
/// A contact email, a solver, a store and a cipher are required.
pub struct AcmeIssuerBuilder {
    directory_url: String,
    contact_email: Option<String>,
    ca_root: Option<PathBuf>,
    solvers: Vec<Arc<dyn ChallengeSolver>>,
    preference: Vec<ChallengeKind>,
    http: Option<Arc<dyn HttpClient>>,
    profile: Option<String>,
    ip_profile: Option<String>,
    key_type: KeyType,
    eab: Option<(String, Zeroizing<String>)>,
    store: Option<Arc<dyn CertStore>>,
    cipher: Option<Arc<dyn SecretCipher>>,
    request_timeout: Duration,
    order_timeout: Duration,
    kind: IssuerKind,
    budgets: CaBudgets,
    clock: Arc<dyn Clock>,
    naming: Naming,
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
            solvers: Vec::new(),
            preference: DEFAULT_PREFERENCE.to_vec(),
            http: None,
            profile: None,
            ip_profile: None,
            key_type: KeyType::default(),
            eab: None,
            store: None,
            cipher: None,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            order_timeout: Self::DEFAULT_ORDER_TIMEOUT,
            kind: IssuerKind::ACME,
            budgets: CaBudgets::default(),
            clock: Arc::new(SystemClock),
            naming: Naming::default(),
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

    /// The certificate profile ordered for an IP address
    /// ([`AcmeIssuerBuilder::ip_profile`], else [`profile`](Self::profile)).
    pub fn ip_profile(&self) -> Option<&str> {
        self.ip_profile.as_deref().or(self.profile())
    }

    /// The profile ordered for `domain`: [`ip_profile`](Self::ip_profile)
    /// for an IP address, else [`profile`](Self::profile).
    pub(super) fn profile_for(&self, domain: &Domain) -> Option<&str> {
        if domain.ip().is_some() {
            self.ip_profile()
        } else {
            self.profile()
        }
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
    /// Fails with [`Error::Config`] naming `AcmeIssuer::default_http_client`
    /// when that file holds no usable certificate.
    pub fn default_http_client(ca_root: Option<&std::path::Path>) -> Result<Box<dyn HttpClient>> {
        client::http_client(ca_root)
            .map_err(|e| Error::config("AcmeIssuer::default_http_client", e.to_string()))
    }
}

impl AcmeIssuer {
    /// The challenge type this issuer proves control of `domain` with:
    /// DNS-01 for a wildcard (when it has a DNS-01 solver), else the
    /// preferred one ([`AcmeIssuerBuilder::prefer_challenges`]).
    pub fn challenge_for(&self, domain: &Domain) -> ChallengeKind {
        match self.solvers.for_domain(domain) {
            Ok(solver) => solver.kind(),
            Err(_) => self.solvers.preferred().kind(),
        }
    }
}

#[async_trait]
impl Issuer for AcmeIssuer {
    /// Orders a certificate; when it replaces one this issuer issued (its
    /// [`kind`](Issuer::kind)), the order names it (`replaces`, RFC 9773).
    async fn issue(&self, request: &IssueRequest) -> Result<Issued> {
        let cert = self
            .issue_order(&request.domain, self.replaced_chain(request))
            .await?;
        Ok(Issued::new(cert, self.kind.clone()))
    }

    /// Within the CA's limits for the name, counted in the store: its
    /// failed validations, and the new-certificate budgets a first
    /// certificate or a renewal counts against ([`CaBudgets`]). Nothing is
    /// sent to the CA.
    async fn admit(&self, request: &IssueRequest) -> Result<()> {
        self.check_budgets(&request.domain, self.replaced_chain(request))
            .await
    }

    fn kind(&self) -> IssuerKind {
        self.kind.clone()
    }

    /// A wildcard needs a DNS-01 solver.
    fn check(&self, domain: &Domain) -> Result<()> {
        self.solvers.for_domain(domain).map(drop)
    }

    async fn renewal_window(
        &self,
        _domain: &Domain,
        chain_pem: &str,
    ) -> Result<Option<RenewalWindow>> {
        self.fetch_renewal_window(chain_pem).await
    }
}

#[async_trait]
impl Revoker for AcmeIssuer {
    /// Revokes through this issuer's ACME account, which must be the one
    /// that ordered the certificate (see [`AcmeIssuer::revoke_chain`]).
    async fn revoke(
        &self,
        domain: &Domain,
        cert: &IssuedChain,
        reason: RevocationReason,
    ) -> Result<()> {
        if cert.issuer != self.kind {
            return Err(Error::NotRevocable {
                domain: domain.clone(),
                issuer: cert.issuer.to_string(),
                revoker: self.kind.to_string(),
            });
        }
        self.revoke_chain(&cert.chain_pem, reason).await
    }
}

impl AcmeIssuer {
    /// The chain of the certificate `request` replaces, when this issuer
    /// issued it (its [`kind`](Issuer::kind)).
    fn replaced_chain<'a>(&self, request: &'a IssueRequest) -> Option<&'a str> {
        request
            .replaces
            .as_ref()
            .filter(|replaced| replaced.issuer == self.kind)
            .map(|replaced| replaced.chain_pem.as_str())
    }

    /// Fails with [`Error::BudgetSpent`] when a new certificate for
    /// `domain` replacing `replaces` (a chain of this issuer's) would
    /// exceed a budget of the name: its failed validations, or the
    /// new-certificate budgets its order kind counts against. Counts
    /// nothing.
    async fn check_budgets(&self, domain: &Domain, replaces: Option<&str>) -> Result<()> {
        self.budgets
            .check_failed_validations(&self.account_id, domain)
            .await?;
        let with_replaces = match replaces {
            Some(chain_pem) => self.would_send_replaces(chain_pem).await,
            None => false,
        };
        let kind = self.budgets.order_kind(replaces, with_replaces);
        self.budgets
            .check_new_certificate(&self.account_id, domain, kind)
            .await
    }

    /// One issue, bounded by the order timeout; `replaces` is the chain of
    /// the certificate it replaces (RFC 9773), if any.
    async fn issue_order(&self, domain: &Domain, replaces: Option<&str>) -> Result<IssuedCert> {
        let solver = self.solvers.for_domain(domain)?;
        // Within the CA's limits, counted before anything is sent: a spent
        // budget of the name costs no order.
        self.check_budgets(domain, replaces).await?;
        self.budgets.take_order(&self.account_id, domain).await?;
        let mut presented = Presented::new(solver, self.request_timeout);
        let outcome = timeout(
            self.order_timeout,
            self.run_order(domain, replaces, &mut presented),
        )
        .await;
        if let Ok(Err(
            e @ Error::Acme {
                step: "validation", ..
            },
        )) = &outcome
        {
            // The CA's own failures, an outage or a broken answer, are not
            // failed validations.
            if !e.is_ca_unavailable() && e.acme_protocol_error().is_none() {
                self.budgets
                    .record_failed_validation(&self.account_id, domain)
                    .await;
            }
        }
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
            .field("ip_profile", &self.ip_profile)
            .field("key_type", &self.key_type)
            .field("eab", &self.eab)
            .field("solvers", &self.solvers.list)
            .field("preference", &self.solvers.preference)
            .field("request_timeout", &self.request_timeout)
            .field("order_timeout", &self.order_timeout)
            .field("kind", &self.kind)
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

    /// The certificate profile to order for an IP address (RFC 8738)
    /// instead of [`profile`](Self::profile): a CA may issue IP addresses
    /// only under one profile (Let's Encrypt: `shortlived`, six days).
    /// Unset: IP addresses get [`profile`](Self::profile). Checked like it:
    /// a name the CA does not offer fails the issues of IP addresses with
    /// [`Error::Config`] naming `AcmeIssuerBuilder::ip_profile` and the
    /// profiles the CA offers.
    pub fn ip_profile(mut self, profile: impl Into<String>) -> Self {
        self.ip_profile = Some(profile.into());
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

    /// A solver that answers the CA's challenges of its
    /// [`kind`](ChallengeSolver::kind); at least one is required. One
    /// solver per challenge type: a second of the same type replaces the
    /// first. Each name is proven with one of them: a wildcard always with
    /// the DNS-01 solver (without one, a wildcard fails with
    /// [`Error::WildcardNeedsDns01`]), any other name with the first type
    /// of [`prefer_challenges`](Self::prefer_challenges) that has a solver.
    pub fn solver(mut self, solver: Arc<dyn ChallengeSolver>) -> Self {
        self.solvers.retain(|s| s.kind() != solver.kind());
        self.solvers.push(solver);
        self
    }

    /// The order in which challenge types are tried for names that are not
    /// wildcards, when solvers of several types are set (default: HTTP-01,
    /// TLS-ALPN-01, DNS-01). A type without a solver is passed over; a
    /// solver whose type is not listed comes after the listed ones.
    pub fn prefer_challenges(mut self, order: impl IntoIterator<Item = ChallengeKind>) -> Self {
        self.preference = order.into_iter().collect();
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

    /// The name the stored records give this CA (default
    /// [`IssuerKind::ACME`], `acme`): a name per CA (`letsencrypt`,
    /// `zerossl` ...) tells which one issued a certificate when a
    /// [`FallbackIssuer`](super::FallbackIssuer) holds several.
    pub fn kind(mut self, kind: IssuerKind) -> Self {
        self.kind = kind;
        self
    }

    /// The CA's limits to keep within (default [`CaBudgets::default`],
    /// Let's Encrypt's): an issue that would exceed one fails with
    /// [`Error::BudgetSpent`] before anything is sent, and the renewer
    /// leaves the name for later. Counted in the store, so instances
    /// sharing it share the budgets (in this process alone when the store
    /// does not keep budgets).
    pub fn budgets(mut self, budgets: CaBudgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// The clock the budgets are counted on (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
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
        let naming = self.naming;
        let email_name = naming.of(Setting::SecurityEmail, EMAIL_METHOD);
        let email = self
            .contact_email
            .ok_or_else(|| Error::config(email_name, "an ACME account needs a contact email"))?;
        let contact = parse_email(email_name, &email)?;
        let directory_url = settings::directory_url(
            naming.of(Setting::AcmeDirectoryUrl, "AcmeIssuer::builder"),
            &self.directory_url,
        )?;
        if let Some(path) = &self.ca_root {
            settings::read_ca_root(naming.of(Setting::AcmeCaRoot, CA_ROOT_METHOD), path)?;
            if self.http.is_some() {
                return Err(Error::config(
                    naming.of(Setting::AcmeCaRoot, CA_ROOT_METHOD),
                    "cannot be set with AcmeIssuerBuilder::http_client: that client decides which roots it trusts",
                ));
            }
        }
        let profile = match &self.profile {
            Some(profile) => Some(settings::profile(
                naming.of(Setting::AcmeProfile, PROFILE_METHOD),
                profile,
            )?),
            None => None,
        };
        let ip_profile = match &self.ip_profile {
            Some(profile) => Some(settings::profile(
                naming.of(Setting::AcmeIpProfile, IP_PROFILE_METHOD),
                profile,
            )?),
            None => None,
        };
        let eab = match &self.eab {
            Some((kid, key)) => Some(account::Eab::new(kid, key, naming, EAB_METHOD)?),
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
            budgets: BudgetCounter::new(store.clone(), self.clock, self.budgets),
            solvers: Solvers::new(self.solvers, self.preference)
                .ok_or_else(|| required("AcmeIssuerBuilder::solver"))?,
            vault: Vault::new(store, cipher),
            directory_url,
            contact,
            ca_root: self.ca_root,
            http: self.http,
            profile,
            ip_profile,
            key_type: self.key_type,
            eab,
            request_timeout: self.request_timeout,
            order_timeout: self.order_timeout,
            account_id,
            account: tokio::sync::Mutex::new(None),
            ari: std::sync::atomic::AtomicU8::new(renewal::ARI_UNKNOWN),
            replaces_memory: std::sync::atomic::AtomicU8::new(renewal::REPLACES_UNKNOWN),
            kind: self.kind,
            naming,
        })
    }

    /// Errors name the environment variables, not the builder methods: for
    /// an issuer built from [`Config::from_env`](crate::Config::from_env).
    pub(crate) fn naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }
}

/// The default order of challenge types for names that are not wildcards.
const DEFAULT_PREFERENCE: [ChallengeKind; 3] = [
    ChallengeKind::Http01,
    ChallengeKind::TlsAlpn01,
    ChallengeKind::Dns01,
];

/// The issuer's solvers, one per challenge type, in the order they are
/// preferred for names that are not wildcards (never empty).
struct Solvers {
    list: Vec<Arc<dyn ChallengeSolver>>,
    preference: Vec<ChallengeKind>,
}

impl Solvers {
    /// `None` without any solver.
    fn new(
        mut list: Vec<Arc<dyn ChallengeSolver>>,
        preference: Vec<ChallengeKind>,
    ) -> Option<Self> {
        if list.is_empty() {
            return None;
        }
        // Stable: listed types first, in the preferred order; others after.
        list.sort_by_key(|solver| {
            preference
                .iter()
                .position(|kind| *kind == solver.kind())
                .unwrap_or(usize::MAX)
        });
        Some(Self { list, preference })
    }

    /// The solver for names that are not wildcards.
    fn preferred(&self) -> &Arc<dyn ChallengeSolver> {
        &self.list[0]
    }

    /// The solver that proves `domain`: DNS-01 for a wildcard (the only
    /// challenge a CA validates one with), the preferred HTTP-01 or
    /// TLS-ALPN-01 solver for an IP address (RFC 8738 has no DNS-01 for
    /// addresses), else the preferred one.
    fn for_domain(&self, domain: &Domain) -> Result<Arc<dyn ChallengeSolver>> {
        if domain.ip().is_some() {
            return self
                .list
                .iter()
                .find(|solver| solver.kind() != ChallengeKind::Dns01)
                .cloned()
                .ok_or_else(|| {
                    Error::config(
                        "AcmeIssuerBuilder::solver",
                        format!(
                            "the IP address {domain} is validated through HTTP-01 or \
                             TLS-ALPN-01 (RFC 8738), never DNS-01: this issuer has only a \
                             DNS-01 solver"
                        ),
                    )
                });
        }
        if !domain.is_wildcard() {
            return Ok(self.preferred().clone());
        }
        self.list
            .iter()
            .find(|solver| solver.kind() == ChallengeKind::Dns01)
            .cloned()
            .ok_or_else(|| Error::WildcardNeedsDns01 {
                domain: domain.clone(),
                challenge: self.preferred().kind().as_str(),
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
            .field("ip_profile", &self.ip_profile)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::Challenge;

    /// A solver that only names its type: the rule under test picks one.
    #[derive(Debug)]
    struct Kind(ChallengeKind);

    #[async_trait]
    impl ChallengeSolver for Kind {
        fn kind(&self) -> ChallengeKind {
            self.0
        }
        async fn present(&self, _: &Challenge) -> Result<()> {
            Ok(())
        }
        async fn cleanup(&self, _: &Challenge) -> Result<()> {
            Ok(())
        }
    }

    fn solvers(kinds: &[ChallengeKind], preference: &[ChallengeKind]) -> Solvers {
        let list = kinds
            .iter()
            .map(|kind| Arc::new(Kind(*kind)) as Arc<dyn ChallengeSolver>)
            .collect();
        Solvers::new(list, preference.to_vec()).unwrap()
    }

    fn picked(solvers: &Solvers, name: &str) -> Result<ChallengeKind> {
        solvers
            .for_domain(&Domain::new(name).unwrap())
            .map(|solver| solver.kind())
    }

    #[test]
    fn wildcards_go_to_dns01_and_other_names_to_the_preferred_type() {
        use ChallengeKind::*;
        let both = solvers(&[Dns01, Http01], &DEFAULT_PREFERENCE);
        assert_eq!(picked(&both, "*.example.com").unwrap(), Dns01);
        assert_eq!(picked(&both, "www.example.com").unwrap(), Http01);

        let dns_first = solvers(&[Http01, Dns01], &[Dns01, Http01]);
        assert_eq!(picked(&dns_first, "www.example.com").unwrap(), Dns01);

        // A type the preference does not list comes after the listed ones.
        let unlisted = solvers(&[TlsAlpn01, Http01], &[Http01]);
        assert_eq!(picked(&unlisted, "www.example.com").unwrap(), Http01);

        let http_only = solvers(&[Http01], &DEFAULT_PREFERENCE);
        assert_eq!(picked(&http_only, "www.example.com").unwrap(), Http01);
        assert!(matches!(
            picked(&http_only, "*.example.com"),
            Err(Error::WildcardNeedsDns01 {
                challenge: "http-01",
                ..
            })
        ));
        assert!(Solvers::new(Vec::new(), DEFAULT_PREFERENCE.to_vec()).is_none());
    }

    #[test]
    fn ip_addresses_go_to_http01_or_tls_alpn01_never_dns01() {
        use ChallengeKind::*;
        let dns_first = solvers(&[Dns01, Http01, TlsAlpn01], &[Dns01, TlsAlpn01, Http01]);
        assert_eq!(picked(&dns_first, "203.0.114.7").unwrap(), TlsAlpn01);
        assert_eq!(picked(&dns_first, "2606:4700::1").unwrap(), TlsAlpn01);
        assert_eq!(picked(&dns_first, "www.example.com").unwrap(), Dns01);
        let both = solvers(&[Dns01, Http01], &DEFAULT_PREFERENCE);
        assert_eq!(picked(&both, "203.0.114.7").unwrap(), Http01);
        let dns_only = solvers(&[Dns01], &DEFAULT_PREFERENCE);
        let err = picked(&dns_only, "203.0.114.7").unwrap_err();
        assert!(err.is_settings_error(), "{err}");
        assert!(err.to_string().contains("DNS-01"), "{err}");
        assert_eq!(picked(&dns_only, "www.example.com").unwrap(), Dns01);
    }

    #[test]
    fn ip_addresses_get_the_ip_profile_else_the_profile() {
        let build = |builder: AcmeIssuerBuilder| {
            builder
                .contact_email("ops@example.com")
                .solver(Arc::new(Kind(ChallengeKind::Http01)))
                .store(Arc::new(crate::store::MemoryStore::new()))
                .cipher(Arc::new(
                    crate::cipher::Keyring::from_keys(
                        true,
                        [(1, "Zq4uT9pLw2nX7cVb5mKr8sHd3fJg6yEa")],
                    )
                    .unwrap(),
                ))
                .build()
        };
        let ip = Domain::new("203.0.114.7").unwrap();
        let name = Domain::new("www.example.com").unwrap();
        let plain = build(AcmeIssuer::builder("https://ca.example.com/dir")).unwrap();
        assert_eq!(
            (plain.profile_for(&ip), plain.profile_for(&name)),
            (None, None)
        );
        let both = build(
            AcmeIssuer::builder("https://ca.example.com/dir")
                .profile("classic")
                .ip_profile(" shortlived "),
        )
        .unwrap();
        assert_eq!(both.profile_for(&ip), Some("shortlived"));
        assert_eq!(both.profile_for(&name), Some("classic"));
        let one =
            build(AcmeIssuer::builder("https://ca.example.com/dir").profile("tlsserver")).unwrap();
        assert_eq!(one.profile_for(&ip), Some("tlsserver"));
        let only_ip =
            build(AcmeIssuer::builder("https://ca.example.com/dir").ip_profile("shortlived"))
                .unwrap();
        assert_eq!(only_ip.profile_for(&ip), Some("shortlived"));
        assert_eq!(only_ip.profile_for(&name), None);
        let bad =
            build(AcmeIssuer::builder("https://ca.example.com/dir").ip_profile("short lived"));
        assert!(
            matches!(&bad, Err(Error::Config { name, .. }) if name == "AcmeIssuerBuilder::ip_profile"),
            "{bad:?}"
        );
    }

    #[test]
    fn a_second_solver_of_a_type_replaces_the_first() {
        let builder = AcmeIssuer::builder("https://ca.example.com/dir")
            .solver(Arc::new(Kind(ChallengeKind::Http01)))
            .solver(Arc::new(Kind(ChallengeKind::Dns01)))
            .solver(Arc::new(Kind(ChallengeKind::Http01)));
        let kinds: Vec<_> = builder.solvers.iter().map(|s| s.kind()).collect();
        assert_eq!(kinds, [ChallengeKind::Dns01, ChallengeKind::Http01]);
    }
}
