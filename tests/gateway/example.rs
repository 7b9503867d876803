//! `examples/config/gateway.toml` parses, and the example's demo works
//! against it (with the demo's upstreams on free ports).

use apimesh::Snapshot;

use crate::support::{API_KEY, gateway, get, raw, upstream};

const CONFIG: &str = include_str!("../../examples/config/gateway.toml");

#[test]
fn example_config_parses() {
    let snapshot = Snapshot::from_toml(CONFIG, 1).unwrap();
    assert_eq!(snapshot.gateway().max_body, 1024 * 1024);
    assert_eq!(snapshot.gateway().max_header_size, 16 * 1024);
}

/// The requests the example's doc comment suggests.
#[tokio::test]
async fn example_demo_requests() {
    let catalog = upstream("catalog").await;
    let orders = upstream("orders").await;
    let canary = upstream("orders-canary").await;
    let config = CONFIG
        .replace("127.0.0.1:18081", &catalog.addr.to_string())
        .replace("127.0.0.1:18082", &orders.addr.to_string())
        .replace("127.0.0.1:18083", &canary.addr.to_string());
    let gw = gateway(&config).await;
    let key = format!("x-api-key: {API_KEY}");

    let resp = raw(gw, &get("/catalog/books", &[])).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "catalog"));
    assert_eq!(catalog.only().target, "/catalog/books");

    raw(gw, &get("/orders/42", &[]))
        .await
        .assert_problem(401, "unauthenticated");
    raw(gw, &get("/orders/42", &["x-api-key: wrong-key"]))
        .await
        .assert_problem(401, "unauthenticated");
    assert_eq!(orders.count() + canary.count(), 0);

    // Sticky per consumer: the one consumer always lands on one side.
    let first = raw(gw, &get("/orders/42", &[&key])).await;
    assert_eq!(first.status, 200);
    assert!(["orders", "orders-canary"].contains(&first.text().as_str()));
    for _ in 0..5 {
        assert_eq!(
            raw(gw, &get("/orders/42", &[&key])).await.text(),
            first.text()
        );
    }

    canary.clear();
    let resp = raw(gw, &get("/orders/42", &[&key, "x-canary: always"])).await;
    assert_eq!(resp.text(), "orders-canary");
    assert_eq!(canary.only().target, "/orders/42");

    // The catalog route is GET/HEAD only.
    let resp = raw(
        gw,
        b"POST /catalog/books HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    resp.assert_problem(404, "route-not-found");
}
