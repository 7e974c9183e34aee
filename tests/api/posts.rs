//! Posts over HTTP: publish, read (signed in and not), edit with If-Match, delete with what hangs
//! on it; likes, shares, bookmarks and comments whose counts stay exact under concurrency;
//! blocks that hide both ways.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, call, photo_post, problem, scene, wait_until};

async fn count_items(app: &TestApp, pk_prefix: &str) -> usize {
    app.items()
        .await
        .iter()
        .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk.starts_with(pk_prefix)))
        .count()
}

#[tokio::test]
async fn a_post_is_published_read_edited_with_if_match_and_deleted_with_what_hangs_on_it() {
    let app = TestApp::spawn().await;
    let (ann, ann_id) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let key = app.upload(&ann, scene(), "image/png").await;
    let response = call(
        &app,
        Method::POST,
        "/v1/posts",
        Some(&ann),
        Some(&json!({"caption": "Sunset #Beach #고양이 with @bob #beach", "upload_keys": [key]})),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"v1\"");
    let post: Value = response.json().await.expect("json");
    let id = post["id"].as_str().expect("id").to_owned();
    assert_eq!(post["hashtags"], json!(["beach", "고양이"]));
    assert_eq!(post["mentions"], json!(["bob"]));
    assert_eq!(post["visibility"], "public");
    assert_eq!(post["author"]["username"], "ann");
    assert_eq!(
        post["counts"],
        json!({"likes": 0, "comments": 0, "shares": 0, "remixes": 0})
    );
    // The post keeps its own copy of the photo, served by a presigned URL.
    let url = post["media"][0]["url"].as_str().expect("url");
    let bytes = app
        .client
        .get(url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.as_ref(), scene().as_slice());

    // Readable without signing in, in the author's public list; counted on the profile.
    let public = call(
        &app,
        Method::GET,
        &format!("/v1/public/posts/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(public.status(), 200);
    let public: Value = public.json().await.expect("json");
    assert!(public.get("viewer").is_none());
    let list: Value = call(
        &app,
        Method::GET,
        &format!("/v1/users/{ann_id}/posts"),
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(list["items"][0]["id"], id.as_str());
    let profile: Value = call(
        &app,
        Method::GET,
        &format!("/v1/users/{ann_id}"),
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(profile["counts"]["posts"], 1);

    // Bad input changes nothing.
    let upload = app.upload(&ann, scene(), "image/png").await;
    for (body, status, code) in [
        (
            json!({"caption": "x".repeat(2201), "upload_keys": [upload]}),
            422,
            "validation_failed",
        ),
        (
            json!({"caption": (0..1000).map(|i| format!("#t{i}")).collect::<Vec<_>>().join(" "), "upload_keys": [upload]}),
            422,
            "validation_failed",
        ),
        (
            json!({"caption": "two sources", "upload_keys": [upload], "job_id": id}),
            422,
            "validation_failed",
        ),
        (json!({"upload_keys": []}), 422, "validation_failed"),
        (
            json!({"upload_keys": [upload], "visibility": "friends"}),
            422,
            "validation_failed",
        ),
    ] {
        problem(
            call(&app, Method::POST, "/v1/posts", Some(&ann), Some(&body)).await,
            status,
            code,
        )
        .await;
    }
    // Someone else's upload, or a job that is not theirs, reads as missing.
    problem(
        call(
            &app,
            Method::POST,
            "/v1/posts",
            Some(&bob),
            Some(&json!({"upload_keys": [upload]})),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(profile_posts(&app, &ann_id).await, 1);

    // Edits need the current ETag: none is a 428, a stale one a 412; someone else's post a 404.
    let edit = |token: &str, etag: Option<&str>, body: Value| {
        let mut request = app
            .client
            .patch(app.url(&format!("/v1/posts/{id}")))
            .bearer_auth(token)
            .json(&body);
        if let Some(etag) = etag {
            request = request.header("if-match", etag);
        }
        request.send()
    };
    problem(
        edit(&bob, Some("\"v1\""), json!({"caption": "mine"}))
            .await
            .expect("r"),
        404,
        "not_found",
    )
    .await;
    problem(
        edit(&ann, None, json!({"caption": "no tag"}))
            .await
            .expect("r"),
        428,
        "precondition_required",
    )
    .await;
    let edited = edit(
        &ann,
        Some("\"v1\""),
        json!({"caption": "Sunset #sea", "visibility": "private"}),
    )
    .await
    .expect("r");
    assert_eq!(edited.status(), 200);
    assert_eq!(edited.headers()["etag"], "\"v2\"");
    let edited: Value = edited.json().await.expect("json");
    assert_eq!(edited["hashtags"], json!(["sea"]));
    problem(
        edit(&ann, Some("\"v1\""), json!({"caption": "lost update"}))
            .await
            .expect("r"),
        412,
        "stale_version",
    )
    .await;
    // Private now: only its author sees it; liking it is refused as if it did not exist.
    for token in [None, Some(bob.as_str())] {
        let path = match token {
            None => format!("/v1/public/posts/{id}"),
            Some(_) => format!("/v1/posts/{id}"),
        };
        assert_eq!(
            call(&app, Method::GET, &path, token, None).await.status(),
            404
        );
    }
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/posts/{id}/like"),
            Some(&bob),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let mine: Value = app.get_json(&format!("/v1/posts/{id}"), &ann).await;
    assert_eq!(mine["caption"], "Sunset #sea");
    let list: Value = call(
        &app,
        Method::GET,
        &format!("/v1/users/{ann_id}/posts"),
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(list["items"], json!([]), "out of the public list");

    // For followers: Bob sees it once he follows, and reacts to it.
    let edited = edit(&ann, Some("\"v2\""), json!({"visibility": "followers"}))
        .await
        .expect("r");
    assert_eq!(edited.status(), 200);
    assert_eq!(
        call(
            &app,
            Method::GET,
            &format!("/v1/posts/{id}"),
            Some(&bob),
            None
        )
        .await
        .status(),
        404
    );
    let follow = call(
        &app,
        Method::POST,
        &format!("/v1/users/{ann_id}/follow"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(follow.status(), 201);
    for reaction in ["like", "share", "bookmark"] {
        let response = call(
            &app,
            Method::POST,
            &format!("/v1/posts/{id}/{reaction}"),
            Some(&bob),
            None,
        )
        .await;
        assert_eq!(response.status(), 201, "{reaction}");
    }
    let comment = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{id}/comments"),
        Some(&bob),
        Some(&json!({"body": "lovely"})),
    )
    .await;
    assert_eq!(comment.status(), 201);
    let seen: Value = app.get_json(&format!("/v1/posts/{id}"), &bob).await;
    assert_eq!(
        seen["counts"],
        json!({"likes": 1, "comments": 1, "shares": 1, "remixes": 0})
    );
    assert_eq!(
        seen["viewer"],
        json!({"liked": true, "bookmarked": true, "shared": true})
    );
    let bookmarks: Value = app.get_json("/v1/users/me/bookmarks", &bob).await;
    assert_eq!(bookmarks["items"][0]["id"], id.as_str());

    // Deleting: only its author; again is harmless; what hangs on it follows from the queue.
    problem(
        call(
            &app,
            Method::DELETE,
            &format!("/v1/posts/{id}"),
            Some(&bob),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    for _ in 0..2 {
        let deleted = call(
            &app,
            Method::DELETE,
            &format!("/v1/posts/{id}"),
            Some(&ann),
            None,
        )
        .await;
        assert_eq!(deleted.status(), 204);
    }
    assert_eq!(
        call(
            &app,
            Method::GET,
            &format!("/v1/posts/{id}"),
            Some(&ann),
            None
        )
        .await
        .status(),
        404
    );
    assert_eq!(profile_posts(&app, &ann_id).await, 0);
    wait_until(
        "the post's reactions, comments and marker are gone",
        || async {
            let items = app.items().await;
            !items.iter().any(|i| {
                let pk = i["pk"].as_s().map(String::as_str).unwrap_or_default();
                let sk = i["sk"].as_s().map(String::as_str).unwrap_or_default();
                // Timelines keep a deleted post's entry until it expires (30 days); feeds
                // leave it out, below.
                (pk.contains(&id) || sk.contains(&id)) && !pk.starts_with("FEED#")
            })
        },
    )
    .await;
    let feed: Value = app.get_json("/v1/feeds/following", &ann).await;
    assert_eq!(feed["items"], json!([]), "out of its author's feed");
    let bookmarks: Value = app.get_json("/v1/users/me/bookmarks", &bob).await;
    assert_eq!(bookmarks["items"], json!([]));
    assert_eq!(count_items(&app, "POSTSTAT#").await, 0);
}

async fn profile_posts(app: &TestApp, id: &str) -> i64 {
    let profile: Value = call(app, Method::GET, &format!("/v1/users/{id}"), None, None)
        .await
        .json()
        .await
        .expect("json");
    profile["counts"]["posts"].as_i64().expect("count")
}

#[tokio::test]
async fn comments_list_both_ways_reply_one_level_and_are_edited_and_deleted_by_the_right_people() {
    let app = TestApp::spawn().await;
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let (cat, _) = app.user("cat").await;
    let post = photo_post(&app, &ann, "comments here", "public").await;
    let id = post["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/posts/{id}/comments");
    let add = |token: &str, body: Value| {
        let (app, path, token) = (&app, &path, token.to_owned());
        async move {
            let response = call(app, Method::POST, path, Some(&token), Some(&body)).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let mut ids = Vec::new();
    for (token, text) in [(&bob, "first"), (&cat, "second"), (&bob, "third")] {
        let (status, comment) = add(token, json!({"body": text})).await;
        assert_eq!(status, 201);
        ids.push(comment["id"].as_str().expect("id").to_owned());
    }
    let bodies = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["body"].as_str().unwrap_or("-").to_owned())
            .collect()
    };
    let oldest: Value = app.get_json(&path, &cat).await;
    assert_eq!(bodies(&oldest), ["first", "second", "third"]);
    let newest: Value = app
        .get_json(&format!("{path}?order=newest&limit=2"), &cat)
        .await;
    assert_eq!(bodies(&newest), ["third", "second"]);
    let rest: Value = app
        .get_json(
            &format!(
                "{path}?order=newest&limit=2&cursor={}",
                newest["next_cursor"].as_str().expect("cursor")
            ),
            &cat,
        )
        .await;
    assert_eq!(bodies(&rest), ["first"]);
    // Logged out, the same comments.
    let public: Value = call(
        &app,
        Method::GET,
        &format!("/v1/public/posts/{id}/comments"),
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(bodies(&public), ["first", "second", "third"]);

    // One level of replies: a reply to a reply is refused.
    let (status, reply) = add(&ann, json!({"body": "thanks", "reply_to": ids[0]})).await;
    assert_eq!(status, 201);
    assert_eq!(reply["parent_id"], ids[0].as_str());
    let (status, _) = add(&cat, json!({"body": "deeper", "reply_to": reply["id"]})).await;
    assert_eq!(status, 404);
    let replies: Value = app
        .get_json(&format!("{path}?reply_to={}", ids[0]), &cat)
        .await;
    assert_eq!(bodies(&replies), ["thanks"]);
    let top: Value = app.get_json(&path, &cat).await;
    assert_eq!(top["items"][0]["replies"], 1);
    let (status, _) = add(&bob, json!({"body": "  "})).await;
    assert_eq!(status, 422);
    let (status, _) = add(&bob, json!({"body": "x".repeat(2201)})).await;
    assert_eq!(status, 422);

    // Edits: one's own only.
    let edit = |token: &str, comment: &str, body: Value| {
        let path = format!("{path}/{comment}");
        let (app, token) = (&app, token.to_owned());
        async move { call(app, Method::PATCH, &path, Some(&token), Some(&body)).await }
    };
    problem(
        edit(&cat, &ids[0], json!({"body": "not mine"})).await,
        404,
        "not_found",
    )
    .await;
    let edited = edit(&bob, &ids[0], json!({"body": "first, edited"})).await;
    assert_eq!(edited.status(), 200);

    // Deletes: one's own, or any on one's post; a comment with replies stays as a tombstone.
    let delete = |token: &str, comment: &str| {
        let path = format!("{path}/{comment}");
        let (app, token) = (&app, token.to_owned());
        async move {
            call(app, Method::DELETE, &path, Some(&token), None)
                .await
                .status()
        }
    };
    assert_eq!(
        delete(&cat, &ids[0]).await,
        404,
        "not Cat's, nor Cat's post"
    );
    assert_eq!(
        delete(&ann, &ids[1]).await,
        204,
        "the post's author deletes Cat's"
    );
    assert_eq!(delete(&bob, &ids[0]).await, 204);
    assert_eq!(delete(&bob, &ids[0]).await, 404, "once");
    let now: Value = app.get_json(&path, &cat).await;
    assert_eq!(bodies(&now), ["-", "third"]);
    assert_eq!(now["items"][0]["deleted"], true);
    assert!(now["items"][0]["author"].is_null());
    let seen: Value = app.get_json(&format!("/v1/posts/{id}"), &cat).await;
    assert_eq!(seen["counts"]["comments"], 2, "the reply and the third");
}

#[tokio::test]
async fn a_block_hides_both_ways_and_removes_follows() {
    let app = TestApp::spawn().await;
    let (ann, ann_id) = app.user("ann").await;
    let (bob, bob_id) = app.user("bob").await;
    let post = photo_post(&app, &ann, "ann's", "public").await;
    let id = post["id"].as_str().expect("id").to_owned();
    for (token, other) in [(&bob, &ann_id), (&ann, &bob_id)] {
        let follow = call(
            &app,
            Method::POST,
            &format!("/v1/users/{other}/follow"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(follow.status(), 201);
    }
    let comment = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{id}/comments"),
        Some(&bob),
        Some(&json!({"body": "hi ann"})),
    )
    .await;
    assert_eq!(comment.status(), 201);

    let block = call(
        &app,
        Method::POST,
        &format!("/v1/users/{bob_id}/block"),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(block.status(), 201);
    let again = call(
        &app,
        Method::POST,
        &format!("/v1/users/{bob_id}/block"),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(again.status(), 200);
    let profile: Value = call(
        &app,
        Method::GET,
        &format!("/v1/users/{ann_id}"),
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(
        (
            profile["counts"]["followers"].as_i64(),
            profile["counts"]["following"].as_i64()
        ),
        (Some(0), Some(0))
    );
    // Bob can no longer follow Ann, nor Ann Bob; Ann's post is missing to him.
    for (token, other) in [(&bob, &ann_id), (&ann, &bob_id)] {
        let follow = call(
            &app,
            Method::POST,
            &format!("/v1/users/{other}/follow"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(follow.status(), 404);
    }
    for (method, path, body) in [
        (Method::GET, format!("/v1/posts/{id}"), None),
        (Method::POST, format!("/v1/posts/{id}/like"), None),
        (
            Method::POST,
            format!("/v1/posts/{id}/comments"),
            Some(json!({"body": "still here"})),
        ),
    ] {
        let response = call(&app, method, &path, Some(&bob), body.as_ref()).await;
        assert_eq!(response.status(), 404, "{path}");
    }
    // Bob's comment is hidden from Ann.
    let comments: Value = app
        .get_json(&format!("/v1/posts/{id}/comments"), &ann)
        .await;
    assert_eq!(comments["items"], json!([]));
    let blocks: Value = app.get_json("/v1/users/me/blocks", &ann).await;
    assert_eq!(blocks["items"][0]["id"], bob_id.as_str());
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/users/{ann_id}/block"),
            Some(&ann),
            None,
        )
        .await,
        422,
        "validation_failed",
    )
    .await;

    // Unblocked, Bob may follow again (the old follows stay removed).
    let unblock = call(
        &app,
        Method::DELETE,
        &format!("/v1/users/{bob_id}/block"),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(unblock.status(), 204);
    let follow = call(
        &app,
        Method::POST,
        &format!("/v1/users/{ann_id}/follow"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(follow.status(), 201);
    assert_eq!(
        call(
            &app,
            Method::GET,
            &format!("/v1/posts/{id}"),
            Some(&bob),
            None
        )
        .await
        .status(),
        200
    );
}
