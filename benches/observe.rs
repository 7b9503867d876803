//! Per-request cost of the observe stage (metrics, span, access log,
//! dashboard statistics): `ObserveLayer` over the inbound route match,
//! against the route match alone; first with no `metrics` recorder and no
//! `tracing` subscriber, then with the Prometheus recorder installed.
//! Futures are ready at once and polled with a no-op waker.
//!
//! `cargo bench --bench observe`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use apimesh::{InboundLayer, LiveSnapshot, ObserveLayer, Snapshot, Stats};
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body_util::Empty;
use tower::{Layer, Service, ServiceExt, service_fn};

const CONFIG: &str = r#"
[[apis]]
name = "orders"
versions = [{ version = "v1" }]

[[routes]]
id = "orders"
api = "orders"
version = "v1"
match = { path_template = "/orders/{id}", methods = ["GET"] }

[observability]
access_log_sample = 1.0
"#;

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmark future was not ready"),
    }
}

fn request() -> http::Request<()> {
    http::Request::get("/orders/42").body(()).unwrap()
}

fn bench(c: &mut Criterion) {
    let live = LiveSnapshot::fixed(Arc::new(Snapshot::from_toml(CONFIG, 1).unwrap()));
    let handler = |_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    };
    let inbound = InboundLayer::new(live.clone());

    let mut group = c.benchmark_group("observe");
    let run = |name: &str, group: &mut criterion::BenchmarkGroup<'_, _>| {
        let mut bare = inbound.layer(service_fn(handler));
        group.bench_function(format!("route_match_only{name}"), |b| {
            b.iter_batched(
                request,
                |req| {
                    now(bare.ready()).unwrap();
                    black_box(now(bare.call(req)).unwrap())
                },
                BatchSize::SmallInput,
            )
        });
        // A fresh layer, so its metric handles come from the current recorder.
        let observe = ObserveLayer::new(live.clone(), Stats::new());
        let mut observed = observe.layer(inbound.layer(service_fn(handler)));
        group.bench_function(format!("observe_and_route_match{name}"), |b| {
            b.iter_batched(
                request,
                |req| {
                    now(observed.ready()).unwrap();
                    black_box(now(observed.call(req)).unwrap())
                },
                BatchSize::SmallInput,
            )
        });
    };
    run("", &mut group);
    // The same with the Prometheus recorder as the process's recorder.
    let _handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    run("_prometheus", &mut group);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
