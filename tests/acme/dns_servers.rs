//! Knot and PowerDNS, the DNS servers beside bind9 that the DNS-01 tests
//! can publish on: Knot takes the `Dns01Solver`'s RFC 2136 updates signed
//! with the right TSIG key, refuses unsigned and wrongly signed ones, and
//! serves a certificate's DNS-01 validation by Pebble; PowerDNS takes TXT
//! records through its HTTP API. Every record is checked over UDP, the
//! transport a validating resolver asks first, right after it was written.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper::challenge::{
    Challenge, ChallengeKind, ChallengeSolver, Dns01Solver, TsigAlgorithm,
};
use certkeeper::error::DnsProblem;
use certkeeper::issuer::{AcmeIssuer, IssuerExt};
use certkeeper::store::MemoryStore;
use certkeeper::Error;
use common::acme::pebble_issuer;
use common::knot::{Knot, TSIG_KEY_NAME};
use common::pebble::{Pebble, PebbleOptions};
use common::powerdns::PowerDns;
use common::tls::{round_trip, serving, verify_chain};
use common::{domain, keyring, limited, TEST_KEY};
use hickory_proto::op::{update_message, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};

const TEST_LIMIT: Duration = Duration::from_secs(120);
const ZONE: &str = "example.test";
const RECORD: &str = "_acme-challenge.www.example.test";

fn solver(server: SocketAddr, secret: &str) -> Dns01Solver {
    Dns01Solver::builder(server, ZONE)
        .tsig_key(TSIG_KEY_NAME, secret, TsigAlgorithm::HmacSha256)
        .request_timeout(Duration::from_secs(5))
        .propagation_timeout(Duration::from_secs(20))
        .build()
        .expect("valid solver settings")
}

fn challenge(value: &str) -> Challenge {
    Challenge {
        domain: domain("www.example.test"),
        token: "token".into(),
        key_authorization: "token.thumbprint".into(),
        dns_value: value.into(),
    }
}

fn fqdn(name: &str) -> Name {
    let mut name = Name::from_ascii(name).expect("a DNS name");
    name.set_fqdn(true);
    name
}

/// Sends `message` to `server` over UDP: the answer.
async fn exchange_udp(server: SocketAddr, message: &Message) -> Message {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(&message.to_vec().unwrap()).await.unwrap();
    let mut buffer = vec![0; 65_535];
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
        .await
        .unwrap_or_else(|_| panic!("{server} did not answer over UDP"))
        .unwrap();
    Message::from_vec(&buffer[..len]).expect("a DNS answer")
}

async fn query_udp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let mut query = Message::query();
    query.add_query(Query::query(fqdn(name), kind));
    let answer = exchange_udp(server, &query).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative, "not an authoritative answer");
    answer
}

/// The TXT values at `name`, asked over UDP.
async fn txt_udp(server: SocketAddr, name: &str) -> Vec<String> {
    query_udp(server, name, RecordType::TXT)
        .await
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The zone's SOA serial, asked over UDP.
async fn serial_udp(server: SocketAddr) -> u32 {
    let answer = query_udp(server, ZONE, RecordType::SOA).await;
    match &answer.answers.first().expect("an SOA record").data {
        RData::SOA(soa) => soa.serial,
        other => panic!("not an SOA: {other:?}"),
    }
}

#[tokio::test]
async fn knot_applies_the_solvers_signed_updates_and_answers_them_over_udp_at_once() {
    limited(TEST_LIMIT, async {
        let started = Instant::now();
        let knot = Knot::start(&[ZONE]).await;
        eprintln!("knotd answered {:?} after start", started.elapsed());
        // The wildcard makes every name resolve, the apex too.
        let a = query_udp(knot.addr(), "foo.example.test", RecordType::A).await;
        assert_eq!(a.answers.len(), 1, "{a:?}");
        assert!(txt_udp(knot.addr(), RECORD).await.is_empty());
        let serial = serial_udp(knot.addr()).await;

        let solver = solver(knot.addr(), knot.secret());
        let first = challenge("first-value");
        let second = challenge("second-value");
        let started = Instant::now();
        solver.present(&first).await.unwrap();
        // Applied when knotd answered the update: the solver's first check
        // saw it, and UDP answers it too.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(txt_udp(knot.addr(), RECORD).await, ["first-value"]);
        solver.present(&second).await.unwrap();
        let mut values = txt_udp(knot.addr(), RECORD).await;
        values.sort();
        assert_eq!(values, ["first-value", "second-value"]);
        assert!(serial_udp(knot.addr()).await > serial);

        // Each cleanup removes only its own value.
        solver.cleanup(&first).await.unwrap();
        assert_eq!(txt_udp(knot.addr(), RECORD).await, ["second-value"]);
        solver.cleanup(&second).await.unwrap();
        assert!(txt_udp(knot.addr(), RECORD).await.is_empty());
        let log = knot.log();
        assert_eq!(
            log.matches("[example.test.] DDNS, finished, serial")
                .count(),
            4,
            "{log}"
        );
        assert!(
            log.contains("ACL, allowed, action update, remote 127.0.0.1@")
                && log.contains(&format!("key '{TSIG_KEY_NAME}.'")),
            "{log}"
        );
    })
    .await;
}

#[tokio::test]
async fn knot_refuses_updates_unsigned_or_signed_with_a_wrong_secret() {
    limited(TEST_LIMIT, async {
        let knot = Knot::start(&[ZONE]).await;
        let serial = serial_udp(knot.addr()).await;

        let wrong = "d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3JvbmchIQ==";
        let err = solver(knot.addr(), wrong)
            .present(&challenge("never-published"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Dns {
                    problem: DnsProblem::NotAuthenticated,
                    step: "present",
                    ..
                }
            ),
            "{err:?}"
        );

        assert_eq!(err.code(), "dns_not_authenticated");

        // An update with no signature at all, over UDP.
        let mut record = Record::from_rdata(
            fqdn(RECORD),
            60,
            RData::TXT(TXT::new(vec!["unsigned".into()])),
        );
        record.dns_class = DNSClass::IN;
        let update = update_message::append(RecordSet::from(record), fqdn(ZONE), false, false);
        let answer = exchange_udp(knot.addr(), &update).await;
        assert!(
            matches!(
                answer.metadata.response_code,
                ResponseCode::Refused | ResponseCode::NotAuth
            ),
            "{:?}",
            answer.metadata.response_code
        );

        // knotd logs why, at debug level.
        let log = knot.log();
        assert!(
            log.contains(&format!(
                "TSIG, key '{TSIG_KEY_NAME}.', verification failed 'BADSIG'"
            )),
            "{log}"
        );
        assert!(
            log.contains("ACL, denied, action update, remote 127.0.0.1@")
                && log.contains(", key none"),
            "{log}"
        );
        // Nothing changed.
        assert!(txt_udp(knot.addr(), RECORD).await.is_empty());
        assert_eq!(serial_udp(knot.addr()).await, serial);
    })
    .await;
}

/// A TXT rrset of `values` at [`RECORD`], as a PATCH body for the API.
fn txt_patch(values: &[&str]) -> String {
    let records = values
        .iter()
        .map(|value| format!(r#"{{"content":"\"{value}\"","disabled":false}}"#))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"{{"rrsets":[{{"name":"{RECORD}.","type":"TXT","ttl":60,"changetype":"REPLACE","records":[{records}]}}]}}"#
    )
}

#[tokio::test]
async fn powerdns_answers_a_txt_record_written_through_its_api_over_udp_at_once() {
    limited(TEST_LIMIT, async {
        let started = Instant::now();
        let pdns = PowerDns::start(&[ZONE]).await;
        eprintln!(
            "pdns_server answered with its zone {:?} after start",
            started.elapsed()
        );
        assert!(pdns.api_url().starts_with("http://127.0.0.1:"));
        let a = query_udp(pdns.addr(), "foo.example.test", RecordType::A).await;
        assert_eq!(a.answers.len(), 1, "{a:?}");
        assert!(txt_udp(pdns.addr(), RECORD).await.is_empty());

        let zone_path = format!("/api/v1/servers/localhost/zones/{ZONE}.");
        let (status, body) = pdns
            .api("PATCH", &zone_path, Some(&txt_patch(&["first-value"])))
            .await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(txt_udp(pdns.addr(), RECORD).await, ["first-value"]);

        let (status, body) = pdns
            .api(
                "PATCH",
                &zone_path,
                Some(&txt_patch(&["first-value", "second-value"])),
            )
            .await;
        assert_eq!(status, 204, "{body}");
        let mut values = txt_udp(pdns.addr(), RECORD).await;
        values.sort();
        assert_eq!(values, ["first-value", "second-value"]);

        let (status, body) = pdns
            .api(
                "PATCH",
                &zone_path,
                Some(&format!(
                    r#"{{"rrsets":[{{"name":"{RECORD}.","type":"TXT","changetype":"DELETE"}}]}}"#
                )),
            )
            .await;
        assert_eq!(status, 204, "{body}");
        assert!(txt_udp(pdns.addr(), RECORD).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn powerdns_refuses_a_wrong_api_key() {
    limited(TEST_LIMIT, async {
        let pdns = PowerDns::start(&[ZONE]).await;
        let zone_path = format!("/api/v1/servers/localhost/zones/{ZONE}.");
        let wrong = "not-the-key";
        assert_ne!(pdns.api_key(), wrong);
        let (status, body) = pdns
            .api_with_key(
                "PATCH",
                &zone_path,
                wrong,
                Some(&txt_patch(&["never-published"])),
            )
            .await;
        assert_eq!(status, 401, "{body}");
        let (status, _) = pdns.api_with_key("GET", &zone_path, wrong, None).await;
        assert_eq!(status, 401);
        assert!(txt_udp(pdns.addr(), RECORD).await.is_empty());
        // The right key reads the zone.
        let (status, body) = pdns.api("GET", &zone_path, None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"*.example.test.\""), "{body}");
    })
    .await;
}

fn issuer(pebble: &Pebble, solver: Dns01Solver) -> AcmeIssuer {
    pebble_issuer(
        pebble,
        Arc::new(solver),
        Arc::new(MemoryStore::new()),
        keyring(TEST_KEY),
    )
    .request_timeout(Duration::from_secs(30))
    .order_timeout(Duration::from_secs(60))
    .build()
    .expect("valid issuer settings")
}

#[tokio::test]
async fn a_wildcard_and_its_bare_name_are_issued_through_dns01_on_knot() {
    limited(TEST_LIMIT, async {
        let knot = Knot::start(&[ZONE]).await;
        let pebble = Pebble::start(PebbleOptions {
            dns_server: Some(knot.addr()),
            ..PebbleOptions::default()
        })
        .await;
        let solver = solver(knot.addr(), knot.secret());
        let issuer = issuer(&pebble, solver.clone());
        assert_eq!(
            issuer.challenge_for(&domain("www.example.test")),
            ChallengeKind::Dns01
        );

        // Both orders publish at `_acme-challenge.example.test` at once.
        let wildcard = domain("*.example.test");
        let bare = domain(ZONE);
        let (wild_cert, bare_cert) =
            tokio::join!(issuer.issue_for(&wildcard), issuer.issue_for(&bare));
        let (wild_cert, bare_cert) = (
            wild_cert.unwrap_or_else(|e| panic!("wildcard: {e}\n{}", pebble.logs())),
            bare_cert.unwrap_or_else(|e| panic!("bare name: {e}\n{}", pebble.logs())),
        );
        // Pebble's only DNS server is knotd, where the solver published.
        let pebble_log = pebble.log("pebble");
        assert!(
            pebble_log.contains(&format!(
                "custom DNS resolver for ACME challenges: {}",
                knot.addr()
            )),
            "{pebble_log}"
        );
        // knotd applied the solver's updates (adds and removals; updates
        // arriving together may be applied as one batch).
        let log = knot.log();
        assert!(log.contains("[example.test.] DDNS, finished"), "{log}");
        assert!(
            solver
                .txt_values("_acme-challenge.example.test")
                .await
                .unwrap()
                .is_empty(),
            "the TXT records were not removed"
        );
        assert!(txt_udp(knot.addr(), "_acme-challenge.example.test")
            .await
            .is_empty());

        let roots = pebble.issuer_roots().await;
        verify_chain(&wild_cert.chain_pem, roots.clone(), "foo.example.test");
        verify_chain(&bare_cert.chain_pem, roots.clone(), ZONE);
        assert_eq!(
            round_trip(serving(&wild_cert), roots, "foo.example.test").await,
            wild_cert.fingerprint
        );
    })
    .await;
}
