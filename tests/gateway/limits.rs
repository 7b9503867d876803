//! `[gateway] max_body` and `max_header_size`.

use std::time::Duration;

use crate::support::{Conn, edge, gateway, get, raw, settle, upstream};

const LIMITS: &str = r#"
    max_body = "1KiB"
    max_header_size = "16KiB"
"#;

#[tokio::test]
async fn declared_content_length_over_the_cap_is_413_without_reaching_the_upstream() {
    let edge = edge(LIMITS).await;
    // Only the head is sent: the answer must not wait for the body.
    let resp = raw(
        edge.gw,
        b"POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2048\r\n\r\n",
    )
    .await;
    resp.assert_problem(413, "payload-too-large");
    settle().await;
    assert_eq!(edge.public.count(), 0);

    // At the cap exactly: forwarded.
    let mut req =
        b"POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1024\r\n\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 1024));
    let resp = raw(edge.gw, &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(edge.public.only().body().len(), 1024);
}

/// A chunked body has no declared length: it is forwarded as it streams
/// and cut off when it passes the cap. The upstream has already received
/// the head and the first KiB by then; it never receives a complete body.
#[tokio::test]
async fn streamed_body_over_the_cap_is_413_and_never_completes_upstream() {
    let edge = edge(LIMITS).await;
    let mut conn = Conn::open(edge.gw).await;
    conn.send(
        b"POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    let chunk = format!("100\r\n{}\r\n", "y".repeat(256));
    // 8 × 256 bytes; stop sending once the gateway has answered.
    for _ in 0..8 {
        conn.send(chunk.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conn.send(b"0\r\n\r\n").await;
    let resp = conn.response().await;
    resp.assert_problem(413, "payload-too-large");
    settle().await;
    for seen in edge.public.requests() {
        assert!(
            !matches!(seen.body, Some(Ok(_))),
            "the upstream received a complete body: {seen:?}"
        );
    }
}

#[tokio::test]
async fn request_head_over_max_header_size_is_431() {
    let edge = edge(LIMITS).await;
    let big = format!("X-Big: {}", "a".repeat(17 * 1024));
    let resp = raw(edge.gw, &get("/public/x", &[&big])).await;
    assert_eq!(resp.status, 431, "{}", resp.text());
    settle().await;
    assert_eq!(edge.public.count(), 0);

    // Under the limit (but over hyper's 8 KiB initial buffer): forwarded.
    let fine = format!("X-Big: {}", "a".repeat(12 * 1024));
    let resp = raw(edge.gw, &get("/public/x", &[&fine])).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(edge.public.only().header_all("x-big")[0].len(), 12 * 1024);
}

/// On a route with retries the body is buffered for replay before it is
/// sent; passing the cap while buffering is still a 413.
#[tokio::test]
async fn streamed_body_over_the_cap_is_413_on_a_route_with_retries() {
    let up = upstream("up").await;
    let gw = gateway(&format!(
        r#"
        [gateway]
        max_body = "1KiB"

        [[services]]
        name = "up"
        endpoints = [{{ address = "{}" }}]

        [[routes]]
        id = "retried"
        match = {{ path_prefix = "/retried" }}
        destinations = [{{ service = "up" }}]
        retry = {{}}
        "#,
        up.addr
    ))
    .await;
    let mut conn = Conn::open(gw).await;
    conn.send(b"PUT /retried/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    let chunk = format!("100\r\n{}\r\n", "y".repeat(256));
    for _ in 0..8 {
        conn.send(chunk.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conn.send(b"0\r\n\r\n").await;
    conn.response()
        .await
        .assert_problem(413, "payload-too-large");
    settle().await;
    assert_eq!(
        up.count(),
        0,
        "buffered bodies are not sent before they end"
    );

    // Within the cap: buffered, then sent whole.
    let mut req =
        b"PUT /retried/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(chunk.as_bytes());
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(gw, &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.only().body().len(), 256);
}
