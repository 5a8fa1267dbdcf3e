//! [`FileStore`]: the embedded default store, one directory on local disk.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::memory::{check_key, next_version};
use super::{AccountRecord, CertRecord, CertStore};
use crate::{Domain, Error, Result};

const STORE: &str = "file";
const CERTS: &str = "certs";
const ACCOUNTS: &str = "accounts";
const META: &str = "meta";
const INDEX: &str = "index.log";
const LOCK: &str = "lock";
const INDEX_HEADER: &str = "certkeeper-index 1";
const TEMP_PREFIX: &str = ".tmp-";
/// Journal lines allowed beyond twice the number of records before the
/// journal is rewritten, so that a small store is not rewritten on every save.
const COMPACT_SLACK: usize = 64;
/// Records loaded per round trip to the blocking pool in `due`.
const DUE_BATCH: usize = 256;
/// The renew date given to a record that cannot be read at open: first in
/// every cycle, where `due` reports it (and skips it) until it is repaired
/// or deleted.
const UNREADABLE_RENEW: i128 = i128::MIN;

/// The embedded default [`CertStore`]: one directory on local disk.
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
/// - **`due` without reading every record.** The renew date and attempts of
///   each record live in an in-memory index, persisted as the journal
///   `index.log` (one checksummed line per save or delete, written and
///   flushed before the record is renamed into place, rewritten when it grows
///   past twice the number of records). Opening a store replays the journal
///   instead of parsing every record; `due` walks the index in order and
///   loads only the records it returns. The records stay the source of
///   truth: `due` re-checks each loaded record, and opening reconciles the
///   index with the `certs/` directory: a record file missing from the
///   journal is read and indexed, an entry whose file is gone is dropped, the
///   record of the last journal line (the one write a crash may have cut
///   short) is re-read, and a torn last line is ignored. A journal that is
///   missing, or damaged anywhere but in its last line, is rebuilt from the
///   record files. Every write through the store keeps the index in step;
///   record files added or removed by hand are picked up at the next
///   opening, and deleting `index.log` before opening makes the store
///   re-read every record (after editing records by hand, say).
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
/// # One process per directory
///
/// A directory belongs to one `FileStore` in one process, because
/// compare-and-swap and the due index are kept in that process's memory.
/// Opening a directory that is already open in this process fails (clone
/// the `FileStore`, or share it in an `Arc`, instead). Across processes, the
/// store holds an exclusive advisory lock (`flock` on Unix, `LockFileEx` on
/// Windows) on the file `lock` from `open` until the last clone is dropped:
/// a second process opening the directory gets an [`Error::Store`] saying it
/// is in use by another process. So a tool such as the `rotate_keys`
/// example refuses to run while a server has the directory open: rotate
/// inside the server ([`rotate`](crate::cipher::rotate) over the server's
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
    // Serialises every write in the process, and owns the journal.
    writer: Arc<AsyncMutex<Journal>>,
    // Keeps other processes out until the store is dropped; the lock goes
    // with the file handle.
    _process_lock: File,
    _registration: Registration,
}

/// What the index knows of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    renew: i128,
    attempts: u32,
    version: u64,
}

impl Entry {
    fn of(record: &CertRecord) -> Self {
        Self {
            renew: record.renew_date.unix_timestamp_nanos(),
            attempts: record.attempts,
            version: record.version,
        }
    }

    fn unreadable() -> Self {
        Self {
            renew: UNREADABLE_RENEW,
            attempts: 0,
            version: 0,
        }
    }
}

#[derive(Default)]
struct Index {
    entries: BTreeMap<Domain, Entry>,
    // Mirrors `entries`, ordered as `due` answers.
    by_renew: BTreeSet<(i128, Domain)>,
}

impl Index {
    fn insert(&mut self, domain: Domain, entry: Entry) -> bool {
        match self.entries.insert(domain.clone(), entry) {
            Some(old) if old == entry => false,
            Some(old) => {
                self.by_renew.remove(&(old.renew, domain.clone()));
                self.by_renew.insert((entry.renew, domain));
                true
            }
            None => {
                self.by_renew.insert((entry.renew, domain));
                true
            }
        }
    }

    fn remove(&mut self, domain: &Domain) -> bool {
        match self.entries.remove(domain) {
            Some(old) => {
                self.by_renew.remove(&(old.renew, domain.clone()));
                true
            }
            None => false,
        }
    }

    /// Up to `n` index keys after `cursor` that look due.
    fn candidates(
        &self,
        cursor: Option<&(i128, Domain)>,
        now: i128,
        max_attempts: u32,
        n: usize,
    ) -> Vec<(i128, Domain)> {
        let start = cursor.map_or(Bound::Unbounded, |c| Bound::Excluded(c.clone()));
        self.by_renew
            .range((start, Bound::Unbounded))
            .take_while(|(renew, _)| *renew <= now)
            .filter(|(_, domain)| {
                self.entries
                    .get(domain)
                    .is_some_and(|e| e.attempts < max_attempts)
            })
            .take(n)
            .cloned()
            .collect()
    }
}

/// The append-only journal of the index.
struct Journal {
    root: PathBuf,
    file: Option<File>,
    lines: usize,
    // A line may be on disk that does not match the records: rewrite the
    // journal before the next append.
    dirty: bool,
}

impl Journal {
    fn path(&self) -> PathBuf {
        self.root.join(INDEX)
    }

    fn append(&mut self, line: &str) -> Result<()> {
        let path = self.path();
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_append(&path)?),
        };
        if let Err(e) = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
        {
            // Part of the line may be on disk.
            self.dirty = true;
            self.file = None;
            return Err(Error::io(path, e));
        }
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the journal as one line per record.
    ///
    /// Only writers change the index, and the caller is the writer, so the
    /// snapshot stays true while it is written out of the index lock.
    fn compact(&mut self, index: &Mutex<Index>) -> Result<()> {
        let (text, entries) = {
            let index = lock(index);
            let mut text = String::with_capacity(64 * (index.entries.len() + 1));
            text.push_str(INDEX_HEADER);
            text.push('\n');
            for (domain, entry) in &index.entries {
                text.push_str(&put_line(domain, entry));
            }
            (text, index.entries.len())
        };
        self.file = None;
        write_atomic(&self.root, INDEX, text.as_bytes())?;
        self.lines = entries;
        self.dirty = false;
        Ok(())
    }

    fn needs_compaction(&self, index: &Mutex<Index>) -> bool {
        self.dirty || self.lines > 2 * lock(index).entries.len() + COMPACT_SLACK
    }
}

/// Directories open in this process, so that a second `open` is refused.
fn registry() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections never leave the data half-updated.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Registration(PathBuf);

impl Registration {
    fn new(root: &Path) -> Result<Self> {
        if lock(registry()).insert(root.to_path_buf()) {
            Ok(Self(root.to_path_buf()))
        } else {
            Err(Error::store(
                STORE,
                format!(
                    "{} is already open in this process: share one FileStore instead of \
                     opening it twice",
                    root.display()
                ),
            ))
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(registry()).remove(&self.0);
    }
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

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.inner.root)
            .field("records", &lock(&self.inner.index).entries.len())
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

/// The file name of a domain's record: the name itself, with the ':' of an
/// IPv6 literal written as '_' (a character no domain contains).
fn file_name(domain: &Domain) -> String {
    domain.as_str().replace(':', "_")
}

/// The domain a file name stands for, if it is one this store wrote.
fn domain_of(file_name: &str) -> Option<Domain> {
    if file_name.starts_with('.') {
        return None;
    }
    let name = file_name.replace('_', ":");
    Domain::new(&name).ok().filter(|d| d.as_str() == name)
}

fn put_line(domain: &Domain, entry: &Entry) -> String {
    let body = format!(
        "P {} {} {} {}",
        domain.as_str(),
        entry.renew,
        entry.attempts,
        entry.version
    );
    format!("{body} {}\n", checksum(&body))
}

fn delete_line(domain: &Domain) -> String {
    let body = format!("D {}", domain.as_str());
    format!("{body} {}\n", checksum(&body))
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

enum Op {
    Put(Domain, Entry),
    Delete(Domain),
}

fn parse_line(line: &str) -> Option<Op> {
    let (body, sum) = line.rsplit_once(' ')?;
    if checksum(body) != sum {
        return None;
    }
    let fields: Vec<&str> = body.split(' ').collect();
    match fields.as_slice() {
        ["P", domain, renew, attempts, version] => {
            let domain = Domain::new(domain).ok()?;
            Some(Op::Put(
                domain,
                Entry {
                    renew: renew.parse().ok()?,
                    attempts: attempts.parse().ok()?,
                    version: version.parse().ok()?,
                },
            ))
        }
        ["D", domain] => Some(Op::Delete(Domain::new(domain).ok()?)),
        _ => None,
    }
}

/// What replaying the journal found.
struct Replay {
    index: Index,
    lines: usize,
    /// The domain of the last valid line: the one write a crash may have cut
    /// short after its line was written.
    last: Option<Domain>,
    /// The end of the journal was torn or damaged.
    torn_tail: bool,
}

/// Replays the journal; `None` when it cannot be trusted (damaged before its
/// last line, or not a journal).
fn replay(text: &str) -> Option<Replay> {
    let mut lines = text.split_inclusive('\n');
    if lines.next() != Some(format!("{INDEX_HEADER}\n").as_str()) {
        return None;
    }
    let lines: Vec<&str> = lines.collect();
    let mut replay = Replay {
        index: Index::default(),
        lines: 0,
        last: None,
        torn_tail: false,
    };
    for (i, raw) in lines.iter().enumerate() {
        let op = raw.strip_suffix('\n').and_then(parse_line);
        replay.lines += usize::from(op.is_some());
        match op {
            Some(Op::Put(domain, entry)) => {
                replay.index.insert(domain.clone(), entry);
                replay.last = Some(domain);
            }
            Some(Op::Delete(domain)) => {
                replay.index.remove(&domain);
                replay.last = Some(domain);
            }
            // A write cut short leaves at most its own line damaged.
            None if i + 1 == lines.len() => replay.torn_tail = true,
            None => return None,
        }
    }
    Some(replay)
}

/// What reading a record file gave.
enum Read<T> {
    Missing,
    Found(T),
    Corrupt(String),
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Read<T>> {
    match fs::read(path) {
        Ok(bytes) => Ok(match serde_json::from_slice(&bytes) {
            Ok(value) => Read::Found(value),
            Err(e) => Read::Corrupt(e.to_string()),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Read::Missing),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn read_record(certs: &Path, domain: &Domain) -> Result<Read<CertRecord>> {
    Ok(
        match read_json::<CertRecord>(&certs.join(file_name(domain)))? {
            Read::Found(record) if record.domain != *domain => {
                Read::Corrupt(format!("the file holds the record of {}", record.domain))
            }
            other => other,
        },
    )
}

fn corrupt(key: impl fmt::Display, reason: String) -> Error {
    Error::Corrupt {
        key: key.to_string(),
        reason,
    }
}

fn load_record(certs: &Path, domain: &Domain) -> Result<Option<CertRecord>> {
    match read_record(certs, domain)? {
        Read::Missing => Ok(None),
        Read::Found(record) => Ok(Some(record)),
        Read::Corrupt(reason) => Err(corrupt(domain, reason)),
    }
}

fn load_account(accounts: &Path, id: &str) -> Result<Option<AccountRecord>> {
    match read_json::<AccountRecord>(&accounts.join(id))? {
        Read::Missing => Ok(None),
        Read::Found(record) if record.id == id => Ok(Some(record)),
        Read::Found(record) => Err(corrupt(
            id,
            format!("the file holds the account {:?}", record.id),
        )),
        Read::Corrupt(reason) => Err(corrupt(id, reason)),
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Store {
        store: STORE,
        message: "could not encode a record".into(),
        source: Some(Box::new(e)),
    })
}

fn create_dir(path: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|e| Error::io(path, e))
}

fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn open_append(path: &Path) -> Result<File> {
    file_options()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Flushes a directory, so that a rename or removal in it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A new temporary file in `dir`, flushed to disk, holding `bytes`.
fn write_temp(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
    let written = file_options()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    match written {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(Error::io(path, e))
        }
    }
}

/// Moves a flushed temporary file over `dir/name` and flushes `dir`.
fn commit_temp(temp: &Path, dir: &Path, name: &str) -> Result<()> {
    let target = dir.join(name);
    if let Err(e) = fs::rename(temp, &target) {
        let _ = fs::remove_file(temp);
        return Err(Error::io(target, e));
    }
    sync_dir(dir)
}

/// Replaces `dir/name` with `bytes` atomically.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let temp = write_temp(dir, bytes)?;
    commit_temp(&temp, dir, name)
}

/// Removes temporary files a crash left behind.
fn remove_temps(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::io(path, e))?;
        }
    }
    Ok(())
}

/// The domains of the record files in `certs/`.
fn record_files(certs: &Path) -> Result<BTreeSet<Domain>> {
    let mut domains = BTreeSet::new();
    for entry in fs::read_dir(certs).map_err(|e| Error::io(certs, e))? {
        let entry = entry.map_err(|e| Error::io(certs, e))?;
        let name = entry.file_name();
        match name.to_str().and_then(domain_of) {
            Some(domain) => {
                domains.insert(domain);
            }
            None => tracing::warn!(
                file = %entry.path().display(),
                "ignoring a file that is not a certificate record"
            ),
        }
    }
    Ok(domains)
}

/// Reads one record file into the index.
fn index_file(index: &mut Index, certs: &Path, domain: &Domain) -> Result<bool> {
    Ok(match read_record(certs, domain)? {
        Read::Found(record) => index.insert(domain.clone(), Entry::of(&record)),
        Read::Missing => index.remove(domain),
        Read::Corrupt(reason) => {
            tracing::warn!(%domain, %reason, "certificate record cannot be read; due will report it until it is repaired or deleted");
            index.insert(domain.clone(), Entry::unreadable())
        }
    })
}

/// Takes the exclusive lock of the directory, or says who holds it.
fn lock_directory(root: &Path) -> Result<File> {
    let path = root.join(LOCK);
    let file = file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::store(
            STORE,
            format!(
                "{} is in use by another process (it holds {}): stop that process, or do \
                 this work inside it",
                root.display(),
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

/// Narrows a directory that exists with wider permissions to `0700`.
fn restrict_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::info!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "narrowing the store directory's permissions to 0700");
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(path, e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn open_blocking(dir: &Path) -> Result<FileStore> {
    create_dir(dir)?;
    let root = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let registration = Registration::new(&root)?;
    // Before anything is read or cleaned: another process's temporary files
    // are not leftovers of a crash.
    let process_lock = lock_directory(&root)?;
    let certs = root.join(CERTS);
    restrict_dir(&root)?;
    for sub in [CERTS, ACCOUNTS, META] {
        create_dir(&root.join(sub))?;
        restrict_dir(&root.join(sub))?;
    }
    for sub in [
        root.clone(),
        certs.clone(),
        root.join(ACCOUNTS),
        root.join(META),
    ] {
        remove_temps(&sub)?;
    }

    let journal_path = root.join(INDEX);
    let text = match fs::read(&journal_path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(journal_path, e)),
    };
    let files = record_files(&certs)?;
    let (index, lines, rewrite) = match text.as_deref().and_then(replay) {
        Some(Replay {
            mut index,
            lines,
            last,
            torn_tail,
        }) => {
            if torn_tail {
                tracing::warn!(path = %journal_path.display(), "ignoring the torn last line of the due index journal");
            }
            let mut changed = torn_tail;
            let gone: Vec<Domain> = index
                .entries
                .keys()
                .filter(|d| !files.contains(*d))
                .cloned()
                .collect();
            for domain in &gone {
                changed |= index.remove(domain);
            }
            let unindexed: Vec<&Domain> = files
                .iter()
                .filter(|d| !index.entries.contains_key(*d))
                .collect();
            for domain in unindexed {
                changed |= index_file(&mut index, &certs, domain)?;
            }
            if let Some(domain) = last {
                changed |= index_file(&mut index, &certs, &domain)?;
            }
            (index, lines, changed)
        }
        None => {
            if text.is_some() {
                tracing::warn!(path = %journal_path.display(), "the due index journal is damaged; rebuilding it from the record files");
            }
            let mut index = Index::default();
            for domain in &files {
                index_file(&mut index, &certs, domain)?;
            }
            (index, 0, true)
        }
    };

    let index = Mutex::new(index);
    let mut journal = Journal {
        root: root.clone(),
        file: None,
        lines,
        dirty: rewrite,
    };
    if journal.needs_compaction(&index) {
        journal.compact(&index)?;
    }
    Ok(FileStore {
        inner: Arc::new(Inner {
            root,
            index,
            writer: Arc::new(AsyncMutex::new(journal)),
            _process_lock: process_lock,
            _registration: registration,
        }),
    })
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

    fn save(&self, journal: &mut Journal, record: &CertRecord) -> Result<u64> {
        self.prepare(journal)?;
        let certs = self.root.join(CERTS);
        let domain = &record.domain;
        let found = match read_record(&certs, domain)? {
            Read::Missing => 0,
            Read::Found(stored) => stored.version,
            Read::Corrupt(reason) => return Err(corrupt(domain, reason)),
        };
        if found != record.version {
            return Err(Error::Conflict {
                key: domain.to_string(),
                expected: record.version,
                found,
            });
        }
        let mut stored = record.clone();
        stored.version = next_version(STORE, domain.as_str(), record.version)?;
        let entry = Entry::of(&stored);
        let temp = write_temp(&certs, &to_json(&stored)?)?;
        // The journal line goes first: after a crash only the last line can
        // be ahead of the records, and opening re-reads that one record.
        if let Err(e) = journal.append(&put_line(domain, &entry)) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&temp, certs.join(file_name(domain))) {
            let _ = fs::remove_file(&temp);
            journal.dirty = true;
            return Err(Error::io(certs.join(file_name(domain)), e));
        }
        lock(&self.index).insert(domain.clone(), entry);
        sync_dir(&certs)?;
        self.maybe_compact(journal);
        Ok(stored.version)
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
        journal.append(&delete_line(domain))?;
        if let Err(e) = fs::remove_file(&path) {
            journal.dirty = true;
            return Err(Error::io(path, e));
        }
        lock(&self.index).remove(domain);
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

fn read_meta(meta: &Path, key: &str) -> Result<Option<String>> {
    let path = meta.join(key);
    match fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| corrupt(key, "the value is not UTF-8".into())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
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
        let mut journal = self.write_lock().await;
        let inner = self.inner.clone();
        let record = record.clone();
        // The lock moves into the task: a cancelled caller cannot cut a write
        // short or let another writer in before it ends.
        blocking(move || inner.save(&mut journal, &record)).await
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
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
    ) -> Result<Vec<CertRecord>> {
        let now_nanos = now.unix_timestamp_nanos();
        let mut due = Vec::new();
        let mut cursor = None;
        while due.len() < limit {
            let batch = lock(&self.inner.index).candidates(
                cursor.as_ref(),
                now_nanos,
                max_attempts,
                (limit - due.len()).min(DUE_BATCH),
            );
            let Some(last) = batch.last().cloned() else {
                break;
            };
            cursor = Some(last);
            let certs = self.certs_dir();
            let loaded = blocking(move || {
                Ok(batch
                    .into_iter()
                    .map(|(_, domain)| {
                        let record = load_record(&certs, &domain);
                        (domain, record)
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
            for (domain, record) in loaded {
                match record {
                    // Re-checked: the record, not the index, is the truth.
                    Ok(Some(record)) if record.is_due(now, max_attempts) => due.push(record),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(%domain, error = %e, "skipping a certificate record that cannot be read")
                    }
                }
            }
        }
        due.sort_by(|a, b| (a.renew_date, &a.domain).cmp(&(b.renew_date, &b.domain)));
        due.truncate(limit);
        Ok(due)
    }

    async fn load_account(&self, id: &str) -> Result<Option<AccountRecord>> {
        check_key("account id", id)?;
        let accounts = self.inner.root.join(ACCOUNTS);
        let id = id.to_owned();
        blocking(move || load_account(&accounts, &id)).await
    }

    async fn save_account(&self, record: &AccountRecord) -> Result<u64> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_refuse_strangers() {
        for name in [
            "example.com",
            "::1",
            "2001:db8::1",
            "127.0.0.1",
            "::ffff:1.2.3.4",
        ] {
            let domain = Domain::new(name).unwrap();
            let file = file_name(&domain);
            assert!(!file.contains(':') && !file.contains('/'), "{file}");
            assert_eq!(domain_of(&file), Some(domain));
        }
        for stranger in [
            ".tmp-1-2",
            ".DS_Store",
            "Example.com",
            "a_b.com",
            "..",
            "2001_db8_0_0_0_0_0_1",
        ] {
            assert_eq!(domain_of(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn journal_lines_round_trip_and_damage_is_detected() {
        let domain = Domain::new("2001:db8::7").unwrap();
        let entry = Entry {
            renew: -1_234_567_890_123,
            attempts: 4,
            version: 9,
        };
        let put = put_line(&domain, &entry);
        assert!(matches!(
            parse_line(put.trim_end()),
            Some(Op::Put(d, e)) if d == domain && e == entry
        ));
        let del = delete_line(&domain);
        assert!(matches!(parse_line(del.trim_end()), Some(Op::Delete(d)) if d == domain));
        // Any changed character breaks the checksum.
        let damaged = put.replacen('4', "5", 1);
        assert!(parse_line(damaged.trim_end()).is_none());
        assert!(parse_line("").is_none());
        assert!(parse_line("P x").is_none());
    }

    #[test]
    fn replay_ignores_a_torn_tail_but_not_damage_before_it() {
        let a = Domain::new("a.example.com").unwrap();
        let b = Domain::new("b.example.com").unwrap();
        let entry = Entry {
            renew: 5,
            attempts: 0,
            version: 1,
        };
        let good = format!(
            "{INDEX_HEADER}\n{}{}{}",
            put_line(&a, &entry),
            put_line(&b, &entry),
            delete_line(&a)
        );
        let replayed = replay(&good).unwrap();
        assert_eq!(replayed.index.entries.keys().collect::<Vec<_>>(), [&b]);
        assert_eq!(replayed.lines, 3);
        assert_eq!(replayed.last, Some(a.clone()));
        assert!(!replayed.torn_tail);

        let torn = format!("{good}P b.example.com 9");
        let replayed = replay(&torn).unwrap();
        assert!(replayed.torn_tail);
        assert_eq!(replayed.index.entries.len(), 1);

        let damaged_middle = good.replacen("b.example.com", "c.example.com", 1);
        assert!(replay(&damaged_middle).is_none());
        assert!(replay("").is_none());
        assert!(replay("something else\n").is_none());
    }
}
