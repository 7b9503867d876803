//! The admin router: JSON endpoints for operators.
//!
//! | route | answers |
//! |---|---|
//! | `GET /mesh/health` | `{"status":"ok","revision":N,"registry":{…}}` |
//! | `GET /mesh/config` | the live revision, the config as JSON with secrets redacted, and the registry status |
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
