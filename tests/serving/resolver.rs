//! The resolver through real TLS handshakes with a rustls client: exact
//! names, wildcards, the self-signed fallback, removal, certificates loaded
//! on first use, and handshakes while certificates are swapped.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use certkeeper::cert::IssuedCert;
use certkeeper::issuer::SelfSignedIssuer;
use certkeeper::store::FileStore;
use certkeeper::{CertResolver, Domain, Renewer};
use common::tls::{handshake, trusting, TlsListener};
use common::{domain, keyring, limited, TEST_KEY};

const TEST_LIMIT: Duration = Duration::from_secs(120);

fn issue(name: &str) -> IssuedCert {
    SelfSignedIssuer::new()
        .issue_blocking(&domain(name))
        .unwrap()
}

fn insert(resolver: &CertResolver, name: &str) -> IssuedCert {
    let cert = issue(name);
    resolver
        .insert_pem(&domain(name), &cert.chain_pem, cert.key_pem.as_bytes())
        .unwrap();
    cert
}

async fn listener(resolver: &CertResolver) -> TlsListener {
    TlsListener::start(resolver.server_config(&[b"http/1.1"]).unwrap(), None).await
}

#[tokio::test]
async fn exact_names_and_wildcards_with_the_exact_name_first() {
    limited(TEST_LIMIT, async {
        let resolver = CertResolver::new();
        let api = insert(&resolver, "api.test");
        let wildcard = insert(&resolver, "*.shop.test");
        let www = insert(&resolver, "www.shop.test");
        let server = listener(&resolver).await;
        let at = server.address;

        // Verified as a client does: the wildcard's leaf trusted, and
        // webpki's own name matching accepts it for one label only.
        let got = handshake(at, Some("api.test"), Some(trusting(&api.chain_pem)), &[])
            .await
            .unwrap();
        assert_eq!(got.fingerprint, api.fingerprint);
        let got = handshake(
            at,
            Some("a.shop.test"),
            Some(trusting(&wildcard.chain_pem)),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(got.fingerprint, wildcard.fingerprint);
        assert_eq!(got.dns_names(), vec!["*.shop.test"]);
        let got = handshake(
            at,
            Some("www.shop.test"),
            Some(trusting(&www.chain_pem)),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(got.fingerprint, www.fingerprint, "the exact name wins");

        // Not covered by the wildcard: the fallback, which a client
        // trusting only the wildcard refuses.
        for name in ["shop.test", "a.b.shop.test"] {
            let got = handshake(at, Some(name), None, &[]).await.unwrap();
            assert_ne!(got.fingerprint, wildcard.fingerprint, "{name}");
            let refused = handshake(at, Some(name), Some(trusting(&wildcard.chain_pem)), &[]).await;
            assert!(refused.is_err(), "{name}: {refused:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn no_sni_and_unknown_names_get_a_self_signed_fallback_until_the_main_domain_is_set() {
    limited(TEST_LIMIT, async {
        let resolver = CertResolver::new();
        let api = insert(&resolver, "api.test");
        let server = listener(&resolver).await;
        let at = server.address;

        let unknown = handshake(at, Some("unknown.test"), None, &[])
            .await
            .unwrap();
        assert_eq!(unknown.dns_names(), vec!["localhost"]);
        let no_sni = handshake(at, None, None, &[]).await.unwrap();
        assert_eq!(
            no_sni.fingerprint, unknown.fingerprint,
            "made once, then kept"
        );
        let local = handshake(at, Some("localhost"), None, &[]).await.unwrap();
        assert_eq!(local.fingerprint, unknown.fingerprint);
        // A browser's user can pass the warning: the fallback is a valid
        // self-signed certificate for its name.
        let trusted = handshake(
            at,
            Some("localhost"),
            Some({
                let mut roots = rustls::RootCertStore::empty();
                roots.add(local.leaf.clone()).unwrap();
                roots
            }),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(trusted.fingerprint, local.fingerprint);

        // The main domain without a certificate yet: self-signed in its name.
        resolver.set_fallback(Some(domain("console.test")));
        let named = handshake(at, None, None, &[]).await.unwrap();
        assert_eq!(named.dns_names(), vec!["console.test"]);
        // With its certificate: that one, to every unknown name.
        let main = insert(&resolver, "console.test");
        for name in [None, Some("unknown.test")] {
            let got = handshake(at, name, None, &[]).await.unwrap();
            assert_eq!(got.fingerprint, main.fingerprint, "{name:?}");
        }
        let got = handshake(at, Some("api.test"), None, &[]).await.unwrap();
        assert_eq!(got.fingerprint, api.fingerprint);
        assert_eq!(server.failures(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_removed_name_gets_the_fallback_from_the_next_handshake() {
    limited(TEST_LIMIT, async {
        let resolver = CertResolver::new();
        let api = insert(&resolver, "api.test");
        let wildcard = insert(&resolver, "*.apps.test");
        let server = listener(&resolver).await;
        let at = server.address;
        assert_eq!(
            handshake(at, Some("api.test"), None, &[])
                .await
                .unwrap()
                .fingerprint,
            api.fingerprint
        );
        assert!(resolver.remove(&domain("api.test")));
        assert!(resolver.remove(&domain("*.apps.test")));
        assert!(!resolver.serves(&domain("api.test")));
        for (name, gone) in [("api.test", &api), ("x.apps.test", &wildcard)] {
            let got = handshake(at, Some(name), None, &[]).await.unwrap();
            assert_ne!(got.fingerprint, gone.fingerprint, "{name}");
            assert_eq!(got.dns_names(), vec!["localhost"], "{name}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_never_fail_while_certificates_are_swapped() {
    limited(TEST_LIMIT, async {
        const NAMES: [&str; 3] = ["a.test", "b.test", "x.wild.test"];
        const VERSIONS: usize = 4;
        const CLIENTS: usize = 6;
        const HANDSHAKES_EACH: usize = 40;
        let resolver = CertResolver::new();
        // Several certificates per name, swapped in turn while clients connect.
        let mut versions: HashMap<&str, Vec<IssuedCert>> = HashMap::new();
        for name in NAMES {
            let stored = if name.starts_with('x') {
                "*.wild.test"
            } else {
                name
            };
            let certs: Vec<_> = (0..VERSIONS).map(|_| issue(stored)).collect();
            let first = &certs[0];
            resolver
                .insert_pem(&domain(stored), &first.chain_pem, first.key_pem.as_bytes())
                .unwrap();
            versions.insert(name, certs);
        }
        let server = listener(&resolver).await;
        let at = server.address;
        let versions = Arc::new(versions);

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (resolver, versions, stop) = (resolver.clone(), versions.clone(), stop.clone());
            tokio::spawn(async move {
                let mut swaps = 0usize;
                let churn = domain("churn.test");
                let churn_cert = issue("churn.test");
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    for name in NAMES {
                        let stored = if name.starts_with('x') {
                            "*.wild.test"
                        } else {
                            name
                        };
                        let cert = &versions[name][swaps % VERSIONS];
                        resolver
                            .insert_pem(&domain(stored), &cert.chain_pem, cert.key_pem.as_bytes())
                            .unwrap();
                    }
                    // Names come and go too (a shard copied and swapped).
                    if swaps.is_multiple_of(2) {
                        resolver
                            .insert_pem(
                                &churn,
                                &churn_cert.chain_pem,
                                churn_cert.key_pem.as_bytes(),
                            )
                            .unwrap();
                    } else {
                        resolver.remove(&churn);
                    }
                    swaps += 1;
                    tokio::task::yield_now().await;
                }
                swaps
            })
        };

        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let versions = versions.clone();
            clients.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..HANDSHAKES_EACH {
                    let name = NAMES[(client + i) % NAMES.len()];
                    match handshake(at, Some(name), None, &[]).await {
                        Ok(got)
                            if versions[name]
                                .iter()
                                .any(|c| c.fingerprint == got.fingerprint) => {}
                        Ok(got) => failures.push(format!("{name}: served {:?}", got.dns_names())),
                        Err(e) => failures.push(format!("{name}: {e}")),
                    }
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for client in clients {
            failures.extend(client.await.unwrap());
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let swaps = swapper.await.unwrap();
        assert!(
            failures.is_empty(),
            "{} failed: {failures:?}",
            failures.len()
        );
        assert_eq!(server.failures(), 0);
        assert_eq!(server.handshakes(), CLIENTS * HANDSHAKES_EACH);
        assert!(
            swaps > 10,
            "only {swaps} swaps happened during the handshakes"
        );
    })
    .await;
}

/// Stores `count` self-signed certificates through a renewer over a file
/// store in `dir`, and returns their fingerprints by name.
async fn store_certificates(dir: &std::path::Path, names: &[Domain]) -> HashMap<String, String> {
    let store = Arc::new(FileStore::open(dir).await.unwrap());
    let renewer = Renewer::builder(store.clone(), keyring(TEST_KEY))
        .production(false)
        .build();
    for name in names {
        renewer.add_domain(name).await.unwrap();
    }
    let report = renewer.run_cycle().await.unwrap();
    assert_eq!(report.issued.len(), names.len(), "{report:?}");
    let mut fingerprints = HashMap::new();
    for name in names {
        let record = certkeeper::store::CertStore::load(&*store, name)
            .await
            .unwrap()
            .unwrap();
        fingerprints.insert(name.to_string(), record.certificate.unwrap().fingerprint);
    }
    fingerprints
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_certificates_are_loaded_on_first_use_within_the_capacity() {
    limited(TEST_LIMIT, async {
        const STORED: usize = 40;
        const CAPACITY: usize = 10;
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<Domain> = (0..STORED)
            .map(|i| domain(&format!("site{i:02}.test")))
            .collect();
        let fingerprints = store_certificates(dir.path(), &names).await;

        // A restart: the names are listed, no certificate is read but the
        // main domain's.
        let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
        let resolver = CertResolver::with_capacity(CAPACITY);
        let renewer = Renewer::builder(store, keyring(TEST_KEY))
            .production(false)
            .main_domain(Some(domain("site00.test")))
            .resolver(resolver.clone())
            .build();
        assert_eq!(renewer.load().await.unwrap(), STORED);
        assert_eq!(resolver.domains(), names);
        assert!(resolver.cached() <= CAPACITY);

        // The plain acceptor: a name the preload did not reach (it stops at
        // the capacity, in name order) first gets the main domain's
        // certificate, which is loaded; its own follows once loaded in the
        // background.
        let plain = listener(&resolver).await;
        let late = "site39.test";
        let first = handshake(plain.address, Some(late), None, &[])
            .await
            .unwrap();
        assert_eq!(first.fingerprint, fingerprints["site00.test"]);
        let mut served = false;
        for _ in 0..500 {
            let got = handshake(plain.address, Some(late), None, &[])
                .await
                .unwrap();
            if got.fingerprint == fingerprints[late] {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(served, "{late} was not loaded in the background");

        // Accepting through the resolver: every stored name gets its own
        // certificate at its first handshake, and at most the capacity
        // stays in memory.
        let loading = TlsListener::start(
            resolver.server_config(&[b"http/1.1"]).unwrap(),
            Some(resolver.clone()),
        )
        .await;
        for name in names.iter().rev() {
            let got = handshake(loading.address, Some(name.as_str()), None, &[])
                .await
                .unwrap();
            assert_eq!(got.fingerprint, fingerprints[name.as_str()], "{name}");
            assert!(resolver.cached() <= CAPACITY + 1, "{}", resolver.cached());
        }
        assert_eq!(loading.failures(), 0);
        assert_eq!(plain.failures(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_refreshed_record_replaces_the_cached_certificate() {
    limited(TEST_LIMIT, async {
        let store = Arc::new(certkeeper::store::MemoryStore::new());
        let name = domain("shop.test");
        let writer = Renewer::builder(store.clone(), keyring(TEST_KEY))
            .production(false)
            .build();
        writer.add_domain(&name).await.unwrap();
        let first = writer.issue_now(Some(&name)).await.unwrap();

        let resolver = CertResolver::new();
        let reader = Renewer::builder(store.clone(), keyring(TEST_KEY))
            .production(false)
            .resolver(resolver.clone())
            .build();
        reader.load().await.unwrap();
        let server = listener(&resolver).await;
        assert!(resolver.prepare(Some("shop.test")).await);
        let served = handshake(server.address, Some("shop.test"), None, &[])
            .await
            .unwrap();
        assert_eq!(served.fingerprint, first.certificate.unwrap().fingerprint);

        // Another instance renews it: the change feed replaces the cached one.
        let second = writer.issue_now(Some(&name)).await.unwrap();
        assert!(reader.refresh().await.unwrap() >= 1);
        let served = handshake(server.address, Some("shop.test"), None, &[])
            .await
            .unwrap();
        assert_eq!(served.fingerprint, second.certificate.unwrap().fingerprint);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_never_fail_while_issue_now_renews() {
    limited(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
        let resolver = CertResolver::new();
        let name = domain("app.test");
        let renewer = Renewer::builder(store, keyring(TEST_KEY))
            .production(false)
            .main_domain(Some(name.clone()))
            .resolver(resolver.clone())
            .build();
        renewer.load().await.unwrap();
        let old = renewer.issue_now(None).await.unwrap().certificate.unwrap();
        let server = TlsListener::start(
            resolver.server_config(&[b"http/1.1"]).unwrap(),
            Some(resolver.clone()),
        )
        .await;
        let at = server.address;

        // Clients in a loop until told to stop, counting what they saw.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let stop = stop.clone();
            clients.spawn(async move {
                let (mut seen, mut failed) = (HashMap::<String, usize>::new(), Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match handshake(at, Some("app.test"), None, &[]).await {
                        Ok(got) => *seen.entry(got.fingerprint).or_default() += 1,
                        Err(e) => failed.push(e),
                    }
                }
                (seen, failed)
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut renewed = Vec::new();
        for _ in 0..3 {
            renewed.push(renewer.issue_now(None).await.unwrap().certificate.unwrap());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (mut seen, mut failed) = (HashMap::<String, usize>::new(), Vec::new());
        while let Some(done) = clients.join_next().await {
            let (s, f) = done.unwrap();
            for (k, v) in s {
                *seen.entry(k).or_default() += v;
            }
            failed.extend(f);
        }
        let total: usize = seen.values().sum();
        eprintln!("{total} handshakes during 3 renewals: {seen:?}");
        assert!(
            failed.is_empty(),
            "{} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert_eq!(server.failures(), 0);
        assert!(total >= 100, "too few handshakes to say anything: {total}");
        let latest = &renewed.last().unwrap().fingerprint;
        assert_ne!(latest, &old.fingerprint);
        assert!(
            seen.contains_key(&old.fingerprint),
            "the old certificate served first"
        );
        assert!(seen.contains_key(latest), "the new certificate appeared");
        let known: Vec<&String> = std::iter::once(&old.fingerprint)
            .chain(renewed.iter().map(|c| &c.fingerprint))
            .collect();
        assert!(
            seen.keys().all(|k| known.contains(&k)),
            "only the issued certificates served"
        );
        let after = handshake(
            at,
            Some("app.test"),
            Some(trusting(&renewed.last().unwrap().chain_pem)),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(&after.fingerprint, latest);
    })
    .await;
}
