//! [`ObserveLayer`]: RED metrics with OpenTelemetry names, a `tracing` span
//! per request, a sampled access log and the dashboard's statistics.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::{Histogram, Label};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use super::stats::Stats;
use crate::{LiveSnapshot, MatchedRoute};

/// What later stages learn about a request, for the metrics and the access
/// log of [`ObserveLayer`]: it puts an `Arc<Observed>` into the request's
/// extensions and the inbound stages fill it in.
#[derive(Debug, Default)]
pub struct Observed {
    pub(crate) route: OnceLock<MatchedRoute>,
    pub(crate) consumer: OnceLock<Arc<str>>,
    pub(crate) version: OnceLock<crate::ApiVersion>,
    pub(crate) destination: OnceLock<Arc<str>>,
    pub(crate) attempts: AtomicU32,
}

impl Observed {
    /// Notes the route (the inbound stage does).
    pub(crate) fn set_route(&self, m: &MatchedRoute) {
        let _ = self.route.set(m.clone());
    }
}

/// The label of requests no route matched: a fixed value, so random paths
/// cannot grow the metric's cardinality.
pub const UNMATCHED: &str = "unmatched";

/// Histogram buckets (seconds) for request durations, as OpenTelemetry's
/// HTTP semantic conventions recommend.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HistKey {
    route: Option<Arc<str>>,
    method: &'static str,
    status: u16,
    grpc: Option<u8>,
    version: Option<(Arc<str>, Arc<str>)>,
    consumer: Option<Arc<str>>,
}

#[derive(Debug)]
struct Shared {
    live: LiveSnapshot,
    stats: Stats,
    handles: DashMap<HistKey, Histogram, foldhash::fast::RandomState>,
    unmatched: Arc<str>,
}

/// The outermost inbound stage (part of `mesh.inbound()`): per request
///
/// - `http.server.request.duration` (seconds) with `http.request.method`,
///   `http.route` (the route's template, or `unmatched`),
///   `http.response.status_code`, `apimesh.api`, `apimesh.api.version` and,
///   with `[observability] consumer_label`, `apimesh.consumer`; gRPC calls
///   record `rpc.server.call.duration` with `rpc.grpc.status_code` instead.
///   Handles are made once per label set, not per request.
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
        ObserveLayer {
            shared: Arc::new(Shared {
                live,
                stats,
                handles: DashMap::default(),
                unmatched: Arc::from(UNMATCHED),
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
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Bounded method label: the known methods, else `_OTHER`.
pub(crate) fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
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
        let observed = Arc::new(Observed::default());
        req.extensions_mut().insert(observed.clone());
        let grpc = mesh_core::is_grpc(req.headers());
        let method = method_label(req.method());
        let trace = crate::outbound::TraceContext::from_headers(req.headers());
        let span = tracing::info_span!(
            "http.server",
            otel.kind = "server",
            otel.name = tracing::field::Empty,
            http.request.method = method,
            url.path = req.uri().path(),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            parent_id = tracing::field::Empty,
        );
        if let Some(t) = &trace {
            span.record("trace_id", t.trace_id_hex());
            span.record("parent_id", hex8(&t.parent_id));
        }
        let path = tracing::enabled!(target: "apimesh::access", tracing::Level::INFO)
            .then(|| req.uri().path().to_owned());
        let fut = self.inner.call(req).instrument(span.clone());
        ObserveFuture {
            inner: fut,
            state: Some(State {
                shared: self.shared.clone(),
                observed,
                start: Instant::now(),
                method,
                grpc,
                span,
                path,
            }),
        }
    }
}

fn hex8(b: &[u8; 8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct State {
    shared: Arc<Shared>,
    observed: Arc<Observed>,
    start: Instant,
    method: &'static str,
    grpc: bool,
    span: tracing::Span,
    /// The request path, kept only when the access log is enabled.
    path: Option<String>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

pin_project! {
    /// The future of [`Observe`].
    pub struct ObserveFuture<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        state: Option<State>,
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
        let Some(state) = this.state.take() else {
            return Poll::Ready(out.map(|r| {
                r.map(|b| ObservedBody {
                    inner: b,
                    end: None,
                })
            }));
        };
        Poll::Ready(match out {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let grpc_head =
                    crate::resilience::retry::grpc_status(resp.headers()).map(|c| c.as_u8());
                let mut end = End {
                    state,
                    status,
                    grpc: grpc_head,
                    done: false,
                };
                if resp.body().is_end_stream() {
                    end.finish();
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
                let mut end = End {
                    state,
                    status: 500,
                    grpc: None,
                    done: false,
                };
                end.finish();
                Err(e)
            }
        })
    }
}

/// What is recorded when the response ends.
struct End {
    state: State,
    status: u16,
    grpc: Option<u8>,
    done: bool,
}

impl End {
    fn trailers(&mut self, t: &HeaderMap) {
        if let Some(c) = crate::resilience::retry::grpc_status(t) {
            self.grpc = Some(c.as_u8());
        }
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let s = &self.state;
        let elapsed = s.start.elapsed();
        let loaded;
        let snapshot: &mesh_core::Snapshot = match s.observed.route.get() {
            Some(m) => m.snapshot(),
            None => {
                loaded = s.shared.live.load();
                &loaded
            }
        };
        let (route_id, label, route_version) = match s.observed.route.get() {
            Some(m) => {
                let r = m.route();
                (
                    Some(r.id_arc().clone()),
                    r.path_label().clone(),
                    r.api_arc().cloned().zip(r.version_arc().cloned()),
                )
            }
            None => (None, s.shared.unmatched.clone(), None),
        };
        let version = match s.observed.version.get() {
            // Reuse the route's strings when they are the same.
            Some(v) => match &route_version {
                Some((a, rv)) if &**a == v.api() && &**rv == v.version() => route_version.clone(),
                _ => Some((Arc::from(v.api()), Arc::from(v.version()))),
            },
            None => route_version,
        };
        let consumer = s.observed.consumer.get().cloned();
        let grpc_code = if s.grpc {
            Some(self.grpc.unwrap_or(if self.status < 400 { 0 } else { 2 }))
        } else {
            None
        };
        let failed =
            self.status >= 500 || grpc_code.is_some_and(|c| matches!(c, 2 | 4 | 8 | 13 | 14 | 15));
        let consumer_label = snapshot.config().observability.consumer_label;
        let key = HistKey {
            route: route_id.clone(),
            method: s.method,
            status: self.status,
            grpc: grpc_code,
            version: version.clone(),
            consumer: if consumer_label {
                consumer.clone()
            } else {
                None
            },
        };
        let hist = match s.shared.handles.get(&key) {
            Some(h) => h.clone(),
            None => {
                let h = histogram(&key, &label, s.grpc);
                s.shared.handles.insert(key, h.clone());
                h
            }
        };
        hist.record(elapsed.as_secs_f64());
        let route_key: &Arc<str> = route_id.as_ref().unwrap_or(&s.shared.unmatched);
        s.shared.stats.record(
            route_key,
            &label,
            failed,
            elapsed,
            version.as_ref().map(|(a, v)| (a, v)),
            consumer.as_ref(),
        );
        if !s.span.is_disabled() {
            s.span.record("http.route", &*label);
            s.span
                .record("otel.name", format!("{} {}", s.method, label));
            s.span.record("http.response.status_code", self.status);
        }
        let Some(path) = &s.path else {
            return;
        };
        let sample = snapshot
            .config()
            .observability
            .access_log_sample
            .unwrap_or(1.0);
        if sample > 0.0 && (sample >= 1.0 || fastrand::f64() < sample) {
            let _entered = s.span.enter();
            tracing::info!(
                target: "apimesh::access",
                method = s.method,
                path = %path,
                route = %label,
                route_id = route_id.as_deref().unwrap_or(UNMATCHED),
                status = self.status,
                grpc_status = grpc_code,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                consumer = consumer.as_deref(),
                api = version.as_ref().map(|v| &*v.0),
                version = version.as_ref().map(|v| &*v.1),
                destination = s.observed.destination.get().map(|d| &**d),
                attempts = s.observed.attempts.load(Ordering::Relaxed),
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

fn histogram(key: &HistKey, label: &Arc<str>, grpc: bool) -> Histogram {
    let mut labels = Vec::with_capacity(7);
    labels.push(Label::new("http.route", label.to_string()));
    labels.push(Label::new("http.request.method", key.method));
    if let Some((api, v)) = &key.version {
        labels.push(Label::new("apimesh.api", api.to_string()));
        labels.push(Label::new("apimesh.api.version", v.to_string()));
    }
    if let Some(c) = &key.consumer {
        labels.push(Label::new("apimesh.consumer", c.to_string()));
    }
    match (grpc, key.grpc) {
        (true, Some(code)) => {
            labels.push(Label::new("rpc.system", "grpc"));
            labels.push(Label::new("rpc.grpc.status_code", code.to_string()));
            metrics::describe_histogram!(
                "rpc.server.call.duration",
                metrics::Unit::Seconds,
                "Duration of inbound gRPC calls, to the end of the response."
            );
            metrics::histogram!("rpc.server.call.duration", labels)
        }
        _ => {
            labels.push(Label::new(
                "http.response.status_code",
                key.status.to_string(),
            ));
            metrics::describe_histogram!(
                "http.server.request.duration",
                metrics::Unit::Seconds,
                "Duration of inbound HTTP requests, to the end of the response body."
            );
            metrics::histogram!("http.server.request.duration", labels)
        }
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
                if let Some(mut end) = this.end.take() {
                    end.finish();
                }
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
