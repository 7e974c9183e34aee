//! Notifications over HTTP: each kind of event, grouped; read one, read all; an unread count that
//! stays exact while likes and "read all" race; a deleted post's notifications gone with it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, call, photo_post, problem, wait_until};

/// Every notification of the account, all pages (checking the `Link` beside each cursor).
async fn notifications(app: &TestApp, token: &str, unread_only: bool) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/notifications?limit=2&unread={unread_only}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let response = call(app, Method::GET, &path, Some(token), None).await;
        assert_eq!(response.status(), 200, "{path}");
        let link = response.headers().get("link").cloned();
        let page: Value = response.json().await.expect("json");
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert!(link.is_some(), "a Link beside next_cursor");
                cursor = Some(next.to_owned());
            }
            None => return items,
        }
    }
}

async fn unread(app: &TestApp, token: &str) -> i64 {
    let body = app.get_json("/v1/notifications/unread-count", token).await;
    body["unread"].as_i64().expect("unread")
}

fn of_type<'a>(items: &'a [Value], kind: &str) -> Vec<&'a Value> {
    items.iter().filter(|n| n["type"] == kind).collect()
}

/// A request the emulator may answer 503 under concurrency (one transaction at a time): tried
/// again; each of these is safe to repeat.
async fn retrying(app: &TestApp, method: Method, path: &str, token: &str) -> u16 {
    for _ in 0..40 {
        let status = call(app, method.clone(), path, Some(token), None)
            .await
            .status()
            .as_u16();
        if status != 503 {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    503
}

#[tokio::test]
async fn every_event_notifies_grouped_and_reads_one_or_all_keep_the_count_exact() {
    let app = TestApp::spawn().await;
    let (alice, alice_id) = app.user("alice").await;
    let (bob, _) = app.user("bob").await;
    let (carol, _) = app.user("carol").await;
    let (dan, _) = app.user("dan").await;

    // A mention in a caption notifies the one mentioned (and no one else).
    let post = photo_post(&app, &alice, "the harbour at noon, with @bob", "public").await;
    let post_id = post["id"].as_str().expect("id").to_owned();
    wait_until("bob's mention", || async { unread(&app, &bob).await == 1 }).await;
    let bobs = notifications(&app, &bob, false).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["type"], "mention");
    assert_eq!(bobs[0]["text"], "alice mentioned you");
    assert_eq!(bobs[0]["post_id"], post_id.as_str());
    assert_eq!(unread(&app, &carol).await, 0);

    // Three likes (one of them taken back and given again) are one notification of three.
    let like = format!("/v1/posts/{post_id}/like");
    for token in [&bob, &carol, &dan] {
        assert_eq!(retrying(&app, Method::POST, &like, token).await, 201);
    }
    assert_eq!(retrying(&app, Method::DELETE, &like, &bob).await, 200);
    assert_eq!(retrying(&app, Method::POST, &like, &bob).await, 201);
    // A follow, a comment mentioning carol, and alice's reply to it.
    assert_eq!(
        retrying(
            &app,
            Method::POST,
            &format!("/v1/users/{alice_id}/follow"),
            &carol
        )
        .await,
        201
    );
    let comment = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{post_id}/comments"),
        Some(&bob),
        Some(&json!({"body": "lovely light, @carol look"})),
    )
    .await;
    assert_eq!(comment.status(), 201);
    let comment: Value = comment.json().await.expect("json");
    let reply = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{post_id}/comments"),
        Some(&alice),
        Some(&json!({"body": "thank you!", "reply_to": comment["id"]})),
    )
    .await;
    assert_eq!(reply.status(), 201);

    wait_until("alice's like, follow and comment", || async {
        let items = notifications(&app, &alice, false).await;
        items.len() == 3
            && of_type(&items, "like")
                .first()
                .is_some_and(|l| l["actor_count"] == 3)
    })
    .await;
    let items = notifications(&app, &alice, false).await;
    let likes = of_type(&items, "like");
    assert!(
        likes[0]["text"]
            .as_str()
            .is_some_and(|t| t.ends_with(" and 2 others liked your post")),
        "{}",
        likes[0]
    );
    assert_eq!(likes[0]["actors"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        of_type(&items, "follow")[0]["text"],
        "carol started following you"
    );
    assert_eq!(
        of_type(&items, "comment")[0]["text"],
        "bob commented on your post"
    );
    assert!(items.iter().all(|n| n["unread"] == true));
    assert_eq!(unread(&app, &alice).await, 3);
    assert_eq!(notifications(&app, &alice, true).await.len(), 3);
    wait_until("carol's mention, bob's reply", || async {
        unread(&app, &carol).await == 1 && unread(&app, &bob).await == 2
    })
    .await;
    assert_eq!(
        notifications(&app, &carol, false).await[0]["text"],
        "bob mentioned you"
    );
    let bobs = notifications(&app, &bob, false).await;
    assert_eq!(
        of_type(&bobs, "reply")[0]["text"],
        "alice replied to your comment"
    );

    // Read one: the count goes down once, however often it is read.
    let like_id = likes[0]["id"].as_str().expect("id").to_owned();
    for _ in 0..2 {
        let read = call(
            &app,
            Method::POST,
            &format!("/v1/notifications/{like_id}/read"),
            Some(&alice),
            None,
        )
        .await;
        assert_eq!(read.status(), 200);
        assert_eq!(read.json::<Value>().await.expect("json")["unread"], 2);
    }
    // Someone else's notification, and one that does not exist, are 404s.
    let bobs_mention = of_type(&bobs, "mention")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for id in [
        bobs_mention.as_str(),
        "like.nothing",
        "x".repeat(300).as_str(),
    ] {
        let response = call(
            &app,
            Method::POST,
            &format!("/v1/notifications/{id}/read"),
            Some(&alice),
            None,
        )
        .await;
        problem(response, 404, "not_found").await;
    }
    assert_eq!(unread(&app, &bob).await, 2);
    let read_all = call(
        &app,
        Method::POST,
        "/v1/notifications/read-all",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(read_all.status(), 200);
    let read_all: Value = read_all.json().await.expect("json");
    assert_eq!(
        (read_all["marked"].as_i64(), read_all["unread"].as_i64()),
        (Some(2), Some(0))
    );
    assert!(notifications(&app, &alice, true).await.is_empty());
    assert!(
        notifications(&app, &alice, false)
            .await
            .iter()
            .all(|n| n["unread"] == false)
    );

    // A new like makes its group unread again, counted with the others.
    let (erin, _) = app.user("erin").await;
    assert_eq!(retrying(&app, Method::POST, &like, &erin).await, 201);
    wait_until("the like group unread again", || async {
        unread(&app, &alice).await == 1
    })
    .await;
    let items = notifications(&app, &alice, true).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["actor_count"], 4);
    assert!(
        items[0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("erin and 3 others"))
    );

    // The caller's jobs: one completed, one failed.
    let done = app
        .submit_id(&alice, &json!({"kind": "sleep", "input": {"ms": 10}}))
        .await;
    let failed = app
        .submit_id(
            &alice,
            &json!({"kind": "sleep", "input": {"ms": 10, "fail": true}}),
        )
        .await;
    wait_until("the jobs' notifications", || async {
        let items = notifications(&app, &alice, false).await;
        of_type(&items, "job_completed").len() == 1 && of_type(&items, "job_failed").len() == 1
    })
    .await;
    let items = notifications(&app, &alice, false).await;
    assert_eq!(of_type(&items, "job_completed")[0]["job_id"], done.as_str());
    assert_eq!(
        of_type(&items, "job_completed")[0]["text"],
        "Your sleep job completed"
    );
    assert_eq!(of_type(&items, "job_failed")[0]["job_id"], failed.as_str());
    assert_eq!(unread(&app, &alice).await, 3);

    // The post deleted: its notifications go, whoever's they are, and the counts with them.
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{post_id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    wait_until("the post's notifications purged", || async {
        notifications(&app, &bob, false).await.is_empty()
            && notifications(&app, &carol, false).await.is_empty()
            && unread(&app, &alice).await == 2
    })
    .await;
    let items = notifications(&app, &alice, false).await;
    assert_eq!(items.len(), 3, "follow and the two jobs: {items:?}");
    assert!(items.iter().all(|n| n["post_id"].is_null()));
    assert_eq!(unread(&app, &bob).await, 0);
    assert_eq!(unread(&app, &carol).await, 0);
    // Nothing names the post any more: no group, actor or reference of it anywhere.
    let left: Vec<String> = app
        .items()
        .await
        .iter()
        .filter_map(|i| {
            let key = format!("{} {}", i["pk"].as_s().ok()?, i["sk"].as_s().ok()?);
            (key.contains("NOTIF") && key.contains(&post_id)).then_some(key)
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn the_unread_count_stays_exact_while_likes_and_read_all_race() {
    let app = TestApp::spawn_with(&[("REGISTER_RATE_PER_MINUTE", "1000")]).await;
    let (author, _) = app.user("author").await;
    let mut posts = Vec::new();
    for i in 0..3 {
        let post = photo_post(&app, &author, &format!("post {i}"), "public").await;
        posts.push(post["id"].as_str().expect("id").to_owned());
    }
    let mut fans = Vec::new();
    for i in 0..8 {
        fans.push(app.user(&format!("fan{i}")).await.0);
    }
    // Every fan likes every post while the author reads all, again and again.
    let app = &app;
    let posts = &posts;
    let likes = fans.iter().flat_map(|fan| {
        posts.iter().map(move |post| async move {
            let path = format!("/v1/posts/{post}/like");
            assert_eq!(retrying(app, Method::POST, &path, fan).await, 201);
        })
    });
    let author = &author;
    let reads = (0..6).map(|_| async move {
        assert_eq!(
            retrying(app, Method::POST, "/v1/notifications/read-all", author).await,
            200
        );
    });
    tokio::join!(
        futures::future::join_all(likes),
        futures::future::join_all(reads)
    );
    wait_until("every like counted", || async {
        let items = notifications(app, author, false).await;
        items.len() == 3 && items.iter().all(|n| n["actor_count"] == 8)
    })
    .await;
    let unread_listed = notifications(app, author, true).await.len();
    assert_eq!(
        unread(app, author).await,
        i64::try_from(unread_listed).expect("small")
    );
    let read_all: Value = call(
        app,
        Method::POST,
        "/v1/notifications/read-all",
        Some(author),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(
        read_all["marked"].as_u64(),
        u64::try_from(unread_listed).ok()
    );
    assert_eq!(read_all["unread"], 0);
    assert_eq!(unread(app, author).await, 0);
}
