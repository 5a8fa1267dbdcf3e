//! Sealing and opening a 4 KiB secret with the `Keyring` (envelope header,
//! key version, associated data bound to the header), beside the raw
//! XChaCha20-Poly1305 cipher doing the same work in the same run: a fresh
//! random nonce and the encryption with the same associated data for
//! `seal`, the decryption for `open`. The goal is at least 0.9 of the raw
//! cipher's speed for `seal` and 0.95 for `open` (raw time / keyring time),
//! `open` returning its plaintext in a `Plaintext` that wipes it when
//! dropped.
//!
//! ```text
//! cargo bench --bench cipher
//! ```
//!
//! After the criterion measurements it prints both medians and their ratio,
//! read from `target/criterion/cipher_4k/<function>/new/estimates.json`,
//! then a paired measurement that alternates batches of 200 raw and 200
//! keyring operations, 300 rounds, and gives the median time of each and
//! their ratio: on a shared machine, where the load drifts during the
//! seconds between criterion's functions, the paired ratio is the one to
//! trust. Two more paired lines put the keyring's `open` beside the raw
//! decryption with its plaintext wiped on drop: held in a `Plaintext` (what
//! the keyring returns), and in a `Zeroizing<Vec<u8>>` (what it returned
//! before, wiped one byte at a time).

// criterion_group! makes an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;

use certkeeper::cipher::{Keyring, Plaintext, SecretCipher};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::{criterion_group, Criterion, Throughput};

const SECRET_LEN: usize = 4096;
const KEY: &str = "benchmark-key-0123456789-abcdefghij";
const GROUP: &str = "cipher_4k";

fn secret() -> Vec<u8> {
    (0..SECRET_LEN).map(|i| (i * 31 % 251) as u8).collect()
}

fn cipher_4k(c: &mut Criterion) {
    let keyring = Keyring::from_keys(true, [(1, KEY)]).unwrap();
    let raw = XChaCha20Poly1305::new(&(*Keyring::derive_key(KEY)).into());
    let plaintext = secret();
    let aad = b"certificate-key:bench.example.com".as_slice();
    // What the keyring authenticates: its 7-byte header, then the caller's.
    let raw_aad = [&b"CK\x01\0\0\0\x01"[..], aad].concat();

    let sealed = keyring.seal(&plaintext, aad).unwrap();
    let raw_nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let raw_sealed = raw
        .encrypt(
            &raw_nonce,
            Payload {
                msg: &plaintext,
                aad: &raw_aad,
            },
        )
        .unwrap();
    assert_eq!(&*keyring.open(&sealed, aad).unwrap(), &plaintext[..]);

    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Bytes(SECRET_LEN as u64));
    group.bench_function("raw_seal", |b| {
        b.iter(|| {
            let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
            let payload = Payload {
                msg: black_box(&plaintext[..]),
                aad: &raw_aad,
            };
            black_box((nonce, raw.encrypt(&nonce, payload).unwrap()))
        })
    });
    group.bench_function("keyring_seal", |b| {
        b.iter(|| black_box(keyring.seal(black_box(&plaintext), aad).unwrap()))
    });
    group.bench_function("raw_open", |b| {
        b.iter(|| {
            let payload = Payload {
                msg: black_box(&raw_sealed[..]),
                aad: &raw_aad,
            };
            black_box(
                raw.decrypt(XNonce::from_slice(&raw_nonce), payload)
                    .unwrap(),
            )
        })
    });
    group.bench_function("keyring_open", |b| {
        b.iter(|| black_box(keyring.open(black_box(&sealed), aad).unwrap()))
    });
    group.finish();
}

/// The median criterion estimated for `function`, in nanoseconds.
fn median(function: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let path = target
        .join("criterion")
        .join(GROUP)
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

fn ratios() {
    for (op, goal) in [("seal", 0.9), ("open", 0.95)] {
        if let (Some(raw), Some(keyring)) = (
            median(&format!("raw_{op}")),
            median(&format!("keyring_{op}")),
        ) {
            println!(
                "{op} 4 KiB: keyring {:.2} us, raw XChaCha20-Poly1305 {:.2} us, \
                 speed ratio {:.3} (goal >= {goal})",
                keyring / 1000.0,
                raw / 1000.0,
                raw / keyring
            );
        }
    }
}

/// Median time per operation of `a` and `b`, measured in alternating
/// batches so that both see the same machine load.
fn paired(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    const BATCH: u32 = 200;
    const ROUNDS: usize = 300;
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..BATCH {
            f();
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(BATCH)
    };
    let (mut ta, mut tb) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for round in 0..ROUNDS {
        // Which goes first alternates too.
        if round % 2 == 0 {
            ta.push(time(&mut a));
            tb.push(time(&mut b));
        } else {
            tb.push(time(&mut b));
            ta.push(time(&mut a));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(ta), median(tb))
}

fn paired_ratios() {
    let keyring = Keyring::from_keys(true, [(1, KEY)]).unwrap();
    let raw = XChaCha20Poly1305::new(&(*Keyring::derive_key(KEY)).into());
    let plaintext = secret();
    let aad = b"certificate-key:bench.example.com".as_slice();
    let raw_aad = [&b"CK\x01\0\0\0\x01"[..], aad].concat();
    let sealed = keyring.seal(&plaintext, aad).unwrap();
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let raw_sealed = raw
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: &raw_aad,
            },
        )
        .unwrap();
    let (raw_seal, keyring_seal) = paired(
        || {
            let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
            let payload = Payload {
                msg: black_box(&plaintext[..]),
                aad: &raw_aad,
            };
            black_box((nonce, raw.encrypt(&nonce, payload).unwrap()));
        },
        || {
            black_box(keyring.seal(black_box(&plaintext), aad).unwrap());
        },
    );
    let (raw_open, keyring_open) = paired(
        || {
            let payload = Payload {
                msg: black_box(&raw_sealed[..]),
                aad: &raw_aad,
            };
            black_box(raw.decrypt(&nonce, payload).unwrap());
        },
        || {
            black_box(keyring.open(black_box(&sealed), aad).unwrap());
        },
    );
    // The keyring gives the plaintext back in a `Plaintext`, wiped when
    // dropped: the raw cipher with the same wipe, for comparison.
    let (raw_open_plaintext, keyring_open_beside_plaintext) = paired(
        || {
            let payload = Payload {
                msg: black_box(&raw_sealed[..]),
                aad: &raw_aad,
            };
            black_box(Plaintext::new(raw.decrypt(&nonce, payload).unwrap()));
        },
        || {
            black_box(keyring.open(black_box(&sealed), aad).unwrap());
        },
    );
    // `Zeroizing<Vec<u8>>`, which the keyring returned before `Plaintext`.
    let (raw_open_zeroizing, keyring_open_beside_zeroizing) = paired(
        || {
            let payload = Payload {
                msg: black_box(&raw_sealed[..]),
                aad: &raw_aad,
            };
            black_box(zeroize::Zeroizing::new(
                raw.decrypt(&nonce, payload).unwrap(),
            ));
        },
        || {
            black_box(keyring.open(black_box(&sealed), aad).unwrap());
        },
    );
    println!(
        "paired, open 4 KiB: raw XChaCha20-Poly1305 with its plaintext in a Plaintext (wiped on \
         drop, as the keyring returns it) {:.2} us, keyring {:.2} us, speed ratio {:.3}",
        raw_open_plaintext / 1000.0,
        keyring_open_beside_plaintext / 1000.0,
        raw_open_plaintext / keyring_open_beside_plaintext
    );
    println!(
        "paired, open 4 KiB: raw XChaCha20-Poly1305 with its plaintext in a Zeroizing<Vec<u8>> \
         (wiped a byte at a time) {:.2} us, keyring {:.2} us, speed ratio {:.3}",
        raw_open_zeroizing / 1000.0,
        keyring_open_beside_zeroizing / 1000.0,
        raw_open_zeroizing / keyring_open_beside_zeroizing
    );
    for (op, raw, keyring, goal) in [
        ("seal", raw_seal, keyring_seal, 0.9),
        ("open", raw_open, keyring_open, 0.95),
    ] {
        println!(
            "paired, {op} 4 KiB: keyring {:.2} us, raw XChaCha20-Poly1305 {:.2} us, \
             speed ratio {:.3} (goal >= {goal})",
            keyring / 1000.0,
            raw / 1000.0,
            raw / keyring
        );
    }
}

criterion_group!(benches, cipher_4k);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only `cargo bench` measures (it passes `--bench`): `cargo test`
    // runs each benchmark once as a test, and `cargo bench -- --list`
    // lists them.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        ratios();
        paired_ratios();
    }
}
