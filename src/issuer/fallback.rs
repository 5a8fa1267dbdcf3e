//! [`FallbackIssuer`]: an ordered list of issuers (Let's Encrypt, then
//! ZeroSSL ...), the next one tried when a CA cannot or will not issue.

use std::sync::Arc;

use async_trait::async_trait;

use super::{IssueRequest, Issued, Issuer, IssuerKind, RenewalWindow};
use crate::error::ProblemKind;
use crate::{Domain, Error, Result};

/// An [`Issuer`] made of issuers tried in order: when one fails for a
/// reason about that CA (unreachable, silent, overloaded, rate limited,
/// wants an external account, no longer knows the account ...) or because
/// that CA refuses the name (`rejectedIdentifier`, `caa`,
/// `unsupportedIdentifier`, a policy of its own), the next one is asked.
///
/// A failure that would be the same at any CA ends the attempt at once:
/// the CA could not validate the name's own answer (`connection`, `dns`,
/// `incorrectResponse`, `tls`, `unauthorized`), the DNS-01 record could not
/// be published ([`Error::Dns`]), or a local failure (settings, store,
/// key generation). Trying another CA would only spend its failed-validation
/// budget too.
///
/// The stored record names the issuer that issued
/// ([`StoredCert::issuer`](crate::store::StoredCert::issuer)): give each
/// ACME issuer its own name with
/// [`AcmeIssuerBuilder::kind`](super::AcmeIssuerBuilder::kind).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use certkeeper::issuer::{AcmeIssuer, FallbackIssuer, IssuerKind};
/// # fn main() -> certkeeper::Result<()> {
/// # let (solver, store, cipher): (Arc<certkeeper::challenge::Http01Solver>, Arc<certkeeper::store::MemoryStore>, Arc<certkeeper::cipher::Keyring>) = todo!();
/// let letsencrypt = AcmeIssuer::builder(certkeeper::config::LETS_ENCRYPT_DIRECTORY)
///     .kind(IssuerKind::new("letsencrypt")?)
///     .contact_email("ops@example.com")
///     .solver(solver.clone()).store(store.clone()).cipher(cipher.clone())
///     .build()?;
/// let zerossl = AcmeIssuer::builder("https://acme.zerossl.com/v2/DV90")
///     .kind(IssuerKind::new("zerossl")?)
///     .contact_email("ops@example.com")
///     .solver(solver).store(store).cipher(cipher)
///     .build()?;
/// let issuer = FallbackIssuer::new(vec![Arc::new(letsencrypt), Arc::new(zerossl)])?;
/// // Renewer::builder(...).acme(Arc::new(issuer))
/// # let _ = issuer; Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FallbackIssuer {
    issuers: Vec<Arc<dyn Issuer>>,
}

impl FallbackIssuer {
    /// The issuers, first tried first; at least one, else
    /// [`Error::Config`].
    pub fn new(issuers: Vec<Arc<dyn Issuer>>) -> Result<Self> {
        if issuers.is_empty() {
            return Err(Error::config(
                "FallbackIssuer::new",
                "needs at least one issuer",
            ));
        }
        Ok(Self { issuers })
    }

    /// The issuers, in the order they are tried.
    pub fn issuers(&self) -> &[Arc<dyn Issuer>] {
        &self.issuers
    }

    /// Whether `error`, from one issuer, lets the next one try: a failure
    /// of that CA or that CA's refusal of the name, not one that any CA
    /// would meet.
    pub fn tries_next(error: &Error) -> bool {
        if error.is_ca_unavailable() || error.is_rate_limited() {
            return true;
        }
        match error {
            // This issuer cannot prove a wildcard; another may.
            Error::WildcardNeedsDns01 { .. } => true,
            // This CA's budget is spent; another CA's is its own (a name's
            // failed validations are the same anywhere).
            Error::BudgetSpent { budget, .. } => *budget != crate::error::Budget::FailedValidations,
            Error::Acme {
                problem: Some(problem),
                ..
            } => !matches!(
                problem.kind(),
                // The name's own answer failed validation: the same anywhere.
                ProblemKind::Connection
                    | ProblemKind::Dns
                    | ProblemKind::IncorrectResponse
                    | ProblemKind::Tls
                    | ProblemKind::Unauthorized
            ),
            // A refusal without a problem document (a challenge type the CA
            // does not offer ...), or the CA's own failure.
            Error::Acme { problem: None, .. } => true,
            _ => false,
        }
    }
}

#[async_trait]
impl Issuer for FallbackIssuer {
    /// Asks each issuer in turn with the same request; each decides about
    /// [`IssueRequest::replaces`] itself (an ACME issuer names the replaced
    /// certificate only when it issued it).
    async fn issue(&self, request: &IssueRequest) -> Result<Issued> {
        let domain = &request.domain;
        let mut last = None;
        for (index, issuer) in self.issuers.iter().enumerate() {
            let tried = match issuer.check(domain) {
                Ok(()) => issuer.issue(request).await,
                Err(e) => Err(e),
            };
            match tried {
                Ok(issued) => return Ok(issued),
                Err(e) if Self::tries_next(&e) && index + 1 < self.issuers.len() => {
                    tracing::warn!(
                        %domain,
                        issuer = %issuer.kind(),
                        next = %self.issuers[index + 1].kind(),
                        error = %e,
                        code = e.code(),
                        "this CA could not issue; trying the next one"
                    );
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::config("FallbackIssuer::new", "no issuer")))
    }

    /// The first issuer's kind; each [`Issued`] names the one that issued.
    fn kind(&self) -> IssuerKind {
        self.issuers[0].kind()
    }

    /// Admits a request one of the issuers would take now (each CA has its
    /// own budgets); else the first spent budget, or the first refusal.
    async fn admit(&self, request: &IssueRequest) -> Result<()> {
        let (mut spent, mut refused) = (None, None);
        for issuer in &self.issuers {
            let admitted = match issuer.check(&request.domain) {
                Ok(()) => issuer.admit(request).await,
                Err(e) => Err(e),
            };
            match admitted {
                Ok(()) => return Ok(()),
                // The name's failed validations stop `issue` at this
                // issuer too (another CA meets the same failure).
                Err(
                    e @ Error::BudgetSpent {
                        budget: crate::error::Budget::FailedValidations,
                        ..
                    },
                ) => return Err(e),
                Err(e @ Error::BudgetSpent { .. }) => {
                    spent.get_or_insert(e);
                }
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        Err(spent
            .or(refused)
            .unwrap_or_else(|| Error::config("FallbackIssuer::new", "no issuer")))
    }

    /// Accepts a name one of the issuers accepts (a wildcard needs one
    /// with a DNS-01 solver); else the first one's refusal.
    fn check(&self, domain: &Domain) -> Result<()> {
        let mut first = None;
        for issuer in &self.issuers {
            match issuer.check(domain) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| Error::config("FallbackIssuer::new", "no issuer")))
    }

    /// The renewal window (ARI) of the first issuer that has one for this
    /// certificate: the CA that issued it knows it, the others do not.
    async fn renewal_window(
        &self,
        domain: &Domain,
        chain_pem: &str,
    ) -> Result<Option<RenewalWindow>> {
        let mut last_error = None;
        for issuer in &self.issuers {
            match issuer.renewal_window(domain, chain_pem).await {
                Ok(Some(window)) => return Ok(Some(window)),
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            Some(e) if self.issuers.len() == 1 => Err(e),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::AcmeProblem;

    /// An issuer that fails with a given error and counts its calls: the
    /// rule under test only looks at errors.
    #[derive(Debug)]
    struct Failing {
        name: &'static str,
        error: fn() -> Error,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Issuer for Failing {
        async fn issue(&self, _: &IssueRequest) -> Result<Issued> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err((self.error)())
        }
        fn kind(&self) -> IssuerKind {
            IssuerKind::new(self.name).unwrap()
        }
    }

    fn acme(kind: &str) -> Error {
        Error::Acme {
            domain: None,
            step: "new-order",
            problem: Some(Box::new(AcmeProblem {
                type_uri: Some(format!("urn:ietf:params:acme:error:{kind}")),
                detail: None,
                status: Some(403),
                subproblems: Vec::new(),
            })),
            message: kind.into(),
            source: None,
        }
    }

    #[test]
    fn the_next_ca_is_tried_for_the_cas_own_failures_and_refusals_only() {
        for kind in [
            "rejectedIdentifier",
            "caa",
            "rateLimited",
            "serverInternal",
            "externalAccountRequired",
            "accountDoesNotExist",
            "unsupportedIdentifier",
        ] {
            assert!(FallbackIssuer::tries_next(&acme(kind)), "{kind}");
        }
        for kind in [
            "connection",
            "dns",
            "incorrectResponse",
            "tls",
            "unauthorized",
        ] {
            assert!(!FallbackIssuer::tries_next(&acme(kind)), "{kind}");
        }
        assert!(FallbackIssuer::tries_next(&Error::Timeout {
            step: "order",
            after: std::time::Duration::from_secs(1)
        }));
        assert!(!FallbackIssuer::tries_next(&Error::config("x", "y")));
        assert!(FallbackIssuer::new(Vec::new()).is_err());
    }

    #[tokio::test]
    async fn a_failure_any_ca_would_meet_ends_the_attempt_at_the_first() {
        let first = Arc::new(Failing {
            name: "first",
            error: || acme("incorrectResponse"),
            calls: AtomicUsize::new(0),
        });
        let second = Arc::new(Failing {
            name: "second",
            error: || acme("rejectedIdentifier"),
            calls: AtomicUsize::new(0),
        });
        let issuer = FallbackIssuer::new(vec![first.clone(), second.clone()]).unwrap();
        let request = IssueRequest::new(Domain::new("www.example.com").unwrap());
        let err = issuer.issue(&request).await.unwrap_err();
        assert!(err
            .acme_problem()
            .unwrap()
            .is(ProblemKind::IncorrectResponse));
        assert_eq!(
            (
                first.calls.load(Ordering::SeqCst),
                second.calls.load(Ordering::SeqCst)
            ),
            (1, 0)
        );

        // The first refusing the name: the second is asked, and its error is the answer.
        let first = Arc::new(Failing {
            name: "first",
            error: || acme("rejectedIdentifier"),
            calls: AtomicUsize::new(0),
        });
        let second = Arc::new(Failing {
            name: "second",
            error: || acme("caa"),
            calls: AtomicUsize::new(0),
        });
        let issuer = FallbackIssuer::new(vec![first.clone(), second.clone()]).unwrap();
        let err = issuer.issue(&request).await.unwrap_err();
        assert!(err.acme_problem().unwrap().is(ProblemKind::Caa));
        assert_eq!(
            (
                first.calls.load(Ordering::SeqCst),
                second.calls.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        assert_eq!(issuer.kind().as_str(), "first");
    }
}
