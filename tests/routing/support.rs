//! Shared helpers: named upstream servers on loopback that count their hits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::routing::any;

/// A running upstream that answers every request with its name.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicU64>,
    pub(crate) last_headers: Arc<std::sync::Mutex<http::HeaderMap>>,
}

impl Upstream {
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// Starts an upstream named `name` that waits `delay` before answering.
pub(crate) async fn upstream(name: &'static str, delay: Duration) -> Upstream {
    let hits = Arc::new(AtomicU64::new(0));
    let last_headers = Arc::new(std::sync::Mutex::new(http::HeaderMap::new()));
    let (h, l) = (hits.clone(), last_headers.clone());
    let app = axum::Router::new().fallback(any(move |req: Request| {
        let (h, l) = (h.clone(), l.clone());
        async move {
            h.fetch_add(1, Ordering::Relaxed);
            *l.lock().unwrap() = req.headers().clone();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            name
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream {
        name,
        addr,
        hits,
        last_headers,
    }
}
