//! A real ACME CA for tests and benchmarks: Let's Encrypt's Pebble and its
//! `pebble-challtestsrv` DNS server (Debian's `pebble` package), started as
//! child processes on free ports and killed when the [`Pebble`] is dropped.
//!
//! Pebble really validates: for HTTP-01 it resolves the domain through
//! challtestsrv (every name resolves to 127.0.0.1 by default) and fetches
//! `http://<domain>:<http_port>/.well-known/acme-challenge/<token>`, so the
//! solver under test must listen on [`Pebble::http_port`]; for TLS-ALPN-01
//! it connects to the domain on [`Pebble::tls_port`] offering `acme-tls/1`.
//!
//! This file depends only on crates, not on the rest of `tests/common`, so a
//! benchmark or example can include it with `#[path = ...] mod pebble;`.
//! Setup failures panic with a message naming the binary and its log.
//!
//! Pebble's in-memory store deadlocks under many concurrent orders: keep at
//! most 16 orders in flight against one instance.
//!
//! Two versions: Debian 12's 2.4.0 (on PATH, the default) and Debian
//! unstable's 2.10.0 ([`PebbleVersion::V2_10`]: ARI, profiles, `replaces`),
//! which `scripts/test` unpacks into `target/pebble-2.10.0/`.

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the two servers get to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for one request to Pebble's management interface.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Start attempts when a picked port was taken meanwhile by someone else.
const START_ATTEMPTS: usize = 3;

/// How to run Pebble. `PebbleOptions::default()` is a plain CA that really
/// validates HTTP-01 on a free port.
#[derive(Clone, Debug)]
pub struct PebbleOptions {
    /// Names Pebble refuses to order for (`domainBlocklist`): a new order
    /// fails with `urn:ietf:params:acme:error:rejectedIdentifier`.
    pub domain_blocklist: Vec<String>,
    /// Percent of valid nonces Pebble rejects with `badNonce`
    /// (`PEBBLE_WFE_NONCEREJECT`), 0 to 100.
    pub nonce_reject_percent: u8,
    /// Validity of issued certificates in seconds
    /// (`certificateValidityPeriod`); Pebble's default is 5 years.
    pub validity_seconds: Option<u64>,
    /// The port Pebble validates HTTP-01 on, where the solver must listen;
    /// 0 picks a free port (read it back with [`Pebble::http_port`]).
    pub http_port: u16,
    /// The port Pebble validates TLS-ALPN-01 on (`tlsPort`), where the TLS
    /// listener must be; 0 picks a free port (read it back with
    /// [`Pebble::tls_port`]).
    pub tls_port: u16,
    /// The address challtestsrv answers A queries with; `None`: no A record.
    pub dns_ipv4: Option<Ipv4Addr>,
    /// The address challtestsrv answers AAAA queries with; `None` (the
    /// default): no AAAA record, so Pebble validates over IPv4 only.
    pub dns_ipv6: Option<Ipv6Addr>,
    /// Marks every challenge valid without fetching it
    /// (`PEBBLE_VA_ALWAYS_VALID`), for benchmarks of the client side.
    pub always_valid: bool,
    /// An external DNS server on 127.0.0.1 that Pebble resolves every name
    /// through (a test's bind9), instead of starting challtestsrv;
    /// `dns_ipv4` and `dns_ipv6` are then unused.
    pub dns_server: Option<SocketAddr>,
    /// Which Pebble to run: Debian 12's 2.4.0 (the default) or 2.10.0.
    pub version: PebbleVersion,
    /// Certificate profiles offered in the directory (`profiles`, 2.10
    /// only): name and validity in seconds.
    pub profiles: Vec<(String, u64)>,
    /// External account bindings (`externalAccountMACKeys`): key id and
    /// base64url HMAC key. Registration then requires one of them
    /// (`externalAccountBindingRequired`).
    pub eab_keys: Vec<(String, String)>,
}

/// Which Pebble binary runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PebbleVersion {
    /// Debian 12's `pebble` package, found on PATH (or `PEBBLE_BIN`).
    #[default]
    V2_4,
    /// Debian unstable's 2.10.0, which `scripts/test` unpacks into
    /// `target/pebble-2.10.0/` (or the folder `CERTKEEPER_PEBBLE_2_10_DIR`
    /// names): ARI (`renewalInfo`), profiles, `replaces`.
    V2_10,
}

impl Default for PebbleOptions {
    fn default() -> Self {
        Self {
            domain_blocklist: Vec::new(),
            nonce_reject_percent: 0,
            validity_seconds: None,
            http_port: 0,
            tls_port: 0,
            dns_ipv4: Some(Ipv4Addr::LOCALHOST),
            dns_ipv6: None,
            always_valid: false,
            dns_server: None,
            version: PebbleVersion::V2_4,
            profiles: Vec::new(),
            eab_keys: Vec::new(),
        }
    }
}

/// A running Pebble CA and its DNS server; both are killed on drop.
#[derive(Debug)]
pub struct Pebble {
    dir: tempfile::TempDir,
    pebble: Child,
    challtestsrv: Option<Child>,
    acme_port: u16,
    management_port: u16,
    http_port: u16,
    tls_port: u16,
    dns_port: u16,
    ca_root_pem_path: PathBuf,
    pebble_bin: PathBuf,
    options: PebbleOptions,
}

impl Pebble {
    /// Starts Pebble and challtestsrv on free ports and waits until both
    /// listen.
    ///
    /// # Panics
    /// When a binary is missing (install Debian's `pebble` package), cannot
    /// start, or does not listen within 30 s; the message carries its log.
    pub async fn start(options: PebbleOptions) -> Pebble {
        assert!(
            options.nonce_reject_percent <= 100,
            "nonce_reject_percent is a percentage, got {}",
            options.nonce_reject_percent
        );
        let (pebble_bin, challtestsrv_bin) = match options.version {
            PebbleVersion::V2_4 => (
                find_binary("PEBBLE_BIN", "pebble"),
                find_binary("PEBBLE_CHALLTESTSRV_BIN", "pebble-challtestsrv"),
            ),
            PebbleVersion::V2_10 => pebble_2_10_binaries(),
        };
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&options, &pebble_bin, &challtestsrv_bin).await {
                Ok(pebble) => return pebble,
                // Another process took a port between picking and binding: pick again.
                Err(StartError::PortTaken(log)) => last_failure = log,
                Err(StartError::Failed(message)) => panic!("{message}"),
            }
        }
        panic!("Pebble could not bind free ports after {START_ATTEMPTS} attempts:\n{last_failure}");
    }

    async fn try_start(
        options: &PebbleOptions,
        pebble_bin: &Path,
        challtestsrv_bin: &Path,
    ) -> Result<Pebble, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("certkeeper-pebble-")
            .tempdir()
            .expect("cannot create a temporary directory for Pebble");
        let ca_root_pem_path = write_listener_certificates(dir.path());

        let acme_port = free_tcp_port();
        let management_port = free_tcp_port();
        let tls_port = match options.tls_port {
            0 => free_tcp_port(),
            port => port,
        };
        let challtestsrv_management_port = free_tcp_port();
        let dns_port = match options.dns_server {
            Some(server) => server.port(),
            None => free_dns_port(),
        };
        let http_port = match options.http_port {
            0 => free_http_port(),
            port => port,
        };

        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("listener.pem"),
                "privateKey": dir.path().join("listener.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": !options.eab_keys.is_empty(),
                "domainBlocklist": options.domain_blocklist,
            }
        });
        if !options.eab_keys.is_empty() {
            let keys: serde_json::Map<_, _> = options
                .eab_keys
                .iter()
                .map(|(kid, key)| (kid.clone(), key.clone().into()))
                .collect();
            config["pebble"]["externalAccountMACKeys"] = keys.into();
        }
        if !options.profiles.is_empty() {
            let profiles: serde_json::Map<_, _> = options
                .profiles
                .iter()
                .map(|(name, seconds)| {
                    let profile = serde_json::json!({
                        "description": format!("the {name} profile"),
                        "validityPeriod": seconds,
                    });
                    (name.clone(), profile)
                })
                .collect();
            config["pebble"]["profiles"] = profiles.into();
        }
        if let Some(seconds) = options.validity_seconds {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap())
            .expect("cannot write Pebble's config");

        let ip_arg = |ip: Option<String>| ip.unwrap_or_default();
        // An external DNS server (a test's bind9) replaces challtestsrv.
        let challtestsrv = options.dns_server.is_none().then(|| {
            spawn(
                Command::new(challtestsrv_bin)
                    .arg("-management")
                    .arg(format!("127.0.0.1:{challtestsrv_management_port}"))
                    // 2.10 renamed the DNS listener's flag.
                    .arg(match options.version {
                        PebbleVersion::V2_4 => "-dns01",
                        PebbleVersion::V2_10 => "-dnsserver",
                    })
                    .arg(format!("127.0.0.1:{dns_port}"))
                    .args(match options.version {
                        // 2.10 also serves DNS over HTTPS by default.
                        PebbleVersion::V2_4 => &[][..],
                        PebbleVersion::V2_10 => &["-doh", ""][..],
                    })
                    // Its own challenge listeners are off: the solver under test answers.
                    .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                    .arg("-defaultIPv4")
                    .arg(ip_arg(options.dns_ipv4.map(|ip| ip.to_string())))
                    .arg("-defaultIPv6")
                    .arg(ip_arg(options.dns_ipv6.map(|ip| ip.to_string()))),
                &dir.path().join("challtestsrv.log"),
            )
        });

        let pebble = spawn_pebble(pebble_bin, options, dir.path(), dns_port);

        let mut this = Pebble {
            dir,
            pebble,
            challtestsrv,
            acme_port,
            management_port,
            http_port,
            tls_port,
            dns_port,
            ca_root_pem_path,
            pebble_bin: pebble_bin.to_owned(),
            options: options.clone(),
        };
        this.wait_until_listening(
            options
                .dns_server
                .is_none()
                .then_some(challtestsrv_management_port),
        )
        .await?;
        Ok(this)
    }

    /// Kills the CA (not its DNS server) and starts a new one on the same
    /// ports with the same config: a CA that forgot every account, order
    /// and certificate, and has a new root.
    ///
    /// # Panics
    /// When the new CA does not listen within 30 s.
    pub async fn restart(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
        let log = self.dir.path().join("pebble.log");
        let _ = std::fs::rename(&log, self.dir.path().join("pebble-before-restart.log"));
        self.pebble = spawn_pebble(
            &self.pebble_bin,
            &self.options,
            self.dir.path(),
            self.dns_port,
        );
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [self.acme_port, self.management_port] {
            while TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_millis(200),
            )
            .is_err()
            {
                assert!(
                    Instant::now() < deadline,
                    "the restarted pebble did not listen on 127.0.0.1:{port}; its log:\n{}",
                    self.log("pebble")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn wait_until_listening(
        &mut self,
        challtestsrv_port: Option<u16>,
    ) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut wanted = vec![("pebble", self.acme_port), ("pebble", self.management_port)];
        wanted.extend(challtestsrv_port.map(|port| ("pebble-challtestsrv", port)));
        loop {
            let exited = [
                ("pebble", self.pebble.try_wait()),
                (
                    "pebble-challtestsrv",
                    match &mut self.challtestsrv {
                        Some(child) => child.try_wait(),
                        None => Ok(None),
                    },
                ),
            ];
            for (name, status) in exited {
                if let Ok(Some(status)) = status {
                    let log = self.log(name);
                    return Err(if log.contains("address already in use") {
                        StartError::PortTaken(format!("{name} log:\n{log}"))
                    } else {
                        StartError::Failed(format!(
                            "{name} exited during start-up ({status}); its log:\n{log}"
                        ))
                    });
                }
            }
            let waiting: Vec<_> = wanted
                .iter()
                .filter(|(_, port)| {
                    TcpStream::connect_timeout(
                        &SocketAddr::from((Ipv4Addr::LOCALHOST, *port)),
                        Duration::from_millis(200),
                    )
                    .is_err()
                })
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let (name, port) = waiting[0];
                return Err(StartError::Failed(format!(
                    "{name} did not listen on 127.0.0.1:{port} within {}s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    self.log(name)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ACME directory URL, `https://127.0.0.1:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The PEM file of the CA that signed Pebble's HTTPS listener certificate:
    /// give it to the ACME client as its trusted root
    /// (`AcmeIssuerBuilder::ca_root_pem_file`).
    pub fn ca_root_pem_path(&self) -> &Path {
        &self.ca_root_pem_path
    }

    /// The port Pebble connects to for HTTP-01 validation.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The port Pebble connects to for TLS-ALPN-01 validation, on the
    /// address challtestsrv resolves names to (127.0.0.1 by default).
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The UDP and TCP port challtestsrv (or the external DNS server)
    /// answers DNS on.
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    /// The temporary directory with the config, certificates and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PEM of the root that signs issued certificates, from Pebble's
    /// management interface (`/roots/0`). Pebble makes a new one at every
    /// start.
    ///
    /// # Panics
    /// When the management interface does not answer with a certificate.
    pub async fn issuer_root_pem(&self) -> String {
        let body = tokio::time::timeout(MANAGEMENT_TIMEOUT, self.management_get("/roots/0"))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "Pebble's management interface did not answer within {}s; its log:\n{}",
                    MANAGEMENT_TIMEOUT.as_secs(),
                    self.log("pebble")
                )
            });
        assert!(
            body.contains("-----BEGIN CERTIFICATE-----"),
            "Pebble's /roots/0 is not a PEM certificate: {body}"
        );
        body
    }

    /// The root that signs issued certificates, as a rustls trust store.
    pub async fn issuer_roots(&self) -> RootCertStore {
        let pem = self.issuer_root_pem().await;
        let mut roots = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(der.expect("Pebble's root is not valid PEM"))
                .expect("Pebble's root is not a valid trust anchor");
        }
        roots
    }

    /// What Pebble's management interface says of the certificate whose
    /// chain (leaf first) is `chain_pem` (`/cert-status-by-serial/`): a
    /// JSON object whose `Status` is `Valid` or `Revoked`.
    // Only some test crates revoke.
    #[allow(dead_code)]
    pub async fn cert_status(&self, chain_pem: &str) -> String {
        let der = certkeeper::cert::leaf_der(chain_pem).expect("a chain with a leaf");
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("a parsable leaf");
        let path = format!("/cert-status-by-serial/{:x}", leaf.serial);
        tokio::time::timeout(MANAGEMENT_TIMEOUT, self.management_get(&path))
            .await
            .expect("Pebble's management interface did not answer in time")
    }

    async fn management_get(&self, path: &str) -> String {
        #[cfg(feature = "aws-lc-rs")]
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
        let provider = rustls::crypto::ring::default_provider();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default TLS versions")
            .with_root_certificates(self.listener_roots())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.management_port))
            .await
            .expect("cannot connect to Pebble's management interface");
        let server_name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let mut tls = connector
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake with Pebble's management interface failed");
        // HTTP/1.0: the answer is not chunked and the connection closes after it.
        tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .expect("cannot send to Pebble's management interface");
        let mut response = Vec::new();
        // Go closes without close_notify; what was read up to then is the answer.
        let _ = tls.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| {
            panic!("malformed answer from Pebble's management interface: {response}")
        });
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "Pebble's management interface answered {path} with: {head}"
        );
        body.to_owned()
    }

    fn listener_roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(
                CertificateDer::from_pem_file(&self.ca_root_pem_path)
                    .expect("cannot read the listener CA"),
            )
            .expect("the listener CA is not a valid trust anchor");
        roots
    }

    /// The log (stdout and stderr) of `pebble` or `pebble-challtestsrv`.
    pub fn log(&self, name: &str) -> String {
        let file = match name {
            "pebble" => "pebble.log",
            _ => "challtestsrv.log",
        };
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_else(|e| format!("(cannot read {file}: {e})"))
    }

    /// Both logs, for a failing test to print.
    pub fn logs(&self) -> String {
        format!(
            "--- pebble ---\n{}\n--- pebble-challtestsrv ---\n{}",
            self.log("pebble"),
            self.log("pebble-challtestsrv")
        )
    }
}

impl Pebble {
    /// Sends `signal` (`STOP`, `CONT`, `KILL` ...) to the CA process (not
    /// its DNS server): `STOP` makes a CA that accepts connections and never
    /// answers, `KILL` one that refuses them.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pebble.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} pebble failed");
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.pebble).chain(self.challtestsrv.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for name in ["pebble", "pebble-challtestsrv"] {
                eprintln!(
                    "--- end of the {name} log ---\n{}",
                    tail(&self.log(name), 60)
                );
            }
        }
    }
}

enum StartError {
    PortTaken(String),
    Failed(String),
}

fn find_binary(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` was not found on PATH: install Debian's pebble package \
             (`apt-get install pebble`) or set {env} to the binary"
        )
    })
}

/// Pebble 2.10.0's two binaries: from `CERTKEEPER_PEBBLE_2_10_DIR` (set by
/// `scripts/test`), else from `target/pebble-2.10.0/usr/bin`.
fn pebble_2_10_binaries() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("CERTKEEPER_PEBBLE_2_10_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pebble-2.10.0/usr/bin")
        });
    let binaries = (dir.join("pebble"), dir.join("pebble-challtestsrv"));
    for binary in [&binaries.0, &binaries.1] {
        assert!(
            binary.is_file(),
            "this test needs Pebble 2.10.0, and {} is missing: run scripts/test once \
             (it fetches Debian unstable's pebble 2.10.0 into target/pebble-2.10.0/), \
             or set CERTKEEPER_PEBBLE_2_10_DIR to the folder holding its binaries",
            binary.display()
        );
    }
    binaries
}

fn spawn_pebble(bin: &Path, options: &PebbleOptions, dir: &Path, dns_port: u16) -> Child {
    let mut command = Command::new(bin);
    command
        .arg("-config")
        .arg(dir.join("pebble-config.json"))
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{dns_port}"))
        .env_clear()
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env(
            "PEBBLE_WFE_NONCEREJECT",
            options.nonce_reject_percent.to_string(),
        )
        .env("PEBBLE_AUTHZREUSE", "0");
    if options.always_valid {
        command.env("PEBBLE_VA_ALWAYS_VALID", "1");
    }
    spawn(&mut command, &dir.join("pebble.log"))
}

fn spawn(command: &mut Command, log_path: &Path) -> Child {
    let log = File::create(log_path).expect("cannot create a log file for Pebble");
    let log_err = log.try_clone().expect("cannot clone a log file handle");
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()))
}

/// A CA and a leaf for `localhost`, 127.0.0.1 and ::1 signed by it: rustls
/// refuses a CA certificate used directly as a server certificate.
/// Returns the CA's PEM path.
fn write_listener_certificates(dir: &Path) -> PathBuf {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "certkeeper test listener CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();

    let mut leaf_params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let ca_path = dir.join("listener-ca.pem");
    let write = |path: PathBuf, contents: String| {
        let mut file = File::create(&path).expect("cannot write a Pebble certificate");
        file.write_all(contents.as_bytes())
            .expect("cannot write a Pebble certificate");
    };
    write(ca_path.clone(), ca_cert.pem());
    write(dir.join("listener.pem"), leaf_cert.pem());
    write(dir.join("listener.key"), leaf_key.serialize_pem());
    ca_path
}

fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("cannot find a free TCP port")
        .port()
}

/// A port free on both families, as a solver may bind `[::]`.
fn free_http_port() -> u16 {
    TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0))
        .or_else(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|l| l.local_addr())
        .expect("cannot find a free TCP port")
        .port()
}

/// challtestsrv answers DNS over UDP and TCP on the same port.
fn free_dns_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind a UDP port");
        let port = udp.local_addr().expect("UDP socket has an address").port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("cannot find a port free for both UDP and TCP");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
