//! certkeeper: TLS certificates that issue and renew themselves through ACME
//! (Let's Encrypt or any RFC 8555 CA), private keys and secrets encrypted at
//! rest under versioned keys, and console access rules, for any Rust server.
//!
//! # Getting started
//!
//! A server keeps a [`Renewer`] over a [`CertStore`](store::CertStore) and a
//! [`SecretCipher`](cipher::SecretCipher), serves TLS through a
//! [`CertResolver`], and lets the renewer run its maintenance cycle:
//!
//! ```
//! use std::sync::Arc;
//! use certkeeper::cipher::Keyring;
//! use certkeeper::store::{CertStore, MemoryStore};
//! use certkeeper::{CertResolver, Domain, Renewer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> certkeeper::Result<()> {
//! let store = Arc::new(MemoryStore::new()); // FileStore::open(path) keeps them on disk
//! // In a server: Keyring::from_env(true), reading _APP_OPENSSL_KEY_V1, V2 ...
//! let key = "q8Vt2LmZ0rKx7WbN4cYh1PfJ6sDg9AeU3o5iTnRw"; // openssl rand -base64 30
//! let cipher = Arc::new(Keyring::from_keys(true, [(1, key)])?);
//! let resolver = CertResolver::new();
//! let renewer = Renewer::builder(store.clone(), cipher)
//!     .main_domain(Some(Domain::new("localhost")?))
//!     .resolver(resolver.clone())
//!     .build();
//!
//! // localhost gets a self-signed certificate; a public name would go to the
//! // ACME issuer set with `.acme(...)`.
//! renewer.add_domain(&Domain::new("localhost")?).await?;
//! let report = renewer.run_cycle().await?;
//! assert_eq!(report.issued.len(), 1);
//!
//! // The key reached the store sealed; the resolver serves the certificate.
//! let record = store.load(&Domain::new("localhost")?).await?.unwrap();
//! assert!(record.certificate.is_some());
//! assert_eq!(resolver.domains(), vec![Domain::new("localhost")?]);
//! let tls_config = resolver.server_config(&[b"http/1.1"])?; // hand this to tokio-rustls
//! # let _ = tls_config;
//! // In a server: tokio::spawn(async move { renewer.run(interval).await });
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `fs` (default): the local-folder store and `Embedded`.
//! - `aws-lc-rs` (default) or `ring`: the crypto provider of every TLS
//!   configuration, signing key and connection to the CA certkeeper
//!   builds; one is required. Pick the one the application's rustls uses,
//!   so that one provider is compiled in. certkeeper never installs or
//!   reads rustls' process-wide default.
//! - `access` (default): the `access` module: console access rules, client
//!   addresses behind trusted proxies, the login throttle, Argon2id password
//!   hashing (argon2, ipnet).
//! - `dns01` (default): the `Dns01Solver` for wildcard names, RFC 2136
//!   updates signed with TSIG (hickory).
//! - `dns-providers`: DNS-01 through DNS providers' HTTP APIs (Cloudflare,
//!   Route 53, DigitalOcean, Hetzner, OVH, Gandi, deSEC, PowerDNS ...;
//!   `DnsProvider`, over the `dns-update` crate); implies `dns01`.
//! - `postgres`, `mysql`: the SQL stores a cluster shares (sqlx).
//! - `smtp`: the email notifier (lettre).
//! - `metrics`: counters and gauges through the `metrics` facade.
//! - `conformance`: the [`store::conformance`] suite.
//! - `axum`: the `serve` module: the port 80 router (HTTP-01 answers,
//!   redirect to HTTPS) and a TLS listener that `axum::serve` takes.
//! - `cli`: the `certkeeper` command.
//!
//! The resolver, the ACME issuer and the file store alone build with
//! `default-features = false, features = ["fs", "aws-lc-rs"]` (or `ring`),
//! without sqlx, hickory, lettre or argon2.
//!
//! # The parts
//!
//! One module a concept; each uses only the modules listed above it, so
//! there is no import cycle:
//!
//! | module | what it holds | uses |
//! | --- | --- | --- |
//! | [`error`] | the one [`Error`], its [`code`](Error::code)s, the CA's typed problems | `domain` (names in errors) |
//! | [`clock`] | time as a trait, for tests | - |
//! | `provider` (internal) | the crypto provider chosen by feature, for every TLS configuration and signing key | - |
//! | [`domain`] | [`Domain`]: validated, normalised names | `error` |
//! | [`email`] | the one email address rule | `domain`, `error` |
//! | [`cert`] | certificate material: PEM chains, validity, fingerprints, [`IssuerKind`](cert::IssuerKind) | `error` |
//! | [`cipher`] | the [`SecretCipher`](cipher::SecretCipher) trait, sealed envelopes, opened secrets ([`Plaintext`](cipher::Plaintext)), the default [`Keyring`](cipher::Keyring), keys from a KMS or an HSM ([`KeySource`](cipher::KeySource), [`SourcedKeyring`](cipher::SourcedKeyring)) | `error` |
//! | [`store`] | the [`CertStore`](store::CertStore) trait, its records, the built-in stores, the [`conformance`](store::conformance) suite | `cert`, `cipher` (sealed values only), `domain` |
//! | [`vault`] | a store and a cipher together: associated data, sealing, opening, [`rotate`](vault::rotate) | `store`, `cipher`, `cert` |
//! | `report` (internal) | [`CycleReport`]: what a cycle did, shared by the renewer and the events | `store` (passed-over counts), `error` |
//! | [`events`] | the renewer's typed [`Event`](events::Event)s, the bounded queue of each subscriber, the metrics names | `report`, `cert`, `clock` |
//! | [`notify`] | telling the operator: what a notice says, and (feature `smtp`) a [`Subscriber`](events::Subscriber) that emails it | `events`, `email` |
//! | [`resolver`] | serving certificates by SNI with rustls: wildcards, loading on first use from a [`CertSource`](resolver::CertSource), the self-signed fallback, TLS-ALPN-01 certificates | `cert`, `vault`, `provider`, `events` (metrics names) |
//! | [`challenge`] | the [`ChallengeSolver`](challenge::ChallengeSolver) trait, the HTTP-01, TLS-ALPN-01 and DNS-01 (RFC 2136 + TSIG) solvers | `domain`, `resolver` (TLS-ALPN-01 certificates) |
//! | [`issuer`] | the [`Issuer`](issuer::Issuer) trait, the ACME, self-signed and fallback issuers, the CA's budgets | `vault`, `store` (budgets), `challenge`, `cert`, `email`, `clock`, `provider` |
//! | [`renewer`] | the maintenance cycle, its rules, the [`DomainPolicy`](renewer::DomainPolicy) | `vault`, `issuer`, `resolver`, `events`, `report`, `clock` |
//! | `access` (feature `access`) | console access rules, client addresses behind proxies, the login throttle, password hashing | `store` (the root seat), `email`, `clock` |
//! | [`config`] | the only reader of the `_APP_*` environment, typed values | `access`, `cipher`, `challenge` (the DNS-01 solver), `issuer` (its setting checks), `notify` (SMTP settings), `store` (opening the configured one), `email` |
//! | `serve` (feature `axum`) | the port 80 router and the TLS listener for `axum::serve` | `challenge`, `resolver`, `domain` |
//! | `Embedded` | the whole default stack from a [`Config`] | everything |
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "access")]
#[cfg_attr(docsrs, doc(cfg(feature = "access")))]
pub mod access;
pub mod cert;
pub mod challenge;
pub mod cipher;
pub mod clock;
pub mod config;
pub mod domain;
pub mod email;
#[cfg(feature = "fs")]
mod embedded;
pub mod error;
pub mod events;
pub mod issuer;
pub mod notify;
mod provider;
pub mod renewer;
mod report;
pub mod resolver;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod serve;
pub mod store;
pub mod vault;

/// The attribute certkeeper's async traits are written with
/// ([`CertStore`](store::CertStore), [`SecretCipher`](cipher::SecretCipher),
/// [`Issuer`](issuer::Issuer), [`ChallengeSolver`](challenge::ChallengeSolver)
/// ...): implement one with `#[certkeeper::async_trait]`, with no
/// dependency on async-trait of your own.
///
/// ```
/// use certkeeper::async_trait;
/// use certkeeper::challenge::{Challenge, ChallengeKind, ChallengeSolver};
///
/// #[derive(Debug)]
/// struct Manual;
///
/// #[async_trait]
/// impl ChallengeSolver for Manual {
///     fn kind(&self) -> ChallengeKind {
///         ChallengeKind::Http01
///     }
///     async fn present(&self, challenge: &Challenge) -> certkeeper::Result<()> {
///         println!("serve {} at the token's path", challenge.key_authorization);
///         Ok(())
///     }
///     async fn cleanup(&self, _challenge: &Challenge) -> certkeeper::Result<()> {
///         Ok(())
///     }
/// }
/// ```
pub use async_trait::async_trait;
/// The `time` crate, at the version certkeeper's records and trait methods
/// use: a custom store names [`time::OffsetDateTime`] (every date of a
/// record, the `now` of a store method) through it, with no dependency on
/// time of its own (nor a second copy of it, whose types would not match).
pub use time;

pub use clock::{Clock, SystemClock, TestClock};
pub use config::{Config, Setting};
pub use domain::Domain;
#[cfg(feature = "fs")]
#[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
pub use embedded::Embedded;
pub use error::{Error, Result};
pub use renewer::{CycleReport, RenewalPolicy, Renewer, RenewerBuilder};
pub use resolver::CertResolver;

/// The README's code blocks, compiled as doc tests (with the `axum` and
/// `dns-providers` features, which some of them use; CI tests with every
/// feature).
#[cfg(all(doctest, feature = "axum", feature = "dns-providers"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
