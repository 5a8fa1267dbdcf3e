//! Re-seals every secret in the store under the newest encryption key, so
//! the old key can be removed (steps 3 to 5 of the rotation procedure in
//! docs/secrets-and-access.md):
//!
//! ```text
//! _APP_OPENSSL_KEY_V1=<old> _APP_OPENSSL_KEY_V2=<new> cargo run --example rotate_keys
//! cargo run --example rotate_keys -- batch=500   # at most 500 re-seals this run
//! _APP_OPENSSL_KEY_V2=<new> cargo run --example rotate_keys   # the check before removing V1
//! ```
//!
//! Reads the `_APP_*` variables (the store folder is `_APP_CERTIFICATES_PATH`).
//! Safe to stop and to run again; exits non-zero until the rotation is
//! complete, so it can be looped in a script.
//!
//! It opens the file store itself, so it refuses to run while a server has
//! that folder open (the folder is locked by the process using it): stop the
//! server for the rotation, or rotate inside the server instead, over the
//! store it already holds:
//!
//! ```text
//! let report = certkeeper::vault::rotate(&*embedded.store, &*embedded.cipher).await?;
//! ```

use std::process::ExitCode;

use certkeeper::store::FileStore;
use certkeeper::vault::rotate_batch;
use certkeeper::Config;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "certkeeper=info".into()),
        )
        .init();
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("rotate_keys: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let mut batch = usize::MAX;
    for arg in std::env::args().skip(1) {
        match arg.strip_prefix("batch=").map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => batch = n,
            _ => {
                return Err(
                    format!("unknown argument {arg:?}; usage: rotate_keys [batch=<n>]").into(),
                )
            }
        }
    }
    let config = Config::from_env()?;
    let keyring = config.keyring()?;
    // Fails with "in use by another process" while a server holds the folder.
    let store = FileStore::open(config.storage().path()).await?;
    println!(
        "rotating {} to key version {} (keys present: {:?})",
        config.storage().path().display(),
        keyring.versions().last().copied().unwrap_or_default(),
        keyring.versions()
    );
    let report = rotate_batch(&store, &keyring, batch).await?;
    println!(
        "re-sealed {}, already under V{}: {}, failed: {}",
        report.resealed,
        report.target_version,
        report.already_current,
        report.failed.len()
    );
    for failure in &report.failed {
        println!("failed: {}: {}", failure.value, failure.error);
    }
    if report.stopped_at_limit {
        println!("stopped after {batch} re-seals: run again to continue");
    }
    if report.is_complete() {
        println!(
            "complete: every secret is sealed under V{}",
            report.target_version
        );
    }
    Ok(report.is_complete())
}
