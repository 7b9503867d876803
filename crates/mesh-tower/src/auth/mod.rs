//! Authentication and authorization: JWT bearer tokens (with JWKS rotation)
//! and API keys, scopes and required claims, hardened per RFC 8725.
//!
//! [`AuthLayer`] works two ways:
//!
//! - **per route**, inside `mesh.inbound()` ([`AuthLayer::from_routes`]):
//!   each request's [`MatchedRoute`] names its `auth` policy, and the
//!   issuers, keys and consumers come from the same snapshot;
//! - **standalone** ([`AuthLayer::builder`]): one requirement for every
//!   request, issuers and consumers from a config you give it.
//!
//! What a request gets:
//!
//! - admitted: a [`Principal`] in its extensions (an axum extractor), and
//!   the API key (if that was the credential) removed from the request;
//! - no or a bad credential: 401 with `WWW-Authenticate: Bearer realm="…",
//!   error="invalid_token", error_description="…"` (RFC 6750) and a
//!   problem body; gRPC `UNAUTHENTICATED`;
//! - a missing scope or claim: 403 with `error="insufficient_scope"` and the
//!   scope needed; gRPC `PERMISSION_DENIED`.
//!
//! How each RFC 8725 threat is handled, how keys rotate, and what each
//! setting does: `docs/authentication.md`.
//!
//! ```
//! use mesh_tower::{AuthLayer, InboundLayer, LiveSnapshot, MeshInboundLayer, Principal, RateLimitLayer};
//! # use std::sync::Arc;
//! # let snapshot = Arc::new(mesh_core::Snapshot::from_toml(r#"
//! #     [[consumers]]
//! #     id = "acme"
//! #     api_keys = ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! #     [[routes]]
//! #     id = "orders"
//! #     match = { path_prefix = "/orders" }
//! #     auth = { require = ["api_key"] }
//! # "#, 1).unwrap());
//! let live = LiveSnapshot::fixed(snapshot);
//! let app: axum::Router = axum::Router::new()
//!     .route("/orders", axum::routing::get(|who: Principal| async move {
//!         format!("hello {}", who.consumer().unwrap_or("?"))
//!     }))
//!     .layer(MeshInboundLayer::new(
//!         InboundLayer::new(live),
//!         AuthLayer::from_routes(),
//!         RateLimitLayer::from_routes(),
//!     ));
//! ```

mod authenticator;
mod cache;
mod jwks;
mod keys;
mod outcome;
mod principal;
mod token;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use mesh_core::policy::{AuthMethod, AuthRequirement};
use mesh_core::{Config, ConfigError, MeshError, Snapshot, is_grpc};
use tower_layer::Layer;
use tower_service::Service;

pub use authenticator::Authenticator;
pub use outcome::Outcome;
pub use principal::{MissingPrincipal, Principal};

#[cfg(feature = "redis")]
pub(crate) use authenticator::sha256;
use authenticator::{AuthRuntime, CACHE_SLOTS, Check};

use crate::MatchedRoute;
use crate::body::MeshBody;

enum Mode {
    /// The route's policy, from the request's [`MatchedRoute`].
    Routes,
    /// One requirement for every request.
    Fixed {
        snapshot: Arc<Snapshot>,
        requirement: AuthRequirement,
    },
}

struct Shared {
    mode: Mode,
    runtime: AuthRuntime,
}

/// Authenticates requests; see the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.shared.mode {
            Mode::Routes => "routes",
            Mode::Fixed { .. } => "fixed",
        };
        f.debug_struct("AuthLayer").field("mode", &mode).finish()
    }
}

impl AuthLayer {
    /// A layer that applies each matched route's `auth` policy, with the
    /// issuers and consumers of the snapshot the route was matched in. Put
    /// it inside an [`InboundLayer`](crate::InboundLayer). Requests without
    /// a matched route, or whose route has no `auth` block, pass untouched.
    pub fn from_routes() -> AuthLayer {
        AuthLayer {
            shared: Arc::new(Shared {
                mode: Mode::Routes,
                runtime: AuthRuntime::new(CACHE_SLOTS),
            }),
        }
    }

    /// Compiles the authentication state of `snapshot` now (loading keys,
    /// starting JWKS fetches) instead of on its first request. The mesh
    /// calls this for every revision the registry publishes.
    pub fn prepare(&self, snapshot: &Snapshot) {
        let runtime = &self.shared.runtime;
        runtime.states.prepare(snapshot, |s| runtime.build(s));
    }

    /// A standalone layer with one requirement for every request.
    pub fn builder() -> AuthLayerBuilder {
        AuthLayerBuilder {
            config: Config::default(),
            methods: Vec::new(),
            scopes: Vec::new(),
            claims: Vec::new(),
            audience: None,
            cache_slots: CACHE_SLOTS,
        }
    }
}

/// Builds a standalone [`AuthLayer`].
///
/// ```
/// use mesh_tower::auth::AuthLayer;
///
/// let layer = AuthLayer::builder()
///     .config_toml(r#"
///         [auth]
///         issuers = [{ issuer = "https://idp.example.com", algorithms = ["ES256"],
///                      jwks_uri = "https://idp.example.com/jwks.json", audiences = ["orders"] }]
///
///         [[consumers]]
///         id = "acme"
///         api_keys = ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
///     "#)?
///     .jwt()
///     .api_key()
///     .scope("orders:read")
///     .build()?;
/// # Ok::<(), mesh_core::ConfigError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct AuthLayerBuilder {
    config: Config,
    methods: Vec<AuthMethod>,
    scopes: Vec<String>,
    claims: Vec<(String, String)>,
    audience: Option<String>,
    cache_slots: usize,
}

impl AuthLayerBuilder {
    /// Takes `[auth]` (issuers, API-key settings) and `[[consumers]]` from a config.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Like [`config`](Self::config), from TOML.
    pub fn config_toml(self, text: &str) -> Result<Self, ConfigError> {
        Ok(self.config(Config::from_toml(text)?))
    }

    /// Accepts JWT bearer tokens.
    pub fn jwt(mut self) -> Self {
        self.methods.push(AuthMethod::Jwt);
        self
    }

    /// Accepts API keys.
    pub fn api_key(mut self) -> Self {
        self.methods.push(AuthMethod::ApiKey);
        self
    }

    /// Requires a scope (repeatable: all are required).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Requires a claim to have a value.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.claims.push((name.into(), value.into()));
        self
    }

    /// Accepts only this audience (instead of the issuers' lists).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Verified-token cache size in slots (default 16384; 0 disables it).
    pub fn token_cache_slots(mut self, slots: usize) -> Self {
        self.cache_slots = slots;
        self
    }

    /// Validates the configuration (as a snapshot would) and builds the layer.
    pub fn build(self) -> Result<AuthLayer, ConfigError> {
        let mut config = self.config;
        config.routes.clear();
        let snapshot = Snapshot::build(config, 1)?;
        let mut errors = Vec::new();
        if self.methods.is_empty() {
            errors.push(mesh_core::FieldError {
                path: "auth layer".into(),
                message: "accept at least one method: call .jwt() or .api_key()".into(),
            });
        }
        if self.methods.contains(&AuthMethod::Jwt) && snapshot.config().auth.issuers.is_empty() {
            errors.push(mesh_core::FieldError {
                path: "auth.issuers".into(),
                message: "jwt needs at least one issuer".into(),
            });
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        let requirement = AuthRequirement::new(
            self.methods,
            self.scopes,
            self.claims,
            self.audience,
            Vec::new(),
        );
        let snapshot = Arc::new(snapshot);
        let layer = AuthLayer {
            shared: Arc::new(Shared {
                mode: Mode::Fixed {
                    snapshot: snapshot.clone(),
                    requirement,
                },
                runtime: AuthRuntime::new(self.cache_slots),
            }),
        };
        layer.prepare(&snapshot);
        Ok(layer)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            cache: self.shared.runtime.states.cache(),
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
pub struct Auth<S> {
    inner: S,
    shared: Arc<Shared>,
    cache: crate::compiled::StateCache<Authenticator>,
}

crate::macros::stage_service!(Auth);

fn reject(
    authn: &Authenticator,
    req: &AuthRequirement,
    o: Outcome,
    scope: Option<String>,
    grpc: bool,
) -> Response<bytes::Bytes> {
    authn.count(o);
    let err: MeshError = o.to_error(
        &authn.realm,
        req.methods.contains(&AuthMethod::Jwt),
        req.methods.contains(&AuthMethod::ApiKey),
        scope.as_deref(),
    );
    err.to_response(grpc)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<MeshBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let matched;
        let (snapshot, requirement) = match &self.shared.mode {
            Mode::Fixed {
                snapshot,
                requirement,
            } => (snapshot, requirement),
            Mode::Routes => {
                // Most routes of a service need no authentication: decide
                // that without touching the snapshot's reference count.
                let needs_auth = req.extensions().get::<MatchedRoute>().is_some_and(|m| {
                    m.route()
                        .policy()
                        .auth
                        .as_ref()
                        .is_some_and(|a| !a.methods.is_empty())
                });
                if !needs_auth {
                    return ResponseFuture::inner(self.inner.call(req), None);
                }
                matched = req.extensions().get::<MatchedRoute>().cloned();
                match matched
                    .as_ref()
                    .and_then(|m| m.route().policy().auth.as_ref().map(|a| (m.snapshot(), a)))
                {
                    Some(x) => x,
                    None => return ResponseFuture::inner(self.inner.call(req), None),
                }
            }
        };
        if requirement.methods.is_empty() {
            return ResponseFuture::inner(self.inner.call(req), None);
        }
        let runtime = &self.shared.runtime;
        let authn_ref = runtime
            .states
            .for_snapshot(self.cache.load(), snapshot, |s| runtime.build(s));
        let authn: &Authenticator = &authn_ref;
        match authn.check(&mut req, snapshot, requirement, true) {
            Check::Admit(principal) => {
                authn.count(Outcome::Ok);
                req.extensions_mut().insert(principal);
                ResponseFuture::inner(self.inner.call(req), None)
            }
            Check::Reject(o, scope) => {
                let grpc = is_grpc(req.headers());
                ResponseFuture::ready(reject(authn, requirement, o, scope, grpc))
            }
            Check::Refetch(jwks) => {
                // Rare path: an unknown `kid` with a JWKS that may be refetched.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let authn: Arc<Authenticator> = Arc::clone(&authn_ref);
                let snapshot = snapshot.clone();
                let requirement = requirement.clone();
                ResponseFuture::boxed(Box::pin(async move {
                    jwks.refetch_for_unknown_kid().await;
                    match authn.check(&mut req, &snapshot, &requirement, false) {
                        Check::Admit(principal) => {
                            authn.count(Outcome::Ok);
                            req.extensions_mut().insert(principal);
                            inner.call(req).await.map(|r| r.map(MeshBody::inner))
                        }
                        Check::Reject(o, scope) => {
                            let grpc = is_grpc(req.headers());
                            Ok(reject(&authn, &requirement, o, scope, grpc).map(MeshBody::full))
                        }
                        Check::Refetch(_) => {
                            let grpc = is_grpc(req.headers());
                            Ok(
                                reject(&authn, &requirement, Outcome::UnknownKid, None, grpc)
                                    .map(MeshBody::full),
                            )
                        }
                    }
                }))
            }
        }
    }
}

/// Response future of [`Auth`].
pub type ResponseFuture<F, B, E> = crate::future::StageFuture<F, B, E>;
