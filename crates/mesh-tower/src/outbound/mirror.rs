//! Traffic mirroring: the request body is teed to a shadow request frame by
//! frame; the shadow never slows the real request (a full channel drops the
//! copy, which then fails on its own) and its response is discarded.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::mpsc;

use super::BoxError;

/// Frames buffered for a slow shadow before its copy is abandoned.
const SHADOW_FRAMES: usize = 16;

enum Msg {
    Frame(Frame<Bytes>),
    End,
}

pin_project! {
    /// The real request's body, copying each frame to the shadow.
    pub(crate) struct Tee<B> {
        #[pin]
        inner: B,
        tx: Option<mpsc::Sender<Msg>>,
    }
}

/// The shadow request's body.
pub(crate) struct ShadowBody {
    rx: mpsc::Receiver<Msg>,
    done: bool,
}

/// Splits `body` into the real one and its shadow copy.
pub(crate) fn tee<B: Body>(body: B) -> (Tee<B>, ShadowBody) {
    let (tx, rx) = mpsc::channel(SHADOW_FRAMES);
    // An empty body may never be polled: end the copy now.
    let tx = if body.is_end_stream() {
        let _ = tx.try_send(Msg::End);
        None
    } else {
        Some(tx)
    };
    (Tee { inner: body, tx }, ShadowBody { rx, done: false })
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(ready) = &polled {
            let msg = match ready {
                Some(Ok(frame)) => match frame.data_ref() {
                    Some(d) => Some(Msg::Frame(Frame::data(d.clone()))),
                    None => frame
                        .trailers_ref()
                        .map(|t| Msg::Frame(Frame::trailers(t.clone()))),
                },
                Some(Err(_)) => None,
                None => Some(Msg::End),
            };
            let keep = match (msg, this.tx.as_ref()) {
                (Some(m), Some(tx)) => {
                    let end = matches!(m, Msg::End);
                    tx.try_send(m).is_ok() && !end
                }
                _ => false,
            };
            if !keep {
                // Full, closed, errored or finished: the copy gets no more.
                *this.tx = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Body for ShadowBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Msg::Frame(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(Some(Msg::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err("the mirrored body was abandoned".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
