//! The etcd registry: one catalog and policy set for a fleet.
//!
//! Every object of the config lives under its own key below a prefix
//! (default `/apimesh/`), as JSON in the config file's model:
//!
//! ```text
//! /apimesh/apis/<name>                   ApiSpec
//! /apimesh/services/<name>               ServiceSpec
//! /apimesh/routes/<id>                   RouteSpec
//! /apimesh/consumers/<id>                ConsumerSpec
//! /apimesh/plans/<name>                  PlanSpec
//! /apimesh/endpoints/<service>/<id>      EndpointSpec (self-registration, on a lease)
//! /apimesh/auth  /apimesh/mesh  /apimesh/gateway   the singletons
//! ```
//!
//! [`EtcdRegistry::connect`] lists the prefix, builds a validated snapshot
//! and watches from the next revision. Bursts of events are coalesced into
//! one new snapshot. A value that is not valid JSON, or an object that makes
//! the config invalid, is refused for its key alone: the key keeps its last
//! good value (or stays absent), every other change applies, and the key is
//! listed with its error in [`RegistryStatus::rejected_keys`] (so in
//! `GET /mesh/config`). A watch cancelled by compaction re-lists; a lost
//! connection is retried with backoff and jitter and the watch resumes from
//! the last revision seen, while the last good snapshot keeps serving. The
//! last good objects are written to a disk cache (if
//! [`EtcdOptions::cache`] is set), which a registry starts from when etcd
//! cannot be reached at start.
//!
//! [`EtcdRegistry::register`] writes this instance's endpoint under a lease
//! kept alive in the background; see [`Registration`].
//!
//! [`EtcdAdmin`] writes a config file as the per-object keys; the
//! `apimesh` command (`apply -f mesh.toml`, `get`, `list`, `delete`) uses it.
//! The guide is `docs/registry.md`.
//!
//! [`RegistryStatus::rejected_keys`]: mesh_core::RegistryStatus::rejected_keys

mod admin;
mod cache;
mod layout;
mod register;
mod state;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use mesh_core::config::EndpointSpec;
use mesh_core::{Registry, RegistryStatus, Snapshot};
use tokio::sync::watch as tokio_watch;

use crate::publisher::Publisher;

pub use admin::{AdminError, ApplyReport, EtcdAdmin, MAX_TXN_OPS};
#[cfg(feature = "etcd-tls")]
pub use etcd_client::{Certificate, Identity, TlsOptions};
pub use layout::ObjectKind;
pub use register::Registration;

/// Why an [`EtcdRegistry`] (or a registration) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdRegistryError {
    /// The options are unusable (no endpoints, a bad prefix or name).
    #[error("invalid etcd registry options: {0}")]
    Options(String),
    /// etcd could not be reached in time and there is no usable disk cache:
    /// there is no good state to start from.
    #[error("etcd at {endpoints} is unreachable ({message}) and there is no disk cache to start from{}", cache.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Unavailable {
        /// The endpoints tried.
        endpoints: String,
        /// What went wrong.
        message: String,
        /// Why the cache could not be used, if one is configured.
        cache: Option<String>,
    },
    /// An etcd request failed (e.g. the first write of a registration).
    #[error("etcd: {0}")]
    Etcd(String),
}

/// How an [`EtcdRegistry`] connects and behaves.
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix (default `/apimesh/`); a missing trailing `/` is added.
    pub prefix: String,
    /// User name and password, if etcd has authentication on.
    pub user: Option<(String, String)>,
    /// Where the last good config is cached on disk; `None` (the default)
    /// keeps no cache, so a cold start needs etcd.
    pub cache: Option<PathBuf>,
    /// How long [`EtcdRegistry::connect`] waits for etcd before starting
    /// from the disk cache (default 5 s).
    pub start_timeout: Duration,
    /// Deadline of each etcd request (default 5 s).
    pub request_timeout: Duration,
    /// After an event, wait this long for more before building a snapshot
    /// (default 10 ms); further events restart the wait …
    pub debounce: Duration,
    /// … but never delay a snapshot by more than this (default 100 ms).
    pub max_delay: Duration,
    /// First reconnect delay (default 100 ms), doubled up to
    /// [`backoff_max`](Self::backoff_max), each with jitter.
    pub backoff_min: Duration,
    /// Largest reconnect delay (default 5 s).
    pub backoff_max: Duration,
    /// HTTP/2 keep-alive interval towards etcd (default 5 s), so a silent
    /// partition is noticed within about interval + 3 s.
    pub keep_alive: Duration,
    /// The lease TTL of [`EtcdRegistry::register`] (default 10 s): how long
    /// a crashed instance stays discoverable.
    pub lease_ttl: Duration,
    #[cfg(feature = "etcd-tls")]
    tls: Option<TlsOptions>,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("cache", &self.cache)
            .field("start_timeout", &self.start_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("debounce", &self.debounce)
            .field("max_delay", &self.max_delay)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl EtcdOptions {
    /// Options for the etcd cluster at `endpoints`, with the defaults.
    pub fn new<I, S>(endpoints: I) -> EtcdOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/apimesh/".to_owned(),
            user: None,
            cache: None,
            start_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            debounce: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(10),
            #[cfg(feature = "etcd-tls")]
            tls: None,
        }
    }

    /// Sets the key prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Authenticates as `user`.
    #[must_use]
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Caches the last good config at `path` (written atomically).
    #[must_use]
    pub fn cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache = Some(path.into());
        self
    }

    /// Sets how long `connect` waits for etcd before using the cache.
    #[must_use]
    pub fn start_timeout(mut self, d: Duration) -> Self {
        self.start_timeout = d;
        self
    }

    /// Sets the deadline of each etcd request.
    #[must_use]
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Sets the debounce of bursts of events and its bound.
    #[must_use]
    pub fn debounce(mut self, debounce: Duration, max_delay: Duration) -> Self {
        self.debounce = debounce;
        self.max_delay = max_delay;
        self
    }

    /// Sets the reconnect backoff range.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Sets the HTTP/2 keep-alive interval.
    #[must_use]
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d;
        self
    }

    /// Sets the lease TTL of registrations.
    #[must_use]
    pub fn lease_ttl(mut self, d: Duration) -> Self {
        self.lease_ttl = d;
        self
    }

    /// Connects with TLS (the endpoints must be `https://` URLs).
    #[cfg(feature = "etcd-tls")]
    #[must_use]
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    fn validate(&mut self) -> Result<(), EtcdRegistryError> {
        if self.endpoints.is_empty() {
            return Err(EtcdRegistryError::Options("no etcd endpoints".into()));
        }
        if self.prefix.is_empty() {
            return Err(EtcdRegistryError::Options("the prefix is empty".into()));
        }
        if !self.prefix.ends_with('/') {
            self.prefix.push('/');
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(EtcdRegistryError::Options(
                "the lease TTL must be at least 1s".into(),
            ));
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return Err(EtcdRegistryError::Options(
                "the backoff needs 0 < min <= max".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn connect_options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.request_timeout)
            .with_keep_alive(self.keep_alive, Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if let Some((u, p)) = &self.user {
            o = o.with_user(u.clone(), p.clone());
        }
        #[cfg(feature = "etcd-tls")]
        if let Some(tls) = &self.tls {
            o = o.with_tls(tls.clone());
        }
        o
    }

    pub(crate) async fn client(&self) -> Result<Client, String> {
        match tokio::time::timeout(
            self.request_timeout,
            Client::connect(&self.endpoints, Some(self.connect_options())),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out connecting".into()),
        }
    }
}

/// Counters of an [`EtcdRegistry`]'s connection to etcd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdStats {
    /// Whether the watch is established right now.
    pub connected: bool,
    /// Full listings of the prefix (the first, and one after each compaction).
    pub lists: u64,
    /// Watches cancelled because their revision was compacted.
    pub compactions: u64,
    /// Watches lost to a connection error and resumed.
    pub reconnects: u64,
    /// The etcd revision the live state reflects (0 before the first listing).
    pub revision: i64,
    /// Whether the registry started from the disk cache.
    pub from_cache: bool,
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) connected: AtomicBool,
    pub(crate) lists: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) revision: AtomicI64,
    pub(crate) from_cache: AtomicBool,
    /// The client, once one could be made (registrations use it).
    pub(crate) client: Mutex<Option<Client>>,
}

impl Shared {
    pub(crate) fn client(&self) -> Option<Client> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_client(&self, c: Client) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
    }
}

/// A registry kept in step with a prefix in etcd. See the [module docs](self).
///
/// Dropping it stops its background task (registrations have their own).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use mesh_registry::{EtcdOptions, EtcdRegistry};
/// use std::sync::Arc;
///
/// let registry = Arc::new(
///     EtcdRegistry::connect(
///         EtcdOptions::new(["http://127.0.0.1:2379"]).cache("/var/cache/orders/mesh.json"),
///     )
///     .await?,
/// );
/// // Pass `registry.clone()` to `Mesh::builder().registry(..)`, then announce
/// // this instance; `deregister().await` on shutdown removes it at once.
/// let me = serde_json::from_value(serde_json::json!({ "address": "10.0.0.7:8080" }))?;
/// let registration = registry.register("orders", me).await?;
/// # registration.deregister().await?; Ok(()) }
/// ```
pub struct EtcdRegistry {
    publisher: Arc<Publisher>,
    shared: Arc<Shared>,
    options: Arc<EtcdOptions>,
    _stop: tokio_watch::Sender<()>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// Connects, lists the prefix and starts watching it.
    ///
    /// If etcd cannot be reached within [`EtcdOptions::start_timeout`], the
    /// registry starts from the disk cache and keeps trying in the
    /// background; without a usable cache this fails. Must be called inside
    /// a Tokio runtime (with the time driver).
    pub async fn connect(mut options: EtcdOptions) -> Result<EtcdRegistry, EtcdRegistryError> {
        options.validate()?;
        let options = Arc::new(options);
        let source = format!("{} {}", options.endpoints.join(","), options.prefix);
        let publisher = Arc::new(Publisher::new("etcd", source));
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = tokio_watch::channel(());
        let mut worker =
            watch::Worker::new(publisher.clone(), shared.clone(), options.clone(), stop_rx);

        let first = tokio::time::timeout(options.start_timeout, async {
            let client = options.client().await?;
            shared.set_client(client.clone());
            let revision = worker.list(&client).await?;
            Ok::<_, String>((client, revision))
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()));

        let resume = match first {
            Ok((_, revision)) => Some(revision),
            Err(message) => {
                let endpoints = options.endpoints.join(",");
                let Some(path) = &options.cache else {
                    return Err(EtcdRegistryError::Unavailable {
                        endpoints,
                        message,
                        cache: None,
                    });
                };
                match cache::load(path, &options.prefix) {
                    Ok(objects) => {
                        tracing::warn!(
                            %endpoints,
                            error = %message,
                            cache = %path.display(),
                            "etcd is unreachable; starting from the disk cache"
                        );
                        shared.from_cache.store(true, Ordering::Relaxed);
                        worker.start_from_cache(objects);
                        None
                    }
                    Err(e) => {
                        return Err(EtcdRegistryError::Unavailable {
                            endpoints,
                            message,
                            cache: Some(e),
                        });
                    }
                }
            }
        };
        tokio::spawn(worker.run(resume));
        Ok(EtcdRegistry {
            publisher,
            shared,
            options,
            _stop: stop_tx,
        })
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.publisher.current()
    }

    /// The key prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.options.prefix
    }

    /// The connection's counters.
    pub fn stats(&self) -> EtcdStats {
        EtcdStats {
            connected: self.shared.connected.load(Ordering::Relaxed),
            lists: self.shared.lists.load(Ordering::Relaxed),
            compactions: self.shared.compactions.load(Ordering::Relaxed),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            revision: self.shared.revision.load(Ordering::Relaxed),
            from_cache: self.shared.from_cache.load(Ordering::Relaxed),
        }
    }

    /// Registers an instance of `service` at `endpoint`: writes
    /// `endpoints/<service>/<id>` (the id defaults to the address) under a
    /// lease of [`EtcdOptions::lease_ttl`], kept alive in the background.
    ///
    /// If the lease is lost (e.g. after a partition longer than the TTL) it
    /// is granted again and the key rewritten. Call
    /// [`Registration::deregister`] on graceful shutdown to leave discovery
    /// at once; dropping the [`Registration`] revokes the lease too (in the
    /// background). A crashed process stops the keep-alives, so its endpoint
    /// leaves discovery within the TTL.
    pub async fn register(
        &self,
        service: &str,
        endpoint: EndpointSpec,
    ) -> Result<Registration, EtcdRegistryError> {
        let client = match self.shared.client() {
            Some(c) => c,
            None => {
                let c = self
                    .options
                    .client()
                    .await
                    .map_err(EtcdRegistryError::Etcd)?;
                self.shared.set_client(c.clone());
                c
            }
        };
        Registration::start(client, &self.options, service, endpoint).await
    }
}

impl Registry for EtcdRegistry {
    fn subscribe(&self) -> tokio_watch::Receiver<Arc<Snapshot>> {
        self.publisher.subscribe()
    }

    fn status(&self) -> tokio_watch::Receiver<RegistryStatus> {
        self.publisher.status()
    }
}
