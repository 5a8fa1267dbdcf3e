//! The checks of the ACME settings, shared by [`Config`](crate::Config) and
//! the issuer's builder, so a value one accepts the other does too.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::Naming;
use crate::{Error, Result};

/// The directory URL, trimmed: an `https://` URL with a host (ACME
/// requires HTTPS); otherwise an [`Error::Config`] naming `setting`.
pub(crate) fn directory_url(setting: &str, url: &str) -> Result<String> {
    let url = url.trim();
    let host = url.strip_prefix("https://").unwrap_or_default();
    if host.is_empty()
        || host.starts_with('/')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::config(
            setting,
            format!(
                "{:?} is not an https:// URL (ACME requires HTTPS)",
                url.chars().take(200).collect::<String>()
            ),
        ));
    }
    Ok(url.to_owned())
}

/// Checks that `path` holds a PEM certificate; otherwise an
/// [`Error::Config`] naming `setting`.
pub(crate) fn read_ca_root(setting: &str, path: &Path) -> Result<()> {
    CertificateDer::from_pem_file(path).map(drop).map_err(|e| {
        Error::config(
            setting,
            format!("cannot read a PEM certificate from {}: {e}", path.display()),
        )
    })
}

/// A profile name, trimmed: printable ASCII without spaces, at most 64
/// characters (the CA's directory decides which names exist); otherwise an
/// [`Error::Config`] naming `setting`.
pub(crate) fn profile(setting: &str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::config(
            setting,
            format!(
                "{:?} is not a profile name (like classic, tlsserver or shortlived)",
                name.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(name.to_owned())
}

/// The type of key a certificate is issued for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (`ecdsa-p256`), the default: small,
    /// fast, accepted everywhere.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384 (`ecdsa-p384`).
    EcdsaP384,
}

impl KeyType {
    /// The setting's spelling: `ecdsa-p256` or `ecdsa-p384`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
        }
    }

    pub(crate) fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = Error;

    /// `ecdsa-p256` or `ecdsa-p384` (any case); otherwise an
    /// [`Error::Config`] naming `KeyType::from_str` (the
    /// [`Config`](crate::Config) names `_APP_ACME_KEY_TYPE` when it reads
    /// the variable).
    fn from_str(value: &str) -> Result<Self> {
        Self::parse_named("KeyType::from_str", value)
    }
}

impl KeyType {
    /// Parses `value`; an error names `name`, the variable or method the
    /// value came through.
    pub(crate) fn parse_named(name: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "ecdsa-p256" => Ok(Self::EcdsaP256),
            "ecdsa-p384" => Ok(Self::EcdsaP384),
            _ => Err(Error::config(
                name,
                format!(
                    "{:?} is not a key type: ecdsa-p256 (the default) or ecdsa-p384",
                    value.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// An external account binding (RFC 8555 section 7.3.4) as configured:
/// the key id and the base64url HMAC key a CA such as ZeroSSL or Google
/// hands out (`_APP_ACME_EAB_KID`, `_APP_ACME_EAB_HMAC_KEY`). Checked when
/// made; `Debug` shows the key id only, and the key is wiped when dropped.
#[derive(Clone)]
pub struct ExternalAccountBinding {
    key_id: String,
    hmac_key: zeroize::Zeroizing<String>,
}

impl ExternalAccountBinding {
    /// Checks the key id and that the HMAC key is base64url of at least 16
    /// bytes; an [`Error::Config`] names the setting at fault, never the key.
    pub fn new(key_id: &str, hmac_key: &str) -> Result<Self> {
        Self::named(
            key_id,
            hmac_key,
            Naming::Builder,
            "ExternalAccountBinding::new",
        )
    }

    /// [`new`](Self::new), its errors naming `method` or the variables.
    pub(crate) fn named(
        key_id: &str,
        hmac_key: &str,
        naming: Naming,
        method: &'static str,
    ) -> Result<Self> {
        super::account::Eab::new(key_id, hmac_key, naming, method)?;
        Ok(Self {
            key_id: key_id.trim().to_owned(),
            hmac_key: zeroize::Zeroizing::new(hmac_key.trim().to_owned()),
        })
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The HMAC key as given (base64url), for
    /// [`AcmeIssuerBuilder::external_account_binding`](crate::issuer::AcmeIssuerBuilder::external_account_binding).
    pub fn expose_hmac_key(&self) -> &str {
        &self.hmac_key
    }
}

impl fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("key_id", &self.key_id)
            .field("hmac_key", &"(redacted)")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Setting;

    #[test]
    fn key_types_parse_by_their_setting_spelling_only() {
        assert_eq!("ecdsa-p256".parse::<KeyType>().unwrap(), KeyType::EcdsaP256);
        assert_eq!(
            " ECDSA-P384 ".parse::<KeyType>().unwrap(),
            KeyType::EcdsaP384
        );
        for bad in ["rsa2048", "p384", ""] {
            // Parsed in code: the function is named.
            let err = bad.parse::<KeyType>().unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == "KeyType::from_str"),
                "{bad:?}: {err:?}"
            );
            assert!(!err.to_string().contains(Setting::PREFIX), "{err}");
            // Read from the environment: the variable.
            let err = crate::Config::from_vars([(Setting::AcmeKeyType.name(), bad)]);
            if !bad.is_empty() {
                assert!(
                    matches!(&err, Err(Error::Config { name, .. }) if name == Setting::AcmeKeyType.name()),
                    "{bad:?}: {err:?}"
                );
            }
        }
        assert_eq!(KeyType::default().to_string(), "ecdsa-p256");
    }

    #[test]
    fn profile_names_are_checked_for_shape() {
        assert_eq!(profile("S", " shortlived ").unwrap(), "shortlived");
        for bad in ["", "two words", "a\tb", &"p".repeat(65)] {
            assert!(profile("S", bad).is_err(), "{bad:?}");
        }
    }
}
