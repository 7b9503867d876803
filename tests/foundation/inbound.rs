use apimesh::registry::MemoryRegistry;
use apimesh::{MatchedRoute, Mesh, Unmatched};
use axum::routing::get;

use crate::support;

const CONFIG: &str = r#"
[[apis]]
name = "orders"
versions = [{ version = "v2" }]

[[routes]]
id = "order"
api = "orders"
version = "v2"
match = { path_template = "/orders/{id}", methods = ["GET"] }

[[routes]]
id = "orders-admin"
match = { path_prefix = "/orders/admin", headers = [{ name = "x-role", value = "admin" }] }
"#;

async fn app(unmatched: Unmatched) -> (Mesh, std::net::SocketAddr) {
    let mesh = Mesh::builder()
        .service("orders")
        .registry(MemoryRegistry::from_toml(CONFIG).expect("valid config"))
        .unmatched(unmatched)
        .build()
        .await
        .expect("mesh");
    let handler = |route: Option<MatchedRoute>| async move {
        match route {
            Some(m) => format!(
                "{} {} {}",
                m.route().id(),
                m.route().version().unwrap_or("-"),
                m.revision()
            ),
            None => "unmatched".to_owned(),
        }
    };
    let router = axum::Router::new()
        .route("/orders/{id}", get(handler))
        .route("/orders/admin/{*rest}", get(handler))
        .route("/other", get(handler))
        .layer(mesh.inbound());
    let addr = support::serve(router).await;
    (mesh, addr)
}

#[tokio::test]
async fn matched_route_rides_in_extensions() {
    let (_mesh, addr) = app(Unmatched::PassThrough).await;
    let r = support::get(addr, "/orders/42").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "order v2 1");
}

#[tokio::test]
async fn header_conditions_pick_the_route() {
    let (_mesh, addr) = app(Unmatched::PassThrough).await;
    let req = http::Request::get(format!("http://{addr}/orders/admin/x"))
        .header("x-role", "admin")
        .body(Default::default())
        .unwrap();
    assert_eq!(support::send(req).await.body, "orders-admin - 1");
    // Without the header, nothing matches: passed through untouched.
    assert_eq!(
        support::get(addr, "/orders/admin/x").await.body,
        "unmatched"
    );
}

#[tokio::test]
async fn unmatched_passes_through_by_default() {
    let (_mesh, addr) = app(Unmatched::PassThrough).await;
    let r = support::get(addr, "/other").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "unmatched");
}

#[tokio::test]
async fn unmatched_answers_404_problem_when_configured() {
    let (_mesh, addr) = app(Unmatched::NotFound).await;
    let r = support::get(addr, "/other?secret=1").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let body = r.json();
    assert_eq!(body["status"], 404);
    assert_eq!(body["title"], "Not Found");
    assert_eq!(body["type"], "https://apimesh.dev/problems/route-not-found");
    // The path is named; the query string (which may carry credentials) is not.
    assert_eq!(body["detail"], "no route matches GET /other");
    // A method the route does not allow does not match either.
    let req = http::Request::post(format!("http://{addr}/orders/1"))
        .body(Default::default())
        .unwrap();
    assert_eq!(support::send(req).await.status, 404);
}

#[tokio::test]
async fn builder_requires_a_service_name() {
    let err = Mesh::builder().build().await.unwrap_err();
    assert!(err.to_string().contains(".service("), "{err}");
    let err = Mesh::builder().service("  ").build().await.unwrap_err();
    assert!(matches!(err, apimesh::BuildError::MissingService));
}

#[tokio::test]
async fn default_registry_is_empty_memory() {
    let mesh = Mesh::builder().service("s").build().await.unwrap();
    assert_eq!(mesh.snapshot().revision(), 0);
    assert!(mesh.snapshot().routes().is_empty());
    assert_eq!(mesh.registry_status().backend, "memory");
}
