//! The server the load script drives: one hello handler, served bare or
//! behind apimesh's inbound layer. Not a demo; see `scripts/loadtest.sh`.
//!
//! ```text
//! bench_server --mode bare|mesh|mesh-jwt|mesh-limit|mesh-redis [--listen 127.0.0.1:8080]
//!              [--routes 100] [--redis redis://127.0.0.1:6379/]
//! bench_server --print-token
//! ```
//!
//! In `mesh` mode the registry holds `--routes` routes (templates, exact
//! paths and prefixes) and the request matches the last template route, so
//! the whole route table is in play. `mesh-jwt` also requires an RS256
//! bearer token on every route; `--print-token` prints one (valid for an
//! hour, signed with the benchmark key in `benches/keys/`). `mesh-limit`
//! puts a per-IP rate limit (never reached) on every route, counted in
//! process; `mesh-redis` counts it in Redis (build with `--features redis`).

use std::sync::Arc;

use apimesh::{LiveSnapshot, MatchedRoute, Snapshot, Unmatched};
use axum::routing::get;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut mode = "bare".to_owned();
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut routes: usize = 100;
    let mut redis_url = String::from("redis://127.0.0.1:6379/");
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--print-token") {
        println!("{}", token()?);
        return Ok(());
    }
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mode" => mode = value,
            "--listen" => listen = value,
            "--routes" => routes = value.parse()?,
            "--redis" => redis_url = value,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let routes = routes.max(1);

    let app = axum::Router::new().route("/svc/{n}/items/{id}", get(|| async { "hello" }));
    let app = match mode.as_str() {
        "bare" => app,
        "mesh" | "mesh-jwt" | "mesh-limit" | "mesh-redis" => {
            let limit = match mode.as_str() {
                "mesh-limit" => {
                    "rate_limit = { limits = [{ rate = \"1000000000/s\", key = [\"ip\"] }] }\n"
                }
                "mesh-redis" => {
                    "rate_limit = { limits = [{ rate = \"1000000000/s\", key = [\"ip\"] }], cluster = true, store_timeout = \"20ms\", on_store_failure = \"fail_closed\" }\n"
                }
                _ => "",
            };
            let snapshot = Snapshot::from_toml(&config(routes, mode == "mesh-jwt", limit)?, 1)?;
            let limits = apimesh::RateLimitLayer::from_routes();
            let limits = if mode == "mesh-redis" {
                redis(limits, &redis_url).await?
            } else {
                limits
            };
            let live = LiveSnapshot::fixed(Arc::new(snapshot));
            axum::Router::new()
                .route(
                    "/svc/{n}/items/{id}",
                    get(|m: MatchedRoute| async move {
                        std::hint::black_box(m.revision());
                        "hello"
                    }),
                )
                .layer(apimesh::MeshInboundLayer::new(
                    apimesh::InboundLayer::new(live).unmatched(Unmatched::NotFound),
                    apimesh::AuthLayer::from_routes(),
                    limits,
                ))
        }
        other => {
            return Err(format!(
                "unknown mode {other} (use bare, mesh, mesh-jwt, mesh-limit or mesh-redis)"
            )
            .into());
        }
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("bench_server ({mode}) on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await?;
    Ok(())
}

const ISSUER: &str = "https://idp.bench";

fn key(file: &str) -> std::io::Result<String> {
    std::fs::read_to_string(format!(
        "{}/benches/keys/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// An RS256 token the `mesh-jwt` mode accepts, valid for an hour.
fn token() -> Result<String, Box<dyn std::error::Error>> {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rs".into());
    let claims = serde_json::json!({ "iss": ISSUER, "aud": "bench", "sub": "load", "exp": exp });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key("rsa.key.pem")?.as_bytes())?;
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// `n` routes; the hello URL `/svc/<last>/items/1` matches the last template.
#[cfg(feature = "redis")]
async fn redis(
    limits: apimesh::RateLimitLayer,
    url: &str,
) -> Result<apimesh::RateLimitLayer, Box<dyn std::error::Error>> {
    let store = apimesh::layers::ratelimit::RedisStore::open(url)?;
    store.connect(std::time::Duration::from_secs(2)).await?;
    Ok(limits.with_redis(store))
}

#[cfg(not(feature = "redis"))]
async fn redis(
    _: apimesh::RateLimitLayer,
    _: &str,
) -> Result<apimesh::RateLimitLayer, Box<dyn std::error::Error>> {
    Err("mesh-redis needs `--features redis`".into())
}

fn config(n: usize, jwt: bool, limit: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut s = String::new();
    let auth = if jwt {
        s.push_str(&format!(
            "[auth]\nissuers = [{{ issuer = \"{ISSUER}\", audiences = [\"bench\"], algorithms = [\"RS256\"], keys = [{{ kid = \"rs\", algorithm = \"RS256\", pem = \"{}\" }}] }}]\n\n",
            key("rsa.pub.pem")?.replace('\n', "\\n")
        ));
        "auth = { require = [\"jwt\"] }\n"
    } else {
        ""
    };
    for i in 0..n {
        let m = match i % 3 {
            0 => format!(r#"{{ path_template = "/svc/{i}/items/{{id}}", methods = ["GET"] }}"#),
            1 => format!(r#"{{ path = "/svc/{i}/health" }}"#),
            _ => format!(r#"{{ path_prefix = "/svc/{i}/static" }}"#),
        };
        s.push_str(&format!(
            "[[routes]]\nid = \"r{i}\"\nmatch = {m}\n{auth}{limit}\n"
        ));
    }
    Ok(s)
}
