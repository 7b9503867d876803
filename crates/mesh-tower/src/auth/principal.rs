//! [`Principal`]: who made the request.

use std::sync::Arc;

use mesh_core::policy::AuthMethod;

/// The authenticated caller, in the request's extensions after the auth
/// layer admitted it.
///
/// In axum it is an extractor (`Principal` or `Option<Principal>`); in tonic,
/// read `request.extensions().get::<Principal>()`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Principal {
    pub(crate) method: AuthMethod,
    pub(crate) consumer: Option<Arc<str>>,
    pub(crate) token: Option<Arc<super::token::VerifiedToken>>,
}

impl Principal {
    /// How the caller authenticated.
    pub fn method(&self) -> AuthMethod {
        self.method
    }

    /// The consumer id: the owner of the API key, or the consumer named by
    /// the token's `consumer_claim` when that consumer is configured.
    pub fn consumer(&self) -> Option<&str> {
        self.consumer.as_deref()
    }

    /// The token's `sub`.
    pub fn subject(&self) -> Option<&str> {
        self.token.as_ref().and_then(|t| t.claims.sub.as_deref())
    }

    /// The token's `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.claims.iss.as_ref())
    }

    /// The token's scopes (`scope`, space-delimited, or `scp`).
    pub fn scopes(&self) -> &[String] {
        self.token.as_ref().map_or(&[], |t| &t.claims.scopes[..])
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().iter().any(|s| s == scope)
    }

    /// A claim of the token.
    pub fn claim(&self, name: &str) -> Option<&serde_json::Value> {
        self.token.as_ref().and_then(|t| t.claims.raw.get(name))
    }

    /// All claims of the token.
    pub fn claims(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.token.as_ref().map(|t| &t.claims.raw)
    }
}

/// The rejection when a handler asks for [`Principal`] on a route without
/// authentication.
#[derive(Debug, Clone, Copy)]
pub struct MissingPrincipal(());

impl axum::response::IntoResponse for MissingPrincipal {
    fn into_response(self) -> axum::response::Response {
        let err = mesh_core::MeshError::Unauthenticated {
            bearer_error: None,
            challenge: None,
            detail: "this route is not authenticated".into(),
        };
        err.to_problem_response().map(axum::body::Body::from)
    }
}

crate::macros::extension_extractor!(Principal, MissingPrincipal);
