//! certkeeper: TLS certificates that issue and renew themselves through ACME,
//! and secrets encrypted at rest, for any Rust server.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// pub mod access;
pub mod challenge;
pub mod cipher;
pub mod clock;
pub mod config;
pub mod domain;
mod error;
pub mod issuer;
pub mod renewer;
pub mod resolver;
pub mod store;

pub use clock::{Clock, SystemClock, TestClock};
pub use config::Config;
pub use domain::Domain;
pub use error::{Error, Result};
pub use renewer::{CycleReport, RenewalPolicy, Renewer, RenewerBuilder};
pub use resolver::CertResolver;
