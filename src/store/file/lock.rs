//! Claiming a store directory: one `FileStore` per directory in this
//! process, an exclusive advisory lock against other processes, and
//! directory permissions narrowed to `0700`.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::io::file_options;
use super::{lock, LOCK, STORE};
use crate::{Error, Result};

/// Directories open in this process, so that a second `open` is refused.
fn registry() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

pub(super) struct Registration(PathBuf);

impl Registration {
    pub(super) fn new(root: &Path) -> Result<Self> {
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

/// Takes the exclusive lock of the directory, or says who holds it.
pub(super) fn lock_directory(root: &Path) -> Result<File> {
    let path = root.join(LOCK);
    let file = file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {
            // Names the holder for whoever is refused; the lock, not this
            // text, is what keeps them out.
            if let Err(e) = write_holder(&file) {
                tracing::debug!(error = %e, path = %path.display(), "could not write the holder's process id into the lock file");
            }
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::StoreInUse {
            path: root.to_path_buf(),
            holder: read_holder(&path),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

fn write_holder(mut file: &File) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

/// The process id the holder wrote into the lock file, if it is there.
pub(super) fn read_holder(lock: &Path) -> Option<u32> {
    std::fs::read_to_string(lock).ok()?.trim().parse().ok()
}

/// Narrows a directory that exists with wider permissions to `0700`.
pub(super) fn restrict_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::fs;
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
