//! The CA's answers as typed errors.

use instant_acme::Problem;

use crate::error::{AcmeProblem, AcmeSubproblem, ProblemKind};
use crate::{Domain, Error};

/// Whether the CA rejected the request's anti-replay nonce.
pub(super) fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(problem)
        if ProblemKind::from_uri(problem.r#type.as_deref()) == ProblemKind::BadNonce)
}

/// An [`Error::Acme`] for a failed call: the CA's problem document when it
/// sent one, else the client's error (a refused connection ...) as source.
pub(super) fn acme_error(
    domain: Option<&Domain>,
    step: &'static str,
    e: instant_acme::Error,
) -> Error {
    match e {
        instant_acme::Error::Api(problem) => problem_error(domain, step, &problem),
        other => Error::Acme {
            domain: domain.cloned(),
            step,
            problem: None,
            message: describe(&other),
            source: Some(Box::new(other)),
        },
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
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
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

    #[test]
    fn a_client_error_is_kept_as_the_source() {
        let error = acme_error(
            None,
            "account",
            instant_acme::Error::Str("connection refused"),
        );
        assert_eq!(error.code(), "acme_unreachable");
        assert!(std::error::Error::source(&error).is_some());
        assert!(error.to_string().contains("connection refused"), "{error}");
    }
}
