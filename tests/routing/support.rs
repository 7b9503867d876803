//! Shared helpers: named upstream servers on loopback that count their hits
//! (and can be stopped and restarted on their port), a mesh following a
//! live in-memory registry, a load generator that tallies which upstream
//! answered, and polling with a deadline for what cannot be awaited.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apimesh::Mesh;
use apimesh::layers::outbound::RequestBuilder;
use apimesh::registry::MemoryRegistry;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::any;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

// ---- Upstreams ----------------------------------------------------------------

/// A running upstream that answers every request with its name.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicU64>,
    pub(crate) last_headers: Arc<Mutex<http::HeaderMap>>,
    /// Every request body received, in arrival order.
    pub(crate) bodies: Arc<Mutex<Vec<Bytes>>>,
    app: axum::Router,
    running: Arc<Mutex<Option<Running>>>,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Stops accepting and waits until every connection is closed (axum's
    /// graceful shutdown), so connecting to `addr` is refused afterwards.
    pub(crate) async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(r) = running {
            let _ = r.stop.send(());
            r.task.await.unwrap();
        }
    }

    /// Starts serving again on the same address, with the same counters.
    pub(crate) async fn restart(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let running = serve(listener, self.app.clone());
        *self.running.lock().unwrap() = Some(running);
    }
}

fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running { stop, task }
}

/// Starts an upstream named `name` that waits `delay` before answering.
pub(crate) async fn upstream(name: &'static str, delay: Duration) -> Upstream {
    start(name, delay, false).await
}

/// An upstream that closes each connection after its answer: stopping it
/// leaves no pooled keep-alive connection behind for a request to race
/// with, so once [`Upstream::stop`] returns, the next call to it is a
/// refused connect (which the client may try elsewhere) and nothing else.
pub(crate) async fn closing_upstream(name: &'static str) -> Upstream {
    start(name, Duration::ZERO, true).await
}

async fn start(name: &'static str, delay: Duration, close: bool) -> Upstream {
    let hits = Arc::new(AtomicU64::new(0));
    let last_headers = Arc::new(Mutex::new(http::HeaderMap::new()));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (h, l, b) = (hits.clone(), last_headers.clone(), bodies.clone());
    let app = axum::Router::new().fallback(any(move |req: Request| {
        let (h, l, b) = (h.clone(), l.clone(), b.clone());
        async move {
            h.fetch_add(1, Ordering::Relaxed);
            *l.lock().unwrap() = req.headers().clone();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            b.lock().unwrap().push(body);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if close {
                ([(http::header::CONNECTION, "close")], name).into_response()
            } else {
                name.into_response()
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = serve(listener, app.clone());
    Upstream {
        name,
        addr,
        hits,
        last_headers,
        bodies,
        app,
        running: Arc::new(Mutex::new(Some(running))),
    }
}

/// A loopback address nothing listens on (bound, then released), so
/// connecting to it is refused at once.
pub(crate) async fn refused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---- The mesh -----------------------------------------------------------------

/// The mesh of the calling service `orders`, following an in-memory
/// registry that the test updates.
pub(crate) struct Fixture {
    pub(crate) mesh: Mesh,
    pub(crate) registry: Arc<MemoryRegistry>,
}

/// A mesh for `orders` with the registry config `toml`.
pub(crate) async fn mesh(toml: &str) -> Fixture {
    fixture(toml, None).await
}

/// A mesh for `orders` running in `region`/`zone`.
pub(crate) async fn mesh_at(toml: &str, region: &str, zone: &str) -> Fixture {
    fixture(toml, Some((region, zone))).await
}

async fn fixture(toml: &str, locality: Option<(&str, &str)>) -> Fixture {
    let registry = Arc::new(MemoryRegistry::from_toml(toml).unwrap());
    let mut builder = Mesh::builder().service("orders").registry(registry.clone());
    if let Some((region, zone)) = locality {
        builder = builder.locality(region, zone);
    }
    Fixture {
        mesh: builder.build().await.unwrap(),
        registry,
    }
}

impl Fixture {
    /// Publishes `toml` and waits until the mesh serves it.
    pub(crate) async fn update(&self, toml: &str) -> u64 {
        let revision = self.registry.update_toml(toml).unwrap();
        let live = async {
            while self.mesh.snapshot().revision() < revision {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), live)
            .await
            .expect("the mesh follows its registry");
        revision
    }
}

// ---- Load ---------------------------------------------------------------------

/// What a burst of requests got back.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Successful answers per upstream name (the body of the answer).
    pub(crate) by_upstream: BTreeMap<String, u64>,
    /// Every failure: a mesh error or a non-200 status.
    pub(crate) failures: Vec<String>,
    /// The slowest single request.
    pub(crate) slowest: Duration,
}

impl Tally {
    /// Answers from `name`.
    pub(crate) fn count(&self, name: &str) -> u64 {
        self.by_upstream.get(name).copied().unwrap_or(0)
    }

    /// Successful answers.
    pub(crate) fn total(&self) -> u64 {
        self.by_upstream.values().sum()
    }

    /// The share of successful answers from `name`, 0 to 1.
    pub(crate) fn share(&self, name: &str) -> f64 {
        self.count(name) as f64 / self.total().max(1) as f64
    }

    /// Panics unless every request succeeded.
    pub(crate) fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "{} failed requests, e.g. {:?}; answers: {:?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)],
            self.by_upstream
        );
    }
}

/// Sends `total` requests from `workers` concurrent tasks, each sending its
/// share one after another; `request(i)` builds the `i`th.
pub(crate) async fn load<F>(total: usize, workers: usize, request: F) -> Tally
where
    F: Fn(usize) -> RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for i in (w..total).step_by(workers) {
                    let started = Instant::now();
                    let result = request(i).send().await;
                    tally.slowest = tally.slowest.max(started.elapsed());
                    match result {
                        Ok(resp) if resp.status() == 200 => {
                            let name = resp.text().await.unwrap();
                            *tally.by_upstream.entry(name).or_default() += 1;
                        }
                        Ok(resp) => tally.failures.push(format!("status {}", resp.status())),
                        Err(e) => tally.failures.push(format!("{} ({e})", e.status())),
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        for (name, n) in t.by_upstream {
            *all.by_upstream.entry(name).or_default() += n;
        }
        all.failures.extend(t.failures);
        all.slowest = all.slowest.max(t.slowest);
    }
    all
}

// ---- Waiting ------------------------------------------------------------------

/// Polls `done` every 10 ms until it holds; panics after `limit`.
pub(crate) async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
