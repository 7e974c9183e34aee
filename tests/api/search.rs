//! Search over HTTP: posts by Korean words and prefixes, English stems, hashtags; accounts by
//! handle and display name as you type; what is not public, deleted, hidden or blocked is not
//! found; pages; bad queries. The index is written by its writer from the queue, so each check
//! waits for the writer's run.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, call, photo_post, problem, wait_within};

async fn search(app: &TestApp, token: &str, what: &str, q: &str) -> Value {
    let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let path = format!("/v1/search/{what}?q={q}");
    app.get_json(&path, token).await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Waits until searching `q` finds exactly `expected` (in any order) with that total.
async fn finds(app: &TestApp, token: &str, what: &str, q: &str, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|e| (*e).to_owned()).collect();
    want.sort();
    wait_within(
        &format!("{what} search for {q:?} finds {want:?}"),
        180,
        || {
            let want = want.clone();
            async move {
                let page = search(app, token, what, q).await;
                let mut got = ids(&page);
                got.sort();
                got == want && page["total"] == want.len()
            }
        },
    )
    .await;
}

#[tokio::test]
async fn posts_are_found_by_korean_words_and_prefixes_english_stems_and_tags_and_leave_when_deleted()
 {
    let app = TestApp::spawn().await;
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let korean = photo_post(&app, &ann, "우리 고양이가 너무 귀여워요 #고양이", "public").await;
    let korean = korean["id"].as_str().expect("id").to_owned();
    let english = photo_post(
        &app,
        &ann,
        "Two cats running on the beach #Sunset",
        "public",
    )
    .await;
    let english = english["id"].as_str().expect("id").to_owned();
    // Neither the followers' nor the private post is ever found, by anyone.
    photo_post(&app, &ann, "비밀 고양이 cats", "followers").await;
    photo_post(&app, &ann, "혼자 보는 고양이 cats", "private").await;

    // A word (the particle attached to it in the caption), its prefixes as typed, a stem.
    finds(&app, &bob, "posts", "고양이", &[&korean]).await;
    finds(&app, &bob, "posts", "고양", &[&korean]).await;
    finds(&app, &bob, "posts", "고", &[&korean]).await;
    finds(&app, &bob, "posts", "귀여워요 고양이", &[&korean]).await;
    finds(&app, &bob, "posts", "cat", &[&english]).await;
    finds(&app, &bob, "posts", "runs", &[&english]).await;
    finds(&app, &bob, "posts", "bea", &[&english]).await;
    finds(&app, &bob, "posts", "#sunset", &[&english]).await;
    // Every word must match; words found nowhere find nothing.
    finds(&app, &bob, "posts", "cats 고양이", &[]).await;
    finds(&app, &bob, "posts", "강아지", &[]).await;
    // The author finds them as anyone does (a search shows public posts only).
    finds(&app, &ann, "posts", "cats", &[&english]).await;
    // A hit is the post as the caller sees it.
    let page = search(&app, &bob, "posts", "고양이").await;
    assert_eq!(page["items"][0]["author"]["username"], "ann");
    assert_eq!(
        page["items"][0]["caption"],
        "우리 고양이가 너무 귀여워요 #고양이"
    );
    assert!(page["next_cursor"].is_null());

    // Edited to followers only: out of the index; public again: back, by its new words.
    let edit = |visibility: &'static str, caption: &'static str| {
        let (app, ann, korean) = (&app, ann.clone(), korean.clone());
        async move {
            let current = app.get_json(&format!("/v1/posts/{korean}"), &ann).await;
            let version = current["version"].as_i64().expect("version");
            let response = app
                .client
                .patch(app.url(&format!("/v1/posts/{korean}")))
                .bearer_auth(&ann)
                .header("if-match", format!("\"v{version}\""))
                .json(&json!({"visibility": visibility, "caption": caption}))
                .send()
                .await
                .expect("patch");
            assert_eq!(response.status(), 200);
        }
    };
    edit("followers", "우리 고양이가 너무 귀여워요 #고양이").await;
    finds(&app, &bob, "posts", "고양이", &[]).await;
    edit("public", "우리 강아지가 너무 귀여워요").await;
    finds(&app, &bob, "posts", "강아지", &[&korean]).await;
    finds(&app, &bob, "posts", "고양이", &[]).await;

    // Deleted: out of the index (the total counts the index's matches, not what is shown).
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{english}"),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    finds(&app, &bob, "posts", "cats", &[]).await;
}

#[tokio::test]
async fn accounts_are_found_by_handle_and_display_name_as_typed_and_blocks_hide_both_ways() {
    let app = TestApp::spawn().await;
    let (ann, ann_id) = app.user("ann_lee").await;
    let (bob, bob_id) = app.user("bob").await;
    let (carol, carol_id) = app.user("carol").await;
    let renamed = call(
        &app,
        Method::PATCH,
        "/v1/users/me",
        Some(&ann),
        Some(&json!({"display_name": "김하늘"})),
    )
    .await;
    assert_eq!(renamed.status(), 200);
    finds(&app, &bob, "users", "ann", &[&ann_id]).await;
    finds(&app, &bob, "users", "an", &[&ann_id]).await;
    finds(&app, &bob, "users", "ann_l", &[&ann_id]).await;
    finds(&app, &bob, "users", "하늘", &[&ann_id]).await;
    finds(&app, &bob, "users", "김", &[&ann_id]).await;
    let page = search(&app, &bob, "users", "하늘").await;
    assert_eq!(page["items"][0]["username"], "ann_lee");
    assert_eq!(page["items"][0]["display_name"], "김하늘");
    // A new handle: found by it, no longer by the old one.
    let handle = call(
        &app,
        Method::PATCH,
        "/v1/users/me",
        Some(&carol),
        Some(&json!({"username": "skylark"})),
    )
    .await;
    assert_eq!(handle.status(), 200);
    finds(&app, &bob, "users", "skyl", &[&carol_id]).await;
    finds(&app, &bob, "users", "carol", &[]).await;

    // Carol's post; Carol blocks Bob: neither finds the other, nor the other's posts.
    let post = photo_post(&app, &carol, "Lighthouse at dawn", "public").await;
    let post = post["id"].as_str().expect("id").to_owned();
    finds(&app, &bob, "posts", "lighthouse", &[&post]).await;
    let block = call(
        &app,
        Method::POST,
        &format!("/v1/users/{bob_id}/block"),
        Some(&carol),
        None,
    )
    .await;
    assert_eq!(block.status(), 201);
    finds(&app, &bob, "posts", "lighthouse", &[]).await;
    finds(&app, &bob, "users", "skylark", &[]).await;
    finds(&app, &carol, "users", "bob", &[]).await;
    finds(&app, &ann, "posts", "lighthouse", &[&post]).await;

    // A deleted account leaves the index.
    let deleted = call(&app, Method::DELETE, "/v1/users/me", Some(&ann), None).await;
    assert_eq!(deleted.status(), 202);
    finds(&app, &bob, "users", "하늘", &[]).await;
}

#[tokio::test]
async fn results_come_in_pages_and_bad_queries_are_refused() {
    let app = TestApp::spawn().await;
    let (ann, _) = app.user("ann").await;
    for n in 0..3 {
        photo_post(&app, &ann, &format!("harbour view {n}"), "public").await;
    }
    wait_within("three posts indexed", 180, || async {
        search(&app, &ann, "posts", "harbour").await["total"] == 3
    })
    .await;
    let first = app
        .client
        .get(app.url("/v1/search/posts?q=harbour&limit=2"))
        .bearer_auth(&ann)
        .send()
        .await
        .expect("get");
    assert_eq!(first.status(), 200);
    let link = first.headers()["link"].to_str().expect("link").to_owned();
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    let cursor = first["next_cursor"].as_str().expect("cursor");
    assert!(
        link.contains("rel=\"next\"") && link.contains("q=harbour"),
        "{link}"
    );
    let second = app
        .get_json(
            &format!("/v1/search/posts?q=harbour&limit=2&cursor={cursor}"),
            &ann,
        )
        .await;
    assert_eq!(second["items"].as_array().map(Vec::len), Some(1));
    assert!(second["next_cursor"].is_null());
    let mut all = ids(&first);
    all.extend(ids(&second));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3);

    // A cursor of another query, or none of ours: 400. No query, blanks or 201 characters: 422.
    let other = call(
        &app,
        Method::GET,
        &format!("/v1/search/posts?q=view&cursor={cursor}"),
        Some(&ann),
        None,
    )
    .await;
    problem(other, 400, "invalid_cursor").await;
    for path in [
        "/v1/search/posts".to_owned(),
        "/v1/search/users?q=%20%20".to_owned(),
        format!("/v1/search/posts?q={}", "a".repeat(201)),
    ] {
        let refused = call(&app, Method::GET, &path, Some(&ann), None).await;
        problem(refused, 422, "validation_failed").await;
    }
    // Not signed in: 401.
    let anonymous = call(&app, Method::GET, "/v1/search/posts?q=x", None, None).await;
    assert_eq!(anonymous.status(), 401);
}

/// Trains a style for `token` at the fake AI server and waits for it: its id.
async fn trained_style(app: &TestApp, token: &str, name: &str, trigger: &str) -> String {
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(
            app.upload(token, lambent_local::fakes::output_png(), "image/png")
                .await,
        );
    }
    let response = call(
        app,
        Method::POST,
        "/v1/styles",
        Some(token),
        Some(&json!({"name": name, "upload_keys": keys, "trigger_word": trigger})),
    )
    .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let style = app
        .wait_for_job(token, &id, |j| {
            matches!(j["status"].as_str(), Some("COMPLETED" | "FAILED"))
        })
        .await;
    assert_eq!(style["status"], "COMPLETED", "{style}");
    id
}

#[tokio::test]
async fn a_style_is_found_while_a_public_post_shows_it_by_name_tags_and_artist() {
    let (app, _fakes) = crate::generation::start(&[], true).await;
    let (ann, ann_id) = app.user("painter_ann").await;
    let (bob, _) = app.user("bob").await;
    let style = trained_style(&app, &ann, "Watercolor Harbour 수채화", "wtrclr").await;
    // Trained, not shown anywhere yet: not found (a style is private until a public post shows it).
    let private = photo_post(&app, &ann, "my new style #수채화", "private").await;
    assert_eq!(private["visibility"], "private");
    finds(&app, &bob, "styles", "watercolor", &[]).await;

    let key = app.upload(&ann, crate::app::scene(), "image/png").await;
    let showcase = crate::app::publish(
        &app,
        &ann,
        json!({"caption": "boats at dawn #harbour #수채화", "upload_keys": [key], "style_id": style}),
    )
    .await;
    let showcase = showcase["id"].as_str().expect("id").to_owned();
    // By its name (Korean and English, prefixes), its trigger word, its showcase's tags, its artist.
    for q in [
        "watercolor",
        "water",
        "수채화",
        "수채",
        "wtrclr",
        "#harbour",
        "painter_ann",
    ] {
        finds(&app, &bob, "styles", q, &[&style]).await;
    }
    let page = search(&app, &bob, "styles", "watercolor").await;
    let hit = &page["items"][0];
    assert_eq!(hit["name"], "Watercolor Harbour 수채화");
    assert_eq!(hit["trigger_word"], "wtrclr");
    assert_eq!(hit["artist"]["id"], ann_id.as_str());
    assert_eq!(hit["showcases"][0]["id"], showcase.as_str());
    assert!(hit["showcases"][0]["media"][0]["url"].is_string());

    // Its only showcase deleted: no longer found.
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{showcase}"),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    finds(&app, &bob, "styles", "watercolor", &[]).await;
    // Someone else's style cannot be shown by Bob's post (404), so it is not found through him.
    let key = app.upload(&bob, crate::app::scene(), "image/png").await;
    let borrowed = call(
        &app,
        Method::POST,
        "/v1/posts",
        Some(&bob),
        Some(&json!({"caption": "borrowed", "upload_keys": [key], "style_id": style})),
    )
    .await;
    assert_eq!(borrowed.status(), 404);
}
