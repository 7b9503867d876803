//! Each resilience piece as a standalone tower layer over HTTP services
//! (axum, hyper clients, a tonic `Channel`), with mesh errors rendered as
//! problems or gRPC statuses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use mesh_core::policy::{CircuitBreakerPolicy, RetryPolicy};
use mesh_core::{GrpcCode, MeshError, is_grpc};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::breaker::{BreakerPermit, CircuitBreaker, Outcome};
use super::bulkhead::{Bulkhead, BulkheadPermit};
use super::retry::{self, Attempt, Replay};
use super::{RetryBody, RetryBudget};
use crate::MeshBody;
use crate::future::StageFuture;
use crate::outbound::{BoxError, parse_grpc_timeout};

/// Looked up by name, not parsed from a string on every request.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

fn render<B>(e: &MeshError, grpc: bool) -> Response<MeshBody<B>> {
    e.to_response(grpc).map(MeshBody::full)
}

/// Whether a response is a failure for a breaker: a failure status, or a
/// gRPC trailers-only status that means the server is in trouble.
pub(crate) fn response_failed<B>(policy: &CircuitBreakerPolicy, resp: &Response<B>) -> bool {
    policy.is_failure(resp.status())
        || retry::grpc_status(resp.headers()).is_some_and(|c| {
            matches!(
                c,
                GrpcCode::Unavailable
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::Internal
                    | GrpcCode::Unknown
                    | GrpcCode::DataLoss
            )
        })
}

// ---- Timeout ---------------------------------------------------------------

/// Ends a request that takes longer than `total` (or than the request's
/// own `grpc-timeout`, if sooner) with 504 / `DEADLINE_EXCEEDED`. The
/// inner service runs with the deadline in its
/// [`CallContext`](crate::CallContext), so a [`RetryLayer`] or a mesh
/// client inside does not wait past it.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    total: Duration,
}

impl TimeoutLayer {
    /// A layer with this total timeout.
    pub fn new(total: Duration) -> TimeoutLayer {
        TimeoutLayer { total }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            total: self.total,
        }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    total: Duration,
}

pin_project! {
    /// The future of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<tokio::task::futures::TaskLocalFuture<crate::CallContext, F>>,
        grpc: bool,
    }
}

impl<F, RB, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<MeshBody<RB>>, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(r) => r.map(|r| r.map(MeshBody::inner)),
            Err(_) => {
                metrics::counter!("apimesh.timeouts").increment(1);
                Ok(render(
                    &MeshError::Timeout {
                        detail: "the request timed out".into(),
                    },
                    *this.grpc,
                ))
            }
        })
    }
}

impl<S, B, RB> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<MeshBody<RB>>;
    type Error = S::Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let own = req
            .headers()
            .get(&GRPC_TIMEOUT)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let limit = own.map_or(self.total, |o| o.min(self.total));
        // Inner layers (a retry layer, a mesh client) see the deadline.
        let ctx = crate::CallContext::current()
            .unwrap_or_default()
            .with_timeout(limit);
        TimeoutFuture {
            grpc: is_grpc(req.headers()),
            inner: tokio::time::timeout(limit, ctx.scope(self.inner.call(req))),
        }
    }
}

// ---- Circuit breaker ----------------------------------------------------------

/// A circuit breaker in front of a service: while open, requests are
/// answered 503 / `UNAVAILABLE` at once, without touching the service.
/// Failures are the policy's statuses (default every 5xx), gRPC
/// trailers-only `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`
/// and `DATA_LOSS`, and errors of the service.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

impl CircuitBreakerLayer {
    /// A layer with a new breaker (shared by every service it makes).
    pub fn new(policy: CircuitBreakerPolicy) -> CircuitBreakerLayer {
        CircuitBreakerLayer {
            breaker: Arc::new(CircuitBreaker::new(policy)),
        }
    }

    /// The breaker, to read its state.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = Breaker<S>;
    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

pin_project! {
    /// The future of [`Breaker`].
    pub struct BreakerFuture<F, B> {
        #[pin]
        inner: Option<F>,
        permit: Option<BreakerPermit>,
        breaker: Arc<CircuitBreaker>,
        rejected: Option<Response<MeshBody<B>>>,
    }
}

impl<F, RB, E> Future for BreakerFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<MeshBody<RB>>, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Ok(this
                .rejected
                .take()
                .unwrap_or_else(|| render(&MeshError::Internal, false))));
        };
        let out = ready!(inner.poll(cx));
        if let Some(p) = this.permit.take() {
            let failed = match &out {
                Ok(r) => response_failed(this.breaker.policy(), r),
                Err(_) => true,
            };
            this.breaker.record(
                p,
                if failed {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
            );
        }
        Poll::Ready(out.map(|r| r.map(MeshBody::inner)))
    }
}

impl<S, B, RB> Service<Request<B>> for Breaker<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<MeshBody<RB>>;
    type Error = S::Error;
    type Future = BreakerFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => BreakerFuture {
                inner: Some(self.inner.call(req)),
                permit: Some(permit),
                breaker: self.breaker.clone(),
                rejected: None,
            },
            Err(left) => BreakerFuture {
                inner: None,
                permit: None,
                breaker: self.breaker.clone(),
                rejected: Some(render(
                    &MeshError::Unavailable {
                        detail: "the circuit breaker is open".into(),
                        retry_after: Some(left),
                    },
                    is_grpc(req.headers()),
                )),
            },
        }
    }
}

// ---- Bulkhead ----------------------------------------------------------------

/// At most `max` concurrent requests; the next is answered 503 /
/// `UNAVAILABLE` at once (load shedding, never a queue).
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Arc<Bulkhead>,
}

impl BulkheadLayer {
    /// A layer admitting `max` concurrent requests across every service it makes.
    pub fn new(max: u32) -> BulkheadLayer {
        BulkheadLayer {
            bulkhead: Arc::new(Bulkhead::new(max)),
        }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> BulkheadService<S> {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// The service made by [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Arc<Bulkhead>,
}

/// A bulkhead place is held until the response head arrives (or the call
/// fails), then freed: the shared stage future drops it then.
impl crate::future::AddHeaders for BulkheadPermit {
    fn add_to(self, _headers: &mut http::HeaderMap) {}
}

/// The future of [`BulkheadService`].
pub type BulkheadFuture<F, B, E> = StageFuture<F, B, E, BulkheadPermit>;

impl<S, B, RB> Service<Request<B>> for BulkheadService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<MeshBody<RB>>;
    type Error = S::Error;
    type Future = BulkheadFuture<S::Future, RB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.bulkhead.try_acquire() {
            Some(permit) => StageFuture::inner(self.inner.call(req), Some(permit)),
            None => {
                metrics::counter!("apimesh.bulkhead.rejected").increment(1);
                let e = MeshError::Unavailable {
                    detail: format!(
                        "too many concurrent requests (at most {})",
                        self.bulkhead.max()
                    ),
                    retry_after: None,
                };
                StageFuture::ready(e.to_response(is_grpc(req.headers())))
            }
        }
    }
}

// ---- Retry -------------------------------------------------------------------

/// Retries per a [`RetryPolicy`] with a [`RetryBudget`]: retryable
/// requests (idempotent methods, or an `Idempotency-Key`) whose body fits
/// in `replay_limit` are buffered and sent again on a connect error, a
/// failed attempt or a listed status, after full-jitter backoff or the
/// server's `Retry-After` / `grpc-retry-pushback-ms`; a hedged second
/// attempt when `hedge_after` is set. A wait that would outlive the
/// request's deadline (its `grpc-timeout`, or the task's
/// [`CallContext`](crate::CallContext)) is not taken: the answer is
/// returned instead. The inner service receives
/// [`RetryBody`]; on a tonic `Channel`, map it with
/// `tonic::body::Body::new` first.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: Arc<RetryPolicy>,
    budget: Arc<RetryBudget>,
}

impl RetryLayer {
    /// A layer with `policy` and a budget from its ratio and floor.
    pub fn new(policy: RetryPolicy) -> RetryLayer {
        let budget = Arc::new(RetryBudget::new(
            policy.budget_ratio,
            policy.budget_min_per_second,
        ));
        RetryLayer {
            policy: Arc::new(policy),
            budget,
        }
    }

    /// The budget, to read what it has seen.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

/// The future of [`Retry`].
pub type RetryFuture<RB, E> =
    Pin<Box<dyn Future<Output = Result<Response<MeshBody<RB>>, E>> + Send + 'static>>;

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<RetryBody>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<MeshBody<RB>>;
    type Error = S::Error;
    type Future = RetryFuture<RB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (policy, budget) = (self.layer.policy.clone(), self.layer.budget.clone());
        // What the request itself says is read here, so the boxed future
        // keeps only what the attempts need (a smaller allocation to fill
        // and move).
        let grpc = is_grpc(req.headers());
        // The request's own deadline (`grpc-timeout`) and the task's call
        // context bound the backoff and the pushback.
        let own = req
            .headers()
            .get(&GRPC_TIMEOUT)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()))
            .and_then(|t| tokio::time::Instant::now().checked_add(t));
        let (parts, body) = req.into_parts();
        let retryable = retry::retryable_request(&policy, &parts.method, &parts.headers);
        let head = Arc::new(parts);
        Box::pin(async move {
            // The context is the polling task's (a `TimeoutLayer` outside
            // sets it around this future), so it is read here.
            let ctx = crate::outbound::CallContext::current().and_then(|c| c.deadline);
            let deadline = match (own, ctx) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let replay = if retryable && body.is_end_stream() {
                // Nothing to read (a GET): no buffering.
                Replay::Whole(retry::ReplayBody::empty())
            } else if retryable {
                match retry::buffer(body, policy.replay_limit).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Ok(render(
                            &MeshError::BadRequest {
                                detail: "the request body could not be read".into(),
                            },
                            grpc,
                        ));
                    }
                }
            } else {
                Replay::Once(retry::PrefixedBody::new(Default::default(), body))
            };
            let (whole, mut once) = match replay {
                Replay::Whole(w) => (Some(w), None),
                Replay::Once(o) => (None, Some(o)),
            };
            let replayable = whole.is_some();
            let result = retry::run(
                Some(&policy),
                Some(&budget),
                retryable,
                replayable,
                deadline,
                move |n| {
                    let body = match (&whole, once.take()) {
                        (Some(w), _) => RetryBody::replay(w.body()),
                        (None, Some(o)) => RetryBody::once(o),
                        (None, None) => RetryBody::empty(),
                    };
                    let mut req = Request::new(body);
                    *req.method_mut() = head.method.clone();
                    *req.uri_mut() = head.uri.clone();
                    *req.version_mut() = head.version;
                    *req.headers_mut() = head.headers.clone();
                    // The inner service sees the request's extensions
                    // (a matched route, a principal) on every attempt.
                    *req.extensions_mut() = head.extensions.clone();
                    retry::mark_attempt(&mut req, n);
                    // Called here, so the attempt's future holds only the
                    // inner future (not the request and a service too):
                    // a smaller state machine to allocate and move.
                    let call = inner.clone().call(req);
                    async move {
                        match call.await {
                            Ok(resp) => Attempt::Response(resp),
                            Err(e) => {
                                let e: BoxError = e.into();
                                Attempt::Failed(MeshError::BadGateway {
                                    detail: format!("the upstream failed: {e}"),
                                })
                            }
                        }
                    }
                },
            )
            .await;
            Ok(match result {
                Ok(resp) => resp.map(MeshBody::inner),
                Err(e) => render(&e, grpc),
            })
        })
    }
}
