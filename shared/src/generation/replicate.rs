//! Replicate's predictions API: create with `webhook` and `webhook_events_filter: ["completed"]`
//! and a `Cancel-After` bound, get, cancel; its webhooks are Standard Webhooks signed with the
//! account's secret (`GET /v1/webhooks/default/secret`).

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use crate::generation::providers::{
    Provider, ProviderError, Remote, RemoteFile, Submission, answer, url_strings,
};

/// A Replicate account: the API's base URL (`https://api.replicate.com`) and its token.
pub struct Replicate {
    pub http: reqwest::Client,
    pub base: String,
    pub token: SecretString,
}

impl Replicate {
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(self.token.expose_secret())
    }

    /// The account's webhook signing secret.
    pub async fn webhook_secret(&self) -> Result<SecretString, ProviderError> {
        let answer = answer(
            self.authorized(
                self.http
                    .get(format!("{}/v1/webhooks/default/secret", self.base)),
            )
            .send()
            .await?,
        )
        .await?;
        answer["key"]
            .as_str()
            .map(|key| SecretString::from(key.to_owned()))
            .ok_or_else(|| ProviderError::Rejected("the answer has no key".into()))
    }
}

impl Provider for Replicate {
    async fn submit(&self, submission: &Submission<'_>) -> Result<String, ProviderError> {
        // `owner/name:version` runs that version; `owner/name` the model's latest.
        let (url, mut body) = match submission.model.split_once(':') {
            Some((_, version)) => (
                format!("{}/v1/predictions", self.base),
                json!({ "version": version }),
            ),
            None => (
                format!("{}/v1/models/{}/predictions", self.base, submission.model),
                json!({}),
            ),
        };
        body["input"] = submission.input.clone();
        body["webhook"] = json!(submission.webhook_url);
        body["webhook_events_filter"] = json!(["completed"]);
        let answer = answer(
            self.authorized(self.http.post(url))
                .header(
                    "cancel-after",
                    format!("{}s", submission.run_for.as_secs().max(5)),
                )
                .json(&body)
                .send()
                .await?,
        )
        .await?;
        answer["id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= 200)
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Rejected("the answer names no prediction id".into()))
    }

    async fn status(&self, _model: &str, request_id: &str) -> Result<Remote, ProviderError> {
        let prediction = answer(
            self.authorized(
                self.http
                    .get(format!("{}/v1/predictions/{request_id}", self.base)),
            )
            .send()
            .await?,
        )
        .await?;
        Ok(outcome(&prediction))
    }

    async fn cancel(&self, _model: &str, request_id: &str) -> Result<(), ProviderError> {
        answer(
            self.authorized(
                self.http
                    .post(format!("{}/v1/predictions/{request_id}/cancel", self.base)),
            )
            .send()
            .await?,
        )
        .await
        .map(|_| ())
    }
}

/// Where a prediction stands, from its document (a webhook's body or a GET).
pub fn outcome(prediction: &Value) -> Remote {
    match prediction["status"].as_str() {
        Some("succeeded") => {
            let mut files: Vec<RemoteFile> = Vec::new();
            url_strings(&prediction["output"], &mut files);
            Remote::Succeeded {
                files,
                result: prediction["output"].clone(),
            }
        }
        Some("failed") => Remote::Failed {
            message: prediction["error"]
                .as_str()
                .unwrap_or("the prediction failed")
                .to_owned(),
        },
        Some("canceled" | "aborted") => Remote::Canceled,
        _ => Remote::Running { progress: None },
    }
}
