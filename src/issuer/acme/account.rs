//! The ACME account: restored from the store, or created once and stored
//! sealed under its id; its key rolled over (RFC 8555 section 7.3.5) and
//! the new one stored in place of the old one.

use std::fmt;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, ExternalAccountKey, Key, NewAccount,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::time::timeout;
use zeroize::Zeroizing;

use super::{client, problem, AcmeIssuer, BAD_NONCE_ATTEMPTS, EAB_METHOD};
use crate::config::{Naming, Setting};
use crate::error::ProblemKind;
use crate::store::AccountRecord;
use crate::{Domain, Error, Result};

/// The step named in the errors of a key rollover.
const KEY_CHANGE: &str = "key-change";

/// The first pause before storing a rolled-over key again after the store
/// failed; it doubles up to [`STORE_MAX_PAUSE`].
const STORE_FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two tries to store a rolled-over key.
const STORE_MAX_PAUSE: Duration = Duration::from_secs(4);
/// How long a rollover keeps trying to store the new key before it
/// reports [`Error::AccountKeyNotStored`].
const STORE_WINDOW: Duration = Duration::from_secs(15);
/// Saves of a rolled-over key that a changing record may refuse (each
/// refusal read and understood: a re-seal, our own save) before giving up.
const STORE_PASSES: usize = 4;
/// Reads of the store after the CA refused a rollover, for the new key of
/// an instance that rolled it over first, and the pause between them.
const WINNER_READS: usize = 4;
const WINNER_PAUSE: Duration = Duration::from_millis(250);

/// The account in use, with the stored version it came from and a
/// generation that grows each time it is replaced or its key rolled over.
pub(super) struct Current {
    account: Account,
    record_version: u64,
    generation: u64,
    /// New credentials the CA took that the store did not, yet.
    unsaved: Option<Unsaved>,
}

/// Credentials of a rolled-over key waiting to be stored over the stored
/// version `version`, with what tells a save of ours, a re-seal of the old
/// credentials and another instance's account apart.
struct Unsaved {
    /// The serialised new credentials, wiped when dropped.
    plaintext: Zeroizing<Vec<u8>>,
    /// The stored version they replace (compare-and-swap).
    version: u64,
    /// When the account was created (kept in the record).
    created: OffsetDateTime,
    /// The account's URL at the CA.
    account_url: String,
    /// PKCS#8 of the key rolled over from, and of the new key.
    old_key: Zeroizing<Vec<u8>>,
    new_key: Zeroizing<Vec<u8>>,
    /// What is reported once they are stored (its version then set).
    summary: AccountKeyRollover,
}

/// What storing rolled-over credentials came to.
enum Stored {
    /// Stored (or found stored, a save whose answer was lost), at this version.
    Ours(u64),
    /// The store holds another account, or another key the CA takes: left alone.
    Theirs(AccountRecord),
}

/// The outcome of a key-change request.
enum KeyChange {
    /// The CA took the new key.
    Taken(Account, AccountCredentials),
    /// The CA refused it: nothing changed.
    Refused(Error),
    /// No answer (an outage, a timeout, a 5xx): the CA may have taken it.
    Unknown(Error),
}

/// Stored credentials, opened: the account URL and the key (PKCS#8).
struct Opened {
    credentials: AccountCredentials,
    account_url: String,
    key: Zeroizing<Vec<u8>>,
}

/// What a key rollover ([`AcmeIssuer::rotate_account_key`]) did. Nothing
/// in it is secret: the thumbprints (RFC 7638) are digests of the public
/// keys, the ones key authorizations carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccountKeyRollover {
    /// The store id of the account (`acme-` and 16 hex digits).
    pub account_id: String,
    /// The account's URL at the CA, the same before and after.
    pub account_url: String,
    /// The thumbprint of the key the CA now refuses.
    pub old_key_thumbprint: String,
    /// The thumbprint of the key the account now signs with.
    pub new_key_thumbprint: String,
    /// The stored version of the account record that holds the new key.
    pub version: u64,
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
        if current.as_ref().is_some_and(|c| c.unsaved.is_some()) {
            // A rolled-over key the store did not take: stored now if it can be.
            if let Err(e) = self.flush_unsaved(&mut current).await {
                tracing::warn!(account_id = %self.account_id, error = %e, code = e.code(), "the rolled-over ACME account key is still not stored; signing with it");
            }
        }
        if let Some(current) = &*current {
            return Ok((current.account.clone(), current.generation));
        }
        let (account, record_version) = self.load_or_create_account().await?;
        *current = Some(Current {
            account: account.clone(),
            record_version,
            generation: 0,
            unsaved: None,
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
            unsaved: None,
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
        let plaintext = serialise(&credentials, "account")?;
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
        let opened = self.open_stored(record)?;
        self.restore_credentials(opened.credentials).await
    }

    /// The stored credentials of `record`, opened and decoded.
    fn open_stored(&self, record: &AccountRecord) -> Result<Opened> {
        /// The account URL of serialised credentials.
        #[derive(Deserialize)]
        struct Url {
            id: String,
        }
        let plaintext = self.vault.open_account(record)?;
        // The decoder's message could quote bytes of the account key: say
        // only where decoding stopped.
        let corrupt = |e: serde_json::Error| Error::Corrupt {
            key: self.account_id.clone(),
            reason: format!(
                "stored ACME account credentials do not decode (at line {}, column {})",
                e.line(),
                e.column()
            ),
        };
        let credentials: AccountCredentials =
            serde_json::from_slice(&plaintext).map_err(corrupt)?;
        let Url { id } = serde_json::from_slice(&plaintext).map_err(corrupt)?;
        let key = Zeroizing::new(credentials.private_key().secret_pkcs8_der().to_vec());
        Ok(Opened {
            credentials,
            account_url: id,
            key,
        })
    }

    /// The account of `credentials`, ready to sign.
    async fn restore_credentials(&self, credentials: AccountCredentials) -> Result<Account> {
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

impl AcmeIssuer {
    /// Rolls the ACME account's key over (RFC 8555 section 7.3.5): a new
    /// key is generated, the CA is asked to take it in place of the
    /// stored one (instant-acme's `Account::update_key`, signed with
    /// both), and the new credentials, sealed by the cipher, are stored
    /// over the stored account with compare-and-swap at the version read.
    /// The account (its URL, its orders, its certificates) stays the same;
    /// the CA refuses the old key from then on. This issuer signs with the
    /// new key at once; an instance sharing the store switches to it when
    /// the CA first refuses its old key (it reads the store again and
    /// sends the order again). This issuer's orders wait while the
    /// rollover runs; an order already in flight here or there while the
    /// key changes may fail once.
    ///
    /// The stored account is the one rolled over (read anew, not this
    /// issuer's copy), so two instances rolling it over at once cannot
    /// both win: the CA takes one new key, and only the instance whose key
    /// it took can store it. When the key of an earlier rollover is still
    /// waiting to be stored ([`Error::AccountKeyNotStored`]), storing it is
    /// this call's answer, and nothing is sent to the CA.
    ///
    /// # Errors
    ///
    /// - [`Error::NotFound`]: no account is stored yet (the first issue
    ///   registers one); nothing was sent.
    /// - [`Error::Conflict`]: another instance changed the stored account
    ///   meanwhile (rolled its key over first, or replaced it); this issuer
    ///   follows what is stored. Nothing of ours was stored.
    /// - [`Error::Acme`] or [`Error::Timeout`] (step `key-change`): the CA
    ///   refused the new key (a CA without `keyChange` in its directory
    ///   is an `acme_protocol` error), or did not answer and still takes
    ///   the old key: nothing changed. (When the CA cannot be asked
    ///   whether it still takes the old key either, the outcome is
    ///   unknown and a warning says so.)
    /// - [`Error::AccountKeyNotStored`]: the CA took the new key, but the
    ///   store failed for up to 15 s of tries (pauses from 0.25 s doubling
    ///   to 4 s). This issuer keeps signing with the new key and stores it at
    ///   its next use of the account, or at
    ///   [`store_pending_account_key`](Self::store_pending_account_key);
    ///   until then the stored key is refused by the CA, so keep this
    ///   process running until it is stored.
    /// - [`Error::AccountKeyLost`]: the CA gave no answer in twice the
    ///   request timeout but refuses the old key since, so it took a new
    ///   key whose answer never came: a new account was registered in
    ///   place of the lost one (when the CA allowed it).
    /// - A store or cipher failure before anything was sent to the CA.
    ///
    /// Never logs nor returns a key: only account ids, URLs and key
    /// thumbprints.
    pub async fn rotate_account_key(&self) -> Result<AccountKeyRollover> {
        let mut guard = self.account.lock().await;
        // New credentials an earlier rollover could not store: storing them
        // completes that rollover, which is this one's answer.
        if guard.as_ref().is_some_and(|c| c.unsaved.is_some()) {
            return self.flush_unsaved_patiently(&mut guard).await;
        }
        let record = self
            .vault
            .store()
            .load_account(&self.account_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "ACME account",
                key: self.account_id.clone(),
            })?;
        let generation = guard.as_ref().map_or(0, |c| c.generation) + 1;
        let opened = self.open_stored(&record)?;
        let (account_url, old_key) = (opened.account_url.clone(), opened.key.clone());
        let old = self.restore_credentials(opened.credentials).await?;
        let old_key_thumbprint = old.key_thumbprint().to_owned();
        tracing::info!(account_id = %self.account_id, %account_url, "rolling the ACME account key over");
        let (account, credentials) = match self.change_key(old).await {
            KeyChange::Taken(account, credentials) => (account, credentials),
            KeyChange::Refused(e) => {
                // An instance that rolled it over first is seen in the store.
                if let Some(conflict) = self.changed_since(&record).await {
                    *guard = None;
                    return Err(conflict);
                }
                tracing::info!(account_id = %self.account_id, error = %e, code = e.code(), "the CA refused the new account key; nothing changed");
                return Err(e);
            }
            KeyChange::Unknown(e) => {
                return self
                    .after_unanswered_change(&mut guard, &record, &old_key, &account_url, e)
                    .await
            }
        };
        tracing::info!(account_id = %self.account_id, %account_url, new_key_thumbprint = %account.key_thumbprint(), "the CA took the new account key; storing it");
        let mut unsaved = Unsaved {
            plaintext: serialise(&credentials, KEY_CHANGE)?,
            version: record.version,
            created: record.created,
            account_url: account_url.clone(),
            old_key,
            new_key: Zeroizing::new(credentials.private_key().secret_pkcs8_der().to_vec()),
            summary: AccountKeyRollover {
                account_id: self.account_id.clone(),
                account_url: account_url.clone(),
                old_key_thumbprint,
                new_key_thumbprint: account.key_thumbprint().to_owned(),
                version: 0,
            },
        };
        drop(credentials);
        match self.store_patiently(&mut unsaved).await {
            Ok(Stored::Ours(version)) => {
                let rollover = AccountKeyRollover {
                    version,
                    ..unsaved.summary.clone()
                };
                *guard = Some(Current {
                    account,
                    record_version: version,
                    generation,
                    unsaved: None,
                });
                tracing::info!(account_id = %self.account_id, version, "the new ACME account key is stored; the old one is refused by the CA");
                Ok(rollover)
            }
            Ok(Stored::Theirs(stored)) => {
                tracing::warn!(account_id = %self.account_id, %account_url, "the stored ACME account changed meanwhile and the CA holds its key: ours is dropped");
                *guard = None;
                Err(Error::Conflict {
                    key: self.account_id.clone(),
                    expected: record.version,
                    found: stored.version,
                })
            }
            Err(e) => {
                tracing::error!(account_id = %self.account_id, %account_url, error = %e, "the CA took the new ACME account key but the store did not: signing with it here and storing it at the next use; the stored key is refused until then");
                *guard = Some(Current {
                    account,
                    record_version: record.version,
                    generation,
                    unsaved: Some(unsaved),
                });
                Err(Error::AccountKeyNotStored {
                    account_id: self.account_id.clone(),
                    account_url,
                    source: Box::new(e),
                })
            }
        }
    }

    /// Stores the credentials of a rolled-over key that the store did not
    /// take ([`Error::AccountKeyNotStored`]), with one try: what that
    /// rollover did once they are stored, `Ok(None)` when none are waiting. Every use of the
    /// account (an issue, a revocation) tries too; this is for a caller
    /// that wants it stored now, such as the `certkeeper
    /// rotate-account-key` command before it exits.
    ///
    /// Fails with [`Error::AccountKeyNotStored`] while the store fails (the
    /// credentials stay waiting), or with [`Error::Conflict`] when the store
    /// holds another account or another key the CA takes meanwhile (they
    /// are then dropped, and the stored account is used).
    pub async fn store_pending_account_key(&self) -> Result<Option<AccountKeyRollover>> {
        let mut guard = self.account.lock().await;
        if guard.as_ref().is_none_or(|c| c.unsaved.is_none()) {
            return Ok(None);
        }
        self.flush_unsaved(&mut guard).await.map(Some)
    }

    /// A request signed by the account of `generation` was refused in a
    /// way a key the CA no longer takes is (`malformed`, `unauthorized`):
    /// when the stored account changed since it was read (another
    /// instance rolled its key over, or replaced it), this issuer switches
    /// to it, and the caller sends the request again with it. `None`: the
    /// stored account is the one in use, and the refusal stands.
    pub(super) async fn follow_stored_account(
        &self,
        generation: u64,
    ) -> Result<Option<(Account, u64)>> {
        let mut guard = self.account.lock().await;
        let (record_version, next) = match &*guard {
            Some(current) if current.generation != generation => {
                return Ok(Some((current.account.clone(), current.generation)))
            }
            // Our own key is the newest, just not stored yet.
            Some(current) if current.unsaved.is_some() => return Ok(None),
            Some(current) => (Some(current.record_version), current.generation + 1),
            None => (None, generation + 1),
        };
        let Some(record) = self.vault.store().load_account(&self.account_id).await? else {
            return Ok(None);
        };
        if Some(record.version) == record_version {
            return Ok(None);
        }
        // A re-seal (an encryption key rotation) changes the version too:
        // the same key then, refused again, and the refusal stands.
        let opened = self.open_stored(&record)?;
        tracing::info!(account_id = %self.account_id, account_url = %opened.account_url, "the stored ACME account changed (its key rolled over, or replaced by another instance); using it");
        let account = self.restore_credentials(opened.credentials).await?;
        *guard = Some(Current {
            account: account.clone(),
            record_version: record.version,
            generation: next,
            unsaved: None,
        });
        Ok(Some((account, next)))
    }

    /// Asks the CA to take a new key for `account`. The request runs in a
    /// task of its own that is not dropped at the request timeout, but
    /// waited for up to as long again: a CA that takes the key late still
    /// hands it over. Only then is it given up, as unanswered.
    async fn change_key(&self, account: Account) -> KeyChange {
        let mut task = tokio::spawn(async move {
            let mut attempt = 1;
            loop {
                let mut rolled = account.clone();
                match rolled.update_key().await {
                    Ok(credentials) => break Ok((rolled, credentials)),
                    // Refused for its nonce, so not acted upon: safe to send again.
                    Err(e) if problem::is_bad_nonce(&e) && attempt < BAD_NONCE_ATTEMPTS => {
                        attempt += 1
                    }
                    Err(e) => break Err(e),
                }
            }
        });
        let joined = match timeout(self.request_timeout, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!(account_id = %self.account_id, after = ?self.request_timeout, "the CA has not answered the key change yet; waiting as long again, since it may take the new key");
                match timeout(self.request_timeout, &mut task).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        task.abort();
                        return KeyChange::Unknown(Error::Timeout {
                            step: KEY_CHANGE,
                            after: self.request_timeout * 2,
                        });
                    }
                }
            }
        };
        match joined {
            Ok(Ok((account, credentials))) => KeyChange::Taken(account, credentials),
            Ok(Err(e)) => {
                let e = problem::acme_error(None, KEY_CHANGE, e);
                if e.is_ca_unavailable() {
                    KeyChange::Unknown(e)
                } else {
                    KeyChange::Refused(e)
                }
            }
            Err(join) => KeyChange::Unknown(Error::Acme {
                domain: None,
                step: KEY_CHANGE,
                problem: None,
                message: format!("the key-change request stopped: {join}"),
                source: None,
            }),
        }
    }

    /// After the CA refused a rollover: whether the stored account changed
    /// since `record` was read (an instance that rolled it over first
    /// stores its key right after the CA took it, so the store is read a
    /// few times); the conflict to report if it did.
    async fn changed_since(&self, record: &AccountRecord) -> Option<Error> {
        for read in 0..WINNER_READS {
            if read > 0 {
                tokio::time::sleep(WINNER_PAUSE).await;
            }
            match self.vault.store().load_account(&self.account_id).await {
                Ok(Some(stored)) if stored.version != record.version => {
                    tracing::info!(account_id = %self.account_id, "another instance changed the ACME account meanwhile; following it");
                    return Some(Error::Conflict {
                        key: self.account_id.clone(),
                        expected: record.version,
                        found: stored.version,
                    });
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// The CA did not answer a key change (`e`): asks it whether it still
    /// takes the old key. If it does, nothing changed and `e` is
    /// returned. If it knows no account with the old key any more, it took
    /// a new key whose answer was lost: a new account is registered in
    /// place of the stored one ([`Error::AccountKeyLost`]).
    async fn after_unanswered_change(
        &self,
        guard: &mut tokio::sync::MutexGuard<'_, Option<Current>>,
        record: &AccountRecord,
        old_key: &[u8],
        account_url: &str,
        e: Error,
    ) -> Result<AccountKeyRollover> {
        match self.key_is_live(old_key, account_url).await {
            Ok(true) => {
                tracing::info!(account_id = %self.account_id, error = %e, "the CA did not answer the key change and still takes the old key: nothing changed");
                Err(e)
            }
            Ok(false) => {
                tracing::error!(account_id = %self.account_id, %account_url, error = %e, "the CA did not answer the key change and no longer takes the old key: it took a key whose answer was lost; registering a new account in its place");
                let replaced_by = match self.register_and_store(record.version).await {
                    Ok((account, version)) => {
                        let url = account.id().to_owned();
                        let generation = guard.as_ref().map_or(0, |c| c.generation) + 1;
                        **guard = Some(Current {
                            account,
                            record_version: version,
                            generation,
                            unsaved: None,
                        });
                        Some(url)
                    }
                    Err(registration) => {
                        tracing::warn!(account_id = %self.account_id, error = %registration, "could not register a new account; the next issue tries again");
                        **guard = None;
                        None
                    }
                };
                Err(Error::AccountKeyLost {
                    account_id: self.account_id.clone(),
                    account_url: account_url.to_owned(),
                    replaced_by,
                })
            }
            Err(probe) => {
                tracing::warn!(account_id = %self.account_id, error = %e, probe = %probe, "the CA did not answer the key change, nor whether it still takes the old key: if orders are refused with it, remove the stored account so that a new one is registered");
                Err(e)
            }
        }
    }

    /// Whether the CA's account for the key `pkcs8` is the one at
    /// `account_url`: a new-account request with `onlyReturnExisting`
    /// signed by that key (RFC 8555 section 7.3.1), which creates nothing.
    async fn key_is_live(&self, pkcs8: &[u8], account_url: &str) -> Result<bool> {
        let found = retry!(self, KEY_CHANGE, None, async {
            let key = Key::from_pkcs8_der(PrivatePkcs8KeyDer::from(pkcs8))?;
            let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
            self.account_builder()?
                .from_key((key, der), self.directory_url.clone())
                .await
        });
        match found {
            Ok((account, _)) => Ok(account.id() == account_url),
            Err(e)
                if e.acme_problem()
                    .is_some_and(|p| p.is(ProblemKind::AccountDoesNotExist)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// One try to store the waiting credentials of `guard`: the issuer's
    /// stored version moves on when stored; the credentials are dropped
    /// (and the stored account used) when the store holds another.
    async fn flush_unsaved(
        &self,
        guard: &mut tokio::sync::MutexGuard<'_, Option<Current>>,
    ) -> Result<AccountKeyRollover> {
        let Some(unsaved) = guard.as_mut().and_then(|c| c.unsaved.as_mut()) else {
            return Err(Error::NotFound {
                what: "ACME account key waiting to be stored",
                key: self.account_id.clone(),
            });
        };
        let expected = unsaved.version;
        match self.store_rolled(unsaved).await {
            Ok(Stored::Ours(version)) => {
                tracing::info!(account_id = %self.account_id, version, "the rolled-over ACME account key is stored now");
                let rollover = AccountKeyRollover {
                    version,
                    ..unsaved.summary.clone()
                };
                if let Some(current) = guard.as_mut() {
                    current.record_version = version;
                    current.unsaved = None;
                }
                Ok(rollover)
            }
            Ok(Stored::Theirs(stored)) => {
                tracing::warn!(account_id = %self.account_id, "the stored ACME account changed and the CA holds its key: the rolled-over key waiting to be stored is dropped");
                **guard = None;
                Err(Error::Conflict {
                    key: self.account_id.clone(),
                    expected,
                    found: stored.version,
                })
            }
            Err(e) => Err(Error::AccountKeyNotStored {
                account_id: self.account_id.clone(),
                account_url: unsaved.account_url.clone(),
                source: Box::new(e),
            }),
        }
    }

    /// [`flush_unsaved`](Self::flush_unsaved), tried again for
    /// [`STORE_WINDOW`] while the store fails.
    async fn flush_unsaved_patiently(
        &self,
        guard: &mut tokio::sync::MutexGuard<'_, Option<Current>>,
    ) -> Result<AccountKeyRollover> {
        let started = Instant::now();
        let mut pause = STORE_FIRST_PAUSE;
        loop {
            match self.flush_unsaved(guard).await {
                Err(Error::AccountKeyNotStored { source, .. })
                    if transient(&source) && started.elapsed() + pause < STORE_WINDOW =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(STORE_MAX_PAUSE);
                }
                other => return other,
            }
        }
    }

    /// [`store_rolled`](Self::store_rolled), tried again for
    /// [`STORE_WINDOW`] while the store (or the CA asked about a
    /// conflict) fails.
    async fn store_patiently(&self, unsaved: &mut Unsaved) -> Result<Stored> {
        let started = Instant::now();
        let mut pause = STORE_FIRST_PAUSE;
        loop {
            match self.store_rolled(unsaved).await {
                Err(e) if transient(&e) && started.elapsed() + pause < STORE_WINDOW => {
                    tracing::warn!(account_id = %self.account_id, error = %e, retry_in = ?pause, "could not store the new ACME account key; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(STORE_MAX_PAUSE);
                }
                other => return other,
            }
        }
    }

    /// Stores rolled-over credentials with compare-and-swap over the
    /// version they replace. A refused swap is read and understood: our
    /// own save whose answer was lost is ours; the old credentials
    /// re-sealed (an encryption key rotation) are replaced at their new
    /// version; another key of the same account is replaced only when the
    /// CA takes ours (it then refuses theirs); another account is left
    /// alone ([`Stored::Theirs`]).
    async fn store_rolled(&self, unsaved: &mut Unsaved) -> Result<Stored> {
        let mut found = unsaved.version;
        for _ in 0..STORE_PASSES {
            let record = AccountRecord {
                id: self.account_id.clone(),
                version: unsaved.version,
                sealed_credentials: self
                    .vault
                    .seal_account(&self.account_id, &unsaved.plaintext)?,
                created: unsaved.created,
            };
            match self.vault.store().save_account(&record).await {
                Ok(version) => return Ok(Stored::Ours(version)),
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            let Some(stored) = self.vault.store().load_account(&self.account_id).await? else {
                // Removed meanwhile: the CA's account is ours, store it anew.
                unsaved.version = 0;
                continue;
            };
            found = stored.version;
            let opened = self.open_stored(&stored)?;
            if opened.account_url != unsaved.account_url {
                return Ok(Stored::Theirs(stored));
            }
            if *opened.key == *unsaved.new_key {
                return Ok(Stored::Ours(stored.version));
            }
            if *opened.key == *unsaved.old_key
                || self
                    .key_is_live(&unsaved.new_key, &unsaved.account_url)
                    .await?
            {
                unsaved.version = stored.version;
                continue;
            }
            return Ok(Stored::Theirs(stored));
        }
        Err(Error::Conflict {
            key: self.account_id.clone(),
            expected: unsaved.version,
            found,
        })
    }
}

/// Whether a failure to store a rolled-over key may pass: the store
/// failed, a key source did, or the CA asked about a conflict did not answer.
fn transient(e: &Error) -> bool {
    e.is_store_failure() || e.is_ca_unavailable() || matches!(e, Error::KeySource { .. })
}

/// Whether the CA's refusal of a signed request may be for a key it no
/// longer takes: a JWS it cannot verify is `malformed` at Pebble and
/// Boulder, `unauthorized` at some CAs.
pub(super) fn may_be_stale_key(e: &Error) -> bool {
    e.acme_problem().is_some_and(|problem| {
        problem.is(ProblemKind::Malformed) || problem.is(ProblemKind::Unauthorized)
    })
}

/// `credentials` serialised into a buffer that is wiped when dropped; the
/// capacity avoids reallocations that would leave unwiped copies.
fn serialise(credentials: &AccountCredentials, step: &'static str) -> Result<Zeroizing<Vec<u8>>> {
    let mut plaintext = Zeroizing::new(Vec::with_capacity(4096));
    serde_json::to_writer(&mut *plaintext, credentials).map_err(|e| Error::Acme {
        domain: None,
        step,
        problem: None,
        message: "cannot serialise the account credentials".into(),
        source: Some(Box::new(e)),
    })?;
    Ok(plaintext)
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
