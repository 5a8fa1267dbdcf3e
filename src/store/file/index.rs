//! The due index: what the store knows of each record, kept in memory and
//! ordered as `due` answers.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::store::CertRecord;
use crate::Domain;

/// The renew date given to a record that cannot be read at open: first in
/// every cycle, where `due` reports it (and skips it) until it is repaired
/// or deleted.
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
}

#[derive(Default)]
pub(super) struct Index {
    pub(super) entries: BTreeMap<Domain, Entry>,
    // Mirrors `entries`, ordered as `due` answers.
    by_renew: BTreeSet<(i128, Domain)>,
}

impl Index {
    pub(super) fn insert(&mut self, domain: Domain, entry: Entry) -> bool {
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

    pub(super) fn remove(&mut self, domain: &Domain) -> bool {
        match self.entries.remove(domain) {
            Some(old) => {
                self.by_renew.remove(&(old.renew, domain.clone()));
                true
            }
            None => false,
        }
    }

    /// Up to `n` index keys after `cursor` that look due.
    pub(super) fn candidates(
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
