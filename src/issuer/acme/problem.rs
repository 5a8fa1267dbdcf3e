//! The CA's answers as typed errors.

use instant_acme::Problem;

use super::client::{ClientFailure, ErrorStatus};
use crate::error::{AcmeProblem, AcmeProtocolError, AcmeSubproblem, ProblemKind};
use crate::{Domain, Error};

/// Whether the CA rejected the request's anti-replay nonce.
pub(super) fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(problem)
        if ProblemKind::from_uri(problem.r#type.as_deref()) == ProblemKind::BadNonce)
}

/// An [`Error::Acme`] for a failed call, classed by what it is:
///
/// - the CA's problem document: typed by its problem type;
/// - no answer (a refused connection, TLS, a connection cut short, see
///   [`ClientFailure`]), an error status of the server (5xx, 429, 408)
///   without a problem document, or a failure on this side (crypto): the
///   CA is unavailable, the client's error kept as source;
/// - any other answer instant-acme refuses (JSON that does not decode, a
///   missing `Location` or nonce, a mismatched field, another error status
///   without a problem document, a URL that cannot be requested): the CA
///   broke the protocol, an [`AcmeProtocolError`] as source.
pub(super) fn acme_error(
    domain: Option<&Domain>,
    step: &'static str,
    e: instant_acme::Error,
) -> Error {
    use instant_acme::Error as E;
    let e = match e {
        E::Api(problem) => return problem_error(domain, step, &problem),
        E::Other(inner) => match inner.downcast::<ErrorStatus>() {
            Ok(status) if status.is_outage() => return unavailable(domain, step, status),
            Ok(status) => {
                let code = status.status.as_u16();
                return protocol_error(
                    domain,
                    step,
                    AcmeProtocolError::new(status.to_string(), Some(code), None),
                );
            }
            Err(inner) => match inner.downcast::<ClientFailure>() {
                Ok(failure) => return unavailable(domain, step, failure),
                Err(inner) => E::Other(inner),
            },
        },
        other => other,
    };
    let reason = match &e {
        E::Json(json) => format!("its JSON does not decode ({json})"),
        E::Http(_) | E::InvalidUri(_) => format!("it gave a URL that cannot be requested ({e})"),
        // instant-acme's own objections to an answer: a missing Location,
        // nonce or certificate URL, `replaces` not echoed, a status that
        // does not fit the step.
        E::Str(_) | E::Unsupported(_) | E::Other(_) => describe(&e),
        // A failure on this side (crypto, a key), or a timeout: classed as
        // before, with the CA's outages.
        _ => return unavailable(domain, step, Box::new(e)),
    };
    protocol_error(
        domain,
        step,
        AcmeProtocolError::new(reason, None, Some(Box::new(e))),
    )
}

/// An [`Error::Acme`] for a CA that could not be reached or failed on its
/// side, with the client's error as source.
fn unavailable(
    domain: Option<&Domain>,
    step: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> Error {
    Error::Acme {
        domain: domain.cloned(),
        step,
        problem: None,
        message: describe_chain(&*source),
        source: Some(source),
    }
}

/// An [`Error::Acme`] for an answer of the CA that breaks the protocol.
pub(super) fn protocol_error(
    domain: Option<&Domain>,
    step: &'static str,
    error: AcmeProtocolError,
) -> Error {
    Error::Acme {
        domain: domain.cloned(),
        step,
        problem: None,
        message: error.to_string(),
        source: Some(Box::new(error)),
    }
}

/// An [`Error::Acme`] carrying the CA's problem document.
pub(super) fn problem_error(
    domain: Option<&Domain>,
    step: &'static str,
    problem: &Problem,
) -> Error {
    let problem = typed(problem);
    Error::Acme {
        domain: domain.cloned(),
        step,
        message: problem.to_string(),
        problem: Some(Box::new(problem)),
        source: None,
    }
}

/// An [`Error::Acme`] for a refusal that is not a problem document.
pub(super) fn refused(domain: &Domain, step: &'static str, message: String) -> Error {
    Error::Acme {
        domain: Some(domain.clone()),
        step,
        problem: None,
        message,
        source: None,
    }
}

/// instant-acme's problem document as certkeeper's.
pub(super) fn typed(problem: &Problem) -> AcmeProblem {
    AcmeProblem {
        type_uri: problem.r#type.clone(),
        detail: problem.detail.clone(),
        status: problem.status,
        subproblems: problem
            .subproblems
            .iter()
            .map(|sub| AcmeSubproblem {
                identifier: sub
                    .identifier
                    .as_ref()
                    .map(|i| i.authorized(false).to_string()),
                type_uri: sub.r#type.clone(),
                detail: sub.detail.clone(),
            })
            .collect(),
    }
}

/// An instant-acme error as one readable line: the error and its causes.
fn describe(e: &instant_acme::Error) -> String {
    describe_chain(e)
}

/// An error as one readable line: the error and its causes.
fn describe_chain(e: &(dyn std::error::Error + '_)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_keep_their_type_detail_and_subproblems() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Error creating new order",
            "status": 400,
            "subproblems": [{
                "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                "detail": "blocked by policy",
                "identifier": {"type": "dns", "value": "bad.example.com"}
            }]
        }))
        .unwrap();
        let domain = Domain::new("bad.example.com").unwrap();
        let error = acme_error(
            Some(&domain),
            "new-order",
            instant_acme::Error::Api(problem.clone()),
        );
        assert_eq!(error.code(), "acme_rejected_identifier");
        let typed = error.acme_problem().unwrap();
        assert_eq!(typed.kind(), ProblemKind::RejectedIdentifier);
        assert_eq!(typed.status, Some(400));
        assert_eq!(
            error.to_string(),
            "ACME new-order failed for bad.example.com: \
             urn:ietf:params:acme:error:rejectedIdentifier: Error creating new order; \
             bad.example.com: urn:ietf:params:acme:error:rejectedIdentifier: blocked by policy"
        );
        assert!(!is_bad_nonce(&instant_acme::Error::Api(problem)));
        let nonce: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:badNonce"
        }))
        .unwrap();
        assert!(is_bad_nonce(&instant_acme::Error::Api(nonce)));
    }

    /// An error status without a problem document, as the checked client
    /// reports it.
    fn status(code: u16, retry_after: Option<&str>) -> instant_acme::Error {
        let mut response = hyper::Response::builder()
            .status(code)
            .header("content-type", "text/html");
        if let Some(after) = retry_after {
            response = response.header("retry-after", after);
        }
        let (parts, ()) = response.body(()).unwrap().into_parts();
        instant_acme::Error::Other(Box::new(ErrorStatus::new(&parts, 120)))
    }

    #[test]
    fn a_client_error_is_kept_as_the_source() {
        let error = acme_error(
            None,
            "account",
            ClientFailure::wrap(instant_acme::Error::Str("connection refused")),
        );
        assert_eq!(error.code(), "acme_unreachable");
        assert!(error.is_ca_unavailable());
        assert!(std::error::Error::source(&error).is_some());
        assert!(error.to_string().contains("connection refused"), "{error}");
    }

    #[test]
    fn failures_are_classed_by_what_they_are() {
        let domain = Domain::new("a.example.com").unwrap();
        let json = serde_json::from_slice::<serde_json::Value>(b"{\"status\": \"pen").unwrap_err();
        let cases: Vec<(&str, instant_acme::Error, &str)> = vec![
            ("502 page", status(502, None), "acme_unreachable"),
            (
                "503 Retry-After",
                status(503, Some("30")),
                "acme_unreachable",
            ),
            ("429 empty", status(429, None), "acme_unreachable"),
            ("404 page", status(404, None), "acme_protocol"),
            (
                "truncated JSON",
                instant_acme::Error::Json(json),
                "acme_protocol",
            ),
            (
                "no Location",
                instant_acme::Error::Str("no order URL found"),
                "acme_protocol",
            ),
            (
                "replaces not echoed",
                instant_acme::Error::Other("replaces field mismatch".into()),
                "acme_protocol",
            ),
            (
                "unsupported",
                instant_acme::Error::Unsupported("profiles"),
                "acme_protocol",
            ),
            ("crypto", instant_acme::Error::Crypto, "acme_unreachable"),
        ];
        for (shape, e, code) in cases {
            let error = acme_error(Some(&domain), "new-order", e);
            assert_eq!(error.code(), code, "{shape}: {error}");
            assert_eq!(
                error.is_ca_unavailable(),
                code == "acme_unreachable",
                "{shape}: {error}"
            );
            assert_eq!(
                error.acme_protocol_error().is_some(),
                code == "acme_protocol",
                "{shape}"
            );
            assert!(error.acme_problem().is_none(), "{shape}");
        }
        let page = acme_error(Some(&domain), "new-order", status(404, None));
        assert_eq!(page.acme_protocol_error().unwrap().status, Some(404));
        assert_eq!(
            page.to_string(),
            "ACME new-order failed for a.example.com: the CA's answer breaks the ACME protocol: \
             the CA answered HTTP 404 Not Found without a problem document (text/html, 120 bytes)"
        );
        let outage = acme_error(Some(&domain), "new-order", status(503, Some("30")));
        assert!(outage.to_string().contains("Retry-After: 30"), "{outage}");
    }
}
