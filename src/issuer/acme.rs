//! Certificates from an ACME CA (RFC 8555) through instant-acme.

use std::fmt::{self, Debug};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, Problem,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tokio::time::{sleep, timeout};
use zeroize::Zeroizing;

use super::{leaf_der, IssuedCert, Issuer};
use crate::challenge::{Challenge, ChallengeKind, ChallengeSolver};
use crate::cipher::{account_aad, SecretCipher};
use crate::store::{AccountRecord, CertStore, IssuerKind};
use crate::{Domain, Error, Result};

/// The setting that holds the account's contact address.
const EMAIL_SETTING: &str = "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS";
/// The setting that holds the directory URL.
const DIRECTORY_SETTING: &str = "_APP_ACME_DIRECTORY_URL";
/// The setting that holds the extra trusted root.
const CA_ROOT_SETTING: &str = "_APP_ACME_CA_ROOT";

/// The problem type of a rejected anti-replay nonce (RFC 8555 section 6.5).
const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
/// Tries of one call whose nonce the CA keeps rejecting. instant-acme already
/// sends each request up to three times with fresh nonces; a CA that rejects
/// half of them still fails one call in eight, so the call is repeated.
const BAD_NONCE_ATTEMPTS: u32 = 8;

/// First wait between two polls of an order; doubled up to [`MAX_POLL_DELAY`].
const FIRST_POLL_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between two polls of an order.
const MAX_POLL_DELAY: Duration = Duration::from_secs(5);

/// One call to the CA, bounded by the request timeout and tried again (a
/// bounded number of times) while the CA rejects its nonce; `$call` is
/// evaluated anew for each try and must be safe to repeat (a request refused
/// for its nonce was not acted upon). A macro, not a function, because the
/// call borrows the order mutably at every try.
macro_rules! retry {
    ($issuer:expr, $step:expr, $domain:expr, $call:expr) => {{
        let mut attempt = 1;
        loop {
            match timeout($issuer.request_timeout, $call).await {
                Ok(Ok(value)) => break Ok(value),
                Ok(Err(e)) if is_bad_nonce(&e) && attempt < BAD_NONCE_ATTEMPTS => {
                    tracing::debug!(
                        domain = $domain.map(Domain::as_str).unwrap_or("-"),
                        step = $step,
                        attempt,
                        "the CA rejected the nonce again; retrying"
                    );
                    attempt += 1;
                }
                Ok(Err(e)) => break Err(acme_error($domain, $step, &e)),
                Err(_) => {
                    break Err(Error::Timeout {
                        step: $step,
                        after: $issuer.request_timeout,
                    })
                }
            }
        }
    }};
}

/// Issues certificates from an ACME CA (Let's Encrypt or any RFC 8555 CA),
/// proving control of each domain with a [`ChallengeSolver`].
///
/// The ACME account is created on first use and stored in the
/// [`CertStore`], its credentials sealed by the [`SecretCipher`] under the
/// account id (see [`account_id`](Self::account_id)); every later issue, in
/// this process or another one sharing the store, reuses it. Concurrent
/// issues share one account.
///
/// Every call to the CA is bounded by the request timeout and a whole
/// [`issue`](Issuer::issue) by the order timeout, so a CA that stops
/// answering fails with [`Error::Timeout`] instead of hanging. A CA's refusal
/// comes back as [`Error::Acme`] with the CA's problem document (type and
/// detail) in its message.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use certkeeper::challenge::Http01Solver;
/// # use certkeeper::cipher::Keyring;
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
///     .cipher(Arc::new(Keyring::from_env(true)?)) // _APP_OPENSSL_KEY_V1, V2 ...
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
    solver: Arc<dyn ChallengeSolver>,
    store: Arc<dyn CertStore>,
    cipher: Arc<dyn SecretCipher>,
    request_timeout: Duration,
    order_timeout: Duration,
    account_id: String,
    account: OnceCell<Account>,
}

/// Builds an [`AcmeIssuer`]; get one from [`AcmeIssuer::builder`].
///
/// A contact email, a solver, a store and a cipher are required.
pub struct AcmeIssuerBuilder {
    directory_url: String,
    contact_email: Option<String>,
    ca_root: Option<PathBuf>,
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

    /// The account, restored from the store or created once.
    async fn account(&self) -> Result<&Account> {
        self.account
            .get_or_try_init(|| self.load_or_create_account())
            .await
    }

    async fn load_or_create_account(&self) -> Result<Account> {
        if let Some(record) = self.store.load_account(&self.account_id).await? {
            tracing::debug!(account_id = %self.account_id, "restoring the stored ACME account");
            return self.restore_account(&record).await;
        }
        tracing::info!(
            account_id = %self.account_id,
            directory = %self.directory_url,
            "creating an ACME account"
        );
        let contact = format!("mailto:{}", self.contact);
        let new_account = NewAccount {
            contact: &[&contact],
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = retry!(self, "account", None, async {
            self.account_builder()?
                .create(&new_account, self.directory_url.clone(), None)
                .await
        })?;
        // Written in place into a buffer that is wiped when dropped; the
        // capacity avoids reallocations that would leave unwiped copies.
        let mut plaintext = Zeroizing::new(Vec::with_capacity(4096));
        serde_json::to_writer(&mut *plaintext, &credentials).map_err(|e| Error::Acme {
            domain: None,
            step: "account",
            message: format!("cannot serialise the account credentials: {e}"),
        })?;
        let record = AccountRecord {
            id: self.account_id.clone(),
            version: 0,
            sealed_credentials: self
                .cipher
                .seal(&plaintext, &account_aad(&self.account_id))?,
            created: OffsetDateTime::now_utc(),
        };
        match self.store.save_account(&record).await {
            Ok(_) => {
                tracing::info!(account_id = %self.account_id, account_url = %account.id(), "ACME account created and stored");
                Ok(account)
            }
            // Another instance sharing the store created it first: use theirs,
            // so every instance signs with the same account.
            Err(Error::Conflict { .. }) => {
                tracing::info!(account_id = %self.account_id, "another instance stored the ACME account first; using it");
                let record = self
                    .store
                    .load_account(&self.account_id)
                    .await?
                    .ok_or_else(|| Error::NotFound(self.account_id.clone()))?;
                self.restore_account(&record).await
            }
            Err(e) => Err(e),
        }
    }

    async fn restore_account(&self, record: &AccountRecord) -> Result<Account> {
        let plaintext = self
            .cipher
            .open(&record.sealed_credentials, &account_aad(&self.account_id))?;
        let credentials: AccountCredentials =
            // The decoder's message could quote bytes of the account key:
            // say only where decoding stopped.
            serde_json::from_slice(&plaintext).map_err(|e| Error::Corrupt {
                key: self.account_id.clone(),
                reason: format!(
                    "stored ACME account credentials do not decode (at line {}, column {})",
                    e.line(),
                    e.column()
                ),
            })?;
        // Only fetches the directory: no nonce, so nothing to try again.
        let restore = async { self.account_builder()?.from_credentials(credentials).await };
        match timeout(self.request_timeout, restore).await {
            Ok(Ok(account)) => Ok(account),
            Ok(Err(e)) => Err(acme_error(None, "account", &e)),
            Err(_) => Err(Error::Timeout {
                step: "account",
                after: self.request_timeout,
            }),
        }
    }

    /// A client trusting the configured root, or else the system's roots.
    fn account_builder(&self) -> std::result::Result<AccountBuilder, instant_acme::Error> {
        match &self.ca_root {
            Some(path) => Account::builder_with_root(path),
            None => Account::builder(),
        }
    }

    /// Runs one order. Challenges presented are recorded in `presented` so
    /// they are cleaned up whatever happens, a timeout included.
    async fn run_order(&self, domain: &Domain, presented: &mut Presented) -> Result<IssuedCert> {
        let account = self.account().await?;
        let identifiers = [match domain.ip() {
            Some(ip) => Identifier::Ip(ip),
            None => Identifier::Dns(domain.to_string()),
        }];
        let new_order = NewOrder::new(&identifiers);
        let mut order = retry!(
            self,
            "new-order",
            Some(domain),
            account.new_order(&new_order)
        )?;
        let order_url = order.url().to_owned();
        tracing::info!(%domain, %order_url, "ACME order created");

        let wanted = challenge_type(self.solver.kind());
        // Fetch every authorization; already fetched ones are not fetched again.
        let authorizations = retry!(self, "authorization", Some(domain), async {
            let mut found = Vec::new();
            let mut stream = order.authorizations();
            while let Some(authz) = stream.next().await {
                let authz = authz?;
                let challenge = authz
                    .challenges
                    .iter()
                    .find(|c| c.r#type == wanted)
                    .map(|c| c.token.clone());
                let offered: Vec<String> = authz
                    .challenges
                    .iter()
                    .map(|c| challenge_type_name(&c.r#type))
                    .collect();
                found.push((authz.url().to_owned(), authz.status, challenge, offered));
            }
            Ok::<_, instant_acme::Error>(found)
        })?;

        let thumbprint = account.key_thumbprint();
        let mut to_validate = Vec::new();
        for (authz_url, status, token, offered) in authorizations {
            match status {
                AuthorizationStatus::Valid => {
                    tracing::debug!(%domain, %authz_url, "authorization already valid");
                    continue;
                }
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(Error::Acme {
                        domain: Some(domain.to_string()),
                        step: "authorization",
                        message: format!("authorization {authz_url} is {other:?}, not pending"),
                    })
                }
            }
            let token = token.ok_or_else(|| Error::Acme {
                domain: Some(domain.to_string()),
                step: "authorization",
                message: format!(
                    "the CA offers no {} challenge, only: {}",
                    self.solver.kind().as_str(),
                    offered.join(", ")
                ),
            })?;
            let key_authorization = format!("{token}.{thumbprint}");
            let dns_value =
                BASE64_URL_SAFE_NO_PAD.encode(Sha256::digest(key_authorization.as_bytes()));
            let challenge = Challenge {
                domain: domain.clone(),
                token,
                key_authorization,
                dns_value,
            };
            presented.challenges.push(challenge.clone());
            self.solver.present(&challenge).await?;
            tracing::debug!(%domain, %order_url, kind = self.solver.kind().as_str(), "challenge presented");
            to_validate.push(authz_url);
        }

        for authz_url in &to_validate {
            let ready = retry!(self, "challenge", Some(domain), async {
                let mut stream = order.authorizations();
                while let Some(authz) = stream.next().await {
                    let mut authz = authz?;
                    if authz.url() != authz_url {
                        continue;
                    }
                    let mut challenge = authz
                        .challenge(wanted.clone())
                        .ok_or(instant_acme::Error::Str("challenge vanished"))?;
                    return challenge.set_ready().await;
                }
                Err(instant_acme::Error::Str("authorization vanished"))
            });
            if let Err(refused) = ready {
                // A CA that validates at once may answer the "ready" request
                // with the validation's own failure: report that as one.
                let mut invalid = None;
                for _ in 0..3 {
                    let refreshed = retry!(self, "validation", Some(domain), async {
                        let state = order.refresh().await?;
                        Ok::<_, instant_acme::Error>((state.status, state.error.clone()))
                    });
                    match refreshed {
                        // The order may lag its authorization by a moment.
                        Ok((OrderStatus::Pending, _)) => sleep(FIRST_POLL_DELAY).await,
                        Ok((OrderStatus::Invalid, error)) => {
                            invalid = Some(error);
                            break;
                        }
                        _ => break,
                    }
                }
                let Some(error) = invalid else {
                    return Err(refused);
                };
                return Err(self.invalid_order(&mut order, domain, error).await);
            }
            tracing::debug!(%domain, %order_url, "challenge ready for validation");
        }

        // Poll until the CA has validated (or refused) every challenge.
        let mut delay = FIRST_POLL_DELAY;
        loop {
            let (status, error) = retry!(self, "validation", Some(domain), async {
                let state = order.refresh().await?;
                Ok::<_, instant_acme::Error>((state.status, state.error.clone()))
            })?;
            match status {
                OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => break,
                OrderStatus::Invalid => {
                    return Err(self.invalid_order(&mut order, domain, error).await);
                }
                OrderStatus::Pending => {
                    sleep(delay).await;
                    delay = (delay * 2).min(MAX_POLL_DELAY);
                }
            }
        }
        tracing::debug!(%domain, %order_url, "challenges validated");
        presented.clean_up().await;

        let key = rcgen::KeyPair::generate()
            .map_err(|e| Error::Certificate(format!("cannot generate a key: {e}")))?;
        let csr = csr_der(domain, &key)?;
        if order.state().status == OrderStatus::Ready {
            retry!(self, "finalize", Some(domain), order.finalize_csr(&csr))?;
            tracing::debug!(%domain, %order_url, "order finalized");
        }

        let mut delay = FIRST_POLL_DELAY;
        let chain = loop {
            if let Some(chain) = retry!(self, "certificate", Some(domain), order.certificate())? {
                break chain;
            }
            sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL_DELAY);
        };
        check_leaf(domain, &chain, &key)?;
        let issued = IssuedCert::from_pem(chain, Zeroizing::new(key.serialize_pem()))?;
        tracing::info!(
            %domain,
            %order_url,
            not_after = %issued.not_after,
            fingerprint = %issued.fingerprint,
            "certificate issued"
        );
        Ok(issued)
    }

    /// The error for an order the CA declared invalid, with its reasons.
    async fn invalid_order(
        &self,
        order: &mut instant_acme::Order,
        domain: &Domain,
        order_error: Option<Problem>,
    ) -> Error {
        let why = self.why_invalid(order, domain, order_error).await;
        tracing::info!(%domain, order_url = order.url(), reason = %why, "ACME order invalid");
        Error::Acme {
            domain: Some(domain.to_string()),
            step: "validation",
            message: why,
        }
    }

    /// The CA's reasons for an invalid order: the order's own problem and
    /// each failed challenge's problem.
    async fn why_invalid(
        &self,
        order: &mut instant_acme::Order,
        domain: &Domain,
        order_error: Option<Problem>,
    ) -> String {
        // The refreshed order holds no authorization state, so this fetches it anew.
        let fetched = retry!(self, "validation", Some(domain), async {
            let mut found = Vec::new();
            let mut stream = order.authorizations();
            while let Some(authz) = stream.next().await {
                let authz = authz?;
                for challenge in &authz.challenges {
                    if let Some(problem) = &challenge.error {
                        found.push(format!(
                            "{} challenge for {}: {}",
                            challenge_type_name(&challenge.r#type),
                            authz.identifier(),
                            describe_problem(problem)
                        ));
                    }
                }
            }
            Ok::<_, instant_acme::Error>(found)
        });
        let mut reasons = match fetched {
            Ok(found) => found,
            Err(e) => vec![format!("(the authorizations could not be read: {e})")],
        };
        // CAs often copy the failed challenge's problem into the order's.
        if let Some(problem) = order_error.as_ref().map(describe_problem) {
            if !reasons.iter().any(|reason| reason.ends_with(&problem)) {
                reasons.insert(0, problem);
            }
        }
        if reasons.is_empty() {
            reasons.push("the CA marked the order invalid without saying why".into());
        }
        reasons.join("; ")
    }
}

#[async_trait]
impl Issuer for AcmeIssuer {
    async fn issue(&self, domain: &Domain) -> Result<IssuedCert> {
        let mut presented = Presented {
            solver: self.solver.clone(),
            limit: self.request_timeout,
            challenges: Vec::new(),
        };
        let outcome = timeout(self.order_timeout, self.run_order(domain, &mut presented)).await;
        // Whatever happened, nothing stays presented.
        presented.clean_up().await;
        match outcome {
            Ok(result) => {
                if let Err(e) = &result {
                    tracing::info!(%domain, error = %e, "ACME issuance failed");
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

    fn kind(&self) -> IssuerKind {
        IssuerKind::Acme
    }
}

impl Debug for AcmeIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("directory_url", &self.directory_url)
            .field("account_id", &self.account_id)
            .field("contact", &self.contact)
            .field("ca_root", &self.ca_root)
            .field("solver", &self.solver)
            .field("request_timeout", &self.request_timeout)
            .field("order_timeout", &self.order_timeout)
            .field("account_loaded", &self.account.initialized())
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
        let contact = crate::config::parse_email(EMAIL_SETTING, email.trim())?;
        let directory_url = self.directory_url.trim().to_owned();
        let host = directory_url.strip_prefix("https://").unwrap_or_default();
        if host.is_empty()
            || host.starts_with('/')
            || directory_url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::config(
                DIRECTORY_SETTING,
                format!("{directory_url:?} is not an https:// URL (ACME requires HTTPS)"),
            ));
        }
        if let Some(path) = &self.ca_root {
            CertificateDer::from_pem_file(path).map_err(|e| {
                Error::config(
                    CA_ROOT_SETTING,
                    format!("cannot read a PEM certificate from {}: {e}", path.display()),
                )
            })?;
        }
        for (name, limit) in [
            ("AcmeIssuerBuilder::request_timeout", self.request_timeout),
            ("AcmeIssuerBuilder::order_timeout", self.order_timeout),
        ] {
            if limit.is_zero() {
                return Err(Error::config(name, "must be longer than zero"));
            }
        }
        let required = |name: &str| Error::config(name, "required");
        let account_id = account_id(&directory_url, &contact);
        Ok(AcmeIssuer {
            solver: self
                .solver
                .ok_or_else(|| required("AcmeIssuerBuilder::solver"))?,
            store: self
                .store
                .ok_or_else(|| required("AcmeIssuerBuilder::store"))?,
            cipher: self
                .cipher
                .ok_or_else(|| required("AcmeIssuerBuilder::cipher"))?,
            directory_url,
            contact,
            ca_root: self.ca_root,
            request_timeout: self.request_timeout,
            order_timeout: self.order_timeout,
            account_id,
            account: OnceCell::new(),
        })
    }
}

impl Debug for AcmeIssuerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeIssuerBuilder")
            .field("directory_url", &self.directory_url)
            .field("contact_email", &self.contact_email)
            .field("ca_root", &self.ca_root)
            .field("request_timeout", &self.request_timeout)
            .field("order_timeout", &self.order_timeout)
            .finish_non_exhaustive()
    }
}

/// The challenges one issue has presented. Cleaned up by the issue itself;
/// if the issue's future is dropped halfway (a caller's own timeout), the
/// rest is cleaned up by a background task, so no answer stays served.
struct Presented {
    solver: Arc<dyn ChallengeSolver>,
    limit: Duration,
    challenges: Vec<Challenge>,
}

impl Presented {
    async fn clean_up(&mut self) {
        for challenge in self.challenges.drain(..) {
            clean_up(&*self.solver, &challenge, self.limit).await;
        }
    }
}

impl Drop for Presented {
    fn drop(&mut self) {
        if self.challenges.is_empty() {
            return;
        }
        let challenges = std::mem::take(&mut self.challenges);
        let solver = self.solver.clone();
        let limit = self.limit;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    for challenge in &challenges {
                        clean_up(&*solver, challenge, limit).await;
                    }
                });
            }
            Err(_) => tracing::warn!(
                count = challenges.len(),
                "issue dropped outside a runtime: challenges stay presented"
            ),
        }
    }
}

/// Asks the solver to stop answering; a failure is logged, not returned, as
/// the certificate (or the original error) matters more.
async fn clean_up(solver: &dyn ChallengeSolver, challenge: &Challenge, limit: Duration) {
    match timeout(limit, solver.cleanup(challenge)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(domain = %challenge.domain, error = %e, "challenge cleanup failed")
        }
        Err(_) => tracing::warn!(domain = %challenge.domain, "challenge cleanup timed out"),
    }
}

/// `acme-` and 16 hex digits of SHA-256(directory URL, newline, lowercased contact).
fn account_id(directory_url: &str, contact: &str) -> String {
    let digest = Sha256::digest(format!("{directory_url}\n{}", contact.to_lowercase()));
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("acme-{hex}")
}

fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

fn challenge_type_name(kind: &ChallengeType) -> String {
    match kind {
        ChallengeType::Http01 => "http-01".into(),
        ChallengeType::Dns01 => "dns-01".into(),
        ChallengeType::TlsAlpn01 => "tls-alpn-01".into(),
        ChallengeType::DeviceAttest01 => "device-attest-01".into(),
        ChallengeType::Unknown(name) => name.chars().take(40).collect(),
        _ => "unknown".into(),
    }
}

/// A CSR for `domain` signed by `key`, with an empty subject as CAs ignore it.
fn csr_der(domain: &Domain, key: &rcgen::KeyPair) -> Result<Vec<u8>> {
    let cert_error = |e: rcgen::Error| Error::Certificate(format!("CSR for {domain}: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(cert_error)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(key).map_err(cert_error)?;
    Ok(csr.der().to_vec())
}

/// Checks that the CA's leaf is for our key and names `domain`.
fn check_leaf(domain: &Domain, chain_pem: &str, key: &rcgen::KeyPair) -> Result<()> {
    let wrong = |message: String| Error::Acme {
        domain: Some(domain.to_string()),
        step: "certificate",
        message,
    };
    let leaf = leaf_der(chain_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| Error::Certificate(format!("cannot parse the CA's certificate: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(wrong(
            "the CA returned a certificate for another key".into(),
        ));
    }
    let names_domain = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value.general_names.iter().any(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    dns.eq_ignore_ascii_case(domain.as_str())
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    domain.ip().is_some_and(|ip| match ip {
                        std::net::IpAddr::V4(v4) => *bytes == v4.octets(),
                        std::net::IpAddr::V6(v6) => *bytes == v6.octets(),
                    })
                }
                _ => false,
            })
        });
    if !names_domain {
        return Err(wrong(format!(
            "the CA returned a certificate that does not name {domain}"
        )));
    }
    Ok(())
}

fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(problem) if problem.r#type.as_deref() == Some(BAD_NONCE))
}

fn acme_error(domain: Option<&Domain>, step: &'static str, e: &instant_acme::Error) -> Error {
    Error::Acme {
        domain: domain.map(Domain::to_string),
        step,
        message: describe(e),
    }
}

/// An instant-acme error as one readable line: the CA's problem document, or
/// the error and its causes (a refused connection, a TLS failure ...).
fn describe(e: &instant_acme::Error) -> String {
    if let instant_acme::Error::Api(problem) = e {
        return describe_problem(problem);
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

/// `type: detail`, then each subproblem, from an RFC 7807 problem document.
fn describe_problem(problem: &Problem) -> String {
    let mut text = match (&problem.r#type, &problem.detail) {
        (Some(kind), Some(detail)) => format!("{kind}: {detail}"),
        (Some(kind), None) => kind.clone(),
        (None, Some(detail)) => detail.clone(),
        (None, None) => "the CA returned a problem without type or detail".into(),
    };
    for sub in &problem.subproblems {
        text.push_str("; ");
        if let Some(identifier) = &sub.identifier {
            text.push_str(&format!("{}: ", identifier.authorized(false)));
        }
        text.push_str(sub.r#type.as_deref().unwrap_or("problem"));
        if let Some(detail) = &sub.detail {
            text.push_str(&format!(": {detail}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_stable_store_keys_per_ca_and_contact() {
        let a = account_id("https://ca.example/dir", "admin@example.com");
        assert_eq!(a, account_id("https://ca.example/dir", "Admin@Example.com"));
        assert_ne!(
            a,
            account_id("https://other.example/dir", "admin@example.com")
        );
        assert_ne!(a, account_id("https://ca.example/dir", "ops@example.com"));
        assert_eq!(a.len(), "acme-".len() + 16);
        assert!(a
            .strip_prefix("acme-")
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn problems_read_as_type_detail_and_subproblems() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Error creating new order",
            "status": 400,
            "subproblems": [{
                "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                "detail": "blocked by policy",
                "identifier": {"type": "dns", "value": "bad.example.com"}
            }]
        }))
        .unwrap();
        assert_eq!(
            describe_problem(&problem),
            "urn:ietf:params:acme:error:rejectedIdentifier: Error creating new order; \
             bad.example.com: urn:ietf:params:acme:error:rejectedIdentifier: blocked by policy"
        );
        assert!(!is_bad_nonce(&instant_acme::Error::Api(problem)));
        let nonce: Problem =
            serde_json::from_value(serde_json::json!({ "type": BAD_NONCE })).unwrap();
        assert!(is_bad_nonce(&instant_acme::Error::Api(nonce)));
    }
}
