//! Errors reach a real tonic client as the right gRPC status.

use apimesh::registry::MemoryRegistry;
use apimesh::{MatchedRoute, Mesh, Unmatched};
use mesh_testproto::echo::echo_client::EchoClient;
use mesh_testproto::echo::echo_server::{Echo, EchoServer};
use mesh_testproto::echo::{SayReply, SayRequest};
use tonic::{Code, Request, Response, Status};

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let revision = req
            .extensions()
            .get::<MatchedRoute>()
            .map_or(0, |m| m.revision());
        Ok(Response::new(SayReply {
            message: req.into_inner().message,
            revision,
        }))
    }
    async fn shout(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        Ok(Response::new(SayReply {
            message: req.into_inner().message.to_uppercase(),
            revision: 0,
        }))
    }
}

async fn client(unmatched: Unmatched) -> EchoClient<tonic::transport::Channel> {
    let mesh = Mesh::builder()
        .service("echo")
        .registry(
            MemoryRegistry::from_toml(
                r#"
                [[routes]]
                id = "say"
                match = { path = "/apimesh.echo.v1.Echo/Say" }
                "#,
            )
            .unwrap(),
        )
        .unmatched(unmatched)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(mesh.inbound())
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EchoClient::new(channel)
}

#[tokio::test]
async fn matched_call_sees_the_route() {
    let mut c = client(Unmatched::NotFound).await;
    let reply = c
        .say(SayRequest {
            message: "hi".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "hi");
    assert_eq!(reply.revision, 1);
}

#[tokio::test]
async fn unmatched_call_is_unimplemented_with_message() {
    let mut c = client(Unmatched::NotFound).await;
    let status = c
        .shout(SayRequest {
            message: "hi".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(
        status.message(),
        "no route matches POST /apimesh.echo.v1.Echo/Shout"
    );
}

#[tokio::test]
async fn unmatched_call_passes_through_by_default() {
    let mut c = client(Unmatched::PassThrough).await;
    let reply = c
        .shout(SayRequest {
            message: "hi".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "HI");
}

#[tokio::test]
async fn every_mesh_error_maps_to_its_grpc_status() {
    // Render each error as the layer would and read it back with tonic's
    // own decoder of trailers-only responses.
    use apimesh::MeshError;
    use std::time::Duration;
    let cases = [
        (
            MeshError::Unauthenticated {
                bearer_error: Some("invalid_token"),
                challenge: None,
                detail: "token expired".into(),
            },
            Code::Unauthenticated,
        ),
        (
            MeshError::Forbidden {
                challenge: None,
                detail: "missing scope orders:write".into(),
            },
            Code::PermissionDenied,
        ),
        (
            MeshError::RateLimited {
                retry_after: Duration::from_secs(1),
                detail: "10/s".into(),
            },
            Code::ResourceExhausted,
        ),
        (
            MeshError::Unavailable {
                detail: "no endpoint".into(),
                retry_after: None,
            },
            Code::Unavailable,
        ),
        (
            MeshError::Timeout {
                detail: "deadline".into(),
            },
            Code::DeadlineExceeded,
        ),
    ];
    for (err, code) in cases {
        let res = err.to_response(true);
        let status = Status::from_header_map(res.headers()).expect("grpc-status header");
        assert_eq!(status.code(), code, "{err:?}");
        assert_eq!(status.message(), err.to_string());
    }
}
