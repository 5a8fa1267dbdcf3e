//! The due index: what the store knows of each record, kept in memory and
//! ordered as `due` answers.

use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

use crate::store::{CertRecord, DueEntry};
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

    /// Up to `limit` records due at `now` with fewer than `max_attempts`
    /// attempts, by renew date then domain, answered from the index alone.
    /// A record that could not be read at open is left out (and logged):
    /// it has no renew date to go by until it is repaired or deleted.
    pub(super) fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Vec<DueEntry> {
        let now = now.unix_timestamp_nanos();
        self.by_renew
            .iter()
            .take_while(|(renew, _)| *renew <= now)
            .filter_map(|(renew, domain)| {
                let entry = self.entries.get(domain)?;
                if *renew == UNREADABLE_RENEW {
                    tracing::warn!(%domain, "skipping a certificate record that cannot be read");
                    return None;
                }
                if entry.attempts >= max_attempts {
                    return None;
                }
                Some(DueEntry {
                    domain: domain.clone(),
                    version: entry.version,
                    renew_date: OffsetDateTime::from_unix_timestamp_nanos(entry.renew).ok()?,
                    attempts: entry.attempts,
                })
            })
            .take(limit)
            .collect()
    }
}
