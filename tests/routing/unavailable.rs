//! The client as a tower service: mesh failures are rendered responses (a
//! problem document, or a gRPC status), and a tonic client can use it as
//! its transport.

use std::time::Duration;

use apimesh::MeshError;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_testproto::echo::echo_client::EchoClient;
use mesh_testproto::echo::echo_server::{Echo, EchoServer};
use mesh_testproto::echo::{SayReply, SayRequest};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::support::mesh;

const NO_ENDPOINTS: &str = r#"
[[services]]
name = "inventory"
"#;

#[tokio::test]
async fn no_endpoints_is_a_fast_503_problem() {
    let f = mesh(NO_ENDPOINTS).await;
    let client = f.mesh.client("inventory");
    let started = Instant::now();
    let resp = client
        .oneshot(
            http::Request::get("/stock/42")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let err = resp.extensions().get::<MeshError>().unwrap();
    assert_eq!(err.kind(), "unavailable");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["type"], "https://apimesh.dev/problems/unavailable");
    assert!(
        problem["detail"].as_str().unwrap().contains("inventory"),
        "{problem}"
    );

    // A service the registry does not know at all fails the same way.
    let resp = f
        .mesh
        .client("nowhere")
        .oneshot(http::Request::get("/").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn no_endpoints_is_grpc_unavailable_for_a_grpc_request() {
    let f = mesh(NO_ENDPOINTS).await;
    let resp = f
        .mesh
        .client("inventory")
        .oneshot(
            http::Request::post("/apimesh.echo.v1.Echo/Say")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    // Trailers-only: HTTP 200, the status in the headers, no body.
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert!(resp.headers().contains_key("grpc-message"));
    assert!(resp.extensions().get::<MeshError>().is_some());
    let body = resp.into_body().collect().await.unwrap();
    assert!(body.trailers().is_none());
    assert!(body.to_bytes().is_empty());
}

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(
        &self,
        req: tonic::Request<SayRequest>,
    ) -> Result<tonic::Response<SayReply>, tonic::Status> {
        // Which service called, as the mesh client announced it.
        let caller = req
            .metadata()
            .get("x-apimesh-caller")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok(tonic::Response::new(SayReply {
            message: format!("{} from {caller}", req.into_inner().message),
            revision: 0,
        }))
    }

    async fn shout(
        &self,
        req: tonic::Request<SayRequest>,
    ) -> Result<tonic::Response<SayReply>, tonic::Status> {
        Err(tonic::Status::resource_exhausted(
            req.into_inner().message.to_uppercase(),
        ))
    }
}

#[tokio::test]
async fn a_tonic_client_runs_over_the_mesh_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let f = mesh(&format!(
        r#"
        [[services]]
        name = "echo"
        protocol = "h2c"
        endpoints = [{{ address = "{addr}" }}]

        [[services]]
        name = "inventory"
        "#
    ))
    .await;

    let mut echo = EchoClient::with_origin(f.mesh.client("echo"), "http://echo".parse().unwrap());
    for i in 0..20 {
        let reply = echo
            .say(SayRequest {
                message: format!("hi {i}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.message, format!("hi {i} from orders"));
    }
    // The server's own status comes through unchanged.
    let status = echo
        .shout(SayRequest {
            message: "hey".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "HEY");
    // One h2c endpoint served it all.
    let ep = f
        .mesh
        .outbound()
        .endpoints()
        .into_iter()
        .find(|e| e.service == "echo")
        .unwrap();
    assert_eq!(ep.requests, 21);

    // No endpoints: tonic reads the mesh's trailers-only answer.
    let mut none = EchoClient::new(f.mesh.client("inventory"));
    let status = none
        .say(SayRequest {
            message: "hi".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("inventory"), "{status:?}");
}
