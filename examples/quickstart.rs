//! The quickest way to see apimesh work: an axum service behind
//! `mesh.inbound()`, its policy read from `examples/config/quickstart.toml`
//! (the embedded file registry, no etcd or Redis), and the admin router.
//!
//! ```text
//! cargo run --example quickstart
//! cargo run --example quickstart -- --listen 127.0.0.1:3000 --admin 127.0.0.1:9901 --config examples/config/quickstart.toml
//! ```
//!
//! Edit the config file while it runs: the next request is served by the
//! new revision; an invalid edit is rejected and the old one keeps serving.

use apimesh::registry::FileRegistry;
use apimesh::{MatchedRoute, Mesh, Principal, Unmatched};
use axum::Json;
use axum::extract::Path;
use axum::routing::get;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let mut listen = "127.0.0.1:3000".to_owned();
    let mut admin = "127.0.0.1:9901".to_owned();
    let mut config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/config/quickstart.toml"
    )
    .to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--admin" => admin = value,
            "--config" => config = value,
            other => {
                return Err(
                    format!("unknown flag {other} (use --listen, --admin, --config)").into(),
                );
            }
        }
    }

    let mesh = Mesh::builder()
        .service("orders")
        .registry(FileRegistry::watch(&config)?)
        .unmatched(Unmatched::NotFound)
        .build()
        .await?;

    let app = axum::Router::new()
        .route("/v1/orders/{id}", get(order_v1))
        .route("/v2/orders/{id}", get(order_v2))
        .route("/health", get(|| async { "ok" }))
        .layer(mesh.inbound());

    let app_listener = tokio::net::TcpListener::bind(&listen).await?;
    let admin_listener = tokio::net::TcpListener::bind(&admin).await?;
    let app_addr = app_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    println!("apimesh quickstart: service `orders`, config {config}");
    println!(
        "  try:  curl -i http://{app_addr}/v1/orders/42            (deprecated: Deprecation and Sunset headers)"
    );
    println!("        curl -i http://{app_addr}/v2/orders/42            (401: needs an API key)");
    println!("        curl -i -H 'x-api-key: demo-key' http://{app_addr}/v2/orders/42");
    println!("        curl -i http://{app_addr}/nope            (404 problem+json: no route)");
    println!("  admin: curl http://{admin_addr}/mesh/health");
    println!("         curl http://{admin_addr}/mesh/config");
    println!("         curl http://{admin_addr}/mesh/catalog");
    println!("         curl 'http://{admin_addr}/mesh/usage?api=orders'");

    let admin_router = mesh.admin();
    tokio::spawn(async move { axum::serve(admin_listener, admin_router).await });
    axum::serve(app_listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn order_v1(Path(id): Path<String>, route: MatchedRoute) -> Json<Value> {
    Json(json!({
        "id": id,
        "format": "v1",
        "route": route.route().id(),
        "revision": route.revision(),
    }))
}

async fn order_v2(Path(id): Path<String>, route: MatchedRoute, who: Principal) -> Json<Value> {
    Json(json!({
        "order": { "id": id, "status": "shipped" },
        "consumer": who.consumer(),
        "route": route.route().id(),
        "api": route.route().api(),
        "version": route.route().version(),
        "revision": route.revision(),
    }))
}
