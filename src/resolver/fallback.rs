//! The self-signed certificate served when nothing better is known: no SNI,
//! an unknown name, a local name without a certificate, or a stored one not
//! loaded yet. A browser shows a warning the user can pass, as the
//! reference platform does, instead of a failed handshake.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::certified_key;
use crate::cert::self_signed;
use crate::{Domain, Result};

/// How long the fallback certificate is valid.
const VALIDITY: time::Duration = time::Duration::days(365);
/// When a new one is made, well before the old one expires.
const REGENERATE_AFTER: Duration = Duration::from_secs(300 * 24 * 3600);

struct Current {
    name: Domain,
    key: Arc<CertifiedKey>,
    made: Instant,
}

/// The self-signed fallback, made on first need and kept (a new one only
/// when the fallback name changes, or after 300 days).
#[derive(Default)]
pub(super) struct SelfSignedFallback {
    current: ArcSwapOption<Current>,
    /// Only one caller generates; the others wait for it, once.
    generating: Mutex<()>,
}

impl SelfSignedFallback {
    /// The certificate for `name`, made now if there is none for it yet.
    pub(super) fn get(&self, name: &Domain) -> Result<Arc<CertifiedKey>> {
        if let Some(key) = self.fresh(name) {
            return Ok(key);
        }
        let _one = self.generating.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = self.fresh(name) {
            return Ok(key);
        }
        let now = OffsetDateTime::now_utc();
        let issued = self_signed(name, now - time::Duration::minutes(1), now + VALIDITY)?;
        let key = Arc::new(certified_key(
            name,
            &issued.chain_pem,
            issued.key_pem.as_bytes(),
        )?);
        tracing::debug!(%name, fingerprint = %issued.fingerprint, "self-signed fallback certificate made");
        self.current.store(Some(Arc::new(Current {
            name: name.clone(),
            key: key.clone(),
            made: Instant::now(),
        })));
        Ok(key)
    }

    fn fresh(&self, name: &Domain) -> Option<Arc<CertifiedKey>> {
        let current = self.current.load();
        let current = current.as_ref()?;
        (current.name == *name && current.made.elapsed() < REGENERATE_AFTER)
            .then(|| current.key.clone())
    }
}
