//! A real authoritative DNS server for tests: Debian's `knot` (`knotd`),
//! started in a temporary folder (its own configuration, storage, journal,
//! run folder and control socket) on a free port (UDP and TCP, 127.0.0.1),
//! serving the given zones, each with a wildcard A record to 127.0.0.1 (so
//! every name in it resolves), and taking RFC 2136 updates signed with one
//! TSIG key (hmac-sha256); unsigned or wrongly signed updates are refused.
//! An update is answered once it is applied to the served zone (kept in the
//! journal, never written back to the zone file). Killed on drop.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::bind9::{free_dns_port, random_secret};

/// The TSIG key name `knotd` knows: the same as bind9's, so a solver set up
/// for one works against the other.
pub use super::bind9::TSIG_KEY_NAME;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `knotd`.
#[derive(Debug)]
pub struct Knot {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    secret: String,
}

impl Knot {
    /// Starts `knotd` serving `zones` (`example.test` ...).
    ///
    /// # Panics
    /// When `knotd` is missing (install Debian's `knot`), or does not
    /// answer within 30 s; the message carries its log.
    pub async fn start(zones: &[&str]) -> Knot {
        let bin = find_knotd();
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin, zones).await {
                Ok(server) => return server,
                Err(log) => last = log,
            }
        }
        panic!("knotd did not start after 3 attempts; its last log:\n{last}");
    }

    async fn try_start(bin: &Path, zones: &[&str]) -> Result<Knot, String> {
        let dir = tempfile::Builder::new()
            .prefix("certkeeper-knot-")
            .tempdir()
            .expect("cannot create a temporary directory for knotd");
        let port = free_dns_port();
        let secret = random_secret();
        let d = dir.path().display();
        // No `user`: knotd keeps the user that starts it. Debug logging shows
        // each update's ACL and TSIG checks. The journal holds
        // every update (`zonefile-sync: -1` never rewrites the zone file),
        // and knotd answers an update only once the zone it serves has it.
        let mut conf = format!(
            r#"server:
    rundir: "{d}"
    pidfile: "{d}/knot.pid"
    listen: 127.0.0.1@{port}
    automatic-acl: off
log:
  - target: stderr
    any: debug
database:
    storage: "{d}"
control:
    listen: "{d}/knot.sock"
key:
  - id: {TSIG_KEY_NAME}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: signed-updates
    key: {TSIG_KEY_NAME}
    action: update
template:
  - id: default
    storage: "{d}"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    serial-policy: increment
zone:
"#
        );
        for zone in zones {
            std::fs::write(
                dir.path().join(format!("{zone}.zone")),
                format!(
                    "$TTL 60\n\
                     @ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 60 600 60\n\
                     @ IN NS ns1.{zone}.\n\
                     ns1 IN A 127.0.0.1\n\
                     @ IN A 127.0.0.1\n\
                     * IN A 127.0.0.1\n"
                ),
            )
            .expect("cannot write a zone file");
            conf.push_str(&format!("  - domain: {zone}\n    acl: signed-updates\n"));
        }
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).expect("cannot write knot.conf");
        let log_path = dir.path().join("knot.log");
        let log = File::create(&log_path).expect("cannot create knotd's log");
        let child = Command::new(bin)
            // Foreground (knotd's default), logging to stderr.
            .arg("--config")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Knot {
            dir,
            child,
            port,
            secret,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("knotd exited ({status}):\n{}", server.log()));
            }
            let log = server.log();
            // Zones load after the server starts: wait for each of them.
            if log.contains("server started")
                && zones
                    .iter()
                    .all(|zone| log.contains(&format!("[{zone}.] loaded, serial")))
                && TcpStream::connect_timeout(&server.addr(), Duration::from_millis(200)).is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                panic!("knotd did not start within 30 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where `knotd` answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The TSIG secret (base64) that `knotd` accepts updates with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `knotd`'s log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }

    /// The temporary folder (configuration, zones, journal, log).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- knotd log ---\n{}", self.log());
        }
    }
}

fn find_knotd() -> PathBuf {
    for candidate in ["/usr/sbin/knotd", "/usr/local/sbin/knotd"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!("`knotd` was not found: install Debian's knot package (scripts/test does)");
}
