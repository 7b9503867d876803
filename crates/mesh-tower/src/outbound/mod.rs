//! The outbound side: the mesh client that one service uses to call
//! another, and the core the edge gateway forwards with.
//!
//! Per call, in order: the service's mesh route (host = the service name)
//! → a destination from the weighted split (override header, sticky
//! cohort, weighted draw) → mirroring → an endpoint from the destination's
//! best priority group with a healthy endpoint (else its failover
//! services), nearest locality first, P2C over peak-EWMA → hyper-util's
//! pooled connection (HTTP/1.1 or h2c) with the deadline, trace context
//! and caller identity propagated. See `docs/routing.md`.

mod balance;
mod client;
mod context;
mod endpoints;
mod mirror;
mod send;
mod split;

pub use balance::Locality;
pub use client::{
    ClientBody, ClientResponse, EndpointStatus, Forward, MeshClient, Outbound, OutboundBuilder,
    RequestBuilder, ResponseFuture,
};
pub use context::{
    CallContext, ContextLayer, ContextService, TraceContext, format_grpc_timeout,
    parse_grpc_timeout,
};

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
