//! apimesh: an in-process API mesh for Rust.
//!
//! An API gateway's and a service mesh's powers (routing, authentication,
//! rate limits, API versions, retries, circuit breakers, metrics, a catalog
//! of every API) as tower middleware linked into the service itself, driven
//! by a shared registry. No sidecar, no extra hop.
//!
//! ```no_run
//! use apimesh::{Mesh, registry::FileRegistry};
//! use axum::routing::get;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = Mesh::builder()
//!     .service("orders")
//!     .registry(FileRegistry::watch("mesh.toml")?)
//!     .build()
//!     .await?;
//!
//! let app: axum::Router = axum::Router::new()
//!     .route("/orders/{id}", get(|| async { "an order" }))
//!     .layer(mesh.inbound());
//!
//! let admin = tokio::net::TcpListener::bind("127.0.0.1:9901").await?;
//! tokio::spawn(async move { axum::serve(admin, mesh.admin()).await });
//! # let _ = app; Ok(()) }
//! ```
//!
//! The guides live in `docs/`: [architecture](https://github.com/apimesh/apimesh/blob/main/docs/architecture.md),
//! [configuration](https://github.com/apimesh/apimesh/blob/main/docs/configuration.md),
//! [performance](https://github.com/apimesh/apimesh/blob/main/docs/performance.md).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::sync::Arc;

pub use mesh_core as core;
pub use mesh_core::{Config, ConfigError, MeshError, Registry, RegistryStatus, Snapshot};
pub use mesh_tower::gateway::GatewayLayer;
pub use mesh_tower::observe::{ObserveLayer, Stats};
pub use mesh_tower::outbound::{ClientResponse, Outbound};

/// The service [`Mesh::gateway`] returns.
pub type GatewayService = mesh_tower::gateway::Gateway<
    <MeshInboundLayer as tower_layer::Layer<mesh_tower::outbound::Forward>>::Service,
>;
pub use mesh_tower::{
    ApiVersion, AuthLayer, CallContext, InboundLayer, LiveSnapshot, Locality, MatchedRoute,
    MeshClient, MeshInboundLayer, PeerAddr, Principal, RateLimitLayer, Unmatched, VersionLayer,
};

/// Registry backends.
///
/// With the `etcd` feature, [`EtcdRegistry`](registry::EtcdRegistry) keeps a
/// fleet on one catalog in etcd. To announce this instance, keep the
/// registry in an `Arc`, give a clone to [`MeshBuilder::registry`] and call
/// [`EtcdRegistry::register`](registry::EtcdRegistry::register) on it; see
/// `docs/registry.md`.
pub mod registry {
    pub use mesh_core::RejectedKey;
    #[cfg(feature = "etcd")]
    pub use mesh_registry::{
        AdminError, ApplyReport, EtcdAdmin, EtcdOptions, EtcdRegistry, EtcdRegistryError,
        EtcdStats, ObjectKind, Registration,
    };
    pub use mesh_registry::{FileRegistry, FileRegistryError, FileWatchOptions, MemoryRegistry};
}

/// The tower layers, each usable on its own.
pub mod layers {
    pub use mesh_tower::auth;
    pub use mesh_tower::body::MeshBody;
    pub use mesh_tower::gateway;
    pub use mesh_tower::inbound;
    pub use mesh_tower::observe;
    pub use mesh_tower::outbound;
    pub use mesh_tower::ratelimit;
    pub use mesh_tower::resilience;
    pub use mesh_tower::version;
}

/// Why a [`Mesh`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `service(..)` was not given or is empty.
    #[error("the mesh needs a service name: call .service(\"name\")")]
    MissingService,
    /// The builder was not called inside a Tokio runtime.
    #[error("Mesh::build must run inside a Tokio runtime")]
    NoRuntime,
    /// The Redis URL is invalid.
    #[error("{0}")]
    Redis(String),
}

/// Configures a [`Mesh`].
#[must_use]
pub struct MeshBuilder {
    service: Option<String>,
    registry: Option<Arc<dyn Registry>>,
    unmatched: Unmatched,
    locality: Locality,
    admin_token: Option<String>,
    admin_public: bool,
    #[cfg(feature = "prometheus")]
    prometheus: bool,
    #[cfg(feature = "redis")]
    redis: Option<String>,
}

impl std::fmt::Debug for MeshBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshBuilder")
            .field("service", &self.service)
            .field("registry", &self.registry.as_ref().map(|_| "…"))
            .field("unmatched", &self.unmatched)
            .finish()
    }
}

impl MeshBuilder {
    /// The name of this service (who am I).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Where policy comes from. Defaults to an empty
    /// [`MemoryRegistry`](registry::MemoryRegistry).
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// What the inbound layer does with requests that match no route
    /// (default: pass them through).
    pub fn unmatched(mut self, unmatched: Unmatched) -> Self {
        self.unmatched = unmatched;
        self
    }

    /// Where this instance runs: the mesh client prefers endpoints in
    /// `zone`, then in `region`, then anywhere (see `docs/routing.md`).
    pub fn locality(mut self, region: impl Into<String>, zone: impl Into<String>) -> Self {
        let (region, zone): (String, String) = (region.into(), zone.into());
        self.locality = Locality {
            region: (!region.is_empty()).then(|| region.into()),
            zone: (!zone.is_empty()).then(|| zone.into()),
        };
        self
    }

    /// Requires `Authorization: Bearer <token>` on every admin route
    /// (`mesh.admin()`, `mesh.serve_admin(..)`), the dashboard's data
    /// included. The dashboard page itself holds no data and is served
    /// without it: open it as `/mesh/dashboard#token=<token>` (the fragment
    /// never leaves the browser) and its script sends the token.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into()).filter(|t| !t.is_empty());
        self
    }

    /// Lets `mesh.serve_admin(..)` bind a non-loopback address (off by
    /// default: the admin API shows config and traffic). Set an
    /// [`admin_token`](Self::admin_token) too.
    pub fn admin_public(mut self, public: bool) -> Self {
        self.admin_public = public;
        self
    }

    /// Installs the Prometheus recorder as the process's `metrics`
    /// recorder, served at `GET /mesh/metrics` (default on). Turn it off
    /// to install a recorder of your own.
    #[cfg(feature = "prometheus")]
    pub fn prometheus(mut self, on: bool) -> Self {
        self.prometheus = on;
        self
    }

    /// Counts `cluster = true` rate limits and quotas in Redis at `url`
    /// (`redis://host:port/db`), shared by every instance. The connection
    /// is made in the background; while Redis is unreachable each route's
    /// `on_store_failure` applies.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(url.into());
        self
    }

    /// Builds the mesh: subscribes to the registry and starts following it.
    pub async fn build(self) -> Result<Mesh, BuildError> {
        let service = self
            .service
            .filter(|s| !s.trim().is_empty())
            .ok_or(BuildError::MissingService)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let registry = self
            .registry
            .unwrap_or_else(|| Arc::new(mesh_registry::MemoryRegistry::new()));
        let live = LiveSnapshot::follow(&*registry);
        // Compile each revision's policies (keys, JWKS fetches) as it is
        // published, off the request path.
        let auth = AuthLayer::from_routes();
        let limits = RateLimitLayer::from_routes().for_service(&service);
        #[cfg(feature = "redis")]
        let limits = match &self.redis {
            Some(url) => {
                let store =
                    mesh_tower::ratelimit::RedisStore::open(url).map_err(BuildError::Redis)?;
                if let Err(e) = store.connect(std::time::Duration::from_secs(1)).await {
                    tracing::warn!(error = %e, "starting without Redis; cluster limits use their failure mode until it is reachable");
                }
                limits.with_redis(store)
            }
            None => limits,
        };
        let versions = VersionLayer::from_routes();
        auth.prepare(&live.load());
        limits.prepare(&live.load());
        versions.prepare(&live.load());
        let mut revisions = registry.subscribe();
        let (auth_prep, limits_prep, versions_prep) =
            (auth.clone(), limits.clone(), versions.clone());
        tokio::spawn(async move {
            while revisions.changed().await.is_ok() {
                let snapshot = revisions.borrow_and_update().clone();
                auth_prep.prepare(&snapshot);
                limits_prep.prepare(&snapshot);
                versions_prep.prepare(&snapshot);
            }
        });
        let stats = Stats::new();
        stats.spawn_ticker();
        let observe = ObserveLayer::new(live.clone(), stats.clone());
        // Only a mesh that asked for it installs (and serves) the recorder.
        #[cfg(feature = "prometheus")]
        let prometheus = if self.prometheus {
            prometheus_handle()
        } else {
            None
        };
        let outbound = Outbound::builder(live.clone())
            .caller(service.as_str())
            .locality(self.locality)
            .build();
        tracing::info!(
            service = %service,
            revision = live.load().revision(),
            "apimesh started"
        );
        Ok(Mesh {
            inner: Arc::new(Inner {
                service,
                registry,
                live,
                unmatched: self.unmatched,
                auth,
                limits,
                versions,
                outbound,
                stats,
                observe,
                admin_token: self.admin_token,
                admin_public: self.admin_public,
                #[cfg(feature = "prometheus")]
                prometheus,
            }),
        })
    }
}

/// An apimesh instance for one service: hands out the inbound layer and
/// the admin router, all reading one live snapshot.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    registry: Arc<dyn Registry>,
    live: LiveSnapshot,
    unmatched: Unmatched,
    auth: AuthLayer,
    limits: RateLimitLayer,
    versions: VersionLayer,
    outbound: Outbound,
    stats: Stats,
    observe: ObserveLayer,
    admin_token: Option<String>,
    admin_public: bool,
    #[cfg(feature = "prometheus")]
    prometheus: Option<&'static metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("service", &self.inner.service)
            .field("revision", &self.inner.live.load().revision())
            .finish()
    }
}

impl Mesh {
    /// Starts configuring a mesh.
    pub fn builder() -> MeshBuilder {
        MeshBuilder {
            service: None,
            registry: None,
            unmatched: Unmatched::default(),
            locality: Locality::default(),
            admin_token: None,
            admin_public: false,
            #[cfg(feature = "prometheus")]
            prometheus: true,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// This service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The inbound policy chain for an axum `Router` or a tonic server:
    /// route match, then each route's authentication, then its rate limits,
    /// plan and quotas (with usage metering), then its API version's
    /// lifecycle (deprecation headers, 410 after retirement).
    pub fn inbound(&self) -> MeshInboundLayer {
        MeshInboundLayer::new(
            InboundLayer::new(self.inner.live.clone()).unmatched(self.inner.unmatched),
            self.inner.auth.clone(),
            self.inner.limits.clone(),
        )
        .versions(self.inner.versions.clone())
        .observe(self.inner.observe.clone())
    }

    /// A client for the mesh service `service`: its mesh routes (splits,
    /// mirroring), endpoint discovery and balancing (priority groups,
    /// locality, P2C over peak-EWMA), and propagation of the deadline, the
    /// trace and this service's identity. Clients share one connection
    /// pool and one view of endpoint health; cheap to make and to clone.
    pub fn client(&self, service: &str) -> MeshClient {
        self.inner.outbound.client(service)
    }

    /// The edge gateway as one tower service: the [`GatewayLayer`] front
    /// stage (framing checks, path normalisation, body cap, hop-by-hop and
    /// forwarding headers), then [`inbound`](Self::inbound) (route match,
    /// auth, limits, versions), then forwarding to the matched route's
    /// destinations. Serve it with hyper (see `examples/gateway.rs`, which
    /// also applies `gateway.max_header_size`); insert a
    /// [`PeerAddr`] into each request's extensions so the forwarding
    /// headers and per-client limits know the client.
    pub fn gateway(&self) -> GatewayService {
        use tower_layer::Layer;
        GatewayLayer::new(self.inner.live.clone())
            .layer(self.inbound().layer(self.inner.outbound.forward()))
    }

    /// Serves [`gateway`](Self::gateway) on `listener` until the future is
    /// dropped: HTTP/1.1 and HTTP/2 (h2c), each request tagged with its
    /// [`PeerAddr`], request heads capped at `gateway.max_header_size`
    /// (431; read once, here; at least 8 KiB), 10 s to send a head.
    pub async fn serve_gateway(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        use tower_service::Service;

        let limits = *self.snapshot().gateway();
        let head = usize::try_from(limits.max_header_size)
            .unwrap_or(usize::MAX)
            .max(8192);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size(head)
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10));
        builder
            .http2()
            .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX))
            .timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let gateway = self.gateway();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let gateway = gateway.clone();
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    // Every stage is always ready.
                    gateway.clone().call(req)
                },
            );
            let builder = builder.clone();
            tokio::spawn(async move {
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
            });
        }
    }

    /// The outbound core shared by every client (and the gateway).
    pub fn outbound(&self) -> &Outbound {
        &self.inner.outbound
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.live.load()
    }

    /// The live-snapshot handle, for building layers by hand.
    pub fn live(&self) -> &LiveSnapshot {
        &self.inner.live
    }

    /// The registry's status.
    pub fn registry_status(&self) -> RegistryStatus {
        self.inner.registry.status().borrow().clone()
    }

    /// The admin router: `GET /mesh/health`, `/mesh/config`,
    /// `/mesh/catalog`, `/mesh/usage`, `/mesh/limits`, `/mesh/endpoints`,
    /// `/mesh/circuits`, `/mesh/metrics` (Prometheus), `/mesh/stats` and
    /// `/mesh/dashboard`; behind the bearer token when one is set (all but
    /// the dashboard page, which holds no data). Serve it
    /// on a loopback listener of its own ([`serve_admin`](Self::serve_admin)).
    pub fn admin(&self) -> axum::Router {
        let outbound = self.inner.outbound.clone();
        let live = self.inner.live.clone();
        let status = self.inner.registry.status();
        let extra: Arc<dyn Fn() -> serde_json::Value + Send + Sync> = Arc::new(move || {
            let snapshot = live.load();
            let registry = status.borrow().clone();
            let circuits = outbound.circuits();
            serde_json::json!({
                "revision": snapshot.revision(),
                "registry": registry,
                "breakers": circuits.get("breakers").cloned().unwrap_or_default(),
                "endpoints": outbound.endpoints(),
            })
        });
        let router = mesh_tower::admin::router(
            &self.inner.service,
            self.inner.live.clone(),
            self.inner.registry.status(),
        )
        .merge(self.inner.limits.admin_router())
        .merge(self.inner.outbound.admin_router())
        .merge(mesh_tower::admin::dashboard_router(
            self.inner.stats.clone(),
            extra,
        ))
        .route("/mesh/metrics", {
            #[cfg(feature = "prometheus")]
            let handle = self.inner.prometheus;
            axum::routing::get(move || async move {
                #[cfg(feature = "prometheus")]
                if let Some(h) = handle {
                    return (
                        http::StatusCode::OK,
                        [(
                            http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        h.render(),
                    );
                }
                (
                    http::StatusCode::NOT_FOUND,
                    [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "no Prometheus recorder: build with the `prometheus` feature and leave \
                     MeshBuilder::prometheus on\n"
                        .to_owned(),
                )
            })
        });
        let router = match &self.inner.admin_token {
            Some(t) => mesh_tower::admin::require_bearer(router, t),
            None => router,
        };
        // The page holds no data: a browser opens it without a header and
        // its script sends the token from the fragment for the data.
        router.merge(mesh_tower::admin::dashboard_page())
    }

    /// Serves [`admin`](Self::admin) on `addr` until the future is dropped.
    /// Refuses a non-loopback address unless the builder's
    /// [`admin_public`](MeshBuilder::admin_public) is set.
    pub async fn serve_admin(&self, addr: std::net::SocketAddr) -> std::io::Result<()> {
        if !addr.ip().is_loopback() && !self.inner.admin_public {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the admin API binds to loopback only; {addr} needs MeshBuilder::admin_public(true) (and an admin_token)"
                ),
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, self.admin()).await
    }

    /// The traffic statistics behind the dashboard.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The rate-limit layer the inbound chain uses (for `evict_idle`, `keys`).
    pub fn limits(&self) -> &RateLimitLayer {
        &self.inner.limits
    }
}

/// The process's Prometheus recorder, installed on first use (a process
/// has one global `metrics` recorder; when another is installed already,
/// there is none and `/mesh/metrics` says so).
#[cfg(feature = "prometheus")]
fn prometheus_handle() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("duration".into()),
                    &mesh_tower::observe::DURATION_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    // Histograms need upkeep now and then.
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let h = handle.clone();
                        rt.spawn(async move {
                            let mut every =
                                tokio::time::interval(std::time::Duration::from_secs(5));
                            loop {
                                every.tick().await;
                                h.run_upkeep();
                            }
                        });
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "not installing the Prometheus recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
