//! Key rotation: re-sealing every secret of a store under the newest key.

use std::fmt;

use super::{account_aad, cert_key_aad};
use crate::cipher::{Sealed, SecretCipher};
use crate::store::CertStore;
use crate::{Domain, Error, Result};

/// How many times one record is reloaded and re-sealed when a concurrent
/// writer (a renewal, another instance) wins the compare-and-swap.
pub const MAX_CAS_RETRIES: usize = 5;

/// One sealed value in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealedValue {
    /// The private key of the certificate stored for a domain.
    CertKey(Domain),
    /// The credentials of an ACME account, by account id.
    Account(String),
}

impl fmt::Display for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CertKey(domain) => write!(f, "certificate key of {domain}"),
            Self::Account(id) => write!(f, "ACME account {id}"),
        }
    }
}

/// A value [`rotate`] could not re-seal, and why. It is still readable
/// under the key it was sealed with (or was already unreadable before).
#[derive(Debug)]
pub struct RotationFailure {
    /// The value.
    pub value: SealedValue,
    /// Why: the key it needs is missing ([`Error::MissingKey`]), it does not
    /// open ([`Error::Decrypt`], [`Error::Envelope`]), or the store failed.
    pub error: Error,
}

/// What a [`rotate`] run did.
#[derive(Debug, Default)]
pub struct RotationReport {
    /// The key version every value is being re-sealed under.
    pub target_version: u32,
    /// Values re-sealed by this run.
    pub resealed: usize,
    /// Values found already sealed under `target_version`.
    pub already_current: usize,
    /// Values left as they were, with the reason.
    pub failed: Vec<RotationFailure>,
    /// `true` when [`rotate_batch`] stopped at its limit before visiting
    /// every value: run it again to continue.
    pub stopped_at_limit: bool,
}

impl RotationReport {
    /// Whether every sealed value of the store is now under
    /// `target_version`: nothing failed and nothing is left for another run.
    /// Only then can the older keys be removed.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && !self.stopped_at_limit
    }
}

/// Re-seals every sealed value in `store` under `cipher.sealing_version()`:
/// each certificate's private key (associated data
/// [`cert_key_aad`]`(domain)`) and each ACME account's credentials
/// ([`account_aad`]`(id)`).
///
/// - Values already under the sealing version are left untouched, so a run
///   after a complete one writes nothing.
/// - Each record is written with compare-and-swap; when a concurrent writer
///   changed it in between, it is reloaded and re-sealed again (up to
///   [`MAX_CAS_RETRIES`] times), so the concurrent change is kept.
/// - **Resumable.** Every record is replaced in one atomic save, so a run
///   stopped anywhere (crash, error, [`rotate_batch`] limit) leaves each
///   value sealed under either its old key or the new one, readable while
///   both keys are configured. Running `rotate` again finishes the job.
/// - A value that fails (its key is missing, it does not decrypt, the store
///   refuses the write) is reported in [`RotationReport::failed`] and the
///   run goes on with the next one.
///
/// Records are visited one at a time, to stay gentle on a store that also
/// serves traffic. Fails as a whole only when the store cannot list its
/// records. Nothing secret is logged: only domains, account ids and versions.
///
/// The older key may be removed once a run's report
/// [`is_complete`](RotationReport::is_complete). Check it first with one
/// more run under a keyring that holds only the new key: every value opens
/// (it is already current), and a value still under the old key shows up in
/// [`RotationReport::failed`] as [`Error::MissingKey`] naming that version.
///
/// Run it where the store is open: a `FileStore` folder is locked by the
/// process that has it open, so with the file store either call `rotate`
/// inside the server, over the store it holds
/// (`rotate(&*embedded.store, &*embedded.cipher)`), or stop the server
/// first.
pub async fn rotate(store: &dyn CertStore, cipher: &dyn SecretCipher) -> Result<RotationReport> {
    rotate_batch(store, cipher, usize::MAX).await
}

/// [`rotate`], stopping after `max_resealed` values were re-sealed (values
/// already current do not count), to spread a large rotation over several
/// runs. [`RotationReport::stopped_at_limit`] says whether values remain.
pub async fn rotate_batch(
    store: &dyn CertStore,
    cipher: &dyn SecretCipher,
    max_resealed: usize,
) -> Result<RotationReport> {
    let mut report = RotationReport {
        target_version: cipher.sealing_version(),
        ..RotationReport::default()
    };
    tracing::info!(
        target_version = report.target_version,
        "key rotation started"
    );
    let domains = store.list().await?;
    let accounts = store.list_accounts().await?;
    let values = domains
        .into_iter()
        .map(SealedValue::CertKey)
        .chain(accounts.into_iter().map(SealedValue::Account));
    for value in values {
        if report.resealed >= max_resealed {
            report.stopped_at_limit = true;
            break;
        }
        match reseal(store, cipher, &value, report.target_version).await {
            Ok(Outcome::Resealed { from }) => {
                tracing::debug!(value = %value, from, to = report.target_version, "re-sealed");
                report.resealed += 1;
            }
            Ok(Outcome::Current) => report.already_current += 1,
            Ok(Outcome::Nothing) => {}
            Err(error) => {
                tracing::warn!(value = %value, %error, "could not re-seal; left as it was");
                report.failed.push(RotationFailure { value, error });
            }
        }
    }
    tracing::info!(
        target_version = report.target_version,
        resealed = report.resealed,
        already_current = report.already_current,
        failed = report.failed.len(),
        stopped_at_limit = report.stopped_at_limit,
        "key rotation finished"
    );
    Ok(report)
}

enum Outcome {
    Resealed {
        from: u32,
    },
    Current,
    /// The record is gone or holds no sealed value.
    Nothing,
}

async fn reseal(
    store: &dyn CertStore,
    cipher: &dyn SecretCipher,
    value: &SealedValue,
    target: u32,
) -> Result<Outcome> {
    let mut last_conflict = None;
    for _ in 0..MAX_CAS_RETRIES {
        let saved = match value {
            SealedValue::CertKey(domain) => {
                let Some(mut record) = store.load(domain).await? else {
                    return Ok(Outcome::Nothing);
                };
                let Some(cert) = record.certificate.as_mut() else {
                    return Ok(Outcome::Nothing);
                };
                let aad = cert_key_aad(domain);
                let Some(from) = reseal_value(cipher, &mut cert.sealed_key, &aad, target)? else {
                    return Ok(Outcome::Current);
                };
                store.save(&record).await.map(|_| from)
            }
            SealedValue::Account(id) => {
                let Some(mut record) = store.load_account(id).await? else {
                    return Ok(Outcome::Nothing);
                };
                let aad = account_aad(id);
                let Some(from) =
                    reseal_value(cipher, &mut record.sealed_credentials, &aad, target)?
                else {
                    return Ok(Outcome::Current);
                };
                store.save_account(&record).await.map(|_| from)
            }
        };
        match saved {
            Ok(from) => return Ok(Outcome::Resealed { from }),
            Err(conflict @ Error::Conflict { .. }) => last_conflict = Some(conflict),
            Err(other) => return Err(other),
        }
    }
    Err(last_conflict.unwrap_or_else(|| Error::store("rotation", "compare-and-swap kept failing")))
}

/// Replaces `sealed` by a seal under `target`; `None` when it already is.
/// Returns the version it was under.
fn reseal_value(
    cipher: &dyn SecretCipher,
    sealed: &mut Sealed,
    aad: &[u8],
    target: u32,
) -> Result<Option<u32>> {
    let from = sealed.key_version()?;
    if from == target {
        return Ok(None);
    }
    let plaintext = cipher.open(sealed, aad)?;
    let resealed = cipher.seal(&plaintext, aad)?;
    if resealed.key_version()? != target {
        // A cipher whose seals do not carry its sealing version would make
        // every run re-seal forever.
        return Err(Error::Envelope(
            "the cipher sealed under another version than its sealing version",
        ));
    }
    *sealed = resealed;
    Ok(Some(from))
}
