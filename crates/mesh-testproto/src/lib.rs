//! The gRPC `Echo` service used by apimesh's examples and tests.
#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Generated code for `apimesh.echo.v1`.
pub mod echo {
    tonic::include_proto!("apimesh.echo.v1");
}
