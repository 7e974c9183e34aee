//! The fake Replicate: predictions (by model or by version) with `webhook` and `Cancel-After`,
//! get and cancel, the account's webhook secret, and webhooks signed per Standard Webhooks.

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::{FakeProviders, Request, Webhook, response, standard_webhook};

impl FakeProviders {
    pub(super) fn prediction(&self, id: &str, request: &Request) -> Value {
        let mut prediction = json!({"id": id, "status": request.state, "input": request.input,
            "urls": {"get": format!("{}/replicate/v1/predictions/{id}", self.inner.base_url),
                     "cancel": format!("{}/replicate/v1/predictions/{id}/cancel", self.inner.base_url)}});
        match request.state {
            "succeeded" => {
                prediction["output"] = match self.made_file(id) {
                    Some((url, _)) => json!(url),
                    None => json!([self.file_url(id)]),
                }
            }
            "failed" => prediction["error"] = json!(self.behaviour().fail_with),
            "running" => prediction["status"] = json!("processing"),
            _ => {}
        }
        prediction
    }

    pub(super) fn replicate_webhook(
        &self,
        id: &str,
        request: &Request,
        failed: Option<&str>,
    ) -> anyhow::Result<Webhook> {
        let mut request = request.clone();
        request.state = if failed.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        let body = self.prediction(id, &request).to_string();
        standard_webhook(
            "POST",
            request.webhook.clone(),
            &self.inner.replicate_secret,
            body,
        )
    }

    pub(super) async fn replicate(
        &self,
        method: &str,
        rest: &str,
        body: &[u8],
    ) -> hyper::Response<Full<Bytes>> {
        if rest == "webhooks/default/secret" && method == "GET" {
            return response(200, &json!({"key": self.inner.replicate_secret}));
        }
        if let Some(tail) = rest.strip_prefix("predictions/") {
            let (id, action) = tail.split_once('/').unwrap_or((tail, ""));
            let Some(request) = self.request(id) else {
                return response(404, &json!({"detail": "Not found."}));
            };
            return match (method, action) {
                ("GET", "") => response(200, &self.prediction(id, &request)),
                ("POST", "cancel") => {
                    self.set_state(id, "canceled");
                    let request = self.request(id).unwrap_or(request);
                    response(200, &self.prediction(id, &request))
                }
                _ => response(405, &json!({"detail": "method not allowed"})),
            };
        }
        let creates = rest == "predictions"
            || (rest.starts_with("models/") && rest.ends_with("/predictions"));
        if !creates || method != "POST" {
            return response(404, &json!({"detail": "Not found."}));
        }
        if let Some(failure) = self.scripted_failure("replicate") {
            return failure;
        }
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if body["webhook_events_filter"] != json!(["completed"]) {
            return response(
                422,
                &json!({"detail": "expected webhook_events_filter [completed]"}),
            );
        }
        let id = format!("rp{}", &uuid::Uuid::new_v4().simple().to_string()[..18]);
        let webhook = body["webhook"].as_str().unwrap_or_default().to_owned();
        self.accept("replicate", &id, webhook, body["input"].clone());
        let request = self.request(&id);
        match request {
            Some(request) => {
                let mut prediction = self.prediction(&id, &request);
                prediction["status"] = json!("starting");
                response(201, &prediction)
            }
            None => response(500, &json!({"detail": "lost"})),
        }
    }
}
