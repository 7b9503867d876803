//! Per-request cost of the inbound layer (snapshot read + route match +
//! extension insert) against the same service called bare, with 10, 100 and
//! 1000 routes. Everything runs in-process; futures are ready at once and
//! polled with a no-op waker, so only the layer's own work is measured.
//!
//! `cargo bench --bench inbound`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use apimesh::{InboundLayer, LiveSnapshot, Snapshot, Unmatched};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, ServiceExt, service_fn};

fn config(routes: usize) -> String {
    let mut s = String::new();
    for i in 0..routes {
        // A realistic mix: templates, exact paths and prefixes, some with
        // method conditions.
        let m = match i % 3 {
            0 => format!(r#"{{ path_template = "/svc{i}/items/{{id}}", methods = ["GET"] }}"#),
            1 => format!(r#"{{ path = "/svc{i}/health" }}"#),
            _ => format!(r#"{{ path_prefix = "/svc{i}/static" }}"#),
        };
        s.push_str(&format!("[[routes]]\nid = \"r{i}\"\nmatch = {m}\n\n"));
    }
    s
}

fn request(path: &str) -> http::Request<()> {
    http::Request::get(path).body(()).unwrap()
}

/// Polls a future that is expected to be ready immediately.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmark future was not ready"),
    }
}

fn bench(c: &mut Criterion) {
    let handler = |_req: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) };

    let mut group = c.benchmark_group("inbound");
    // What building and dropping a request costs the harness, for reference.
    group.bench_function("drop_request", |b| {
        b.iter_batched(|| request("/svc0/items/42"), drop, BatchSize::SmallInput)
    });
    group.bench_function("bare", |b| {
        let mut svc = service_fn(handler);
        b.iter_batched(
            || request("/svc0/items/42"),
            |req| {
                now(svc.ready()).unwrap();
                black_box(now(svc.call(req)).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    for n in [10usize, 100, 1000] {
        let snapshot = Arc::new(Snapshot::from_toml(&config(n), 1).unwrap());
        // The last template route: the deepest search for a linear matcher.
        let last = (0..n).rev().find(|i| i % 3 == 0).unwrap();
        let path = format!("/svc{last}/items/42");
        assert!(snapshot.match_request(&request(&path)).is_some());

        group.bench_function(format!("match_only/{n}_routes"), |b| {
            b.iter_batched(
                || request(&path),
                |req| black_box(snapshot.match_request(&req).map(|r| r.index())),
                BatchSize::SmallInput,
            )
        });

        let live = LiveSnapshot::fixed(snapshot.clone());
        let mut svc = InboundLayer::new(live)
            .unmatched(Unmatched::NotFound)
            .layer(service_fn(handler));
        group.bench_function(format!("layer/{n}_routes"), |b| {
            b.iter_batched(
                || request(&path),
                |req| {
                    now(svc.ready()).unwrap();
                    black_box(now(svc.call(req)).unwrap())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
