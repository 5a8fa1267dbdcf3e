//! The keyring and key rotation on a real `FileStore`: seal under V1, add
//! V2, rotate, drop V1; interrupted rotations; concurrent writers; envelope
//! decoding of arbitrary bytes; no secret in the logs.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use certkeeper::cert::IssuerKind;
use certkeeper::cipher::{Keyring, Sealed, SecretCipher};
use certkeeper::issuer::SelfSignedIssuer;
use certkeeper::store::{AccountRecord, CertRecord, CertStore, FileStore, StoredCert};
use certkeeper::vault::{account_aad, cert_key_aad, rotate, rotate_batch, SealedValue};
use certkeeper::{Domain, Error, Result};
use common::logs::{captured, Captured};
use common::store::cert_store_over_inner;
use proptest::prelude::*;
use time::OffsetDateTime;

const V1: &str = "rotation test passphrase number one";
const V2: &str = "rotation test passphrase number two";
const V3: &str = "rotation test passphrase number three";

fn v1() -> Keyring {
    Keyring::from_keys(true, [(1, V1)]).unwrap()
}
fn v1_v2() -> Keyring {
    Keyring::from_keys(true, [(1, V1), (2, V2)]).unwrap()
}
fn v2() -> Keyring {
    Keyring::from_keys(true, [(2, V2)]).unwrap()
}

const DOMAINS: [&str; 5] = [
    "a.example.com",
    "b.example.com",
    "c.example.org",
    "localhost",
    "shop.example.net",
];
const ACCOUNTS: [&str; 2] = ["acme-staging", "acme-production"];

/// What was sealed, by value, to compare after rotation.
type Plaintexts = BTreeMap<String, String>;

/// Fills `store` with real self-signed certificates and two accounts, every
/// secret sealed by `cipher`; one extra record holds no certificate yet.
async fn fill(store: &dyn CertStore, cipher: &dyn SecretCipher) -> Plaintexts {
    let issuer = SelfSignedIssuer::new();
    let now = OffsetDateTime::now_utc();
    let mut plain = Plaintexts::new();
    for name in DOMAINS {
        let domain = Domain::new(name).unwrap();
        let issued = issuer.issue_blocking(&domain).unwrap();
        let sealed_key = cipher
            .seal(issued.key_pem.as_bytes(), &cert_key_aad(&domain))
            .unwrap();
        let mut record = CertRecord::new(domain.clone(), now);
        record.certificate = Some(StoredCert {
            chain_pem: issued.chain_pem.clone(),
            sealed_key,
            not_before: issued.not_before,
            not_after: issued.not_after,
            fingerprint: issued.fingerprint.clone(),
            issuer: IssuerKind::SELF_SIGNED,
        });
        record.renew_date = issued.not_after;
        store.save(&record).await.unwrap();
        plain.insert(name.to_string(), issued.key_pem.to_string());
    }
    let pending = CertRecord::new(Domain::new("pending.example.com").unwrap(), now);
    store.save(&pending).await.unwrap();
    for id in ACCOUNTS {
        let credentials = format!(r#"{{"id":"{id}","key":"account-private-key-{id}"}}"#);
        let record = AccountRecord {
            id: id.to_string(),
            version: 0,
            sealed_credentials: cipher
                .seal(credentials.as_bytes(), &account_aad(id))
                .unwrap(),
            created: now,
        };
        store.save_account(&record).await.unwrap();
        plain.insert(id.to_string(), credentials);
    }
    plain
}

/// The key version of every sealed value, by name.
async fn versions(store: &dyn CertStore) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for domain in store.list().await.unwrap() {
        let record = store.load(&domain).await.unwrap().unwrap();
        if let Some(cert) = record.certificate {
            let v = cert.sealed_key.key_version().unwrap();
            out.insert(domain.to_string(), v);
        }
    }
    for id in store.list_accounts().await.unwrap() {
        let record = store.load_account(&id).await.unwrap().unwrap();
        out.insert(id, record.sealed_credentials.key_version().unwrap());
    }
    out
}

/// Opens every sealed value with `cipher` and checks it against `expected`.
async fn assert_all_open(store: &dyn CertStore, cipher: &dyn SecretCipher, expected: &Plaintexts) {
    let mut seen = Plaintexts::new();
    for domain in store.list().await.unwrap() {
        let record = store.load(&domain).await.unwrap().unwrap();
        if let Some(cert) = record.certificate {
            let key = cipher
                .open(&cert.sealed_key, &cert_key_aad(&domain))
                .unwrap_or_else(|e| panic!("{domain}: {e}"));
            seen.insert(domain.to_string(), String::from_utf8(key.to_vec()).unwrap());
        }
    }
    for id in store.list_accounts().await.unwrap() {
        let record = store.load_account(&id).await.unwrap().unwrap();
        let credentials = cipher
            .open(&record.sealed_credentials, &account_aad(&id))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        seen.insert(id, String::from_utf8(credentials.to_vec()).unwrap());
    }
    assert_eq!(&seen, expected);
}

#[tokio::test]
async fn rotation_moves_every_secret_to_v2_and_v1_can_then_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let plain = fill(&store, &v1()).await;
    assert!(versions(&store).await.values().all(|v| *v == 1));

    // The operator adds _APP_OPENSSL_KEY_V2: new seals use V2, V1 still opens.
    let both = v1_v2();
    assert_eq!(both.sealing_version(), 2);
    assert_all_open(&store, &both, &plain).await;

    let report = rotate(&store, &both).await.unwrap();
    assert_eq!(report.target_version, 2);
    assert_eq!(report.resealed, DOMAINS.len() + ACCOUNTS.len());
    assert_eq!(report.already_current, 0);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(report.is_complete());

    // A fresh process with only V2 reads everything from disk.
    drop(store);
    let store = FileStore::open(dir.path()).await.unwrap();
    assert!(versions(&store).await.values().all(|v| *v == 2));
    assert_all_open(&store, &v2(), &plain).await;
    match v1().open(
        &store
            .load(&Domain::new("localhost").unwrap())
            .await
            .unwrap()
            .unwrap()
            .certificate
            .unwrap()
            .sealed_key,
        &cert_key_aad(&Domain::new("localhost").unwrap()),
    ) {
        Err(Error::MissingKey { version: 2, .. }) => {}
        other => panic!("{other:?}"),
    }

    // Running again writes nothing.
    let again = rotate(&store, &v2()).await.unwrap();
    assert_eq!(again.resealed, 0);
    assert_eq!(again.already_current, DOMAINS.len() + ACCOUNTS.len());
    assert!(again.is_complete());
}

#[tokio::test]
async fn the_check_with_only_the_new_key_names_what_still_needs_the_old_one() {
    // Step 5 of the documented procedure: a run with V2 alone before V1 goes.
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let plain = fill(&store, &v1()).await;
    let partial = rotate_batch(&store, &v1_v2(), 5).await.unwrap();
    assert!(!partial.is_complete());

    let check = rotate(&store, &v2()).await.unwrap();
    assert!(!check.is_complete());
    assert_eq!(check.resealed, 0);
    assert_eq!(check.already_current, 5);
    assert_eq!(check.failed.len(), DOMAINS.len() + ACCOUNTS.len() - 5);
    for failure in &check.failed {
        assert!(
            matches!(failure.error, Error::MissingKey { version: 1, .. }),
            "{}: {}",
            failure.value,
            failure.error
        );
    }
    // The check changed nothing: finishing with both keys, then checking
    // again, comes back clean.
    assert!(rotate(&store, &v1_v2()).await.unwrap().is_complete());
    let clean = rotate(&store, &v2()).await.unwrap();
    assert!(clean.is_complete() && clean.failed.is_empty());
    assert_all_open(&store, &v2(), &plain).await;
}

#[tokio::test]
async fn a_rotation_stopped_half_way_leaves_everything_readable_and_a_second_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let plain = fill(&store, &v1()).await;
    let both = v1_v2();

    let first = rotate_batch(&store, &both, 3).await.unwrap();
    assert_eq!(first.resealed, 3);
    assert!(first.stopped_at_limit);
    assert!(!first.is_complete());
    let mixed = versions(&store).await;
    assert_eq!(mixed.values().filter(|v| **v == 2).count(), 3);
    assert_eq!(mixed.values().filter(|v| **v == 1).count(), 4);
    // Half way, with both keys present, every value opens.
    assert_all_open(&store, &both, &plain).await;

    // As if the process had died: a new store instance, a new run.
    drop(store);
    let store = FileStore::open(dir.path()).await.unwrap();
    let second = rotate(&store, &both).await.unwrap();
    assert_eq!(second.resealed, 4);
    assert_eq!(second.already_current, 3);
    assert!(second.is_complete());
    assert_all_open(&store, &v2(), &plain).await;
}

/// A real `FileStore` with two faults injected for one domain: a concurrent
/// writer that wins the compare-and-swap once, or a save that fails.
#[derive(Debug)]
struct Faulty {
    inner: FileStore,
    domain: Domain,
    race_once: AtomicBool,
    fail_saves: AtomicBool,
}

cert_store_over_inner!(Faulty {
    async fn load(&self, domain: &Domain) -> Result<Option<CertRecord>> {
        self.inner.load(domain).await
    }
    async fn save(&self, record: &CertRecord) -> Result<u64> {
        if record.domain == self.domain {
            if self.fail_saves.load(Ordering::SeqCst) {
                return Err(Error::store("file", "disk full"));
            }
            if self.race_once.swap(false, Ordering::SeqCst) {
                // A renewal attempt of another instance lands first.
                let mut theirs = self.inner.load(&record.domain).await?.unwrap();
                theirs.attempts += 1;
                self.inner.save(&theirs).await?;
            }
        }
        self.inner.save(record).await
    }
    async fn delete(&self, domain: &Domain) -> Result<bool> {
        self.inner.delete(domain).await
    }
    async fn list(&self) -> Result<Vec<Domain>> {
        self.inner.list().await
    }
    async fn due(
        &self,
        now: OffsetDateTime,
        max: u32,
        limit: usize,
    ) -> Result<Vec<certkeeper::store::DueEntry>> {
        self.inner.due(now, max, limit).await
    }
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        self.inner.put_meta_if_absent(key, value).await
    }
    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.inner.set_meta(key, value).await
    }
    async fn at_attempt_limit(
        &self,
        max: u32,
        limit: usize,
    ) -> Result<certkeeper::store::PassedOver> {
        self.inner.at_attempt_limit(max, limit).await
    }
});

/// A [`Faulty`] store over a new `FileStore` in `dir`, faulty for `domain`.
async fn faulty(
    dir: &std::path::Path,
    domain: &Domain,
    race_once: bool,
    fail_saves: bool,
) -> Faulty {
    Faulty {
        inner: FileStore::open(dir).await.unwrap(),
        domain: domain.clone(),
        race_once: AtomicBool::new(race_once),
        fail_saves: AtomicBool::new(fail_saves),
    }
}

#[tokio::test]
async fn a_concurrent_write_is_kept_and_the_record_is_resealed_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let domain = Domain::new("b.example.com").unwrap();
    let store = faulty(dir.path(), &domain, true, false).await;
    let plain = fill(&store.inner, &v1()).await;
    let report = rotate(&store, &v1_v2()).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failed);
    assert!(!store.race_once.load(Ordering::SeqCst), "the race happened");
    let record = store.load(&domain).await.unwrap().unwrap();
    assert_eq!(record.attempts, 1, "the other writer's change survived");
    assert_eq!(
        record
            .certificate
            .unwrap()
            .sealed_key
            .key_version()
            .unwrap(),
        2
    );
    assert_all_open(&store, &v2(), &plain).await;
}

#[tokio::test]
async fn a_failing_record_is_reported_left_readable_and_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let domain = Domain::new("c.example.org").unwrap();
    let store = faulty(dir.path(), &domain, false, true).await;
    let plain = fill(&store.inner, &v1()).await;
    let both = v1_v2();
    let report = rotate(&store, &both).await.unwrap();
    assert_eq!(report.resealed, DOMAINS.len() + ACCOUNTS.len() - 1);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].value, SealedValue::CertKey(domain.clone()));
    assert!(matches!(report.failed[0].error, Error::Store { .. }));
    assert!(!report.is_complete());
    assert_eq!(versions(&store).await[domain.as_str()], 1);
    assert_all_open(&store, &both, &plain).await;

    store.fail_saves.store(false, Ordering::SeqCst);
    let second = rotate(&store, &both).await.unwrap();
    assert_eq!(second.resealed, 1);
    assert!(second.is_complete());
    assert_all_open(&store, &v2(), &plain).await;
}

#[tokio::test]
async fn a_value_under_an_unknown_key_is_reported_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let plain = fill(&store, &v1()).await;
    // One account was sealed by an instance that had V3.
    let v3 = Keyring::from_keys(true, [(3, V3)]).unwrap();
    let mut account = store.load_account("acme-staging").await.unwrap().unwrap();
    account.sealed_credentials = v3
        .seal(
            plain["acme-staging"].as_bytes(),
            &account_aad("acme-staging"),
        )
        .unwrap();
    store.save_account(&account).await.unwrap();

    let report = rotate(&store, &v1_v2()).await.unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(
        report.failed[0].value,
        SealedValue::Account("acme-staging".into())
    );
    assert!(matches!(
        report.failed[0].error,
        Error::MissingKey { version: 3, .. }
    ));
    assert!(report.failed[0].error.to_string().contains("key version 3"));
}

#[test]
fn a_sealed_key_moved_to_another_record_does_not_open() {
    let k = v1();
    let a = Domain::new("a.example.com").unwrap();
    let b = Domain::new("b.example.com").unwrap();
    let sealed = k.seal(b"key of a", &cert_key_aad(&a)).unwrap();
    assert!(matches!(
        k.open(&sealed, &cert_key_aad(&b)),
        Err(Error::Decrypt)
    ));
    assert!(matches!(
        k.open(&sealed, &account_aad("a.example.com")),
        Err(Error::Decrypt)
    ));
}

#[test]
fn key_derivation_matches_a_fixed_vector() {
    // Pinned so that a change of derivation (which would make every stored
    // secret unreadable) cannot go unnoticed.
    let key = Keyring::derive_key("certkeeper test vector passphrase");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    // HKDF-SHA256(salt "certkeeper keyring v1", info "xchacha20poly1305"),
    // computed independently with Python's hmac module.
    assert_eq!(
        hex,
        "7692478491bde9ba0dfa78c705cd72fe628a80cab128a8ff5b95226bdfce6b4b"
    );
}

#[test]
fn envelope_format_matches_a_fixed_vector() {
    // Pinned so that a change of the envelope (which would make every stored
    // secret unreadable) cannot go unnoticed. Computed independently in
    // Python (HChaCha20 by hand, ChaCha20-Poly1305 from the cryptography
    // package): key = HKDF of the passphrase as documented, nonce 0x40..0x57,
    // associated data = the 7-byte header "CK" 01 00000007, then the caller's.
    const ENVELOPE: &str = "434b0100000007404142434445464748494a4b4c4d4e4f5051525354555657\
        a1c177ad41de6f75e4e8980f45675f70e3801a1bbc5c91e1fe131016925e4b106ad2c81d1d8ea4899f5dfc6c\
        99888d760acfdc633a2cf5cdd58bd0f2cb598bafa516c8f5e30d30ef51edbda8";
    let bytes: Vec<u8> = (0..ENVELOPE.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&ENVELOPE[i..i + 2], 16).unwrap())
        .collect();
    let sealed = Sealed::from_bytes(bytes);
    assert_eq!(sealed.key_version().unwrap(), 7);
    let keyring =
        Keyring::from_keys(true, [(7, "certkeeper envelope vector passphrase 2024")]).unwrap();
    let domain = Domain::new("vector.example.com").unwrap();
    let opened = keyring.open(&sealed, &cert_key_aad(&domain)).unwrap();
    assert_eq!(
        &*opened,
        b"-----BEGIN PRIVATE KEY----- vector -----END PRIVATE KEY-----"
    );
}

#[test]
fn an_oversized_envelope_is_refused_on_parse_and_on_deserialize() {
    use certkeeper::cipher::{ENVELOPE_HEADER_LEN, MAX_ENVELOPE_LEN};
    let k = v1();
    let oversized = Sealed::with_header(1, &vec![0; MAX_ENVELOPE_LEN - ENVELOPE_HEADER_LEN + 1]);
    assert!(matches!(oversized.parse(), Err(Error::Envelope(_))));
    assert!(matches!(k.open(&oversized, b""), Err(Error::Envelope(_))));

    // Valid base64 (a multiple of 4 characters), longer than any 1 MiB
    // envelope can be: refused before it is decoded.
    let text = "A".repeat(4 * MAX_ENVELOPE_LEN / 3 + 8);
    let json = serde_json::to_string(&text).unwrap();
    let err = serde_json::from_str::<Sealed>(&json).unwrap_err();
    let expected = Error::Envelope("larger than 1 MiB").to_string();
    assert!(err.to_string().contains(&expected), "{err}");

    // The largest envelope still round-trips.
    let largest = Sealed::with_header(1, &vec![9; MAX_ENVELOPE_LEN - ENVELOPE_HEADER_LEN]);
    let json = serde_json::to_string(&largest).unwrap();
    assert_eq!(serde_json::from_str::<Sealed>(&json).unwrap(), largest);
}

fn keyring_for_props() -> Keyring {
    v1_v2()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_open_to_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let k = keyring_for_props();
        let sealed = Sealed::from_bytes(bytes);
        let _ = sealed.parse();
        let _ = format!("{sealed:?}");
        prop_assert!(k.open(&sealed, b"aad").is_err());
    }

    #[test]
    fn bytes_behind_a_valid_header_are_an_error(version in 0u32..4, body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let k = keyring_for_props();
        let sealed = Sealed::with_header(version, &body);
        match k.open(&sealed, b"aad") {
            Err(Error::MissingKey { version: v, .. }) => prop_assert!(v == version && !(1..=2).contains(&v)),
            Err(Error::Envelope(_)) | Err(Error::Decrypt) => prop_assert!((1..=2).contains(&version)),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn every_truncation_of_an_envelope_is_an_error(secret in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..200) {
        let k = keyring_for_props();
        let sealed = k.seal(&secret, b"aad").unwrap();
        let len = sealed.as_bytes().len();
        let cut = cut % len;
        let truncated = Sealed::from_bytes(sealed.as_bytes()[..cut].to_vec());
        prop_assert!(matches!(k.open(&truncated, b"aad"), Err(Error::Envelope(_)) | Err(Error::Decrypt)));
        prop_assert_eq!(&*k.open(&sealed, b"aad").unwrap(), &secret[..]);
    }

    #[test]
    fn every_bit_flip_is_an_error(secret in proptest::collection::vec(any::<u8>(), 0..64), bit in any::<usize>()) {
        let k = keyring_for_props();
        let sealed = k.seal(&secret, b"aad").unwrap();
        let mut bytes = sealed.as_bytes().to_vec();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let flipped = Sealed::from_bytes(bytes);
        let refused = matches!(
            k.open(&flipped, b"aad"),
            Err(Error::Envelope(_)) | Err(Error::Decrypt) | Err(Error::MissingKey { .. })
        );
        prop_assert!(refused);
    }

    #[test]
    fn sealed_values_round_trip_through_json(secret in proptest::collection::vec(any::<u8>(), 0..64), aad in proptest::collection::vec(any::<u8>(), 0..32)) {
        let k = keyring_for_props();
        let sealed = k.seal(&secret, &aad).unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        let back: Sealed = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&*k.open(&back, &aad).unwrap(), &secret[..]);
    }

    #[test]
    fn any_json_string_decodes_to_an_envelope_or_an_error(s in ".{0,80}") {
        let json = serde_json::to_string(&s).unwrap();
        if let Ok(sealed) = serde_json::from_str::<Sealed>(&json) {
            prop_assert!(keyring_for_props().open(&sealed, b"").is_err());
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn logs_of_sealing_opening_rotation_and_throttling_hold_no_secret() {
    captured(sealing_opening_rotation_and_throttling);
}

async fn sealing_opening_rotation_and_throttling(captured: Captured) {
    use base64::prelude::{Engine, BASE64_STANDARD};

    let weak_dev_key = "dev-only-key";
    let secret = b"-----BEGIN PRIVATE KEY-----MIGHAgEAMBMGByqGSM49AgEGCCqGSM49";
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();

    // Development mode accepts a weak key with a warning.
    let dev = Keyring::from_keys(false, [(1, weak_dev_key)]).unwrap();
    let sealed = dev.seal(secret, b"aad").unwrap();
    assert_eq!(&*dev.open(&sealed, b"aad").unwrap(), secret);
    assert!(dev.open(&sealed, b"other").is_err());
    assert!(Keyring::from_keys(true, [(1, weak_dev_key)]).is_err());

    // A rotation over a store of real certificates, one of them failing.
    let plain = fill(&store, &v1()).await;
    let mut broken = store
        .load(&Domain::new("localhost").unwrap())
        .await
        .unwrap()
        .unwrap();
    broken.certificate.as_mut().unwrap().sealed_key = v1()
        .seal(plain["localhost"].as_bytes(), b"wrong record")
        .unwrap();
    store.save(&broken).await.unwrap();
    let report = rotate(&store, &v1_v2()).await.unwrap();
    assert_eq!(report.failed.len(), 1);

    // The throttle, up to its limit and past it.
    #[cfg(feature = "access")]
    {
        use certkeeper::access::{LoginThrottle, ThrottleLimits};
        let clock = certkeeper::TestClock::at_system_time();
        let throttle = LoginThrottle::builder()
            .limits(ThrottleLimits {
                per_email: 2,
                ..ThrottleLimits::default()
            })
            .clock(std::sync::Arc::new(clock))
            .build()
            .unwrap();
        let ip = "203.0.113.9".parse().unwrap();
        for _ in 0..3 {
            throttle.check("victim@example.com", ip).await.unwrap();
        }
        throttle
            .record_success("victim@example.com", ip)
            .await
            .unwrap();
    }

    let logs = captured.text();
    // The capture works: the events are there.
    for expected in [
        "weak encryption key accepted",
        "key rotation finished",
        "could not re-seal",
        #[cfg(feature = "access")]
        "login attempts over the limit",
    ] {
        assert!(logs.contains(expected), "missing {expected:?} in:\n{logs}");
    }
    let mut forbidden: Vec<String> = vec![
        weak_dev_key.into(),
        V1.into(),
        V2.into(),
        String::from_utf8_lossy(secret).into_owned(),
        "PRIVATE KEY".into(),
        "account-private-key".into(),
    ];
    for passphrase in [weak_dev_key, V1, V2] {
        let key = Keyring::derive_key(passphrase);
        forbidden.push(hex(&*key));
        forbidden.push(BASE64_STANDARD.encode(*key));
        forbidden.push(format!("{:?}", &*key));
    }
    for value in plain.values() {
        forbidden.push(value.clone());
        for line in value.lines().filter(|l| l.len() > 20) {
            forbidden.push(line.to_string());
        }
    }
    for needle in &forbidden {
        assert!(
            !logs.contains(needle.as_str()),
            "a secret reached the logs: {needle:.12}..."
        );
    }
}
