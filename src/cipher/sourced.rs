//! [`SourcedKeyring`]: a keyring whose versions come from a [`KeySource`]
//! and are refreshed while it runs.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use super::{KeySource, Keyring, Plaintext, Sealed, SecretCipher};
use crate::{Error, Result};

/// A [`SecretCipher`] whose key versions come from a [`KeySource`] (a KMS
/// unwrapping data keys, say) and are fetched again by
/// [`refresh`](Self::refresh), while seals and opens go on.
///
/// It holds the current [`Keyring`] in an `ArcSwap`: sealing and opening
/// read it without a lock and never wait for the source; a refresh builds a
/// whole new keyring and swaps it in at once, so a seal or an open sees
/// either the old versions or the new ones, never a mix. Hand it around as
/// an `Arc<SourcedKeyring>` (it is an `Arc<dyn SecretCipher>` too).
///
/// A refresh that fails keeps the keys in force, and so does one whose
/// source gives another key for a version it holds (see the
/// [`KeySource`] contract). Versions the source no longer gives are
/// dropped: envelopes under them no longer open ([`Error::MissingKey`]).
/// How often to refresh is the application's choice (a task that calls
/// `refresh` every few minutes, or on a signal); certkeeper never calls
/// the source on its own.
///
/// ```
/// use std::sync::Arc;
/// use certkeeper::cipher::{DataKey, KeySet, SecretCipher, SourcedKeyring};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> certkeeper::Result<()> {
/// // A fixed set stands in for a KMS here; see examples/kms_cipher.rs.
/// let mut keys = KeySet::new();
/// keys.insert(1, DataKey::new([7; 32]))?;
/// let keyring = Arc::new(SourcedKeyring::new(Arc::new(keys)).await?);
/// let sealed = keyring.seal(b"account credentials", b"acme-account/main")?;
/// keyring.refresh().await?;
/// assert_eq!(&keyring.open(&sealed, b"acme-account/main")?[..], b"account credentials");
/// # Ok(())
/// # }
/// ```
pub struct SourcedKeyring {
    source: Arc<dyn KeySource>,
    current: ArcSwap<Keyring>,
    /// One refresh at a time, so an older answer of the source never
    /// replaces a newer one.
    refreshing: Mutex<()>,
}

impl SourcedKeyring {
    /// Fetches the keys of `source` and builds the keyring from them.
    /// Fails as [`KeySource::keys`] or [`Keyring::from_key_set`] fails.
    pub async fn new(source: Arc<dyn KeySource>) -> Result<Self> {
        let keyring = Keyring::from_source(&*source).await?;
        Ok(Self {
            source,
            current: ArcSwap::from_pointee(keyring),
            refreshing: Mutex::new(()),
        })
    }

    /// Fetches the keys again and puts them in force; returns the new
    /// keyring.
    ///
    /// Fails, keeping the keys in force, when the source fails, when its
    /// set cannot build a keyring (empty, or a sealing version without a
    /// key), and with [`Error::KeySource`] when it gives another key for a
    /// version held now. Concurrent refreshes run one after the other.
    /// Dropping the future before it ends changes nothing.
    pub async fn refresh(&self) -> Result<Arc<Keyring>> {
        let _one_at_a_time = self.refreshing.lock().await;
        let fresh = Keyring::from_source(&*self.source).await?;
        let current = self.current.load_full();
        if let Some(version) = current.changed_version(&fresh) {
            tracing::error!(
                key_version = version,
                "the key source gave another key for a version in use; the keys in force are kept"
            );
            return Err(Error::key_source(format!(
                "the source gave another key for version {version}: a version names one key \
                 forever (give the new key a new version, then rotate)"
            )));
        }
        let (before, after) = (current.versions(), fresh.versions());
        let added: Vec<u32> = after
            .iter()
            .filter(|v| !before.contains(v))
            .copied()
            .collect();
        let removed: Vec<u32> = before
            .iter()
            .filter(|v| !after.contains(v))
            .copied()
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(?added, ?removed, versions = ?after, "key versions refreshed");
        }
        let (was, now) = (current.sealing_version(), fresh.sealing_version());
        if now < was {
            tracing::warn!(
                from = was,
                to = now,
                "the key source moved sealing back to an older key version"
            );
        } else if now != was {
            tracing::info!(
                from = was,
                to = now,
                "new secrets are sealed under a new key version"
            );
        }
        let fresh = Arc::new(fresh);
        self.current.store(fresh.clone());
        Ok(fresh)
    }

    /// The keyring in force: a snapshot that a later refresh does not
    /// change. Run a [rotation](crate::vault::rotate) over it, so that every
    /// value is re-sealed under one version.
    pub fn current(&self) -> Arc<Keyring> {
        self.current.load_full()
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn KeySource> {
        &self.source
    }
}

impl SecretCipher for SourcedKeyring {
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Sealed> {
        self.current.load().seal(plaintext, associated_data)
    }

    fn open(&self, sealed: &Sealed, associated_data: &[u8]) -> Result<Plaintext> {
        self.current.load().open(sealed, associated_data)
    }

    fn sealing_version(&self) -> u32 {
        self.current.load().sealing_version()
    }
}

impl fmt::Debug for SourcedKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("SourcedKeyring")
            .field("versions", &current.versions())
            .field("sealing_version", &current.sealing_version())
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::cipher::{DataKey, KeySet};

    /// A source whose answer the test changes, that can be made to fail,
    /// and that counts the calls in flight.
    #[derive(Default)]
    struct TestSource {
        /// How long `keys` takes, in milliseconds (a round trip to a KMS).
        delay_ms: std::sync::atomic::AtomicU64,
        keys: std::sync::Mutex<Vec<(u32, [u8; 32])>>,
        sealing: std::sync::Mutex<Option<u32>>,
        failing: std::sync::atomic::AtomicBool,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        calls: AtomicUsize,
    }

    impl TestSource {
        fn with(keys: &[(u32, u8)]) -> Arc<Self> {
            let source = Arc::new(Self::default());
            source.delay_ms.store(5, Ordering::SeqCst);
            source.set(keys);
            source
        }

        fn set(&self, keys: &[(u32, u8)]) {
            *self.keys.lock().unwrap() = keys.iter().map(|(v, b)| (*v, [*b; 32])).collect();
        }
    }

    impl fmt::Debug for TestSource {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("TestSource")
        }
    }

    #[async_trait]
    impl KeySource for TestSource {
        async fn keys(&self) -> Result<KeySet> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let delay = self.delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::key_source("the KMS is unreachable"));
            }
            let mut set = KeySet::new();
            for (version, key) in self.keys.lock().unwrap().iter() {
                set.insert(*version, DataKey::new(*key))?;
            }
            if let Some(version) = *self.sealing.lock().unwrap() {
                set.set_sealing_version(version);
            }
            Ok(set)
        }
    }

    async fn keyring(source: &Arc<TestSource>) -> SourcedKeyring {
        SourcedKeyring::new(source.clone()).await.unwrap()
    }

    #[tokio::test]
    async fn a_refresh_brings_new_versions_and_old_envelopes_still_open() {
        let source = TestSource::with(&[(1, 1)]);
        let keyring = keyring(&source).await;
        let before = keyring.current();
        let sealed_v1 = keyring.seal(b"secret one", b"aad").unwrap();
        assert_eq!(sealed_v1.key_version().unwrap(), 1);

        source.set(&[(1, 1), (2, 2)]);
        let fresh = keyring.refresh().await.unwrap();
        assert_eq!(fresh.versions(), [1, 2]);
        assert_eq!(keyring.sealing_version(), 2);
        let sealed_v2 = keyring.seal(b"secret two", b"aad").unwrap();
        assert_eq!(sealed_v2.key_version().unwrap(), 2);
        assert_eq!(
            &keyring.open(&sealed_v1, b"aad").unwrap()[..],
            b"secret one"
        );
        assert_eq!(
            &keyring.open(&sealed_v2, b"aad").unwrap()[..],
            b"secret two"
        );
        // A snapshot taken before is left as it was.
        assert_eq!(before.versions(), [1]);
        assert!(matches!(
            before.open(&sealed_v2, b"aad"),
            Err(Error::MissingKey { version: 2, .. })
        ));
    }

    #[tokio::test]
    async fn a_version_the_source_drops_no_longer_opens() {
        let source = TestSource::with(&[(1, 1), (2, 2)]);
        let keyring = keyring(&source).await;
        let sealed_v2 = keyring.seal(b"secret", b"aad").unwrap();
        source.set(&[(3, 3)]);
        keyring.refresh().await.unwrap();
        assert_eq!(keyring.current().versions(), [3]);
        assert!(matches!(
            keyring.open(&sealed_v2, b"aad"),
            Err(Error::MissingKey { version: 2, .. })
        ));
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_keys_in_force() {
        let source = TestSource::with(&[(1, 1)]);
        let keyring = keyring(&source).await;
        let sealed = keyring.seal(b"secret", b"aad").unwrap();
        source.set(&[(1, 1), (2, 2)]);
        source.failing.store(true, Ordering::SeqCst);
        assert!(matches!(
            keyring.refresh().await,
            Err(Error::KeySource { .. })
        ));
        assert_eq!(keyring.current().versions(), [1]);
        assert_eq!(&keyring.open(&sealed, b"aad").unwrap()[..], b"secret");
        // An empty answer cannot build a keyring either.
        source.failing.store(false, Ordering::SeqCst);
        source.set(&[]);
        assert!(keyring.refresh().await.is_err());
        // Nor a sealing version without a key.
        source.set(&[(1, 1)]);
        *source.sealing.lock().unwrap() = Some(5);
        assert!(keyring.refresh().await.is_err());
        assert_eq!(keyring.current().versions(), [1]);
        assert_eq!(keyring.sealing_version(), 1);
    }

    #[tokio::test]
    async fn another_key_under_a_version_in_use_is_refused() {
        let source = TestSource::with(&[(1, 1), (2, 2)]);
        let keyring = keyring(&source).await;
        let sealed = keyring.seal(b"secret", b"aad").unwrap();
        source.set(&[(1, 1), (2, 9), (3, 3)]);
        match keyring.refresh().await {
            Err(Error::KeySource { message, .. }) => {
                assert!(message.contains("version 2"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(keyring.current().versions(), [1, 2]);
        assert_eq!(&keyring.open(&sealed, b"aad").unwrap()[..], b"secret");
        // The same keys again, or a version given back after it was
        // dropped with another key, are fine.
        source.set(&[(2, 2)]);
        keyring.refresh().await.unwrap();
        source.set(&[(1, 7), (2, 2)]);
        keyring.refresh().await.unwrap();
        assert_eq!(keyring.current().versions(), [1, 2]);
    }

    #[tokio::test]
    async fn the_source_may_stage_a_version_before_it_seals() {
        let source = TestSource::with(&[(1, 1), (2, 2)]);
        *source.sealing.lock().unwrap() = Some(1);
        let keyring = keyring(&source).await;
        assert_eq!(keyring.sealing_version(), 1);
        assert_eq!(keyring.seal(b"s", b"").unwrap().key_version().unwrap(), 1);
        *source.sealing.lock().unwrap() = None;
        keyring.refresh().await.unwrap();
        assert_eq!(keyring.seal(b"s", b"").unwrap().key_version().unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_run_one_at_a_time() {
        let source = TestSource::with(&[(1, 1)]);
        let keyring = Arc::new(keyring(&source).await);
        source.most_in_flight.store(0, Ordering::SeqCst);
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let keyring = keyring.clone();
                tokio::spawn(async move { keyring.refresh().await.map(|_| ()) })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), 7);
        assert_eq!(source.most_in_flight.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cancelled_refresh_changes_nothing() {
        let source = TestSource::with(&[(1, 1)]);
        let keyring = keyring(&source).await;
        source.set(&[(1, 1), (2, 2)]);
        source.delay_ms.store(60_000, Ordering::SeqCst);
        let cut = tokio::time::timeout(Duration::from_millis(20), keyring.refresh()).await;
        assert!(cut.is_err(), "the refresh should have been cut short");
        assert_eq!(keyring.current().versions(), [1]);
        // The lock was released with the dropped future.
        source.delay_ms.store(5, Ordering::SeqCst);
        keyring.refresh().await.unwrap();
        assert_eq!(keyring.current().versions(), [1, 2]);
    }

    #[tokio::test]
    async fn it_opens_what_the_passphrase_keyring_sealed_and_back() {
        let (a, b) = (
            "first passphrase of the sourced tests 0123",
            "second passphrase of the sourced tests 4567",
        );
        let from_env = Keyring::from_keys(true, [(1, a), (2, b)]).unwrap();
        let mut keys = KeySet::new();
        keys.insert(1, DataKey::from_passphrase(a)).unwrap();
        keys.insert(2, DataKey::from_passphrase(b)).unwrap();
        let sourced = SourcedKeyring::new(Arc::new(keys)).await.unwrap();
        let sealed = from_env.seal(b"secret", b"aad").unwrap();
        assert_eq!(&sourced.open(&sealed, b"aad").unwrap()[..], b"secret");
        let sealed = sourced.seal(b"other", b"aad").unwrap();
        assert_eq!(&from_env.open(&sealed, b"aad").unwrap()[..], b"other");
        assert!(matches!(
            sourced.open(&sealed, b"another record"),
            Err(Error::Decrypt)
        ));
    }

    #[tokio::test]
    async fn debug_shows_versions_and_the_source_only() {
        let source = TestSource::with(&[(1, 0x41), (4, 0x42)]);
        let keyring = keyring(&source).await;
        assert_eq!(
            format!("{keyring:?}"),
            "SourcedKeyring { versions: [1, 4], sealing_version: 4, source: TestSource }"
        );
    }
}
