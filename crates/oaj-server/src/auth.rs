//! Bearer-token access control.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The configured token, if any.
#[derive(Clone)]
pub(crate) struct Token(Option<Arc<[u8]>>);

impl Token {
    pub(crate) fn new(token: Option<String>) -> Token {
        Token(token.map(|token| Arc::from(token.into_bytes())))
    }

    /// Compares in time that depends only on the lengths, so that a caller cannot find the
    /// token byte by byte from response times.
    fn is_match(&self, given: &[u8]) -> bool {
        match &self.0 {
            None => true,
            Some(expected) => bool::from(expected.as_ref().ct_eq(given)),
        }
    }
}

/// Rejects a request without the configured bearer token with 401 `unauthorized`. The message is
/// the same for a missing and a wrong token, so it reveals nothing about the token.
pub(crate) async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    if token.0.is_none() {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(given) if token.is_match(given) => next.run(request).await,
        _ => {
            let error = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid bearer token: send Authorization: Bearer <token>",
            );
            let mut response = error.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}
