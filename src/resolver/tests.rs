//! Unit tests of the resolver's picking rules, without TLS
//! (tests/serving/resolver.rs makes real handshakes).
use super::*;
use crate::cert::fingerprint;
use crate::issuer::SelfSignedIssuer;

fn served_fingerprint(resolver: &CertResolver, name: Option<&str>) -> Option<String> {
    resolver
        .lookup(name)
        .map(|key| fingerprint(key.end_entity_cert().unwrap()))
}

/// The DNS names of the leaf served for `name`.
fn subject_names(resolver: &CertResolver, name: Option<&str>) -> Vec<String> {
    let key = resolver.lookup(name).unwrap();
    let der = key.end_entity_cert().unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn insert(resolver: &CertResolver, name: &str) -> crate::cert::IssuedCert {
    let domain = Domain::new(name).unwrap();
    let cert = SelfSignedIssuer::new().issue_blocking(&domain).unwrap();
    resolver
        .insert_pem(&domain, &cert.chain_pem, cert.key_pem.as_bytes())
        .unwrap();
    cert
}

#[test]
fn a_wildcard_serves_one_label_and_an_exact_name_wins() {
    let resolver = CertResolver::new();
    let wildcard = insert(&resolver, "*.shop.test");
    let exact = insert(&resolver, "www.shop.test");
    let fp = |name| served_fingerprint(&resolver, Some(name));
    assert_eq!(fp("a.shop.test"), Some(wildcard.fingerprint.clone()));
    assert_eq!(fp("A.Shop.Test."), Some(wildcard.fingerprint.clone()));
    assert_eq!(fp("www.shop.test"), Some(exact.fingerprint.clone()));
    for not_covered in ["shop.test", "a.b.shop.test", ".shop.test", "a.shop.test.x"] {
        let got = fp(not_covered).unwrap();
        assert_ne!(got, wildcard.fingerprint, "{not_covered}");
        assert_ne!(got, exact.fingerprint, "{not_covered}");
    }
    let wildcard_domain = Domain::new("*.shop.test").unwrap();
    assert!(resolver.serves(&wildcard_domain));
    assert_eq!(
        resolver.domains(),
        vec![
            wildcard_domain.clone(),
            Domain::new("www.shop.test").unwrap()
        ]
    );
    // The exact name removed: the wildcard covers it.
    assert!(resolver.remove(&Domain::new("www.shop.test").unwrap()));
    assert_eq!(fp("www.shop.test"), Some(wildcard.fingerprint.clone()));
    assert!(resolver.remove(&wildcard_domain));
    assert_ne!(fp("a.shop.test"), Some(wildcard.fingerprint));
}

#[test]
fn the_same_material_under_several_names_is_parsed_once() {
    let resolver = CertResolver::new();
    let a = Domain::new("a.test").unwrap();
    let b = Domain::new("b.test").unwrap();
    let cert = SelfSignedIssuer::new().issue_blocking(&a).unwrap();
    for domain in [&a, &b] {
        resolver
            .insert_pem(domain, &cert.chain_pem, cert.key_pem.as_bytes())
            .unwrap();
    }
    let served_a = resolver.lookup(Some("a.test")).unwrap();
    let served_b = resolver.lookup(Some("b.test")).unwrap();
    assert!(Arc::ptr_eq(&served_a, &served_b));
    let other = insert(&resolver, "c.test");
    let served_c = resolver.lookup(Some("c.test")).unwrap();
    assert!(!Arc::ptr_eq(&served_a, &served_c));
    assert_eq!(
        fingerprint(served_c.end_entity_cert().unwrap()),
        other.fingerprint
    );
}

#[test]
fn acme_tls_1_is_offered_first_only_with_a_solver_and_needs_named_protocols() {
    let resolver = CertResolver::new();
    let plain = resolver.server_config(&[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(
        plain.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    resolver.enable_tls_alpn01();
    let with = resolver.server_config(&[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(
        with.alpn_protocols,
        vec![ACME_TLS_1.to_vec(), b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let err = resolver.server_config(&[]).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[test]
fn picks_by_name_falls_back_and_swaps_in_place() {
    let issuer = SelfSignedIssuer::new();
    let a = Domain::new("a.test").unwrap();
    let b = Domain::new("b.test").unwrap();
    let cert_a = issuer.issue_blocking(&a).unwrap();
    let cert_b = issuer.issue_blocking(&b).unwrap();
    let resolver = CertResolver::new();
    resolver
        .insert_pem(&a, &cert_a.chain_pem, cert_a.key_pem.as_bytes())
        .unwrap();
    resolver
        .insert_pem(&b, &cert_b.chain_pem, cert_b.key_pem.as_bytes())
        .unwrap();

    assert_eq!(
        served_fingerprint(&resolver, Some("a.test")),
        Some(cert_a.fingerprint.clone())
    );
    // SNI is matched after normalisation.
    assert_eq!(
        served_fingerprint(&resolver, Some("B.TEST")),
        Some(cert_b.fingerprint.clone())
    );
    // Unknown names and no SNI: a self-signed certificate for
    // localhost, made once, until a fallback is set.
    let self_signed = served_fingerprint(&resolver, Some("c.test")).unwrap();
    assert_ne!(self_signed, cert_a.fingerprint);
    assert_ne!(self_signed, cert_b.fingerprint);
    assert_eq!(
        served_fingerprint(&resolver, None),
        Some(self_signed.clone())
    );
    assert_eq!(
        served_fingerprint(&resolver, Some("../bad")),
        Some(self_signed.clone())
    );
    assert_eq!(subject_names(&resolver, None), vec!["localhost"]);
    resolver.set_fallback(Some(a.clone()));
    assert_eq!(
        served_fingerprint(&resolver, Some("c.test")),
        Some(cert_a.fingerprint.clone())
    );
    assert_eq!(
        served_fingerprint(&resolver, None),
        Some(cert_a.fingerprint.clone())
    );
    // A fallback domain without a certificate: self-signed, named after it.
    resolver.set_fallback(Some(Domain::new("main.test").unwrap()));
    assert_eq!(subject_names(&resolver, Some("c.test")), vec!["main.test"]);
    resolver.set_fallback(Some(a.clone()));

    // A renewal replaces the certificate for the next handshake; clones share it.
    let shared = resolver.clone();
    let renewed = issuer.issue_blocking(&a).unwrap();
    resolver
        .insert_pem(&a, &renewed.chain_pem, renewed.key_pem.as_bytes())
        .unwrap();
    assert_eq!(
        served_fingerprint(&shared, Some("a.test")),
        Some(renewed.fingerprint)
    );

    assert!(resolver.serves(&b));
    assert!(resolver.remove(&b));
    assert!(!resolver.remove(&b));
    assert!(!resolver.serves(&b));
    assert_eq!(resolver.domains(), vec![a]);
}

#[test]
fn refuses_mismatched_or_broken_material_without_panicking() {
    let issuer = SelfSignedIssuer::new();
    let a = Domain::new("a.test").unwrap();
    let one = issuer.issue_blocking(&a).unwrap();
    let other = issuer.issue_blocking(&a).unwrap();
    let resolver = CertResolver::new();
    let err = resolver
        .insert_pem(&a, &one.chain_pem, other.key_pem.as_bytes())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Certificate {
                problem: CertProblem::KeyMismatch,
                ..
            }
        ),
        "{err}"
    );
    assert!(resolver
        .insert_pem(&a, "garbage", one.key_pem.as_bytes())
        .is_err());
    assert!(resolver.insert_pem(&a, &one.chain_pem, b"garbage").is_err());
    let err = resolver
        .insert_pem(
            &a,
            &one.chain_pem,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
    // The error names the domain, never the key bytes.
    assert!(!err.to_string().contains("AAAA"), "{err}");
    assert!(resolver.domains().is_empty());
    let config = resolver.server_config(&[b"http/1.1"]).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
}
