//! The server the load script drives: one hello handler, served bare or
//! behind apimesh's inbound layer. Not a demo; see `scripts/loadtest.sh`.
//!
//! ```text
//! bench_server --mode bare|mesh [--listen 127.0.0.1:8080] [--routes 100]
//! ```
//!
//! In `mesh` mode the registry holds `--routes` routes (templates, exact
//! paths and prefixes) and the request matches the last template route, so
//! the whole route table is in play.

use std::sync::Arc;

use apimesh::{LiveSnapshot, MatchedRoute, Snapshot, Unmatched};
use axum::routing::get;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut mode = "bare".to_owned();
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut routes: usize = 100;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mode" => mode = value,
            "--listen" => listen = value,
            "--routes" => routes = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let routes = routes.max(1);

    let app = axum::Router::new().route("/svc/{n}/items/{id}", get(|| async { "hello" }));
    let app = match mode.as_str() {
        "bare" => app,
        "mesh" => {
            let snapshot = Snapshot::from_toml(&config(routes), 1)?;
            let live = LiveSnapshot::fixed(Arc::new(snapshot));
            axum::Router::new()
                .route(
                    "/svc/{n}/items/{id}",
                    get(|m: MatchedRoute| async move {
                        std::hint::black_box(m.revision());
                        "hello"
                    }),
                )
                .layer(apimesh::InboundLayer::new(live).unmatched(Unmatched::NotFound))
        }
        other => return Err(format!("unknown mode {other} (use bare or mesh)").into()),
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("bench_server ({mode}) on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// `n` routes; the hello URL `/svc/<last>/items/1` matches the last template.
fn config(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let m = match i % 3 {
            0 => format!(r#"{{ path_template = "/svc/{i}/items/{{id}}", methods = ["GET"] }}"#),
            1 => format!(r#"{{ path = "/svc/{i}/health" }}"#),
            _ => format!(r#"{{ path_prefix = "/svc/{i}/static" }}"#),
        };
        s.push_str(&format!("[[routes]]\nid = \"r{i}\"\nmatch = {m}\n\n"));
    }
    s
}
