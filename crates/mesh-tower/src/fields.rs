//! Reading request header fields by name without hashing the name.
//!
//! `http`'s `HeaderMap` hashes a name with FNV on every lookup, one
//! dependent multiply per byte of the name plus eight for its kind: 17
//! rounds for `x-api-key`, 19 for `api-version`, some 70 cycles. Comparing
//! the names of the dozen or so fields a request usually has costs less:
//! most differ in kind (standard or custom) or length at once. Past
//! [`SCAN`] distinct names the map's own lookup is used.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Up to this many distinct names, a lookup scans.
const SCAN: usize = 16;

/// `headers.get(name)`: the first value of `name`.
#[inline]
pub(crate) fn get<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.keys_len() > SCAN {
        return headers.get(name);
    }
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The first value of `name`, and whether there is another.
pub(crate) fn first_and_more<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> (Option<&'a HeaderValue>, bool) {
    fn two<'a>(
        mut values: impl Iterator<Item = &'a HeaderValue>,
    ) -> (Option<&'a HeaderValue>, bool) {
        let first = values.next();
        (first, first.is_some() && values.next().is_some())
    }
    if headers.keys_len() > SCAN {
        two(headers.get_all(name).iter())
    } else {
        two(headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v))
    }
}

/// Calls `f` with each value of `name`, in order: what
/// `headers.get_all(name)` yields.
pub(crate) fn for_each<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    mut f: impl FnMut(&'a HeaderValue),
) {
    if headers.keys_len() > SCAN {
        headers.get_all(name).iter().for_each(f);
    } else {
        headers
            .iter()
            .filter(|(n, _)| *n == name)
            .for_each(|(_, v)| f(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_answer_as_the_map_does() {
        let name = HeaderName::from_static("api-version");
        for fields in [0, 1, 5, 16, 17, 40] {
            for copies in [0, 1, 2, 3] {
                let mut headers = HeaderMap::new();
                for i in 0..fields {
                    let filler = HeaderName::try_from(format!("x-filler-{i}")).unwrap();
                    headers.append(filler, HeaderValue::from_static("x"));
                    if i == fields / 2 {
                        for c in 0..copies {
                            headers.append(&name, HeaderValue::from(c));
                        }
                        headers.append(http::header::ACCEPT, HeaderValue::from_static("*/*"));
                    }
                }
                let what = format!("{fields} fields, {copies} copies");
                assert_eq!(get(&headers, &name), headers.get(&name), "{what}");
                let all: Vec<_> = headers.get_all(&name).iter().collect();
                assert_eq!(
                    first_and_more(&headers, &name),
                    (all.first().copied(), all.len() > 1),
                    "{what}"
                );
                let mut each = Vec::new();
                for_each(&headers, &name, |v| each.push(v));
                assert_eq!(each, all, "{what}");
                let absent = HeaderName::from_static("api-versio");
                assert_eq!(get(&headers, &absent), None);
                assert_eq!(first_and_more(&headers, &absent), (None, false));
                assert_eq!(
                    get(&headers, &http::header::ACCEPT),
                    headers.get(http::header::ACCEPT),
                    "{what}"
                );
            }
        }
    }
}
