//! One order: new-order, challenges presented and validated, finalize,
//! the chain fetched and checked.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    Order, OrderStatus, Problem, RetryPolicy,
};
use tokio::time::timeout;
use zeroize::Zeroizing;

use super::{client, problem, AcmeIssuer, BAD_NONCE_ATTEMPTS};
use crate::cert::{leaf_der, IssuedCert};
use crate::challenge::{Challenge, ChallengeKind, ChallengeSolver};
use crate::config::Setting;
use crate::error::{CertProblem, ProblemKind};
use crate::issuer::budget::{OrderKind, Reservation};
use crate::{Domain, Error, Result};

/// The first wait before polling an order, growing by [`POLL_BACKOFF`].
const FIRST_POLL_DELAY: Duration = Duration::from_millis(50);
/// Growth of the wait between two polls.
const POLL_BACKOFF: f32 = 2.0;
/// The wait for an order that lags its refused authorization.
const ORDER_LAG_WAIT: Duration = Duration::from_millis(250);

/// An authorization of the order, as fetched.
struct Pending {
    url: String,
    status: AuthorizationStatus,
    /// The challenge of the solver's type, with its key authorization.
    challenge: Option<Challenge>,
    /// Every challenge type the CA offers, for the error when ours is missing.
    offered: Vec<String>,
}

impl AcmeIssuer {
    /// Runs one order. Challenges presented are recorded in `presented` so
    /// they are cleaned up whatever happens, a timeout included.
    pub(super) async fn run_order(
        &self,
        domain: &Domain,
        replaces: Option<&str>,
        presented: &mut Presented,
    ) -> Result<IssuedCert> {
        let (account, generation) = self.account().await?;
        self.check_profile(&account, domain)?;
        // Without `replaces`, a renewal counts against the CA's duplicate
        // budget, and a first certificate against its registered domain's.
        let plain_kind = self.budgets.order_kind(replaces, false);
        let replaces = match replaces {
            Some(chain_pem) => self.replaces_id(chain_pem).await,
            None => None,
        };
        let replaces = replaces.as_ref();
        let (mut order, reservation) =
            match self.new_order(&account, domain, plain_kind, replaces).await {
                // The CA forgot the account (a reset CA): a new account, once.
                Err(e) if is_unknown_account(&e) => {
                    let (account, _) = self.replace_account(generation).await?;
                    self.new_order(&account, domain, plain_kind, replaces)
                        .await?
                }
                // A key the CA no longer takes, when another instance rolled
                // it over: the stored one, once.
                Err(e) if super::account::may_be_stale_key(&e) => {
                    match self.follow_stored_account(generation).await? {
                        Some((account, _)) => {
                            self.new_order(&account, domain, plain_kind, replaces)
                                .await?
                        }
                        None => return Err(e),
                    }
                }
                other => other?,
            };
        let order_url = order.url().to_owned();
        tracing::info!(%domain, %order_url, "ACME order created");

        let wanted = challenge_type(presented.solver.kind());
        for authz in self.authorizations(&mut order, domain, &wanted).await? {
            let Some(authz_url) = self.present(domain, authz, presented).await? else {
                continue;
            };
            self.set_ready(&mut order, domain, &authz_url, &wanted)
                .await?;
        }

        self.await_validation(&mut order, domain).await?;
        tracing::debug!(%domain, %order_url, "challenges validated");
        presented.clean_up().await;

        let key = rcgen::KeyPair::generate_for(self.key_type.algorithm())
            .map_err(|e| Error::certificate(Some(domain), CertProblem::KeyGeneration, e))?;
        let csr = csr_der(domain, &key)?;
        retry!(self, "finalize", Some(domain), order.finalize_csr(&csr))?;
        tracing::debug!(%domain, %order_url, "order finalized");

        let policy = self.poll_policy();
        let chain = retry!(
            limit: self.request_timeout,
            "certificate",
            Some(domain),
            order.poll_certificate(&policy)
        )?;
        check_leaf(domain, &chain, &key)?;
        // Issued: it counts in the CA's budgets it is not exempt from.
        if let Some(reservation) = reservation {
            self.budgets.commit(reservation).await;
        }
        let issued = IssuedCert::from_pem(chain, Zeroizing::new(key.serialize_pem()))?;
        tracing::info!(
            %domain,
            %order_url,
            not_after = %issued.not_after,
            fingerprint = %issued.fingerprint,
            "certificate issued"
        );
        Ok(issued)
    }

    /// A new order, with the profile and the replaced certificate's id.
    /// A CA that refuses the `replaces` field (the certificate is unknown
    /// to it, or was replaced already) gets the order again without it. A
    /// CA that creates the order but does not echo `replaces` (RFC 9773
    /// section 5 says it must) keeps that order, fetched by its URL, and is
    /// remembered, so later renewals with it are sent without `replaces`.
    ///
    /// An order sent without `replaces` holds a place in the CA's budgets
    /// for an order of `plain_kind` (returned, to be counted once the
    /// certificate is issued); one sent with it is exempt.
    async fn new_order(
        &self,
        account: &Account,
        domain: &Domain,
        plain_kind: OrderKind,
        replaces: Option<&CertificateIdentifier<'static>>,
    ) -> Result<(Order, Option<Reservation>)> {
        let identifiers = [match domain.ip() {
            Some(ip) => Identifier::Ip(ip),
            None => Identifier::Dns(domain.to_string()),
        }];
        let plain = || {
            let order = NewOrder::new(&identifiers);
            match self.profile_for(domain) {
                Some(profile) => order.profile(profile),
                None => order,
            }
        };
        let new_order = plain();
        let send_plain = || async {
            let reservation = self
                .budgets
                .reserve_new_certificate(&self.account_id, domain, plain_kind)
                .await?;
            let order = retry!(
                self,
                "new-order",
                Some(domain),
                account.new_order(&new_order)
            )?;
            Ok((order, Some(reservation)))
        };
        let Some(replaces) = replaces else {
            return send_plain().await;
        };
        let replacing = plain().replaces(replaces.clone());
        let created = client::CreatedSlot::default();
        match retry!(
            self,
            "new-order",
            Some(domain),
            client::capturing(&created, account.new_order(&replacing))
        ) {
            Err(e) if e.acme_protocol_error().is_some() => {
                let noted = created.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some((url, echoed)) = unechoed_replaces(noted, replaces) else {
                    return Err(e);
                };
                self.remember_drops_replaces(domain, echoed.as_deref())
                    .await;
                tracing::info!(%domain, order_url = %url, "keeping the order the CA created without echoing replaces");
                retry!(self, "new-order", Some(domain), account.order(url.clone()))
                    .map(|order| (order, None))
            }
            Err(e) if refused_replaces(&e) => {
                tracing::info!(%domain, error = %e, "the CA refused the replaced certificate's id; ordering without it");
                send_plain().await
            }
            other => {
                if other.is_ok() {
                    tracing::debug!(%domain, %replaces, "order replaces the previous certificate");
                }
                other.map(|order| (order, None))
            }
        }
    }

    /// The profile asked for `domain` must be one the CA's directory lists.
    fn check_profile(&self, account: &Account, domain: &Domain) -> Result<()> {
        let Some(profile) = self.profile_for(domain) else {
            return Ok(());
        };
        let mut offered: Vec<&str> = account.profiles().map(|p| p.name).collect();
        if offered.contains(&profile) {
            return Ok(());
        }
        offered.sort_unstable();
        let setting = match &self.ip_profile {
            Some(_) if domain.ip().is_some() => self
                .naming
                .of(Setting::AcmeIpProfile, super::IP_PROFILE_METHOD),
            _ => self.naming.of(Setting::AcmeProfile, super::PROFILE_METHOD),
        };
        Err(Error::config(
            setting,
            if offered.is_empty() {
                format!(
                    "the CA at {} offers no certificate profiles, so {profile:?} cannot be ordered",
                    self.directory_url
                )
            } else {
                format!(
                    "the CA at {} offers no profile {profile:?}; it offers: {}",
                    self.directory_url,
                    offered.join(", ")
                )
            },
        ))
    }

    /// Every authorization of the order, with the challenge of the solver's
    /// type and its key authorization (computed by instant-acme). Already
    /// fetched ones are not fetched again when a try is repeated.
    async fn authorizations(
        &self,
        order: &mut Order,
        domain: &Domain,
        wanted: &ChallengeType,
    ) -> Result<Vec<Pending>> {
        retry!(self, "authorization", Some(domain), async {
            let mut found = Vec::new();
            let mut stream = order.authorizations();
            while let Some(authz) = stream.next().await {
                let mut authz = authz?;
                let url = authz.url().to_owned();
                let status = authz.status;
                let offered = authz
                    .challenges
                    .iter()
                    .map(|c| challenge_type_name(&c.r#type))
                    .collect();
                let challenge = authz.challenge(wanted.clone()).map(|handle| {
                    let key_authorization = handle.key_authorization();
                    Challenge {
                        domain: domain.clone(),
                        token: handle.token.clone(),
                        key_authorization: key_authorization.as_str().to_owned(),
                        dns_value: key_authorization.dns_value(),
                    }
                });
                found.push(Pending {
                    url,
                    status,
                    challenge,
                    offered,
                });
            }
            Ok::<_, instant_acme::Error>(found)
        })
    }

    /// Presents the challenge of a pending authorization; `None` when the
    /// authorization is already valid.
    async fn present(
        &self,
        domain: &Domain,
        authz: Pending,
        presented: &mut Presented,
    ) -> Result<Option<String>> {
        match authz.status {
            AuthorizationStatus::Valid => {
                tracing::debug!(%domain, authz_url = %authz.url, "authorization already valid");
                return Ok(None);
            }
            AuthorizationStatus::Pending => {}
            other => {
                return Err(problem::refused(
                    domain,
                    "authorization",
                    format!("authorization {} is {other:?}, not pending", authz.url),
                ))
            }
        }
        let challenge = authz.challenge.ok_or_else(|| {
            problem::refused(
                domain,
                "authorization",
                format!(
                    "the CA offers no {} challenge, only: {}",
                    presented.solver.kind().as_str(),
                    authz.offered.join(", ")
                ),
            )
        })?;
        presented.push(challenge.clone());
        let solver = presented.solver.clone();
        solver.present(&challenge).await?;
        tracing::debug!(%domain, kind = solver.kind().as_str(), "challenge presented");
        Ok(Some(authz.url))
    }

    /// Tells the CA the challenge of `authz_url` is ready. A CA that
    /// validates at once may answer with the validation's own failure:
    /// that is reported as a validation failure, with its reasons.
    async fn set_ready(
        &self,
        order: &mut Order,
        domain: &Domain,
        authz_url: &str,
        wanted: &ChallengeType,
    ) -> Result<()> {
        let ready = retry!(self, "challenge", Some(domain), async {
            let mut stream = order.authorizations();
            while let Some(authz) = stream.next().await {
                let mut authz = authz?;
                if authz.url() != authz_url {
                    continue;
                }
                let mut challenge = authz
                    .challenge(wanted.clone())
                    .ok_or(instant_acme::Error::Str("challenge vanished"))?;
                return challenge.set_ready().await;
            }
            Err(instant_acme::Error::Str("authorization vanished"))
        });
        let Err(refused) = ready else {
            return Ok(());
        };
        for _ in 0..3 {
            let refreshed = retry!(self, "validation", Some(domain), async {
                let state = order.refresh().await?;
                Ok::<_, instant_acme::Error>((state.status, state.error.clone()))
            });
            match refreshed {
                // The order may lag its authorization by a moment.
                Ok((OrderStatus::Pending, _)) => tokio::time::sleep(ORDER_LAG_WAIT).await,
                Ok((OrderStatus::Invalid, error)) => {
                    return Err(self.invalid_order(order, domain, error).await)
                }
                _ => break,
            }
        }
        Err(refused)
    }

    /// Waits, with instant-acme's polling (growing waits that honour the
    /// CA's Retry-After), until the CA has validated or refused the order.
    async fn await_validation(&self, order: &mut Order, domain: &Domain) -> Result<()> {
        let policy = self.poll_policy();
        let polled = retry!(
            limit: self.request_timeout,
            "validation",
            Some(domain),
            order.poll_ready(&policy)
        );
        let problem = match polled {
            Ok(OrderStatus::Ready) => return Ok(()),
            Ok(_) => order.state().error.clone(),
            // The order's own problem: the order is invalid.
            Err(Error::Acme {
                problem: Some(_), ..
            }) => order.state().error.clone(),
            Err(e) => return Err(e),
        };
        Err(self.invalid_order(order, domain, problem).await)
    }

    /// How an order is polled: a short first wait (50 ms) doubling each
    /// time, a Retry-After from the CA winning, for at most one request
    /// timeout, so a CA that goes silent while validating costs no more
    /// than one request timeout.
    fn poll_policy(&self) -> RetryPolicy {
        RetryPolicy::new()
            .initial_delay(FIRST_POLL_DELAY)
            .backoff(POLL_BACKOFF)
            .timeout(self.request_timeout)
    }

    /// The error for an order the CA declared invalid, with its reasons.
    async fn invalid_order(
        &self,
        order: &mut Order,
        domain: &Domain,
        order_error: Option<Problem>,
    ) -> Error {
        let (why, challenge_problem) = self.why_invalid(order, domain, order_error.as_ref()).await;
        tracing::info!(%domain, order_url = order.url(), reason = %why, "ACME order invalid");
        // The failed challenge's problem names the cause (connection,
        // incorrectResponse ...); the order's own is often generic.
        let problem = challenge_problem.or(order_error);
        Error::Acme {
            domain: Some(domain.clone()),
            step: "validation",
            problem: problem.as_ref().map(|p| Box::new(problem::typed(p))),
            message: why,
            source: None,
        }
    }

    /// The CA's reasons for an invalid order: the order's own problem and
    /// each failed challenge's problem.
    async fn why_invalid(
        &self,
        order: &mut Order,
        domain: &Domain,
        order_error: Option<&Problem>,
    ) -> (String, Option<Problem>) {
        // The refreshed order holds no authorization state, so this fetches it anew.
        let fetched = retry!(self, "validation", Some(domain), async {
            let mut found = Vec::new();
            let mut first = None;
            let mut stream = order.authorizations();
            while let Some(authz) = stream.next().await {
                let authz = authz?;
                for challenge in &authz.challenges {
                    if let Some(problem) = &challenge.error {
                        found.push(format!(
                            "{} challenge for {}: {}",
                            challenge_type_name(&challenge.r#type),
                            authz.identifier(),
                            problem::typed(problem)
                        ));
                        first.get_or_insert_with(|| problem.clone());
                    }
                }
            }
            Ok::<_, instant_acme::Error>((found, first))
        });
        let (mut reasons, challenge_problem) = match fetched {
            Ok(found) => found,
            Err(e) => (
                vec![format!("(the authorizations could not be read: {e})")],
                None,
            ),
        };
        // CAs often copy the failed challenge's problem into the order's.
        if let Some(problem) = order_error.map(|p| problem::typed(p).to_string()) {
            if !reasons.iter().any(|reason| reason.ends_with(&problem)) {
                reasons.insert(0, problem);
            }
        }
        if reasons.is_empty() {
            reasons.push("the CA marked the order invalid without saying why".into());
        }
        (reasons.join("; "), challenge_problem)
    }
}

/// The challenges one issue has presented. Cleaned up by the issue itself;
/// if the future is dropped halfway (a caller's own timeout), the
/// rest is cleaned up by a background task, so no answer stays served.
pub(super) struct Presented {
    solver: Arc<dyn ChallengeSolver>,
    limit: Duration,
    challenges: Vec<Challenge>,
}

impl Presented {
    pub(super) fn new(solver: Arc<dyn ChallengeSolver>, limit: Duration) -> Self {
        Self {
            solver,
            limit,
            challenges: Vec::new(),
        }
    }

    pub(super) async fn clean_up(&mut self) {
        for challenge in self.challenges.drain(..) {
            clean_up(&*self.solver, &challenge, self.limit).await;
        }
    }
}

impl Drop for Presented {
    fn drop(&mut self) {
        if self.challenges.is_empty() {
            return;
        }
        let challenges = std::mem::take(&mut self.challenges);
        let solver = self.solver.clone();
        let limit = self.limit;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    for challenge in &challenges {
                        clean_up(&*solver, challenge, limit).await;
                    }
                });
            }
            Err(_) => tracing::warn!(
                count = challenges.len(),
                "issue dropped outside a runtime: challenges stay presented"
            ),
        }
    }
}

/// Asks the solver to stop answering; a failure is logged, not returned, as
/// the certificate (or the original error) matters more.
async fn clean_up(solver: &dyn ChallengeSolver, challenge: &Challenge, limit: Duration) {
    match timeout(limit, solver.cleanup(challenge)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(domain = %challenge.domain, error = %e, "challenge cleanup failed")
        }
        Err(_) => tracing::warn!(domain = %challenge.domain, "challenge cleanup timed out"),
    }
}

impl Presented {
    fn push(&mut self, challenge: Challenge) {
        self.challenges.push(challenge);
    }
}

/// The CA no longer knows the account that signed the request.
fn is_unknown_account(e: &Error) -> bool {
    e.acme_problem()
        .is_some_and(|problem| problem.is(ProblemKind::AccountDoesNotExist))
}

/// The URL of an order the CA created (`201 Created` with a `Location`
/// and an order object) without echoing `replaces` as sent, and what it
/// echoed instead; `None` when the answer was not such an order.
fn unechoed_replaces(
    noted: Option<client::Created>,
    sent: &CertificateIdentifier<'static>,
) -> Option<(String, Option<String>)> {
    let created = noted?;
    let url = created.location.filter(|_| created.is_object)?;
    if created.replaces.as_deref() == Some(sent.to_string().as_str()) {
        return None;
    }
    Some((url, created.replaces))
}

/// The CA refused an order for its `replaces` field: the certificate is not
/// one it knows for this account, or it was replaced already (RFC 9773
/// section 5: `malformed`, `unauthorized`, or `alreadyReplaced`).
/// Whether a CA's refusal of an order carrying `replaces` may be the
/// field's fault, so the order is sent once more without it: `malformed`,
/// `alreadyReplaced`, `unauthorized`, and `serverInternal` other than a
/// 503 (a CA that fails to look the replaced certificate up, as Pebble 2.10
/// does for a serial starting with a zero byte; in a real outage the second
/// order fails the same way and the CA is unavailable as before). The
/// order without `replaces` counts in the CA's budgets only once issued.
fn refused_replaces(e: &Error) -> bool {
    e.acme_problem().is_some_and(|problem| {
        problem.is(ProblemKind::Malformed)
            || problem.is(ProblemKind::AlreadyReplaced)
            || problem.is(ProblemKind::Unauthorized)
            || (problem.is(ProblemKind::ServerInternal) && problem.status != Some(503))
    })
}

fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

fn challenge_type_name(kind: &ChallengeType) -> String {
    match kind {
        ChallengeType::Http01 => "http-01".into(),
        ChallengeType::Dns01 => "dns-01".into(),
        ChallengeType::TlsAlpn01 => "tls-alpn-01".into(),
        ChallengeType::DeviceAttest01 => "device-attest-01".into(),
        ChallengeType::Unknown(name) => name.chars().take(40).collect(),
        _ => "unknown".into(),
    }
}

/// A CSR for `domain` signed by `key`, with an empty subject as CAs ignore it.
fn csr_der(domain: &Domain, key: &rcgen::KeyPair) -> Result<Vec<u8>> {
    let cert_error = |e: rcgen::Error| Error::certificate(Some(domain), CertProblem::Generation, e);
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(cert_error)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(key).map_err(cert_error)?;
    Ok(csr.der().to_vec())
}

/// Checks that the CA's leaf is for our key and names `domain`.
fn check_leaf(domain: &Domain, chain_pem: &str, key: &rcgen::KeyPair) -> Result<()> {
    let leaf = leaf_der(chain_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| Error::certificate(Some(domain), CertProblem::Unparsable, e.to_string()))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(Error::certificate_problem(
            Some(domain),
            CertProblem::WrongKey,
        ));
    }
    let names_domain = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value.general_names.iter().any(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    dns.eq_ignore_ascii_case(domain.as_str())
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    domain.ip().is_some_and(|ip| match ip {
                        std::net::IpAddr::V4(v4) => *bytes == v4.octets(),
                        std::net::IpAddr::V6(v6) => *bytes == v6.octets(),
                    })
                }
                _ => false,
            })
        });
    if !names_domain {
        return Err(Error::certificate_problem(
            Some(domain),
            CertProblem::WrongName,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_order_created_without_the_replaces_sent_is_kept() {
        let sent = CertificateIdentifier::new(
            rustls_pki_types::Der::from_slice(&[1, 2, 3]),
            rustls_pki_types::Der::from_slice(&[4, 5]),
        )
        .into_owned();
        let created = |location: Option<&str>, is_object, replaces: Option<String>| {
            Some(client::Created {
                location: location.map(str::to_owned),
                is_object,
                replaces,
            })
        };
        let at = "https://ca.example/order/1";
        let url = Some(at);
        assert_eq!(
            unechoed_replaces(created(url, true, None), &sent),
            Some((at.to_owned(), None))
        );
        let other = Some("AQID.BAUG".to_owned());
        assert_eq!(
            unechoed_replaces(created(url, true, other.clone()), &sent),
            Some((at.to_owned(), other))
        );
        // Echoed as sent: the refusal was about something else.
        assert_eq!(
            unechoed_replaces(created(url, true, Some(sent.to_string())), &sent),
            None
        );
        // No order to keep: no URL, an answer that is no order, no answer.
        assert_eq!(unechoed_replaces(created(None, true, None), &sent), None);
        assert_eq!(unechoed_replaces(created(url, false, None), &sent), None);
        assert_eq!(unechoed_replaces(None, &sent), None);
    }
}
