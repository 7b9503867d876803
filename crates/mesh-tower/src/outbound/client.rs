//! The mesh client: route rules, splits, mirroring, endpoint choice and
//! propagation on hyper-util's pooled client.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_core::policy::{CircuitBreakerPolicy, Mirror, Propagation, RetryPolicy};
use mesh_core::{MeshError, Route, Snapshot, is_grpc};
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::BoxError;
use super::balance::{Locality, Pick};
use super::context::{CallContext, TraceContext, format_grpc_timeout};
use super::endpoints::{Directory, EndpointState, Resolved, ServiceEndpoints};
use super::{mirror, split};
use crate::resilience::{
    Bulkhead, CircuitBreaker, Outcome, RetryBody, RetryBudget, response_failed, retry,
};
use crate::{LiveSnapshot, MeshBody};

/// The body of responses from the mesh client: the upstream's, streamed,
/// or a problem document the mesh answered with itself.
pub type ClientBody = MeshBody<Incoming>;

type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// How many endpoints a request whose body is empty tries when connecting
/// fails (nothing was sent, so trying another is always safe).
const CONNECT_ATTEMPTS: u32 = 3;
/// How long a mirrored copy may take before it is abandoned.
const SHADOW_TIMEOUT: Duration = Duration::from_secs(30);

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

struct Shared {
    live: LiveSnapshot,
    dir: Directory,
    http1: Client<HttpConnector, ReqBody>,
    h2c: Client<HttpConnector, ReqBody>,
    caller: Option<HeaderValue>,
    locality: Locality,
    /// Mirrored copies in flight, per route.
    mirrors: DashMap<Arc<str>, Arc<AtomicU32>>,
    /// The policy of requests on routes without one: connect failures only.
    connect_only: Arc<RetryPolicy>,
    /// Retry budgets per route: (ratio, floor, budget).
    budgets: DashMap<Arc<str>, (f64, u32, Arc<RetryBudget>)>,
    /// Breakers per (route, destination service).
    breakers: DashMap<(Arc<str>, Arc<str>), Arc<CircuitBreaker>>,
    /// Bulkheads per service.
    bulkheads: DashMap<Arc<str>, Arc<Bulkhead>>,
    /// Requests and attempts counters per service.
    counters: DashMap<Arc<str>, (metrics::Counter, metrics::Counter)>,
    /// `http.client.request.duration` / `rpc.client.call.duration` handles.
    durations: DashMap<DurationKey, metrics::Histogram>,
}

/// Most cached duration handles; past it the cache starts over (endpoint
/// churn would otherwise grow it without end).
const MAX_DURATION_HANDLES: usize = 4096;

/// The labels of one attempt's duration: service, endpoint, method, outcome.
type DurationKey = (Arc<str>, http::uri::Authority, &'static str, AttemptOutcome);

/// How an attempt ended, as its duration metric labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AttemptOutcome {
    /// An HTTP response with this status.
    Status(u16),
    /// A gRPC call with this status code (from a trailers-only response,
    /// the HTTP mapping, or the mesh's own failure).
    Grpc(u8),
    /// No response to an HTTP request: `timeout`, `connect` or `transport`.
    Error(&'static str),
}

/// Where a call goes.
pub(crate) enum Target {
    /// A logical service: its mesh routes apply, else the service itself.
    Service(Arc<str>),
    /// A route already matched (the gateway).
    Route(Arc<Snapshot>, usize),
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

impl Shared {
    async fn route_and_send(
        self: Arc<Self>,
        target: Target,
        mut req: Request<ReqBody>,
    ) -> Result<Response<ClientBody>, MeshError> {
        let ctx = req
            .extensions_mut()
            .remove::<CallContext>()
            .or_else(CallContext::current)
            .unwrap_or_default();
        let (snapshot, route, name) = match target {
            Target::Service(name) => {
                let snapshot = self.live.load();
                let route = snapshot
                    .match_outbound(&name, req.method(), req.uri(), req.headers())
                    .map(|r| r.index());
                (snapshot, route, Some(name))
            }
            Target::Route(snapshot, i) => (snapshot, Some(i), None),
        };
        let route: Option<&Route> = route.and_then(|i| snapshot.routes().get(i)).map(|r| &**r);
        let resolved = self.dir.resolve(&snapshot);

        // The destination.
        type Labels = [(String, String)];
        let (primary, subset, failover): (Arc<str>, &Labels, &[Arc<str>]) =
            match route.filter(|r| !r.destinations().is_empty()) {
                Some(r) => {
                    let i = split::choose(r, req.headers(), ctx.consumer.as_deref());
                    let d = r.destinations().get(i).ok_or(MeshError::Internal)?;
                    (d.service.clone(), &d.subset, &d.failover)
                }
                None => match name {
                    Some(n) => (n, &[], &[]),
                    None => {
                        // The gateway: the resolved API version may name the service.
                        let by_version = req
                            .extensions()
                            .get::<crate::version::ApiVersion>()
                            .and_then(|v| snapshot.version_service(v.api(), v.version()));
                        match by_version {
                            Some(s) => (Arc::from(s), &[], &[]),
                            None => {
                                return Err(MeshError::BadGateway {
                                    detail: "the route has no destination".into(),
                                });
                            }
                        }
                    }
                },
            };

        // The gateway's access log learns the destination and attempts.
        let observed = req
            .extensions()
            .get::<Arc<crate::observe::Observed>>()
            .cloned();
        if let Some(o) = &observed {
            let _ = o.destination.set(primary.clone());
        }

        // Deadline: the caller's, and the route's total timeout.
        let policy = route.map(Route::policy);
        let timeouts = policy.and_then(|p| p.timeout);
        let now = tokio::time::Instant::now();
        let deadline = match (
            ctx.deadline,
            timeouts
                .and_then(|t| t.total)
                .and_then(|t| now.checked_add(t)),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let remaining = match deadline {
            Some(d) if d <= now => {
                return Err(MeshError::Timeout {
                    detail: "the deadline passed before the call was made".into(),
                });
            }
            Some(d) => Some(d - now),
            None => None,
        };
        let grpc = is_grpc(req.headers());
        propagate(
            req.headers_mut(),
            snapshot.propagation(),
            &ctx,
            self.caller.as_ref(),
            remaining,
            grpc,
        );

        // Mirroring.
        let mut req = req;
        if let Some(m) = route.and_then(Route::mirror)
            && m.per_million > 0
            && fastrand::u32(..1_000_000) < m.per_million
        {
            req = self.mirror(route.map(Route::id_arc), m, &resolved, req);
        }

        // Retries: the route's policy, or only connect failures of
        // requests whose body is empty (nothing was sent, always safe).
        let route_key: Arc<str> = route.map_or_else(|| primary.clone(), |r| r.id_arc().clone());
        let (retry_policy, budget) = match policy.and_then(|p| p.retry.as_ref()) {
            Some(p) => (Arc::new(p.clone()), Some(self.budget(&route_key, p))),
            None => (self.connect_only.clone(), None),
        };
        let retryable = policy
            .and_then(|p| p.retry.as_ref())
            .is_some_and(|p| retry::retryable_request(p, req.method(), req.headers()));
        let (parts, body) = req.into_parts();
        let replay = if retryable {
            retry::buffer(body, retry_policy.replay_limit)
                .await
                .map_err(|e| {
                    // The gateway's body cap, passed while buffering.
                    if body_too_large(&*e) {
                        MeshError::PayloadTooLarge {
                            limit: snapshot.gateway().max_body,
                        }
                    } else {
                        MeshError::BadRequest {
                            detail: "the request body could not be read".into(),
                        }
                    }
                })?
        } else if body.is_end_stream() {
            retry::Replay::Whole(retry::ReplayBody::empty())
        } else {
            retry::Replay::Once(retry::PrefixedBody::new(Default::default(), body))
        };
        let (whole, mut once) = match replay {
            retry::Replay::Whole(w) => (Some(w), None),
            retry::Replay::Once(o) => (None, Some(o)),
        };
        let replayable = whole.is_some();
        let breaker_policy = policy.and_then(|p| p.circuit_breaker.clone());
        let per_try = timeouts.and_then(|t| t.per_try);
        let chain: Arc<[Arc<str>]> = std::iter::once(primary.clone())
            .chain(failover.iter().cloned())
            .collect();
        let subset: Arc<[(String, String)]> = subset.into();
        let head = Arc::new(parts);
        let tried = Arc::new(Tried::default());
        let this = self.clone();
        self.counters(&primary).0.increment(1);
        let run = retry::run(
            Some(&retry_policy),
            budget.as_deref(),
            retryable,
            replayable,
            deadline,
            move |n| {
                let body = match (&whole, once.take()) {
                    (Some(w), _) => RetryBody::replay(w.body()),
                    (None, Some(o)) => RetryBody::once(o),
                    (None, None) => RetryBody::empty(),
                };
                this.clone().attempt(AttemptPlan {
                    n,
                    resolved: resolved.clone(),
                    chain: chain.clone(),
                    subset: subset.clone(),
                    head: head.clone(),
                    body,
                    tried: tried.clone(),
                    route_key: route_key.clone(),
                    breaker: breaker_policy.clone(),
                    per_try,
                    deadline,
                    observed: observed.clone(),
                })
            },
        );
        match deadline {
            Some(d) => match tokio::time::timeout_at(d, run).await {
                Ok(r) => r,
                Err(_) => Err(MeshError::Timeout {
                    detail: format!("service `{primary}` did not answer in time"),
                }),
            },
            None => run.await,
        }
    }

    /// One attempt: an endpoint (not one tried before), the destination's
    /// breaker and bulkhead, the call with its per-try timeout, and the
    /// outcome recorded for the breaker and the endpoint's health.
    async fn attempt(self: Arc<Self>, plan: AttemptPlan) -> retry::Attempt<ClientBody> {
        let AttemptPlan {
            n,
            resolved,
            chain,
            subset,
            head,
            body,
            tried,
            route_key,
            breaker,
            per_try,
            deadline,
            observed,
        } = plan;
        if let Some(o) = &observed {
            o.attempts.fetch_add(1, Ordering::Relaxed);
        }
        let chain_refs: Vec<&Arc<str>> = chain.iter().collect();
        let (svc, i) = match self.choose(&resolved, &chain_refs, &subset, &tried) {
            Ok(x) => x,
            Err(e) => return retry::Attempt::Refused(e),
        };
        let Some(ep) = svc.endpoints.get(i) else {
            return retry::Attempt::Refused(MeshError::Internal);
        };
        self.counters(&svc.name).1.increment(1);
        let breaker = breaker.map(|p| self.breaker(&route_key, &svc.name, p));
        let permit = match breaker.as_ref().map(|b| b.try_acquire()) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(left)) => {
                return retry::Attempt::Refused(MeshError::Unavailable {
                    detail: format!("the circuit breaker of service `{}` is open", svc.name),
                    retry_after: Some(left),
                });
            }
        };
        let _slot = match svc.max_concurrent {
            None => None,
            Some(max) => match self.bulkhead(&svc.name, max).try_acquire() {
                Some(p) => Some(p),
                None => {
                    metrics::counter!("apimesh.bulkhead.rejected").increment(1);
                    return retry::Attempt::Refused(MeshError::Unavailable {
                        detail: format!(
                            "service `{}` has {max} requests in flight, its limit",
                            svc.name
                        ),
                        retry_after: None,
                    });
                }
            },
        };
        let mut req = Request::new(body);
        *req.method_mut() = head.method.clone();
        *req.version_mut() = if svc.h2c {
            http::Version::HTTP_2
        } else if head.version == http::Version::HTTP_2 {
            http::Version::HTTP_11
        } else {
            head.version
        };
        *req.headers_mut() = head.headers.clone();
        match endpoint_uri(&ep.spec.address, &head.uri) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return retry::Attempt::Refused(e),
        }
        retry::mark_attempt(&mut req, n);
        if let Some(d) = deadline {
            refresh_deadline(req.headers_mut(), d, &self.live.load());
        }
        let client = if svc.h2c { &self.h2c } else { &self.http1 };
        let grpc = is_grpc(&head.headers);
        let started = tokio::time::Instant::now();
        let mut guard = ep.state.start(self.dir.clock);
        let fut = client.request(req.map(UnsyncBoxBody::new));
        let limit = match (per_try, deadline) {
            (Some(t), Some(d)) => Some(
                d.saturating_duration_since(tokio::time::Instant::now())
                    .min(t),
            ),
            (t, _) => t,
        };
        let result = match limit {
            Some(l) => match tokio::time::timeout(l, fut).await {
                Ok(r) => Ok(r),
                Err(_) => Err(()),
            },
            None => Ok(fut.await),
        };
        let now = self.dir.clock.now();
        let outcome = match &result {
            Ok(Ok(resp)) if grpc => AttemptOutcome::Grpc(
                retry::grpc_status(resp.headers())
                    .unwrap_or_else(|| {
                        if resp.status() == http::StatusCode::OK {
                            mesh_core::GrpcCode::Ok
                        } else {
                            mesh_core::GrpcCode::from_http_status(resp.status())
                        }
                    })
                    .as_u8(),
            ),
            Ok(Ok(resp)) => AttemptOutcome::Status(resp.status().as_u16()),
            Err(()) if grpc => AttemptOutcome::Grpc(mesh_core::GrpcCode::DeadlineExceeded.as_u8()),
            Ok(Err(_)) if grpc => AttemptOutcome::Grpc(mesh_core::GrpcCode::Unavailable.as_u8()),
            Err(()) => AttemptOutcome::Error("timeout"),
            Ok(Err(e)) if e.is_connect() => AttemptOutcome::Error("connect"),
            Ok(Err(_)) => AttemptOutcome::Error("transport"),
        };
        self.duration(&svc.name, &ep.spec.address, &head.method, outcome)
            .record(started.elapsed().as_secs_f64());
        let record = |failed: bool| {
            if let (Some(b), Some(p)) = (&breaker, permit) {
                b.record(
                    p,
                    if failed {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    },
                );
            }
        };
        match result {
            Err(()) => {
                drop(guard);
                svc.failure(i, now);
                record(true);
                tried.add(&ep.state);
                retry::Attempt::Failed(MeshError::Timeout {
                    detail: format!("service `{}` did not answer in time", svc.name),
                })
            }
            Ok(Ok(resp)) => {
                guard.responded();
                if matches!(resp.status().as_u16(), 502..=504) {
                    svc.failure(i, now);
                    tried.add(&ep.state);
                } else {
                    svc.success(i, now);
                }
                let failed = breaker
                    .as_ref()
                    .is_some_and(|b| response_failed(b.policy(), &resp));
                record(failed);
                retry::Attempt::Response(resp.map(MeshBody::inner))
            }
            Ok(Err(e)) if e.is_connect() => {
                drop(guard);
                svc.failure(i, now);
                record(true);
                tried.add(&ep.state);
                tracing::debug!(service = %svc.name, endpoint = %ep.spec.id, error = %e, "connect failed");
                retry::Attempt::NotSent(MeshError::Unavailable {
                    detail: format!(
                        "could not connect to service `{}` (endpoint `{}`)",
                        svc.name, ep.spec.id
                    ),
                    retry_after: None,
                })
            }
            Ok(Err(e)) if body_too_large(&e) => {
                drop(guard);
                retry::Attempt::Refused(MeshError::PayloadTooLarge {
                    limit: self.live.load().gateway().max_body,
                })
            }
            Ok(Err(e)) => {
                drop(guard);
                svc.failure(i, now);
                record(true);
                tried.add(&ep.state);
                tracing::debug!(service = %svc.name, endpoint = %ep.spec.id, error = %e, "upstream failed");
                retry::Attempt::Failed(MeshError::BadGateway {
                    detail: format!("service `{}` failed to answer", svc.name),
                })
            }
        }
    }

    /// The retry budget of a route (kept while its policy is unchanged).
    fn budget(&self, key: &Arc<str>, p: &RetryPolicy) -> Arc<RetryBudget> {
        let entry = self.budgets.get(key).map(|e| e.value().clone());
        match entry {
            Some((ratio, min, b)) if ratio == p.budget_ratio && min == p.budget_min_per_second => b,
            _ => {
                let b = Arc::new(RetryBudget::new(p.budget_ratio, p.budget_min_per_second));
                self.budgets.insert(
                    key.clone(),
                    (p.budget_ratio, p.budget_min_per_second, b.clone()),
                );
                b
            }
        }
    }

    /// The breaker of a route's destination service (kept while its policy is unchanged).
    fn breaker(
        &self,
        route: &Arc<str>,
        service: &Arc<str>,
        p: CircuitBreakerPolicy,
    ) -> Arc<CircuitBreaker> {
        let key = (route.clone(), service.clone());
        if let Some(b) = self.breakers.get(&key)
            && b.policy() == &p
        {
            return b.clone();
        }
        let b = Arc::new(CircuitBreaker::named(p, route, service));
        self.breakers.insert(key, b.clone());
        b
    }

    /// The bulkhead of a service (kept while its size is unchanged).
    fn bulkhead(&self, service: &Arc<str>, max: u32) -> Arc<Bulkhead> {
        if let Some(b) = self.bulkheads.get(service)
            && b.max() == max
        {
            return b.clone();
        }
        let b = Arc::new(Bulkhead::new(max));
        self.bulkheads.insert(service.clone(), b.clone());
        b
    }

    /// Requests and attempts counters of a service.
    fn counters(&self, service: &Arc<str>) -> (metrics::Counter, metrics::Counter) {
        if let Some(c) = self.counters.get(service) {
            return c.clone();
        }
        let labels = [("service", service.to_string())];
        let c = (
            metrics::counter!("apimesh.client.requests", &labels),
            metrics::counter!("apimesh.client.attempts", &labels),
        );
        self.counters.insert(service.clone(), c.clone());
        c
    }

    /// The duration histogram of attempts to one endpoint of `service`
    /// with `method` that ended with `outcome`: `http.client.request.duration`
    /// (or `rpc.client.call.duration` for gRPC), seconds to the response
    /// head, labelled `apimesh.destination`, `server.address`, `server.port`
    /// and the method and outcome.
    fn duration(
        &self,
        service: &Arc<str>,
        address: &http::uri::Authority,
        method: &Method,
        outcome: AttemptOutcome,
    ) -> metrics::Histogram {
        let method = crate::observe::method_label(method);
        let key = (service.clone(), address.clone(), method, outcome);
        if let Some(h) = self.durations.get(&key) {
            return h.clone();
        }
        let mut labels = vec![
            metrics::Label::new("apimesh.destination", service.to_string()),
            metrics::Label::new("server.address", address.host().to_owned()),
        ];
        if let Some(port) = address.port_u16() {
            labels.push(metrics::Label::new("server.port", port.to_string()));
        }
        let name = match outcome {
            AttemptOutcome::Grpc(_) => "rpc.client.call.duration",
            _ => "http.client.request.duration",
        };
        metrics::describe_histogram!(
            name,
            metrics::Unit::Seconds,
            "Duration of outbound attempts through the mesh client, to the response head."
        );
        let h = match outcome {
            AttemptOutcome::Grpc(code) => {
                labels.push(metrics::Label::new("rpc.system", "grpc"));
                labels.push(metrics::Label::new(
                    "rpc.grpc.status_code",
                    code.to_string(),
                ));
                metrics::histogram!(name, labels)
            }
            AttemptOutcome::Status(status) => {
                labels.push(metrics::Label::new("http.request.method", method));
                labels.push(metrics::Label::new(
                    "http.response.status_code",
                    status.to_string(),
                ));
                metrics::histogram!(name, labels)
            }
            AttemptOutcome::Error(kind) => {
                labels.push(metrics::Label::new("http.request.method", method));
                labels.push(metrics::Label::new("error.type", kind));
                metrics::histogram!(name, labels)
            }
        };
        if self.durations.len() >= MAX_DURATION_HANDLES {
            self.durations.clear();
        }
        self.durations.insert(key, h.clone());
        h
    }

    /// The endpoint for a request: the first service of `chain` with a
    /// healthy endpoint (the primary with its subset, then each failover);
    /// if none has one, an ejected endpoint rather than nothing.
    fn choose(
        &self,
        resolved: &Arc<Resolved>,
        chain: &[&Arc<str>],
        subset: &[(String, String)],
        tried: &Tried,
    ) -> Result<(Arc<ServiceEndpoints>, usize), MeshError> {
        let now = self.dir.clock.now();
        let spill = self.live.load().locality_spill();
        // Healthy and untried first; then healthy again; then ejected ones
        // rather than nothing.
        for (panic, avoid_tried) in [(false, true), (false, false), (true, true), (true, false)] {
            if avoid_tried && tried.is_empty() && panic {
                continue;
            }
            for (pos, name) in chain.iter().enumerate() {
                let Some(svc) = resolved.services.get(*name) else {
                    continue;
                };
                let exclude: Vec<usize> = if avoid_tried && !tried.is_empty() {
                    svc.endpoints
                        .iter()
                        .enumerate()
                        .filter(|(_, ep)| tried.contains(&ep.state))
                        .map(|(i, _)| i)
                        .collect()
                } else {
                    Vec::new()
                };
                let pick = Pick {
                    svc,
                    subset: if pos == 0 { subset } else { &[] },
                    locality: &self.locality,
                    spill,
                    exclude: &exclude,
                    now,
                };
                if let Some(i) = pick.choose(panic) {
                    return Ok((svc.clone(), i));
                }
            }
        }
        Err(MeshError::Unavailable {
            detail: format!(
                "service `{}` has no available endpoint",
                chain.first().map_or("", |s| &***s)
            ),
            retry_after: None,
        })
    }

    /// Starts a shadow copy of `req` to the mirror service, unless too
    /// many copies are in flight; returns the real request (its body teed).
    fn mirror(
        self: &Arc<Self>,
        route: Option<&Arc<str>>,
        m: &Mirror,
        resolved: &Arc<Resolved>,
        req: Request<ReqBody>,
    ) -> Request<ReqBody> {
        let key = route.cloned().unwrap_or_else(|| Arc::from(""));
        let slots = self
            .mirrors
            .entry(key)
            .or_insert_with(|| Arc::new(AtomicU32::new(0)))
            .clone();
        if slots.fetch_add(1, Ordering::AcqRel) >= m.max_in_flight {
            slots.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("apimesh.mirror.skipped").increment(1);
            return req;
        }
        let slot = Slot(slots);
        let (parts, body) = req.into_parts();
        let (real, shadow) = mirror::tee(body);
        let mut copy = Request::new(shadow);
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.headers_mut() = parts.headers.clone();
        if let Some(host) = copy
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| HeaderValue::try_from(format!("{h}-shadow")).ok())
        {
            copy.headers_mut().insert(HOST, host);
        }
        let this = self.clone();
        let resolved = resolved.clone();
        let service = m.service.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok((svc, i)) = this.choose(&resolved, &[&service], &[], &Tried::default()) else {
                return;
            };
            let Some(ep) = svc.endpoints.get(i) else {
                return;
            };
            let (mut parts, body) = copy.into_parts();
            let Ok(uri) = endpoint_uri(&ep.spec.address, &parts.uri) else {
                return;
            };
            parts.uri = uri;
            if svc.h2c {
                parts.version = http::Version::HTTP_2;
            }
            let client = if svc.h2c { &this.h2c } else { &this.http1 };
            let req = Request::from_parts(parts, UnsyncBoxBody::new(body));
            let mut guard = ep.state.start(this.dir.clock);
            let res = tokio::time::timeout(SHADOW_TIMEOUT, client.request(req)).await;
            guard.responded();
            metrics::counter!("apimesh.mirror.sent").increment(1);
            if let Ok(Ok(resp)) = res {
                // Read and discard, so the connection can be reused.
                let _ = tokio::time::timeout(SHADOW_TIMEOUT, resp.into_body().collect()).await;
            }
        });
        Request::from_parts(parts, UnsyncBoxBody::new(real))
    }
}

/// Whether a request failed because its body passed a [`Limited`](http_body_util::Limited) cap.
fn body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The endpoints a request tried, by the address of their state: a retry
/// prefers another one. Lock-free; remembers the first eight.
#[derive(Debug, Default)]
pub(crate) struct Tried {
    slots: [AtomicUsize; 8],
    len: AtomicUsize,
}

impl Tried {
    fn add(&self, state: &Arc<EndpointState>) {
        let at = self.len.fetch_add(1, Ordering::AcqRel);
        if let Some(slot) = self.slots.get(at) {
            slot.store(Arc::as_ptr(state) as usize, Ordering::Release);
        }
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    fn contains(&self, state: &Arc<EndpointState>) -> bool {
        let p = Arc::as_ptr(state) as usize;
        self.slots.iter().any(|s| s.load(Ordering::Acquire) == p)
    }
}

/// What one attempt needs, owned (hedged attempts overlap).
struct AttemptPlan {
    n: u32,
    resolved: Arc<Resolved>,
    chain: Arc<[Arc<str>]>,
    subset: Arc<[(String, String)]>,
    head: Arc<http::request::Parts>,
    body: RetryBody,
    tried: Arc<Tried>,
    route_key: Arc<str>,
    breaker: Option<CircuitBreakerPolicy>,
    per_try: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
    observed: Option<Arc<crate::observe::Observed>>,
}

/// Writes the deadline left at `deadline` into the attempt's headers.
fn refresh_deadline(headers: &mut HeaderMap, deadline: tokio::time::Instant, snapshot: &Snapshot) {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if is_grpc(headers) {
        headers.insert("grpc-timeout", format_grpc_timeout(left));
    } else if let Some(h) = &snapshot.propagation().deadline {
        headers.insert(h.clone(), HeaderValue::from(left.as_millis().max(1) as u64));
    }
}

/// A mirrored copy in flight; frees its slot when done.
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn endpoint_uri(addr: &http::uri::Authority, uri: &Uri) -> Result<Uri, MeshError> {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(addr.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| MeshError::BadRequest {
            detail: "the request target cannot be sent upstream".into(),
        })
}

/// Writes the context headers of an outbound call.
fn propagate(
    headers: &mut HeaderMap,
    p: &Propagation,
    ctx: &CallContext,
    caller: Option<&HeaderValue>,
    remaining: Option<Duration>,
    grpc: bool,
) {
    if let (Some(h), Some(v)) = (&p.caller, caller) {
        headers.insert(h.clone(), v.clone());
    }
    if let (Some(h), Some(c)) = (&p.consumer, &ctx.consumer)
        && let Ok(v) = HeaderValue::from_str(c)
    {
        headers.insert(h.clone(), v);
    }
    if let Some(r) = remaining {
        if grpc {
            let own = headers
                .get("grpc-timeout")
                .and_then(|v| super::context::parse_grpc_timeout(v.as_bytes()));
            headers.insert(
                "grpc-timeout",
                format_grpc_timeout(own.map_or(r, |o| o.min(r))),
            );
        } else if let Some(h) = &p.deadline {
            let ms = r.as_millis().max(1);
            let own = headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u128>().ok());
            headers.insert(
                h.clone(),
                HeaderValue::from(own.map_or(ms, |o| o.min(ms)) as u64),
            );
        }
    }
    match &ctx.trace {
        Some(t) => {
            let child = t.child();
            headers.insert("traceparent", child.traceparent());
            match &t.state {
                Some(s) => {
                    headers.insert("tracestate", s.clone());
                }
                None => {
                    headers.remove("tracestate");
                }
            }
        }
        None if !headers.contains_key("traceparent") => {
            headers.insert("traceparent", TraceContext::new_root().traceparent());
        }
        None => {}
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
