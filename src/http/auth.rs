//! Caller authentication: the [`Caller`] extractor turns a bearer token into a caller's name.
//!
//! Handlers that need a caller take a `Caller` argument; the others simply don't. Tokens are
//! compared by their SHA-256 in constant time and never logged: logs carry the caller's name.

use std::sync::Arc;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, header::AUTHORIZATION, request::Parts},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    http::error::ApiError,
    http::state::AppState,
    policy::{Caller, Policy},
};

/// The credentials of an `Authorization` header in `scheme` (`bearer`, `basic`; any case), trimmed.
pub fn credentials<'a>(header: &'a HeaderValue, scheme: &str) -> Option<&'a str> {
    header
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(given, _)| given.eq_ignore_ascii_case(scheme))
        .map(|(_, credentials)| credentials.trim())
}

/// The operator's endpoints (dead letters, opt-outs) want `Authorization: Bearer
/// <RELAY_ADMIN_TOKEN>`, checked before anything else: without it, nobody learns even whether
/// they are on. Without `RELAY_ADMIN_TOKEN` they are closed to everyone.
pub fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| credentials(v, "bearer"))
        .map(|token| <[u8; 32]>::from(Sha256::digest(token.as_bytes())));
    match (state.admin_token_sha256, presented) {
        (Some(expected), Some(presented)) if bool::from(expected.ct_eq(&presented)) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Without a token, a caller is anonymous if that is allowed; with one, it must be known.
pub fn authenticate(policy: Arc<Policy>, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(header) = headers.get(AUTHORIZATION) else {
        let rules = policy.anonymous.clone().ok_or(ApiError::Unauthorized)?;
        return Ok(Caller {
            name: rules.name.clone(),
            rules,
            policy,
        });
    };
    let token = credentials(header, "bearer").ok_or(ApiError::Unauthorized)?;
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Every caller is compared, whatever matched, so timing says nothing about which one did.
    let mut found = None;
    for (expected, rules) in &policy.callers {
        if bool::from(expected.ct_eq(&presented)) {
            found = Some(rules.clone());
        }
    }
    let rules = found.ok_or(ApiError::Unauthorized)?;
    Ok(Caller {
        name: rules.name.clone(),
        rules,
        policy,
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(state.policy.current(), &parts.headers)?;
        tracing::Span::current().record("caller", &*caller.name);
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    struct Callers(Arc<Policy>);

    impl Callers {
        fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
            authenticate(self.0.clone(), headers)
        }
    }

    fn callers(anonymous: bool) -> Callers {
        let rules = |name: &str, token: &str| {
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            crate::policy::CallerToken {
                name: name.to_owned(),
                token_sha256: hash,
            }
        };
        let sources = crate::policy::Sources {
            clients_file: None,
            clients: vec![
                rules("billing", "billing-token-0123456789"),
                rules("alerts", "alerts-token-0123456789"),
            ],
            allow_anonymous: anonymous,
            default_key: crate::policy::KeySource::None,
            base_url: url::Url::parse("http://qikchat.invalid").expect("url"),
            timeout: std::time::Duration::from_secs(1),
            sandbox: true,
            env: Arc::default(),
            templates: crate::policy::TemplateMode::Open,
        };
        let (spec, _) = crate::policy::load(&sources).expect("valid");
        Callers(Arc::new(
            Policy::build(spec, None, sources.timeout).expect("built"),
        ))
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn a_known_token_names_its_caller() {
        let caller = callers(false).authenticate(&with_auth("Bearer alerts-token-0123456789"));
        assert_eq!(&*caller.expect("known").name, "alerts");
        let lower = callers(false).authenticate(&with_auth("bearer billing-token-0123456789"));
        assert_eq!(&*lower.expect("scheme is case-insensitive").name, "billing");
    }

    #[test]
    fn unknown_missing_or_malformed_tokens_are_refused() {
        for value in [
            "Bearer nope",
            "Basic billing-token-0123456789",
            "billing-token-0123456789",
            "Bearer ",
        ] {
            assert!(
                callers(false).authenticate(&with_auth(value)).is_err(),
                "{value}"
            );
        }
        assert!(callers(false).authenticate(&HeaderMap::new()).is_err());
    }

    #[test]
    fn anonymous_mode_admits_requests_without_a_token_but_not_with_a_wrong_one() {
        let caller = callers(true)
            .authenticate(&HeaderMap::new())
            .expect("anonymous");
        assert_eq!(&*caller.name, crate::policy::ANONYMOUS);
        assert!(
            callers(true)
                .authenticate(&with_auth("Bearer wrong"))
                .is_err()
        );
    }
}
