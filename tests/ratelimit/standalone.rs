//! The standalone `RateLimitLayer::builder()` on a plain axum router.

use apimesh::RateLimitLayer;
use apimesh::registry::MemoryRegistry;
use apimesh::{Mesh, Unmatched};

use crate::support::{self, assert_limited_with, assert_ok, assert_ok_with};

#[tokio::test]
async fn a_standalone_limit_by_ip() {
    let layer = RateLimitLayer::builder()
        .limit("2/h", None, &["ip"])
        .build()
        .unwrap();
    let addr = support::serve_with_connect_info(support::echo_router().layer(layer)).await;
    let client = support::client();
    let r = support::get_with(&client, addr, "/anything", &[]).await;
    assert_ok_with(&r, "\"limit-0\";r=1;t=1800");
    assert_eq!(r.policy(), "\"limit-0\";q=2;w=3600");
    assert_ok_with(
        &support::get_with(&client, addr, "/else/where", &[]).await,
        "\"limit-0\";r=0;t=3600",
    );
    let r = support::get_with(&client, addr, "/", &[]).await;
    assert_limited_with(
        &r,
        1_800,
        "\"limit-0\";r=0;t=1800",
        "rate limit 2/h exceeded",
    );
}

#[tokio::test]
async fn a_standalone_layer_honours_trusted_proxies_and_cost() {
    let layer = RateLimitLayer::builder()
        .limit("1/h", Some(4), &["ip"])
        .cost(2)
        .trusted_proxy("10.0.0.0/8")
        .build()
        .unwrap();
    let addr = support::serve(
        support::echo_router()
            .layer(layer)
            .layer(axum::middleware::map_request(support::peer_from_header)),
    )
    .await;
    let client = support::client();
    let from = |peer: &'static str, xff: &'static str| {
        let client = client.clone();
        async move {
            support::get_with(
                &client,
                addr,
                "/",
                &[("x-test-peer", peer), ("x-forwarded-for", xff)],
            )
            .await
        }
    };
    assert_ok_with(
        &from("10.0.0.1", "198.51.100.1").await,
        "\"limit-0\";r=2;t=7200",
    );
    assert_ok_with(
        &from("10.0.0.2", "198.51.100.1").await,
        "\"limit-0\";r=0;t=14400",
    );
    assert_eq!(from("10.0.0.1", "198.51.100.1").await.status, 429);
    assert_ok(&from("10.0.0.1", "198.51.100.2").await);
    // Untrusted: the peer is the client.
    assert_ok(&from("203.0.113.7", "198.51.100.3").await);
    assert_ok(&from("203.0.113.7", "198.51.100.4").await);
    assert_eq!(from("203.0.113.7", "198.51.100.5").await.status, 429);
}

#[test]
fn a_bad_rate_names_the_field() {
    let err = RateLimitLayer::builder()
        .limit("ten/s", None, &["ip"])
        .build()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("limits[0].rate"), "{msg}");
    assert!(msg.contains("`ten` is not a whole number"), "{msg}");
    let fields: Vec<String> = err.errors().into_iter().map(|e| e.path).collect();
    assert!(
        fields.iter().all(|p| p.ends_with("limits[0].rate")),
        "{fields:?}"
    );

    let err = RateLimitLayer::builder()
        .limit("10/s", Some(0), &["ip"])
        .limit("10/fortnight", None, &["ip"])
        .limit("10/s", None, &["cookie"])
        .trusted_proxy("not-a-net")
        .build()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("limits[0].burst: must be greater than 0"),
        "{msg}"
    );
    assert!(msg.contains("limits[1].rate"), "{msg}");
    assert!(msg.contains("limits[2].key[0]"), "{msg}");
    assert!(msg.contains("trusted_proxies[0]"), "{msg}");
}

/// A standalone layer behind `mesh.inbound()` must not replace the mesh's
/// `MatchedRoute` with its own internal route (`limit`, of a private
/// snapshot): the handler still sees the route the mesh matched.
#[tokio::test]
async fn a_standalone_layer_inside_the_mesh_leaves_the_matched_route_alone() {
    let registry = MemoryRegistry::from_toml(
        r#"
[[routes]]
id = "orders"
match = { path_prefix = "/orders" }
"#,
    )
    .unwrap();
    let mesh = Mesh::builder()
        .service("orders")
        .registry(registry)
        .unmatched(Unmatched::NotFound)
        .build()
        .await
        .unwrap();
    let standalone = RateLimitLayer::builder()
        .limit("100/h", None, &["ip"])
        .build()
        .unwrap();
    let router = support::echo_router()
        .layer(standalone)
        .layer(mesh.inbound());
    let addr = support::serve_with_connect_info(router).await;
    let r = support::get_with(&support::client(), addr, "/orders/1", &[]).await;
    assert_ok(&r);
    assert_eq!(r.ratelimit(), "\"limit-0\";r=99;t=36");
    assert_eq!(
        r.route(),
        "orders",
        "the handler saw the standalone layer's route"
    );
    drop(mesh);
}

#[tokio::test]
async fn headers_can_be_left_off_admitted_responses_but_never_off_refusals() {
    use std::convert::Infallible;
    use tower::{Layer, Service, ServiceExt};
    let layer = apimesh::RateLimitLayer::builder()
        .limit("2/h", None, &["route"])
        .headers(false)
        .build()
        .expect("layer");
    let mut svc = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    }));
    for _ in 0..2 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::get("/").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("ratelimit").is_none());
        assert!(res.headers().get("ratelimit-policy").is_none());
    }
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("ratelimit").is_some());
    assert!(res.headers().get("ratelimit-policy").is_some());
    assert!(res.headers().get("retry-after").is_some());
}
