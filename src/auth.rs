//! Caller authentication: the [`Caller`] extractor turns a bearer token into a caller's name.
//!
//! Handlers that need a caller take a `Caller` argument; the others simply don't. Tokens are
//! compared by their SHA-256 in constant time and never logged: logs carry the caller's name.

use std::sync::Arc;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header::AUTHORIZATION, request::Parts},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{app::AppState, config::CallerToken, error::ApiError};

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
}

/// The name logged for requests in `RELAY_ALLOW_ANONYMOUS` mode that carry no token.
pub const ANONYMOUS: &str = "anonymous";

/// Who may call the relay.
#[derive(Debug)]
pub struct Callers {
    tokens: Vec<(Arc<str>, [u8; 32])>,
    allow_anonymous: bool,
}

impl Callers {
    pub fn new(tokens: &[CallerToken], allow_anonymous: bool) -> Self {
        Self {
            tokens: tokens
                .iter()
                .map(|c| (Arc::from(c.name.as_str()), c.token_sha256))
                .collect(),
            allow_anonymous,
        }
    }

    /// Without a token, a caller is anonymous if that is allowed; with one, it must be known.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(header) = headers.get(AUTHORIZATION) else {
            return if self.allow_anonymous {
                Ok(Caller {
                    name: Arc::from(ANONYMOUS),
                })
            } else {
                Err(ApiError::Unauthorized)
            };
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::Unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every caller is compared, whatever matched, so timing says nothing about which one did.
        let mut found = None;
        for (name, expected) in &self.tokens {
            if bool::from(expected.ct_eq(&presented)) {
                found = Some(name);
            }
        }
        found
            .map(|name| Caller { name: name.clone() })
            .ok_or(ApiError::Unauthorized)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = state.callers.authenticate(&parts.headers)?;
        tracing::Span::current().record("caller", &*caller.name);
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn callers(anonymous: bool) -> Callers {
        let token = |name: &str, token: &str| CallerToken {
            name: name.to_owned(),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
        };
        Callers::new(
            &[
                token("billing", "billing-token-0123456789"),
                token("alerts", "alerts-token-0123456789"),
            ],
            anonymous,
        )
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
        assert_eq!(&*caller.name, ANONYMOUS);
        assert!(
            callers(true)
                .authenticate(&with_auth("Bearer wrong"))
                .is_err()
        );
    }
}
