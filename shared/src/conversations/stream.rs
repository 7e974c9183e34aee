//! The streaming function (a Lambda function URL with `InvokeMode: RESPONSE_STREAM`; API Gateway
//! HTTP APIs cannot stream): the same `POST /v1/sessions/{id}/messages` and
//! `POST /v1/sessions/{id}/messages/{message_id}/regenerate` as the API, answered with
//! Server-Sent Events while the reply is written, here, by the job the request admitted.
//!
//! A function URL has no JWT authorizer: the bearer token is checked here, with the same keys
//! and claims the authorizer checks. Events, in order:
//! - `accepted`: what the API's `202` says (`user_message`, `reply`, `job`);
//! - `delta`: `{"text"}`, each piece as the provider writes it;
//! - `done`: `{"reply", "job"}` once the reply is stored and the job released (its `charged`
//!   credits settled); or `error`: `{"type", "message", "reply", "job"}` when it failed (refunded);
//!   or `queued`: `{"job"}` when the worker took the job over (poll it).
//!
//! Refusals before the stream starts (a bad token, fields, credits, the job cap) are the API's
//! problem+json answers with their statuses. A client that leaves does not stop the reply: it
//! is stored and its job ends as usual.

use lambda_http::http::{self, StatusCode};
use lambda_http::{Body, Request};
use serde_json::{Value, json};

use crate::conversations::messages::{self, Ask, PostMessage};
use crate::conversations::replies;
use crate::error::ApiError;
use crate::http::{Caller, ChannelBody, json_body, sse_event};
use crate::state::State;

/// A streamed response.
pub type Streamed = http::Response<ChannelBody>;

/// Serves one request of the streaming function.
pub async fn handle(state: &'static State, req: Request) -> Streamed {
    let request_id = uuid::Uuid::new_v4().to_string();
    match start(state, req).await {
        Ok(response) => response,
        Err(err) => problem(err, &request_id),
    }
}

/// A problem+json answer, as a body of one chunk.
fn problem(err: ApiError, request_id: &str) -> Streamed {
    let (parts, body) = err.into_response(request_id).into_parts();
    let bytes = match body {
        Body::Text(text) => bytes::Bytes::from(text),
        Body::Binary(data) => bytes::Bytes::from(data),
        _ => bytes::Bytes::new(),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = tx.send(bytes);
    http::Response::from_parts(parts, ChannelBody(rx))
}

/// The caller of a bearer token, checked as the API's JWT authorizer checks it.
async fn caller(state: &State, req: &Request) -> Result<Caller, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let claims = state
        .bearer_claims(header, state.config.issuer()?, &state.config.audience)
        .await?;
    if claims.sub.is_empty() {
        return Err(ApiError::Unauthorized {
            code: "invalid_token",
            detail: "the access token names no account",
        });
    }
    Ok(Caller {
        user_id: claims.sub,
        role: claims.role,
    })
}

/// What a path asks for: a new message in a session, or a reply regenerated.
fn route(path: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix("/v1/sessions/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let id = |text: &str| uuid::Uuid::parse_str(text).ok().map(|_| text.to_owned());
    match parts.as_slice() {
        [session, "messages"] => Some((id(session)?, None)),
        [session, "messages", message, "regenerate"] => Some((id(session)?, Some(id(message)?))),
        _ => None,
    }
}

async fn start(state: &'static State, req: Request) -> Result<Streamed, ApiError> {
    let Some((session_id, regenerate)) = route(req.uri().path()) else {
        return Err(ApiError::NotFound("no such route"));
    };
    if req.method() != http::Method::POST {
        return Err(ApiError::MethodNotAllowed {
            allow: vec!["POST"],
        });
    }
    let caller = caller(state, &req).await?;
    let ask = match regenerate {
        None => Ask::New(json_body::<PostMessage>(&req, &["application/json"])?),
        Some(message_id) => Ask::Regenerate {
            message_id,
            body: messages::regenerate_body(&req)?,
        },
    };
    let (posted, entry) = messages::begin(state, &caller, &session_id, ask, true).await?;
    let entry = entry.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("a reply run here has its outbox entry"))
    })?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = tx.send(sse_event(
        "accepted",
        &serde_json::to_value(&posted).map_err(|e| ApiError::Internal(e.into()))?,
    ));
    let job_id = posted.job.id.clone();
    let reply_id = posted.reply.id.clone();
    tokio::spawn(async move {
        let (sink, mut pieces) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(text) = pieces.recv().await {
                    let _ = tx.send(sse_event("delta", &json!({ "text": text })));
                }
            })
        };
        let ran = crate::jobs::worker::run_here(state, &job_id, move |job, progress| {
            Box::pin(async move { replies::run(state, job, progress, Some(&sink)).await })
        })
        .await;
        // Every piece is out before the end is told.
        let _ = forward.await;
        let end = ending(state, &session_id, &reply_id, &job_id, ran).await;
        let _ = tx.send(end);
        hand_over(state, &job_id, &entry).await;
    });
    http::Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-job-id", posted.job.id.as_str())
        .body(ChannelBody(rx))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Settles the job's outbox entry: a job back in its queue (a retryable failure here) has its
/// message sent now, for the worker; any other is done with the entry.
async fn hand_over(state: &State, job_id: &str, entry: &crate::jobs::outbox::Entry) {
    let queued = match crate::jobs::store::get(&state.db, job_id).await {
        Ok(Some(job)) if job.status == crate::jobs::model::Status::InQueue => {
            state.registry.get(&job.kind).map(|kind| kind.queue)
        }
        Ok(_) => None,
        // Unknown: the entry stays, and the reaper sends the message if the job still waits.
        Err(_) => return,
    };
    if let Some(queue) = queued
        && let Err(err) = crate::jobs::outbox::send(state, queue, job_id).await
    {
        tracing::warn!(
            job_id,
            error = format!("{err:#}"),
            "send failed; the outbox sends it later"
        );
        return;
    }
    if let Err(err) = crate::jobs::outbox::sent(&state.db, entry).await {
        tracing::warn!(job_id, error = format!("{err:#}"), "outbox entry left");
    }
}

/// The last event: `done`, `error` or `queued`.
async fn ending(
    state: &State,
    session_id: &str,
    reply_id: &str,
    job_id: &str,
    ran: anyhow::Result<bool>,
) -> bytes::Bytes {
    let job = match crate::jobs::store::get(&state.db, job_id).await {
        Ok(Some(job)) => job,
        Ok(None) | Err(_) => {
            return sse_event(
                "error",
                &json!({"type": "internal", "message": "the job could not be read; poll it"}),
            );
        }
    };
    let job_view = json!({
        "id": job.id,
        "status": job.status,
        "cost": job.cost,
        "charged": job.charged,
        "error": job.error,
    });
    if !matches!(ran, Ok(true)) || !job.status.is_terminal() {
        if let Err(err) = &ran {
            tracing::warn!(
                job_id,
                error = format!("{err:#}"),
                "running a reply here failed"
            );
        }
        return sse_event("queued", &json!({ "job": job_view }));
    }
    let version = state
        .db
        .get(
            &crate::keys::chat_messages(session_id),
            &crate::keys::message_version(reply_id, job_id),
        )
        .await
        .ok()
        .flatten()
        .as_ref()
        .and_then(messages::version_view);
    let reply = version.map_or(Value::Null, |v| serde_json::to_value(v).unwrap_or_default());
    match &job.error {
        None => sse_event("done", &json!({ "reply": reply, "job": job_view })),
        Some(failure) => sse_event(
            "error",
            &json!({"type": failure.kind, "message": failure.message, "reply": reply, "job": job_view}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_session_and_maybe_a_reply() {
        let s = "0193a7b2-0000-7000-8000-000000000001";
        let m = "0193a7b2-0000-7000-8000-000000000002";
        assert_eq!(
            route(&format!("/v1/sessions/{s}/messages")),
            Some((s.to_owned(), None))
        );
        assert_eq!(
            route(&format!("/v1/sessions/{s}/messages/{m}/regenerate")),
            Some((s.to_owned(), Some(m.to_owned())))
        );
        assert_eq!(route("/v1/sessions/x/messages"), None);
        assert_eq!(route(&format!("/v1/sessions/{s}/messages/{m}")), None);
    }
}
