//! The outbox: an admitted job's queue message is recorded in the admission's own transaction and
//! removed once its sender has sent it. Whatever stops the sender between the commit and the send
//! (a function timeout, a client that hangs up, an SQS error), the reaper finds the entry after a
//! grace period and sends the message again; a duplicate is harmless because the claim is
//! conditional. So a job is never charged without being queued.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use crate::db::{Db, get_s, n, put_new, s};
use crate::domain::Queue;
use crate::jobs::model::Status;
use crate::keys;
use crate::state::State;

/// Where a job's outbox entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub pk: String,
    pub sk: String,
    /// When the reaper may send the message again (epoch s).
    pub due: i64,
}

impl Entry {
    pub fn of(job_id: &str, due: i64) -> Self {
        Self {
            pk: keys::outbox_shard(job_id),
            sk: keys::outbox_entry(due, job_id),
            due,
        }
    }
}

/// The transaction action that records a job's message, due for a resend at `entry.due`.
pub fn record(
    db: &Db,
    entry: &Entry,
    job_id: &str,
    queue: Queue,
) -> anyhow::Result<TransactWriteItem> {
    put_new(
        db,
        vec![
            ("pk", s(&entry.pk)),
            ("sk", s(&entry.sk)),
            ("job_id", s(job_id)),
            ("queue", s(queue.as_str())),
            // A safety net only: the reaper removes every entry long before.
            ("expires_at", n(entry.due + 7 * 86_400)),
        ],
    )
}

/// Sends a job's message to its queue.
pub async fn send(state: &State, queue: Queue, job_id: &str) -> anyhow::Result<()> {
    let url = match queue {
        Queue::Cpu => state.config.jobs_queue_url.as_deref(),
        Queue::Gpu => state
            .config
            .gpu_jobs_queue_url
            .as_deref()
            .or(state.config.jobs_queue_url.as_deref()),
        Queue::Video => state
            .config
            .video_jobs_queue_url
            .as_deref()
            .or(state.config.jobs_queue_url.as_deref()),
    };
    let url = url.ok_or_else(|| anyhow::anyhow!("JOBS_QUEUE_URL is not set"))?;
    state
        .sqs
        .send_message()
        .queue_url(url)
        .message_body(serde_json::json!({ "job_id": job_id }).to_string())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
    Ok(())
}

/// Removes an entry whose message was sent.
pub async fn sent(db: &Db, entry: &Entry) -> anyhow::Result<()> {
    remove(db, &entry.pk, &entry.sk).await
}

async fn remove(db: &Db, pk: &str, sk: &str) -> anyhow::Result<()> {
    db.client
        .delete_item()
        .table_name(&db.table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .send()
        .await
        .context("removing an outbox entry")?;
    Ok(())
}

/// What a pass over the outbox did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resent {
    /// Messages sent again (their jobs were still queued).
    pub sent: usize,
    /// Entries of jobs that had moved on (claimed, finished): removed.
    pub settled: usize,
    /// Entries that could not be handled now; the next pass tries again.
    pub failed: usize,
}

/// Entries an outbox pass handles at once.
const RESEND_CONCURRENCY: usize = 8;

/// Sends again every message still in the outbox past its due time, up to `limit` per partition.
/// One entry's failure does not stop the others.
pub async fn resend_due(state: &State, now: DateTime<Utc>, limit: i32) -> Resent {
    let mut resent = Resent::default();
    // `{due:012}#…` sorts by due time: everything below the next second is due.
    let upper = format!("{:012}", now.timestamp() + 1);
    for shard in 0..keys::OUTBOX_SHARDS {
        let out = state
            .db
            .client
            .query()
            .table_name(&state.db.table)
            .key_condition_expression("pk = :pk AND sk < :upper")
            .expression_attribute_values(":pk", s(keys::outbox_partition(shard)))
            .expression_attribute_values(":upper", s(&upper))
            .limit(limit)
            .send()
            .await;
        let items = match out {
            Ok(out) => out.items.unwrap_or_default(),
            Err(err) => {
                tracing::error!(shard, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&err), "reading the outbox");
                resent.failed += 1;
                continue;
            }
        };
        // A few at a time: after an outage the entries come in hundreds, each three calls (one
        // by one, a load test's backlog took minutes to send again on a busy emulator).
        let mut results = futures::stream::iter(items)
            .map(|item| async move { resend(state, &item).await })
            .buffer_unordered(RESEND_CONCURRENCY);
        while let Some(result) = results.next().await {
            match result {
                Ok(true) => resent.sent += 1,
                Ok(false) => resent.settled += 1,
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "resending a queued job");
                    resent.failed += 1;
                }
            }
        }
    }
    resent
}

/// Sends an entry's message again if its job is still queued; removes the entry. `true` if sent.
async fn resend(
    state: &State,
    item: &std::collections::HashMap<String, AttributeValue>,
) -> anyhow::Result<bool> {
    let pk = get_s(item, "pk").context("outbox entry without pk")?;
    let sk = get_s(item, "sk").context("outbox entry without sk")?;
    let job_id = get_s(item, "job_id").context("outbox entry without job_id")?;
    let queue = get_s(item, "queue")
        .and_then(Queue::parse)
        .unwrap_or(Queue::Cpu);
    let job = crate::jobs::store::get(&state.db, job_id).await?;
    let queued = job.is_some_and(|job| job.status == Status::InQueue);
    if queued {
        send(state, queue, job_id).await?;
        tracing::warn!(job_id, "a queued job's message was sent again");
    }
    remove(&state.db, pk, sk).await?;
    Ok(queued)
}
