//! One canonical form of the request target, used both to match the route
//! and to build the upstream request.
//!
//! A gateway that matches on one spelling of a path and forwards another
//! lets a client reach a route it was refused: `/admin` denied, but
//! `/public/%2e%2e/admin`, `//admin`, `/admin;x` or `/ADMIN%2f` allowed
//! through and read as `/admin` by the upstream. [`normalize_path_and_query`]
//! closes that gap by producing the one string that is matched *and*
//! forwarded, and by refusing the spellings whose meaning differs between
//! upstreams (encoded slashes, backslashes, `;` path parameters).

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;

/// What to do with `%2F` and `%5C` (an encoded `/` or `\`) in the path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodedSlashes {
    /// Refuse the request with [`PathError::EncodedSeparator`] (the
    /// default): upstreams disagree on whether `%2F` separates segments.
    #[default]
    Reject,
    /// Keep them encoded (as `%2F` / `%5C`, hex uppercased) and never treat
    /// them as separators, e.g. for APIs whose keys contain slashes.
    Keep,
}

/// What to do with a raw `;` in the path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Semicolons {
    /// Refuse the request with [`PathError::Semicolon`] (the default):
    /// upstreams such as Tomcat read `/admin;x` as `/admin`, so a route
    /// matched on the full segment would not be the one served.
    #[default]
    Reject,
    /// Keep `;` as an ordinary path character (matrix parameters).
    Allow,
}

/// How [`normalize_path_and_query`] treats the ambiguous parts of a path.
///
/// The default is the strict one: encoded slashes and `;` are refused.
///
/// ```
/// use mesh_tower::gateway::{EncodedSlashes, PathPolicy, Semicolons};
///
/// let policy = PathPolicy::default()
///     .encoded_slashes(EncodedSlashes::Keep)
///     .semicolons(Semicolons::Allow);
/// assert_eq!(policy.encoded_slashes, EncodedSlashes::Keep);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathPolicy {
    /// `%2F` and `%5C` in the path; default [`EncodedSlashes::Reject`].
    pub encoded_slashes: EncodedSlashes,
    /// A raw `;` in the path; default [`Semicolons::Reject`].
    pub semicolons: Semicolons,
}

impl PathPolicy {
    /// The default, strict policy.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            encoded_slashes: EncodedSlashes::Reject,
            semicolons: Semicolons::Reject,
        }
    }

    /// Sets what to do with `%2F` and `%5C`.
    #[must_use]
    pub const fn encoded_slashes(mut self, value: EncodedSlashes) -> Self {
        self.encoded_slashes = value;
        self
    }

    /// Sets what to do with a raw `;`.
    #[must_use]
    pub const fn semicolons(mut self, value: Semicolons) -> Self {
        self.semicolons = value;
        self
    }
}

/// Why a request target was refused; every variant means `400 Bad Request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The target is not origin-form (it does not start with `/`).
    NotOriginForm,
    /// A `%` not followed by two hex digits.
    MalformedEscape,
    /// `%2F` or `%5C` while the policy rejects them.
    EncodedSeparator,
    /// A raw `\` in the path.
    Backslash,
    /// A control character (`%00`–`%1F`, `%7F`), raw or percent-encoded.
    ControlCharacter,
    /// A raw space or `#` in the path.
    InvalidCharacter,
    /// A raw `;` in the path while the policy rejects it.
    Semicolon,
}

impl PathError {
    /// The HTTP status to answer with: always `400 Bad Request`.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOriginForm => "the request target must be a path starting with '/'",
            Self::MalformedEscape => {
                "the request path has a malformed percent-encoding ('%' must be followed by two hex digits)"
            }
            Self::EncodedSeparator => {
                "the request path contains an encoded slash or backslash (%2F or %5C)"
            }
            Self::Backslash => "the request path contains a backslash",
            Self::ControlCharacter => "the request path contains a control character",
            Self::InvalidCharacter => "the request path contains a space or '#'",
            Self::Semicolon => "the request path contains ';' (path parameters are not allowed)",
        })
    }
}

impl std::error::Error for PathError {}

/// Normalises an origin-form request target (`path[?query]`) into the one
/// form that is both matched against routes and sent upstream.
///
/// Pass `uri.path_and_query()` as a string (for an absolute-form target
/// too: its authority is not part of it). In the path:
///
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
///   decoded (`%41` is `A`, `%2e%2e` is `..`); other escapes are kept, with
///   their hex digits uppercased (`%3b` becomes `%3B`);
/// - `%2F` / `%5C` are refused or kept encoded, per
///   [`PathPolicy::encoded_slashes`]; they never separate segments;
/// - a raw `\`, a control character (raw or encoded, `%00` included), a raw
///   space or `#`, a malformed escape (`%zz`, a trailing `%`) is refused;
/// - a raw `;` is refused unless [`PathPolicy::semicolons`] allows it;
/// - runs of `/` are merged and dot segments removed (RFC 3986 §5.2.4),
///   `..` above the root staying at `/`;
/// - case is preserved.
///
/// The query (everything after the first `?`) is kept byte for byte.
///
/// A path with none of `%`, `//`, `/.` (and no character to refuse) is
/// returned borrowed, without allocating. The result is a fixed point:
/// normalising it again returns it unchanged.
///
/// ```
/// use mesh_tower::gateway::{normalize_path_and_query, PathError, PathPolicy};
///
/// let policy = PathPolicy::default();
/// let pq = normalize_path_and_query("/api//v1/./%75sers/../orders?x=%2e", &policy);
/// assert_eq!(pq.as_deref(), Ok("/api/v1/orders?x=%2e"));
/// assert_eq!(
///     normalize_path_and_query("/files/a%2Fb", &policy),
///     Err(PathError::EncodedSeparator),
/// );
/// ```
///
/// # Errors
///
/// A [`PathError`] naming the first rule the target breaks; answer it with
/// [`PathError::status`] (400).
pub fn normalize_path_and_query<'a>(
    pq: &'a str,
    policy: &PathPolicy,
) -> Result<Cow<'a, str>, PathError> {
    let (path, query) = match pq.find('?') {
        Some(i) => (&pq[..i], Some(&pq[i..])),
        None => (pq, None),
    };
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if !scan(path.as_bytes(), policy)? {
        return Ok(Cow::Borrowed(pq));
    }
    let decoded = decode(path, policy)?;
    let mut out = String::with_capacity(pq.len());
    remove_dot_segments(&decoded, &mut out);
    if out == path {
        return Ok(Cow::Borrowed(pq));
    }
    if let Some(query) = query {
        out.push_str(query);
    }
    Ok(Cow::Owned(out))
}

/// Checks every raw byte of the path; `Ok(true)` when it needs rewriting
/// (an escape, an empty segment or a segment starting with `.`).
fn scan(path: &[u8], policy: &PathPolicy) -> Result<bool, PathError> {
    let mut rewrite = false;
    let mut prev = 0u8;
    for &b in path {
        match b {
            b'%' => rewrite = true,
            b'/' | b'.' if prev == b'/' => rewrite = true,
            b'\\' => return Err(PathError::Backslash),
            b';' if policy.semicolons == Semicolons::Reject => return Err(PathError::Semicolon),
            b' ' | b'#' => return Err(PathError::InvalidCharacter),
            b if b.is_ascii_control() => return Err(PathError::ControlCharacter),
            _ => {}
        }
        prev = b;
    }
    Ok(rewrite)
}

/// Decodes the unreserved escapes and uppercases the others. The raw bytes
/// were already checked by [`scan`].
fn decode<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // Start of the run of raw characters not yet copied; always at an ASCII
    // byte, so slicing there is on a char boundary.
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        out.push_str(&path[run..i]);
        let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(&hi), Some(&lo)) => (hi, lo),
            _ => return Err(PathError::MalformedEscape),
        };
        let value = match (hex_value(hi), hex_value(lo)) {
            (Some(hi), Some(lo)) => hi << 4 | lo,
            _ => return Err(PathError::MalformedEscape),
        };
        match value {
            b'/' | b'\\' if policy.encoded_slashes == EncodedSlashes::Reject => {
                return Err(PathError::EncodedSeparator);
            }
            v if v.is_ascii_control() => return Err(PathError::ControlCharacter),
            v if is_unreserved(v) => out.push(char::from(v)),
            v => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(v & 0xF)]));
            }
        }
        i += 3;
        run = i;
    }
    out.push_str(&path[run..]);
    Ok(Cow::Owned(out))
}

/// RFC 3986 §5.2.4 on an absolute path, also merging runs of `/`: empty,
/// `.` and `..` segments go; a final one leaves a trailing `/`.
fn remove_dot_segments(path: &str, out: &mut String) {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // `path` starts with '/', so the first item of the split is empty.
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                kept.pop();
                trailing_slash = true;
            }
            _ => kept.push(segment),
        }
    }
    out.push('/');
    for (n, segment) in kept.iter().enumerate() {
        if n > 0 {
            out.push('/');
        }
        out.push_str(segment);
    }
    if trailing_slash && !kept.is_empty() {
        out.push('/');
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3 `unreserved`.
const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strict(pq: &str) -> Result<Cow<'_, str>, PathError> {
        normalize_path_and_query(pq, &PathPolicy::default())
    }

    fn ok(pq: &str) -> String {
        match strict(pq) {
            Ok(out) => out.into_owned(),
            Err(e) => panic!("{pq:?} refused: {e}"),
        }
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for pq in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/e.",
            "/a?x=//../%zz",
            "/ünï/cödé",
        ] {
            assert!(
                matches!(strict(pq), Ok(Cow::Borrowed(s)) if s == pq),
                "{pq}"
            );
        }
    }

    #[test]
    fn already_normal_slow_path_is_borrowed() {
        // '%' sends it down the slow path, but nothing changes.
        assert!(matches!(strict("/a%20b?q"), Ok(Cow::Borrowed("/a%20b?q"))));
    }

    #[test]
    fn must_be_origin_form() {
        for pq in ["", "*", "?a=1", "a/b", "http://h/a"] {
            assert_eq!(strict(pq), Err(PathError::NotOriginForm), "{pq}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(ok("/%41%62%7e%2D%5f%2e%30"), "/Ab~-_.0");
        assert_eq!(ok("/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2E%2E/admin"), "/admin");
        assert_eq!(ok("/a/%2e/b"), "/a/b");
        assert_eq!(ok("/a/.%2e/b"), "/b");
    }

    #[test]
    fn other_escapes_are_kept_uppercased() {
        assert_eq!(ok("/a%3bb%3Fc%25%e2%82%ac%20"), "/a%3Bb%3Fc%25%E2%82%AC%20");
        // %25 stays encoded, so "%2541" never turns into "A".
        assert_eq!(ok("/%2541"), "/%2541");
    }

    #[test]
    fn encoded_slashes_rejected_by_default() {
        for pq in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb", "/%2F%2E%2E"] {
            assert_eq!(strict(pq), Err(PathError::EncodedSeparator), "{pq}");
        }
    }

    #[test]
    fn encoded_slashes_kept_never_separate() {
        let keep = PathPolicy::default().encoded_slashes(EncodedSlashes::Keep);
        let norm = |pq| normalize_path_and_query(pq, &keep).map(Cow::into_owned);
        assert_eq!(norm("/a%2fb"), Ok("/a%2Fb".to_owned()));
        assert_eq!(norm("/a%5cb/.."), Ok("/".to_owned()));
        assert_eq!(norm("/x/..%2f..%2fetc"), Ok("/x/..%2F..%2Fetc".to_owned()));
        assert_eq!(norm("/a%2F%2e%2e"), Ok("/a%2F..".to_owned()));
    }

    #[test]
    fn raw_backslash_rejected() {
        assert_eq!(strict("/a\\b"), Err(PathError::Backslash));
        assert_eq!(strict("/..\\admin"), Err(PathError::Backslash));
    }

    #[test]
    fn control_characters_rejected() {
        for pq in [
            "/a%00", "/a%0A", "/a%0d", "/a%7f", "/a%1F", "/a\0", "/a\tb", "/a\u{7f}",
        ] {
            assert_eq!(strict(pq), Err(PathError::ControlCharacter), "{pq:?}");
        }
    }

    #[test]
    fn space_and_hash_rejected() {
        assert_eq!(strict("/a b"), Err(PathError::InvalidCharacter));
        assert_eq!(strict("/a#frag"), Err(PathError::InvalidCharacter));
    }

    #[test]
    fn malformed_escapes_rejected() {
        for pq in [
            "/%",
            "/a%",
            "/a%4",
            "/%zz",
            "/%4g",
            "/%g4",
            "/a%%41",
            "/%\u{e9}x",
            "/%4\u{e9}",
        ] {
            assert_eq!(strict(pq), Err(PathError::MalformedEscape), "{pq:?}");
        }
    }

    #[test]
    fn semicolon_rejected_by_default() {
        assert_eq!(strict("/admin;x"), Err(PathError::Semicolon));
        assert_eq!(strict("/a;jsessionid=1/b"), Err(PathError::Semicolon));
        let allow = PathPolicy::default().semicolons(Semicolons::Allow);
        assert_eq!(
            normalize_path_and_query("/a;x=1//b", &allow).map(Cow::into_owned),
            Ok("/a;x=1/b".to_owned())
        );
        assert!(matches!(
            normalize_path_and_query("/a;x", &allow),
            Ok(Cow::Borrowed("/a;x"))
        ));
        // An encoded ';' is data, not a path parameter.
        assert_eq!(ok("/a%3bx"), "/a%3Bx");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("//admin"), "/admin");
        assert_eq!(ok("/a///b//"), "/a/b/");
    }

    #[test]
    fn dot_segments_removed() {
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/.."), "/");
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/b/../c"), "/a/c");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(ok("/a/../../b"), "/b");
        assert_eq!(ok("/.hidden/..x/.../x.."), "/.hidden/..x/.../x..");
    }

    #[test]
    fn case_preserved_and_query_untouched() {
        assert_eq!(
            ok("/Api/./V1?A=%2e%2E//..&b=%zz;\\"),
            "/Api/V1?A=%2e%2E//..&b=%zz;\\"
        );
        assert_eq!(ok("/a/../?"), "/?");
        assert_eq!(ok("/a//?b?c"), "/a/?b?c");
    }

    #[test]
    fn errors_render_for_a_problem_body() {
        assert_eq!(PathError::Semicolon.status(), StatusCode::BAD_REQUEST);
        assert!(PathError::EncodedSeparator.to_string().contains("%2F"));
    }

    fn check_output(out: &str) -> Result<(), TestCaseError> {
        let path = out.split('?').next().unwrap_or(out);
        prop_assert!(path.starts_with('/'));
        prop_assert!(!path.contains("//"), "{out:?}");
        prop_assert!(!path.contains("/./"), "{out:?}");
        prop_assert!(!path.contains("/../"), "{out:?}");
        prop_assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{out:?}");
        Ok(())
    }

    fn policies() -> impl Strategy<Value = PathPolicy> {
        (any::<bool>(), any::<bool>()).prop_map(|(keep, allow)| {
            PathPolicy::default()
                .encoded_slashes(if keep {
                    EncodedSlashes::Keep
                } else {
                    EncodedSlashes::Reject
                })
                .semicolons(if allow {
                    Semicolons::Allow
                } else {
                    Semicolons::Reject
                })
        })
    }

    /// Pieces of a path: mostly ones the policy accepts, so most generated
    /// paths are normalised rather than refused.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            12 => proptest::sample::select(vec![
                "/", "//", ".", "..", "%2e", "%2E%2e", "%41", "%7e", "%3b", "%25", "%e2%82%ac",
                "%20", "a", "B", "-_~", "é", "?", "=&",
            ]),
            1 => proptest::sample::select(vec!["%2f", "%5C", ";", "%00", "\\", "%zz", "%"]),
        ]
    }

    proptest! {
        #[test]
        fn never_panics(pq in any::<String>(), policy in policies()) {
            if let Ok(out) = normalize_path_and_query(&pq, &policy) {
                check_output(&out)?;
            }
        }

        #[test]
        fn never_panics_on_paths(pq in "/.{0,64}", policy in policies()) {
            if let Ok(once) = normalize_path_and_query(&pq, &policy) {
                check_output(&once)?;
                let twice = normalize_path_and_query(&once, &policy);
                prop_assert_eq!(twice.as_deref(), Ok(&*once));
            }
        }

        #[test]
        fn idempotent_and_canonical(
            pieces in proptest::collection::vec(piece(), 0..24),
            policy in policies(),
        ) {
            let pq = format!("/{}", pieces.concat());
            if let Ok(once) = normalize_path_and_query(&pq, &policy) {
                check_output(&once)?;
                let twice = normalize_path_and_query(&once, &policy);
                prop_assert_eq!(twice.as_deref(), Ok(&*once));
                prop_assert!(matches!(twice, Ok(Cow::Borrowed(_))));
                // What http accepted as a target, it accepts normalised, so
                // the upstream request can always be built.
                if http::uri::PathAndQuery::try_from(pq.as_str()).is_ok() {
                    prop_assert!(http::uri::PathAndQuery::try_from(&*once).is_ok(), "{once:?}");
                }
            }
        }

        #[test]
        fn idempotent_on_arbitrary_input(
            pq in "/[/.%0-9a-fA-F;?\\\\a-z]{0,40}",
            policy in policies(),
        ) {
            if let Ok(once) = normalize_path_and_query(&pq, &policy) {
                check_output(&once)?;
                let twice = normalize_path_and_query(&once, &policy);
                prop_assert_eq!(twice.as_deref(), Ok(&*once));
            }
        }
    }
}
