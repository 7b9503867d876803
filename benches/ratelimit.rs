//! Per-request cost of a local keyed rate limit, next to raw governor (the
//! floor) and a bare service.
//!
//! `cargo bench --bench ratelimit`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use apimesh::{PeerAddr, RateLimitLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use tower::{Layer, Service, ServiceExt, service_fn};

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmark future was not ready"),
    }
}

fn request(i: u32) -> http::Request<()> {
    let mut req = http::Request::get("/items/1").body(()).unwrap();
    // 1024 distinct clients, like a busy service.
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (i % 1024));
    req.extensions_mut()
        .insert(PeerAddr(std::net::SocketAddr::from((ip, 40_000))));
    req
}

fn bench(c: &mut Criterion) {
    // Like any real handler's response, it has a header already (axum sets
    // content-type), so both sides pay for an allocated header map.
    let handler = |_req: http::Request<()>| async {
        Ok::<_, Infallible>(
            http::Response::builder()
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(())
                .unwrap(),
        )
    };
    let mut group = c.benchmark_group("ratelimit");

    // Each iteration builds, serves and drops one request and its response,
    // bare and behind the layer alike; the difference is the layer's cost.
    let mut i = 0u32;
    group.bench_function("bare", |b| {
        let mut svc = service_fn(handler);
        b.iter(|| {
            i = i.wrapping_add(1);
            now(svc.ready()).unwrap();
            black_box(now(svc.call(request(i))).unwrap())
        })
    });

    // The floor: governor's keyed limiter alone, on a precomputed key.
    let raw = RateLimiter::dashmap(Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap()));
    let mut k = 0u64;
    group.bench_function("governor_keyed_raw", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            black_box(raw.check_key(&(k % 1024)).is_ok())
        })
    });

    // The layer: client-IP key (from the peer address), one limit that
    // never refuses, headers computed for the response.
    let layer = RateLimitLayer::builder()
        .limit("1000000000/s", None, &["ip"])
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(handler));
    group.bench_function("layer_local_ip_key", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            now(svc.ready()).unwrap();
            black_box(now(svc.call(request(i))).unwrap())
        })
    });
    // The check alone: the same limit, without writing the fields on
    // admitted responses (`headers = false`).
    let quiet = RateLimitLayer::builder()
        .limit("1000000000/s", None, &["ip"])
        .headers(false)
        .build()
        .unwrap();
    let mut svc = quiet.layer(service_fn(handler));
    group.bench_function("layer_local_ip_key_no_headers", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            now(svc.ready()).unwrap();
            black_box(now(svc.call(request(i))).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
