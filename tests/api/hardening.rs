//! What the outside attack run found (issue #10), each through HTTP against the emulator, with
//! the emulator's fault switch and DynamoDB's key limits where the finding needs them.

use serde_json::{Value, json};

use crate::app::{PASSWORD, TestApp, problem};

const TRANSACT: &str = "DynamoDB_20120810.TransactWriteItems";

async fn token_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("json")
}

/// DynamoDB cancels a transaction that races another on one item (`TransactionConflict`): every
/// transaction (registration, sign-in, refresh rotation, grants) is retried, never a 500, and a
/// raced refresh still ends in reuse detection.
#[tokio::test]
async fn transaction_conflicts_are_retried_everywhere() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let email = format!("conflict-{}@example.com", uuid::Uuid::new_v4().simple());
    app.fault(TRANSACT, &email, 2, json!({"error": "TransactionConflict"}))
        .await;
    let registered = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": email, "username": "conflicted", "password": PASSWORD}),
        )
        .await;
    let registered = token_of(registered, 201).await;
    assert_eq!(
        app.fired(TRANSACT, &email).await,
        2,
        "both conflicts were met"
    );
    let user_id = registered["user"]["id"].as_str().expect("id").to_owned();

    // Sign-in starts a session (family + refresh token) in one transaction naming the user.
    app.fault(
        TRANSACT,
        &user_id,
        2,
        json!({"error": "TransactionConflict"}),
    )
    .await;
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "conflicted", "password": PASSWORD}),
        )
        .await;
    let login = token_of(login, 200).await;
    assert_eq!(app.fired(TRANSACT, &user_id).await, 2);

    // Rotation: conflicts retried; the old token then counts as used.
    let old = login["refresh_token"].as_str().expect("refresh").to_owned();
    app.fault(
        TRANSACT,
        &user_id,
        3,
        json!({"error": "TransactionConflict"}),
    )
    .await;
    let rotated = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": old}))
        .await;
    token_of(rotated, 200).await;
    assert_eq!(app.fired(TRANSACT, &user_id).await, 5);
    let reused = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": old}))
        .await;
    problem(reused, 401, "refresh_token_reused").await;

    // A grant by an admin.
    app.make_admin(&user_id).await;
    let admin = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "conflicted", "password": PASSWORD}),
        )
        .await;
    let admin = token_of(admin, 200).await["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let (grantee_token, grantee) = app.user("grantee").await;
    app.fault(
        TRANSACT,
        &grantee,
        2,
        json!({"error": "TransactionConflict"}),
    )
    .await;
    let granted = app
        .client
        .post(app.url("/v1/admin/credits/grants"))
        .bearer_auth(&admin)
        .json(&json!({"user_id": grantee, "amount": 7}))
        .send()
        .await
        .expect("grant");
    assert_eq!(granted.status(), 201);
    assert_eq!(app.fired(TRANSACT, &grantee).await, 2);
    let (balance, _) = app.credits(&grantee_token).await;
    assert_eq!(balance, 107, "granted exactly once");
}

/// A login name longer than DynamoDB's 2,048-byte key limit (which the emulator enforces on
/// reads, as AWS does) is an unknown account, not a 500.
#[tokio::test]
async fn login_names_over_the_key_limit_are_unknown_accounts() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let long = "a".repeat(3000);
    for body in [
        json!({"username": long, "password": PASSWORD}),
        json!({"email": format!("{long}@example.com"), "password": PASSWORD}),
    ] {
        let response = app.post_json("/v1/auth/login", &body).await;
        problem(response, 401, "invalid_credentials").await;
    }
    let form = app
        .client
        .post(app.url("/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", long.as_str()),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("token");
    problem(form, 401, "invalid_credentials").await;
}
