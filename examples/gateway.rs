//! apimesh as an edge gateway: an HTTP reverse proxy run from a config
//! file alone. Inbound policies (auth, limits, versions) apply per route;
//! matched requests are forwarded to the route's destinations (weighted
//! splits, failover, mirroring, balancing) with hop-by-hop headers removed
//! and `X-Forwarded-For` / `Forwarded` appended; bodies stream both ways.
//!
//! ```text
//! cargo run --example gateway -- --demo
//! cargo run --example gateway -- --config examples/config/gateway.toml \
//!     --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 [--demo] [--region eu --zone eu-a]
//! ```
//!
//! `--demo` also starts the upstream services `examples/config/gateway.toml`
//! names (on 127.0.0.1:18081–18083), so one command shows it working:
//!
//! ```text
//! curl -i localhost:8080/catalog/books                      # public
//! curl -i localhost:8080/orders/42                          # 401
//! curl -i -H 'x-api-key: demo-key' localhost:8080/orders/42  # orders (or canary)
//! curl -i -H 'x-api-key: demo-key' -H 'x-canary: always' localhost:8080/orders/42
//! curl -s localhost:9901/mesh/endpoints
//! ```

use std::net::SocketAddr;

use apimesh::registry::FileRegistry;
use apimesh::{Mesh, Unmatched};
use axum::extract::Request;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let mut listen = "127.0.0.1:8080".to_owned();
    let mut admin = "127.0.0.1:9901".to_owned();
    let mut config =
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config/gateway.toml").to_owned();
    let (mut demo, mut region, mut zone) = (false, String::new(), String::new());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--demo" {
            demo = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--admin" => admin = value,
            "--config" => config = value,
            "--region" => region = value,
            "--zone" => zone = value,
            other => {
                return Err(format!(
                    "unknown flag {other} (use --config, --listen, --admin, --demo, --region, --zone)"
                )
                .into());
            }
        }
    }

    let registry = FileRegistry::watch(&config)?;
    let mesh = Mesh::builder()
        .service("gateway")
        .registry(registry)
        .unmatched(Unmatched::NotFound)
        .locality(region, zone)
        .build()
        .await?;
    if demo {
        for (name, port) in [
            ("catalog", 18081),
            ("orders", 18082),
            ("orders-canary", 18083),
        ] {
            demo_upstream(name, SocketAddr::from(([127, 0, 0, 1], port))).await?;
        }
    }

    let admin_listener = tokio::net::TcpListener::bind(&admin).await?;
    let admin_router = mesh.admin();
    tokio::spawn(async move { axum::serve(admin_listener, admin_router).await });

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, %admin, %config, "gateway listening");
    mesh.serve_gateway(listener).await?;
    Ok(())
}

/// An upstream that answers with what it received, so the demo shows what
/// the gateway forwards.
async fn demo_upstream(name: &'static str, addr: SocketAddr) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(move |req: Request| async move {
        let headers: serde_json::Map<_, _> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        axum::Json(json!({
            "service": name,
            "method": req.method().as_str(),
            "path": req.uri().to_string(),
            "headers": headers,
        }))
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}
