//! [`ObserveLayer`]: RED metrics with OpenTelemetry names, a `tracing` span
//! per request, a sampled access log and the dashboard's statistics.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock, Reference};
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use super::state::{METHODS, ObserveState, Outcome, method_index};
use super::stats::Stats;
use crate::compiled::Compiled;
use crate::compiled::{PerRevision, StateCache};
use crate::live::SnapshotCache;
use crate::{LiveSnapshot, MatchedRoute};

/// What later stages learn about a request, for the metrics and the access
/// log of [`ObserveLayer`]: it puts an `Arc<Observed>` into the request's
/// extensions and the inbound stages fill it in. It also holds what the
/// observe stage itself noted when the request came in, so the response
/// future and body carry one pointer.
#[derive(Debug, Default)]
pub struct Observed {
    /// The matched route's position in the state's revision, plus one
    /// (0: none, or matched in another revision, then in `route`).
    route_index: AtomicUsize,
    route: OnceLock<MatchedRoute>,
    pub(crate) consumer: OnceLock<Arc<str>>,
    pub(crate) version: OnceLock<crate::ApiVersion>,
    pub(crate) destination: OnceLock<Arc<str>>,
    pub(crate) attempts: AtomicU32,
    /// Set by [`Observe`] (`None` in a slot made elsewhere: nothing is
    /// recorded).
    start: Option<Start>,
}

/// What [`Observe`] notes when a request comes in.
#[derive(Debug)]
struct Start {
    /// The state of the revision that was live.
    obs: Arc<ObserveState>,
    at: <DefaultClock as Clock>::Instant,
    /// Index in [`METHODS`].
    method: u8,
    grpc: bool,
    span: tracing::Span,
    /// The request path, kept only when the access log is enabled.
    path: Option<Box<str>>,
}

impl Observed {
    /// Notes the route (the inbound stage does): its position when it was
    /// matched in the revision the observe stage resolved, else the match.
    pub(crate) fn set_route(&self, m: &MatchedRoute) {
        match &self.start {
            Some(st) if st.obs.revision() == m.revision() => {
                self.route_index.store(m.index() + 1, Ordering::Relaxed);
            }
            _ => {
                let _ = self.route.set(m.clone());
            }
        }
    }
}

/// The clock durations are measured with, the rate limiter's: the CPU's
/// time-stamp counter through `quanta` when it is invariant (a few
/// nanoseconds to read where `clock_gettime` costs about 25), else the
/// monotonic clock. Real time: Tokio's paused test clock does not move it.
fn clock() -> &'static DefaultClock {
    static CLOCK: OnceLock<DefaultClock> = OnceLock::new();
    CLOCK.get_or_init(DefaultClock::default)
}

/// The label of requests no route matched: a fixed value, so random paths
/// cannot grow the metric's cardinality.
pub const UNMATCHED: &str = "unmatched";

/// Histogram buckets (seconds) for request durations, as OpenTelemetry's
/// HTTP semantic conventions recommend.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

struct Shared {
    live: LiveSnapshot,
    stats: Stats,
    /// Labels, handles and statistics cells per route, per revision.
    states: PerRevision<ObserveState>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("live", &self.live)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The outermost inbound stage (part of `mesh.inbound()`): per request
///
/// - `http.server.request.duration` (seconds) with `http.request.method`,
///   `http.route` (the route's template, or `unmatched`),
///   `http.response.status_code`, `apimesh.api`, `apimesh.api.version` and,
///   with `[observability] consumer_label`, `apimesh.consumer`; gRPC calls
///   record `rpc.server.call.duration` with `rpc.grpc.status_code` instead.
///   Handles are resolved per route once per snapshot revision (on first
///   use, with the recorder installed then), not looked up per request.
/// - a `tracing` span (`http.server`) with OpenTelemetry HTTP fields and the
///   W3C trace id;
/// - one access-log event (target `apimesh::access`), sampled per
///   `[observability] access_log_sample`;
/// - the dashboard's statistics ([`Stats`]).
///
/// Durations run until the response body ends (or is dropped).
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

impl ObserveLayer {
    /// A layer reading `[observability]` from `live` and feeding `stats`.
    pub fn new(live: LiveSnapshot, stats: Stats) -> ObserveLayer {
        // Calibrates the clock now rather than on the first request.
        let _ = clock();
        let states = PerRevision::new(ObserveState::build(&live.load(), &stats));
        ObserveLayer {
            shared: Arc::new(Shared {
                live,
                stats,
                states,
            }),
        }
    }

    /// The statistics it feeds.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            live: self.shared.live.cache(),
            states: self.shared.states.cache(),
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`ObserveLayer`].
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
    live: SnapshotCache,
    states: StateCache<ObserveState>,
}

impl<S: Clone> Clone for Observe<S> {
    fn clone(&self) -> Self {
        Observe {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            live: self.live.clone(),
            states: self.states.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Observe<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Bounded method label: the known methods, else `_OTHER`.
pub(crate) fn method_label(m: &Method) -> &'static str {
    METHODS[usize::from(method_index(m))]
}

impl<S, B, RB> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: Body,
{
    type Response = Response<ObservedBody<RB>>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let at = clock().now();
        // The state of the live revision: the one the route stage is about
        // to match in (a request matched in a newer one takes the uncached
        // path when it ends).
        let snapshot = self.live.load();
        let shared = &self.shared;
        let obs = shared
            .states
            .for_snapshot(self.states.load(), snapshot, |s| {
                ObserveState::build(s, &shared.stats)
            })
            .clone();
        let grpc = mesh_core::is_grpc(req.headers());
        let method = method_index(req.method());
        let span = tracing::info_span!(
            "http.server",
            otel.kind = "server",
            otel.name = tracing::field::Empty,
            http.request.method = METHODS[usize::from(method)],
            url.path = req.uri().path(),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            parent_id = tracing::field::Empty,
        );
        // The trace context is only read when a subscriber wants the span.
        if !span.is_disabled()
            && let Some(t) = crate::outbound::TraceContext::from_headers(req.headers())
        {
            span.record("trace_id", t.trace_id_hex());
            span.record("parent_id", hex8(&t.parent_id));
        }
        let path = tracing::enabled!(target: "apimesh::access", tracing::Level::INFO)
            .then(|| Box::from(req.uri().path()));
        let observed = Arc::new(Observed {
            start: Some(Start {
                obs,
                at,
                method,
                grpc,
                span: span.clone(),
                path,
            }),
            ..Observed::default()
        });
        req.extensions_mut().insert(observed.clone());
        ObserveFuture {
            inner: self.inner.call(req).instrument(span),
            observed: Some(observed),
        }
    }
}

fn hex8(b: &[u8; 8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pin_project! {
    /// The future of [`Observe`].
    pub struct ObserveFuture<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        observed: Option<Arc<Observed>>,
    }
}

impl<F, RB, E> std::future::Future for ObserveFuture<F>
where
    F: std::future::Future<Output = Result<Response<RB>, E>>,
    RB: Body,
{
    type Output = Result<Response<ObservedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        let Some(observed) = this.observed.take() else {
            return Poll::Ready(out.map(|r| {
                r.map(|b| ObservedBody {
                    inner: b,
                    end: None,
                })
            }));
        };
        Poll::Ready(match out {
            Ok(resp) => {
                let mut end = End {
                    observed,
                    status: resp.status().as_u16(),
                    grpc: None,
                };
                if end.is_grpc() {
                    end.trailers(resp.headers());
                }
                if resp.body().is_end_stream() {
                    drop(end);
                    Ok(resp.map(|b| ObservedBody {
                        inner: b,
                        end: None,
                    }))
                } else {
                    Ok(resp.map(|b| ObservedBody {
                        inner: b,
                        end: Some(end),
                    }))
                }
            }
            Err(e) => {
                drop(End {
                    observed,
                    status: 500,
                    grpc: None,
                });
                Err(e)
            }
        })
    }
}

/// Records the request when dropped: when the response body ends, or
/// is dropped before it does.
struct End {
    observed: Arc<Observed>,
    status: u16,
    /// The gRPC status the head or the trailers carried.
    grpc: Option<u8>,
}

impl End {
    fn is_grpc(&self) -> bool {
        self.observed.start.as_ref().is_some_and(|s| s.grpc)
    }

    fn trailers(&mut self, t: &HeaderMap) {
        if let Some(c) = crate::resilience::retry::grpc_status(t) {
            self.grpc = Some(c.as_u8());
        }
    }

    fn finish(&mut self) {
        let o = &*self.observed;
        let Some(s) = &o.start else {
            return;
        };
        let elapsed = Duration::from(clock().now().duration_since(s.at));
        let uncached;
        let (route, cached) = match o.route_index.load(Ordering::Relaxed) {
            0 => match o.route.get() {
                None => (s.obs.unmatched(), true),
                Some(m) => match s.obs.route(m) {
                    Some(r) => (r, true),
                    None => {
                        // Matched in another revision than the state's:
                        // labels made for this request, handles registered
                        // directly.
                        uncached = ObserveState::uncached(m.route(), m.snapshot());
                        (&uncached, false)
                    }
                },
            },
            i => match s.obs.route_at(i - 1) {
                Some(r) => (r, true),
                None => (s.obs.unmatched(), true),
            },
        };
        let consumer = o.consumer.get();
        let grpc_code = if s.grpc {
            Some(self.grpc.unwrap_or(if self.status < 400 { 0 } else { 2 }))
        } else {
            None
        };
        let failed =
            self.status >= 500 || grpc_code.is_some_and(|c| matches!(c, 2 | 4 | 8 | 13 | 14 | 15));
        let outcome = Outcome {
            method: s.method,
            status: self.status,
            grpc: grpc_code,
            failed,
            elapsed,
            version: o.version.get(),
            consumer,
        };
        let version = s.obs.record(route, cached, &outcome);
        let method = METHODS[usize::from(s.method)];
        let label = &*route.label;
        if !s.span.is_disabled() {
            s.span.record("http.route", label);
            s.span.record("otel.name", format!("{method} {label}"));
            s.span.record("http.response.status_code", self.status);
        }
        let Some(path) = &s.path else {
            return;
        };
        let sample = s.obs.access_log_sample;
        if sample > 0.0 && (sample >= 1.0 || fastrand::f64() < sample) {
            let _entered = s.span.enter();
            tracing::info!(
                target: "apimesh::access",
                method = method,
                path = %path,
                route = %label,
                route_id = %route.id,
                status = self.status,
                grpc_status = grpc_code,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                consumer = consumer.map(|c| &**c),
                api = version.map(|v| v.0),
                version = version.map(|v| v.1),
                destination = o.destination.get().map(|d| &**d),
                attempts = o.attempts.load(Ordering::Relaxed),
                "request"
            );
        }
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.finish();
    }
}

pin_project! {
    /// A response body that records the request's metrics when it ends.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        end: Option<End>,
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ObservedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = ready!(this.inner.poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(t), Some(end)) = (frame.trailers_ref(), this.end.as_mut()) {
                    end.trailers(t);
                }
            }
            Some(Err(_)) | None => {
                // Dropping it records the request.
                drop(this.end.take());
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
