//! Manual certificate generation, like the reference platform's
//! `ssl domain=<name>`:
//!
//! ```text
//! cargo run --example ssl                        # the main domain (_APP_DOMAIN)
//! cargo run --example ssl -- domain=example.com  # a named domain
//! ```
//!
//! It issues now, whatever the renew date and however many attempts failed
//! before, prints the certificate's log, and exits non-zero on failure. A
//! named domain is added as a custom domain first: the operator running the
//! command vouches for it. Settings come from the `_APP_*` environment
//! variables (see the README); in production the HTTP-01 listener binds
//! `_APP_ACME_CHALLENGE_ADDRESS` (default `[::]:80`) while it runs.

use std::process::ExitCode;

use certkeeper::{Config, Domain, Embedded};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "certkeeper=info".into()),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut domain = None;
    for arg in std::env::args().skip(1) {
        match arg.strip_prefix("domain=") {
            Some(name) if !name.trim().is_empty() => domain = Some(Domain::new(name)?),
            Some(_) => {}
            None => {
                return Err(format!("unknown argument {arg:?}; usage: ssl [domain=<name>]").into())
            }
        }
    }
    let embedded = Embedded::start(Config::from_env()?).await?;
    let renewer = &embedded.renewer;
    if let Some(domain) = &domain {
        renewer.add_domain(domain).await?;
    }
    let target = match &domain {
        Some(d) => d.clone(),
        None => renewer
            .policy()
            .main_domain()
            .await?
            .ok_or("no main domain: set _APP_DOMAIN or pass domain=<name>")?,
    };
    println!("issuing a certificate for {target}");
    let result = renewer.issue_now(Some(&target)).await;
    if let Some(record) = embedded.store.load(&target).await? {
        println!("log of {target}:");
        for line in record.log_lines() {
            println!("  {line}");
        }
        if let (Ok(_), Some(cert)) = (&result, &record.certificate) {
            println!(
                "valid until {}, renews from {}",
                cert.not_after, record.renew_date
            );
            println!("sha256 {}", cert.fingerprint);
        }
    }
    result?;
    Ok(())
}
