//! What the mesh client costs over a raw hyper-util client, per request:
//! one axum upstream on loopback answering `hello`, called by
//!
//! - `hyper_util_raw`: `hyper_util::client::legacy::Client` (HTTP/1.1,
//!   pooled, `TCP_NODELAY`, as the mesh configures its own);
//! - `mesh_send`: `mesh.client("svc").get("/hello").send()` and the body;
//! - `mesh_service`: the mesh client as a tower `Service` and the body;
//! - `mesh_send_retry_timeout`: `send()` through a mesh route with
//!   `retry = {}` and `timeout = { total = "5s" }` (the resilience path on
//!   success: body buffering, retry loop, budget, deadline timer and
//!   deadline header).
//!
//! Client and upstream share one current-thread runtime, so a request is a
//! serial round trip through the kernel on one thread, and the difference
//! between two variants is CPU spent on the client side. Times are that
//! thread's CPU time, user and kernel (on an idle machine, the latency);
//! `BENCH_CLOCK=wall` for wall time.
//!
//! `cargo bench --bench client`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/cpu_clock.rs"]
mod cpu_clock;
use cpu_clock::clock;

use std::time::Duration;

use apimesh::Mesh;
use apimesh::registry::MemoryRegistry;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceExt};

fn config(port: u16) -> String {
    format!(
        r#"
[[services]]
name = "svc"
endpoints = [{{ address = "127.0.0.1:{port}" }}]

# `svc-resilient` is a mesh route to `svc` with the default retry policy
# and a total timeout.
[[routes]]
id = "resilient"
match = {{ hosts = ["svc-resilient"], path_prefix = "/" }}
destinations = [{{ service = "svc" }}]
retry = {{}}
timeout = {{ total = "5s" }}
"#
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let (port, mesh, raw) = rt.block_on(async {
        let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mesh = Mesh::builder()
            .service("bench")
            .registry(MemoryRegistry::from_toml(&config(port)).unwrap())
            .build()
            .await
            .unwrap();

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let raw: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        (port, mesh, raw)
    });
    let url: http::Uri = format!("http://127.0.0.1:{port}/hello").parse().unwrap();

    // Each variant answers `hello`; a check before timing.
    rt.block_on(async {
        let resp = raw.get(url.clone()).await.unwrap();
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "hello"
        );
        for svc in ["svc", "svc-resilient"] {
            let resp = mesh.client(svc).get("/hello").send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.bytes().await.unwrap(), "hello");
        }
    });

    let mut group = c.benchmark_group("client");
    // The loop runs inside one `block_on`, so the harness adds nothing per
    // request.
    group.bench_function("hyper_util_raw", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = clock();
                for _ in 0..iters {
                    let resp = raw.get(url.clone()).await.unwrap();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    std::hint::black_box(body);
                }
                clock() - start
            })
        })
    });
    let client = mesh.client("svc");
    group.bench_function("mesh_send", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = clock();
                for _ in 0..iters {
                    let resp = client.get("/hello").send().await.unwrap();
                    std::hint::black_box(resp.bytes().await.unwrap());
                }
                clock() - start
            })
        })
    });
    group.bench_function("mesh_service", |b| {
        let mut svc = mesh.client("svc");
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = clock();
                for _ in 0..iters {
                    let req = http::Request::get("/hello")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let ready = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut svc);
                    let resp = ready.await.unwrap().call(req).await.unwrap();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    std::hint::black_box(body);
                }
                clock() - start
            })
        })
    });
    let resilient = mesh.client("svc-resilient");
    group.bench_function("mesh_send_retry_timeout", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = clock();
                for _ in 0..iters {
                    let resp = resilient.get("/hello").send().await.unwrap();
                    std::hint::black_box(resp.bytes().await.unwrap());
                }
                clock() - start
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
