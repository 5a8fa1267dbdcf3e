//! The files under the store's directory: the file name of each record, and
//! reading records, accounts and settings back.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use super::io::{read_json, Read, TEMP_PREFIX};
use crate::store::{AccountRecord, CertRecord};
use crate::{Domain, Error, Result};

/// The file name of a domain's record: the name itself, with the ':' of an
/// IPv6 literal written as '_' (a character no domain contains).
pub(super) fn file_name(domain: &Domain) -> String {
    domain.as_str().replace(':', "_")
}

/// The domain a file name stands for, if it is one this store wrote.
fn domain_of(file_name: &str) -> Option<Domain> {
    if file_name.starts_with('.') {
        return None;
    }
    let name = file_name.replace('_', ":");
    Domain::new(&name).ok().filter(|d| d.as_str() == name)
}

pub(super) fn read_record(certs: &Path, domain: &Domain) -> Result<Read<CertRecord>> {
    Ok(
        match read_json::<CertRecord>(&certs.join(file_name(domain)))? {
            Read::Found(record) if record.domain != *domain => {
                Read::Corrupt(format!("the file holds the record of {}", record.domain))
            }
            other => other,
        },
    )
}

pub(super) fn corrupt(key: impl fmt::Display, reason: String) -> Error {
    Error::Corrupt {
        key: key.to_string(),
        reason,
    }
}

pub(super) fn load_record(certs: &Path, domain: &Domain) -> Result<Option<CertRecord>> {
    match read_record(certs, domain)? {
        Read::Missing => Ok(None),
        Read::Found(record) => Ok(Some(record)),
        Read::Corrupt(reason) => Err(corrupt(domain, reason)),
    }
}

pub(super) fn load_account(accounts: &Path, id: &str) -> Result<Option<AccountRecord>> {
    match read_json::<AccountRecord>(&accounts.join(id))? {
        Read::Missing => Ok(None),
        Read::Found(record) if record.id == id => Ok(Some(record)),
        Read::Found(record) => Err(corrupt(
            id,
            format!("the file holds the account {:?}", record.id),
        )),
        Read::Corrupt(reason) => Err(corrupt(id, reason)),
    }
}

pub(super) fn read_meta(meta: &Path, key: &str) -> Result<Option<String>> {
    let path = meta.join(key);
    match fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| corrupt(key, "the value is not UTF-8".into())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The domains of the record files in `certs/`.
pub(super) fn record_files(certs: &Path) -> Result<BTreeSet<Domain>> {
    let mut domains = BTreeSet::new();
    for entry in fs::read_dir(certs).map_err(|e| Error::io(certs, e))? {
        let entry = entry.map_err(|e| Error::io(certs, e))?;
        let name = entry.file_name();
        match name.to_str().and_then(domain_of) {
            Some(domain) => {
                domains.insert(domain);
            }
            // A write in progress (by the process holding the store, when
            // this one reads it read-only).
            None if name.to_string_lossy().starts_with(TEMP_PREFIX) => {}
            None => tracing::warn!(
                file = %entry.path().display(),
                "ignoring a file that is not a certificate record"
            ),
        }
    }
    Ok(domains)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_refuse_strangers() {
        for name in [
            "example.com",
            "::1",
            "2001:db8::1",
            "127.0.0.1",
            "::ffff:1.2.3.4",
        ] {
            let domain = Domain::new(name).unwrap();
            let file = file_name(&domain);
            assert!(!file.contains(':') && !file.contains('/'), "{file}");
            assert_eq!(domain_of(&file), Some(domain));
        }
        for stranger in [
            ".tmp-1-2",
            ".DS_Store",
            "Example.com",
            "a_b.com",
            "..",
            "2001_db8_0_0_0_0_0_1",
        ] {
            assert_eq!(domain_of(stranger), None, "{stranger}");
        }
    }
}
