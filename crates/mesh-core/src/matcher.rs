//! The compiled route matcher: a segment trie built once per snapshot.
//!
//! Precedence, for a request path, segment by segment from the left:
//! 1. at each segment a literal beats a `{param}`, which beats a `{*rest}`
//!    catch-all, which beats a prefix ending there; the first branch that
//!    leads to a match wins (the usual static-first router rule, as in
//!    axum's matchit). So `/orders/{id}` beats the prefix `/orders`, and
//!    `/orders/new` beats `/orders/{id}`; but for `/a/b/c` the prefix `/a/b`
//!    beats the template `/{x}/b/c`, because `a` is matched as a literal
//!    before `{x}` is tried;
//! 2. an exact path beats a prefix of the same path;
//! 3. among routes with the same path, the first in the config whose other
//!    conditions (host, method, headers, query) hold wins.
//!
//! Empty segments are ignored, so `/a`, `//a` and `/a/` are one path.
//! Matching is case-sensitive and on the raw (not percent-decoded) path.
//!
//! A match walks each trie node at most once, so its cost is bounded by the
//! config, never by the request.

use http::{HeaderMap, HeaderName, Method, Uri};

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    Exact(Vec<Segment>),
    Prefix(Vec<Segment>),
    /// Segments, then a catch-all that needs at least one more segment.
    CatchAll(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(Box<str>),
    Param,
}

/// Splits a path into its non-empty segments.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

pub(crate) fn parse_literal_path(path: &str) -> Result<Vec<Segment>, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    if path.contains(['?', '#']) {
        return Err(format!("`{path}` must not contain `?` or `#`"));
    }
    if path.contains(['{', '}']) {
        return Err(format!(
            "`{path}` contains `{{` or `}}`; use `path_template` for parameters"
        ));
    }
    Ok(segments(path).map(|s| Segment::Literal(s.into())).collect())
}

pub(crate) fn parse_template(path: &str) -> Result<PathPattern, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    if path.contains(['?', '#']) {
        return Err(format!("`{path}` must not contain `?` or `#`"));
    }
    let segs: Vec<&str> = segments(path).collect();
    let mut out = Vec::with_capacity(segs.len());
    let mut names: Vec<&str> = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (catch_all, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`{seg}` is not a valid parameter (letters, digits and `_` only)"
                ));
            }
            if names.contains(&name) {
                return Err(format!("parameter `{name}` appears twice"));
            }
            names.push(name);
            if catch_all {
                if i + 1 != segs.len() {
                    return Err(format!("`{seg}` must be the last segment"));
                }
                return Ok(PathPattern::CatchAll(out));
            }
            out.push(Segment::Param);
        } else if seg.contains(['{', '}']) {
            return Err(format!(
                "`{seg}`: a parameter must be a whole segment, like `{{id}}`"
            ));
        } else {
            out.push(Segment::Literal((*seg).into()));
        }
    }
    Ok(PathPattern::Exact(out))
}

/// The non-path conditions of a route, checked after the path matches.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conditions {
    /// Lower-case hosts; a leading `*.` is a suffix wildcard.
    pub(crate) hosts: Vec<Box<str>>,
    pub(crate) methods: Vec<Method>,
    pub(crate) headers: Vec<HeaderCond>,
    pub(crate) query: Vec<QueryCond>,
}

#[derive(Debug, Clone)]
pub(crate) enum HeaderCond {
    Exact(HeaderName, Box<str>),
    Prefix(HeaderName, Box<str>),
    Present(HeaderName, bool),
}

#[derive(Debug, Clone)]
pub(crate) enum QueryCond {
    Exact(Box<str>, Box<str>),
    Present(Box<str>, bool),
}

/// The parts of a request a route can match on.
pub(crate) struct RequestView<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    /// The host to match instead of the request's own (the mesh client
    /// matches on the service it calls).
    pub(crate) host: Option<&'a str>,
}

impl Conditions {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return false;
        }
        if !self.hosts.is_empty() {
            let Some(host) = request_host(req) else {
                return false;
            };
            if !self.hosts.iter().any(|h| host_matches(h, host)) {
                return false;
            }
        }
        for h in &self.headers {
            let ok = match h {
                HeaderCond::Exact(name, v) => req
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|x| x.as_bytes() == v.as_bytes()),
                HeaderCond::Prefix(name, p) => req
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|x| x.as_bytes().starts_with(p.as_bytes())),
                HeaderCond::Present(name, want) => req.headers.contains_key(name) == *want,
            };
            if !ok {
                return false;
            }
        }
        if !self.query.is_empty() {
            let q = req.uri.query().unwrap_or("");
            for c in &self.query {
                let ok = match c {
                    QueryCond::Exact(name, v) => {
                        query_pairs(q).any(|(k, x)| k == &**name && x == Some(&**v))
                    }
                    QueryCond::Present(name, want) => {
                        query_pairs(q).any(|(k, _)| k == &**name) == *want
                    }
                };
                if !ok {
                    return false;
                }
            }
        }
        true
    }
}

fn query_pairs(q: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
}

/// The request's host without its port: the URI authority (HTTP/2
/// `:authority`, absolute-form) or else the `Host` header.
pub(crate) fn request_host<'a>(req: &RequestView<'a>) -> Option<&'a str> {
    if let Some(h) = req.host {
        return Some(h);
    }
    let raw = match req.uri.host() {
        Some(h) => h,
        None => req.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    // Strip a port; keep IPv6 brackets intact.
    let host = if raw.starts_with('[') {
        raw.split_once(']')
            .map_or(raw, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(host.trim_end_matches('.'))
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let (h, s) = (host.as_bytes(), suffix.as_bytes());
            h.len() > s.len() + 1
                && h[h.len() - s.len() - 1] == b'.'
                && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

#[derive(Debug, Default)]
struct Node {
    /// Literal children. Keys come from the config only, so request input
    /// never inserts here; foldhash is safe and about 5× faster than SipHash.
    statics: foldhash::HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Routes whose path ends exactly here.
    exact: Vec<u32>,
    /// `{*rest}` routes anchored here (need at least one more segment).
    catch_all: Vec<u32>,
    /// Prefix routes anchored here.
    prefix: Vec<u32>,
}

impl Node {
    fn child(&mut self, seg: &Segment) -> &mut Node {
        match seg {
            Segment::Param => self.param.get_or_insert_with(Default::default),
            Segment::Literal(s) => self.statics.entry(s.clone()).or_default(),
        }
    }
}

/// A compiled set of routes.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    root: Node,
    conditions: Vec<Conditions>,
}

impl RouteTable {
    pub(crate) fn insert(&mut self, pattern: &PathPattern, conditions: Conditions) {
        let idx = self.conditions.len() as u32;
        self.conditions.push(conditions);
        let (segs, list) = match pattern {
            PathPattern::Exact(s) => (s, 0),
            PathPattern::Prefix(s) => (s, 1),
            PathPattern::CatchAll(s) => (s, 2),
        };
        let mut node = &mut self.root;
        for seg in segs {
            node = node.child(seg);
        }
        match list {
            0 => node.exact.push(idx),
            1 => node.prefix.push(idx),
            _ => node.catch_all.push(idx),
        }
    }

    /// The index (in insertion order) of the route that matches.
    pub(crate) fn find(&self, req: &RequestView<'_>) -> Option<usize> {
        self.walk(&self.root, req.uri.path(), req)
            .map(|i| i as usize)
    }

    fn walk(&self, node: &Node, path: &str, req: &RequestView<'_>) -> Option<u32> {
        let rest = path.trim_start_matches('/');
        let check = |list: &[u32]| {
            list.iter()
                .copied()
                .find(|&i| self.conditions[i as usize].matches(req))
        };
        if rest.is_empty() {
            if let Some(i) = check(&node.exact) {
                return Some(i);
            }
        } else {
            let (seg, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if let Some(child) = node.statics.get(seg)
                && let Some(found) = self.walk(child, tail, req)
            {
                return Some(found);
            }
            if let Some(param) = &node.param
                && let Some(found) = self.walk(param, tail, req)
            {
                return Some(found);
            }
            if let Some(i) = check(&node.catch_all) {
                return Some(i);
            }
        }
        check(&node.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> RouteTable {
        let mut t = RouteTable::default();
        for (kind, p) in routes {
            let pat = match *kind {
                "exact" => PathPattern::Exact(parse_literal_path(p).unwrap()),
                "prefix" => PathPattern::Prefix(parse_literal_path(p).unwrap()),
                _ => parse_template(p).unwrap(),
            };
            t.insert(&pat, Conditions::default());
        }
        t
    }

    fn find(t: &RouteTable, path: &str) -> Option<usize> {
        let uri: Uri = path.parse().unwrap();
        let headers = HeaderMap::new();
        t.find(&RequestView {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            host: None,
        })
    }

    #[test]
    fn precedence() {
        let t = table(&[
            ("prefix", "/orders"),
            ("template", "/orders/{id}"),
            ("exact", "/orders/new"),
            ("template", "/files/{*rest}"),
            ("prefix", "/"),
        ]);
        assert_eq!(find(&t, "/orders"), Some(0));
        assert_eq!(find(&t, "/orders/42"), Some(1));
        assert_eq!(find(&t, "/orders/new"), Some(2));
        assert_eq!(find(&t, "/orders/42/items"), Some(0));
        assert_eq!(find(&t, "/ordersx"), Some(4));
        assert_eq!(find(&t, "/files"), Some(4));
        assert_eq!(find(&t, "/files/a/b"), Some(3));
        assert_eq!(find(&t, "//orders//42/"), Some(1));
    }

    #[test]
    fn no_match() {
        let t = table(&[("exact", "/a"), ("template", "/b/{x}")]);
        assert_eq!(find(&t, "/"), None);
        assert_eq!(find(&t, "/a/b"), None);
        assert_eq!(find(&t, "/b"), None);
        assert_eq!(find(&t, "/A"), None);
    }

    #[test]
    fn bad_templates() {
        for bad in [
            "orders", "/a/{}", "/a/{x", "/a/x{id}", "/{*r}/x", "/{a}/{a}", "/a?b", "/{a-b}",
        ] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
        assert!(parse_literal_path("/a/{id}").is_err());
    }

    #[test]
    fn hosts() {
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(host_matches("*.example.com", "a.b.EXAMPLE.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "evilexample.com"));
        assert!(host_matches("api.example.com", "API.example.com"));
    }
}
