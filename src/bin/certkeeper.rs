//! `certkeeper`: list, inspect, issue, revoke and remove the certificates of a
//! certkeeper store, rotate its encryption keys, roll its ACME account key
//! over, and check the settings,
//! from the same `_APP_*` environment as the server (see the README's
//! "The certkeeper command").
//!
//! Reading commands (`list`, `show`, `check`) open a file store read-only,
//! so they work while a server holds it; writing commands (`issue`,
//! `revoke`, `remove`, `rotate-keys`, `rotate-account-key`) take the store's lock and are refused while a
//! server holds a file store. On a SQL store everything works from any
//! machine.
//!
//! Exit codes: 0 ok, 1 failure, 2 usage, 3 configuration, 4 not found,
//! 5 refused (store held by another process, domain not allowed, already
//! being issued), 6 CA failure, 7 rotation incomplete (run again).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use certkeeper::challenge::Http01Solver;
use certkeeper::issuer::{AccountKeyRollover, AcmeIssuer, RevocationReason};
use certkeeper::renewer::DomainPolicy;
use certkeeper::store::{CertRecord, CertStore, FileStore};
use certkeeper::vault::rotate_batch;
use certkeeper::{Config, Domain, Embedded, Error, RenewalPolicy};

/// Exit codes, stable for scripts.
mod exit {
    pub(crate) const FAILURE: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const CONFIG: u8 = 3;
    pub(crate) const NOT_FOUND: u8 = 4;
    pub(crate) const REFUSED: u8 = 5;
    pub(crate) const CA: u8 = 6;
    pub(crate) const INCOMPLETE: u8 = 7;
}

const AFTER_HELP: &str = "\
Settings come from the environment, as for the server: _APP_CERTIFICATES_PATH \
(the file store's folder) or _APP_CERTIFICATES_DATABASE_URL (a PostgreSQL or \
MariaDB store), _APP_OPENSSL_KEY_V1, V2 ..., _APP_ACME_DIRECTORY_URL, \
_APP_SYSTEM_SECURITY_EMAIL_ADDRESS ...

Exit codes: 0 ok, 1 failure, 2 usage, 3 configuration, 4 not found, 5 refused \
(store held by another process, domain not allowed, already being issued), \
6 CA failure, 7 rotation incomplete (run again).";

/// Certificates and secrets of a certkeeper store, from the command line.
#[derive(Parser, Debug)]
#[command(name = "certkeeper", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every certificate: domain, issuer, expiry, renew date, attempts, last
    /// error. Reads a file store without locking it, so it works while a
    /// server runs.
    List {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// One certificate's record and its log (every attempt, step and error).
    /// Reads a file store without locking it.
    Show {
        /// The domain.
        domain: String,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Issues a certificate now (manual generation), whatever its renew date
    /// and attempts, through the CA of the settings, as the server would.
    /// Takes the store's lock: refused while a server holds a file store.
    Issue {
        /// The domain; the main domain (_APP_DOMAIN) when left out. It must
        /// be the main domain or a stored custom domain, unless --add.
        domain: Option<String>,
        /// Adds the domain as a custom domain first.
        #[arg(long)]
        add: bool,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Removes a domain's record and certificate. Takes the store's lock:
    /// refused while a server holds a file store.
    Remove {
        /// The domain.
        domain: String,
        /// Revokes the certificate at its CA first (reason
        /// cessation-of-operation): the name is no longer served. The record
        /// is removed only once the CA revoked it.
        #[arg(long)]
        revoke: bool,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a domain's certificate at the CA that issued it (RFC 8555
    /// section 7.6), through the ACME account of the settings; the record
    /// stays, due now, so the next cycle (or `issue`) gets a new
    /// certificate. Takes the store's lock: refused while a server holds a
    /// file store.
    Revoke {
        /// The domain.
        domain: String,
        /// unspecified, key-compromise, superseded or cessation-of-operation.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Re-seals every private key and account credential under the newest
    /// key (_APP_OPENSSL_KEY_V<highest>), so older keys can be removed. Safe
    /// to stop and run again; exits 7 until every secret is re-sealed. Takes
    /// the store's lock: refused while a server holds a file store.
    RotateKeys {
        /// At most this many re-seals this run.
        #[arg(long)]
        batch: Option<usize>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Rolls the ACME account's key over (RFC 8555 section 7.3.5): the CA
    /// takes a new key for the same account and refuses the old one from
    /// then on, and the new key, sealed, is stored in place of the old one.
    /// Takes the store's lock: refused while a server holds a file store;
    /// on a SQL store, running servers switch to the new key by themselves.
    RotateAccountKey {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Validates the settings and says what a server would do with them:
    /// which store, which CA, which domains are due. Changes nothing.
    Check {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    fn json(&self) -> bool {
        match self {
            Self::List { json }
            | Self::Show { json, .. }
            | Self::Issue { json, .. }
            | Self::Remove { json, .. }
            | Self::Revoke { json, .. }
            | Self::RotateKeys { json, .. }
            | Self::RotateAccountKey { json }
            | Self::Check { json } => *json,
        }
    }
}

/// A failure and its exit code.
struct Failure {
    code: u8,
    kind: &'static str,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidDomain { .. } | Error::InvalidKey { .. } => exit::USAGE,
            Error::Config { .. } | Error::WeakKey { .. } | Error::MissingKey { .. } => exit::CONFIG,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::StoreInUse { .. }
            | Error::ReadOnly { .. }
            | Error::InProgress { .. }
            | Error::DomainNotAllowed { .. }
            | Error::WildcardNeedsDns01 { .. }
            | Error::NotRevocable { .. }
            | Error::LeaseHeld { .. } => exit::REFUSED,
            Error::Acme { .. }
            | Error::Timeout { .. }
            | Error::Challenge { .. }
            | Error::AccountKeyLost { .. } => exit::CA,
            _ => exit::FAILURE,
        };
        Failure {
            code,
            kind: e.code(),
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    let json = cli.command.json();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("certkeeper: cannot start: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(output) => {
            print(&output, json);
            ExitCode::SUCCESS
        }
        Err((output, failure)) => {
            if let Some(output) = output {
                print(&output, json);
            }
            if json {
                eprintln!(
                    "{}",
                    json!({"error": failure.kind, "message": failure.message, "exit": failure.code})
                );
            } else {
                eprintln!("certkeeper: {} [{}]", failure.message, failure.kind);
            }
            ExitCode::from(failure.code)
        }
    }
}

/// What a command prints: JSON for `--json`, lines of text otherwise.
struct Output {
    json: Value,
    text: String,
}

fn print(output: &Output, json: bool) {
    let mut stdout = std::io::stdout().lock();
    let _ = if json {
        writeln!(stdout, "{}", output.json)
    } else {
        write!(stdout, "{}", output.text)
    };
}

type Outcome = Result<Output, (Option<Output>, Failure)>;

fn fail(e: impl Into<Failure>) -> (Option<Output>, Failure) {
    (None, e.into())
}

async fn run(command: Command) -> Outcome {
    let config = Config::from_env().map_err(fail)?;
    match command {
        Command::List { .. } => list(&config).await,
        Command::Show { domain, .. } => show(&config, &parse_domain(&domain)?).await,
        Command::Issue { domain, add, .. } => {
            let domain = domain.as_deref().map(parse_domain).transpose()?;
            issue(config, domain, add).await
        }
        Command::Remove { domain, revoke, .. } => {
            let domain = parse_domain(&domain)?;
            if revoke {
                remove_revoking(config, &domain).await
            } else {
                remove(&config, &domain).await
            }
        }
        Command::Revoke { domain, reason, .. } => {
            let domain = parse_domain(&domain)?;
            let reason = RevocationReason::parse(&reason).ok_or_else(|| {
                fail(Failure {
                    code: exit::USAGE,
                    kind: "usage",
                    message: format!(
                        "unknown revocation reason {reason:?}: unspecified, key-compromise, \
                         superseded or cessation-of-operation"
                    ),
                })
            })?;
            revoke(config, &domain, reason).await
        }
        Command::RotateKeys { batch, .. } => rotate_keys(&config, batch).await,
        Command::RotateAccountKey { json } => rotate_account_key(&config, json).await,
        Command::Check { .. } => check(&config).await,
    }
}

fn parse_domain(name: &str) -> Result<Domain, (Option<Output>, Failure)> {
    Domain::new(name).map_err(fail)
}

/// The store of the settings: a file store read-only (no lock) for
/// reading, locked for writing; a SQL store either way.
async fn open_store(config: &Config, write: bool) -> Result<Arc<dyn CertStore>, Error> {
    let storage = config.storage();
    match storage.database_url() {
        #[cfg(any(feature = "postgres", feature = "mysql"))]
        Some(url) => url.connect_with(storage.database_options()).await,
        #[cfg(not(any(feature = "postgres", feature = "mysql")))]
        Some(_) => Err(Error::config(
            certkeeper::Setting::CertificatesDatabaseUrl.name(),
            "this build has no SQL store",
        )),
        None if write => Ok(Arc::new(FileStore::open(storage.path()).await?)),
        None if !storage.path().join("certs").is_dir() => Err(Error::NotFound {
            what: "certificate store (set _APP_CERTIFICATES_PATH)",
            key: storage.path().display().to_string(),
        }),
        None => Ok(Arc::new(FileStore::open_read_only(storage.path()).await?)),
    }
}

fn date(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// The message of the newest log entry, when it is a failure.
fn last_error(record: &CertRecord) -> Option<&str> {
    record
        .log
        .last()
        .filter(|entry| !entry.success)
        .map(|entry| entry.message.as_str())
}

/// A record without its sealed key: everything an operator may see.
fn record_json(record: &CertRecord, with_log: bool) -> Value {
    let cert = record.certificate.as_ref();
    let mut value = json!({
        "domain": record.domain.as_str(),
        "issuer": cert.map(|c| c.issuer.as_str()),
        "not_before": cert.map(|c| date(Some(c.not_before))),
        "not_after": cert.map(|c| date(Some(c.not_after))),
        "fingerprint": cert.map(|c| c.fingerprint.as_str()),
        "issue_date": record.issue_date.map(|d| date(Some(d))),
        "renew_date": date(Some(record.renew_date)),
        "attempts": record.attempts,
        "last_error": last_error(record),
        "version": record.version,
    });
    if with_log {
        value["log"] = record
            .log
            .iter()
            .map(|e| {
                json!({
                    "time": date(Some(e.time)),
                    "step": e.step,
                    "success": e.success,
                    "message": e.message,
                })
            })
            .collect();
    }
    value
}

fn record_text(record: &CertRecord) -> String {
    let cert = record.certificate.as_ref();
    let mut text = format!("domain:      {}\n", record.domain);
    match cert {
        Some(c) => {
            text += &format!("issuer:      {}\n", c.issuer);
            text += &format!("valid from:  {}\n", date(Some(c.not_before)));
            text += &format!("expires:     {}\n", date(Some(c.not_after)));
            text += &format!("fingerprint: {}\n", c.fingerprint);
        }
        None => text += "certificate: none yet\n",
    }
    text += &format!("issued:      {}\n", date(record.issue_date));
    text += &format!("renew date:  {}\n", date(Some(record.renew_date)));
    text += &format!("attempts:    {}\n", record.attempts);
    text
}

async fn list(config: &Config) -> Outcome {
    let store = open_store(config, false).await.map_err(fail)?;
    let mut records = Vec::new();
    for domain in store.list().await.map_err(fail)? {
        // Removed since it was listed: left out.
        if let Some(record) = store.load(&domain).await.map_err(fail)? {
            records.push(record);
        }
    }
    let json = records.iter().map(|r| record_json(r, false)).collect();
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            let cert = r.certificate.as_ref();
            [
                r.domain.to_string(),
                cert.map_or("-".into(), |c| c.issuer.to_string()),
                date(cert.map(|c| c.not_after)),
                date(Some(r.renew_date)),
                r.attempts.to_string(),
                last_error(r).unwrap_or("-").replace('\n', " "),
            ]
        })
        .collect();
    Ok(Output {
        json,
        text: table(
            [
                "DOMAIN",
                "ISSUER",
                "EXPIRES",
                "RENEW",
                "ATTEMPTS",
                "LAST ERROR",
            ],
            &rows,
        ),
    })
}

fn table(header: [&str; 6], rows: &[[String; 6]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 5 {
                out += cell;
            } else {
                out += &format!("{cell:<w$}  ");
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut text = line(header);
    for row in rows {
        text += &line(row.each_ref().map(String::as_str));
    }
    text
}

async fn show(config: &Config, domain: &Domain) -> Outcome {
    let store = open_store(config, false).await.map_err(fail)?;
    let record = store.load(domain).await.map_err(fail)?.ok_or_else(|| {
        fail(Error::NotFound {
            what: "certificate record",
            key: domain.to_string(),
        })
    })?;
    let mut text = record_text(&record);
    text += "log:\n";
    for line in record.log_lines() {
        text += &format!("  {line}\n");
    }
    Ok(Output {
        json: record_json(&record, true),
        text,
    })
}

async fn issue(config: Config, domain: Option<Domain>, add: bool) -> Outcome {
    let embedded = Embedded::start(config).await.map_err(fail)?;
    let renewer = &embedded.renewer;
    if let (true, Some(domain)) = (add, &domain) {
        renewer.add_domain(domain).await.map_err(fail)?;
    }
    match renewer.issue_now(domain.as_ref()).await {
        Ok(record) => Ok(Output {
            json: record_json(&record, true),
            text: format!("issued\n{}", record_text(&record)),
        }),
        Err(e) => {
            // The failure is recorded on the record: show what it holds.
            let target = match domain {
                Some(domain) => Some(domain),
                // The main domain in force, learned ones included.
                None => renewer.policy().main_domain().await.ok().flatten(),
            };
            let record = match target {
                Some(d) => embedded.store.load(&d).await.ok().flatten(),
                None => None,
            };
            let output = record.map(|r| Output {
                json: record_json(&r, true),
                text: record_text(&r),
            });
            Err((output, e.into()))
        }
    }
}

async fn remove(config: &Config, domain: &Domain) -> Outcome {
    let store = open_store(config, true).await.map_err(fail)?;
    if !store.delete(domain).await.map_err(fail)? {
        return Err(fail(Error::NotFound {
            what: "certificate record",
            key: domain.to_string(),
        }));
    }
    Ok(Output {
        json: json!({"removed": domain.as_str()}),
        text: format!("removed {domain}\n"),
    })
}

async fn remove_revoking(config: Config, domain: &Domain) -> Outcome {
    let embedded = Embedded::start(config).await.map_err(fail)?;
    let removed = embedded
        .renewer
        .remove_domain_revoking(domain, Some(RevocationReason::CessationOfOperation))
        .await
        .map_err(fail)?;
    if !removed {
        return Err(fail(Error::NotFound {
            what: "certificate record",
            key: domain.to_string(),
        }));
    }
    Ok(Output {
        json: json!({"removed": domain.as_str(), "revoked": true}),
        text: format!("revoked and removed {domain}\n"),
    })
}

async fn revoke(config: Config, domain: &Domain, reason: RevocationReason) -> Outcome {
    let embedded = Embedded::start(config).await.map_err(fail)?;
    let record = embedded
        .renewer
        .revoke(domain, reason)
        .await
        .map_err(fail)?;
    Ok(Output {
        json: json!({"revoked": domain.as_str(), "reason": reason.as_str(), "record": record_json(&record, false)}),
        text: format!(
            "revoked the certificate of {domain} ({}); a new one is issued at the next cycle\n",
            reason.as_str()
        ),
    })
}

async fn rotate_keys(config: &Config, batch: Option<usize>) -> Outcome {
    let keyring = config.keyring().map_err(fail)?;
    let store = open_store(config, true).await.map_err(fail)?;
    let report = rotate_batch(&*store, &keyring, batch.unwrap_or(usize::MAX))
        .await
        .map_err(fail)?;
    let failed: Vec<Value> = report
        .failed
        .iter()
        .map(|f| json!({"value": f.value.to_string(), "error": f.error.code(), "message": f.error.to_string()}))
        .collect();
    let mut text = format!(
        "re-sealed under V{}: {}, already under it: {}, failed: {}\n",
        report.target_version,
        report.resealed,
        report.already_current,
        report.failed.len()
    );
    for f in &report.failed {
        text += &format!("failed: {}: {}\n", f.value, f.error);
    }
    let output = Output {
        json: json!({
            "target_version": report.target_version,
            "resealed": report.resealed,
            "already_current": report.already_current,
            "failed": failed,
            "stopped_at_limit": report.stopped_at_limit,
            "complete": report.is_complete(),
        }),
        text,
    };
    if report.is_complete() {
        let mut output = output;
        output.text += &format!(
            "complete: every secret is sealed under V{}\n",
            report.target_version
        );
        return Ok(output);
    }
    let (code, message) = if report.failed.is_empty() {
        (
            exit::INCOMPLETE,
            "stopped at the batch limit: run again to continue".to_owned(),
        )
    } else {
        (
            exit::FAILURE,
            format!("{} secrets could not be re-sealed", report.failed.len()),
        )
    };
    Err((
        Some(output),
        Failure {
            code,
            kind: "rotation_incomplete",
            message,
        },
    ))
}

/// How long `rotate-account-key` keeps trying to store a new key the CA
/// took but the store did not, and the pause between two tries: when it
/// gives up, the key is gone with the process.
const STORE_PATIENCE: Duration = Duration::from_secs(120);
const STORE_PAUSE: Duration = Duration::from_secs(5);

async fn rotate_account_key(config: &Config, json: bool) -> Outcome {
    let acme = config.acme();
    let Some(email) = acme.security_email() else {
        return Err(fail(Error::config(
            certkeeper::Setting::SecurityEmail.name(),
            "unset, so no ACME account is used: there is no account key to roll over",
        )));
    };
    if !config.production() {
        return Err(fail(Error::config(
            certkeeper::Setting::Env.name(),
            "development: every certificate is self-signed and no ACME account is used, so there is no account key to roll over",
        )));
    }
    let keyring = Arc::new(config.keyring().map_err(fail)?);
    let store = open_store(config, true).await.map_err(fail)?;
    // The account's settings as the server has them; the solver is never
    // asked, since nothing is ordered.
    let mut builder = AcmeIssuer::builder(acme.directory_url())
        .contact_email(email)
        .solver(Arc::new(Http01Solver::new()))
        .store(store)
        .cipher(keyring)
        .request_timeout(acme.timeout());
    if let Some(root) = acme.ca_root() {
        builder = builder.ca_root_pem_file(root);
    }
    if let Some(eab) = acme.external_account_binding() {
        builder = builder.external_account_binding(eab.key_id(), eab.expose_hmac_key());
    }
    let issuer = builder.build().map_err(fail)?;
    let rollover = match issuer.rotate_account_key().await {
        Ok(rollover) => rollover,
        // The CA took the new key and the store did not: this process
        // holds the only copy, so it keeps trying before it exits.
        Err(Error::AccountKeyNotStored { source, .. }) => {
            store_pending_key(&issuer, *source, json).await?
        }
        Err(e) => return Err(fail(e)),
    };
    Ok(account_key_output(&rollover, acme.directory_url()))
}

/// Tries to store the new key the CA took for [`STORE_PATIENCE`].
async fn store_pending_key(
    issuer: &AcmeIssuer,
    mut last: Error,
    json: bool,
) -> Result<AccountKeyRollover, (Option<Output>, Failure)> {
    let started = Instant::now();
    while started.elapsed() < STORE_PATIENCE {
        if !json {
            eprintln!(
                "certkeeper: the CA took the new account key but the store did not ({last}); trying again in {}s",
                STORE_PAUSE.as_secs()
            );
        }
        tokio::time::sleep(STORE_PAUSE).await;
        match issuer.store_pending_account_key().await {
            Ok(Some(rollover)) => return Ok(rollover),
            Ok(None) => break,
            Err(Error::AccountKeyNotStored { source, .. }) => last = *source,
            Err(e) => return Err(fail(e)),
        }
    }
    Err(fail(Failure {
        code: exit::FAILURE,
        kind: "account_key_not_stored",
        message: format!(
            "the CA took a new key for the ACME account {} but the store did not take it in {}s ({last}):              the stored key is refused by the CA and the new one ends with this process; remove the              stored account so that the next issue registers a new one",
            issuer.account_id(),
            STORE_PATIENCE.as_secs()
        ),
    }))
}

/// What a rollover did, without anything secret.
fn account_key_output(rollover: &AccountKeyRollover, directory_url: &str) -> Output {
    Output {
        json: json!({
            "account_id": rollover.account_id,
            "account_url": rollover.account_url,
            "directory_url": directory_url,
            "old_key_thumbprint": rollover.old_key_thumbprint,
            "new_key_thumbprint": rollover.new_key_thumbprint,
            "version": rollover.version,
        }),
        text: format!(
            "rolled the key of ACME account {} over at {directory_url}
             account:            {}
             old key thumbprint: {} (refused by the CA from now on)
             new key thumbprint: {}
             stored as version {}
",
            rollover.account_id,
            rollover.account_url,
            rollover.old_key_thumbprint,
            rollover.new_key_thumbprint,
            rollover.version
        ),
    }
}

/// Who holds the file store's folder, in words.
fn file_store_state(path: &Path) -> (String, Option<u32>) {
    if !path.join("certs").is_dir() {
        return ("does not exist yet; a server creates it".into(), None);
    }
    match FileStore::holder(path) {
        Some(pid) => (
            format!("held by process {pid} (a running server); read-only commands work, writes are refused"),
            Some(pid),
        ),
        None => ("not held by any process".into(), None),
    }
}

async fn check(config: &Config) -> Outcome {
    let mut text = String::from("settings: valid\n");
    let mut report = json!({"valid": true, "production": config.production()});
    text += &format!(
        "mode: {}\n",
        if config.production() {
            "production"
        } else {
            "development (self-signed certificates for every name)"
        }
    );

    let keyring = config.keyring().map_err(fail)?;
    let versions = keyring.versions();
    let sealing = versions.last().copied().unwrap_or_default();
    text += &format!("keys: versions {versions:?}, new secrets sealed under V{sealing}\n");
    report["key_versions"] = json!(versions);

    let (storage, acme_config) = (config.storage(), config.acme());
    match storage.database_url() {
        Some(url) => {
            text += &format!("store: {url} (shared SQL store)\n");
            report["store"] = json!({"kind": "sql", "url": url.to_string()});
        }
        None => {
            let path = storage.path();
            let (state, holder) = file_store_state(path);
            text += &format!("store: file store at {} ({state})\n", path.display());
            report["store"] =
                json!({"kind": "file", "path": path.display().to_string(), "held_by": holder});
        }
    }

    let acme = config.production() && acme_config.security_email().is_some();
    if acme {
        text += &format!(
            "CA: {} as {}{}, {}s per call\n",
            acme_config.directory_url(),
            acme_config.security_email().unwrap_or_default(),
            acme_config
                .ca_root()
                .map(|p| format!(", trusting {}", p.display()))
                .unwrap_or_default(),
            acme_config.timeout().as_secs()
        );
        match acme_config.challenge_address() {
            Some(address) => text += &format!("HTTP-01 challenges: answered on {address}\n"),
            None => text += "HTTP-01 challenges: answered by the server itself (listener off)\n",
        }
    } else if config.production() {
        text += &format!(
            "CA: none: {} is unset, so public names cannot get certificates (local names get self-signed ones)\n",
            certkeeper::Setting::SecurityEmail
        );
    } else {
        text += "CA: none in development: every certificate is self-signed\n";
    }
    report["ca"] = json!({
        "enabled": acme,
        "directory_url": acme_config.directory_url(),
        "contact": acme_config.security_email(),
        "challenge_address": acme_config.challenge_address().map(|a| a.to_string()),
    });
    let configured = config.renewal().main_domain();
    text += &match configured {
        Some(main) if !DomainPolicy::learns(configured) => format!("main domain: {main}\n"),
        _ => format!(
            "main domain: {}: the first domain seen becomes the main domain\n",
            configured.map_or("unset", Domain::as_str)
        ),
    };
    report["main_domain"] = json!(configured.map(Domain::as_str));

    // What the next cycle would pick, if the store exists.
    let exists = storage.database_url().is_some() || storage.path().join("certs").is_dir();
    if exists {
        let store = open_store(config, false).await.map_err(fail)?;
        let policy = RenewalPolicy::default();
        let now = OffsetDateTime::now_utc();
        let due = store
            .due(now, policy.max_attempts, policy.per_cycle)
            .await
            .map_err(fail)?;
        // Due records at the attempt limit: a bounded look, for an operator.
        const SCAN: usize = 100_000;
        const SHOWN: usize = 20;
        let every = store.due(now, u32::MAX, SCAN).await.map_err(fail)?;
        let given_up: Vec<&str> = every
            .iter()
            .filter(|e| e.attempts >= policy.max_attempts)
            .map(|e| e.domain.as_str())
            .collect();
        let total = store.list().await.map_err(fail)?.len();
        text += &format!(
            "certificates: {total} stored, {} picked by the next cycle (at most {}), {}{} passed \
             over at the attempt limit ({})\n",
            due.len(),
            policy.per_cycle,
            given_up.len(),
            if every.len() == SCAN { "+" } else { "" },
            policy.max_attempts
        );
        for entry in due.iter().take(SHOWN) {
            text += &format!(
                "  due: {} (renew date {}, {} failed attempts)\n",
                entry.domain,
                date(Some(entry.renew_date)),
                entry.attempts
            );
        }
        if due.len() > SHOWN {
            text += &format!("  ... and {} more due\n", due.len() - SHOWN);
        }
        for domain in given_up.iter().take(SHOWN) {
            text +=
                &format!("  passed over: {domain} (only `certkeeper issue {domain}` retries it)\n");
        }
        if given_up.len() > SHOWN {
            text += &format!("  ... and {} more passed over\n", given_up.len() - SHOWN);
        }
        report["certificates"] = json!(total);
        report["due"] = due.iter().map(|e| json!(e.domain.as_str())).collect();
        report["passed_over"] = json!(given_up);
    }
    Ok(Output { json: report, text })
}
