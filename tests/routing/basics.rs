//! The client reaches a service's endpoints and propagates context.

use std::time::Duration;

use apimesh::Mesh;
use apimesh::registry::MemoryRegistry;

use crate::support::upstream;

#[tokio::test]
async fn client_reaches_the_service_and_propagates_context() {
    let a = upstream("a", Duration::ZERO).await;
    let registry = MemoryRegistry::from_toml(&format!(
        r#"
        [[services]]
        name = "inventory"
        endpoints = [{{ address = "{}" }}]
        "#,
        a.addr
    ))
    .unwrap();
    let mesh = Mesh::builder()
        .service("orders")
        .registry(registry)
        .build()
        .await
        .unwrap();
    let client = mesh.client("inventory");
    let resp = client
        .get("/stock/42")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "a");
    let h = a.last_headers.lock().unwrap().clone();
    assert_eq!(h["x-apimesh-caller"], "orders");
    let ms: u64 = h["x-apimesh-timeout-ms"].to_str().unwrap().parse().unwrap();
    assert!(ms > 4000 && ms <= 5000, "{ms}");
    assert!(h.contains_key("traceparent"));
}

#[tokio::test]
async fn no_endpoints_fails_fast_with_503() {
    let registry = MemoryRegistry::from_toml(
        r#"
        [[services]]
        name = "inventory"
        "#,
    )
    .unwrap();
    let mesh = Mesh::builder()
        .service("orders")
        .registry(registry)
        .build()
        .await
        .unwrap();
    let err = mesh.client("inventory").get("/x").send().await.unwrap_err();
    assert_eq!(err.status(), 503);
}
