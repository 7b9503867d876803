//! The inbound layer: the front of every request a service receives.
//!
//! It reads the live snapshot (one atomic load through an
//! [`arc_swap::Cache`]), matches the request against the snapshot's compiled
//! route table once, and puts the result, a [`MatchedRoute`](crate::MatchedRoute)
//! pinning that snapshot, into the request's extensions for later layers and
//! handlers. A request that matches no route is passed through or answered
//! with a 404 problem (gRPC: `UNIMPLEMENTED`), as configured by [`Unmatched`].
//!
//! ```
//! use std::sync::Arc;
//! use mesh_core::Snapshot;
//! use mesh_tower::{InboundLayer, LiveSnapshot, MatchedRoute, Unmatched};
//!
//! let snapshot = Snapshot::from_toml(r#"
//!     [[routes]]
//!     id = "orders"
//!     match = { path_template = "/orders/{id}" }
//! "#, 1).unwrap();
//! let live = LiveSnapshot::fixed(Arc::new(snapshot));
//!
//! let app: axum::Router = axum::Router::new()
//!     .route("/orders/{id}", axum::routing::get(|m: MatchedRoute| async move {
//!         format!("route {} at revision {}", m.route().id(), m.revision())
//!     }))
//!     .layer(InboundLayer::new(live).unmatched(Unmatched::NotFound));
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{InboundLayer, MeshInboundLayer, Unmatched};
pub use service::Inbound;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use http::{Request, Response};
    use http_body_util::{BodyExt, Empty};
    use mesh_core::Snapshot;
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::{LiveSnapshot, MatchedRoute};

    fn live() -> LiveSnapshot {
        let snap = Snapshot::from_toml(
            r#"
            [[routes]]
            id = "a"
            match = { path = "/a" }
            "#,
            7,
        )
        .unwrap();
        LiveSnapshot::fixed(Arc::new(snap))
    }

    async fn echo_route(req: Request<()>) -> Result<Response<Empty<bytes::Bytes>>, Infallible> {
        let tag = req
            .extensions()
            .get::<MatchedRoute>()
            .map(|m| format!("{}@{}", m.route().id(), m.revision()))
            .unwrap_or_else(|| "none".into());
        Ok(Response::builder()
            .header("x-route", tag)
            .body(Empty::new())
            .unwrap())
    }

    #[tokio::test]
    async fn matched_request_carries_route_and_revision() {
        let svc = InboundLayer::new(live()).layer(service_fn(echo_route));
        let res = svc
            .oneshot(Request::get("/a").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.headers()["x-route"], "a@7");
    }

    #[tokio::test]
    async fn unmatched_grpc_request_gets_trailers_only_unimplemented() {
        let svc = InboundLayer::new(live())
            .unmatched(Unmatched::NotFound)
            .layer(service_fn(echo_route));
        let req = Request::post("/pkg.Svc/Method")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "12");
        assert!(
            res.headers().get("x-route").is_none(),
            "inner service must not run"
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn live_store_only_moves_forward() {
        let live = live();
        let older = Arc::new(Snapshot::from_toml("", 3).unwrap());
        assert!(!live.store(older));
        assert_eq!(live.load().revision(), 7);
        let newer = Arc::new(Snapshot::from_toml("", 8).unwrap());
        assert!(live.store(newer));
        let svc = InboundLayer::new(live).layer(service_fn(echo_route));
        let res = svc
            .oneshot(Request::get("/a").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.headers()["x-route"], "none");
    }
}
