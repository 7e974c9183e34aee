//! Feeds over HTTP: widely followed accounts merged in as the feed is read, in one cursor order;
//! hashtags; the outbox that keeps a fan-out until it is queued. (The fan-out to 2,000
//! followers is a load test: tests/load.)

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, scene, wait_until};

async fn call(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// A 503 (the emulator's one transaction at a time, under load) is tried again; a follow is one
/// transaction, so a retry of one that committed finds it (200).
async fn retrying(app: &TestApp, method: Method, path: &str, token: &str) -> u16 {
    for _ in 0..20 {
        let response = call(app, method.clone(), path, Some(token)).await;
        let status = response.status().as_u16();
        // The gateway's own timeout (a bare JSON 500): a follow is safe to repeat too.
        let timed_out = status == 500
            && response
                .headers()
                .get("content-type")
                .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
        if status != 503 && !timed_out {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    503
}

async fn publish(app: &TestApp, token: &str, caption: &str, visibility: &str) -> String {
    let key = app.upload(token, scene(), "image/png").await;
    let response = app
        .client
        .post(app.url("/v1/posts"))
        .bearer_auth(token)
        .json(&json!({"caption": caption, "visibility": visibility, "upload_keys": [key]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 201);
    let post: Value = response.json().await.expect("json");
    post["id"].as_str().expect("id").to_owned()
}

/// The ids of a feed's posts, every page, with the cursor and `Link` each page gives.
async fn feed_ids(app: &TestApp, path: &str, token: Option<&str>, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let response = call(app, Method::GET, &url, token).await;
        assert_eq!(response.status(), 200, "{url}");
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
            Some(next) => {
                let link = link.expect("a Link header beside next_cursor");
                assert!(link.to_str().expect("ascii").ends_with("rel=\"next\""));
                cursor = Some(next.to_owned());
            }
            None => return ids,
        }
    }
}

#[tokio::test]
async fn a_widely_followed_account_is_merged_as_the_feed_is_read_in_one_order() {
    // Above two followers an account's posts are not fanned out.
    let app = TestApp::spawn_with(&[
        ("FANOUT_MAX_FOLLOWERS", "2"),
        ("REGISTER_RATE_PER_MINUTE", "1000"),
    ])
    .await;
    let (reader, _) = app.user("reader").await;
    let (celeb, celeb_id) = app.user("celeb").await;
    let (friend, friend_id) = app.user("friend").await;
    for i in 0..3 {
        let (fan, _) = app.user(&format!("fan{i}")).await;
        assert_eq!(
            retrying(
                &app,
                Method::POST,
                &format!("/v1/users/{celeb_id}/follow"),
                &fan
            )
            .await,
            201
        );
    }
    for account in [&celeb_id, &friend_id] {
        assert_eq!(
            retrying(
                &app,
                Method::POST,
                &format!("/v1/users/{account}/follow"),
                &reader
            )
            .await,
            201
        );
    }
    // Posts by both, alternately: the friend's fanned out, the celebrity's merged at read.
    let mut posted = Vec::new();
    for i in 0..5 {
        posted.push(publish(&app, &friend, &format!("friend {i}"), "public").await);
        posted.push(publish(&app, &celeb, &format!("celeb {i}"), "public").await);
    }
    let newest_first: Vec<String> = posted.iter().rev().cloned().collect();
    wait_until("the friend's posts are fanned out", || async {
        let items = app.items().await;
        items
            .iter()
            .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk.starts_with("FEED#")))
            .filter(|i| i["author_id"].as_s().is_ok_and(|a| a == &friend_id))
            .count()
            >= 10
    })
    .await;
    for limit in [3, 20] {
        assert_eq!(
            feed_ids(&app, "/v1/feeds/following", Some(&reader), limit).await,
            newest_first,
            "limit {limit}"
        );
    }
    // Nothing of the celebrity's was written to followers' timelines.
    let fanned = app
        .items()
        .await
        .iter()
        .filter(|i| {
            i["pk"]
                .as_s()
                .is_ok_and(|pk| pk.starts_with("FEED#") && !pk.ends_with(&celeb_id))
        })
        .filter(|i| i["author_id"].as_s().is_ok_and(|a| a == &celeb_id))
        .count();
    assert_eq!(fanned, 0);
}

#[tokio::test]
async fn a_hashtag_lists_its_public_posts_while_they_carry_it() {
    let app = TestApp::spawn().await;
    let (ann, _) = app.user("ann").await;
    let cats = publish(&app, &ann, "my #Cats", "public").await;
    let hidden = publish(&app, &ann, "secret #cats", "private").await;
    let dogs = publish(&app, &ann, "#dogs and #cats", "public").await;
    assert_eq!(
        feed_ids(&app, "/v1/hashtags/cats/posts", None, 1).await,
        [dogs.clone(), cats.clone()]
    );
    assert_eq!(
        feed_ids(&app, "/v1/hashtags/dogs/posts", None, 20).await,
        vec![dogs.clone()]
    );
    assert!(
        !feed_ids(&app, "/v1/hashtags/cats/posts", None, 20)
            .await
            .contains(&hidden)
    );
    // Edited out of the tag, then deleted: gone from its list.
    let edited = app
        .client
        .patch(app.url(&format!("/v1/posts/{cats}")))
        .bearer_auth(&ann)
        .header("if-match", "\"v1\"")
        .json(&json!({"caption": "my #kittens"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(edited.status(), 200);
    assert_eq!(
        feed_ids(&app, "/v1/hashtags/cats/posts", None, 20).await,
        vec![dogs.clone()]
    );
    assert_eq!(
        feed_ids(&app, "/v1/hashtags/kittens/posts", None, 20).await,
        vec![cats.clone()]
    );
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{dogs}"),
        Some(&ann),
    )
    .await;
    assert_eq!(deleted.status(), 204);
    assert!(
        feed_ids(&app, "/v1/hashtags/dogs/posts", None, 20)
            .await
            .is_empty()
    );
    let tag_items = app
        .items()
        .await
        .iter()
        .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk == "TAG#dogs"))
        .count();
    assert_eq!(tag_items, 0, "its entries went with it");
}

/// Social outbox entries left in the table.
async fn outbox_entries(app: &TestApp) -> usize {
    app.items()
        .await
        .iter()
        .filter(|i| {
            i["pk"]
                .as_s()
                .is_ok_and(|pk| pk.starts_with("SOCIALOUTBOX#"))
        })
        .count()
}

/// A publish whose fan-out message could not be queued still reaches its followers: the event
/// was kept in the publishing transaction, and the outbox's sweep sends it.
#[tokio::test]
async fn a_fan_out_that_was_not_queued_is_sent_by_the_outbox() {
    let app = TestApp::spawn_with(&[("OUTBOX_GRACE_SECONDS", "1")]).await;
    let (ann, ann_id) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let before = publish(&app, &ann, "before bob came", "followers").await;
    let follow = format!("/v1/users/{ann_id}/follow");
    assert_eq!(retrying(&app, Method::POST, &follow, &bob).await, 201);
    // The follow's backfill has run (it would otherwise copy the next post itself).
    wait_until("the backfill gives bob ann's first post", || async {
        feed_ids(&app, "/v1/feeds/following", Some(&bob), 20).await == [before.clone()]
    })
    .await;
    assert_eq!(
        outbox_entries(&app).await,
        0,
        "the follow's event is forgotten"
    );
    let queue = format!("\"{}\"", app.running.stack.refs["SocialQueue"]);
    app.fault(
        "AmazonSQS.SendMessage",
        &queue,
        1,
        json!({"error": "AWS.SimpleQueueService.InternalError"}),
    )
    .await;
    let post = publish(&app, &ann, "for my followers", "followers").await;
    assert_eq!(app.fired("AmazonSQS.SendMessage", &queue).await, 1);
    assert_eq!(outbox_entries(&app).await, 1, "kept until queued");
    assert_eq!(
        feed_ids(&app, "/v1/feeds/following", Some(&bob), 20).await,
        std::slice::from_ref(&before),
        "not fanned out yet"
    );
    let state = &app.running.gateway.state;
    wait_until(
        "the outbox sends the fan-out and bob's feed has the post",
        || async {
            lambent::social::events::resend_due(state)
                .await
                .expect("resend");
            feed_ids(&app, "/v1/feeds/following", Some(&bob), 20).await
                == [post.clone(), before.clone()]
        },
    )
    .await;
    assert_eq!(outbox_entries(&app).await, 0, "the outbox is empty again");
}
