//! Integration tests for routing and traffic management: the mesh client
//! against real upstream servers on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod balance;
mod basics;
mod churn;
mod failover;
mod locality;
mod mirror;
mod propagation;
mod split;
mod support;
mod unavailable;
