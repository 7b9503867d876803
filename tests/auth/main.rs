//! Integration tests for authentication: JWT bearer tokens (static keys,
//! JWKS, OIDC discovery) and API keys, over real HTTP and gRPC against a
//! real server behind `mesh.inbound()`, and the standalone `AuthLayer`.
//!
//! Key fixtures (test-only) are in `keys/`; `interop.py` needs PyJWT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_keys;
mod claims;
mod grpc;
mod interop;
mod jwks;
mod scopes;
mod standalone;
mod support;
mod threats;
