//! TLS-ALPN-01 (RFC 8737): the challenge certificates, served only to
//! handshakes that offer the `acme-tls/1` protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation.
pub(crate) const ACME_TLS_1: &[u8] = b"acme-tls/1";

/// A challenge certificate and the token it answers.
#[derive(Clone)]
struct Answer {
    token: String,
    key: Arc<CertifiedKey>,
}

/// The challenge certificates by the server name the CA sends.
#[derive(Default)]
pub(super) struct AlpnChallenges {
    /// A TLS-ALPN-01 solver is attached: server configurations offer `acme-tls/1`.
    pub(super) enabled: AtomicBool,
    answers: ArcSwap<HashMap<Box<str>, Answer>>,
    write: Mutex<()>,
}

impl AlpnChallenges {
    /// The challenge certificate for `server_name`, if one is presented.
    pub(super) fn get(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let answers = self.answers.load();
        let found = answers.get(server_name).or_else(|| {
            answers.get(
                server_name
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
                    .as_str(),
            )
        });
        found.map(|answer| answer.key.clone())
    }

    pub(super) fn present(&self, server_name: &str, token: &str, key: Arc<CertifiedKey>) {
        self.edit(|answers| {
            answers.insert(
                server_name.into(),
                Answer {
                    token: token.to_owned(),
                    key,
                },
            );
        });
    }

    /// Withdraws the certificate of `server_name` if it answers `token`
    /// (another order's newer challenge stays).
    pub(super) fn clear(&self, server_name: &str, token: &str) {
        self.edit(|answers| {
            if answers.get(server_name).is_some_and(|a| a.token == token) {
                answers.remove(server_name);
            }
        });
    }

    pub(super) fn len(&self) -> usize {
        self.answers.load().len()
    }

    fn edit(&self, change: impl FnOnce(&mut HashMap<Box<str>, Answer>)) {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::clone(&self.answers.load());
        change(&mut next);
        self.answers.store(Arc::new(next));
    }

    pub(super) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

/// Whether a client offers `acme-tls/1`.
pub(super) fn offers_acme_tls<'a>(alpn: Option<impl Iterator<Item = &'a [u8]>>) -> bool {
    alpn.is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_1))
}
