//! Outbound webhooks: job events signed per Standard Webhooks, delivered from a queue to the job's
//! `webhook_url` and the owner's endpoints, retried on the schedule, 410 disabling an endpoint,
//! every attempt recorded. Receivers here verify with the `standardwebhooks` crate.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::app::{TestApp, problem};

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    webhook_id: String,
    body: Value,
    verified: bool,
    answered: u16,
}

#[derive(Default)]
struct Inner {
    secret: Option<String>,
    /// Statuses for the next requests, one each; 200 after them (or `always`).
    script: VecDeque<u16>,
    always: Option<u16>,
    received: Vec<Received>,
}

/// A webhook receiver on loopback that verifies what it gets.
#[derive(Clone)]
struct Receiver {
    url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let receiver = Self {
            url,
            inner: Arc::default(),
        };
        let server = receiver.clone();
        lambent_local::fakes::spawn_server(listener, move |req| {
            let server = server.clone();
            async move { server.answer(req).await }
        });
        receiver
    }

    async fn answer(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut inner = self.inner.lock().expect("lock");
        let verified = inner.secret.as_deref().is_some_and(|secret| {
            standardwebhooks::Webhook::new(secret)
                .expect("secret")
                .verify(&body, &parts.headers)
                .is_ok()
        });
        let status = inner.script.pop_front().or(inner.always).unwrap_or(200);
        inner.received.push(Received {
            webhook_id: parts
                .headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            verified,
            answered: status,
        });
        hyper::Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .expect("response")
    }

    fn set(&self, change: impl FnOnce(&mut Inner)) {
        change(&mut self.inner.lock().expect("lock"));
    }

    fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("lock").received.clone()
    }

    /// Waits until `done` holds for what was received (30 s at most).
    async fn until(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(Instant::now() < deadline, "not received: {received:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn of_type<'a>(received: &'a [Received], kind: &str) -> Vec<&'a Received> {
    received.iter().filter(|r| r.body["type"] == kind).collect()
}

async fn create_endpoint(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_job_with_a_webhook_url_sends_signed_events_that_a_receiver_verifies() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (token, _) = app.user("hooked").await;

    let response = app
        .submit(
            &token,
            &json!({"kind": "sleep", "input": {"ms": 1000}, "webhook_url": receiver.url}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let submitted: Value = response.json().await.expect("json");
    let secret = submitted["webhook_secret"]
        .as_str()
        .expect("the secret, once");
    assert!(secret.starts_with("whsec_"));
    receiver.set(|r| r.secret = Some(secret.to_owned()));
    let id = submitted["id"].as_str().expect("id");
    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert!(job.get("webhook_secret").is_none(), "never shown again");

    // started, progress at 25, 50 and 75 (throttled to quarters), completed.
    let received = receiver
        .until(|r| !of_type(r, "job.completed").is_empty() && r.len() >= 5)
        .await;
    let mut types: Vec<&str> = received
        .iter()
        .map(|r| r.body["type"].as_str().unwrap_or_default())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "job.completed",
            "job.progress",
            "job.progress",
            "job.progress",
            "job.started"
        ]
    );
    assert!(received.iter().all(|r| r.verified), "{received:#?}");
    assert!(received.iter().all(|r| r.body["data"]["id"] == id));
    let mut ids: Vec<_> = received.iter().map(|r| r.webhook_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "one webhook-id per event");
    let completed = of_type(&received, "job.completed")[0];
    assert_eq!(completed.body["data"]["status"], "COMPLETED");
    assert!(completed.body["timestamp"].is_string());
}

#[tokio::test]
async fn an_endpoint_that_fails_twice_gets_the_event_on_the_third_attempt() {
    // The schedule shrunk a hundredfold: 0 s, 0.05 s, 3 s.
    let app = TestApp::spawn_with(&[("WEBHOOK_RETRY_SCALE", "0.01")]).await;
    let receiver = Receiver::start().await;
    receiver.set(|r| r.script = [500, 503].into());
    let (token, _) = app.user("flaky").await;
    let created = create_endpoint(
        &app,
        &token,
        &json!({"url": receiver.url, "events": ["job.completed"]}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let endpoint: Value = created.json().await.expect("json");
    receiver.set(|r| r.secret = endpoint["secret"].as_str().map(str::to_owned));

    let id = app
        .submit_id(&token, &json!({"kind": "sleep", "input": {"ms": 10}}))
        .await;
    let received = receiver
        .until(|r| r.iter().any(|x| x.answered == 200))
        .await;
    assert_eq!(received.len(), 3, "{received:#?}");
    let answers: Vec<u16> = received.iter().map(|r| r.answered).collect();
    assert_eq!(answers, [500, 503, 200]);
    assert!(
        received
            .iter()
            .all(|r| r.verified && r.body["type"] == "job.completed")
    );
    assert!(
        received
            .iter()
            .all(|r| r.webhook_id == received[0].webhook_id),
        "the same webhook-id on every attempt"
    );
    assert_eq!(received[0].body["data"]["id"], id);

    let path = format!(
        "/v1/webhook-endpoints/{}/deliveries",
        endpoint["id"].as_str().expect("id")
    );
    let deliveries = app.get_json(&path, &token).await;
    let attempts: Vec<(u64, u64, bool)> = deliveries["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().expect("attempt"),
                d["status_code"].as_u64().expect("code"),
                d["succeeded"].as_bool().expect("bool"),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [(2, 200, true), (1, 503, false), (0, 500, false)],
        "newest first"
    );
}

#[tokio::test]
async fn an_endpoint_that_answers_410_is_disabled() {
    let app = TestApp::spawn().await;
    let gone = Receiver::start().await;
    gone.set(|r| r.always = Some(410));
    let healthy = Receiver::start().await;
    let (token, _) = app.user("moved").await;
    for receiver in [&gone, &healthy] {
        let created = create_endpoint(
            &app,
            &token,
            &json!({"url": receiver.url, "events": ["job.completed"]}),
        )
        .await;
        let endpoint: Value = created.json().await.expect("json");
        receiver.set(|r| r.secret = endpoint["secret"].as_str().map(str::to_owned));
    }

    app.submit_id(&token, &json!({"kind": "sleep", "input": {"ms": 10}}))
        .await;
    gone.until(|r| r.len() == 1).await;
    healthy.until(|r| r.len() == 1).await;
    // The deliverer disables it once the 410 is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoints = app.get_json("/v1/webhook-endpoints", &token).await;
        let disabled: Vec<bool> = endpoints["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["disabled_at"].is_string())
            .collect();
        if disabled.iter().filter(|d| **d).count() == 1 {
            let gone_disabled = endpoints["items"]
                .as_array()
                .expect("items")
                .iter()
                .any(|e| e["url"] == gone.url.as_str() && e["disabled_at"].is_string());
            assert!(gone_disabled, "{endpoints}");
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {endpoints}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The next event reaches the healthy endpoint only.
    app.submit_id(&token, &json!({"kind": "sleep", "input": {"ms": 10}}))
        .await;
    healthy.until(|r| r.len() == 2).await;
    assert_eq!(
        gone.received().len(),
        1,
        "nothing more to a disabled endpoint"
    );
    assert!(healthy.received().iter().all(|r| r.verified));
}

#[tokio::test]
async fn endpoints_are_owner_scoped_checked_and_their_secret_shown_once() {
    let app = TestApp::spawn_with(&[("ALLOW_PRIVATE_WEBHOOKS", "false")]).await;
    let (token, _) = app.user("owner").await;
    let (other, _) = app.user("intruder").await;

    for (body, field) in [
        (json!({"url": "http://127.0.0.1:9/hook"}), "url"),
        (json!({"url": "https://10.0.0.7/hook"}), "url"),
        (json!({"url": "https://169.254.169.254/latest"}), "url"),
        (
            json!({"url": "https://hooks.example.com/x", "events": ["job.exploded"]}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "events": []}),
            "events",
        ),
    ] {
        let refused = problem(
            create_endpoint(&app, &token, &body).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(refused["errors"][0]["field"], field, "{body}");
    }

    let created = create_endpoint(
        &app,
        &token,
        &json!({"url": "https://hooks.example.com/lambent", "description": "prod"}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let endpoint: Value = created.json().await.expect("json");
    assert!(
        endpoint["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    assert_eq!(endpoint["events"].as_array().expect("events").len(), 5);
    let id = endpoint["id"].as_str().expect("id");

    let listed = app.get_json("/v1/webhook-endpoints", &token).await;
    assert_eq!(listed["items"].as_array().expect("items").len(), 1);
    assert!(listed["items"][0].get("secret").is_none(), "shown once");
    let theirs = app.get_json("/v1/webhook-endpoints", &other).await;
    assert!(theirs["items"].as_array().expect("items").is_empty());

    let deliveries = format!("/v1/webhook-endpoints/{id}/deliveries");
    problem(
        app.get_with_token(&deliveries, &other).await,
        404,
        "not_found",
    )
    .await;
    let delete = |token: String| {
        let request = app
            .client
            .delete(app.url(&format!("/v1/webhook-endpoints/{id}")))
            .bearer_auth(token);
        async move { request.send().await.expect("request") }
    };
    problem(delete(other.clone()).await, 404, "not_found").await;
    assert_eq!(delete(token.clone()).await.status(), 204);
    problem(delete(token.clone()).await, 404, "not_found").await;

    for n in 0..10 {
        let created = create_endpoint(
            &app,
            &token,
            &json!({"url": format!("https://hooks.example.com/{n}")}),
        )
        .await;
        assert_eq!(created.status(), 201);
    }
    problem(
        create_endpoint(
            &app,
            &token,
            &json!({"url": "https://hooks.example.com/11"}),
        )
        .await,
        409,
        "too_many_endpoints",
    )
    .await;
}

/// An endpoint's creation and deletion answered after the SDK's attempt timeout: the retries
/// would meet their own writes (a 500 for an endpoint made, a 404 for one deleted). Each is
/// answered as done.
#[tokio::test]
async fn an_endpoint_made_and_deleted_late_is_answered_as_done() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, user_id) = app.user("latehook").await;
    let (put, delete) = ("DynamoDB_20120810.PutItem", "DynamoDB_20120810.DeleteItem");
    let made = json!([format!("USER#{user_id}"), "WHEP#", "whsec_"]);
    app.answer_late_either(put, &made).await;
    let created = create_endpoint(
        &app,
        &token,
        &json!({"url": "https://hooks.example.com/late"}),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert_eq!(app.retried(&made).await, 1, "answered late");
    let id = created.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let listed = app.get_json("/v1/webhook-endpoints", &token).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));

    let gone = json!([format!("USER#{user_id}"), format!("WHEP#{id}")]);
    app.answer_late_either(delete, &gone).await;
    let deleted = app
        .client
        .delete(app.url(&format!("/v1/webhook-endpoints/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.retried(&gone).await, 1, "answered late");
    let listed = app.get_json("/v1/webhook-endpoints", &token).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0));
}

/// A progress report answered after the SDK's attempt timeout is sent again; the retry's old item
/// is the first attempt's, already at the new progress. The report still knows the progress
/// before it, so the quarter it enters still sends its `job.progress` (it read "no change").
#[tokio::test]
async fn a_progress_report_answered_late_still_sends_its_event() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (token, _) = app.user("lateprogress").await;
    // Ten reports, 400 ms apart: 10 to 90, entering quarters at 30, 50 and 80.
    let response = app
        .submit(
            &token,
            &json!({"kind": "sleep", "input": {"ms": 4000}, "webhook_url": receiver.url}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let submitted: Value = response.json().await.expect("json");
    let id = submitted["id"].as_str().expect("id");
    receiver.set(|r| r.secret = submitted["webhook_secret"].as_str().map(str::to_owned));
    let report = json!([format!("JOB#{id}"), "progress_report", r#""N":"50""#]);
    app.answer_late("DynamoDB_20120810.UpdateItem", &report)
        .await;
    let received = receiver
        .until(|r| !of_type(r, "job.completed").is_empty())
        .await;
    assert_eq!(app.retried(&report).await, 1, "answered late");
    let mut progress: Vec<i64> = of_type(&received, "job.progress")
        .iter()
        .filter_map(|r| r.body["data"]["progress"].as_i64())
        .collect();
    progress.sort_unstable();
    assert_eq!(progress, [30, 50, 80]);
}

/// An AI server's progress report recorded by a write answered after the SDK's attempt timeout:
/// the retry fails `progress < :progress` (the first attempt set it), and read as "no change" it
/// lost the event. The retry finds its own report there, so the quarter it entered still sends
/// `job.progress`.
#[tokio::test]
async fn an_ai_servers_progress_recorded_late_still_sends_its_event() {
    let (app, fakes) = crate::generation::start(&[], true).await;
    fakes.configure(|b| b.hold_webhooks = true);
    let receiver = Receiver::start().await;
    let (token, _) = app.user("lateai").await;
    let mut job = crate::generation::text_to_image("ai", "studio/portrait-v2");
    job["webhook_url"] = json!(receiver.url);
    let response = app.submit(&token, &job).await;
    assert_eq!(response.status(), 202);
    let submitted: Value = response.json().await.expect("json");
    let id = submitted["id"].as_str().expect("id");
    receiver.set(|r| r.secret = submitted["webhook_secret"].as_str().map(str::to_owned));
    // The server's progress (50) and completion, held until the fault is armed.
    let sent = crate::generation::webhooks(&fakes, 2).await;
    assert_eq!(sent[0].method, "PATCH", "progress first");
    let report = json!([format!("JOB#{id}"), "progress_report"]);
    app.answer_late("DynamoDB_20120810.UpdateItem", &report)
        .await;
    assert_eq!(fakes.send(&sent[0]).await.expect("progress"), 200);
    assert_eq!(app.retried(&report).await, 1, "answered late");
    assert_eq!(fakes.send(&sent[1]).await.expect("completion"), 200);
    let received = receiver
        .until(|r| !of_type(r, "job.completed").is_empty())
        .await;
    let progress: Vec<i64> = of_type(&received, "job.progress")
        .iter()
        .filter_map(|r| r.body["data"]["progress"].as_i64())
        .collect();
    assert_eq!(progress, [50]);
}
