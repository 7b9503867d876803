//! The model of an apimesh: the API catalog, services and endpoints,
//! consumers and plans, routes and their policies; the immutable,
//! validated, revisioned [`Snapshot`] the request path reads; the
//! [`Registry`] trait that feeds snapshots to the layers; and
//! [`MeshError`], which knows how to answer as HTTP or gRPC.
//!
//! ```
//! use mesh_core::{Config, Snapshot};
//!
//! let config = Config::from_toml(r#"
//!     [[services]]
//!     name = "inventory"
//!     endpoints = [{ address = "127.0.0.1:8081", zone = "eu-west-1a" }]
//!
//!     [[routes]]
//!     id = "stock"
//!     match = { path_prefix = "/stock" }
//!     destinations = [{ service = "inventory" }]
//!     timeout = { total = "2s" }
//! "#)?;
//! let snapshot = Snapshot::build(config, 1)?;
//! let route = snapshot.route("stock").unwrap();
//! assert_eq!(route.policy().timeout.unwrap().total, Some(std::time::Duration::from_secs(2)));
//!
//! // Every problem is reported at once, each with its field path.
//! let bad = Config::from_toml(r#"
//!     [[routes]]
//!     id = "x"
//!     match = { path = "no-slash" }
//!     destinations = [{ service = "nowhere" }]
//! "#)?;
//! let err = Snapshot::build(bad, 2).unwrap_err().to_string();
//! assert!(err.contains("routes[0].match.path: `no-slash` must start with `/`"));
//! assert!(err.contains("routes[0].destinations[0].service: unknown service `nowhere`"));
//! # Ok::<(), mesh_core::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod error;
mod matcher;
pub mod policy;
pub mod registry;
mod snapshot;
pub mod units;

pub use config::Config;
pub use error::{ConfigError, FieldError, GrpcCode, MeshError, is_grpc};
pub use registry::{Registry, RegistryStatus, RejectedKey};
pub use snapshot::{Destination, Endpoint, Route, Service, Snapshot, parse_key_digest, parse_net};
