//! The social layer over HTTP: public profiles (bio, a changeable unique handle) and follows.
//! (Follows at once, counted exactly: a load test, tests/load.)

use serde_json::{Value, json};

use crate::app::{TestApp, call, problem};

async fn profile(app: &TestApp, id: &str) -> Value {
    let response = call(
        app,
        reqwest::Method::GET,
        &format!("/v1/users/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[tokio::test]
async fn a_public_profile_shows_its_bio_and_counts_and_a_handle_changes_once_taken() {
    let app = TestApp::spawn().await;
    let (ann, ann_id) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let patch = |token: &str, body: Value| {
        let (app, token) = (&app, token.to_owned());
        async move {
            call(
                app,
                reqwest::Method::PATCH,
                "/v1/users/me",
                Some(&token),
                Some(&body),
            )
            .await
        }
    };
    assert_eq!(
        patch(&ann, json!({"bio": "draws cats", "display_name": "Ann"}))
            .await
            .status(),
        200
    );
    // Anyone may read it, without signing in: public fields only.
    let seen = profile(&app, &ann_id).await;
    assert_eq!(
        (seen["username"].as_str(), seen["bio"].as_str()),
        (Some("ann"), Some("draws cats"))
    );
    assert_eq!(
        seen["counts"],
        json!({"posts": 0, "followers": 0, "following": 0})
    );
    for private in ["email", "credits", "birthday", "role", "membership"] {
        assert!(seen.get(private).is_none(), "{private} is not public");
    }
    problem(
        call(
            &app,
            reqwest::Method::GET,
            "/v1/users/no-such-account",
            None,
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // A new handle: the old one is free at once; a taken one is a 409 that changes nothing.
    assert_eq!(
        patch(&ann, json!({"username": "ann.draws"})).await.status(),
        200
    );
    assert_eq!(profile(&app, &ann_id).await["username"], "ann.draws");
    problem(
        patch(&bob, json!({"username": "ANN.draws", "bio": "mine"})).await,
        409,
        "username_taken",
    )
    .await;
    let bob_me: Value = app
        .get_with_token("/v1/auth/me", &bob)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (bob_me["username"].as_str(), bob_me["bio"].as_str()),
        (Some("bob"), None)
    );
    assert_eq!(
        patch(&bob, json!({"username": "ann"})).await.status(),
        200,
        "the old handle is free"
    );
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "ann.draws", "password": crate::app::PASSWORD}),
        )
        .await;
    assert_eq!(login.status(), 200, "the new handle signs in");
    problem(
        patch(&ann, json!({"bio": "x".repeat(301), "username": "a b"})).await,
        422,
        "validation_failed",
    )
    .await;
}
