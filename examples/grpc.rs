//! A tonic service behind the same inbound layer. Only the `Say` method
//! has a route, so the mesh answers `Shout` itself with a trailers-only
//! `UNIMPLEMENTED`, the way a gRPC client expects.
//!
//! ```text
//! cargo run --example grpc            # serve, call both methods, exit
//! cargo run --example grpc -- --serve # keep serving on 127.0.0.1:50051
//! ```

use apimesh::registry::MemoryRegistry;
use apimesh::{MatchedRoute, Mesh, Unmatched};
use mesh_testproto::echo::echo_client::EchoClient;
use mesh_testproto::echo::echo_server::{Echo, EchoServer};
use mesh_testproto::echo::{SayReply, SayRequest};
use tonic::{Request, Response, Status};

const CONFIG: &str = r#"
[[apis]]
name = "echo"
versions = [{ version = "v1" }]

[[routes]]
id = "echo-say"
api = "echo"
version = "v1"
match = { path = "/apimesh.echo.v1.Echo/Say", methods = ["POST"] }
"#;

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve_forever = std::env::args().any(|a| a == "--serve");
    let mesh = Mesh::builder()
        .service("echo")
        .registry(MemoryRegistry::from_toml(CONFIG)?)
        .unmatched(Unmatched::NotFound)
        .build()
        .await?;

    let addr = if serve_forever {
        "127.0.0.1:50051"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .layer(mesh.inbound())
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    if serve_forever {
        println!("echo gRPC service on {addr}");
        server.await?;
        return Ok(());
    }
    tokio::spawn(server);

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = EchoClient::new(channel);
    let reply = client
        .say(SayRequest {
            message: "hello".into(),
        })
        .await?
        .into_inner();
    println!(
        "Say   -> {:?} (served at revision {})",
        reply.message, reply.revision
    );
    match client
        .shout(SayRequest {
            message: "hello".into(),
        })
        .await
    {
        Ok(r) => println!("Shout -> {:?}", r.into_inner().message),
        Err(status) => println!("Shout -> {:?}: {}", status.code(), status.message()),
    }
    Ok(())
}
