//! Delivering events to our clients, signed per Standard Webhooks (`webhook-id` is the event's id
//! on every attempt), from a queue: an event is fanned out to the job's `webhook_url` and the
//! owner's endpoints that want it; each target is retried on the standard schedule with jitter
//! (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h), honouring `Retry-After` on
//! 429, 502 and 504. `410 Gone` disables an endpoint. Every attempt is recorded.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::jobs::events::{Event, Message, Target};
use crate::jobs::worker::{Consumer, Disposition};
use crate::keys;
use crate::state::State;
use crate::webhooks::endpoints::{self, Delivery};

/// Seconds before each attempt (Standard Webhooks' schedule).
pub const SCHEDULE: [u64; 10] = [
    0, 5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400,
];
/// SQS's longest message delay.
const MAX_DELAY_SECS: u64 = 900;

/// The deliveries queue's consumer.
pub const DELIVERIES: Consumer = Consumer {
    name: "deliveries",
    handle: |state, body| Box::pin(process(state, body)),
};

/// Handles one message of the deliveries queue.
pub async fn process(state: &State, body: &str) -> anyhow::Result<Disposition> {
    let Ok(message) = serde_json::from_str::<Message>(body) else {
        tracing::warn!("dropping a delivery message that does not parse");
        return Ok(Disposition::Done);
    };
    let now = Utc::now().timestamp();
    if message.not_before > now {
        let wait = u64::try_from(message.not_before - now).unwrap_or(0);
        send(state, &message, Duration::from_secs(wait)).await?;
        return Ok(Disposition::Done);
    }
    match &message.target {
        None => fan_out(state, &message.event).await?,
        Some(target) => {
            // A retry: the target may have been deleted or disabled since.
            if let Some(address) = resolve(state, &message.event, target).await? {
                deliver_to(state, &message.event, target, &address, message.attempt).await?;
            }
        }
    }
    Ok(Disposition::Done)
}

/// Where and with which secret a target is reached.
struct Address {
    url: String,
    secret: String,
}

async fn fan_out(state: &State, event: &Event) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    if let Some(item) = state.db.get(&keys::job(&event.job_id), keys::JOB).await?
        && let Some((url, secret)) = endpoints::job_target(&item)
    {
        targets.push((Target::Job, Address { url, secret }));
    }
    for (endpoint, secret) in endpoints::of_user(&state.db, &event.user_id).await? {
        if endpoint.disabled_at.is_none() && endpoint.events.contains(&event.kind) {
            let address = Address {
                url: endpoint.url,
                secret,
            };
            targets.push((Target::Endpoint(endpoint.id), address));
        }
    }
    let results = futures::future::join_all(
        targets
            .iter()
            .map(|(target, address)| deliver_to(state, event, target, address, 0)),
    )
    .await;
    results.into_iter().collect()
}

/// A target's address now, or `None` when it is gone or disabled.
async fn resolve(state: &State, event: &Event, target: &Target) -> anyhow::Result<Option<Address>> {
    Ok(match target {
        Target::Job => state
            .db
            .get(&keys::job(&event.job_id), keys::JOB)
            .await?
            .as_ref()
            .and_then(endpoints::job_target)
            .map(|(url, secret)| Address { url, secret }),
        Target::Endpoint(id) => endpoints::get(&state.db, &event.user_id, id)
            .await?
            .filter(|(endpoint, _)| endpoint.disabled_at.is_none())
            .map(|(endpoint, secret)| Address {
                url: endpoint.url,
                secret,
            }),
    })
}

/// What an attempt got.
struct Answer {
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
}

/// One attempt to one target; schedules the next attempt when it fails.
async fn deliver_to(
    state: &State,
    event: &Event,
    target: &Target,
    address: &Address,
    attempt: u32,
) -> anyhow::Result<()> {
    let record_under = match target {
        Target::Job => format!("job-{}", event.job_id),
        Target::Endpoint(id) => id.clone(),
    };
    let body = event.body();
    let signer = standardwebhooks::Webhook::new(&address.secret)
        .map_err(|_| anyhow::anyhow!("an endpoint secret is malformed"))?;
    let sent_at = Utc::now().timestamp();
    let signature = signer
        .sign(&event.id, sent_at, body.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing a delivery: {e}"))?;
    let started = Instant::now();
    // The address policy again at send time: the URL was checked when it was given, but IP
    // literals never meet the resolver, and the policy may have grown since.
    let allowed =
        crate::net::validate_url(&address.url, "url", state.config.allow_private_webhooks);
    let answer = match allowed {
        Err(refusal) => Answer {
            status: None,
            retry_after: None,
            error: Some(format!("not sent: the URL {}", refusal.message)),
        },
        Ok(_) => match state
            .http
            .deliveries
            .post(&address.url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", sent_at.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
        {
            Ok(response) => Answer {
                status: Some(response.status().as_u16()),
                retry_after: response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
                error: None,
            },
            // The URL is the client's own; the error's kind is enough.
            Err(err) => Answer {
                status: None,
                retry_after: None,
                error: Some(err.without_url().to_string()),
            },
        },
    };
    let succeeded = answer.status.is_some_and(|s| (200..300).contains(&s));
    endpoints::record(
        &state.db,
        &record_under,
        &Delivery {
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            job_id: event.job_id.clone(),
            attempt,
            status_code: answer.status,
            error: answer.error.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            succeeded,
            at: crate::users::timestamp(Utc::now()),
        },
    )
    .await?;
    if succeeded {
        return Ok(());
    }
    if answer.status == Some(410) {
        if let Target::Endpoint(id) = target {
            endpoints::disable(&state.db, &event.user_id, id).await?;
            tracing::warn!(endpoint_id = %id, "endpoint answered 410; disabled");
        }
        return Ok(());
    }
    let next = attempt + 1;
    let Some(wait) = next_wait(next, state.config.delivery_retry_scale, &answer) else {
        tracing::warn!(event_id = %event.id, attempts = next, "delivery abandoned after the last attempt");
        return Ok(());
    };
    let message = Message {
        event: event.clone(),
        target: Some(target.clone()),
        attempt: next,
        not_before: Utc::now().timestamp() + i64::try_from(wait.as_secs()).unwrap_or(0),
    };
    send(state, &message, wait).await
}

/// The wait before attempt `next`: the schedule's, scaled, ±20 %; at least `Retry-After` on 429,
/// 502 and 504. `None` after the last attempt.
fn next_wait(next: u32, scale: f64, answer: &Answer) -> Option<Duration> {
    let base = *SCHEDULE.get(usize::try_from(next).ok()?)?;
    let mut wait = crate::backoff::jittered(Duration::from_secs(base).mul_f64(scale), 0.2);
    if matches!(answer.status, Some(429 | 502 | 504))
        && let Some(after) = answer.retry_after
    {
        wait = wait.max(after.min(Duration::from_secs(86_400)));
    }
    Some(wait)
}

/// Puts a message on the deliveries queue, delayed by `wait` (at most SQS's 15 minutes; the
/// message's `not_before` carries the rest).
async fn send(state: &State, message: &Message, wait: Duration) -> anyhow::Result<()> {
    let queue = state
        .config
        .deliveries_queue_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("DELIVERIES_QUEUE_URL is not set"))?;
    state
        .sqs
        .send_message()
        .queue_url(queue)
        .delay_seconds(i32::try_from(wait.as_secs().min(MAX_DELAY_SECS)).unwrap_or(0))
        .message_body(serde_json::to_string(message)?)
        .send()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_standard_one_with_jitter_and_retry_after() {
        let failed = |status: u16, after: Option<u64>| Answer {
            status: Some(status),
            retry_after: after.map(Duration::from_secs),
            error: None,
        };
        let wait = next_wait(2, 1.0, &failed(500, None)).expect("a third attempt");
        assert!((240..=360).contains(&wait.as_secs()), "{wait:?}");
        let wait = next_wait(1, 1.0, &failed(429, Some(60))).expect("a second attempt");
        assert!(wait >= Duration::from_secs(60), "Retry-After honoured");
        let wait = next_wait(1, 1.0, &failed(500, Some(60))).expect("a second attempt");
        assert!(
            wait < Duration::from_secs(10),
            "Retry-After only on 429/502/504"
        );
        assert!(
            next_wait(10, 1.0, &failed(500, None)).is_none(),
            "ten attempts in all"
        );
    }
}
