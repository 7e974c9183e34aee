//! Moderation over HTTP: reports of posts, comments and accounts, one per reporter; content
//! hidden past the threshold; the admin's queue, dismissal and takedown.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, call, photo_post, problem};

async fn report(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    call(app, Method::POST, "/v1/reports", Some(token), Some(&body)).await
}

async fn admin(app: &TestApp) -> String {
    app.admin("moderator").await
}

async fn cases(app: &TestApp, token: &str, status: &str) -> Vec<Value> {
    let page = app
        .get_json(&format!("/v1/admin/reports?status={status}"), token)
        .await;
    page["items"].as_array().expect("items").clone()
}

async fn status_of(app: &TestApp, token: &str, path: &str) -> u16 {
    call(app, Method::GET, path, Some(token), None)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn reported_content_is_hidden_past_the_threshold_and_an_admin_dismisses_or_takes_it_down() {
    let app = TestApp::spawn_with(&[
        ("REPORT_HIDE_THRESHOLD", "3"),
        ("REGISTER_RATE_PER_MINUTE", "1000"),
    ])
    .await;
    let (alice, alice_id) = app.user("alice").await;
    let mut reporters = Vec::new();
    for name in ["bob", "carol", "dan"] {
        reporters.push(app.user(name).await.0);
    }
    let (erin, erin_id) = app.user("erin").await;
    let moderator = admin(&app).await;
    let post = photo_post(&app, &alice, "the harbour #harbour", "public").await;
    let post_id = post["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/posts/{post_id}");

    // Two reports, the first twice: one case of two, the post still shown.
    let body =
        json!({"target_type": "post", "target_id": post_id, "reason": "spam", "details": "ads"});
    let first = report(&app, &reporters[0], body.clone()).await;
    assert_eq!(first.status(), 201);
    let receipt: Value = first.json().await.expect("json");
    assert_eq!(receipt["case_id"], format!("post.{post_id}"));
    assert_eq!(
        report(&app, &reporters[0], body.clone()).await.status(),
        200
    );
    let second = json!({"target_type": "post", "target_id": post_id, "reason": "harassment"});
    assert_eq!(report(&app, &reporters[1], second).await.status(), 201);
    assert_eq!(status_of(&app, &erin, &path).await, 200);
    let open = cases(&app, &moderator, "open").await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["reports_count"], 2);
    assert_eq!(open[0]["reasons"], json!({"spam": 1, "harassment": 1}));

    // The third distinct reporter hides it: from everyone but its author, wherever it was listed.
    assert_eq!(
        report(&app, &reporters[2], body.clone()).await.status(),
        201
    );
    assert_eq!(status_of(&app, &erin, &path).await, 404);
    assert_eq!(status_of(&app, &alice, &path).await, 200);
    let public = app
        .client
        .get(app.url(&format!("/v1/public/posts/{post_id}")))
        .send()
        .await
        .expect("public");
    assert_eq!(public.status(), 404);
    let tagged: Value = app
        .client
        .get(app.url("/v1/hashtags/harbour/posts"))
        .send()
        .await
        .expect("tag")
        .json()
        .await
        .expect("json");
    assert_eq!(tagged["items"], json!([]));
    let listed = app
        .get_json(&format!("/v1/users/{alice_id}/posts"), &erin)
        .await;
    assert_eq!(listed["items"], json!([]));
    assert!(cases(&app, &moderator, "open").await.is_empty());
    let hidden = cases(&app, &moderator, "hidden").await;
    assert_eq!(hidden.len(), 1);
    assert_eq!(hidden[0]["reports_count"], 3);
    let detail = app
        .get_json(&format!("/v1/admin/reports/post.{post_id}"), &moderator)
        .await;
    assert_eq!(detail["reports"].as_array().map(Vec::len), Some(3));
    assert!(detail["reports"].to_string().contains("\"ads\""));

    // Dismissed: shown again, and more reports do not hide it again.
    let dismissed = call(
        &app,
        Method::POST,
        &format!("/v1/admin/reports/post.{post_id}/resolve"),
        Some(&moderator),
        Some(&json!({"action": "dismiss", "note": "satire"})),
    )
    .await;
    assert_eq!(dismissed.status(), 200);
    let dismissed: Value = dismissed.json().await.expect("json");
    assert_eq!(dismissed["status"], "dismissed");
    assert_eq!(dismissed["resolution_note"], "satire");
    assert_eq!(status_of(&app, &erin, &path).await, 200);
    assert_eq!(report(&app, &erin, body.clone()).await.status(), 201);
    assert_eq!(status_of(&app, &erin, &path).await, 200);
    assert_eq!(
        cases(&app, &moderator, "open").await.len(),
        1,
        "reopened for review"
    );

    // A comment reported, then taken down.
    let comment = call(
        &app,
        Method::POST,
        &format!("{path}/comments"),
        Some(&erin),
        Some(&json!({"body": "rude words"})),
    )
    .await;
    let comment: Value = comment.json().await.expect("json");
    let comment_id = comment["id"].as_str().expect("id").to_owned();
    let on_comment = json!({"target_type": "comment", "target_id": comment_id, "post_id": post_id, "reason": "harassment"});
    assert_eq!(report(&app, &alice, on_comment).await.status(), 201);
    let taken = call(
        &app,
        Method::POST,
        &format!("/v1/admin/reports/comment.{comment_id}/resolve"),
        Some(&moderator),
        Some(&json!({"action": "takedown"})),
    )
    .await;
    assert_eq!(taken.status(), 200);
    assert_eq!(
        taken.json::<Value>().await.expect("json")["status"],
        "taken_down"
    );
    let comments = app.get_json(&format!("{path}/comments"), &alice).await;
    assert_eq!(comments["items"], json!([]));
    assert_eq!(app.get_json(&path, &alice).await["counts"]["comments"], 0);
    assert_eq!(cases(&app, &moderator, "taken_down").await.len(), 1);

    // An account reported: listed; not taken down here.
    let on_account =
        json!({"target_type": "user", "target_id": erin_id, "reason": "impersonation"});
    assert_eq!(report(&app, &alice, on_account).await.status(), 201);
    let refused = call(
        &app,
        Method::POST,
        &format!("/v1/admin/reports/user.{erin_id}/resolve"),
        Some(&moderator),
        Some(&json!({"action": "takedown"})),
    )
    .await;
    problem(refused, 422, "takedown_unsupported").await;

    // The post taken down: gone with what hangs on it.
    let taken = call(
        &app,
        Method::POST,
        &format!("/v1/admin/reports/post.{post_id}/resolve"),
        Some(&moderator),
        Some(&json!({"action": "takedown"})),
    )
    .await;
    assert_eq!(taken.status(), 200);
    assert_eq!(status_of(&app, &alice, &path).await, 404);

    // Bad reports; the queue is admins' only.
    let private = photo_post(&app, &alice, "mine", "private").await;
    let own = photo_post(&app, &erin, "my own", "public").await;
    for (body, status, code) in [
        (
            json!({"target_type": "post", "target_id": private["id"], "reason": "spam"}),
            404,
            "not_found",
        ),
        (
            json!({"target_type": "post", "target_id": own["id"], "reason": "spam"}),
            422,
            "own_content",
        ),
        (
            json!({"target_type": "post", "target_id": own["id"], "reason": "boring"}),
            422,
            "validation_failed",
        ),
        (
            json!({"target_type": "planet", "target_id": own["id"], "reason": "spam"}),
            422,
            "validation_failed",
        ),
        (
            json!({"target_type": "post", "target_id": "x", "reason": "spam"}),
            422,
            "validation_failed",
        ),
        (
            json!({"target_type": "comment", "target_id": own["id"], "reason": "spam"}),
            422,
            "validation_failed",
        ),
        (
            json!({"target_type": "post", "target_id": private["id"], "reason": "spam", "details": "x".repeat(1001)}),
            422,
            "validation_failed",
        ),
    ] {
        problem(report(&app, &erin, body).await, status, code).await;
    }
    for path in [
        "/v1/admin/reports".to_owned(),
        format!("/v1/admin/reports/post.{post_id}"),
    ] {
        problem(
            call(&app, Method::GET, &path, Some(&erin), None).await,
            403,
            "forbidden",
        )
        .await;
    }
    let response = call(
        &app,
        Method::GET,
        "/v1/admin/reports/post.nothing",
        Some(&moderator),
        None,
    )
    .await;
    problem(response, 404, "not_found").await;
}
