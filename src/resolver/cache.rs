//! Certificates loaded from their source on first use (or by a background
//! preload), at most `capacity` of them in memory, least recently served
//! evicted first; identical material parsed once.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{debug, warn};

use super::table::{Slot, NEVER};
use super::{certified_key, Shared};
use crate::cipher::Plaintext;
use crate::vault::Vault;
use crate::{Domain, Error, Result};

/// Time limit of one read from the source.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before a certificate that failed to load is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A certificate's chain (PEM, leaf first) and its private key (PKCS#8 PEM,
/// in clear, wiped when dropped).
pub type SourcedCert = (String, Plaintext);

/// Where the resolver loads a stored certificate from when a name is first
/// served. A [`Renewer`](crate::Renewer) gives its resolver its [`Vault`]
/// (the store, opening keys with the cipher).
///
/// # Contract
/// - `fetch` returns the certificate in force for `domain`, or `None` when
///   there is none (no record, or a record without a certificate yet).
/// - It may be called concurrently, for the same domain too.
/// - It must not log or keep the private key.
#[async_trait]
pub trait CertSource: Debug + Send + Sync + 'static {
    /// `domain`'s certificate and private key, if one is stored.
    async fn fetch(&self, domain: &Domain) -> Result<Option<SourcedCert>>;
}

#[async_trait]
impl CertSource for Vault {
    async fn fetch(&self, domain: &Domain) -> Result<Option<SourcedCert>> {
        let Some(record) = self.store().load(domain).await? else {
            return Ok(None);
        };
        let Some(cert) = record.certificate else {
            return Ok(None);
        };
        let key = self.open_cert_key(domain, &cert)?;
        Ok(Some((cert.chain_pem, key)))
    }
}

/// The loaded certificates that came from the source, for eviction.
pub(super) struct Cache {
    pub(super) capacity: usize,
    /// Advanced at every certificate loaded; a slot remembers the epoch of
    /// its last handshake.
    epoch: AtomicU64,
    members: Mutex<Vec<Arc<Slot>>>,
    count: AtomicUsize,
    intern: Intern,
}

impl Cache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            epoch: AtomicU64::new(1),
            members: Mutex::default(),
            count: AtomicUsize::new(0),
            intern: Intern::new(),
        }
    }

    /// Marks `slot` as served now. A relaxed store, only when the epoch moved.
    pub(super) fn touch(&self, slot: &Slot) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        if slot.last_used.load(Ordering::Relaxed) != epoch {
            slot.last_used.store(epoch, Ordering::Relaxed);
        }
    }

    /// How many certificates from the source are in memory.
    pub(super) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts `slot`, just given a certificate, and evicts the least
    /// recently served past the capacity. Pinned slots are not counted.
    pub(super) fn admit(&self, slot: &Arc<Slot>) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        slot.last_used.store(epoch, Ordering::Relaxed);
        if slot.pinned.load(Ordering::Relaxed) || slot.cached.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.push(slot.clone());
        if members.len() > self.capacity {
            self.evict(&mut members);
        }
        self.count.store(members.len(), Ordering::Relaxed);
    }

    /// Drops members that left (removed, pinned, emptied), then the least
    /// recently served down to nine tenths of the capacity, so a sweep
    /// (a sort) happens once per tenth of the capacity loaded.
    fn evict(&self, members: &mut Vec<Arc<Slot>>) {
        members.retain(|slot| {
            let keep = !slot.removed.load(Ordering::Acquire)
                && !slot.pinned.load(Ordering::Relaxed)
                && slot.cert.load().is_some();
            if !keep {
                slot.cached.store(false, Ordering::Release);
            }
            keep
        });
        if members.len() <= self.capacity {
            return;
        }
        let keep = self.capacity - self.capacity / 10;
        members.sort_by_key(|slot| std::cmp::Reverse(slot.last_used.load(Ordering::Relaxed)));
        let evicted = members.len() - keep;
        for slot in members.drain(keep..) {
            let _writer = slot.write.lock().unwrap_or_else(|e| e.into_inner());
            if !slot.pinned.load(Ordering::Relaxed) {
                slot.cert.store(None);
            }
            slot.cached.store(false, Ordering::Release);
        }
        debug!(
            evicted,
            kept = members.len(),
            "least recently served certificates evicted"
        );
    }

    /// The parsed form of a chain and key, shared with every other name
    /// that holds the very same material (a certificate covering several
    /// names is parsed once).
    pub(super) fn certified(
        &self,
        domain: &Domain,
        chain_pem: &str,
        key_pem: &[u8],
    ) -> Result<Arc<CertifiedKey>> {
        self.intern.get_or_parse(domain, chain_pem, key_pem)
    }
}

/// Parsed certificates by a salted digest of their chain and key; weak,
/// so material no name holds any longer is freed.
struct Intern {
    /// Random per process: the digest of a key is no stable identifier of it.
    salt: [u8; 32],
    map: Mutex<HashMap<[u8; 32], Weak<CertifiedKey>>>,
}

impl Intern {
    fn new() -> Self {
        use chacha20poly1305::aead::rand_core::RngCore;
        let mut salt = [0u8; 32];
        chacha20poly1305::aead::OsRng.fill_bytes(&mut salt);
        Self {
            salt,
            map: Mutex::default(),
        }
    }

    fn get_or_parse(
        &self,
        domain: &Domain,
        chain_pem: &str,
        key_pem: &[u8],
    ) -> Result<Arc<CertifiedKey>> {
        let mut digest = Sha256::new();
        digest.update(self.salt);
        digest.update((chain_pem.len() as u64).to_be_bytes());
        digest.update(chain_pem.as_bytes());
        digest.update(key_pem);
        let digest: [u8; 32] = digest.finalize().into();
        let lock = || self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = lock().get(&digest).and_then(Weak::upgrade) {
            return Ok(found);
        }
        let parsed = Arc::new(certified_key(domain, chain_pem, key_pem)?);
        let mut map = lock();
        // Forget freed material once the map has doubled since the last sweep.
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, weak| weak.strong_count() > 0);
        }
        map.insert(digest, Arc::downgrade(&parsed));
        Ok(parsed)
    }
}

/// The background loader's queues: names a handshake missed first, then
/// the preload.
pub(super) struct Loader {
    misses: UnboundedSender<Arc<Slot>>,
    preload: UnboundedSender<Arc<Slot>>,
}

impl Loader {
    /// Starts the loader task on the current runtime.
    pub(super) fn spawn(shared: Weak<Shared>) -> Self {
        let (misses, missed) = unbounded_channel();
        let (preload, preloaded) = unbounded_channel();
        tokio::spawn(run(shared, missed, preloaded));
        Self { misses, preload }
    }

    pub(super) fn miss(&self, slot: Arc<Slot>) -> bool {
        self.misses.send(slot).is_ok()
    }

    pub(super) fn preload(&self, slot: Arc<Slot>) -> bool {
        self.preload.send(slot).is_ok()
    }
}

/// Loads one queued name at a time, misses first. Ends when the resolver
/// is dropped (its senders close the queues).
async fn run(
    shared: Weak<Shared>,
    mut missed: UnboundedReceiver<Arc<Slot>>,
    mut preloaded: UnboundedReceiver<Arc<Slot>>,
) {
    loop {
        let (slot, preload) = tokio::select! {
            biased;
            slot = missed.recv() => (slot, false),
            slot = preloaded.recv() => (slot, true),
        };
        let (Some(slot), Some(shared)) = (slot, shared.upgrade()) else {
            return;
        };
        // A preload never evicts what handshakes use.
        if !(preload && shared.cache.len() >= shared.cache.capacity) {
            shared.load(&slot).await;
        }
        slot.queued.store(false, Ordering::Release);
    }
}

impl Shared {
    /// Milliseconds since the resolver was made.
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Loads `slot`'s certificate from the source unless it is loaded,
    /// known to be missing, or failed less than [`RETRY_AFTER`] ago.
    /// Returns whether it is loaded afterwards.
    pub(super) async fn load(&self, slot: &Arc<Slot>) -> bool {
        if slot.cert.load().is_some() {
            return true;
        }
        if slot.removed.load(Ordering::Acquire)
            || self.now_ms() < slot.retry_at.load(Ordering::Relaxed)
        {
            return false;
        }
        let Some(source) = self.source() else {
            return false;
        };
        let generation = slot.generation.load(Ordering::Acquire);
        let domain = &slot.domain;
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, source.fetch(domain)).await {
            Ok(fetched) => fetched,
            Err(_) => Err(Error::Timeout {
                step: "load certificate",
                after: FETCH_TIMEOUT,
            }),
        };
        let parsed = match fetched {
            Ok(Some((chain, key))) => self.cache.certified(domain, &chain, &key).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let _writer = slot.write.lock().unwrap_or_else(|e| e.into_inner());
        if slot.generation.load(Ordering::Acquire) != generation
            || slot.removed.load(Ordering::Acquire)
        {
            // Changed meanwhile: what was read may be older than what is there.
            return slot.cert.load().is_some();
        }
        match parsed {
            Ok(Some(key)) => {
                slot.cert.store(Some(key));
                drop(_writer);
                self.cache.admit(slot);
                true
            }
            Ok(None) => {
                slot.retry_at.store(NEVER, Ordering::Relaxed);
                false
            }
            Err(e) => {
                warn!(%domain, error = %e, code = e.code(), "stored certificate could not be loaded for serving; the fallback is served");
                slot.retry_at.store(
                    self.now_ms() + RETRY_AFTER.as_millis() as u64,
                    Ordering::Relaxed,
                );
                false
            }
        }
    }
}
