//! The due index every in-process store keeps, public so a custom store
//! answers [`CertStore::due`](super::CertStore::due) the same way.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use time::OffsetDateTime;

use super::{DueEntry, PassedOver};
use crate::Domain;

/// The due index: per attempt count, the records ordered by renew date then
/// domain. [`due`](Self::due) merges only the counts under `max_attempts`,
/// so records that used up their attempts cost nothing however many there
/// are: what [`CertStore::due`](super::CertStore::due) and
/// [`CertStore::at_attempt_limit`](super::CertStore::at_attempt_limit) ask.
///
/// Keep one entry per record: on each save, [`remove`](Self::remove) the
/// old record's [`DueEntry::of`] and [`insert`](Self::insert) the new
/// one's; on delete, remove it. A store whose records live elsewhere (a
/// key-value service) rebuilds it when it opens, from the records' entries.
///
/// ```
/// use certkeeper::store::{CertRecord, DueEntry, DueIndex};
/// use certkeeper::Domain;
/// # fn main() -> certkeeper::Result<()> {
/// let now = time::OffsetDateTime::now_utc();
/// let mut index = DueIndex::default();
/// let record = CertRecord::new(Domain::new("app.example.com")?, now);
/// index.insert(&DueEntry::of(&record));
/// assert_eq!(index.due(now, 5, 200).len(), 1);
/// assert_eq!(index.at_attempt_limit(5, 10).total, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default, Clone)]
pub struct DueIndex {
    by_attempts: BTreeMap<u32, BTreeSet<(OffsetDateTime, Domain, u64)>>,
}

impl DueIndex {
    /// Indexes an entry (call [`remove`](Self::remove) with the old one first).
    pub fn insert(&mut self, entry: &DueEntry) {
        self.by_attempts.entry(entry.attempts).or_default().insert((
            entry.renew_date,
            entry.domain.clone(),
            entry.version,
        ));
    }

    /// Forgets an entry.
    pub fn remove(&mut self, entry: &DueEntry) {
        if let Some(set) = self.by_attempts.get_mut(&entry.attempts) {
            set.remove(&(entry.renew_date, entry.domain.clone(), entry.version));
            if set.is_empty() {
                self.by_attempts.remove(&entry.attempts);
            }
        }
    }

    /// The entries with `max_attempts` attempts or more: their count and
    /// the first `limit` by attempts, renew date, then domain.
    pub fn at_attempt_limit(&self, max_attempts: u32, limit: usize) -> PassedOver {
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
    pub fn due(&self, now: OffsetDateTime, max_attempts: u32, limit: usize) -> Vec<DueEntry> {
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
}
