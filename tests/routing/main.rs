//! Integration tests for routing and traffic management: the mesh client
//! against real upstream servers on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod basics;
mod support;
