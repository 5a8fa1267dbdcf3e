//! The checks of the ACME settings, shared by [`Config`](crate::Config) and
//! the issuer's builder, so a value one accepts the other does too.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

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
