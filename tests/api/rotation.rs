//! The signing keys rotate through Secrets Manager's four steps, and the new key is published at
//! once while the old one keeps signing until API Gateway has seen the new one.

use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
use lambent::auth::keys::{KeyRing, PUBLISH_AHEAD};
use lambent::auth::rotation::step;
use lambent_local::repo_root;
use secrecy::SecretString;

use crate::app::TestApp;

fn event(step: &str, secret_id: &str, token: &str) -> SecretsManagerSecretRotationEvent {
    let mut event: SecretsManagerSecretRotationEvent = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("events/rotate-signing-key.json"))
            .expect("sample event"),
    )
    .expect("the sample event has the rotation shape");
    event.step = step.to_owned();
    event.secret_id = secret_id.to_owned();
    event.client_request_token = token.to_owned();
    event
}

async fn rotate(secrets: &aws_sdk_secretsmanager::Client, id: &str, now: i64) -> String {
    let token = uuid::Uuid::new_v4().to_string();
    for name in [
        "createSecret",
        "createSecret",
        "setSecret",
        "testSecret",
        "finishSecret",
    ] {
        step(secrets, &event(name, id, &token), now)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    token
}

async fn current(secrets: &aws_sdk_secretsmanager::Client, id: &str) -> KeyRing {
    let out = secrets
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .expect("current");
    KeyRing::from_secret(&SecretString::from(out.secret_string.expect("value")))
        .expect("usable keys")
}

fn claims(iat: i64) -> lambent::auth::keys::AccessClaims {
    lambent::auth::keys::AccessClaims {
        iss: "i".into(),
        sub: "s".into(),
        aud: "a".into(),
        exp: iat + 60,
        nbf: iat,
        iat,
        jti: "j".into(),
        username: "u".into(),
        role: "user".into(),
        scope: "user".into(),
    }
}

#[tokio::test]
async fn a_rotation_publishes_a_new_key_and_keeps_the_one_in_force() {
    let app = TestApp::spawn().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&app.running.sdk);
    let id = &app.running.stack.refs["SigningKey"];
    let now = chrono::Utc::now().timestamp();

    let token = rotate(&secrets, id, now).await;
    let ring = current(&secrets, id).await;
    let kids = ring.kids();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(kids[1], "local-1", "the key in force is kept");
    assert!(kids[0].ends_with(&token.replace('-', "")[..8]), "{kids:?}");

    let versions = secrets
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .expect("describe");
    let stages = versions.version_ids_to_stages.expect("stages");
    assert!(stages[&token].iter().any(|s| s == "AWSCURRENT"));
    // A repeated finishSecret for a version already current does nothing.
    step(&secrets, &event("finishSecret", id, &token), now)
        .await
        .expect("idempotent");

    // The old key signs now; the new one once API Gateway has had time to fetch it.
    let kid_at = |iat| {
        jsonwebtoken::decode_header(ring.sign(&claims(iat)).expect("sign"))
            .expect("h")
            .kid
            .expect("kid")
    };
    assert_eq!(kid_at(now), "local-1");
    assert_eq!(kid_at(now + PUBLISH_AHEAD), kids[0]);
}

#[tokio::test]
async fn the_first_rotation_of_an_empty_secret_creates_a_key_that_signs_at_once() {
    let app = TestApp::spawn().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&app.running.sdk);
    let id = format!("{}-empty", app.running.stack.refs["SigningKey"]);
    secrets
        .create_secret()
        .name(&id)
        .send()
        .await
        .expect("an empty secret, as the template creates it");
    let now = chrono::Utc::now().timestamp();

    rotate(&secrets, &id, now).await;
    let ring = current(&secrets, &id).await;
    assert_eq!(ring.kids().len(), 1);
    let token = ring.sign(&claims(now)).expect("sign");
    assert!(ring.verify(&token, "i", "a").is_ok());
}
