//! File I/O of the store: atomic writes (a flushed temporary file renamed
//! over the target, then the directory flushed), private file and directory
//! modes, and JSON in and out.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::STORE;
use crate::{Error, Result};

pub(super) const TEMP_PREFIX: &str = ".tmp-";

/// What reading a record file gave.
pub(super) enum Read<T> {
    Missing,
    Found(T),
    Corrupt(String),
}

pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Read<T>> {
    match fs::read(path) {
        Ok(bytes) => Ok(match serde_json::from_slice(&bytes) {
            Ok(value) => Read::Found(value),
            Err(e) => Read::Corrupt(e.to_string()),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Read::Missing),
        Err(e) => Err(Error::io(path, e)),
    }
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Store {
        store: STORE,
        message: "could not encode a record".into(),
        source: Some(Box::new(e)),
    })
}

pub(super) fn create_dir(path: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|e| Error::io(path, e))
}

pub(super) fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

pub(super) fn open_append(path: &Path) -> Result<File> {
    file_options()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Flushes a directory, so that a rename or removal in it survives a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
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
pub(super) fn write_temp(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
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
pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let temp = write_temp(dir, bytes)?;
    commit_temp(&temp, dir, name)
}

/// Removes `dir/name` and flushes `dir`; `false` if there was no such file.
pub(super) fn remove_durably(dir: &Path, name: &str) -> Result<bool> {
    let target = dir.join(name);
    match fs::remove_file(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(target, e)),
    }
    sync_dir(dir)?;
    Ok(true)
}

/// Removes temporary files a crash left behind.
pub(super) fn remove_temps(dir: &Path) -> Result<()> {
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
