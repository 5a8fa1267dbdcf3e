//! The ACME account: restored from the store, or created once and stored
//! sealed under its id.

use instant_acme::{Account, AccountBuilder, AccountCredentials, NewAccount};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::time::timeout;
use zeroize::Zeroizing;

use super::{client, problem, AcmeIssuer, BAD_NONCE_ATTEMPTS};
use crate::store::AccountRecord;
use crate::{Domain, Error, Result};

impl AcmeIssuer {
    /// The account, restored from the store or created once.
    pub(super) async fn account(&self) -> Result<&Account> {
        self.account
            .get_or_try_init(|| self.load_or_create_account())
            .await
    }

    async fn load_or_create_account(&self) -> Result<Account> {
        if let Some(record) = self.vault.store().load_account(&self.account_id).await? {
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
            problem: None,
            message: "cannot serialise the account credentials".into(),
            source: Some(Box::new(e)),
        })?;
        let record = AccountRecord {
            id: self.account_id.clone(),
            version: 0,
            sealed_credentials: self.vault.seal_account(&self.account_id, &plaintext)?,
            created: OffsetDateTime::now_utc(),
        };
        match self.vault.store().save_account(&record).await {
            Ok(_) => {
                tracing::info!(account_id = %self.account_id, account_url = %account.id(), "ACME account created and stored");
                Ok(account)
            }
            // Another instance sharing the store created it first: use theirs,
            // so every instance signs with the same account.
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
                self.restore_account(&record).await
            }
            Err(e) => Err(e),
        }
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

    /// A client trusting the configured root, or else the system's roots.
    fn account_builder(&self) -> std::result::Result<AccountBuilder, instant_acme::Error> {
        client::account_builder(self.ca_root.as_deref())
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
