//! Cost of the resilience layers on the success path, per request,
//! in-process: the standalone `TimeoutLayer`, `RetryLayer`,
//! `CircuitBreakerLayer` and `BulkheadLayer` (policies from config) alone
//! and stacked, over an always-ready service answering a small response,
//! against the same service called bare. Our breaker alone is also
//! compared with tower-resilience's.
//!
//! Every future is ready at once and is polled with a no-op waker inside
//! a current-thread runtime's context (the timeout needs its timer), so
//! only the layers' own work is measured. Each iteration builds, serves
//! and drops one `GET` with an empty body. Times are the bench thread's
//! CPU time (`BENCH_CLOCK=wall` for wall time).
//!
//! `cargo bench --bench resilience`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/cpu_clock.rs"]
mod cpu_clock;
use cpu_clock::timed;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use apimesh::Snapshot;
use apimesh::layers::resilience::{BulkheadLayer, CircuitBreakerLayer, RetryLayer, TimeoutLayer};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{Empty, Full};
use tower::{Layer, Service, ServiceExt, service_fn};

const CONFIG: &str = r#"
[[routes]]
id = "consecutive"
match = { path_prefix = "/a" }
timeout = { total = "5s" }
retry = {}
circuit_breaker = {}

[[routes]]
id = "rate"
match = { path_prefix = "/b" }
circuit_breaker = { mode = "rate", failure_rate = 50, window = 100, min_calls = 20 }
"#;

/// Polls a future that is expected to be ready immediately.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmark future was not ready"),
    }
}

/// A request as hyper's server hands it over: the URI is a slice of the
/// connection's read buffer (shared, so cloning it counts a reference and
/// allocates nothing), not a copy of a `&str` (whose first clone would
/// allocate).
fn request() -> http::Request<Empty<Bytes>> {
    thread_local! {
        static READ_BUFFER: Bytes = Bytes::from(b"GET /a/42 HTTP/1.1\r\n\r\n".to_vec());
    }
    let uri = READ_BUFFER.with(|b| http::Uri::from_maybe_shared(b.slice(4..9)).unwrap());
    http::Request::get(uri).body(Empty::new()).unwrap()
}

/// The upstream: a small response, ready at once, whatever the body type.
async fn hello<B>(_req: http::Request<B>) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(b"hello"))))
}

/// Calls `svc` once on a fresh request and drops the response.
macro_rules! once {
    ($svc:expr) => {{
        now(ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut $svc)).unwrap();
        black_box(now($svc.call(request())).unwrap())
    }};
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = rt.enter();

    let snapshot = Snapshot::from_toml(CONFIG, 1).unwrap();
    let policy = snapshot.routes()[0].policy();
    let retry = policy.retry.clone().unwrap();
    let total = policy.timeout.unwrap().total.unwrap();
    let breaker = policy.circuit_breaker.clone().unwrap();
    let rate_breaker = snapshot.routes()[1]
        .policy()
        .circuit_breaker
        .clone()
        .unwrap();

    let mut group = c.benchmark_group("resilience");
    group.bench_function("bare", |b| {
        let mut svc = service_fn(hello::<Empty<Bytes>>);
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });
    group.bench_function("timeout", |b| {
        let mut svc = TimeoutLayer::new(total).layer(service_fn(hello::<Empty<Bytes>>));
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });
    group.bench_function("retry", |b| {
        let mut svc = RetryLayer::new(retry.clone()).layer(service_fn(hello));
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });
    group.bench_function("breaker_consecutive", |b| {
        let mut svc =
            CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(hello::<Empty<Bytes>>));
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });
    group.bench_function("breaker_rate_window_100", |b| {
        let mut svc =
            CircuitBreakerLayer::new(rate_breaker.clone()).layer(service_fn(hello::<Empty<Bytes>>));
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });
    group.bench_function("bulkhead", |b| {
        let mut svc = BulkheadLayer::new(1024).layer(service_fn(hello::<Empty<Bytes>>));
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });
    group.bench_function("stack", |b| {
        // The order of a mesh call: the deadline over the retry loop, each
        // attempt through the breaker and the bulkhead.
        let mut svc = tower::ServiceBuilder::new()
            .layer(TimeoutLayer::new(total))
            .layer(RetryLayer::new(retry.clone()))
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .layer(BulkheadLayer::new(1024))
            .service(service_fn(hello));
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });

    // tower-resilience's breaker, classifying 5xx as failures like ours.
    group.bench_function("tower_resilience_consecutive", |b| {
        let layer = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
            .consecutive_failures(5)
            .classify_response(|r: &http::Response<Full<Bytes>>| r.status().is_server_error())
            .build()
            .unwrap();
        let mut svc = layer.layer(service_fn(hello::<Empty<Bytes>>));
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });
    group.bench_function("tower_resilience_rate_window_100", |b| {
        let layer = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .sliding_window_size(100)
            .minimum_number_of_calls(20)
            .classify_response(|r: &http::Response<Full<Bytes>>| r.status().is_server_error())
            .build()
            .unwrap();
        let mut svc = layer.layer(service_fn(hello::<Empty<Bytes>>));
        b.iter_custom(|iters| {
            timed(iters, || {
                once!(svc);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
