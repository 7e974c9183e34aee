//! The job lifecycle in DynamoDB: admission and release are each one transaction; every other
//! transition is one conditional write, so no interleaving of requests, workers, the reaper and
//! the dead-letter consumer can over-admit, release twice or refund twice.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::JobCaps;
use crate::db::{Db, get_i64, get_s, n, s, unless_condition_failed};
use crate::error::ApiError;
use crate::jobs::model::{Job, ProviderJob, Status, StoredProvider};
use crate::keys;
use crate::users::timestamp;

/// A job to admit.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub kind: &'a str,
    pub input: &'a Value,
    pub cost: i64,
    pub webhook_url: Option<&'a str>,
    /// The secret that signs this job's webhooks.
    pub webhook_secret: Option<&'a str>,
    /// `(key, hash of the request)` when the client sent `Idempotency-Key`.
    pub idempotency: Option<(&'a str, &'a str)>,
    /// The queue its message goes to, recorded in the outbox with the admission.
    pub queue: crate::domain::Queue,
    /// Its outbox entry: the reaper sends the message again if the entry is still there then.
    pub outbox: &'a crate::jobs::outbox::Entry,
    /// Who earns a share of `cost` when it completes.
    pub share: Option<&'a crate::jobs::model::Share>,
}

/// What admission decided.
pub enum Admission {
    Admitted(Box<Job>),
    /// The same idempotency key and request were admitted before: that job.
    Replayed(String),
}

fn condition_failed(reason: &aws_sdk_dynamodb::types::CancellationReason) -> bool {
    reason.code() == Some("ConditionalCheckFailed")
}

/// Admits a job in one transaction: the job item, the owner's `active_jobs < cap` with increment and
/// `credits >= cost` with debit, the debit's ledger entry, and the idempotency record if any. The
/// cancellation reasons tell the cap (429) from the balance (402). Conflicting concurrent
/// transactions are retried.
pub async fn admit(
    db: &Db,
    job: NewJob<'_>,
    caps: &JobCaps,
    now: DateTime<Utc>,
) -> Result<Admission, ApiError> {
    let created_at = timestamp(now);
    let deadline = now.timestamp()
        + i64::try_from(crate::jobs::registry::QUEUE_TIMEOUT.as_secs()).unwrap_or(1800);
    let input = serde_json::to_string(job.input).map_err(|e| ApiError::Internal(e.into()))?;
    let mut put = Put::builder()
        .table_name(&db.table)
        .condition_expression("attribute_not_exists(pk)")
        .item("pk", s(keys::job(job.id)))
        .item("sk", s(keys::JOB))
        .item("id", s(job.id))
        .item("user_id", s(job.user_id))
        .item("kind", s(job.kind))
        .item("input", s(input))
        .item("status", s(Status::InQueue.as_str()))
        .item("progress", n(0))
        .item("cost", n(job.cost))
        .item("created_at", s(&created_at))
        .item("updated_at", s(&created_at))
        .item("deadline", n(deadline))
        .item("gsi1pk", s(keys::jobs_of(job.user_id)))
        .item("gsi1sk", s(job.id))
        .item("gsi2pk", s(keys::active_shard(job.id)))
        .item("gsi2sk", n(deadline));
    if let Some(url) = job.webhook_url {
        put = put.item("webhook_url", s(url));
    }
    if let Some(secret) = job.webhook_secret {
        put = put.item("webhook_secret", s(secret));
    }
    if let Some(share) = job.share {
        put = put
            .item("share_payee", s(&share.payee))
            .item("share_price", n(share.price))
            .item("share_earning", n(share.earning));
        if let Some(style) = &share.style_id {
            put = put.item("share_style_id", s(style));
        }
    }
    let charge = Update::builder()
        .table_name(&db.table)
        .key("pk", s(keys::user(job.user_id)))
        .key("sk", s(keys::PROFILE))
        .update_expression("SET active_jobs = if_not_exists(active_jobs, :zero) + :one, credits = credits - :cost")
        // Caps rise with the tier (Config checks it), so "under the free cap" admits any tier;
        // a paid tier's higher cap applies while its membership has not lapsed.
        .condition_expression(
            "attribute_exists(pk) AND credits >= :cost AND ( \
               attribute_not_exists(active_jobs) OR active_jobs < :cap_free \
               OR (tier = :standard AND active_jobs < :cap_standard AND (attribute_not_exists(tier_expires_at) OR tier_expires_at > :now)) \
               OR (tier = :premium AND active_jobs < :cap_premium AND (attribute_not_exists(tier_expires_at) OR tier_expires_at > :now)))",
        )
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":cost", n(job.cost))
        .expression_attribute_values(":cap_free", n(caps.free))
        .expression_attribute_values(":cap_standard", n(caps.standard))
        .expression_attribute_values(":cap_premium", n(caps.premium))
        .expression_attribute_values(":standard", s("standard"))
        .expression_attribute_values(":premium", s("premium"))
        .expression_attribute_values(":now", s(&created_at))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .context("update")?;
    let mut actions = vec![
        TransactWriteItem::builder()
            .put(put.build().context("put")?)
            .build(),
        TransactWriteItem::builder().update(charge).build(),
    ];
    if job.cost > 0 {
        let ledger = Put::builder()
            .table_name(&db.table)
            .condition_expression("attribute_not_exists(pk)")
            .item("pk", s(keys::user(job.user_id)))
            .item("sk", s(keys::ledger(job.id, "debit")))
            .item("amount", n(-job.cost))
            .item("reason", s(crate::credits::kinds::JOB_DEBIT))
            .item("job_id", s(job.id))
            .item("created_at", s(&created_at))
            .build()
            .context("put")?;
        actions.push(TransactWriteItem::builder().put(ledger).build());
    }
    actions.push(crate::jobs::outbox::record(
        db, job.outbox, job.id, job.queue,
    )?);
    let idempotency_index = actions.len();
    if let Some((key, hash)) = job.idempotency {
        let record = Put::builder()
            .table_name(&db.table)
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now_epoch")
            .expression_attribute_values(":now_epoch", n(now.timestamp()))
            .item("pk", s(keys::idempotency(job.user_id, key)))
            .item("sk", s(keys::IDEMPOTENCY))
            .item("request_hash", s(hash))
            .item("job_id", s(job.id))
            .item("expires_at", n(now.timestamp() + 86_400))
            .build()
            .context("put")?;
        actions.push(TransactWriteItem::builder().put(record).build());
    }

    if let Err(err) = crate::db::transact(db, actions).await {
        let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) =
            err.as_service_error()
        else {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("admitting a job"),
            ));
        };
        let reasons = cancel.cancellation_reasons();
        if let Some((key, hash)) = job.idempotency
            && reasons.get(idempotency_index).is_some_and(condition_failed)
        {
            return replay(db, job.user_id, key, hash).await;
        }
        if let Some(user) = reasons.get(1).filter(|r| condition_failed(r)) {
            return Err(refusal(user.item(), job.cost, caps, &created_at));
        }
        return Err(ApiError::Internal(anyhow::anyhow!(
            "admission cancelled: {reasons:?}"
        )));
    }
    let admitted = Job {
        id: job.id.to_owned(),
        user_id: job.user_id.to_owned(),
        kind: job.kind.to_owned(),
        input: job.input.clone(),
        status: Status::InQueue,
        progress: 0,
        progress_message: None,
        cancel_requested: false,
        cost: job.cost,
        charged: None,
        error: None,
        output: None,
        webhook_url: job.webhook_url.map(str::to_owned),
        webhook_secret: job.webhook_secret.map(str::to_owned),
        provider: None,
        created_at,
        started_at: None,
        finished_at: None,
        deadline,
        share: job.share.cloned(),
    };
    Ok(Admission::Admitted(Box::new(admitted)))
}

/// Tells from the owner's item (as it was) why admission was refused.
fn refusal(
    user: Option<&HashMap<String, AttributeValue>>,
    cost: i64,
    caps: &JobCaps,
    now: &str,
) -> ApiError {
    let Some(user) = user else {
        return ApiError::NotFound("the account no longer exists");
    };
    let balance = get_i64(user, "credits").unwrap_or(0);
    if balance < cost {
        return ApiError::InsufficientCredits { balance, cost };
    }
    let lapsed = get_s(user, "tier_expires_at").is_some_and(|t| t <= now);
    let cap = match (get_s(user, "tier"), lapsed) {
        (Some("premium"), false) => caps.premium,
        (Some("standard"), false) => caps.standard,
        _ => caps.free,
    };
    ApiError::TooManyJobs {
        max_concurrent: cap,
    }
}

async fn replay(db: &Db, user_id: &str, key: &str, hash: &str) -> Result<Admission, ApiError> {
    let record = db
        .get(&keys::idempotency(user_id, key), keys::IDEMPOTENCY)
        .await?
        .context("the idempotency record vanished")?;
    if get_s(&record, "request_hash") != Some(hash) {
        return Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            detail: "this Idempotency-Key was used with another request in the last 24 hours"
                .into(),
        });
    }
    let job_id = get_s(&record, "job_id").context("idempotency record lacks job_id")?;
    Ok(Admission::Replayed(job_id.to_owned()))
}

/// Reads a job by id (strongly consistent).
pub async fn get(db: &Db, job_id: &str) -> anyhow::Result<Option<Job>> {
    db.get(&keys::job(job_id), keys::JOB)
        .await?
        .map(|item| Job::from_item(&item))
        .transpose()
}

/// Deletes a finished job's record (a deleted photo). `false` when the job is not finished.
/// Once: a plain DeleteItem answered late would be sent again, find nothing, and read as "not
/// finished".
pub async fn delete_finished(db: &Db, job_id: &str) -> anyhow::Result<bool> {
    let delete = crate::db::tx::delete(
        db,
        (&keys::job(job_id), keys::JOB),
        Some("#status IN (:completed, :failed, :canceled)"),
        &[("#status", "status")],
        vec![
            (":completed", s(Status::Completed.as_str())),
            (":failed", s(Status::Failed.as_str())),
            (":canceled", s(Status::Canceled.as_str())),
        ],
    )?;
    crate::db::once(db, delete).await
}

/// Filters of a job listing.
#[derive(Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    /// Any of these kinds; empty for all.
    pub kinds: Vec<String>,
}

/// A page of the owner's jobs, newest first, after the job `after` (exclusive).
pub async fn list(
    db: &Db,
    user_id: &str,
    filter: &ListFilter,
    limit: usize,
    after: Option<&str>,
) -> anyhow::Result<(Vec<Job>, Option<String>)> {
    let mut jobs = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = after.map(|id| {
        HashMap::from([
            ("pk".to_owned(), s(keys::job(id))),
            ("sk".to_owned(), s(keys::JOB)),
            ("gsi1pk".to_owned(), s(keys::jobs_of(user_id))),
            ("gsi1sk".to_owned(), s(id)),
        ])
    });
    // A filtered page may take several reads; a bounded number keeps one request bounded.
    for _ in 0..10 {
        let mut query = db
            .client
            .query()
            .table_name(&db.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :owner")
            .expression_attribute_values(":owner", s(keys::jobs_of(user_id)))
            .scan_index_forward(false)
            .limit(i32::try_from(limit - jobs.len()).unwrap_or(100))
            .set_exclusive_start_key(start.take());
        let mut filters = Vec::new();
        if let Some(status) = filter.status {
            filters.push("#status = :status".to_owned());
            query = query
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status.as_str()));
        }
        if !filter.kinds.is_empty() {
            let names: Vec<String> = (0..filter.kinds.len())
                .map(|i| format!(":kind{i}"))
                .collect();
            filters.push(format!("#kind IN ({})", names.join(", ")));
            query = query.expression_attribute_names("#kind", "kind");
            for (name, kind) in names.iter().zip(&filter.kinds) {
                query = query.expression_attribute_values(name, s(kind));
            }
        }
        if !filters.is_empty() {
            query = query.filter_expression(filters.join(" AND "));
        }
        let out = query.send().await.context("listing jobs")?;
        for item in out.items() {
            jobs.push(Job::from_item(item)?);
        }
        start = out.last_evaluated_key;
        if start.is_none() || jobs.len() >= limit {
            break;
        }
    }
    let next = start.and_then(|key| get_s(&key, "gsi1sk").map(str::to_owned));
    Ok((jobs, next))
}

/// Claims a queued job for a worker: `IN_QUEUE → IN_PROGRESS`, with its run deadline. `None` when
/// the job is not queued (a duplicate or late delivery).
///
/// The claim names itself (`claim_id`, new for each call). An update whose answer comes after
/// the SDK's attempt timeout is sent again, and the second try finds the job already running; the
/// old item it gets back says whether that claim was this one (run it) or another worker's.
pub async fn claim(
    db: &Db,
    job_id: &str,
    run_for: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Job>> {
    let deadline = now.timestamp() + i64::try_from(run_for.as_secs()).unwrap_or(i64::MAX / 2) + 1;
    let claim_id = uuid::Uuid::new_v4().to_string();
    let result = job_update(db, job_id)
        .update_expression(
            "SET #status = :running, started_at = :now, updated_at = :now, deadline = :deadline, gsi2sk = :deadline, \
             claim_id = :claim, attempts = if_not_exists(attempts, :zero) + :one",
        )
        .condition_expression("#status = :queued")
        .expression_attribute_values(":running", s(Status::InProgress.as_str()))
        .expression_attribute_values(":queued", s(Status::InQueue.as_str()))
        .expression_attribute_values(":now", s(timestamp(now)))
        .expression_attribute_values(":deadline", n(deadline))
        .expression_attribute_values(":claim", s(&claim_id))
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1))
        .return_values(ReturnValue::AllNew)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    let item = match crate::db::update_or_old(result).context("claiming a job")? {
        Ok(out) => out.attributes.context("claim returned nothing")?,
        Err(Some(old)) if get_s(&old, "claim_id") == Some(claim_id.as_str()) => old,
        Err(_) => return Ok(None),
    };
    Ok(Some(Job::from_item(&item)?))
}

/// An update of one job, with `#status` naming its status attribute.
fn job_update(
    db: &Db,
    job_id: &str,
) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    db.client
        .update_item()
        .table_name(&db.table)
        .key("pk", s(keys::job(job_id)))
        .key("sk", s(keys::JOB))
        .expression_attribute_names("#status", "status")
}

/// Sets `:progress` and `:now`, plus `extra` assignments, and the message (or removes it).
///
/// Each report also writes its own id and the progress before it: a report answered after the
/// SDK's attempt timeout is sent again, and the retry's old item is then the first attempt's
/// (its progress this report's own), from which [`before_report`] still reads the progress
/// before. (Without it the retry read "no change", and the `job.progress` event of a new quarter
/// was lost.)
/// Returns the request and the report's id.
fn with_progress(
    request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    message: Option<&str>,
    extra: &str,
) -> (
    aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    String,
) {
    let report = uuid::Uuid::new_v4().to_string();
    let request = request
        .expression_attribute_values(":report", s(&report))
        .expression_attribute_values(":none", n(0));
    let set = "SET progress_before = if_not_exists(progress, :none), progress = :progress, \
               progress_report = :report, updated_at = :now";
    let request = match message {
        Some(message) => request
            .update_expression(format!("{set}, progress_message = :message{extra}"))
            .expression_attribute_values(
                ":message",
                s(message.chars().take(200).collect::<String>()),
            ),
        None => request.update_expression(format!("{set}{extra} REMOVE progress_message")),
    };
    (request, report)
}

/// The progress before report `report`, from the item as it was when the report was written:
/// the progress there, or, when that item is this report's own first attempt, the progress it
/// found.
fn before_report(old: Option<&HashMap<String, AttributeValue>>, report: &str) -> u8 {
    let percent = |name| {
        old.and_then(|i| get_i64(i, name))
            .and_then(|p| u8::try_from(p.clamp(0, 100)).ok())
            .unwrap_or(0)
    };
    if old.and_then(|i| get_s(i, "progress_report")) == Some(report) {
        percent("progress_before")
    } else {
        percent("progress")
    }
}

/// What recording progress found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reported {
    /// Recorded; the progress before it.
    Recorded { before: u8 },
    /// The job should stop: cancel was requested, or it is no longer running (the reaper failed it).
    Stop,
}

/// Records progress of a running job, or says that it should stop.
pub async fn report_progress(
    db: &Db,
    job_id: &str,
    percent: u8,
    message: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Reported> {
    let request = job_update(db, job_id)
        .condition_expression("#status = :running")
        .expression_attribute_values(":running", s(Status::InProgress.as_str()))
        .expression_attribute_values(":progress", n(percent.min(100)))
        .expression_attribute_values(":now", s(timestamp(now)))
        .return_values(ReturnValue::AllOld);
    let (request, report) = with_progress(request, message, "");
    // No longer running (the reaper failed it) reads as a request to stop.
    let Some(out) = unless_condition_failed(request.send().await).context("recording progress")?
    else {
        return Ok(Reported::Stop);
    };
    let old = out.attributes.as_ref();
    let canceled = old
        .and_then(|a| a.get("cancel_requested"))
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false);
    Ok(if canceled {
        Reported::Stop
    } else {
        Reported::Recorded {
            before: before_report(old, &report),
        }
    })
}

/// Puts a running job back in the queue after a retryable failure, so the redelivery can claim it.
pub async fn requeue(db: &Db, job_id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    let result = job_update(db, job_id)
        .update_expression(
            "SET #status = :queued, updated_at = :now, progress = :zero REMOVE started_at",
        )
        .condition_expression("#status = :running")
        .expression_attribute_values(":queued", s(Status::InQueue.as_str()))
        .expression_attribute_values(":running", s(Status::InProgress.as_str()))
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":now", s(timestamp(now)))
        .send()
        .await;
    // `None`: it was no longer running; nothing to put back.
    unless_condition_failed(result).context("requeueing a job")?;
    Ok(())
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed(Value),
    Failed { kind: String, message: String },
    Canceled { message: String },
}

impl Outcome {
    pub fn failed(kind: &str, message: impl Into<String>) -> Self {
        Self::Failed {
            kind: kind.to_owned(),
            message: message.into(),
        }
    }
}

/// What a release needs to know of a job.
#[derive(Clone, Debug)]
pub struct JobRef {
    pub id: String,
    pub user_id: String,
    pub cost: i64,
    /// The outside provider running it, if any (to cancel there when the job is reaped).
    pub provider: Option<ProviderJob>,
    /// Who earns a share when it completes (unknown to the index of unfinished jobs: the
    /// reaper only fails jobs).
    pub share: Option<crate::jobs::model::Share>,
}

/// What the index of unfinished jobs projects of a job.
#[derive(serde::Deserialize)]
struct StoredRef {
    id: String,
    user_id: String,
    #[serde(default)]
    cost: i64,
    provider: Option<crate::domain::ProviderName>,
    provider_model: Option<String>,
    provider_request_id: Option<String>,
}

impl From<&Job> for JobRef {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id.clone(),
            user_id: job.user_id.clone(),
            cost: job.cost,
            provider: job.provider.clone(),
            share: job.share.clone(),
        }
    }
}

/// Ends a job in one transaction: its status (only if not already final), the owner's slot
/// (`active_jobs > 0`), and on failure or cancellation the refund with a ledger entry keyed by the
/// job (`attribute_not_exists`). A completed job `charged` less than its cost (priced by what it
/// used) gets the difference back in the same transaction, with a `job_settle` line keyed by the
/// job. Returns `false` when the job had already ended: a second release changes nothing.
pub async fn release(
    db: &Db,
    job: &JobRef,
    outcome: &Outcome,
    charged: Option<i64>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let share = match outcome {
        Outcome::Completed(_) => job.share.as_ref(),
        _ => None,
    };
    let settle = match (outcome, charged) {
        (Outcome::Completed(_), Some(charged)) => {
            // Never more than the estimate debited at admission, never less than a share's price.
            let floor = job.share.as_ref().map_or(0, |s| s.price);
            if charged > job.cost {
                tracing::warn!(job_id = %job.id, charged, estimate = job.cost, "used more than its estimate: the estimate is kept");
            }
            let kept = charged.clamp(floor.min(job.cost), job.cost);
            Some(Settle {
                kept,
                back: job.cost - kept,
            })
        }
        _ => None,
    };
    let paying = Paying { share, settle };
    match release_paying(db, job, outcome, &paying, now).await {
        Err(Release::PayeeGone) => {
            tracing::warn!(job_id = %job.id, "the account that earns a share of the job is gone: nothing earned");
            let paying = Paying {
                share: None,
                ..paying
            };
            release_paying(db, job, outcome, &paying, now)
                .await
                .map_err(Release::into_error)
        }
        other => other.map_err(Release::into_error),
    }
}

/// What a completed job priced by its use keeps of its cost, and gives back.
#[derive(Clone, Copy)]
struct Settle {
    kept: i64,
    back: i64,
}

/// What a release moves besides the slot and a refund.
struct Paying<'a> {
    share: Option<&'a crate::jobs::model::Share>,
    settle: Option<Settle>,
}

/// Why a release did not happen.
enum Release {
    /// The share's payee has no account any more.
    PayeeGone,
    Failed(anyhow::Error),
}

impl Release {
    fn into_error(self) -> anyhow::Error {
        match self {
            Self::PayeeGone => anyhow::anyhow!("the payee is gone"),
            Self::Failed(err) => err,
        }
    }
}

impl From<anyhow::Error> for Release {
    fn from(err: anyhow::Error) -> Self {
        Self::Failed(err)
    }
}

/// [`release`], paying `share` (a completed job's) in the same transaction: the payee's
/// credits and its `earning` line keyed by the job.
async fn release_paying(
    db: &Db,
    job: &JobRef,
    outcome: &Outcome,
    paying: &Paying<'_>,
    now: DateTime<Utc>,
) -> Result<bool, Release> {
    let share = paying.share;
    let now_text = timestamp(now);
    // What goes back to the owner, and the ledger line's kind and key.
    let (status, back) = match outcome {
        Outcome::Completed(_) => (
            Status::Completed,
            paying
                .settle
                .filter(|s| s.back > 0)
                .map(|s| (s.back, crate::credits::kinds::JOB_SETTLE, "settle")),
        ),
        Outcome::Failed { .. } => (
            Status::Failed,
            (job.cost > 0).then_some((job.cost, crate::credits::kinds::JOB_REFUND, "refund")),
        ),
        Outcome::Canceled { .. } => (
            Status::Canceled,
            (job.cost > 0).then_some((job.cost, crate::credits::kinds::JOB_REFUND, "refund")),
        ),
    };
    let mut finish = Update::builder()
        .table_name(&db.table)
        .key("pk", s(keys::job(&job.id)))
        .key("sk", s(keys::JOB))
        .condition_expression("#status IN (:queued, :running)")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":queued", s(Status::InQueue.as_str()))
        .expression_attribute_values(":running", s(Status::InProgress.as_str()))
        .expression_attribute_values(":final", s(status.as_str()))
        .expression_attribute_values(":now", s(&now_text));
    let base = "SET #status = :final, finished_at = :now, updated_at = :now";
    let base = match paying.settle {
        Some(settle) => {
            finish = finish.expression_attribute_values(":charged", n(settle.kept));
            format!("{base}, charged = :charged")
        }
        None => base.to_owned(),
    };
    finish = match outcome {
        Outcome::Completed(output) => finish
            .update_expression(format!("{base}, progress = :hundred, #output = :output REMOVE gsi2pk, gsi2sk, gsi3pk, gsi3sk, progress_message"))
            .expression_attribute_names("#output", "output")
            .expression_attribute_values(":hundred", n(100))
            .expression_attribute_values(":output", s(output.to_string())),
        Outcome::Failed { kind, message } => finish
            .update_expression(format!("{base}, error_type = :type, error_message = :message REMOVE gsi2pk, gsi2sk, gsi3pk, gsi3sk"))
            .expression_attribute_values(":type", s(kind))
            .expression_attribute_values(":message", s(message.chars().take(500).collect::<String>())),
        Outcome::Canceled { message } => finish
            .update_expression(format!("{base}, error_type = :type, error_message = :message REMOVE gsi2pk, gsi2sk, gsi3pk, gsi3sk"))
            .expression_attribute_values(":type", s("canceled_by_user"))
            .expression_attribute_values(":message", s(message)),
    };
    let mut slot = Update::builder()
        .table_name(&db.table)
        .key("pk", s(keys::user(&job.user_id)))
        .key("sk", s(keys::PROFILE))
        .condition_expression("active_jobs > :zero")
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1));
    slot = if let Some((amount, _, _)) = back {
        slot.update_expression("SET active_jobs = active_jobs - :one, credits = credits + :cost")
            .expression_attribute_values(":cost", n(amount))
    } else {
        slot.update_expression("SET active_jobs = active_jobs - :one")
    };
    let mut actions = vec![
        TransactWriteItem::builder()
            .update(finish.build().context("update")?)
            .build(),
        TransactWriteItem::builder()
            .update(slot.build().context("update")?)
            .build(),
    ];
    if let Some((amount, kind, key)) = back {
        let ledger = Put::builder()
            .table_name(&db.table)
            .condition_expression("attribute_not_exists(pk)")
            .item("pk", s(keys::user(&job.user_id)))
            .item("sk", s(keys::ledger(&job.id, key)))
            .item("amount", n(amount))
            .item("reason", s(kind))
            .item("job_id", s(&job.id))
            .item("created_at", s(&now_text))
            .build()
            .context("put")?;
        actions.push(TransactWriteItem::builder().put(ledger).build());
    }
    let payee_index = actions.len();
    if let Some(share) = share.filter(|s| s.earning > 0) {
        actions.push(crate::db::tx::update(
            db,
            (&keys::user(&share.payee), keys::PROFILE),
            "SET credits = credits + :earning, earned_credits = if_not_exists(earned_credits, :zero) + :earning, payable_credits = if_not_exists(payable_credits, :zero) + :earning",
            Some("attribute_exists(pk) AND attribute_not_exists(deleted_at)"),
            &[],
            vec![(":earning", n(share.earning)), (":zero", n(0))],
        )?);
        actions.push(
            crate::credits::Movement {
                user_id: &share.payee,
                amount: share.earning,
                kind: crate::credits::kinds::EARNING,
                entry: &job.id,
                links: crate::credits::Links {
                    job_id: Some(&job.id),
                    style_id: share.style_id.as_deref(),
                    ..crate::credits::Links::default()
                },
                note: None,
                by: None,
            }
            .line(db, now)?,
        );
    }
    match crate::db::transact(db, actions).await {
        Ok(()) => Ok(true),
        Err(err) => match crate::db::cancellation_codes(&err) {
            Some(codes) if codes.first().map(String::as_str) == Some("ConditionalCheckFailed") => {
                Ok(false)
            }
            Some(codes)
                if codes.get(payee_index).map(String::as_str) == Some("ConditionalCheckFailed") =>
            {
                Err(Release::PayeeGone)
            }
            _ => Err(Release::Failed(
                anyhow::Error::new(err).context(format!("releasing job {}", job.id)),
            )),
        },
    }
}

/// Asks a running job to stop at its next checkpoint. `false` if the job is not running, or if
/// an outside provider holds it now (there it is canceled at the provider instead: the provider
/// path never reads this flag after the submission is recorded, and the submission's record is
/// conditional on the flag's absence, so exactly one of the two writes wins).
pub async fn request_cancel(db: &Db, job_id: &str, now: DateTime<Utc>) -> anyhow::Result<bool> {
    let result = job_update(db, job_id)
        .update_expression("SET cancel_requested = :yes, updated_at = :now")
        .condition_expression("#status = :running AND attribute_not_exists(provider_request_id)")
        .expression_attribute_values(":running", s(Status::InProgress.as_str()))
        .expression_attribute_values(":yes", AttributeValue::Bool(true))
        .expression_attribute_values(":now", s(timestamp(now)))
        .send()
        .await;
    Ok(unless_condition_failed(result)
        .context("requesting cancellation")?
        .is_some())
}

/// Items of a sharded sparse index (`{prefix}#0..shards`) whose number sort key is below `upper`.
async fn below_in_shards(
    db: &Db,
    index: &str,
    prefix: &str,
    shards: u32,
    upper: i64,
    limit: usize,
) -> anyhow::Result<Vec<HashMap<String, AttributeValue>>> {
    let mut found = Vec::new();
    for shard in 0..shards {
        let out = db
            .client
            .query()
            .table_name(&db.table)
            .index_name(index)
            .key_condition_expression(format!("{index}pk = :shard AND {index}sk < :upper"))
            .expression_attribute_values(":shard", s(format!("{prefix}#{shard}")))
            .expression_attribute_values(":upper", n(upper))
            .limit(i32::try_from(limit).unwrap_or(100))
            .send()
            .await
            .with_context(|| format!("querying {index}"))?;
        found.extend(out.items.unwrap_or_default());
    }
    Ok(found)
}

/// Unfinished jobs whose deadline has passed, from every shard of the active index.
pub async fn overdue(db: &Db, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<JobRef>> {
    let items = below_in_shards(
        db,
        "gsi2",
        "ACTIVE",
        keys::ACTIVE_SHARDS,
        now.timestamp(),
        limit,
    )
    .await?;
    Ok(items
        .iter()
        .filter_map(|item| {
            // One read of the projection: the reference and its provider fields.
            let stored: StoredRef = serde_dynamo::from_item(item.clone()).ok()?;
            Some(JobRef {
                id: stored.id,
                user_id: stored.user_id,
                cost: stored.cost,
                provider: StoredProvider {
                    provider: stored.provider,
                    provider_model: stored.provider_model,
                    provider_request_id: stored.provider_request_id,
                }
                .into_job(),
                share: None,
            })
        })
        .collect())
}

/// What recording a submission found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The provider holds the job now.
    Recorded,
    /// Its owner asked to cancel it meanwhile: the caller cancels the request at the provider and
    /// ends the job as canceled.
    CancelRequested,
    /// It ended meanwhile (reaped) or already had a request: the caller cancels the new request.
    Ended,
}

/// Records that a running job was handed to a provider, before anything else happens to it: the
/// provider's request id, the run deadline, and now as the last news of it (the reconciler polls
/// jobs whose last news is old). Only while it runs, has no request yet and no cancel was asked.
pub async fn record_submission(
    db: &Db,
    job_id: &str,
    provider: &ProviderJob,
    run_for: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<Recorded> {
    let deadline = now.timestamp() + i64::try_from(run_for.as_secs()).unwrap_or(i64::MAX / 2) + 1;
    let result = job_update(db, job_id)
        .update_expression(
            "SET provider = :provider, provider_model = :model, provider_request_id = :request, \
             submitted_at = :now, updated_at = :now, deadline = :deadline, gsi2sk = :deadline, \
             gsi3pk = :shard, gsi3sk = :heard",
        )
        .condition_expression(
            "#status = :running AND attribute_not_exists(provider_request_id) \
             AND (attribute_not_exists(cancel_requested) OR cancel_requested = :no)",
        )
        .expression_attribute_values(":running", s(Status::InProgress.as_str()))
        .expression_attribute_values(":no", AttributeValue::Bool(false))
        .expression_attribute_values(":provider", s(provider.name.as_str()))
        .expression_attribute_values(":model", s(&provider.model))
        .expression_attribute_values(":request", s(&provider.request_id))
        .expression_attribute_values(":now", s(timestamp(now)))
        .expression_attribute_values(":deadline", n(deadline))
        .expression_attribute_values(":shard", s(keys::poll_shard(job_id)))
        .expression_attribute_values(":heard", n(now.timestamp()))
        // What stopped the record comes back with the refusal: no second read.
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    let old = match crate::db::update_or_old(result).context("recording a submission")? {
        Ok(_) => return Ok(Recorded::Recorded),
        Err(old) => old,
    };
    // This very record, committed by a try whose answer came too late (the SDK sent it again).
    if old.as_ref().is_some_and(|item| {
        get_s(item, "provider_request_id") == Some(provider.request_id.as_str())
            && get_s(item, "provider") == Some(provider.name.as_str())
    }) {
        return Ok(Recorded::Recorded);
    }
    let job = old.map(|item| Job::from_item(&item)).transpose()?;
    Ok(match job {
        Some(job)
            if job.status == Status::InProgress
                && job.cancel_requested
                && job.provider.is_none() =>
        {
            Recorded::CancelRequested
        }
        _ => Recorded::Ended,
    })
}

/// Records progress a provider reported for a running job (news of it: polling is put off).
/// Progress only rises: a replayed or late report changes nothing. Returns the progress before,
/// or `None` when nothing changed.
pub async fn record_provider_progress(
    db: &Db,
    job_id: &str,
    percent: u8,
    message: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<u8>> {
    let request = job_update(db, job_id)
        .condition_expression(
            "#status = :running AND attribute_exists(provider_request_id) \
             AND (attribute_not_exists(progress) OR progress < :progress)",
        )
        .expression_attribute_values(":running", s(Status::InProgress.as_str()))
        .expression_attribute_values(":progress", n(percent.min(100)))
        .expression_attribute_values(":now", s(timestamp(now)))
        .expression_attribute_values(":heard", n(now.timestamp()))
        .return_values(ReturnValue::AllOld)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    let (request, report) = with_progress(request, message, ", gsi3sk = :heard");
    Ok(
        match crate::db::update_or_old(request.send().await)
            .context("recording provider progress")?
        {
            Ok(out) => Some(before_report(out.attributes.as_ref(), &report)),
            // A retry of this report whose first attempt was answered late: recorded by it.
            Err(Some(old)) if get_s(&old, "progress_report") == Some(report.as_str()) => {
                Some(before_report(Some(&old), &report))
            }
            Err(_) => None,
        },
    )
}

/// Records that a job still running at its provider was just polled.
pub async fn postpone_poll(db: &Db, job_id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    let result = job_update(db, job_id)
        .update_expression("SET gsi3sk = :heard")
        .condition_expression("#status = :running AND attribute_exists(gsi3pk)")
        .expression_attribute_values(":running", s(Status::InProgress.as_str()))
        .expression_attribute_values(":heard", n(now.timestamp()))
        .send()
        .await;
    unless_condition_failed(result).context("postponing a poll")?;
    Ok(())
}

/// Jobs at a provider with no news for `quiet` (no webhook came), from every shard.
pub async fn due_for_poll(
    db: &Db,
    quiet: Duration,
    now: DateTime<Utc>,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    let before = now.timestamp() - i64::try_from(quiet.as_secs()).unwrap_or(300);
    let items = below_in_shards(db, "gsi3", "POLL", keys::POLL_SHARDS, before, limit).await?;
    Ok(items
        .iter()
        .filter_map(|item| get_s(item, "id").map(str::to_owned))
        .collect())
}
