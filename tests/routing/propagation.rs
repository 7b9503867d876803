//! Context propagation: a handler behind `mesh.inbound()` that calls
//! another service passes the trace on as a child span and the deadline
//! on as what is left of it.

use std::time::Duration;

use apimesh::Mesh;
use apimesh::layers::outbound::parse_grpc_timeout;
use axum::routing::get;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;

use crate::support::{Upstream, mesh, upstream};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// An app behind `mesh.inbound()` whose `/checkout` handler waits 100 ms,
/// then calls `inventory` (as gRPC with `?grpc`, with its own timeout with
/// `?timeout_ms=N`) and answers with the outbound call's status.
fn app(mesh: &Mesh) -> axum::Router {
    let m = mesh.clone();
    axum::Router::new()
        .route(
            "/checkout",
            get(move |uri: http::Uri| {
                let m = m.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let query = uri.query().unwrap_or("");
                    let mut call = m.client("inventory").get("/stock");
                    if query.contains("grpc") {
                        call = m
                            .client("inventory")
                            .post("/apimesh.echo.v1.Echo/Say")
                            .header("content-type", "application/grpc");
                    }
                    if let Some(ms) = query.strip_prefix("timeout_ms=") {
                        call = call.timeout(Duration::from_millis(ms.parse().unwrap()));
                    }
                    match call.send().await {
                        Ok(resp) => resp.status().as_u16().to_string(),
                        Err(e) => e.status().as_u16().to_string(),
                    }
                }
            }),
        )
        .layer(mesh.inbound())
}

async fn fixture() -> (Upstream, axum::Router) {
    let inventory = upstream("inventory", Duration::ZERO).await;
    let f = mesh(&format!(
        r#"
        [[services]]
        name = "inventory"
        endpoints = [{{ address = "{}" }}]
        "#,
        inventory.addr
    ))
    .await;
    let app = app(&f.mesh);
    (inventory, app)
}

/// Serves `GET path` with `headers`; returns what the handler answered and
/// the headers the inventory upstream saw.
async fn checkout(
    app: &axum::Router,
    inventory: &Upstream,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, HeaderMap) {
    let mut req = http::Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = inventory.last_headers.lock().unwrap().clone();
    (String::from_utf8(body.to_vec()).unwrap(), seen)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} in {h:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_trace_continues_as_a_child_span() {
    let (inventory, app) = fixture().await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (status, seen) = checkout(
        &app,
        &inventory,
        "/checkout",
        &[("traceparent", &traceparent), ("tracestate", "vendor=42")],
    )
    .await;
    assert_eq!(status, "200");
    let out: Vec<&str> = header(&seen, "traceparent").split('-').collect();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0], "00");
    assert_eq!(out[1], TRACE_ID, "the trace id changed");
    assert_ne!(out[2], PARENT_ID, "the parent id was not replaced");
    assert_eq!(out[2].len(), 16);
    assert_ne!(out[2], "0000000000000000");
    assert_eq!(out[3], "01");
    assert_eq!(header(&seen, "tracestate"), "vendor=42");
    assert_eq!(header(&seen, "x-apimesh-caller"), "orders");

    // Two calls in one trace get two different span ids; no inbound
    // `tracestate`, none sent.
    let (_, seen2) = checkout(
        &app,
        &inventory,
        "/checkout",
        &[("traceparent", &traceparent)],
    )
    .await;
    let again: Vec<&str> = header(&seen2, "traceparent").split('-').collect();
    assert_eq!(again[1], TRACE_ID);
    assert_ne!(again[2], out[2]);
    assert!(seen2.get("tracestate").is_none());

    // Without an inbound trace, the call starts a new one.
    let (_, fresh) = checkout(&app, &inventory, "/checkout", &[]).await;
    let fresh: Vec<&str> = header(&fresh, "traceparent").split('-').collect();
    assert_eq!(fresh.len(), 4);
    assert_ne!(fresh[1], TRACE_ID);
}

#[tokio::test]
async fn the_deadline_shrinks_on_the_way_out() {
    let (inventory, app) = fixture().await;

    // An HTTP deadline of 3 s, 100 ms spent in the handler.
    let (status, seen) = checkout(
        &app,
        &inventory,
        "/checkout",
        &[("x-apimesh-timeout-ms", "3000")],
    )
    .await;
    assert_eq!(status, "200");
    let ms: u64 = header(&seen, "x-apimesh-timeout-ms").parse().unwrap();
    assert!((1000..=2900).contains(&ms), "{ms}");

    // A gRPC deadline of 3 s becomes the HTTP call's.
    let (_, seen) = checkout(&app, &inventory, "/checkout", &[("grpc-timeout", "3S")]).await;
    let ms: u64 = header(&seen, "x-apimesh-timeout-ms").parse().unwrap();
    assert!((1000..=2900).contains(&ms), "{ms}");

    // An HTTP deadline becomes a gRPC call's `grpc-timeout`.
    let (status, seen) = checkout(
        &app,
        &inventory,
        "/checkout?grpc",
        &[("x-apimesh-timeout-ms", "3000")],
    )
    .await;
    assert_eq!(status, "200");
    let left = parse_grpc_timeout(header(&seen, "grpc-timeout").as_bytes()).unwrap();
    assert!(
        left >= Duration::from_secs(1) && left <= Duration::from_millis(2900),
        "{left:?}"
    );

    // The handler's own longer timeout does not extend the caller's...
    let (_, seen) = checkout(
        &app,
        &inventory,
        "/checkout?timeout_ms=10000",
        &[("x-apimesh-timeout-ms", "3000")],
    )
    .await;
    let ms: u64 = header(&seen, "x-apimesh-timeout-ms").parse().unwrap();
    assert!((1000..=2900).contains(&ms), "{ms}");
    // ...a shorter one wins.
    let (_, seen) = checkout(
        &app,
        &inventory,
        "/checkout?timeout_ms=500",
        &[("x-apimesh-timeout-ms", "3000")],
    )
    .await;
    let ms: u64 = header(&seen, "x-apimesh-timeout-ms").parse().unwrap();
    assert!(ms <= 500, "{ms}");

    // A deadline that passed while the handler worked: the call is not made.
    let hits = inventory.hits();
    let (status, _) = checkout(
        &app,
        &inventory,
        "/checkout",
        &[("x-apimesh-timeout-ms", "50")],
    )
    .await;
    assert_eq!(status, "504");
    assert_eq!(inventory.hits(), hits);
}
