//! `POST /v1/auth/firebase` (WEAV): Firebase ID tokens from the local Firebase fake, which signs
//! with a real RSA key and publishes its certificate as Google does.

use base64::Engine as _;
use lambent_local::fakes::{FakeProviders, firebase};
use serde_json::{Value, json};

use crate::app::{PASSWORD, TestApp, problem};

async fn start() -> (TestApp, FakeProviders) {
    start_with(&[]).await
}

async fn start_with(extra: &[(&str, &str)]) -> (TestApp, FakeProviders) {
    let fakes = FakeProviders::start().await.expect("fakes start");
    (TestApp::spawn_with_fakes(&fakes, extra, true).await, fakes)
}

async fn exchange(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/v1/auth/firebase", &json!({"id_token": token}))
        .await
}

async fn signed_in(app: &TestApp, token: &str, status: u16) -> Value {
    let response = exchange(app, token).await;
    assert_eq!(response.status(), status, "exchange");
    response.json().await.expect("json")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

#[tokio::test]
async fn a_firebase_uid_signs_up_once_and_then_signs_in_to_the_same_account() {
    let (app, fakes) = start().await;
    let token = fakes.firebase_token(&firebase::claims("uid-ann", Some("Ann@Example.com")), None);
    let first = signed_in(&app, &token, 201).await;
    let user = &first["user"];
    assert_eq!(
        user["email"], "ann@example.com",
        "a verified email is recorded"
    );
    assert!(
        user["username"]
            .as_str()
            .expect("username")
            .starts_with("u_")
    );
    assert_eq!(user["credits"], 100, "the starting grant");
    let me: Value = app
        .get_with_token(
            "/v1/auth/me",
            first["access_token"].as_str().expect("token"),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["id"], user["id"]);

    let again = fakes.firebase_token(&firebase::claims("uid-ann", Some("ann@example.com")), None);
    let second = signed_in(&app, &again, 200).await;
    assert_eq!(second["user"]["id"], user["id"], "the same account");
    // The refresh token works like any other.
    let refreshed = app
        .post_json(
            "/v1/auth/refresh",
            &json!({"refresh_token": second["refresh_token"]}),
        )
        .await;
    assert_eq!(refreshed.status(), 200);
}

#[tokio::test]
async fn an_email_never_joins_or_takes_over_an_account() {
    let (app, fakes) = start().await;
    let password_account = app.register("bea@example.com", "bea").await;
    let token = fakes.firebase_token(&firebase::claims("uid-bea", Some("bea@example.com")), None);
    let federated = signed_in(&app, &token, 201).await;
    assert_ne!(
        federated["user"]["id"], password_account["user"]["id"],
        "a verified email is recorded, never used to merge"
    );
    // The password account still signs in as itself.
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "bea@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status(), 200);
    let login: Value = login.json().await.expect("json");
    assert_eq!(login["user"]["id"], password_account["user"]["id"]);
    // A federated account has no password: its username with any password is refused.
    let username = federated["user"]["username"].as_str().expect("username");
    let refused = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": username, "password": PASSWORD}),
        )
        .await;
    problem(refused, 401, "invalid_credentials").await;

    // An email Firebase has not verified is not recorded.
    let mut claims = firebase::claims("uid-unverified", Some("cy@example.com"));
    claims["email_verified"] = json!(false);
    let unverified = signed_in(&app, &fakes.firebase_token(&claims, None), 201).await;
    assert!(unverified["user"]["email"].is_null());
}

#[tokio::test]
async fn refused_tokens_are_401s_that_write_nothing() {
    // More tries than a minute's sign-in budget (which counts refused tokens too; see below).
    let (app, fakes) = start_with(&[("LOGIN_RATE_PER_MINUTE", "1000")]).await;
    let other = FakeProviders::start().await.expect("another Firebase");
    // Fetch the certificates once, so every case below meets a warm cache.
    let good = fakes.firebase_token(&firebase::claims("uid-warm", None), None);
    signed_in(&app, &good, 201).await;
    let kid = kid_of(&good);
    let before = app.data_items().await;

    let now = chrono::Utc::now().timestamp();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = firebase::claims("uid-eve", None);
        change(&mut claims);
        fakes.firebase_token(&claims, None)
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = firebase::claims("uid-eve", None);
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(kid.clone()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"guessed"),
    )
    .expect("hs256");
    let cases: Vec<(&str, String)> = vec![
        ("wrong aud", with(&|c| c["aud"] = json!("another-project"))),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("https://securetoken.google.com/another-project")),
        ),
        ("expired", with(&|c| c["exp"] = json!(now - 3_600))),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(now + 3_600)),
        ),
        (
            "signed in the future",
            with(&|c| c["auth_time"] = json!(now + 3_600)),
        ),
        ("uid too long", with(&|c| c["sub"] = json!("u".repeat(129)))),
        ("empty uid", with(&|c| c["sub"] = json!(""))),
        ("HS256", hs256),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": kid})),
                b64(&claims)
            ),
        ),
        (
            "unknown kid",
            fakes.firebase_token(&claims, Some("not-published")),
        ),
        (
            "another key under a published kid",
            other.firebase_token(&claims, Some(&kid)),
        ),
        ("not a JWT", "not.a.jwt".to_owned()),
    ];
    for (name, token) in cases {
        let response = exchange(&app, &token).await;
        assert_eq!(response.status(), 401, "{name}");
        problem(response, 401, "invalid_id_token").await;
    }
    assert_eq!(app.data_items().await, before, "nothing was written");
    // A token in no JSON shape is a 422, not a 401.
    let bad = app
        .post_json("/v1/auth/firebase", &json!({"token": good}))
        .await;
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn tries_are_rate_limited_per_address() {
    let (app, fakes) = start_with(&[("LOGIN_RATE_PER_MINUTE", "3")]).await;
    let forged = fakes.firebase_token(&firebase::claims("uid-guess", None), Some("guess"));
    for _ in 0..3 {
        problem(exchange(&app, &forged).await, 401, "invalid_id_token").await;
    }
    let good = fakes.firebase_token(&firebase::claims("uid-guess", None), None);
    problem(exchange(&app, &good).await, 429, "rate_limited").await;
}

#[tokio::test]
async fn rotated_keys_are_fetched_and_held_keys_outlive_an_outage() {
    // No floor between fetches here, so each step's fetch happens when it is asked for.
    let (app, fakes) = start_with(&[("FIREBASE_KEYS_REFETCH_SECONDS", "0")]).await;
    let first = fakes.firebase_token(&firebase::claims("uid-rot", None), None);
    signed_in(&app, &first, 201).await;
    assert_eq!(fakes.firebase_certificate_fetches(), 1);
    // Cached per max-age: no fetch for the next sign-in.
    signed_in(&app, &first, 200).await;
    assert_eq!(fakes.firebase_certificate_fetches(), 1);

    // Google publishes a new key and signs with it: the unknown kid makes one fetch.
    fakes.rotate_firebase_key();
    let rotated = fakes.firebase_token(&firebase::claims("uid-rot", None), None);
    assert_ne!(kid_of(&rotated), kid_of(&first));
    signed_in(&app, &rotated, 200).await;
    assert_eq!(fakes.firebase_certificate_fetches(), 2);

    // Google is down: a refresh fails, and the keys held keep working.
    fakes.configure(|b| b.firebase_certs_down = true);
    let unknown = fakes.firebase_token(&firebase::claims("uid-rot", None), Some("unpublished"));
    problem(exchange(&app, &unknown).await, 401, "invalid_id_token").await;
    assert_eq!(
        fakes.firebase_certificate_fetches(),
        3,
        "the refresh was tried"
    );
    signed_in(&app, &rotated, 200).await;
    signed_in(&app, &first, 200).await;
}

#[tokio::test]
async fn made_up_key_ids_cannot_make_every_request_fetch() {
    let (app, fakes) = start().await;
    let good = fakes.firebase_token(&firebase::claims("uid-floor", None), None);
    signed_in(&app, &good, 201).await;
    for i in 0..5 {
        let made_up = fakes.firebase_token(
            &firebase::claims("uid-floor", None),
            Some(&format!("kid-{i}")),
        );
        problem(exchange(&app, &made_up).await, 401, "invalid_id_token").await;
    }
    assert_eq!(
        fakes.firebase_certificate_fetches(),
        1,
        "within the floor, no fetch"
    );
}

#[tokio::test]
async fn first_sign_ins_at_once_make_one_account() {
    let (app, fakes) = start().await;
    let token = fakes.firebase_token(&firebase::claims("uid-race", None), None);
    let answers = futures::future::join_all((0..6).map(|_| exchange(&app, &token))).await;
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for answer in answers {
        let status = answer.status().as_u16();
        assert!(status == 200 || status == 201, "status {status}");
        created += usize::from(status == 201);
        let body: Value = answer.json().await.expect("json");
        ids.insert(body["user"]["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "one account");
    assert_eq!(created, 1, "made once");
    let profiles = app
        .items()
        .await
        .iter()
        .filter(|i| i["sk"].as_s().is_ok_and(|sk| sk == "PROFILE"))
        .count();
    assert_eq!(profiles, 1);
}

#[tokio::test]
async fn firebase_sign_in_is_off_without_a_project() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json("/v1/auth/firebase", &json!({"id_token": "a.b.c"}))
        .await;
    assert_eq!(response.status(), 404);
}
