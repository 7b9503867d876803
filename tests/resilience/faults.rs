//! Fault injection: seeded abort shares, delays in virtual time, scoping
//! to a header, gRPC codes, and the route stage of `mesh.inbound()`.

use std::time::Duration;

use apimesh::layers::resilience::FaultLayer;
use http::Method;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::support::{self, Hits, Mock, call, grpc_request, policy, request};

fn faults(block: &str) -> FaultLayer {
    FaultLayer::new(policy(block).fault.expect("a fault block")).seed(42)
}

/// Sends `n` GETs; returns which were aborted (answered 503 without a call).
async fn aborted(layer: FaultLayer, n: usize) -> Vec<bool> {
    let mock = Mock::statuses(&[200]);
    let svc = layer.layer(mock.clone());
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(call(&svc, request(Method::GET)).await.status() == 503);
    }
    let aborts = out.iter().filter(|a| **a).count();
    assert_eq!(
        mock.count(),
        n - aborts,
        "an aborted request never reaches the service"
    );
    out
}

#[tokio::test(start_paused = true)]
async fn abort_percentages_hold_over_ten_thousand_requests() {
    for percent in [1.0, 10.0, 50.0] {
        let block = format!("fault = {{ abort = {{ status = 503, percent = {percent} }} }}");
        let hits = aborted(faults(&block), 10_000).await;
        let share = 100.0 * hits.iter().filter(|a| **a).count() as f64 / 10_000.0;
        println!("faults: abort {percent}% configured, {share:.2}% injected");
        assert!(
            (share - percent).abs() <= 1.5,
            "{share:.2}% aborted for {percent}%"
        );
        // The same seed injects the same faults.
        assert_eq!(aborted(faults(&block), 10_000).await, hits);
    }
}

#[tokio::test(start_paused = true)]
async fn a_delay_is_applied_in_virtual_time() {
    let mock = Mock::statuses(&[200]);
    let svc =
        faults(r#"fault = { delay = { duration = "2s", percent = 100 } }"#).layer(mock.clone());
    let start = Instant::now();
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        mock.calls()[0].at - start,
        Duration::from_secs(2),
        "delayed before the call"
    );

    // Half of the requests: each takes 0 or 100 ms.
    let mock = Mock::statuses(&[200]);
    let svc =
        faults(r#"fault = { delay = { duration = "100ms", percent = 50 } }"#).layer(mock.clone());
    let mut delayed = 0;
    for _ in 0..2000 {
        let start = Instant::now();
        call(&svc, request(Method::GET)).await;
        match start.elapsed().as_millis() {
            0 => {}
            100 => delayed += 1,
            other => panic!("a delay of {other} ms"),
        }
    }
    assert!((850..=1150).contains(&delayed), "{delayed} of 2000 delayed");
}

#[tokio::test(start_paused = true)]
async fn only_requests_with_the_header_are_faulted() {
    let layer = faults(
        r#"fault = { abort = { status = 503, percent = 100 }, only_with_header = "x-chaos: on" }"#,
    );
    let mock = Mock::statuses(&[200]);
    let svc = layer.layer(mock.clone());
    for _ in 0..500 {
        assert_eq!(call(&svc, request(Method::GET)).await.status(), 200);
    }
    for value in ["off", "on-ish", "ON"] {
        let mut req = request(Method::GET);
        req.headers_mut().insert("x-chaos", value.parse().unwrap());
        assert_eq!(call(&svc, req).await.status(), 200, "x-chaos: {value}");
    }
    assert_eq!(mock.count(), 503);
    for _ in 0..100 {
        let mut req = request(Method::GET);
        req.headers_mut().insert("x-chaos", "on".parse().unwrap());
        assert_eq!(call(&svc, req).await.status(), 503);
    }
    assert_eq!(mock.count(), 503, "every faulted request was aborted");

    // A header name alone: any value.
    let mock = Mock::statuses(&[200]);
    let svc = faults(
        r#"fault = { abort = { status = 500, percent = 100 }, only_with_header = "x-chaos" }"#,
    )
    .layer(mock.clone());
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 200);
    let mut req = request(Method::GET);
    req.headers_mut()
        .insert("x-chaos", "anything".parse().unwrap());
    assert_eq!(call(&svc, req).await.status(), 500);
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_get_the_configured_grpc_code() {
    let layer = faults(
        r#"fault = { abort = { status = 503, grpc = "RESOURCE_EXHAUSTED", percent = 100 } }"#,
    );
    let mock = Mock::statuses(&[200]);
    let svc = layer.layer(mock.clone());
    let resp = call(&svc, grpc_request()).await;
    assert_eq!(resp.status(), 200, "gRPC errors are trailers-only 200s");
    assert_eq!(resp.headers()["grpc-status"], "8");
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 503, "plain HTTP gets the status");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(mock.count(), 0);

    // Without `grpc`, the code follows the status (503 → UNAVAILABLE).
    let svc = faults(r#"fault = { abort = { status = 503, percent = 100 } }"#).layer(mock.clone());
    assert_eq!(
        call(&svc, grpc_request()).await.headers()["grpc-status"],
        "14"
    );
}

#[tokio::test]
async fn the_inbound_chain_injects_each_routes_faults() {
    let mesh = support::mesh(
        r#"
        [[routes]]
        id = "chaos"
        match = { path_prefix = "/chaos" }
        fault = { abort = { status = 502, percent = 100 } }

        [[routes]]
        id = "calm"
        match = { path_prefix = "/calm" }
        "#,
    )
    .await;
    let hits = Hits::default();
    let h = hits.clone();
    let app = axum::Router::new()
        .fallback(move || {
            let h = h.clone();
            async move {
                h.hit();
                "handled"
            }
        })
        .layer(mesh.inbound().faults(FaultLayer::from_routes().seed(42)));
    let get = |path: &str| {
        http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let resp = app.clone().oneshot(get("/chaos/1")).await.unwrap();
    assert_eq!(resp.status(), 502);
    let resp = app.clone().oneshot(get("/calm/1")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(support::body_of(resp).await, "handled");
    assert_eq!(
        hits.get(),
        1,
        "the aborted request never reached the handler"
    );
}
