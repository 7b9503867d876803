//! Integration tests for the edge gateway (`Mesh::serve_gateway`): real
//! upstream servers on loopback that record what they receive, and a raw
//! HTTP/1.1 client so that no client library normalises or re-frames the
//! requests under test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod example;
mod forwarding;
mod limits;
mod paths;
mod routing;
mod smuggling;
mod streaming;
mod support;
