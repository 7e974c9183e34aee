//! 200 accounts liking and commenting on one post at once: the counts stay exact.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::TestApp;
use crate::common::{assert_all, at_once, call, publish, retrying};

#[tokio::test]
async fn two_hundred_likes_and_comments_at_once_count_exactly_and_come_back_to_zero() {
    let _load = crate::common::LOAD.lock().await;
    let app = TestApp::spawn_with(&[("REGISTER_RATE_PER_MINUTE", "1000")]).await;
    let (star, _) = app.user("star").await;
    let post = publish(&app, &star, "viral #cats", "public").await;
    let id = post["id"].as_str().expect("id").to_owned();
    let mut fans = Vec::new();
    for i in 0..200 {
        fans.push(app.user(&format!("fan{i}")).await.0);
    }
    let like = format!("/v1/posts/{id}/like");
    // Each fan taps five times at once: one like each.
    let statuses = at_once(fans.iter().flat_map(|token| {
        let (app, like) = (&app, &like);
        (0..5).map(move |_| retrying(app, Method::POST, like, token, None))
    }))
    .await;
    assert_all(&statuses, &[201, 200]);
    assert!(statuses.iter().filter(|(s, _)| *s == 201).count() <= 200);
    let seen: Value = app.get_json(&format!("/v1/posts/{id}"), &star).await;
    assert_eq!(seen["counts"]["likes"], 200);
    for token in &fans {
        let seen: Value = app.get_json(&format!("/v1/posts/{id}"), token).await;
        assert_eq!(seen["viewer"]["liked"], true);
    }
    // The likers, from the sharded index, newest first, each once.
    let mut likers = std::collections::BTreeSet::new();
    let mut last_since = String::from("~");
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/posts/{id}/likes?limit=30");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let response = call(&app, Method::GET, &path, Some(&star), None).await;
        let link = response
            .headers()
            .get("link")
            .map(|l| l.to_str().expect("ascii").to_owned());
        let page: Value = response.json().await.expect("json");
        for item in page["items"].as_array().expect("items") {
            assert!(
                likers.insert(item["id"].as_str().expect("id").to_owned()),
                "a liker twice"
            );
            let since = item["since"].as_str().expect("since").to_owned();
            assert!(since <= last_since, "newest first");
            last_since = since;
        }
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert!(link.expect("a Link header").contains("rel=\"next\""));
                cursor = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(likers.len(), 200);

    // Each fan comments once, all at once: 200 comments.
    let comments_path = format!("/v1/posts/{id}/comments");
    let added = at_once(fans.iter().enumerate().map(|(i, token)| {
        let (app, path) = (&app, &comments_path);
        async move {
            retrying(
                app,
                Method::POST,
                path,
                token,
                Some(&json!({"body": format!("comment {i}")})),
            )
            .await
        }
    }))
    .await;
    assert_all(&added, &[201]);
    let seen: Value = app.get_json(&format!("/v1/posts/{id}"), &star).await;
    assert_eq!(seen["counts"]["comments"], 200);

    // Everyone takes their like back (twice at once) and their comment: zero.
    let statuses = at_once(fans.iter().flat_map(|token| {
        let (app, like) = (&app, &like);
        (0..2).map(move |_| retrying(app, Method::DELETE, like, token, None))
    }))
    .await;
    assert_all(&statuses, &[200]);
    // Each comment deleted by its author (the answers came back in any order).
    let removed = at_once(added.iter().map(|(_, comment)| {
        let token = &fans[comment["body"]
            .as_str()
            .and_then(|b| b.strip_prefix("comment "))
            .and_then(|i| i.parse::<usize>().ok())
            .expect("which fan")];
        let path = format!(
            "/v1/posts/{id}/comments/{}",
            comment["id"].as_str().expect("id")
        );
        let app = &app;
        async move { retrying(app, Method::DELETE, &path, token, None).await }
    }))
    .await;
    assert_all(&removed, &[204]);
    let seen: Value = app.get_json(&format!("/v1/posts/{id}"), &star).await;
    assert_eq!(
        seen["counts"],
        json!({"likes": 0, "comments": 0, "shares": 0, "remixes": 0})
    );
    let likes: Value = app.get_json(&format!("/v1/posts/{id}/likes"), &star).await;
    assert_eq!(likes["items"], json!([]));
}
