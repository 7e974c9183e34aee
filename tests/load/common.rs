//! What the load tests share: requests that a client under load would retry, a bounded number
//! in flight, a post to load.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::TestApp;

/// Held by the tests that put a load on the stack (hundreds of requests in flight): one at a
/// time, so each measures its own behaviour, not the other's queue on a 2-core machine.
pub static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn scene() -> Vec<u8> {
    std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/scene.png"),
    )
    .expect("fixture")
}

pub async fn call(
    app: &TestApp,
    method: Method,
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

/// As a client under load does: a 503 (the emulator runs one transaction at a time) is tried
/// again, and so is the gateway's timeout (its bare JSON 500) of a request that is safe to
/// repeat (a follow, a like, an unlike, a delete: each one transaction that a repeat finds done).
pub async fn retrying(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    for _ in 0..20 {
        let response = call(app, method.clone(), path, Some(token), body).await;
        let status = response.status().as_u16();
        let repeatable =
            method != Method::POST || path.ends_with("/like") || path.ends_with("/follow");
        let timed_out = status == 500
            && response
                .headers()
                .get("content-type")
                .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
        if status != 503 && !(repeatable && timed_out) {
            let value = response.json().await.unwrap_or(Value::Null);
            return (status, value);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    (503, Value::Null)
}

/// [`retrying`]'s status, for a request with no body.
pub async fn call_retrying(app: &TestApp, method: Method, path: &str, token: &str) -> u16 {
    retrying(app, method, path, token, None).await.0
}

/// Fails, naming the answers that were not, unless every status is one of `ok`.
pub fn assert_all(answers: &[(u16, Value)], ok: &[u16]) {
    let wrong: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| !ok.contains(s)).collect();
    assert!(
        wrong.is_empty(),
        "{} of {}: {wrong:?}",
        wrong.len(),
        answers.len()
    );
}

/// Runs these requests fifty at a time (a 2-core machine's emulator runs one transaction at
/// once; more in flight only measures its queue); their answers.
pub async fn at_once<T, F: std::future::Future<Output = T>>(
    requests: impl Iterator<Item = F>,
) -> Vec<T> {
    futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(requests),
        50,
    ))
    .await
}

/// Publishes a photo post; the post.
pub async fn publish(app: &TestApp, token: &str, caption: &str, visibility: &str) -> Value {
    let key = app.upload(token, scene(), "image/png").await;
    let response = call(
        app,
        Method::POST,
        "/v1/posts",
        Some(token),
        Some(&json!({"caption": caption, "visibility": visibility, "upload_keys": [key]})),
    )
    .await;
    assert_eq!(response.status(), 201);
    response.json().await.expect("json")
}

/// An account's public profile.
pub async fn profile(app: &TestApp, id: &str) -> Value {
    let response = call(app, Method::GET, &format!("/v1/users/{id}"), None, None).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}
