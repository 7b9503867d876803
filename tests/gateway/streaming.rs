//! Bodies stream through the gateway both ways.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::{mpsc, oneshot};

use crate::support::{Conn, gateway, get, serve, upstream};

#[tokio::test]
async fn large_request_body_streams_to_the_upstream_intact() {
    const SIZE: usize = 5 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let up = upstream("up").await;
    let gw = gateway(&format!(
        r#"
        [gateway]
        max_body = "8MiB"

        [[services]]
        name = "up"
        endpoints = [{{ address = "{}" }}]

        [[routes]]
        id = "upload"
        match = {{ path_prefix = "/upload" }}
        destinations = [{{ service = "up" }}]
        "#,
        up.addr
    ))
    .await;

    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let mut conn = Conn::open(gw).await;
    conn.send(b"PUT /upload/blob HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for piece in data.chunks(CHUNK) {
        conn.send(format!("{:x}\r\n", piece.len()).as_bytes()).await;
        conn.send(piece).await;
        conn.send(b"\r\n").await;
    }
    conn.send(b"0\r\n\r\n").await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = up.only();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.body().len(), SIZE);
    assert!(seen.body().as_ref() == data.as_slice(), "the body changed");
}

/// A response body fed from a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn slow_response_reaches_the_client_chunk_by_chunk() {
    let (release, held) = oneshot::channel::<()>();
    let held = Arc::new(Mutex::new(Some(held)));
    let finished = Arc::new(AtomicBool::new(false));
    let (h, f) = (held.clone(), finished.clone());
    let app = axum::Router::new().fallback(move || {
        let (held, finished) = (h.lock().unwrap().take(), f.clone());
        async move {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"first-chunk;")).await.unwrap();
                if let Some(held) = held {
                    let _ = held.await;
                }
                tx.send(Bytes::from_static(b"second-chunk")).await.unwrap();
                finished.store(true, Ordering::SeqCst);
            });
            Body::new(ChannelBody(rx))
        }
    });
    let slow = serve(app).await;
    let gw = gateway(&format!(
        r#"
        [[services]]
        name = "slow"
        endpoints = [{{ address = "{slow}" }}]

        [[routes]]
        id = "slow"
        match = {{ path_prefix = "/slow" }}
        destinations = [{{ service = "slow" }}]
        "#
    ))
    .await;

    let mut conn = Conn::open(gw).await;
    conn.send(&get("/slow", &[])).await;
    assert!(conn.read_until(b"first-chunk;").await, "no first chunk");
    assert!(
        !finished.load(Ordering::SeqCst),
        "the upstream finished before the first chunk arrived"
    );
    release.send(()).unwrap();
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "first-chunk;second-chunk");
    assert!(finished.load(Ordering::SeqCst));
}
