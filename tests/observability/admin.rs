//! The admin API: JSON shapes, the bearer token, the loopback default and
//! the Prometheus exposition.

use apimesh::Mesh;
use apimesh::registry::MemoryRegistry;
use axum::routing::get;
use serde_json::Value;

use crate::support::{self, call, get_with, request};

/// Routes with an API version, a rate limit and a consumer; `inventory`
/// in two zones and `payments` (refusing connections) behind a breaker.
fn config(inventory: &str, payments: &str) -> String {
    format!(
        r#"
[[apis]]
name = "orders"
owner = "team-orders"
versions = [{{ version = "v1", status = "deprecated", sunset = "2099-01-01T00:00:00Z", successor = "v2" }}, {{ version = "v2" }}]

[[consumers]]
id = "demo"
api_keys = ["sha256:c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c"]

[[routes]]
id = "orders-v2"
api = "orders"
version = "v2"
match = {{ path_template = "/v2/orders/{{id}}" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ plan = false, limits = [{{ rate = "1000/s", key = ["route"] }}] }}

[[services]]
name = "inventory"
endpoints = [
  {{ id = "inv-a", address = "{inventory}", region = "eu", zone = "eu-1a" }},
  {{ id = "inv-b", address = "{inventory}", region = "eu", zone = "eu-1b", weight = 2 }},
]

[[services]]
name = "payments"
endpoints = [{{ id = "pay-a", address = "{payments}", region = "eu", zone = "eu-1b" }}]

[[routes]]
id = "to-payments"
match = {{ hosts = ["payments"], path_prefix = "/" }}
destinations = [{{ service = "payments" }}]
circuit_breaker = {{ failures = 2, open = "60s" }}
"#
    )
}

/// A mesh for `orders` with the config above and traffic: three requests
/// from `demo`, inventory calls, and payments calls that open its breaker.
pub(crate) async fn busy_mesh(
    builder: impl FnOnce(apimesh::MeshBuilder) -> apimesh::MeshBuilder,
) -> (Mesh, axum::Router) {
    let inventory = support::serve(axum::Router::new().fallback(|| async { "ok" })).await;
    let payments = support::refused_addr().await;
    let registry =
        MemoryRegistry::from_toml(&config(&inventory.to_string(), &payments.to_string())).unwrap();
    let mesh = builder(
        Mesh::builder()
            .service("orders")
            .registry(registry)
            .prometheus(false),
    )
    .build()
    .await
    .unwrap();
    let app = axum::Router::new()
        .route("/v2/orders/{id}", get(|| async { "an order" }))
        .layer(mesh.inbound());
    traffic(&mesh, &app).await;
    (mesh, app)
}

/// Three requests from `demo`, two inventory calls, three payments calls.
pub(crate) async fn traffic(mesh: &Mesh, app: &axum::Router) {
    for id in 0..3 {
        let r = call(
            app,
            request(
                "GET",
                &format!("/v2/orders/{id}"),
                &[("x-api-key", "demo-key")],
            ),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        let r = mesh.client("inventory").get("/stock").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..3 {
        assert!(mesh.client("payments").get("/pay").send().await.is_err());
    }
}

/// Panics unless `v` is an object with `fields` of these JSON types.
fn has(v: &Value, fields: &[(&str, &str)]) {
    for (name, kind) in fields {
        let f = v
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` in {v:#}"));
        let actual = match f {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        assert_eq!(actual, *kind, "`{name}` in {v:#}");
    }
}

#[tokio::test]
async fn admin_endpoints_have_their_json_shapes() {
    let (mesh, _app) = busy_mesh(|b| b).await;
    // Fold a second of traffic into the dashboard's series.
    mesh.stats().tick();
    let admin = support::serve(mesh.admin()).await;
    let json = |path: &'static str| async move {
        let r = support::get(admin, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(
            r.header("content-type").starts_with("application/json"),
            "{path}"
        );
        r.json()
    };

    let health = json("/mesh/health").await;
    has(
        &health,
        &[
            ("status", "string"),
            ("service", "string"),
            ("revision", "number"),
            ("registry", "object"),
        ],
    );
    assert_eq!(health["status"], "ok");
    has(
        &health["registry"],
        &[
            ("backend", "string"),
            ("applied", "number"),
            ("rejected", "number"),
        ],
    );

    let config = json("/mesh/config").await;
    has(
        &config,
        &[
            ("service", "string"),
            ("revision", "number"),
            ("config", "object"),
            ("registry", "object"),
        ],
    );
    assert_eq!(
        config["config"]["consumers"][0]["api_keys"][0],
        "[redacted]"
    );

    let catalog = json("/mesh/catalog").await;
    has(&catalog, &[("revision", "number"), ("apis", "array")]);
    let api = &catalog["apis"][0];
    has(
        api,
        &[
            ("name", "string"),
            ("owner", "string"),
            ("versions", "array"),
            ("routes", "array"),
        ],
    );
    let v1 = &api["versions"][0];
    has(
        v1,
        &[
            ("version", "string"),
            ("status", "string"),
            ("sunset", "string"),
            ("successor", "string"),
            ("routes", "array"),
        ],
    );
    assert_eq!(api["versions"][1]["routes"][0], "orders-v2");

    let endpoints = json("/mesh/endpoints").await;
    let list = endpoints["endpoints"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for e in list {
        has(
            e,
            &[
                ("service", "string"),
                ("id", "string"),
                ("address", "string"),
                ("region", "string"),
                ("zone", "string"),
                ("priority", "number"),
                ("weight", "number"),
                ("healthy", "bool"),
                ("in_flight", "number"),
                ("requests", "number"),
                ("consecutive_failures", "number"),
            ],
        );
    }
    let inv_b = list.iter().find(|e| e["id"] == "inv-b").unwrap();
    assert_eq!(
        (inv_b["zone"].as_str(), inv_b["weight"].as_u64()),
        (Some("eu-1b"), Some(2))
    );

    let circuits = json("/mesh/circuits").await;
    has(
        &circuits,
        &[
            ("breakers", "array"),
            ("bulkheads", "array"),
            ("ejected_endpoints", "array"),
            ("retry_budgets", "array"),
        ],
    );
    let breaker = &circuits["breakers"][0];
    has(
        breaker,
        &[
            ("route", "string"),
            ("service", "string"),
            ("status", "object"),
        ],
    );
    assert_eq!(breaker["service"], "payments");
    assert_eq!(breaker["status"]["state"], "open");

    let limits = json("/mesh/limits").await;
    has(&limits, &[("keys", "number"), ("revision", "number")]);
    assert!(limits["keys"].as_u64().unwrap() >= 1, "{limits}");

    let usage = json("/mesh/usage").await;
    let row = &usage["usage"][0];
    has(
        row,
        &[
            ("api", "string"),
            ("version", "string"),
            ("consumer", "string"),
            ("day", "string"),
            ("requests", "number"),
        ],
    );
    assert_eq!(
        (row["consumer"].as_str(), row["requests"].as_u64()),
        (Some("demo"), Some(3))
    );

    let stats = json("/mesh/stats").await;
    has(
        &stats,
        &[
            ("now", "number"),
            ("routes", "array"),
            ("versions", "array"),
            ("consumers", "array"),
            ("revision", "number"),
            ("registry", "object"),
            ("breakers", "array"),
            ("endpoints", "array"),
        ],
    );
    let route = &stats["routes"][0];
    has(
        route,
        &[
            ("route", "string"),
            ("label", "string"),
            ("total", "number"),
            ("errors", "number"),
            ("points", "array"),
        ],
    );
    assert_eq!(
        (route["route"].as_str(), route["total"].as_u64()),
        (Some("orders-v2"), Some(3))
    );
    has(
        &route["points"][0],
        &[
            ("t", "number"),
            ("requests", "number"),
            ("errors", "number"),
            ("p50_ms", "number"),
            ("p99_ms", "number"),
        ],
    );
    assert_eq!(
        stats["versions"][0],
        serde_json::json!({ "api": "orders", "version": "v2", "requests": 3 })
    );
    assert_eq!(
        stats["consumers"][0],
        serde_json::json!({ "consumer": "demo", "requests": 3 })
    );
    has(&stats["breakers"][0]["status"], &[("state", "string")]);
    assert_eq!(stats["endpoints"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_bearer_token_guards_every_admin_route() {
    let (mesh, _app) = busy_mesh(|b| b.admin_token("s3cret-admin-token")).await;
    let admin = support::serve(mesh.admin()).await;
    for path in [
        "/mesh/health",
        "/mesh/config",
        "/mesh/catalog",
        "/mesh/endpoints",
        "/mesh/circuits",
        "/mesh/limits",
        "/mesh/usage",
        "/mesh/stats",
        "/mesh/metrics",
    ] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic czNjcmV0LWFkbWluLXRva2Vu"),
            Some("Bearer s3cret-admin-token-"),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("authorization", a)).into_iter().collect();
            let r = get_with(admin, path, &headers).await;
            assert_eq!(r.status, 401, "{path} with {auth:?}");
            assert_eq!(
                r.header("content-type"),
                "application/problem+json",
                "{path}"
            );
            assert!(r.header("www-authenticate").starts_with("Bearer"), "{path}");
            assert_eq!(r.json()["status"], 401);
            assert!(!r.text().contains("s3cret"), "{path}: {}", r.text());
        }
        let r = get_with(
            admin,
            path,
            &[("authorization", "Bearer s3cret-admin-token")],
        )
        .await;
        // This mesh has no Prometheus recorder: /mesh/metrics says so.
        let want = if path == "/mesh/metrics" { 404 } else { 200 };
        assert_eq!(r.status, want, "{path}: {}", r.text());
    }
    // The dashboard page holds no data: it opens without the token (a
    // browser cannot send one for a page) and reads /mesh/stats with it.
    let page = support::get(admin, "/mesh/dashboard").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.header("content-security-policy")
            .contains("default-src 'none'")
    );
    assert!(page.text().contains("/mesh/stats"));
    assert!(!page.text().contains("s3cret"));
}

#[tokio::test]
async fn serve_admin_binds_loopback_only_unless_made_public() {
    let private = support::mesh("orders", "").await;
    let e = private
        .serve_admin("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("admin_public"), "{e}");
    let e = private
        .serve_admin("[::]:0".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);

    // Loopback serves (until dropped).
    let serving = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        private.serve_admin("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    assert!(serving.is_err(), "serve_admin returned: {serving:?}");

    let public = Mesh::builder()
        .service("orders")
        .admin_public(true)
        .admin_token("t")
        .prometheus(false)
        .build()
        .await
        .unwrap();
    let serving = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        public.serve_admin("0.0.0.0:0".parse().unwrap()),
    )
    .await;
    assert!(serving.is_err(), "serve_admin returned: {serving:?}");
}

/// The only test that installs the process's recorder: the Prometheus one
/// (the others record through their own, thread-local recorder).
#[tokio::test]
async fn prometheus_exposition_after_traffic() {
    let inventory = support::serve(axum::Router::new().fallback(|| async { "ok" })).await;
    let payments = support::refused_addr().await;
    let mesh = Mesh::builder()
        .service("orders")
        .registry(
            MemoryRegistry::from_toml(&config(&inventory.to_string(), &payments.to_string()))
                .unwrap(),
        )
        .prometheus(true)
        .build()
        .await
        .unwrap();
    let app = axum::Router::new()
        .route("/v2/orders/{id}", get(|| async { "an order" }))
        .layer(mesh.inbound());
    traffic(&mesh, &app).await;
    let admin = support::serve(mesh.admin()).await;
    let r = support::get(admin, "/mesh/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").starts_with("text/plain"));
    let text = r.text();
    for want in [
        "# TYPE http_server_request_duration histogram",
        r#"http_server_request_duration_bucket{http_route="/v2/orders/{id}",http_request_method="GET""#,
        r#"le="0.005""#,
        "http_server_request_duration_count{",
        "# TYPE http_client_request_duration histogram",
        r#"apimesh_destination="inventory""#,
        "apimesh_client_requests",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
}
