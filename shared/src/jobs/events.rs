//! Job events for our clients' webhooks: `job.started`, `job.progress` (throttled),
//! `job.completed`, `job.failed`, `job.canceled`. A transition that happened emits its event to
//! the deliveries queue; the delivery function fans it out to the job's `webhook_url` and the
//! owner's endpoints.

use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::jobs::model::Job;
use crate::jobs::store::{JobRef, Outcome};
use crate::state::State;

/// Every event type, as endpoints subscribe to them.
pub const TYPES: &[&str] = &[
    "job.started",
    "job.progress",
    "job.completed",
    "job.failed",
    "job.canceled",
];

/// One event: its id (the `webhook-id` of every attempt), type and thin payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub job_id: String,
    pub user_id: String,
    /// Unix seconds when it happened.
    pub timestamp: i64,
    /// `{id, kind?, status, progress?, error?}`.
    pub data: Value,
}

impl Event {
    fn new(kind: &str, job_id: &str, user_id: &str, data: Value) -> Self {
        Self {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            kind: kind.to_owned(),
            job_id: job_id.to_owned(),
            user_id: user_id.to_owned(),
            timestamp: Utc::now().timestamp(),
            data,
        }
    }

    /// The body every target gets: `{type, timestamp, data}` (RFC 3339 time), well under 20 KB.
    pub fn body(&self) -> String {
        let timestamp = chrono::DateTime::from_timestamp(self.timestamp, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        json!({"type": self.kind, "timestamp": timestamp, "data": self.data}).to_string()
    }
}

/// Queues `event` for delivery. Best effort: the transition it reports has happened whatever
/// becomes of it, so a failure is logged, not returned.
pub async fn emit(state: &State, event: Event) {
    let Some(queue) = state.config.deliveries_queue_url.as_deref() else {
        return;
    };
    let message = Message {
        event,
        target: None,
        attempt: 0,
        not_before: 0,
    };
    let body = match serde_json::to_string(&message) {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "an event could not be encoded");
            return;
        }
    };
    if let Err(err) = state
        .sqs
        .send_message()
        .queue_url(queue)
        .message_body(body)
        .send()
        .await
    {
        tracing::warn!(job_id = %message.event.job_id, error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "an event was not queued");
    }
}

/// `job.started`, when a worker claims the job.
pub async fn started(state: &State, job: &Job) {
    let data = json!({"id": job.id, "kind": job.kind, "status": "IN_PROGRESS"});
    emit(
        state,
        Event::new("job.started", &job.id, &job.user_id, data),
    )
    .await;
}

/// The quarter of 0–100 a progress value is in: `job.progress` is sent when it changes, so a job
/// sends at most three of them however often it reports.
fn quarter(percent: u8) -> u8 {
    percent.min(99) / 25
}

/// `job.progress`, when progress moves from `before` into a new quarter.
pub async fn progressed(
    state: &State,
    job_id: &str,
    user_id: &str,
    before: u8,
    percent: u8,
    message: Option<&str>,
) {
    if quarter(percent) <= quarter(before) {
        return;
    }
    let data =
        json!({"id": job_id, "status": "IN_PROGRESS", "progress": percent, "message": message});
    emit(state, Event::new("job.progress", job_id, user_id, data)).await;
}

/// `job.completed`, `job.failed` or `job.canceled`, when a release ended the job.
pub async fn ended(state: &State, job: &JobRef, outcome: &Outcome) {
    let (kind, data) = match outcome {
        Outcome::Completed(_) => (
            "job.completed",
            json!({"id": job.id, "status": "COMPLETED"}),
        ),
        Outcome::Failed { kind, message } => (
            "job.failed",
            json!({"id": job.id, "status": "FAILED", "error": {"type": kind, "message": message}}),
        ),
        Outcome::Canceled { message } => (
            "job.canceled",
            json!({"id": job.id, "status": "CANCELED", "error": {"type": "canceled_by_user", "message": message}}),
        ),
    };
    emit(state, Event::new(kind, &job.id, &job.user_id, data)).await;
}

/// A message of the deliveries queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub event: Event,
    /// `None`: fan the event out; else deliver it to this target.
    pub target: Option<Target>,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// Not before this unix second (SQS delays at most 15 minutes; longer waits hop).
    #[serde(default)]
    pub not_before: i64,
}

/// Where an event goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Target {
    /// The job's own `webhook_url`.
    Job,
    /// One of the owner's endpoints.
    Endpoint(String),
}

/// A fresh Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_throttled_to_quarters() {
        let crossings: Vec<u8> = (1..=100u8)
            .filter(|p| quarter(*p) > quarter(p - 1))
            .collect();
        assert_eq!(crossings, [25, 50, 75]);
    }

    #[test]
    fn the_body_is_thin() {
        let event = Event::new(
            "job.completed",
            "j1",
            "u1",
            json!({"id": "j1", "status": "COMPLETED"}),
        );
        let body: Value = serde_json::from_str(&event.body()).expect("json");
        assert_eq!(body["type"], "job.completed");
        assert_eq!(body["data"]["status"], "COMPLETED");
        assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(event.body().len() < 20 * 1024);
    }
}
