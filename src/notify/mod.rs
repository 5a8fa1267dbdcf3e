//! Telling the operator: what a notice says ([`Notice`]), and, with the
//! `smtp` feature, [`SmtpNotifier`], which emails it to the security
//! address as the reference platform does.
//!
//! A notifier is an event [`Subscriber`](crate::events::Subscriber) like
//! any other: hand it to
//! [`RenewerBuilder::subscriber`](crate::renewer::RenewerBuilder::subscriber).

#[cfg(feature = "smtp")]
mod smtp;

#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub use smtp::SmtpNotifier;

use std::fmt;

use zeroize::Zeroizing;

use crate::config::{Naming, Setting};
use crate::error::rfc3339;
use crate::events::Event;
use crate::{Error, Result};

/// How the connection to the SMTP server is secured (`_APP_SMTP_SECURE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SmtpSecurity {
    /// Empty: plain SMTP, no TLS (a relay on the same host or network).
    #[default]
    None,
    /// `tls`: plain SMTP upgraded with STARTTLS, which is required.
    StartTls,
    /// `ssl`: TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

impl SmtpSecurity {
    /// Reads `_APP_SMTP_SECURE`: empty, `tls` or `ssl` (any case).
    pub fn parse(setting: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" => Ok(Self::None),
            "tls" => Ok(Self::StartTls),
            "ssl" => Ok(Self::Tls),
            _ => Err(Error::config(
                setting,
                format!(
                    "{:?} is not empty, tls (STARTTLS) or ssl (TLS from the start)",
                    value.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// Where and how to send notices: the reference platform's `_APP_SMTP_*`
/// and `_APP_SYSTEM_EMAIL_*` settings, and the recipient
/// (`_APP_SYSTEM_SECURITY_EMAIL_ADDRESS`).
///
/// `Debug` never shows the password.
#[derive(Clone)]
#[non_exhaustive]
pub struct SmtpSettings {
    /// The server (`_APP_SMTP_HOST`).
    pub host: String,
    /// Its port (`_APP_SMTP_PORT`; default 25, as in the reference).
    pub port: u16,
    /// How the connection is secured (`_APP_SMTP_SECURE`).
    pub security: SmtpSecurity,
    /// The user to sign in as (`_APP_SMTP_USERNAME`); none: no sign-in.
    pub username: Option<String>,
    /// The password (`_APP_SMTP_PASSWORD`).
    pub password: Option<Zeroizing<String>>,
    /// The sender address (`_APP_SYSTEM_EMAIL_ADDRESS`).
    pub from_address: String,
    /// The sender's name (`_APP_SYSTEM_EMAIL_NAME`).
    pub from_name: String,
    /// The recipient (`_APP_SYSTEM_SECURITY_EMAIL_ADDRESS`).
    pub to: String,
    /// Whether every failed attempt is emailed (the reference's behaviour,
    /// the default), or only the last one and expiring certificates.
    pub each_failure: bool,
    /// A PEM file of the roots to trust for the server's TLS certificate,
    /// instead of the system's (`_APP_SMTP_CA_ROOT`), for a relay with a
    /// private CA. Read when the notifier is built.
    pub ca_root: Option<std::path::PathBuf>,
}

impl SmtpSettings {
    /// Settings for `host` on port 25 without TLS or sign-in, from
    /// `from_address` to `to`; both addresses are checked. An error names
    /// the argument at fault (`SmtpSettings::new(from_address)` ...).
    pub fn new(host: impl Into<String>, from_address: &str, to: &str) -> Result<Self> {
        Self::named(host, from_address, to, Naming::Builder)
    }

    /// [`new`](Self::new), naming in errors the variables the values were
    /// read from when `naming` says they came from the environment.
    pub(crate) fn named(
        host: impl Into<String>,
        from_address: &str,
        to: &str,
        naming: Naming,
    ) -> Result<Self> {
        let from_address = crate::email::parse_email(
            naming.of(
                Setting::SystemEmailAddress,
                "SmtpSettings::new(from_address)",
            ),
            from_address,
        )?;
        let to = crate::email::parse_email(
            naming.of(Setting::SecurityEmail, "SmtpSettings::new(to)"),
            to,
        )?;
        let host = host.into();
        if host.trim().is_empty() {
            return Err(Error::config(
                naming.of(Setting::SmtpHost, "SmtpSettings::new(host)"),
                "empty",
            ));
        }
        Ok(Self {
            host,
            port: 25,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from_address,
            from_name: DEFAULT_FROM_NAME.into(),
            to,
            each_failure: true,
            ca_root: None,
        })
    }
}

/// The sender's name when `_APP_SYSTEM_EMAIL_NAME` is unset.
pub const DEFAULT_FROM_NAME: &str = "certkeeper";

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from_address", &self.from_address)
            .field("from_name", &self.from_name)
            .field("to", &self.to)
            .field("each_failure", &self.each_failure)
            .field("ca_root", &self.ca_root)
            .finish()
    }
}

/// What the operator is told about an event: a subject and a plain-text
/// body naming the domain and the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The subject line.
    pub subject: String,
    /// The text.
    pub body: String,
}

impl Notice {
    /// The notice for `event`, when it is one the operator must hear of:
    /// a failed attempt (when `each_failure`), the attempt that reached the
    /// limit, a certificate about to expire, a cycle that stopped ordering
    /// (the CA down or rate limiting, or wrong settings). `None` for the
    /// others.
    pub fn for_event(event: &Event, each_failure: bool) -> Option<Self> {
        match event {
            Event::Failed {
                domain,
                attempt,
                max_attempts,
                code,
                problem,
                message,
            } if each_failure && attempt < max_attempts => Some(Self {
                subject: format!("Certificate failure for {domain}"),
                body: format!(
                    "A certificate for {domain} could not be issued.\n\n\
                     Attempt: {attempt} of {max_attempts}; the next maintenance cycle tries again.\n\
                     Error ({code}): {message}\n{}",
                    problem_line(problem.as_deref())
                ),
            }),
            Event::GaveUp {
                domain,
                attempts,
                not_after,
                code,
                problem,
                message,
            } => Some(Self {
                subject: format!("Certificate failure for {domain}: gave up after {attempts} attempts"),
                body: format!(
                    "A certificate for {domain} could not be issued, and {attempts} attempts \
                     failed in a row: the maintenance cycle no longer tries it.\n\n\
                     Last error ({code}): {message}\n{}\
                     Certificate in force: {}\n\n\
                     Fix the cause, then generate the certificate by hand; a success resets \
                     the attempts and the cycle renews it again.\n",
                    problem_line(problem.as_deref()),
                    not_after.map_or_else(|| "none".to_string(), |d| format!("valid until {}", rfc3339(d)))
                ),
            }),
            Event::ExpiringSoon {
                domain,
                not_after,
                attempts,
                last_error,
            } => Some(Self {
                subject: format!("Certificate for {domain} expires on {}", rfc3339(*not_after)),
                body: format!(
                    "The certificate for {domain} expires on {} and was not renewed.\n\n\
                     Failed attempts since the last success: {attempts}\n\
                     Last error: {}\n\n\
                     Once it expires, clients refuse to connect to {domain}.\n",
                    rfc3339(*not_after),
                    last_error.as_deref().unwrap_or("none recorded")
                ),
            }),
            Event::CycleFinished { report, .. } => {
                let reason = report.stopped?;
                let first = report.deferred.first();
                Some(Self {
                    subject: format!("Certificate maintenance stopped: {reason}"),
                    body: format!(
                        "The maintenance cycle stopped ordering certificates: {reason}.\n\n\
                         Issued before it stopped: {}\n\
                         Left for the next cycle, no attempt counted: {}\n\
                         {}\n\
                         The next cycle tries again; nothing is given up meanwhile.\n",
                        report.issued.len(),
                        report.deferred.len(),
                        first.map_or_else(
                            || "No error recorded.".to_string(),
                            |f| format!("First error ({}): {}", f.error.code(), f.error)
                        ),
                    ),
                })
            }
            _ => None,
        }
    }
}

fn problem_line(problem: Option<&str>) -> String {
    problem.map_or_else(String::new, |p| format!("CA problem type: {p}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;

    #[test]
    fn bad_smtp_settings_name_the_argument_in_code_and_the_variable_from_the_environment() {
        let cases = [
            (
                ("smtp.example.com", "not an address", "ops@example.com"),
                Setting::SystemEmailAddress,
                "SmtpSettings::new(from_address)",
            ),
            (
                ("smtp.example.com", "ops@example.com", "a@localhost"),
                Setting::SecurityEmail,
                "SmtpSettings::new(to)",
            ),
            (
                (" ", "ops@example.com", "ops@example.com"),
                Setting::SmtpHost,
                "SmtpSettings::new(host)",
            ),
        ];
        for ((host, from, to), setting, argument) in cases {
            let err = SmtpSettings::new(host, from, to).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == argument),
                "{argument}: {err:?}"
            );
            assert!(!err.to_string().contains(Setting::PREFIX), "{err}");
            let err = SmtpSettings::named(host, from, to, Naming::Environment).unwrap_err();
            assert!(
                matches!(&err, Error::Config { name, .. } if name == setting.name()),
                "{setting}: {err:?}"
            );
        }
        assert!(
            SmtpSettings::new("smtp.example.com", "ops@example.com", "ops@example.com").is_ok()
        );
    }

    #[test]
    fn secure_reads_the_reference_values_and_refuses_others() {
        assert_eq!(SmtpSecurity::parse("s", "").unwrap(), SmtpSecurity::None);
        assert_eq!(
            SmtpSecurity::parse("s", "TLS").unwrap(),
            SmtpSecurity::StartTls
        );
        assert_eq!(SmtpSecurity::parse("s", "ssl").unwrap(), SmtpSecurity::Tls);
        let err = SmtpSecurity::parse(Setting::SmtpSecure.name(), "starttls").unwrap_err();
        assert_eq!(err.code(), "config");
        assert!(
            err.to_string().contains(Setting::SmtpSecure.name()),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut settings =
            SmtpSettings::new("smtp.example.com", "noreply@example.com", "ops@example.com")
                .unwrap();
        settings.password = Some(Zeroizing::new("hunter2-smtp-secret".into()));
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn notices_name_the_domain_and_the_error() {
        let domain = Domain::new("app.example.com").unwrap();
        let failed = Event::Failed {
            domain: domain.clone(),
            attempt: 2,
            max_attempts: 5,
            code: "acme",
            problem: Some("urn:ietf:params:acme:error:rejectedIdentifier".into()),
            message: "ACME new-order failed: refused".into(),
        };
        let notice = Notice::for_event(&failed, true).unwrap();
        assert_eq!(notice.subject, "Certificate failure for app.example.com");
        assert!(notice.body.contains("Attempt: 2 of 5"));
        assert!(notice.body.contains("rejectedIdentifier"));
        assert!(Notice::for_event(&failed, false).is_none());
        let added = Event::DomainAdded { domain };
        assert!(Notice::for_event(&added, true).is_none());
    }

    #[test]
    fn a_cycle_that_stopped_ordering_is_told_and_a_full_one_is_not() {
        use crate::error::SkipReason;
        use crate::report::{CycleFailure, CycleReport};
        use std::sync::Arc;
        let mut report = CycleReport::default();
        let finished = |report: &CycleReport| Event::CycleFinished {
            report: Arc::new(report.clone()),
            duration: std::time::Duration::from_secs(3),
        };
        assert!(Notice::for_event(&finished(&report), true).is_none());
        report.stopped = Some(SkipReason::Misconfigured);
        report.deferred.push(CycleFailure {
            domain: Domain::new("app.example.com").unwrap(),
            error: Arc::new(crate::Error::config(
                Setting::AcmeProfile.name(),
                "not offered",
            )),
        });
        let notice = Notice::for_event(&finished(&report), false).unwrap();
        assert!(notice.subject.contains("settings are wrong"), "{notice:?}");
        assert!(notice.body.contains("no attempt counted: 1"), "{notice:?}");
        assert!(
            notice.body.contains(Setting::AcmeProfile.name()),
            "{notice:?}"
        );
    }
}
