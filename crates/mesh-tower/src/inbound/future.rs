use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use mesh_core::MeshError;
use pin_project_lite::pin_project;

use crate::body::{MeshBody, error_response};

pin_project! {
    /// Response future of [`Inbound`](super::Inbound).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Error { response: Option<Response<bytes::Bytes>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn error(err: &MeshError, grpc: bool) -> Self {
        ResponseFuture {
            kind: Kind::Error {
                response: Some(err.to_response(grpc)),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<MeshBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(res.map(MeshBody::inner)))
            }
            KindProj::Error { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r.map(MeshBody::full))),
                // Polled after completion: answer with a generic 500 rather than panic.
                None => Poll::Ready(Ok(error_response(&MeshError::Internal, false))),
            },
        }
    }
}
