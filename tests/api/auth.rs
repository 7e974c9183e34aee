//! Accounts and sessions end to end.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::app::{PASSWORD, TestApp, problem};

#[tokio::test]
async fn register_login_me_refresh_reuse_logout() {
    let app = TestApp::spawn().await;

    // Register: 201 with tokens and the account, starting credits granted.
    let registered = app.register("Ann@Example.com", "ann").await;
    assert_eq!(registered["token_type"], "Bearer");
    assert_eq!(registered["expires_in"], 900);
    assert_eq!(registered["user"]["email"], "ann@example.com");
    assert_eq!(registered["user"]["credits"], 100);
    assert_eq!(registered["user"]["membership"]["tier"], "free");
    assert_eq!(
        registered["user"]["needs_consent"], true,
        "a new account has no birthday or gender"
    );
    assert!(
        registered["refresh_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("rt_"))
    );

    // Log in by email and by username.
    let by_email = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(by_email.status(), 200);
    let by_name = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "ANN", "password": PASSWORD}),
        )
        .await;
    assert_eq!(by_name.status(), 200);
    let session: Value = by_email.json().await.expect("json");
    let access = session["access_token"].as_str().expect("access");
    let refresh = session["refresh_token"].as_str().expect("refresh");

    // Me.
    let me = app.get_with_token("/v1/auth/me", access).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["id"], registered["user"]["id"]);
    assert!(me.get("password_hash").is_none());

    // Refresh rotates: a new pair, the new access token works.
    let rotated = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.expect("json");
    let next_refresh = rotated["refresh_token"].as_str().expect("refresh");
    assert_ne!(next_refresh, refresh);
    assert_eq!(
        app.get_with_token("/v1/auth/me", rotated["access_token"].as_str().expect("a"))
            .await
            .status(),
        200
    );

    // Reuse of the old refresh token revokes the family: the new one stops working too.
    let reused = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": refresh}))
        .await;
    problem(reused, 401, "refresh_token_reused").await;
    let after = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": next_refresh}))
        .await;
    problem(after, 401, "invalid_refresh_token").await;

    // Other sessions are untouched; logout ends one.
    let other: Value = by_name.json().await.expect("json");
    let other_refresh = other["refresh_token"].as_str().expect("refresh");
    let logout = app
        .post_json("/v1/auth/logout", &json!({"refresh_token": other_refresh}))
        .await;
    assert_eq!(logout.status(), 204);
    let after_logout = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": other_refresh}))
        .await;
    problem(after_logout, 401, "invalid_refresh_token").await;

    // The session from registration still works.
    let first = app
        .post_json(
            "/v1/auth/refresh",
            &json!({"refresh_token": registered["refresh_token"].as_str().expect("r")}),
        )
        .await;
    assert_eq!(first.status(), 200);
}

#[tokio::test]
async fn a_refresh_token_raced_twice_yields_one_session() {
    let app = TestApp::spawn().await;
    let registered = app.register("race@example.com", "racer").await;
    let refresh = registered["refresh_token"].as_str().expect("refresh");
    let body = json!({"refresh_token": refresh});
    let (a, b) = tokio::join!(
        app.post_json("/v1/auth/refresh", &body),
        app.post_json("/v1/auth/refresh", &body)
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401]);
}

#[tokio::test]
async fn the_oauth2_token_endpoint_speaks_the_password_and_refresh_grants() {
    let app = TestApp::spawn().await;
    app.register("oauth@example.com", "oauth_user").await;

    let granted = app
        .client
        .post(app.url("/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "oauth@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(granted.status(), 200);
    let granted: Value = granted.json().await.expect("json");
    assert_eq!(granted["token_type"], "Bearer");

    let refreshed = app
        .client
        .post(app.url("/v1/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                granted["refresh_token"].as_str().expect("r"),
            ),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(refreshed.status(), 200);

    let wrong = app
        .client
        .post(app.url("/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "oauth_user"),
            ("password", "not the password"),
        ])
        .send()
        .await
        .expect("request");
    problem(wrong, 401, "invalid_credentials").await;

    let unsupported = app
        .client
        .post(app.url("/v1/auth/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    problem(unsupported, 422, "validation_failed").await;

    let as_json = app
        .post_json("/v1/auth/token", &json!({"grant_type": "password"}))
        .await;
    problem(as_json, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn duplicates_conflict_and_write_nothing() {
    let app = TestApp::spawn().await;
    app.register("dup@example.com", "dup_user").await;
    let before = app.data_items().await;

    let same_email = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": "DUP@example.com", "username": "other", "password": PASSWORD}),
        )
        .await;
    problem(same_email, 409, "email_taken").await;
    let same_name = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": "new@example.com", "username": "Dup_User", "password": PASSWORD}),
        )
        .await;
    problem(same_name, 409, "username_taken").await;

    assert_eq!(app.data_items().await, before);
}

#[tokio::test]
async fn concurrent_registrations_of_one_email_create_one_account() {
    let app = TestApp::spawn_with(&[("REGISTER_RATE_PER_MINUTE", "100")]).await;
    let attempts = (0..8).map(|i| {
        let body = json!({"email": "same@example.com", "username": format!("same{i}"), "password": PASSWORD});
        let app = &app;
        async move { app.post_json("/v1/auth/register", &body).await.status().as_u16() }
    });
    let mut statuses: Vec<u16> = futures::future::join_all(attempts).await;
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn bad_credentials_get_401_and_take_as_long_as_a_real_account() {
    let app = TestApp::spawn_with(&[("LOGIN_RATE_PER_MINUTE", "1000")]).await;
    app.register("timing@example.com", "timing").await;

    let unknown = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    let unknown_body = problem(unknown, 401, "invalid_credentials").await;
    let wrong = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "timing@example.com", "password": "wrong password"}),
        )
        .await;
    let wrong_body = problem(wrong, 401, "invalid_credentials").await;
    assert_eq!(unknown_body["detail"], wrong_body["detail"]);

    // Interleave the two kinds so machine noise hits both alike; compare medians.
    let mut known = Vec::new();
    let mut missing = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        app.post_json(
            "/v1/auth/login",
            &json!({"email": "timing@example.com", "password": "wrong password"}),
        )
        .await;
        known.push(started.elapsed());
        let started = Instant::now();
        app.post_json(
            "/v1/auth/login",
            &json!({"email": "nobody@example.com", "password": "wrong password"}),
        )
        .await;
        missing.push(started.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2].as_secs_f64()
    };
    let (known, missing) = (median(known), median(missing));
    let ratio = missing / known;
    assert!(
        (0.6..1.67).contains(&ratio),
        "unknown account {missing:.4}s vs wrong password {known:.4}s"
    );
}

#[tokio::test]
async fn the_starting_grant_is_configurable() {
    let app = TestApp::spawn_with(&[("STARTING_CREDITS", "250")]).await;
    let registered = app.register("rich@example.com", "rich").await;
    assert_eq!(registered["user"]["credits"], 250);
    let ledger: Vec<_> = app
        .items()
        .await
        .into_iter()
        .filter(|i| i["sk"].as_s().is_ok_and(|s| s.starts_with("LEDGER#")))
        .collect();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["amount"].as_n().expect("n"), "250");
    assert_eq!(ledger[0]["reason"].as_s().expect("s"), "grant");
}

#[tokio::test]
async fn the_profile_is_patched_validated_and_cleared() {
    let app = TestApp::spawn().await;
    let registered = app.register("profile@example.com", "profile").await;
    let token = registered["access_token"].as_str().expect("token");
    let patch = |body: Value| {
        app.client
            .patch(app.url("/v1/users/me"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };

    let updated = patch(json!({
        "display_name": "  Ann Lee ", "photo_url": "https://cdn.example.com/a.png",
        "birthday": "1990-04-01", "gender": "female"
    }))
    .await
    .expect("request");
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.expect("json");
    assert_eq!(updated["display_name"], "Ann Lee");
    assert_eq!(updated["birthday"], "1990-04-01");
    assert_eq!(updated["gender"], "female");
    assert_eq!(
        updated["needs_consent"], false,
        "birthday and gender are both set"
    );

    // SelfStar's Korean values are the same two genders, stored and shown as such.
    for (korean, stored) in [("남성", "male"), ("여성", "female")] {
        let response = patch(json!({"gender": korean})).await.expect("request");
        assert_eq!(response.status(), 200, "{korean}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["gender"], stored, "{korean}");
    }
    let response = patch(json!({"gender": null})).await.expect("request");
    let cleared: Value = response.json().await.expect("json");
    assert_eq!(
        cleared["needs_consent"], true,
        "no gender: consent needed again"
    );
    assert!(cleared["gender"].is_null());
    let response = patch(json!({"gender": "female"})).await.expect("request");
    assert_eq!(response.status(), 200);

    // Every bad field is reported, and nothing changes.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    for (body, field) in [
        (json!({"birthday": tomorrow}), "birthday"),
        (json!({"birthday": "1899-12-31"}), "birthday"),
        (json!({"birthday": "01/04/1990"}), "birthday"),
        (json!({"gender": "robot"}), "gender"),
        (json!({"gender": "남자"}), "gender"),
        (json!({"photo_url": "javascript:alert(1)"}), "photo_url"),
        (json!({"display_name": "x".repeat(51)}), "display_name"),
        (json!({"credits": 1_000_000}), "credits"),
        (json!({"membership": {"tier": "premium"}}), "membership"),
    ] {
        let response = patch(body.clone()).await.expect("request");
        let problem = problem(response, 422, "validation_failed").await;
        let fields: Vec<_> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["field"].clone())
            .collect();
        assert!(
            fields.iter().any(|f| f == field) || field == "gender",
            "{body}: {fields:?}"
        );
    }
    let me: Value = app
        .get_with_token("/v1/auth/me", token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["birthday"], "1990-04-01");
    assert_eq!(me["credits"], 100);
    assert_eq!(me["membership"]["tier"], "free");

    // null clears a field; absent fields stay.
    let cleared: Value = patch(json!({"birthday": null}))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(cleared["birthday"], Value::Null);
    assert_eq!(cleared["display_name"], "Ann Lee");
}
