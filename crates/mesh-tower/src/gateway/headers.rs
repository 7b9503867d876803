//! The headers a reverse proxy must drop, add and check.
//!
//! # What hyper 1.x's HTTP/1 server already does
//!
//! Read in hyper 1.12.0, `src/proto/h1/role.rs` (`Server::parse`) unless
//! another file is named:
//!
//! - **Content-Length and Transfer-Encoding together** (role.rs 275-298,
//!   359-361): accepted. Transfer-Encoding wins (RFC 9112 §6.3): a
//!   Content-Length seen before it is removed from the map, one seen after
//!   it is never added, and keep-alive is turned off so the connection
//!   closes after the response. The service sees only `Transfer-Encoding`;
//!   it cannot tell that both were sent. Transfer-Encoding in an HTTP/1.0
//!   request is refused (280-283).
//! - **Transfer-Encoding not ending in `chunked`** (288-293, 354-357):
//!   refused. Only the *last* Transfer-Encoding line is looked at
//!   (`headers::is_chunked_`, `src/headers.rs` 159-168, takes the last
//!   coding of that line), so `chunked, chunked` passes.
//! - **Several Content-Length values** (295-314): different values are
//!   refused; equal ones on separate lines are accepted and only the first
//!   is kept in the map. A comma list (`5, 5`) is refused, since each value
//!   must be bare digits (`src/headers.rs` 101-126, `from_digits`, which
//!   also refuses a sign or spaces).
//! - Every refusal above is a `Parse::Header(..)` error, answered by hyper
//!   itself with `400 Bad Request` (`Server::on_error`, 493-511; written
//!   by `Conn::on_parse_error`, `src/proto/h1/conn.rs` 836-851) before the
//!   connection closes. The service is never called.
//! - **Headers larger than `max_buf_size`** (default 8 KiB + 400 KiB,
//!   `src/proto/h1/io.rs` 20-23; checked at 205-215): hyper answers
//!   `431 Request Header Fields Too Large` itself (`Parse::TooLarge`,
//!   role.rs 500) and closes; so it does past `max_header_size` when one is
//!   set (role.rs 183-187, io.rs 205-208), past `max_headers` fields
//!   (default 100; `httparse::Error::TooManyHeaders` maps to `TooLarge`,
//!   `src/error.rs` 661) and for a header name of 64 KiB or more (role.rs
//!   1588-1590). A request target over 65 534 bytes gets `414` (190-191).
//!   None of these reach the service.
//!
//! So behind hyper's HTTP/1 server [`check_framing`] never sees a conflict:
//! it is defence in depth for requests that come another way (another
//! server, a test, a rewritten request) and it states the rule the gateway
//! relies on. hyper's client re-frames what it sends anyway
//! (`Client::set_length`, role.rs 1352-1476): a `Transfer-Encoding` wins
//! over `Content-Length` and gets `chunked` appended when missing.

use std::fmt;
use std::net::IpAddr;

use http::header::{
    CONNECTION, CONTENT_LENGTH, FORWARDED, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, StatusCode};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers before a request or response is
/// forwarded.
///
/// Removed: `Connection`, `Keep-Alive`, `Proxy-Connection`,
/// `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`, and every header named by a token of any
/// `Connection` field (case-insensitive; tokens that are not header names
/// are ignored). If a `TE` field offered `trailers`, `te: trailers` is put
/// back: gRPC needs it, and a hyper server only sends trailers to a client
/// that offered them.
///
/// Call it on the inbound request *before* adding headers of your own
/// (such as [`append_forwarded`]'s): a client may name any header in
/// `Connection`.
///
/// ```
/// use http::HeaderMap;
/// use mesh_tower::gateway::remove_hop_by_hop;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("connection", "keep-alive, X-Debug".parse()?);
/// headers.insert("x-debug", "1".parse()?);
/// headers.insert("te", "trailers".parse()?);
/// headers.insert("accept", "*/*".parse()?);
/// remove_hop_by_hop(&mut headers);
/// assert_eq!(headers.len(), 2);
/// assert_eq!(headers["te"], "trailers");
/// # Ok::<(), http::header::InvalidHeaderValue>(())
/// ```
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let nominated: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| list_elements(value.as_bytes()))
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    let te_trailers = headers.get_all(TE).iter().any(|value| {
        list_elements(value.as_bytes()).any(|element| element.eq_ignore_ascii_case(b"trailers"))
    });
    for name in nominated {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Records this hop in `X-Forwarded-For`, `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and RFC 7239 `Forwarded`.
///
/// - `X-Forwarded-For`: the existing values (every field line, empty ones
///   skipped) joined into one field, then `, <client>`.
/// - `X-Forwarded-Proto` is set to `proto` and `X-Forwarded-Host` to
///   `host` when given. An empty `proto`, or one that is not a valid field
///   value, is left out (here and in `Forwarded`).
/// - `Forwarded`: `for=<client>;proto=<proto>;host=<host>` appended to the
///   existing elements in one field; an IPv6 `for` is quoted and bracketed
///   (`for="[2001:db8::1]"`), a `proto` or `host` that is not a token is
///   quoted (`host="example.com:8443"`).
///
/// An IPv4-mapped IPv6 client (`::ffff:192.0.2.1`, as a dual-stack socket
/// reports it) is written as IPv4. Existing values are copied, never
/// parsed, so odd ones cannot make this fail. Whether the incoming values
/// are trusted at all (the peer is a known proxy) is the caller's call:
/// remove them first when it is not.
///
/// ```
/// use http::HeaderMap;
/// use mesh_tower::gateway::append_forwarded;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "192.0.2.1".parse()?);
/// let host = "api.example.com:8443".parse()?;
/// append_forwarded(&mut headers, "2001:db8::1".parse()?, "https", Some(&host));
/// assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 2001:db8::1");
/// assert_eq!(headers["x-forwarded-proto"], "https");
/// assert_eq!(
///     headers["forwarded"],
///     r#"for="[2001:db8::1]";proto=https;host="api.example.com:8443""#,
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn append_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &str,
    host: Option<&HeaderValue>,
) {
    let client = client.to_canonical();
    let client_text = client.to_string();

    append_to_list(headers, X_FORWARDED_FOR, client_text.as_bytes());

    let proto = HeaderValue::from_str(proto)
        .ok()
        .filter(|value| !value.is_empty());
    if let Some(proto) = &proto {
        headers.insert(X_FORWARDED_PROTO, proto.clone());
    }
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }

    let mut element = Vec::with_capacity(64);
    element.extend_from_slice(b"for=");
    match client {
        IpAddr::V4(_) => element.extend_from_slice(client_text.as_bytes()),
        IpAddr::V6(_) => {
            element.extend_from_slice(b"\"[");
            element.extend_from_slice(client_text.as_bytes());
            element.extend_from_slice(b"]\"");
        }
    }
    if let Some(proto) = &proto {
        element.extend_from_slice(b";proto=");
        push_token_or_quoted(&mut element, proto.as_bytes());
    }
    if let Some(host) = host {
        element.extend_from_slice(b";host=");
        push_token_or_quoted(&mut element, host.as_bytes());
    }
    append_to_list(headers, FORWARDED, &element);
}

/// Why a request's framing was refused; every variant means
/// `400 Bad Request` (and closing the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthWithTransferEncoding,
    /// More than one `Content-Length` value, on separate lines or as a
    /// comma list, even when they are equal.
    DuplicateContentLength,
    /// A `Content-Length` that is not a decimal number fitting in a `u64`.
    InvalidContentLength,
    /// A `Transfer-Encoding` whose final coding is not `chunked`, or that
    /// applies `chunked` more than once.
    TransferEncodingNotChunked,
}

impl FramingError {
    /// The HTTP status to answer with: always `400 Bad Request`.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ContentLengthWithTransferEncoding => {
                "the request has both Content-Length and Transfer-Encoding"
            }
            Self::DuplicateContentLength => "the request has more than one Content-Length value",
            Self::InvalidContentLength => "the request's Content-Length is not a valid length",
            Self::TransferEncodingNotChunked => {
                "the request's Transfer-Encoding must end with 'chunked', applied once"
            }
        })
    }
}

impl std::error::Error for FramingError {}

/// Refuses an HTTP/1 request whose body length two parsers could read
/// differently (request smuggling):
///
/// - both `Content-Length` and `Transfer-Encoding`;
/// - more than one `Content-Length` value (separate lines or a comma list),
///   even equal ones, or one that is not bare digits;
/// - a `Transfer-Encoding` whose final coding is not `chunked`, or with
///   `chunked` earlier too.
///
/// hyper's HTTP/1 server already refuses or repairs all of these before the
/// service runs (see the module source); this states and enforces the rule
/// for requests that arrive any other way.
///
/// ```
/// use http::HeaderMap;
/// use mesh_tower::gateway::{check_framing, FramingError};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("transfer-encoding", "gzip, chunked".parse()?);
/// assert_eq!(check_framing(&headers), Ok(()));
/// headers.insert("content-length", "5".parse()?);
/// assert_eq!(
///     check_framing(&headers),
///     Err(FramingError::ContentLengthWithTransferEncoding),
/// );
/// # Ok::<(), http::header::InvalidHeaderValue>(())
/// ```
///
/// # Errors
///
/// The [`FramingError`] for the first rule broken.
pub fn check_framing(headers: &HeaderMap) -> Result<(), FramingError> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let has_length = match (lengths.next(), lengths.next()) {
        (None, _) => false,
        (Some(_), Some(_)) => return Err(FramingError::DuplicateContentLength),
        (Some(value), None) => {
            let bytes = value.as_bytes();
            if bytes.contains(&b',') {
                return Err(FramingError::DuplicateContentLength);
            }
            if !is_length(bytes) {
                return Err(FramingError::InvalidContentLength);
            }
            true
        }
    };

    if !headers.contains_key(TRANSFER_ENCODING) {
        return Ok(());
    }
    if has_length {
        return Err(FramingError::ContentLengthWithTransferEncoding);
    }
    // Every coding across every line, in order; `chunked` must be the last
    // and only the last.
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| list_elements(value.as_bytes()))
        .peekable();
    let mut chunked_last = false;
    while let Some(coding) = codings.next() {
        let chunked = coding.eq_ignore_ascii_case(b"chunked");
        if chunked && codings.peek().is_some() {
            return Err(FramingError::TransferEncodingNotChunked);
        }
        chunked_last = chunked;
    }
    if chunked_last {
        Ok(())
    } else {
        Err(FramingError::TransferEncodingNotChunked)
    }
}

/// Whether every transfer coding of the request is `chunked`.
///
/// hyper's server decodes `chunked` and nothing else, and
/// `Transfer-Encoding` is removed as hop-by-hop before forwarding, so a
/// request sent with `gzip, chunked` would reach the upstream as a body
/// still gzip-coded but no longer labelled so. The gateway refuses such
/// requests instead (RFC 9112 §6.1: a transfer coding the server does not
/// implement).
pub(crate) fn only_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| list_elements(value.as_bytes()))
        .all(|coding| coding.eq_ignore_ascii_case(b"chunked"))
}

/// `1*DIGIT` that fits in a `u64`.
fn is_length(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .try_fold(0u64, |n, &b| {
                if b.is_ascii_digit() {
                    n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
                } else {
                    None
                }
            })
            .is_some()
}

/// The non-empty elements of a comma-separated field value, with optional
/// whitespace trimmed.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

/// Replaces every `name` field with one: the existing non-empty values
/// joined with `, `, then `item`.
fn append_to_list(headers: &mut HeaderMap, name: HeaderName, item: &[u8]) {
    let mut joined = Vec::new();
    for value in headers.get_all(&name) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            joined.extend_from_slice(value);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(item);
    // The pieces are valid field values and ", " is too, so this only fails
    // if `item` is not; then the existing fields are left as they were.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, value);
    }
}

/// Pushes `value` as an RFC 9110 token when it is one, else as a
/// quoted-string.
fn push_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    if !value.is_empty() && value.iter().all(|&b| is_tchar(b)) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// RFC 9110 §5.6.2 `tchar`.
const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for &(name, value) in fields {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
        headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    #[test]
    fn hop_by_hop_headers_removed() {
        let mut headers = map(&[
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
            ("authorization", "Bearer t"),
        ]);
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "authorization"]);
    }

    #[test]
    fn connection_tokens_removed() {
        let mut headers = map(&[
            ("connection", "Keep-Alive, X-Secret ,,"),
            ("connection", "x-other,  bad token, (x), close"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-other", "3"),
            ("x-kept", "4"),
        ]);
        remove_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn te_trailers_kept() {
        for te in [
            "trailers",
            "TRAILERS",
            "gzip, trailers",
            " trailers ,deflate",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(TE, HeaderValue::from_static(te));
            headers.insert(CONNECTION, HeaderValue::from_static("TE"));
            remove_hop_by_hop(&mut headers);
            assert_eq!(values(&headers, "te"), [b"trailers"], "{te}");
        }
        let mut headers = map(&[("te", "gzip"), ("te", "deflate;q=0.5")]);
        remove_hop_by_hop(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn invalid_connection_value_does_not_panic() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_bytes(b"\xff\xfe, x-a").unwrap_or(HeaderValue::from_static("x-a")),
        );
        headers.insert("x-a", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn forwarded_ipv4_fresh() {
        let mut headers = HeaderMap::new();
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 60));
        append_forwarded(&mut headers, client, "http", None);
        assert_eq!(values(&headers, "x-forwarded-for"), [b"192.0.2.60"]);
        assert_eq!(values(&headers, "x-forwarded-proto"), [b"http"]);
        assert!(!headers.contains_key("x-forwarded-host"));
        assert_eq!(
            values(&headers, "forwarded"),
            [b"for=192.0.2.60;proto=http"]
        );
    }

    #[test]
    fn forwarded_appends_to_existing() {
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", " "),
            ("x-forwarded-for", "198.51.100.2, 2001:db8::2 "),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "old.example"),
            ("forwarded", "for=203.0.113.1"),
            ("forwarded", "for=unknown;by=_hidden"),
        ]);
        let host = HeaderValue::from_static("api.example.com");
        let client = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        append_forwarded(&mut headers, client, "https", Some(&host));
        assert_eq!(
            values(&headers, "x-forwarded-for"),
            [b"203.0.113.1, 198.51.100.2, 2001:db8::2, 2001:db8::1".as_slice()]
        );
        assert_eq!(values(&headers, "x-forwarded-proto"), [b"https"]);
        assert_eq!(values(&headers, "x-forwarded-host"), [b"api.example.com"]);
        assert_eq!(
            values(&headers, "forwarded"),
            [
                br#"for=203.0.113.1, for=unknown;by=_hidden, for="[2001:db8::1]";proto=https;host=api.example.com"#
                    .as_slice()
            ]
        );
    }

    #[test]
    fn forwarded_quotes_non_tokens() {
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_static("example.com:8443");
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        append_forwarded(&mut headers, client, "https", Some(&host));
        assert_eq!(
            values(&headers, "forwarded"),
            [br#"for=127.0.0.1;proto=https;host="example.com:8443""#]
        );

        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_static(r#"a"b\c d"#);
        append_forwarded(&mut headers, client, "", Some(&host));
        assert_eq!(
            values(&headers, "forwarded"),
            [br#"for=127.0.0.1;host="a\"b\\c d""#]
        );
        assert!(!headers.contains_key("x-forwarded-proto"));
    }

    #[test]
    fn forwarded_ipv4_mapped_is_ipv4() {
        let mut headers = HeaderMap::new();
        let client = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        append_forwarded(&mut headers, client, "http", None);
        assert_eq!(values(&headers, "x-forwarded-for"), [b"192.0.2.7"]);
        assert_eq!(values(&headers, "forwarded"), [b"for=192.0.2.7;proto=http"]);
    }

    #[test]
    fn forwarded_odd_existing_values_never_panic() {
        let odd = HeaderValue::from_bytes(b"\xff\x80 \t\"unterminated;;,,")
            .unwrap_or(HeaderValue::from_static("x"));
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, odd.clone());
        headers.insert(FORWARDED, odd.clone());
        append_forwarded(
            &mut headers,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "bad\nproto",
            Some(&odd),
        );
        assert_eq!(headers.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(headers.get_all(FORWARDED).iter().count(), 1);
        assert!(!headers.contains_key(X_FORWARDED_PROTO));
        let forwarded = headers
            .get(FORWARDED)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        assert!(forwarded.ends_with(b"\""), "{forwarded:?}");
    }

    #[test]
    fn framing_accepts_well_formed() {
        assert_eq!(check_framing(&HeaderMap::new()), Ok(()));
        assert_eq!(check_framing(&map(&[("content-length", "0")])), Ok(()));
        assert_eq!(
            check_framing(&map(&[("content-length", "18446744073709551615")])),
            Ok(())
        );
        assert_eq!(
            check_framing(&map(&[("transfer-encoding", "chunked")])),
            Ok(())
        );
        assert_eq!(
            check_framing(&map(&[("transfer-encoding", "Chunked")])),
            Ok(())
        );
        assert_eq!(
            check_framing(&map(&[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked")
            ])),
            Ok(())
        );
        assert_eq!(
            check_framing(&map(&[("transfer-encoding", "gzip , chunked ,")])),
            Ok(())
        );
    }

    #[test]
    fn framing_refuses_length_and_chunked() {
        assert_eq!(
            check_framing(&map(&[
                ("content-length", "5"),
                ("transfer-encoding", "chunked")
            ])),
            Err(FramingError::ContentLengthWithTransferEncoding)
        );
    }

    #[test]
    fn framing_refuses_duplicate_lengths() {
        for fields in [
            &[("content-length", "5"), ("content-length", "5")][..],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "5, 5")],
            &[("content-length", "5,")],
        ] {
            assert_eq!(
                check_framing(&map(fields)),
                Err(FramingError::DuplicateContentLength),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn framing_refuses_invalid_length() {
        for value in ["", "+5", "-1", "5 ", "0x10", "18446744073709551616", "five"] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static(value));
            assert_eq!(
                check_framing(&headers),
                Err(FramingError::InvalidContentLength),
                "{value:?}"
            );
        }
    }

    #[test]
    fn framing_refuses_non_final_chunked() {
        for fields in [
            &[("transfer-encoding", "gzip")][..],
            &[("transfer-encoding", "chunked, gzip")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip"),
            ],
            &[("transfer-encoding", "chunked, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "")],
            &[("transfer-encoding", "chunked;ext=1")],
            &[("transfer-encoding", "xchunked")],
        ] {
            assert_eq!(
                check_framing(&map(fields)),
                Err(FramingError::TransferEncodingNotChunked),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn only_chunked_codings() {
        assert!(only_chunked(&HeaderMap::new()));
        assert!(only_chunked(&map(&[("transfer-encoding", "Chunked")])));
        assert!(!only_chunked(&map(&[(
            "transfer-encoding",
            "gzip, chunked"
        )])));
        assert!(!only_chunked(&map(&[
            ("transfer-encoding", "deflate"),
            ("transfer-encoding", "chunked")
        ])));
    }

    #[test]
    fn errors_are_bad_requests() {
        assert_eq!(
            FramingError::DuplicateContentLength.status(),
            StatusCode::BAD_REQUEST
        );
        assert!(
            FramingError::ContentLengthWithTransferEncoding
                .to_string()
                .contains("Transfer-Encoding")
        );
    }
}
