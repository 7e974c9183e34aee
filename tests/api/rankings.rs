//! Rankings over HTTP, after the schedule's pass: trending hashtags over the last 24 hours (public
//! posts only, edits and deletes counted back), and the for-you feed ranked by engagement, with
//! what the reader may not see left out.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, call, photo_post};

async fn refresh(app: &TestApp) {
    lambent::social::rankings::refresh(&app.running.gateway.state)
        .await
        .expect("rankings");
}

async fn trending(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/v1/hashtags/trending"))
        .send()
        .await
        .expect("trending");
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.expect("json")["tags"].clone()
}

/// Every post id of the reader's for-you feed, two to a page.
async fn for_you(app: &TestApp, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = "/v1/feeds/for-you?limit=2".to_owned();
    loop {
        let response = call(app, Method::GET, &path, Some(token), None).await;
        assert_eq!(response.status(), 200);
        let link = response.headers().get("link").cloned();
        let page: Value = response.json().await.expect("json");
        ids.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|p| p["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert!(link.is_some());
                path = format!("/v1/feeds/for-you?limit=2&cursor={cursor}");
            }
            None => return ids,
        }
    }
}

fn id(post: &Value) -> String {
    post["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn trending_tags_and_the_for_you_feed_rank_what_was_published_and_engaged_with() {
    let app = TestApp::spawn().await;
    let (alice, _) = app.user("alice").await;
    let (bob, _) = app.user("bob").await;
    let (carol, _) = app.user("carol").await;
    let (erin, erin_id) = app.user("erin").await;
    refresh(&app).await;
    assert_eq!(trending(&app).await, json!([]));

    let loved = id(&photo_post(&app, &alice, "dusk #sunset #sea", "public").await);
    let quiet = id(&photo_post(&app, &alice, "noon #sunset", "public").await);
    let liked = id(&photo_post(&app, &bob, "dawn #Sea #sunset", "public").await);
    // Neither a private nor a followers' post is counted or ranked.
    photo_post(&app, &alice, "mine #sunset", "private").await;
    photo_post(&app, &alice, "friends #secret", "followers").await;
    for (token, post) in [(&bob, &loved), (&carol, &loved), (&carol, &liked)] {
        let like = call(
            &app,
            Method::POST,
            &format!("/v1/posts/{post}/like"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(like.status(), 201);
    }
    let comment = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{loved}/comments"),
        Some(&carol),
        Some(&json!({"body": "wow"})),
    )
    .await;
    assert_eq!(comment.status(), 201);

    refresh(&app).await;
    assert_eq!(
        trending(&app).await,
        json!([{"tag": "sunset", "posts": 3}, {"tag": "sea", "posts": 2}])
    );
    assert_eq!(
        for_you(&app, &carol).await,
        [loved.clone(), liked.clone(), quiet.clone()]
    );

    // An edit that drops a tag, and a delete, are counted back.
    let current = app.get_json(&format!("/v1/posts/{quiet}"), &alice).await;
    let edited = app
        .client
        .patch(app.url(&format!("/v1/posts/{quiet}")))
        .bearer_auth(&alice)
        .header("if-match", format!("\"v{}\"", current["version"]))
        .json(&json!({"caption": "noon #lunch"}))
        .send()
        .await
        .expect("edit");
    assert_eq!(edited.status(), 200);
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{liked}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    refresh(&app).await;
    assert_eq!(
        trending(&app).await,
        json!([{"tag": "lunch", "posts": 1}, {"tag": "sea", "posts": 1}, {"tag": "sunset", "posts": 1}])
    );
    assert_eq!(for_you(&app, &carol).await, [loved.clone(), quiet.clone()]);

    // A blocked reader sees none of the blocker's posts.
    let blocked = call(
        &app,
        Method::POST,
        &format!("/v1/users/{erin_id}/block"),
        Some(&alice),
        None,
    )
    .await;
    assert!(blocked.status().is_success());
    assert!(for_you(&app, &erin).await.is_empty());
}
