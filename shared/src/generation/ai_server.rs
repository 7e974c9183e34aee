//! This deployment's own AI servers (the Style License and SelfStar shape): a job is POSTed to
//! `{AI_SERVER_URL}/v1/jobs`, signed per Standard Webhooks with the shared secret so the server can
//! tell it is us; the server reports by signed webhooks to
//! `/v1/webhooks/ai/{job_id}/progress|complete|failed`, and answers `GET /v1/jobs/{id}` and
//! `POST /v1/jobs/{id}/cancel` for the reconciler.

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use crate::generation::providers::{
    Provider, ProviderError, Remote, RemoteFile, Submission, answer,
};

/// An AI server: its base URL and the secret both sides sign with.
pub struct AiServer {
    pub http: reqwest::Client,
    pub base: String,
    pub secret: SecretString,
}

/// The Standard Webhooks signer of a `whsec_…` (or bare base64) secret.
pub fn signer(secret: &SecretString) -> anyhow::Result<standardwebhooks::Webhook> {
    standardwebhooks::Webhook::new(secret.expose_secret())
        .map_err(|_| anyhow::anyhow!("the webhook secret is not whsec_ followed by base64"))
}

impl AiServer {
    /// A request carrying Standard Webhooks headers over `body`.
    fn signed(
        &self,
        request: reqwest::RequestBuilder,
        body: &[u8],
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let signer = signer(&self.secret).map_err(|e| ProviderError::Rejected(e.to_string()))?;
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let now = chrono::Utc::now().timestamp();
        let signature = signer
            .sign(&id, now, body)
            .map_err(|e| ProviderError::Rejected(e.to_string()))?;
        Ok(request
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_vec()))
    }
}

impl Provider for AiServer {
    async fn submit(&self, submission: &Submission<'_>) -> Result<String, ProviderError> {
        let base = submission.webhook_url;
        let body = json!({
            "job_id": submission.job_id,
            "model": submission.model,
            "input": submission.input,
            "deadline_seconds": submission.run_for.as_secs(),
            "webhooks": {
                "progress": format!("{base}/progress"),
                "complete": format!("{base}/complete"),
                "failed": format!("{base}/failed"),
            },
        })
        .to_string();
        let request = self.signed(
            self.http.post(format!("{}/v1/jobs", self.base)),
            body.as_bytes(),
        )?;
        let answer = answer(request.send().await?).await?;
        // The server may name the job its own way; ours serves otherwise.
        Ok(answer["id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= 200)
            .unwrap_or(submission.job_id)
            .to_owned())
    }

    async fn status(&self, _model: &str, request_id: &str) -> Result<Remote, ProviderError> {
        let request = self.signed(
            self.http.get(format!("{}/v1/jobs/{request_id}", self.base)),
            b"",
        )?;
        Ok(outcome(&answer(request.send().await?).await?))
    }

    async fn cancel(&self, _model: &str, request_id: &str) -> Result<(), ProviderError> {
        let request = self.signed(
            self.http
                .post(format!("{}/v1/jobs/{request_id}/cancel", self.base)),
            b"{}",
        )?;
        answer(request.send().await?).await.map(|_| ())
    }
}

/// The files of a completion: `outputs: [{url, content_type?}]`.
pub fn files(body: &Value) -> Vec<RemoteFile> {
    body["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let url = o["url"].as_str()?;
            (url.starts_with("https://") || url.starts_with("http://")).then(|| RemoteFile {
                url: url.to_owned(),
                content_type: o["content_type"].as_str().map(str::to_owned),
            })
        })
        .collect()
}

/// Where a job stands on the AI server, from `GET /v1/jobs/{id}`.
pub fn outcome(job: &Value) -> Remote {
    match job["status"].as_str() {
        Some("succeeded" | "completed") => Remote::Succeeded {
            files: files(job),
            result: job.get("result").cloned().unwrap_or(Value::Null),
        },
        Some("failed") => Remote::Failed {
            message: job["error"]
                .as_str()
                .unwrap_or("the AI server reported a failure")
                .to_owned(),
        },
        Some("canceled") => Remote::Canceled,
        _ => Remote::Running {
            progress: job["progress"]
                .as_u64()
                .and_then(|p| u8::try_from(p.min(100)).ok()),
        },
    }
}
