//! The TSIG secret of the DNS-01 solver appears in no log line (every
//! level, certkeeper's and the DNS library's) and no `Debug`/`Display`
//! output of a run: a wildcard issued through bind9 and Pebble, and a
//! refused update with a wrong secret; likewise a DNS provider's API key
//! (feature `dns-providers`): a wildcard issued through PowerDNS's API with
//! the settings read from the environment, and a wrong key refused.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use certkeeper::challenge::{Dns01Solver, TsigAlgorithm};
use certkeeper::issuer::IssuerExt;
use certkeeper::Config;
use common::acme::{memory_issuer, pebble_through};
use common::bind9::{Bind9, TSIG_KEY_NAME};
use common::domain;
use common::logs::{captured, Captured};
use common::pebble::Pebble;

/// An issuer of `pebble` answering through `solver`.
fn issuer(pebble: &Pebble, solver: Dns01Solver) -> certkeeper::issuer::AcmeIssuer {
    memory_issuer(pebble, Arc::new(solver))
}

#[test]
fn a_dns01_run_logs_no_tsig_secret() {
    captured(a_dns01_run);
}

async fn a_dns01_run(captured: Captured) {
    let bind = Bind9::start(&["example.test"]).await;
    let pebble = pebble_through(bind.addr()).await;
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
        let issuer = issuer(&pebble, solver);
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

#[cfg(feature = "dns-providers")]
#[test]
fn a_provider_run_logs_no_api_key() {
    captured(a_provider_run);
}

#[cfg(feature = "dns-providers")]
async fn a_provider_run(captured: Captured) {
    use certkeeper::Setting;
    use common::powerdns::PowerDns;

    let pdns = PowerDns::start(&["example.test"]).await;
    let pebble = pebble_through(pdns.addr()).await;
    let wrong = "wrong-powerdns-api-key-0123456789";
    let mut shown = String::new();
    for (key, succeeds) in [(pdns.api_key(), true), (wrong, false)] {
        let server = pdns.addr().to_string();
        let config = Config::from_vars([
            (Setting::Dns01Provider.name(), "pdns"),
            (Setting::Dns01Token.name(), key),
            (Setting::Dns01ApiUrl.name(), pdns.api_url().as_str()),
            (Setting::Dns01Resolver.name(), server.as_str()),
            (Setting::Dns01Nameservers.name(), server.as_str()),
        ])
        .unwrap();
        shown += &format!("{config:?}\n");
        let issuer = issuer(&pebble, config.acme().dns01().cloned().unwrap());
        shown += &format!("{issuer:?}\n");
        let issued = tokio::time::timeout(
            Duration::from_secs(120),
            issuer.issue_for(&domain("*.example.test")),
        )
        .await
        .unwrap();
        match issued {
            Ok(_) => assert!(succeeds, "issued with a wrong key"),
            Err(err) => {
                assert!(!succeeds, "{err}");
                assert_eq!(err.code(), "dns_not_authenticated", "{err:?}");
                assert!(
                    err.to_string().contains(Setting::Dns01Token.name()),
                    "{err}"
                );
                shown += &format!("{err}\n{err:?}\n");
            }
        }
    }
    let logs = captured.text();
    assert!(
        logs.contains("TXT record added"),
        "the run was not logged at debug level"
    );
    for key in [pdns.api_key(), wrong] {
        assert!(!logs.contains(key), "an API key appears in the logs");
        assert!(
            !shown.contains(key),
            "an API key appears in Debug/Display output"
        );
    }
}
