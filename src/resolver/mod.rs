//! Serving certificates by SNI with rustls: [`CertResolver`].
//!
//! - `table.rs`: the known names, in shards swapped atomically (no lock on
//!   the handshake path).
//! - `cache.rs`: loading a stored certificate on first use, the bounded
//!   cache, the [`CertSource`] it loads from.
//! - `fallback.rs`: the self-signed certificate for everything else.
//! - `alpn.rs`: TLS-ALPN-01 challenge certificates for `acme-tls/1`.

mod alpn;
mod cache;
mod fallback;
mod table;

pub use cache::{CertSource, SourcedCert};

pub(crate) use alpn::ACME_TLS_1;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::cert::chain_der;
use crate::error::CertProblem;
use crate::{Domain, Error, Result};
use alpn::{offers_acme_tls, AlpnChallenges};
use cache::{Cache, Loader};
use fallback::SelfSignedFallback;
use table::{Slot, Table};

/// A certificate chain (PEM) and its PKCS#8 PEM key, parsed and checked
/// against each other; errors name `domain`, never the key bytes.
fn certified_key(domain: &Domain, chain_pem: &str, key_pem: &[u8]) -> Result<CertifiedKey> {
    let chain = chain_der(chain_pem).map_err(|e| match e {
        Error::Certificate {
            problem, source, ..
        } => Error::Certificate {
            domain: Some(domain.clone()),
            problem,
            source,
        },
        other => other,
    })?;
    // The PEM decoder's error could quote key bytes: keep only the kind.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| Error::certificate_problem(Some(domain), CertProblem::BadKey))?;
    certified_der(domain, chain, key)
}

/// A DER chain and key, checked against each other.
fn certified_der(
    domain: &Domain,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey> {
    let certified = CertifiedKey::new(chain, signing_key(domain, key)?);
    certified
        .keys_match()
        .map_err(|e| Error::certificate(Some(domain), CertProblem::KeyMismatch, e))?;
    Ok(certified)
}

/// A private key, ready to sign handshakes.
fn signing_key(
    domain: &Domain,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<dyn rustls::sign::SigningKey>> {
    crate::provider::signing_key(key)
        .map_err(|e| Error::certificate(Some(domain), CertProblem::UnsupportedKey, e))
}

/// Picks the certificate for a TLS handshake by its server name (SNI).
///
/// # What a handshake gets
/// 1. The certificate of the exact name, else the one of a wildcard
///    covering it (`*.example.com` covers `a.example.com`, not
///    `example.com` nor `a.b.example.com`): an exact name wins over a
///    wildcard.
/// 2. A handshake without SNI (a client connecting to an IP address sends
///    none) accepted through [`accept_at`](Self::accept_at) or a
///    [`TlsListener`](crate::serve::TlsListener): the certificate of the
///    local address the connection arrived on (`203.0.113.7`, `::1`), when
///    there is one.
/// 3. Otherwise (no SNI, an unknown name, a local name without a
///    certificate, a stored certificate not loaded yet): the fallback
///    domain's certificate ([`set_fallback`](Self::set_fallback), the main
///    domain) when it is loaded, else a self-signed certificate made once,
///    on first need, for the fallback name (or `localhost`), so a browser
///    shows a warning its user can pass instead of a failed handshake.
/// 4. A handshake offering the `acme-tls/1` protocol gets the TLS-ALPN-01
///    challenge certificate of its name, or fails; only such a handshake.
///
/// # No lock on the handshake path
/// Names live in shards of immutable maps swapped atomically
/// ([`arc_swap`]); a certificate is swapped in place in its name's slot.
/// A handshake never waits for a writer, and a writer (an insertion, a
/// renewal, a removal) never waits for handshakes.
///
/// # Loading on first use
/// With a [`CertSource`] ([`set_source`](Self::set_source); a
/// [`Renewer`](crate::Renewer) gives its vault),
/// [`Renewer::load`](crate::Renewer::load) only tells the resolver which
/// names are stored ([`set_stored`](Self::set_stored)), so a server
/// starts in a time that does not grow with its certificates. A name's
/// certificate is loaded on its first handshake: that handshake, which
/// must not wait for the store, gets the fallback while the certificate
/// loads in the background, and the next one gets it. Meanwhile a
/// background preload loads the stored certificates, up to the capacity,
/// so names seen soon after start are ready. A server that wants no
/// handshake to see the fallback for a stored name accepts its connections
/// through [`accept`](Self::accept), which waits (at most 3 s) for the
/// name's certificate before answering.
///
/// At most [`capacity`](Self::with_capacity) certificates from the source
/// stay in memory (10,000 by default); past it, the least recently served
/// are dropped and loaded again when next needed. Certificates given with
/// [`insert_pem`](Self::insert_pem) are kept until removed. The same chain
/// and key stored under several names are parsed once and shared.
///
/// Certificates are swapped in place, so a renewed certificate is served
/// from the next handshake on without a restart, and the old one until
/// then. Clones share everything.
#[derive(Clone)]
pub struct CertResolver {
    inner: Arc<Shared>,
}

/// What every clone of a resolver shares.
struct Shared {
    table: Table,
    fallback: ArcSwapOption<Domain>,
    self_signed: SelfSignedFallback,
    source: RwLock<Option<Arc<dyn CertSource>>>,
    has_source: AtomicBool,
    loader: OnceLock<Loader>,
    cache: Cache,
    challenges: AlpnChallenges,
    started: Instant,
    /// Where a handshake for a name with nothing to serve is reported
    /// (the renewer's on-demand issuance), without waiting.
    on_miss: ArcSwapOption<tokio::sync::mpsc::Sender<Box<str>>>,
}

impl Shared {
    fn source(&self) -> Option<Arc<dyn CertSource>> {
        self.source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Default for CertResolver {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

/// The longest [`CertResolver::accept`] waits for a certificate to load.
const ACCEPT_LOAD_LIMIT: Duration = Duration::from_secs(3);

impl CertResolver {
    /// How many certificates from the source stay in memory by default.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty resolver keeping at most `capacity` certificates loaded from
    /// its source in memory (at least 1). Certificates given with
    /// [`insert_pem`](Self::insert_pem) do not count.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Shared {
                table: Table::default(),
                fallback: ArcSwapOption::empty(),
                self_signed: SelfSignedFallback::default(),
                source: RwLock::new(None),
                has_source: AtomicBool::new(false),
                loader: OnceLock::new(),
                cache: Cache::new(capacity),
                challenges: AlpnChallenges::default(),
                started: Instant::now(),
                on_miss: ArcSwapOption::empty(),
            }),
        }
    }

    /// Loads (or replaces) the certificate for `domain` (an exact name or a
    /// wildcard such as `*.example.com`) from its PEM chain and its PKCS#8
    /// PEM private key. Kept until [`remove`](Self::remove)d, whatever the
    /// capacity.
    pub fn insert_pem(&self, domain: &Domain, chain_pem: &str, key_pem: &[u8]) -> Result<()> {
        self.insert(domain, chain_pem, key_pem, true)
    }

    /// Serves a certificate just stored for `domain` (issued, renewed, or
    /// stored by another instance): it replaces the one in memory and, like
    /// a loaded one, counts towards the capacity.
    pub(crate) fn insert_stored(
        &self,
        domain: &Domain,
        chain_pem: &str,
        key_pem: &[u8],
    ) -> Result<()> {
        self.insert(domain, chain_pem, key_pem, false)
    }

    fn insert(&self, domain: &Domain, chain_pem: &str, key_pem: &[u8], pin: bool) -> Result<()> {
        let key = self.inner.cache.certified(domain, chain_pem, key_pem)?;
        let slot = self.inner.table.get_or_add(domain);
        {
            let _writer = slot.write.lock().unwrap_or_else(|e| e.into_inner());
            if pin {
                slot.pinned.store(true, Ordering::Relaxed);
            }
            slot.changed();
            slot.cert.store(Some(key));
        }
        self.inner.cache.admit(&slot);
        Ok(())
    }

    /// Stops serving `domain`; `true` if it was known.
    pub fn remove(&self, domain: &Domain) -> bool {
        self.inner.table.remove(domain).is_some()
    }

    /// Whether `domain` (an exact name or a wildcard) has a certificate to
    /// serve: loaded, or stored and not loaded yet.
    pub fn serves(&self, domain: &Domain) -> bool {
        self.inner
            .table
            .get(domain)
            .is_some_and(|slot| slot.may_serve())
    }

    /// Serves `domain`'s certificate, when it has one, to handshakes
    /// without SNI or for unknown names, instead of the self-signed
    /// fallback, and names that self-signed certificate after it.
    pub fn set_fallback(&self, domain: Option<Domain>) {
        self.inner.fallback.store(domain.map(Arc::new));
    }

    /// The domains with a certificate to serve (see [`serves`](Self::serves)), sorted.
    pub fn domains(&self) -> Vec<Domain> {
        let mut domains: Vec<Domain> = self
            .inner
            .table
            .slots()
            .into_iter()
            .filter(|slot| slot.may_serve())
            .map(|slot| slot.domain.clone())
            .collect();
        domains.sort();
        domains
    }

    /// How many certificates loaded from the source are in memory (at most
    /// the capacity, give or take one eviction sweep).
    pub fn cached(&self) -> usize {
        self.inner.cache.len()
    }

    /// The certificate served for `server_name` (`None`: no SNI), as a
    /// handshake without `acme-tls/1` gets it. A stored certificate that is
    /// not loaded is queued for loading, and the fallback returned
    /// meanwhile. `None` only when no fallback could be made.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            if let Some(found) = self.by_name(name) {
                return Some(found);
            }
            self.report_miss(name);
        }
        self.fallback()
    }

    /// Reports `name` to the on-demand sink, when there is one and the
    /// name has nothing stored to serve (a stored certificate that is
    /// loading is not a miss). Never waits: a full queue drops the report,
    /// and a later handshake reports the name again.
    fn report_miss(&self, name: &str) {
        let Some(sink) = self.inner.on_miss.load_full() else {
            return;
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let table = &self.inner.table;
        if table.exact(&name).is_some_and(|slot| slot.may_serve()) {
            return;
        }
        if let Some((label, base)) = name.split_once('.') {
            if !label.is_empty() && table.wildcard(base).is_some_and(|slot| slot.may_serve()) {
                return;
            }
        }
        let _ = sink.try_send(name.into_boxed_str());
    }

    /// Sends the names of handshakes that found nothing stored to serve
    /// (see [`lookup`](Self::lookup)) to `sink`, with `try_send`: the
    /// handshake never waits for it.
    pub(crate) fn report_misses_to(&self, sink: tokio::sync::mpsc::Sender<Box<str>>) {
        self.inner.on_miss.store(Some(Arc::new(sink)));
    }

    /// The loaded certificate of `name` (exact, else wildcard), queueing
    /// the load of a known one that is not loaded.
    fn by_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let table = &self.inner.table;
        // Known names are normalised (lowercase, no trailing dot); a SNI
        // name is matched as sent, then lowercased, without parsing it again.
        let name = name.strip_suffix('.').unwrap_or(name);
        let lowered;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        if let Some(slot) = table.exact(name) {
            if let Some(key) = self.served(&slot) {
                return Some(key);
            }
        }
        let (label, base) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        table.wildcard(base).and_then(|slot| self.served(&slot))
    }

    /// `slot`'s certificate if loaded; else its load is queued.
    fn served(&self, slot: &Arc<Slot>) -> Option<Arc<CertifiedKey>> {
        match slot.cert.load_full() {
            Some(key) => {
                self.inner.cache.touch(slot);
                Some(key)
            }
            None => {
                self.queue_load(slot);
                None
            }
        }
    }

    /// What a handshake gets when its name has nothing loaded.
    fn fallback(&self) -> Option<Arc<CertifiedKey>> {
        #[cfg(feature = "metrics")]
        metrics::counter!(crate::events::metrics::FALLBACK_HANDSHAKES).increment(1);
        let fallback = self.inner.fallback.load_full();
        if let Some(domain) = &fallback {
            if let Some(key) = self.inner.table.get(domain).and_then(|s| self.served(&s)) {
                return Some(key);
            }
        }
        static LOCALHOST: OnceLock<Option<Domain>> = OnceLock::new();
        let name = match &fallback {
            Some(domain) => domain,
            None => LOCALHOST
                .get_or_init(|| Domain::new("localhost").ok())
                .as_ref()?,
        };
        match self.inner.self_signed.get(name) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(%name, error = %e, "no self-signed fallback certificate could be made");
                None
            }
        }
    }

    /// Queues the background load of `slot` (once, and not before a failed
    /// load may be retried). Never waits: a send on an unbounded queue.
    fn queue_load(&self, slot: &Arc<Slot>) {
        let shared = &self.inner;
        if !shared.has_source.load(Ordering::Acquire)
            || shared.now_ms() < slot.retry_at.load(Ordering::Relaxed)
            || slot.queued.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let queued = self
            .loader()
            .is_some_and(|loader| loader.miss(slot.clone()));
        if !queued {
            slot.queued.store(false, Ordering::Release);
        }
    }

    /// The background loader, started on first need when a Tokio runtime
    /// is running; `None` outside one.
    fn loader(&self) -> Option<&Loader> {
        if let Some(loader) = self.inner.loader.get() {
            return Some(loader);
        }
        tokio::runtime::Handle::try_current().ok()?;
        let _ = self
            .inner
            .loader
            .set(Loader::spawn(Arc::downgrade(&self.inner)));
        self.inner.loader.get()
    }

    /// Where certificates of stored names are loaded from on first use
    /// (see the type's docs). A [`Renewer`](crate::Renewer) built with this
    /// resolver sets its vault.
    pub fn set_source(&self, source: Arc<dyn CertSource>) {
        *self.inner.source.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
        self.inner.has_source.store(true, Ordering::Release);
    }

    /// Makes `domains` the names the source holds, loaded on first use
    /// (names known before keep what they loaded; names no longer listed
    /// are dropped, except those given with [`insert_pem`](Self::insert_pem)).
    /// Costs a few hundred nanoseconds a name: no certificate is read.
    pub fn set_stored(&self, domains: &[Domain]) {
        self.inner.table.replace(domains);
    }

    /// Loads, in the background, the certificates of known names that are
    /// not loaded yet, in name order, until the cache is full; handshakes
    /// that miss go first. Needs a Tokio runtime and a source; does nothing
    /// otherwise.
    pub fn preload(&self) {
        if !self.inner.has_source.load(Ordering::Acquire) {
            return;
        }
        let Some(loader) = self.loader() else {
            return;
        };
        let room = self
            .inner
            .cache
            .capacity
            .saturating_sub(self.inner.cache.len());
        let mut slots = self.inner.table.slots();
        slots.sort_by(|a, b| a.domain.cmp(&b.domain));
        let mut queued = 0;
        for slot in slots {
            if queued >= room {
                break;
            }
            if slot.cert.load().is_some()
                || slot.pinned.load(Ordering::Relaxed)
                || slot.queued.swap(true, Ordering::AcqRel)
            {
                continue;
            }
            if !loader.preload(slot) {
                break;
            }
            queued += 1;
        }
    }

    /// Makes sure the certificate a handshake for `server_name` would get
    /// is loaded: the name's own (or its wildcard's), else the fallback
    /// domain's, read from the source now if needed. Returns whether a
    /// stored or inserted certificate (not the self-signed one) is ready.
    /// [`accept`](Self::accept) calls it before answering a client.
    pub async fn prepare(&self, server_name: Option<&str>) -> bool {
        let table = &self.inner.table;
        let mut candidates = Vec::with_capacity(3);
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            candidates.extend(table.exact(&name));
            if let Some((label, base)) = name.split_once('.') {
                if !label.is_empty() {
                    candidates.extend(table.wildcard(base));
                }
            }
        }
        if let Some(fallback) = self.inner.fallback.load_full() {
            candidates.extend(table.get(&fallback));
        }
        for slot in candidates {
            if self.inner.load(&slot).await {
                return true;
            }
        }
        false
    }

    /// Accepts a TLS connection on `io` with `config` (from
    /// [`server_config`](Self::server_config)), first reading the client's
    /// hello and loading its name's certificate if needed (at most 3 s), so
    /// that no client of a stored name gets the fallback because its
    /// certificate was not in memory yet.
    ///
    /// The local address of `io` is not known here, so a client without
    /// SNI gets the fallback: accept a TCP connection with
    /// [`accept_at`](Self::accept_at) to serve it the certificate of the
    /// address it connected to.
    pub async fn accept<IO>(
        &self,
        config: Arc<rustls::ServerConfig>,
        io: IO,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_at(config, io, None).await
    }

    /// [`accept`](Self::accept) for a connection that arrived on
    /// `local_addr` (the TCP stream's
    /// [`local_addr`](tokio::net::TcpStream::local_addr)): a client that
    /// sends no SNI, as a client connecting to an IP address does, gets the
    /// certificate stored or inserted for that address (an IPv4 address
    /// mapped into IPv6, as a listener on `[::]` sees IPv4 clients, counts
    /// as the IPv4 address), loaded first if needed; without one, the
    /// fallback. A client sending SNI is served by its name as by
    /// [`accept`](Self::accept).
    ///
    /// ```no_run
    /// # use certkeeper::CertResolver;
    /// # async fn serve(resolver: CertResolver) -> std::io::Result<()> {
    /// let config = resolver.server_config(&[b"http/1.1"]).unwrap();
    /// let listener = tokio::net::TcpListener::bind("[::]:443").await?;
    /// loop {
    ///     let (tcp, _) = listener.accept().await?;
    ///     let local = tcp.local_addr().ok().map(|addr| addr.ip());
    ///     let (resolver, config) = (resolver.clone(), config.clone());
    ///     tokio::spawn(async move {
    ///         if let Ok(tls) = resolver.accept_at(config, tcp, local).await {
    ///             // serve HTTP over `tls`
    ///             # drop(tls);
    ///         }
    ///     });
    /// }
    /// # }
    /// ```
    pub async fn accept_at<IO>(
        &self,
        config: Arc<rustls::ServerConfig>,
        io: IO,
        local_addr: Option<IpAddr>,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = tokio_rustls::LazyConfigAcceptor::new(Acceptor::default(), io).await?;
        let hello = start.client_hello();
        if offers_acme_tls(hello.alpn()) {
            return start.into_stream(config).await;
        }
        let name = hello.server_name().map(str::to_owned);
        let address = match (&name, local_addr) {
            (None, Some(ip)) => Some(ip.to_canonical().to_string()),
            _ => None,
        };
        let wanted = name.as_deref().or(address.as_deref());
        let _ = tokio::time::timeout(ACCEPT_LOAD_LIMIT, self.prepare(wanted)).await;
        // Only a client without SNI, on an address with a certificate, gets
        // a configuration of its own; every other handshake resolves
        // through `config` as before.
        let config = match address.as_deref().and_then(|a| self.by_address(a)) {
            Some(key) => {
                let mut own = (*config).clone();
                own.cert_resolver = Arc::new(Chosen(key));
                Arc::new(own)
            }
            None => config,
        };
        start.into_stream(config).await
    }

    /// The loaded certificate of an IP address (canonical text), queueing
    /// its load when it is known and not loaded.
    fn by_address(&self, address: &str) -> Option<Arc<CertifiedKey>> {
        self.inner
            .table
            .exact(address)
            .and_then(|slot| self.served(&slot))
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, ring) that resolves
    /// through this resolver, offering the application protocols (ALPN)
    /// your server speaks, in order of preference: `&[b"http/1.1"]` for an
    /// HTTP/1.1 server, `&[b"h2", b"http/1.1"]` when it also speaks HTTP/2.
    /// Offering a protocol the server does not speak breaks clients that
    /// pick it.
    ///
    /// With a TLS-ALPN-01 solver attached (made before this call),
    /// `acme-tls/1` is offered too: rustls picks the first of the server's
    /// protocols that the client offers, and only the CA's validator offers
    /// `acme-tls/1`, so other clients negotiate as before. An empty list
    /// is then refused ([`Error::Config`]): a server that names no protocol
    /// would turn away every client offering one.
    pub fn server_config(&self, alpn_protocols: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(crate::provider::provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Tls { source })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = Vec::with_capacity(alpn_protocols.len() + 1);
        if self.inner.challenges.is_enabled() {
            if alpn_protocols.is_empty() {
                return Err(Error::config(
                    "alpn_protocols",
                    "a TLS-ALPN-01 solver is attached, so acme-tls/1 is offered: name the \
                     protocols the server speaks too (http/1.1 ...), or clients offering \
                     them are refused",
                ));
            }
            config.alpn_protocols.push(ACME_TLS_1.to_vec());
        }
        config
            .alpn_protocols
            .extend(alpn_protocols.iter().map(|p| p.to_vec()));
        Ok(Arc::new(config))
    }

    /// Attaches a TLS-ALPN-01 solver: [`server_config`](Self::server_config)
    /// offers `acme-tls/1` from now on.
    pub(crate) fn enable_tls_alpn01(&self) {
        self.inner.challenges.enabled.store(true, Ordering::Release);
    }

    /// Serves `cert_der` with `key_der` to `acme-tls/1` handshakes for
    /// `server_name`, answering `token`.
    pub(crate) fn present_tls_alpn01(
        &self,
        domain: &Domain,
        server_name: &str,
        token: &str,
        cert_der: CertificateDer<'static>,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<()> {
        // Not checked with `keys_match`: the certificate parser refuses its
        // critical acmeIdentifier extension, and the key was made for it.
        let key = CertifiedKey::new(vec![cert_der], signing_key(domain, key_der)?);
        self.inner
            .challenges
            .present(server_name, token, Arc::new(key));
        Ok(())
    }

    /// Withdraws the challenge certificate of `server_name` answering `token`.
    pub(crate) fn clear_tls_alpn01(&self, server_name: &str, token: &str) {
        self.inner.challenges.clear(server_name, token);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if offers_acme_tls(client_hello.alpn()) {
            return self.inner.challenges.get(client_hello.server_name()?);
        }
        self.lookup(client_hello.server_name())
    }
}

/// The certificate picked for one connection before its handshake (by
/// the local address of a client without SNI).
struct Chosen(Arc<CertifiedKey>);

impl fmt::Debug for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Chosen(..)")
    }
}

impl ResolvesServerCert for Chosen {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("domains", &self.inner.table.len())
            .field("cached", &self.inner.cache.len())
            .field("capacity", &self.inner.cache.capacity)
            .field("fallback", &self.inner.fallback.load_full())
            .field("tls_alpn01_challenges", &self.inner.challenges.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
