//! Cost of version resolution and lifecycle headers per request,
//! in-process: the `VersionLayer` alone, on requests that already carry
//! their `MatchedRoute` (as they do behind the inbound layer).
//!
//! `cargo bench --bench version` (times are the bench thread's CPU time;
//! `BENCH_CLOCK=wall` for wall time).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/cpu_clock.rs"]
mod cpu_clock;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use apimesh::{MatchedRoute, Snapshot, VersionLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, ServiceExt, service_fn};

const CONFIG: &str = r#"
[[apis]]
name = "orders"
versioning = { styles = ["path", "header"], default = "v2" }

[[apis.versions]]
version = "v1"
status = "deprecated"
deprecated_at = "2026-01-01T00:00:00Z"
sunset = "2099-01-01T00:00:00Z"
successor = "v2"
successor_link = "https://api.example.com/v2/orders"

[[apis.versions]]
version = "v2"

[[apis]]
name = "items"
versioning = { styles = ["path"], strip_prefix = true }

[[apis.versions]]
version = "v1"

[[apis.versions]]
version = "v2"

[[routes]]
id = "orders"
api = "orders"
match = { path_prefix = "/orders" }

[[routes]]
id = "items"
api = "items"
match = { path_prefix = "/" }
"#;

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmark future was not ready"),
    }
}

fn bench(c: &mut Criterion) {
    let snapshot = Arc::new(Snapshot::from_toml(CONFIG, 1).unwrap());
    // `v1` and `v2` name the version in a header, `/v2/...` in the path.
    let request = |version: &str| {
        let (path, header) = match version.strip_prefix('/') {
            Some(_) => (version, "none"),
            None => ("/orders/42", version),
        };
        let mut req = http::Request::get(path)
            .header("api-version", header)
            .body(())
            .unwrap();
        let m = MatchedRoute::find(&snapshot, &req).unwrap();
        req.extensions_mut().insert(m);
        req
    };
    // A response with a header already, as every axum response has.
    let handler = |_req: http::Request<()>| async {
        Ok::<_, Infallible>(
            http::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(())
                .unwrap(),
        )
    };
    let fields = [
        (
            http::HeaderName::from_static("deprecation"),
            http::HeaderValue::from_static("@1767225600"),
        ),
        (
            http::HeaderName::from_static("sunset"),
            http::HeaderValue::from_static("Thu, 01 Jan 2099 00:00:00 GMT"),
        ),
        (
            http::header::LINK,
            http::HeaderValue::from_static(
                "<https://api.example.com/v2/orders>; rel=\"successor-version\"",
            ),
        ),
    ];
    let layer = VersionLayer::from_routes();
    layer.prepare(&snapshot);
    let mut bare = service_fn(handler);
    let mut bare_too = service_fn(handler);
    let mut svc = layer.layer(service_fn(handler));
    // One request, built, served and dropped, through `bare` and through
    // `svc`.
    macro_rules! serve {
        ($svc:expr, $version:expr) => {{
            now($svc.ready()).unwrap();
            black_box(now($svc.call(request($version))).unwrap())
        }};
    }

    let mut group = c.benchmark_group("version");
    // The whole request, for scale.
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| cpu_clock::timed(iters, || drop(serve!(bare, "v1"))))
    });
    // The layer's cost: the same requests through the layer and without it,
    // interleaved, the difference reported. `v2` is active, `v1` deprecated
    // (three lifecycle fields); the path-style request reaches the service
    // without its `/v2`.
    for (case, version) in [
        ("resolve_active_v2_over_bare", "v2"),
        ("resolve_deprecated_v1_with_headers_over_bare", "v1"),
        ("resolve_path_and_strip_over_bare", "/v2/items/42?page=2"),
    ] {
        group.bench_function(case, |b| {
            b.iter_custom(|iters| {
                cpu_clock::timed_over(
                    iters,
                    || drop(serve!(bare, version)),
                    || drop(serve!(svc, version)),
                )
            })
        });
    }
    // The floor under the deprecated path: the same three fields appended
    // to the bare handler's response by hand (static values, as the
    // layer's are), with no layer at all.
    group.bench_function("three_appends_over_bare", |b| {
        b.iter_custom(|iters| {
            cpu_clock::timed_over(
                iters,
                || drop(serve!(bare, "v1")),
                || {
                    let mut res = serve!(bare_too, "v1");
                    for (name, value) in &fields {
                        res.headers_mut().append(name.clone(), value.clone());
                    }
                    drop(black_box(res));
                },
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
