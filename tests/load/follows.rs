//! 200 accounts following one account at once: the counts stay exact.

use serde_json::{Value, json};

use crate::app::{TestApp, problem};
use crate::common::{call, call_retrying, profile};

#[tokio::test]
async fn two_hundred_follows_at_once_count_two_hundred_and_unfollows_bring_it_back_to_zero() {
    let _load = crate::common::LOAD.lock().await;
    let app = TestApp::spawn_with(&[("REGISTER_RATE_PER_MINUTE", "1000")]).await;
    let (star, star_id) = app.user("star").await;
    let mut fans = Vec::new();
    for i in 0..200 {
        fans.push(app.user(&format!("fan{i}")).await);
    }
    let path = format!("/v1/users/{star_id}/follow");
    // Each fan follows five times at once: one follow each.
    let follows = fans.iter().flat_map(|(token, _)| {
        let (app, path) = (&app, &path);
        (0..5).map(
            move |_| async move { call_retrying(app, reqwest::Method::POST, path, token).await },
        )
    });
    // A hundred in flight at a time (a 2-core machine's emulator runs one transaction at once;
    // a thousand at once only measures its queue), each fan's five side by side.
    let statuses: Vec<u16> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(follows),
        100,
    ))
    .await;
    let mut tally = std::collections::BTreeMap::new();
    for s in &statuses {
        *tally.entry(*s).or_insert(0) += 1;
    }
    // At most one 201 a fan; a follow that committed while its answer timed out (a 503 under
    // the emulator's load) answers 200 on its retry.
    assert!(
        statuses.iter().filter(|s| **s == 201).count() <= 200,
        "{tally:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 200),
        "{statuses:?}"
    );
    assert_eq!(profile(&app, &star_id).await["counts"]["followers"], 200);
    for (token, _) in &fans {
        let relationship: Value = app.get_json(&path, token).await;
        assert_eq!(relationship["following"], true);
    }
    let (fan, fan_id) = &fans[0];
    assert_eq!(profile(&app, fan_id).await["counts"]["following"], 1);
    let relationship: Value = app.get_json(&path, fan).await;
    assert_eq!(
        relationship,
        json!({"following": true, "followed_by": false})
    );
    // The star follows back; the fan sees it.
    assert_eq!(
        call(
            &app,
            reqwest::Method::POST,
            &format!("/v1/users/{fan_id}/follow"),
            Some(&star),
            None
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        app.get_json(&path, fan).await,
        json!({"following": true, "followed_by": true})
    );
    // The list, newest first, in cursor pages; each fan once.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/v1/users/{star_id}/followers?limit=60");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = call(&app, reqwest::Method::GET, &url, None, None)
            .await
            .json()
            .await
            .expect("json");
        for item in page["items"].as_array().expect("items") {
            assert!(
                seen.insert(item["id"].as_str().expect("id").to_owned()),
                "a follower twice"
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 200);
    // A cursor is this list's only.
    let bad = call(
        &app,
        reqwest::Method::GET,
        &format!("/v1/users/{fan_id}/followers?cursor=x.y"),
        None,
        None,
    )
    .await;
    problem(bad, 400, "invalid_cursor").await;
    // Everyone unfollows, twice at once: back to zero, exactly.
    let unfollows = fans.iter().flat_map(|(token, _)| {
        let (app, path) = (&app, &path);
        (0..2).map(move |_| async move {
            call_retrying(app, reqwest::Method::DELETE, path, token).await
        })
    });
    let statuses: Vec<u16> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(unfollows),
        100,
    ))
    .await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let after = profile(&app, &star_id).await;
    assert_eq!(after["counts"]["followers"], 0);
    assert_eq!(profile(&app, fan_id).await["counts"]["following"], 0);
    let page: Value = call(
        &app,
        reqwest::Method::GET,
        &format!("/v1/users/{star_id}/followers"),
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(page["items"], json!([]));
    // Oneself, and nobody: refused.
    problem(
        call(
            &app,
            reqwest::Method::POST,
            &format!("/v1/users/{star_id}/follow"),
            Some(&star),
            None,
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        call(
            &app,
            reqwest::Method::POST,
            "/v1/users/nobody/follow",
            Some(&star),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
}
