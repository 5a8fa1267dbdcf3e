//! The ACME features of today's public CAs against Pebble 2.10.0 (Debian
//! unstable's, unpacked by `scripts/test`), which really validates HTTP-01:
//! ARI renewal windows and `replaces` (RFC 9773), profiles, P-384 keys, a
//! caller's HTTP client, external account binding, and a CA that forgot the
//! stored account.

use crate::common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use certkeeper::challenge::{Http01Server, Http01Solver};
use certkeeper::cipher::Keyring;
use certkeeper::error::SkipReason;
use certkeeper::issuer::instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use certkeeper::issuer::{
    AcmeIssuer, AcmeIssuerBuilder, IssueRequest, IssuedChain, Issuer, IssuerExt, IssuerKind,
    KeyType, RevocationReason, Revoker,
};
use certkeeper::store::{CertStore, FileStore, MemoryStore};
use certkeeper::{Clock, Error, Renewer, TestClock};
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions, PebbleVersion};
use common::tls::{round_trip, serving, verify_chain};
use common::{clock_at_now, domain, keyring, limited, TEST_KEY};
use time::{Duration, OffsetDateTime};

/// A guard against a hung test: far above what any case here needs.
const TEST_LIMIT: StdDuration = StdDuration::from_secs(180);
const NINETY_DAYS: u64 = 90 * 86_400;
/// Let's Encrypt's `shortlived` profile: 160 hours.
const SHORTLIVED: u64 = 160 * 3600;
const MAIN: &str = "www.certkeeper-test.com";

/// A Pebble 2.10 and the HTTP-01 solver listening on its port.
struct Stage {
    pebble: Pebble,
    solver: Http01Solver,
    store: Arc<MemoryStore>,
    cipher: Arc<Keyring>,
    clock: TestClock,
    _listener: Http01Server,
}

impl Stage {
    async fn start(options: PebbleOptions) -> Self {
        let pebble = Pebble::start(PebbleOptions {
            version: PebbleVersion::V2_10,
            ..options
        })
        .await;
        let solver = Http01Solver::new();
        let listener = serve_http01(&solver, &pebble).await;
        Self {
            pebble,
            solver,
            store: Arc::new(MemoryStore::new()),
            cipher: keyring(TEST_KEY),
            clock: clock_at_now(),
            _listener: listener,
        }
    }

    /// An issuer builder for this Pebble over the stage's solver, store and
    /// cipher, with timeouts for a local CA.
    fn issuer(&self) -> AcmeIssuerBuilder {
        pebble_issuer(
            &self.pebble,
            Arc::new(self.solver.clone()),
            self.store.clone(),
            self.cipher.clone(),
        )
        .request_timeout(StdDuration::from_secs(30))
        .order_timeout(StdDuration::from_secs(120))
    }

    /// A renewer over the stage's store and clock, issuing with `issuer`,
    /// whose main domain is [`MAIN`].
    fn renewer(&self, issuer: AcmeIssuer) -> Renewer {
        Renewer::builder(self.store.clone(), self.cipher.clone())
            .acme(Arc::new(issuer))
            .main_domain(Some(domain(MAIN)))
            .clock(Arc::new(self.clock.clone()))
            .build()
    }

    /// How many times Pebble was asked for a new account.
    fn registrations(&self) -> usize {
        self.pebble
            .log("pebble")
            .matches("POST /sign-me-up")
            .count()
    }
}

/// The stored record of `name`.
async fn record(store: &dyn CertStore, name: &str) -> certkeeper::store::CertRecord {
    store.load(&domain(name)).await.unwrap().unwrap()
}

#[tokio::test]
async fn the_ca_renewal_window_is_stored_and_the_renewal_replaces_the_certificate() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions {
            validity_seconds: Some(NINETY_DAYS),
            // The replacing order survives rejected nonces too.
            nonce_reject_percent: 30,
            ..PebbleOptions::default()
        })
        .await;
        let renewer = stage.renewer(stage.issuer().build().unwrap());
        let clock = &stage.clock;

        let first = renewer.issue_now(None).await.unwrap();
        let cert = first.certificate.clone().unwrap();
        let ari = first
            .ari
            .clone()
            .expect("Pebble 2.10 offers a renewal window");
        // Pebble suggests a window around two thirds of the lifetime.
        assert!(
            ari.window_start > cert.not_before && ari.window_end < cert.not_after,
            "{ari:?}"
        );
        assert!(
            (ari.window_start..=ari.window_end).contains(&ari.renew_at),
            "{ari:?}"
        );
        assert!(ari.next_check > clock.now(), "{ari:?}");
        assert_eq!(first.renew_date, ari.renew_at.min(ari.next_check));
        assert!(first
            .log_lines()
            .iter()
            .any(|l| l.contains("renewal window (ARI)")));

        // Asked again when the CA allows: the same window keeps the same
        // renew time, and nothing is ordered.
        clock.set(ari.next_check + Duration::seconds(1));
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(
            report.skipped,
            vec![(domain(MAIN), SkipReason::RenewalWindowAhead)],
            "{report:?}"
        );
        let checked = record(&*stage.store, MAIN).await;
        let again = checked.ari.clone().unwrap();
        assert_eq!(again.renew_at, ari.renew_at);
        assert!(again.next_check > clock.now());
        assert_eq!(checked.certificate, first.certificate);

        // In the window: renewed, with `replaces` naming the old certificate.
        clock.set(ari.renew_at + Duration::seconds(1));
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued, vec![domain(MAIN)], "{report:?}");
        let renewed = record(&*stage.store, MAIN).await;
        assert_ne!(
            renewed.certificate.as_ref().unwrap().fingerprint,
            cert.fingerprint
        );
        assert!(renewed.ari.is_some());
        let replacements = || {
            stage
                .pebble
                .log("pebble")
                .matches("is a replacement of")
                .count()
        };
        assert_eq!(replacements(), 1, "{}", stage.pebble.log("pebble"));
        // Pebble refuses a second order replacing the same certificate
        // (alreadyReplaced): the order goes through without `replaces`.
        let probe = stage.issuer().build().unwrap();
        let replaced = IssuedChain::new(cert.chain_pem.clone(), probe.kind());
        probe
            .issue(&IssueRequest::new(domain(MAIN)).replacing(replaced))
            .await
            .unwrap();
        assert_eq!(replacements(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_revoked_certificate_is_renewed_at_the_next_window_check() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions {
            validity_seconds: Some(NINETY_DAYS),
            ..PebbleOptions::default()
        })
        .await;
        let issuer = stage.issuer().build().unwrap();
        let renewer = stage.renewer(stage.issuer().build().unwrap());
        let clock = &stage.clock;

        let first = renewer.issue_now(None).await.unwrap();
        let cert = first.certificate.clone().unwrap();
        let ari = first.ari.clone().unwrap();
        let chain = IssuedChain::new(cert.chain_pem.clone(), cert.issuer.clone());
        Revoker::revoke(&issuer, &domain(MAIN), &chain, RevocationReason::Superseded)
            .await
            .unwrap();

        // The window moved to now: the next check renews in the same cycle.
        let check = ari.next_check + Duration::seconds(1);
        assert!(check < ari.renew_at, "{ari:?}");
        clock.set(check);
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued, vec![domain(MAIN)], "{report:?}");
        let renewed = record(&*stage.store, MAIN).await;
        assert_ne!(
            renewed.certificate.as_ref().unwrap().fingerprint,
            cert.fingerprint
        );
        let moved = format!("renew at {}", rfc3339(check));
        assert!(
            renewed.log_lines().iter().any(|l| l.contains(&moved)),
            "no log line with {moved:?}: {:#?}",
            renewed.log_lines()
        );
    })
    .await;
}

#[tokio::test]
async fn a_certificate_is_revoked_at_the_ca_on_request_and_when_its_domain_is_removed() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions::default()).await;
        let acme = Arc::new(stage.issuer().build().unwrap());
        let renewer = Renewer::builder(stage.store.clone(), stage.cipher.clone())
            .acme(acme.clone())
            .revoker(acme.clone())
            .main_domain(Some(domain(MAIN)))
            .clock(Arc::new(stage.clock.clone()))
            .build();
        let status = |chain: String| {
            let pebble = &stage.pebble;
            async move { pebble.cert_status(&chain).await }
        };

        // Revoked on request: the CA says so, and the record stays, due
        // now, without the revoked certificate.
        let first = renewer.issue_now(None).await.unwrap();
        let cert = first.certificate.clone().unwrap();
        assert!(status(cert.chain_pem.clone()).await.contains("\"Valid\""));
        let after = renewer
            .revoke(&domain(MAIN), RevocationReason::KeyCompromise)
            .await
            .unwrap();
        let answer = status(cert.chain_pem.clone()).await;
        assert!(answer.contains("\"Revoked\""), "{answer}");
        assert!(after.certificate.is_none());
        assert!(after.renew_date <= stage.clock.now());
        assert!(after
            .log_lines()
            .last()
            .unwrap()
            .contains("revoked (key-compromise)"));
        let err = renewer
            .revoke(&domain(MAIN), RevocationReason::KeyCompromise)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        // The next cycle issues a new one.
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued, vec![domain(MAIN)], "{report:?}");

        // A custom domain removed with revocation: revoked, then removed.
        let shop = domain("shop.certkeeper-test.com");
        renewer.add_domain(&shop).await.unwrap();
        let shop_cert = renewer
            .issue_now(Some(&shop))
            .await
            .unwrap()
            .certificate
            .unwrap();
        assert!(renewer
            .remove_domain_revoking(&shop, Some(RevocationReason::CessationOfOperation))
            .await
            .unwrap());
        assert!(stage.store.load(&shop).await.unwrap().is_none());
        let answer = status(shop_cert.chain_pem.clone()).await;
        assert!(answer.contains("\"Revoked\""), "{answer}");

        // Another CA's certificate is not this revoker's: refused before
        // anything is sent.
        let foreign = IssuedChain::new(cert.chain_pem.clone(), IssuerKind::new("zerossl").unwrap());
        let revocations = || stage.pebble.log("pebble").matches("revoke-cert").count();
        let before = revocations();
        let err = Revoker::revoke(
            &*acme,
            &domain(MAIN),
            &foreign,
            RevocationReason::Superseded,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::NotRevocable { .. }), "{err}");
        assert_eq!(err.code(), "not_revocable");
        assert_eq!(revocations(), before);
    })
    .await;
}

/// Without a revoker, revocation is a settings error and removal with
/// revocation removes nothing.
#[tokio::test]
async fn without_a_revoker_nothing_is_revoked_or_removed() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions::default()).await;
        let renewer = stage.renewer(stage.issuer().build().unwrap());
        renewer.issue_now(None).await.unwrap();
        let err = renewer
            .remove_domain_revoking(&domain(MAIN), Some(RevocationReason::Unspecified))
            .await
            .unwrap_err();
        assert!(err.is_settings_error(), "{err}");
        assert!(stage.store.load(&domain(MAIN)).await.unwrap().is_some());
    })
    .await;
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn shortlived_profile_certificates_are_issued_and_renewed_on_time() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions {
            validity_seconds: Some(NINETY_DAYS),
            profiles: vec![
                ("classic".into(), NINETY_DAYS),
                ("shortlived".into(), SHORTLIVED),
            ],
            ..PebbleOptions::default()
        })
        .await;
        let issuer = stage.issuer().profile("shortlived").build().unwrap();
        assert_eq!(issuer.profile(), Some("shortlived"));
        let renewer = stage.renewer(issuer);
        let clock = &stage.clock;

        let first = renewer.issue_now(None).await.unwrap();
        let cert = first.certificate.clone().unwrap();
        let lifetime = (cert.not_after - cert.not_before).whole_seconds();
        assert!(
            (SHORTLIVED as i64 - 60..=SHORTLIVED as i64 + 60).contains(&lifetime),
            "{lifetime}"
        );
        // Renewed inside the lifetime, well before expiry.
        assert!(
            first.renew_date < cert.not_after - Duration::days(1),
            "{first:?}"
        );
        let renew_at = first.ari.as_ref().unwrap().renew_at;
        clock.set(renew_at.max(first.renew_date) + Duration::seconds(1));
        let mut report = renewer.run_cycle().await.unwrap();
        if report.issued.is_empty() {
            // The cycle asked for the window first; it has begun now.
            clock.set(record(&*stage.store, MAIN).await.renew_date + Duration::seconds(1));
            report = renewer.run_cycle().await.unwrap();
        }
        assert_eq!(report.issued, vec![domain(MAIN)], "{report:?}");
        let renewed = record(&*stage.store, MAIN).await;
        let new_cert = renewed.certificate.unwrap();
        assert_ne!(new_cert.fingerprint, cert.fingerprint);
        let lifetime = (new_cert.not_after - new_cert.not_before).whole_seconds();
        assert!((SHORTLIVED as i64 - 60..=SHORTLIVED as i64 + 60).contains(&lifetime));
        // On time: before the first one expired.
        assert!(clock.now() < cert.not_after);
    })
    .await;
}

#[tokio::test]
async fn a_profile_the_ca_does_not_offer_is_a_config_error_naming_the_setting() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions {
            profiles: vec![
                ("classic".into(), NINETY_DAYS),
                ("shortlived".into(), SHORTLIVED),
            ],
            ..PebbleOptions::default()
        })
        .await;
        let issuer = stage.issuer().profile("tlsserver").build().unwrap();
        let err = issuer.issue_for(&domain(MAIN)).await.unwrap_err();
        match &err {
            Error::Config {
                name,
                reason: message,
            } => {
                assert_eq!(name, "AcmeIssuerBuilder::profile");
                assert!(message.contains("\"tlsserver\""), "{message}");
                assert!(message.contains("classic, shortlived"), "{message}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        assert!(!stage.pebble.log("pebble").contains("POST /order-plz"));

        // Through the renewer: a wrong setting is not the domains' fault.
        // No attempt is counted, the cycle stops ordering at the first
        // answer, and says why.
        let renewer = stage.renewer(stage.issuer().profile("tlsserver").build().unwrap());
        let names = [
            "a.certkeeper-test.com",
            "b.certkeeper-test.com",
            "c.certkeeper-test.com",
        ];
        for name in names {
            renewer.add_domain(&domain(name)).await.unwrap();
        }
        for _ in 0..2 {
            let report = renewer.run_cycle().await.unwrap();
            assert_eq!(
                report.stopped,
                Some(SkipReason::Misconfigured),
                "{report:?}"
            );
            assert!(report.failed.is_empty(), "{report:?}");
            assert!(report.issued.is_empty(), "{report:?}");
            for name in names {
                assert_eq!(record(&*stage.store, name).await.attempts, 0, "{name}");
            }
        }
        assert!(!stage.pebble.log("pebble").contains("POST /order-plz"));
    })
    .await;
}

#[tokio::test]
async fn a_p384_certificate_is_issued_and_served() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions::default()).await;
        let issuer = stage.issuer().key_type(KeyType::EcdsaP384).build().unwrap();
        assert_eq!(issuer.key_type(), KeyType::EcdsaP384);
        let cert = issuer.issue_for(&domain(MAIN)).await.unwrap();
        let leaf = certkeeper::cert::leaf_der(&cert.chain_pem).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let spki = parsed.public_key();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.to_id_string());
        assert_eq!(curve.as_deref(), Some("1.3.132.0.34"), "not secp384r1");
        let roots = stage.pebble.issuer_roots().await;
        verify_chain(&cert.chain_pem, roots.clone(), MAIN);
        assert_eq!(
            round_trip(serving(&cert), roots, MAIN).await,
            cert.fingerprint
        );
    })
    .await;
}

/// A caller's HTTP client: certkeeper's own, counting requests.
struct Counting {
    inner: Box<dyn HttpClient>,
    requests: Arc<AtomicUsize>,
}

impl HttpClient for Counting {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<BytesResponse, certkeeper::issuer::instant_acme::Error>>
                + Send,
        >,
    > {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.request(req)
    }
}

#[tokio::test]
async fn issues_through_the_callers_http_client() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions::default()).await;
        let requests = Arc::new(AtomicUsize::new(0));
        let client = Counting {
            inner: AcmeIssuer::default_http_client(Some(stage.pebble.ca_root_pem_path())).unwrap(),
            requests: requests.clone(),
        };
        let issuer = AcmeIssuer::builder(stage.pebble.directory_url())
            .contact_email(common::CONTACT_EMAIL)
            .solver(Arc::new(stage.solver.clone()))
            .store(stage.store.clone())
            .cipher(stage.cipher.clone())
            .http_client(client)
            .build()
            .unwrap();
        let cert = issuer.issue_for(&domain(MAIN)).await.unwrap();
        verify_chain(&cert.chain_pem, stage.pebble.issuer_roots().await, MAIN);
        // Directory, nonce, account, order, authorization, challenge,
        // polls, finalize, certificate: every one through the client.
        let counted = requests.load(Ordering::SeqCst);
        assert!(counted >= 8, "{counted} requests");
        assert!(format!("{issuer:?}").contains("custom"));

        // The client decides what it trusts: a CA root besides it is refused.
        let err = stage
            .issuer()
            .http_client(Counting {
                inner: AcmeIssuer::default_http_client(None).unwrap(),
                requests: requests.clone(),
            })
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "AcmeIssuerBuilder::ca_root_pem_file"),
            "{err:?}"
        );
    })
    .await;
}

const EAB_KID: &str = "kid-1";
const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

#[tokio::test]
async fn external_account_binding_registers_where_the_ca_requires_it() {
    limited(TEST_LIMIT, async {
        let stage = Stage::start(PebbleOptions {
            eab_keys: vec![(EAB_KID.into(), EAB_KEY.into())],
            ..PebbleOptions::default()
        })
        .await;

        // Without the binding: a typed error naming both settings.
        let err = stage
            .issuer()
            .build()
            .unwrap()
            .issue_for(&domain(MAIN))
            .await
            .unwrap_err();
        match &err {
            Error::Config {
                name,
                reason: message,
            } => {
                assert_eq!(name, "AcmeIssuerBuilder::external_account_binding");
                assert!(message.contains("HMAC key"), "{message}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        assert!(stage.store.list_accounts().await.unwrap().is_empty());

        // With it: registered, stored sealed, and issuing.
        let issuer = stage
            .issuer()
            .external_account_binding(EAB_KID, EAB_KEY)
            .build()
            .unwrap();
        assert!(!format!("{issuer:?}").contains(&EAB_KEY[..16]));
        let cert = issuer.issue_for(&domain(MAIN)).await.unwrap();
        verify_chain(&cert.chain_pem, stage.pebble.issuer_roots().await, MAIN);
        let accounts = stage.store.list_accounts().await.unwrap();
        assert_eq!(accounts.len(), 1);
        let stored = stage
            .store
            .load_account(&accounts[0])
            .await
            .unwrap()
            .unwrap();
        let sealed = serde_json::to_string(&stored).unwrap();
        assert!(!sealed.contains(&EAB_KEY[..16]) && !sealed.contains(EAB_KID));

        // A wrong key is refused by the CA.
        let wrong = pebble_issuer(
            &stage.pebble,
            Arc::new(stage.solver.clone()),
            Arc::new(MemoryStore::new()),
            stage.cipher.clone(),
        )
        .external_account_binding(
            EAB_KID,
            "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
        )
        .build()
        .unwrap();
        let err = wrong.issue_for(&domain(MAIN)).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Acme {
                    step: "account",
                    ..
                }
            ),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_ca_that_forgot_the_account_gets_one_new_account() {
    limited(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut stage = Stage::start(PebbleOptions::default()).await;
        let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
        let issuer = pebble_issuer(
            &stage.pebble,
            Arc::new(stage.solver.clone()),
            store.clone(),
            stage.cipher.clone(),
        )
        .build()
        .unwrap();
        issuer.issue_for(&domain(MAIN)).await.unwrap();
        let ids = store.list_accounts().await.unwrap();
        let before = store.load_account(&ids[0]).await.unwrap().unwrap();

        // A new CA on the same port, with no memory of the account.
        stage.pebble.restart().await;
        assert_eq!(stage.registrations(), 0);
        // Two orders at once share one re-registration.
        let names = [domain(MAIN), domain("api.certkeeper-test.com")];
        let (a, b) = tokio::join!(issuer.issue_for(&names[0]), issuer.issue_for(&names[1]));
        a.unwrap();
        b.unwrap();
        assert_eq!(stage.registrations(), 1, "{}", stage.pebble.log("pebble"));

        // Stored in place of the old one, and used from the store after a restart.
        let after = store.load_account(&ids[0]).await.unwrap().unwrap();
        assert_eq!(store.list_accounts().await.unwrap(), ids);
        assert!(after.version > before.version);
        assert_ne!(after.sealed_credentials, before.sealed_credentials);
        let restarted = pebble_issuer(
            &stage.pebble,
            Arc::new(stage.solver.clone()),
            store.clone(),
            stage.cipher.clone(),
        )
        .build()
        .unwrap();
        restarted.issue_for(&names[0]).await.unwrap();
        assert_eq!(stage.registrations(), 1);
    })
    .await;
}
