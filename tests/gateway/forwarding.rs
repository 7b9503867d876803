//! Hop-by-hop headers stay on their hop, both ways; this hop is appended
//! to `X-Forwarded-For` and `Forwarded`.

use crate::support::{API_KEY, edge, get, raw};

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let edge = edge("").await;
    let resp = raw(
        edge.gw,
        &get(
            "/public/h?q=1",
            &[
                "Connection: x-secret, keep-alive",
                "X-Secret: 1",
                "Keep-Alive: timeout=5, max=100",
                "Proxy-Connection: keep-alive",
                "Proxy-Authorization: Basic Zm9vOmJhcg==",
                "Upgrade: websocket",
                "TE: trailers, deflate",
                "Trailer: x-checksum",
                "X-Forwarded-For: 1.2.3.4",
                "Forwarded: for=1.2.3.4;proto=https",
                "X-Forwarded-Proto: https",
                "X-Forwarded-Host: spoofed.example",
                "X-Kept: yes",
                "Authorization: Bearer end-to-end",
            ],
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = edge.public.only();
    assert_eq!(seen.target, "/public/h?q=1");
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
        "trailer",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header_all("te"), ["trailers"]);
    assert_eq!(seen.header_all("x-forwarded-for"), ["1.2.3.4, 127.0.0.1"]);
    assert_eq!(
        seen.header_all("forwarded"),
        ["for=1.2.3.4;proto=https, for=127.0.0.1;proto=http;host=gw.test"]
    );
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["gw.test"]);
    assert_eq!(seen.header_all("host"), ["gw.test"]);
    assert_eq!(seen.header_all("x-kept"), ["yes"]);
    assert_eq!(seen.header_all("authorization"), ["Bearer end-to-end"]);
}

#[tokio::test]
async fn forwarding_headers_are_added_when_absent_and_joined_across_lines() {
    let edge = edge("").await;
    raw(edge.gw, &get("/public/a", &[])).await;
    let seen = edge.public.only();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        seen.header_all("forwarded"),
        ["for=127.0.0.1;proto=http;host=gw.test"]
    );

    edge.public.clear();
    raw(
        edge.gw,
        &get(
            "/public/b",
            &[
                "X-Forwarded-For: 1.2.3.4",
                "X-Forwarded-For: 5.6.7.8, 9.9.9.9",
            ],
        ),
    )
    .await;
    let seen = edge.public.only();
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        ["1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1"]
    );
}

/// A header named in `Connection` is removed even when it is one the
/// gateway itself needs further on: the API key is consumed by this hop.
#[tokio::test]
async fn connection_can_nominate_any_header() {
    let edge = edge("").await;
    let key = format!("x-api-key: {API_KEY}");
    let resp = raw(edge.gw, &get("/admin/x", &["Connection: x-api-key", &key])).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(edge.admin.count(), 0);
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_passed_to_the_client() {
    let edge = edge("").await;
    // The upstream does send them (its server does not strip them).
    let direct = raw(edge.public.addr, &get("/public/hop-response", &[])).await;
    for name in ["keep-alive", "proxy-authenticate", "x-up", "trailer"] {
        assert!(direct.header(name).is_some(), "{name}: {direct:?}");
    }
    assert_eq!(direct.header("connection"), Some("x-up"));

    let resp = raw(edge.gw, &get("/public/hop-response", &[])).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "public");
    for name in [
        "keep-alive",
        "proxy-authenticate",
        "x-up",
        "trailer",
        "connection",
    ] {
        assert_eq!(resp.header(name), None, "{name}: {resp:?}");
    }
    assert_eq!(resp.header("x-kept"), Some("yes"));
}

/// Naming the framing headers in `Connection` removes them from the
/// forwarded request, but the body was framed on arrival and is re-framed
/// on the way out (by its size hint, or chunked): the upstream receives it
/// intact.
#[tokio::test]
async fn connection_naming_content_length_does_not_break_the_body() {
    let edge = edge("").await;
    let resp = raw(
        edge.gw,
        b"POST /public/cl HTTP/1.1\r\nHost: gw.test\r\nConnection: content-length, host\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = edge.public.only();
    assert_eq!(seen.body().as_ref(), b"hello");
    let framing = (
        seen.header_all("content-length"),
        seen.header_all("transfer-encoding"),
    );
    assert!(
        framing == (vec!["5".to_owned()], vec![])
            || framing == (vec![], vec!["chunked".to_owned()]),
        "{framing:?}"
    );
    assert_eq!(seen.header_all("x-forwarded-host"), ["gw.test"]);
}
