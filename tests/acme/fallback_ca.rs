//! A fallback CA for real: two Pebbles, the first refusing a name
//! (`domainBlocklist`), behind one `FallbackIssuer` given to the renewer.
//! Each Pebble really validates HTTP-01 on its own port, answered by one
//! `Http01Solver` listening on both.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use certkeeper::cert::IssuerKind;
use certkeeper::challenge::Http01Solver;
use certkeeper::error::ProblemKind;
use certkeeper::issuer::{AcmeIssuer, FallbackIssuer, Issuer};
use certkeeper::store::{CertStore, MemoryStore};
use certkeeper::Renewer;
use common::acme::{pebble_issuer, serve_http01};
use common::pebble::{Pebble, PebbleOptions};
use common::tls::verify_chain;
use common::{domain, keyring, limited, TEST_KEY};

const TEST_LIMIT: Duration = Duration::from_secs(180);

fn issuer(
    pebble: &Pebble,
    name: &'static str,
    solver: &Http01Solver,
    store: Arc<MemoryStore>,
) -> AcmeIssuer {
    pebble_issuer(pebble, Arc::new(solver.clone()), store, keyring(TEST_KEY))
        .kind(IssuerKind::new(name).unwrap())
        .request_timeout(Duration::from_secs(30))
        .order_timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Orders Pebble created, from its log.
fn orders(pebble: &Pebble) -> usize {
    pebble.log("pebble").matches("Added order").count()
}

#[tokio::test]
async fn a_name_the_first_ca_refuses_is_issued_by_the_second_and_the_record_says_so() {
    limited(TEST_LIMIT, async {
        let first = Pebble::start(PebbleOptions {
            domain_blocklist: vec![
                "blocked.certkeeper-test.com".into(),
                "refused.certkeeper-test.com".into(),
            ],
            ..PebbleOptions::default()
        })
        .await;
        let second = Pebble::start(PebbleOptions {
            domain_blocklist: vec!["refused.certkeeper-test.com".into()],
            nonce_reject_percent: 20,
            ..PebbleOptions::default()
        })
        .await;
        let solver = Http01Solver::new();
        let _on_first = serve_http01(&solver, &first).await;
        let _on_second = serve_http01(&solver, &second).await;
        let store = Arc::new(MemoryStore::new());
        let fallback = FallbackIssuer::new(vec![
            Arc::new(issuer(&first, "first-ca", &solver, store.clone())),
            Arc::new(issuer(&second, "second-ca", &solver, store.clone())),
        ])
        .unwrap();
        assert_eq!(fallback.kind().as_str(), "first-ca");
        let renewer = Renewer::builder(store.clone(), keyring(TEST_KEY))
            .acme(Arc::new(fallback))
            .main_domain(Some(domain("www.certkeeper-test.com")))
            .build();
        for name in [
            "www.certkeeper-test.com",
            "blocked.certkeeper-test.com",
            "refused.certkeeper-test.com",
        ] {
            renewer.add_domain(&domain(name)).await.unwrap();
        }
        let report = renewer.run_cycle().await.unwrap();
        assert_eq!(report.issued.len(), 2, "{report:?}");

        let issued_by = |name: &'static str| {
            let store = store.clone();
            async move {
                let record = store.load(&domain(name)).await.unwrap().unwrap();
                record
                    .certificate
                    .map(|cert| (cert.issuer.as_str().to_owned(), cert.chain_pem))
            }
        };
        let (by, _) = issued_by("www.certkeeper-test.com").await.unwrap();
        assert_eq!(by, "first-ca");
        let (by, chain) = issued_by("blocked.certkeeper-test.com").await.unwrap();
        assert_eq!(by, "second-ca");
        verify_chain(
            &chain,
            second.issuer_roots().await,
            "blocked.certkeeper-test.com",
        );
        // The second CA was asked only for what the first refused.
        assert_eq!(orders(&first), 1, "{}", first.logs());
        assert_eq!(orders(&second), 1, "{}", second.logs());

        // Refused by both: one failed attempt, with the last CA's refusal.
        assert_eq!(report.failed.len(), 1, "{report:?}");
        let failure = &report.failed[0];
        assert_eq!(failure.domain, domain("refused.certkeeper-test.com"));
        assert!(
            failure
                .error
                .acme_problem()
                .unwrap()
                .is(ProblemKind::RejectedIdentifier),
            "{:?}",
            failure.error
        );
        let record = store
            .load(&domain("refused.certkeeper-test.com"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.attempts, 1);
        assert!(record.certificate.is_none());
    })
    .await;
}
