//! Bad input gets a precise 4xx problem+json and writes nothing.

use serde_json::json;

use crate::app::{PASSWORD, TestApp, problem};

#[tokio::test]
async fn malformed_bodies_are_refused_before_anything_is_written() {
    let app = TestApp::spawn().await;
    let before = app.data_items().await;
    let post = |content_type: &'static str, body: Vec<u8>| {
        app.client
            .post(app.url("/v1/auth/register"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    problem(
        post("application/json", b"{\"email\": ".to_vec())
            .await
            .expect("r"),
        400,
        "malformed_body",
    )
    .await;
    problem(
        post("application/json", b"not json".to_vec())
            .await
            .expect("r"),
        400,
        "malformed_body",
    )
    .await;
    problem(
        post("text/plain", b"{}".to_vec()).await.expect("r"),
        415,
        "unsupported_media_type",
    )
    .await;
    let no_type = app
        .client
        .post(app.url("/v1/auth/register"))
        .body("{}")
        .send()
        .await
        .expect("r");
    problem(no_type, 415, "unsupported_media_type").await;

    // Over 1 MB: refused by size, not parsed.
    let padding = "x".repeat(1024 * 1024 + 10);
    let big = format!(r#"{{"email":"a@example.com","username":"big","password":"{padding}"}}"#);
    let body = problem(
        post("application/json", big.into_bytes()).await.expect("r"),
        413,
        "payload_too_large",
    )
    .await;
    assert_eq!(body["limit"], 1024 * 1024);

    // Over API Gateway's 10 MB: refused by the gateway.
    let huge = vec![b'x'; 10 * 1024 * 1024 + 1];
    problem(
        post("application/json", huge).await.expect("r"),
        413,
        "payload_too_large",
    )
    .await;

    assert_eq!(app.data_items().await, before);
}

#[tokio::test]
async fn fields_are_checked_and_each_failure_is_named() {
    let app = TestApp::spawn().await;
    let before = app.data_items().await;
    let cases = [
        (
            json!({"email": "a@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"email": "a@example.com", "username": "ann", "password": PASSWORD, "role": "admin"}),
            "role",
        ),
        (
            json!({"email": "not-an-email", "username": "ann", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "a@example.com", "username": "ann", "password": "short"}),
            "password",
        ),
        (
            json!({"email": "a@example.com", "username": "a b", "password": PASSWORD}),
            "username",
        ),
        // A value of the wrong type is named by its field (serde_path_to_error), not as `body`.
        (
            json!({"email": 7, "username": "ann", "password": PASSWORD}),
            "email",
        ),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let response = app.post_json("/v1/auth/register", &body).await;
        let problem = problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    // Several bad fields at once are all reported.
    let response = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": "x", "username": "!", "password": "1"}),
        )
        .await;
    let problem = problem(response, 422, "validation_failed").await;
    assert_eq!(problem["errors"].as_array().expect("errors").len(), 3);
    // Login needs exactly one of email and username.
    let both = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "a@example.com", "username": "ann", "password": PASSWORD}),
        )
        .await;
    crate::app::problem(both, 422, "validation_failed").await;

    assert_eq!(app.data_items().await, before);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    let missing = app
        .client
        .get(app.url("/v1/nothing/here"))
        .send()
        .await
        .expect("r");
    problem(missing, 404, "not_found").await;
    let wrong_method = app
        .client
        .delete(app.url("/v1/auth/register"))
        .send()
        .await
        .expect("r");
    assert_eq!(wrong_method.headers()["allow"], "POST");
    problem(wrong_method, 405, "method_not_allowed").await;
    let wrong_method = app.client.put(app.url("/health")).send().await.expect("r");
    problem(wrong_method, 405, "method_not_allowed").await;
}
