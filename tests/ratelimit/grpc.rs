//! gRPC: a refused call is `RESOURCE_EXHAUSTED` for a real tonic client.

use apimesh::Mesh;
use apimesh::registry::MemoryRegistry;
use mesh_testproto::echo::echo_client::EchoClient;
use mesh_testproto::echo::echo_server::{Echo, EchoServer};
use mesh_testproto::echo::{SayReply, SayRequest};
use tonic::{Code, Request, Response, Status};

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        Ok(Response::new(SayReply {
            message: req.into_inner().message,
            revision: 0,
        }))
    }
    async fn shout(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        Ok(Response::new(SayReply {
            message: req.into_inner().message.to_uppercase(),
            revision: 0,
        }))
    }
}

fn hi() -> SayRequest {
    SayRequest {
        message: "hi".into(),
    }
}

#[tokio::test]
async fn the_third_call_over_the_burst_is_resource_exhausted() {
    let mesh = Mesh::builder()
        .service("echo")
        .registry(
            MemoryRegistry::from_toml(
                r#"
                [[routes]]
                id = "say"
                match = { path = "/apimesh.echo.v1.Echo/Say" }
                rate_limit = { limits = [{ rate = "1/h", burst = 2, key = ["route"] }] }
                "#,
            )
            .unwrap(),
        )
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
    let mut c = EchoClient::new(channel);

    for (remaining, reset) in [(1, 3_600), (0, 7_200)] {
        let res = c.say(hi()).await.unwrap();
        let ratelimit = res.metadata().get("ratelimit").unwrap().to_str().unwrap();
        assert_eq!(ratelimit, format!("\"say-0\";r={remaining};t={reset}"));
        let policy = res.metadata().get("ratelimit-policy").unwrap();
        assert_eq!(policy, "\"say-0\";q=2;w=7200");
        assert_eq!(res.into_inner().message, "hi");
    }
    let status = c.say(hi()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "rate limit 1/h exceeded");
    // The pushback is the time to the next unit, about an hour.
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (3_500_000..=3_600_000).contains(&pushback),
        "pushback {pushback} ms"
    );
    // A second client (a new connection) shares the route's bucket.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut other = EchoClient::new(channel);
    assert_eq!(
        other.say(hi()).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // A method without a limit is unaffected.
    for _ in 0..5 {
        assert_eq!(c.shout(hi()).await.unwrap().into_inner().message, "HI");
    }
}
