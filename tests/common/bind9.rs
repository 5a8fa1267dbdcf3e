//! A real authoritative DNS server for tests: Debian's `bind9` (`named`),
//! started in a temporary folder on a free port (UDP and TCP, 127.0.0.1),
//! serving the given zones, each with a wildcard A record to 127.0.0.1 (so
//! every name in it resolves, for HTTP-01 too), and taking RFC 2136 updates
//! of TXT records signed with one TSIG key (hmac-sha256). Killed on drop.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TSIG key name `named` knows.
pub const TSIG_KEY_NAME: &str = "certkeeper-test-key";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What a `named` is.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// Serves its zones and takes updates; NOTIFYs the secondary, if any,
    /// and lets it transfer them.
    Primary { secondary: Option<SocketAddr> },
    /// A recursive resolver asking this server for every name.
    Resolver(SocketAddr),
    /// Transfers its zones from `primary`; answers on `port`.
    Secondary { primary: SocketAddr, port: u16 },
}

/// A zone for [`Bind9::start_zones`].
#[derive(Clone, Copy, Debug)]
pub struct BindZone<'a> {
    /// Its name (`example.test`).
    pub name: &'a str,
    /// Lines added to its zone file (`_acme-challenge.www CNAME www.validation.test.`).
    pub records: &'a [&'a str],
    /// Whether the TSIG key may update its TXT records.
    pub updatable: bool,
}

impl<'a> BindZone<'a> {
    /// A zone with the usual records, that the key may update.
    pub fn new(name: &'a str) -> Self {
        Self {
            name,
            records: &[],
            updatable: true,
        }
    }
}

/// A running `named`.
#[derive(Debug)]
pub struct Bind9 {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    secret: String,
}

impl Bind9 {
    /// Starts `named` serving `zones` (`example.test` ...).
    ///
    /// # Panics
    /// When `named` is missing (install Debian's `bind9`), or does not
    /// answer within 30 s; the message carries its log.
    pub async fn start(zones: &[&str]) -> Bind9 {
        let zones: Vec<BindZone<'_>> = zones.iter().map(|name| BindZone::new(name)).collect();
        Self::start_zones(&zones).await
    }

    /// Starts `named` serving `zones`, each with its own records and
    /// update policy.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn start_zones(zones: &[BindZone<'_>]) -> Bind9 {
        Self::start_with(zones, Role::Primary { secondary: None }).await
    }

    /// Starts a primary `named` serving `zones`, and a secondary that
    /// transfers them from it and is told of each change by NOTIFY (BIND's
    /// defaults otherwise: a change reaches the secondary after the
    /// primary's notify delay and an IXFR). Returns both once the secondary
    /// holds every zone.
    ///
    /// # Panics
    /// As [`start`](Self::start), or when the secondary has not
    /// transferred the zones within 30 s.
    pub async fn start_with_secondary(zones: &[&str]) -> (Bind9, Bind9) {
        let zones: Vec<BindZone<'_>> = zones.iter().map(|name| BindZone::new(name)).collect();
        let port = free_dns_port();
        let secondary_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let primary = Self::start_with(
            &zones,
            Role::Primary {
                secondary: Some(secondary_addr),
            },
        )
        .await;
        let secondary = Self::start_with(
            &zones,
            Role::Secondary {
                primary: primary.addr(),
                port,
            },
        )
        .await;
        let deadline = Instant::now() + START_TIMEOUT;
        while secondary.log().matches("transferred serial").count() < zones.len() {
            if Instant::now() > deadline {
                panic!(
                    "the secondary did not transfer the zones within 30 s:\n{}",
                    secondary.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (primary, secondary)
    }

    /// Starts `named` as a recursive resolver that asks `upstream` for
    /// every name and caches nothing: CNAMEs are followed as a CA's
    /// resolver follows them (an authoritative server answers a CNAME
    /// alone when its target is in another zone).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn start_resolver(upstream: SocketAddr) -> Bind9 {
        Self::start_with(&[], Role::Resolver(upstream)).await
    }

    async fn start_with(zones: &[BindZone<'_>], role: Role) -> Bind9 {
        let bin = find_named();
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin, zones, role).await {
                Ok(server) => return server,
                Err(log) => last = log,
            }
        }
        panic!("named did not start after 3 attempts; its last log:\n{last}");
    }

    async fn try_start(bin: &Path, zones: &[BindZone<'_>], role: Role) -> Result<Bind9, String> {
        let dir = tempfile::Builder::new()
            .prefix("certkeeper-bind9-")
            .tempdir()
            .expect("cannot create a temporary directory for named");
        let port = match role {
            Role::Secondary { port, .. } => port,
            _ => free_dns_port(),
        };
        let secret = random_secret();
        let d = dir.path().display();
        let recursion = match role {
            Role::Primary { .. } | Role::Secondary { .. } => "recursion no;".to_owned(),
            Role::Resolver(upstream) => format!(
                "recursion yes; allow-recursion {{ any; }}; forward only; \
                 forwarders {{ {} port {}; }}; max-cache-ttl 0; max-ncache-ttl 0;",
                upstream.ip(),
                upstream.port()
            ),
        };
        let mut conf = format!(
            r#"options {{
  directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  {recursion}
  dnssec-validation no;
  notify no;
}};
controls {{ }};
key "{TSIG_KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};
"#
        );
        for BindZone {
            name: zone,
            records,
            updatable,
        } in zones
        {
            let file = dir.path().join(format!("{zone}.zone"));
            if let Role::Secondary { primary, .. } = role {
                conf.push_str(&format!(
                    "zone \"{zone}\" {{ type secondary; file \"{}\"; \
                     primaries {{ {} port {}; }}; }};\n",
                    file.display(),
                    primary.ip(),
                    primary.port()
                ));
                continue;
            }
            let mut text = format!(
                "$TTL 60\n\
                 @ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 60 600 60\n\
                 @ IN NS ns1.{zone}.\n\
                 ns1 IN A 127.0.0.1\n\
                 @ IN A 127.0.0.1\n\
                 * IN A 127.0.0.1\n"
            );
            for record in *records {
                text.push_str(record);
                text.push('\n');
            }
            std::fs::write(&file, text).expect("cannot write a zone file");
            // A zone the key may not update takes no updates at all.
            let policy = if *updatable {
                format!("update-policy {{ grant {TSIG_KEY_NAME} zonesub TXT; }};")
            } else {
                "allow-update { none; };".to_owned()
            };
            let notify = match role {
                Role::Primary {
                    secondary: Some(secondary),
                } => format!(
                    "notify explicit; also-notify {{ {} port {}; }}; allow-transfer {{ any; }};",
                    secondary.ip(),
                    secondary.port()
                ),
                _ => String::new(),
            };
            conf.push_str(&format!(
                "zone \"{zone}\" {{ type primary; file \"{}\"; {policy} {notify} }};\n",
                file.display()
            ));
        }
        let conf_path = dir.path().join("named.conf");
        std::fs::write(&conf_path, conf).expect("cannot write named.conf");
        let log_path = dir.path().join("named.log");
        let log = File::create(&log_path).expect("cannot create named's log");
        let child = Command::new(bin)
            // Foreground, logging to stderr; no privileges dropped, none needed.
            .arg("-g")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Bind9 {
            dir,
            child,
            port,
            secret,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("named exited ({status}):\n{}", server.log()));
            }
            if server.log().contains("running")
                && TcpStream::connect_timeout(&server.addr(), Duration::from_millis(200)).is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                panic!("named did not start within 30 s:\n{}", server.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where `named` answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The TSIG secret (base64) that `named` accepts updates with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `named`'s log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The temporary folder (config, zones, journals, log).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Bind9 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- named log ---\n{}", self.log());
        }
    }
}

fn find_named() -> PathBuf {
    for candidate in ["/usr/sbin/named", "/usr/local/sbin/named"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!("`named` was not found: install Debian's bind9 package (scripts/test does)");
}

/// 32 random bytes, base64: a TSIG secret or an API key.
pub fn random_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = std::array::from_fn(|_| rand_byte());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn rand_byte() -> u8 {
    // The secret only has to differ between runs; the OS's hasher seed is random.
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    RandomState::new().hash_one(Instant::now()) as u8
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_dns_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind a UDP port");
        let port = udp.local_addr().expect("UDP socket has an address").port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("cannot find a port free for both UDP and TCP");
}
