//! The due index: what the store knows of each record, kept in memory and
//! ordered as `due` answers.

use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

use crate::store::local::DueIndex;
use crate::store::{CertRecord, DueEntry, PassedOver};
use crate::Domain;

/// The renew date given to a record that cannot be read at open: `due`
/// leaves it out (and logs it) until it is repaired or deleted.
const UNREADABLE_RENEW: i128 = i128::MIN;

/// What the index knows of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) renew: i128,
    pub(super) attempts: u32,
    pub(super) version: u64,
}

impl Entry {
    pub(super) fn of(record: &CertRecord) -> Self {
        Self {
            renew: record.renew_date.unix_timestamp_nanos(),
            attempts: record.attempts,
            version: record.version,
        }
    }

    pub(super) fn unreadable() -> Self {
        Self {
            renew: UNREADABLE_RENEW,
            attempts: 0,
            version: 0,
        }
    }

    /// What `due` answers for this entry; `None` for a record that could not
    /// be read at open (or a renew date no date can hold).
    fn due_entry(&self, domain: &Domain) -> Option<DueEntry> {
        if self.renew == UNREADABLE_RENEW {
            return None;
        }
        Some(DueEntry {
            domain: domain.clone(),
            version: self.version,
            renew_date: OffsetDateTime::from_unix_timestamp_nanos(self.renew).ok()?,
            attempts: self.attempts,
        })
    }
}

/// Every record's entry, and the same entries ordered for `due`: one lane
/// per attempt count (see [`DueIndex`]), so that records that used up their
/// attempts are never visited by `due`, however many there are.
#[derive(Default)]
pub(super) struct Index {
    pub(super) entries: BTreeMap<Domain, Entry>,
    // Mirrors the entries of `entries` that have a renew date.
    due: DueIndex,
    // The other entries of `entries`: records that could not be read at open.
    unreadable: BTreeSet<Domain>,
}

impl Index {
    /// Sets the entry of `domain`; `true` if it changed.
    pub(super) fn insert(&mut self, domain: Domain, entry: Entry) -> bool {
        match self.entries.insert(domain.clone(), entry) {
            Some(old) if old == entry => false,
            old => {
                if let Some(old) = old {
                    self.unorder(&domain, &old);
                }
                self.order(domain, &entry);
                true
            }
        }
    }

    /// Forgets the entry of `domain`; `true` if there was one.
    pub(super) fn remove(&mut self, domain: &Domain) -> bool {
        match self.entries.remove(domain) {
            Some(old) => {
                self.unorder(domain, &old);
                true
            }
            None => false,
        }
    }

    fn order(&mut self, domain: Domain, entry: &Entry) {
        match entry.due_entry(&domain) {
            Some(due) => self.due.insert(&due),
            None => {
                self.unreadable.insert(domain);
            }
        }
    }

    fn unorder(&mut self, domain: &Domain, entry: &Entry) {
        match entry.due_entry(domain) {
            Some(due) => self.due.remove(&due),
            None => {
                self.unreadable.remove(domain);
            }
        }
    }

    /// The records with `max_attempts` attempts or more, from the index.
    pub(super) fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> PassedOver {
        self.due.at_attempt_limit(max_attempts, limit)
    }

    /// Up to `limit` records due at `now` with fewer than `max_attempts`
    /// attempts, by renew date then domain, answered from the index alone.
    /// Only the lanes of attempt counts under `max_attempts` are walked.
    /// A record that could not be read at open is left out (and logged):
    /// it has no renew date to go by until it is repaired or deleted.
    pub(super) fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Vec<DueEntry> {
        for domain in &self.unreadable {
            tracing::warn!(%domain, "skipping a certificate record that cannot be read");
        }
        self.due.due(now, max_attempts, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    fn entry(days: i64, attempts: u32, version: u64) -> Entry {
        Entry {
            renew: (NOW + time::Duration::days(days)).unix_timestamp_nanos(),
            attempts,
            version,
        }
    }

    fn names(index: &Index, max_attempts: u32, limit: usize) -> Vec<String> {
        index
            .due(NOW, max_attempts, limit)
            .into_iter()
            .map(|e| e.domain.to_string())
            .collect()
    }

    fn domain(name: &str) -> Domain {
        Domain::new(name).unwrap()
    }

    #[test]
    fn due_merges_attempt_counts_and_leaves_out_exhausted_and_unreadable_records() {
        let mut index = Index::default();
        assert!(index.insert(domain("dead.example.com"), entry(-9, 5, 3)));
        assert!(index.insert(domain("b.example.com"), entry(-2, 1, 2)));
        assert!(index.insert(domain("a.example.com"), entry(-3, 0, 1)));
        assert!(index.insert(domain("c.example.com"), entry(-1, 4, 7)));
        assert!(index.insert(domain("later.example.com"), entry(1, 0, 1)));
        assert!(index.insert(domain("broken.example.com"), Entry::unreadable()));
        assert!(!index.insert(domain("a.example.com"), entry(-3, 0, 1)));

        assert_eq!(
            names(&index, 5, 10),
            ["a.example.com", "b.example.com", "c.example.com"]
        );
        assert_eq!(names(&index, 5, 2), ["a.example.com", "b.example.com"]);
        assert_eq!(names(&index, 6, 1), ["dead.example.com"]);
        assert_eq!(names(&index, 1, 10), ["a.example.com"]);
        assert!(names(&index, 0, 10).is_empty());
        let first = &index.due(NOW, 5, 1)[0];
        assert_eq!((first.version, first.attempts), (1, 0));
        assert_eq!(first.renew_date, NOW - time::Duration::days(3));
    }

    #[test]
    fn an_updated_entry_moves_between_lanes_and_a_removed_one_goes() {
        let mut index = Index::default();
        index.insert(domain("a.example.com"), entry(-3, 0, 1));
        index.insert(domain("b.example.com"), entry(-2, 0, 1));
        // A failed attempt: next lane, same date.
        index.insert(domain("a.example.com"), entry(-3, 1, 2));
        assert_eq!(names(&index, 5, 10), ["a.example.com", "b.example.com"]);
        assert_eq!(names(&index, 1, 10), ["b.example.com"]);
        // Attempts used up, then a success later on.
        index.insert(domain("a.example.com"), entry(-3, 5, 3));
        assert_eq!(names(&index, 5, 10), ["b.example.com"]);
        index.insert(domain("a.example.com"), entry(60, 0, 4));
        assert_eq!(names(&index, 5, 10), ["b.example.com"]);
        // A repaired record leaves the unreadable ones.
        index.insert(domain("c.example.com"), Entry::unreadable());
        index.insert(domain("c.example.com"), entry(-9, 0, 1));
        assert_eq!(names(&index, 5, 10), ["c.example.com", "b.example.com"]);
        assert!(index.remove(&domain("c.example.com")));
        assert!(!index.remove(&domain("c.example.com")));
        index.insert(domain("d.example.com"), Entry::unreadable());
        assert!(index.remove(&domain("d.example.com")));
        assert!(index.unreadable.is_empty());
        assert_eq!(names(&index, 5, 10), ["b.example.com"]);
        assert_eq!(index.entries.len(), 2);
    }
}
