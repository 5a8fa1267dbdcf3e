//! Benchmarks of the resolver, each beside its baseline in the same run:
//!
//! - `lookup/{1000,100000,1000000}`: `CertResolver::lookup` of a known
//!   name, and a plain `HashMap<String, Arc<CertifiedKey>>` lookup of the
//!   same names;
//! - `handshake`: full TLS 1.3 handshakes (no resumption, in memory, so no
//!   network noise) with a server resolving through `CertResolver` (1,000
//!   names and a wildcard), and with rustls serving one static certificate
//!   (`with_single_cert`). The goal is at least 0.97 of the static
//!   server's handshakes per second.
//!
//! ```text
//! cargo bench --bench resolver
//! cargo bench --bench resolver -- --measurement-time 3 handshake
//! ```
//!
//! Criterion keeps each median in
//! `target/criterion/<group>/<function>/new/estimates.json`.

// criterion_group! makes an undocumented function.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use certkeeper::cert::chain_der;
use certkeeper::issuer::{IssuedCert, SelfSignedIssuer};
use certkeeper::{CertResolver, Domain};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

fn name(i: usize) -> String {
    format!("site-{i:07}.bench.test")
}

fn issue(name: &str) -> IssuedCert {
    SelfSignedIssuer::new()
        .issue_blocking(&Domain::new(name).unwrap())
        .unwrap()
}

/// A resolver serving `names` (one shared certificate, parsed once) and the
/// same certificate in a plain map.
fn populated(
    names: &[String],
    cert: &IssuedCert,
) -> (CertResolver, HashMap<String, Arc<CertifiedKey>>) {
    let resolver = CertResolver::with_capacity(names.len());
    let domains: Vec<Domain> = names.iter().map(|n| Domain::new(n).unwrap()).collect();
    // Names first in one step, then certificates swapped into their slots.
    resolver.set_stored(&domains);
    for domain in &domains {
        resolver
            .insert_pem(domain, &cert.chain_pem, cert.key_pem.as_bytes())
            .unwrap();
    }
    let key = resolver.lookup(Some(&names[0])).unwrap();
    let map = names.iter().map(|n| (n.clone(), key.clone())).collect();
    (resolver, map)
}

fn lookup(c: &mut Criterion) {
    let cert = issue("*.bench.test");
    for n in [1_000usize, 100_000, 1_000_000] {
        let names: Vec<String> = (0..n).map(name).collect();
        let (resolver, map) = populated(&names, &cert);
        // Names asked in a scattered order, so caches help neither side.
        let asked: Vec<&str> = (0..4096)
            .map(|i| names[(i * 7919 + 13) % n].as_str())
            .collect();
        assert!(asked
            .iter()
            .all(|n| Arc::ptr_eq(&resolver.lookup(Some(n)).unwrap(), &map[*n])));
        let mut group = c.benchmark_group(format!("lookup/{n}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("resolver", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(resolver.lookup(Some(black_box(asked[i]))))
            })
        });
        group.bench_function("hashmap", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(map.get(black_box(asked[i])).cloned())
            })
        });
        group.finish();
    }
}

/// The provider certkeeper is built with, named explicitly.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// Moves what `from` has to send into `to`.
fn deliver(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).unwrap();
    }
    let mut pending = &buf[..];
    while !pending.is_empty() {
        to.read_tls(&mut pending).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// One full handshake of a new client with a new server connection; the
/// leaf the client received.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    name: &ServerName<'static>,
) -> usize {
    let mut client =
        Connection::Client(ClientConnection::new(client.clone(), name.clone()).unwrap());
    let mut server = Connection::Server(ServerConnection::new(server.clone()).unwrap());
    let mut buf = Vec::with_capacity(8192);
    while client.is_handshaking() || server.is_handshaking() {
        deliver(&mut client, &mut server, &mut buf);
        deliver(&mut server, &mut client, &mut buf);
    }
    client.peer_certificates().unwrap()[0].len()
}

fn handshakes(c: &mut Criterion) {
    let target = name(500);
    let cert = issue(&target);
    // The resolver serves 1,000 names and a wildcard; the target has its own.
    let resolver = CertResolver::new();
    let other = issue("*.bench.test");
    for i in 0..1_000 {
        let d = Domain::new(&name(i)).unwrap();
        let c = if i == 500 { &cert } else { &other };
        resolver
            .insert_pem(&d, &c.chain_pem, c.key_pem.as_bytes())
            .unwrap();
    }
    resolver
        .insert_pem(
            &Domain::new("*.bench.test").unwrap(),
            &other.chain_pem,
            other.key_pem.as_bytes(),
        )
        .unwrap();
    let mut through_resolver =
        Arc::into_inner(resolver.server_config(&[b"http/1.1"]).unwrap()).unwrap();
    let mut single = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain_der(&cert.chain_pem).unwrap(),
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    single.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The same work on both: no session tickets.
    through_resolver.send_tls13_tickets = 0;
    single.send_tls13_tickets = 0;
    let (through_resolver, single) = (Arc::new(through_resolver), Arc::new(single));

    let mut roots = RootCertStore::empty();
    roots
        .add(chain_der(&cert.chain_pem).unwrap().remove(0))
        .unwrap();
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = Resumption::disabled();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = Arc::new(client);
    let server_name = ServerName::try_from(target.clone()).unwrap();
    // Both verify with the target's own certificate.
    let expected = chain_der(&cert.chain_pem).unwrap()[0].len();
    assert_eq!(
        handshake(&client, &through_resolver, &server_name),
        expected
    );
    assert_eq!(handshake(&client, &single, &server_name), expected);

    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    for (label, server) in [("resolver", &through_resolver), ("single_cert", &single)] {
        group.bench_with_input(BenchmarkId::from_parameter(label), server, |b, server| {
            b.iter(|| black_box(handshake(&client, server, &server_name)))
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, handshakes);
criterion_main!(benches);
