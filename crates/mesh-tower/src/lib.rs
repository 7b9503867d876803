//! apimesh's request path as tower middleware.
//!
//! - [`LiveSnapshot`]: the live policy, an `ArcSwap<Snapshot>` fed by any
//!   [`Registry`](mesh_core::Registry) and read without locks.
//! - [`inbound`]: [`InboundLayer`] matches each request's route once and
//!   carries the [`MatchedRoute`] in its extensions.
//! - [`admin`]: the operators' JSON router.
//!
//! This crate never names a registry backend; it sees only `mesh-core`'s
//! trait.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod auth;
pub mod body;
mod clock;
mod compiled;
mod fields;
pub mod future;
pub mod gateway;
pub mod inbound;
mod live;
mod macros;
pub mod observe;
pub mod outbound;
pub mod ratelimit;
pub mod resilience;
mod route;
pub mod version;

pub use auth::{AuthLayer, Principal};
pub use body::MeshBody;
pub use inbound::{Inbound, InboundLayer, MeshInboundLayer, Unmatched};
pub use live::{LiveSnapshot, SnapshotCache};
pub use outbound::{CallContext, Locality, MeshClient, Outbound};
pub use ratelimit::{PeerAddr, RateLimitLayer};
pub use route::{MatchedRoute, MissingMatchedRoute};
pub use version::{ApiVersion, VersionLayer};
