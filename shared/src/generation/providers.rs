//! The port every generation provider implements, and what the adapters share: answers sorted into
//! retryable and permanent, `Retry-After`, and bounded reads of provider responses.

use std::time::Duration;

use serde_json::Value;

use crate::generation::ai_server::AiServer;
use crate::generation::fal::Fal;
use crate::generation::replicate::Replicate;

pub use crate::domain::ProviderName;

/// One submission to a provider.
pub struct Submission<'a> {
    pub job_id: &'a str,
    pub model: &'a str,
    /// The provider's own input document.
    pub input: &'a Value,
    /// Where the provider reports (fal and Replicate: one URL; the AI server: a base to which it
    /// appends `/progress`, `/complete`, `/failed`).
    pub webhook_url: &'a str,
    /// How long the request may take before the provider should give up on it.
    pub run_for: Duration,
}

/// A file a provider produced, still at the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub url: String,
    pub content_type: Option<String>,
}

/// What a provider says about a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Remote {
    Running {
        progress: Option<u8>,
    },
    Succeeded {
        files: Vec<RemoteFile>,
        result: Value,
    },
    Failed {
        message: String,
    },
    Canceled,
}

/// Why a provider call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// 429: try again after `retry_after` (or a backoff).
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, a timeout or a broken connection: worth another attempt.
    #[error("the provider is unavailable: {0}")]
    Transient(String),
    /// Any other refusal (bad input, unknown model, bad key): another attempt would fail too.
    #[error("the provider refused the request: {0}")]
    Rejected(String),
}

/// What an owner is told when a provider refuses or fails a job: messages of ours, never the
/// provider's words (its error bodies can say anything, internal details included). Those are
/// logged with the job's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The provider refused the submission (input, model or this deployment's credentials).
    Refused,
    /// The provider ran the job and reported a failure.
    Failed,
}

impl Failure {
    pub fn message(self) -> &'static str {
        match self {
            Self::Refused => {
                "the provider refused the job (its input, model or this deployment's access)"
            }
            Self::Failed => "the provider could not complete the job",
        }
    }
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Rejected(_))
    }
}

impl From<reqwest::Error> for ProviderError {
    fn from(err: reqwest::Error) -> Self {
        // The URL may carry a webhook address with our job id; the error's kind is enough.
        let err = err.without_url();
        if err.is_decode() {
            Self::Rejected(format!("unreadable answer: {err}"))
        } else {
            Self::Transient(err.to_string())
        }
    }
}

/// The provider port: submit with a webhook, ask for status, cancel.
#[allow(async_fn_in_trait)]
pub trait Provider {
    /// Submits a request; returns the provider's request id.
    async fn submit(&self, submission: &Submission<'_>) -> Result<String, ProviderError>;
    /// Where a request stands.
    async fn status(&self, model: &str, request_id: &str) -> Result<Remote, ProviderError>;
    /// Asks the provider to stop a request (done or unknown requests are not an error).
    async fn cancel(&self, model: &str, request_id: &str) -> Result<(), ProviderError>;
}

/// The configured adapter of one provider.
pub enum Adapter {
    Fal(Fal),
    Replicate(Replicate),
    Ai(AiServer),
}

impl Provider for Adapter {
    async fn submit(&self, submission: &Submission<'_>) -> Result<String, ProviderError> {
        match self {
            Self::Fal(p) => p.submit(submission).await,
            Self::Replicate(p) => p.submit(submission).await,
            Self::Ai(p) => p.submit(submission).await,
        }
    }

    async fn status(&self, model: &str, request_id: &str) -> Result<Remote, ProviderError> {
        match self {
            Self::Fal(p) => p.status(model, request_id).await,
            Self::Replicate(p) => p.status(model, request_id).await,
            Self::Ai(p) => p.status(model, request_id).await,
        }
    }

    async fn cancel(&self, model: &str, request_id: &str) -> Result<(), ProviderError> {
        match self {
            Self::Fal(p) => p.cancel(model, request_id).await,
            Self::Replicate(p) => p.cancel(model, request_id).await,
            Self::Ai(p) => p.cancel(model, request_id).await,
        }
    }
}

/// The largest provider answer read (a status or a result document; files are fetched apart).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Reads a provider's answer: a JSON document for 2xx, an error sorted by status otherwise.
pub async fn answer(response: reqwest::Response) -> Result<Value, ProviderError> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.min(3600)));
    let body = read_limited(response, MAX_ANSWER_BYTES).await?;
    if status.as_u16() == 429 {
        return Err(ProviderError::RateLimited { retry_after });
    }
    if status.is_server_error() || status.as_u16() == 408 {
        return Err(ProviderError::Transient(format!(
            "{status}: {}",
            snippet(&body)
        )));
    }
    if !status.is_success() {
        return Err(ProviderError::Rejected(format!(
            "{status}: {}",
            snippet(&body)
        )));
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body)
        .map_err(|err| ProviderError::Rejected(format!("the answer is not JSON: {err}")))
}

/// Reads at most `limit` bytes of a body; a longer body is an error.
pub async fn read_limited(
    response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ProviderError> {
    crate::http::read_limited(response, limit)
        .await
        .map_err(|err| match err {
            crate::http::ReadError::TooLarge(_) => ProviderError::Rejected(err.to_string()),
            crate::http::ReadError::Transport(err) => err.into(),
        })
}

/// The start of a provider's error body, for messages and logs.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(300).collect();
    text.replace(['\n', '\r'], " ")
}

/// fal's output fields that hold File objects (`{url, content_type?, …}`) or lists of them, as
/// its model families define them: image models `images` (and `image`), video models `video`,
/// audio models `audio_file` / `audio`. Nothing else in a payload is fetched.
pub const FAL_FILE_FIELDS: &[&str] = &["images", "image", "video", "audio_file", "audio"];

/// The files of a fal payload: the File objects of [`FAL_FILE_FIELDS`] at its top level, in
/// that order, with their `content_type` when given.
pub fn file_objects(value: &Value, found: &mut Vec<RemoteFile>) {
    let file = |item: &Value| {
        let url = item.get("url")?.as_str().filter(|url| is_http(url))?;
        Some(RemoteFile {
            url: url.to_owned(),
            content_type: item
                .get("content_type")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    };
    for field in FAL_FILE_FIELDS {
        match value.get(field) {
            Some(Value::Array(items)) => found.extend(items.iter().filter_map(file)),
            Some(item @ Value::Object(_)) => found.extend(file(item)),
            _ => {}
        }
    }
}

/// The files of a Replicate prediction's `output`, as its file-producing models define it: one
/// URL, or a list of URLs. URLs elsewhere (inside objects, in text) are not fetched.
pub fn url_strings(value: &Value, found: &mut Vec<RemoteFile>) {
    let url = |item: &Value| {
        let url = item.as_str().filter(|url| is_http(url))?;
        Some(RemoteFile {
            url: url.to_owned(),
            content_type: None,
        })
    };
    match value {
        Value::Array(items) => found.extend(items.iter().filter_map(url)),
        single => found.extend(url(single)),
    }
}

fn is_http(text: &str) -> bool {
    text.starts_with("https://") || text.starts_with("http://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_are_found_where_each_provider_puts_them() {
        let mut fal = Vec::new();
        file_objects(
            &json!({"images": [{"url": "https://f/1.png", "content_type": "image/png"}, {"url": "https://f/2.png"}],
                    "prompt": "see https://example.com", "seed": 4,
                    "debug": {"url": "https://169.254.169.254/latest"},
                    "timings": [{"url": "http://10.0.0.1/"}]}),
            &mut fal,
        );
        assert_eq!(
            fal,
            [
                RemoteFile {
                    url: "https://f/1.png".into(),
                    content_type: Some("image/png".into())
                },
                RemoteFile {
                    url: "https://f/2.png".into(),
                    content_type: None
                },
            ]
        );
        let mut replicate = Vec::new();
        url_strings(
            &json!(["https://r/a.webp", "not a url", {"audio": "https://r/b.mp3"}]),
            &mut replicate,
        );
        let urls: Vec<_> = replicate.iter().map(|f| f.url.as_str()).collect();
        assert_eq!(urls, ["https://r/a.webp"], "only the list's own URLs");
        let mut single = Vec::new();
        url_strings(&json!("https://r/one.png"), &mut single);
        assert_eq!(single.len(), 1);
        let mut nested = Vec::new();
        url_strings(
            &json!({"meta": {"source": "http://10.0.0.1/"}}),
            &mut nested,
        );
        assert!(nested.is_empty(), "nothing inside objects");
        let mut video = Vec::new();
        file_objects(&json!({"video": {"url": "https://f/v.mp4"}}), &mut video);
        assert_eq!(video.len(), 1);
    }
}
