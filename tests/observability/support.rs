//! Shared helpers: loopback servers and a real HTTP client, meshes on an
//! in-memory registry, and a test's own metrics recorder and `tracing`
//! capture.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use apimesh::Mesh;
use apimesh::registry::MemoryRegistry;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics::Unit;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

// ---- Servers and requests ----------------------------------------------------

/// Serves `router` on a free loopback port.
pub(crate) async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A loopback address nothing listens on.
pub(crate) async fn refused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A finished response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: http::StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// `GET http://{addr}{path}` over a real connection, with `headers`.
pub(crate) async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client = Client::builder(TokioExecutor::new()).build_http();
    let res = client
        .request(req.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `GET http://{addr}{path}`.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_with(addr, path, &[]).await
}

/// Sends `req` to `app` in process and reads the whole answer (the
/// request's metrics are recorded when its body ends).
pub(crate) async fn call(app: &axum::Router, req: http::Request<axum::body::Body>) -> Reply {
    use tower::ServiceExt;
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A bodiless request.
pub(crate) fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Request<axum::body::Body> {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(axum::body::Body::empty()).unwrap()
}

/// A gRPC answer carrying only its status (trailers-only), as tonic sends
/// errors.
pub(crate) fn grpc_status(code: u8) -> axum::response::Response {
    http::Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string())
        .body(axum::body::Body::empty())
        .unwrap()
}

// ---- Meshes -------------------------------------------------------------------

/// A mesh for `service` on an in-memory registry holding `toml`, with no
/// Prometheus recorder (the tests bring their own).
pub(crate) async fn mesh(service: &str, toml: &str) -> Mesh {
    Mesh::builder()
        .service(service)
        .registry(MemoryRegistry::from_toml(toml).unwrap())
        .prometheus(false)
        .build()
        .await
        .unwrap()
}

// ---- Metrics and traces ------------------------------------------------------

/// What a test recorded.
pub(crate) struct Recorded {
    pub(crate) metrics: Metrics,
    pub(crate) traces: Capture,
}

/// Runs `test` on a current-thread runtime with a fresh debugging recorder
/// and a `tracing` capture as this thread's own (every task of the runtime
/// runs on this thread, servers and clients included).
pub(crate) fn recorded<T>(test: impl Future<Output = T>) -> (T, Recorded) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let traces = Capture::default();
    let subscriber = tracing_subscriber::registry().with(traces.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || rt.block_on(test))
    });
    let metrics = Metrics(
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, unit, _, value)| {
                let kind = key.kind();
                let key = key.key();
                Metric {
                    kind,
                    name: key.name().to_owned(),
                    labels: key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect(),
                    unit,
                    value,
                }
            })
            .collect(),
    );
    (out, Recorded { metrics, traces })
}

/// One metric series.
#[derive(Debug)]
pub(crate) struct Metric {
    pub(crate) kind: MetricKind,
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) unit: Option<Unit>,
    pub(crate) value: DebugValue,
}

impl Metric {
    /// A histogram's samples.
    pub(crate) fn samples(&self) -> Vec<f64> {
        match &self.value {
            DebugValue::Histogram(v) => v.iter().map(|x| x.0).collect(),
            other => panic!("{} is not a histogram: {other:?}", self.name),
        }
    }

    /// A counter's value.
    pub(crate) fn count(&self) -> u64 {
        match &self.value {
            DebugValue::Counter(n) => *n,
            other => panic!("{} is not a counter: {other:?}", self.name),
        }
    }
}

/// Every series a test recorded.
pub(crate) struct Metrics(pub(crate) Vec<Metric>);

impl Metrics {
    /// The series of `name`.
    pub(crate) fn named(&self, name: &str) -> Vec<&Metric> {
        self.0.iter().filter(|m| m.name == name).collect()
    }

    /// The one series of `name` whose labels are exactly `labels`.
    pub(crate) fn exact(&self, name: &str, labels: &[(&str, &str)]) -> &Metric {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .iter()
            .find(|m| m.name == name && m.labels == want)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} series with labels {want:?}; there are: {:#?}",
                    self.named(name)
                        .iter()
                        .map(|m| &m.labels)
                        .collect::<Vec<_>>()
                )
            })
    }

    /// The series of `name` whose labels include `labels`.
    pub(crate) fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Metric> {
        self.named(name)
            .into_iter()
            .filter(|m| {
                labels
                    .iter()
                    .all(|(k, v)| m.labels.get(*k).is_some_and(|x| x == v))
            })
            .collect()
    }
}

/// A span or event: its name, target and fields (as text).
#[derive(Debug, Clone)]
pub(crate) struct Traced {
    pub(crate) name: String,
    pub(crate) target: String,
    pub(crate) fields: BTreeMap<String, String>,
}

impl Traced {
    pub(crate) fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .map_or_else(|| panic!("no field {name} in {self:?}"), String::as_str)
    }
}

/// A `tracing` layer keeping every span (with the fields recorded on it
/// later) and every event.
#[derive(Clone, Default)]
pub(crate) struct Capture {
    spans: Arc<Mutex<Vec<Traced>>>,
    events: Arc<Mutex<Vec<Traced>>>,
}

impl Capture {
    /// The spans named `name`, in creation order.
    pub(crate) fn spans(&self, name: &str) -> Vec<Traced> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }

    /// The events of `target`, in order.
    pub(crate) fn events(&self, target: &str) -> Vec<Traced> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e.target == target)
            .cloned()
            .collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// The index of a span in [`Capture::spans`], kept in its extensions.
struct SpanIndex(usize);

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push(Traced {
            name: attrs.metadata().name().to_owned(),
            target: attrs.metadata().target().to_owned(),
            fields,
        });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanIndex(spans.len() - 1));
        }
    }

    fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        let Some(SpanIndex(i)) = ext.get::<SpanIndex>() else {
            return;
        };
        let mut spans = self.spans.lock().unwrap();
        values.record(&mut Fields(&mut spans[*i].fields));
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(Traced {
            name: event.metadata().name().to_owned(),
            target: event.metadata().target().to_owned(),
            fields,
        });
    }
}
