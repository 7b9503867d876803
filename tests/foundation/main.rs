//! Integration tests for the foundation: the live snapshot path, the
//! registries, error rendering over real HTTP and gRPC, and the admin router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod file_registry;
mod grpc;
mod inbound;
mod support;
mod swap;
