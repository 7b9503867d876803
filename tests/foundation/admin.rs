use apimesh::Mesh;
use apimesh::registry::MemoryRegistry;

use crate::support;

const CONFIG: &str = r#"
[auth]
issuers = [{ issuer = "https://idp.example.com", algorithms = ["HS256"], keys = [{ kid = "k1", algorithm = "HS256", secret = "a-very-long-shared-secret-of-32-bytes!" }] }]

[[consumers]]
id = "acme"
api_keys = ["sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]

[[routes]]
id = "r"
match = { path = "/r" }
auth = { require = ["jwt", "api_key"] }
"#;

#[tokio::test]
async fn health_and_config_with_secrets_redacted() {
    let mesh = Mesh::builder()
        .service("orders")
        .registry(MemoryRegistry::from_toml(CONFIG).unwrap())
        .build()
        .await
        .unwrap();
    let addr = support::serve(mesh.admin()).await;

    let health = support::get(addr, "/mesh/health").await;
    assert_eq!(health.status, 200);
    let h = health.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["service"], "orders");
    assert_eq!(h["revision"], 1);
    assert_eq!(h["registry"]["backend"], "memory");
    assert_eq!(h["registry"]["applied"], 1);

    let config = support::get(addr, "/mesh/config").await;
    assert_eq!(config.status, 200);
    let text = String::from_utf8(config.body.to_vec()).unwrap();
    assert!(
        !text.contains("a-very-long-shared-secret"),
        "secret leaked: {text}"
    );
    assert!(!text.contains("2cf24dba"), "key digest leaked: {text}");
    let c = config.json();
    assert_eq!(c["revision"], 1);
    assert_eq!(c["config"]["routes"][0]["id"], "r");
    assert_eq!(
        c["config"]["auth"]["issuers"][0]["keys"][0]["secret"],
        "[redacted]"
    );
    assert_eq!(c["config"]["consumers"][0]["api_keys"][0], "[redacted]");
}
