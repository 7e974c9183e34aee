//! Text generation at an OpenAI-compatible chat completions API (OpenAI, OpenRouter, vLLM, fal's
//! LLM endpoint): one streamed request per reply (`stream: true` with
//! `stream_options.include_usage`, so the last chunk carries the token counts the reply is
//! priced by). Server-Sent Events are read as they come and each piece of text is handed on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::LlmProvider;
use crate::state::State;

/// How a chat API is told who we are.
pub enum Authorization {
    /// `Authorization: Bearer <key>` (OpenAI and most compatible APIs).
    Bearer(SecretString),
    /// `Authorization: Key <key>` (fal).
    FalKey(SecretString),
}

/// An OpenAI-compatible chat completions API.
pub struct Chat {
    pub http: reqwest::Client,
    /// The API's base, to which `/chat/completions` is appended.
    pub base: String,
    pub authorization: Authorization,
}

/// One message of the conversation sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
}

/// The token counts the provider reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// Why a chat API call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// 429, 408, 5xx, a timeout or a broken connection: worth another attempt.
    #[error("the chat provider is unavailable: {0}")]
    Transient(String),
    /// Any other refusal (the model, the key, the input): another attempt would fail too.
    #[error("the chat provider refused the request: {0}")]
    Rejected(String),
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl From<reqwest::Error> for ProviderError {
    fn from(err: reqwest::Error) -> Self {
        Self::Transient(err.without_url().to_string())
    }
}

/// The most bytes of an error answer read (for the log).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Sorts a refusal by its status, its body's start kept for the log.
async fn refusal(response: reqwest::Response) -> ProviderError {
    let status = response.status();
    let body = crate::http::read_limited(response, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
    let text = format!("{status}: {}", text.replace(['\n', '\r'], " "));
    if status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error() {
        ProviderError::Transient(text)
    } else {
        ProviderError::Rejected(text)
    }
}

/// The chat keys of the provider keys secret.
#[derive(Deserialize)]
struct Keys {
    llm_api_key: Option<SecretString>,
    fal_key: Option<SecretString>,
}

/// The keys, read once per process; the root installs one per [`State`].
#[derive(Default)]
pub struct Runtime {
    keys: tokio::sync::OnceCell<Arc<Keys>>,
}

/// Why no chat adapter could be made.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("{0} is not configured in this deployment")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Keys(#[from] anyhow::Error),
}

/// The adapter of a model's provider, with its key.
pub async fn adapter(state: &State, provider: LlmProvider) -> Result<Chat, Unavailable> {
    let id = state
        .config
        .generation
        .provider_keys_secret_id
        .as_deref()
        .ok_or(Unavailable::NotConfigured("PROVIDER_KEYS_SECRET_ID"))?;
    let keys = state
        .feature::<Runtime>()?
        .keys
        .get_or_try_init(|| async {
            let text = state.secret_string(id).await?;
            serde_json::from_str::<Keys>(text.expose_secret())
                .map(Arc::new)
                .context("the provider keys secret is not the expected JSON")
        })
        .await?;
    let present = |key: &Option<SecretString>, name| {
        key.clone()
            .filter(|k| !k.expose_secret().trim().is_empty())
            .ok_or(Unavailable::NotConfigured(name))
    };
    let chat = &state.config.chat;
    Ok(match provider {
        LlmProvider::OpenAi => Chat {
            http: state.http.api.clone(),
            base: chat.openai_url.clone(),
            authorization: Authorization::Bearer(present(&keys.llm_api_key, "llm_api_key")?),
        },
        LlmProvider::Fal => Chat {
            http: state.http.api.clone(),
            base: chat.fal_url.clone(),
            authorization: Authorization::FalKey(present(&keys.fal_key, "fal_key")?),
        },
    })
}

/// Why a streamed reply stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Refused or failed before any text (the request may be tried again if retryable).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The stream broke or the provider reported an error after text had come.
    #[error("the reply broke off: {0}")]
    Broken(String),
}

/// The longest quiet between two pieces of a stream.
const IDLE: Duration = Duration::from_secs(60);

/// The most bytes of one SSE line (a chunk of a reply is far smaller).
const MAX_LINE: usize = 256 * 1024;

impl Chat {
    /// Asks for a streamed reply of `model` to `turns`; read it with [`ReplyStream::next`].
    /// `run_for` bounds the whole request.
    pub async fn open(
        &self,
        model: &str,
        turns: &[Turn],
        max_tokens: i64,
        run_for: Duration,
    ) -> Result<ReplyStream, ChatError> {
        let messages: Vec<Value> = turns
            .iter()
            .map(|t| json!({"role": t.role, "content": t.content}))
            .collect();
        let body = json!({
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let authorization = match &self.authorization {
            Authorization::Bearer(key) => format!("Bearer {}", key.expose_secret()),
            Authorization::FalKey(key) => format!("Key {}", key.expose_secret()),
        };
        let response = self
            .http
            .post(format!("{}/chat/completions", self.base))
            .header("authorization", authorization)
            .header("accept", "text/event-stream")
            .timeout(run_for)
            .json(&body)
            .send()
            .await
            .map_err(ProviderError::from)?;
        if !response.status().is_success() {
            return Err(refusal(response).await.into());
        }
        Ok(ReplyStream {
            response,
            pending: Vec::new(),
            queued: std::collections::VecDeque::new(),
            text: String::new(),
            usage: None,
            done: false,
        })
    }
}

/// A reply as it streams.
pub struct ReplyStream {
    response: reqwest::Response,
    pending: Vec<u8>,
    queued: std::collections::VecDeque<String>,
    text: String,
    usage: Option<Usage>,
    done: bool,
}

impl ReplyStream {
    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The token counts, once the provider sent them (with the last chunk).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn broken(&self, reason: String) -> ChatError {
        if self.text.is_empty() {
            ChatError::Provider(ProviderError::Transient(reason))
        } else {
            ChatError::Broken(reason)
        }
    }

    /// The next piece of text; `None` once the provider said `[DONE]`.
    pub async fn next(&mut self) -> Result<Option<String>, ChatError> {
        loop {
            if let Some(piece) = self.queued.pop_front() {
                return Ok(Some(piece));
            }
            if self.done {
                return Ok(None);
            }
            while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                self.line(&String::from_utf8_lossy(&line))?;
                if self.done {
                    break;
                }
            }
            if !self.queued.is_empty() || self.done {
                continue;
            }
            if self.pending.len() > MAX_LINE {
                return Err(self.broken("an event longer than 256 KiB".into()));
            }
            let chunk = match tokio::time::timeout(IDLE, self.response.chunk()).await {
                Err(_) => return Err(self.broken("the stream went quiet".into())),
                Ok(Err(err)) => return Err(self.broken(err.without_url().to_string())),
                Ok(Ok(None)) => return Err(self.broken("the stream ended before [DONE]".into())),
                Ok(Ok(Some(chunk))) => chunk,
            };
            self.pending.extend_from_slice(&chunk);
        }
    }

    /// Reads one line of the event stream.
    fn line(&mut self, line: &str) -> Result<(), ChatError> {
        let line = line.trim_end_matches(['\n', '\r']);
        let Some(data) = line.strip_prefix("data:") else {
            // Comments (`: keep-alive`), `event:` and `id:` lines, blank separators.
            return Ok(());
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let event: Value = serde_json::from_str(data)
            .map_err(|err| self.broken(format!("an event that is not JSON: {err}")))?;
        if let Some(error) = event.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("an error");
            let message: String = message.chars().take(300).collect();
            return Err(if self.text.is_empty() {
                ChatError::Provider(ProviderError::Rejected(message))
            } else {
                ChatError::Broken(message)
            });
        }
        if let Some(counts) = event.get("usage").filter(|u| u.is_object()) {
            let count = |name: &str| counts.get(name).and_then(Value::as_i64).unwrap_or(0).max(0);
            self.usage = Some(Usage {
                input_tokens: count("prompt_tokens"),
                output_tokens: count("completion_tokens"),
            });
        }
        let piece = event
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !piece.is_empty() {
            self.text.push_str(piece);
            self.queued.push_back(piece.to_owned());
        }
        Ok(())
    }
}

/// Credits for `usage` at a model's prices per 1,000 tokens, rounded up.
pub fn price(usage: Usage, input_per_1k: i64, output_per_1k: i64) -> i64 {
    let milli = usage
        .input_tokens
        .saturating_mul(input_per_1k)
        .saturating_add(usage.output_tokens.saturating_mul(output_per_1k));
    milli.saturating_add(999) / 1000
}

/// An upper bound of the tokens `text` takes for a byte-level tokenizer (every BPE in use: at
/// most one token per UTF-8 byte), plus a message's framing.
pub fn tokens_at_most(text: &str) -> i64 {
    i64::try_from(text.len()).unwrap_or(i64::MAX / 2) + 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_round_up_per_thousand() {
        let usage = Usage {
            input_tokens: 1500,
            output_tokens: 10,
        };
        assert_eq!(price(usage, 1, 2), 2);
        assert_eq!(price(Usage::default(), 1, 2), 0);
        assert_eq!(
            price(
                Usage {
                    input_tokens: 1000,
                    output_tokens: 0
                },
                1,
                2
            ),
            1
        );
    }
}
