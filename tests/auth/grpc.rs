//! Authentication for a tonic service behind `mesh.inbound()`: failures
//! reach a real tonic client as gRPC statuses.

use apimesh::registry::MemoryRegistry;
use apimesh::{Mesh, Principal, Unmatched};
use mesh_testproto::echo::echo_client::EchoClient;
use mesh_testproto::echo::echo_server::{Echo, EchoServer};
use mesh_testproto::echo::{SayReply, SayRequest};
use serde_json::json;
use tonic::{Code, Request, Response, Status};

use crate::support::{self, BAD_SIGNATURE, ISS, MISSING, Signer, claims};

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let who = req
            .extensions()
            .get::<Principal>()
            .and_then(|p| p.subject().map(str::to_owned))
            .unwrap_or_else(|| "nobody".into());
        Ok(Response::new(SayReply {
            message: format!("{} {who}", req.into_inner().message),
            revision: 0,
        }))
    }
    async fn shout(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let authenticated = req.extensions().get::<Principal>().is_some();
        Ok(Response::new(SayReply {
            message: format!(
                "{} {authenticated}",
                req.into_inner().message.to_uppercase()
            ),
            revision: 0,
        }))
    }
}

async fn client() -> EchoClient<tonic::transport::Channel> {
    support::install_provider();
    let pem = support::key_path("rsa.pub.pem");
    let config = format!(
        r#"
[[auth.issuers]]
issuer = "{ISS}"
algorithms = ["RS256"]
keys = [{{ kid = "rsa-1", algorithm = "RS256", pem_file = "{pem}" }}]

[[routes]]
id = "say"
match = {{ path = "/apimesh.echo.v1.Echo/Say" }}
auth = {{ require = ["jwt"], scopes = ["echo:say"] }}

[[routes]]
id = "shout"
match = {{ path = "/apimesh.echo.v1.Echo/Shout" }}
auth = {{ require = ["none"] }}
"#
    );
    let mesh = Mesh::builder()
        .service("echo")
        .registry(MemoryRegistry::from_toml(&config).expect("config"))
        .unmatched(Unmatched::NotFound)
        .build()
        .await
        .expect("mesh");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(mesh.inbound())
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    EchoClient::new(channel)
}

fn say(token: Option<&str>) -> Request<SayRequest> {
    let mut req = Request::new(SayRequest {
        message: "hi".into(),
    });
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("metadata"),
        );
    }
    req
}

#[tokio::test]
async fn grpc_calls_are_authenticated() {
    let mut c = client().await;
    // No token.
    let status = c.say(say(None)).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), MISSING);
    // A forged token.
    let forged = Signer::attacker()
        .with_kid("rsa-1")
        .token(&claims(json!({ "aud": null, "scope": "echo:say" })));
    let status = c.say(say(Some(&forged))).await.expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), BAD_SIGNATURE);
    // A valid token without the scope.
    let t = Signer::rsa().token(&claims(json!({ "aud": null, "scope": "echo:shout" })));
    let status = c.say(say(Some(&t))).await.expect_err("no scope");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        format!("{}: echo:say", support::INSUFFICIENT_SCOPE)
    );
    // A valid token with it: the service sees the principal.
    let t = Signer::rsa().token(&claims(
        json!({ "aud": null, "scope": "echo:say", "sub": "bob" }),
    ));
    let reply = c.say(say(Some(&t))).await.expect("ok").into_inner();
    assert_eq!(reply.message, "hi bob");
    // The anonymous method needs nothing.
    let reply = c
        .shout(SayRequest {
            message: "hi".into(),
        })
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(reply.message, "HI false");
}
