//! The response future every policy stage returns: the inner service's
//! future (with response headers to add), a response the stage answered
//! with itself, or, on the rare paths that must wait (a JWKS refetch, a
//! Redis round trip), a boxed future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Response};
use mesh_core::MeshError;
use pin_project_lite::pin_project;

use crate::body::MeshBody;

/// Headers a stage adds to the inner service's response.
pub(crate) trait AddHeaders {
    fn add_to(self, headers: &mut HeaderMap);
}

/// No headers.
impl AddHeaders for () {
    fn add_to(self, _: &mut HeaderMap) {}
}

pub(crate) type BoxFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<MeshBody<B>>, E>> + Send>>;

pin_project! {
    /// Response future of a policy stage.
    pub struct StageFuture<F, B, E, H = ()> {
        #[pin]
        kind: Kind<F, B, E, H>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E, H> {
        Inner { #[pin] future: F, headers: Option<H> },
        // Boxed: an inline response would make every stage's future (and
        // each move of it) as large as a response, for the rare answer.
        Ready { response: Option<Box<Response<Bytes>>> },
        Boxed { future: BoxFuture<B, E> },
    }
}

impl<F, B, E, H> StageFuture<F, B, E, H> {
    /// The inner service's response, with `headers` added.
    pub(crate) fn inner(future: F, headers: Option<H>) -> Self {
        StageFuture {
            kind: Kind::Inner { future, headers },
        }
    }

    /// A response the stage answered with (an error, usually).
    pub(crate) fn ready(response: Response<Bytes>) -> Self {
        Self::ready_boxed(Box::new(response))
    }

    /// [`ready`](Self::ready), boxed already.
    pub(crate) fn ready_boxed(response: Box<Response<Bytes>>) -> Self {
        StageFuture {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    /// A path that has to wait for something first.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn boxed(future: BoxFuture<B, E>) -> Self {
        StageFuture {
            kind: Kind::Boxed { future },
        }
    }
}

impl<F, B, E, H> Future for StageFuture<F, B, E, H>
where
    F: Future<Output = Result<Response<B>, E>>,
    H: AddHeaders,
{
    type Output = Result<Response<MeshBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, headers } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(h) = headers.take() {
                    h.add_to(res.headers_mut());
                }
                Poll::Ready(Ok(res.map(MeshBody::inner)))
            }
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .map(|r| *r)
                // Polled after completion: a 500 rather than a panic.
                .unwrap_or_else(|| MeshError::Internal.to_response(false))
                .map(MeshBody::full))),
            KindProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
