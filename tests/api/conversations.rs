//! WEAV's conversations: folders and sessions, owner-scoped, with folders' counts kept right as
//! sessions come, move and go.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, call, ok_json, problem};

async fn folder(app: &TestApp, token: &str, name: &str) -> String {
    let made = ok_json(
        call(
            app,
            Method::POST,
            "/v1/folders",
            Some(token),
            Some(&json!({ "name": name })),
        )
        .await,
        201,
    )
    .await;
    made["id"].as_str().expect("id").to_owned()
}

async fn session(app: &TestApp, token: &str, body: Value) -> Value {
    ok_json(
        call(app, Method::POST, "/v1/sessions", Some(token), Some(&body)).await,
        201,
    )
    .await
}

async fn folders(app: &TestApp, token: &str) -> Vec<(String, i64)> {
    app.get_json("/v1/folders", token).await["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_owned(),
                f["session_count"].as_i64().expect("count"),
            )
        })
        .collect()
}

/// Every session id of a listing, newest first, through all its pages of `limit`.
async fn listed(app: &TestApp, token: &str, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/sessions?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(&path, token).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit);
        ids.extend(
            items
                .iter()
                .map(|s| s["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn sessions_move_between_folders_and_the_counts_follow() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("weaver").await;
    let work = folder(&app, &token, "Work").await;
    let trips = folder(&app, &token, "Trips").await;
    let jeju = session(
        &app,
        &token,
        json!({"kind": "chat", "title": "Jeju in May", "folder_id": work}),
    )
    .await;
    let jeju_id = jeju["id"].as_str().expect("id").to_owned();
    assert_eq!(
        (jeju["kind"].as_str(), jeju["folder_id"].as_str()),
        (Some("chat"), Some(work.as_str()))
    );
    let loose = session(&app, &token, json!({"kind": "image"})).await;
    let loose_id = loose["id"].as_str().expect("id").to_owned();
    assert!(loose["title"].is_null() && loose["folder_id"].is_null());
    assert_eq!(
        folders(&app, &token).await,
        [("Work".to_owned(), 1), ("Trips".to_owned(), 0)]
    );
    assert_eq!(
        listed(&app, &token, &format!("&folder_id={work}"), 10).await,
        std::slice::from_ref(&jeju_id)
    );
    assert_eq!(
        listed(&app, &token, "&folder_id=root", 10).await,
        std::slice::from_ref(&loose_id)
    );
    assert_eq!(
        listed(&app, &token, "", 10).await,
        [loose_id.clone(), jeju_id.clone()]
    );

    // Renamed and moved to Trips; then out of any folder; then into Work again.
    let path = format!("/v1/sessions/{jeju_id}");
    let moved = ok_json(
        patch(
            &app,
            &token,
            &path,
            json!({"title": "Jeju, again", "folder_id": trips}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (moved["title"].as_str(), moved["folder_id"].as_str()),
        (Some("Jeju, again"), Some(trips.as_str()))
    );
    assert_eq!(
        folders(&app, &token).await,
        [("Work".to_owned(), 0), ("Trips".to_owned(), 1)]
    );
    let out = ok_json(
        patch(&app, &token, &path, json!({"folder_id": null})).await,
        200,
    )
    .await;
    assert!(out["folder_id"].is_null());
    assert_eq!(listed(&app, &token, "&folder_id=root", 10).await.len(), 2);
    ok_json(
        patch(&app, &token, &path, json!({"folder_id": work})).await,
        200,
    )
    .await;
    // A title alone leaves it where it is.
    ok_json(
        patch(&app, &token, &path, json!({"title": "Jeju"})).await,
        200,
    )
    .await;
    assert_eq!(
        folders(&app, &token).await,
        [("Work".to_owned(), 1), ("Trips".to_owned(), 0)]
    );

    // A folder goes once empty.
    let work_path = format!("/v1/folders/{work}");
    problem(
        delete(&app, &token, &work_path).await,
        409,
        "folder_not_empty",
    )
    .await;
    let renamed = ok_json(
        patch(&app, &token, &work_path, json!({"name": "Office"})).await,
        200,
    )
    .await;
    assert_eq!(renamed["name"], "Office");
    assert_eq!(delete(&app, &token, &path).await.status(), 204);
    assert_eq!(delete(&app, &token, &work_path).await.status(), 204);
    assert_eq!(folders(&app, &token).await, [("Trips".to_owned(), 0)]);
    problem(
        call(&app, Method::GET, &path, Some(&token), None).await,
        404,
        "not_found",
    )
    .await;
    // Into a folder that is gone: nothing changes.
    let loose_path = format!("/v1/sessions/{loose_id}");
    problem(
        patch(&app, &token, &loose_path, json!({"folder_id": work})).await,
        404,
        "not_found",
    )
    .await;
    assert!(app.get_json(&loose_path, &token).await["folder_id"].is_null());
    problem(
        session_status(&app, &token, json!({"kind": "chat", "folder_id": work})).await,
        404,
        "not_found",
    )
    .await;
    problem(
        session_status(&app, &token, json!({"kind": "video"})).await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        session_status(&app, &token, json!({"kind": "chat", "title": ""})).await,
        422,
        "validation_failed",
    )
    .await;
}

async fn patch(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    call(app, Method::PATCH, path, Some(token), Some(&body)).await
}

async fn delete(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    call(app, Method::DELETE, path, Some(token), None).await
}

async fn session_status(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    call(app, Method::POST, "/v1/sessions", Some(token), Some(&body)).await
}

#[tokio::test]
async fn someone_elses_folders_and_sessions_are_not_there() {
    let app = TestApp::spawn().await;
    let (owner, _) = app.user("owner").await;
    let (other, _) = app.user("other").await;
    let work = folder(&app, &owner, "Work").await;
    let chat = session(&app, &owner, json!({"kind": "studio", "folder_id": work})).await;
    let id = chat["id"].as_str().expect("id").to_owned();
    let session_path = format!("/v1/sessions/{id}");
    let folder_path = format!("/v1/folders/{work}");
    problem(
        call(&app, Method::GET, &session_path, Some(&other), None).await,
        404,
        "not_found",
    )
    .await;
    problem(
        patch(&app, &other, &session_path, json!({"title": "mine"})).await,
        404,
        "not_found",
    )
    .await;
    problem(delete(&app, &other, &session_path).await, 404, "not_found").await;
    problem(
        patch(&app, &other, &folder_path, json!({"name": "mine"})).await,
        404,
        "not_found",
    )
    .await;
    problem(delete(&app, &other, &folder_path).await, 404, "not_found").await;
    problem(
        session_status(&app, &other, json!({"kind": "chat", "folder_id": work})).await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.get_with_token(&format!("/v1/sessions?folder_id={work}"), &other)
            .await,
        404,
        "not_found",
    )
    .await;
    let bulk = ok_json(
        call(
            &app,
            Method::POST,
            "/v1/sessions/bulk-delete",
            Some(&other),
            Some(&json!({"ids": [id, "nonsense"]})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(bulk["deleted"], json!([]));
    assert_eq!(bulk["not_found"], json!([id, "nonsense"]));
    assert!(
        app.get_json("/v1/folders", &other).await["items"]
            .as_array()
            .expect("items")
            .is_empty()
    );
    assert!(listed(&app, &other, "", 10).await.is_empty());
    // All still there for the owner.
    assert_eq!(app.get_json(&session_path, &owner).await["kind"], "studio");
    assert_eq!(folders(&app, &owner).await, [("Work".to_owned(), 1)]);
}

#[tokio::test]
async fn sessions_come_in_pages_and_go_in_bulk_and_folders_are_limited() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("many").await;
    let work = folder(&app, &token, "Work").await;
    let made = join_all((0..25).map(|i| {
        let body = if i % 2 == 0 {
            json!({"kind": "chat", "folder_id": work})
        } else {
            json!({"kind": "chat"})
        };
        let (app, token) = (&app, &token);
        async move {
            session(app, token, body).await["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    }))
    .await;
    let mut newest_first = made.clone();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(listed(&app, &token, "", 10).await, newest_first);
    assert_eq!(
        listed(&app, &token, &format!("&folder_id={work}"), 4)
            .await
            .len(),
        13
    );
    assert_eq!(folders(&app, &token).await, [("Work".to_owned(), 13)]);
    // A cursor belongs to its listing.
    let page = app.get_json("/v1/sessions?limit=5", &token).await;
    let cursor = page["next_cursor"].as_str().expect("cursor");
    problem(
        app.get_with_token(
            &format!("/v1/sessions?limit=5&folder_id=root&cursor={cursor}"),
            &token,
        )
        .await,
        400,
        "invalid_cursor",
    )
    .await;
    // Bulk: the folder's count follows; ids given twice count once.
    let gone: Vec<String> = made.iter().take(10).cloned().collect();
    let mut asked = gone.clone();
    asked.push(gone[0].clone());
    let bulk = ok_json(
        call(
            &app,
            Method::POST,
            "/v1/sessions/bulk-delete",
            Some(&token),
            Some(&json!({ "ids": asked })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(bulk["deleted"].as_array().expect("deleted").len(), 10);
    assert_eq!(listed(&app, &token, "", 100).await.len(), 15);
    assert_eq!(folders(&app, &token).await, [("Work".to_owned(), 8)]);
    let too_many: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    problem(
        call(
            &app,
            Method::POST,
            "/v1/sessions/bulk-delete",
            Some(&token),
            Some(&json!({ "ids": too_many })),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    // 200 folders at most.
    for i in 1..200 {
        folder(&app, &token, &format!("f{i}")).await;
    }
    for (name, status, code) in [
        ("one more", 409, "too_many_folders"),
        ("   ", 422, "validation_failed"),
    ] {
        let answer = call(
            &app,
            Method::POST,
            "/v1/folders",
            Some(&token),
            Some(&json!({ "name": name })),
        )
        .await;
        problem(answer, status, code).await;
    }
}
