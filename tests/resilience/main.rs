//! Integration tests for resilience: retries, the retry budget, timeouts,
//! circuit breakers, outlier ejection, hedging, bulkheads and fault
//! injection, as standalone layers over mock services in virtual time, and
//! through the mesh client against real upstreams on loopback (with a
//! chaos run that kills an upstream mid-load).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod breaker;
mod budget;
mod bulkhead;
mod chaos;
mod faults;
mod hedging;
mod outlier;
mod retries;
mod support;
mod timeouts;
