//! Errors: config errors that name the bad field, and [`MeshError`], the one
//! error a request can meet, which knows its HTTP status, its gRPC code,
//! whether a retry can help, and how to render itself.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// One problem in a config, at a field path such as
/// `routes[2].destinations[1].service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where, e.g. `routes[2].destinations[1].service`.
    pub path: String,
    /// What is wrong, e.g. ``unknown service `nowhere` ``.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The document could not be read as the config format (bad syntax, an
    /// unknown field, a wrong type). Reading stops at the first such error.
    #[error("{}{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default(), if path.is_empty() || path == "." { String::new() } else { format!("{path}: ") })]
    Syntax {
        /// The field path, if known.
        path: String,
        /// What the parser said.
        message: String,
        /// The line, if known.
        line: Option<usize>,
    },
    /// The document was read but failed validation; every problem is listed.
    #[error("{} error(s) in config:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    pub(crate) fn syntax(text: &str, e: &toml::de::Error) -> ConfigError {
        ConfigError::Syntax {
            path: String::new(),
            message: e.message().to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
        }
    }

    pub(crate) fn syntax_at(text: &str, path: String, e: &toml::de::Error) -> ConfigError {
        ConfigError::Syntax {
            path,
            message: e.message().to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
        }
    }

    /// The individual problems (one for a syntax error).
    pub fn errors(&self) -> Vec<FieldError> {
        match self {
            ConfigError::Syntax { path, message, .. } => vec![FieldError {
                path: path.clone(),
                message: message.clone(),
            }],
            ConfigError::Invalid(list) => list.clone(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |s| s.matches('\n').count()) + 1
}

/// gRPC status codes (the subset apimesh produces, plus the rest for completeness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The numeric code.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses `UNAVAILABLE`, `unavailable` or `14`.
    pub fn parse(s: &str) -> Option<GrpcCode> {
        use GrpcCode::*;
        const ALL: [(GrpcCode, &str); 17] = [
            (Ok, "OK"),
            (Cancelled, "CANCELLED"),
            (Unknown, "UNKNOWN"),
            (InvalidArgument, "INVALID_ARGUMENT"),
            (DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (NotFound, "NOT_FOUND"),
            (AlreadyExists, "ALREADY_EXISTS"),
            (PermissionDenied, "PERMISSION_DENIED"),
            (ResourceExhausted, "RESOURCE_EXHAUSTED"),
            (FailedPrecondition, "FAILED_PRECONDITION"),
            (Aborted, "ABORTED"),
            (OutOfRange, "OUT_OF_RANGE"),
            (Unimplemented, "UNIMPLEMENTED"),
            (Internal, "INTERNAL"),
            (Unavailable, "UNAVAILABLE"),
            (DataLoss, "DATA_LOSS"),
            (Unauthenticated, "UNAUTHENTICATED"),
        ];
        if let Result::Ok(n) = s.parse::<u8>() {
            return ALL.iter().find(|(c, _)| c.as_u8() == n).map(|(c, _)| *c);
        }
        ALL.iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(s))
            .map(|(c, _)| *c)
    }

    /// The code gRPC's HTTP mapping gives an HTTP status.
    pub fn from_http_status(status: StatusCode) -> GrpcCode {
        match status.as_u16() {
            400 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502..=504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
        }
    }
}

/// Everything that can stop a request inside the mesh.
///
/// Each variant knows its HTTP status ([`status`](Self::status)), its gRPC
/// code ([`grpc_code`](Self::grpc_code)) and whether retrying elsewhere can
/// help ([`is_retryable`](Self::is_retryable)). It renders as an RFC 9457
/// problem (`application/problem+json`) or, for gRPC requests, as a
/// trailers-only response. Messages never carry credentials or key material.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// No route matches the request.
    #[error("no route matches {method} {path}")]
    RouteNotFound {
        /// The request method.
        method: String,
        /// The request path (without the query).
        path: String,
    },
    /// Credentials are missing or invalid.
    #[error("{detail}")]
    Unauthenticated {
        /// RFC 6750 error code (`invalid_request`, `invalid_token`), if a bearer error.
        bearer_error: Option<&'static str>,
        /// The `WWW-Authenticate` header value, precomputed.
        challenge: Option<String>,
        /// What was wrong, safe to show.
        detail: String,
    },
    /// The caller is known but lacks a permission.
    #[error("{detail}")]
    Forbidden {
        /// The `WWW-Authenticate` header value, precomputed.
        challenge: Option<String>,
        /// What was missing.
        detail: String,
    },
    /// A rate limit or quota is exhausted.
    #[error("{detail}")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
        /// Which limit.
        detail: String,
    },
    /// The request is malformed.
    #[error("{detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// The API version is retired.
    #[error("{detail}")]
    Gone {
        /// Which version, and its successor.
        detail: String,
    },
    /// No healthy endpoint, an open breaker or a full bulkhead.
    #[error("{detail}")]
    Unavailable {
        /// Why.
        detail: String,
        /// A hint for clients, if any.
        retry_after: Option<Duration>,
    },
    /// The deadline passed.
    #[error("{detail}")]
    Timeout {
        /// Which deadline.
        detail: String,
    },
    /// The request body is larger than allowed.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// An upstream failed in a way the mesh could not hide.
    #[error("{detail}")]
    BadGateway {
        /// What happened.
        detail: String,
    },
    /// A fault injected on purpose by a route's `fault` policy.
    #[error("fault injected")]
    FaultInjected {
        /// The configured HTTP status.
        status: StatusCode,
        /// The configured gRPC code.
        grpc: GrpcCode,
    },
    /// A bug or an unexpected state inside the mesh.
    #[error("internal error")]
    Internal,
}

impl MeshError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            MeshError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            MeshError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            MeshError::Forbidden { .. } => StatusCode::FORBIDDEN,
            MeshError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            MeshError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            MeshError::Gone { .. } => StatusCode::GONE,
            MeshError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            MeshError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            MeshError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            MeshError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            MeshError::FaultInjected { status, .. } => *status,
            MeshError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC code this error answers with.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            MeshError::RouteNotFound { .. } => GrpcCode::Unimplemented,
            MeshError::Unauthenticated { .. } => GrpcCode::Unauthenticated,
            MeshError::Forbidden { .. } => GrpcCode::PermissionDenied,
            MeshError::RateLimited { .. } => GrpcCode::ResourceExhausted,
            MeshError::BadRequest { .. } => GrpcCode::InvalidArgument,
            MeshError::Gone { .. } => GrpcCode::Unimplemented,
            MeshError::Unavailable { .. } | MeshError::BadGateway { .. } => GrpcCode::Unavailable,
            MeshError::Timeout { .. } => GrpcCode::DeadlineExceeded,
            MeshError::PayloadTooLarge { .. } => GrpcCode::ResourceExhausted,
            MeshError::FaultInjected { grpc, .. } => *grpc,
            MeshError::Internal => GrpcCode::Internal,
        }
    }

    /// Whether trying again (elsewhere, or later) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MeshError::Unavailable { .. }
                | MeshError::Timeout { .. }
                | MeshError::BadGateway { .. }
                | MeshError::RateLimited { .. }
        )
    }

    /// A stable identifier for the kind of problem; the last segment of the
    /// problem `type` URI.
    pub fn kind(&self) -> &'static str {
        match self {
            MeshError::RouteNotFound { .. } => "route-not-found",
            MeshError::Unauthenticated { .. } => "unauthenticated",
            MeshError::Forbidden { .. } => "forbidden",
            MeshError::RateLimited { .. } => "rate-limited",
            MeshError::BadRequest { .. } => "bad-request",
            MeshError::Gone { .. } => "version-retired",
            MeshError::Unavailable { .. } => "unavailable",
            MeshError::Timeout { .. } => "timeout",
            MeshError::PayloadTooLarge { .. } => "payload-too-large",
            MeshError::BadGateway { .. } => "bad-gateway",
            MeshError::FaultInjected { .. } => "fault-injected",
            MeshError::Internal => "internal",
        }
    }

    /// Renders the error as an HTTP response. For gRPC requests (see
    /// [`is_grpc`]) that is a trailers-only response: HTTP 200 with
    /// `grpc-status` and `grpc-message` headers and an empty body; otherwise
    /// an RFC 9457 `application/problem+json` body.
    pub fn to_response(&self, grpc: bool) -> http::Response<Bytes> {
        if grpc {
            self.to_grpc_response()
        } else {
            self.to_problem_response()
        }
    }

    /// The RFC 9457 problem response.
    pub fn to_problem_response(&self) -> http::Response<Bytes> {
        let status = self.status();
        let body = serde_json::json!({
            "type": format!("https://apimesh.dev/problems/{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let mut res = http::Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        self.add_headers(res.headers_mut());
        res
    }

    /// The gRPC trailers-only response.
    pub fn to_grpc_response(&self) -> http::Response<Bytes> {
        let mut res = http::Response::new(Bytes::new());
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_code().as_u8())),
        );
        let message = grpc_percent_encode(&self.to_string());
        if let Ok(v) = HeaderValue::from_str(&message) {
            h.insert("grpc-message", v);
        }
        if let MeshError::RateLimited { retry_after, .. } = self {
            h.insert(
                "grpc-retry-pushback-ms",
                HeaderValue::from(retry_after.as_millis().min(u64::MAX as u128) as u64),
            );
        }
        res
    }

    fn add_headers(&self, h: &mut http::HeaderMap) {
        let challenge = match self {
            MeshError::Unauthenticated { challenge, .. }
            | MeshError::Forbidden { challenge, .. } => challenge.as_deref(),
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(c).ok()) {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        let retry_after = match self {
            MeshError::RateLimited { retry_after, .. } => Some(*retry_after),
            MeshError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        };
        if let Some(d) = retry_after {
            // Whole seconds, rounded up so a client never retries too early.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}

/// Whether a request is gRPC: its `content-type` is `application/grpc` or
/// `application/grpc+…` / `application/grpc;…`.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            let b = v.as_bytes();
            b.len() >= 16
                && b[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(b.get(16), None | Some(b'+') | Some(b';'))
        })
        .unwrap_or(false)
}

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 spec asks: every
/// byte outside printable ASCII, and `%` itself.
fn grpc_percent_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_and_headers() {
        let e = MeshError::RateLimited {
            retry_after: Duration::from_millis(1500),
            detail: "limit 10/s exceeded".into(),
        };
        let res = e.to_response(false);
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(res.headers()["retry-after"], "2");
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(v["status"], 429);
        assert_eq!(v["title"], "Too Many Requests");
        assert_eq!(v["detail"], "limit 10/s exceeded");
        assert_eq!(v["type"], "https://apimesh.dev/problems/rate-limited");
    }

    #[test]
    fn grpc_trailers_only() {
        let e = MeshError::Unavailable {
            detail: "no endpoint for «inventory» 100%".into(),
            retry_after: None,
        };
        let res = e.to_response(true);
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(
            res.headers()["grpc-message"],
            "no endpoint for %C2%ABinventory%C2%BB 100%25"
        );
        assert!(res.body().is_empty());
    }

    #[test]
    fn grpc_detection() {
        let mut h = http::HeaderMap::new();
        assert!(!is_grpc(&h));
        for (v, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/json", false),
            ("application/gr", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(is_grpc(&h), want, "{v}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(GrpcCode::parse("unavailable"), Some(GrpcCode::Unavailable));
        assert_eq!(GrpcCode::parse("16"), Some(GrpcCode::Unauthenticated));
        assert_eq!(GrpcCode::parse("NOPE"), None);
        assert_eq!(GrpcCode::parse("99"), None);
    }
}
