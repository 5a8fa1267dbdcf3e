//! The TSIG secret of the DNS-01 solver appears in no log line (every
//! level, certkeeper's and the DNS library's) and no `Debug`/`Display`
//! output of a run: a wildcard issued through bind9 and Pebble, and a
//! refused update with a wrong secret.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use certkeeper::challenge::{Dns01Solver, TsigAlgorithm};
use certkeeper::issuer::IssuerExt;
use certkeeper::store::MemoryStore;
use certkeeper::Config;
use common::acme::pebble_issuer;
use common::bind9::{Bind9, TSIG_KEY_NAME};
use common::logs::{captured, Captured};
use common::pebble::{Pebble, PebbleOptions};
use common::{domain, keyring, TEST_KEY};

#[test]
fn a_dns01_run_logs_no_tsig_secret() {
    captured(a_dns01_run);
}

async fn a_dns01_run(captured: Captured) {
    let bind = Bind9::start(&["example.test"]).await;
    let pebble = Pebble::start(PebbleOptions {
        dns_server: Some(bind.addr()),
        ..PebbleOptions::default()
    })
    .await;
    let wrong = "d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3JvbmchIQ==";
    let mut shown = String::new();
    let config = Config::from_vars([
        ("_APP_DNS01_SERVER", bind.addr().to_string().as_str()),
        ("_APP_DNS01_ZONE", "example.test"),
        ("_APP_DNS01_TSIG_KEY_NAME", TSIG_KEY_NAME),
        ("_APP_DNS01_TSIG_SECRET", bind.secret()),
    ])
    .unwrap();
    shown += &format!("{config:?}\n");
    let solver = config.acme().dns01().cloned().unwrap();
    let issue = |solver: Dns01Solver, name: &'static str| {
        let issuer = pebble_issuer(
            &pebble,
            Arc::new(solver),
            Arc::new(MemoryStore::new()),
            keyring(TEST_KEY),
        )
        .request_timeout(Duration::from_secs(30))
        .order_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
        async move {
            let shown = format!("{issuer:?}");
            (issuer.issue_for(&domain(name)).await, shown)
        }
    };
    let (issued, debug) =
        tokio::time::timeout(Duration::from_secs(120), issue(solver, "*.example.test"))
            .await
            .unwrap();
    shown += &debug;
    issued.unwrap();

    let bad = Dns01Solver::builder(bind.addr(), "example.test")
        .tsig_key(TSIG_KEY_NAME, wrong, TsigAlgorithm::HmacSha256)
        .build()
        .unwrap();
    shown += &format!("{bad:?}\n");
    let (refused, debug) =
        tokio::time::timeout(Duration::from_secs(120), issue(bad, "www.example.test"))
            .await
            .unwrap();
    let err = refused.unwrap_err();
    shown += &format!("{debug}\n{err}\n{err:?}\n");

    let logs = captured.text();
    assert!(
        logs.contains("TXT record added"),
        "the run was not logged at debug level"
    );
    for secret in [bind.secret(), wrong] {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        for form in [secret.to_owned(), hex, format!("{raw:?}")] {
            let form = &form[..form.len().min(40)];
            assert!(!logs.contains(form), "a TSIG secret appears in the logs");
            assert!(
                !shown.contains(form),
                "a TSIG secret appears in Debug/Display output"
            );
        }
    }
}
