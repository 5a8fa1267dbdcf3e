//! A real SMTP server for tests: Debian's python3-aiosmtpd, started on a
//! free port with a small handler that writes each message it takes to a
//! JSON file (envelope, headers, the decoded text body), and killed when
//! the [`SmtpServer`] is dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The handler: one JSON file per message, written then renamed, so that a
/// reader never sees half a message.
const HANDLER: &str = r#"
import email, email.policy, json, os

class Handler:
    def __init__(self, out):
        self.out = out
        self.count = 0

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(*args)

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain",))
        self.count += 1
        path = os.path.join(self.out, "%04d.json" % self.count)
        with open(path + ".tmp", "w") as f:
            json.dump({
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "from": str(message["From"]),
                "to": str(message["To"]),
                "subject": str(message["Subject"]),
                "body": part.get_content() if part is not None else "",
            }, f)
        os.rename(path + ".tmp", path)
        return "250 OK"
"#;

/// One message the server took.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Mail {
    /// The envelope sender.
    pub mail_from: String,
    /// The envelope recipients.
    pub rcpt_tos: Vec<String>,
    /// The `From` header.
    pub from: String,
    /// The `To` header.
    pub to: String,
    /// The `Subject` header, decoded.
    pub subject: String,
    /// The text body, decoded.
    pub body: String,
}

/// How the test server takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// Plain SMTP.
    Plain,
    /// STARTTLS, required before mail.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// A running aiosmtpd; killed on drop.
pub struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn python() -> &'static str {
    // Debian's interpreter, which has python3-aiosmtpd, before any other.
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

impl SmtpServer {
    /// Starts aiosmtpd on a free port of 127.0.0.1, plain SMTP.
    pub fn start() -> Self {
        Self::start_with(SmtpMode::Plain)
    }

    /// The PEM file of the CA that signed the server's certificate (for
    /// 127.0.0.1), when it has TLS.
    pub fn ca_root(&self) -> PathBuf {
        self.dir.path().join("smtp-ca.pem")
    }

    /// Starts aiosmtpd on a free port of 127.0.0.1, in `mode`; with TLS,
    /// its certificate is for 127.0.0.1, signed by [`ca_root`](Self::ca_root).
    pub fn start_with(mode: SmtpMode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls_args: Vec<String> = match mode {
            SmtpMode::Plain => Vec::new(),
            SmtpMode::StartTls | SmtpMode::Tls => {
                let (cert, key) = write_certificates(dir.path());
                let (cert_flag, key_flag) = if mode == SmtpMode::StartTls {
                    ("--tlscert", "--tlskey")
                } else {
                    ("--smtpscert", "--smtpskey")
                };
                vec![cert_flag.into(), cert, key_flag.into(), key]
            }
        };
        std::fs::write(dir.path().join("certkeeper_test_smtp.py"), HANDLER).unwrap();
        let out = dir.path().join("mail");
        std::fs::create_dir(&out).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("aiosmtpd.log")).unwrap();
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(&tls_args)
            .args(["-c", "certkeeper_test_smtp.Handler"])
            .arg(&out)
            .env("PYTHONPATH", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start aiosmtpd (python3-aiosmtpd): {e}"));
        let mut server = Self { child, port, dir };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("aiosmtpd exited ({status}): {}", server.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "aiosmtpd did not listen on {port}: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What aiosmtpd printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("aiosmtpd.log")).unwrap_or_default()
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Every message taken so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.mail_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits (up to 30 s) until a message matches `pick`, and returns it.
    pub async fn wait_for(&self, what: &str, pick: impl Fn(&Mail) -> bool) -> Mail {
        let started = Instant::now();
        loop {
            if let Some(mail) = self.mails().into_iter().find(&pick) {
                return mail;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no message {what} arrived; got {:#?}\naiosmtpd: {}",
                self.mails(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA (written to `smtp-ca.pem`) and a leaf for 127.0.0.1 signed by it;
/// returns the leaf's certificate and key paths.
fn write_certificates(dir: &Path) -> (String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "certkeeper test SMTP CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &Issuer::new(ca_params, ca_key))
        .unwrap();
    std::fs::write(dir.join("smtp-ca.pem"), ca_cert.pem()).unwrap();
    let cert = dir.join("smtp.pem");
    let key = dir.join("smtp.key");
    std::fs::write(&cert, leaf_cert.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}
