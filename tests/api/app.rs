//! `TestApp`: a gateway over freshly bootstrapped resources, and a client for it.

use std::collections::HashMap;
use std::net::IpAddr;

use lambent_local::{Emulator, Options, Running, repo_root};
use reqwest::{Client, Response};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static EMULATOR: OnceCell<Emulator> = OnceCell::const_new();

pub struct TestApp {
    /// The emulator's endpoint.
    pub endpoint: String,
    pub base: String,
    pub client: Client,
    pub running: Running,
}

pub const PASSWORD: &str = "correct horse battery";

/// The emulator's target of a DynamoDB transaction.
pub const TRANSACT: &str = "DynamoDB_20120810.TransactWriteItems";

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// A gateway whose configuration has `overrides` on top of the template's, with the worker,
    /// the dead-letter consumer and the reaper running.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> Self {
        Self::start(overrides, true).await
    }

    /// A gateway pointed at `fakes` (their `overrides`), with `extra` on top.
    pub async fn spawn_with_fakes(
        fakes: &lambent_local::fakes::FakeProviders,
        extra: &[(&str, &str)],
        worker: bool,
    ) -> Self {
        let mut overrides = fakes.overrides();
        overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let overrides: Vec<(&str, &str)> = overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let app = Self::start(&overrides, worker).await;
        lambent_local::connect_payments(fakes, &app.running)
            .await
            .expect("the fake Toss and Stripe get the stack's keys");
        app
    }

    /// A gateway and the reaper, but no in-process worker (a test runs its own).
    pub async fn spawn_without_worker(overrides: &[(&str, &str)]) -> Self {
        Self::start(overrides, false).await
    }

    async fn start(overrides: &[(&str, &str)], worker: bool) -> Self {
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
                worker,
                reaper_every: Some(std::time::Duration::from_millis(500)),
                rankings_every: None,
            },
        )
        .await
        .expect("the local stack starts");
        Self {
            endpoint: emulator.endpoint.clone(),
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

    /// Items other than rate-limit counters and the search index's bookkeeping (its waiting
    /// list and pointer, which its writer changes on its own time, from a queue).
    pub async fn data_items(&self) -> usize {
        self.items()
            .await
            .iter()
            .filter(|i| {
                !i["pk"].as_s().is_ok_and(|pk| {
                    pk.starts_with("RATE#") || pk.starts_with("SEARCHDIRTY#") || pk == "SEARCHINDEX"
                })
            })
            .count()
    }

    /// Asks to cancel a job.
    pub async fn cancel(&self, token: &str, id: &str) -> Response {
        self.client
            .post(self.url(&format!("/v1/jobs/{id}/cancel")))
            .bearer_auth(token)
            .send()
            .await
            .expect("cancel")
    }

    /// Makes an account an admin, as an operator would in the table; its next token has the role.
    pub async fn make_admin(&self, user_id: &str) {
        let db = &self.running.gateway.state.db;
        db.client
            .update_item()
            .table_name(&db.table)
            .key("pk", lambent::db::s(format!("USER#{user_id}")))
            .key("sk", lambent::db::s("PROFILE"))
            .update_expression("SET #role = :admin")
            .expression_attribute_names("#role", "role")
            .expression_attribute_values(":admin", lambent::db::s("admin"))
            .send()
            .await
            .expect("promote");
    }

    /// A new account made an admin, signed in again: its access token (with the admin role).
    pub async fn admin(&self, name: &str) -> String {
        let (_, id) = self.user(name).await;
        self.make_admin(&id).await;
        let login = self
            .post_json(
                "/v1/auth/login",
                &json!({"username": name, "password": PASSWORD}),
            )
            .await;
        assert_eq!(login.status(), 200, "an admin's login");
        login.json::<Value>().await.expect("json")["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Arms a fault in the emulator (see `infra/local/moto_server.py`): the next `times` requests
    /// to `target` whose body contains `contains` get `fault` (`error`, `delay_ms`, `drop`).
    pub async fn fault(&self, target: &str, contains: &str, times: u32, fault: Value) {
        let mut body = json!({"target": target, "contains": contains, "times": times});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), fault.as_object()) {
            body.extend(extra.clone());
        }
        let response = self
            .client
            .post(format!("{}/_lambent/faults", self.endpoint))
            .json(&body)
            .send()
            .await
            .expect("arming a fault");
        assert_eq!(response.status(), 204, "arming a fault");
    }

    /// Arms one fault that carries out the next `target` request containing every text of
    /// `contains` (a JSON list) and holds its answer 3 s, past the SDK's 2.5 s attempt timeout.
    pub async fn answer_late(&self, target: &str, contains: &Value) {
        self.fault(
            target,
            "",
            1,
            json!({"contains": contains, "answer_delay_ms": 3000}),
        )
        .await;
    }

    /// How often the armed faults matching `target` and `contains` fired, together.
    pub async fn fired(&self, target: &str, contains: &str) -> u64 {
        self.fired_where(target, json!(contains)).await
    }

    /// [`Self::fired`] for a fault armed with any `contains` (a list of texts among them).
    pub async fn fired_where(&self, target: &str, contains: Value) -> u64 {
        self.fault_count(Some(target), &contains, "fired").await
    }

    /// The armed faults' `counter` (`fired`, or `answered`: the matching requests answered),
    /// summed over the faults armed with `contains` (on `target`, or on any).
    async fn fault_count(&self, target: Option<&str>, contains: &Value, counter: &str) -> u64 {
        let faults: Vec<Value> = self
            .client
            .get(format!("{}/_lambent/faults", self.endpoint))
            .send()
            .await
            .expect("faults")
            .json()
            .await
            .expect("json");
        faults
            .iter()
            .filter(|f| target.is_none_or(|t| f["target"] == t) && f["contains"] == *contains)
            .map(|f| f[counter].as_u64().unwrap_or(0))
            .sum()
    }

    /// [`Self::answer_late`] on a single-item write's `target` and on TransactWriteItems: a write
    /// made once (`db::once` sends it as a one-action transaction) meets it, and so would the
    /// plain write it replaced, so the test fails if the write goes back to being plain.
    pub async fn answer_late_either(&self, target: &str, contains: &Value) {
        for target in [target, TRANSACT] {
            self.answer_late(target, contains).await;
        }
    }

    /// Waits until the SDK's retry of the write whose answer [`Self::answer_late`] (or
    /// [`Self::answer_late_either`]) held for `contains` has been answered too (two requests);
    /// how often the fault fired (1: the answer was late).
    pub async fn retried(&self, contains: &Value) -> u64 {
        wait_until("the late-answered write and its retry", || async {
            self.fault_count(None, contains, "answered").await >= 2
        })
        .await;
        self.fault_count(None, contains, "fired").await
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
/// Waits until `check` holds (60 s at most, which fails the test with `what`).
pub async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    wait_within(what, 60, check).await;
}

/// Waits until `check` holds, `seconds` at most (which fails the test with `what`): for work
/// that queues behind a whole test run's on a loaded machine (the search index's one writer).
pub async fn wait_within<F: std::future::Future<Output = bool>>(
    what: &str,
    seconds: u64,
    check: impl Fn() -> F,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

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

impl TestApp {
    /// Registers a user and returns `(access token, user id)`.
    pub async fn user(&self, name: &str) -> (String, String) {
        let body = self.register(&format!("{name}@example.com"), name).await;
        (
            body["access_token"].as_str().expect("token").to_owned(),
            body["user"]["id"].as_str().expect("id").to_owned(),
        )
    }

    pub async fn submit(&self, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url("/v1/jobs"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Submits a job and returns its id.
    pub async fn submit_id(&self, token: &str, body: &Value) -> String {
        let submitted: Value = self.submit(token, body).await.json().await.expect("json");
        submitted["id"].as_str().expect("id").to_owned()
    }

    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self.get_with_token(path, token).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json")
    }

    /// Polls a job until `done` holds for it (or 60 s pass, which fails the test).
    pub async fn wait_for_job(
        &self,
        token: &str,
        id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let job = self.get_json(&format!("/v1/jobs/{id}"), token).await;
            if done(&job) {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} stuck: {job}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `(balance, active_jobs)`.
    pub async fn credits(&self, token: &str) -> (i64, i64) {
        let body = self.get_json("/v1/credits", token).await;
        (
            body["balance"].as_i64().expect("balance"),
            body["active_jobs"].as_i64().expect("active"),
        )
    }
}

/// `target/debug/lambent`, the one Lambda executable, built by `make test` before the tests run.
pub fn lambent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("lambent");
    assert!(
        binary.exists(),
        "{} is missing: `make test` builds it (cargo build -p lambent-functions --bin lambent)",
        binary.display()
    );
    binary
}

/// The worker in its own process, as Lambda or the GPU task runs it: `lambent run-job`.
pub fn run_job_command() -> std::process::Command {
    let mut command = std::process::Command::new(lambent_binary());
    command.arg("run-job");
    command
}

impl TestApp {
    /// Uploads `bytes` through a presigned PUT and returns the key. `declared` is the size asked
    /// for, which a lying client may exceed.
    pub(crate) async fn upload_declared(
        &self,
        token: &str,
        bytes: Vec<u8>,
        content_type: &str,
        declared: usize,
    ) -> String {
        let response = self
            .client
            .post(self.url("/v1/uploads"))
            .bearer_auth(token)
            .json(&json!({"content_type": content_type, "size": declared}))
            .send()
            .await
            .expect("r");
        assert_eq!(response.status(), 201);
        let upload: Value = response.json().await.expect("json");
        // moto checks no signature or length: the worker's own checks are what is tested.
        let stored = self
            .client
            .put(upload["url"].as_str().expect("url"))
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("put");
        assert!(stored.status().is_success(), "{}", stored.status());
        upload["key"].as_str().expect("key").to_owned()
    }

    pub(crate) async fn upload(&self, token: &str, bytes: Vec<u8>, content_type: &str) -> String {
        let size = bytes.len().max(1);
        self.upload_declared(token, bytes, content_type, size).await
    }
}

/// A client of the stack's S3 (path-style, as the emulator needs).
pub(crate) fn s3(app: &TestApp) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&app.running.sdk)
            .force_path_style(true)
            .build(),
    )
}

/// The fixture photo the social tests post.
pub(crate) fn scene() -> Vec<u8> {
    std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/scene.png"),
    )
    .expect("fixture")
}

pub(crate) async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request")
}

/// The body of an answer with `status` (its body shown when not).
pub(crate) async fn ok_json(response: reqwest::Response, status: u16) -> Value {
    let code = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    assert_eq!(code, status, "{body}");
    body
}

/// Waits until the job has ended.
pub(crate) async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    app.wait_for_job(token, id, |j| {
        matches!(
            j["status"].as_str(),
            Some("COMPLETED" | "FAILED" | "CANCELED")
        )
    })
    .await
}

/// Every ledger line, newest first (all pages), with `?type=` if given.
pub(crate) async fn ledger(app: &TestApp, token: &str, kind: Option<&str>) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/credits/transactions?limit=7".to_owned();
        if let Some(kind) = kind {
            path.push_str(&format!("&type={kind}"));
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(&path, token).await;
        lines.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return lines,
        }
    }
}

/// The ledger sums to the balance, which is never negative.
pub(crate) async fn assert_ledger_sums(app: &TestApp, token: &str) {
    let sum: i64 = ledger(app, token, None)
        .await
        .iter()
        .map(|l| l["amount"].as_i64().expect("amount"))
        .sum();
    let balance = app.credits(token).await.0;
    assert_eq!(sum, balance, "the ledger sums to the balance");
    assert!(balance >= 0);
}

pub(crate) async fn publish(app: &TestApp, token: &str, body: Value) -> Value {
    let response = call(
        app,
        reqwest::Method::POST,
        "/v1/posts",
        Some(token),
        Some(&body),
    )
    .await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json().await.expect("json")
}

pub(crate) async fn photo_post(
    app: &TestApp,
    token: &str,
    caption: &str,
    visibility: &str,
) -> Value {
    let key = app.upload(token, scene(), "image/png").await;
    publish(
        app,
        token,
        json!({"caption": caption, "visibility": visibility, "upload_keys": [key]}),
    )
    .await
}
