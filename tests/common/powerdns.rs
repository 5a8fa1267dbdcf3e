//! A real authoritative DNS server with an HTTP API for tests: Debian's
//! `pdns-server` (`pdns_server`) on the `gsqlite3` backend
//! (`pdns-backend-sqlite3`), started in a temporary folder (its own
//! `pdns.conf`, SQLite database made from the schema the package ships,
//! control socket) on a free DNS port (UDP and TCP, 127.0.0.1) and a free
//! API port (127.0.0.1). The given zones are created through the API, each
//! with a wildcard A record to 127.0.0.1 (so every name in it resolves).
//! Every cache is off, so a record written through the API is answered at
//! once. Killed on drop.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::bind9::{free_dns_port, random_secret};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The SQLite schema Debian's `pdns-backend-sqlite3` ships.
const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";

/// A running `pdns_server`.
#[derive(Debug)]
pub struct PowerDns {
    dir: tempfile::TempDir,
    child: Child,
    dns_port: u16,
    api_port: u16,
    api_key: String,
}

impl PowerDns {
    /// Starts `pdns_server` and creates `zones` (`example.test` ...)
    /// through its API.
    ///
    /// # Panics
    /// When `pdns_server`, its SQLite backend or `sqlite3` is missing
    /// (install Debian's `pdns-server`, `pdns-backend-sqlite3` and
    /// `sqlite3`), or it does not answer within 30 s; the message carries
    /// its log.
    pub async fn start(zones: &[&str]) -> PowerDns {
        let bin = find("pdns_server", &["/usr/sbin/pdns_server"], "pdns-server");
        let sqlite = find("sqlite3", &["/usr/bin/sqlite3"], "sqlite3");
        if !Path::new(SCHEMA).is_file() {
            panic!(
                "{SCHEMA} was not found: install Debian's pdns-backend-sqlite3 (scripts/test does)"
            );
        }
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin, &sqlite).await {
                Ok(server) => {
                    for zone in zones {
                        server.create_zone(zone).await;
                    }
                    return server;
                }
                Err(log) => last = log,
            }
        }
        panic!("pdns_server did not start after 3 attempts; its last log:\n{last}");
    }

    async fn try_start(bin: &Path, sqlite: &Path) -> Result<PowerDns, String> {
        let dir = tempfile::Builder::new()
            .prefix("certkeeper-powerdns-")
            .tempdir()
            .expect("cannot create a temporary directory for pdns_server");
        let database = dir.path().join("pdns.sqlite3");
        let made = Command::new(sqlite)
            .arg(&database)
            .stdin(File::open(SCHEMA).expect("cannot read the gsqlite3 schema"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", sqlite.display()));
        assert!(
            made.status.success(),
            "sqlite3 could not create the database: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let dns_port = free_dns_port();
        let mut api_port = free_dns_port();
        while api_port == dns_port {
            api_port = free_dns_port();
        }
        let api_key = random_secret();
        let d = dir.path().display();
        // No `setuid`/`setgid`: pdns_server keeps the user that starts it
        // (root included). No cache of any kind (packets, queries, negative
        // answers, the list of zones): what the API writes is answered at once.
        let conf = format!(
            "launch=gsqlite3\n\
             gsqlite3-database={}\n\
             local-address=127.0.0.1\n\
             local-port={dns_port}\n\
             socket-dir={d}\n\
             daemon=no\n\
             guardian=no\n\
             write-pid=no\n\
             webserver=yes\n\
             api=yes\n\
             api-key={api_key}\n\
             webserver-address=127.0.0.1\n\
             webserver-port={api_port}\n\
             webserver-allow-from=127.0.0.0/8\n\
             cache-ttl=0\n\
             negquery-cache-ttl=0\n\
             query-cache-ttl=0\n\
             zone-cache-refresh-interval=0\n\
             consistent-backends=yes\n\
             security-poll-suffix=\n\
             loglevel=6\n",
            database.display()
        );
        std::fs::write(dir.path().join("pdns.conf"), conf).expect("cannot write pdns.conf");
        let log_path = dir.path().join("pdns.log");
        let log = File::create(&log_path).expect("cannot create pdns_server's log");
        let child = Command::new(bin)
            .arg(format!("--config-dir={d}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = PowerDns {
            dir,
            child,
            dns_port,
            api_port,
            api_key,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("pdns_server exited ({status}):\n{}", server.log()));
            }
            let api = SocketAddr::from((Ipv4Addr::LOCALHOST, server.api_port));
            if server.log().contains("ready to distribute questions")
                && TcpStream::connect_timeout(&server.addr(), Duration::from_millis(200)).is_ok()
                && TcpStream::connect_timeout(&api, Duration::from_millis(200)).is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                panic!("pdns_server did not start within 30 s:\n{}", server.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates `zone` (kind Native): SOA, NS `ns1.<zone>`, and A records to
    /// 127.0.0.1 at the apex, at `ns1` and for every other name (`*`).
    async fn create_zone(&self, zone: &str) {
        let rrset = |name: String, kind: &str, content: String| {
            format!(
                r#"{{"name":"{name}","type":"{kind}","ttl":60,"changetype":"REPLACE","records":[{{"content":"{content}","disabled":false}}]}}"#
            )
        };
        let rrsets = [
            rrset(
                format!("{zone}."),
                "SOA",
                format!("ns1.{zone}. hostmaster.{zone}. 1 60 60 600 60"),
            ),
            rrset(format!("{zone}."), "A", "127.0.0.1".into()),
            rrset(format!("ns1.{zone}."), "A", "127.0.0.1".into()),
            rrset(format!("*.{zone}."), "A", "127.0.0.1".into()),
        ]
        .join(",");
        let body = format!(
            r#"{{"name":"{zone}.","kind":"Native","nameservers":["ns1.{zone}."],"rrsets":[{rrsets}]}}"#
        );
        let (status, answer) = self
            .api("POST", "/api/v1/servers/localhost/zones", Some(&body))
            .await;
        assert_eq!(
            status,
            201,
            "creating zone {zone} failed: {answer}\n{}",
            self.log()
        );
    }

    /// Sends one request to the API with this server's key: the status and
    /// the body of the answer. `body` is JSON.
    pub async fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.api_with_key(method, path, &self.api_key, body).await
    }

    /// Sends one request to the API with `api_key` (for "wrong key" cases).
    pub async fn api_with_key(
        &self,
        method: &str,
        path: &str,
        api_key: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.api_port));
        tokio::time::timeout(
            HTTP_TIMEOUT,
            http_request(addr, method, path, &[("X-API-Key", api_key)], body),
        )
        .await
        .unwrap_or_else(|_| panic!("the PowerDNS API did not answer {method} {path} in time"))
    }

    /// Where `pdns_server` answers DNS (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.dns_port))
    }

    /// The API's base URL, `http://127.0.0.1:<port>`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The key the API takes (header `X-API-Key`).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// `pdns_server`'s log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }

    /// The temporary folder (configuration, database, log).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for PowerDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pdns_server log ---\n{}", self.log());
        }
    }
}

/// One HTTP/1.1 request on a new connection (closed after the answer):
/// the status and the body (chunked bodies decoded).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("cannot send the HTTP request");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("cannot read the HTTP answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, rest) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        decode_chunked(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn decode_chunked(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

fn find(name: &str, candidates: &[&str], package: &str) -> PathBuf {
    for candidate in candidates {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!("`{name}` was not found: install Debian's {package} package (scripts/test does)");
}
