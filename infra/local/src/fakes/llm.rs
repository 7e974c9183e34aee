//! A local OpenAI-compatible chat completions server that streams: `POST /v1/chat/completions`
//! (Bearer key) and fal's route to the same (`/fal/openrouter/router/openai/v1/chat/completions`,
//! `Key` key). With `stream: true` it answers Server-Sent Events, a `chat.completion.chunk` per
//! word after a first-token delay, then (with `stream_options.include_usage`) a usage chunk and
//! `data: [DONE]`; without, one `chat.completion`. Tests script its reply, its delays, a refusal
//! before the stream, or an error in the middle of it, and read the conversations it was sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use lambent::http::ChannelBody;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What the fake LLM does; tests change it between steps.
#[derive(Clone, Debug)]
pub struct LlmBehaviour {
    /// The key OpenAI-compatible requests must bear (the provider keys' `llm_api_key`).
    pub key: String,
    /// The key fal's route wants (`fal_key`).
    pub fal_key: String,
    /// The reply; `None`: "You said: <the last user message>".
    pub reply: Option<String>,
    /// Before the first piece.
    pub first_token_delay: Duration,
    /// Between pieces.
    pub token_delay: Duration,
    /// After this many pieces, an error event and the end of the stream (no `[DONE]`).
    pub fail_after: Option<usize>,
    /// Statuses to answer the next requests with, one each, before any stream.
    pub refusals: VecDeque<u16>,
    /// Leave out the usage chunk.
    pub no_usage: bool,
}

impl Default for LlmBehaviour {
    fn default() -> Self {
        Self {
            key: String::new(),
            fal_key: String::new(),
            reply: None,
            first_token_delay: Duration::from_millis(50),
            token_delay: Duration::from_millis(20),
            fail_after: None,
            refusals: VecDeque::new(),
            no_usage: false,
        }
    }
}

/// A request the fake LLM answered.
#[derive(Clone, Debug)]
pub struct LlmRequest {
    pub model: String,
    /// `(role, content)` of each message, in order.
    pub messages: Vec<(String, String)>,
    pub max_tokens: Option<i64>,
    /// Through fal's route.
    pub via_fal: bool,
}

#[derive(Default)]
struct Shared {
    behaviour: Mutex<LlmBehaviour>,
    requests: Mutex<Vec<LlmRequest>>,
}

/// The fake LLM server.
#[derive(Clone)]
pub struct FakeLlm {
    base_url: String,
    shared: Arc<Shared>,
}

/// The fake's token count of a text: a quarter of its bytes, rounded up (never more than the
/// byte count Lambent bounds a reply's estimate with).
pub fn tokens(text: &str) -> i64 {
    i64::try_from(text.len().div_ceil(4)).unwrap_or(i64::MAX)
}

impl FakeLlm {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let fake = Self {
            base_url: format!("http://{}", listener.local_addr()?),
            shared: Arc::new(Shared::default()),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.answer(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(fake)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `LLM_API_URL` and `FAL_LLM_URL` pointing here.
    pub fn overrides(&self) -> Vec<(String, String)> {
        vec![
            ("LLM_API_URL".into(), format!("{}/v1", self.base_url)),
            (
                "FAL_LLM_URL".into(),
                format!("{}/fal/openrouter/router/openai/v1", self.base_url),
            ),
        ]
    }

    pub fn configure(&self, change: impl FnOnce(&mut LlmBehaviour)) {
        if let Ok(mut behaviour) = self.shared.behaviour.lock() {
            change(&mut behaviour);
        }
    }

    /// What it was asked, oldest first.
    pub fn requests(&self) -> Vec<LlmRequest> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    async fn answer(&self, req: hyper::Request<Incoming>) -> hyper::Response<ChannelBody> {
        let (parts, body) = req.into_parts();
        let behaviour = self
            .shared
            .behaviour
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        let authorization = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let via_fal = match parts.uri.path() {
            "/v1/chat/completions" => false,
            "/fal/openrouter/router/openai/v1/chat/completions" => true,
            _ => return json_answer(404, &json!({"error": {"message": "no such route"}})),
        };
        let authorized = if via_fal {
            !behaviour.fal_key.is_empty() && authorization == format!("Key {}", behaviour.fal_key)
        } else {
            !behaviour.key.is_empty() && authorization == format!("Bearer {}", behaviour.key)
        };
        if !authorized {
            return json_answer(
                401,
                &json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
            );
        }
        let Ok(body) = Limited::new(body, 4 * 1024 * 1024).collect().await else {
            return json_answer(413, &json!({"error": {"message": "too large"}}));
        };
        let Ok(request) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
            return json_answer(400, &json!({"error": {"message": "not JSON"}}));
        };
        let refusal = self
            .shared
            .behaviour
            .lock()
            .ok()
            .and_then(|mut b| b.refusals.pop_front());
        let messages: Vec<(String, String)> = request["messages"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|m| {
                        (
                            m["role"].as_str().unwrap_or_default().to_owned(),
                            m["content"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let model = request["model"].as_str().unwrap_or_default().to_owned();
        if let Ok(mut requests) = self.shared.requests.lock() {
            requests.push(LlmRequest {
                model: model.clone(),
                messages: messages.clone(),
                max_tokens: request["max_tokens"].as_i64(),
                via_fal,
            });
        }
        if let Some(status) = refusal {
            let mut answer = json_answer(
                status,
                &json!({"error": {"message": "scripted refusal", "type": "server_error"}}),
            );
            if status == 429
                && let Ok(value) = "1".parse()
            {
                answer.headers_mut().insert("retry-after", value);
            }
            return answer;
        }
        let reply = behaviour.reply.clone().unwrap_or_else(|| {
            let last = messages
                .iter()
                .rev()
                .find(|(role, _)| role == "user")
                .map(|(_, content)| content.as_str())
                .unwrap_or_default();
            format!("You said: {last}")
        });
        // Words, each with the space before it: the pieces add up to the reply exactly.
        let mut pieces: Vec<String> = Vec::new();
        for (i, word) in reply.split(' ').enumerate() {
            pieces.push(if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            });
        }
        pieces.retain(|p| !p.is_empty());
        let prompt_tokens: i64 = messages.iter().map(|(_, c)| tokens(c) + 3).sum();
        let completion_tokens = tokens(&reply);
        let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
        if request["stream"].as_bool() != Some(true) {
            return json_answer(
                200,
                &json!({"id": id, "object": "chat.completion", "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens}}),
            );
        }
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true)
            && !behaviour.no_usage;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        tokio::spawn(async move {
            let chunk = |delta: Value, finish: Value| {
                let event = json!({"id": id, "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                Bytes::from(format!("data: {event}\n\n"))
            };
            tokio::time::sleep(behaviour.first_token_delay).await;
            let _ = tx.send(Bytes::from_static(b": keep-alive\n\n"));
            let _ = tx.send(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            for (i, piece) in pieces.iter().enumerate() {
                if behaviour.fail_after == Some(i) {
                    let error =
                        json!({"error": {"message": "the model server failed", "code": 502}});
                    let _ = tx.send(Bytes::from(format!("data: {error}\n\n")));
                    return;
                }
                if i > 0 {
                    tokio::time::sleep(behaviour.token_delay).await;
                }
                if tx
                    .send(chunk(json!({"content": piece}), Value::Null))
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx.send(chunk(json!({}), json!("stop")));
            if include_usage {
                let usage = json!({"id": id, "object": "chat.completion.chunk", "model": model, "choices": [],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens}});
                let _ = tx.send(Bytes::from(format!("data: {usage}\n\n")));
            }
            let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
        });
        hyper::Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .body(ChannelBody(rx))
            .unwrap_or_else(|_| {
                hyper::Response::new(ChannelBody(tokio::sync::mpsc::unbounded_channel().1))
            })
    }
}

fn json_answer(status: u16, body: &Value) -> hyper::Response<ChannelBody> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = tx.send(Bytes::from(body.to_string()));
    let mut response = hyper::Response::new(ChannelBody(rx));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(value) = "application/json".parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}
