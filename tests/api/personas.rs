//! SelfStar's personas: owner-scoped CRUD, the per-account cap under concurrency, and a
//! generation that names one (the fake fal sees the persona in its prompt).

use serde_json::{Value, json};

use crate::app::{TestApp, problem};

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request")
}

async fn create(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    send(
        app,
        reqwest::Method::POST,
        "/v1/personas",
        token,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn personas_are_the_owners_to_create_read_edit_and_delete() {
    let app = TestApp::spawn().await;
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let created = create(
        &app,
        &ann,
        &json!({"name": " Yuna ", "gender": "여성",
        "features": ["long black hair", "round glasses"], "options": {"style": "film"}}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let yuna: Value = created.json().await.expect("json");
    let id = yuna["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/v1/personas/{id}"));
    assert_eq!(
        (yuna["name"].as_str(), yuna["gender"].as_str()),
        (Some("Yuna"), Some("female"))
    );
    assert_eq!(
        yuna["features"],
        json!(["long black hair", "round glasses"])
    );
    assert_eq!(yuna["options"], json!({"style": "film"}));
    assert_eq!(yuna["instagram"], Value::Null);

    let path = format!("/v1/personas/{id}");
    let edited = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &ann,
        Some(&json!({"features": ["short hair"]})),
    )
    .await;
    assert_eq!(edited.status(), 200);
    let edited: Value = edited.json().await.expect("json");
    assert_eq!(edited["features"], json!(["short hair"]));
    assert_eq!(edited["name"], "Yuna", "a merge: the other fields stay");
    let listed: Value = send(&app, reqwest::Method::GET, "/v1/personas", &ann, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));

    // Bob sees none of it, and can change none of it.
    let bobs: Value = send(&app, reqwest::Method::GET, "/v1/personas", &bob, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(bobs["items"], json!([]));
    for (method, body) in [
        (reqwest::Method::GET, None),
        (reqwest::Method::PATCH, Some(json!({"name": "mine"}))),
        (reqwest::Method::DELETE, None),
    ] {
        let response = send(&app, method.clone(), &path, &bob, body.as_ref()).await;
        problem(response, 404, "not_found").await;
    }
    let still: Value = send(&app, reqwest::Method::GET, &path, &ann, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(still["name"], "Yuna");

    // Bad fields, each named; nothing written.
    let before = app.data_items().await;
    let refused = create(
        &app,
        &ann,
        &json!({"features": ["", "x".repeat(101)], "options": {"big": "y".repeat(5000)}}),
    )
    .await;
    let refused = problem(refused, 422, "validation_failed").await;
    let fields: Vec<&str> = refused["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for field in ["name", "features[0]", "features[1]", "options"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    problem(
        create(&app, &ann, &json!({"name": "x", "gender": "other"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(app.data_items().await, before);

    assert_eq!(
        send(&app, reqwest::Method::DELETE, &path, &ann, None)
            .await
            .status(),
        204
    );
    problem(
        send(&app, reqwest::Method::GET, &path, &ann, None).await,
        404,
        "not_found",
    )
    .await;
    problem(
        send(&app, reqwest::Method::DELETE, &path, &ann, None).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn an_account_keeps_at_most_fifty_personas_however_many_ask_at_once() {
    let app = TestApp::spawn().await;
    let (ann, _) = app.user("ann").await;
    let asks = (0..56).map(|i| {
        let (app, ann) = (&app, &ann);
        async move {
            create(app, ann, &json!({"name": format!("p{i}")}))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(asks).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        50,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        6,
        "{statuses:?}"
    );
    let listed: Value = send(&app, reqwest::Method::GET, "/v1/personas", &ann, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(50));
    // Deleting one makes room for one.
    let first = listed["items"][0]["id"].as_str().expect("id");
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("/v1/personas/{first}"),
            &ann,
            None
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        create(&app, &ann, &json!({"name": "again"})).await.status(),
        201
    );
    problem(
        create(&app, &ann, &json!({"name": "over"})).await,
        409,
        "too_many_personas",
    )
    .await;
}

#[tokio::test]
async fn a_generation_that_names_a_persona_describes_it_and_only_the_owners() {
    let (app, fakes) = crate::generation::start(&[], true).await;
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let yuna: Value = create(
        &app,
        &ann,
        &json!({"name": "Yuna", "gender": "female", "features": ["long black hair"]}),
    )
    .await
    .json()
    .await
    .expect("json");
    let persona = yuna["id"].as_str().expect("id");
    let generate = |persona: &str| {
        json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev",
        "task": "text_to_image", "prompt": "on a beach at dawn", "persona_id": persona}})
    };
    let id = app.submit_id(&ann, &generate(persona)).await;
    let job = app
        .wait_for_job(&ann, &id, |j| j["status"] == "COMPLETED")
        .await;
    let input = fakes
        .request_input(job["provider"]["request_id"].as_str().expect("request"))
        .expect("input");
    assert_eq!(
        input["prompt"],
        "Yuna, a woman, long black hair. on a beach at dawn"
    );
    // Bob's job naming Ann's persona fails, refunded, and tells fal nothing.
    let submissions = fakes.submissions().len();
    let (before, _) = app.credits(&bob).await;
    let id = app.submit_id(&bob, &generate(persona)).await;
    let job = app
        .wait_for_job(&bob, &id, |j| j["status"] == "FAILED")
        .await;
    assert_eq!(job["error"]["type"], "not_found");
    assert_eq!(app.credits(&bob).await.0, before);
    assert_eq!(fakes.submissions().len(), submissions);
    // Not a persona id at all: refused at admission.
    let refused = app.submit(&ann, &generate("not-an-id")).await;
    problem(refused, 422, "validation_failed").await;
}
