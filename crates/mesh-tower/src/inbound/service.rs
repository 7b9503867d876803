use std::task::{Context, Poll};

use http::{Request, Response};
use mesh_core::{MeshError, is_grpc};
use tower_service::Service;

use super::{ResponseFuture, Unmatched};
use crate::body::MeshBody;
use crate::live::{LiveSnapshot, SnapshotCache};
use crate::route::MatchedRoute;

/// The service made by [`InboundLayer`](super::InboundLayer).
pub struct Inbound<S> {
    inner: S,
    cache: SnapshotCache,
    unmatched: Unmatched,
}

impl<S: Clone> Clone for Inbound<S> {
    fn clone(&self) -> Self {
        Inbound {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            unmatched: self.unmatched,
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Inbound<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("inner", &self.inner)
            .field("revision", &self.cache.arc_swap().load().revision())
            .field("unmatched", &self.unmatched)
            .finish()
    }
}

impl<S> Inbound<S> {
    /// Wraps `inner`, reading routes from `live`.
    pub fn new(inner: S, live: &LiveSnapshot, unmatched: Unmatched) -> Self {
        Inbound {
            inner,
            cache: live.cache(),
            unmatched,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Inbound<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<MeshBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let snapshot = self.cache.load();
        match MatchedRoute::find(snapshot, &req) {
            Some(matched) => {
                if let Some(o) = req
                    .extensions()
                    .get::<std::sync::Arc<crate::observe::Observed>>()
                {
                    o.set_route(&matched);
                }
                req.extensions_mut().insert(matched);
            }
            None => {
                if self.unmatched == Unmatched::NotFound {
                    let err = MeshError::RouteNotFound {
                        method: req.method().to_string(),
                        path: req.uri().path().to_owned(),
                    };
                    return ResponseFuture::ready(err.to_response(is_grpc(req.headers())));
                }
            }
        }
        ResponseFuture::inner(self.inner.call(req), None)
    }
}
