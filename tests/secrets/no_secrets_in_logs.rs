//! No private key, account key, encryption key or passphrase appears in any
//! log line or `Debug`/`Display` output of a full run: issue from a real
//! Pebble CA, renew, fail, rotate the encryption key, reload; and register
//! with an external account binding on a Pebble 2.10 that requires one.

use crate::common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use certkeeper::challenge::Http01Solver;
use certkeeper::cipher::{Keyring, SecretCipher};
use certkeeper::store::{CertStore, FileStore};
use certkeeper::vault::{account_aad, rotate};
use certkeeper::{CertResolver, Clock, Config, Renewer};
use common::acme::{pebble_issuer, serve_http01};
use common::logs::{captured, Captured};
use common::pebble::{Pebble, PebbleOptions, PebbleVersion};
use common::{clock_at_now, domain, keyring, CONTACT_EMAIL};

const KEY_V1: &str = "first-passphrase-for-log-test-7f3a9c";
const KEY_V2: &str = "second-passphrase-for-log-test-b21e4d";
const EAB_HMAC_KEY: &str = "HjudV5qnbreN-n9WyFSH-t4HXuEx_XFen45zuxY-G1h6fr74V3cUM_dVlwQZBWmc";

/// The base64 body of a PEM block, without its armour and line breaks. The
/// checks below look for characters 48..96 of it: the first 48 encode the
/// PKCS#8 header that every P-256 key shares, the next ones the secret.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn a_full_issue_renew_rotate_run_logs_no_secret() {
    captured(a_full_run);
}

async fn a_full_run(captured: Captured) {
    let mut shown = String::new(); // every Debug and Display produced below
    let pebble = Pebble::start(PebbleOptions {
        domain_blocklist: vec!["blocked.certkeeper-test.com".into()],
        ..PebbleOptions::default()
    })
    .await;
    let solver = Http01Solver::new();
    let _listener = serve_http01(&solver, &pebble).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
    let clock = clock_at_now();
    let config = Config::builder()
        .openssl_key(1, KEY_V1)
        .security_email(CONTACT_EMAIL)
        .build()
        .unwrap();
    shown += &format!("{config:?}\n");

    let renewer_with = |keyring: Arc<Keyring>| {
        let issuer = pebble_issuer(
            &pebble,
            Arc::new(solver.clone()),
            store.clone(),
            keyring.clone(),
        )
        .request_timeout(StdDuration::from_secs(30))
        .build()
        .unwrap();
        Renewer::builder(store.clone(), keyring)
            .acme(Arc::new(issuer))
            .clock(Arc::new(clock.clone()))
            .resolver(CertResolver::new())
            .build()
    };

    // Issue under V1, and fail one name on purpose.
    let v1 = keyring(KEY_V1);
    let renewer = renewer_with(v1.clone());
    let main = domain("www.certkeeper-test.com");
    let blocked = domain("blocked.certkeeper-test.com");
    renewer.add_domain(&main).await.unwrap();
    renewer.add_domain(&blocked).await.unwrap();
    let report = renewer.run_cycle().await.unwrap();
    assert_eq!(report.issued, vec![main.clone()], "{report:?}");
    shown += &format!("{report:?}\n{report}\n{renewer:?}\n{v1:?}\n");
    let first_key = renewer.certificate(&main).await.unwrap().unwrap().1;
    let first_key = String::from_utf8(first_key.to_vec()).unwrap();

    // Renew inside the window.
    let record = store.load(&main).await.unwrap().unwrap();
    clock.set(record.renew_date);
    let report = renewer.run_cycle().await.unwrap();
    assert_eq!(report.issued, vec![main.clone()], "{report:?}");
    let (cert, second_key) = renewer.certificate(&main).await.unwrap().unwrap();
    let second_key = String::from_utf8(second_key.to_vec()).unwrap();
    shown += &format!("{cert:?}\n{:?}\n", store.load(&main).await.unwrap());
    shown += &format!("{:?}\n", store.load(&blocked).await.unwrap());
    let err = renewer.issue_now(Some(&blocked)).await.unwrap_err();
    shown += &format!("{err}\n{err:?}\n");

    // The ACME account key, opened from the store.
    let account_id = store.list_accounts().await.unwrap().pop().unwrap();
    let account = store.load_account(&account_id).await.unwrap().unwrap();
    let credentials = v1
        .open(&account.sealed_credentials, &account_aad(&account_id))
        .unwrap();
    let credentials: serde_json::Value = serde_json::from_slice(&credentials).unwrap();
    let account_key = credentials["key_pkcs8"].as_str().unwrap().to_string();
    assert!(account_key.len() > 96);
    shown += &format!("{account:?}\n");

    // Rotate to V2, then drop V1 and reload everything.
    let both = Arc::new(Keyring::from_keys(true, [(1, KEY_V1), (2, KEY_V2)]).unwrap());
    let rotation = rotate(store.as_ref(), both.as_ref()).await.unwrap();
    assert!(rotation.failed.is_empty(), "{rotation:?}");
    shown += &format!("{rotation:?}\n{both:?}\n");
    let v2 = Arc::new(Keyring::from_keys(true, [(2, KEY_V2)]).unwrap());
    let reloaded = renewer_with(v2.clone());
    assert_eq!(
        reloaded.load().await.unwrap(),
        2,
        "both stored names are known (certificates load on first use)"
    );
    let (_, reopened) = reloaded.certificate(&main).await.unwrap().unwrap();
    assert_eq!(String::from_utf8(reopened.to_vec()).unwrap(), second_key);
    // Without V2 the values no longer open, and the error names the version.
    let only_v1 = Keyring::from_keys(true, [(1, KEY_V1)]).unwrap();
    let sealed = store
        .load(&main)
        .await
        .unwrap()
        .unwrap()
        .certificate
        .unwrap()
        .sealed_key;
    let err = only_v1
        .open(&sealed, &certkeeper::vault::cert_key_aad(&main))
        .unwrap_err();
    assert!(err.to_string().contains("key version 2"), "{err}");
    shown += &format!("{err}\n{err:?}\n{reloaded:?}\n{:?}\n", clock.now());

    // External account binding: from the settings to a registration.
    let eab_pebble = Pebble::start(PebbleOptions {
        version: PebbleVersion::V2_10,
        eab_keys: vec![("kid-log-test".into(), EAB_HMAC_KEY.into())],
        ..PebbleOptions::default()
    })
    .await;
    let eab_solver = Http01Solver::new();
    let _eab_listener = serve_http01(&eab_solver, &eab_pebble).await;
    let eab_config = Config::from_vars([
        ("_APP_OPENSSL_KEY_V1", KEY_V1),
        ("_APP_ACME_EAB_KID", "kid-log-test"),
        ("_APP_ACME_EAB_HMAC_KEY", EAB_HMAC_KEY),
    ])
    .unwrap();
    let eab = eab_config
        .acme()
        .external_account_binding()
        .cloned()
        .unwrap();
    let eab_issuer = pebble_issuer(
        &eab_pebble,
        Arc::new(eab_solver.clone()),
        Arc::new(certkeeper::store::MemoryStore::new()),
        v1.clone(),
    )
    .external_account_binding(eab.key_id(), eab.expose_hmac_key())
    .build()
    .unwrap();
    let issued = certkeeper::issuer::IssuerExt::issue_for(&eab_issuer, &main)
        .await
        .unwrap();
    shown += &format!("{eab_config:?}\n{eab:?}\n{eab_issuer:?}\n{issued:?}\n");

    let logs = captured.text();
    assert!(
        logs.contains("certificate issued and stored"),
        "the capture saw the run"
    );
    assert!(
        logs.contains("rejectedIdentifier") || logs.contains("blocked"),
        "failures are logged"
    );
    for (what, text) in [("log", &logs), ("Debug/Display output", &shown)] {
        for (secret, needle) in [
            ("the V1 passphrase", KEY_V1.to_string()),
            ("the V2 passphrase", KEY_V2.to_string()),
            ("a PEM private key", "PRIVATE KEY".to_string()),
            (
                "the first certificate key",
                pem_body(&first_key)[48..96].to_string(),
            ),
            (
                "the renewed certificate key",
                pem_body(&second_key)[48..96].to_string(),
            ),
            ("the ACME account key", account_key[48..96].to_string()),
            ("the EAB HMAC key", EAB_HMAC_KEY[..24].to_string()),
        ] {
            assert!(!text.contains(&needle), "the {what} shows {secret}");
        }
    }
}
