//! The maintenance cycle: which certificates to (re)issue, and doing it.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::cipher::{cert_key_aad, SecretCipher};
use crate::clock::{Clock, SystemClock};
use crate::domain::DomainPolicy;
use crate::issuer::{IssuedCert, Issuer, SelfSignedIssuer};
use crate::resolver::CertResolver;
use crate::store::{CertRecord, CertStore, LogEntry, StoredCert};
use crate::{Domain, Error, Result};

/// The date rules of the maintenance cycle.
///
/// The defaults are the reference platform's: renew 30 days before expiry,
/// at most 200 certificates a cycle, give up after 5 failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// How long before `not_after` renewal starts (30 days).
    pub renew_before: Duration,
    /// Failed attempts after which the cycle stops picking a certificate (5).
    pub max_attempts: u32,
    /// Most certificates one cycle issues (200), to stay inside the CA's rate limits.
    pub per_cycle: usize,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            renew_before: Duration::days(30),
            max_attempts: 5,
            per_cycle: 200,
        }
    }
}

impl RenewalPolicy {
    /// When a certificate valid from `not_before` to `not_after` should be
    /// renewed: `renew_before` ahead of expiry, but the window is never more
    /// than a third of the lifetime, so a 90-day certificate renews 30 days
    /// before expiry and a 6-day one after 4 days.
    ///
    /// The lifetime is rounded up to whole minutes first (CAs commonly end
    /// validity one second short of whole days), and the renew date is kept
    /// to whole seconds.
    pub fn renew_date(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> OffsetDateTime {
        let lifetime = (not_after - not_before).max(Duration::ZERO);
        let minutes = lifetime.whole_seconds().saturating_add(59).div_euclid(60);
        let window = self
            .renew_before
            .max(Duration::ZERO)
            .min(Duration::minutes(minutes) / 3);
        // Dates near the end of the representable range must not panic.
        let date = not_after.checked_sub(window).unwrap_or(not_after);
        date.replace_nanosecond(0).unwrap_or(date)
    }

    /// Applies a successful issuance to `record`: new certificate, attempts
    /// reset, issue date now, renew date from the new validity.
    pub fn on_success(
        &self,
        record: &mut CertRecord,
        cert: StoredCert,
        now: OffsetDateTime,
        step: &str,
    ) {
        record.renew_date = self.renew_date(cert.not_before, cert.not_after);
        record.issue_date = Some(now);
        record.attempts = 0;
        record.push_log(LogEntry {
            time: now,
            step: step.to_string(),
            success: true,
            message: format!(
                "issued by {:?}, valid until {}, renew from {}, sha256 {}",
                cert.issuer,
                rfc3339(cert.not_after),
                rfc3339(record.renew_date),
                cert.fingerprint
            ),
        });
        record.certificate = Some(cert);
    }

    /// Applies a failed attempt: attempts + 1 and renew date now, so the next
    /// cycle tries again until `max_attempts`. The certificate in force (if
    /// any) is kept and still served.
    pub fn on_failure(
        &self,
        record: &mut CertRecord,
        error: &Error,
        now: OffsetDateTime,
        step: &str,
    ) {
        record.attempts = record.attempts.saturating_add(1);
        record.renew_date = now;
        record.push_log(LogEntry {
            time: now,
            step: step.to_string(),
            success: false,
            message: format!("attempt {}: {error}", record.attempts),
        });
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// What one maintenance cycle did.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    /// Certificates issued and stored.
    pub issued: Vec<Domain>,
    /// Certificates whose attempt failed, with the reason.
    pub failed: Vec<(Domain, String)>,
    /// Certificates picked but left alone (already being issued, or no longer due).
    pub skipped: Vec<(Domain, String)>,
}

impl fmt::Display for CycleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} issued, {} failed, {} skipped",
            self.issued.len(),
            self.failed.len(),
            self.skipped.len()
        )
    }
}

/// Keeps certificates issued and renewed.
///
/// Composes a [`CertStore`], an ACME [`Issuer`] (for public names in
/// production), a self-signed issuer (local names, development), a
/// [`SecretCipher`] that seals private keys before they reach the store, a
/// [`DomainPolicy`] and a [`Clock`]. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Renewer {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn CertStore>,
    acme: Option<Arc<dyn Issuer>>,
    self_signed: Arc<dyn Issuer>,
    cipher: Arc<dyn SecretCipher>,
    policy: DomainPolicy,
    clock: Arc<dyn Clock>,
    renewal: RenewalPolicy,
    concurrency: usize,
    issue_timeout: StdDuration,
    production: bool,
    resolver: Option<CertResolver>,
    in_flight: Mutex<HashSet<Domain>>,
    /// One cycle at a time per renewer, so two never pick the same records.
    cycle: tokio::sync::Mutex<()>,
    /// Wakes [`Renewer::run`] early when a domain is added.
    wake: Notify,
}

impl fmt::Debug for Renewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Renewer")
            .field("store", &i.store)
            .field("acme", &i.acme)
            .field("cipher", &i.cipher)
            .field("policy", &i.policy)
            .field("renewal", &i.renewal)
            .field("concurrency", &i.concurrency)
            .field("production", &i.production)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Renewer`].
#[derive(Debug)]
pub struct RenewerBuilder {
    store: Arc<dyn CertStore>,
    cipher: Arc<dyn SecretCipher>,
    acme: Option<Arc<dyn Issuer>>,
    self_signed: Option<Arc<dyn Issuer>>,
    main_domain: Option<Domain>,
    clock: Arc<dyn Clock>,
    renewal: RenewalPolicy,
    concurrency: usize,
    issue_timeout: StdDuration,
    production: bool,
    resolver: Option<CertResolver>,
}

impl RenewerBuilder {
    /// The ACME issuer for public names (in production). Without one, a
    /// public name in production fails with [`Error::Config`].
    pub fn acme(mut self, issuer: Arc<dyn Issuer>) -> Self {
        self.acme = Some(issuer);
        self
    }

    /// Replaces the self-signed issuer (default: [`SelfSignedIssuer`] on the renewer's clock).
    pub fn self_signed(mut self, issuer: Arc<dyn Issuer>) -> Self {
        self.self_signed = Some(issuer);
        self
    }

    /// The main domain (`_APP_DOMAIN`); unset or `localhost` means it is learned.
    pub fn main_domain(mut self, domain: Option<Domain>) -> Self {
        self.main_domain = domain;
        self
    }

    /// The clock for every date decision (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The date rules (default: [`RenewalPolicy::default`]).
    pub fn renewal_policy(mut self, policy: RenewalPolicy) -> Self {
        self.renewal = policy;
        self
    }

    /// How many certificates a cycle issues at once (default 8, at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The longest one issuance may take before it counts as a failed
    /// attempt (default 10 minutes). The ACME issuer also bounds each call
    /// to the CA; this bounds any issuer.
    pub fn issue_timeout(mut self, timeout: StdDuration) -> Self {
        self.issue_timeout = timeout;
        self
    }

    /// Production mode (`_APP_ENV=production`, the default): public names
    /// go to the ACME issuer. Otherwise every name gets a self-signed certificate.
    pub fn production(mut self, production: bool) -> Self {
        self.production = production;
        self
    }

    /// A TLS resolver to update whenever a certificate is stored.
    pub fn resolver(mut self, resolver: CertResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Builds the renewer.
    pub fn build(self) -> Renewer {
        let self_signed = self
            .self_signed
            .unwrap_or_else(|| Arc::new(SelfSignedIssuer::with_clock(self.clock.clone())));
        Renewer {
            inner: Arc::new(Inner {
                policy: DomainPolicy::new(self.main_domain, self.store.clone()),
                store: self.store,
                acme: self.acme,
                self_signed,
                cipher: self.cipher,
                clock: self.clock,
                renewal: self.renewal,
                concurrency: self.concurrency,
                issue_timeout: self.issue_timeout,
                production: self.production,
                resolver: self.resolver,
                in_flight: Mutex::default(),
                cycle: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
            }),
        }
    }
}

/// Releases a domain's in-process lease when the issuance ends, however it ends.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<Domain>>,
    domain: Domain,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.domain);
    }
}

impl Renewer {
    /// Starts building a renewer over `store`, sealing keys with `cipher`.
    pub fn builder(store: Arc<dyn CertStore>, cipher: Arc<dyn SecretCipher>) -> RenewerBuilder {
        RenewerBuilder {
            store,
            cipher,
            acme: None,
            self_signed: None,
            main_domain: None,
            clock: Arc::new(SystemClock),
            renewal: RenewalPolicy::default(),
            concurrency: 8,
            issue_timeout: StdDuration::from_secs(600),
            production: true,
            resolver: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CertStore> {
        &self.inner.store
    }

    /// The domain policy (main and custom domains).
    pub fn policy(&self) -> &DomainPolicy {
        &self.inner.policy
    }

    /// The date rules in force.
    pub fn renewal_policy(&self) -> RenewalPolicy {
        self.inner.renewal
    }

    /// Loads the stored certificates into the resolver (when there is one)
    /// and sets the main domain's certificate as its fallback. Call once at
    /// start-up. A record that cannot be read is logged and skipped, so one
    /// damaged record never stops a server from starting. Returns how many
    /// certificates were loaded.
    pub async fn load(&self) -> Result<usize> {
        let domains = self.inner.store.list().await?;
        let mut loaded = 0;
        if let Some(resolver) = &self.inner.resolver {
            for domain in &domains {
                match self.inner.store.load(domain).await {
                    Ok(Some(record)) if self.publish(&record, resolver) => loaded += 1,
                    Ok(_) => {}
                    Err(e) => warn!(%domain, error = %e, "stored record skipped"),
                }
            }
            if let Some(main) = self.inner.policy.main_domain().await? {
                resolver.set_fallback(Some(main));
            }
        } else {
            loaded = domains.len();
        }
        Ok(loaded)
    }

    /// Adds a custom domain the operator owns: stores a record for it, due
    /// now, unless the store already has one, and wakes [`run`](Self::run)
    /// so the certificate is issued without waiting for the next interval.
    /// Every instance sharing the store sees the domain from then on.
    pub async fn add_domain(&self, domain: &Domain) -> Result<()> {
        self.ensure_record(domain).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Removes a custom domain and its stored certificate; `true` if stored.
    pub async fn remove_domain(&self, domain: &Domain) -> Result<bool> {
        if let Some(resolver) = &self.inner.resolver {
            resolver.remove(domain);
        }
        self.inner.store.delete(domain).await
    }

    /// Tells the renewer a request arrived for `domain` (for example the
    /// `Host` of an HTTP request or a TLS handshake's server name). With a
    /// learned main domain (`_APP_DOMAIN` unset or `localhost`), the first
    /// public domain seen becomes the main domain: it is remembered in the
    /// store, registered, served as the resolver's fallback, and
    /// [`run`](Self::run) is woken to issue it. Returns whether `domain` may
    /// get a certificate.
    ///
    /// Cheap for the usual request: a domain the resolver already serves,
    /// or the known main domain, is answered from memory.
    pub async fn observe(&self, domain: &Domain) -> Result<bool> {
        if let Some(resolver) = &self.inner.resolver {
            if resolver.serves(domain) {
                return Ok(true);
            }
        }
        let policy = &self.inner.policy;
        let before = policy.main_domain().await?;
        if before.as_ref() == Some(domain) {
            return Ok(true);
        }
        let unknown = before.as_ref().is_none_or(|d| d.as_str() == "localhost");
        if policy.learns_main_domain() && unknown {
            let main = policy.observe(domain).await?;
            if main.as_ref() == Some(domain) {
                self.ensure_record(domain).await?;
                if let Some(resolver) = &self.inner.resolver {
                    resolver.set_fallback(Some(domain.clone()));
                }
                self.inner.wake.notify_one();
                return Ok(true);
            }
        }
        Ok(policy.check(domain).await.is_ok())
    }

    async fn ensure_record(&self, domain: &Domain) -> Result<CertRecord> {
        let store = &self.inner.store;
        if let Some(record) = store.load(domain).await? {
            return Ok(record);
        }
        let mut record = CertRecord::new(domain.clone(), self.inner.clock.now());
        match store.save(&record).await {
            Ok(version) => {
                record.version = version;
                info!(%domain, "domain registered for the next maintenance cycle");
                Ok(record)
            }
            // Someone registered it first: theirs is as good.
            Err(Error::Conflict { .. }) => store
                .load(domain)
                .await?
                .ok_or_else(|| Error::NotFound(domain.to_string())),
            Err(e) => Err(e),
        }
    }

    /// One maintenance cycle: takes up to `per_cycle` due certificates with
    /// fewer than `max_attempts` failures, oldest renew date first, and
    /// issues them with bounded concurrency. A failure is recorded on its
    /// certificate (attempts + 1, renew date now, a log line) and the cycle
    /// goes on; only a failure of the store itself to list what is due is an
    /// error of the cycle.
    ///
    /// Cycles of one renewer run one at a time; a second call waits for the
    /// first to finish.
    pub async fn run_cycle(&self) -> Result<CycleReport> {
        let _one_at_a_time = self.inner.cycle.lock().await;
        let now = self.inner.clock.now();
        let renewal = self.inner.renewal;
        let due = self
            .inner
            .store
            .due(now, renewal.max_attempts, renewal.per_cycle)
            .await?;
        info!(due = due.len(), "maintenance cycle started");
        let mut report = CycleReport::default();
        let semaphore = Arc::new(Semaphore::new(self.inner.concurrency));
        let mut tasks = JoinSet::new();
        for record in due {
            let this = self.clone();
            let semaphore = semaphore.clone();
            let span = tracing::info_span!("renew", domain = %record.domain);
            tasks.spawn(
                async move {
                    let _permit = semaphore.acquire_owned().await;
                    let domain = record.domain.clone();
                    let outcome = this.renew_one(domain.clone(), false).await;
                    (domain, outcome)
                }
                .instrument(span),
            );
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((domain, Outcome::Issued(_))) => report.issued.push(domain),
                Ok((domain, Outcome::Failed(e))) => report.failed.push((domain, e.to_string())),
                Ok((domain, Outcome::Skipped(reason))) => report.skipped.push((domain, reason)),
                Err(e) => warn!(error = %e, "renewal task ended abnormally"),
            }
        }
        report.issued.sort();
        report.failed.sort();
        report.skipped.sort();
        info!(%report, "maintenance cycle finished");
        Ok(report)
    }

    /// Runs a cycle now and then every `interval` (`_APP_MAINTENANCE_INTERVAL`)
    /// forever, and also soon after a domain is added or the main domain is
    /// learned. A cycle that fails as a whole (the store is down) is logged
    /// and retried at the next interval.
    pub async fn run(&self, interval: StdDuration) -> Result<()> {
        let mut ticker = tokio::time::interval(interval.max(StdDuration::from_secs(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.inner.wake.notified() => debug!("cycle woken by a new domain"),
            }
            if let Err(e) = self.run_cycle().await {
                warn!(error = %e, "maintenance cycle failed");
            }
        }
    }

    /// Manual generation: issues a certificate for `domain` (the main domain
    /// when `None`) now, whatever its renew date and however many attempts
    /// failed before. The domain must still be allowed by the policy.
    /// Returns the stored record, with its log; a failure is recorded on the
    /// record and returned as the error.
    pub async fn issue_now(&self, domain: Option<&Domain>) -> Result<CertRecord> {
        let domain = match domain {
            Some(d) => d.clone(),
            None => self.inner.policy.main_domain().await?.ok_or_else(|| {
                Error::config(
                    "_APP_DOMAIN",
                    "no main domain is set or learned yet; name a domain",
                )
            })?,
        };
        self.inner.policy.check(&domain).await?;
        self.ensure_record(&domain).await?;
        match self.renew_one(domain.clone(), true).await {
            Outcome::Issued(record) => Ok(*record),
            Outcome::Failed(error) => Err(error),
            Outcome::Skipped(reason) => Err(Error::InProgress {
                domain: domain.to_string(),
                reason,
            }),
        }
    }

    /// The stored certificate of `domain` with its private key opened, for
    /// serving. `None` when nothing was issued yet.
    pub async fn certificate(
        &self,
        domain: &Domain,
    ) -> Result<Option<(StoredCert, zeroize::Zeroizing<Vec<u8>>)>> {
        let Some(record) = self.inner.store.load(domain).await? else {
            return Ok(None);
        };
        let Some(cert) = record.certificate else {
            return Ok(None);
        };
        let key = self
            .inner
            .cipher
            .open(&cert.sealed_key, &cert_key_aad(domain))?;
        Ok(Some((cert, key)))
    }

    fn issuer_for(&self, domain: &Domain) -> Result<&Arc<dyn Issuer>> {
        if !self.inner.production || !domain.is_public() {
            return Ok(&self.inner.self_signed);
        }
        self.inner.acme.as_ref().ok_or_else(|| {
            Error::config(
                "_APP_SYSTEM_SECURITY_EMAIL_ADDRESS",
                format!(
                    "no ACME issuer configured (it needs a contact address), \
                     and the public name {domain} needs one in production"
                ),
            )
        })
    }

    /// Issues for `domain` under its in-process lease. The record is read
    /// again once the lease is held, so an issuance that another task (or
    /// instance) finished meanwhile is not repeated.
    async fn renew_one(&self, domain: Domain, manual: bool) -> Outcome {
        if !self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.clone())
        {
            debug!(%domain, "already being issued");
            return Outcome::Skipped("already being issued".into());
        }
        let _lease = InFlight {
            set: &self.inner.in_flight,
            domain: domain.clone(),
        };
        let record = match self.inner.store.load(&domain).await {
            Ok(Some(record)) => record,
            Ok(None) => return Outcome::Skipped("removed before it was issued".into()),
            Err(e) => return store_failed(&domain, e),
        };
        let renewal = self.inner.renewal;
        if !manual && !record.is_due(self.inner.clock.now(), renewal.max_attempts) {
            return Outcome::Skipped("no longer due".into());
        }
        let step = if manual {
            "manual"
        } else if record.certificate.is_some() {
            "renew"
        } else {
            "issue"
        };
        let read_fingerprint = fingerprint_of(&record);

        let result = self.issue_sealed(&domain).await;
        let now = self.inner.clock.now();
        // Compare-and-swap against the version read. On a lost race the
        // outcome is applied to the newer record, unless that one carries a
        // certificate stored by someone else meanwhile: theirs stands.
        let mut current = record;
        for _ in 0..3 {
            let mut next = current.clone();
            match &result {
                Ok(cert) => renewal.on_success(&mut next, cert.clone(), now, step),
                Err(e) => renewal.on_failure(&mut next, e, now, step),
            }
            match self.inner.store.save(&next).await {
                Ok(version) => {
                    next.version = version;
                    return match result {
                        Ok(_) => {
                            info!(%domain, renew_date = %rfc3339(next.renew_date), "certificate issued and stored");
                            if let Some(resolver) = &self.inner.resolver {
                                let _ = self.publish(&next, resolver);
                            }
                            Outcome::Issued(Box::new(next))
                        }
                        Err(e) => {
                            warn!(%domain, attempts = next.attempts, error = %e, "certificate attempt failed");
                            Outcome::Failed(e)
                        }
                    };
                }
                Err(Error::Conflict { .. }) => match self.inner.store.load(&domain).await {
                    Ok(Some(fresh)) if fingerprint_of(&fresh) != read_fingerprint => {
                        info!(%domain, "renewed elsewhere meanwhile; keeping that certificate");
                        return Outcome::Skipped("renewed elsewhere meanwhile".into());
                    }
                    Ok(Some(fresh)) => current = fresh,
                    Ok(None) => {
                        return Outcome::Skipped("removed while it was being issued".into())
                    }
                    Err(e) => return store_failed(&domain, e),
                },
                Err(e) => return store_failed(&domain, e),
            }
        }
        Outcome::Skipped("record kept changing while being stored".into())
    }

    async fn issue_sealed(&self, domain: &Domain) -> Result<StoredCert> {
        let issuer = self.issuer_for(domain)?;
        let timeout = self.inner.issue_timeout;
        let issued: IssuedCert = tokio::time::timeout(timeout, issuer.issue(domain))
            .await
            .map_err(|_| Error::Timeout {
                step: "issue",
                after: timeout,
            })??;
        // An issuer (a CA, or a user's own) that hands out a certificate that
        // is not valid now must not replace a working one.
        let now = self.inner.clock.now();
        if issued.not_after <= now || issued.not_before > now + Duration::minutes(5) {
            return Err(Error::Certificate(format!(
                "the issued certificate for {domain} is not valid now (valid from {} to {})",
                rfc3339(issued.not_before),
                rfc3339(issued.not_after)
            )));
        }
        let sealed_key = self
            .inner
            .cipher
            .seal(issued.key_pem.as_bytes(), &cert_key_aad(domain))?;
        Ok(StoredCert {
            chain_pem: issued.chain_pem,
            sealed_key,
            not_before: issued.not_before,
            not_after: issued.not_after,
            fingerprint: issued.fingerprint,
            issuer: issuer.kind(),
        })
    }

    /// Hands a stored certificate to the resolver; `false` if there is none
    /// or it cannot be used (logged).
    fn publish(&self, record: &CertRecord, resolver: &CertResolver) -> bool {
        let Some(cert) = &record.certificate else {
            return false;
        };
        let result = self
            .inner
            .cipher
            .open(&cert.sealed_key, &cert_key_aad(&record.domain))
            .and_then(|key| resolver.insert_pem(&record.domain, &cert.chain_pem, &key));
        if let Err(e) = &result {
            warn!(domain = %record.domain, error = %e, "stored certificate could not be loaded for serving");
        }
        result.is_ok()
    }
}

fn fingerprint_of(record: &CertRecord) -> Option<String> {
    record.certificate.as_ref().map(|c| c.fingerprint.clone())
}

fn store_failed(domain: &Domain, e: Error) -> Outcome {
    warn!(%domain, error = %e, "could not store the outcome of an attempt");
    Outcome::Failed(e)
}

enum Outcome {
    Issued(Box<CertRecord>),
    Failed(Error),
    Skipped(String),
}
