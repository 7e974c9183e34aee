//! The account's life by mail (through the mail queue and the emulator's SES, whose sent
//! messages the tests read) and by password: email verification, reset, change.

use std::time::Duration;

use serde_json::{Value, json};

use crate::app::{PASSWORD, TestApp, problem};

const LINKS: &str = "https://app.example";

async fn start() -> TestApp {
    TestApp::spawn_with(&[
        ("ACCOUNT_LINK_BASE_URL", LINKS),
        ("LOGIN_RATE_PER_MINUTE", "1000"),
    ])
    .await
}

/// Every message the emulator's SES sent to `to`, oldest first.
async fn mails_to(app: &TestApp, to: &str) -> Vec<Value> {
    let all: Vec<Value> = app
        .client
        .get(format!("{}/_lambent/ses/messages", app.endpoint))
        .send()
        .await
        .expect("messages")
        .json()
        .await
        .expect("json");
    all.into_iter()
        .filter(|m| {
            m["destinations"]["ToAddresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d == to))
        })
        .collect()
}

/// Waits for the `n`th mail to `to` and returns the token its link carries.
async fn nth_token(app: &TestApp, to: &str, n: usize, page: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mails = mails_to(app, to).await;
        if let Some(mail) = mails.get(n - 1) {
            let body = mail["body"].as_str().expect("body");
            let link = format!("{LINKS}/{page}?token=");
            let start = body.find(&link).expect("a link") + link.len();
            return body[start..]
                .split_whitespace()
                .next()
                .expect("token")
                .to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no mail to {to}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the mail queue holds nothing, in flight or waiting.
async fn mail_queue_drained(app: &TestApp) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let sqs = aws_sdk_sqs::Client::new(&app.running.sdk);
    let queue = &app.running.stack.refs["AccountMailQueue"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = sqs
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("attributes");
        let attributes = out.attributes.unwrap_or_default();
        let count = |name: A| attributes.get(&name).map(String::as_str) == Some("0");
        if count(A::ApproximateNumberOfMessages) && count(A::ApproximateNumberOfMessagesNotVisible)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mail queue drains"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(app: &TestApp, path: &str, body: &Value, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// Whether the caller's account shows its email verified.
async fn email_verified(app: &TestApp, access: &str) -> Value {
    let me: Value = app
        .get_with_token("/v1/auth/me", access)
        .await
        .json()
        .await
        .expect("json");
    me["email_verified"].clone()
}

async fn ask_verification(app: &TestApp, access: &str) -> reqwest::Response {
    post(app, "/v1/auth/email/verification", &json!({}), Some(access)).await
}

async fn verify(app: &TestApp, token: &str) -> reqwest::Response {
    post(app, "/v1/auth/email/verify", &json!({"token": token}), None).await
}

/// Asks for a reset mail; the answer's status and body.
async fn forgot(app: &TestApp, email: &str) -> (u16, Value) {
    let response = post(
        app,
        "/v1/auth/password/forgot",
        &json!({"email": email}),
        None,
    )
    .await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post_json(
        "/v1/auth/login",
        &json!({"email": email, "password": password}),
    )
    .await
}

async fn refresh(app: &TestApp, token: &str) -> u16 {
    app.post_json("/v1/auth/refresh", &json!({"refresh_token": token}))
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn email_verification_mails_a_single_use_link() {
    let app = start().await;
    let ann = app.register("ann@example.com", "ann").await;
    assert_eq!(ann["user"]["email_verified"], false);
    let access = ann["access_token"].as_str().expect("access");
    let asked = ask_verification(&app, access).await;
    assert_eq!(asked.status(), 202);
    let token = nth_token(&app, "ann@example.com", 1, "verify-email").await;
    // A wrong token changes nothing.
    let wrong = verify(&app, "made-up").await;
    problem(wrong, 400, "invalid_token").await;
    assert_eq!(email_verified(&app, access).await, false);
    let verified = verify(&app, &token).await;
    assert_eq!(verified.status(), 200);
    assert_eq!(email_verified(&app, access).await, true);
    // Once only; and a verified email needs no second mail.
    let again = verify(&app, &token).await;
    problem(again, 400, "invalid_token").await;
    let asked = ask_verification(&app, access).await;
    problem(asked, 409, "email_already_verified").await;
}

#[tokio::test]
async fn a_password_reset_is_single_use_expires_and_tells_nobody_who_has_an_account() {
    let app = start().await;
    let bob = app.register("bob@example.com", "bob").await;
    let old_refresh = bob["refresh_token"].as_str().expect("refresh").to_owned();
    // The same answer for an account's email and for nobody's.
    let unknown = forgot(&app, "nobody@example.com").await;
    let known = forgot(&app, "Bob@Example.com").await;
    assert_eq!(known.0, 202);
    assert_eq!(known, unknown);
    let first = nth_token(&app, "bob@example.com", 1, "reset-password").await;
    mail_queue_drained(&app).await;
    assert!(
        mails_to(&app, "nobody@example.com").await.is_empty(),
        "nobody gets mail"
    );

    // A verification token is no reset token; a made-up one changes nothing.
    let reset = |token: &str, password: &str| {
        let body = json!({"token": token, "new_password": password});
        let app = &app;
        async move { post(app, "/v1/auth/password/reset", &body, None).await }
    };
    problem(
        reset("made-up", "a brand new password").await,
        400,
        "invalid_token",
    )
    .await;
    // A password refused keeps the token.
    problem(reset(&first, "short").await, 422, "validation_failed").await;
    assert_eq!(login(&app, "bob@example.com", PASSWORD).await.status(), 200);

    // A second mail; then the first token resets the password.
    assert_eq!(forgot(&app, "bob@example.com").await.0, 202);
    let second = nth_token(&app, "bob@example.com", 2, "reset-password").await;
    assert_eq!(reset(&first, "a brand new password").await.status(), 204);
    assert_eq!(login(&app, "bob@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        login(&app, "bob@example.com", "a brand new password")
            .await
            .status(),
        200
    );
    // The reset ended the sessions begun before it.
    assert_eq!(refresh(&app, &old_refresh).await, 401);
    // Once only; and the second token, issued before the reset, no longer works.
    problem(
        reset(&first, "another new password").await,
        400,
        "invalid_token",
    )
    .await;
    problem(
        reset(&second, "another new password").await,
        400,
        "invalid_token",
    )
    .await;

    // A token past its hour is refused (its expiry moved back, as time would).
    assert_eq!(forgot(&app, "bob@example.com").await.0, 202);
    let third = nth_token(&app, "bob@example.com", 3, "reset-password").await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&app.running.sdk);
    dynamodb
        .update_item()
        .table_name(&app.running.stack.refs["Table"])
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(lambent::keys::account_token(&third)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(lambent::keys::TOKEN.into()),
        )
        .update_expression("SET expires_at = :past")
        .expression_attribute_values(
            ":past",
            aws_sdk_dynamodb::types::AttributeValue::N(
                (chrono::Utc::now().timestamp() - 1).to_string(),
            ),
        )
        .send()
        .await
        .expect("expire");
    problem(
        reset(&third, "another new password").await,
        400,
        "invalid_token",
    )
    .await;
    assert_eq!(
        login(&app, "bob@example.com", "a brand new password")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions() {
    let app = start().await;
    let carol = app.register("carol@example.com", "carol").await;
    let first_refresh = carol["refresh_token"].as_str().expect("refresh").to_owned();
    let access = carol["access_token"].as_str().expect("access").to_owned();
    let other: Value = login(&app, "carol@example.com", PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    let other_refresh = other["refresh_token"].as_str().expect("refresh").to_owned();
    let change = |current: Option<&str>, new: &str| {
        let mut body = json!({"new_password": new});
        if let Some(current) = current {
            body["current_password"] = json!(current);
        }
        let (app, access) = (&app, access.clone());
        async move { post(app, "/v1/auth/password", &body, Some(&access)).await }
    };
    problem(
        change(Some("not it"), "carol's new password").await,
        401,
        "invalid_credentials",
    )
    .await;
    problem(
        change(None, "carol's new password").await,
        422,
        "validation_failed",
    )
    .await;
    // The other session goes on until the change.
    let rotated: Value = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": other_refresh}))
        .await
        .json()
        .await
        .expect("json");
    let other_refresh = rotated["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    let changed = change(Some(PASSWORD), "carol's new password").await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.expect("json");
    // This client's new session works; the others are over.
    assert_eq!(
        refresh(&app, changed["refresh_token"].as_str().expect("refresh")).await,
        200
    );
    assert_eq!(refresh(&app, &first_refresh).await, 401);
    assert_eq!(refresh(&app, &other_refresh).await, 401);
    let old: Value = login(&app, "carol@example.com", PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(old["code"], "invalid_credentials");
    assert_eq!(
        login(&app, "carol@example.com", "carol's new password")
            .await
            .status(),
        200
    );
}

/// The first admin is named at deploy (`ADMIN_EMAILS`): that account becomes an admin when it
/// signs in with the email verified, and not before (anyone may register any address).
#[tokio::test]
async fn a_named_admin_becomes_one_once_the_email_is_verified() {
    let app = TestApp::spawn_with(&[
        ("ACCOUNT_LINK_BASE_URL", LINKS),
        ("LOGIN_RATE_PER_MINUTE", "1000"),
        ("ADMIN_EMAILS", "someone@example.com, Boss@Example.com"),
    ])
    .await;
    let boss = app.register("boss@example.com", "boss").await;
    assert_eq!(boss["user"]["role"], "user");
    let access = boss["access_token"].as_str().expect("access").to_owned();
    let unverified = login(&app, "boss@example.com", PASSWORD).await;
    let unverified: Value = unverified.json().await.expect("json");
    assert_eq!(
        unverified["user"]["role"], "user",
        "not before the email is verified"
    );
    let forbidden = app.get_with_token("/v1/admin/users", &access).await;
    problem(forbidden, 403, "forbidden").await;
    assert_eq!(ask_verification(&app, &access).await.status(), 202);
    let token = nth_token(&app, "boss@example.com", 1, "verify-email").await;
    assert_eq!(verify(&app, &token).await.status(), 200);
    let signed_in: Value = login(&app, "boss@example.com", PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(signed_in["user"]["role"], "admin");
    let admin = signed_in["access_token"].as_str().expect("access");
    let found = app
        .get_json("/v1/admin/users?email=BOSS@example.com", admin)
        .await;
    assert_eq!(found["items"][0]["role"], "admin");
    // Others stay users.
    let (other, _) = app.user("someone_else").await;
    problem(
        app.get_with_token("/v1/admin/users", &other).await,
        403,
        "forbidden",
    )
    .await;
    let all = app.get_json("/v1/admin/users?limit=1", admin).await;
    assert_eq!(all["items"].as_array().expect("items").len(), 1);
    let cursor = all["next_cursor"].as_str().expect("a next page");
    let rest = app
        .get_json(&format!("/v1/admin/users?limit=10&cursor={cursor}"), admin)
        .await;
    let mut names: Vec<String> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .chain(rest["items"].as_array().expect("items"))
        .map(|u| u["username"].as_str().expect("username").to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["boss", "someone_else"]);
}

/// A link whose token is taken by a write answered after the SDK's attempt timeout: the SDK's
/// retry would find the token gone and the link would read as invalid. Taken once, it verifies.
#[tokio::test]
async fn a_verification_link_taken_late_still_verifies() {
    let app = start().await;
    let late = app.register("latelink@example.com", "latelink").await;
    let access = late["access_token"].as_str().expect("access");
    assert_eq!(ask_verification(&app, access).await.status(), 202);
    let token = nth_token(&app, "latelink@example.com", 1, "verify-email").await;
    let delete = "DynamoDB_20120810.DeleteItem";
    let taken = json!([lambent::keys::account_token(&token)]);
    app.answer_late_either(delete, &taken).await;
    let verified = verify(&app, &token).await;
    assert_eq!(verified.status(), 200);
    assert_eq!(app.retried(&taken).await, 1, "answered late");
    assert_eq!(email_verified(&app, access).await, true);
    problem(verify(&app, &token).await, 400, "invalid_token").await;
}
