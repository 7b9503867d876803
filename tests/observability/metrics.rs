//! Request metrics with OpenTelemetry names, units and labels; the access
//! log and the request span.

use apimesh::Mesh;
use axum::routing::{get, post};
use metrics::Unit;

use crate::support::{self, call, grpc_status, recorded, request};

/// The registry with `[observability]` settings `observability`; `demo-key`
/// is the API key of the consumer `demo`.
fn config(observability: &str) -> String {
    format!("[observability]\n{observability}\n{ROUTES}")
}

const ROUTES: &str = r#"
[[apis]]
name = "orders"
versions = [{ version = "v1" }, { version = "v2" }]

[[consumers]]
id = "demo"
api_keys = ["sha256:c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c"]

[[routes]]
id = "orders-v2"
api = "orders"
version = "v2"
match = { path_template = "/v2/orders/{id}" }
auth = { require = ["api_key"] }

[[routes]]
id = "boom"
match = { path = "/boom" }

[[routes]]
id = "echo"
match = { path = "/echo.Echo/Say" }
"#;

fn app(mesh: &Mesh) -> axum::Router {
    axum::Router::new()
        .route("/v2/orders/{id}", get(|| async { "an order" }))
        .route(
            "/boom",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        // NOT_FOUND, trailers-only.
        .route("/echo.Echo/Say", post(|| async { grpc_status(5) }))
        .layer(mesh.inbound())
}

const KEY: (&str, &str) = ("x-api-key", "demo-key");

#[test]
fn server_durations_have_otel_names_units_and_labels() {
    let ((), rec) = recorded(async {
        let mesh = support::mesh("orders", &config("consumer_label = true")).await;
        let app = app(&mesh);
        for id in 1..=3 {
            let r = call(&app, request("GET", &format!("/v2/orders/{id}"), &[KEY])).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(
            call(&app, request("GET", "/v2/orders/9", &[])).await.status,
            401
        );
        assert_eq!(call(&app, request("GET", "/boom", &[])).await.status, 500);
        let grpc = request(
            "POST",
            "/echo.Echo/Say",
            &[("content-type", "application/grpc")],
        );
        assert_eq!(call(&app, grpc).await.status, 200);
        assert_eq!(
            call(&app, request("GET", "/no/such/path", &[]))
                .await
                .status,
            404
        );
    });
    let m = &rec.metrics;
    const NAME: &str = "http.server.request.duration";

    let ok = m.exact(
        NAME,
        &[
            ("http.route", "/v2/orders/{id}"),
            ("http.request.method", "GET"),
            ("http.response.status_code", "200"),
            ("apimesh.api", "orders"),
            ("apimesh.api.version", "v2"),
            ("apimesh.consumer", "demo"),
        ],
    );
    assert_eq!(ok.unit, Some(Unit::Seconds));
    assert_eq!(ok.kind, metrics_util::MetricKind::Histogram);
    let samples = ok.samples();
    assert_eq!(samples.len(), 3);
    assert!(
        samples.iter().all(|s| *s > 0.0 && *s < 1.0),
        "durations are seconds: {samples:?}"
    );

    // No consumer was identified: no consumer label.
    m.exact(
        NAME,
        &[
            ("http.route", "/v2/orders/{id}"),
            ("http.request.method", "GET"),
            ("http.response.status_code", "401"),
            ("apimesh.api", "orders"),
            ("apimesh.api.version", "v2"),
        ],
    );
    m.exact(
        NAME,
        &[
            ("http.route", "/boom"),
            ("http.request.method", "GET"),
            ("http.response.status_code", "500"),
        ],
    );
    // Unmatched requests share one label, never their path.
    let unmatched = m.exact(
        NAME,
        &[
            ("http.route", "unmatched"),
            ("http.request.method", "GET"),
            ("http.response.status_code", "404"),
        ],
    );
    assert_eq!(unmatched.samples().len(), 1);

    // gRPC calls are RPC metrics with the gRPC status, not the HTTP one.
    let rpc = m.exact(
        "rpc.server.call.duration",
        &[
            ("http.route", "/echo.Echo/Say"),
            ("http.request.method", "POST"),
            ("rpc.system", "grpc"),
            ("rpc.grpc.status_code", "5"),
        ],
    );
    assert_eq!(rpc.unit, Some(Unit::Seconds));
    assert!(
        m.matching(NAME, &[("http.route", "/echo.Echo/Say")])
            .is_empty()
    );

    // Seven requests, seven access-log events, each inside its span.
    let access = rec.traces.events("apimesh::access");
    assert_eq!(access.len(), 7, "{access:#?}");
    let first = &access[0];
    assert_eq!(first.field("method"), "GET");
    assert_eq!(first.field("path"), "/v2/orders/1");
    assert_eq!(first.field("route"), "/v2/orders/{id}");
    assert_eq!(first.field("route_id"), "orders-v2");
    assert_eq!(first.field("status"), "200");
    assert_eq!(first.field("consumer"), "demo");
    assert_eq!(first.field("api"), "orders");
    assert_eq!(first.field("version"), "v2");
    assert!(first.field("duration_ms").parse::<f64>().unwrap() > 0.0);
    let grpc = access
        .iter()
        .find(|e| e.field("path") == "/echo.Echo/Say")
        .unwrap();
    assert_eq!(grpc.field("grpc_status"), "5");

    let spans = rec.traces.spans("http.server");
    assert_eq!(spans.len(), 7);
    let s = &spans[0];
    assert_eq!(s.field("otel.kind"), "server");
    assert_eq!(s.field("otel.name"), "GET /v2/orders/{id}");
    assert_eq!(s.field("http.request.method"), "GET");
    assert_eq!(s.field("http.route"), "/v2/orders/{id}");
    assert_eq!(s.field("http.response.status_code"), "200");
    assert_eq!(s.field("url.path"), "/v2/orders/1");
}

#[test]
fn the_access_log_is_sampled() {
    let sampled = |share: &'static str| {
        let (_, rec) = recorded(async move {
            let mesh =
                support::mesh("orders", &config(&format!("access_log_sample = {share}"))).await;
            let app = app(&mesh);
            for _ in 0..400 {
                call(&app, request("GET", "/boom", &[])).await;
            }
        });
        // Metrics count every request whatever the sampling.
        let all = rec.metrics.exact(
            "http.server.request.duration",
            &[
                ("http.route", "/boom"),
                ("http.request.method", "GET"),
                ("http.response.status_code", "500"),
            ],
        );
        assert_eq!(all.samples().len(), 400);
        rec.traces.events("apimesh::access").len()
    };
    assert_eq!(sampled("0"), 0);
    assert_eq!(sampled("1.0"), 400);
    let half = sampled("0.5");
    // Binomial(400, 0.5): outside 130..270 once in ~1e12 runs.
    assert!((130..270).contains(&half), "{half} of 400 logged at 0.5");
}

#[test]
fn client_durations_per_destination_and_endpoint() {
    let (b_port, rec) = recorded(async {
        let upstream = axum::Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/busy",
                get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "busy") }),
            )
            // UNAVAILABLE, trailers-only.
            .route("/echo.Echo/Fail", post(|| async { grpc_status(14) }))
            // The status would come in trailers: the head says nothing more.
            .route(
                "/echo.Echo/Say",
                post(|| async { ([("content-type", "application/grpc")], "") }),
            );
        let b = support::serve(upstream).await;
        let down = support::refused_addr().await;
        let mesh = support::mesh(
            "orders",
            &format!(
                r#"
[[services]]
name = "b"
endpoints = [{{ address = "{b}" }}]

[[services]]
name = "down"
endpoints = [{{ address = "{down}" }}]
"#
            ),
        )
        .await;
        let client = mesh.client("b");
        for _ in 0..3 {
            assert_eq!(client.get("/ok").send().await.unwrap().status(), 200);
        }
        assert_eq!(client.get("/busy").send().await.unwrap().status(), 503);
        let grpc = |path: &str| {
            client
                .post(path)
                .header("content-type", "application/grpc")
                .send()
        };
        grpc("/echo.Echo/Fail").await.unwrap();
        grpc("/echo.Echo/Say").await.unwrap();
        grpc("/echo.Echo/Say").await.unwrap();
        assert!(mesh.client("down").get("/x").send().await.is_err());
        b.port()
    });
    let m = &rec.metrics;
    let port = b_port.to_string();
    let http = |status: &str| {
        m.exact(
            "http.client.request.duration",
            &[
                ("apimesh.destination", "b"),
                ("server.address", "127.0.0.1"),
                ("server.port", &port),
                ("http.request.method", "GET"),
                ("http.response.status_code", status),
            ],
        )
    };
    let ok = http("200");
    assert_eq!(ok.unit, Some(Unit::Seconds));
    assert_eq!(ok.samples().len(), 3);
    assert!(ok.samples().iter().all(|s| *s > 0.0 && *s < 1.0));
    assert_eq!(http("503").samples().len(), 1);

    let rpc = |code: &str| {
        m.exact(
            "rpc.client.call.duration",
            &[
                ("apimesh.destination", "b"),
                ("server.address", "127.0.0.1"),
                ("server.port", &port),
                ("rpc.system", "grpc"),
                ("rpc.grpc.status_code", code),
            ],
        )
    };
    assert_eq!(rpc("14").samples().len(), 1);
    assert_eq!(rpc("14").unit, Some(Unit::Seconds));
    assert_eq!(rpc("0").samples().len(), 2);

    // No answer: `error.type` instead of a status.
    let refused = m.matching(
        "http.client.request.duration",
        &[("apimesh.destination", "down"), ("error.type", "connect")],
    );
    assert_eq!(
        refused.len(),
        1,
        "{:#?}",
        m.named("http.client.request.duration")
    );
    assert!(!refused[0].labels.contains_key("http.response.status_code"));

    // Requests and attempts.
    assert_eq!(
        m.exact("apimesh.client.requests", &[("service", "b")])
            .count(),
        7
    );
    assert_eq!(
        m.exact("apimesh.client.attempts", &[("service", "b")])
            .count(),
        7
    );
}

/// Handles are resolved per route once per revision, on first use, with the
/// recorder current then: requests before a recorder exists record nothing
/// (but count on the dashboard), later ones reach the recorder installed
/// meanwhile, and a new revision's labels apply to the next request.
#[test]
fn handles_follow_a_later_recorder_and_each_revision() {
    use std::sync::Arc;

    use apimesh::{InboundLayer, LiveSnapshot, ObserveLayer, Snapshot, Stats};
    use tower::{Layer, ServiceExt, service_fn};

    let snapshot = |revision: u64, version: &str| {
        let toml = format!(
            r#"
            [[apis]]
            name = "orders"
            versions = [{{ version = "v1" }}, {{ version = "v2" }}]

            [[routes]]
            id = "orders"
            api = "orders"
            version = "{version}"
            match = {{ path_template = "/orders/{{id}}" }}
            "#
        );
        Arc::new(Snapshot::from_toml(&toml, revision).unwrap())
    };
    let live = LiveSnapshot::fixed(snapshot(1, "v1"));
    let stats = Stats::new();
    let svc = ObserveLayer::new(live.clone(), stats.clone()).layer(
        InboundLayer::new(live.clone()).layer(service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        })),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let hit = || {
        let req = http::Request::get("/orders/1").body(()).unwrap();
        let res = rt.block_on(svc.clone().oneshot(req)).unwrap();
        assert_eq!(res.status(), 200);
    };

    hit();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        hit();
        hit();
        assert!(live.store(snapshot(2, "v2")));
        hit();
    });

    // A snapshot drains the histograms: take one.
    let recorded = snapshotter.snapshot().into_vec();
    let samples = |version: &str| -> usize {
        recorded
            .iter()
            .filter(|(key, ..)| {
                let key = key.key();
                key.name() == "http.server.request.duration"
                    && key
                        .labels()
                        .any(|l| l.key() == "apimesh.api.version" && l.value() == version)
            })
            .map(|(.., value)| match value {
                metrics_util::debugging::DebugValue::Histogram(v) => v.len(),
                other => panic!("not a histogram: {other:?}"),
            })
            .sum()
    };
    assert_eq!(samples("v1"), 2);
    assert_eq!(samples("v2"), 1);
    let versions = stats.versions();
    assert_eq!(
        versions,
        [
            ("orders".to_owned(), "v1".to_owned(), 3),
            ("orders".to_owned(), "v2".to_owned(), 1),
        ]
    );
}
