//! The send path of the mesh client and the gateway: routing a request to
//! a destination, mirroring, the retry loop and each attempt (endpoint
//! choice, breaker, bulkhead, timeouts, outcome), and propagation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use mesh_core::policy::{CircuitBreakerPolicy, Mirror, Propagation, RetryPolicy};
use mesh_core::{MeshError, Route, Snapshot, is_grpc};

use super::BoxError;
use super::balance::{Locality, Pick};
use super::client::ClientBody;
use super::context::{CallContext, TraceContext, format_grpc_timeout};
use super::endpoints::{Directory, EndpointState, Resolved, ServiceEndpoints};
use super::{mirror, split};
use crate::resilience::{
    Bulkhead, CircuitBreaker, Outcome, RetryBody, RetryBudget, response_failed, retry,
};
use crate::{LiveSnapshot, MeshBody};

/// The request body the pooled client sends.
pub(crate) type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long a mirrored copy may take before it is abandoned.
const SHADOW_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a call goes.
pub(crate) enum Target {
    /// A logical service: its mesh routes apply, else the service itself.
    Service(Arc<str>),
    /// A route already matched (the gateway).
    Route(Arc<Snapshot>, usize),
}

pub(super) struct Shared {
    pub(super) live: LiveSnapshot,
    pub(super) dir: Directory,
    pub(super) http1: Client<HttpConnector, ReqBody>,
    pub(super) h2c: Client<HttpConnector, ReqBody>,
    pub(super) caller: Option<HeaderValue>,
    pub(super) locality: Locality,
    /// Mirrored copies in flight, per route.
    pub(super) mirrors: DashMap<Arc<str>, Arc<AtomicU32>>,
    /// The policy of requests on routes without one: connect failures only.
    pub(super) connect_only: Arc<RetryPolicy>,
    /// Retry budgets per route: (ratio, floor, budget).
    pub(super) budgets: DashMap<Arc<str>, (f64, u32, Arc<RetryBudget>)>,
    /// Breakers per (route, destination service).
    pub(super) breakers: DashMap<(Arc<str>, Arc<str>), Arc<CircuitBreaker>>,
    /// Bulkheads per service.
    pub(super) bulkheads: DashMap<Arc<str>, Arc<Bulkhead>>,
    /// Requests and attempts counters per service.
    pub(super) counters: DashMap<Arc<str>, (metrics::Counter, metrics::Counter)>,
    /// `http.client.request.duration` / `rpc.client.call.duration` handles.
    pub(super) durations: DashMap<DurationKey, metrics::Histogram>,
}

/// Most cached duration handles; past it the cache starts over (endpoint
/// churn would otherwise grow it without end).
const MAX_DURATION_HANDLES: usize = 4096;

/// The labels of one attempt's duration: service, endpoint, method, outcome.
pub(super) type DurationKey = (Arc<str>, http::uri::Authority, &'static str, AttemptOutcome);

/// How an attempt ended, as its duration metric labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum AttemptOutcome {
    /// An HTTP response with this status.
    Status(u16),
    /// A gRPC call with this status code (from a trailers-only response,
    /// the HTTP mapping, or the mesh's own failure).
    Grpc(u8),
    /// No response to an HTTP request: `timeout`, `connect` or `transport`.
    Error(&'static str),
}

impl Shared {
    pub(super) async fn route_and_send(
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
            req = self.mirror(
                route.map(Route::id_arc),
                m,
                &resolved,
                snapshot.locality_spill(),
                req,
            );
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
                    snapshot: snapshot.clone(),
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
            snapshot,
        } = plan;
        if let Some(o) = &observed {
            o.attempts.fetch_add(1, Ordering::Relaxed);
        }
        let chain_refs: Vec<&Arc<str>> = chain.iter().collect();
        let (svc, i) = match self.choose(
            &resolved,
            &chain_refs,
            &subset,
            &tried,
            snapshot.locality_spill(),
        ) {
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
            refresh_deadline(req.headers_mut(), d, &snapshot);
        }
        let client = if svc.h2c { &self.h2c } else { &self.http1 };
        let grpc = is_grpc(&head.headers);
        let started = tokio::time::Instant::now();
        let mut guard = ep.state.start(self.dir.clock, true);
        let probe = guard.is_probe();
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
                svc.failure(i, now, probe);
                record(true);
                tried.add(&ep.state);
                retry::Attempt::Failed(MeshError::Timeout {
                    detail: format!("service `{}` did not answer in time", svc.name),
                })
            }
            Ok(Ok(resp)) => {
                guard.responded();
                if matches!(resp.status().as_u16(), 502..=504) {
                    svc.failure(i, now, probe);
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
                svc.failure(i, now, probe);
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
                    limit: snapshot.gateway().max_body,
                })
            }
            Ok(Err(e)) => {
                drop(guard);
                svc.failure(i, now, probe);
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
        spill: f64,
    ) -> Result<(Arc<ServiceEndpoints>, usize), MeshError> {
        let now = self.dir.clock.now();
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
        spill: f64,
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
            let Ok((svc, i)) = this.choose(&resolved, &[&service], &[], &Tried::default(), spill)
            else {
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
            let mut guard = ep.state.start(this.dir.clock, false);
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
    /// The snapshot the request is routed with.
    snapshot: Arc<Snapshot>,
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
