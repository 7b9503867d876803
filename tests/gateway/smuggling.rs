//! Request smuggling: requests whose body length two parsers could read
//! differently are refused before anything reaches an upstream, and a
//! request hidden in a body is never read as a request.

use crate::support::{Conn, Edge, edge, settle};

/// A request for `/admin` hidden in the body of the requests below: if any
/// parser took the body's end earlier than the gateway, this would be the
/// next request on the connection.
const HIDDEN: &str = "GET /admin/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";

async fn assert_nothing_forwarded(edge: &Edge, what: &str) {
    settle().await;
    assert_eq!(edge.public.requests().len(), 0, "{what} reached public");
    assert_eq!(edge.admin.requests().len(), 0, "{what} reached admin");
}

/// Each is refused with 400: by hyper's parser (ambiguous lengths, a last
/// coding other than `chunked`, malformed field lines) or by the gateway's
/// own framing check (`chunked` applied twice, which hyper accepts).
#[tokio::test]
async fn ambiguous_framing_is_refused_with_400() {
    let edge = edge("").await;
    let chunked_body = format!("0\r\n\r\n{HIDDEN}");
    let cases: Vec<(&str, String)> = vec![
        (
            "two different Content-Length",
            format!(
                "Content-Length: 5\r\nContent-Length: {}\r\n\r\nhello{HIDDEN}",
                5 + HIDDEN.len()
            ),
        ),
        (
            "Content-Length list",
            format!("Content-Length: 5, 5\r\n\r\nhello{HIDDEN}"),
        ),
        (
            "signed Content-Length",
            format!("Content-Length: +5\r\n\r\nhello{HIDDEN}"),
        ),
        (
            "Transfer-Encoding: gzip",
            format!("Transfer-Encoding: gzip\r\n\r\n{chunked_body}"),
        ),
        (
            "chunked not last",
            format!("Transfer-Encoding: chunked, gzip\r\n\r\n{chunked_body}"),
        ),
        (
            "chunked line, then gzip line",
            format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n{chunked_body}"),
        ),
        (
            "Content-Length, then Transfer-Encoding: gzip",
            format!("Content-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n{chunked_body}"),
        ),
        (
            "chunked twice in one line",
            format!("Transfer-Encoding: chunked, chunked\r\n\r\n{chunked_body}"),
        ),
        (
            "chunked twice on two lines",
            format!(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}"
            ),
        ),
        (
            "space before the colon",
            format!("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello{HIDDEN}"),
        ),
        (
            "obs-fold",
            format!("Transfer-Encoding: gzip,\r\n chunked\r\n\r\n{chunked_body}"),
        ),
        (
            "xchunked",
            format!("Transfer-Encoding: xchunked\r\n\r\n{chunked_body}"),
        ),
    ];
    for (what, rest) in cases {
        let mut conn = Conn::open(edge.gw).await;
        conn.send(format!("POST /public/x HTTP/1.1\r\nHost: gw.test\r\n{rest}").as_bytes())
            .await;
        let resp = conn.response().await;
        assert_eq!(resp.status, 400, "{what}: {}", resp.text());
        assert_nothing_forwarded(&edge, what).await;
    }

    // Transfer-Encoding in HTTP/1.0.
    let mut conn = Conn::open(edge.gw).await;
    conn.send(
        format!("POST /public/x HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}")
            .as_bytes(),
    )
    .await;
    assert_eq!(conn.response().await.status, 400);
    assert_nothing_forwarded(&edge, "HTTP/1.0 Transfer-Encoding").await;
}

/// `Content-Length` together with `Transfer-Encoding: chunked` is not
/// refused: hyper's HTTP/1 server (which the gateway cannot see past)
/// drops the `Content-Length`, reads the body as chunked (RFC 9112 §6.3)
/// and closes the connection after the response. So the bytes after the
/// chunked body are never parsed as a request, and the upstream receives
/// one request, re-framed, without a `Content-Length`.
#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closed() {
    let edge = edge("").await;

    // CL.TE: the Content-Length covers the hidden request, chunked ends
    // before it.
    let body = format!("0\r\n\r\n{HIDDEN}");
    for head in [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked",
            body.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}",
            body.len()
        ),
    ] {
        edge.public.clear();
        let mut conn = Conn::open(edge.gw).await;
        conn.send(
            format!("POST /public/cl-te HTTP/1.1\r\nHost: gw.test\r\n{head}\r\n\r\n{body}")
                .as_bytes(),
        )
        .await;
        let resp = conn.response().await;
        // Either refused, or read as chunked (an empty body) and closed.
        if resp.status == 400 {
            assert_nothing_forwarded(&edge, &head).await;
            continue;
        }
        assert_eq!(resp.status, 200, "{head}: {}", resp.text());
        assert_eq!(resp.header("connection"), Some("close"), "{head}");
        assert!(
            !conn.read_until(b"HTTP/1.1").await,
            "{head}: a second response"
        );
        settle().await;
        let seen = edge.public.only();
        assert_eq!(seen.target, "/public/cl-te");
        assert_eq!(seen.body().as_ref(), b"", "{head}");
        assert!(
            !seen.headers.contains_key("content-length"),
            "{head}: {seen:?}"
        );
        assert_eq!(edge.admin.count(), 0, "{head}");
    }

    // TE.CL: the Content-Length stops inside the first chunk, whose data
    // is the hidden request.
    edge.public.clear();
    let chunk = format!("{:x}\r\n{HIDDEN}\r\n0\r\n\r\n", HIDDEN.len());
    let mut conn = Conn::open(edge.gw).await;
    conn.send(
        format!(
            "POST /public/te-cl HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
        )
        .as_bytes(),
    )
    .await;
    let resp = conn.response().await;
    if resp.status == 400 {
        assert_nothing_forwarded(&edge, "TE.CL").await;
    } else {
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(!conn.read_until(b"HTTP/1.1").await, "a second response");
        settle().await;
        let seen = edge.public.only();
        assert_eq!(seen.body().as_ref(), HIDDEN.as_bytes());
        assert!(!seen.headers.contains_key("content-length"), "{seen:?}");
        assert_eq!(edge.admin.count(), 0);
    }
}

/// Two equal `Content-Length` lines agree on the length; hyper keeps one.
/// Whatever the gateway does with them, the upstream never receives a
/// second request or a body other than the declared one.
#[tokio::test]
async fn equal_duplicate_content_lengths_cannot_smuggle() {
    let edge = edge("").await;
    let mut conn = Conn::open(edge.gw).await;
    conn.send(
        format!("POST /public/dup HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello{HIDDEN}")
            .as_bytes(),
    )
    .await;
    let resp = conn.response().await;
    settle().await;
    assert_eq!(edge.admin.count(), 0);
    match resp.status {
        400 => assert_eq!(edge.public.count(), 0),
        200 => {
            let seen = edge.public.only();
            assert_eq!(seen.body().as_ref(), b"hello");
            assert_eq!(seen.header_all("content-length"), ["5"]);
        }
        other => panic!("unexpected {other}: {}", resp.text()),
    }
}

/// hyper decodes `chunked` only, and `Transfer-Encoding` is hop-by-hop: a
/// `gzip, chunked` body would reach the upstream still gzip-coded but no
/// longer labelled so. The gateway refuses it instead.
#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    let edge = edge("").await;
    for te in [
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: deflate\r\nTransfer-Encoding: chunked",
    ] {
        let mut conn = Conn::open(edge.gw).await;
        conn.send(
            format!(
                "POST /public/gz HTTP/1.1\r\nHost: gw.test\r\n{te}\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        conn.response().await.assert_problem(400, "bad-request");
        assert_nothing_forwarded(&edge, te).await;
    }
}
