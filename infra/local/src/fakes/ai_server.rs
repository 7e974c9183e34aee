//! The fake AI server (our own contract): it verifies our Standard-Webhooks-signed submissions and
//! reports progress, completion and failure with the shared secret.

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::{FakeProviders, Request, Webhook, response, standard_webhook};

impl FakeProviders {
    pub(super) fn ai_webhook(
        &self,
        request: &Request,
        report: &str,
        body: &Value,
    ) -> anyhow::Result<Webhook> {
        let method = if report == "progress" {
            "PATCH"
        } else {
            "POST"
        };
        let url = format!("{}/{report}", request.webhook);
        // Our contract: the signed body names the job and the report, bound to the URL.
        let mut body = body.clone();
        body["job_id"] = json!(request.webhook.rsplit('/').next().unwrap_or_default());
        body["type"] = json!(report);
        standard_webhook(method, url, &self.behaviour().ai_secret, body.to_string())
    }

    pub(super) async fn ai(
        &self,
        method: &str,
        rest: &str,
        body: &[u8],
    ) -> hyper::Response<Full<Bytes>> {
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() && method == "POST" {
            if let Some(failure) = self.scripted_failure("ai") {
                return failure;
            }
            let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(id) = body["job_id"].as_str() else {
                return response(422, &json!({"error": "job_id is required"}));
            };
            // Our webhooks' base: the progress URL without its last segment.
            let base = body["webhooks"]["progress"]
                .as_str()
                .and_then(|p| p.strip_suffix("/progress"))
                .unwrap_or_default()
                .to_owned();
            self.accept("ai", id, base, body["input"].clone());
            return response(202, &json!({"id": id}));
        }
        let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(request) = self.request(id) else {
            return response(404, &json!({"error": "no such job"}));
        };
        match (method, action) {
            ("GET", "") => {
                let mut job = json!({"id": id, "status": request.state});
                if request.state == "succeeded" {
                    job["outputs"] =
                        json!([{"url": self.file_url(id), "content_type": "image/png"}]);
                }
                response(200, &job)
            }
            ("POST", "cancel") => {
                self.set_state(id, "canceled");
                response(200, &json!({"id": id, "status": "canceled"}))
            }
            _ => response(405, &json!({"error": "method not allowed"})),
        }
    }
}
