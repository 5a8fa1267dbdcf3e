//! The journal of the due index (`index.log`): one checksummed line per save
//! or delete, appended and flushed before the record is renamed into place,
//! replayed at open and rewritten once it grows.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::index::{Entry, Index};
use super::io::{open_append, write_atomic};
use super::{lock, INDEX};
use crate::{Domain, Error, Result};

const INDEX_HEADER: &str = "certkeeper-index 1";
/// Journal lines allowed beyond twice the number of records before the
/// journal is rewritten, so that a small store is not rewritten on every save.
const COMPACT_SLACK: usize = 64;
/// The most saves one group commit writes: after a crash, at most this many
/// last lines of the journal can be ahead of the record files, and opening
/// re-reads their records.
pub(super) const GROUP_MAX: usize = 32;

/// The append-only journal of the index.
pub(super) struct Journal {
    root: PathBuf,
    file: Option<File>,
    lines: usize,
    // A line may be on disk that does not match the records: rewrite the
    // journal before the next append.
    pub(super) dirty: bool,
}

impl Journal {
    /// The journal of `root`, holding `lines` valid lines; `dirty` if it must
    /// be rewritten before the next append.
    pub(super) fn new(root: PathBuf, lines: usize, dirty: bool) -> Self {
        Self {
            root,
            file: None,
            lines,
            dirty,
        }
    }

    fn path(&self) -> PathBuf {
        self.root.join(INDEX)
    }

    /// Appends `text`, holding `count` lines, and flushes it to disk.
    pub(super) fn append(&mut self, text: &str, count: usize) -> Result<()> {
        let path = self.path();
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_append(&path)?),
        };
        if let Err(e) = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
        {
            // Part of the line may be on disk.
            self.dirty = true;
            self.file = None;
            return Err(Error::io(path, e));
        }
        self.lines += count;
        Ok(())
    }

    /// Rewrites the journal as one line per record.
    ///
    /// Only writers change the index, and the caller is the writer, so the
    /// snapshot stays true while it is written out of the index lock.
    pub(super) fn compact(&mut self, index: &Mutex<Index>) -> Result<()> {
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

    pub(super) fn needs_compaction(&self, index: &Mutex<Index>) -> bool {
        self.dirty || self.lines > 2 * lock(index).entries.len() + COMPACT_SLACK
    }
}

pub(super) fn put_line(domain: &Domain, entry: &Entry) -> String {
    let body = format!(
        "P {} {} {} {}",
        domain.as_str(),
        entry.renew,
        entry.attempts,
        entry.version
    );
    format!("{body} {}\n", checksum(&body))
}

pub(super) fn delete_line(domain: &Domain) -> String {
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

/// The domains named by the valid lines of a piece of the journal.
pub(super) fn line_domains(text: &str) -> Vec<Domain> {
    text.lines()
        .filter_map(parse_line)
        .map(|op| match op {
            Op::Put(domain, _) | Op::Delete(domain) => domain,
        })
        .collect()
}

/// What replaying the journal found.
pub(super) struct Replay {
    pub(super) index: Index,
    pub(super) lines: usize,
    /// The domains of the last [`GROUP_MAX`] valid lines, oldest first: the
    /// writes of the last group commit, which a crash may have cut short after
    /// their lines were written.
    pub(super) tail: VecDeque<Domain>,
    /// The end of the journal was torn or damaged.
    pub(super) torn_tail: bool,
}

impl Replay {
    fn push_tail(&mut self, domain: Domain) {
        if self.tail.len() == GROUP_MAX {
            self.tail.pop_front();
        }
        self.tail.push_back(domain);
    }
}

/// Replays the journal; `None` when it cannot be trusted (damaged before its
/// last line, or not a journal).
pub(super) fn replay(text: &str) -> Option<Replay> {
    let mut lines = text.split_inclusive('\n');
    if lines.next() != Some(format!("{INDEX_HEADER}\n").as_str()) {
        return None;
    }
    let lines: Vec<&str> = lines.collect();
    let mut replay = Replay {
        index: Index::default(),
        lines: 0,
        tail: VecDeque::with_capacity(GROUP_MAX),
        torn_tail: false,
    };
    for (i, raw) in lines.iter().enumerate() {
        let op = raw.strip_suffix('\n').and_then(parse_line);
        replay.lines += usize::from(op.is_some());
        match op {
            Some(Op::Put(domain, entry)) => {
                replay.index.insert(domain.clone(), entry);
                replay.push_tail(domain);
            }
            Some(Op::Delete(domain)) => {
                replay.index.remove(&domain);
                replay.push_tail(domain);
            }
            // A write cut short leaves at most its own line damaged.
            None if i + 1 == lines.len() => replay.torn_tail = true,
            None => return None,
        }
    }
    Some(replay)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn replay_keeps_the_domains_of_the_last_group_of_lines() {
        let entry = Entry {
            renew: 5,
            attempts: 0,
            version: 1,
        };
        let mut text = format!("{INDEX_HEADER}\n");
        for i in 0..GROUP_MAX + 10 {
            text.push_str(&put_line(
                &Domain::new(&format!("n{i}.example.com")).unwrap(),
                &entry,
            ));
        }
        let replayed = replay(&text).unwrap();
        assert_eq!(replayed.lines, GROUP_MAX + 10);
        assert_eq!(replayed.tail.len(), GROUP_MAX);
        assert_eq!(replayed.tail[0].as_str(), "n10.example.com");
        assert_eq!(
            replayed.tail[GROUP_MAX - 1].as_str(),
            format!("n{}.example.com", GROUP_MAX + 9)
        );
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
        assert_eq!(replayed.tail, [a.clone(), b.clone(), a.clone()]);
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
