//! Deleting an account (`DELETE /v1/users/me`) and Kakao's unlink callback: through HTTP, the
//! removal queue's consumer and the fake Kakao (which records the admin unlinks it gets).

use std::collections::BTreeSet;
use std::time::Duration;

use lambent_local::fakes::{FakeProviders, oidc as fake_oidc};
use serde_json::{Value, json};

use crate::app::{PASSWORD, TestApp, problem, wait_until};
use crate::oidc::{body, browser_code, link, native, oauth_clients, with_providers};

/// Every item that belongs to `user_id`: its partitions, and items that name it (jobs, claims).
/// Rate counters, sessions (pseudonymous, removed by TTL) and idempotency records are not data.
async fn items_of(app: &TestApp, user_id: &str) -> BTreeSet<(String, String)> {
    app.items()
        .await
        .iter()
        .filter(|item| {
            let pk = item["pk"].as_s().map(String::as_str).unwrap_or_default();
            let named = item
                .get("user_id")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(user_id);
            let session = pk.starts_with("REFRESH#") || pk.starts_with("FAMILY#");
            (pk.contains(user_id) || named) && !pk.starts_with("RATE#") && !session
        })
        .map(|item| {
            let key = |k: &str| item[k].as_s().cloned().unwrap_or_default();
            (key("pk"), key("sk"))
        })
        .collect()
}

/// The media bucket's keys under a user's prefixes.
async fn files_of(app: &TestApp, user_id: &str) -> Vec<String> {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&app.running.sdk)
            .force_path_style(true)
            .build(),
    );
    let mut keys = Vec::new();
    for prefix in lambent::media::user_prefixes(user_id) {
        let out = s3
            .list_objects_v2()
            .bucket(&app.running.stack.refs["MediaBucket"])
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    keys
}

/// An account with a bit of everything: a password, a Kakao identity, an upload, a finished
/// job, a running one, a webhook endpoint. Its access and refresh tokens and id.
async fn busy_account(
    app: &TestApp,
    fakes: &FakeProviders,
    name: &str,
    kakao_id: &str,
) -> (String, String, String) {
    let registered = app.register(&format!("{name}@example.com"), name).await;
    let access = registered["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh = registered["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let id = registered["user"]["id"].as_str().expect("id").to_owned();
    let aud = fake_oidc::web_client_id("kakao");
    let token = fakes.oidc_token(
        "kakao",
        &fakes.oidc_claims("kakao", kakao_id, aud, None),
        None,
    );
    body(
        link(app, &access, "kakao", &json!({"id_token": token})).await,
        201,
    )
    .await;
    app.upload(&access, b"a photo, honestly".to_vec(), "image/jpeg")
        .await;
    let done = app
        .submit_id(&access, &json!({"kind": "sleep", "input": {"ms": 10}}))
        .await;
    app.wait_for_job(&access, &done, |j| j["status"] == "COMPLETED")
        .await;
    // The job's notification is written by the social queue's consumer after the job ends: wait for
    // it, so that callers counting items start from a settled account.
    wait_until("the job's notification lands", || async {
        let listed: Value = app
            .get_with_token("/v1/notifications", &access)
            .await
            .json()
            .await
            .expect("json");
        listed["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|n| n["type"] == "job_completed"))
    })
    .await;
    let endpoint = app
        .client
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(&access)
        .json(&json!({"url": "http://127.0.0.1:9/hooks"}))
        .send()
        .await
        .expect("endpoint");
    assert_eq!(endpoint.status(), 201);
    (access, refresh, id)
}

async fn delete_me(app: &TestApp, access: &str) -> reqwest::Response {
    app.client
        .delete(app.url("/v1/users/me"))
        .bearer_auth(access)
        .send()
        .await
        .expect("delete")
}

#[tokio::test]
async fn a_deleted_account_is_gone_with_its_data_and_no_one_elses() {
    let (app, fakes) = with_providers(true).await;
    let (ann, ann_refresh, ann_id) = busy_account(&app, &fakes, "ann", "1001").await;
    let (bob_token, _, bob_id) = busy_account(&app, &fakes, "bob", "2002").await;
    // Ann links Google and Naver in a browser too: their tokens are kept (sealed) to revoke.
    for provider in ["google", "naver"] {
        let (code, verifier) =
            browser_code(&app, &fakes, provider, &format!("ann-{provider}"), "link").await;
        body(
            link(
                &app,
                &ann,
                provider,
                &json!({"code": code, "code_verifier": verifier}),
            )
            .await,
            201,
        )
        .await;
    }
    // Ann also has a job running when she leaves.
    let running = app
        .submit_id(&ann, &json!({"kind": "sleep", "input": {"ms": 20000}}))
        .await;
    app.wait_for_job(&ann, &running, |j| j["status"] == "IN_PROGRESS")
        .await;
    let bobs_items = items_of(&app, &bob_id).await;
    let bobs_files = files_of(&app, &bob_id).await;
    // Ann and Bob follow each other: Ann's deletion takes both follows out of Bob's lists and counts.
    for (token, other) in [(&ann, &bob_id), (&bob_token, &ann_id)] {
        let followed = app
            .client
            .post(app.url(&format!("/v1/users/{other}/follow")))
            .bearer_auth(token)
            .send()
            .await
            .expect("follow");
        assert_eq!(followed.status(), 201);
    }
    assert!(!items_of(&app, &ann_id).await.is_empty() && !files_of(&app, &ann_id).await.is_empty());

    let deleted = delete_me(&app, &ann).await;
    assert_eq!(deleted.status(), 202);
    assert_eq!(
        deleted.json::<Value>().await.expect("json")["status"],
        "deleting"
    );
    // At once: no sign-in reaches the account, no session goes on, the profile is none.
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .await;
    problem(login, 401, "invalid_credentials").await;
    let refreshed = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": ann_refresh}))
        .await;
    assert_eq!(refreshed.status(), 401);
    assert_eq!(app.get_with_token("/v1/auth/me", &ann).await.status(), 404);

    // Then the purge: every item and file of hers, the running job stopped first.
    wait_until("Ann's data is purged", || async {
        items_of(&app, &ann_id).await.is_empty() && files_of(&app, &ann_id).await.is_empty()
    })
    .await;
    assert_eq!(fakes.oidc_revoked("google"), vec!["ann-google".to_owned()]);
    assert_eq!(fakes.oidc_revoked("naver"), vec!["ann-naver".to_owned()]);
    assert_eq!(
        fakes.kakao_unlinked(),
        vec!["1001".to_owned()],
        "Kakao was told, for Ann only"
    );
    assert_eq!(
        items_of(&app, &bob_id).await,
        bobs_items,
        "Bob's items are untouched"
    );
    let bob: Value = app
        .client
        .get(app.url(&format!("/v1/users/{bob_id}")))
        .send()
        .await
        .expect("profile")
        .json()
        .await
        .expect("json");
    assert_eq!(
        bob["counts"],
        json!({"posts": 0, "followers": 0, "following": 0})
    );
    assert_eq!(
        files_of(&app, &bob_id).await,
        bobs_files,
        "Bob's files are untouched"
    );

    // Asking again is harmless; her email, username and Kakao account are free for new accounts.
    assert_eq!(delete_me(&app, &ann).await.status(), 202);
    app.register("ann@example.com", "ann").await;
    let aud = fake_oidc::web_client_id("kakao");
    let token = fakes.oidc_token(
        "kakao",
        &fakes.oidc_claims("kakao", "1001", aud, None),
        None,
    );
    let again = body(native(&app, "kakao", &token, None).await, 201).await;
    assert_ne!(again["user"]["id"], ann_id.as_str());
}

#[tokio::test]
async fn kakaos_unlink_callback_is_verified_answered_at_once_and_forgets_the_identity() {
    let (app, fakes) = with_providers(true).await;
    let (ann, _, _) = busy_account(&app, &fakes, "ann", "3003").await;
    let secrets = oauth_clients(&app).await;
    let admin_key = secrets["kakao_admin_key"].as_str().expect("admin key");
    let callback = |authorization: Option<String>, form: &'static str| {
        let mut request = app
            .client
            .post(app.url("/v1/webhooks/kakao/unlink"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        request.send()
    };
    let form = "app_id=1&user_id=3003&referrer_type=UNLINK_FROM_APPS";
    let before = app.data_items().await;
    for forged in [
        None,
        Some("KakaoAK not-the-key".to_owned()),
        Some(format!("KakaoAK {admin_key}x")),
        Some(admin_key.to_owned()),
    ] {
        let response = callback(forged, form).await.expect("callback");
        problem(response, 401, "invalid_signature").await;
    }
    assert_eq!(
        app.data_items().await,
        before,
        "forged callbacks change nothing"
    );
    // Genuine, for a user no account has: a 200 all the same.
    let unknown = callback(
        Some(format!("KakaoAK {admin_key}")),
        "app_id=1&user_id=9999&referrer_type=ACCOUNT_DELETE",
    )
    .await
    .expect("callback");
    assert_eq!(unknown.status(), 200);
    // Genuine, for Ann's: a 200 well within Kakao's 3 s, the identity forgotten from the queue.
    let started = std::time::Instant::now();
    let known = callback(Some(format!("KakaoAK {admin_key}")), form)
        .await
        .expect("callback");
    assert_eq!(known.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    wait_until("Ann's Kakao identity is forgotten", || async {
        let listed: Value = app
            .get_with_token("/v1/auth/identities", &ann)
            .await
            .json()
            .await
            .expect("json");
        listed["identities"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    // Her account stays (she has a password); Kakao's 3003 is free for a new account.
    assert_eq!(app.get_with_token("/v1/auth/me", &ann).await.status(), 200);
    let aud = fake_oidc::web_client_id("kakao");
    let token = fakes.oidc_token(
        "kakao",
        &fakes.oidc_claims("kakao", "3003", aud, None),
        None,
    );
    body(native(&app, "kakao", &token, None).await, 201).await;
}
