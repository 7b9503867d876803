//! The client IP behind proxies: `X-Forwarded-For` and `Forwarded` count
//! only from a trusted proxy (`[mesh] trusted_proxies`), and then the
//! rightmost address that is not a trusted proxy is the client.

use crate::support::{self, App, Peers, assert_limited, assert_ok, assert_ok_with};

const TRUSTED: &str = "10.0.0.1";
const UNTRUSTED: &str = "203.0.113.7";

async fn proxied_app() -> App {
    proxied_app_reading("x-forwarded-for").await
}

/// Proxies that write `header` (`x-forwarded-for` or `forwarded`).
async fn proxied_app_reading(header: &str) -> App {
    support::app_with(
        &format!(
            r#"
[mesh]
trusted_proxies = ["10.0.0.0/8"]
forwarded_header = "{header}"

[[routes]]
id = "edge"
match = {{ path_prefix = "/edge" }}
rate_limit = {{ limits = [{{ rate = "10/h", burst = 10, key = ["ip"] }}] }}
"#
        ),
        Peers::FromHeader,
    )
    .await
}

/// Ten admitted requests for one client, then refused.
async fn exhaust(app: &App, peer: &str, headers: &[(&str, &str)]) {
    for i in 0..10 {
        let r = app.as_peer(peer, "/edge", headers).await;
        assert_ok_with(&r, &format!("\"edge-0\";r={};t={}", 9 - i, 360 * (i + 1)));
    }
    assert_limited(&app.as_peer(peer, "/edge", headers).await);
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_key_with_forwarding_headers() {
    let app = proxied_app().await;
    for i in 0..10 {
        let xff = format!("198.51.100.{i}");
        let r = app
            .as_peer(UNTRUSTED, "/edge", &[("x-forwarded-for", &xff)])
            .await;
        assert_ok_with(&r, &format!("\"edge-0\";r={};t={}", 9 - i, 360 * (i + 1)));
    }
    // Rotating the headers further changes nothing: it is the peer's bucket.
    for spoof in [
        ("x-forwarded-for", "198.51.100.200"),
        ("x-forwarded-for", "10.0.0.5"),
        ("forwarded", "for=198.51.100.201"),
        ("forwarded", "for=\"[2001:db8::9]:443\""),
        ("x-real-ip", "198.51.100.202"),
    ] {
        assert_limited(&app.as_peer(UNTRUSTED, "/edge", &[spoof]).await);
    }
    // Another untrusted peer is another client.
    assert_ok(&app.as_peer("203.0.113.8", "/edge", &[]).await);
}

#[tokio::test]
async fn a_trusted_proxy_gives_each_forwarded_client_its_own_bucket() {
    let app = proxied_app().await;
    exhaust(&app, TRUSTED, &[("x-forwarded-for", "198.51.100.1")]).await;
    // Another client behind the same proxy: a bucket of its own.
    let r = app
        .as_peer(TRUSTED, "/edge", &[("x-forwarded-for", "198.51.100.2")])
        .await;
    assert_ok_with(&r, "\"edge-0\";r=9;t=360");
    // Another trusted proxy forwarding the first client: same bucket.
    let r = app
        .as_peer("10.9.9.9", "/edge", &[("x-forwarded-for", "198.51.100.1")])
        .await;
    assert_limited(&r);
    // The proxy itself, forwarding nothing, is a client of its own.
    assert_ok(&app.as_peer(TRUSTED, "/edge", &[]).await);
}

#[tokio::test]
async fn a_client_prepended_address_is_ignored_behind_a_trusted_proxy() {
    let app = proxied_app().await;
    exhaust(&app, TRUSTED, &[("x-forwarded-for", "198.51.100.1")]).await;
    for i in 0..5 {
        // The client wrote `6.6.6.i` itself; the proxy appended the address
        // it saw. The rightmost untrusted address wins.
        let chain = format!("6.6.6.{i}, 198.51.100.1");
        assert_limited(
            &app.as_peer(TRUSTED, "/edge", &[("x-forwarded-for", &chain)])
                .await,
        );
        // Through two of our proxies (10.0.0.2 appended by the first).
        let chain = format!("6.6.6.{i}, 198.51.100.1, 10.0.0.2");
        assert_limited(
            &app.as_peer(TRUSTED, "/edge", &[("x-forwarded-for", &chain)])
                .await,
        );
        // The same as two header lines.
        let prefix = format!("6.6.6.{i}");
        assert_limited(
            &app.as_peer(
                TRUSTED,
                "/edge",
                &[
                    ("x-forwarded-for", &prefix),
                    ("x-forwarded-for", "198.51.100.1"),
                ],
            )
            .await,
        );
    }
    // A client that claims to be one of our proxies is still the last
    // untrusted hop's address.
    assert_limited(
        &app.as_peer(
            TRUSTED,
            "/edge",
            &[("x-forwarded-for", "10.0.0.3, 198.51.100.1")],
        )
        .await,
    );
    // Garbage ends the chain at the last trusted hop: the proxy itself,
    // never the address the client wrote before it.
    let r = app
        .as_peer(
            TRUSTED,
            "/edge",
            &[("x-forwarded-for", "198.51.100.7, unknown, 10.0.0.2")],
        )
        .await;
    assert_ok_with(&r, "\"edge-0\";r=9;t=360");
    let r = app
        .as_peer(
            TRUSTED,
            "/edge",
            &[("x-forwarded-for", "198.51.100.8, garbage, 10.0.0.2")],
        )
        .await;
    // Same key as before (10.0.0.2): the bucket counts down.
    assert_ok_with(&r, "\"edge-0\";r=8;t=720");
}

#[tokio::test]
async fn forwarded_for_is_read_from_a_trusted_proxy() {
    let app = proxied_app_reading("forwarded").await;
    exhaust(
        &app,
        TRUSTED,
        &[("forwarded", "for=198.51.100.1;proto=https")],
    )
    .await;
    // The same client quoted with a port, or behind more hops: one bucket.
    for headers in [
        [("forwarded", "for=\"198.51.100.1:4711\"")],
        [("forwarded", "for=6.6.6.6, for=198.51.100.1")],
        [(
            "forwarded",
            "for=6.6.6.6;proto=http, for=198.51.100.1, for=10.0.0.2",
        )],
    ] {
        assert_limited(&app.as_peer(TRUSTED, "/edge", &headers).await);
    }
    // An IPv6 client, quoted with a port, is another client.
    let r = app
        .as_peer(
            TRUSTED,
            "/edge",
            &[("forwarded", "for=\"[2001:db8::1]:443\"")],
        )
        .await;
    assert_ok_with(&r, "\"edge-0\";r=9;t=360");
    let r = app
        .as_peer(TRUSTED, "/edge", &[("forwarded", "for=\"[2001:db8::1]\"")])
        .await;
    assert_ok_with(&r, "\"edge-0\";r=8;t=720");
}

#[tokio::test]
async fn a_direct_client_and_the_same_client_behind_a_proxy_share_a_bucket() {
    let app = proxied_app().await;
    exhaust(&app, UNTRUSTED, &[]).await;
    let r = app
        .as_peer(TRUSTED, "/edge", &[("x-forwarded-for", UNTRUSTED)])
        .await;
    assert_limited(&r);
}

/// A trusted proxy that appends only `X-Forwarded-For` (nginx's
/// `$proxy_add_x_forwarded_for`, most load balancers) passes a client's own
/// `Forwarded` header through untouched: only the configured header is read,
/// so the client cannot pick its own key by rotating `Forwarded: for=...`.
#[tokio::test]
async fn a_client_cannot_choose_its_key_with_a_forwarded_header_the_proxy_did_not_write() {
    let app = proxied_app().await;
    exhaust(&app, TRUSTED, &[("x-forwarded-for", "198.51.100.1")]).await;
    let mut admitted = 0;
    for i in 0..5 {
        let fake = format!("for=6.6.6.{i}");
        let r = app
            .as_peer(
                TRUSTED,
                "/edge",
                &[("x-forwarded-for", "198.51.100.1"), ("forwarded", &fake)],
            )
            .await;
        if r.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 0,
        "client 198.51.100.1 (X-Forwarded-For written by the trusted proxy) escaped its \
         exhausted bucket by sending its own `Forwarded: for=` header"
    );
}
