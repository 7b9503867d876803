//! Registry backends for apimesh.
//!
//! - [`MemoryRegistry`]: built from a config in code; [`MemoryRegistry::update`]
//!   publishes a new revision.
//! - [`FileRegistry`]: loads a TOML file and watches it; a valid change becomes
//!   the next revision within a second, an invalid or half-written one is
//!   rejected (logged and counted) while the previous revision keeps serving.
//!
//! - `EtcdRegistry` (feature `etcd`): one catalog and policy set for a fleet,
//!   one key per object under a prefix in etcd, with self-registration on
//!   leases, compaction-safe watches, last-known-good per key and a disk
//!   cache; `EtcdAdmin` and the `apimesh` command publish a config file to it.
//!
//! All share one publishing path, so validation and last-known-good
//! behave the same everywhere:
//!
//! ```
//! use mesh_core::Registry;
//! use mesh_registry::MemoryRegistry;
//!
//! let registry = MemoryRegistry::from_toml(r#"
//!     [[routes]]
//!     id = "health"
//!     match = { path = "/health" }
//! "#)?;
//! let rx = registry.subscribe();
//! assert_eq!(rx.borrow().revision(), 1);
//!
//! // An invalid update is rejected whole; revision 1 keeps serving.
//! assert!(registry.update_toml(r#"[[routes]]
//!     id = "x"
//!     match = { path = "nope" }"#).is_err());
//! assert_eq!(rx.borrow().revision(), 1);
//! assert_eq!(registry.status().borrow().rejected, 1);
//! # Ok::<(), mesh_core::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "etcd")]
pub mod etcd;
mod file;
mod memory;
mod publisher;

#[cfg(feature = "etcd")]
pub use etcd::{
    AdminError, ApplyReport, EtcdAdmin, EtcdOptions, EtcdRegistry, EtcdRegistryError, EtcdStats,
    ObjectKind, Registration,
};
pub use file::{FileRegistry, FileRegistryError, FileWatchOptions};
pub use memory::MemoryRegistry;
