//! API version lifecycle over real HTTP: deprecation headers, 410 after
//! retirement and during brown-outs (on a manual clock), gRPC, and the
//! catalog on the admin router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use apimesh::registry::MemoryRegistry;
use apimesh::{
    AuthLayer, InboundLayer, LiveSnapshot, Mesh, MeshInboundLayer, RateLimitLayer, Snapshot,
    Unmatched, VersionLayer,
};
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

// 2026-06-30T00:00:00Z and friends.
const DEPRECATED_AT: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const BROWNOUT_START: u64 = 1_780_272_000; // 2026-06-01T00:00:00Z
const BROWNOUT_END: u64 = 1_780_315_200; // 2026-06-01T12:00:00Z
const SUNSET: u64 = 1_782_777_600; // 2026-06-30T00:00:00Z

const CONFIG: &str = r#"
[[apis]]
name = "orders"
owner = "team-orders"
description = "Orders."
docs = "https://docs.example.com/orders"

[[apis.versions]]
version = "v1"
status = "deprecated"
deprecated_at = "2026-01-01T00:00:00Z"
sunset = "2026-06-30T00:00:00Z"
successor = "v2"
deprecation_link = "https://docs.example.com/orders/v1-deprecation"
successor_link = "https://api.example.com/v2/orders"
brownouts = [{ start = "2026-06-01T00:00:00Z", end = "2026-06-01T12:00:00Z" }]
openapi = { inline = '{"openapi":"3.1.0","info":{"title":"orders","version":"v1"}}' }

[[apis.versions]]
version = "v2"

[[apis.versions]]
version = "v0"
status = "retired"
successor = "v2"

[[routes]]
id = "orders-v0"
api = "orders"
version = "v0"
match = { path_prefix = "/v0/orders" }

[[routes]]
id = "orders-v1"
api = "orders"
version = "v1"
match = { path_prefix = "/v1/orders" }

[[routes]]
id = "orders-v2"
api = "orders"
version = "v2"
match = { path_prefix = "/v2/orders" }

[[routes]]
id = "echo"
api = "orders"
version = "v1"
match = { path = "/apimesh.echo.v1.Echo/Say" }
"#;

struct Clock(Arc<AtomicU64>);

impl Clock {
    fn set(&self, t: u64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

async fn app(now: u64) -> (SocketAddr, Clock) {
    let clock = Arc::new(AtomicU64::new(now));
    let c = clock.clone();
    let snapshot = Arc::new(Snapshot::from_toml(CONFIG, 1).unwrap());
    let chain = MeshInboundLayer::new(
        InboundLayer::new(LiveSnapshot::fixed(snapshot)).unmatched(Unmatched::NotFound),
        AuthLayer::from_routes(),
        RateLimitLayer::from_routes(),
    )
    .versions(VersionLayer::with_clock(Arc::new(move || {
        c.load(Ordering::SeqCst)
    })));
    let router = axum::Router::new()
        .route("/v0/orders", get(|| async { "v0" }))
        .route("/v1/orders", get(|| async { "v1" }))
        .route("/v2/orders", get(|| async { "v2" }))
        .layer(chain);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, Clock(clock))
}

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

async fn get_path(addr: SocketAddr, path: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let res = client
        .request(
            http::Request::get(format!("http://{addr}{path}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn all(h: &http::HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn deprecated_version_carries_rfc_headers_byte_exact() {
    let (addr, _clock) = app(DEPRECATED_AT + 86_400).await;
    let r = get_path(addr, "/v1/orders").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "v1");
    // RFC 9745: a Structured Field Date; RFC 8594: an IMF-fixdate.
    assert_eq!(all(&r.headers, "deprecation"), ["@1767225600"]);
    assert_eq!(all(&r.headers, "sunset"), ["Tue, 30 Jun 2026 00:00:00 GMT"]);
    // Both links in one field line (RFC 8288 §3).
    assert_eq!(
        all(&r.headers, "link"),
        [
            "<https://docs.example.com/orders/v1-deprecation>; rel=\"deprecation\", <https://api.example.com/v2/orders>; rel=\"successor-version\""
        ]
    );
}

#[tokio::test]
async fn active_versions_carry_no_lifecycle_headers() {
    let (addr, _clock) = app(DEPRECATED_AT).await;
    let r = get_path(addr, "/v2/orders").await;
    assert_eq!(r.status, 200);
    for h in ["deprecation", "sunset", "link"] {
        assert!(r.headers.get(h).is_none(), "{h} on an active version");
    }
}

#[tokio::test]
async fn retired_version_is_gone_and_names_its_successor() {
    let (addr, _clock) = app(DEPRECATED_AT).await;
    let r = get_path(addr, "/v0/orders").await;
    assert_eq!(r.status, 410);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        body["detail"],
        "API orders version v0 is retired; use version v2"
    );
    assert_eq!(body["type"], "https://apimesh.dev/problems/version-retired");
}

#[tokio::test]
async fn sunset_retires_exactly_at_the_boundary() {
    let (addr, clock) = app(SUNSET - 1).await;
    assert_eq!(get_path(addr, "/v1/orders").await.status, 200);
    clock.set(SUNSET);
    let r = get_path(addr, "/v1/orders").await;
    assert_eq!(r.status, 410);
    assert!(r.body.contains("is retired; use version v2"), "{}", r.body);
    // The headers still say why.
    assert_eq!(all(&r.headers, "sunset"), ["Tue, 30 Jun 2026 00:00:00 GMT"]);
}

#[tokio::test]
async fn brownouts_open_and_close() {
    let (addr, clock) = app(BROWNOUT_START - 1).await;
    assert_eq!(get_path(addr, "/v1/orders").await.status, 200);
    clock.set(BROWNOUT_START);
    let r = get_path(addr, "/v1/orders").await;
    assert_eq!(r.status, 410);
    assert!(r.body.contains("brown-out"), "{}", r.body);
    clock.set(BROWNOUT_END - 1);
    assert_eq!(get_path(addr, "/v1/orders").await.status, 410);
    clock.set(BROWNOUT_END);
    assert_eq!(get_path(addr, "/v1/orders").await.status, 200);
    // Other versions are never browned out.
    clock.set(BROWNOUT_START);
    assert_eq!(get_path(addr, "/v2/orders").await.status, 200);
}

#[tokio::test]
async fn retired_grpc_method_is_unimplemented() {
    let (addr, clock) = app(SUNSET + 1).await;
    let _ = &clock;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let res = client
        .request(
            http::Request::post(format!("http://{addr}/apimesh.echo.v1.Echo/Say"))
                .header("content-type", "application/grpc")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "12");
}

#[tokio::test]
async fn catalog_and_openapi_on_the_admin_router() {
    let mesh = Mesh::builder()
        .service("orders")
        .registry(MemoryRegistry::from_toml(CONFIG).unwrap())
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, mesh.admin()).await });

    let r = get_path(addr, "/mesh/catalog").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let api = &v["apis"][0];
    assert_eq!(api["name"], "orders");
    assert_eq!(api["owner"], "team-orders");
    assert_eq!(api["docs"], "https://docs.example.com/orders");
    let v1 = &api["versions"][0];
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["status"], "deprecated");
    assert_eq!(v1["sunset"], "2026-06-30T00:00:00Z");
    assert_eq!(v1["successor"], "v2");
    assert_eq!(v1["routes"], serde_json::json!(["orders-v1", "echo"]));
    assert_eq!(api["versions"][2]["status"], "retired");

    let r = get_path(addr, "/mesh/catalog/orders/v1/openapi").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.body,
        r#"{"openapi":"3.1.0","info":{"title":"orders","version":"v1"}}"#
    );
    let r = get_path(addr, "/mesh/catalog/orders/v2/openapi").await;
    assert_eq!(r.status, 404);
}

const RESOLVED: &str = r#"
[[apis]]
name = "orders"
versioning = { styles = ["path", "header", "media_type", "query"], header = "Api-Version", query = "version", strip_prefix = true, default = "v2" }

[[apis.versions]]
version = "v1"
status = "deprecated"
sunset = "2099-01-01T00:00:00Z"
successor = "v2"

[[apis.versions]]
version = "v2"

[[routes]]
id = "orders"
api = "orders"
match = { path_prefix = "/" }
"#;

/// The mesh wraps the whole router (not `Router::layer`, which runs after
/// axum's own routing), so a stripped `/v1` prefix reaches axum's router.
async fn resolving_app() -> SocketAddr {
    let mesh = Mesh::builder()
        .service("orders")
        .registry(MemoryRegistry::from_toml(RESOLVED).unwrap())
        .build()
        .await
        .unwrap();
    let inner = axum::Router::new().route(
        "/orders",
        get(|v: apimesh::ApiVersion, uri: http::Uri| async move {
            format!("{} {} {}", v.api(), v.version(), uri)
        }),
    );
    let app = axum::Router::new().fallback_service(tower::Layer::layer(&mesh.inbound(), inner));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _mesh = mesh;
        axum::serve(listener, app).await
    });
    addr
}

async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut b = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = client
        .request(b.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

#[tokio::test]
async fn each_resolution_style_and_the_default() {
    let addr = resolving_app().await;
    // Path, stripped before the service sees it; v1's lifecycle applies.
    let r = get_with(addr, "/v1/orders?x=1", &[]).await;
    assert_eq!(r.body, "orders v1 /orders?x=1");
    assert_eq!(all(&r.headers, "sunset"), ["Thu, 01 Jan 2099 00:00:00 GMT"]);
    // Header.
    let r = get_with(addr, "/orders", &[("api-version", "v1")]).await;
    assert_eq!(r.body, "orders v1 /orders");
    // Media-type parameter (`version=1` names `v1`).
    let r = get_with(
        addr,
        "/orders",
        &[("accept", "application/vnd.acme+json; version=1")],
    )
    .await;
    assert_eq!(r.body, "orders v1 /orders");
    // Query parameter.
    let r = get_with(addr, "/orders?version=v1", &[]).await;
    assert_eq!(r.body, "orders v1 /orders?version=v1");
    // The default; no lifecycle headers on v2.
    let r = get_with(addr, "/orders", &[]).await;
    assert_eq!(r.body, "orders v2 /orders");
    assert!(r.headers.get("sunset").is_none());
}

#[tokio::test]
async fn precedence_follows_the_configured_order() {
    let addr = resolving_app().await;
    // path before header
    let r = get_with(addr, "/v2/orders", &[("api-version", "v1")]).await;
    assert_eq!(r.body, "orders v2 /orders");
    // header before media type before query
    let r = get_with(
        addr,
        "/orders?version=v1",
        &[
            ("api-version", "v2"),
            ("accept", "application/json; version=1"),
        ],
    )
    .await;
    assert_eq!(r.body, "orders v2 /orders?version=v1");
    let r = get_with(
        addr,
        "/orders?version=v2",
        &[("accept", "application/json; version=1")],
    )
    .await;
    assert_eq!(r.body, "orders v1 /orders?version=v2");
}

#[tokio::test]
async fn an_unknown_version_is_a_400_listing_the_supported_ones() {
    let addr = resolving_app().await;
    for (path, headers) in [
        ("/orders", vec![("api-version", "v9")]),
        ("/orders?version=v9", vec![]),
        ("/orders", vec![("accept", "application/json; version=9")]),
    ] {
        let r = get_with(addr, path, &headers).await;
        assert_eq!(r.status, 400, "{path} {headers:?}");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .ends_with("of API orders; supported: v1, v2"),
            "{body}"
        );
    }
}

mod grpc {
    use apimesh::Mesh;
    use apimesh::registry::MemoryRegistry;
    use mesh_testproto::echo::echo_client::EchoClient;
    use mesh_testproto::echo::echo_server::{Echo, EchoServer};
    use mesh_testproto::echo::{SayReply, SayRequest};
    use tonic::{Code, Request, Response, Status};

    struct EchoService;

    #[tonic::async_trait]
    impl Echo for EchoService {
        async fn say(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
            let version = req
                .extensions()
                .get::<apimesh::ApiVersion>()
                .map(|v| v.version().to_owned())
                .unwrap_or_default();
            Ok(Response::new(SayReply {
                message: version,
                revision: 0,
            }))
        }
        async fn shout(&self, _req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
            Err(Status::unimplemented("not routed"))
        }
    }

    const CONFIG: &str = r#"
[[apis]]
name = "echo"
versioning = { styles = ["header"], header = "api-version", default = "v2" }
versions = [
  { version = "v1", status = "retired", successor = "v2" },
  { version = "v2" },
]

[[routes]]
id = "say"
api = "echo"
match = { path = "/apimesh.echo.v1.Echo/Say" }
"#;

    #[tokio::test]
    async fn version_from_metadata_and_retired_version_is_unimplemented() {
        let mesh = Mesh::builder()
            .service("echo")
            .registry(MemoryRegistry::from_toml(CONFIG).unwrap())
            .build()
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(mesh.inbound())
                .add_service(EchoServer::new(EchoService))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = EchoClient::new(channel);

        let reply = client
            .say(SayRequest {
                message: "hi".into(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "v2", "the default version");

        let mut req = tonic::Request::new(SayRequest {
            message: "hi".into(),
        });
        req.metadata_mut()
            .insert("api-version", "v1".parse().unwrap());
        let status = client.say(req).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(
            status.message(),
            "API echo version v1 is retired; use version v2"
        );
    }
}

#[tokio::test]
async fn per_version_handlers_on_one_path() {
    use apimesh::layers::version::PerVersion;
    let mesh = Mesh::builder()
        .service("orders")
        .registry(MemoryRegistry::from_toml(RESOLVED).unwrap())
        .build()
        .await
        .unwrap();
    let orders = PerVersion::new()
        .version("v1", get(|| async { "v1 handler" }))
        .version("v2", get(|| async { "v2 handler" }));
    let app = axum::Router::new()
        .route_service("/orders", orders)
        .layer(mesh.inbound());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _mesh = mesh;
        axum::serve(listener, app).await
    });
    assert_eq!(
        get_with(addr, "/orders", &[("api-version", "v1")])
            .await
            .body,
        "v1 handler"
    );
    assert_eq!(get_with(addr, "/orders", &[]).await.body, "v2 handler");
    assert_eq!(
        get_with(addr, "/orders?version=v1", &[]).await.body,
        "v1 handler"
    );
}

/// In the gateway, the resolved version picks the destination service
/// when the route names none.
#[tokio::test]
async fn in_the_gateway_the_version_picks_the_service() {
    async fn upstream(name: &'static str) -> SocketAddr {
        let app = axum::Router::new()
            .fallback(move |uri: http::Uri| async move { format!("{name} {uri}") });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }
    let (v1, v2) = (upstream("orders-v1").await, upstream("orders-v2").await);
    let config = format!(
        r#"
        [[services]]
        name = "orders-v1"
        endpoints = [{{ address = "{v1}" }}]

        [[services]]
        name = "orders-v2"
        endpoints = [{{ address = "{v2}" }}]

        [[apis]]
        name = "orders"
        versioning = {{ styles = ["header", "path"], default = "v2", strip_prefix = true }}
        versions = [
          {{ version = "v1", service = "orders-v1" }},
          {{ version = "v2", service = "orders-v2" }},
        ]

        [[routes]]
        id = "orders"
        api = "orders"
        match = {{ path_prefix = "/" }}
        "#
    );
    let mesh = Mesh::builder()
        .service("gateway")
        .registry(MemoryRegistry::from_toml(&config).unwrap())
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { mesh.serve_gateway(listener).await });

    let r = get_with(addr, "/orders/1", &[("api-version", "v1")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "orders-v1 /orders/1"));
    let r = get_with(addr, "/orders/1", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "orders-v2 /orders/1"));
    let r = get_with(addr, "/v1/orders/1", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("orders-v1 "), "{}", r.body);
}

#[test]
fn a_version_service_must_exist() {
    let err = apimesh::Snapshot::from_toml(
        r#"
        [[apis]]
        name = "orders"
        versions = [{ version = "v1", service = "nope" }]
        "#,
        1,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("apis[0].versions[0].service"),
        "{err}"
    );
}
