//! The one error type of the crate.

use std::path::PathBuf;
use std::time::Duration;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure certkeeper reports.
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
    #[error("domain {domain} is not the main domain ({main}) nor a custom domain of this server")]
    DomainNotAllowed {
        /// The refused domain.
        domain: String,
        /// The main domain in force, or `none` when none is set yet.
        main: String,
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

    /// A manual issuance could not start or finish because another one for
    /// the same domain is running, or the record changed under it.
    #[error("certificate for {domain} not issued now: {reason}")]
    InProgress {
        /// The domain.
        domain: String,
        /// Why (`already being issued`, `renewed elsewhere meanwhile` ...).
        reason: String,
    },

    /// The requested record does not exist.
    #[error("not found: {0}")]
    NotFound(String),

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
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
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
    #[error("no key configured for key version {version} (set _APP_OPENSSL_KEY_V{version})")]
    MissingKey {
        /// The key version named by the envelope.
        version: u32,
    },

    /// A key is empty, a known placeholder or too weak for production.
    #[error("refusing weak or placeholder key in {name}: {reason}")]
    WeakKey {
        /// The variable that holds the key.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The ACME CA refused or failed a step.
    #[error("ACME {step} failed{}: {message}", domain.as_deref().map(|d| format!(" for {d}")).unwrap_or_default())]
    Acme {
        /// The domain of the order, when there is one.
        domain: Option<String>,
        /// The step (`account`, `new-order`, `challenge`, `finalize` ...).
        step: &'static str,
        /// The CA's problem document or the client's error, readable.
        message: String,
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

    /// A certificate or key could not be generated or parsed.
    #[error("certificate error: {0}")]
    Certificate(String),

    /// A TLS configuration could not be built.
    #[error("TLS error: {0}")]
    Tls(String),
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
}
