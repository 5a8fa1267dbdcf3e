//! The built-in stores against the conformance suite, the suite against
//! broken stores, and what only the file store promises (permissions, crash
//! recovery, the persisted due index), on a real filesystem.

use crate::common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use certkeeper::store::{
    conformance, AccountRecord, Budgets, CertRecord, CertStore, ChallengeAnswers, ChangeFeed,
    ClusterStore, DueEntry, Leases, MemoryStore,
};
use certkeeper::{Domain, Result};
use common::store::cert_store_over_inner;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2025-03-01 12:00:00 UTC);

fn domain(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

fn record(name: &str, renew_date: OffsetDateTime, attempts: u32) -> CertRecord {
    CertRecord {
        attempts,
        ..CertRecord::new(domain(name), renew_date)
    }
}

async fn create(store: &dyn CertStore, record: &CertRecord) -> CertRecord {
    let version = store.save(record).await.unwrap();
    CertRecord {
        version,
        ..record.clone()
    }
}

// ---------------------------------------------------------------------------
// The suite on the built-in stores.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    let store = std::sync::Arc::new(MemoryStore::new());
    conformance::run_all(&*store).await;
    // Two handles of one in-memory store (an `Arc` and its clone).
    let other: std::sync::Arc<dyn CertStore> = store.clone();
    conformance::run_shared(&store, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_tolerates_data_already_in_the_store() {
    let store = MemoryStore::new();
    // Records due at the suite's `now` (2000-01-01) and records of today.
    for (i, renew) in [
        datetime!(1999-12-31 00:00:00 UTC),
        datetime!(1999-12-31 00:00:00 UTC),
        datetime!(1998-05-01 10:00:00 UTC),
        datetime!(2000-01-01 00:00:00 UTC),
        NOW,
    ]
    .into_iter()
    .enumerate()
    {
        create(&store, &record(&format!("old{i}.example.org"), renew, 0)).await;
    }
    create(&store, &record("exhausted.example.org", NOW, 9)).await;
    conformance::run_all(&store).await;
    // The suite leaves other data alone.
    assert_eq!(store.list().await.unwrap().len(), 6);
}

// ---------------------------------------------------------------------------
// The suite catches stores that break the contract.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Flaw {
    None,
    /// `save` ignores the version it is given.
    NoCompareAndSwap,
    /// `due` ignores `max_attempts`.
    DueIgnoresAttempts,
    /// `due` applies the limit before the attempt filter.
    DueLimitsTooEarly,
    /// `due` orders by domain only.
    DueOrderedByDomain,
    /// `put_meta_if_absent` overwrites.
    MetaOverwrites,
    /// `list` is not sorted.
    ListUnsorted,
    /// Dates lose their seconds.
    DatesToTheMinute,
    /// `delete` always says it removed something.
    DeleteAlwaysTrue,
    /// `due` reads every record, then answers from the index.
    DueReadsEverything,
}

/// A `MemoryStore` with one deliberate flaw.
#[derive(Debug)]
struct Flawed {
    inner: MemoryStore,
    flaw: Flaw,
    /// The records `load` read.
    reads: conformance::RecordReads,
}

cert_store_over_inner!(Flawed {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        let record = self.inner.load(domain).await?;
        self.reads.add(u64::from(record.is_some()));
        Ok(record)
    }

    async fn save(&self, record: &CertRecord) -> Result<u64> {
        let mut record = record.clone();
        match self.flaw {
            Flaw::NoCompareAndSwap => {
                record.version = self
                    .inner
                    .load(&record.domain)
                    .await?
                    .map_or(0, |r| r.version);
            }
            Flaw::DatesToTheMinute => {
                let date = record.renew_date;
                record.renew_date = date - Duration::seconds(i64::from(date.second()));
            }
            _ => {}
        }
        self.inner.save(&record).await
    }

    async fn delete(&self, domain: &Domain) -> Result<bool> {
        let deleted = self.inner.delete(domain).await?;
        Ok(deleted || self.flaw == Flaw::DeleteAlwaysTrue)
    }

    async fn list(&self) -> Result<Vec<Domain>> {
        let mut list = self.inner.list().await?;
        if self.flaw == Flaw::ListUnsorted {
            list.reverse();
        }
        Ok(list)
    }

    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<DueEntry>> {
        match self.flaw {
            Flaw::DueIgnoresAttempts => self.inner.due(now, u32::MAX, limit).await,
            Flaw::DueLimitsTooEarly => Ok(self
                .inner
                .due(now, u32::MAX, limit)
                .await?
                .into_iter()
                .filter(|r| r.attempts < max_attempts)
                .collect()),
            Flaw::DueOrderedByDomain => {
                let mut all = self.inner.due(now, max_attempts, usize::MAX).await?;
                all.sort_by(|a, b| a.domain.cmp(&b.domain));
                all.truncate(limit);
                Ok(all)
            }
            Flaw::DueReadsEverything => {
                for domain in self.inner.list().await? {
                    self.load(&domain).await?;
                }
                self.inner.due(now, max_attempts, limit).await
            }
            _ => self.inner.due(now, max_attempts, limit).await,
        }
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        if self.flaw == Flaw::MetaOverwrites {
            // Every caller is told its own value won, as with a plain write.
            self.inner.set_meta(key, value).await?;
            return Ok(value.to_owned());
        }
        self.inner.put_meta_if_absent(key, value).await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.inner.set_meta(key, value).await
    }

    async fn at_attempt_limit(
        &self,
        max_attempts: u32,
        limit: usize,
    ) -> Result<certkeeper::store::PassedOver> {
        self.inner.at_attempt_limit(max_attempts, limit).await
    }
});

/// Runs the named check on a store with `flaw`; returns whether it passed.
async fn passes(flaw: Flaw, check: &str) -> bool {
    let check = *conformance::checks()
        .iter()
        .find(|c| c.name == check)
        .unwrap_or_else(|| panic!("no check named {check}"));
    let store = Arc::new(Flawed {
        inner: MemoryStore::new(),
        flaw,
        reads: conformance::RecordReads::new(),
    });
    tokio::spawn(async move { check.run(&*store).await })
        .await
        .is_ok()
}

/// Runs [`conformance::due_reads_only_due`] on a store with `flaw`, counting
/// the records its `load` reads (or none, when `count` is false).
async fn passes_reads(flaw: Flaw, count: bool) -> bool {
    let store = Arc::new(Flawed {
        inner: MemoryStore::new(),
        flaw,
        reads: conformance::RecordReads::new(),
    });
    let reads = if count {
        store.reads.clone()
    } else {
        conformance::RecordReads::new()
    };
    tokio::spawn(async move { conformance::due_reads_only_due(&*store, &reads).await })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_due_that_reads_every_record() {
    assert!(passes_reads(Flaw::None, true).await, "fails a sound store");
    assert!(
        !passes_reads(Flaw::DueReadsEverything, true).await,
        "misses a due that reads every record"
    );
    // A store that does not count its reads cannot pass by saying nothing.
    assert!(
        !passes_reads(Flaw::None, false).await,
        "passes a store that counts no reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_broken_stores() {
    let cases = [
        (Flaw::NoCompareAndSwap, "compare_and_swap"),
        (Flaw::NoCompareAndSwap, "concurrent_saves"),
        (Flaw::DueIgnoresAttempts, "due_attempts"),
        (Flaw::DueLimitsTooEarly, "due_attempts"),
        (Flaw::DueOrderedByDomain, "due_order_and_limit"),
        (Flaw::MetaOverwrites, "meta_first_writer_wins"),
        (Flaw::MetaOverwrites, "meta_concurrent_racers"),
        (Flaw::ListUnsorted, "list_sorted"),
        (Flaw::DatesToTheMinute, "round_trip"),
        (Flaw::DeleteAlwaysTrue, "missing_keys"),
        (Flaw::DeleteAlwaysTrue, "delete"),
    ];
    for (flaw, check) in cases {
        assert!(
            passes(Flaw::None, check).await,
            "{check} fails a sound store"
        );
        assert!(!passes(flaw, check).await, "{check} misses {flaw:?}");
    }
}

// ---------------------------------------------------------------------------
// What only the file store promises.

#[cfg(feature = "fs")]
mod file_store {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use certkeeper::cert::IssuerKind;
    use certkeeper::cipher::Sealed;
    use certkeeper::store::{FileStore, LogEntry, StoredCert};
    use certkeeper::Error;
    use sha2::{Digest, Sha256};

    use super::*;

    fn with_certificate(mut record: CertRecord) -> CertRecord {
        record.certificate = Some(StoredCert {
            chain_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            sealed_key: Sealed::with_header(2, &[7; 48]),
            not_before: NOW - Duration::days(10),
            not_after: NOW + Duration::days(80),
            fingerprint: "cd".repeat(32),
            issuer: IssuerKind::ACME,
        });
        record.issue_date = Some(NOW - Duration::days(10));
        record.push_log(LogEntry {
            time: NOW - Duration::days(10),
            step: "issue".into(),
            success: true,
            message: "issued by the test CA".into(),
        });
        record
    }

    fn names(entries: &[DueEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.domain.as_str()).collect()
    }

    fn files_under(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path.clone());
                }
                out.push(path);
            }
        }
        out.sort();
        out
    }

    fn temp_files(root: &Path) -> Vec<PathBuf> {
        files_under(root)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .collect()
    }

    /// A journal line as the file store writes it (the format is documented on
    /// `FileStore`).
    fn journal_line(body: &str) -> String {
        let digest = Sha256::digest(body.as_bytes());
        let sum: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{body} {sum}\n")
    }

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_conforms_and_again_after_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        conformance::run_all(&store).await;
        // The folder belongs to one process: its two handles are clones.
        let other = store.clone();
        conformance::run_shared(&store, &other).await;
        drop((store, other));
        let store = FileStore::open(&dir).await.unwrap();
        conformance::run_all(&store).await;
        assert!(temp_files(&dir).is_empty());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn files_are_0600_and_directories_0700() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("store");
        let store = FileStore::open(&dir).await.unwrap();
        create(&store, &with_certificate(record("a.example.com", NOW, 0))).await;
        let account = AccountRecord {
            id: "acme-v02.example-1".into(),
            version: 0,
            sealed_credentials: Sealed::with_header(1, b"opaque"),
            created: NOW,
        };
        store.save_account(&account).await.unwrap();
        store
            .put_meta_if_absent("main-domain", "a.example.com")
            .await
            .unwrap();

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let all = files_under(&dir);
        assert!(all.len() >= 7, "{all:?}");
        for path in all {
            let expected = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&path), expected, "{}", path.display());
        }
    }

    #[tokio::test]
    async fn reopening_sees_records_accounts_meta_and_the_due_index() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path()).await.unwrap();
        assert!(store.path().is_absolute());
        let mut saved = Vec::new();
        for (name, days, attempts) in [
            ("late.example.com", 10, 0),
            ("b.example.com", -2, 1),
            ("a.example.com", -2, 0),
            ("tired.example.com", -5, 5),
            ("c.example.com", -1, 4),
        ] {
            let r = with_certificate(record(name, NOW + Duration::days(days), attempts));
            saved.push(create(&store, &r).await);
        }
        // An update and a delete, so the journal holds more than creations.
        let mut updated = saved.remove(0);
        updated.renew_date = NOW - Duration::days(3);
        updated.version = store.save(&updated).await.unwrap();
        assert!(store.delete(&domain("c.example.com")).await.unwrap());
        let account = AccountRecord {
            id: "letsencrypt-1".into(),
            version: 0,
            sealed_credentials: Sealed::with_header(3, &[1, 2, 3]),
            created: NOW,
        };
        store.save_account(&account).await.unwrap();
        store
            .put_meta_if_absent("main-domain", "a.example.com")
            .await
            .unwrap();
        let due_before = store.due(NOW, 5, 200).await.unwrap();
        assert_eq!(
            names(&due_before),
            ["late.example.com", "a.example.com", "b.example.com"]
        );
        drop(store);

        let store = FileStore::open(tmp.path()).await.unwrap();
        assert_eq!(store.due(NOW, 5, 200).await.unwrap(), due_before);
        assert_eq!(
            store.list().await.unwrap(),
            [
                "a.example.com",
                "b.example.com",
                "late.example.com",
                "tired.example.com"
            ]
            .map(domain)
        );
        assert_eq!(
            store.load(&domain("late.example.com")).await.unwrap(),
            Some(updated)
        );
        assert_eq!(store.load(&domain("c.example.com")).await.unwrap(), None);
        assert_eq!(
            store.load_account("letsencrypt-1").await.unwrap(),
            Some(AccountRecord {
                version: 1,
                ..account
            })
        );
        assert_eq!(store.list_accounts().await.unwrap(), ["letsencrypt-1"]);
        assert_eq!(
            store.get_meta("main-domain").await.unwrap().as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            store
                .put_meta_if_absent("main-domain", "other.example.com")
                .await
                .unwrap(),
            "a.example.com"
        );
    }

    /// Saves three due records and closes the store; returns its directory.
    async fn three_due_records(tmp: &tempfile::TempDir) -> PathBuf {
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        for (i, name) in ["a.example.com", "b.example.com", "c.example.com"]
            .iter()
            .enumerate()
        {
            create(&store, &record(name, NOW - Duration::days(3 - i as i64), 0)).await;
        }
        dir
    }

    async fn assert_three_due(dir: &Path) {
        let store = FileStore::open(dir).await.unwrap();
        assert_eq!(
            names(&store.due(NOW, 5, 200).await.unwrap()),
            ["a.example.com", "b.example.com", "c.example.com"]
        );
        assert_eq!(store.list().await.unwrap().len(), 3);
        // The store keeps working, and the next opening agrees.
        let extra = create(&store, &record("d.example.com", NOW, 0)).await;
        drop(store);
        let store = FileStore::open(dir).await.unwrap();
        assert_eq!(store.due(NOW, 5, 200).await.unwrap().len(), 4);
        assert_eq!(store.load(&extra.domain).await.unwrap(), Some(extra));
    }

    #[tokio::test]
    async fn records_missing_from_the_journal_are_found_after_reopening() {
        // The journal deleted.
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        std::fs::remove_file(dir.join("index.log")).unwrap();
        assert_three_due(&dir).await;

        // The journal cut back to its header: the files are indexed at open.
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        std::fs::write(dir.join("index.log"), "certkeeper-index 1\n").unwrap();
        assert_three_due(&dir).await;

        // Garbage appended to the journal.
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        append(&dir.join("index.log"), "garbage\n\0\0\0 more garbage\nP x");
        assert_three_due(&dir).await;

        // Not a journal at all.
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        std::fs::write(dir.join("index.log"), [0xff, 0xfe, 0, 1]).unwrap();
        assert_three_due(&dir).await;

        // A record file that arrived while the store was closed (a crash between
        // writing it and journaling it looks the same).
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        let other = tmp.path().join("other");
        let store = FileStore::open(&other).await.unwrap();
        create(&store, &record("e.example.com", NOW - Duration::days(9), 0)).await;
        drop(store);
        std::fs::copy(
            other.join("certs").join("e.example.com"),
            dir.join("certs").join("e.example.com"),
        )
        .unwrap();
        let store = FileStore::open(&dir).await.unwrap();
        assert_eq!(
            names(&store.due(NOW, 5, 200).await.unwrap()),
            [
                "e.example.com",
                "a.example.com",
                "b.example.com",
                "c.example.com"
            ]
        );
        drop(store);

        // A record file removed while the store was closed.
        std::fs::remove_file(dir.join("certs").join("b.example.com")).unwrap();
        let store = FileStore::open(&dir).await.unwrap();
        assert_eq!(
            names(&store.due(NOW, 5, 200).await.unwrap()),
            ["e.example.com", "a.example.com", "c.example.com"]
        );
        assert!(!store
            .list()
            .await
            .unwrap()
            .contains(&domain("b.example.com")));
    }

    #[tokio::test]
    async fn a_torn_journal_line_is_ignored_and_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        let journal = dir.join("index.log");
        append(&journal, "P d.example.com 17409");
        assert_three_due(&dir).await;
        let text = std::fs::read_to_string(&journal).unwrap();
        assert!(!text.contains("17409"), "{text}");
    }

    #[tokio::test]
    async fn a_journal_line_whose_write_never_landed_is_corrected_at_open() {
        // A crash after journaling a save but before renaming the record into
        // place: the journal says "not due until next year", the record on disk
        // is still due. The record wins.
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        let next_year = (NOW + Duration::days(365)).unix_timestamp_nanos();
        append(
            &dir.join("index.log"),
            &journal_line(&format!("P b.example.com {next_year} 0 2")),
        );
        assert_three_due(&dir).await;

        // The same for a delete that was journaled but never happened.
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        append(&dir.join("index.log"), &journal_line("D a.example.com"));
        assert_three_due(&dir).await;
    }

    #[tokio::test]
    async fn a_group_commit_whose_renames_never_landed_is_corrected_at_open() {
        // A crash after journaling a whole group of saves (concurrent saves
        // share one journal flush) but before their records were renamed
        // into place: every line of the group is ahead of the records.
        let tmp = tempfile::tempdir().unwrap();
        let dir = three_due_records(&tmp).await;
        let next_year = (NOW + Duration::days(365)).unix_timestamp_nanos();
        let mut group = String::new();
        for name in ["a.example.com", "b.example.com", "c.example.com"] {
            group.push_str(&journal_line(&format!("P {name} {next_year} 0 2")));
        }
        group.push_str(&journal_line("D b.example.com"));
        append(&dir.join("index.log"), &group);
        assert_three_due(&dir).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_saves_commit_together_and_keep_compare_and_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        // 100 new records at once: more than one group.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let store = store.clone();
            tasks.spawn(async move {
                let r = record(&format!("n{i:03}.example.com"), NOW - Duration::days(1), 0);
                store.save(&r).await
            });
        }
        while let Some(saved) = tasks.join_next().await {
            assert_eq!(saved.unwrap().unwrap(), 1);
        }
        // Eight writers racing on one record at the same version: one wins,
        // the others get a conflict naming the version they expected.
        let shared = create(&store, &record("shared.example.com", NOW, 0)).await;
        for _ in 0..5 {
            let current = store.load(&shared.domain).await.unwrap().unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for attempt in 0..8 {
                let (store, mut r) = (store.clone(), current.clone());
                r.attempts = attempt % 3;
                tasks.spawn(async move { store.save(&r).await });
            }
            let (mut won, mut lost) = (0, 0);
            while let Some(saved) = tasks.join_next().await {
                match saved.unwrap() {
                    Ok(version) => {
                        assert_eq!(version, current.version + 1);
                        won += 1;
                    }
                    Err(Error::Conflict { expected, .. }) => {
                        assert_eq!(expected, current.version);
                        lost += 1;
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            assert_eq!((won, lost), (1, 7));
        }
        assert!(temp_files(&dir.join("certs")).is_empty());
        drop(store);
        let store = FileStore::open(&dir).await.unwrap();
        // The 100 new records and the shared one, each at its last version.
        let due = store.due(NOW, 5, 200).await.unwrap();
        assert_eq!(due.len(), 101);
        let shared = store.load(&shared.domain).await.unwrap().unwrap();
        assert_eq!(shared.version, 6);
        assert!(due
            .iter()
            .any(|e| e.domain == shared.domain && e.version == 6 && e.attempts == shared.attempts));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_save_whose_caller_goes_away_is_carried_out_whole() {
        // Each save is polled once (its record file being written), then
        // dropped: the write still ends as a whole save, never as a stray
        // temporary file.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        for i in 0..20 {
            let r = record(&format!("gone{i:02}.example.com"), NOW, 0);
            tokio::select! {
                biased;
                saved = store.save(&r) => panic!("a save ended on its first poll: {saved:?}"),
                () = std::future::ready(()) => {}
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.list().await.unwrap().len() < 20 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(store.list().await.unwrap().len(), 20);
        assert!(temp_files(&dir.join("certs")).is_empty());
        drop(store);
        // The saves' own tasks may hold the store a moment longer (their
        // group commit ends after the records are in place).
        let store = loop {
            match FileStore::open(&dir).await {
                Ok(store) => break store,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the store is still open after its saves ended: {e}"),
            }
        };
        assert_eq!(store.due(NOW, 5, 200).await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn no_temporary_file_is_left_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        let mut r = create(&store, &with_certificate(record("a.example.com", NOW, 0))).await;
        for i in 0..20 {
            r.attempts = i % 3;
            r.version = store.save(&r).await.unwrap();
        }
        // Failed writes leave nothing either.
        let stale = CertRecord {
            version: 1,
            ..r.clone()
        };
        assert!(matches!(
            store.save(&stale).await,
            Err(Error::Conflict { .. })
        ));
        create(&store, &record("b.example.com", NOW, 0)).await;
        store.delete(&domain("b.example.com")).await.unwrap();
        let account = AccountRecord {
            id: "acct".into(),
            version: 0,
            sealed_credentials: Sealed::with_header(1, b"x"),
            created: NOW,
        };
        store.save_account(&account).await.unwrap();
        store.put_meta_if_absent("k", "v").await.unwrap();
        assert_eq!(temp_files(&dir), Vec::<PathBuf>::new());
        drop(store);

        // Temporary files a crash left are removed at open.
        let left = [
            dir.join("certs").join(".tmp-4242-7"),
            dir.join(".tmp-4242-8"),
            dir.join("meta").join(".tmp-1-1"),
        ];
        for path in &left {
            std::fs::write(path, "half a record").unwrap();
        }
        let store = FileStore::open(&dir).await.unwrap();
        assert_eq!(temp_files(&dir), Vec::<PathBuf>::new());
        assert_eq!(store.list().await.unwrap(), [domain("a.example.com")]);
    }

    #[tokio::test]
    async fn a_corrupt_record_is_an_error_on_load_and_skipped_by_due() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        let a = create(&store, &record("a.example.com", NOW - Duration::days(2), 0)).await;
        let b = create(&store, &record("b.example.com", NOW - Duration::days(1), 0)).await;
        let certs = dir.join("certs");
        std::fs::write(certs.join("a.example.com"), "{\"domain\": \"a.exam").unwrap();

        match store.load(&a.domain).await {
            Err(Error::Corrupt { key, .. }) => assert_eq!(key, "a.example.com"),
            other => panic!("expected Error::Corrupt, got {other:?}"),
        }
        // `due` answers from the index, without reading records: the damage
        // shows when the cycle loads the record, as Error::Corrupt.
        assert_eq!(
            names(&store.due(NOW, 5, 200).await.unwrap()),
            vec!["a.example.com", "b.example.com"]
        );
        assert!(matches!(store.save(&a).await, Err(Error::Corrupt { .. })));
        // Deleting removes it; the domain can then start again.
        assert!(store.delete(&a.domain).await.unwrap());
        let fresh = CertRecord {
            version: 0,
            ..a.clone()
        };
        assert_eq!(store.save(&fresh).await.unwrap(), 1);

        // A record moved from another domain's file is not served under this name.
        let moved = serde_json::to_vec(&b).unwrap();
        std::fs::write(certs.join("c.example.com"), moved).unwrap();
        drop(store);

        // Found at open (not in the journal) and unreadable: listed, reported,
        // skipped; opening does not fail.
        std::fs::write(certs.join("d.example.com"), [0u8; 10]).unwrap();
        let store = FileStore::open(&dir).await.unwrap();
        for bad in ["c.example.com", "d.example.com"] {
            assert!(
                matches!(store.load(&domain(bad)).await, Err(Error::Corrupt { .. })),
                "{bad}"
            );
            assert!(store.list().await.unwrap().contains(&domain(bad)), "{bad}");
        }
        let due = store.due(NOW, 5, 200).await.unwrap();
        assert_eq!(names(&due), ["a.example.com", "b.example.com"]);
        assert_eq!(
            names(&store.due(NOW, 5, 1).await.unwrap()),
            ["a.example.com"]
        );
    }

    #[tokio::test]
    async fn a_record_with_an_oversized_envelope_is_corrupt() {
        use certkeeper::cipher::MAX_ENVELOPE_LEN;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        create(&store, &with_certificate(record("a.example.com", NOW, 0))).await;
        // Someone edits the record file: a sealed key far over 1 MiB.
        let path = dir.join("certs").join("a.example.com");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json["certificate"]["sealed_key"] = "A".repeat(2 * MAX_ENVELOPE_LEN).into();
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        match store.load(&domain("a.example.com")).await {
            Err(Error::Corrupt { key, reason }) => {
                assert_eq!(key, "a.example.com");
                assert!(reason.contains("larger than 1 MiB"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn hostile_account_ids_and_meta_keys_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let stores: [Box<dyn CertStore>; 2] = [
            Box::new(FileStore::open(&dir).await.unwrap()),
            Box::new(MemoryStore::new()),
        ];
        let before = files_under(tmp.path());
        let long = "a".repeat(129);
        for store in &stores {
            for key in [
                "../x",
                "a/b",
                "",
                ".hidden",
                ".",
                "..",
                "/etc/passwd",
                "a\\b",
                "UPPER",
                "x\0y",
                &long,
            ] {
                let refused = |r: Result<()>| matches!(r, Err(Error::InvalidKey { .. }));
                let account = AccountRecord {
                    id: key.into(),
                    version: 0,
                    sealed_credentials: Sealed::with_header(1, b"x"),
                    created: NOW,
                };
                assert!(refused(store.load_account(key).await.map(drop)), "{key:?}");
                assert!(
                    refused(store.save_account(&account).await.map(drop)),
                    "{key:?}"
                );
                assert!(refused(store.get_meta(key).await.map(drop)), "{key:?}");
                assert!(
                    refused(store.put_meta_if_absent(key, "v").await.map(drop)),
                    "{key:?}"
                );
            }
        }
        assert_eq!(files_under(tmp.path()), before);
        assert_eq!(
            stores[0].list_accounts().await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn ipv6_literals_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        let mut saved = Vec::new();
        for (name, days) in [("2001:db8::1", -2), ("::1", -1), ("::ffff:192.0.2.1", 0)] {
            let r = with_certificate(record(name, NOW + Duration::days(days), 0));
            saved.push(create(&store, &r).await);
        }
        for r in &saved {
            assert_eq!(store.load(&r.domain).await.unwrap().as_ref(), Some(r));
        }
        drop(store);
        for path in files_under(&dir.join("certs")) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.contains(':'), "{name}");
        }
        let store = FileStore::open(&dir).await.unwrap();
        assert_eq!(
            store.due(NOW, 5, 200).await.unwrap(),
            saved.iter().map(DueEntry::of).collect::<Vec<_>>()
        );
        let mut listed: Vec<Domain> = saved.iter().map(|r| r.domain.clone()).collect();
        listed.sort();
        assert_eq!(store.list().await.unwrap(), listed);
        assert!(store.delete(&domain("[::1]")).await.unwrap());
        assert_eq!(store.load(&domain("::1")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_journal_is_rewritten_when_it_grows() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = FileStore::open(&dir).await.unwrap();
        let mut r = create(&store, &record("a.example.com", NOW, 0)).await;
        for i in 0..150 {
            r.renew_date = NOW + Duration::minutes(i);
            r.version = store.save(&r).await.unwrap();
        }
        let lines = std::fs::read_to_string(dir.join("index.log"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 100, "the journal has {lines} lines for one record");
        drop(store);
        let store = FileStore::open(&dir).await.unwrap();
        assert_eq!(
            store.due(r.renew_date, 5, 10).await.unwrap(),
            vec![DueEntry::of(&r)]
        );
        assert!(store
            .due(r.renew_date - Duration::seconds(1), 5, 10)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_directory_opens_once_per_process() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path()).await.unwrap();
        let again = FileStore::open(tmp.path().join(".")).await;
        assert!(matches!(again, Err(Error::Store { .. })), "{again:?}");
        // A clone shares the one store.
        let clone = store.clone();
        create(&clone, &record("a.example.com", NOW, 0)).await;
        assert_eq!(store.list().await.unwrap().len(), 1);
        drop(store);
        drop(clone);
        let store = FileStore::open(tmp.path()).await.unwrap();
        assert_eq!(store.list().await.unwrap().len(), 1);
    }

    /// Set in the child process of
    /// `a_second_process_cannot_open_a_folder_in_use`: the folder to hold.
    const HOLD_STORE_VAR: &str = "CERTKEEPER_TEST_HOLD_STORE";
    const HELD: &str = "certkeeper-test: store held";

    /// The child's part of `a_second_process_cannot_open_a_folder_in_use`:
    /// opens the store named by `CERTKEEPER_TEST_HOLD_STORE`, says so on
    /// stdout, and keeps it open until its stdin closes.
    async fn hold_the_store(dir: std::ffi::OsString) {
        let store = FileStore::open(&dir).await.unwrap();
        store.put_meta_if_absent("holder", "child").await.unwrap();
        println!("{HELD}");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest).unwrap();
        drop(store);
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_a_folder_in_use() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};

        // The same test, run again as a child process, holds the store.
        if let Some(dir) = std::env::var_os(HOLD_STORE_VAR) {
            return hold_the_store(dir).await;
        }

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        // This test's name for the harness: its module path without the crate.
        let (_, module) = module_path!().split_once("::").unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                format!("{module}::a_second_process_cannot_open_a_folder_in_use").as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLD_STORE_VAR, &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // Blocks until the child holds the store; ends if the child died.
        // The test harness may print its own words before ours on the line.
        let held = lines
            .by_ref()
            .map_while(|l| l.ok())
            .any(|l| l.ends_with(HELD));
        assert!(held, "the child process did not open the store");

        match FileStore::open(&dir).await {
            Err(e @ Error::StoreInUse { .. }) => {
                let message = e.to_string();
                assert!(message.contains("in use by another process"), "{message}");
                assert_eq!(e.code(), "store_in_use");
                let Error::StoreInUse { holder, lock, .. } = e else {
                    unreachable!()
                };
                assert_eq!(holder, Some(child.id()), "{message}");
                assert!(lock.ends_with("lock"), "{message}");
            }
            other => panic!("opened a folder another process holds: {other:?}"),
        }

        // Closing its stdin lets the child drop the store and exit.
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert!(status.success(), "{status}");
        let store = FileStore::open(&dir).await.unwrap();
        assert_eq!(
            store.get_meta("holder").await.unwrap().as_deref(),
            Some("child")
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn existing_directories_with_wider_permissions_are_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let wide = std::fs::Permissions::from_mode(0o755);
        for sub in ["", "certs", "accounts", "meta"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            std::fs::set_permissions(dir.join(sub), wide.clone()).unwrap();
        }
        std::fs::set_permissions(dir.join("meta"), std::fs::Permissions::from_mode(0o701)).unwrap();
        let store = FileStore::open(&dir).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for sub in ["", "certs", "accounts", "meta"] {
            assert_eq!(mode(&dir.join(sub)), 0o700, "{sub:?}");
        }
        assert_eq!(mode(&dir.join("lock")), 0o600);
        drop(store);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_thousand_records_due_after_reopening() {
        const COUNT: usize = 20_000;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        // Written straight into the documented layout: one JSON record per file.
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let mut model = BTreeMap::new();
        for i in 0..COUNT {
            // Many records share a renew date, so the domain breaks ties.
            let minutes = (i * 7919 % 5000) as i64;
            let r = CertRecord {
                version: 1,
                ..record(
                    &format!("host{i}.example.net"),
                    NOW + Duration::minutes(minutes - 2000),
                    (i % 7) as u32,
                )
            };
            std::fs::write(
                certs.join(r.domain.as_str()),
                serde_json::to_vec(&r).unwrap(),
            )
            .unwrap();
            model.insert(r.domain.clone(), r);
        }

        let store = FileStore::open(&dir).await.unwrap();
        assert_eq!(store.list().await.unwrap().len(), COUNT);
        // Changes through the store: records move out of and into the due set,
        // some are deleted.
        for i in (0..COUNT).step_by(97) {
            let name = domain(&format!("host{i}.example.net"));
            let mut r = model.remove(&name).unwrap();
            match i % 3 {
                0 => {
                    assert!(store.delete(&name).await.unwrap());
                    continue;
                }
                1 => r.renew_date = NOW - Duration::days(30) + Duration::seconds(i as i64),
                _ => r.renew_date = NOW + Duration::days(30),
            }
            r.attempts = 0;
            r.version = store.save(&r).await.unwrap();
            model.insert(name, r);
        }
        drop(store);

        let store = FileStore::open(&dir).await.unwrap();
        let mut expected: Vec<&CertRecord> = model.values().filter(|r| r.is_due(NOW, 5)).collect();
        expected.sort_by(|a, b| (a.renew_date, &a.domain).cmp(&(b.renew_date, &b.domain)));
        assert!(expected.len() > 1000);
        let due = store.due(NOW, 5, 200).await.unwrap();
        assert_eq!(due.len(), 200);
        assert_eq!(
            due,
            expected[..200]
                .iter()
                .map(|r| DueEntry::of(r))
                .collect::<Vec<_>>()
        );
        assert_eq!(store.list().await.unwrap().len(), model.len());
    }
}

// ---------------------------------------------------------------------------
// The checks of settings, the attempt limit and the cluster catch broken
// ones too.

#[derive(Debug, Clone, Copy, PartialEq)]
enum ClusterFlaw {
    None,
    /// Every holder is granted the lease.
    LeaseAlwaysGranted,
    /// A mark forgets the `ago` it is given.
    MarkIgnoresAgo,
    /// Answers are given after they expire.
    ChallengesNeverExpire,
    /// Deletions are missing from the change feed.
    FeedMissesDeletes,
    /// `set_meta` keeps the first value.
    SetMetaKeepsFirst,
    /// `at_attempt_limit` also names the records one attempt short of it.
    LimitOffByOne,
    /// A budget grants a unit past its limit.
    BudgetIgnoresLimit,
    /// A budget never frees the units that left its window.
    BudgetNeverForgets,
}

/// A `MemoryStore` whose settings, attempt limit or cluster have one
/// deliberate flaw.
#[derive(Debug)]
struct FlawedCluster {
    inner: Arc<MemoryStore>,
    parts: FlawedParts,
}

/// The cluster of a [`FlawedCluster`]: the memory store's own, with the flaw.
#[derive(Debug)]
struct FlawedParts {
    inner: Arc<MemoryStore>,
    flaw: ClusterFlaw,
    /// Every answer ever put, for a store whose answers never expire.
    kept: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl FlawedParts {
    fn cluster(&self) -> &dyn ClusterStore {
        self.inner.cluster().expect("a memory store has a cluster")
    }
}

fn flawed_cluster(flaw: ClusterFlaw) -> FlawedCluster {
    let inner = Arc::new(MemoryStore::new());
    FlawedCluster {
        inner: inner.clone(),
        parts: FlawedParts {
            inner,
            flaw,
            kept: Default::default(),
        },
    }
}

cert_store_over_inner!(FlawedCluster {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        self.inner.load(domain).await
    }
    async fn save(&self, record: &CertRecord) -> Result<u64> {
        self.inner.save(record).await
    }
    async fn delete(&self, domain: &Domain) -> Result<bool> {
        self.inner.delete(domain).await
    }
    async fn list(&self) -> Result<Vec<Domain>> {
        self.inner.list().await
    }
    async fn due(&self, now: OffsetDateTime, max: u32, limit: usize) -> Result<Vec<DueEntry>> {
        self.inner.due(now, max, limit).await
    }
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        self.inner.put_meta_if_absent(key, value).await
    }
    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        if self.parts.flaw == ClusterFlaw::SetMetaKeepsFirst {
            return self.inner.put_meta_if_absent(key, value).await.map(drop);
        }
        self.inner.set_meta(key, value).await
    }
    async fn at_attempt_limit(
        &self,
        max_attempts: u32,
        limit: usize,
    ) -> Result<certkeeper::store::PassedOver> {
        let max = if self.parts.flaw == ClusterFlaw::LimitOffByOne {
            max_attempts - 1
        } else {
            max_attempts
        };
        self.inner.at_attempt_limit(max, limit).await
    }
    fn cluster(&self) -> Option<&dyn ClusterStore> {
        Some(&self.parts)
    }
});

#[async_trait::async_trait]
impl Leases for FlawedParts {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: StdDuration) -> Result<bool> {
        let granted = self.cluster().acquire_lease(name, holder, ttl).await?;
        Ok(granted || self.flaw == ClusterFlaw::LeaseAlwaysGranted)
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        self.cluster().release_lease(name, holder).await
    }
    async fn mark_age(&self, name: &str) -> Result<Option<StdDuration>> {
        self.cluster().mark_age(name).await
    }
    async fn set_mark(&self, name: &str, ago: StdDuration) -> Result<()> {
        let ago = if self.flaw == ClusterFlaw::MarkIgnoresAgo {
            StdDuration::ZERO
        } else {
            ago
        };
        self.cluster().set_mark(name, ago).await
    }
}

#[async_trait::async_trait]
impl ChallengeAnswers for FlawedParts {
    async fn put_challenge(&self, token: &str, answer: &str, ttl: StdDuration) -> Result<()> {
        self.kept
            .lock()
            .unwrap()
            .insert(token.to_owned(), answer.to_owned());
        self.cluster().put_challenge(token, answer, ttl).await
    }
    async fn get_challenge(&self, token: &str) -> Result<Option<String>> {
        let found = self.cluster().get_challenge(token).await?;
        if self.flaw == ClusterFlaw::ChallengesNeverExpire && found.is_none() {
            return Ok(self.kept.lock().unwrap().get(token).cloned());
        }
        Ok(found)
    }
    async fn delete_challenge(&self, token: &str) -> Result<()> {
        self.kept.lock().unwrap().remove(token);
        self.cluster().delete_challenge(token).await
    }
    async fn purge_expired_challenges(&self) -> Result<u64> {
        self.cluster().purge_expired_challenges().await
    }
}

#[async_trait::async_trait]
impl ChangeFeed for FlawedParts {
    async fn changes_since(&self, cursor: u64, limit: usize) -> Result<certkeeper::store::Changes> {
        let mut changes = self.cluster().changes_since(cursor, limit).await?;
        if self.flaw == ClusterFlaw::FeedMissesDeletes {
            changes.changes.retain(|c| !c.deleted);
        }
        Ok(changes)
    }
}

#[async_trait::async_trait]
impl Budgets for FlawedParts {
    async fn take_budget(&self, key: &str, window: StdDuration, limit: u32) -> Result<bool> {
        let (window, limit) = match self.flaw {
            ClusterFlaw::BudgetIgnoresLimit => (window, u32::MAX),
            ClusterFlaw::BudgetNeverForgets => (StdDuration::from_secs(u32::MAX.into()), limit),
            _ => (window, limit),
        };
        self.cluster().take_budget(key, window, limit).await
    }
    async fn budget_used(&self, key: &str, window: StdDuration) -> Result<u32> {
        let window = match self.flaw {
            ClusterFlaw::BudgetNeverForgets => StdDuration::from_secs(u32::MAX.into()),
            _ => window,
        };
        self.cluster().budget_used(key, window).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_limit_and_cluster_checks_catch_broken_stores() {
    use std::future::Future;
    use std::pin::Pin;
    type Check = for<'a> fn(&'a FlawedCluster) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
    let cases: [(ClusterFlaw, &str, Check); 8] = [
        (ClusterFlaw::LimitOffByOne, "at_attempt_limit", |s| {
            Box::pin(conformance::at_attempt_limit(s))
        }),
        (ClusterFlaw::LeaseAlwaysGranted, "leases", |s| {
            Box::pin(conformance::leases(&s.parts))
        }),
        (ClusterFlaw::MarkIgnoresAgo, "marks", |s| {
            Box::pin(conformance::marks(&s.parts))
        }),
        (ClusterFlaw::ChallengesNeverExpire, "challenges", |s| {
            Box::pin(conformance::challenges(&s.parts))
        }),
        (ClusterFlaw::FeedMissesDeletes, "change_feed", |s| {
            Box::pin(conformance::change_feed(s))
        }),
        (
            ClusterFlaw::SetMetaKeepsFirst,
            "deletion_and_settings",
            |s| Box::pin(conformance::deletion_and_settings(s)),
        ),
        (ClusterFlaw::BudgetIgnoresLimit, "budgets", |s| {
            Box::pin(conformance::budgets(&s.parts))
        }),
        (ClusterFlaw::BudgetNeverForgets, "budgets", |s| {
            Box::pin(conformance::budgets(&s.parts))
        }),
    ];
    let mut runs = tokio::task::JoinSet::new();
    for (flaw, name, check) in cases {
        for (flaw, should_pass) in [(ClusterFlaw::None, true), (flaw, false)] {
            runs.spawn(async move {
                let store = Arc::new(flawed_cluster(flaw));
                let passed = tokio::spawn(async move { check(&store).await })
                    .await
                    .is_ok();
                assert_eq!(passed, should_pass, "{name} with {flaw:?}");
            });
        }
    }
    while let Some(run) = runs.join_next().await {
        run.unwrap();
    }
}
