//! Spellings of a path cannot escape its route's limit: `/a`, `//a` and
//! `/a/` are one route and one bucket; percent-encoded slashes and dot
//! segments match no route and are answered 404 (never served unlimited).

use crate::support::{self, App, assert_limited, assert_ok, assert_ok_with};

async fn paths_app(key: &str) -> App {
    support::app(&format!(
        r#"
[[routes]]
id = "a"
match = {{ path = "/a" }}
rate_limit = {{ limits = [{{ rate = "1/h", burst = 3, key = ["{key}"] }}] }}

[[routes]]
id = "p"
match = {{ path_prefix = "/p" }}
rate_limit = {{ limits = [{{ rate = "1/h", burst = 3, key = ["{key}"] }}] }}
"#
    ))
    .await
}

/// Every alternative spelling is refused: 404 for those that match no route,
/// 429 for those that match the exhausted one. Never 200.
#[track_caller]
fn assert_not_served(path: &str, r: &support::Reply, expect: u16) {
    assert_ne!(
        r.status, 200,
        "{path} was served past the limit: {:?}",
        r.body
    );
    assert_eq!(r.status, expect, "{path}: {:?}", r.body);
    if expect == 404 {
        let body = r.json();
        assert!(
            body["type"].as_str().unwrap().ends_with("/route-not-found"),
            "{body}"
        );
    } else {
        assert_limited(r);
    }
}

async fn spellings_share_one_bucket(key: &str) {
    let app = paths_app(key).await;
    for (i, path) in ["/a", "//a", "/a/"].into_iter().enumerate() {
        let r = app.get(path, &[]).await;
        assert_ok_with(&r, &format!("\"a-0\";r={};t={}", 2 - i, 3_600 * (i + 1)));
        assert_eq!(r.route(), "a");
        assert_eq!(r.json()["path"], path);
    }
    for path in ["/a", "//a", "/a/", "///a//", "/a?x=1", "/a/?"] {
        assert_not_served(path, &app.get(path, &[]).await, 429);
    }
    for path in [
        "/a%2F", "/%2Fa", "/%61", "/A", "/./a", "/a/.", "/b/../a", "/a%00", "/a%20",
    ] {
        assert_not_served(path, &app.get(path, &[]).await, 404);
    }
}

#[tokio::test]
async fn spellings_of_an_exact_path_share_one_route_bucket() {
    spellings_share_one_bucket("route").await;
}

#[tokio::test]
async fn spellings_of_an_exact_path_share_one_ip_bucket() {
    spellings_share_one_bucket("ip").await;
}

#[tokio::test]
async fn a_prefix_route_limits_every_path_under_it() {
    let app = paths_app("ip").await;
    for path in ["/p", "//p/x", "/p/x%2Fy"] {
        let r = app.get(path, &[]).await;
        assert_ok(&r);
        assert_eq!(r.route(), "p");
    }
    for path in ["/p", "/p/", "/p//q", "/p/%2F", "/p/a/b/c", "/p/.."] {
        assert_not_served(path, &app.get(path, &[]).await, 429);
    }
    // Not on a segment boundary, or encoded: no route.
    for path in ["/px", "/%70", "/%2Fp"] {
        assert_not_served(path, &app.get(path, &[]).await, 404);
    }
}
