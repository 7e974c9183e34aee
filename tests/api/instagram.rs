//! An Instagram professional account linked to a persona (Instagram Login's code flow through
//! the fake Instagram, the token encrypted under a KMS data key), refreshed before it runs out
//! by the fake's clock, published to, unlinked; Meta's data-deletion callback.

use base64::Engine as _;
use lambent_local::fakes::FakeProviders;
use lambent_local::fakes::instagram::{Instagram, signed_request};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::app::{TestApp, problem};
use crate::oidc::{body, location, no_redirects, oauth_clients};

async fn start() -> (TestApp, FakeProviders) {
    let (app, fakes) = crate::generation::start(&[("LOGIN_RATE_PER_MINUTE", "1000")], true).await;
    fakes.set_oauth_client_secrets(&oauth_clients(&app).await);
    (app, fakes)
}

async fn persona(app: &TestApp, token: &str, name: &str) -> String {
    let created = app
        .client
        .post(app.url("/v1/personas"))
        .bearer_auth(token)
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("create");
    body(created, 201).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// The browser's part of a link: start → Instagram (as `creator`) → callback → the app's code.
async fn link_code(
    app: &TestApp,
    fakes: &FakeProviders,
    persona_id: &str,
    creator: &str,
) -> (String, String) {
    let verifier = format!("ig-verifier-{}", uuid::Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let browser = no_redirects();
    let started = browser
        .get(app.url("/v1/instagram/start"))
        .query(&[
            ("persona_id", persona_id),
            ("redirect_uri", &fakes.app_redirect_uri()),
            ("code_challenge", &challenge),
            ("state", "app-ig"),
        ])
        .send()
        .await
        .expect("start");
    let mut to_instagram = location(&started);
    let cookie = started.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    assert_eq!(to_instagram.path(), "/instagram/oauth/authorize");
    to_instagram
        .query_pairs_mut()
        .append_pair("fake_user", creator);
    let allowed = browser.get(to_instagram).send().await.expect("authorize");
    let callback = location(&allowed);
    assert_eq!(callback.fragment(), Some("_"), "Meta's #_");
    let back = browser
        .get(callback)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback");
    let to_app = location(&back);
    let param = |name: &str| {
        to_app
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("state").as_deref(), Some("app-ig"));
    (param("code").expect("a code"), verifier)
}

async fn link(
    app: &TestApp,
    token: &str,
    persona_id: &str,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/personas/{persona_id}/instagram")))
        .bearer_auth(token)
        .json(&json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .expect("link")
}

async fn generated_image(app: &TestApp, token: &str) -> String {
    let id = app
        .submit_id(
            token,
            &json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev",
            "task": "text_to_image", "prompt": "a lighthouse at dusk"}}),
        )
        .await;
    app.wait_for_job(token, &id, |j| j["status"] == "COMPLETED")
        .await;
    id
}

async fn publish(
    app: &TestApp,
    token: &str,
    persona_id: &str,
    job_id: &str,
    caption: &str,
) -> Value {
    let id = app
        .submit_id(token, &json!({"kind": "publish_instagram", "input": {"persona_id": persona_id, "job_id": job_id, "caption": caption}}))
        .await;
    app.wait_for_job(token, &id, |j| {
        matches!(j["status"].as_str(), Some("COMPLETED" | "FAILED"))
    })
    .await
}

#[tokio::test]
async fn a_persona_links_an_instagram_account_publishes_to_it_and_unlinks() {
    let (app, fakes) = start().await;
    let (ann, ann_id) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let yuna = persona(&app, &ann, "Yuna").await;
    let other = persona(&app, &ann, "Other").await;
    let bobs = persona(&app, &bob, "Bob's").await;

    // The code is for the persona the flow began for, for its owner, with the app's verifier;
    // each refusal below uses a fresh code up.
    let refusals: [(&str, &str, bool, u16, &str); 4] = [
        (&bob, &bobs, true, 400, "invalid_grant"),
        (&bob, &yuna, true, 404, "not_found"),
        (&ann, &other, true, 400, "invalid_grant"),
        (&ann, &yuna, false, 400, "invalid_grant"),
    ];
    for (token, target, right_verifier, status, code_name) in refusals {
        let (code, verifier) = link_code(&app, &fakes, &yuna, "yuna_creator").await;
        let verifier = if right_verifier {
            verifier
        } else {
            "not-the-verifier".into()
        };
        problem(
            link(&app, token, target, &code, &verifier).await,
            status,
            code_name,
        )
        .await;
    }
    let (code, verifier) = link_code(&app, &fakes, &yuna, "yuna_creator").await;
    let linked = body(link(&app, &ann, &yuna, &code, &verifier).await, 201).await;
    let ig = &linked["instagram"];
    assert_eq!(ig["user_id"], Instagram::user_id("yuna_creator").as_str());
    assert!(
        ig["username"]
            .as_str()
            .is_some_and(|u| u.starts_with("creator_"))
    );
    assert!(
        ig.get("token").is_none() && !linked.to_string().contains("\"IG"),
        "no token is shown"
    );
    problem(
        link(&app, &ann, &yuna, &code, &verifier).await,
        400,
        "invalid_grant",
    )
    .await;

    // At rest the token is ciphertext: no attribute of the persona holds the fake's token.
    let stored = app
        .items()
        .await
        .into_iter()
        .find(|i| {
            i["pk"].as_s().ok().map(String::as_str) == Some(&format!("USER#{ann_id}"))
                && i["sk"].as_s().ok().map(String::as_str) == Some(&format!("PERSONA#{yuna}"))
        })
        .expect("the persona's item");
    assert!(stored.contains_key("ig_token") && stored.contains_key("ig_token_key"));
    assert!(
        stored
            .values()
            .all(|v| v.as_s().map_or(true, |s| !s.starts_with("IG"))),
        "{stored:?}"
    );

    // Publish a finished generation: the fake fetched the image by its presigned URL.
    let image = generated_image(&app, &ann).await;
    let published = publish(&app, &ann, &yuna, &image, "dawn at the lighthouse #sea").await;
    assert_eq!(published["status"], "COMPLETED", "{published}");
    assert!(published["output"]["media_id"].is_string());
    let media = fakes.instagram_published();
    assert_eq!(media.len(), 1);
    assert_eq!(media[0].ig_user_id, Instagram::user_id("yuna_creator"));
    assert_eq!(media[0].caption, "dawn at the lighthouse #sea");
    assert_eq!(
        media[0].image_bytes,
        lambent_local::fakes::output_png().len()
    );
    // Bob cannot publish with Ann's persona, nor Ann's image to his.
    let refused = publish(&app, &bob, &yuna, &image, "mine").await;
    assert_eq!(refused["error"]["type"], "not_found", "{refused}");
    // A persona with no link says so.
    let unlinked = publish(&app, &ann, &other, &image, "x").await;
    assert_eq!(
        unlinked["error"]["type"], "instagram_not_linked",
        "{unlinked}"
    );

    let path = format!("/v1/personas/{yuna}/instagram");
    let unlink = || app.client.delete(app.url(&path)).bearer_auth(&ann).send();
    let removed = unlink().await.expect("unlink");
    assert_eq!(removed.status(), 204);
    let after: Value = app.get_json(&format!("/v1/personas/{yuna}"), &ann).await;
    assert_eq!(after["instagram"], Value::Null);
    let again = publish(&app, &ann, &yuna, &image, "x").await;
    assert_eq!(again["error"]["type"], "instagram_not_linked");
    assert_eq!(fakes.instagram_published().len(), 1);
    problem(unlink().await.expect("unlink"), 404, "not_found").await;
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_run_out_and_an_expired_link_says_so() {
    let (app, fakes) = start().await;
    let (ann, _) = app.user("ann").await;
    let yuna = persona(&app, &ann, "Yuna").await;
    // Tokens that last 10 days: due for refresh (20 days ahead) as soon as Instagram allows.
    fakes.with_instagram(|i| i.long_lived_seconds = Some(10 * 86_400));
    let (code, verifier) = link_code(&app, &fakes, &yuna, "yuna_creator").await;
    let first = body(link(&app, &ann, &yuna, &code, &verifier).await, 201).await;
    let first_expiry = first["instagram"]["expires_at"]
        .as_str()
        .expect("expiry")
        .to_owned();
    let state = &app.running.gateway.state;
    let now = chrono::Utc::now().timestamp();
    // Not within the day Instagram refuses: nothing due yet.
    let report = lambent::personas::instagram::refresh_due_at(state, now)
        .await
        .expect("refresh");
    assert_eq!(report.refreshed, 0);
    // Two days on, by both clocks: refreshed, for another 10 days from then.
    fakes.with_instagram(|i| i.clock_offset = 2 * 86_400);
    fakes.with_instagram(|i| i.long_lived_seconds = Some(12 * 86_400));
    let report = lambent::personas::instagram::refresh_due_at(state, now + 2 * 86_400)
        .await
        .expect("refresh");
    assert_eq!((report.refreshed, report.lost), (1, 0));
    let refreshed: Value = app.get_json(&format!("/v1/personas/{yuna}"), &ann).await;
    let second_expiry = refreshed["instagram"]["expires_at"]
        .as_str()
        .expect("expiry")
        .to_owned();
    assert!(
        second_expiry > first_expiry,
        "{first_expiry} → {second_expiry}"
    );
    // The refreshed token publishes.
    let image = generated_image(&app, &ann).await;
    assert_eq!(
        publish(&app, &ann, &yuna, &image, "fresh").await["status"],
        "COMPLETED"
    );
    // Past its end by the fake's clock (Instagram's word: OAuthException 190): a clear error.
    fakes.with_instagram(|i| i.clock_offset = 30 * 86_400);
    let expired = publish(&app, &ann, &yuna, &image, "late").await;
    assert_eq!(expired["status"], "FAILED");
    assert_eq!(
        expired["error"]["type"], "instagram_link_expired",
        "{expired}"
    );
    assert!(
        expired["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("link the account again"))
    );
}

#[tokio::test]
async fn metas_data_deletion_callback_is_verified_and_removes_the_links() {
    let (app, fakes) = start().await;
    let (ann, _) = app.user("ann").await;
    let yuna = persona(&app, &ann, "Yuna").await;
    let (code, verifier) = link_code(&app, &fakes, &yuna, "yuna_creator").await;
    body(link(&app, &ann, &yuna, &code, &verifier).await, 201).await;
    let secret = oauth_clients(&app).await["instagram"]
        .as_str()
        .expect("secret")
        .to_owned();
    let payload = json!({"algorithm": "HMAC-SHA256", "issued_at": chrono::Utc::now().timestamp(),
        "user_id": Instagram::user_id("yuna_creator")});
    let callback = |signed: String| {
        app.client
            .post(app.url("/v1/webhooks/meta/data-deletion"))
            .form(&[("signed_request", signed)])
            .send()
    };
    for forged in [
        signed_request("not-the-secret", &payload),
        "no-dot".to_owned(),
        format!("{}x", signed_request(&secret, &payload)),
        signed_request(&secret, &json!({"algorithm": "none", "user_id": "1"})),
    ] {
        problem(
            callback(forged).await.expect("callback"),
            401,
            "invalid_signature",
        )
        .await;
    }
    let linked: Value = app.get_json(&format!("/v1/personas/{yuna}"), &ann).await;
    assert!(linked["instagram"].is_object(), "forgeries change nothing");
    let receipt = body(
        callback(signed_request(&secret, &payload))
            .await
            .expect("callback"),
        200,
    )
    .await;
    let code = receipt["confirmation_code"].as_str().expect("code");
    let url = url::Url::parse(receipt["url"].as_str().expect("url")).expect("url");
    assert_eq!(url.path(), format!("/v1/instagram/deletions/{code}"));
    let after: Value = app.get_json(&format!("/v1/personas/{yuna}"), &ann).await;
    assert_eq!(after["instagram"], Value::Null);
    let status: Value = app
        .client
        .get(app.url(url.path()))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], "completed");
    let unknown = app
        .client
        .get(app.url("/v1/instagram/deletions/made-up"))
        .send()
        .await
        .expect("status");
    problem(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn starting_links_is_rate_limited_per_address() {
    let fakes = FakeProviders::start().await.expect("fakes start");
    let app = TestApp::spawn_with_fakes(&fakes, &[("LOGIN_RATE_PER_MINUTE", "2")], false).await;
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let persona_id = uuid::Uuid::new_v4().to_string();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let started = no_redirects()
            .get(app.url("/v1/instagram/start"))
            .query(&[
                ("persona_id", persona_id.as_str()),
                ("redirect_uri", &fakes.app_redirect_uri()),
                ("code_challenge", challenge),
            ])
            .send()
            .await
            .expect("start");
        statuses.push(started.status().as_u16());
    }
    assert_eq!(statuses, [302, 302, 429]);
}
