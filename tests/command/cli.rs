//! The `certkeeper` command as a real process: reading a file store that a
//! running renewer holds (and being refused a write to it), issuing from a
//! real Pebble, rotating keys V1 -> V2, rolling the ACME account key over at
//! Pebble, checking settings, and listing a PostgreSQL store.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use certkeeper::cipher::Keyring;
use certkeeper::store::{CertRecord, CertStore, FileStore, LogEntry};
use certkeeper::vault::Vault;
use certkeeper::{Error, Renewer};
use common::pebble::{Pebble, PebbleOptions};
use common::tls::verify_chain;
use common::{domain, limited, CONTACT_EMAIL};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

const TEST_LIMIT: StdDuration = StdDuration::from_secs(240);
const KEY_V1: &str = "cli-test-key-version-one-0123456789";
const KEY_V2: &str = "cli-test-key-version-two-9876543210";
const MAIN: &str = "console.certkeeper-test.com";

/// Runs `certkeeper args` with exactly the `_APP_*` variables given.
async fn certkeeper(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_certkeeper"));
    for (name, _) in std::env::vars() {
        if name.starts_with("_APP_") {
            command.env_remove(name);
        }
    }
    command.envs(vars.iter().copied()).args(args);
    tokio::task::spawn_blocking(move || command.output().expect("run certkeeper"))
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The exit code, with the output in the message when it is not `expected`.
#[track_caller]
fn assert_exit(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

/// The `list --json` entry of `name`.
fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["domain"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))
}

/// A record that used up its attempts, the CA's last answer in its log.
fn given_up(name: &str, now: OffsetDateTime) -> CertRecord {
    let mut record = CertRecord::new(domain(name), now - Duration::days(3));
    record.attempts = 5;
    record.push_log(LogEntry {
        time: now - Duration::days(1),
        step: "renew".into(),
        success: false,
        message: "ACME validation failed: connection refused by 192.0.2.7:80".into(),
    });
    record
}

fn dev_vars(path: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("_APP_ENV", "development".into()),
        ("_APP_DOMAIN", MAIN.into()),
        ("_APP_OPENSSL_KEY_V1", KEY_V1.into()),
        ("_APP_CERTIFICATES_PATH", path.to_str().unwrap().into()),
    ]
}

fn borrow<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_read_a_store_a_running_renewer_holds_and_writes_are_refused() {
    limited(TEST_LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("certificates");
        let store = Arc::new(FileStore::open(&path).await.unwrap());
        let keyring = Arc::new(Keyring::from_keys(false, [(1, KEY_V1)]).unwrap());
        let renewer = Renewer::builder(store.clone(), keyring)
            .production(false)
            .main_domain(Some(domain(MAIN)))
            .build();
        let now = OffsetDateTime::now_utc();
        store
            .save(&given_up("broken.certkeeper-test.com", now))
            .await
            .unwrap();
        renewer
            .add_domain(&domain("api.certkeeper-test.com"))
            .await
            .unwrap();
        renewer.load().await.unwrap();
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued.len(), 2, "{report:?}");
        // The server keeps running, holding the folder's lock.
        let running = tokio::spawn({
            let renewer = renewer.clone();
            async move { renewer.run(StdDuration::from_secs(3600)).await }
        });
        let vars = dev_vars(&path);
        let vars = borrow(&vars);

        let list = certkeeper(&vars, &["list"]).await;
        assert_exit(&list, 0);
        let text = stdout(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("DOMAIN") && lines[0].contains("LAST ERROR"));
        let broken = lines.iter().find(|l| l.starts_with("broken.")).unwrap();
        assert!(
            broken.contains(" 5 ") && broken.ends_with("connection refused by 192.0.2.7:80"),
            "{broken}"
        );
        assert!(lines
            .iter()
            .any(|l| l.starts_with(MAIN) && l.contains("self_signed")));

        let list = certkeeper(&vars, &["list", "--json"]).await;
        assert_exit(&list, 0);
        let list = json(&list);
        assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
        let main = entry(&list, MAIN);
        let stored = store.load(&domain(MAIN)).await.unwrap().unwrap();
        let cert = stored.certificate.as_ref().unwrap();
        assert_eq!(main["issuer"], "self_signed");
        assert_eq!(main["fingerprint"], cert.fingerprint.as_str());
        assert_eq!(main["attempts"], 0);
        assert_eq!(main["last_error"], Value::Null);
        let expires = OffsetDateTime::parse(
            main["not_after"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(expires, cert.not_after);
        let broken = entry(&list, "broken.certkeeper-test.com");
        assert_eq!(broken["attempts"], 5);
        assert_eq!(broken["issuer"], Value::Null);
        assert_eq!(
            broken["last_error"],
            "ACME validation failed: connection refused by 192.0.2.7:80"
        );
        // The sealed key is never printed, not even as ciphertext.
        assert!(!list.to_string().contains("sealed"));

        let show = certkeeper(&vars, &["show", "broken.certkeeper-test.com"]).await;
        assert_exit(&show, 0);
        let text = stdout(&show);
        assert!(text.contains("attempts:    5"), "{text}");
        assert!(
            text.contains("renew failed: ACME validation failed: connection refused"),
            "{text}"
        );
        let show = certkeeper(&vars, &["show", MAIN, "--json"]).await;
        assert_exit(&show, 0);
        let show = json(&show);
        assert_eq!(show["log"].as_array().unwrap().len(), stored.log.len());
        assert_eq!(show["log"][0]["success"], true);

        let missing = certkeeper(&vars, &["show", "nobody.certkeeper-test.com"]).await;
        assert_exit(&missing, 4);
        assert!(
            stderr(&missing).contains("not found"),
            "{}",
            stderr(&missing)
        );
        let invalid = certkeeper(&vars, &["show", "not a name"]).await;
        assert_exit(&invalid, 2);

        // Writes are refused, naming this process as the holder; nothing changes.
        let holder = format!("process {}", std::process::id());
        for args in [
            &["remove", MAIN][..],
            &["rotate-keys"][..],
            &["issue", "api.certkeeper-test.com"][..],
        ] {
            let refused = certkeeper(&vars, args).await;
            assert_exit(&refused, 5);
            let message = stderr(&refused);
            assert!(
                message.contains("in use by another process") && message.contains(&holder),
                "{args:?}: {message}"
            );
            assert!(message.contains("[store_in_use]"), "{message}");
        }
        assert_eq!(store.load(&domain(MAIN)).await.unwrap().unwrap(), stored);
        let refused = certkeeper(&vars, &["remove", MAIN, "--json"]).await;
        assert_exit(&refused, 5);
        let error: Value = serde_json::from_str(stderr(&refused).trim()).unwrap();
        assert_eq!(error["error"], "store_in_use");
        assert_eq!(error["exit"], 5);

        let check = certkeeper(&vars, &["check"]).await;
        assert_exit(&check, 0);
        let text = stdout(&check);
        assert!(text.contains(&format!("held by {holder}")), "{text}");
        assert!(
            text.contains("passed over: broken.certkeeper-test.com"),
            "{text}"
        );
        assert!(
            text.contains("3 stored, 0 picked by the next cycle (at most 200), 1 passed over"),
            "{text}"
        );

        // Reading while the server writes: every list is whole.
        let writer = tokio::spawn({
            let renewer = renewer.clone();
            async move {
                for _ in 0..4 {
                    renewer.issue_now(Some(&domain(MAIN))).await.unwrap();
                }
            }
        });
        for _ in 0..4 {
            let list = certkeeper(&vars, &["list", "--json"]).await;
            assert_exit(&list, 0);
            assert_eq!(json(&list).as_array().unwrap().len(), 3);
        }
        writer.await.unwrap();
        running.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_orders_from_a_real_ca_and_reports_its_refusals() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions {
            domain_blocklist: vec!["blocked.certkeeper-test.com".into()],
            ..PebbleOptions::default()
        })
        .await;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("certificates");
        let address = format!("[::]:{}", pebble.http_port());
        let directory = pebble.directory_url();
        let vars = [
            ("_APP_ENV", "production"),
            ("_APP_DOMAIN", MAIN),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", CONTACT_EMAIL),
            ("_APP_OPENSSL_KEY_V1", KEY_V1),
            ("_APP_ACME_DIRECTORY_URL", directory.as_str()),
            (
                "_APP_ACME_CA_ROOT",
                pebble.ca_root_pem_path().to_str().unwrap(),
            ),
            ("_APP_ACME_TIMEOUT", "30"),
            ("_APP_ACME_CHALLENGE_ADDRESS", address.as_str()),
            ("_APP_CERTIFICATES_PATH", path.to_str().unwrap()),
        ];

        let check = certkeeper(&vars, &["check"]).await;
        assert_exit(&check, 0);
        let text = stdout(&check);
        assert!(
            text.contains(&format!("CA: {directory} as {CONTACT_EMAIL}")),
            "{text}"
        );
        assert!(text.contains("does not exist yet"), "{text}");
        assert!(!text.contains(KEY_V1));

        // The main domain, by default.
        let issued = certkeeper(&vars, &["issue"]).await;
        assert_exit(&issued, 0);
        assert!(stdout(&issued).contains("issuer:      acme"));
        // A name that is neither the main domain nor added is refused.
        let stranger = certkeeper(&vars, &["issue", "stranger.certkeeper-test.com"]).await;
        assert_exit(&stranger, 5);
        assert!(
            stderr(&stranger).contains("[domain_not_allowed]"),
            "{}",
            stderr(&stranger)
        );
        let added = certkeeper(
            &vars,
            &["issue", "--add", "api.certkeeper-test.com", "--json"],
        )
        .await;
        assert_exit(&added, 0);
        assert_eq!(json(&added)["issuer"], "acme");

        // The CA refuses a name: exit 6, the CA's problem in the record.
        let blocked = certkeeper(
            &vars,
            &["issue", "--add", "blocked.certkeeper-test.com", "--json"],
        )
        .await;
        assert_exit(&blocked, 6);
        let error: Value = serde_json::from_str(stderr(&blocked).trim()).unwrap();
        assert_eq!(error["error"], "acme_rejected_identifier", "{error}");
        assert_eq!(json(&blocked)["attempts"], 1);

        let list = certkeeper(&vars, &["list", "--json"]).await;
        assert_exit(&list, 0);
        let list = json(&list);
        assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
        assert!(entry(&list, "blocked.certkeeper-test.com")["last_error"]
            .as_str()
            .unwrap()
            .contains("rejectedIdentifier"));
        // The stored chains are Pebble's, for the right names.
        let store = FileStore::open(&path).await.unwrap();
        let roots = pebble.issuer_roots().await;
        let mut chains = Vec::new();
        for name in [MAIN, "api.certkeeper-test.com"] {
            assert_eq!(entry(&list, name)["issuer"], "acme");
            let record = store.load(&domain(name)).await.unwrap().unwrap();
            let chain = record.certificate.unwrap().chain_pem;
            verify_chain(&chain, roots.clone(), name);
            chains.push(chain);
        }
        drop(store);

        // Revoked at the CA on request; the record stays, due, without it.
        let bad_reason = certkeeper(&vars, &["revoke", MAIN, "--reason", "bored"]).await;
        assert_exit(&bad_reason, 2);
        let revoked = certkeeper(
            &vars,
            &["revoke", MAIN, "--reason", "key-compromise", "--json"],
        )
        .await;
        assert_exit(&revoked, 0);
        assert_eq!(json(&revoked)["reason"], "key-compromise");
        let status = pebble.cert_status(&chains[0]).await;
        assert!(status.contains("\"Revoked\""), "{status}");
        let again = certkeeper(&vars, &["revoke", MAIN]).await;
        assert_exit(&again, 4);
        // A custom domain removed with revocation: revoked, then removed.
        let removed = certkeeper(
            &vars,
            &["remove", "--revoke", "api.certkeeper-test.com", "--json"],
        )
        .await;
        assert_exit(&removed, 0);
        assert_eq!(json(&removed)["revoked"], true);
        let status = pebble.cert_status(&chains[1]).await;
        assert!(status.contains("\"Revoked\""), "{status}");
        let list = json(&certkeeper(&vars, &["list", "--json"]).await);
        assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keys_reseals_every_secret_from_v1_to_v2() {
    limited(TEST_LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("certificates");
        let v1 = dev_vars(&path);
        assert_exit(&certkeeper(&borrow(&v1), &["issue"]).await, 0);
        assert_exit(
            &certkeeper(&borrow(&v1), &["issue", "--add", "api.certkeeper-test.com"]).await,
            0,
        );
        let mut both = v1.clone();
        both.push(("_APP_OPENSSL_KEY_V2", KEY_V2.into()));

        // One re-seal at a time: 7 until done.
        let first = certkeeper(&borrow(&both), &["rotate-keys", "--batch", "1", "--json"]).await;
        assert_exit(&first, 7);
        let report = json(&first);
        assert_eq!(
            (
                report["target_version"].as_u64(),
                report["resealed"].as_u64()
            ),
            (Some(2), Some(1)),
            "{report}"
        );
        assert_eq!(report["complete"], false);
        let rest = certkeeper(&borrow(&both), &["rotate-keys"]).await;
        assert_exit(&rest, 0);
        let text = stdout(&rest);
        assert!(
            text.contains("re-sealed under V2: 1, already under it: 1, failed: 0"),
            "{text}"
        );
        assert!(!text.contains(KEY_V1) && !text.contains(KEY_V2));

        // V1 can go: V2 alone opens every key, V1 alone none.
        let v2_only = vec![
            ("_APP_ENV", "development".to_owned()),
            ("_APP_OPENSSL_KEY_V2", KEY_V2.to_owned()),
            ("_APP_CERTIFICATES_PATH", path.to_str().unwrap().to_owned()),
        ];
        let again = certkeeper(&borrow(&v2_only), &["rotate-keys", "--json"]).await;
        assert_exit(&again, 0);
        assert_eq!(json(&again)["already_current"], 2);
        let store: Arc<dyn CertStore> = Arc::new(FileStore::open(&path).await.unwrap());
        let new = Vault::new(
            store.clone(),
            Arc::new(Keyring::from_keys(false, [(2, KEY_V2)]).unwrap()),
        );
        let old = Vault::new(
            store.clone(),
            Arc::new(Keyring::from_keys(false, [(1, KEY_V1)]).unwrap()),
        );
        for name in [MAIN, "api.certkeeper-test.com"] {
            let name = domain(name);
            let cert = store
                .load(&name)
                .await
                .unwrap()
                .unwrap()
                .certificate
                .unwrap();
            let key = new.open_cert_key(&name, &cert).unwrap();
            assert!(String::from_utf8_lossy(&key).contains("PRIVATE KEY"));
            assert!(matches!(
                old.open_cert_key(&name, &cert),
                Err(Error::MissingKey { version: 2, .. })
            ));
        }
    })
    .await;
}

/// The stored ACME account's credentials (JSON), opened with `key`.
async fn account_credentials(path: &Path, key: &str) -> Vec<u8> {
    let store: Arc<dyn CertStore> = Arc::new(FileStore::open(path).await.unwrap());
    let accounts = store.list_accounts().await.unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let record = store.load_account(&accounts[0]).await.unwrap().unwrap();
    let vault = Vault::new(
        store.clone(),
        Arc::new(Keyring::from_keys(true, [(1, key)]).unwrap()),
    );
    vault.open_account(&record).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_account_key_rolls_the_key_over_at_a_real_ca() {
    use certkeeper::issuer::instant_acme::{Account, AccountCredentials, Identifier, NewOrder};
    use certkeeper::issuer::AcmeIssuer;

    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("certificates");
        let address = format!("[::]:{}", pebble.http_port());
        let directory = pebble.directory_url();
        let vars = [
            ("_APP_ENV", "production"),
            ("_APP_DOMAIN", MAIN),
            ("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS", CONTACT_EMAIL),
            ("_APP_OPENSSL_KEY_V1", KEY_V1),
            ("_APP_ACME_DIRECTORY_URL", directory.as_str()),
            (
                "_APP_ACME_CA_ROOT",
                pebble.ca_root_pem_path().to_str().unwrap(),
            ),
            ("_APP_ACME_TIMEOUT", "30"),
            ("_APP_ACME_CHALLENGE_ADDRESS", address.as_str()),
            ("_APP_CERTIFICATES_PATH", path.to_str().unwrap()),
        ];

        // No account stored yet: not found, nothing sent.
        let none = certkeeper(&vars, &["rotate-account-key"]).await;
        assert_exit(&none, 4);
        assert!(
            stderr(&none).contains("ACME account") && stderr(&none).contains("[not_found]"),
            "{}",
            stderr(&none)
        );

        assert_exit(&certkeeper(&vars, &["issue"]).await, 0);
        let old = account_credentials(&path, KEY_V1).await;
        let old_json: Value = serde_json::from_slice(&old).unwrap();
        let old_key = old_json["key_pkcs8"].as_str().unwrap().to_owned();

        let rotated = certkeeper(&vars, &["rotate-account-key", "--json"]).await;
        assert_exit(&rotated, 0);
        let report = json(&rotated);
        assert_eq!(report["account_url"], old_json["id"], "{report}");
        assert_eq!(report["directory_url"], directory.as_str());
        assert!(report["account_id"].as_str().unwrap().starts_with("acme-"));
        assert_ne!(report["old_key_thumbprint"], report["new_key_thumbprint"]);
        assert!(report["version"].as_u64().unwrap() >= 2, "{report}");
        let new = account_credentials(&path, KEY_V1).await;
        let new_json: Value = serde_json::from_slice(&new).unwrap();
        assert_eq!(new_json["id"], old_json["id"]);
        let new_key = new_json["key_pkcs8"].as_str().unwrap().to_owned();
        assert_ne!(new_key, old_key);

        // In words, and again: each run rolls it over once more.
        let again = certkeeper(&vars, &["rotate-account-key"]).await;
        assert_exit(&again, 0);
        let text = stdout(&again);
        assert!(
            text.contains("rolled the key of ACME account acme-")
                && text.contains(report["account_url"].as_str().unwrap())
                && text.contains(&format!(
                    "old key thumbprint: {}",
                    report["new_key_thumbprint"].as_str().unwrap()
                )),
            "{text}"
        );
        // Never a key, sealed or not, nor the encryption key.
        let newest = account_credentials(&path, KEY_V1).await;
        let newest_key = serde_json::from_slice::<Value>(&newest).unwrap()["key_pkcs8"]
            .as_str()
            .unwrap()
            .to_owned();
        for output in [&rotated, &again] {
            let all = format!("{}{}", stdout(output), stderr(output));
            for secret in [&old_key, &new_key, &newest_key] {
                assert!(!all.contains(&secret[..24]), "{all}");
            }
            assert!(!all.contains(KEY_V1) && !all.contains("sealed"), "{all}");
        }

        // Orders go on with the stored key.
        let issued = certkeeper(&vars, &["issue", "--json"]).await;
        assert_exit(&issued, 0);
        assert_eq!(json(&issued)["issuer"], "acme");

        // The CA refuses the keys rolled over from.
        for credentials in [&old, &new] {
            let credentials: AccountCredentials = serde_json::from_slice(credentials).unwrap();
            let http = AcmeIssuer::default_http_client(Some(pebble.ca_root_pem_path())).unwrap();
            let account = Account::builder_with_http(http)
                .from_credentials(credentials)
                .await
                .unwrap();
            let identifiers = [Identifier::Dns("old-key.certkeeper-test.com".into())];
            let refused = account.new_order(&NewOrder::new(&identifiers)).await;
            assert!(
                matches!(
                    &refused,
                    Err(certkeeper::issuer::instant_acme::Error::Api(_))
                ),
                "{:?}",
                refused.map(|_| "an order")
            );
        }

        // Development uses no account: a configuration error naming _APP_ENV.
        let mut dev = vars.to_vec();
        dev.retain(|(name, _)| *name != "_APP_ENV");
        dev.push(("_APP_ENV", "development"));
        let refused = certkeeper(&dev, &["rotate-account-key"]).await;
        assert_exit(&refused, 3);
        assert!(
            stderr(&refused).contains("_APP_ENV"),
            "{}",
            stderr(&refused)
        );
        // Without a contact address, none either.
        let mut anonymous = vars.to_vec();
        anonymous.retain(|(name, _)| *name != "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS");
        let refused = certkeeper(&anonymous, &["rotate-account-key", "--json"]).await;
        assert_exit(&refused, 3);
        let error: Value = serde_json::from_str(stderr(&refused).trim()).unwrap();
        assert_eq!(error["error"], "config");
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("_APP_SYSTEM_SECURITY_EMAIL_ADDRESS"));
    })
    .await;
}

#[tokio::test]
async fn check_names_a_bad_setting_and_usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("certificates");
    let mut vars = dev_vars(&path);
    vars.push(("_APP_ACME_CHALLENGE_ADDRESS", "port-80".into()));
    let bad = certkeeper(&borrow(&vars), &["check"]).await;
    assert_exit(&bad, 3);
    let message = stderr(&bad);
    assert!(
        message.contains("_APP_ACME_CHALLENGE_ADDRESS") && message.contains("port-80"),
        "{message}"
    );
    assert!(stdout(&bad).is_empty());

    // A weak key in production: named, never printed.
    let weak = certkeeper(
        &[
            ("_APP_OPENSSL_KEY_V1", "hunter2"),
            ("_APP_CERTIFICATES_PATH", path.to_str().unwrap()),
        ],
        &["check", "--json"],
    )
    .await;
    assert_exit(&weak, 3);
    let error: Value = serde_json::from_str(stderr(&weak).trim()).unwrap();
    assert_eq!(error["error"], "weak_key");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("_APP_OPENSSL_KEY_V1"));
    assert!(!stderr(&weak).contains("hunter2"));

    // Nothing to list yet: not found, and nothing was created.
    let list = certkeeper(&borrow(&dev_vars(&path)), &["list"]).await;
    assert_exit(&list, 4);
    assert!(!path.exists());

    assert_exit(&certkeeper(&[], &["frobnicate"]).await, 2);
    assert_exit(&certkeeper(&[], &["list", "--jsn"]).await, 2);
    for command in [
        "list",
        "show",
        "issue",
        "remove",
        "rotate-keys",
        "rotate-account-key",
        "check",
    ] {
        let help = certkeeper(&[], &[command, "--help"]).await;
        assert_exit(&help, 0);
        assert!(
            stdout(&help).contains(&format!("Usage: certkeeper {command}")),
            "{}",
            stdout(&help)
        );
    }
    let help = certkeeper(&[], &["--help"]).await;
    assert!(stdout(&help).contains("Exit codes: 0 ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_remove_work_on_a_postgres_store_a_server_uses() {
    use certkeeper::store::PostgresStore;
    use sqlx::{Connection, Executor, PgConnection};

    let base = std::env::var("CERTKEEPER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "certkeeper_cli_{}_{}",
        std::process::id(),
        OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000
    );
    let mut admin = PgConnection::connect(&base).await.unwrap();
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");

    let result = limited(TEST_LIMIT, async move {
        // The server's store, open the whole time.
        let server = PostgresStore::connect(&url).await.unwrap();
        let now = OffsetDateTime::now_utc();
        server
            .save(&given_up("broken.certkeeper-test.com", now))
            .await
            .unwrap();
        server
            .save(&CertRecord::new(domain("new.certkeeper-test.com"), now))
            .await
            .unwrap();
        let vars = [
            ("_APP_ENV", "development"),
            ("_APP_OPENSSL_KEY_V1", KEY_V1),
            ("_APP_CERTIFICATES_DATABASE_URL", url.as_str()),
        ];
        let list = certkeeper(&vars, &["list", "--json"]).await;
        assert_exit(&list, 0);
        let list = json(&list);
        assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
        assert_eq!(entry(&list, "broken.certkeeper-test.com")["attempts"], 5);
        assert_eq!(
            entry(&list, "new.certkeeper-test.com")["issuer"],
            Value::Null
        );

        let check = certkeeper(&vars, &["check"]).await;
        assert_exit(&check, 0);
        let text = stdout(&check);
        assert!(text.contains("(shared SQL store)"), "{text}");
        assert!(text.contains("due: new.certkeeper-test.com"), "{text}");

        // Writes work from here while the server is connected.
        let removed = certkeeper(&vars, &["remove", "new.certkeeper-test.com"]).await;
        assert_exit(&removed, 0);
        assert!(server
            .load(&domain("new.certkeeper-test.com"))
            .await
            .unwrap()
            .is_none());
        let again = certkeeper(&vars, &["remove", "new.certkeeper-test.com"]).await;
        assert_exit(&again, 4);
        let show = certkeeper(&vars, &["show", "broken.certkeeper-test.com"]).await;
        assert_exit(&show, 0);
        assert!(stdout(&show).contains("connection refused by 192.0.2.7:80"));
    });
    let result = tokio::spawn(result).await;
    let _ = admin
        .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
        .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
