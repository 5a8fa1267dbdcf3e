//! Parsing names with `Domain::new`: the validation and normalisation every
//! name from the network (a TLS server name, a `Host` header, a setting)
//! goes through: plain ASCII names, upper case to fold, a trailing dot,
//! internationalised names (IDNA to punycode), wildcards, IP literals, and
//! names that are refused.
//!
//! ```text
//! cargo bench --bench domain
//! ```

// criterion_group! makes an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;

use certkeeper::Domain;
use criterion::{criterion_group, criterion_main, Criterion};

const CASES: &[(&str, &str)] = &[
    ("ascii", "api.console.example.com"),
    ("upper_case_trailing_dot", "API.Console.Example.COM."),
    ("idn", "bücher.straße.example.de"),
    ("punycode", "xn--bcher-kva.example.de"),
    ("wildcard", "*.apps.example.com"),
    ("ipv4", "192.0.2.17"),
    ("ipv6", "2001:db8::7:1"),
    (
        "long_label_refused",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
    ),
    ("path_refused", "../etc/passwd"),
];

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("domain_new");
    for (name, input) in CASES {
        // Checked once: the refused cases are refused, the others parse.
        assert_eq!(
            Domain::new(input).is_err(),
            name.ends_with("_refused"),
            "{input}"
        );
        group.bench_function(*name, |b| {
            b.iter(|| black_box(Domain::new(black_box(input))))
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
