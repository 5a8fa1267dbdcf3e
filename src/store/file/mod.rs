//! [`FileStore`]: the embedded default store, one directory on local disk.

mod index;
mod io;
mod journal;
mod lock;
mod records;
mod recovery;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::{oneshot, Mutex as AsyncMutex, OwnedMutexGuard};

use super::budget::{check_budget_key, BudgetWindow};
use super::keys::{check_key, next_version};
use super::{
    AccountRecord, Budgets, CertRecord, CertStore, ChallengeAnswers, ChangeFeed, Changes,
    ClusterStore, DueEntry, Leases, LocalCluster, PassedOver,
};
use crate::clock::{Clock, SystemClock};
use crate::{Domain, Error, Result};
use index::{Entry, Index};
use io::{
    create_dir, remove_durably, remove_temps, sync_dir, to_json, write_atomic, write_temp, Read,
};
use journal::{delete_line, put_line, Journal, GROUP_MAX};
use lock::{lock_directory, restrict_dir, Registration};
use records::{corrupt, file_name, load_account, load_record, read_meta, read_record};

const STORE: &str = "file";
const CERTS: &str = "certs";
const ACCOUNTS: &str = "accounts";
const META: &str = "meta";
const INDEX: &str = "index.log";
const LOCK: &str = "lock";

/// The embedded default [`CertStore`]: one directory on local disk.
///
/// It implements every method of [`CertStore`] and offers a
/// [`ClusterStore`] for the one process that holds the directory (leases,
/// HTTP-01 answers, the change feed, and the CA's budgets kept on disk).
///
/// # Layout
///
/// ```text
/// <dir>/            0700
///   certs/<domain>  one JSON CertRecord per domain (':' of IPv6 written as '_')
///   accounts/<id>   one JSON AccountRecord per ACME account
///   meta/<key>      one setting per file, its value as is
///   index.log       the due index: a journal of (domain, renew date, attempts)
///   lock            locked by the process that has the directory open
/// ```
///
/// Directories are created `0700` and files `0600` on Unix; opening a store
/// whose directories exist with wider permissions (made `0755` by another
/// tool, say) narrows them to `0700`. Private keys and account credentials
/// are sealed before they reach the store (see [`CertStore`]), so the files
/// hold no plaintext secret.
///
/// # Guarantees
///
/// - **Atomic writes.** Every write goes to a temporary file in the same
///   directory, which is flushed to disk and renamed over the target; then the
///   directory itself is flushed. A reader, or a crash, sees the old file or
///   the new one.
/// - **Compare-and-swap.** Writers are serialised inside the process and
///   compare the version on disk before writing.
/// - **Group commit.** Concurrent saves write and flush their records in
///   parallel, then commit together: one journal flush and one directory
///   flush for up to 32 saves, so a cycle's many saves do not queue behind
///   each other's disk flushes.
/// - **`due` without reading every record.** The renew date and attempts of
///   each record live in an in-memory index, persisted as the journal
///   `index.log` (one checksummed line per save or delete, written and
///   flushed before the record is renamed into place, rewritten when it grows
///   past twice the number of records). Opening a store replays the journal
///   instead of parsing every record. `due` answers from the index alone,
///   which keeps one lane per attempt count, each ordered by renew date then
///   domain, and merges only the lanes under `max_attempts`: records that
///   used up their attempts (and keep their old renew date) cost it nothing.
///   The records stay the source of truth: opening reconciles the index
///   with the `certs/` directory: a record file missing from the
///   journal is read and indexed, an entry whose file is gone is dropped, the
///   record of the last journal line (the one write a crash may have cut
///   short) is re-read, and a torn last line is ignored. A journal that is
///   missing, or damaged anywhere but in its last line, is rebuilt from the
///   record files. Every write through the store keeps the index in step;
///   record files added or removed by hand are picked up at the next
///   opening, and deleting `index.log` before opening makes the store
///   re-read every record (after editing records by hand, say).
/// - **Durable removals.** `delete`, `delete_account` and `delete_meta`
///   remove the file, then flush the directory; `set_meta` replaces the
///   file atomically, as every write does.
/// - **Unreadable records do not stop a cycle.** A record file that cannot
///   be decoded is an [`Error::Corrupt`] for that domain on `load` and
///   `save`; `due` logs a warning and skips it. Deleting the domain removes
///   it.
/// - **Dates** are kept to the nanosecond.
///
/// # Keys
///
/// Domains are safe file names by construction ([`Domain`]). Account ids and
/// meta keys must be 1 to 128 characters of `a-z`, `0-9`, `.`, `_` and `-`,
/// not starting with a dot; anything else is an [`Error::InvalidKey`], so no
/// key can reach outside the directory.
///
/// # Leases, HTTP-01 answers, the change feed and budgets
///
/// One process, one clock: every time kept here follows the system clock
/// of the process holding the directory. Budgets are kept on disk, in
/// `meta/`, so a restart keeps counting. The others are kept in the memory
/// of the process, not on disk: a directory is
/// locked to one process (see below), so every caller that can reach the
/// store shares that memory, and in-process coordination is exact. Leases
/// go to one holder at a time; HTTP-01 answers are kept until they expire;
/// the change feed lists every successful `save` and `delete` of a
/// certificate record, in the order they happened, and keeps a bounded
/// number of the newest changes (a reader further behind gets
/// [`Changes::reset`]). None of them survives the store: after reopening,
/// leases are free, answers are gone and the feed starts again, so a feed
/// cursor is meaningful only for the `FileStore` (or its clones) that gave
/// it.
///
/// # One process per directory
///
/// A directory belongs to one `FileStore` in one process, because
/// compare-and-swap, the due index, leases, HTTP-01 answers and the change
/// feed are kept in that process's memory.
/// Opening a directory that is already open in this process fails (clone
/// the `FileStore`, or share it in an `Arc`, instead). Across processes, the
/// store holds an exclusive advisory lock (`flock` on Unix, `LockFileEx` on
/// Windows) on the file `lock` from `open` until the last clone is dropped:
/// a second process opening the directory gets an [`Error::StoreInUse`]
/// naming the lock file and the holder's process id (written into it). A
/// program that only reads, such as the `certkeeper` command's `list`,
/// opens the directory with [`open_read_only`](FileStore::open_read_only),
/// which takes no lock. So a tool such as the `rotate_keys`
/// example refuses to run while a server has the directory open: rotate
/// inside the server ([`rotate`](crate::vault::rotate) over the server's
/// own store) or stop the server first. Run several instances of a server
/// over a shared SQL store instead. The lock is advisory: it keeps out other
/// `FileStore`s, not a program that edits the files without asking.
///
/// ```
/// use certkeeper::store::{CertRecord, CertStore, FileStore};
/// use certkeeper::Domain;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> certkeeper::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path().join("certificates");
/// let store = FileStore::open(&dir).await?;
/// let now = time::OffsetDateTime::now_utc();
/// store.save(&CertRecord::new(Domain::new("app.example.com")?, now)).await?;
/// drop(store);
///
/// let store = FileStore::open(&dir).await?;
/// assert_eq!(store.due(now, 5, 200).await?.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    index: Mutex<Index>,
    // Leases, HTTP-01 answers and the change feed: in memory, since the
    // directory belongs to this process alone.
    local: LocalCluster,
    // The clock of budget windows.
    clock: Arc<dyn Clock>,
    // Serialises every write in the process, and owns the journal.
    writer: Arc<AsyncMutex<Journal>>,
    // Saves written to temporary files, waiting for the next group commit.
    pending: Arc<Mutex<Vec<PendingSave>>>,
    // Keeps other processes out until the store is dropped; the lock goes
    // with the file handle. `None` when opened read-only.
    _process_lock: Option<File>,
    _registration: Option<Registration>,
    read_only: bool,
}

/// A save waiting for its group commit: the record (at the version it
/// expects on disk) already written to `temp`.
struct PendingSave {
    record: CertRecord,
    new_version: u64,
    entry: Entry,
    temp: PathBuf,
    reply: oneshot::Sender<Result<u64>>,
}

/// Answers every save of `group` with `error` (the first gets it, the others
/// a store error with its message) and removes their temporary files.
fn fail_all(group: Vec<PendingSave>, error: Error, replies: &mut Vec<Reply>) {
    let message = error.to_string();
    let mut error = Some(error);
    for save in group {
        let _ = fs::remove_file(&save.temp);
        let e = error.take().unwrap_or_else(|| Error::Store {
            store: STORE,
            message: message.clone(),
            source: None,
        });
        replies.push((save.reply, Err(e)));
    }
}

/// A save's answer, sent once the group's work is done.
type Reply = (oneshot::Sender<Result<u64>>, Result<u64>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections never leave the data half-updated.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl FileStore {
    /// Opens the store in `dir`, creating the directory if needed.
    ///
    /// Replays the journal of the due index and reconciles it with the
    /// record files (see the type's docs); removes temporary files left by a
    /// crash; narrows the permissions of existing directories to `0700` on
    /// Unix. Fails with [`Error::Store`] if the directory is already open in
    /// this process or in another one (see "One process per directory").
    pub async fn open(dir: impl AsRef<Path>) -> Result<FileStore> {
        let dir = dir.as_ref().to_path_buf();
        blocking(move || open_blocking(&dir)).await
    }

    /// Opens the store in `dir` for reading only, while another process (a
    /// running server) may hold it: takes no lock, writes nothing, creates
    /// nothing, and never blocks or disturbs the holder.
    ///
    /// The due index is built as [`open`](Self::open) builds it, from the
    /// journal reconciled with the record files, and the records written
    /// by the holder while it was being built are read again, so it is the
    /// store as it was at one moment during the opening. `list` and `due`
    /// answer from that snapshot (open again to see later writes); `load`,
    /// `load_account` and `get_meta` read the files as they are now (every
    /// file is replaced by an atomic rename, so a read sees the old file or
    /// the new one, never a mix). The leases, HTTP-01 answers and change
    /// feed of the holder live in its memory and are not visible here.
    ///
    /// Every write is refused with [`Error::ReadOnly`]; to write while a
    /// server holds the directory, do it in the server (the lock names its
    /// process id, see [`Error::StoreInUse`]). Fails with [`Error::Io`] if
    /// `dir` is not a store directory that can be read.
    pub async fn open_read_only(dir: impl AsRef<Path>) -> Result<FileStore> {
        let dir = dir.as_ref().to_path_buf();
        blocking(move || open_read_only_blocking(&dir)).await
    }

    /// Whether the store was opened with [`open_read_only`](Self::open_read_only).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// The process id of the process holding the lock of the store in
    /// `dir`, as it wrote it there, if the directory is locked now. A
    /// read-only store never holds the lock.
    pub fn holder(dir: impl AsRef<Path>) -> Option<u32> {
        let path = dir.as_ref().join(LOCK);
        let file = std::fs::File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => lock::read_holder(&path),
        }
    }

    /// Refuses `operation` on a read-only store.
    fn writable(&self, operation: &'static str) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::ReadOnly {
                store: STORE,
                path: self.inner.root.clone(),
                operation,
            });
        }
        Ok(())
    }

    /// The store's directory (absolute).
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    fn certs_dir(&self) -> PathBuf {
        self.inner.root.join(CERTS)
    }

    async fn write_lock(&self) -> OwnedMutexGuard<Journal> {
        self.inner.writer.clone().lock_owned().await
    }
}

/// Claims the directory, removes what a crash left behind, and recovers the
/// due index (see [`recovery`]).
fn open_blocking(dir: &Path) -> Result<FileStore> {
    create_dir(dir)?;
    let root = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let registration = Registration::new(&root)?;
    // Before anything is read or cleaned: another process's temporary files
    // are not leftovers of a crash.
    let process_lock = lock_directory(&root)?;
    restrict_dir(&root)?;
    for sub in [CERTS, ACCOUNTS, META] {
        create_dir(&root.join(sub))?;
        restrict_dir(&root.join(sub))?;
    }
    for sub in [
        root.clone(),
        root.join(CERTS),
        root.join(ACCOUNTS),
        root.join(META),
    ] {
        remove_temps(&sub)?;
    }

    let (index, journal) = recovery::recover(&root, false)?;
    Ok(FileStore {
        inner: Arc::new(Inner {
            root,
            index,
            local: LocalCluster::new(),
            clock: Arc::new(SystemClock),
            writer: Arc::new(AsyncMutex::new(journal)),
            _process_lock: Some(process_lock),
            _registration: Some(registration),
            pending: Arc::default(),
            read_only: false,
        }),
    })
}

/// Reads the due index of an existing directory without writing anything.
fn open_read_only_blocking(dir: &Path) -> Result<FileStore> {
    let root = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    for sub in [CERTS, ACCOUNTS, META] {
        let path = root.join(sub);
        if !path.is_dir() {
            return Err(Error::io(
                path,
                std::io::Error::new(ErrorKind::NotFound, "not a certkeeper store directory"),
            ));
        }
    }
    let (index, journal) = recovery::recover(&root, true)?;
    Ok(FileStore {
        inner: Arc::new(Inner {
            root,
            index,
            local: LocalCluster::new(),
            clock: Arc::new(SystemClock),
            writer: Arc::new(AsyncMutex::new(journal)),
            _process_lock: None,
            _registration: None,
            pending: Arc::default(),
            read_only: true,
        }),
    })
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.inner.root)
            .field("records", &lock(&self.inner.index).entries.len())
            .field("read_only", &self.inner.read_only)
            .finish()
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Store {
            store: STORE,
            message: "file task failed".into(),
            source: Some(Box::new(e)),
        })?
}

impl Inner {
    /// Rewrites the journal first if it may disagree with the records.
    fn prepare(&self, journal: &mut Journal) -> Result<()> {
        if journal.dirty {
            journal.compact(&self.index)?;
        }
        Ok(())
    }

    /// Rewrites the journal once it has grown; a failure only postpones it.
    fn maybe_compact(&self, journal: &mut Journal) {
        if journal.needs_compaction(&self.index) {
            if let Err(e) = journal.compact(&self.index) {
                tracing::warn!(error = %e, "could not rewrite the due index journal; will retry");
            }
        }
    }

    /// Commits a group of saves whose records are already written to
    /// flushed temporary files: one journal append and one directory flush
    /// for the whole group, so concurrent saves share their flushes.
    ///
    /// Each save is checked against the version on disk (or the version an
    /// earlier save of the same group left) and answered on its own channel.
    fn save_group(&self, journal: &mut Journal, group: Vec<PendingSave>) -> Vec<Reply> {
        let mut replies = Vec::with_capacity(group.len());
        self.commit_group(journal, group, &mut replies);
        replies
    }

    fn commit_group(
        &self,
        journal: &mut Journal,
        group: Vec<PendingSave>,
        replies: &mut Vec<Reply>,
    ) {
        let certs = self.root.join(CERTS);
        if let Err(e) = self.prepare(journal) {
            return fail_all(group, e, replies);
        }
        // Checked: the saves whose version matches, with their journal lines.
        let mut accepted: Vec<PendingSave> = Vec::with_capacity(group.len());
        let mut lines = String::new();
        let mut versions: HashMap<Domain, u64> = HashMap::new();
        for save in group {
            let domain = &save.record.domain;
            let found = match versions.get(domain) {
                Some(version) => Ok(*version),
                None => match read_record(&certs, domain) {
                    Ok(Read::Missing) => Ok(0),
                    Ok(Read::Found(stored)) => Ok(stored.version),
                    Ok(Read::Corrupt(reason)) => Err(corrupt(domain, reason)),
                    Err(e) => Err(e),
                },
            };
            let expected = save.record.version;
            let refused = match found {
                Err(e) => Some(e),
                Ok(found) if found != expected => Some(Error::Conflict {
                    key: domain.to_string(),
                    expected,
                    found,
                }),
                Ok(_) => None,
            };
            if let Some(e) = refused {
                let _ = fs::remove_file(&save.temp);
                replies.push((save.reply, Err(e)));
                continue;
            }
            versions.insert(domain.clone(), save.new_version);
            lines.push_str(&put_line(domain, &save.entry));
            accepted.push(save);
        }
        if accepted.is_empty() {
            return;
        }
        // The journal lines go first: after a crash only the lines of the
        // last group can be ahead of the records, and opening re-reads those.
        if let Err(e) = journal.append(&lines, accepted.len()) {
            return fail_all(accepted, e, replies);
        }
        let mut renamed = Vec::with_capacity(accepted.len());
        for save in accepted {
            let domain = &save.record.domain;
            let target = certs.join(file_name(domain));
            if let Err(e) = fs::rename(&save.temp, &target) {
                let _ = fs::remove_file(&save.temp);
                journal.dirty = true;
                replies.push((save.reply, Err(Error::io(target, e))));
                continue;
            }
            lock(&self.index).insert(domain.clone(), save.entry);
            // The new record is in place: readers see it from now on.
            self.local.record_change(domain, false);
            renamed.push(save);
        }
        match sync_dir(&certs) {
            Ok(()) => {
                for save in renamed {
                    replies.push((save.reply, Ok(save.new_version)));
                }
            }
            Err(e) => fail_all(renamed, e, replies),
        }
        self.maybe_compact(journal);
    }

    fn delete(&self, journal: &mut Journal, domain: &Domain) -> Result<bool> {
        self.prepare(journal)?;
        let certs = self.root.join(CERTS);
        let path = certs.join(file_name(domain));
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                lock(&self.index).remove(domain);
                return Ok(false);
            }
            Err(e) => return Err(Error::io(path, e)),
        }
        journal.append(&delete_line(domain), 1)?;
        if let Err(e) = fs::remove_file(&path) {
            journal.dirty = true;
            return Err(Error::io(path, e));
        }
        lock(&self.index).remove(domain);
        self.local.record_change(domain, true);
        sync_dir(&certs)?;
        self.maybe_compact(journal);
        Ok(true)
    }

    fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        let accounts = self.root.join(ACCOUNTS);
        let found = match load_account(&accounts, &record.id)? {
            Some(stored) => stored.version,
            None => 0,
        };
        if found != record.version {
            return Err(Error::Conflict {
                key: record.id.clone(),
                expected: record.version,
                found,
            });
        }
        let mut stored = record.clone();
        stored.version = next_version(STORE, &record.id, record.version)?;
        write_atomic(&accounts, &record.id, &to_json(&stored)?)?;
        Ok(stored.version)
    }

    fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let meta = self.root.join(META);
        if let Some(existing) = read_meta(&meta, key)? {
            return Ok(existing);
        }
        write_atomic(&meta, key, value.as_bytes())?;
        Ok(value.to_owned())
    }
}

#[async_trait]
impl CertStore for FileStore {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        let certs = self.certs_dir();
        let domain = domain.clone();
        blocking(move || load_record(&certs, &domain)).await
    }

    async fn save(&self, record: &CertRecord) -> Result<u64> {
        self.writable("save")?;
        let new_version = next_version(STORE, record.domain.as_str(), record.version)?;
        let mut stored = record.clone();
        stored.version = new_version;
        let entry = Entry::of(&stored);
        let certs = self.certs_dir();
        let bytes = to_json(&stored)?;
        let record = record.clone();
        let (reply, answer) = oneshot::channel();
        // The save runs as a task of its own, so a cancelled caller can
        // neither cut it short nor leave a stray temporary file. The record
        // is written and flushed before the writer lock, so concurrent saves
        // flush their files in parallel (a save refused later removes its
        // file). Whichever task takes the writer lock first commits every
        // save queued by then (up to GROUP_MAX); a task that finds the queue
        // empty ends without touching the store. The task holds the store
        // only while it commits, and answers after letting go of it, so a
        // caller that drops its store after `save` returns has closed it.
        let pending = self.inner.pending.clone();
        let writer = self.inner.writer.clone();
        let store = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let temp = match blocking(move || write_temp(&certs, &bytes)).await {
                Ok(temp) => temp,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            lock(&pending).push(PendingSave {
                record,
                new_version,
                entry,
                temp,
                reply,
            });
            let mut journal = writer.lock_owned().await;
            let group: Vec<PendingSave> = {
                let mut pending = lock(&pending);
                let n = pending.len().min(GROUP_MAX);
                pending.drain(..n).collect()
            };
            if group.is_empty() {
                return;
            }
            let Some(inner) = store.upgrade() else {
                // Every caller in the group went away with the store.
                for save in group {
                    let _ = fs::remove_file(&save.temp);
                }
                return;
            };
            let replies = blocking(move || {
                let replies = inner.save_group(&mut journal, group);
                drop(inner);
                Ok(replies)
            })
            .await;
            for (reply, result) in replies.unwrap_or_default() {
                let _ = reply.send(result);
            }
        });
        answer.await.unwrap_or_else(|_| {
            Err(Error::Store {
                store: STORE,
                message: "the write task ended without an answer".into(),
                source: None,
            })
        })
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
        self.writable("delete")?;
        let mut journal = self.write_lock().await;
        let inner = self.inner.clone();
        let domain = domain.clone();
        blocking(move || inner.delete(&mut journal, &domain)).await
    }

    async fn list(&self) -> Result<Vec<Domain>> {
        Ok(lock(&self.inner.index).entries.keys().cloned().collect())
    }

    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<DueEntry>> {
        Ok(lock(&self.inner.index).due(now, max_attempts, limit))
    }

    async fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> Result<PassedOver> {
        Ok(lock(&self.inner.index).at_attempt_limit(max_attempts, limit))
    }

    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        check_key("account id", id)?;
        let accounts = self.inner.root.join(ACCOUNTS);
        let id = id.to_owned();
        blocking(move || load_account(&accounts, &id)).await
    }

    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
        self.writable("save_account")?;
        check_key("account id", &record.id)?;
        let journal = self.write_lock().await;
        let inner = self.inner.clone();
        let record = record.clone();
        blocking(move || {
            let _held = journal;
            inner.save_account(&record)
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        let accounts = self.inner.root.join(ACCOUNTS);
        blocking(move || {
            let mut ids = Vec::new();
            for entry in fs::read_dir(&accounts).map_err(|e| Error::io(&accounts, e))? {
                let entry = entry.map_err(|e| Error::io(&accounts, e))?;
                if let Some(id) = entry.file_name().to_str() {
                    if check_key("account id", id).is_ok() {
                        ids.push(id.to_owned());
                    }
                }
            }
            ids.sort();
            Ok(ids)
        })
        .await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        check_key("meta key", key)?;
        let meta = self.inner.root.join(META);
        let key = key.to_owned();
        blocking(move || read_meta(&meta, &key)).await
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        self.writable("put_meta_if_absent")?;
        check_key("meta key", key)?;
        let journal = self.write_lock().await;
        let inner = self.inner.clone();
        let (key, value) = (key.to_owned(), value.to_owned());
        blocking(move || {
            let _held = journal;
            inner.put_meta_if_absent(&key, &value)
        })
        .await
    }

    async fn delete_account(&self, id: &str) -> Result<bool> {
        self.writable("delete_account")?;
        check_key("account id", id)?;
        let journal = self.write_lock().await;
        let accounts = self.inner.root.join(ACCOUNTS);
        let id = id.to_owned();
        blocking(move || {
            let _held = journal;
            remove_durably(&accounts, &id)
        })
        .await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.writable("set_meta")?;
        check_key("meta key", key)?;
        // Under the write lock, so that it never lands between the read and
        // the write of a `put_meta_if_absent`.
        let journal = self.write_lock().await;
        let meta = self.inner.root.join(META);
        let (key, value) = (key.to_owned(), value.to_owned());
        blocking(move || {
            let _held = journal;
            write_atomic(&meta, &key, value.as_bytes())
        })
        .await
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        self.writable("delete_meta")?;
        check_key("meta key", key)?;
        let journal = self.write_lock().await;
        let meta = self.inner.root.join(META);
        let key = key.to_owned();
        blocking(move || {
            let _held = journal;
            remove_durably(&meta, &key)
        })
        .await
    }

    fn cluster(&self) -> Option<&dyn ClusterStore> {
        Some(self)
    }
}

// The directory belongs to one process (see the type's docs): leases,
// answers and the change feed live in its memory, budgets on disk.
#[async_trait]
impl Leases for FileStore {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.writable("acquire_lease")?;
        self.inner.local.acquire_lease(name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        self.writable("release_lease")?;
        self.inner.local.release_lease(name, holder).await
    }

    async fn mark_age(&self, name: &str) -> Result<Option<Duration>> {
        self.inner.local.mark_age(name).await
    }

    async fn set_mark(&self, name: &str, ago: Duration) -> Result<()> {
        self.writable("set_mark")?;
        self.inner.local.set_mark(name, ago).await
    }
}

#[async_trait]
impl ChallengeAnswers for FileStore {
    async fn put_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<()> {
        self.writable("put_challenge")?;
        self.inner
            .local
            .put_challenge(token, key_authorization, ttl)
            .await
    }

    async fn get_challenge(&self, token: &str) -> Result<Option<String>> {
        self.inner.local.get_challenge(token).await
    }

    async fn delete_challenge(&self, token: &str) -> Result<()> {
        self.writable("delete_challenge")?;
        self.inner.local.delete_challenge(token).await
    }

    async fn purge_expired_challenges(&self) -> Result<u64> {
        self.inner.local.purge_expired_challenges().await
    }
}

#[async_trait]
impl ChangeFeed for FileStore {
    async fn changes_since(&self, cursor: u64, limit: usize) -> Result<Changes> {
        self.inner.local.changes_since(cursor, limit).await
    }
}

/// Kept on disk in `meta/` (as `budget.<key>`), so a restart keeps
/// counting; written under the store's write lock.
#[async_trait]
impl Budgets for FileStore {
    async fn take_budget(&self, key: &str, window: Duration, limit: u32) -> Result<bool> {
        check_budget_key(key)?;
        self.writable("take_budget")?;
        let journal = self.write_lock().await;
        let meta = self.inner.root.join(META);
        let key = format!("budget.{key}");
        let now = self.inner.clock.now();
        blocking(move || {
            let _held = journal;
            let mut budget = match read_meta(&meta, &key)? {
                Some(text) => BudgetWindow::parse(&key, &text)?,
                None => BudgetWindow::default(),
            };
            let taken = budget.take(now, window, limit);
            write_atomic(&meta, &key, budget.encode().as_bytes())?;
            Ok(taken)
        })
        .await
    }

    async fn budget_used(&self, key: &str, window: Duration) -> Result<u32> {
        check_budget_key(key)?;
        let meta = self.inner.root.join(META);
        let key = format!("budget.{key}");
        let now = self.inner.clock.now();
        blocking(move || match read_meta(&meta, &key)? {
            Some(text) => Ok(BudgetWindow::parse(&key, &text)?.used(now, window)),
            None => Ok(0),
        })
        .await
    }
}

#[cfg(test)]
mod tests;
