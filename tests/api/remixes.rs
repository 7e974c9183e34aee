//! Remix chains over HTTP: a generation made from a post records its source; a chain of depth
//! five read in order; remixes listed and counted; the sources' authors notified; a private
//! post, or a blocker's, refused before anything is charged.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, call, photo_post, problem, scene, wait_until};

/// Publishes a photo as a remix of `source`.
async fn remix(app: &TestApp, token: &str, source: &str) -> reqwest::Response {
    let key = app.upload(token, scene(), "image/png").await;
    call(
        app,
        Method::POST,
        "/v1/posts",
        Some(token),
        Some(&json!({"caption": "remixed", "upload_keys": [key], "remix_of": source})),
    )
    .await
}

async fn remix_id(app: &TestApp, token: &str, source: &str) -> String {
    let response = remix(app, token, source).await;
    assert_eq!(response.status(), 201);
    let post: Value = response.json().await.expect("json");
    assert_eq!(post["remix_of"], source);
    post["id"].as_str().expect("id").to_owned()
}

async fn post(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_json(&format!("/v1/posts/{id}"), token).await
}

#[tokio::test]
async fn a_chain_of_five_remixes_reads_in_order_counts_and_notifies_and_private_or_blocked_sources_are_refused()
 {
    let (app, _fakes) =
        crate::generation::start(&[("REGISTER_RATE_PER_MINUTE", "1000")], true).await;
    let (alice, _) = app.user("alice").await;
    let (bob, _) = app.user("bob").await;
    let (carol, _) = app.user("carol").await;
    let (dan, _) = app.user("dan").await;

    // A generation that names a post as its source: the post published from it records it.
    let original = photo_post(&app, &alice, "the original", "public").await;
    let original = original["id"].as_str().expect("id").to_owned();
    let job = app
        .submit_id(
            &bob,
            &json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev",
                "task": "text_to_image", "prompt": "the same, glitched", "remix_of": original}}),
        )
        .await;
    let done = app
        .wait_for_job(&bob, &job, |j| j["status"] == "COMPLETED")
        .await;
    assert_eq!(done["input"]["remix_of"], original.as_str());
    let first = call(
        &app,
        Method::POST,
        "/v1/posts",
        Some(&bob),
        Some(&json!({"job_id": job, "caption": "glitched"})),
    )
    .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["remix_of"], original.as_str());
    let mut chain = vec![
        original.clone(),
        first["id"].as_str().expect("id").to_owned(),
    ];
    // Four more, each of the last: depth five.
    for token in [&carol, &dan, &alice, &bob] {
        let next = remix_id(&app, token, chain.last().expect("last")).await;
        chain.push(next);
    }
    let last = chain.last().expect("last").clone();
    let read = app
        .get_json(&format!("/v1/posts/{last}/chain"), &carol)
        .await;
    let ids: Vec<&str> = read["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, chain.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        read["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|l| l["post"]["id"] == l["id"])
    );
    // Each lists and counts its one remix.
    for pair in chain.windows(2) {
        let remixes = app
            .get_json(&format!("/v1/posts/{}/remixes", pair[0]), &dan)
            .await;
        let listed: Vec<&str> = remixes["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["id"].as_str().expect("id"))
            .collect();
        assert_eq!(listed, [pair[1].as_str()]);
        assert_eq!(post(&app, &dan, &pair[0]).await["counts"]["remixes"], 1);
    }
    // The original's author hears of every remix down the chain (her own left out); the source's
    // author of the one made from theirs.
    wait_until("the remix notifications", || async {
        let items = app.get_json("/v1/notifications", &alice).await;
        items["items"].as_array().is_some_and(|items| {
            items.iter().any(|n| {
                n["type"] == "remix" && n["post_id"] == original.as_str() && n["actor_count"] == 3
            }) && items
                .iter()
                .any(|n| n["type"] == "remix" && n["post_id"] == chain[4].as_str())
        })
    })
    .await;
    wait_until("bob hears of carol's remix", || async {
        let items = app.get_json("/v1/notifications", &bob).await;
        items["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|n| n["type"] == "remix" && n["text"] == "carol remixed your post")
        })
    })
    .await;

    // Someone else's private post is no source, by generation or by post; one's own is.
    let (erin, _) = app.user("erin").await;
    let private = photo_post(&app, &erin, "mine only", "private").await;
    let private = private["id"].as_str().expect("id").to_owned();
    let before = app.credits(&bob).await;
    let refused = app
        .submit(
            &bob,
            &json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev",
                "task": "text_to_image", "prompt": "x", "remix_of": private}}),
        )
        .await;
    problem(refused, 404, "not_found").await;
    assert_eq!(app.credits(&bob).await, before, "nothing charged");
    problem(remix(&app, &bob, &private).await, 404, "not_found").await;
    assert_eq!(remix(&app, &erin, &private).await.status(), 201);
    // A blocker's post is no source for the blocked.
    let (frank, frank_id) = app.user("frank").await;
    let blocked = call(
        &app,
        Method::POST,
        &format!("/v1/users/{frank_id}/block"),
        Some(&alice),
        None,
    )
    .await;
    assert!(blocked.status().is_success());
    let refused = app
        .submit(
            &frank,
            &json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev",
                "task": "text_to_image", "prompt": "x", "remix_of": original}}),
        )
        .await;
    problem(refused, 404, "not_found").await;
    problem(remix(&app, &frank, &original).await, 404, "not_found").await;
    // Not a post id at all: a field error.
    let bad = app
        .submit(
            &bob,
            &json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev",
                "task": "text_to_image", "prompt": "x", "remix_of": "../etc"}}),
        )
        .await;
    let body = problem(bad, 422, "validation_failed").await;
    assert!(body.to_string().contains("input.remix_of"), "{body}");

    // A post of the chain deleted: off its source's list and count; the chain shows the gap.
    let gone = &chain[2];
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{gone}"),
        Some(&carol),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let remixes = app
        .get_json(&format!("/v1/posts/{}/remixes", chain[1]), &dan)
        .await;
    assert_eq!(remixes["items"], json!([]));
    assert_eq!(post(&app, &dan, &chain[1]).await["counts"]["remixes"], 0);
    let read = app.get_json(&format!("/v1/posts/{last}/chain"), &dan).await;
    let links = read["items"].as_array().expect("items");
    assert_eq!(links.len(), 6);
    assert_eq!(links[2]["id"], gone.as_str());
    assert!(links[2]["post"].is_null());
    assert!(links[3]["post"].is_object());
}
