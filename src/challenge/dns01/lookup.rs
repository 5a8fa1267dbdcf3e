//! Unsigned DNS queries: the zone that holds a name (from SOA answers, with
//! CNAMEs followed), the zone's authoritative servers, and the TXT values
//! a server answers with.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::{DnsError, DnsMultiplexer, NetError};
use hickory_proto::op::{DnsResponse, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType, TSigner};

use crate::error::{BoxError, DnsProblem};

/// CNAMEs followed from `_acme-challenge.<name>` before giving up.
const MAX_CNAME_HOPS: usize = 8;

/// A DNS failure, before the solver names the domain, step and server.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) problem: DnsProblem,
    pub(super) message: String,
    pub(super) source: Option<BoxError>,
}

impl Failure {
    pub(super) fn new(problem: DnsProblem, message: impl Into<String>) -> Self {
        Self {
            problem,
            message: message.into(),
            source: None,
        }
    }

    /// A failed exchange; `signed`: an answer that did not verify is the
    /// key's fault.
    pub(super) fn net(e: NetError, signed: bool) -> Self {
        let problem = match &e {
            NetError::Io(_) | NetError::Timeout | NetError::Busy | NetError::NoConnections => {
                DnsProblem::Unreachable
            }
            NetError::Dns(DnsError::ResponseCode(code)) => response_problem(*code),
            _ if signed => DnsProblem::NotAuthenticated,
            _ => DnsProblem::Failed,
        };
        Self {
            problem,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// The problem an update's answer code names.
pub(super) fn response_problem(code: ResponseCode) -> DnsProblem {
    match code {
        ResponseCode::NotAuth
        | ResponseCode::BADSIG
        | ResponseCode::BADKEY
        | ResponseCode::BADTIME => DnsProblem::NotAuthenticated,
        ResponseCode::Refused => DnsProblem::Refused,
        ResponseCode::NotZone => DnsProblem::NotInZone,
        _ => DnsProblem::Failed,
    }
}

/// Where a challenge's TXT record goes: its owner name (after CNAMEs) and
/// the zone that holds that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) owner: Name,
    pub(super) zone: Name,
}

/// How a query travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    Udp,
    Tcp,
}

/// A client to `server`, its requests signed by `signer` when given (TCP only).
pub(super) async fn client(
    server: SocketAddr,
    transport: Transport,
    limit: Duration,
    signer: Option<&TSigner>,
) -> Result<Client<TokioRuntimeProvider>, Failure> {
    let provider = TokioRuntimeProvider::new();
    let client = match transport {
        Transport::Udp => {
            let stream = UdpClientStream::builder(server, provider)
                .with_timeout(Some(limit))
                .with_signer(signer.cloned())
                .build();
            let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
            tokio::spawn(background);
            client
        }
        Transport::Tcp => {
            let (connect, handle) = TcpClientStream::new(server, None, Some(limit), provider);
            let stream = tokio::time::timeout(limit, connect)
                .await
                .map_err(|_| {
                    Failure::new(
                        DnsProblem::Unreachable,
                        format!("no connection within {limit:?}"),
                    )
                })?
                .map_err(|e| Failure::net(e, false))?;
            let mut multiplexer = DnsMultiplexer::new(stream, handle).with_timeout(limit);
            if let Some(signer) = signer {
                multiplexer = multiplexer.with_signer(signer.clone());
            }
            let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
            tokio::spawn(background);
            client
        }
    };
    Ok(client)
}

/// One unsigned query; UDP answers that came truncated are asked again over TCP.
pub(super) async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    transport: Transport,
    limit: Duration,
) -> Result<DnsResponse, Failure> {
    let once = |transport| async move {
        let mut client = client(server, transport, limit, None).await?;
        tokio::time::timeout(limit, client.query(name.clone(), DNSClass::IN, rtype))
            .await
            .map_err(|_| Failure::new(DnsProblem::Unreachable, "no answer in time"))?
            .map_err(|e| Failure::net(e, false))
    };
    let response = once(transport).await?;
    if transport == Transport::Udp && response.truncation {
        return once(Transport::Tcp).await;
    }
    Ok(response)
}

/// The TXT values at `owner` as `server` answers them now (over TCP).
pub(super) async fn txt_values(
    server: SocketAddr,
    owner: &Name,
    limit: Duration,
) -> Result<Vec<String>, Failure> {
    let response = query(server, owner, RecordType::TXT, Transport::Tcp, limit).await?;
    Ok(response
        .answers
        .iter()
        .filter(|record| &record.name == owner)
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// Where the record for `name` goes: CNAMEs at `name` are followed (at
/// most [`MAX_CNAME_HOPS`], no loops), then the zone of the final name is
/// the owner of the SOA record the resolver answers with (in the answer,
/// or in the authority section of a negative answer), asking the parents
/// in turn when a name gets no SOA at all.
pub(super) async fn find_target(
    resolver: SocketAddr,
    name: &Name,
    limit: Duration,
) -> Result<Target, Failure> {
    let mut owner = name.clone();
    let mut seen = HashSet::from([owner.to_lowercase()]);
    loop {
        let response = query(resolver, &owner, RecordType::SOA, Transport::Udp, limit).await?;
        // A resolver may answer the whole chain at once.
        let mut followed = false;
        while let Some(next) = cname_at(&response, &owner) {
            if seen.len() > MAX_CNAME_HOPS || !seen.insert(next.to_lowercase()) {
                return Err(Failure::new(
                    DnsProblem::NotInZone,
                    format!("the CNAMEs from {name} loop or go deeper than {MAX_CNAME_HOPS}"),
                ));
            }
            owner = next;
            followed = true;
        }
        if let Some(zone) = soa_owner(&response, &owner) {
            return Ok(Target { owner, zone });
        }
        if followed {
            // Ask about the CNAME's target itself.
            continue;
        }
        return find_zone_above(resolver, owner, limit).await;
    }
}

/// The zone of `owner` when its own query got no SOA (a server that only
/// answers for its zones refuses names it does not know): each parent is
/// asked in turn.
async fn find_zone_above(
    resolver: SocketAddr,
    owner: Name,
    limit: Duration,
) -> Result<Target, Failure> {
    let mut candidate = owner.base_name();
    while !candidate.is_root() {
        let response = query(resolver, &candidate, RecordType::SOA, Transport::Udp, limit).await?;
        if let Some(zone) = soa_owner(&response, &candidate) {
            return Ok(Target { owner, zone });
        }
        candidate = candidate.base_name();
    }
    Err(Failure::new(
        DnsProblem::NotInZone,
        format!("no zone holding {owner} answered with an SOA record"),
    ))
}

/// The target of a CNAME record at `owner` in the answer.
fn cname_at(response: &DnsResponse, owner: &Name) -> Option<Name> {
    response
        .answers
        .iter()
        .find_map(|record| match &record.data {
            RData::CNAME(target) if &record.name == owner => Some(target.0.clone()),
            _ => None,
        })
}

/// The owner of the SOA record that covers `name`: in the answer (the
/// name is a zone's apex) or in the authority section.
fn soa_owner(response: &DnsResponse, name: &Name) -> Option<Name> {
    if !matches!(
        response.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) {
        return None;
    }
    response
        .answers
        .iter()
        .chain(response.authorities.iter())
        .filter(|record| matches!(record.data, RData::SOA(_)))
        .map(|record| record.name.clone())
        .find(|zone| zone.zone_of(name))
}

/// The addresses (port 53) of `zone`'s authoritative servers, from its
/// NS records and their A and AAAA records, all asked of `resolver`.
#[cfg(feature = "dns-providers")]
pub(super) async fn nameservers(
    resolver: SocketAddr,
    zone: &Name,
    limit: Duration,
) -> Result<Vec<SocketAddr>, Failure> {
    let response = query(resolver, zone, RecordType::NS, Transport::Udp, limit).await?;
    let hosts: Vec<Name> = response
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::NS(ns) => Some(ns.0.clone()),
            _ => None,
        })
        .collect();
    let mut addresses = Vec::new();
    for host in &hosts {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let Ok(response) = query(resolver, host, rtype, Transport::Udp, limit).await else {
                continue;
            };
            addresses.extend(response.answers.iter().filter_map(|record| {
                let ip: std::net::IpAddr = match &record.data {
                    RData::A(a) => a.0.into(),
                    RData::AAAA(aaaa) => aaaa.0.into(),
                    _ => return None,
                };
                Some(SocketAddr::new(ip, 53))
            }));
        }
    }
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(Failure::new(
            DnsProblem::Unreachable,
            format!("no address found for the name servers of {zone} ({hosts:?})"),
        ));
    }
    Ok(addresses)
}

/// The first `nameserver` of `/etc/resolv.conf`, port 53.
#[cfg(feature = "dns-providers")]
pub(super) fn system_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    parse_resolv_conf(&text)
}

#[cfg(feature = "dns-providers")]
fn parse_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver")
            .then(|| words.next())?
            // A scoped IPv6 address (`fe80::1%eth0`) is not a socket address here.
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

#[cfg(all(test, feature = "dns-providers"))]
mod tests {
    use super::*;

    #[test]
    fn the_first_nameserver_of_resolv_conf_is_the_resolver() {
        let conf = "# generated\nsearch example.com\nnameserver fe80::1%eth0\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n";
        assert_eq!(
            parse_resolv_conf(conf),
            Some("192.0.2.53:53".parse().unwrap())
        );
        assert_eq!(
            parse_resolv_conf("nameserver 2001:db8::53"),
            Some("[2001:db8::53]:53".parse().unwrap())
        );
        assert_eq!(parse_resolv_conf("search example.com\n"), None);
    }
}
