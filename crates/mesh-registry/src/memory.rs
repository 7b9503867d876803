use std::sync::Arc;

use mesh_core::{Config, ConfigError, Registry, RegistryStatus, Snapshot};
use tokio::sync::watch;

use crate::publisher::Publisher;

/// A registry held in memory: the embedded default.
///
/// Start it from a [`Config`] (or TOML) and publish changes with
/// [`update`](Self::update). An invalid update returns its errors, is
/// counted in [`status`](Registry::status), and changes nothing.
#[derive(Debug)]
pub struct MemoryRegistry {
    publisher: Publisher,
}

impl MemoryRegistry {
    /// An empty registry: revision 0, no routes.
    pub fn new() -> MemoryRegistry {
        MemoryRegistry {
            publisher: Publisher::new("memory", "memory".into()),
        }
    }

    /// A registry whose revision 1 is `config`.
    pub fn from_config(config: Config) -> Result<MemoryRegistry, ConfigError> {
        let r = MemoryRegistry::new();
        r.update(config)?;
        Ok(r)
    }

    /// A registry whose revision 1 is the TOML document `text`.
    pub fn from_toml(text: &str) -> Result<MemoryRegistry, ConfigError> {
        MemoryRegistry::from_config(Config::from_toml(text)?)
    }

    /// Validates `config` and publishes it as the next revision, which is returned.
    pub fn update(&self, config: Config) -> Result<u64, ConfigError> {
        self.publisher.publish(Ok(config))
    }

    /// Like [`update`](Self::update), from TOML. A syntax error is counted as a rejection too.
    pub fn update_toml(&self, text: &str) -> Result<u64, ConfigError> {
        self.publisher.publish(Config::from_toml(text))
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.publisher.current()
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

impl Registry for MemoryRegistry {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.publisher.subscribe()
    }

    fn status(&self) -> watch::Receiver<RegistryStatus> {
        self.publisher.status()
    }
}
