//! The ACME account: restored from the store, or created once and stored
//! sealed under its id.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use instant_acme::{Account, AccountBuilder, AccountCredentials, ExternalAccountKey, NewAccount};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::time::timeout;
use zeroize::Zeroizing;

use super::{client, problem, AcmeIssuer, BAD_NONCE_ATTEMPTS, EAB_METHOD};
use crate::config::{Naming, Setting};
use crate::store::AccountRecord;
use crate::{Domain, Error, Result};

/// The account in use, with the stored version it came from and a
/// generation that grows each time it is replaced.
pub(super) struct Current {
    account: Account,
    record_version: u64,
    generation: u64,
}

/// An external account binding: the key id and the decoded HMAC key,
/// wiped when dropped and never printed.
pub(super) struct Eab {
    key_id: String,
    hmac_key: Zeroizing<Vec<u8>>,
}

impl Eab {
    /// Checks the key id and decodes the base64url HMAC key (padding
    /// allowed); errors name the setting, never the key.
    pub(super) fn new(
        key_id: &str,
        hmac_key: &str,
        naming: Naming,
        method: &'static str,
    ) -> Result<Self> {
        let key_id = key_id.trim();
        if key_id.is_empty() || key_id.len() > 256 || !key_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::config(
                naming.of(Setting::AcmeEabKid, method),
                "the key id the CA gave is empty, too long or holds spaces or control characters",
            ));
        }
        let trimmed = hmac_key.trim().trim_end_matches('=');
        let decoded = Zeroizing::new(URL_SAFE_NO_PAD.decode(trimmed).map_err(|_| {
            Error::config(
                naming.of(Setting::AcmeEabHmacKey, method),
                "not base64url (the HMAC key as the CA gives it, letters, digits, - and _)",
            )
        })?);
        if decoded.len() < 16 {
            return Err(Error::config(
                naming.of(Setting::AcmeEabHmacKey, method),
                format!(
                    "decodes to {} bytes; a CA's HMAC key has at least 16",
                    decoded.len()
                ),
            ));
        }
        Ok(Self {
            key_id: key_id.to_owned(),
            hmac_key: decoded,
        })
    }

    fn key(&self) -> ExternalAccountKey {
        ExternalAccountKey::new(self.key_id.clone(), &self.hmac_key)
    }
}

impl fmt::Debug for Eab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Eab")
            .field("key_id", &self.key_id)
            .field("hmac_key", &"(redacted)")
            .finish()
    }
}

impl AcmeIssuer {
    /// The account, restored from the store or created once, and its
    /// generation (for [`replace_account`](Self::replace_account)).
    pub(super) async fn account(&self) -> Result<(Account, u64)> {
        let mut current = self.account.lock().await;
        if let Some(current) = &*current {
            return Ok((current.account.clone(), current.generation));
        }
        let (account, record_version) = self.load_or_create_account().await?;
        *current = Some(Current {
            account: account.clone(),
            record_version,
            generation: 0,
        });
        Ok((account, 0))
    }

    /// The CA no longer knows the account of `generation`
    /// (`accountDoesNotExist`: its database was reset, or the account was
    /// deleted): registers a new one and stores it in place of the old one.
    /// Concurrent orders that saw the same refusal share one registration,
    /// and an instance sharing the store that replaced it first is followed.
    pub(super) async fn replace_account(&self, generation: u64) -> Result<(Account, u64)> {
        let mut guard = self.account.lock().await;
        let (record_version, generation) = match &*guard {
            Some(current) if current.generation != generation => {
                return Ok((current.account.clone(), current.generation))
            }
            Some(current) => (current.record_version, current.generation + 1),
            None => (0, generation + 1),
        };
        let stored = self.vault.store().load_account(&self.account_id).await?;
        let (account, record_version) = match stored {
            // Another instance replaced it meanwhile: use theirs.
            Some(record) if record.version != record_version => {
                tracing::info!(account_id = %self.account_id, "the ACME account was replaced by another instance; using it");
                (self.restore_account(&record).await?, record.version)
            }
            _ => {
                tracing::warn!(
                    account_id = %self.account_id,
                    directory = %self.directory_url,
                    "the CA no longer knows the stored ACME account; registering a new one in its place"
                );
                self.register_and_store(record_version).await?
            }
        };
        *guard = Some(Current {
            account: account.clone(),
            record_version,
            generation,
        });
        Ok((account, generation))
    }

    async fn load_or_create_account(&self) -> Result<(Account, u64)> {
        if let Some(record) = self.vault.store().load_account(&self.account_id).await? {
            tracing::debug!(account_id = %self.account_id, "restoring the stored ACME account");
            return Ok((self.restore_account(&record).await?, record.version));
        }
        tracing::info!(
            account_id = %self.account_id,
            directory = %self.directory_url,
            "creating an ACME account"
        );
        self.register_and_store(0).await
    }

    /// Registers a new account and stores it over the stored version
    /// `version` (0: none stored yet). When another instance stored one
    /// first, theirs is used, so every instance signs with the same account.
    async fn register_and_store(&self, version: u64) -> Result<(Account, u64)> {
        let contact = format!("mailto:{}", self.contact);
        let new_account = NewAccount {
            contact: &[&contact],
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let eab = self.eab.as_ref().map(Eab::key);
        let (account, credentials) = retry!(self, "account", None, async {
            self.account_builder()?
                .create(&new_account, self.directory_url.clone(), eab.as_ref())
                .await
        })
        .map_err(|e| self.registration_error(e))?;
        // Written in place into a buffer that is wiped when dropped; the
        // capacity avoids reallocations that would leave unwiped copies.
        let mut plaintext = Zeroizing::new(Vec::with_capacity(4096));
        serde_json::to_writer(&mut *plaintext, &credentials).map_err(|e| Error::Acme {
            domain: None,
            step: "account",
            problem: None,
            message: "cannot serialise the account credentials".into(),
            source: Some(Box::new(e)),
        })?;
        let record = AccountRecord {
            id: self.account_id.clone(),
            version,
            sealed_credentials: self.vault.seal_account(&self.account_id, &plaintext)?,
            created: OffsetDateTime::now_utc(),
        };
        match self.vault.store().save_account(&record).await {
            Ok(stored_version) => {
                tracing::info!(account_id = %self.account_id, account_url = %account.id(), "ACME account created and stored");
                Ok((account, stored_version))
            }
            Err(Error::Conflict { .. }) => {
                tracing::info!(account_id = %self.account_id, "another instance stored the ACME account first; using it");
                let record = self
                    .vault
                    .store()
                    .load_account(&self.account_id)
                    .await?
                    .ok_or_else(|| Error::NotFound {
                        what: "ACME account",
                        key: self.account_id.clone(),
                    })?;
                Ok((self.restore_account(&record).await?, record.version))
            }
            Err(e) => Err(e),
        }
    }

    /// A CA that requires external account binding refuses a registration
    /// without one (`externalAccountRequired`): say which settings are missing.
    fn registration_error(&self, e: Error) -> Error {
        let needs_binding = e
            .acme_problem()
            .is_some_and(|problem| problem.is(crate::error::ProblemKind::ExternalAccountRequired));
        if needs_binding && self.eab.is_none() {
            let (kid, hmac_key) = match self.naming {
                Naming::Builder => (EAB_METHOD, "its HMAC key"),
                Naming::Environment => (Setting::AcmeEabKid.name(), Setting::AcmeEabHmacKey.name()),
            };
            return Error::config(
                self.naming.of(Setting::AcmeEabKid, EAB_METHOD),
                format!(
                    "the CA at {} requires external account binding: set {kid} and \
                     {hmac_key} to the key id and HMAC key it gave you ({e})",
                    self.directory_url
                ),
            );
        }
        e
    }

    async fn restore_account(&self, record: &AccountRecord) -> Result<Account> {
        let plaintext = self.vault.open_account(record)?;
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
            Ok(Err(e)) => Err(problem::acme_error(None, "account", e)),
            Err(_) => Err(Error::Timeout {
                step: "account",
                after: self.request_timeout,
            }),
        }
    }

    /// A builder over the caller's HTTP client, or else certkeeper's own
    /// trusting the configured root or the system's roots.
    fn account_builder(&self) -> std::result::Result<AccountBuilder, instant_acme::Error> {
        client::account_builder(self.http.as_ref(), self.ca_root.as_deref())
    }
}

/// `acme-` and 16 hex digits of SHA-256(directory URL, newline, lowercased contact).
pub(super) fn account_id(directory_url: &str, contact: &str) -> String {
    let digest = Sha256::digest(format!("{directory_url}\n{}", contact.to_lowercase()));
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("acme-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eab_key_is_base64url_and_never_printed() {
        let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
        let eab = Eab::new("kid-1", key, Naming::Builder, EAB_METHOD).unwrap();
        assert_eq!(eab.hmac_key.len(), 48);
        let shown = format!("{eab:?}");
        assert!(
            shown.contains("kid-1") && !shown.contains(&key[..12]),
            "{shown}"
        );
        for (kid, bad_key, setting) in [
            ("kid-1", "not base64url!", Setting::AcmeEabHmacKey),
            ("kid-1", "c2hvcnQ", Setting::AcmeEabHmacKey),
            ("", key, Setting::AcmeEabKid),
            ("two words", key, Setting::AcmeEabKid),
        ] {
            let err = Eab::new(kid, bad_key, Naming::Builder, EAB_METHOD).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == EAB_METHOD),
                "{kid:?}: {err:?}"
            );
            let err = Eab::new(kid, bad_key, Naming::Environment, EAB_METHOD).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == setting.name()),
                "{kid:?}: {err:?}"
            );
            assert!(!err.to_string().contains(&key[..12]));
        }
    }

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
}
