//! Label cardinality stays bounded whatever clients send.

use std::collections::BTreeSet;

use axum::routing::get;

use crate::support::{self, call, recorded, request};

#[test]
fn random_paths_and_methods_add_no_label_values() {
    const REQUESTS: usize = 10_000;
    let (stats_routes, rec) = recorded(async {
        let mesh = support::mesh(
            "orders",
            r#"
[[routes]]
id = "orders"
match = { path_template = "/orders/{id}" }
"#,
        )
        .await;
        let app = axum::Router::new()
            .route("/orders/{id}", get(|| async { "an order" }))
            .layer(mesh.inbound());
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            // xorshift64
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        const CHARS: &[u8] = b"abcxyz019/-_.";
        for i in 0..REQUESTS {
            let len = 1 + next() % 40;
            let path: String = (0..len)
                .map(|_| CHARS[(next() % CHARS.len() as u64) as usize] as char)
                .collect();
            // One in ten with a made-up method.
            let method = if i % 10 == 0 {
                format!("X{}", next() % 1_000_000)
            } else {
                "GET".to_owned()
            };
            let r = call(&app, request(&method, &format!("/{path}"), &[])).await;
            assert!(r.status.is_client_error(), "{path}: {}", r.status);
        }
        // And a few to the route itself.
        for id in 0..10 {
            call(&app, request("GET", &format!("/orders/{id}"), &[])).await;
        }
        mesh.stats().tick();
        mesh.stats()
            .routes(10)
            .into_iter()
            .map(|r| r.route)
            .collect::<BTreeSet<_>>()
    });
    let series = rec.metrics.named("http.server.request.duration");
    let values = |label: &str| -> BTreeSet<&str> {
        series
            .iter()
            .map(|m| m.labels.get(label).map_or("<none>", String::as_str))
            .collect()
    };
    assert_eq!(
        values("http.route"),
        BTreeSet::from(["/orders/{id}", "unmatched"])
    );
    assert_eq!(
        values("http.request.method"),
        BTreeSet::from(["GET", "_OTHER"])
    );
    assert!(series.len() <= 6, "{series:#?}");
    let recorded: usize = series.iter().map(|m| m.samples().len()).sum();
    assert_eq!(recorded, REQUESTS + 10);
    // The dashboard's statistics are bounded the same way.
    assert_eq!(
        stats_routes,
        BTreeSet::from(["orders".to_owned(), "unmatched".to_owned()])
    );
}
