//! [`GatewayLayer`]: the edge gateway's front stage, before route matching.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body::Body;
use http_body_util::Limited;
use mesh_core::{MeshError, is_grpc};
use tower_layer::Layer;
use tower_service::Service;

use super::headers::only_chunked;
use super::{
    EncodedSlashes, PathPolicy, Semicolons, append_forwarded, check_framing,
    normalize_path_and_query, remove_hop_by_hop,
};
use crate::LiveSnapshot;
use crate::body::MeshBody;
use crate::future::{AddHeaders, StageFuture};

/// The front stage of the edge gateway, placed before `mesh.inbound()`:
///
/// 1. refuses HTTP/1 requests whose framing two parsers could read
///    differently (400, see [`check_framing`]), and those with a transfer
///    coding other than `chunked` (400: it would not be decoded, and
///    `Transfer-Encoding` is not forwarded);
/// 2. normalises the path per `[gateway]` (400 for what the policy
///    refuses), so routes are matched on, and the upstream receives, one
///    spelling of it;
/// 3. refuses a declared `Content-Length` above `gateway.max_body` (413)
///    and caps streamed bodies at it (the forward then answers 413);
/// 4. removes hop-by-hop headers and appends this hop to
///    `X-Forwarded-For` and `Forwarded`;
/// 5. removes hop-by-hop headers from the response.
#[derive(Debug, Clone)]
pub struct GatewayLayer {
    live: LiveSnapshot,
    proto: &'static str,
}

impl GatewayLayer {
    /// A front stage reading `[gateway]` from `live`.
    pub fn new(live: LiveSnapshot) -> GatewayLayer {
        GatewayLayer {
            live,
            proto: "http",
        }
    }

    /// The scheme clients used, for `X-Forwarded-Proto` (default `http`).
    pub fn proto(mut self, proto: &'static str) -> GatewayLayer {
        self.proto = proto;
        self
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = Gateway<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gateway {
            inner,
            live: self.live.clone(),
            proto: self.proto,
        }
    }
}

/// The service made by [`GatewayLayer`].
#[derive(Debug, Clone)]
pub struct Gateway<S> {
    inner: S,
    live: LiveSnapshot,
    proto: &'static str,
}

/// Strips hop-by-hop headers from the upstream's response.
#[derive(Debug)]
pub struct StripHopByHop;

impl AddHeaders for StripHopByHop {
    fn add_to(self, headers: &mut HeaderMap) {
        remove_hop_by_hop(headers);
    }
}

impl<S, B, RB> Service<Request<B>> for Gateway<S>
where
    S: Service<Request<Limited<B>>, Response = Response<RB>>,
    B: Body<Data = Bytes>,
{
    type Response = Response<MeshBody<RB>>;
    type Error = S::Error;
    type Future = StageFuture<S::Future, RB, S::Error, StripHopByHop>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let snapshot = self.live.load();
        let policy = *snapshot.gateway();
        let grpc = is_grpc(req.headers());
        let reject = |e: MeshError| StageFuture::ready(e.to_response(grpc));
        if req.version() <= Version::HTTP_11 {
            if let Err(e) = check_framing(req.headers()) {
                return reject(MeshError::BadRequest {
                    detail: e.to_string(),
                });
            }
            if !only_chunked(req.headers()) {
                return reject(MeshError::BadRequest {
                    detail: "transfer codings other than 'chunked' are not supported".into(),
                });
            }
        }
        let path_policy = PathPolicy::new()
            .encoded_slashes(if policy.keep_encoded_slashes {
                EncodedSlashes::Keep
            } else {
                EncodedSlashes::Reject
            })
            .semicolons(if policy.allow_semicolons {
                Semicolons::Allow
            } else {
                Semicolons::Reject
            });
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        match normalize_path_and_query(target, &path_policy) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(normal)) => {
                let mut parts = req.uri().clone().into_parts();
                match normal.parse() {
                    Ok(pq) => parts.path_and_query = Some(pq),
                    Err(_) => {
                        return reject(MeshError::BadRequest {
                            detail: "the request target is not valid".into(),
                        });
                    }
                }
                match http::Uri::from_parts(parts) {
                    Ok(uri) => *req.uri_mut() = uri,
                    Err(_) => {
                        return reject(MeshError::BadRequest {
                            detail: "the request target is not valid".into(),
                        });
                    }
                }
            }
            Err(e) => {
                return reject(MeshError::BadRequest {
                    detail: e.to_string(),
                });
            }
        }
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        if declared.is_some_and(|n| n > policy.max_body) {
            return reject(MeshError::PayloadTooLarge {
                limit: policy.max_body,
            });
        }
        let host = req.headers().get(http::header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        });
        remove_hop_by_hop(req.headers_mut());
        if let Some(ip) = crate::ratelimit::client::peer(&req) {
            append_forwarded(req.headers_mut(), ip, self.proto, host.as_ref());
        }
        let limit = usize::try_from(policy.max_body).unwrap_or(usize::MAX);
        let req = req.map(|b| Limited::new(b, limit));
        StageFuture::inner(self.inner.call(req), Some(StripHopByHop))
    }
}
