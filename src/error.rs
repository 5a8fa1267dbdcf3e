//! The one error type of the crate, and the typed parts it carries.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use crate::domain::Domain;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every failure certkeeper reports.
///
/// Match on the variant (or on [`code`](Self::code), a stable string for
/// logs and metrics), never on the message. Variants keep the error that
/// caused them as their [`source`](std::error::Error::source).
///
/// No variant ever carries a private key, a secret or key material: messages
/// are safe to log and to show an operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name is not a valid hostname (or not one certkeeper accepts).
    #[error("invalid domain name {input:?}: {reason}")]
    InvalidDomain {
        /// The offending input, cut to at most 80 characters.
        input: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// An ACME account id or a setting key that the store refuses: it must be
    /// 1 to 128 characters of `a-z`, `0-9`, `.`, `_` and `-`, not starting
    /// with a dot, so that no key can name a path outside the store.
    #[error("invalid {kind} {key:?}: {reason}")]
    InvalidKey {
        /// What the key names (`account id` or `meta key`).
        kind: &'static str,
        /// The offending key, cut to at most 80 characters.
        key: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// The domain is neither the main domain nor a custom domain of this server.
    #[error("domain {domain} is not the main domain ({}) nor a custom domain of this server", main.as_ref().map_or("none", Domain::as_str))]
    DomainNotAllowed {
        /// The refused domain.
        domain: Domain,
        /// The main domain in force, if one is set or learned.
        main: Option<Domain>,
    },

    /// A wildcard name (`*.example.com`) was to be ordered through a
    /// challenge other than DNS-01: CAs validate wildcards only through
    /// DNS-01 (RFC 8555 section 7.1.3; RFC 8737 section 3 for TLS-ALPN-01).
    #[error("{domain} is a wildcard name, which a CA validates only through dns-01, but the issuer answers {challenge} challenges")]
    WildcardNeedsDns01 {
        /// The wildcard name.
        domain: Domain,
        /// The challenge type of the issuer's solver (`http-01`, `tls-alpn-01`).
        challenge: &'static str,
    },

    /// A setting is missing or has a bad value.
    #[error("invalid setting {name}: {reason}")]
    Config {
        /// The setting's name (an environment variable or builder method).
        name: String,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },

    /// A compare-and-swap write lost: the record changed since it was read.
    #[error("conflict on {key}: expected version {expected}, found {found}")]
    Conflict {
        /// The record's key (a domain or an account id).
        key: String,
        /// The version the writer read.
        expected: u64,
        /// The version in the store (0: the record does not exist).
        found: u64,
    },

    /// A revoker was asked to revoke a certificate it did not issue (another
    /// CA's, or a self-signed one): nothing was sent.
    #[error("the certificate of {domain} was issued by {issuer}, which {revoker} cannot revoke")]
    NotRevocable {
        /// The certificate's domain.
        domain: Domain,
        /// The issuer that issued it.
        issuer: String,
        /// The revoker asked.
        revoker: String,
    },

    /// A manual issuance could not start or finish because another one for
    /// the same domain is running, or the record changed under it.
    #[error("certificate for {domain} not issued now: {reason}")]
    InProgress {
        /// The domain.
        domain: Domain,
        /// Why it was left alone.
        reason: SkipReason,
    },

    /// Another instance sharing the store holds a lease (the maintenance
    /// cycle's, say).
    #[error("another instance holds the lease {lease}")]
    LeaseHeld {
        /// The lease.
        lease: String,
    },

    /// The requested record does not exist.
    #[error("{what} {key} not found")]
    NotFound {
        /// What was looked for (`certificate record`, `ACME account` ...).
        what: &'static str,
        /// Its key.
        key: String,
    },

    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why it could not be decoded.
        reason: String,
    },

    /// A storage backend failed.
    #[error("{store} store: {message}")]
    Store {
        /// The backend (`file`, `memory`, `postgres` ...).
        store: &'static str,
        /// What failed.
        message: String,
        /// The backend's own error.
        #[source]
        source: Option<BoxError>,
    },

    /// The store's folder is held by another process (a running server):
    /// a [`FileStore`](crate::store::FileStore) belongs to one process at a
    /// time. Read it with [`FileStore::open_read_only`](crate::store::FileStore::open_read_only),
    /// or do the write inside the process that holds it, or stop that process.
    #[error("{} is in use by another process ({}holds the lock {}): stop that process, or do this work inside it", path.display(), holder.map(|pid| format!("process {pid} ")).unwrap_or_default(), lock.display())]
    StoreInUse {
        /// The store's folder.
        path: PathBuf,
        /// The lock file the holder keeps locked.
        lock: PathBuf,
        /// The holder's process id, as it wrote it into the lock file.
        holder: Option<u32>,
    },

    /// A write was asked of a store opened read-only.
    #[error("the {store} store at {} is open read-only: {operation} refused", path.display())]
    ReadOnly {
        /// The backend (`file`).
        store: &'static str,
        /// The store's location.
        path: PathBuf,
        /// The refused operation (`save`, `delete` ...).
        operation: &'static str,
    },

    /// A filesystem operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A sealed envelope is malformed (truncated, bad header, oversized).
    #[error("malformed sealed envelope: {0}")]
    Envelope(&'static str),

    /// Decryption failed: wrong key, tampered ciphertext or wrong associated data.
    #[error("decryption failed: wrong key, tampered data or data moved from another record")]
    Decrypt,

    /// An envelope was sealed under a key version whose key is not configured.
    #[error("no key configured for key version {version} ({})", missing_key_fix(.variable))]
    MissingKey {
        /// The key version named by the envelope.
        version: u32,
        /// The environment variable that sets that version, when the
        /// keyring was read from the environment (`_APP_OPENSSL_KEY_V3`);
        /// `None` for a keyring built in code.
        variable: Option<String>,
    },

    /// A [`KeySource`](crate::cipher::KeySource) failed (its KMS or HSM
    /// could not be reached, refused, or gave keys a keyring cannot use).
    /// Never carries key material.
    #[error("key source: {message}")]
    KeySource {
        /// What went wrong, readable.
        message: String,
        /// The client's own error.
        #[source]
        source: Option<BoxError>,
    },

    /// A key is empty, a known placeholder or too weak for production.
    #[error("refusing weak or placeholder key in {name}: {reason}")]
    WeakKey {
        /// The variable that holds the key.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The ACME CA refused or failed a step, or could not be reached.
    #[error("ACME {step} failed{}: {message}", domain.as_ref().map(|d| format!(" for {d}")).unwrap_or_default())]
    Acme {
        /// The domain of the order, when there is one.
        domain: Option<Domain>,
        /// The step (`account`, `new-order`, `challenge`, `validation`,
        /// `finalize`, `certificate` ...).
        step: &'static str,
        /// The CA's problem document, when the CA answered with one.
        problem: Option<Box<AcmeProblem>>,
        /// The problem document or the client's error, readable.
        message: String,
        /// The client's own error (a refused connection, a TLS failure ...).
        #[source]
        source: Option<BoxError>,
    },

    /// The CA took the ACME account's new key
    /// ([`AcmeIssuer::rotate_account_key`](crate::issuer::AcmeIssuer::rotate_account_key),
    /// RFC 8555 section 7.3.5), but the store did not take it: the key
    /// still stored is the one the CA now refuses. The issuer that rolled
    /// it over keeps signing with the new key and stores it at its next
    /// use of the account (or at
    /// [`store_pending_account_key`](crate::issuer::AcmeIssuer::store_pending_account_key));
    /// if it stops first, the new key is gone with it, and the account
    /// must be replaced: remove the stored account
    /// ([`CertStore::delete_account`](crate::store::CertStore::delete_account))
    /// and the next issue registers a new one.
    #[error("the CA took a new key for the ACME account {account_id} ({account_url}) but the store did not ({source}); this process signs with it and stores it at its next use of the account")]
    AccountKeyNotStored {
        /// The store id of the account (`acme-` and 16 hex digits).
        account_id: String,
        /// The account's URL at the CA (unchanged by a rollover).
        account_url: String,
        /// Why the store did not take it.
        #[source]
        source: Box<Error>,
    },

    /// The CA gave no answer to a key rollover
    /// ([`AcmeIssuer::rotate_account_key`](crate::issuer::AcmeIssuer::rotate_account_key))
    /// and refuses the old key since: it took a new key whose answer was
    /// lost, so the account can no longer be used. A new account was
    /// registered and stored in its place when `replaced_by` names it;
    /// otherwise the next issue registers one.
    #[error("the CA took a new key for the ACME account {account_id} ({account_url}) but its answer was lost, so the account cannot be used any more; {}", replaced_by.as_ref().map_or_else(|| "the next issue registers a new one".to_owned(), |url| format!("a new account ({url}) was registered in its place")))]
    AccountKeyLost {
        /// The store id of the account.
        account_id: String,
        /// The URL of the account that was lost.
        account_url: String,
        /// The URL of the account registered in its place, if one was.
        replaced_by: Option<String>,
    },

    /// A call did not finish in time.
    #[error("timed out after {}s during {step}", after.as_secs_f64())]
    Timeout {
        /// What was being done.
        step: &'static str,
        /// The time limit.
        after: Duration,
    },

    /// A challenge could not be presented or cleaned up.
    #[error("challenge {kind} for {domain}: {message}")]
    Challenge {
        /// The challenge type.
        kind: &'static str,
        /// The domain.
        domain: String,
        /// What failed.
        message: String,
    },

    /// A DNS-01 record could not be published, seen or removed: at the
    /// zone's primary server (RFC 2136 update with TSIG), through the DNS
    /// provider's API, or at the servers asked for the zone and the record.
    #[error("DNS {step} at {server} failed{}: {problem}: {message}", domain.as_ref().map(|d| format!(" for {d}")).unwrap_or_default())]
    Dns {
        /// The domain of the challenge, when there is one.
        domain: Option<Domain>,
        /// The step (`present`, `propagation`, `cleanup`, `lookup`).
        step: &'static str,
        /// The server or API asked: `192.0.2.53:53`, `cloudflare API`,
        /// `http://127.0.0.1:8081` ...
        server: String,
        /// What went wrong, typed.
        problem: DnsProblem,
        /// The server's answer or the client's error, readable (never a
        /// credential); for [`DnsProblem::NotAuthenticated`], the settings
        /// to fix.
        message: String,
        /// The DNS client's own error.
        #[source]
        source: Option<BoxError>,
    },

    /// A budget of the CA's limits is spent: ordering now would exceed
    /// it, so nothing was sent; it frees up as its window slides.
    #[error("the CA's {budget} budget ({limit} per {}s) is spent{}; left for later", window.as_secs(), domain.as_ref().map(|d| format!(" for {d}")).unwrap_or_default())]
    BudgetSpent {
        /// Which budget.
        budget: Budget,
        /// The name being ordered.
        domain: Option<Domain>,
        /// The budget's limit.
        limit: u32,
        /// Its sliding window.
        window: Duration,
    },

    /// A certificate or key could not be generated, parsed or used.
    #[error("certificate{}: {problem}", domain.as_ref().map(|d| format!(" for {d}")).unwrap_or_default())]
    Certificate {
        /// The domain, when known.
        domain: Option<Domain>,
        /// What is wrong.
        problem: CertProblem,
        /// The parser's or generator's own error.
        #[source]
        source: Option<BoxError>,
    },

    /// A TLS configuration could not be built.
    #[error("TLS configuration: {source}")]
    Tls {
        /// The TLS library's error.
        #[source]
        source: rustls::Error,
    },

    /// A notice could not be sent to the operator (the SMTP server refused
    /// it or could not be reached). Never carries a password.
    #[error("could not send a notice by {channel}: {message}")]
    Notify {
        /// How it was sent (`smtp`).
        channel: &'static str,
        /// What went wrong, readable.
        message: String,
        /// The client's own error.
        #[source]
        source: Option<BoxError>,
    },
}

/// What to do about a missing key version: set its variable, or give the
/// keyring (or its key source) that version.
fn missing_key_fix(variable: &Option<String>) -> String {
    match variable {
        Some(variable) => format!("set {variable}"),
        None => "give the keyring or its key source that version".to_owned(),
    }
}

impl Error {
    /// A [`Error::Store`] without a source.
    pub fn store(store: &'static str, message: impl Into<String>) -> Self {
        Self::Store {
            store,
            message: message.into(),
            source: None,
        }
    }

    /// A [`Error::KeySource`] without a source.
    pub fn key_source(message: impl Into<String>) -> Self {
        Self::KeySource {
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`Error::Config`] for the setting `name`.
    pub fn config(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// A [`Error::Certificate`] with a source.
    pub fn certificate(
        domain: Option<&Domain>,
        problem: CertProblem,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Certificate {
            domain: domain.cloned(),
            problem,
            source: Some(source.into()),
        }
    }

    /// A [`Error::Certificate`] without a source.
    pub fn certificate_problem(domain: Option<&Domain>, problem: CertProblem) -> Self {
        Self::Certificate {
            domain: domain.cloned(),
            problem,
            source: None,
        }
    }

    /// A stable, lowercase code naming the kind of failure, for logs,
    /// metrics and alerts: one per variant, and for [`Error::Acme`] one per
    /// problem type of the CA (`acme_rate_limited`,
    /// `acme_rejected_identifier` ...; `acme_protocol` for an answer that
    /// breaks the protocol, see [`AcmeProtocolError`]; `acme_unreachable`
    /// when the CA gave no problem document otherwise).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidDomain { .. } => "invalid_domain",
            Self::InvalidKey { .. } => "invalid_key",
            Self::DomainNotAllowed { .. } => "domain_not_allowed",
            Self::WildcardNeedsDns01 { .. } => "wildcard_needs_dns01",
            Self::Config { .. } => "config",
            Self::Conflict { .. } => "conflict",
            Self::InProgress { .. } => "in_progress",
            Self::NotRevocable { .. } => "not_revocable",
            Self::NotFound { .. } => "not_found",
            Self::LeaseHeld { .. } => "lease_held",
            Self::Corrupt { .. } => "corrupt",
            Self::Store { .. } => "store",
            Self::Io { .. } => "io",
            Self::StoreInUse { .. } => "store_in_use",
            Self::ReadOnly { .. } => "read_only",
            Self::Envelope(_) => "envelope",
            Self::Decrypt => "decrypt",
            Self::MissingKey { .. } => "missing_key",
            Self::WeakKey { .. } => "weak_key",
            Self::KeySource { .. } => "key_source",
            Self::Acme {
                problem: Some(problem),
                ..
            } if problem.unpause_url().is_some() => "acme_paused",
            Self::Acme {
                problem: Some(problem),
                ..
            } => problem.kind().code(),
            Self::Acme { .. } if self.acme_protocol_error().is_some() => "acme_protocol",
            Self::Acme { .. } => "acme_unreachable",
            Self::AccountKeyNotStored { .. } => "account_key_not_stored",
            Self::AccountKeyLost { .. } => "account_key_lost",
            Self::Timeout { .. } => "timeout",
            Self::Challenge { .. } => "challenge",
            Self::Dns { problem, .. } => problem.code(),
            Self::BudgetSpent { budget, .. } => budget.code(),
            Self::Certificate { .. } => "certificate",
            Self::Tls { .. } => "tls",
            Self::Notify { .. } => "notify",
        }
    }

    /// The CA's answer that broke the protocol, when this is an
    /// [`Error::Acme`] for one (code `acme_protocol`).
    pub fn acme_protocol_error(&self) -> Option<&AcmeProtocolError> {
        match self {
            Self::Acme {
                problem: None,
                source: Some(source),
                ..
            } => source.downcast_ref::<AcmeProtocolError>(),
            _ => None,
        }
    }

    /// Whether the failure is the CA's, not the domain's: the CA could not
    /// be reached or did not answer in time ([`Error::Timeout`], an
    /// [`Error::Acme`] carrying the client's error instead of a problem
    /// document: a refused connection, a TLS failure), answered with a
    /// server error (HTTP 5xx, with or without `Retry-After`,
    /// `serverInternal`) or kept rejecting nonces. Such a failure is not
    /// counted as an attempt of the domain.
    ///
    /// An answer that breaks the protocol ([`AcmeProtocolError`], code
    /// `acme_protocol`) is not an outage: the CA answered, wrongly, for
    /// that order.
    pub fn is_ca_unavailable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            // No problem document, but the client's own error: a refused
            // connection, a TLS failure, a 5xx error page.
            Self::Acme {
                problem: None,
                source: Some(_),
                ..
            } => self.acme_protocol_error().is_none(),
            Self::Acme {
                problem: Some(problem),
                ..
            } => {
                matches!(
                    problem.kind(),
                    ProblemKind::ServerInternal | ProblemKind::BadNonce
                ) || problem.status.is_some_and(|status| status >= 500)
            }
            _ => false,
        }
    }

    /// Whether this is a wrong setting: [`Error::Config`], or a keyring
    /// that cannot open or seal what it must ([`Error::Decrypt`]: a wrong
    /// key, or data sealed under another one; [`Error::MissingKey`]: a key
    /// version that is not configured; [`Error::WeakKey`]), or DNS-01
    /// credentials the DNS server or provider refused ([`Error::Dns`] with
    /// [`DnsProblem::NotAuthenticated`]). The
    /// operator's to fix, not the domain's failure: the renewer counts no
    /// attempt and stops the cycle's ordering
    /// ([`SkipReason::Misconfigured`]).
    pub fn is_settings_error(&self) -> bool {
        matches!(
            self,
            Self::Config { .. }
                | Self::Decrypt
                | Self::MissingKey { .. }
                | Self::WeakKey { .. }
                | Self::Dns {
                    problem: DnsProblem::NotAuthenticated,
                    ..
                }
        )
    }

    /// Whether certkeeper's own storage failed: the store could not be
    /// reached or failed the operation ([`Error::Store`]: a database down,
    /// a deadline passed, a lost connection), the disk did
    /// ([`Error::Io`]), or the store cannot be written now
    /// ([`Error::StoreInUse`], [`Error::ReadOnly`]). Not the domain's
    /// failure: the renewer counts no attempt, and a cycle whose store
    /// keeps failing stops ordering ([`SkipReason::StoreUnavailable`]).
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            Self::Store { .. } | Self::Io { .. } | Self::StoreInUse { .. } | Self::ReadOnly { .. }
        )
    }

    /// Whether the failure is certkeeper's own infrastructure's rather than
    /// the domain's: a store failure ([`is_store_failure`](Self::is_store_failure)),
    /// stored data that cannot be read back ([`Error::Corrupt`], a
    /// malformed sealed [`Error::Envelope`]) or a key source that failed
    /// ([`Error::KeySource`]). The renewer never charges such a failure to
    /// a domain as an attempt.
    pub fn is_infrastructure_failure(&self) -> bool {
        self.is_store_failure()
            || matches!(
                self,
                Self::Corrupt { .. } | Self::Envelope(_) | Self::KeySource { .. }
            )
    }

    /// Whether the renewer leaves the domain's attempts alone for this
    /// failure: the CA unavailable or rate limiting, a wrong setting, or a
    /// failure of certkeeper's own infrastructure (store, disk, keyring).
    pub(crate) fn counts_no_attempt(&self) -> bool {
        self.is_ca_unavailable()
            || self.is_rate_limited()
            || self.is_settings_error()
            || self.is_infrastructure_failure()
    }

    /// Whether the CA answered `rateLimited`: not the domain's failure
    /// either, and a reason to stop ordering for now. A paused name
    /// ([`is_paused`](Self::is_paused)) is not: Let's Encrypt answers it
    /// with the same type, but it is that name's alone.
    pub fn is_rate_limited(&self) -> bool {
        self.acme_problem().is_some_and(|problem| {
            problem.is(ProblemKind::RateLimited) && problem.unpause_url().is_none()
        })
    }

    /// Whether the CA paused ordering for this name: Let's Encrypt does so
    /// for an account's name after a long run of failed validations, and
    /// orders for it are refused until the operator unpauses it on the
    /// page the error names ([`unpause_url`](Self::unpause_url)). Code
    /// `acme_paused`. The renewer puts the name at the attempt limit at
    /// once (it is no longer ordered by the cycle, and
    /// [`Event::GaveUp`](crate::events::Event::GaveUp) carries the page);
    /// manual generation orders it again once it is unpaused.
    pub fn is_paused(&self) -> bool {
        self.unpause_url().is_some()
    }

    /// The CA's page where the operator unpauses a paused name
    /// ([`is_paused`](Self::is_paused)).
    pub fn unpause_url(&self) -> Option<&str> {
        self.acme_problem().and_then(AcmeProblem::unpause_url)
    }

    /// The CA's problem type, when this is an [`Error::Acme`] with a problem document.
    pub fn acme_problem(&self) -> Option<&AcmeProblem> {
        match self {
            Self::Acme { problem, .. } => problem.as_deref(),
            _ => None,
        }
    }
}

/// What is wrong with a certificate or key ([`Error::Certificate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertProblem {
    /// The PEM text holds no certificate.
    NoCertificate,
    /// The PEM text of a certificate cannot be decoded.
    BadPem,
    /// A certificate's DER cannot be parsed.
    Unparsable,
    /// The PEM text of a private key cannot be decoded.
    BadKey,
    /// The private key is of a type the TLS library cannot sign with.
    UnsupportedKey,
    /// The certificate and the private key do not belong together.
    KeyMismatch,
    /// A key pair could not be generated.
    KeyGeneration,
    /// A certificate or certificate request could not be built or signed.
    Generation,
    /// An issuer returned a certificate that is not valid now.
    NotValidNow {
        /// Start of its validity.
        not_before: OffsetDateTime,
        /// End of its validity.
        not_after: OffsetDateTime,
    },
    /// The CA's certificate is for another key than the one requested.
    WrongKey,
    /// The CA's certificate does not name the domain ordered.
    WrongName,
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCertificate => f.write_str("no certificate in the PEM chain"),
            Self::BadPem => f.write_str("the PEM certificate cannot be decoded"),
            Self::Unparsable => f.write_str("the certificate cannot be parsed"),
            Self::BadKey => f.write_str("the private key is not valid PEM"),
            Self::UnsupportedKey => f.write_str("the private key cannot be used for signing"),
            Self::KeyMismatch => f.write_str("the certificate and its private key do not match"),
            Self::KeyGeneration => f.write_str("a key pair could not be generated"),
            Self::Generation => f.write_str("the certificate or request could not be built"),
            Self::NotValidNow {
                not_before,
                not_after,
            } => write!(
                f,
                "the issued certificate is not valid now (valid from {} to {})",
                rfc3339(*not_before),
                rfc3339(*not_after)
            ),
            Self::WrongKey => f.write_str("the CA returned a certificate for another key"),
            Self::WrongName => {
                f.write_str("the CA returned a certificate that does not name the domain")
            }
        }
    }
}

/// Why an issuance was left alone: in a [`CycleReport`](crate::CycleReport)'s
/// skipped list, or in [`Error::InProgress`] for a manual one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// Another issuance of the same domain is running.
    AlreadyBeingIssued,
    /// The record's renew date moved past now (renewed meanwhile).
    NoLongerDue,
    /// The record was removed before the issuance started.
    Removed,
    /// The record was removed while the certificate was being issued.
    RemovedWhileIssuing,
    /// Another instance stored a new certificate meanwhile; it stands.
    RenewedElsewhere,
    /// The record changed under every compare-and-swap try.
    KeptChanging,
    /// The cycle stopped ordering: the CA failed several times in a row
    /// (down, unreachable, timing out, answering 5xx or `serverInternal`).
    CaUnavailable,
    /// The cycle stopped ordering: the CA answered `rateLimited`.
    RateLimited,
    /// The cycle stopped ordering: the account's order budget is spent
    /// ([`Budget::Orders`]); the rest waits until it frees up.
    OrderBudget,
    /// The name failed validation as often as its budget allows
    /// ([`Budget::FailedValidations`]); it waits until that frees up.
    FailedValidationBudget,
    /// The name's registered domain got as many new certificates as its
    /// budget allows ([`Budget::RegisteredDomain`]); the name waits until
    /// that frees up, and the cycle goes on with other names. Not an
    /// attempt.
    RegisteredDomainBudget,
    /// The name got as many certificates for the same set of names as its
    /// budget allows ([`Budget::DuplicateCertificates`]); it waits until
    /// that frees up. Not an attempt.
    DuplicateBudget,
    /// The CA's renewal window (ARI, RFC 9773) was checked again and has
    /// not begun: the renew date moved to the window.
    RenewalWindowAhead,
    /// The cycle stopped ordering: the issuer's settings are wrong
    /// ([`Error::Config`], a profile the CA does not offer, say), or the
    /// keyring cannot open what the store holds ([`Error::is_settings_error`]);
    /// no domain is charged an attempt until they are fixed.
    Misconfigured,
    /// The cycle stopped ordering: certkeeper's own store failed several
    /// times in a row ([`Error::is_store_failure`]: a database down or
    /// unreachable, a disk failing); no domain is charged an attempt, and
    /// the rest waits for the next cycle.
    StoreUnavailable,
}

impl SkipReason {
    /// A stable code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::AlreadyBeingIssued => "already_being_issued",
            Self::NoLongerDue => "no_longer_due",
            Self::Removed => "removed",
            Self::RemovedWhileIssuing => "removed_while_issuing",
            Self::RenewedElsewhere => "renewed_elsewhere",
            Self::KeptChanging => "kept_changing",
            Self::CaUnavailable => "ca_unavailable",
            Self::RateLimited => "rate_limited",
            Self::OrderBudget => "order_budget",
            Self::FailedValidationBudget => "failed_validation_budget",
            Self::RegisteredDomainBudget => "registered_domain_budget",
            Self::DuplicateBudget => "duplicate_budget",
            Self::RenewalWindowAhead => "renewal_window_ahead",
            Self::Misconfigured => "misconfigured",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AlreadyBeingIssued => "already being issued",
            Self::NoLongerDue => "no longer due",
            Self::Removed => "removed before it was issued",
            Self::RemovedWhileIssuing => "removed while it was being issued",
            Self::RenewedElsewhere => "renewed elsewhere meanwhile",
            Self::KeptChanging => "record kept changing while being stored",
            Self::CaUnavailable => "the CA is unavailable; left for the next cycle",
            Self::RateLimited => "the CA asked to slow down; left for the next cycle",
            Self::OrderBudget => "the CA's order budget is spent; left for later",
            Self::FailedValidationBudget => {
                "the name's failed-validation budget is spent; left for later"
            }
            Self::RegisteredDomainBudget => {
                "the registered domain's new-certificate budget is spent; left for later"
            }
            Self::DuplicateBudget => {
                "the duplicate-certificate budget of the name is spent; left for later"
            }
            Self::RenewalWindowAhead => {
                "the CA's renewal window was checked again and has not begun"
            }
            Self::Misconfigured => "the issuer's settings are wrong; left for the next cycle",
            Self::StoreUnavailable => "the store kept failing; left for the next cycle",
        })
    }
}

/// A CA's problem document (RFC 7807, RFC 8555 section 6.7), as carried by
/// [`Error::Acme`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeProblem {
    /// The problem type URI (`urn:ietf:params:acme:error:rateLimited` ...).
    pub type_uri: Option<String>,
    /// The CA's explanation.
    pub detail: Option<String>,
    /// The HTTP status the CA answered with.
    pub status: Option<u16>,
    /// Problems per identifier, for a compound problem.
    pub subproblems: Vec<AcmeSubproblem>,
}

/// One identifier's problem inside a compound [`AcmeProblem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSubproblem {
    /// The identifier (a domain or an IP address), when given.
    pub identifier: Option<String>,
    /// The problem type URI.
    pub type_uri: Option<String>,
    /// The CA's explanation.
    pub detail: Option<String>,
}

impl AcmeProblem {
    /// The problem type, parsed.
    pub fn kind(&self) -> ProblemKind {
        ProblemKind::from_uri(self.type_uri.as_deref())
    }

    /// The page where the operator unpauses the name, when the CA paused
    /// ordering for it: Let's Encrypt's refusal reads "Your account is
    /// temporarily prevented from requesting certificates for `<names>` ...
    /// Please visit: `<url>`" (type `rateLimited`, or `unauthorized` in
    /// older versions).
    pub fn unpause_url(&self) -> Option<&str> {
        const PAUSED: &str = "temporarily prevented from requesting certificates";
        let detail = self.detail.as_deref()?;
        if !detail.contains(PAUSED) {
            return None;
        }
        let start = detail.find("https://")?;
        let url = detail[start..]
            .split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
            .next()?;
        Some(url.trim_end_matches(['.', ',', ')']))
    }

    /// Whether the problem, or one of its subproblems, is of `kind`.
    pub fn is(&self, kind: ProblemKind) -> bool {
        self.kind() == kind
            || self
                .subproblems
                .iter()
                .any(|s| ProblemKind::from_uri(s.type_uri.as_deref()) == kind)
    }
}

impl fmt::Display for AcmeProblem {
    /// `type: detail`, then each subproblem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.type_uri, &self.detail) {
            (Some(kind), Some(detail)) => write!(f, "{kind}: {detail}")?,
            (Some(kind), None) => f.write_str(kind)?,
            (None, Some(detail)) => f.write_str(detail)?,
            (None, None) => f.write_str("the CA returned a problem without type or detail")?,
        }
        for sub in &self.subproblems {
            f.write_str("; ")?;
            if let Some(identifier) = &sub.identifier {
                write!(f, "{identifier}: ")?;
            }
            f.write_str(sub.type_uri.as_deref().unwrap_or("problem"))?;
            if let Some(detail) = &sub.detail {
                write!(f, ": {detail}")?;
            }
        }
        Ok(())
    }
}

/// The ACME problem types of RFC 8555 section 6.7
/// (`urn:ietf:params:acme:error:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// `accountDoesNotExist`
    AccountDoesNotExist,
    /// `alreadyRevoked`
    AlreadyRevoked,
    /// `alreadyReplaced` (RFC 9773): the certificate an order names in
    /// `replaces` was replaced already.
    AlreadyReplaced,
    /// `badCSR`
    BadCsr,
    /// `badNonce`
    BadNonce,
    /// `badPublicKey`
    BadPublicKey,
    /// `badRevocationReason`
    BadRevocationReason,
    /// `badSignatureAlgorithm`
    BadSignatureAlgorithm,
    /// `caa`
    Caa,
    /// `compound`
    Compound,
    /// `connection`
    Connection,
    /// `dns`
    Dns,
    /// `externalAccountRequired`
    ExternalAccountRequired,
    /// `incorrectResponse`
    IncorrectResponse,
    /// `invalidContact`
    InvalidContact,
    /// `malformed`
    Malformed,
    /// `orderNotReady`
    OrderNotReady,
    /// `rateLimited`
    RateLimited,
    /// `rejectedIdentifier`
    RejectedIdentifier,
    /// `serverInternal`
    ServerInternal,
    /// `tls`
    Tls,
    /// `unauthorized`
    Unauthorized,
    /// `unsupportedContact`
    UnsupportedContact,
    /// `unsupportedIdentifier`
    UnsupportedIdentifier,
    /// `userActionRequired`
    UserActionRequired,
    /// Any other type, or none.
    Other,
}

/// Every named kind with its RFC 8555 name and its stable code.
const PROBLEM_KINDS: &[(ProblemKind, &str, &str)] = &[
    (
        ProblemKind::AccountDoesNotExist,
        "accountDoesNotExist",
        "acme_account_does_not_exist",
    ),
    (
        ProblemKind::AlreadyRevoked,
        "alreadyRevoked",
        "acme_already_revoked",
    ),
    (
        ProblemKind::AlreadyReplaced,
        "alreadyReplaced",
        "acme_already_replaced",
    ),
    (ProblemKind::BadCsr, "badCSR", "acme_bad_csr"),
    (ProblemKind::BadNonce, "badNonce", "acme_bad_nonce"),
    (
        ProblemKind::BadPublicKey,
        "badPublicKey",
        "acme_bad_public_key",
    ),
    (
        ProblemKind::BadRevocationReason,
        "badRevocationReason",
        "acme_bad_revocation_reason",
    ),
    (
        ProblemKind::BadSignatureAlgorithm,
        "badSignatureAlgorithm",
        "acme_bad_signature_algorithm",
    ),
    (ProblemKind::Caa, "caa", "acme_caa"),
    (ProblemKind::Compound, "compound", "acme_compound"),
    (ProblemKind::Connection, "connection", "acme_connection"),
    (ProblemKind::Dns, "dns", "acme_dns"),
    (
        ProblemKind::ExternalAccountRequired,
        "externalAccountRequired",
        "acme_external_account_required",
    ),
    (
        ProblemKind::IncorrectResponse,
        "incorrectResponse",
        "acme_incorrect_response",
    ),
    (
        ProblemKind::InvalidContact,
        "invalidContact",
        "acme_invalid_contact",
    ),
    (ProblemKind::Malformed, "malformed", "acme_malformed"),
    (
        ProblemKind::OrderNotReady,
        "orderNotReady",
        "acme_order_not_ready",
    ),
    (ProblemKind::RateLimited, "rateLimited", "acme_rate_limited"),
    (
        ProblemKind::RejectedIdentifier,
        "rejectedIdentifier",
        "acme_rejected_identifier",
    ),
    (
        ProblemKind::ServerInternal,
        "serverInternal",
        "acme_server_internal",
    ),
    (ProblemKind::Tls, "tls", "acme_tls"),
    (
        ProblemKind::Unauthorized,
        "unauthorized",
        "acme_unauthorized",
    ),
    (
        ProblemKind::UnsupportedContact,
        "unsupportedContact",
        "acme_unsupported_contact",
    ),
    (
        ProblemKind::UnsupportedIdentifier,
        "unsupportedIdentifier",
        "acme_unsupported_identifier",
    ),
    (
        ProblemKind::UserActionRequired,
        "userActionRequired",
        "acme_user_action_required",
    ),
];

impl ProblemKind {
    /// The prefix of every RFC 8555 problem type.
    pub const URN_PREFIX: &'static str = "urn:ietf:params:acme:error:";

    /// The kind named by a problem type URI; [`Other`](Self::Other) for
    /// anything else.
    pub fn from_uri(uri: Option<&str>) -> Self {
        uri.and_then(|u| u.strip_prefix(Self::URN_PREFIX))
            .and_then(|name| PROBLEM_KINDS.iter().find(|(_, n, _)| *n == name))
            .map_or(Self::Other, |(kind, _, _)| *kind)
    }

    /// The RFC 8555 name (`rateLimited` ...), `None` for [`Other`](Self::Other).
    pub fn name(self) -> Option<&'static str> {
        PROBLEM_KINDS
            .iter()
            .find(|(kind, _, _)| *kind == self)
            .map(|(_, name, _)| *name)
    }

    /// The stable code [`Error::code`] gives an ACME error of this kind.
    pub fn code(self) -> &'static str {
        PROBLEM_KINDS
            .iter()
            .find(|(kind, _, _)| *kind == self)
            .map_or("acme_other", |(_, _, code)| *code)
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_name_is_told_by_the_detail_whatever_the_type() {
        let url = "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=abc.def.ghi";
        let detail = format!(
            "Your account is temporarily prevented from requesting certificates for \
             www.example.com and possibly others. Please visit: {url}"
        );
        for type_uri in [
            "urn:ietf:params:acme:error:rateLimited",
            "urn:ietf:params:acme:error:unauthorized",
        ] {
            let problem = AcmeProblem {
                type_uri: Some(type_uri.into()),
                detail: Some(detail.clone()),
                status: Some(429),
                subproblems: Vec::new(),
            };
            assert_eq!(problem.unpause_url(), Some(url));
            let error = Error::Acme {
                domain: None,
                step: "new-order",
                problem: Some(Box::new(problem)),
                message: String::new(),
                source: None,
            };
            assert!(error.is_paused());
            assert!(!error.is_rate_limited());
            assert!(!error.counts_no_attempt());
            assert_eq!(error.code(), "acme_paused");
        }
        let limited = AcmeProblem {
            type_uri: Some("urn:ietf:params:acme:error:rateLimited".into()),
            detail: Some("too many certificates (50) already issued for \"example.com\"".into()),
            status: Some(429),
            subproblems: Vec::new(),
        };
        assert_eq!(limited.unpause_url(), None);
    }

    #[test]
    fn problem_kinds_round_trip_their_uri_and_have_distinct_codes() {
        let mut codes = std::collections::HashSet::new();
        for (kind, name, code) in PROBLEM_KINDS {
            let uri = format!("{}{name}", ProblemKind::URN_PREFIX);
            assert_eq!(ProblemKind::from_uri(Some(&uri)), *kind);
            assert_eq!(kind.name(), Some(*name));
            assert!(codes.insert(*code), "{code} twice");
        }
        assert_eq!(ProblemKind::from_uri(None), ProblemKind::Other);
        assert_eq!(
            ProblemKind::from_uri(Some("urn:ietf:params:acme:error:somethingNew")),
            ProblemKind::Other
        );
        assert_eq!(ProblemKind::Other.code(), "acme_other");
    }

    #[test]
    fn an_acme_error_is_coded_by_its_problem_type() {
        let acme = |type_uri: Option<&str>| Error::Acme {
            domain: None,
            step: "new-order",
            problem: type_uri.map(|t| {
                Box::new(AcmeProblem {
                    type_uri: Some(t.into()),
                    detail: None,
                    status: Some(429),
                    subproblems: Vec::new(),
                })
            }),
            message: String::new(),
            source: None,
        };
        assert_eq!(
            acme(Some("urn:ietf:params:acme:error:rateLimited")).code(),
            "acme_rate_limited"
        );
        assert_eq!(
            acme(Some("urn:ietf:params:acme:error:rejectedIdentifier")).code(),
            "acme_rejected_identifier"
        );
        assert_eq!(acme(None).code(), "acme_unreachable");
        assert_eq!(Error::Decrypt.code(), "decrypt");
    }

    #[test]
    fn failures_of_the_crates_own_infrastructure_are_never_attempts() {
        let io = Error::io("/tmp/x", std::io::Error::other("disk full"));
        for e in [Error::store("postgres", "connection refused"), io] {
            assert!(e.is_store_failure() && e.is_infrastructure_failure(), "{e}");
            assert!(e.counts_no_attempt(), "{e}");
        }
        let corrupt = Error::Corrupt {
            key: "a.example.com".into(),
            reason: "truncated".into(),
        };
        assert!(!corrupt.is_store_failure() && corrupt.is_infrastructure_failure());
        for e in [
            Error::Decrypt,
            Error::MissingKey {
                version: 2,
                variable: None,
            },
        ] {
            assert!(e.is_settings_error() && e.counts_no_attempt(), "{e}");
        }
        // The domain's own failures still count.
        let refused = Error::Acme {
            domain: None,
            step: "validation",
            problem: Some(Box::new(AcmeProblem {
                type_uri: Some("urn:ietf:params:acme:error:unauthorized".into()),
                detail: None,
                status: Some(403),
                subproblems: Vec::new(),
            })),
            message: String::new(),
            source: None,
        };
        assert!(!refused.counts_no_attempt());
        assert!(!Error::Envelope("bad header").is_store_failure());
    }

    #[test]
    fn compound_problems_name_their_subproblems() {
        let problem = AcmeProblem {
            type_uri: Some("urn:ietf:params:acme:error:compound".into()),
            detail: Some("several".into()),
            status: Some(403),
            subproblems: vec![AcmeSubproblem {
                identifier: Some("a.example.com".into()),
                type_uri: Some("urn:ietf:params:acme:error:caa".into()),
                detail: Some("CAA forbids".into()),
            }],
        };
        assert!(problem.is(ProblemKind::Caa));
        assert!(!problem.is(ProblemKind::Dns));
        assert_eq!(
            problem.to_string(),
            "urn:ietf:params:acme:error:compound: several; a.example.com: \
             urn:ietf:params:acme:error:caa: CAA forbids"
        );
    }
}

/// What went wrong with a DNS-01 record ([`Error::Dns`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsProblem {
    /// The server could not be reached or did not answer in time.
    Unreachable,
    /// The credentials were refused: the server did not accept the TSIG
    /// signature (unknown key, wrong secret or algorithm, clocks too far
    /// apart: `NOTAUTH`, or an answer whose signature did not verify), or
    /// the provider's API answered 401 or 403. A settings error
    /// ([`Error::is_settings_error`]): the message names the settings.
    NotAuthenticated,
    /// The server refused the update (`REFUSED`: the key may not update
    /// that name, or updates are off).
    Refused,
    /// The name is not in the configured zone (or the server is not
    /// authoritative for it: `NOTZONE`).
    NotInZone,
    /// The record was added but the server did not answer with it within
    /// the propagation timeout.
    NotVisible,
    /// Any other failure or answer code.
    Failed,
}

impl DnsProblem {
    /// The stable code of an [`Error::Dns`] with this problem.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unreachable => "dns_unreachable",
            Self::NotAuthenticated => "dns_not_authenticated",
            Self::Refused => "dns_refused",
            Self::NotInZone => "dns_not_in_zone",
            Self::NotVisible => "dns_not_visible",
            Self::Failed => "dns_failed",
        }
    }
}

impl fmt::Display for DnsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unreachable => "server unreachable",
            Self::NotAuthenticated => "credentials refused",
            Self::Refused => "update refused",
            Self::NotInZone => "name not in the zone",
            Self::NotVisible => "record not visible in time",
            Self::Failed => "DNS failure",
        })
    }
}

/// A budget of the CA's limits ([`Error::BudgetSpent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Budget {
    /// New orders per account (Let's Encrypt: 300 per 3 hours).
    Orders,
    /// Failed validations per name (Let's Encrypt: 5 per hour).
    FailedValidations,
    /// New certificates per registered domain (Let's Encrypt: 50 per 7
    /// days; renewals are exempt).
    RegisteredDomain,
    /// Certificates for the same set of names (Let's Encrypt: 5 per 7
    /// days; renewals sent with `replaces` are exempt).
    DuplicateCertificates,
}

impl Budget {
    /// The stable code of an [`Error::BudgetSpent`] for this budget.
    pub fn code(self) -> &'static str {
        match self {
            Self::Orders => "budget_orders",
            Self::FailedValidations => "budget_failed_validations",
            Self::RegisteredDomain => "budget_registered_domain",
            Self::DuplicateCertificates => "budget_duplicate_certificates",
        }
    }

    /// The reason a cycle reports for a name left for later.
    pub fn skip_reason(self) -> SkipReason {
        match self {
            Self::Orders => SkipReason::OrderBudget,
            Self::FailedValidations => SkipReason::FailedValidationBudget,
            Self::RegisteredDomain => SkipReason::RegisteredDomainBudget,
            Self::DuplicateCertificates => SkipReason::DuplicateBudget,
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Orders => "order",
            Self::FailedValidations => "failed-validation",
            Self::RegisteredDomain => "registered-domain certificate",
            Self::DuplicateCertificates => "duplicate-certificate",
        })
    }
}

/// An answer of the ACME CA that breaks the protocol (RFC 8555): JSON that
/// does not decode, a required field or header missing, a field that does
/// not match the request, an unexpected status, an error page instead of a
/// problem document. It is the source of an [`Error::Acme`] without a
/// problem document, whose [`code`](Error::code) is then `acme_protocol`
/// (see [`Error::acme_protocol_error`]).
///
/// The CA answered, wrongly, for that order: it is not an outage
/// ([`Error::is_ca_unavailable`] is false), so a maintenance cycle goes on
/// with its other names, and the renewer counts it as a failed attempt of
/// the domain, so a name the CA keeps answering wrongly is given up after
/// [`max_attempts`](crate::RenewalPolicy::max_attempts) like any failure
/// instead of being ordered again every cycle.
#[derive(Debug)]
#[non_exhaustive]
pub struct AcmeProtocolError {
    /// The HTTP status of the answer, when it was an error status without
    /// a problem document.
    pub status: Option<u16>,
    /// What is wrong with the answer, readable.
    pub reason: String,
    source: Option<BoxError>,
}

impl AcmeProtocolError {
    /// A protocol error: what is wrong, the HTTP status when it was an
    /// error status, and the client's error about it.
    pub fn new(reason: impl Into<String>, status: Option<u16>, source: Option<BoxError>) -> Self {
        Self {
            status,
            reason: reason.into(),
            source,
        }
    }
}

impl fmt::Display for AcmeProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the CA's answer breaks the ACME protocol: {}",
            self.reason
        )
    }
}

impl std::error::Error for AcmeProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
