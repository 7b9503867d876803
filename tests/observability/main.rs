//! Integration tests for observability: the request metrics (names, units,
//! labels, cardinality) read through metrics-util's debugging recorder, the
//! access log and spans read through a `tracing` capture, W3C trace
//! propagation across two apimesh services, the admin API (shapes, bearer
//! token, loopback default, Prometheus) and the dashboard in headless
//! Chromium.
//!
//! The recorder and the subscriber are this thread's own
//! (`metrics::with_local_recorder`, `tracing::subscriber::with_default`) and
//! each such test runs on a current-thread runtime, so tests run in
//! parallel without seeing each other's metrics. Only `prometheus` installs
//! the process-wide recorder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod cardinality;
mod dashboard;
mod metrics;
mod support;
mod traces;
