//! fal.ai's queue API: submit with `fal_webhook`, status, result, cancel; and the verification of
//! its webhooks (Ed25519 over request id, user id, timestamp and the body's SHA-256, against the
//! keys of fal's JWKS).

use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::generation::providers::{
    Provider, ProviderError, Remote, RemoteFile, Submission, answer, file_objects,
};

/// A fal.ai account: the queue's base URL (`https://queue.fal.run`) and its API key.
pub struct Fal {
    pub http: reqwest::Client,
    pub base: String,
    pub key: SecretString,
}

/// `owner/alias` of a model id such as `fal-ai/flux/dev`: the queue's status, result and cancel
/// URLs name the app, not the path within it.
fn app_of(model: &str) -> &str {
    let mut cut = model.match_indices('/').map(|(i, _)| i);
    match (cut.next(), cut.next()) {
        (Some(_), Some(second)) => &model[..second],
        _ => model,
    }
}

impl Fal {
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header("authorization", format!("Key {}", self.key.expose_secret()))
    }

    fn request_url(&self, model: &str, request_id: &str, tail: &str) -> String {
        format!(
            "{}/{}/requests/{request_id}{tail}",
            self.base,
            app_of(model)
        )
    }
}

impl Provider for Fal {
    async fn submit(&self, submission: &Submission<'_>) -> Result<String, ProviderError> {
        let mut url = url::Url::parse(&format!("{}/{}", self.base, submission.model))
            .map_err(|e| ProviderError::Rejected(format!("bad model id: {e}")))?;
        url.query_pairs_mut()
            .append_pair("fal_webhook", submission.webhook_url);
        let answer = answer(
            self.authorized(self.http.post(url))
                // Seconds the request may wait to start; an abandoned request is not billed.
                .header(
                    "x-fal-request-timeout",
                    submission.run_for.as_secs().max(1).to_string(),
                )
                .json(submission.input)
                .send()
                .await?,
        )
        .await?;
        answer["request_id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= 200)
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Rejected("the answer names no request_id".into()))
    }

    async fn status(&self, model: &str, request_id: &str) -> Result<Remote, ProviderError> {
        let status = answer(
            self.authorized(
                self.http
                    .get(self.request_url(model, request_id, "/status")),
            )
            .send()
            .await?,
        )
        .await?;
        match status["status"].as_str() {
            Some("COMPLETED") => {}
            _ => return Ok(Remote::Running { progress: None }),
        }
        // A failed request's result answers with its error.
        match answer(
            self.authorized(self.http.get(self.request_url(model, request_id, "")))
                .send()
                .await?,
        )
        .await
        {
            Ok(payload) => Ok(succeeded(payload)),
            Err(ProviderError::Rejected(message)) => Ok(Remote::Failed { message }),
            Err(err) => Err(err),
        }
    }

    async fn cancel(&self, model: &str, request_id: &str) -> Result<(), ProviderError> {
        let response = self
            .authorized(
                self.http
                    .put(self.request_url(model, request_id, "/cancel")),
            )
            .send()
            .await?;
        // 400 means it already completed: nothing left to stop.
        if response.status().as_u16() == 400 {
            return Ok(());
        }
        answer(response).await.map(|_| ())
    }
}

/// A completed request's payload: its files are fal File objects (`{url, content_type}`).
pub fn succeeded(payload: Value) -> Remote {
    let mut files: Vec<RemoteFile> = Vec::new();
    file_objects(&payload, &mut files);
    Remote::Succeeded {
        files,
        result: payload,
    }
}

/// What fal's webhook reports, from its body.
pub fn webhook_outcome(body: &Value) -> Remote {
    match body["status"].as_str() {
        Some("OK") => succeeded(body["payload"].clone()),
        _ => {
            let message = body["error"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| body["payload"]["detail"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "the provider reported an error".into());
            Remote::Failed { message }
        }
    }
}

/// How far a webhook's timestamp may be from now.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// Why a fal webhook was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FalSignatureError {
    #[error("missing or malformed header {0}")]
    Header(&'static str),
    #[error("the timestamp is more than five minutes off")]
    Stale,
    #[error("no key of fal's JWKS made this signature")]
    Invalid,
}

/// The Ed25519 public keys (`kty: OKP, crv: Ed25519`) of a JWKS document.
pub fn jwks_keys(jwks: &Value) -> Vec<Vec<u8>> {
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kty"] == "OKP" && k["crv"] == "Ed25519")
        .filter_map(|k| k["x"].as_str())
        .filter_map(|x| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .ok()
        })
        .filter(|key| key.len() == 32)
        .collect()
}

/// The cheap checks, before any key is fetched: the headers are there and the timestamp is recent.
pub fn precheck(headers: &http::HeaderMap, now: i64) -> Result<(), FalSignatureError> {
    for name in [
        "x-fal-webhook-request-id",
        "x-fal-webhook-user-id",
        "x-fal-webhook-signature",
    ] {
        if headers.get(name).is_none_or(|v| v.is_empty()) {
            return Err(FalSignatureError::Header(name));
        }
    }
    let sent: i64 = headers
        .get("x-fal-webhook-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or(FalSignatureError::Header("x-fal-webhook-timestamp"))?;
    if (now - sent).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(FalSignatureError::Stale);
    }
    Ok(())
}

/// Verifies a fal webhook: the message `"{request_id}\n{user_id}\n{timestamp}\n{hex(sha256(body))}"`
/// signed (hex Ed25519) by any of `keys`, and its timestamp within five minutes of `now`.
pub fn verify(
    headers: &http::HeaderMap,
    body: &[u8],
    keys: &[Vec<u8>],
    now: i64,
) -> Result<(), FalSignatureError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(FalSignatureError::Header(name))
    };
    let request_id = header("x-fal-webhook-request-id")?;
    let user_id = header("x-fal-webhook-user-id")?;
    let timestamp = header("x-fal-webhook-timestamp")?;
    let signature = hex::decode(header("x-fal-webhook-signature")?)
        .map_err(|_| FalSignatureError::Header("x-fal-webhook-signature"))?;
    let sent: i64 = timestamp
        .parse()
        .map_err(|_| FalSignatureError::Header("x-fal-webhook-timestamp"))?;
    if (now - sent).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(FalSignatureError::Stale);
    }
    let message = format!(
        "{request_id}\n{user_id}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let valid = keys.iter().any(|key| {
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, key)
            .verify(message.as_bytes(), &signature)
            .is_ok()
    });
    if valid {
        Ok(())
    } else {
        Err(FalSignatureError::Invalid)
    }
}

/// How long fal's JWKS is trusted before it is fetched again (fal: at most 24 hours).
pub const JWKS_TTL: Duration = Duration::from_secs(6 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};

    fn keypair() -> Ed25519KeyPair {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
    }

    fn signed(pair: &Ed25519KeyPair, body: &[u8], timestamp: i64) -> http::HeaderMap {
        let message = format!(
            "req-1\nuser-1\n{timestamp}\n{}",
            hex::encode(Sha256::digest(body))
        );
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("x-fal-webhook-request-id", "req-1".to_owned()),
            ("x-fal-webhook-user-id", "user-1".to_owned()),
            ("x-fal-webhook-timestamp", timestamp.to_string()),
            (
                "x-fal-webhook-signature",
                hex::encode(pair.sign(message.as_bytes()).as_ref()),
            ),
        ] {
            headers.insert(name, value.parse().expect("header"));
        }
        headers
    }

    #[test]
    fn signatures_are_checked_against_every_key_and_the_clock() {
        let (pair, other) = (keypair(), keypair());
        let keys = vec![
            other.public_key().as_ref().to_vec(),
            pair.public_key().as_ref().to_vec(),
        ];
        let body = br#"{"status":"OK"}"#;
        assert_eq!(
            verify(&signed(&pair, body, 1000), body, &keys, 1100),
            Ok(())
        );
        assert_eq!(
            verify(&signed(&pair, body, 1000), b"{}", &keys, 1100),
            Err(FalSignatureError::Invalid)
        );
        assert_eq!(
            verify(&signed(&pair, body, 1000), body, &keys[..1], 1100),
            Err(FalSignatureError::Invalid)
        );
        assert_eq!(
            verify(&signed(&pair, body, 1000), body, &keys, 1301),
            Err(FalSignatureError::Stale)
        );
        assert_eq!(
            verify(&http::HeaderMap::new(), body, &keys, 1000),
            Err(FalSignatureError::Header("x-fal-webhook-request-id"))
        );
    }

    #[test]
    fn status_urls_name_the_app() {
        assert_eq!(app_of("fal-ai/flux/dev"), "fal-ai/flux");
        assert_eq!(app_of("fal-ai/fast-sdxl"), "fal-ai/fast-sdxl");
    }

    #[test]
    fn jwks_keys_are_the_ed25519_ones() {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}, {"kty": "RSA", "n": "AQAB"}]});
        assert_eq!(jwks_keys(&jwks), vec![vec![7u8; 32]]);
    }
}
