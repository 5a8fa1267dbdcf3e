//! Never silent, end to end: a certificate driven to its last attempt
//! against a real Pebble, and a certificate about to expire without a
//! renewal, each emailed once to the security address through a real SMTP
//! server (aiosmtpd), whose delivered messages are read back.

use crate::common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use certkeeper::challenge::Http01Solver;
use certkeeper::events::{Event, Subscription};
use certkeeper::notify::{SmtpNotifier, SmtpSettings};
use certkeeper::store::{CertStore, FileStore};
use certkeeper::{Clock, Config, Renewer, TestClock};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions};
use common::smtp::{Mail, SmtpMode, SmtpServer};
use common::{clock_at_now, domain, keyring, limited, CONTACT_EMAIL};
use time::Duration;

const TEST_LIMIT: StdDuration = StdDuration::from_secs(240);
const KEY: &str = "notify-smtp-test-key-0123456789ab";
const REFUSED: &str = "refused.certkeeper-test.com";
const REJECTED: &str = "urn:ietf:params:acme:error:rejectedIdentifier";

/// The notifier the environment describes: the reference's variable names,
/// read by `Config`, pointing at the test's SMTP server.
fn notifier(smtp: &SmtpServer) -> Arc<SmtpNotifier> {
    let config = Config::from_vars([
        (
            "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS",
            CONTACT_EMAIL.to_string(),
        ),
        ("_APP_SMTP_HOST", "127.0.0.1".to_string()),
        ("_APP_SMTP_PORT", smtp.port().to_string()),
        ("_APP_SMTP_SECURE", String::new()),
        (
            "_APP_SYSTEM_EMAIL_ADDRESS",
            "certs@certkeeper-test.com".to_string(),
        ),
        ("_APP_SYSTEM_EMAIL_NAME", "Certkeeper Test".to_string()),
    ])
    .unwrap();
    Arc::new(
        config
            .smtp_notifier()
            .unwrap()
            .expect("_APP_SMTP_HOST is set"),
    )
}

/// A renewer over `dir`'s file store, issuing from `pebble` (HTTP-01
/// answered by `solver`), emailing through `smtp`, on `clock`.
async fn renewer(
    dir: &std::path::Path,
    pebble: &Pebble,
    solver: &Http01Solver,
    smtp: &SmtpServer,
    clock: &TestClock,
) -> (Renewer, Arc<FileStore>) {
    let store = Arc::new(FileStore::open(dir).await.unwrap());
    let keyring = keyring(KEY);
    let issuer = pebble_issuer(
        pebble,
        Arc::new(solver.clone()),
        store.clone(),
        keyring.clone(),
    )
    .request_timeout(StdDuration::from_secs(30))
    .order_timeout(StdDuration::from_secs(60))
    .build()
    .unwrap();
    let renewer = Renewer::builder(store.clone(), keyring)
        .acme(Arc::new(issuer))
        .main_domain(Some(domain("www.certkeeper-test.com")))
        .clock(Arc::new(clock.clone()))
        .subscriber(notifier(smtp))
        .build();
    (renewer, store)
}

/// Every event queued on `events` now.
fn drain(events: &mut Subscription) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv()).collect()
}

fn to_security_address(mail: &Mail) {
    assert_eq!(mail.rcpt_tos, vec![CONTACT_EMAIL.to_string()], "{mail:#?}");
    assert!(mail.to.contains(CONTACT_EMAIL), "{mail:#?}");
    assert_eq!(mail.mail_from, "certs@certkeeper-test.com", "{mail:#?}");
    assert!(mail.from.contains("Certkeeper Test"), "{mail:#?}");
}

#[tokio::test]
async fn the_last_failed_attempt_is_emailed_once_and_the_cycle_reports_the_certificate() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions {
            domain_blocklist: vec![REFUSED.into()],
            ..PebbleOptions::default()
        })
        .await;
        let solver = Http01Solver::new();
        let _listener = serve_http01(&solver, &pebble).await;
        let smtp = SmtpServer::start();
        let dir = tempfile::tempdir().unwrap();
        let clock = clock_at_now();
        let refused = domain(REFUSED);

        let (first, store) = renewer(dir.path(), &pebble, &solver, &smtp, &clock).await;
        let mut events = first.subscribe(64);
        first.add_domain(&refused).await.unwrap();
        let max = first.renewal_policy().max_attempts;
        for attempt in 1..=max {
            clock.advance(Duration::hours(24));
            let report = first.run_cycle().await.unwrap();
            assert_eq!(
                report.failed.iter().map(|f| &f.domain).collect::<Vec<_>>(),
                [&refused],
                "cycle {attempt}: {report:?}"
            );
            let failed: Vec<(u32, Option<String>)> = drain(&mut events)
                .into_iter()
                .filter_map(|e| match e {
                    Event::Failed {
                        domain,
                        attempt,
                        problem,
                        ..
                    } if domain == refused => Some((attempt, problem)),
                    _ => None,
                })
                .collect();
            assert_eq!(
                failed,
                [(attempt, Some(REJECTED.to_string()))],
                "cycle {attempt}"
            );
        }
        assert_eq!(store.load(&refused).await.unwrap().unwrap().attempts, max);

        // The "gave up" email: to the security address, naming the domain
        // and the CA's refusal.
        let gave_up = smtp
            .wait_for("saying the cycle gave up", |m| {
                m.subject.contains("gave up")
            })
            .await;
        to_security_address(&gave_up);
        assert_eq!(
            gave_up.subject,
            format!("Certificate failure for {REFUSED}: gave up after {max} attempts")
        );
        assert!(gave_up.body.contains(REFUSED), "{}", gave_up.body);
        assert!(gave_up.body.contains(REJECTED), "{}", gave_up.body);
        assert!(
            gave_up.body.contains("generate the certificate by hand"),
            "{}",
            gave_up.body
        );
        // Each earlier failure was emailed too, as the reference does.
        let failures = smtp
            .mails()
            .into_iter()
            .filter(|m| m.subject == format!("Certificate failure for {REFUSED}"))
            .count();
        assert_eq!(failures, max as usize - 1);

        // The next cycles pass it over, and say so; no new email, also
        // after a restart.
        clock.advance(Duration::hours(24));
        let report = first.run_cycle().await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        let limit = report
            .at_attempt_limit
            .clone()
            .expect("the file store counts them");
        assert_eq!(
            (limit.total, limit.domains.clone()),
            (1, vec![refused.clone()])
        );
        assert!(
            report.to_string().contains("1 at the attempt limit"),
            "{report}"
        );
        let finished = drain(&mut events)
            .into_iter()
            .find_map(|e| match e {
                Event::CycleFinished { report, .. } => Some(report),
                _ => None,
            })
            .expect("a cycle-finished event");
        assert_eq!(finished.at_attempt_limit.as_ref().unwrap().total, 1);
        drop((first, store));
        let (second, _store) = renewer(dir.path(), &pebble, &solver, &smtp, &clock).await;
        second.load().await.unwrap();
        clock.advance(Duration::hours(24));
        second.run_cycle().await.unwrap();
        tokio::time::sleep(StdDuration::from_millis(500)).await;
        let gave_up_mails = smtp
            .mails()
            .into_iter()
            .filter(|m| m.subject.contains("gave up"))
            .count();
        assert_eq!(gave_up_mails, 1, "{:#?}", smtp.mails());
    })
    .await;
}

#[tokio::test]
async fn a_certificate_about_to_expire_without_renewal_is_emailed_once() {
    limited(TEST_LIMIT, async {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let solver = Http01Solver::new();
        let listener = serve_http01(&solver, &pebble).await;
        let smtp = SmtpServer::start();
        let dir = tempfile::tempdir().unwrap();
        let clock = clock_at_now();
        // The main domain: the cycle registers and issues it by itself.
        let name = domain("www.certkeeper-test.com");

        let (first, store) = renewer(dir.path(), &pebble, &solver, &smtp, &clock).await;
        let mut events = first.subscribe(64);
        let report = first.run_cycle().await.unwrap();
        assert_eq!(report.issued, vec![name.clone()], "{report:?}");
        assert!(drain(&mut events)
            .iter()
            .any(|e| matches!(e, Event::Issued { domain, .. } if *domain == name)));
        let cert = store
            .load(&name)
            .await
            .unwrap()
            .unwrap()
            .certificate
            .unwrap();

        // Three days before expiry, and the CA can no longer reach the
        // HTTP-01 answer: each renewal fails.
        drop(listener);
        clock.set(cert.not_after - Duration::days(3));
        let report = first.run_cycle().await.unwrap();
        assert!(report.failed.iter().any(|f| f.domain == name), "{report:?}");
        assert_eq!(report.expiring_soon, vec![name.clone()]);
        let expiring: Vec<Event> = drain(&mut events)
            .into_iter()
            .filter(|e| matches!(e, Event::ExpiringSoon { .. }))
            .collect();
        assert_eq!(expiring.len(), 1, "{expiring:?}");

        let mail = smtp
            .wait_for("about the expiring certificate", |m| {
                m.subject.contains("expires on")
            })
            .await;
        to_security_address(&mail);
        assert!(
            mail.subject.contains("www.certkeeper-test.com"),
            "{mail:#?}"
        );
        assert!(mail.body.contains("was not renewed"), "{}", mail.body);
        assert!(
            mail.body.contains("attempt 1"),
            "the last error: {}",
            mail.body
        );

        // Once per certificate: not again next cycle, nor after a restart.
        clock.advance(Duration::hours(12));
        first.run_cycle().await.unwrap();
        assert!(!drain(&mut events)
            .iter()
            .any(|e| matches!(e, Event::ExpiringSoon { .. })));
        drop((first, store));
        let (second, _store) = renewer(dir.path(), &pebble, &solver, &smtp, &clock).await;
        clock.advance(Duration::hours(12));
        let report = second.run_cycle().await.unwrap();
        assert_eq!(
            report.expiring_soon,
            vec![name.clone()],
            "still expiring, not told again"
        );
        tokio::time::sleep(StdDuration::from_millis(500)).await;
        let expiry_mails = smtp
            .mails()
            .into_iter()
            .filter(|m| m.subject.contains("expires on"))
            .count();
        assert_eq!(expiry_mails, 1, "{:#?}", smtp.mails());
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_a_typed_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings =
        SmtpSettings::new("127.0.0.1", "certs@certkeeper-test.com", CONTACT_EMAIL).unwrap();
    settings.port = port;
    settings.username = Some("mailer".into());
    settings.password = Some(zeroize::Zeroizing::new("smtp-password-never-shown".into()));
    let notifier = SmtpNotifier::new(settings).unwrap();
    let notice = certkeeper::notify::Notice {
        subject: "s".into(),
        body: "b".into(),
    };
    let err = notifier.send(&notice).await.unwrap_err();
    assert_eq!(err.code(), "notify");
    let shown = format!("{err} {err:?} {notifier:?}");
    assert!(!shown.contains("smtp-password-never-shown"), "{shown}");
    let _ = Clock::now(&certkeeper::SystemClock);
}

#[tokio::test]
async fn starttls_and_tls_from_the_start_deliver_and_check_the_server_certificate() {
    limited(StdDuration::from_secs(60), async {
        for (mode, secure) in [(SmtpMode::StartTls, "tls"), (SmtpMode::Tls, "ssl")] {
            let smtp = SmtpServer::start_with(mode);
            let vars = |root: Option<&std::path::Path>| {
                let mut vars = vec![
                    (
                        "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS",
                        CONTACT_EMAIL.to_string(),
                    ),
                    ("_APP_SMTP_HOST", "127.0.0.1".to_string()),
                    ("_APP_SMTP_PORT", smtp.port().to_string()),
                    ("_APP_SMTP_SECURE", secure.to_string()),
                ];
                if let Some(root) = root {
                    vars.push(("_APP_SMTP_CA_ROOT", root.display().to_string()));
                }
                Config::from_vars(vars)
                    .unwrap()
                    .smtp_notifier()
                    .unwrap()
                    .unwrap()
            };
            let notice = certkeeper::notify::Notice {
                subject: format!("over {secure}"),
                body: "sealed in transit".into(),
            };
            // The system's roots do not know the server's CA: refused.
            let err = vars(None).send(&notice).await.unwrap_err();
            assert_eq!(err.code(), "notify", "{secure}: {err}");
            // With the server's root, delivered over TLS.
            vars(Some(&smtp.ca_root())).send(&notice).await.unwrap();
            let mail = smtp
                .wait_for("over TLS", |m| m.subject == notice.subject)
                .await;
            assert_eq!(mail.body.trim(), "sealed in transit");
            assert_eq!(smtp.mails().len(), 1, "{secure}");
        }
    })
    .await;
}
