//! A budget's sliding window, as every built-in store keeps it: the times
//! (unix seconds) units were taken, newest last, as one short text value.
//! Public, so a custom store keeps budgets the same way.

use std::time::Duration;

use time::OffsetDateTime;

use crate::{Error, Result};

/// Checks a budget key: the key rules ([`check_key`](super::check_key)),
/// at most 120 characters; anything else is an [`Error::InvalidKey`].
pub fn check_budget_key(key: &str) -> Result<()> {
    super::keys::check_key("budget key", key)?;
    if key.len() > 120 {
        return Err(Error::InvalidKey {
            kind: "budget key",
            key: key.chars().take(80).collect(),
            reason: "longer than 120 characters",
        });
    }
    Ok(())
}

/// The times (unix seconds) the units of one budget were taken, oldest
/// first: what [`Budgets`](super::Budgets) keeps per key. A store keeps it
/// as the text of [`encode`](Self::encode) and reads it back with
/// [`parse`](Self::parse), under a lock or in a transaction, with the
/// store's own `now`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BudgetWindow(Vec<i64>);

impl BudgetWindow {
    /// Reads a value written by [`encode`](Self::encode); `key` names it in
    /// the error ([`Error::Corrupt`]) for a value that is not one.
    pub fn parse(key: &str, text: &str) -> Result<Self> {
        let mut times = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            times.push(part.parse::<i64>().map_err(|_| Error::Corrupt {
                key: key.to_owned(),
                reason: "a budget window is not a list of times".into(),
            })?);
        }
        times.sort_unstable();
        Ok(Self(times))
    }

    /// The value to store.
    pub fn encode(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(i64::to_string).collect();
        parts.join(",")
    }

    /// Drops the units taken at or before `now - window`.
    fn prune(&mut self, now: OffsetDateTime, window: Duration) {
        let start = now.unix_timestamp() - i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        self.0.retain(|t| *t > start);
    }

    /// The units taken in the window ending at `now` (later ones included:
    /// a clock that went back still sees them).
    pub fn used(&self, now: OffsetDateTime, window: Duration) -> u32 {
        let mut pruned = self.clone();
        pruned.prune(now, window);
        u32::try_from(pruned.0.len()).unwrap_or(u32::MAX)
    }

    /// Takes one unit at `now` when fewer than `limit` were taken in the
    /// window; forgets the units that left the window either way.
    pub fn take(&mut self, now: OffsetDateTime, window: Duration, limit: u32) -> bool {
        self.prune(now, window);
        if u32::try_from(self.0.len()).unwrap_or(u32::MAX) >= limit {
            return false;
        }
        let at = now.unix_timestamp();
        let index = self.0.partition_point(|t| *t <= at);
        self.0.insert(index, at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_window_takes_up_to_its_limit_and_frees_units_as_they_leave_it() {
        let hour = Duration::from_secs(3600);
        let mut window = BudgetWindow::default();
        assert!(window.take(at(0), hour, 2));
        assert!(window.take(at(10), hour, 2));
        assert!(!window.take(at(20), hour, 2));
        assert_eq!(window.used(at(20), hour), 2);
        // The first unit leaves the window an hour after it was taken.
        assert!(!window.take(at(3599), hour, 2));
        assert!(window.take(at(3600), hour, 2));
        assert_eq!(window.used(at(3600), hour), 2);
        let read = BudgetWindow::parse("k", &window.encode()).unwrap();
        assert_eq!(read, window);
        assert!(matches!(
            BudgetWindow::parse("k", "1,x"),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(
            BudgetWindow::parse("k", "").unwrap(),
            BudgetWindow::default()
        );
    }
}
