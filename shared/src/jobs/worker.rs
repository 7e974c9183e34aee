//! The worker: claims a queued job, runs its kind's executor, and releases it. One code path, two
//! entry modes: an SQS-triggered Lambda (batches, partial failures) and a long-running poller
//! (the GPU ECS task, and the local gateway). Also the healers: the reaper and the dead-letter
//! consumer.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::Utc;
use serde::Deserialize;
use tokio::sync::Semaphore;

use futures::future::BoxFuture;

use crate::jobs::events;
use crate::jobs::executor::{Finished, JobError, Progress};
use crate::jobs::model::{Job, Status};
use crate::jobs::store::{self, JobRef, Outcome};
use crate::state::State;

/// What to do with a message after handling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Handled (or nothing to do): delete it.
    Done,
    /// Worth another attempt: leave it to the queue's redelivery (and, in the end, its DLQ).
    Retry,
}

#[derive(Deserialize)]
struct Message {
    job_id: String,
}

/// Handles one job message: a duplicate or late delivery of a claimed or finished job does nothing.
pub async fn process(state: &State, body: &str) -> anyhow::Result<Disposition> {
    let Ok(message) = serde_json::from_str::<Message>(body) else {
        tracing::warn!("dropping a message that names no job");
        return Ok(Disposition::Done);
    };
    let Some(job) = store::get(&state.db, &message.job_id).await? else {
        tracing::warn!(job_id = %message.job_id, "dropping a message for an unknown job");
        return Ok(Disposition::Done);
    };
    if job.status != Status::InQueue {
        tracing::info!(job_id = %job.id, status = job.status.as_str(), "duplicate delivery ignored");
        return Ok(Disposition::Done);
    }
    let Some(kind) = state.registry.get(&job.kind) else {
        let outcome = Outcome::failed(
            "invalid_input",
            format!("this deployment no longer runs {}", job.kind),
        );
        crate::jobs::finish(state, &JobRef::from(&job), &outcome, Utc::now()).await?;
        return Ok(Disposition::Done);
    };
    let run_for = (kind.deadline)(&job.input);
    let Some(job) = store::claim(&state.db, &job.id, run_for, Utc::now()).await? else {
        tracing::info!(job_id = %job.id, "claimed elsewhere");
        return Ok(Disposition::Done);
    };
    tracing::info!(job_id = %job.id, kind = %job.kind, "running");
    events::started(state, &job).await;
    let progress = Progress::new(state, &job);
    let run = tokio::time::timeout(run_for, (kind.run)(state, &job, &progress)).await;
    conclude(state, &job, run.ok()).await
}

/// Ends a claimed job by what its run returned (`None`: it ran past its deadline): released, put
/// back in its queue for a retryable failure, or left to its provider.
async fn conclude(
    state: &State,
    job: &Job,
    run: Option<Result<Finished, JobError>>,
) -> anyhow::Result<Disposition> {
    let mut charged = None;
    let outcome = match run {
        None => Outcome::failed("timed_out", "the job ran past its deadline"),
        Some(Ok(Finished::Output(output))) => Outcome::Completed(output),
        Some(Ok(Finished::Settled { output, cost })) => {
            charged = Some(cost);
            Outcome::Completed(output)
        }
        Some(Ok(Finished::HandedOff)) => {
            tracing::info!(job_id = %job.id, "handed to its provider");
            return Ok(Disposition::Done);
        }
        Some(Err(JobError::Permanent { kind, message })) => Outcome::failed(kind, message),
        Some(Err(JobError::Canceled)) => Outcome::Canceled {
            message: "canceled by its owner".into(),
        },
        Some(Err(err @ (JobError::Retryable(_) | JobError::Internal(_)))) => {
            tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "retryable failure; requeueing");
            store::requeue(&state.db, &job.id, Utc::now()).await?;
            return Ok(Disposition::Retry);
        }
    };
    let released =
        crate::jobs::finish_settled(state, &JobRef::from(job), &outcome, charged, Utc::now())
            .await?;
    tracing::info!(job_id = %job.id, released, outcome = outcome_name(&outcome), "finished");
    Ok(Disposition::Done)
}

/// Runs an admitted job here and now rather than from its queue (a reply streamed to the client
/// that asked for it): claims it, runs `run` in place of its kind's executor, and ends it as the
/// worker would. `Ok(false)`: it was not in the queue any more (a worker claimed it first). A
/// retryable failure puts it back in its queue for the worker.
pub async fn run_here<F>(state: &State, job_id: &str, run: F) -> anyhow::Result<bool>
where
    F: for<'p> FnOnce(&'p Job, &'p Progress<'p>) -> BoxFuture<'p, Result<Finished, JobError>>,
{
    let Some(queued) = store::get(&state.db, job_id).await? else {
        return Ok(false);
    };
    let Some(kind) = state.registry.get(&queued.kind) else {
        return Ok(false);
    };
    let run_for = (kind.deadline)(&queued.input);
    let Some(job) = store::claim(&state.db, job_id, run_for, Utc::now()).await? else {
        return Ok(false);
    };
    tracing::info!(job_id = %job.id, kind = %job.kind, "running here");
    events::started(state, &job).await;
    let progress = Progress::new(state, &job);
    let result = tokio::time::timeout(run_for, run(&job, &progress)).await;
    if conclude(state, &job, result.ok()).await? == Disposition::Retry {
        // Its message went to the queue at admission or goes with the outbox: a worker runs it.
        tracing::info!(job_id = %job.id, "left to the worker");
    }
    Ok(true)
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed(_) => "completed",
        Outcome::Failed { .. } => "failed",
        Outcome::Canceled { .. } => "canceled",
    }
}

/// Fails the job of a message that exhausted its deliveries (`worker_crashed`), refunding it.
pub async fn dead_letter(state: &State, body: &str) -> anyhow::Result<Disposition> {
    let Ok(message) = serde_json::from_str::<Message>(body) else {
        return Ok(Disposition::Done);
    };
    if let Some(job) = store::get(&state.db, &message.job_id).await?
        && !job.status.is_terminal()
    {
        {
            let outcome = Outcome::failed(
                "worker_crashed",
                "the worker failed on every delivery of this job",
            );
            let released =
                crate::jobs::finish(state, &JobRef::from(&job), &outcome, Utc::now()).await?;
            tracing::warn!(job_id = %job.id, released, "dead-lettered job failed");
        }
    }
    Ok(Disposition::Done)
}

/// What a pass of the reaper did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reaped {
    /// Jobs past their deadline, failed as `timed_out` and refunded.
    pub reaped: usize,
    /// Overdue jobs whose release failed this time (the next pass tries again).
    pub failed: usize,
    /// The outbox pass: lost queue messages sent again.
    pub outbox: crate::jobs::outbox::Resent,
}

/// Sends again the queue messages of admitted jobs that their senders did not confirm, then fails
/// every unfinished job past its deadline (`timed_out`), refunding it, and cancels it at its
/// provider if one runs it. One job's failure does not stop the others: it is logged and counted.
pub async fn reap(state: &State) -> anyhow::Result<Reaped> {
    let now = Utc::now();
    let mut pass = Reaped {
        outbox: crate::jobs::outbox::resend_due(state, now, 100).await,
        ..Reaped::default()
    };
    for job in store::overdue(&state.db, now, 100).await? {
        let outcome = Outcome::failed("timed_out", "the job passed its deadline");
        match crate::jobs::finish(state, &job, &outcome, now).await {
            Ok(true) => {
                tracing::warn!(job_id = %job.id, "reaped");
                pass.reaped += 1;
                // Stop paying for it at its provider.
                state
                    .registry
                    .abandon(state, &job.id, job.provider.as_ref())
                    .await;
            }
            Ok(false) => {}
            Err(err) => {
                tracing::error!(job_id = %job.id, error = format!("{err:#}"), "reaping failed");
                pass.failed += 1;
            }
        }
    }
    Ok(pass)
}

/// What handles a queue's messages.
pub type Handle = for<'a> fn(&'a State, &'a str) -> BoxFuture<'a, anyhow::Result<Disposition>>;

/// A queue's consumer: its name (for logs) and its handler.
#[derive(Clone, Copy)]
pub struct Consumer {
    pub name: &'static str,
    pub handle: Handle,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Consumer {
    /// The job queues' consumer: claims, runs and releases jobs.
    pub const JOBS: Self = Self {
        name: "jobs",
        handle: |state, body| Box::pin(process(state, body)),
    };
    /// The dead-letter queues' consumer: their jobs fail as `worker_crashed`.
    pub const DEAD_LETTERS: Self = Self {
        name: "dead letters",
        handle: |state, body| Box::pin(dead_letter(state, body)),
    };
}

async fn consume(state: &State, consumer: Consumer, body: &str) -> anyhow::Result<Disposition> {
    (consumer.handle)(state, body).await
}

/// The Lambda mode: every record of the batch concurrently; failures reported item by item, each
/// back in its queue after [`retry_after`] rather than the queue's visibility timeout.
pub async fn handle_batch(state: &State, consumer: Consumer, event: SqsEvent) -> SqsBatchResponse {
    let results = futures::future::join_all(event.records.iter().map(|record| async move {
        let body = record.body.as_deref().unwrap_or_default();
        let message_id = record.message_id.clone().unwrap_or_default();
        let failed = match consume(state, consumer, body).await {
            Ok(Disposition::Done) => false,
            Ok(Disposition::Retry) => true,
            Err(err) => {
                tracing::error!(message_id = %message_id, error = format!("{err:#}"), "message failed");
                true
            }
        };
        if failed {
            back_off(state, record).await;
        }
        (message_id, failed)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, failed) in results {
        if failed {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// How long a message whose handling failed stays invisible before its next delivery: 10 s after
/// its first receive, doubling with each receive up to 15 min: the five receives a queue allows
/// come within 2.5 min, and a message that fails them all reaches the dead letters about 5 min
/// after its first. Left alone, Lambda's failed records wait out their queue's
/// visibility timeout: 90 min for the jobs queue (6 times the worker's timeout), by when the
/// reaper has failed a requeued job at its deadline, so its retry never ran.
pub fn retry_after(receives: u32) -> i32 {
    (10i32 << receives.saturating_sub(1).min(7)).min(900)
}

/// Makes a failed record visible again after [`retry_after`] its receives. Best effort: where
/// SQS cannot be asked, the queue's visibility timeout stands.
async fn back_off(state: &State, record: &SqsMessage) {
    let (Some(arn), Some(receipt)) = (
        record.event_source_arn.as_deref(),
        record.receipt_handle.as_deref(),
    ) else {
        return;
    };
    let receives = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let changed = async {
        let url = queue_url(state, arn).await?;
        state
            .sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(retry_after(receives))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        anyhow::Ok(())
    };
    if let Err(err) = changed.await {
        tracing::warn!(
            error = format!("{err:#}"),
            "a failed message keeps its queue's visibility timeout"
        );
    }
}

/// A queue's URL from its ARN (`arn:partition:sqs:region:account:name`), asked of SQS once a
/// process.
async fn queue_url(state: &State, arn: &str) -> anyhow::Result<String> {
    type Urls = std::sync::Mutex<std::collections::HashMap<String, String>>;
    static URLS: std::sync::LazyLock<Urls> = std::sync::LazyLock::new(Default::default);
    let urls = || {
        URLS.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(url) = urls().get(arn) {
        return Ok(url.clone());
    }
    let [_, _, "sqs", _, account, name] = arn.split(':').collect::<Vec<_>>()[..] else {
        anyhow::bail!("{arn} is not an SQS queue's ARN");
    };
    let url = state
        .sqs
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("SQS gave no URL for {arn}"))?;
    urls().insert(arn.to_owned(), url.clone());
    Ok(url)
}

/// How long a received message stays invisible; renewed while its job runs.
const VISIBILITY: Duration = Duration::from_secs(60);

/// The poller mode: long-polls `queue_url` for ever, running up to `concurrency` messages at once,
/// keeping each invisible while it runs, deleting it when done.
pub async fn poll(state: Arc<State>, consumer: Consumer, queue_url: String, concurrency: usize) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    tracing::info!(queue_url = %queue_url, ?consumer, "polling");
    loop {
        let available = permits.available_permits().clamp(1, 10);
        let Ok(permit_batch) = permits
            .clone()
            .acquire_many_owned(u32::try_from(available).unwrap_or(1))
            .await
        else {
            return;
        };
        let received = state
            .sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(i32::try_from(available).unwrap_or(1))
            .wait_time_seconds(20)
            .visibility_timeout(i32::try_from(VISIBILITY.as_secs()).unwrap_or(60))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            // A long poll waits up to 20 s by design: past the calls' usual attempt timeout.
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(Duration::from_secs(25))
                        .operation_timeout(Duration::from_secs(30))
                        .build(),
                ),
            )
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut batch = permit_batch;
        for message in messages {
            // Hand each message one permit; the rest go back when `batch` drops.
            let permit = batch.split(1);
            let (state, url) = (state.clone(), queue_url.clone());
            tokio::spawn(async move {
                let _permit = permit;
                handle_message(&state, consumer, &url, message).await;
            });
        }
    }
}

async fn handle_message(
    state: &State,
    consumer: Consumer,
    queue_url: &str,
    message: aws_sdk_sqs::types::Message,
) {
    let Some(receipt) = message.receipt_handle.clone() else {
        return;
    };
    let body = message.body.clone().unwrap_or_default();
    let heartbeat = async {
        loop {
            tokio::time::sleep(VISIBILITY / 3).await;
            let _ = state
                .sqs
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(&receipt)
                .visibility_timeout(i32::try_from(VISIBILITY.as_secs()).unwrap_or(60))
                .send()
                .await;
        }
    };
    let result = tokio::select! {
        result = consume(state, consumer, &body) => result,
        () = heartbeat => unreachable!("the heartbeat never ends"),
    };
    let done = match result {
        Ok(Disposition::Done) => true,
        Ok(Disposition::Retry) => false,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "message failed");
            false
        }
    };
    let outcome = if done {
        state
            .sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(&receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(anyhow::Error::new)
    } else {
        // Back off before the redelivery, longer each time.
        let receives = message
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        state
            .sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(&receipt)
            .visibility_timeout(retry_after(receives))
            .send()
            .await
            .map(|_| ())
            .map_err(anyhow::Error::new)
    };
    if let Err(err) = outcome {
        tracing::warn!(error = format!("{err:#}"), "could not settle a message");
    }
}
