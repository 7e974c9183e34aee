//! `TestApp`: a gateway over freshly bootstrapped resources, and a client for it.

use std::collections::HashMap;
use std::net::IpAddr;

use lambent_local::{Emulator, Options, Running, repo_root};
use reqwest::{Client, Response};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static EMULATOR: OnceCell<Emulator> = OnceCell::const_new();

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub running: Running,
}

pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// A gateway whose configuration has `overrides` on top of the template's.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> Self {
        let emulator = EMULATOR
            .get_or_try_init(|| async { Emulator::start(&repo_root()).await })
            .await
            .expect("the emulator starts (make venv)");
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let overrides: HashMap<String, String> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let running = lambent_local::start(
            &emulator.endpoint,
            Options {
                prefix,
                port: 0,
                overrides,
            },
        )
        .await
        .expect("the local stack starts");
        Self {
            base: running.base_url.clone(),
            client: Client::new(),
            running,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client whose requests come from another loopback address (another client IP).
    pub fn client_from(&self, ip: &str) -> Client {
        let ip: IpAddr = ip.parse().expect("ip");
        Client::builder().local_address(ip).build().expect("client")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Registers an account and returns the 201 body.
    pub async fn register(&self, email: &str, username: &str) -> Value {
        let response = self
            .post_json(
                "/v1/auth/register",
                &json!({"email": email, "username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), 201, "register {email}");
        response.json().await.expect("json")
    }

    /// Every item in this test's table, so a test can prove a refused request wrote nothing.
    pub async fn items(&self) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let table = &self.running.stack.refs["Table"];
        let client = aws_sdk_dynamodb::Client::new(&self.running.sdk);
        let out = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .send()
            .await
            .expect("scan");
        out.items.unwrap_or_default()
    }

    /// Items other than rate-limit counters.
    pub async fn data_items(&self) -> usize {
        self.items()
            .await
            .iter()
            .filter(|i| {
                !i["pk"]
                    .as_s()
                    .map(|s| s.starts_with("RATE#"))
                    .unwrap_or(false)
            })
            .count()
    }

    /// The signing key secret's JSON, read from the emulator, to mint tokens in attacks.
    pub async fn signing_secret(&self) -> Value {
        let secrets = aws_sdk_secretsmanager::Client::new(&self.running.sdk);
        let out = secrets
            .get_secret_value()
            .secret_id(&self.running.stack.refs["SigningKey"])
            .send()
            .await
            .expect("secret");
        serde_json::from_str(out.secret_string().expect("string")).expect("json")
    }
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ct")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(body["type"].as_str().is_some_and(|t| t.ends_with(code)));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}
