//! W3C trace propagation across two in-process apimesh services: `a`'s
//! handler calls `b` through `mesh.client("b")`; both serve over loopback.

use std::sync::{Arc, Mutex};

use axum::routing::get;

use crate::support::{self, recorded};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[test]
fn two_services_make_one_connected_trace() {
    let ((seen_by_b, answer), rec) = recorded(async {
        // Service b: records the trace context it receives.
        let seen: Arc<Mutex<Option<(String, String)>>> = Arc::default();
        let mesh_b = support::mesh(
            "b",
            r#"
[[routes]]
id = "stock"
match = { path = "/stock" }
"#,
        )
        .await;
        let s = seen.clone();
        let app_b = axum::Router::new()
            .route(
                "/stock",
                get(move |headers: http::HeaderMap| {
                    let s = s.clone();
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        *s.lock().unwrap() = Some((h("traceparent"), h("tracestate")));
                        "in stock"
                    }
                }),
            )
            .layer(mesh_b.inbound());
        let b = support::serve(app_b).await;

        // Service a: its handler calls b through the mesh.
        let mesh_a = support::mesh(
            "a",
            &format!(
                r#"
[[services]]
name = "b"
endpoints = [{{ address = "{b}" }}]

[[routes]]
id = "checkout"
match = {{ path = "/checkout" }}
"#
            ),
        )
        .await;
        let m = mesh_a.clone();
        let app_a = axum::Router::new()
            .route(
                "/checkout",
                get(move || {
                    let m = m.clone();
                    async move {
                        m.client("b")
                            .get("/stock")
                            .send()
                            .await
                            .unwrap()
                            .text()
                            .await
                            .unwrap()
                    }
                }),
            )
            .layer(mesh_a.inbound());
        let a = support::serve(app_a).await;

        let reply = support::get_with(
            a,
            "/checkout",
            &[
                ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01")),
                ("tracestate", "vendor=1"),
            ],
        )
        .await;
        assert_eq!(reply.status, 200);
        let seen = seen.lock().unwrap().clone().expect("b was called");
        (seen, reply.text())
    });
    assert_eq!(answer, "in stock");

    // What b received: a's trace, with a's outbound span as the parent.
    let (traceparent, tracestate) = seen_by_b;
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], TRACE_ID, "b is in another trace");
    assert_ne!(parts[2], PARENT_ID, "a passed its own parent on");
    assert_eq!(parts[2].len(), 16);
    assert_ne!(parts[2], "0000000000000000");
    assert_eq!(parts[3], "01", "the sampled flag is kept");
    assert_eq!(tracestate, "vendor=1");

    // Both services' request spans carry the one trace id; b's parent is
    // the span a sent, a's is the caller's.
    let spans = rec.traces.spans("http.server");
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let span_of = |path: &str| spans.iter().find(|s| s.field("url.path") == path).unwrap();
    let (a, b) = (span_of("/checkout"), span_of("/stock"));
    assert_eq!(a.field("trace_id"), TRACE_ID);
    assert_eq!(b.field("trace_id"), TRACE_ID);
    assert_eq!(a.field("parent_id"), PARENT_ID);
    assert_eq!(b.field("parent_id"), parts[2]);
    assert_eq!(a.field("http.route"), "/checkout");
    assert_eq!(b.field("http.route"), "/stock");

    // One access-log event per service.
    let access = rec.traces.events("apimesh::access");
    assert_eq!(access.len(), 2);
}

#[test]
fn a_call_without_an_inbound_trace_starts_one() {
    let (traceparent, _) = recorded(async {
        let seen: Arc<Mutex<String>> = Arc::default();
        let s = seen.clone();
        let b = support::serve(axum::Router::new().route(
            "/stock",
            get(move |headers: http::HeaderMap| {
                let s = s.clone();
                async move {
                    *s.lock().unwrap() = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                }
            }),
        ))
        .await;
        let mesh = support::mesh(
            "a",
            &format!("[[services]]\nname = \"b\"\nendpoints = [{{ address = \"{b}\" }}]\n"),
        )
        .await;
        mesh.client("b").get("/stock").send().await.unwrap();
        seen.lock().unwrap().clone()
    });
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent:?}");
    assert_eq!(parts[1].len(), 32);
    assert_ne!(parts[1], "00000000000000000000000000000000");
}
