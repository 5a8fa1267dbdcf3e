//! Recovery at open: the due index replayed from its journal and reconciled
//! with the record files, the writes of the last group commit (which a crash
//! may have cut short) re-read.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Mutex;

use super::index::{Entry, Index};
use super::io::Read;
use super::journal::{line_domains, replay, Journal, Replay};
use super::records::{read_record, record_files};
use super::{CERTS, INDEX};
use crate::{Domain, Error, Result};

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

/// The due index of the store in `root` and its journal: replays the journal
/// and reconciles it with the record files (see [`FileStore`](super::FileStore)),
/// rewriting the journal when it disagreed with them, unless `read_only`:
/// then nothing is written, and the journal may be appended to or replaced
/// (by an atomic rename) by the process that holds the store while it is
/// read: a torn last line is ignored and its record re-read, records
/// written after the journal was read are found in `certs/`.
pub(super) fn recover(root: &Path, read_only: bool) -> Result<(Mutex<Index>, Journal)> {
    let certs = root.join(CERTS);
    let journal_path = root.join(INDEX);
    let text = read_journal(&journal_path)?;
    let files = record_files(&certs)?;
    let (index, lines, rewrite) = match text.as_deref().and_then(replay) {
        Some(Replay {
            mut index,
            lines,
            tail,
            torn_tail,
        }) => {
            if torn_tail && !read_only {
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
            for domain in &tail {
                changed |= index_file(&mut index, &certs, domain)?;
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

    let mut index = index;
    if read_only {
        catch_up(&mut index, &certs, &journal_path, text.as_deref())?;
    }
    let index = Mutex::new(index);
    let mut journal = Journal::new(root.to_path_buf(), lines, rewrite);
    if !read_only && journal.needs_compaction(&index) {
        journal.compact(&index)?;
    }
    Ok((index, journal))
}

fn read_journal(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Read-only opening: the process holding the store may have written while
/// the journal and the record files were read. The records named by the
/// journal lines appended since are re-read; a journal rewritten (or
/// created) meanwhile makes every record file be read.
fn catch_up(index: &mut Index, certs: &Path, path: &Path, before: Option<&str>) -> Result<()> {
    let after = read_journal(path)?;
    // The complete lines read before; a torn last line may have grown since.
    let complete = before.map(|b| &b[..b.rfind('\n').map_or(0, |i| i + 1)]);
    match (complete, after.as_deref()) {
        (None, None) => {}
        (Some(complete), Some(after)) if !complete.is_empty() && after.starts_with(complete) => {
            for domain in line_domains(&after[complete.len()..]) {
                index_file(index, certs, &domain)?;
            }
        }
        _ => {
            *index = Index::default();
            for domain in &record_files(certs)? {
                index_file(index, certs, domain)?;
            }
        }
    }
    Ok(())
}
