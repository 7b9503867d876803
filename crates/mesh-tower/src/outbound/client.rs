//! The mesh client: route rules, splits, mirroring, endpoint choice and
//! propagation on hyper-util's pooled client.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_core::policy::RetryPolicy;
use mesh_core::{MeshError, is_grpc};
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::BoxError;
use super::balance::Locality;
use super::context::CallContext;
use super::endpoints::Directory;
use super::send::{ReqBody, Shared, Target};
use crate::{LiveSnapshot, MeshBody};

/// The body of responses from the mesh client: the upstream's, streamed,
/// or a problem document the mesh answered with itself.
pub type ClientBody = MeshBody<Incoming>;

/// How many endpoints a request whose body is empty tries when connecting
/// fails (nothing was sent, so trying another is always safe).
const CONNECT_ATTEMPTS: u32 = 3;

/// Builds an [`Outbound`]: the shared core of every mesh client.
#[derive(Debug)]
pub struct OutboundBuilder {
    live: LiveSnapshot,
    caller: Option<Arc<str>>,
    locality: Locality,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
}

impl OutboundBuilder {
    /// This service's name, sent on every call (see `[mesh.propagation]`).
    pub fn caller(mut self, name: impl Into<Arc<str>>) -> Self {
        self.caller = Some(name.into());
        self
    }

    /// Where this instance runs, for locality-aware balancing.
    pub fn locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// How long connecting to an endpoint may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Builds the core. Must be called inside a Tokio runtime.
    pub fn build(self) -> Outbound {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(self.pool_idle_timeout)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .timer(hyper_util::rt::TokioTimer::new());
        let http1 = b.build(connector.clone());
        let h2c = b.http2_only(true).build(connector);
        Outbound {
            shared: Arc::new(Shared {
                live: self.live,
                dir: Directory::new(),
                http1,
                h2c,
                caller: self.caller.and_then(|c| HeaderValue::from_str(&c).ok()),
                locality: self.locality,
                mirrors: DashMap::new(),
                connect_only: Arc::new({
                    let mut p = RetryPolicy::default();
                    p.attempts = CONNECT_ATTEMPTS;
                    p.statuses.clear();
                    p.grpc_codes.clear();
                    p.backoff = Duration::ZERO;
                    p.max_backoff = Duration::ZERO;
                    p
                }),
                budgets: DashMap::new(),
                breakers: DashMap::new(),
                bulkheads: DashMap::new(),
                counters: DashMap::new(),
                durations: DashMap::new(),
            }),
        }
    }
}

/// The shared core of the mesh's clients and gateway: one connection pool,
/// one endpoint directory (load and health per endpoint), the live
/// snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("caller", &self.shared.caller)
            .field("locality", &self.shared.locality)
            .finish_non_exhaustive()
    }
}

/// The state of one endpoint, as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The service.
    pub service: String,
    /// The endpoint id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Region.
    pub region: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Priority group.
    pub priority: u32,
    /// Weight.
    pub weight: u32,
    /// Not ejected.
    pub healthy: bool,
    /// Seconds until the ejection ends.
    pub ejected_for_seconds: Option<f64>,
    /// Ejections in a row.
    pub ejections: u32,
    /// Back from an ejection and not yet answered well: one request at a
    /// time probes it, and a failure ejects it again at once.
    pub probation: bool,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests sent since the endpoint appeared.
    pub requests: u64,
}

impl Outbound {
    /// A builder reading services, endpoints and routes from `live`.
    pub fn builder(live: LiveSnapshot) -> OutboundBuilder {
        OutboundBuilder {
            live,
            caller: None,
            locality: Locality::default(),
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
        }
    }

    /// A client for the logical service `service`.
    pub fn client(&self, service: impl Into<Arc<str>>) -> MeshClient {
        MeshClient {
            outbound: self.clone(),
            service: service.into(),
        }
    }

    /// Every endpoint with its health and load.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        let resolved = self.shared.dir.resolve(&self.shared.live.load());
        let now = self.shared.dir.clock.now();
        let mut out = Vec::new();
        let mut names: Vec<_> = resolved.services.keys().cloned().collect();
        names.sort();
        for name in names {
            let Some(svc) = resolved.services.get(&name) else {
                continue;
            };
            for ep in &svc.endpoints {
                let until = ep.state.ejected_until();
                out.push(EndpointStatus {
                    service: name.to_string(),
                    id: ep.spec.id.to_string(),
                    address: ep.spec.address.to_string(),
                    region: ep.spec.region.as_deref().map(str::to_owned),
                    zone: ep.spec.zone.as_deref().map(str::to_owned),
                    priority: ep.spec.priority,
                    weight: ep.spec.weight,
                    healthy: ep.state.healthy(now),
                    ejected_for_seconds: (until > now)
                        .then(|| Duration::from_nanos(until - now).as_secs_f64()),
                    ejections: ep.state.ejections(),
                    probation: ep.state.on_probation(),
                    consecutive_failures: ep.state.consecutive_failures(),
                    in_flight: ep.state.in_flight(),
                    requests: ep.state.picked(),
                });
            }
        }
        out
    }

    /// Sends `req` to `target`; mesh failures come back as responses
    /// (a problem document, or a gRPC trailers-only status) carrying the
    /// [`MeshError`] in their extensions.
    pub(crate) fn send(
        &self,
        target: Target,
        req: Request<ReqBody>,
    ) -> impl Future<Output = Response<ClientBody>> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            let grpc = is_grpc(req.headers());
            match shared.route_and_send(target, req).await {
                Ok(resp) => resp,
                Err(e) => {
                    let mut resp = e.to_response(grpc).map(MeshBody::full);
                    resp.extensions_mut().insert(e);
                    resp
                }
            }
        }
    }
}

/// A client for one logical service of the mesh: a tower
/// `Service<http::Request<B>>` and a small convenience API.
///
/// The service's mesh routes (routes with destinations whose
/// `match.hosts` name it) pick a destination (weighted, sticky, with a
/// tester's override) and mirror traffic; the balancer picks an endpoint
/// (priority group, locality, P2C over peak-EWMA); the call carries the
/// remaining deadline, the trace context and the caller's identity.
/// Mesh failures (no endpoint, a connect error, a passed deadline) come
/// back as responses: an RFC 9457 problem, or a gRPC status for gRPC
/// requests, with the [`MeshError`] in the response extensions.
///
/// ```no_run
/// # async fn demo(outbound: mesh_tower::outbound::Outbound) -> Result<(), mesh_core::MeshError> {
/// let inventory = outbound.client("inventory");
/// let resp = inventory.get("/stock/42").send().await?;
/// println!("{}: {}", resp.status(), resp.text().await?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MeshClient {
    outbound: Outbound,
    service: Arc<str>,
}

impl MeshClient {
    /// The logical service this client calls.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A request with `method` to `path` (path and query, e.g. `/stock/42?full=1`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let uri = path.parse::<Uri>().map_err(|_| MeshError::BadRequest {
            detail: format!("`{path}` is not a valid request target"),
        });
        RequestBuilder {
            client: self.clone(),
            parts: uri.map(|uri| {
                let mut r = Request::new(());
                *r.method_mut() = method;
                *r.uri_mut() = uri;
                r.into_parts().0
            }),
            body: Bytes::new(),
            ctx: None,
        }
    }

    /// A `GET` request.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A `POST` request.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A `PUT` request.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// A `DELETE` request.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Sends a request; `Err` when the mesh could not get an answer from
    /// the service (the upstream's own error statuses are `Ok`).
    pub async fn send<B>(&self, req: Request<B>) -> Result<ClientResponse, MeshError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut resp = self
            .outbound
            .send(Target::Service(self.service.clone()), box_body(req))
            .await;
        match resp.extensions_mut().remove::<MeshError>() {
            Some(e) => Err(e),
            None => Ok(ClientResponse { inner: resp }),
        }
    }
}

fn box_body<B>(req: Request<B>) -> Request<ReqBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    req.map(|b| UnsyncBoxBody::new(b.map_err(Into::into)))
}

/// The future of a [`MeshClient`] call.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ClientBody>, Infallible>> + Send + 'static>>;

impl<B> Service<Request<B>> for MeshClient
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ClientBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let fut = self
            .outbound
            .send(Target::Service(self.service.clone()), box_body(req));
        Box::pin(async move { Ok(fut.await) })
    }
}

/// A request being built by [`MeshClient::get`] and friends.
#[derive(Debug)]
#[must_use = "a request does nothing until sent"]
pub struct RequestBuilder {
    client: MeshClient,
    parts: Result<http::request::Parts, MeshError>,
    body: Bytes,
    ctx: Option<CallContext>,
}

impl RequestBuilder {
    /// Adds a header; an invalid name or value makes `send` fail.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Ok(parts) = &mut self.parts {
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => {
                    parts.headers.append(n, v);
                }
                _ => {
                    self.parts = Err(MeshError::BadRequest {
                        detail: format!("invalid header `{name}`"),
                    });
                }
            }
        }
        self
    }

    /// The request body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body (and `Content-Type: application/json`).
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(v) => {
                self.body = v.into();
                if let Ok(parts) = &mut self.parts {
                    parts.headers.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
            }
            Err(e) => {
                self.parts = Err(MeshError::BadRequest {
                    detail: format!("the body cannot be serialized: {e}"),
                });
            }
        }
        self
    }

    /// A deadline for this call (the context's, if sooner, still applies).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let ctx = self
            .ctx
            .take()
            .or_else(CallContext::current)
            .unwrap_or_default();
        self.ctx = Some(ctx.with_timeout(timeout));
        self
    }

    /// The context to propagate instead of the current task's.
    pub fn context(mut self, ctx: CallContext) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// Sends the request.
    pub async fn send(self) -> Result<ClientResponse, MeshError> {
        let mut parts = self.parts?;
        if let Some(ctx) = self.ctx {
            parts.extensions.insert(ctx);
        }
        let req = Request::from_parts(parts, http_body_util::Full::new(self.body));
        self.client.send(req).await
    }
}

/// A response from [`RequestBuilder::send`].
#[derive(Debug)]
pub struct ClientResponse {
    inner: Response<ClientBody>,
}

impl ClientResponse {
    /// The status.
    pub fn status(&self) -> http::StatusCode {
        self.inner.status()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, MeshError> {
        self.inner
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| MeshError::BadGateway {
                detail: "the response body was cut off".into(),
            })
    }

    /// The body as UTF-8 text.
    pub async fn text(self) -> Result<String, MeshError> {
        let b = self.bytes().await?;
        String::from_utf8(b.to_vec()).map_err(|_| MeshError::BadGateway {
            detail: "the response body is not UTF-8".into(),
        })
    }

    /// The body parsed as JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, MeshError> {
        let b = self.bytes().await?;
        serde_json::from_slice(&b).map_err(|e| MeshError::BadGateway {
            detail: format!("the response body is not the expected JSON: {e}"),
        })
    }

    /// The underlying response, body streaming.
    pub fn into_inner(self) -> Response<ClientBody> {
        self.inner
    }
}

impl Outbound {
    /// `GET /mesh/endpoints` (every endpoint with its zone, health and
    /// load) and `GET /mesh/circuits` (breakers, retry budgets, bulkheads
    /// and ejected endpoints).
    pub fn admin_router(&self) -> axum::Router {
        let (a, b) = (self.clone(), self.clone());
        axum::Router::new()
            .route(
                "/mesh/endpoints",
                axum::routing::get(move || {
                    let this = a.clone();
                    async move { axum::Json(serde_json::json!({ "endpoints": this.endpoints() })) }
                }),
            )
            .route(
                "/mesh/circuits",
                axum::routing::get(move || {
                    let this = b.clone();
                    async move { axum::Json(this.circuits()) }
                }),
            )
    }

    /// Breakers, retry budgets, bulkheads and ejected endpoints, as JSON.
    pub fn circuits(&self) -> serde_json::Value {
        let sh = &self.shared;
        let mut breakers: Vec<_> = sh
            .breakers
            .iter()
            .map(|e| {
                let (route, service) = e.key();
                serde_json::json!({
                    "route": &**route,
                    "service": &**service,
                    "status": e.value().status(),
                })
            })
            .collect();
        breakers.sort_by_key(|v| v.to_string());
        let mut budgets: Vec<_> = sh
            .budgets
            .iter()
            .map(|e| {
                let (ratio, min, budget) = e.value();
                serde_json::json!({
                    "route": &**e.key(),
                    "ratio": ratio,
                    "min_per_second": min,
                    "window": budget.status(),
                })
            })
            .collect();
        budgets.sort_by_key(|v| v.to_string());
        let mut bulkheads: Vec<_> = sh
            .bulkheads
            .iter()
            .map(|e| {
                serde_json::json!({
                    "service": &**e.key(),
                    "max": e.value().max(),
                    "in_flight": e.value().in_flight(),
                })
            })
            .collect();
        bulkheads.sort_by_key(|v| v.to_string());
        let ejected: Vec<_> = self
            .endpoints()
            .into_iter()
            .filter(|e| !e.healthy)
            .collect();
        serde_json::json!({
            "breakers": breakers,
            "retry_budgets": budgets,
            "bulkheads": bulkheads,
            "ejected_endpoints": ejected,
        })
    }
}

/// Forwards each request to its matched route's destinations: the last
/// stage of the edge gateway (behind `mesh.inbound()`, which matched the
/// route and applied its policies). A request without a
/// [`MatchedRoute`](crate::MatchedRoute) gets a 404 problem.
#[derive(Debug, Clone)]
pub struct Forward {
    outbound: Outbound,
}

impl Outbound {
    /// The forwarding service of the edge gateway.
    pub fn forward(&self) -> Forward {
        Forward {
            outbound: self.clone(),
        }
    }
}

impl<B> Service<Request<B>> for Forward
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ClientBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(m) = req.extensions().get::<crate::MatchedRoute>() else {
            let e = MeshError::RouteNotFound {
                method: req.method().to_string(),
                path: req.uri().path().to_owned(),
            };
            let resp = e.to_response(is_grpc(req.headers())).map(MeshBody::full);
            return Box::pin(std::future::ready(Ok(resp)));
        };
        let target = Target::Route(m.snapshot().clone(), m.route().index());
        let fut = self.outbound.send(target, box_body(req));
        Box::pin(async move { Ok(fut.await) })
    }
}
