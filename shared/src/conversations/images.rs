//! `/v1/sessions/{id}/images`: image generation and edits as messages of an `image` or `studio`
//! session. Asking stores the prompt and a pending reply (both `kind: image`) and submits a
//! `generate` job with the given input through the jobs core, like `POST /v1/jobs` (same checks,
//! cap and credits); the reply names the job, and follows it to its end. The reference images an
//! edit names (`image_to_image`'s `upload_key`) are kept with the session, and the session's
//! outputs are listed with their files.

use anyhow::Context as _;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::conversations::messages::{self, Message, MessageKind};
use crate::conversations::{path_id, sessions};
use crate::cursor::Paging;
use crate::db::s;
use crate::error::ApiError;
use crate::http::{Caller, json, json_body};
use crate::jobs::handlers::{CreateJob, JobView, Submitted};
use crate::keys;
use crate::state::State;

/// The job kind an image is asked of.
const GENERATE: &str = "generate";
/// The kinds of session that hold images.
const IMAGE_SESSIONS: &[&str] = &["image", "studio"];
/// Reference images a session keeps.
pub const MAX_REFERENCES: usize = 20;

/// `POST /v1/sessions/{id}/images`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskImage {
    /// A `generate` input (`POST /v1/jobs`): `{provider, model, task: text_to_image |
    /// image_to_image, prompt, upload_key?, width?, height?, num_images?, style_id?, …}`.
    #[schema(value_type = Object)]
    pub input: Value,
}

/// What asking for an image started.
#[derive(Serialize, ToSchema)]
pub struct AskedImage {
    pub user_message: Message,
    pub reply: Message,
    pub job: Submitted,
}

/// An image reply with its job (status, and its files once completed).
#[derive(Serialize, ToSchema)]
pub struct SessionImage {
    pub message: Message,
    pub job: Option<JobView>,
}

/// A reference image of the session.
#[derive(Serialize, ToSchema)]
pub struct Reference {
    /// The upload key, to name in another edit.
    pub upload_key: String,
    /// A presigned GET, for 15 minutes.
    pub url: String,
}

/// The session's image replies, oldest first, and its reference images.
#[derive(Serialize, ToSchema)]
pub struct SessionImages {
    pub items: Vec<SessionImage>,
    pub references: Vec<Reference>,
    pub next_cursor: Option<String>,
}

/// Asks for an image in one of your image or studio sessions: `202` with the prompt, the pending
/// reply and the `generate` job.
#[utoipa::path(post, path = "/v1/sessions/{id}/images", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = AskImage,
    responses((status = 202, body = AskedImage), (status = 402, description = "insufficient_credits", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, description = "the generate input's problems; session_kind; too_many_messages", body = crate::error::Problem),
        (status = 429, description = "max_concurrent_jobs", body = crate::error::Problem)))]
pub async fn ask_image(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(sessions::not_found)?;
    let body: AskImage = json_body(&req, &["application/json"])?;
    crate::conversations::session_of(state, &caller.user_id, &id, IMAGE_SESSIONS, "images").await?;
    let prompt = body.input["prompt"].as_str().unwrap_or_default().to_owned();
    let model = body.input["model"].as_str().unwrap_or(GENERATE).to_owned();
    let (user_message, reply_id) = messages::store_pair(
        state,
        &caller.user_id,
        &id,
        &prompt,
        MessageKind::Image,
        &model,
        &[],
    )
    .await?;
    let job = CreateJob {
        kind: GENERATE.to_owned(),
        input: body.input.clone(),
        webhook_url: None,
    };
    let submitted = match crate::jobs::handlers::submit(state, &caller, None, &job).await {
        Ok(submitted) => submitted,
        Err(err) => {
            messages::take_back(state, &caller.user_id, &id, &user_message, &reply_id).await;
            return Err(err);
        }
    };
    let pk = keys::chat_messages(&id);
    state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::message(&reply_id)))
        .update_expression("SET job_id = :job")
        .expression_attribute_values(":job", s(&submitted.id))
        .send()
        .await
        .context("naming an image reply's job")?;
    // The job's way back to its message, for the reply to follow it to its end.
    state
        .db
        .client
        .put_item()
        .table_name(&state.db.table)
        .item("pk", s(keys::job(&submitted.id)))
        .item("sk", s(keys::JOB_MESSAGE))
        .item("session_id", s(id.as_str()))
        .item("message_id", s(&reply_id))
        .item(
            "expires_at",
            crate::db::n(chrono::Utc::now().timestamp() + 30 * 86_400),
        )
        .send()
        .await
        .context("linking an image job to its message")?;
    // The edit's reference image stays with the session (a set: once each, 20 at most).
    if let Some(key) = body.input["upload_key"].as_str() {
        let kept = state
            .db
            .client
            .update_item()
            .table_name(&state.db.table)
            .key("pk", s(keys::user(&caller.user_id)))
            .key("sk", s(keys::chat(&id)))
            .update_expression("ADD reference_keys :key")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(reference_keys) OR contains(reference_keys, :one) OR size(reference_keys) < :most)",
            )
            .expression_attribute_values(
                ":key",
                aws_sdk_dynamodb::types::AttributeValue::Ss(vec![key.to_owned()]),
            )
            .expression_attribute_values(":one", s(key))
            .expression_attribute_values(":most", crate::db::n(i64::try_from(MAX_REFERENCES).unwrap_or(20)))
            .send()
            .await;
        crate::db::unless_condition_failed(kept).context("keeping a reference image")?;
    }
    let id = &id;
    let read = |message_id: String| async move {
        messages::stored(state, id, &message_id)
            .await?
            .as_ref()
            .and_then(messages::view)
            .context("a message just stored")
    };
    json(
        StatusCode::ACCEPTED,
        &AskedImage {
            user_message: read(user_message).await?,
            reply: read(reply_id).await?,
            job: submitted,
        },
    )
}

/// Your image or studio session's image replies with their jobs (files presigned), oldest first,
/// and the reference images it keeps.
#[utoipa::path(get, path = "/v1/sessions/{id}/images", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = SessionImages), (status = 404, body = crate::error::Problem),
        (status = 422, description = "session_kind", body = crate::error::Problem)))]
pub async fn list_images(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(sessions::not_found)?;
    let session =
        crate::conversations::session_of(state, &caller.user_id, &id, IMAGE_SESSIONS, "images")
            .await?;
    let scope = format!("images|{}|{id}", caller.user_id);
    let page = Paging::from_request(&req, state.cursor_key().await?, scope)?;
    let (found, next) = messages::page_of(state, &id, &page, true).await?;
    let mut items = Vec::new();
    for message in found.iter().filter_map(messages::view) {
        let job = match message.job_id.as_deref() {
            Some(job_id) => crate::jobs::store::get(&state.db, job_id)
                .await?
                .filter(|job| job.user_id == caller.user_id),
            None => None,
        };
        let job = match job {
            Some(mut job) => {
                if let Some(present) = state.registry.get(&job.kind).and_then(|k| k.present) {
                    present(state, &mut job).await?;
                }
                Some(JobView::from(job))
            }
            None => None,
        };
        items.push(SessionImage { message, job });
    }
    let mut references = Vec::new();
    if let Some(keys) = session.get("reference_keys").and_then(|v| v.as_ss().ok()) {
        for key in keys {
            references.push(Reference {
                upload_key: key.clone(),
                url: crate::media::presign_get(state, key, std::time::Duration::from_secs(15 * 60))
                    .await?,
            });
        }
    }
    let next = page.next_cursor(next);
    json(
        StatusCode::OK,
        &SessionImages {
            items,
            references,
            next_cursor: next,
        },
    )
}
