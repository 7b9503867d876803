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
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
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
            // hyper stops polling a body once it says it has ended (after
            // its last data frame, or trailers), so the `None` that would
            // end the copy may never come: end it with the last frame.
            let last = match ready {
                Some(Ok(frame)) => frame.is_trailers() || this.inner.is_end_stream(),
                _ => false,
            };
            let keep = match (msg, this.tx.as_ref()) {
                (Some(m), Some(tx)) => {
                    let end = matches!(m, Msg::End);
                    let sent = tx.try_send(m).is_ok();
                    if sent && last {
                        let _ = tx.try_send(Msg::End);
                    }
                    sent && !end && !last
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// Polls `body` as hyper does: frame by frame until it says it has
    /// ended, never asking for the final `None`.
    async fn drain_like_hyper<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Vec<Bytes>
    where
        B::Error: std::fmt::Debug,
    {
        let mut out = Vec::new();
        while !body.is_end_stream() {
            match body.frame().await {
                Some(Ok(f)) => out.extend(f.into_data().ok()),
                Some(Err(e)) => panic!("{e:?}"),
                None => break,
            }
        }
        out
    }

    #[tokio::test]
    async fn the_copy_ends_cleanly_when_the_real_body_is_not_polled_to_its_end() {
        // Regression: the copy of a one-frame body failed as "abandoned",
        // because hyper never polls past a body's last frame.
        let (real, shadow) = tee(Full::new(Bytes::from_static(b"order 1")));
        assert_eq!(
            drain_like_hyper(real).await,
            [Bytes::from_static(b"order 1")]
        );
        let copy = shadow.collect().await.unwrap().to_bytes();
        assert_eq!(copy, Bytes::from_static(b"order 1"));
    }

    #[tokio::test]
    async fn the_copy_fails_when_the_real_body_is_dropped_early() {
        let (real, shadow) = tee(Full::new(Bytes::from_static(b"order 1")));
        drop(real);
        assert!(shadow.collect().await.is_err());
    }
}
