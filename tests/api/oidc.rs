//! Google, Kakao and Naver sign-in, both ways apps use it (a platform SDK's ID token, and the
//! browser's code flow with PKCE, state and nonce), and linked identities, against the local
//! fake OpenID Providers (real RSA keys, a JWKS, authorize and token endpoints that check the
//! client secret and the PKCE verifier, Naver's profile API).

use base64::Engine as _;
use lambent_local::fakes::{FakeProviders, oidc};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::app::{TestApp, problem};

async fn start() -> (TestApp, FakeProviders) {
    with_providers(false).await
}

/// A stack pointed at the fake OpenID Providers, whose token endpoints want the stack's client
/// secrets; with the worker and the queues' consumers when `worker`.
pub(crate) async fn with_providers(worker: bool) -> (TestApp, FakeProviders) {
    let fakes = FakeProviders::start().await.expect("fakes start");
    let app = TestApp::spawn_with_fakes(&fakes, &[("LOGIN_RATE_PER_MINUTE", "1000")], worker).await;
    fakes.set_oauth_client_secrets(&oauth_clients(&app).await);
    (app, fakes)
}

/// The stack's OAuthClients secret: `{"google", "kakao", "naver", "kakao_admin_key"}`.
pub(crate) async fn oauth_clients(app: &TestApp) -> Value {
    let secrets = aws_sdk_secretsmanager::Client::new(&app.running.sdk)
        .get_secret_value()
        .secret_id(&app.running.stack.refs["OAuthClients"])
        .send()
        .await
        .expect("secret");
    serde_json::from_str(secrets.secret_string().expect("string")).expect("json")
}

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) fn location(response: &reqwest::Response) -> url::Url {
    assert_eq!(response.status(), 302, "a redirect");
    url::Url::parse(response.headers()["location"].to_str().expect("location")).expect("url")
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A browser sign-in up to the provider's answer: the callback URL the provider sent the browser
/// to, the browser's cookie, and the app's PKCE verifier.
struct Answer {
    callback: url::Url,
    cookie: String,
    verifier: String,
}

async fn to_provider(
    app: &TestApp,
    fakes: &FakeProviders,
    provider: &str,
    user: &str,
    intent: &str,
) -> Answer {
    let verifier = format!(
        "verifier-{}-{}",
        uuid::Uuid::new_v4().simple(),
        "x".repeat(10)
    );
    let browser = no_redirects();
    let started = browser
        .get(app.url(&format!("/v1/auth/oauth/{provider}/start")))
        .query(&[
            ("redirect_uri", fakes.app_redirect_uri().as_str()),
            ("code_challenge", &s256(&verifier)),
            ("code_challenge_method", "S256"),
            ("state", "app-state-1"),
            ("intent", intent),
            ("login_hint", user),
        ])
        .send()
        .await
        .expect("start");
    let to = location(&started);
    assert!(
        to.as_str().starts_with(&fakes.oidc_issuer(provider)),
        "{to}"
    );
    assert_eq!(
        param(&to, "client_id").as_deref(),
        Some(oidc::web_client_id(provider))
    );
    assert_eq!(param(&to, "code_challenge_method").as_deref(), Some("S256"));
    assert!(param(&to, "nonce").is_some() && param(&to, "state").is_some());
    let cookie = started.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().expect("pair").to_owned();
    let answered = browser.get(to).send().await.expect("authorize");
    Answer {
        callback: location(&answered),
        cookie,
        verifier,
    }
}

async fn callback(answer: &Answer, cookie: Option<&str>) -> reqwest::Response {
    let mut request = no_redirects().get(answer.callback.clone());
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.expect("callback")
}

/// A browser sign-in to its end: the app's one-time code and its verifier.
pub(crate) async fn browser_code(
    app: &TestApp,
    fakes: &FakeProviders,
    provider: &str,
    user: &str,
    intent: &str,
) -> (String, String) {
    let answer = to_provider(app, fakes, provider, user, intent).await;
    let back = callback(&answer, Some(&answer.cookie)).await;
    let to_app = location(&back);
    assert!(
        to_app.as_str().starts_with(&fakes.app_redirect_uri()),
        "{to_app}"
    );
    assert_eq!(param(&to_app, "state").as_deref(), Some("app-state-1"));
    assert_eq!(param(&to_app, "error"), None, "{to_app}");
    (param(&to_app, "code").expect("code"), answer.verifier)
}

async fn redeem(app: &TestApp, code: &str, verifier: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token")
}

pub(crate) async fn native(
    app: &TestApp,
    provider: &str,
    token: &str,
    nonce: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({"id_token": token});
    if let Some(nonce) = nonce {
        body["nonce"] = json!(nonce);
    }
    app.post_json(&format!("/v1/auth/oidc/{provider}"), &body)
        .await
}

pub(crate) async fn link(
    app: &TestApp,
    access: &str,
    provider: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/auth/identities/{provider}")))
        .bearer_auth(access)
        .json(body)
        .send()
        .await
        .expect("link")
}

async fn unlink(app: &TestApp, access: &str, provider: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/v1/auth/identities/{provider}")))
        .bearer_auth(access)
        .send()
        .await
        .expect("unlink")
}

pub(crate) async fn body(response: reqwest::Response, status: u16) -> Value {
    let got = response.status();
    let text = response.text().await.expect("text");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test]
async fn each_provider_signs_up_signs_in_again_links_another_and_unlinks() {
    let (app, fakes) = start().await;
    let others = [("google", "kakao"), ("kakao", "naver"), ("naver", "google")];
    for (provider, other) in others {
        let user = format!("{provider}-ann");
        // Sign-up in the browser: 201 and a new account.
        let (code, verifier) = browser_code(&app, &fakes, provider, &user, "sign_in").await;
        let first = body(redeem(&app, &code, &verifier).await, 201).await;
        let id = first["user"]["id"].as_str().expect("id").to_owned();
        let access = first["access_token"].as_str().expect("access").to_owned();
        // Again in the browser: the same account.
        let (code, verifier) = browser_code(&app, &fakes, provider, &user, "sign_in").await;
        let again = body(redeem(&app, &code, &verifier).await, 200).await;
        assert_eq!(again["user"]["id"], id.as_str(), "{provider}");
        // And from the platform SDK, whose token names a native client id where there is one.
        let aud = oidc::PROVIDERS
            .iter()
            .find(|(p, _)| *p == provider)
            .and_then(|(_, ids)| ids.last())
            .expect("client");
        let token = fakes.oidc_token(
            provider,
            &fakes.oidc_claims(provider, &user, aud, None),
            None,
        );
        let sdk = body(native(&app, provider, &token, None).await, 200).await;
        assert_eq!(sdk["user"]["id"], id.as_str(), "{provider}");
        // Link a second provider: natively, or by a browser sign-in begun with intent=link.
        let other_user = format!("{other}-of-{provider}");
        let linked = if provider == "kakao" {
            let (code, verifier) = browser_code(&app, &fakes, other, &other_user, "link").await;
            link(
                &app,
                &access,
                other,
                &json!({"code": code, "code_verifier": verifier}),
            )
            .await
        } else {
            let aud = oidc::web_client_id(other);
            let nonce = format!("n-{}", uuid::Uuid::new_v4().simple());
            let claims = fakes.oidc_claims(other, &other_user, aud, Some(&nonce));
            let token = fakes.oidc_token(other, &claims, None);
            link(
                &app,
                &access,
                other,
                &json!({"id_token": token, "nonce": nonce}),
            )
            .await
        };
        let linked = body(linked, 201).await;
        assert_eq!(linked["provider"], other);
        assert_eq!(linked["subject"], other_user.as_str());
        // The second identity signs in to the same account.
        let aud = oidc::web_client_id(other);
        let token = fakes.oidc_token(
            other,
            &fakes.oidc_claims(other, &other_user, aud, None),
            None,
        );
        let via_other = body(native(&app, other, &token, None).await, 200).await;
        assert_eq!(via_other["user"]["id"], id.as_str());
        let listed = body(
            app.get_with_token("/v1/auth/identities", &access).await,
            200,
        )
        .await;
        assert_eq!(listed["password"], false);
        let mut providers: Vec<&str> = listed["identities"]
            .as_array()
            .expect("list")
            .iter()
            .map(|i| i["provider"].as_str().expect("provider"))
            .collect();
        providers.sort_unstable();
        let mut expected = vec![provider, other];
        expected.sort_unstable();
        assert_eq!(providers, expected);
        if provider == "naver" {
            // Naver's ID token names no email; its profile API does.
            let naver = listed["identities"]
                .as_array()
                .expect("list")
                .iter()
                .find(|i| i["provider"] == "naver")
                .expect("naver");
            assert_eq!(naver["email"], "naver-ann@naver.example");
        }
        // Unlink one; the last is refused (no password): the account keeps a way in.
        assert_eq!(unlink(&app, &access, other).await.status(), 204);
        problem(
            unlink(&app, &access, provider).await,
            409,
            "last_sign_in_method",
        )
        .await;
        problem(unlink(&app, &access, other).await, 404, "not_found").await;
        // The unlinked identity is free: it signs up a new account.
        let token = fakes.oidc_token(
            other,
            &fakes.oidc_claims(other, &other_user, aud, None),
            None,
        );
        let fresh = body(native(&app, other, &token, None).await, 201).await;
        assert_ne!(fresh["user"]["id"], id.as_str());
    }
}

#[tokio::test]
async fn refused_id_tokens_are_401s_that_write_nothing() {
    let (app, fakes) = start().await;
    let aud = oidc::web_client_id("google");
    let good = fakes.oidc_claims("google", "g-1", aud, None);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        fakes.oidc_token("google", &claims, None)
    };
    let now = chrono::Utc::now().timestamp();
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("google".into());
        jsonwebtoken::encode(
            &header,
            &good,
            &jsonwebtoken::EncodingKey::from_secret(b"guess"),
        )
        .expect("sign")
    };
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"x"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let kakao_token =
        fakes.oidc_token("kakao", &fakes.oidc_claims("kakao", "k-1", aud, None), None);
    let before = app.data_items().await;
    let cases: Vec<(&str, String)> = vec![
        (
            "another app's aud",
            with(&|c| c["aud"] = json!("someone-elses.apps.local")),
        ),
        (
            "another issuer",
            with(&|c| c["iss"] = json!("https://accounts.google.com")),
        ),
        ("Kakao's token sent as Google's", kakao_token),
        ("expired", with(&|c| c["exp"] = json!(now - 3_600))),
        (
            "a lifetime over a day",
            with(&|c| c["exp"] = json!(now + 2 * 86_400)),
        ),
        ("HS256", hs256),
        ("alg none", none),
        (
            "unknown kid",
            fakes.oidc_token("google", &good, Some("made-up")),
        ),
        ("no sub", with(&|c| c["sub"] = json!(""))),
        (
            "a nonce the app does not send",
            with(&|c| c["nonce"] = json!("n-1")),
        ),
    ];
    for (name, token) in cases {
        let response = native(&app, "google", &token, None).await;
        assert_eq!(response.status(), 401, "{name}");
        let refused = problem(response, 401, "invalid_id_token").await;
        assert!(
            refused["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
    }
    // A nonce other than the token's.
    let token = with(&|c| c["nonce"] = json!("n-2"));
    problem(
        native(&app, "google", &token, Some("n-3")).await,
        401,
        "invalid_id_token",
    )
    .await;
    assert_eq!(app.data_items().await, before, "nothing was written");
    // A nonce is good once.
    body(native(&app, "google", &token, Some("n-2")).await, 201).await;
    let after = app.data_items().await;
    problem(
        native(&app, "google", &token, Some("n-2")).await,
        401,
        "invalid_id_token",
    )
    .await;
    assert_eq!(app.data_items().await, after, "the replay wrote nothing");
    // A provider that is not configured.
    problem(native(&app, "apple", &token, None).await, 404, "not_found").await;
}

#[tokio::test]
async fn the_browser_flow_refuses_what_rfc_9700_says_to_refuse() {
    let (app, fakes) = start().await;
    let before = app.data_items().await;
    // A redirect URI off the allow-list: a 400 and no redirect at all.
    for uri in [
        "https://evil.example/cb",
        &format!("{}/", fakes.app_redirect_uri()),
        &format!("{}?x=1", fakes.app_redirect_uri()),
    ] {
        let response = no_redirects()
            .get(app.url("/v1/auth/oauth/google/start"))
            .query(&[
                ("redirect_uri", uri),
                ("code_challenge", &s256("v".repeat(43).as_str())),
            ])
            .send()
            .await
            .expect("start");
        assert!(response.headers().get("location").is_none());
        problem(response, 400, "redirect_uri_not_allowed").await;
    }
    // Without the app's PKCE challenge, or with `plain`.
    let response = no_redirects()
        .get(app.url("/v1/auth/oauth/google/start"))
        .query(&[("redirect_uri", fakes.app_redirect_uri().as_str())])
        .send()
        .await
        .expect("start");
    problem(response, 400, "invalid_request").await;
    assert_eq!(
        app.data_items().await,
        before,
        "refused starts wrote nothing"
    );

    // Another browser (no cookie, or another flow's) is refused and the flow stays usable.
    let answer = to_provider(&app, &fakes, "google", "g-browser", "sign_in").await;
    let other = to_provider(&app, &fakes, "google", "g-other", "sign_in").await;
    problem(callback(&answer, None).await, 400, "browser_mismatch").await;
    problem(
        callback(&answer, Some(&other.cookie)).await,
        400,
        "browser_mismatch",
    )
    .await;
    // An issuer other than the provider's (RFC 9207 `iss`).
    let mut forged = answer.callback.clone();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    forged
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("iss", &fakes.oidc_issuer("kakao"));
    let forged_answer = Answer {
        callback: forged,
        cookie: answer.cookie.clone(),
        verifier: String::new(),
    };
    problem(
        callback(&forged_answer, Some(&answer.cookie)).await,
        400,
        "issuer_mismatch",
    )
    .await;
    // The real answer works once; the replay is refused.
    let to_app = location(&callback(&answer, Some(&answer.cookie)).await);
    let code = param(&to_app, "code").expect("code");
    problem(
        callback(&answer, Some(&answer.cookie)).await,
        400,
        "invalid_state",
    )
    .await;
    // A wrong verifier uses the code up.
    problem(
        redeem(&app, &code, "not-the-verifier").await,
        400,
        "invalid_grant",
    )
    .await;
    problem(
        redeem(&app, &code, &answer.verifier).await,
        400,
        "invalid_grant",
    )
    .await;

    // A Kakao code presented at Google's callback.
    let kakao = to_provider(&app, &fakes, "kakao", "k-mixup", "sign_in").await;
    let mut at_google = kakao.callback.clone();
    at_google.set_path("/v1/auth/oauth/google/callback");
    let mixed = Answer {
        callback: at_google,
        cookie: kakao.cookie.clone(),
        verifier: String::new(),
    };
    problem(
        callback(&mixed, Some(&kakao.cookie)).await,
        400,
        "provider_mismatch",
    )
    .await;
    // An unknown state.
    let mut made_up = kakao.callback.clone();
    made_up.set_query(Some("code=x&state=made-up"));
    let made_up = Answer {
        callback: made_up,
        cookie: kakao.cookie.clone(),
        verifier: String::new(),
    };
    problem(
        callback(&made_up, Some(&kakao.cookie)).await,
        400,
        "invalid_state",
    )
    .await;
    // Kakao's own callback still finishes its flow; its code redeems once.
    let to_app = location(&callback(&kakao, Some(&kakao.cookie)).await);
    let code = param(&to_app, "code").expect("code");
    body(redeem(&app, &code, &kakao.verifier).await, 201).await;
    problem(
        redeem(&app, &code, &kakao.verifier).await,
        400,
        "invalid_grant",
    )
    .await;

    // The user says no at the provider: the app hears access_denied, with its state.
    let denied = to_provider(&app, &fakes, "naver", "deny", "sign_in").await;
    let to_app = location(&callback(&denied, Some(&denied.cookie)).await);
    assert_eq!(param(&to_app, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&to_app, "state").as_deref(), Some("app-state-1"));
    assert_eq!(param(&to_app, "code"), None);

    // A code is for what its flow began as: a link code does not sign in, nor the reverse.
    let (link_code, verifier) = browser_code(&app, &fakes, "google", "g-link", "link").await;
    problem(
        redeem(&app, &link_code, &verifier).await,
        400,
        "invalid_grant",
    )
    .await;
    let (sign_in_code, verifier) = browser_code(&app, &fakes, "google", "g-link", "sign_in").await;
    let (access, _) = app.user("linker").await;
    let response = link(
        &app,
        &access,
        "google",
        &json!({"code": sign_in_code, "code_verifier": verifier}),
    )
    .await;
    problem(response, 400, "invalid_grant").await;
}

#[tokio::test]
async fn an_identity_belongs_to_one_account_and_an_account_has_one_per_provider() {
    let (app, fakes) = start().await;
    let aud = oidc::web_client_id("kakao");
    let token = |subject: &str| {
        fakes.oidc_token(
            "kakao",
            &fakes.oidc_claims("kakao", subject, aud, None),
            None,
        )
    };
    // Ann signs in with Kakao; Bob (a password account) cannot link Ann's Kakao.
    let ann = body(native(&app, "kakao", &token("k-ann"), None).await, 201).await;
    let (bob, _) = app.user("bob").await;
    let before = app.data_items().await;
    problem(
        link(&app, &bob, "kakao", &json!({"id_token": token("k-ann")})).await,
        409,
        "identity_in_use",
    )
    .await;
    assert_eq!(app.data_items().await, before, "nothing was written");
    // Bob links his own; again is a 200; a second Kakao account is a 409.
    let linked = body(
        link(&app, &bob, "kakao", &json!({"id_token": token("k-bob")})).await,
        201,
    )
    .await;
    assert_eq!(linked["subject"], "k-bob");
    body(
        link(&app, &bob, "kakao", &json!({"id_token": token("k-bob")})).await,
        200,
    )
    .await;
    problem(
        link(&app, &bob, "kakao", &json!({"id_token": token("k-bob-2")})).await,
        409,
        "provider_already_linked",
    )
    .await;
    // With a password, Bob may unlink his only identity.
    let listed = body(app.get_with_token("/v1/auth/identities", &bob).await, 200).await;
    assert_eq!(listed["password"], true);
    assert_eq!(unlink(&app, &bob, "kakao").await.status(), 204);
    // Ann's account still has hers; Bob's Kakao is free again.
    let again = body(native(&app, "kakao", &token("k-ann"), None).await, 200).await;
    assert_eq!(again["user"]["id"], ann["user"]["id"]);
    body(native(&app, "kakao", &token("k-bob"), None).await, 201).await;
    // A Firebase identity links too (WEAV's), and then signs in to the same account.
    let ann_first = ann["access_token"].as_str().expect("access");
    let firebase_token = fakes.firebase_token(
        &lambent_local::fakes::firebase::claims("fb-ann", None),
        None,
    );
    let linked = body(
        link(
            &app,
            ann_first,
            "firebase",
            &json!({"id_token": firebase_token}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(linked["subject"], "fb-ann");
    let via_firebase = body(
        app.post_json("/v1/auth/firebase", &json!({"id_token": firebase_token}))
            .await,
        200,
    )
    .await;
    assert_eq!(via_firebase["user"]["id"], ann["user"]["id"]);
    assert_eq!(unlink(&app, ann_first, "firebase").await.status(), 204);
    // Ann sets a first password (no current one): it is a way in, so Kakao can go.
    let ann_access = ann["access_token"].as_str().expect("access");
    problem(
        unlink(&app, ann_access, "kakao").await,
        409,
        "last_sign_in_method",
    )
    .await;
    let set = app
        .client
        .post(app.url("/v1/auth/password"))
        .bearer_auth(ann_access)
        .json(&json!({"new_password": "ann's first password"}))
        .send()
        .await
        .expect("set");
    let set = body(set, 200).await;
    let ann_access = set["access_token"].as_str().expect("access").to_owned();
    let listed = body(
        app.get_with_token("/v1/auth/identities", &ann_access).await,
        200,
    )
    .await;
    assert_eq!(listed["password"], true);
    assert_eq!(unlink(&app, &ann_access, "kakao").await.status(), 204);
    let username = ann["user"]["username"].as_str().expect("username");
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": username, "password": "ann's first password"}),
        )
        .await;
    assert_eq!(login.status(), 200);
    // Neither proof, or both: a 422.
    let response = link(&app, &bob, "google", &json!({})).await;
    problem(response, 422, "validation_failed").await;
}

/// A sign-in whose nonce is marked used by a write answered after the SDK's attempt timeout: the
/// SDK's retry would find its own mark and refuse the sign-in as a replay. Spent once, it signs
/// in; a replay is still refused.
#[tokio::test]
async fn a_nonce_spent_late_still_signs_in_once() {
    let (app, fakes) = start().await;
    let aud = oidc::web_client_id("google");
    let nonce = format!("n-{}", uuid::Uuid::new_v4().simple());
    let claims = fakes.oidc_claims("google", "g-late", aud, Some(&nonce));
    let token = fakes.oidc_token("google", &claims, None);
    let put = "DynamoDB_20120810.PutItem";
    let spent = json!([lambent::keys::used_nonce("google", &nonce)]);
    app.answer_late_either(put, &spent).await;
    body(native(&app, "google", &token, Some(&nonce)).await, 201).await;
    assert_eq!(app.retried(&spent).await, 1, "answered late");
    problem(
        native(&app, "google", &token, Some(&nonce)).await,
        401,
        "invalid_id_token",
    )
    .await;
}
