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
use tokio::task::coop;
use tokio::time::{Instant, Sleep};
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
    /// The future of [`Timeout`]. The timer is made only when the inner
    /// future has to wait: an answer that is ready at once never touches
    /// the runtime's timer.
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        // When the request times out (`None`: too far away to represent).
        deadline: Option<Instant>,
        // What the inner future sees: the earliest of this deadline and
        // those of enclosing timeouts and the task's call context.
        seen: Option<Instant>,
        #[pin]
        sleep: Option<Sleep>,
        grpc: bool,
    }
}

impl<F, RB, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<MeshBody<RB>>, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let had_budget = coop::has_budget_remaining();
        let inner = this.inner;
        if let Poll::Ready(r) = crate::CallContext::polling(*this.seen, || inner.poll(cx)) {
            return Poll::Ready(r.map(|r| r.map(MeshBody::inner)));
        }
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep_until(deadline)));
        }
        let Some(sleep) = this.sleep.as_pin_mut() else {
            return Poll::Pending;
        };
        // As `tokio::time::Timeout`: when the inner future spent the
        // task's budget, the timer is still looked at.
        let elapsed = if had_budget && !coop::has_budget_remaining() {
            Pin::new(&mut coop::unconstrained(sleep)).poll(cx)
        } else {
            sleep.poll(cx)
        };
        ready!(elapsed);
        metrics::counter!("apimesh.timeouts").increment(1);
        Poll::Ready(Ok(render(
            &MeshError::Timeout {
                detail: "the request timed out".into(),
            },
            *this.grpc,
        )))
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
        let now = Instant::now();
        let deadline = now.checked_add(limit);
        // What inner layers (a retry layer, a mesh client) see, through
        // `CallContext::current`: the earliest of this deadline, the
        // task's context's (with any enclosing timeout polling this), and
        // that of an enclosing timeout whose `call` is calling this one
        // (through a retry layer's first attempt).
        let seen = [
            deadline,
            crate::CallContext::current_deadline(),
            crate::CallContext::calling_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let grpc = is_grpc(req.headers());
        // The inner `call` too: a retry layer makes its first attempt there.
        let inner = crate::CallContext::calling(now, seen, || self.inner.call(req));
        TimeoutFuture {
            grpc,
            inner,
            deadline,
            seen,
            sleep: None,
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
        // Boxed: a rare path, kept out of the future every request moves.
        rejected: Option<Box<Response<MeshBody<B>>>>,
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
                .map_or_else(|| render(&MeshError::Internal, false), |r| *r)));
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
                rejected: Some(Box::new(render(
                    &MeshError::Unavailable {
                        detail: "the circuit breaker is open".into(),
                        retry_after: Some(left),
                    },
                    is_grpc(req.headers()),
                ))),
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
    // One `Arc`: a request that may be retried keeps one clone of it.
    shared: Arc<RetryShared>,
}

#[derive(Debug)]
struct RetryShared {
    policy: RetryPolicy,
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
            shared: Arc::new(RetryShared { policy, budget }),
        }
    }

    /// The budget, to read what it has seen.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.shared.budget
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

/// What the inner service is sent on each attempt.
enum AttemptBody {
    /// An empty body (a `GET`): nothing to buffer.
    Empty,
    /// A buffered body, sent again on each attempt.
    Whole(retry::ReplayBody),
    /// A body sent once (not retryable, or over the replay limit).
    Once(Option<retry::PrefixedBody>),
}

/// A request's head, to send again.
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
}

impl Head {
    fn new(parts: http::request::Parts) -> Head {
        Head {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
        }
    }

    fn copy<B>(req: &Request<B>) -> Head {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            extensions: req.extensions().clone(),
        }
    }
}

/// Makes the attempts after the first: the request's head (method, URI,
/// headers, extensions) and body again, to a clone of the service.
struct Attempts<S> {
    service: S,
    head: Head,
    body: AttemptBody,
}

impl<S> Attempts<S>
where
    S: Service<Request<RetryBody>> + Clone,
{
    fn request(&mut self, n: u32) -> Request<RetryBody> {
        let body = match &mut self.body {
            AttemptBody::Empty => RetryBody::empty(),
            AttemptBody::Whole(w) => RetryBody::replay(w.body()),
            AttemptBody::Once(o) => o.take().map_or_else(RetryBody::empty, RetryBody::once),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = self.head.uri.clone();
        *req.version_mut() = self.head.version;
        *req.headers_mut() = self.head.headers.clone();
        // The inner service sees the request's extensions (a matched
        // route, a principal) on every attempt.
        *req.extensions_mut() = self.head.extensions.clone();
        retry::mark_attempt(&mut req, n);
        req
    }

    /// Starts attempt `n` on a clone of the service, which is polled
    /// ready before it is called (a `Buffer`, as a tonic `Channel` is,
    /// must be).
    fn start(&mut self, n: u32) -> AttemptFuture<S, S::Future> {
        AttemptFuture::Waiting {
            service: self.service.clone(),
            req: Some(self.request(n)),
        }
    }
}

/// How an inner service's answer counts for the retry loop.
fn attempt_of<RB, E: Into<BoxError>>(out: Result<Response<RB>, E>) -> Attempt<RB> {
    match out {
        Ok(resp) => Attempt::Response(resp),
        Err(e) => Attempt::Failed(upstream_failed(e)),
    }
}

/// An error of the inner service, as the answer to the request.
fn upstream_failed<E: Into<BoxError>>(e: E) -> MeshError {
    let e: BoxError = e.into();
    MeshError::BadGateway {
        detail: format!("the upstream failed: {e}"),
    }
}

pin_project! {
    /// One attempt after the first, as the retry loop sees it: the
    /// service's clone is polled ready, then called.
    #[project = AttemptProj]
    enum AttemptFuture<S, F> {
        Waiting { service: S, req: Option<Request<RetryBody>> },
        Called { #[pin] inner: F },
    }
}

impl<S, RB> Future for AttemptFuture<S, S::Future>
where
    S: Service<Request<RetryBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Attempt<RB>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Attempt<RB>> {
        loop {
            match self.as_mut().project() {
                AttemptProj::Waiting { service, req } => {
                    if let Err(e) = ready!(service.poll_ready(cx)) {
                        return Poll::Ready(Attempt::Failed(upstream_failed(e)));
                    }
                    let Some(req) = req.take() else {
                        return Poll::Ready(Attempt::Failed(MeshError::Internal));
                    };
                    let inner = service.call(req);
                    self.set(AttemptFuture::Called { inner });
                }
                AttemptProj::Called { inner } => return inner.poll(cx).map(attempt_of),
            }
        }
    }
}

/// What a retry after the first attempt needs, kept aside while that
/// attempt runs.
struct Again<S> {
    attempts: Attempts<S>,
    shared: Arc<RetryShared>,
    /// The request's own deadline (`grpc-timeout`).
    own: Option<Instant>,
    /// The earlier of that and the call context's, once read (on the
    /// first poll: the context is the polling task's).
    deadline: Option<Option<Instant>>,
}

/// The rest of the retry loop, when there is one.
type Rest<S> = Pin<
    Box<
        dyn Future<Output = Result<<S as Service<Request<RetryBody>>>::Response, MeshError>> + Send,
    >,
>;

pin_project! {
    /// The future of [`Retry`]: the first attempt is the inner service's
    /// own future, in place; only a request that is retried (or hedged,
    /// or whose body has to be buffered first) goes on in a boxed future.
    pub struct RetryFuture<S>
    where
        S: Service<Request<RetryBody>>,
    {
        #[pin]
        state: RetryState<S>,
        // `None`: the first attempt is the only one.
        again: Option<Again<S>>,
        grpc: bool,
    }
}

pin_project! {
    #[project = RetryStateProj]
    enum RetryState<S>
    where
        S: Service<Request<RetryBody>>,
    {
        First { #[pin] future: S::Future },
        Rest { future: Rest<S> },
    }
}

impl<S> std::fmt::Debug for RetryFuture<S>
where
    S: Service<Request<RetryBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryFuture").finish_non_exhaustive()
    }
}

/// The earlier of a request's own deadline and its call context's.
fn deadline(own: Option<Instant>) -> Option<Instant> {
    match (own, crate::CallContext::current_deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<S, RB> RetryFuture<S>
where
    S: Service<Request<RetryBody>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    RB: Send + 'static,
{
    /// The retry loop after the first attempt, which `next` sent on.
    fn rest(again: Again<S>, deadline: Option<Instant>, wait: Duration) -> Rest<S> {
        let Again {
            mut attempts,
            shared,
            ..
        } = again;
        Box::pin(async move {
            retry::resume(
                Some(&shared.policy),
                Some(&shared.budget),
                true,
                true,
                deadline,
                move |n| attempts.start(n),
                1,
                wait,
            )
            .await
        })
    }
}

impl<S, RB> Future for RetryFuture<S>
where
    S: Service<Request<RetryBody>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    RB: Send + 'static,
{
    type Output = Result<Response<MeshBody<RB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = loop {
            match this.state.as_mut().project() {
                RetryStateProj::First { future } => {
                    if let Some(a) = this.again.as_mut()
                        && a.deadline.is_none()
                    {
                        // The context is the polling task's (a
                        // `TimeoutLayer` outside sets it around this
                        // future), so it is read here.
                        a.deadline = Some(deadline(a.own));
                    }
                    let out = ready!(future.poll(cx));
                    // What a retry needs stays in place (not moved out)
                    // unless there is one.
                    let outcome = match (out, this.again.as_ref()) {
                        // Not retryable, or a single attempt allowed.
                        (Ok(resp), None) => break Ok(resp),
                        (Err(e), None) => break Err(upstream_failed(e)),
                        // An answer the policy does not retry.
                        (Ok(resp), Some(a))
                            if !retry::retryable_response(&a.shared.policy, &resp) =>
                        {
                            break Ok(resp);
                        }
                        (out, Some(_)) => attempt_of(out),
                    };
                    let Some(again) = this.again.take() else {
                        break Err(MeshError::Internal);
                    };
                    let deadline = again.deadline.flatten();
                    let next = retry::next(
                        Some(&again.shared.policy),
                        Some(&again.shared.budget),
                        true,
                        true,
                        deadline,
                        1,
                        outcome,
                    );
                    match next {
                        retry::Next::Done(result) => break result,
                        retry::Next::Again(wait) => {
                            let future = Self::rest(again, deadline, wait);
                            this.state.set(RetryState::Rest { future });
                        }
                    }
                }
                RetryStateProj::Rest { future } => break ready!(future.as_mut().poll(cx)),
            }
        };
        Poll::Ready(Ok(match result {
            Ok(resp) => resp.map(MeshBody::inner),
            Err(e) => render(&e, *this.grpc),
        }))
    }
}

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
    type Future = RetryFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = &self.layer.shared.policy;
        let grpc = is_grpc(req.headers());
        // The request's own deadline (`grpc-timeout`) and the task's call
        // context bound the backoff and the pushback.
        let own = req
            .headers()
            .get(&GRPC_TIMEOUT)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()))
            .and_then(|t| Instant::now().checked_add(t));
        let retryable = retry::retryable_request(policy, req.method(), req.headers());
        let max = policy.attempts.max(1);
        let hedged = policy.hedge_after.is_some() && max > 1;
        if retryable && (hedged || !req.body().is_end_stream()) {
            // The body is buffered first, or attempts overlap: the
            // general loop, boxed, on clones of the service.
            let clone = self.inner.clone();
            let service = std::mem::replace(&mut self.inner, clone);
            let (parts, body) = req.into_parts();
            let future = general(service, self.layer.shared.clone(), parts, body, own);
            return RetryFuture {
                state: RetryState::Rest { future },
                again: None,
                grpc,
            };
        }
        // The first attempt is the service's own call, made now by the
        // service that was polled ready: the budget counts the request
        // (at the clock a `TimeoutLayer` above read as it called this, if
        // any), and what a retry needs is kept aside, in place (no
        // allocation), only when one can happen.
        let now = crate::CallContext::calling_now().unwrap_or_else(Instant::now);
        self.layer.shared.budget.deposit_at(now);
        let again = (retryable && max > 1).then(|| Again {
            attempts: Attempts {
                service: self.inner.clone(),
                head: Head::copy(&req),
                body: AttemptBody::Empty,
            },
            shared: self.layer.shared.clone(),
            own,
            deadline: None,
        });
        let req = req.map(|body| {
            if retryable {
                // Nothing to read (a `GET`): no buffering.
                RetryBody::empty()
            } else {
                RetryBody::once(retry::PrefixedBody::new(Default::default(), body))
            }
        });
        RetryFuture {
            state: RetryState::First {
                future: self.inner.call(req),
            },
            again,
            grpc,
        }
    }
}

/// The general retry loop, boxed: a retryable body is buffered first (up
/// to the replay limit), and hedged attempts may overlap.
fn general<S, B, RB>(
    service: S,
    shared: Arc<RetryShared>,
    head: http::request::Parts,
    body: B,
    own: Option<Instant>,
) -> Rest<S>
where
    S: Service<Request<RetryBody>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    Box::pin(async move {
        let policy = &shared.policy;
        // The context is the polling task's (a `TimeoutLayer` outside
        // sets it around this future), so it is read here.
        let deadline = deadline(own);
        let retryable = retry::retryable_request(policy, &head.method, &head.headers);
        let body = if retryable && body.is_end_stream() {
            AttemptBody::Empty
        } else if retryable {
            match retry::buffer(body, policy.replay_limit).await {
                Ok(Replay::Whole(w)) => AttemptBody::Whole(w),
                Ok(Replay::Once(o)) => AttemptBody::Once(Some(o)),
                Err(_) => {
                    return Err(MeshError::BadRequest {
                        detail: "the request body could not be read".into(),
                    });
                }
            }
        } else {
            AttemptBody::Once(Some(retry::PrefixedBody::new(Default::default(), body)))
        };
        let replayable = !matches!(body, AttemptBody::Once(_));
        let mut attempts = Attempts {
            service,
            head: Head::new(head),
            body,
        };
        retry::run(
            Some(policy),
            Some(&shared.budget),
            retryable,
            replayable,
            deadline,
            move |n| attempts.start(n),
        )
        .await
    })
}
