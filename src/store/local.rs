//! What the in-process stores share: the due index, leases, HTTP-01 answers
//! and the change feed, kept in memory.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Change, Changes, DueEntry, PassedOver};
use crate::Domain;

/// The due index: per attempt count, the records ordered by renew date then
/// domain. `due` merges only the counts under `max_attempts`, so records
/// that used up their attempts cost nothing however many there are.
#[derive(Debug, Default)]
pub(crate) struct DueIndex {
    by_attempts: BTreeMap<u32, BTreeSet<(OffsetDateTime, Domain, u64)>>,
}

impl DueIndex {
    /// Indexes an entry (call [`remove`](Self::remove) with the old one first).
    pub(crate) fn insert(&mut self, entry: &DueEntry) {
        self.by_attempts.entry(entry.attempts).or_default().insert((
            entry.renew_date,
            entry.domain.clone(),
            entry.version,
        ));
    }

    /// Forgets an entry.
    pub(crate) fn remove(&mut self, entry: &DueEntry) {
        if let Some(set) = self.by_attempts.get_mut(&entry.attempts) {
            set.remove(&(entry.renew_date, entry.domain.clone(), entry.version));
            if set.is_empty() {
                self.by_attempts.remove(&entry.attempts);
            }
        }
    }

    /// The entries with `max_attempts` attempts or more: their count and
    /// the first `limit` by attempts, renew date, then domain.
    pub(crate) fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> PassedOver {
        let lanes = self.by_attempts.range(max_attempts..);
        let total = lanes.clone().map(|(_, set)| set.len() as u64).sum();
        let domains = lanes
            .flat_map(|(_, set)| set.iter().map(|(_, domain, _)| domain.clone()))
            .take(limit)
            .collect();
        PassedOver {
            total,
            exact: true,
            domains,
        }
    }

    /// Up to `limit` entries with `renew_date <= now` and fewer than
    /// `max_attempts` attempts, by renew date then domain.
    pub(crate) fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Vec<DueEntry> {
        let mut lanes: Vec<_> = self
            .by_attempts
            .range(..max_attempts)
            .map(|(attempts, set)| (*attempts, set.iter().take_while(move |(d, _, _)| *d <= now)))
            .collect();
        let mut heap = BinaryHeap::new();
        for (lane, (_, iter)) in lanes.iter_mut().enumerate() {
            if let Some(first) = iter.next() {
                heap.push(Reverse((first.0, first.1.clone(), first.2, lane)));
            }
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(Reverse((renew_date, domain, version, lane))) = heap.pop() else {
                break;
            };
            let (attempts, iter) = &mut lanes[lane];
            out.push(DueEntry {
                domain,
                version,
                renew_date,
                attempts: *attempts,
            });
            if let Some(next) = iter.next() {
                heap.push(Reverse((next.0, next.1.clone(), next.2, lane)));
            }
        }
        out
    }
}

/// Changes kept for [`changes_since`](super::CertStore::changes_since):
/// the newest ones, enough for readers that poll every few seconds.
const CHANGES_KEPT: usize = 65_536;

/// Leases, HTTP-01 answers and the change feed of one process.
#[derive(Debug, Default)]
pub(crate) struct Coordination {
    leases: HashMap<String, (String, OffsetDateTime)>,
    challenges: HashMap<String, (String, OffsetDateTime)>,
    changes: VecDeque<Change>,
    seq: u64,
}

impl Coordination {
    pub(crate) fn acquire_lease(
        &mut self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> bool {
        let free = match self.leases.get(name) {
            None => true,
            Some((current, expires)) => current == holder || *expires <= now,
        };
        if free {
            let expires = now
                .checked_add(time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX))
                .unwrap_or(now);
            self.leases
                .insert(name.to_owned(), (holder.to_owned(), expires));
        }
        free
    }

    pub(crate) fn release_lease(&mut self, name: &str, holder: &str) -> bool {
        match self.leases.get(name) {
            Some((current, _)) if current == holder => {
                self.leases.remove(name);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn put_challenge(
        &mut self,
        token: &str,
        key_authorization: &str,
        expires_at: OffsetDateTime,
    ) {
        self.challenges
            .insert(token.to_owned(), (key_authorization.to_owned(), expires_at));
    }

    pub(crate) fn get_challenge(&mut self, token: &str, now: OffsetDateTime) -> Option<String> {
        // Expired answers go as they are met, so the table stays small.
        self.challenges.retain(|_, (_, expires)| *expires > now);
        self.challenges.get(token).map(|(ka, _)| ka.clone())
    }

    pub(crate) fn delete_challenge(&mut self, token: &str) {
        self.challenges.remove(token);
    }

    /// Records that `domain`'s record was saved or deleted.
    pub(crate) fn record_change(&mut self, domain: &Domain, deleted: bool) {
        self.seq += 1;
        self.changes.push_back(Change {
            seq: self.seq,
            domain: domain.clone(),
            deleted,
        });
        if self.changes.len() > CHANGES_KEPT {
            self.changes.pop_front();
        }
    }

    pub(crate) fn changes_since(&self, cursor: u64, limit: usize) -> Changes {
        let oldest_kept = self.changes.front().map_or(self.seq + 1, |c| c.seq);
        // A cursor from before what is kept (or from another store) cannot
        // be answered change by change.
        let reset = cursor > self.seq || (cursor + 1 < oldest_kept && cursor < self.seq);
        if reset {
            return Changes {
                changes: Vec::new(),
                cursor: self.seq,
                reset: true,
            };
        }
        let changes: Vec<Change> = self
            .changes
            .iter()
            .filter(|c| c.seq > cursor)
            .take(limit)
            .cloned()
            .collect();
        let cursor = changes.last().map_or(cursor, |c| c.seq);
        Changes {
            changes,
            cursor,
            reset: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn entry(domain: &str, renew: OffsetDateTime, attempts: u32) -> DueEntry {
        DueEntry {
            domain: Domain::new(domain).unwrap(),
            version: 1,
            renew_date: renew,
            attempts,
        }
    }

    #[test]
    fn due_merges_attempt_counts_in_renew_date_order_and_skips_exhausted_ones() {
        let mut index = DueIndex::default();
        let t = datetime!(2030-01-01 0:00 UTC);
        index.insert(&entry("dead.example.com", t - time::Duration::days(9), 5));
        index.insert(&entry("b.example.com", t - time::Duration::days(2), 1));
        index.insert(&entry("a.example.com", t - time::Duration::days(3), 0));
        index.insert(&entry("c.example.com", t - time::Duration::days(1), 4));
        index.insert(&entry("later.example.com", t + time::Duration::days(1), 0));
        let due: Vec<String> = index
            .due(t, 5, 10)
            .into_iter()
            .map(|e| e.domain.to_string())
            .collect();
        assert_eq!(due, ["a.example.com", "b.example.com", "c.example.com"]);
        assert_eq!(index.due(t, 5, 2).len(), 2);
        assert_eq!(index.due(t, 6, 10)[0].domain.as_str(), "dead.example.com");
        index.remove(&entry("a.example.com", t - time::Duration::days(3), 0));
        assert_eq!(index.due(t, 5, 10).len(), 2);
    }

    #[test]
    fn leases_go_to_one_holder_until_released_or_expired() {
        let mut c = Coordination::default();
        let t = datetime!(2030-01-01 0:00 UTC);
        let ttl = Duration::from_secs(30);
        assert!(c.acquire_lease("cycle", "a", t, ttl));
        assert!(!c.acquire_lease("cycle", "b", t, ttl));
        assert!(c.acquire_lease("cycle", "a", t + time::Duration::seconds(10), ttl));
        assert!(!c.acquire_lease("cycle", "b", t + time::Duration::seconds(39), ttl));
        assert!(c.acquire_lease("cycle", "b", t + time::Duration::seconds(40), ttl));
        assert!(!c.release_lease("cycle", "a"));
        assert!(c.release_lease("cycle", "b"));
        assert!(c.acquire_lease("cycle", "a", t, ttl));
    }

    #[test]
    fn the_change_feed_resets_a_reader_that_fell_behind() {
        let mut c = Coordination::default();
        let d = Domain::new("a.example.com").unwrap();
        for _ in 0..3 {
            c.record_change(&d, false);
        }
        let all = c.changes_since(0, 10);
        assert_eq!(all.changes.len(), 3);
        assert_eq!(all.cursor, 3);
        assert!(c.changes_since(3, 10).changes.is_empty());
        assert!(c.changes_since(99, 10).reset);
        for _ in 0..CHANGES_KEPT {
            c.record_change(&d, true);
        }
        assert!(c.changes_since(0, 10).reset);
        assert!(!c.changes_since(c.seq - 1, 10).reset);
    }
}
