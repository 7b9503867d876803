//! The inbound layer: the front of every request a service receives.
//!
//! It reads the live snapshot (one atomic load through an
//! [`arc_swap::Cache`]), matches the request against the snapshot's compiled
//! route table once, and puts the result, a [`MatchedRoute`](crate::MatchedRoute)
//! pinning that snapshot, into the request's extensions for later layers and
//! handlers. A request that matches no route is passed through or answered
//! with a 404 problem (gRPC: `UNIMPLEMENTED`), as configured by [`Unmatched`].
//!
//! ```
//! use std::sync::Arc;
//! use mesh_core::Snapshot;
//! use mesh_tower::{InboundLayer, LiveSnapshot, MatchedRoute, Unmatched};
//!
//! let snapshot = Snapshot::from_toml(r#"
//!     [[routes]]
//!     id = "orders"
//!     match = { path_template = "/orders/{id}" }
//! "#, 1).unwrap();
//! let live = LiveSnapshot::fixed(Arc::new(snapshot));
//!
//! let app: axum::Router = axum::Router::new()
//!     .route("/orders/{id}", axum::routing::get(|m: MatchedRoute| async move {
//!         format!("route {} at revision {}", m.route().id(), m.revision())
//!     }))
//!     .layer(InboundLayer::new(live).unmatched(Unmatched::NotFound));
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{InboundLayer, Unmatched};
pub use service::Inbound;

#[cfg(test)]
mod tests;
