//! [`SmtpNotifier`]: notices by email, over SMTP (lettre).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tracing::{info, warn};

use super::{Notice, SmtpSecurity, SmtpSettings};
use crate::config::Setting;
use crate::events::{Event, Subscriber};
use crate::{Error, Result};

/// How long one SMTP command may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Emails the operator (`_APP_SYSTEM_SECURITY_EMAIL_ADDRESS`) about failed
/// attempts, certificates the cycle gave up on, and certificates about to
/// expire, as the reference platform does; see [`Notice::for_event`].
///
/// An event [`Subscriber`]: hand it to
/// [`RenewerBuilder::subscriber`](crate::renewer::RenewerBuilder::subscriber).
/// A notice that cannot be sent is logged (without the password) and the
/// renewer goes on. Build it from the environment with
/// [`Config::smtp_notifier`](crate::Config::smtp_notifier).
///
/// `Debug` never shows the password.
pub struct SmtpNotifier {
    settings: SmtpSettings,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Mailbox,
}

impl fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn notify_error(
    message: impl Into<String>,
    source: Option<lettre::transport::smtp::Error>,
) -> Error {
    Error::Notify {
        channel: "smtp",
        message: message.into(),
        source: source.map(|e| Box::new(e) as _),
    }
}

impl SmtpNotifier {
    /// A notifier with `settings`; an [`Error::Config`] when an address or
    /// the TLS setup is not usable. No connection is made until a notice
    /// is sent.
    pub fn new(settings: SmtpSettings) -> Result<Self> {
        let from: Mailbox = format!(
            "{} <{}>",
            quoted(&settings.from_name),
            settings.from_address
        )
        .parse()
        .map_err(|e| Error::config(Setting::SystemEmailAddress.name(), format!("{e}")))?;
        let to: Mailbox = settings
            .to
            .parse()
            .map_err(|e| Error::config(Setting::SecurityEmail.name(), format!("{e}")))?;
        let tls = match settings.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls | SmtpSecurity::Tls => {
                let mut parameters = TlsParameters::builder(settings.host.clone());
                if let Some(path) = &settings.ca_root {
                    let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                    let root = Certificate::from_pem(&pem).map_err(|e| {
                        Error::config(
                            Setting::SmtpCaRoot.name(),
                            format!("not a PEM certificate: {e}"),
                        )
                    })?;
                    parameters = parameters
                        .certificate_store(CertificateStore::None)
                        .add_root_certificate(root);
                }
                let parameters = parameters.build().map_err(|e| {
                    Error::config(Setting::SmtpSecure.name(), format!("TLS setup: {e}"))
                })?;
                if settings.security == SmtpSecurity::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                }
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
                .port(settings.port)
                .tls(tls)
                .timeout(Some(SMTP_TIMEOUT));
        if let Some(username) = &settings.username {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(username.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
            settings,
            from,
            to,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &SmtpSettings {
        &self.settings
    }

    /// Sends `notice` now; an [`Error::Notify`] when the server cannot be
    /// reached or refuses it.
    pub async fn send(&self, notice: &Notice) -> Result<()> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(self.to.clone())
            .subject(notice.subject.clone())
            .body(notice.body.clone())
            .map_err(|e| notify_error(format!("the message could not be built: {e}"), None))?;
        let response = self.transport.send(message).await.map_err(|e| {
            notify_error(
                format!(
                    "{}:{} did not take the message: {e}",
                    self.settings.host, self.settings.port
                ),
                Some(e),
            )
        })?;
        if !response.is_positive() {
            return Err(notify_error(
                format!("the server answered {}", response.code()),
                None,
            ));
        }
        Ok(())
    }
}

/// The sender's name as an RFC 5322 quoted string.
fn quoted(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect();
    format!("\"{clean}\"")
}

#[async_trait]
impl Subscriber for SmtpNotifier {
    async fn on_event(&self, event: &Event) {
        let Some(notice) = Notice::for_event(event, self.settings.each_failure) else {
            return;
        };
        match self.send(&notice).await {
            Ok(()) => info!(to = %self.settings.to, subject = %notice.subject, "notice emailed"),
            Err(e) => {
                warn!(error = %e, code = e.code(), subject = %notice.subject, "could not email a notice")
            }
        }
    }
}
