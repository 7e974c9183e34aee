//! The fake fal.ai queue: submissions at `/fal/{model}?fal_webhook=`, status, result and cancel at
//! the app's URL, and webhooks signed with Ed25519 over fal's documented message, its public key
//! served as a JWKS.

use aws_lc_rs::signature::Ed25519KeyPair;
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::{FakeProviders, Request, Webhook, response};

/// The fal account the local stack's keys belong to (`fal_user_id` in its ProviderKeys secret).
pub const FAL_USER_ID: &str = "local-fal-user";

/// fal's webhook headers for our account: Ed25519 over
/// `"{request_id}\n{user_id}\n{timestamp}\n{hex(sha256(body))}"`.
pub fn fal_headers(
    pair: &Ed25519KeyPair,
    request_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    fal_headers_of(pair, FAL_USER_ID, request_id, timestamp, body)
}

/// fal's webhook headers as fal signs them for the account `user_id`.
pub fn fal_headers_of(
    pair: &Ed25519KeyPair,
    user_id: &str,
    request_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let message = format!(
        "{request_id}\n{user_id}\n{timestamp}\n{}",
        hex::encode(sha2::Sha256::digest(body))
    );
    vec![
        ("x-fal-webhook-request-id".into(), request_id.into()),
        ("x-fal-webhook-user-id".into(), user_id.into()),
        ("x-fal-webhook-timestamp".into(), timestamp.to_string()),
        (
            "x-fal-webhook-signature".into(),
            hex::encode(pair.sign(message.as_bytes()).as_ref()),
        ),
    ]
}

impl FakeProviders {
    pub(super) fn fal_payload(&self, id: &str) -> Value {
        match self.made_file(id) {
            // Wan Animate's output; Stable Audio's.
            Some((url, "video/mp4")) => {
                json!({"video": {"url": url, "content_type": "video/mp4"}, "seed": 7})
            }
            Some((url, content_type)) => {
                json!({"audio_file": {"url": url, "content_type": content_type}, "seed": 7})
            }
            None => {
                json!({"images": [{"url": self.file_url(id), "content_type": "image/png", "width": 24, "height": 16}], "seed": 7})
            }
        }
    }

    pub(super) fn fal_webhook(&self, id: &str, request: &Request, failed: Option<&str>) -> Webhook {
        let body = match failed {
            Some(message) => json!({"request_id": id, "gateway_request_id": id, "status": "ERROR",
                "error": message, "payload": {"detail": message}}),
            None => json!({"request_id": id, "gateway_request_id": id, "status": "OK",
                "payload": self.fal_payload(id)}),
        }
        .to_string();
        Webhook {
            method: "POST".into(),
            url: request.webhook.clone(),
            headers: fal_headers(
                &self.inner.fal_pair,
                id,
                chrono::Utc::now().timestamp(),
                body.as_bytes(),
            ),
            body,
            answered: None,
        }
    }

    pub(super) async fn fal(
        &self,
        method: &str,
        rest: &str,
        query: &str,
        body: &[u8],
    ) -> hyper::Response<Full<Bytes>> {
        if let Some((_, tail)) = rest.split_once("/requests/") {
            let (id, action) = tail.split_once('/').unwrap_or((tail, ""));
            let Some(request) = self.request(id) else {
                return response(404, &json!({"detail": "no such request"}));
            };
            return match (method, action) {
                ("GET", "status") => response(
                    200,
                    &json!({"status": if request.state == "running" { "IN_PROGRESS" } else { "COMPLETED" }}),
                ),
                ("GET", "") if request.state == "succeeded" => response(200, &self.fal_payload(id)),
                ("GET", "") if request.state == "running" => {
                    response(400, &json!({"detail": "still running"}))
                }
                ("GET", "") => response(
                    422,
                    &json!({"detail": self.behaviour().fail_with.unwrap_or_else(|| "canceled".into())}),
                ),
                ("PUT", "cancel") => match self.set_state(id, "canceled") {
                    Some("running") => response(202, &json!({"status": "CANCELLATION_REQUESTED"})),
                    _ => response(400, &json!({"status": "ALREADY_COMPLETED"})),
                },
                _ => response(405, &json!({"detail": "method not allowed"})),
            };
        }
        if method != "POST" {
            return response(405, &json!({"detail": "method not allowed"}));
        }
        if let Some(failure) = self.scripted_failure("fal") {
            return failure;
        }
        let webhook = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "fal_webhook")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let id = uuid::Uuid::new_v4().to_string();
        let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.accept("fal", &id, webhook, input);
        let base = format!("{}/fal/{rest}/requests/{id}", self.inner.base_url);
        response(
            200,
            &json!({"request_id": id, "status_url": format!("{base}/status"), "response_url": base,
                "cancel_url": format!("{base}/cancel")}),
        )
    }
}
