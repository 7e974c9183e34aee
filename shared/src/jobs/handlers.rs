//! `/v1/jobs`: submit, list, read and cancel jobs.

use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;
use utoipa::ToSchema;

use crate::cursor::Paging;
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body, path_param, query_param};
use crate::jobs::model::{Job, Status};
use crate::jobs::outbox;
use crate::jobs::store::{self, Admission, JobRef, ListFilter, NewJob, Outcome};
use crate::state::State;

/// `POST /v1/jobs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// A registered kind, e.g. `sleep` where test kinds are enabled.
    pub kind: String,
    /// The kind's input.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Where to send signed `job.*` events (https; no internal addresses).
    pub webhook_url: Option<String>,
}

/// Links of a job.
#[derive(Serialize, ToSchema)]
pub struct JobUrls {
    #[serde(rename = "self")]
    pub self_: String,
    pub cancel: String,
}

impl JobUrls {
    fn of(id: &str) -> Self {
        Self {
            self_: format!("/v1/jobs/{id}"),
            cancel: format!("/v1/jobs/{id}/cancel"),
        }
    }
}

/// The 202 of a submission.
#[derive(Serialize, ToSchema)]
pub struct Submitted {
    pub id: String,
    pub status: Status,
    pub urls: JobUrls,
    /// With `webhook_url`: the `whsec_…` secret this job's webhooks are signed with (Standard
    /// Webhooks). Shown only in this answer (and its idempotent replays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// A job with its links.
#[derive(Serialize, ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    pub urls: JobUrls,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        let urls = JobUrls::of(&job.id);
        Self { job, urls }
    }
}

/// A page of jobs.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// The largest job input, as JSON.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

fn not_found() -> ApiError {
    ApiError::NotFound("no such job")
}

pub fn idempotency_key(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.chars().all(|c| c.is_ascii_graphic()));
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(ApiError::BadRequest {
            code: "invalid_idempotency_key",
            detail: "Idempotency-Key must be 1 to 255 printable ASCII characters".into(),
        }),
    }
}

fn accepted(submitted: Submitted) -> Result<Response<Body>, ApiError> {
    let id = submitted.id.clone();
    let mut response = json(StatusCode::ACCEPTED, &submitted)?;
    let location = format!("/v1/jobs/{id}")
        .parse()
        .map_err(|e: lambda_http::http::header::InvalidHeaderValue| ApiError::Internal(e.into()))?;
    response.headers_mut().insert("location", location);
    Ok(response)
}

/// Submits a job: validated, admitted in one transaction (cap and credits), then queued.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])), request_body = CreateJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first result for 24 hours")),
    responses((status = 202, body = Submitted), (status = 402, description = "insufficient_credits", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, description = "max_concurrent_jobs", body = crate::error::Problem)))]
pub async fn create_job(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let key = idempotency_key(&req)?;
    let body: CreateJob = json_body(&req, &["application/json"])?;
    let submitted = submit(state, &caller, key.as_deref(), &body).await?;
    accepted(submitted)
}

/// Validates, admits and queues a job (`POST /v1/jobs`, and the feature routes that make jobs such
/// as `POST /v1/photos/upscale`). Returns what the 202 says; a replayed idempotent submission
/// returns the first job's.
pub async fn submit(
    state: &State,
    caller: &Caller,
    key: Option<&str>,
    body: &CreateJob,
) -> Result<Submitted, ApiError> {
    admit_job(state, caller, key, body, true)
        .await
        .map(|(submitted, _)| submitted)
}

/// Validates and admits a job without sending its queue message (a job the caller runs here with
/// [`crate::jobs::worker::run_here`]): its outbox entry stays, so the worker runs it after the
/// grace period if this process never claims it. The caller removes the entry once it has run
/// the job.
pub async fn submit_here(
    state: &State,
    caller: &Caller,
    body: &CreateJob,
) -> Result<(Submitted, outbox::Entry), ApiError> {
    admit_job(state, caller, None, body, false).await
}

async fn admit_job(
    state: &State,
    caller: &Caller,
    key: Option<&str>,
    body: &CreateJob,
    send: bool,
) -> Result<(Submitted, outbox::Entry), ApiError> {
    let Some(kind) = state.registry.get(&body.kind) else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "kind",
            format!(
                "unknown kind; this deployment offers: {}",
                state.registry.names().join(", ")
            ),
        )]));
    };
    let mut errors = Vec::new();
    // A job is one DynamoDB item (400 KB at most); inputs are parameters, files go through uploads.
    if body.input.to_string().len() > MAX_INPUT_BYTES {
        return Err(ApiError::invalid(
            "input",
            format!("must be at most {MAX_INPUT_BYTES} bytes of JSON"),
        ));
    }
    if let Err(mut input_errors) = (kind.validate)(&body.input) {
        errors.append(&mut input_errors);
    } else if let Err(error) = (kind.offered)(state, kind, &body.input) {
        errors.push(error);
    }
    let webhook_url = match &body.webhook_url {
        Some(url) => {
            crate::net::validate_url(url, "webhook_url", state.config.allow_private_webhooks)
                .map_err(|e| errors.push(e))
                .ok()
        }
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    state
        .registry
        .check(state, &caller.user_id, &body.input)
        .await?;
    let share = state
        .registry
        .share(state, &caller.user_id, &body.input)
        .await?;
    let cost = match kind.quote {
        Some(quote) => quote(state, &caller.user_id, &body.input).await?,
        None => (kind.cost)(&body.input),
    } + share.as_ref().map_or(0, |s| s.price);
    let hash = key.map(|_| {
        let canonical = serde_json::json!({"kind": body.kind, "input": body.input, "webhook_url": body.webhook_url});
        hex::encode(sha2::Sha256::digest(canonical.to_string().as_bytes()))
    });
    let now = Utc::now();
    let id = uuid::Uuid::now_v7().to_string();
    let webhook_secret = webhook_url
        .as_ref()
        .map(|_| crate::jobs::events::new_secret())
        .transpose()?;
    let grace = i64::try_from(state.config.outbox_grace.as_secs()).unwrap_or(15);
    let entry = outbox::Entry::of(&id, now.timestamp() + grace);
    let admission = store::admit(
        &state.db,
        NewJob {
            id: &id,
            user_id: &caller.user_id,
            kind: kind.name,
            input: &body.input,
            cost,
            webhook_url: webhook_url.as_deref(),
            webhook_secret: webhook_secret.as_deref(),
            idempotency: key.zip(hash.as_deref()),
            queue: kind.queue,
            outbox: &entry,
            share: share.as_ref(),
        },
        &state.config.job_caps,
        now,
    )
    .await?;
    let job = match admission {
        Admission::Replayed(existing) => {
            let job = store::get(&state.db, &existing)
                .await?
                .ok_or_else(not_found)?;
            return Ok((
                Submitted {
                    urls: JobUrls::of(&job.id),
                    id: job.id,
                    status: job.status,
                    webhook_secret: job.webhook_secret,
                },
                entry,
            ));
        }
        Admission::Admitted(job) => job,
    };
    tracing::info!(job_id = %job.id, kind = %job.kind, "admitted");
    let submitted = Submitted {
        urls: JobUrls::of(&job.id),
        id: job.id.clone(),
        status: job.status,
        webhook_secret,
    };
    if !send {
        return Ok((submitted, entry));
    }
    // Admitted is queued: the outbox entry written with the admission guarantees the message.
    // Sending it now is the fast path; if that fails, the reaper sends it after the grace period.
    match outbox::send(state, kind.queue, &job.id).await {
        Ok(()) => {
            if let Err(err) = outbox::sent(&state.db, &entry).await {
                // The reaper will find the entry and see the job claimed (or send a duplicate).
                tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "outbox entry left");
            }
        }
        Err(err) => {
            tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "send failed; the outbox sends it later");
        }
    }
    Ok((submitted, entry))
}

/// Reads one of the caller's jobs; another user's job is a 404.
/// Deletes a finished job that is a thing of its own (a photo, a video): its files under `prefix`
/// first (a failure leaves the record, so the delete can be retried), then its record; 204. A job
/// still running is a 409 of type `code`, naming `what` it is.
pub async fn delete_finished_with_files(
    state: &State,
    job: &Job,
    prefix: &str,
    code: &'static str,
    what: &str,
) -> Result<Response<Body>, ApiError> {
    let processing = || ApiError::Conflict {
        code,
        detail: format!(
            "the {what} is still processing; cancel it first (POST /v1/jobs/{}/cancel)",
            job.id
        ),
    };
    if !job.status.is_terminal() {
        return Err(processing());
    }
    crate::media::delete_prefix(state, prefix)
        .await
        .map_err(|e| ApiError::Internal(e.context("deleting a job's files")))?;
    if !store::delete_finished(&state.db, &job.id).await? {
        return Err(processing());
    }
    tracing::info!(job_id = %job.id, what, "deleted");
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// The caller's job of the path's `{id}` when it is one of `kinds` (a photo, a video); anything
/// else, someone else's included, is a 404 saying `missing`.
pub async fn owned_of(
    state: &State,
    req: &Request,
    kinds: &[&str],
    missing: &'static str,
) -> Result<Job, ApiError> {
    match owned(state, req).await {
        Ok((_, job)) if kinds.contains(&job.kind.as_str()) => Ok(job),
        Ok(_) | Err(ApiError::NotFound(_)) => Err(ApiError::NotFound(missing)),
        Err(other) => Err(other),
    }
}

pub async fn owned(state: &State, req: &Request) -> Result<(Caller, Job), ApiError> {
    let caller = Caller::from_request(req)?;
    let id = path_param(req, "id")
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .ok_or_else(not_found)?;
    let job = store::get(&state.db, &id)
        .await?
        .filter(|job| job.user_id == caller.user_id)
        .ok_or_else(not_found)?;
    Ok((caller, job))
}

/// One job: status, progress, error, timestamps and output.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = JobView), (status = 404, body = crate::error::Problem)))]
pub async fn get_job(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let (_, mut job) = owned(state, &req).await?;
    if let Some(present) = state.registry.get(&job.kind).and_then(|kind| kind.present) {
        present(state, &mut job).await?;
    }
    json(StatusCode::OK, &JobView::from(job))
}

/// The caller's jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    params(("status" = Option<String>, Query), ("kind" = Option<String>, Query), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = JobPage), (status = 400, description = "invalid_cursor", body = crate::error::Problem)))]
pub async fn list_jobs(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let status = match query_param(&req, "status") {
        None => None,
        Some(raw) => Some(Status::parse(&raw.to_ascii_uppercase()).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "must be IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED or CANCELED",
            )
        })?),
    };
    let kind = query_param(&req, "kind");
    let filter = ListFilter {
        status,
        kinds: kind.into_iter().collect(),
    };
    let (jobs, next_cursor) = page_of_jobs(state, &req, &caller, "jobs", &filter).await?;
    let listed = JobPage {
        items: jobs.into_iter().map(JobView::from).collect(),
        next_cursor,
    };
    json(StatusCode::OK, &listed)
}

/// A page of the caller's jobs that `filter` selects, newest first, for the listing `listing`
/// (its cursors are signed for that listing and this caller): the jobs and the next cursor.
pub async fn page_of_jobs(
    state: &State,
    req: &Request,
    caller: &Caller,
    listing: &str,
    filter: &ListFilter,
) -> Result<(Vec<Job>, Option<String>), ApiError> {
    let scope = format!("{listing}|{}", caller.user_id);
    let page = Paging::from_request(req, state.cursor_key().await?, scope)?;
    let (jobs, next) = store::list(
        &state.db,
        &caller.user_id,
        filter,
        page.limit,
        page.after.as_deref(),
    )
    .await?;
    Ok((jobs, page.next_cursor(next)))
}

/// What one attempt to stop a job did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Canceled now (queued, or at a provider, which was told to stop): released and refunded.
    Canceled,
    /// Running here: asked to stop at its next checkpoint.
    Requested,
    /// It had ended already.
    Ended,
    /// It moved meanwhile (claimed, or ended): read it again and retry.
    Moved,
}

/// One attempt to stop `job` as it was read: a queued job is canceled at once, one at a provider
/// is canceled here and abandoned there, one running here is asked to stop at its next
/// checkpoint. Its owner's cancel and an account's deletion both stop jobs this way.
pub async fn stop(
    state: &State,
    job: &Job,
    message: &str,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<Stopped> {
    let outcome = Outcome::Canceled {
        message: message.to_owned(),
    };
    Ok(match job.status {
        Status::InQueue => {
            if crate::jobs::finish(state, &JobRef::from(job), &outcome, now).await? {
                Stopped::Canceled
            } else {
                Stopped::Moved
            }
        }
        // At a provider there is no checkpoint of ours: stop it there and end it here.
        Status::InProgress if job.provider.is_some() => {
            if crate::jobs::finish(state, &JobRef::from(job), &outcome, now).await? {
                state
                    .registry
                    .abandon(state, &job.id, job.provider.as_ref())
                    .await;
                Stopped::Canceled
            } else {
                Stopped::Moved
            }
        }
        Status::InProgress => {
            if store::request_cancel(&state.db, &job.id, now).await? {
                Stopped::Requested
            } else {
                Stopped::Moved
            }
        }
        Status::Completed | Status::Failed | Status::Canceled => Stopped::Ended,
    })
}

/// Cancels a job: a queued job at once (released, refunded); a running one at its next checkpoint.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "canceled", body = JobView), (status = 202, description = "cancellation requested", body = JobView),
        (status = 404, body = crate::error::Problem), (status = 409, description = "job_finished", body = crate::error::Problem)))]
pub async fn cancel_job(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let (_, mut job) = owned(state, &req).await?;
    // A job may move while we act; each attempt re-reads it. Three always suffice: it only moves forward.
    for _ in 0..3 {
        match stop(state, &job, "canceled by its owner", Utc::now()).await? {
            Stopped::Canceled => {
                tracing::info!(job_id = %job.id, "canceled");
                let job = store::get(&state.db, &job.id)
                    .await?
                    .ok_or_else(not_found)?;
                return json(StatusCode::OK, &JobView::from(job));
            }
            Stopped::Requested => {
                tracing::info!(job_id = %job.id, "cancellation requested");
                let job = store::get(&state.db, &job.id)
                    .await?
                    .ok_or_else(not_found)?;
                // The answer says what happened: canceled already, or asked and pending, or
                // the job ended otherwise before its next checkpoint.
                return match job.status {
                    Status::Canceled => json(StatusCode::OK, &JobView::from(job)),
                    Status::InQueue | Status::InProgress => {
                        json(StatusCode::ACCEPTED, &JobView::from(job))
                    }
                    Status::Completed | Status::Failed => Err(ApiError::Conflict {
                        code: "job_finished",
                        detail: format!(
                            "the job ended {} before it could be canceled",
                            job.status.as_str()
                        ),
                    }),
                };
            }
            Stopped::Ended => {
                return Err(ApiError::Conflict {
                    code: "job_finished",
                    detail: format!("the job already ended {}", job.status.as_str()),
                });
            }
            Stopped::Moved => {}
        }
        job = store::get(&state.db, &job.id)
            .await?
            .ok_or_else(not_found)?;
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "job {} kept changing during cancel",
        job.id
    )))
}
