//! Building blocks of the edge gateway (reverse proxy) mode.
//!
//! Pure functions, no I/O, each answering one question a reverse proxy has
//! to get right:
//!
//! - [`normalize_path_and_query`]: the one spelling of the request target
//!   that is both matched against the routes and forwarded upstream, so the
//!   upstream serves exactly what was matched and authorised (no
//!   `/public/%2e%2e/admin`, `//admin` or `/admin;x` detours), under a
//!   [`PathPolicy`].
//! - [`remove_hop_by_hop`]: the headers that belong to one connection and
//!   must not be forwarded (keeping `te: trailers` for gRPC).
//! - [`append_forwarded`]: this hop in `X-Forwarded-*` and RFC 7239
//!   `Forwarded`.
//! - [`check_framing`]: refuses an HTTP/1 request whose body length two
//!   parsers could read differently (request smuggling). The source of
//!   `headers.rs` records what hyper's HTTP/1 server already refuses itself.
//!
//! Every refusal is a small error ([`PathError`], [`FramingError`]) that
//! answers `400 Bad Request` with a message fit for a problem body.
//!
//! In a proxy they run in this order:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//!
//! use http::Request;
//! use mesh_tower::gateway::{
//!     PathPolicy, append_forwarded, check_framing, normalize_path_and_query, remove_hop_by_hop,
//! };
//!
//! let mut req = Request::get("/api//orders/%2e/42?expand=items")
//!     .header("host", "api.example.com")
//!     .header("connection", "keep-alive")
//!     .body(())?;
//!
//! check_framing(req.headers())?;
//! let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
//! let target = normalize_path_and_query(target, &PathPolicy::default())?;
//! assert_eq!(target, "/api/orders/42?expand=items"); // match routes on this, forward this
//!
//! let host = req.headers().get("host").cloned();
//! remove_hop_by_hop(req.headers_mut());
//! append_forwarded(req.headers_mut(), IpAddr::V4(Ipv4Addr::LOCALHOST), "http", host.as_ref());
//! assert!(!req.headers().contains_key("connection"));
//! assert_eq!(req.headers()["x-forwarded-for"], "127.0.0.1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod headers;
mod normalize;
mod proxy;

pub use headers::{FramingError, append_forwarded, check_framing, remove_hop_by_hop};
pub use normalize::{EncodedSlashes, PathError, PathPolicy, Semicolons, normalize_path_and_query};
pub use proxy::{Gateway, GatewayLayer, StripHopByHop};
