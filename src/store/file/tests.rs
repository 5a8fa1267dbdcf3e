//! The optional methods of the file store, and its due index over the files.

use std::time::Duration;

use time::macros::datetime;
use time::OffsetDateTime;

use super::FileStore;
use crate::cipher::Sealed;
use crate::store::{
    AccountRecord, CertRecord, CertStore, ChallengeAnswers, Change, ChangeFeed, Leases,
};
use crate::{Domain, Error};

const NOW: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

fn domain(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

fn record(name: &str, renew_days: i64, attempts: u32) -> CertRecord {
    let mut record = CertRecord::new(domain(name), NOW + time::Duration::days(renew_days));
    record.attempts = attempts;
    record
}

fn account(id: &str) -> AccountRecord {
    AccountRecord {
        id: id.into(),
        version: 0,
        sealed_credentials: Sealed::with_header(1, b"opaque"),
        created: NOW,
    }
}

fn change(seq: u64, name: &str, deleted: bool) -> Change {
    Change {
        seq,
        domain: domain(name),
        deleted,
    }
}

fn is_invalid_key<T: std::fmt::Debug>(result: crate::Result<T>) -> bool {
    matches!(result, Err(Error::InvalidKey { .. }))
}

// Expiry follows the store's clock, as the in-process cluster's tests
// (store::cluster) and the conformance suite check; here, what the file
// store adds: its clones share one cluster, and keys are checked.
#[tokio::test]
async fn a_lease_is_refused_to_another_holder_until_it_is_released() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).await.unwrap();
    let ttl = Duration::from_secs(30);

    assert!(store.acquire_lease("cycle", "a", ttl).await.unwrap());
    assert!(!store.acquire_lease("cycle", "b", ttl).await.unwrap());
    // Other leases are independent.
    assert!(store.acquire_lease("other", "b", ttl).await.unwrap());
    // The holder renews it.
    assert!(store.acquire_lease("cycle", "a", ttl).await.unwrap());

    // Only the holder releases it; then it is free at once.
    assert!(!store.release_lease("cycle", "b").await.unwrap());
    assert!(store.release_lease("cycle", "a").await.unwrap());
    assert!(!store.release_lease("cycle", "a").await.unwrap());
    assert!(store.acquire_lease("cycle", "b", ttl).await.unwrap());

    // A clone is the same store.
    let clone = store.clone();
    assert!(!clone.acquire_lease("cycle", "a", ttl).await.unwrap());

    assert!(is_invalid_key(
        store.acquire_lease("../cycle", "a", ttl).await
    ));
    assert!(is_invalid_key(
        store.acquire_lease("cycle", "A B", ttl).await
    ));
    assert!(is_invalid_key(store.release_lease("", "a").await));
}

#[tokio::test]
async fn challenge_answers_are_kept_until_they_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).await.unwrap();
    let ttl = Duration::from_secs(300);
    store
        .put_challenge("Tok-en_1", "Tok-en_1.thumbprint", ttl)
        .await
        .unwrap();
    store
        .put_challenge("token2", "token2.thumbprint", ttl)
        .await
        .unwrap();

    assert_eq!(
        store.get_challenge("Tok-en_1").await.unwrap().as_deref(),
        Some("Tok-en_1.thumbprint")
    );
    assert_eq!(store.get_challenge("unknown").await.unwrap(), None);

    store.delete_challenge("token2").await.unwrap();
    assert_eq!(store.get_challenge("token2").await.unwrap(), None);
    // Deleting what is not there is fine.
    store.delete_challenge("token2").await.unwrap();
    // A live answer is not purged.
    assert_eq!(store.purge_expired_challenges().await.unwrap(), 0);
    assert!(store.get_challenge("Tok-en_1").await.unwrap().is_some());

    assert!(is_invalid_key(store.put_challenge("a/b", "x", ttl).await));
    assert!(is_invalid_key(store.get_challenge("").await));
    assert!(is_invalid_key(store.delete_challenge("a.b").await));
}

#[tokio::test]
async fn the_change_feed_lists_saves_and_deletes_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).await.unwrap();
    let empty = store.changes_since(0, 10).await.unwrap();
    assert!(empty.changes.is_empty() && !empty.reset);

    let mut a = record("a.example.com", 0, 0);
    a.version = store.save(&a).await.unwrap();
    let b = record("b.example.com", 0, 0);
    store.save(&b).await.unwrap();
    a.attempts = 1;
    a.version = store.save(&a).await.unwrap();
    // What fails or changes nothing is not a change.
    let stale = record("a.example.com", 0, 0);
    assert!(matches!(
        store.save(&stale).await,
        Err(Error::Conflict { .. })
    ));
    assert!(store.delete(&domain("b.example.com")).await.unwrap());
    assert!(!store.delete(&domain("b.example.com")).await.unwrap());
    store.save_account(&account("acct")).await.unwrap();
    store.set_meta("key", "value").await.unwrap();

    let all = store.changes_since(0, 10).await.unwrap();
    assert_eq!(
        all.changes,
        [
            change(1, "a.example.com", false),
            change(2, "b.example.com", false),
            change(3, "a.example.com", false),
            change(4, "b.example.com", true),
        ]
    );
    assert_eq!((all.cursor, all.reset), (4, false));

    // Page by page from a cursor.
    let page = store.changes_since(1, 2).await.unwrap();
    assert_eq!(
        page.changes,
        [
            change(2, "b.example.com", false),
            change(3, "a.example.com", false)
        ]
    );
    assert_eq!(page.cursor, 3);
    let rest = store.changes_since(page.cursor, 10).await.unwrap();
    assert_eq!(rest.changes, [change(4, "b.example.com", true)]);
    let none = store.changes_since(rest.cursor, 10).await.unwrap();
    assert!(none.changes.is_empty() && !none.reset);
    assert_eq!(none.cursor, 4);

    // A cursor this store never gave.
    assert!(store.changes_since(99, 10).await.unwrap().reset);
}

#[tokio::test]
async fn removals_and_set_meta_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = FileStore::open(&dir).await.unwrap();
    store.save_account(&account("gone")).await.unwrap();
    store.save_account(&account("kept")).await.unwrap();
    store.put_meta_if_absent("main-domain", "a").await.unwrap();
    store.put_meta_if_absent("dropped", "x").await.unwrap();
    store.set_meta("main-domain", "b").await.unwrap();
    store.set_meta("fresh", "c").await.unwrap();

    assert!(store.delete_account("gone").await.unwrap());
    assert!(!store.delete_account("gone").await.unwrap());
    assert!(!store.delete_account("never").await.unwrap());
    assert!(store.delete_meta("dropped").await.unwrap());
    assert!(!store.delete_meta("dropped").await.unwrap());
    assert!(is_invalid_key(store.delete_account("../kept").await));
    assert!(is_invalid_key(store.delete_meta(".hidden").await));
    assert!(is_invalid_key(store.set_meta("Main", "x").await));
    assert_eq!(
        store.get_meta("main-domain").await.unwrap().as_deref(),
        Some("b")
    );
    // `set_meta` replaced what `put_meta_if_absent` sees.
    assert_eq!(
        store.put_meta_if_absent("main-domain", "z").await.unwrap(),
        "b"
    );
    let ttl = Duration::from_secs(3600);
    assert!(store.acquire_lease("cycle", "a", ttl).await.unwrap());
    store.save(&record("a.example.com", 0, 0)).await.unwrap();
    drop(store);

    let store = FileStore::open(&dir).await.unwrap();
    assert_eq!(store.load_account("gone").await.unwrap(), None);
    assert!(store.load_account("kept").await.unwrap().is_some());
    assert_eq!(store.list_accounts().await.unwrap(), ["kept"]);
    assert_eq!(
        store.get_meta("main-domain").await.unwrap().as_deref(),
        Some("b")
    );
    assert_eq!(store.get_meta("fresh").await.unwrap().as_deref(), Some("c"));
    assert_eq!(store.get_meta("dropped").await.unwrap(), None);
    // Only the files that should be there are, and no temporary file.
    let names = |sub: &str| {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("accounts"), ["kept"]);
    assert_eq!(names("meta"), ["fresh", "main-domain"]);
    // Coordination lives in memory: a new store starts free and afresh.
    assert!(store.acquire_lease("cycle", "b", ttl).await.unwrap());
    assert!(store.changes_since(0, 10).await.unwrap().changes.is_empty());
}

#[tokio::test]
async fn due_leaves_out_exhausted_and_unreadable_records_after_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = FileStore::open(&dir).await.unwrap();
    for (name, days, attempts) in [
        ("tired.example.com", -30, 5),
        ("a.example.com", -3, 0),
        ("b.example.com", -2, 4),
        ("later.example.com", 3, 0),
        ("broken.example.com", -40, 0),
    ] {
        store.save(&record(name, days, attempts)).await.unwrap();
    }
    let due: Vec<String> = store
        .due(NOW, 5, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.domain.to_string())
        .collect();
    assert_eq!(
        due,
        ["broken.example.com", "a.example.com", "b.example.com"]
    );
    drop(store);
    std::fs::write(dir.join("certs").join("broken.example.com"), "{ not json").unwrap();
    // Without the journal, every record file is read at open.
    std::fs::remove_file(dir.join("index.log")).unwrap();

    let store = FileStore::open(&dir).await.unwrap();
    let due = store.due(NOW, 5, 10).await.unwrap();
    let names: Vec<&str> = due.iter().map(|e| e.domain.as_str()).collect();
    assert_eq!(names, ["a.example.com", "b.example.com"]);
    assert_eq!((due[1].attempts, due[1].version), (4, 1));
    assert_eq!(due[1].renew_date, NOW - time::Duration::days(2));
    assert_eq!(store.due(NOW, 6, 1).await.unwrap()[0].attempts, 5);
    assert_eq!(store.list().await.unwrap().len(), 5);
    assert!(store.delete(&domain("broken.example.com")).await.unwrap());
    assert_eq!(store.list().await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_read_only_open_reads_a_held_store_and_refuses_every_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    assert!(matches!(
        FileStore::open_read_only(&dir).await,
        Err(Error::Io { .. })
    ));
    let store = FileStore::open(&dir).await.unwrap();
    store.save(&record("a.example.com", -1, 0)).await.unwrap();
    store.save(&record("b.example.com", 10, 2)).await.unwrap();
    store
        .set_meta("main-domain", "a.example.com")
        .await
        .unwrap();
    assert_eq!(FileStore::holder(&dir), Some(std::process::id()));

    let reader = FileStore::open_read_only(&dir).await.unwrap();
    assert!(reader.is_read_only() && !store.is_read_only());
    assert_eq!(
        reader.list().await.unwrap(),
        [domain("a.example.com"), domain("b.example.com")]
    );
    let due = reader.due(NOW, 5, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].domain, domain("a.example.com"));
    let b = reader
        .load(&domain("b.example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.attempts, b.version), (2, 1));
    assert_eq!(
        reader.get_meta("main-domain").await.unwrap().as_deref(),
        Some("a.example.com")
    );

    let refused = |r: crate::Result<()>, op: &str| match r {
        Err(e @ Error::ReadOnly { .. }) => {
            assert!(e.to_string().contains(op), "{e}");
            assert_eq!(e.code(), "read_only");
        }
        other => panic!("{op}: {other:?}"),
    };
    refused(reader.save(&b).await.map(drop), "save");
    refused(
        reader.delete(&domain("a.example.com")).await.map(drop),
        "delete",
    );
    refused(reader.set_meta("k", "v").await, "set_meta");
    refused(
        reader.delete_meta("main-domain").await.map(drop),
        "delete_meta",
    );
    refused(
        reader.put_meta_if_absent("k", "v").await.map(drop),
        "put_meta_if_absent",
    );
    refused(
        reader.save_account(&account("acct")).await.map(drop),
        "save_account",
    );
    refused(
        reader
            .acquire_lease("cycle", "cli", Duration::from_secs(5))
            .await
            .map(drop),
        "acquire_lease",
    );
    // Nothing changed under the holder, which keeps writing.
    assert_eq!(store.list().await.unwrap().len(), 2);
    store.save(&record("c.example.com", -2, 0)).await.unwrap();
    assert_eq!(
        store.load(&domain("b.example.com")).await.unwrap().unwrap(),
        b
    );
    // A new read-only open sees the new record.
    let again = FileStore::open_read_only(&dir).await.unwrap();
    assert_eq!(again.due(NOW, 5, 10).await.unwrap().len(), 2);
    drop(store);
    assert_eq!(FileStore::holder(&dir), None);
}

#[tokio::test]
async fn read_only_opens_while_the_holder_writes_always_see_whole_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = FileStore::open(&dir).await.unwrap();
    for i in 0..20 {
        store
            .save(&record(&format!("d{i}.example.com"), i, 0))
            .await
            .unwrap();
    }
    // The holder replaces records, deletes and adds others, and rewrites
    // its journal (it compacts past 2 x records + 64 lines) meanwhile.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..15u32 {
                for i in 0..20 {
                    let d = domain(&format!("d{i}.example.com"));
                    let mut r = store.load(&d).await.unwrap().unwrap();
                    r.attempts = round % 5;
                    store.save(&r).await.unwrap();
                }
                let extra = domain(&format!("extra{round}.example.com"));
                store
                    .save(&CertRecord::new(extra.clone(), NOW))
                    .await
                    .unwrap();
                if round % 2 == 0 {
                    store.delete(&extra).await.unwrap();
                }
            }
        })
    };
    let mut opens = 0;
    while !writer.is_finished() {
        let reader = FileStore::open_read_only(&dir).await.unwrap();
        for d in reader.list().await.unwrap() {
            // A record listed may be deleted since, never torn.
            if let Some(r) = reader.load(&d).await.unwrap() {
                assert_eq!(r.domain, d);
            }
        }
        opens += 1;
    }
    writer.await.unwrap();
    assert!(opens > 0);
    // Once the holder is quiet, a read-only open agrees with it exactly.
    let reader = FileStore::open_read_only(&dir).await.unwrap();
    assert_eq!(reader.list().await.unwrap(), store.list().await.unwrap());
    assert_eq!(
        reader
            .due(NOW + time::Duration::days(30), 5, 100)
            .await
            .unwrap(),
        store
            .due(NOW + time::Duration::days(30), 5, 100)
            .await
            .unwrap()
    );
}
