//! A post fanned out to 2,000 followers from the queue, a page of 250 a message; a follow's
//! backfill, an unfollow and a block move it.

use lambent_local::fakes::{FakeProviders, firebase};
use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, wait_until};
use crate::common::{call, call_retrying, publish};

/// Followers of the fan-out test.
const FANS: usize = 2_000;
/// Followers a fan-out message serves here (AWS: 1,000).
const PAGE: usize = 250;

/// The ids of the first page of the caller's following feed.
async fn following_feed(app: &TestApp, token: &str) -> Vec<String> {
    let response = call(app, Method::GET, "/v1/feeds/following", Some(token), None).await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.expect("json");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_post_reaches_every_followers_feed_and_follows_unfollows_and_blocks_move_it() {
    let _load = crate::common::LOAD.lock().await;
    let fakes = FakeProviders::start().await.expect("fakes start");
    let app = TestApp::spawn_with_fakes(
        &fakes,
        // 250 followers a fan-out message: the 2,000 take eight, each queueing the next.
        &[
            ("LOGIN_RATE_PER_MINUTE", "100000"),
            ("FANOUT_PAGE_SIZE", &PAGE.to_string()),
        ],
        true,
    )
    .await;
    let (star, star_id) = app.user("star").await;
    // The followers sign up with Firebase (WEAV's way in): no password to hash for each.
    let fans: Vec<(String, String)> = futures::StreamExt::collect(futures::StreamExt::buffered(
        futures::stream::iter((0..FANS).map(|i| {
            let token = fakes.firebase_token(&firebase::claims(&format!("fan-{i}"), None), None);
            let app = &app;
            async move {
                let response = app
                    .post_json("/v1/auth/firebase", &json!({"id_token": token}))
                    .await;
                assert_eq!(response.status(), 201, "fan {i}");
                let body: Value = response.json().await.expect("json");
                (
                    body["access_token"].as_str().expect("token").to_owned(),
                    body["user"]["id"].as_str().expect("id").to_owned(),
                )
            }
        })),
        8,
    ))
    .await;
    let follow = format!("/v1/users/{star_id}/follow");
    let statuses: Vec<u16> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(
            fans.iter()
                .map(|(token, _)| call_retrying(&app, Method::POST, &follow, token)),
        ),
        // Every follow writes the star's profile: eight at once keep a one-process emulator
        // busy without running its callers past their timeouts (fifty did, at 2,000).
        8,
    ))
    .await;
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 200),
        "{statuses:?}"
    );

    // Each follow queued its backfill and the star's notification: the star hears of every
    // follower (one group, counted once each) before the post, so the fan-out is timed alone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let response = call(&app, Method::GET, "/v1/notifications", Some(&star), None).await;
        let page: Value = response.json().await.expect("json");
        let followers = page["items"]
            .as_array()
            .and_then(|items| items.iter().find(|n| n["type"] == "follow"))
            .and_then(|n| n["actor_count"].as_u64());
        if followers == Some(FANS as u64) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follows' events were not all handled: {followers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let published = std::time::Instant::now();
    let post = publish(&app, &star, "to everyone who follows", "followers").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The fan-out runs from the queue, a page of followers a message: every timeline has it.
    let dynamo = aws_sdk_dynamodb::Client::new(&app.running.sdk);
    let table = &app.running.stack.refs["Table"];
    let in_timeline = |user: String| {
        let (dynamo, post) = (&dynamo, &post);
        async move {
            let out = dynamo
                .query()
                .table_name(table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(
                    ":pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("FEED#{user}")),
                )
                .send()
                .await
                .expect("query");
            out.items()
                .iter()
                .any(|i| i["post_id"].as_s().is_ok_and(|p| p == post))
        }
    };
    // Pages go in follow order, each queueing the next: the newest follower's is the last.
    // (The follows ran fifty at a time: the newest is read from the star's list, not guessed.)
    let newest = dynamo
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{star_id}")),
        )
        .expression_attribute_values(
            ":prefix",
            aws_sdk_dynamodb::types::AttributeValue::S("FOLLOWER#".into()),
        )
        .scan_index_forward(false)
        .limit(1)
        .send()
        .await
        .expect("query")
        .items()[0]["user_id"]
        .as_s()
        .expect("follower")
        .clone();
    // Eight messages one after the other through a two-core emulator: minutes, not the usual 60 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !in_timeline(newest.clone()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the last page of followers has the post"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    eprintln!(
        "fan-out to {FANS} followers, {} messages: {:.1} s",
        FANS.div_ceil(PAGE),
        published.elapsed().as_secs_f64()
    );
    let found: Vec<bool> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(fans.iter().map(|(_, id)| in_timeline(id.clone()))),
        16,
    ))
    .await;
    assert_eq!(
        found.iter().filter(|f| **f).count(),
        FANS,
        "every follower's timeline has it"
    );
    // Every tenth follower's feed (and the last's) shows it, and its author's.
    for (token, _) in fans.iter().step_by(10).chain(fans.last()) {
        assert!(following_feed(&app, token).await.contains(&post));
    }
    assert!(
        following_feed(&app, &star).await.contains(&post),
        "and its author"
    );

    // A new follower sees the backlog (brought in from the queue).
    let (late, _) = app.user("late").await;
    assert_eq!(call_retrying(&app, Method::POST, &follow, &late).await, 201);
    wait_until("the new follower's feed has the backlog", || async {
        following_feed(&app, &late).await == [post.clone()]
    })
    .await;
    // Unfollowing takes it out at once.
    assert_eq!(
        call_retrying(&app, Method::DELETE, &follow, &late).await,
        204
    );
    assert!(following_feed(&app, &late).await.is_empty());
    // A blocked follower sees nothing of the blocker.
    let (blocked, blocked_id) = &fans[0];
    let block = call(
        &app,
        Method::POST,
        &format!("/v1/users/{blocked_id}/block"),
        Some(&star),
        None,
    )
    .await;
    assert_eq!(block.status(), 201);
    assert!(following_feed(&app, blocked).await.is_empty());
    assert_eq!(
        call(
            &app,
            Method::GET,
            &format!("/v1/posts/{post}"),
            Some(blocked),
            None,
        )
        .await
        .status(),
        404
    );
}
