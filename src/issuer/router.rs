//! [`IssuerRouter`]: which issuer a name goes to (self-signed for local
//! names and in development, a public CA for public names in production),
//! itself an [`Issuer`].

use std::sync::Arc;

use async_trait::async_trait;

use super::{IssueRequest, Issued, Issuer, IssuerKind, RenewalWindow, SelfSignedIssuer};
use crate::config::{Naming, Setting};
use crate::{Domain, Error, Result};

/// The builder method named when a public name needs a public CA and none
/// is set; from the environment, the contact address the ACME issuer needs.
const PUBLIC_ISSUER_METHOD: &str = "RenewerBuilder::acme";

/// Chooses the issuer of each name, and is an [`Issuer`] itself, so the
/// renewer holds one issuer whatever the rule.
///
/// - In production (the default), a public name ([`Domain::is_public`]: a
///   name under a known public suffix, or a globally routable IP address)
///   goes to the public issuer (an [`AcmeIssuer`](super::AcmeIssuer), a
///   [`FallbackIssuer`](super::FallbackIssuer) ...); without one it fails
///   with [`Error::Config`] (a public name needs a public CA), before
///   anything is ordered.
/// - Every other name (`localhost`, private, loopback and link-local
///   addresses, `.test` ...), and every name in development, goes to the
///   local issuer (a
///   [`SelfSignedIssuer`] by default).
///
/// A user with another rule (a private CA for `*.internal`, say) writes an
/// [`Issuer`] that routes as it likes and gives it to
/// [`RenewerBuilder::issuer`](crate::RenewerBuilder::issuer).
///
/// ```
/// use std::sync::Arc;
/// use certkeeper::issuer::{Issuer, IssuerRouter, SelfSignedIssuer};
/// use certkeeper::Domain;
/// # fn main() -> certkeeper::Result<()> {
/// let router = IssuerRouter::new(Arc::new(SelfSignedIssuer::new()));
/// assert!(router.check(&Domain::new("localhost")?).is_ok());
/// // A public name with no public CA is refused before any order.
/// assert!(router.check(&Domain::new("www.example.com")?).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct IssuerRouter {
    local: Arc<dyn Issuer>,
    public: Option<Arc<dyn Issuer>>,
    production: bool,
    naming: Naming,
}

impl Default for IssuerRouter {
    fn default() -> Self {
        Self::new(Arc::new(SelfSignedIssuer::new()))
    }
}

impl IssuerRouter {
    /// A router in production mode sending local names to `local`, with no
    /// public issuer yet.
    pub fn new(local: Arc<dyn Issuer>) -> Self {
        Self {
            local,
            public: None,
            production: true,
            naming: Naming::default(),
        }
    }

    /// Errors name the environment variable the public issuer needs, not the
    /// builder method: for a router built from
    /// [`Config::from_env`](crate::Config::from_env).
    pub(crate) fn naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// The issuer of public names in production.
    pub fn public(mut self, issuer: Arc<dyn Issuer>) -> Self {
        self.public = Some(issuer);
        self
    }

    /// Production mode (the default); otherwise every name goes to the
    /// local issuer.
    pub fn production(mut self, production: bool) -> Self {
        self.production = production;
        self
    }

    /// The issuer `domain` goes to, after that issuer's own
    /// [`check`](Issuer::check).
    pub fn route(&self, domain: &Domain) -> Result<&Arc<dyn Issuer>> {
        let issuer = if !self.production || !domain.is_public() {
            &self.local
        } else {
            self.public.as_ref().ok_or_else(|| {
                let reason = match self.naming {
                    Naming::Builder => format!(
                        "no ACME issuer configured, and the public name {domain} needs one in \
                         production"
                    ),
                    Naming::Environment => format!(
                        "no ACME issuer configured (it needs a contact address), and the public \
                         name {domain} needs one in production"
                    ),
                };
                Error::config(
                    self.naming.of(Setting::SecurityEmail, PUBLIC_ISSUER_METHOD),
                    reason,
                )
            })?
        };
        issuer.check(domain)?;
        Ok(issuer)
    }
}

#[async_trait]
impl Issuer for IssuerRouter {
    async fn issue(&self, request: &IssueRequest) -> Result<Issued> {
        self.route(&request.domain)?.issue(request).await
    }

    /// The public issuer's kind in production when there is one, else the
    /// local issuer's; each [`Issued`] names the one that issued.
    fn kind(&self) -> IssuerKind {
        match &self.public {
            Some(public) if self.production => public.kind(),
            _ => self.local.kind(),
        }
    }

    fn check(&self, domain: &Domain) -> Result<()> {
        self.route(domain).map(drop)
    }

    async fn admit(&self, request: &IssueRequest) -> Result<()> {
        self.route(&request.domain)?.admit(request).await
    }

    async fn renewal_window(
        &self,
        domain: &Domain,
        chain_pem: &str,
    ) -> Result<Option<RenewalWindow>> {
        self.route(domain)?.renewal_window(domain, chain_pem).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_public_issuer_is_named_as_it_was_configured() {
        let public = Domain::new("www.example.com").unwrap();
        let name_of = |router: IssuerRouter| match router.route(&public) {
            Err(Error::Config { name, .. }) => name,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(name_of(IssuerRouter::default()), "RenewerBuilder::acme");
        assert_eq!(
            name_of(IssuerRouter::default().naming(Naming::Environment)),
            Setting::SecurityEmail.name()
        );
    }

    /// An issuer that only says who it is.
    #[derive(Debug)]
    struct Named(&'static str);

    #[async_trait]
    impl Issuer for Named {
        async fn issue(&self, request: &IssueRequest) -> Result<Issued> {
            Err(Error::config(
                self.0,
                format!("asked for {}", request.domain),
            ))
        }
        fn kind(&self) -> IssuerKind {
            IssuerKind::new(self.0).unwrap()
        }
    }

    fn d(name: &str) -> Domain {
        Domain::new(name).unwrap()
    }

    #[tokio::test]
    async fn local_names_and_development_go_to_the_local_issuer_public_names_to_the_ca() {
        let router = IssuerRouter::new(Arc::new(Named("local"))).public(Arc::new(Named("ca")));
        let name = |domain: &str| router.route(&d(domain)).unwrap().kind().to_string();
        assert_eq!(name("www.example.com"), "ca");
        assert_eq!(name("localhost"), "local");
        assert_eq!(name("10.0.0.1"), "local");
        assert_eq!(name("app.test"), "local");
        assert_eq!(router.kind().as_str(), "ca");
        // `issue` goes the same way.
        let err = router
            .issue(&IssueRequest::new(d("www.example.com")))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { name, .. } if name == "ca"),
            "{err}"
        );

        let development = router.clone().production(false);
        assert_eq!(
            development
                .route(&d("www.example.com"))
                .unwrap()
                .kind()
                .as_str(),
            "local"
        );
        assert_eq!(development.kind().as_str(), "local");
    }

    #[test]
    fn public_ip_addresses_go_to_the_ca_private_ones_to_the_local_issuer() {
        let router = IssuerRouter::new(Arc::new(Named("local"))).public(Arc::new(Named("ca")));
        let name = |domain: &str| router.route(&d(domain)).unwrap().kind().to_string();
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"] {
            assert_eq!(name(public), "ca", "{public}");
        }
        for local in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "192.0.2.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(name(local), "local", "{local}");
        }
        // In development every address is self-signed.
        let development = router.clone().production(false);
        assert_eq!(
            development.route(&d("8.8.8.8")).unwrap().kind().as_str(),
            "local"
        );
        // Without a public CA, a public address is refused before any order.
        let no_ca = IssuerRouter::new(Arc::new(Named("local")));
        assert!(no_ca.check(&d("8.8.8.8")).unwrap_err().is_settings_error());
        assert!(no_ca.check(&d("192.168.1.1")).is_ok());
    }

    #[test]
    fn a_public_name_without_a_public_issuer_is_a_settings_error() {
        let router = IssuerRouter::new(Arc::new(Named("local")));
        let err = router.check(&d("www.example.com")).unwrap_err();
        assert!(err.is_settings_error(), "{err}");
        assert!(router.check(&d("localhost")).is_ok());
    }
}
