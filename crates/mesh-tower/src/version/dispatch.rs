//! [`PerVersion`]: one path, a handler per API version.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use http::Request;
use mesh_core::MeshError;
use tower_service::Service;

use super::ApiVersion;

/// Routes a request to the handler of its resolved [`ApiVersion`], so one
/// axum app serves several versions of an API at one path.
///
/// ```
/// use axum::routing::get;
/// use mesh_tower::version::PerVersion;
///
/// let orders = PerVersion::new()
///     .version("v1", get(|| async { "order, v1 format" }))
///     .version("v2", get(|| async { "order, v2 format" }));
/// let app: axum::Router = axum::Router::new().route_service("/orders/{id}", orders);
/// ```
///
/// A request without an `ApiVersion` (no mesh in front, or a route that
/// names no API) or with a version that has no handler is answered 404 with
/// a problem body.
#[derive(Clone, Default)]
#[must_use]
pub struct PerVersion {
    handlers: Vec<(String, MethodRouter)>,
}

impl std::fmt::Debug for PerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerVersion")
            .field(
                "versions",
                &self.handlers.iter().map(|(v, _)| v).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl PerVersion {
    /// No handlers yet.
    pub fn new() -> PerVersion {
        PerVersion::default()
    }

    /// Serves `version` (e.g. `v2`) with `handler` (a `get(...)`,
    /// `post(...)`, … method router).
    pub fn version(mut self, version: impl Into<String>, handler: MethodRouter) -> Self {
        self.handlers.push((version.into(), handler));
        self
    }
}

impl Service<Request<Body>> for PerVersion {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Method routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let version = req
            .extensions()
            .get::<ApiVersion>()
            .map(|v| v.version().to_owned());
        let handler = version
            .as_deref()
            .and_then(|v| self.handlers.iter().find(|(name, _)| name == v))
            .map(|(_, h)| h.clone());
        match handler {
            Some(mut h) => Box::pin(async move { h.call(req).await }),
            None => {
                let detail = match version {
                    Some(v) => format!("version {v} has no handler here"),
                    None => "no API version was resolved for this request".to_owned(),
                };
                let res = MeshError::RouteNotFound {
                    method: req.method().to_string(),
                    path: format!("{} ({detail})", req.uri().path()),
                }
                .to_problem_response()
                .map(Body::from)
                .into_response();
                Box::pin(async move { Ok(res) })
            }
        }
    }
}
