//! Path confusion: spellings of `/admin` that a gateway and an upstream
//! could read differently never reach the admin upstream without the key.

use crate::support::{API_KEY, edge, get, raw, settle};

/// What the gateway must do with a request target.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// It is `/admin…` once normalised: 401 without the key; with it the
    /// admin upstream receives exactly this normalised target.
    Admin(&'static str),
    /// Refused by policy (or by hyper's parser): 400.
    BadRequest,
    /// Not the admin route: the public upstream receives exactly this
    /// target, the one that was matched.
    Public(&'static str),
}

use Expect::{Admin, BadRequest, Public};

/// Request targets as sent on the wire, byte for byte.
const CASES: &[(&str, Expect)] = &[
    ("/admin", Admin("/admin")),
    ("/public/../admin", Admin("/admin")),
    ("/public/%2e%2e/admin", Admin("/admin")),
    ("/public/%2E%2E/admin", Admin("/admin")),
    ("/public/.%2e/admin", Admin("/admin")),
    ("/%2e%2e/admin", Admin("/admin")),
    ("/../admin", Admin("/admin")),
    ("/public/./../admin", Admin("/admin")),
    ("/public/../../../admin", Admin("/admin")),
    ("//admin", Admin("/admin")),
    ("///admin//users", Admin("/admin/users")),
    ("/admin/./", Admin("/admin/")),
    ("/admin/.", Admin("/admin/")),
    ("/%61dmin", Admin("/admin")),
    ("/adm%69n/x", Admin("/admin/x")),
    (
        "/public/../admin?next=/public/../x",
        Admin("/admin?next=/public/../x"),
    ),
    ("http://gw.test/public/../admin", Admin("/admin")),
    ("/ADMIN", Public("/ADMIN")),
    ("/Admin/users", Public("/Admin/users")),
    ("/%41DMIN", Public("/ADMIN")),
    ("/admin/../public/x", Public("/public/x")),
    ("/public/..", Public("/")),
    ("/admin%3bx", Public("/admin%3Bx")),
    ("/admin;x", BadRequest),
    ("/admin;/", BadRequest),
    ("/public/..;/admin", BadRequest),
    ("%2Fadmin", BadRequest),
    ("/%2Fadmin", BadRequest),
    ("/public%2F..%2Fadmin", BadRequest),
    ("/public/..%2fadmin", BadRequest),
    ("/public/%2e%2e%2fadmin", BadRequest),
    ("/public/..%5cadmin", BadRequest),
    ("/public/..%5Cadmin", BadRequest),
    ("/public\\..\\admin", BadRequest),
    ("/public/..\\admin", BadRequest),
    ("\\admin", BadRequest),
    ("/admin%00", BadRequest),
    ("/public/%2e%2e/admin%", BadRequest),
    ("/public/%zz/../admin", BadRequest),
    ("*", BadRequest),
];

#[tokio::test]
async fn path_confusion_never_reaches_admin_without_the_key() {
    let edge = edge("").await;
    for &(target, expect) in CASES {
        edge.public.clear();
        let resp = raw(edge.gw, &get(target, &[])).await;
        match expect {
            Admin(_) => resp.assert_problem(401, "unauthenticated"),
            BadRequest => assert_eq!(resp.status, 400, "{target}: {}", resp.text()),
            Public(path) => {
                assert_eq!(resp.status, 200, "{target}: {}", resp.text());
                assert_eq!(resp.text(), "public", "{target}");
                assert_eq!(edge.public.only().target, path, "{target}");
            }
        }
        // An upstream records a request before it answers, so whatever was
        // forwarded is in the logs by now.
        if !matches!(expect, Public(_)) {
            assert_eq!(edge.public.count(), 0, "{target} reached public");
        }
        assert_eq!(edge.admin.count(), 0, "{target} reached admin: {expect:?}");
    }
    settle().await;
    assert_eq!(edge.admin.count(), 0, "admin: {:?}", edge.admin.requests());
}

#[tokio::test]
async fn with_the_key_admin_receives_the_normalised_path() {
    let edge = edge("").await;
    let key = format!("x-api-key: {API_KEY}");
    for &(target, expect) in CASES {
        edge.public.clear();
        edge.admin.clear();
        let resp = raw(edge.gw, &get(target, &[&key])).await;
        match expect {
            Admin(path) => {
                assert_eq!(resp.status, 200, "{target}: {}", resp.text());
                assert_eq!(resp.text(), "admin", "{target}");
                assert_eq!(edge.admin.only().target, path, "{target}");
                assert_eq!(edge.public.count(), 0, "{target}");
            }
            BadRequest => {
                assert_eq!(resp.status, 400, "{target}: {}", resp.text());
                assert_eq!(edge.admin.count() + edge.public.count(), 0, "{target}");
            }
            Public(path) => {
                assert_eq!(resp.text(), "public", "{target}");
                assert_eq!(edge.public.only().target, path, "{target}");
                assert_eq!(edge.admin.count(), 0, "{target}");
            }
        }
    }
}

/// With `encoded_slashes = "keep"` and `semicolons = "allow"` the ambiguous
/// spellings are kept as they are: they are one segment that is not
/// `admin`, so they go to the catch-all, and the public upstream receives
/// exactly what was matched.
#[tokio::test]
async fn lenient_policy_keeps_ambiguous_segments_off_the_admin_route() {
    let edge = edge(
        r#"
        encoded_slashes = "keep"
        semicolons = "allow"
        "#,
    )
    .await;
    for (target, seen) in [
        ("/public%2F..%2Fadmin", "/public%2F..%2Fadmin"),
        ("/public/..%2fadmin", "/public/..%2Fadmin"),
        ("/%2Fadmin", "/%2Fadmin"),
        ("/public/..%5cadmin", "/public/..%5Cadmin"),
        ("/admin;x", "/admin;x"),
        ("/admin;x/users", "/admin;x/users"),
        ("/public/..;/admin", "/public/..;/admin"),
    ] {
        edge.public.clear();
        let resp = raw(edge.gw, &get(target, &[])).await;
        assert_eq!(resp.status, 200, "{target}: {}", resp.text());
        assert_eq!(edge.public.only().target, seen, "{target}");
    }
    for (target, status) in [
        ("/public/../admin", 401),
        ("/admin;x/../../admin", 401),
        ("/public\\..\\admin", 400),
    ] {
        let resp = raw(edge.gw, &get(target, &[])).await;
        assert_eq!(resp.status, status, "{target}: {}", resp.text());
    }
    settle().await;
    assert_eq!(edge.admin.count(), 0);
}
