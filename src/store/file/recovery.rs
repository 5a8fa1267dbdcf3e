//! Recovery at open: the due index replayed from its journal and reconciled
//! with the record files, the writes of the last group commit (which a crash
//! may have cut short) re-read.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Mutex;

use super::index::{Entry, Index};
use super::io::Read;
use super::journal::{replay, Journal, Replay};
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
/// rewriting the journal when it disagreed with them.
pub(super) fn recover(root: &Path) -> Result<(Mutex<Index>, Journal)> {
    let certs = root.join(CERTS);
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
            tail,
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

    let index = Mutex::new(index);
    let mut journal = Journal::new(root.to_path_buf(), lines, rewrite);
    if journal.needs_compaction(&index) {
        journal.compact(&index)?;
    }
    Ok((index, journal))
}
