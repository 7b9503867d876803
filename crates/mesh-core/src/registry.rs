//! The [`Registry`] trait: where snapshots come from.
//!
//! A registry owns the current [`Snapshot`] and publishes newer ones on a
//! `tokio::sync::watch` channel. Layers never name a backend; they only
//! see this trait, so memory, file and etcd registries are interchangeable.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::Snapshot;

/// A source of snapshots.
///
/// Implementations must only ever publish snapshots with a larger revision
/// than the last, and never publish a snapshot that failed validation: a
/// rejected update leaves the previous snapshot live and is reported through
/// [`status`](Registry::status).
pub trait Registry: Send + Sync + 'static {
    /// A receiver whose current value is the live snapshot, and which is
    /// notified of each newer one.
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>>;

    /// The backend's health: updates applied and rejected, the last error.
    fn status(&self) -> watch::Receiver<RegistryStatus>;
}

impl<R: Registry + ?Sized> Registry for Arc<R> {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        (**self).subscribe()
    }
    fn status(&self) -> watch::Receiver<RegistryStatus> {
        (**self).status()
    }
}

/// What a registry reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RegistryStatus {
    /// The backend, e.g. `memory`, `file`.
    pub backend: &'static str,
    /// Where it reads from, e.g. a file path.
    pub source: String,
    /// Updates that became a new revision.
    pub applied: u64,
    /// Updates that were rejected (invalid, unreadable, missing).
    pub rejected: u64,
    /// The last rejection, if any, with every error it had.
    pub last_error: Option<String>,
    /// When the live snapshot was published.
    #[serde(with = "rfc3339_opt")]
    pub last_change: Option<SystemTime>,
    /// Stored objects the live snapshot leaves out because they are invalid
    /// (backends that store one object per key, such as etcd). Empty for
    /// the memory and file registries, which reject a config whole.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected_keys: Vec<RejectedKey>,
}

/// One stored object a registry refused, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RejectedKey {
    /// The key, e.g. `/apimesh/routes/orders`.
    pub key: String,
    /// Every problem found, e.g. a JSON syntax error or a field error such as
    /// `match.path: must start with /`.
    pub error: String,
}

impl RejectedKey {
    /// A rejected key and its error.
    pub fn new(key: impl Into<String>, error: impl Into<String>) -> RejectedKey {
        RejectedKey {
            key: key.into(),
            error: error.into(),
        }
    }
}

impl RegistryStatus {
    /// A fresh status for a backend.
    pub fn new(backend: &'static str, source: impl Into<String>) -> RegistryStatus {
        RegistryStatus {
            backend,
            source: source.into(),
            ..Default::default()
        }
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }
}
