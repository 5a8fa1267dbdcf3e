//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), over TCP, with
//! the answer's signature verified and its code typed.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::client::ClientHandle;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm as HickoryTsigAlgorithm;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, TSigner};

use super::lookup::{self, response_problem, Failure, Transport};
use crate::error::DnsProblem;
use crate::{Error, Result};

/// The HMAC a TSIG key signs updates with (RFC 8945 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TsigAlgorithm {
    /// `hmac-sha256`, the default and what RFC 8945 requires servers to offer.
    #[default]
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    /// The algorithm's name as key files and `_APP_DNS01_TSIG_ALGORITHM` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    /// Parses `hmac-sha256`, `hmac-sha384` or `hmac-sha512` (any case);
    /// `setting` names the setting in the error.
    pub fn parse(setting: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "hmac-sha256" => Ok(Self::HmacSha256),
            "hmac-sha384" => Ok(Self::HmacSha384),
            "hmac-sha512" => Ok(Self::HmacSha512),
            _ => Err(Error::config(
                setting,
                "expected hmac-sha256, hmac-sha384 or hmac-sha512",
            )),
        }
    }

    pub(super) fn hickory(self) -> HickoryTsigAlgorithm {
        match self {
            Self::HmacSha256 => HickoryTsigAlgorithm::HmacSha256,
            Self::HmacSha384 => HickoryTsigAlgorithm::HmacSha384,
            Self::HmacSha512 => HickoryTsigAlgorithm::HmacSha512,
        }
    }
}

/// Sends signed updates to one primary server.
pub(super) struct Rfc2136 {
    pub(super) server: SocketAddr,
    pub(super) signer: TSigner,
    pub(super) key_name: String,
    pub(super) algorithm: TsigAlgorithm,
}

impl Rfc2136 {
    /// Adds (`add`) or deletes exactly the TXT value `value` at `owner` in
    /// `zone`, leaving any other value there alone. Deleting a value that
    /// is not there succeeds.
    pub(super) async fn update(
        &self,
        owner: &Name,
        zone: &Name,
        value: &str,
        ttl: u32,
        add: bool,
        limit: Duration,
    ) -> std::result::Result<(), Failure> {
        let mut record = Record::from_rdata(
            owner.clone(),
            ttl,
            RData::TXT(TXT::new(vec![value.to_owned()])),
        );
        record.dns_class = DNSClass::IN;
        let mut client =
            lookup::client(self.server, Transport::Tcp, limit, Some(&self.signer)).await?;
        let sent = if add {
            client.append(record, zone.clone(), false)
        } else {
            client.delete_by_rdata(record, zone.clone())
        };
        let response = tokio::time::timeout(limit, sent)
            .await
            .map_err(|_| Failure::new(DnsProblem::Unreachable, "no answer in time"))?
            .map_err(|e| Failure::net(e, true))?;
        match response.response_code {
            ResponseCode::NoError => Ok(()),
            code => Err(Failure::new(
                response_problem(code),
                format!("the server answered the update for zone {zone} with {code}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_parse_by_their_key_file_names() {
        use crate::config::Setting;
        for algorithm in [
            TsigAlgorithm::HmacSha256,
            TsigAlgorithm::HmacSha384,
            TsigAlgorithm::HmacSha512,
        ] {
            assert_eq!(
                TsigAlgorithm::parse("x", algorithm.as_str()).unwrap(),
                algorithm
            );
        }
        assert!(matches!(
            TsigAlgorithm::parse(Setting::Dns01TsigAlgorithm.name(), "hmac-md5"),
            Err(Error::Config { name, .. }) if name == Setting::Dns01TsigAlgorithm.name()
        ));
    }

    #[test]
    fn answer_codes_name_their_problem() {
        for (code, problem) in [
            (ResponseCode::NotAuth, DnsProblem::NotAuthenticated),
            (ResponseCode::BADKEY, DnsProblem::NotAuthenticated),
            (ResponseCode::Refused, DnsProblem::Refused),
            (ResponseCode::NotZone, DnsProblem::NotInZone),
            (ResponseCode::ServFail, DnsProblem::Failed),
        ] {
            assert_eq!(response_problem(code), problem, "{code}");
        }
    }

    /// hickory returns some answer codes as errors: a signed update refused
    /// or sent to the wrong zone is not the key's fault.
    #[test]
    fn an_update_answer_code_returned_as_an_error_names_its_problem() {
        use hickory_net::{DnsError, NetError};
        for (code, problem) in [
            (ResponseCode::Refused, DnsProblem::Refused),
            (ResponseCode::NotZone, DnsProblem::NotInZone),
            (ResponseCode::NotAuth, DnsProblem::NotAuthenticated),
            (ResponseCode::BADSIG, DnsProblem::NotAuthenticated),
            (ResponseCode::ServFail, DnsProblem::Failed),
        ] {
            let e = NetError::Dns(DnsError::ResponseCode(code));
            assert_eq!(Failure::net(e, true).problem, problem, "{code}");
        }
        // Any other failure of a signed exchange is the key's.
        let e = NetError::Message("the answer's signature did not verify");
        assert_eq!(Failure::net(e, true).problem, DnsProblem::NotAuthenticated);
    }
}
