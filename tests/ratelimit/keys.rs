//! What a limit is counted by: a header, the consumer, the route, the
//! client IP, and compounds of them.

use crate::support::{
    self, ACME_KEY, GLOBEX_KEY, INITECH_KEY, Peers, assert_limited, assert_ok, assert_ok_with,
};

#[tokio::test]
async fn header_key_gives_each_tenant_its_own_bucket() {
    let app = support::app(
        r#"
[[routes]]
id = "tenants"
match = { path_prefix = "/t" }
rate_limit = { limits = [{ rate = "1/h", burst = 2, key = ["header:x-tenant"] }] }
"#,
    )
    .await;
    for tenant in ["red", "blue"] {
        let h = [("x-tenant", tenant)];
        assert_ok_with(&app.get("/t", &h).await, "\"tenants-0\";r=1;t=3600");
        assert_ok_with(&app.get("/t", &h).await, "\"tenants-0\";r=0;t=7200");
        assert_limited(&app.get("/t", &h).await);
    }
    // The value is compared exactly: another spelling is another tenant.
    assert_ok(&app.get("/t", &[("x-tenant", "RED")]).await);
    // No header at all is a bucket of its own too (shared by every request
    // that omits it).
    assert_ok(&app.get("/t", &[]).await);
    assert_ok(&app.get("/t", &[]).await);
    assert_limited(&app.get("/t", &[]).await);
    assert_ok(&app.get("/t", &[("x-tenant", "green")]).await);
}

#[tokio::test]
async fn consumer_key_gives_each_consumer_its_own_bucket() {
    let app = support::app(&format!(
        r#"
{}
[[routes]]
id = "per-consumer"
match = {{ path_prefix = "/c" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ limits = [{{ rate = "1/h", burst = 2, key = ["consumer"] }}] }}
"#,
        support::consumers("")
    ))
    .await;
    assert_ok_with(
        &app.keyed("/c", ACME_KEY).await,
        "\"per-consumer-0\";r=1;t=3600",
    );
    assert_ok_with(
        &app.keyed("/c/1", ACME_KEY).await,
        "\"per-consumer-0\";r=0;t=7200",
    );
    let r = app.keyed("/c/2", ACME_KEY).await;
    assert_limited(&r);
    // Same IP, other consumers: fresh buckets.
    assert_ok_with(
        &app.keyed("/c", GLOBEX_KEY).await,
        "\"per-consumer-0\";r=1;t=3600",
    );
    assert_ok_with(
        &app.keyed("/c", INITECH_KEY).await,
        "\"per-consumer-0\";r=1;t=3600",
    );
    // A bad key is refused by authentication before it can use a bucket.
    assert_eq!(app.keyed("/c", "nobody-1234567").await.status, 401);
    assert_ok_with(
        &app.keyed("/c", GLOBEX_KEY).await,
        "\"per-consumer-0\";r=0;t=7200",
    );
    assert_limited(&app.keyed("/c", GLOBEX_KEY).await);
}

#[tokio::test]
async fn route_key_is_shared_by_every_caller_of_the_route() {
    let app = support::app_with(
        r#"
[[routes]]
id = "one"
match = { path_prefix = "/one" }
rate_limit = { limits = [{ rate = "1/h", burst = 3, key = ["route"] }] }

[[routes]]
id = "two"
match = { path_prefix = "/two" }
rate_limit = { limits = [{ rate = "1/h", burst = 3, key = ["route"] }] }
"#,
        Peers::FromHeader,
    )
    .await;
    // Three different clients (peers, tenants) share route one's bucket.
    assert_ok(&app.as_peer("192.0.2.1", "/one", &[("x-tenant", "a")]).await);
    assert_ok(
        &app.as_peer("192.0.2.2", "/one/x", &[("x-tenant", "b")])
            .await,
    );
    assert_ok(&app.as_peer("192.0.2.3", "/one/y", &[]).await);
    assert_limited(&app.as_peer("192.0.2.4", "/one", &[]).await);
    // Route two has the same limit and its own bucket.
    let r = app.as_peer("192.0.2.1", "/two", &[]).await;
    assert_ok_with(&r, "\"two-0\";r=2;t=3600");
    assert_eq!(r.route(), "two");
}

#[tokio::test]
async fn ip_is_the_default_key() {
    let app = support::app_with(
        r#"
[[routes]]
id = "by-ip"
match = { path_prefix = "/ip" }
rate_limit = { limits = [{ rate = "1/h", burst = 2 }] }
"#,
        Peers::FromHeader,
    )
    .await;
    for _ in 0..2 {
        assert_ok(&app.as_peer("198.51.100.1", "/ip", &[]).await);
    }
    assert_limited(&app.as_peer("198.51.100.1", "/ip", &[]).await);
    assert_ok(&app.as_peer("198.51.100.2", "/ip", &[]).await);
    assert_ok(&app.as_peer("2001:db8::1", "/ip", &[]).await);
    assert_ok(&app.as_peer("2001:db8::2", "/ip", &[]).await);
}

#[tokio::test]
async fn compound_key_needs_every_part_to_match() {
    let app = support::app_with(
        r#"
[[routes]]
id = "compound"
match = { path_prefix = "/k" }
rate_limit = { limits = [{ rate = "1/h", burst = 2, key = ["ip", "header:x-tenant"] }] }
"#,
        Peers::FromHeader,
    )
    .await;
    let red = [("x-tenant", "red")];
    let blue = [("x-tenant", "blue")];
    assert_ok(&app.as_peer("198.51.100.1", "/k", &red).await);
    assert_ok(&app.as_peer("198.51.100.1", "/k", &red).await);
    assert_limited(&app.as_peer("198.51.100.1", "/k", &red).await);
    // Same IP, other tenant; same tenant, other IP: both fresh.
    assert_ok_with(
        &app.as_peer("198.51.100.1", "/k", &blue).await,
        "\"compound-0\";r=1;t=3600",
    );
    assert_ok_with(
        &app.as_peer("198.51.100.2", "/k", &red).await,
        "\"compound-0\";r=1;t=3600",
    );
    // And the exhausted pair stays exhausted.
    assert_limited(&app.as_peer("198.51.100.1", "/k", &red).await);
}

#[tokio::test]
async fn ip_key_with_connect_info_is_the_loopback_peer() {
    // Served with `ConnectInfo`: every connection is 127.0.0.1, whatever
    // the client writes in X-Forwarded-For (no trusted proxies).
    let app = support::app(
        r#"
[[routes]]
id = "direct"
match = { path_prefix = "/d" }
rate_limit = { limits = [{ rate = "1/h", burst = 2, key = ["ip"] }] }
"#,
    )
    .await;
    assert_ok(&app.get("/d", &[("x-forwarded-for", "1.1.1.1")]).await);
    assert_ok(&app.get("/d", &[("x-forwarded-for", "2.2.2.2")]).await);
    assert_limited(&app.get("/d", &[("x-forwarded-for", "3.3.3.3")]).await);
    assert_limited(&app.get("/d", &[("forwarded", "for=4.4.4.4")]).await);
    // A fresh client connection is the same IP.
    let other = support::client();
    let r = support::get_with(&other, app.addr, "/d", &[]).await;
    assert_limited(&r);
}
