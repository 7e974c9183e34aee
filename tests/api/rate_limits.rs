//! Register 5/min and login 10/min, per client IP and per account, held in DynamoDB.

use std::time::Duration;

use serde_json::json;

use crate::app::{PASSWORD, TestApp, problem};

/// Waits, if needed, until at least 20 s of the current minute remain, so a burst falls in one window.
async fn start_of_a_window() {
    let second = chrono::Utc::now().timestamp().rem_euclid(60);
    if second > 40 {
        tokio::time::sleep(Duration::from_secs(u64::try_from(61 - second).unwrap_or(1))).await;
    }
}

#[tokio::test]
async fn register_allows_five_per_minute_per_ip() {
    let app = TestApp::spawn().await;
    start_of_a_window().await;
    for i in 0..5 {
        app.register(&format!("ip{i}@example.com"), &format!("ip_user{i}"))
            .await;
    }
    let before = app.data_items().await;
    let sixth = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": "ip5@example.com", "username": "ip_user5", "password": PASSWORD}),
        )
        .await;
    let retry_after: u64 = sixth.headers()["retry-after"]
        .to_str()
        .expect("h")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    problem(sixth, 429, "rate_limited").await;
    assert_eq!(
        app.data_items().await,
        before,
        "a limited request creates nothing"
    );

    // Another client address has its own budget.
    let other = app
        .client_from("127.0.0.2")
        .post(app.url("/v1/auth/register"))
        .json(&json!({"email": "ip5@example.com", "username": "ip_user5", "password": PASSWORD}))
        .send()
        .await
        .expect("r");
    assert_eq!(other.status(), 201);
}

#[tokio::test]
async fn login_allows_ten_per_minute_per_ip_and_per_account() {
    let app = TestApp::spawn().await;
    app.register("limited@example.com", "limited").await;
    start_of_a_window().await;

    // Per account: ten attempts from ten addresses, the eleventh from a fresh address is refused.
    for i in 0..10 {
        let response = app
            .client_from(&format!("127.0.1.{}", i + 1))
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": "limited@example.com", "password": PASSWORD}))
            .send()
            .await
            .expect("r");
        assert_eq!(response.status(), 200, "attempt {i}");
    }
    let eleventh = app
        .client_from("127.0.1.99")
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "limited@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("r");
    problem(eleventh, 429, "rate_limited").await;

    // Per IP: ten attempts at ten accounts from one address, the eleventh is refused.
    let client = app.client_from("127.0.2.1");
    for i in 0..10 {
        let response = client
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": format!("nobody{i}@example.com"), "password": PASSWORD}))
            .send()
            .await
            .expect("r");
        assert_eq!(response.status(), 401, "attempt {i}");
    }
    let eleventh = client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "nobody10@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("r");
    problem(eleventh, 429, "rate_limited").await;
}

#[tokio::test]
async fn register_allows_five_per_minute_per_account_across_addresses() {
    let app = TestApp::spawn().await;
    start_of_a_window().await;
    let body = json!({"email": "one@example.com", "username": "one_user", "password": PASSWORD});
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = app
            .client_from(&format!("127.0.3.{}", i + 1))
            .post(app.url("/v1/auth/register"))
            .json(&body)
            .send()
            .await
            .expect("r");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [201, 409, 409, 409, 409, 429]);
}
