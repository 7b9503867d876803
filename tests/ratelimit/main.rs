//! Integration tests for rate limits, plans, quotas and usage metering,
//! over real HTTP and gRPC against a real server behind `mesh.inbound()`,
//! and the standalone `RateLimitLayer`.
//!
//! Tests marked `Regression:` pin bugs found and fixed while these tests
//! were written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod grpc;
mod headers;
mod keys;
mod lifecycle;
mod paths;
mod plans;
mod proxies;
mod standalone;
mod support;
mod usage;
