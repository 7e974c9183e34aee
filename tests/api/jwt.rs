//! The JWT authorizer refuses every forged, stale or misdirected token with a 401.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::app::{TestApp, problem};

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

struct Forge {
    key: EncodingKey,
    kid: String,
    claims: Value,
}

impl Forge {
    async fn new(app: &TestApp, user_id: &str) -> Self {
        let secret = app.signing_secret().await;
        let pem = secret["keys"][0]["private_key_pem"].as_str().expect("pem");
        let now = chrono::Utc::now().timestamp();
        Self {
            key: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("key"),
            kid: secret["keys"][0]["kid"].as_str().expect("kid").to_owned(),
            claims: json!({
                "iss": app.base, "sub": user_id, "aud": "lambent", "exp": now + 300, "nbf": now - 5,
                "iat": now - 5, "jti": "forged", "username": "victim", "role": "user", "scope": "user"
            }),
        }
    }

    fn sign(&self, changes: Value, kid: Option<&str>) -> String {
        let mut claims = self.claims.clone();
        for (k, v) in changes.as_object().expect("object") {
            claims[k] = v.clone();
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.unwrap_or(&self.kid).to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

#[tokio::test]
async fn forged_and_stale_tokens_get_401() {
    let app = TestApp::spawn().await;
    let registered = app.register("victim@example.com", "victim").await;
    let user_id = registered["user"]["id"].as_str().expect("id");
    let real = registered["access_token"].as_str().expect("token");
    let forge = Forge::new(&app, user_id).await;
    let now = chrono::Utc::now().timestamp();

    // The control: a token minted with the real key and the right claims is accepted.
    assert_eq!(
        app.get_with_token("/v1/auth/me", &forge.sign(json!({}), None))
            .await
            .status(),
        200
    );

    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("j");
    let [header, payload, _] =
        <[&str; 3]>::try_from(real.split('.').collect::<Vec<_>>()).expect("three parts");

    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        payload
    );
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(forge.kid.clone());
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(jwks.to_string().as_bytes()),
        )
        .expect("sign")
    };
    let tampered = {
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        claims["role"] = json!("admin");
        let signature = real.rsplit('.').next().expect("signature");
        format!("{header}.{}.{signature}", b64(&claims))
    };
    let attacks = [
        ("alg none", alg_none),
        ("HS256 signed with the public key", hs256_with_public_key),
        ("tampered payload", tampered),
        (
            "expired",
            forge.sign(
                json!({"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200}),
                None,
            ),
        ),
        (
            "not yet valid",
            forge.sign(json!({"nbf": now + 3600, "iat": now}), None),
        ),
        (
            "unknown kid",
            forge.sign(json!({}), Some("somebody-elses-key")),
        ),
        (
            "wrong issuer",
            forge.sign(json!({"iss": "https://evil.example"}), None),
        ),
        (
            "wrong audience",
            forge.sign(json!({"aud": "another-app"}), None),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (name, token) in attacks {
        let response = app.get_with_token("/v1/auth/me", &token).await;
        assert_eq!(response.status(), 401, "{name}");
        problem(response, 401, "invalid_token").await;
    }

    let missing = app
        .client
        .get(app.url("/v1/auth/me"))
        .send()
        .await
        .expect("r");
    problem(missing, 401, "invalid_token").await;
    let basic = app
        .client
        .get(app.url("/v1/auth/me"))
        .basic_auth("victim", Some("pw"))
        .send()
        .await
        .expect("r");
    problem(basic, 401, "invalid_token").await;
    let patch = app
        .client
        .patch(app.url("/v1/users/me"))
        .json(&json!({"display_name": "x"}))
        .send()
        .await
        .expect("r");
    problem(patch, 401, "invalid_token").await;
}
