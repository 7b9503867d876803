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

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use mesh_core::RegistryStatus;
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
