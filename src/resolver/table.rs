//! The names the resolver knows, in shards of immutable maps swapped
//! atomically: a handshake reads a shard without a lock, a writer copies
//! one shard (a few thousand names at most) and swaps it in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::sign::CertifiedKey;

use crate::Domain;

/// Shards of the table; a write copies one. 256 keeps a shard near 4,000
/// names at a million, so adding a name costs tens of microseconds.
const SHARDS: usize = 256;

/// `retry_at` of a name whose source holds no certificate: not asked again
/// until the name changes.
pub(super) const NEVER: u64 = u64::MAX;

/// One known name (or wildcard) and its certificate, when loaded.
///
/// A slot lives as long as its name is known; renewals swap its
/// certificate in place, so they never copy a shard.
pub(super) struct Slot {
    pub(super) domain: Domain,
    /// The certificate, once loaded (or inserted); `None` until then, and
    /// again after the cache evicts it.
    pub(super) cert: ArcSwapOption<CertifiedKey>,
    /// The cache's epoch when last served, for eviction (least recently used first).
    pub(super) last_used: AtomicU64,
    /// A background load is queued or running.
    pub(super) queued: AtomicBool,
    /// Bumped by every insertion and every change of the name in the
    /// store, so a load that read the store before does not overwrite a
    /// newer certificate.
    pub(super) generation: AtomicU64,
    /// Milliseconds of the resolver's clock before which a failed load is
    /// not tried again; [`NEVER`] when the source holds no certificate.
    pub(super) retry_at: AtomicU64,
    /// Inserted by the caller ([`insert_pem`](super::CertResolver::insert_pem)):
    /// never evicted, as no source may hold it.
    pub(super) pinned: AtomicBool,
    /// Counted by the cache.
    pub(super) cached: AtomicBool,
    /// No longer in the table.
    pub(super) removed: AtomicBool,
    /// Serialises the writers of `cert` (insertions, loads, eviction), so a
    /// load never stores over a newer insertion; handshakes never take it.
    pub(super) write: Mutex<()>,
}

impl Slot {
    pub(super) fn new(domain: Domain) -> Arc<Self> {
        Arc::new(Self {
            domain,
            cert: ArcSwapOption::empty(),
            last_used: AtomicU64::new(0),
            queued: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            retry_at: AtomicU64::new(0),
            pinned: AtomicBool::new(false),
            cached: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            write: Mutex::new(()),
        })
    }

    /// Whether a certificate may be served for the name: loaded, or not
    /// known to be missing from the source.
    pub(super) fn may_serve(&self) -> bool {
        self.cert.load().is_some() || self.retry_at.load(Ordering::Relaxed) != NEVER
    }

    /// Records that the name changed: loads started before must not store
    /// what they read, and a missing or failed certificate is asked again.
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.retry_at.store(0, Ordering::Relaxed);
    }
}

/// One shard: exact names, and wildcards by the name they stand under.
#[derive(Clone, Default)]
struct ShardMap {
    exact: HashMap<Arc<str>, Arc<Slot>>,
    wildcard: HashMap<Arc<str>, Arc<Slot>>,
}

#[derive(Default)]
struct Shard {
    map: ArcSwap<ShardMap>,
    /// Serialises the writers of this shard; readers never take it.
    write: Mutex<()>,
}

/// Every known name, sharded.
pub(super) struct Table {
    shards: Box<[Shard]>,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

/// The key of `domain` in its map: the name, or a wildcard's base.
fn key_of(domain: &Domain) -> (&str, bool) {
    match domain.wildcard_base() {
        Some(base) => (base, true),
        None => (domain.as_str(), false),
    }
}

/// FNV-1a: shards only need an even spread, and this is cheaper than the
/// maps' own hash for a short name.
fn shard_of(key: &str) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as usize % SHARDS
}

impl Table {
    /// The slot of the exact name `name` (normalised).
    pub(super) fn exact(&self, name: &str) -> Option<Arc<Slot>> {
        self.shards[shard_of(name)]
            .map
            .load()
            .exact
            .get(name)
            .cloned()
    }

    /// The slot of the wildcard standing under `base`.
    pub(super) fn wildcard(&self, base: &str) -> Option<Arc<Slot>> {
        self.shards[shard_of(base)]
            .map
            .load()
            .wildcard
            .get(base)
            .cloned()
    }

    /// The slot of `domain` (exact or wildcard), if known.
    pub(super) fn get(&self, domain: &Domain) -> Option<Arc<Slot>> {
        match key_of(domain) {
            (base, true) => self.wildcard(base),
            (name, false) => self.exact(name),
        }
    }

    /// The slot of `domain`, added if it is not known.
    pub(super) fn get_or_add(&self, domain: &Domain) -> Arc<Slot> {
        if let Some(slot) = self.get(domain) {
            return slot;
        }
        let (key, wildcard) = key_of(domain);
        self.update(shard_of(key), |map| {
            let map = if wildcard {
                &mut map.wildcard
            } else {
                &mut map.exact
            };
            map.entry(Arc::from(key))
                .or_insert_with(|| Slot::new(domain.clone()))
                .clone()
        })
    }

    /// Forgets `domain`; its slot, if it was known.
    pub(super) fn remove(&self, domain: &Domain) -> Option<Arc<Slot>> {
        self.get(domain)?;
        let (key, wildcard) = key_of(domain);
        let slot = self.update(shard_of(key), |map| {
            if wildcard {
                map.wildcard.remove(key)
            } else {
                map.exact.remove(key)
            }
        })?;
        slot.removed.store(true, Ordering::Release);
        slot.cert.store(None);
        Some(slot)
    }

    /// Makes the known names those of `domains` and of the pinned slots,
    /// keeping the slots (and loaded certificates) of names already known.
    /// Each shard is rebuilt once. Returns the slots of names no longer known.
    pub(super) fn replace(&self, domains: &[Domain]) -> Vec<Arc<Slot>> {
        let mut by_shard: Vec<Vec<&Domain>> = vec![Vec::new(); SHARDS];
        for domain in domains {
            by_shard[shard_of(key_of(domain).0)].push(domain);
        }
        let mut dropped = Vec::new();
        for (index, names) in by_shard.into_iter().enumerate() {
            self.update(index, |map| {
                let mut next = ShardMap::default();
                for domain in names {
                    let (key, wildcard) = key_of(domain);
                    let (old, new) = if wildcard {
                        (&mut map.wildcard, &mut next.wildcard)
                    } else {
                        (&mut map.exact, &mut next.exact)
                    };
                    let slot = old.remove(key).unwrap_or_else(|| Slot::new(domain.clone()));
                    new.insert(Arc::from(key), slot);
                }
                for (old, new) in [
                    (&mut map.exact, &mut next.exact),
                    (&mut map.wildcard, &mut next.wildcard),
                ] {
                    for (key, slot) in old.drain() {
                        if slot.pinned.load(Ordering::Relaxed) {
                            new.insert(key, slot);
                        } else {
                            dropped.push(slot);
                        }
                    }
                }
                *map = next;
            });
        }
        for slot in &dropped {
            slot.removed.store(true, Ordering::Release);
            slot.cert.store(None);
        }
        dropped
    }

    /// Every known slot.
    pub(super) fn slots(&self) -> Vec<Arc<Slot>> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.map.load();
            all.extend(map.exact.values().cloned());
            all.extend(map.wildcard.values().cloned());
        }
        all
    }

    /// How many names are known.
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let map = shard.map.load();
                map.exact.len() + map.wildcard.len()
            })
            .sum()
    }

    /// Copies shard `index`, lets `change` edit the copy, and swaps it in.
    fn update<R>(&self, index: usize, change: impl FnOnce(&mut ShardMap) -> R) -> R {
        let shard = &self.shards[index];
        let _writer = shard.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = ShardMap::clone(&shard.map.load());
        let result = change(&mut next);
        shard.map.store(Arc::new(next));
        result
    }
}
