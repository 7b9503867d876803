//! The admin router: JSON endpoints for operators.
//!
//! | route | answers |
//! |---|---|
//! | `GET /mesh/health` | `{"status":"ok","revision":N,"registry":{…}}` |
//! | `GET /mesh/config` | the live revision, the config as JSON with secrets redacted, and the registry status |
//! | `GET /mesh/catalog` | every API: owner, description, docs, versions with their lifecycle, and the routes that serve each |
//! | `GET /mesh/catalog/{api}/{version}/openapi` | the OpenAPI document registered for that version (inline or from its file) |
//!
//! Serve it on a separate, loopback-only listener; later versions add
//! metrics, the catalog and the dashboard here.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use mesh_core::{MeshError, RegistryStatus};
use serde_json::json;
use tokio::sync::watch;

use crate::LiveSnapshot;

#[derive(Clone)]
struct AdminState {
    live: LiveSnapshot,
    status: watch::Receiver<RegistryStatus>,
    service: std::sync::Arc<str>,
}

/// Builds the admin router for a service named `service`.
pub fn router(
    service: &str,
    live: LiveSnapshot,
    status: watch::Receiver<RegistryStatus>,
) -> axum::Router {
    axum::Router::new()
        .route("/mesh/health", get(health))
        .route("/mesh/config", get(config))
        .route("/mesh/catalog", get(catalog))
        .route("/mesh/catalog/{api}/{version}/openapi", get(openapi))
        .with_state(AdminState {
            live,
            status,
            service: service.into(),
        })
}

async fn health(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let snapshot = s.live.load();
    let registry = s.status.borrow().clone();
    Json(json!({
        "status": "ok",
        "service": &*s.service,
        "revision": snapshot.revision(),
        "registry": registry,
    }))
}

async fn config(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let snapshot = s.live.load();
    let registry = s.status.borrow().clone();
    Json(json!({
        "service": &*s.service,
        "revision": snapshot.revision(),
        "config": snapshot.config().redacted(),
        "registry": registry,
    }))
}

async fn catalog(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let snapshot = s.live.load();
    let apis: Vec<_> = snapshot
        .config()
        .apis
        .iter()
        .map(|api| {
            let versions: Vec<_> = api
                .versions
                .iter()
                .map(|v| {
                    let routes: Vec<&str> = snapshot
                        .routes()
                        .iter()
                        .filter(|r| r.api() == Some(&api.name) && r.version() == Some(&v.version))
                        .map(|r| r.id())
                        .collect();
                    json!({
                        "version": v.version,
                        "status": v.status,
                        "deprecated_at": v.deprecated_at,
                        "sunset": v.sunset,
                        "successor": v.successor,
                        "openapi": v.openapi.is_some(),
                        "routes": routes,
                    })
                })
                .collect();
            let unversioned: Vec<&str> = snapshot
                .routes()
                .iter()
                .filter(|r| r.api() == Some(&api.name) && r.version().is_none())
                .map(|r| r.id())
                .collect();
            json!({
                "name": api.name,
                "owner": api.owner,
                "description": api.description,
                "docs": api.docs,
                "versions": versions,
                "routes": unversioned,
            })
        })
        .collect();
    Json(json!({ "revision": snapshot.revision(), "apis": apis }))
}

async fn openapi(
    State(s): State<AdminState>,
    axum::extract::Path((api, version)): axum::extract::Path<(String, String)>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use mesh_core::config::OpenApiSpec;
    let snapshot = s.live.load();
    let spec = snapshot
        .api(&api)
        .and_then(|a| a.versions.iter().find(|v| v.version == version))
        .and_then(|v| v.openapi.clone());
    let not_found = |detail: String| {
        (
            [(http::header::CONTENT_TYPE, "application/problem+json")],
            json!({
                "type": "https://apimesh.dev/problems/not-found",
                "title": "Not Found",
                "status": 404,
                "detail": detail,
            })
            .to_string(),
        )
            .into_response()
    };
    let text = match spec {
        Some(OpenApiSpec::Inline(text)) => text,
        Some(OpenApiSpec::File(path)) => match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot read an OpenAPI document");
                return (
                    http::StatusCode::NOT_FOUND,
                    not_found(format!(
                        "the OpenAPI document of {api} {version} cannot be read"
                    )),
                )
                    .into_response();
            }
        },
        _ => {
            return (
                http::StatusCode::NOT_FOUND,
                not_found(format!(
                    "no OpenAPI document is registered for {api} {version}"
                )),
            )
                .into_response();
        }
    };
    // JSON documents are served as JSON, anything else as YAML.
    let content_type = if text.trim_start().starts_with('{') {
        "application/json"
    } else {
        "application/yaml"
    };
    ([(http::header::CONTENT_TYPE, content_type)], text).into_response()
}

/// Requires `Authorization: Bearer <token>` on every route of `router`
/// (401 with a problem body otherwise). Tokens are compared by their
/// SHA-256 digests, so the comparison leaks nothing about the token.
pub fn require_bearer(router: axum::Router, token: &str) -> axum::Router {
    let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let want: Arc<[u8]> = want.as_ref().into();
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let want = want.clone();
            async move {
                let given = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .map(|t| {
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.trim().as_bytes())
                    });
                match given {
                    Some(d) if d.as_ref() == &*want => next.run(req).await,
                    _ => {
                        let e = MeshError::Unauthenticated {
                            bearer_error: Some("invalid_token"),
                            challenge: Some("Bearer realm=\"apimesh-admin\"".into()),
                            detail: "the admin API needs its bearer token".into(),
                        };
                        e.to_problem_response().map(axum::body::Body::from)
                    }
                }
            }
        },
    ))
}

/// The dashboard page: one self-contained HTML document (styles and
/// scripts inline, no CDN), polling `GET /mesh/stats`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// `GET /mesh/dashboard`: the page. It holds no data, so it can be served
/// without the admin token (a browser cannot send one for a page it
/// opens); its script reads `GET /mesh/stats`, sending the token it finds
/// in the page's fragment (`/mesh/dashboard#token=…`).
pub fn dashboard_page() -> axum::Router {
    axum::Router::new().route(
        "/mesh/dashboard",
        get(|| async {
            (
                [
                    (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (http::header::CACHE_CONTROL, "no-store"),
                    (
                        http::header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                         connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                    ),
                    (http::header::REFERRER_POLICY, "no-referrer"),
                ],
                DASHBOARD_HTML,
            )
        }),
    )
}

/// `GET /mesh/stats`: the dashboard's data (per route time series, traffic
/// per version, top consumers, breakers, endpoints by zone, the registry
/// revision), from `stats` and `extra`, a function giving the JSON the mesh
/// adds (breakers, endpoints, registry). The page is [`dashboard_page`].
pub fn dashboard_router(
    stats: crate::observe::Stats,
    extra: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
) -> axum::Router {
    axum::Router::new().route(
        "/mesh/stats",
        get(move |q: axum::extract::Query<StatsQuery>| {
            let (stats, extra) = (stats.clone(), extra.clone());
            async move {
                let seconds = q.seconds.unwrap_or(120).clamp(1, 300);
                let mut out = json!({
                    "now": std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    "routes": stats.routes(seconds),
                    "versions": stats.versions().into_iter().map(|(api, version, requests)| {
                        json!({ "api": api, "version": version, "requests": requests })
                    }).collect::<Vec<_>>(),
                    "consumers": stats.top_consumers(10).into_iter().map(|(consumer, requests)| {
                        json!({ "consumer": consumer, "requests": requests })
                    }).collect::<Vec<_>>(),
                });
                if let (Some(o), serde_json::Value::Object(more)) = (out.as_object_mut(), extra()) {
                    o.extend(more);
                }
                Json(out)
            }
        }),
    )
}

/// Query of `GET /mesh/stats`.
#[derive(Debug, serde::Deserialize)]
pub struct StatsQuery {
    /// Seconds of history (default 120, at most 300).
    pub seconds: Option<usize>,
}
