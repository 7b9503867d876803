//! Shared helpers: policies from config text, a recording mock service for
//! the layer tests (paused clock), a chunked request body of unknown size,
//! upstream servers on loopback that can be killed abruptly, and a mesh
//! client following an in-memory registry.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apimesh::Mesh;
use apimesh::core::policy::RoutePolicy;
use apimesh::registry::MemoryRegistry;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;
use tokio::time::Instant;

// ---- Policies -----------------------------------------------------------------

/// The policy of a catch-all route carrying the TOML lines `blocks`
/// (`retry = { .. }`, `circuit_breaker = { .. }`, `fault = { .. }`).
pub(crate) fn policy(blocks: &str) -> RoutePolicy {
    let toml = format!("[[routes]]\nid = \"r\"\nmatch = {{ path_prefix = \"/\" }}\n{blocks}\n");
    apimesh::Snapshot::from_toml(&toml, 1).unwrap().routes()[0]
        .policy()
        .clone()
}

// ---- A recording mock ------------------------------------------------------------

/// One call a [`Mock`] received.
#[derive(Debug)]
pub(crate) struct Seen {
    /// Which call, from 0.
    pub(crate) n: usize,
    /// When it arrived (tokio's clock: virtual time when paused).
    pub(crate) at: Instant,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    /// The whole request body.
    pub(crate) body: Bytes,
}

type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// A tower service that records every call and answers with a closure of
/// the call (which may wait, or hold the call until released).
#[derive(Clone)]
pub(crate) struct Mock {
    log: Arc<Mutex<Vec<Arc<Seen>>>>,
    answer: Arc<dyn Fn(Arc<Seen>) -> Answer + Send + Sync>,
}

impl Mock {
    /// Answers each call with `f(call)`.
    pub(crate) fn new<F, Fut>(f: F) -> Mock
    where
        F: Fn(Arc<Seen>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        Mock {
            log: Arc::default(),
            answer: Arc::new(move |s| Box::pin(f(s))),
        }
    }

    /// Answers the n-th call with `statuses[n]` (the last one repeats).
    pub(crate) fn statuses(statuses: &'static [u16]) -> Mock {
        Mock::new(move |s| {
            let code = statuses[s.n.min(statuses.len() - 1)];
            async move { status(code) }
        })
    }

    /// Every call so far, in order.
    pub(crate) fn calls(&self) -> Vec<Arc<Seen>> {
        self.log.lock().unwrap().clone()
    }

    /// How many calls it received.
    pub(crate) fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

impl<B> tower::Service<Request<B>> for Mock
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (log, answer) = (self.log.clone(), self.answer.clone());
        Box::pin(async move {
            let at = Instant::now();
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let seen = {
                let mut log = log.lock().unwrap();
                let seen = Arc::new(Seen {
                    n: log.len(),
                    at,
                    method: parts.method,
                    headers: parts.headers,
                    body,
                });
                log.push(seen.clone());
                seen
            };
            Ok(answer(seen).await)
        })
    }
}

/// An empty response with `code`.
pub(crate) fn status(code: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::default());
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

/// A response with `code` and one header.
pub(crate) fn with_header(code: u16, name: &'static str, value: &str) -> Response<Full<Bytes>> {
    let mut r = status(code);
    r.headers_mut()
        .insert(name, http::HeaderValue::from_str(value).unwrap());
    r
}

/// A gRPC trailers-only response with `grpc-status: code`.
pub(crate) fn grpc_status(code: u8) -> Response<Full<Bytes>> {
    let mut r = with_header(200, "grpc-status", &code.to_string());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

/// A request with `method` to `/` and an empty body.
pub(crate) fn request(method: Method) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/")
        .body(Full::default())
        .unwrap()
}

/// A gRPC request (unary, to `/pkg.Svc/Call`).
pub(crate) fn grpc_request() -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri("/pkg.Svc/Call")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(Full::default())
        .unwrap()
}

/// Sends one request through `svc` (made ready first).
pub(crate) async fn call<S, B>(svc: &S, req: Request<B>) -> S::Response
where
    S: tower::Service<Request<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    svc.clone().oneshot(req).await.unwrap()
}

/// A response's body, whole.
pub(crate) async fn body_of<B>(resp: Response<B>) -> Bytes
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// A guard that sets its flag when dropped: a handler holding one shows
/// whether its future was cancelled.
pub(crate) struct DropFlag(pub(crate) Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---- A chunked body ------------------------------------------------------------

/// A request body sent in chunks, with no size hint (like a stream).
#[derive(Debug)]
pub(crate) struct Chunks(VecDeque<Bytes>);

impl Chunks {
    /// `total` bytes (the pattern `0, 1, 2, ..` mod 251) in chunks of `chunk`.
    pub(crate) fn new(total: usize, chunk: usize) -> (Chunks, Bytes) {
        let all: Bytes = (0..total).map(|i| (i % 251) as u8).collect();
        let parts = (0..total)
            .step_by(chunk)
            .map(|i| all.slice(i..(i + chunk).min(total)))
            .collect();
        (Chunks(parts), all)
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

// ---- Upstreams ----------------------------------------------------------------

/// A counter shared between a test and its handlers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hits(Arc<AtomicUsize>);

impl Hits {
    /// Counts one and returns the count before it.
    pub(crate) fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst)
    }
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// An upstream server on loopback: its own accept loop, with every
/// connection a task of a `JoinSet`, so [`kill`](Self::kill) drops the
/// listener and every open connection at once, mid-request too.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Kills the server abruptly: no more accepts, every connection closed.
    pub(crate) async fn kill(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

/// Serves `app` (HTTP/1.1 and h2c) on a free loopback port.
pub(crate) async fn serve(app: axum::Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                    conns.spawn(async move {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Server {
        addr,
        task: Mutex::new(Some(task)),
    }
}

/// An upstream answering every request with `code` and its `name` as the
/// body, counting requests in `hits`.
pub(crate) async fn answering(name: &'static str, code: u16, hits: Hits) -> Server {
    serve(axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            hits.hit();
            (StatusCode::from_u16(code).unwrap(), name)
        }
    }))
    .await
}

/// `[{ address = ".." }, ..]` for the servers.
pub(crate) fn endpoints(servers: &[&Server]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address = \"{}\" }}", s.addr))
        .collect();
    format!("[{}]", list.join(", "))
}

/// A mesh route for calls to service `svc` with the TOML lines `blocks`.
pub(crate) fn mesh_route(svc: &str, blocks: &str) -> String {
    format!(
        "[[routes]]\nid = \"{svc}-calls\"\nmatch = {{ hosts = [\"{svc}\"], path_prefix = \"/\" }}\n\
         destinations = [{{ service = \"{svc}\" }}]\n{blocks}\n"
    )
}

/// The mesh of the calling service `orders`, with the registry config `toml`.
pub(crate) async fn mesh(toml: &str) -> Mesh {
    Mesh::builder()
        .service("orders")
        .registry(MemoryRegistry::from_toml(toml).unwrap())
        .build()
        .await
        .unwrap()
}

/// The mesh of `orders` calling service `inventory` on `servers`, with one
/// mesh route for those calls carrying the TOML lines `blocks`.
pub(crate) async fn inventory_mesh(servers: &[&Server], blocks: &str) -> Mesh {
    mesh(&format!(
        "[[services]]\nname = \"inventory\"\nendpoints = {}\n{}",
        endpoints(servers),
        mesh_route("inventory", blocks),
    ))
    .await
}

/// Waits (real time) until `cond` holds, at most `limit`.
pub(crate) async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}
