//! `/v1/sessions/{id}/messages`: a session's messages, oldest first; posting one stores it with
//! its reply (pending) and starts a `chat` job that writes the reply; regenerating a reply starts
//! another job whose text becomes a new version, the earlier ones kept.
//!
//! Messages live in their session's partition (`CHATMSG#<session>`), reached only through the
//! session in its owner's partition: someone else's session, and so its messages, is a 404.
//! A reply shows its latest completed version; every version is an item of its own
//! (`VER#<message>#<job>`), so two regenerates at once write two versions and charge twice.

use anyhow::Context as _;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::conversations::llm::Usage;
use crate::conversations::{path_id, sessions};
use crate::cursor::Paging;
use crate::db::{Item, get_i64, get_s, n, s};
use crate::error::ApiError;
use crate::http::{Caller, json as json_response, json_body, path_param};
use crate::jobs::handlers::{CreateJob, Submitted};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// The longest message, in characters.
pub const MAX_CONTENT_CHARS: usize = 32_000;
/// The longest system prompt, in characters.
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 8_000;
/// Messages a session holds at most (a message and its reply are two).
pub const MAX_MESSAGES: i64 = 10_000;

/// `POST /v1/sessions/{id}/messages`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// 1 to 32,000 characters.
    pub content: String,
    /// One of this deployment's chat models (`GET /v1/chat/models`); by default the first.
    pub model: Option<String>,
    /// Up to 8,000 characters, sent first.
    pub system_prompt: Option<String>,
    /// The longest reply, in tokens (at most the deployment's `CHAT_MAX_OUTPUT_TOKENS`).
    pub max_tokens: Option<i64>,
    /// Up to 10 of the session's ready documents this message is about: their text comes first
    /// in the reply's context (the session's other documents follow while the budget lasts).
    pub attachments: Option<Vec<String>>,
}

/// The most documents a message names.
pub const MAX_ATTACHMENTS: usize = 10;

/// `POST /v1/sessions/{id}/messages/{message_id}/regenerate`: the reply's model and length unless
/// given.
#[derive(Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Regenerate {
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub max_tokens: Option<i64>,
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// What a message holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Text: a prompt and a chat reply.
    Text,
    /// An image request and the generation that answers it (`job_id`; its files at
    /// `GET /v1/sessions/{id}/images`).
    Image,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
        }
    }
}

/// Where a message (a reply's shown version) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Its job waits in the queue.
    Pending,
    /// Being written: `content` holds what has come so far.
    Streaming,
    Completed,
    /// The provider failed; the job's credits were given back.
    Failed,
    Canceled,
}

impl MessageStatus {
    fn parse(text: &str) -> Self {
        match text {
            "pending" => Self::Pending,
            "streaming" => Self::Streaming,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            _ => Self::Completed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Streaming => "streaming",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

/// A message of a session.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub session_id: String,
    pub role: Role,
    pub kind: MessageKind,
    pub content: String,
    pub status: MessageStatus,
    /// A reply's model.
    pub model: Option<String>,
    /// A completed reply's token counts, as the provider reported them.
    pub usage: Option<Usage>,
    /// The credits its shown version cost.
    pub charged: Option<i64>,
    /// The job that wrote the shown version, or the latest one started.
    pub job_id: Option<String>,
    /// A reply's completed versions (regenerates add one each).
    pub version_count: i64,
    /// Why the reply failed.
    pub error: Option<String>,
    /// The documents a user's message named.
    pub attachments: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One version of a reply.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Version {
    pub job_id: String,
    pub status: MessageStatus,
    pub content: String,
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub charged: Option<i64>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A message with every version of it (a user's message has none).
#[derive(Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: Message,
    /// Oldest first.
    pub versions: Vec<Version>,
}

/// A page of messages, oldest first.
#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<Message>,
    pub next_cursor: Option<String>,
}

/// What posting a message (or regenerating a reply) started.
#[derive(Serialize, ToSchema)]
pub struct Posted {
    /// The message stored (none for a regenerate).
    pub user_message: Option<Message>,
    /// The reply its job writes.
    pub reply: Message,
    pub job: Submitted,
    /// Where the same request streams its reply as it is written (Server-Sent Events), when
    /// this deployment has the streaming function.
    pub stream_url: Option<String>,
}

fn usage_of(item: &Item) -> Option<Usage> {
    Some(Usage {
        input_tokens: get_i64(item, "input_tokens")?,
        output_tokens: get_i64(item, "output_tokens")?,
    })
}

/// A message as stored.
pub fn view(item: &Item) -> Option<Message> {
    let role = match get_s(item, "role")? {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        _ => return None,
    };
    Some(Message {
        id: get_s(item, "id")?.to_owned(),
        session_id: get_s(item, "session_id")?.to_owned(),
        role,
        kind: match get_s(item, "kind") {
            Some("image") => MessageKind::Image,
            _ => MessageKind::Text,
        },
        content: get_s(item, "content").unwrap_or_default().to_owned(),
        status: MessageStatus::parse(get_s(item, "status").unwrap_or_default()),
        model: get_s(item, "model").map(str::to_owned),
        usage: usage_of(item),
        charged: get_i64(item, "charged"),
        job_id: get_s(item, "current_version")
            .or_else(|| get_s(item, "job_id"))
            .map(str::to_owned),
        version_count: get_i64(item, "version_count").unwrap_or(0),
        error: get_s(item, "error").map(str::to_owned),
        attachments: item
            .get("attachments")
            .and_then(|v| v.as_l().ok())
            .map(|list| list.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        created_at: get_s(item, "created_at").unwrap_or_default().to_owned(),
        updated_at: get_s(item, "updated_at").unwrap_or_default().to_owned(),
    })
}

pub(crate) fn version_view(item: &Item) -> Option<Version> {
    Some(Version {
        job_id: get_s(item, "job_id")?.to_owned(),
        status: MessageStatus::parse(get_s(item, "status").unwrap_or_default()),
        content: get_s(item, "content").unwrap_or_default().to_owned(),
        model: get_s(item, "model").map(str::to_owned),
        usage: usage_of(item),
        charged: get_i64(item, "charged"),
        error: get_s(item, "error").map(str::to_owned),
        created_at: get_s(item, "created_at").unwrap_or_default().to_owned(),
        updated_at: get_s(item, "updated_at").unwrap_or_default().to_owned(),
    })
}

fn message_gone() -> ApiError {
    ApiError::NotFound("no such message")
}

/// A message of a session, read through nothing but its keys (the caller checked the session).
pub(crate) async fn stored(
    state: &State,
    session_id: &str,
    message_id: &str,
) -> anyhow::Result<Option<Item>> {
    state
        .db
        .get(&keys::chat_messages(session_id), &keys::message(message_id))
        .await
}

/// The reply options checked against this deployment; every problem is reported.
struct Options {
    model: String,
    system_prompt: Option<String>,
    max_tokens: i64,
}

fn check_options(
    state: &State,
    model: Option<&str>,
    system_prompt: Option<&str>,
    max_tokens: Option<i64>,
    errors: &mut Vec<crate::error::FieldError>,
) -> Option<Options> {
    use crate::error::FieldError;
    let chat = &state.config.chat;
    let model = match chat.model(model) {
        Some(m) => Some(m.model.clone()),
        None => {
            let names: Vec<&str> = chat.models.iter().map(|m| m.model.as_str()).collect();
            errors.push(FieldError::new(
                "model",
                format!("must be one of: {}", names.join(", ")),
            ));
            None
        }
    };
    if system_prompt.is_some_and(|p| p.chars().count() > MAX_SYSTEM_PROMPT_CHARS) {
        errors.push(FieldError::new(
            "system_prompt",
            format!("must be at most {MAX_SYSTEM_PROMPT_CHARS} characters"),
        ));
    }
    let max_tokens = max_tokens.unwrap_or(chat.max_output_tokens);
    if !(1..=chat.max_output_tokens).contains(&max_tokens) {
        errors.push(FieldError::new(
            "max_tokens",
            format!("must be from 1 to {}", chat.max_output_tokens),
        ));
    }
    Some(Options {
        model: model?,
        system_prompt: system_prompt.map(str::to_owned),
        max_tokens,
    })
}

/// What to start a reply for.
pub(crate) enum Ask {
    New(PostMessage),
    Regenerate {
        message_id: String,
        body: Regenerate,
    },
}

/// Stores the message and its pending reply (a new one) or finds the reply (a regenerate), then
/// admits the `chat` job that writes it: queued for the worker, or (`here`) left for the caller
/// to run, with its outbox entry to settle. Refused admission (credits, the job cap) leaves
/// nothing behind.
pub(crate) async fn begin(
    state: &State,
    caller: &Caller,
    session_id: &str,
    ask: Ask,
    here: bool,
) -> Result<(Posted, Option<crate::jobs::outbox::Entry>), ApiError> {
    let mut errors = Vec::new();
    let (options, content) = match &ask {
        Ask::New(body) => {
            let count = body.content.chars().count();
            if body.content.trim().is_empty() || count > MAX_CONTENT_CHARS {
                errors.push(crate::error::FieldError::new(
                    "content",
                    format!("must be 1 to {MAX_CONTENT_CHARS} characters, not only spaces"),
                ));
            }
            let attachments = body.attachments.as_deref().unwrap_or_default();
            if attachments.len() > MAX_ATTACHMENTS
                || attachments
                    .iter()
                    .any(|id| uuid::Uuid::parse_str(id).is_err())
            {
                errors.push(crate::error::FieldError::new(
                    "attachments",
                    format!("must be at most {MAX_ATTACHMENTS} document ids"),
                ));
            }
            (
                check_options(
                    state,
                    body.model.as_deref(),
                    body.system_prompt.as_deref(),
                    body.max_tokens,
                    &mut errors,
                ),
                Some(body.content.clone()),
            )
        }
        Ask::Regenerate { .. } => (None, None),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    crate::conversations::session_of(
        state,
        &caller.user_id,
        session_id,
        crate::conversations::TEXT_SESSIONS,
        "chat",
    )
    .await?;
    let messages_pk = keys::chat_messages(session_id);
    let mut attachments: Vec<String> = Vec::new();
    let (options, user_message, reply_id) = match ask {
        Ask::New(body) => {
            let options = options.context("checked options")?;
            let content = content.unwrap_or_default();
            for id in body.attachments.unwrap_or_default() {
                if attachments.contains(&id) {
                    continue;
                }
                let document = state
                    .db
                    .get(&messages_pk, &format!("DOC#{id}"))
                    .await?
                    .ok_or(ApiError::NotFound("no such document"))?;
                if get_s(&document, "status") != Some("ready") {
                    return Err(ApiError::Unprocessable {
                        code: "document_not_ready",
                        detail: format!("document {id} is not read yet: complete its upload first"),
                    });
                }
                attachments.push(id);
            }
            let (user_id, reply_id) = store_pair(
                state,
                &caller.user_id,
                session_id,
                &content,
                MessageKind::Text,
                &options.model,
                &attachments,
            )
            .await?;
            (options, Some(user_id), reply_id)
        }
        Ask::Regenerate { message_id, body } => {
            let reply = stored(state, session_id, &message_id)
                .await?
                .ok_or_else(message_gone)?;
            if get_s(&reply, "role") != Some("assistant") || get_s(&reply, "kind") == Some("image")
            {
                return Err(ApiError::Unprocessable {
                    code: "not_a_reply",
                    detail: "only a chat reply can be regenerated (ask for an image again instead)"
                        .into(),
                });
            }
            let model = body.model.as_deref().or(get_s(&reply, "model"));
            let options = check_options(
                state,
                model,
                body.system_prompt.as_deref(),
                body.max_tokens,
                &mut errors,
            );
            if !errors.is_empty() {
                return Err(ApiError::Validation(errors));
            }
            (options.context("checked options")?, None, message_id)
        }
    };
    let mut input = json!({
        "session_id": session_id,
        "message_id": reply_id,
        "model": options.model,
        "max_tokens": options.max_tokens,
    });
    if let Some(prompt) = &options.system_prompt {
        input["system_prompt"] = json!(prompt);
    }
    if !attachments.is_empty() {
        input["attachments"] = json!(attachments);
    }
    let body = CreateJob {
        kind: crate::conversations::replies::KIND.to_owned(),
        input,
        webhook_url: None,
    };
    let admitted = if here {
        crate::jobs::handlers::submit_here(state, caller, &body)
            .await
            .map(|(submitted, entry)| (submitted, Some(entry)))
    } else {
        crate::jobs::handlers::submit(state, caller, None, &body)
            .await
            .map(|submitted| (submitted, None))
    };
    let (submitted, entry) = match admitted {
        Ok(admitted) => admitted,
        Err(err) => {
            if let Some(user_message) = &user_message {
                take_back(state, &caller.user_id, session_id, user_message, &reply_id).await;
            }
            return Err(err);
        }
    };
    // The reply names its newest job (a later one wins; ids are UUIDv7).
    let pointed = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(&messages_pk))
        .key("sk", s(keys::message(&reply_id)))
        .update_expression("SET job_id = :job")
        .condition_expression(
            "attribute_exists(pk) AND (attribute_not_exists(job_id) OR job_id < :job)",
        )
        .expression_attribute_values(":job", s(&submitted.id))
        .send()
        .await;
    crate::db::unless_condition_failed(pointed).context("naming the reply's job")?;
    let user_message = match &user_message {
        Some(id) => stored(state, session_id, id).await?.as_ref().and_then(view),
        None => None,
    };
    let reply = stored(state, session_id, &reply_id)
        .await?
        .as_ref()
        .and_then(view)
        .ok_or_else(message_gone)?;
    Ok((
        Posted {
            user_message,
            reply,
            job: submitted,
            stream_url: state.config.chat.stream_url.clone(),
        },
        entry,
    ))
}

/// Stores a user's message and its pending reply (of `kind`, by `model`) in one transaction
/// with the session's count (and its title from the first prompt); their ids.
pub(crate) async fn store_pair(
    state: &State,
    owner: &str,
    session_id: &str,
    content: &str,
    kind: MessageKind,
    model: &str,
    attachments: &[String],
) -> Result<(String, String), ApiError> {
    let messages_pk = keys::chat_messages(session_id);
    let now = timestamp(Utc::now());
    let user_id = uuid::Uuid::now_v7().to_string();
    let reply_id = uuid::Uuid::now_v7().to_string();
    let title: String = content.trim().chars().take(60).collect();
    let message = |id: &str, role: &str, content: &str, status: &str| {
        vec![
            ("pk", s(&messages_pk)),
            ("sk", s(keys::message(id))),
            ("id", s(id)),
            ("session_id", s(session_id)),
            ("role", s(role)),
            ("kind", s(kind.as_str())),
            ("content", s(content)),
            ("status", s(status)),
            ("created_at", s(&now)),
            ("updated_at", s(&now)),
        ]
    };
    let mut asked = message(&user_id, "user", content, "completed");
    if !attachments.is_empty() {
        asked.push((
            "attachments",
            aws_sdk_dynamodb::types::AttributeValue::L(attachments.iter().map(s).collect()),
        ));
    }
    let mut reply = message(&reply_id, "assistant", "", "pending");
    reply.push(("model", s(model)));
    reply.push(("version_count", n(0)));
    let actions = vec![
        crate::db::tx::put(&state.db, asked, Some("attribute_not_exists(pk)"))?,
        crate::db::tx::put(&state.db, reply, Some("attribute_not_exists(pk)"))?,
        crate::db::tx::update(
            &state.db,
            (&keys::user(owner), &keys::chat(session_id)),
            "SET message_count = message_count + :two, updated_at = :now, title = if_not_exists(title, :title)",
            Some("attribute_exists(pk) AND message_count <= :most"),
            &[],
            vec![
                (":two", n(2)),
                (":now", s(&now)),
                (":title", s(&title)),
                (":most", n(MAX_MESSAGES - 2)),
            ],
        )?,
    ];
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(failed) if failed.get(2) == Some(&true) => {
                match sessions::owned(state, owner, session_id).await {
                    Ok(_) => ApiError::Unprocessable {
                        code: "too_many_messages",
                        detail: format!(
                            "a session holds at most {MAX_MESSAGES} messages; start another"
                        ),
                    },
                    Err(err) => err,
                }
            }
            _ => ApiError::Internal(anyhow::Error::new(err).context("storing a message")),
        });
    }
    Ok((user_id, reply_id))
}

/// Removes a message and its reply that no job was admitted for (best effort: logged).
pub(crate) async fn take_back(
    state: &State,
    user_id: &str,
    session_id: &str,
    message_id: &str,
    reply_id: &str,
) {
    let pk = keys::chat_messages(session_id);
    let actions = (|| {
        Ok::<_, anyhow::Error>(vec![
            crate::db::tx::delete(
                &state.db,
                (&pk, &keys::message(message_id)),
                None,
                &[],
                Vec::new(),
            )?,
            crate::db::tx::delete(
                &state.db,
                (&pk, &keys::message(reply_id)),
                None,
                &[],
                Vec::new(),
            )?,
            crate::db::tx::update(
                &state.db,
                (&keys::user(user_id), &keys::chat(session_id)),
                "SET message_count = message_count - :two",
                Some("attribute_exists(pk)"),
                &[],
                vec![(":two", n(2))],
            )?,
        ])
    })();
    let result = match actions {
        Ok(actions) => crate::db::transact(&state.db, actions)
            .await
            .map_err(anyhow::Error::new),
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::error!(
            session_id,
            message_id,
            error = format!("{err:#}"),
            "a refused message was left"
        );
    }
}

/// Sends a message to one of your chat sessions and starts its reply: `202` with the stored
/// message, the pending reply and its `chat` job. Poll the job or the messages; or post the same
/// request to `stream_url` to read the reply as it is written.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = PostMessage,
    responses((status = 202, body = Posted), (status = 402, description = "insufficient_credits", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, description = "invalid fields; session_kind: not a chat session; too_many_messages", body = crate::error::Problem),
        (status = 429, description = "max_concurrent_jobs", body = crate::error::Problem)))]
pub async fn post_message(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(sessions::not_found)?;
    let body: PostMessage = json_body(&req, &["application/json"])?;
    let (posted, _) = begin(state, &caller, &id, Ask::New(body), false).await?;
    json_response(StatusCode::ACCEPTED, &posted)
}

/// The message id of a path, if it is one.
fn message_path_id(req: &Request) -> Option<String> {
    path_param(req, "message_id").filter(|id| uuid::Uuid::parse_str(id).is_ok())
}

/// Writes a reply again: a new `chat` job whose text becomes the reply's newest version; the
/// earlier versions stay (`GET …/messages/{message_id}`).
#[utoipa::path(post, path = "/v1/sessions/{id}/messages/{message_id}/regenerate", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path), ("message_id" = String, Path)), request_body(content = Option<Regenerate>),
    responses((status = 202, body = Posted), (status = 402, description = "insufficient_credits", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, description = "invalid fields; not_a_reply; session_kind", body = crate::error::Problem),
        (status = 429, description = "max_concurrent_jobs", body = crate::error::Problem)))]
pub async fn regenerate_reply(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(sessions::not_found)?;
    let message_id = message_path_id(&req).ok_or_else(message_gone)?;
    let body = regenerate_body(&req)?;
    let (posted, _) = begin(
        state,
        &caller,
        &id,
        Ask::Regenerate { message_id, body },
        false,
    )
    .await?;
    json_response(StatusCode::ACCEPTED, &posted)
}

/// A regenerate's options: none (an empty body) or a JSON object.
pub(crate) fn regenerate_body(req: &Request) -> Result<Regenerate, ApiError> {
    if req.body().is_empty() {
        return Ok(Regenerate::default());
    }
    json_body(req, &["application/json"])
}

/// Your session's messages, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = MessagePage), (status = 404, body = crate::error::Problem)))]
pub async fn list_messages(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(sessions::not_found)?;
    sessions::owned(state, &caller.user_id, &id).await?;
    let scope = format!("messages|{}|{id}", caller.user_id);
    let page = Paging::from_request(&req, state.cursor_key().await?, scope)?;
    let (items, next) = page_of(state, &id, &page, false).await?;
    let items = items.iter().filter_map(view).collect();
    let next = page.next_cursor(next);
    json_response(
        StatusCode::OK,
        &MessagePage {
            items,
            next_cursor: next,
        },
    )
}

/// A page of a session's messages, oldest first (`image_replies`: only its image replies), and
/// the id the next page starts after.
pub(crate) async fn page_of(
    state: &State,
    session_id: &str,
    page: &Paging<'_>,
    image_replies: bool,
) -> anyhow::Result<(Vec<Item>, Option<String>)> {
    let pk = keys::chat_messages(session_id);
    let start = page.after.as_ref().map(|after| {
        Item::from([
            ("pk".to_owned(), s(&pk)),
            ("sk".to_owned(), s(keys::message(after))),
        ])
    });
    let mut query = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(&pk))
        .expression_attribute_values(":prefix", s(keys::MESSAGE_PREFIX))
        .limit(i32::try_from(page.limit).unwrap_or(20))
        .set_exclusive_start_key(start);
    if image_replies {
        query = query
            .filter_expression("#kind = :image AND #role = :assistant")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#role", "role")
            .expression_attribute_values(":image", s("image"))
            .expression_attribute_values(":assistant", s("assistant"));
    }
    let out = query.send().await.context("listing messages")?;
    let next = out
        .last_evaluated_key()
        .and_then(|k| get_s(k, "sk"))
        .map(|sk| sk.trim_start_matches(keys::MESSAGE_PREFIX).to_owned());
    Ok((out.items.unwrap_or_default(), next))
}

/// One message of your session, with every version of a reply.
#[utoipa::path(get, path = "/v1/sessions/{id}/messages/{message_id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path), ("message_id" = String, Path)),
    responses((status = 200, body = MessageDetail), (status = 404, body = crate::error::Problem)))]
pub async fn get_message(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(sessions::not_found)?;
    let message_id = message_path_id(&req).ok_or_else(message_gone)?;
    sessions::owned(state, &caller.user_id, &id).await?;
    let detail = detail(state, &id, &message_id)
        .await?
        .ok_or_else(message_gone)?;
    json_response(StatusCode::OK, &detail)
}

/// A message with its versions (at most the newest 100).
pub(crate) async fn detail(
    state: &State,
    session_id: &str,
    message_id: &str,
) -> Result<Option<MessageDetail>, ApiError> {
    let Some(message) = stored(state, session_id, message_id)
        .await?
        .as_ref()
        .and_then(view)
    else {
        return Ok(None);
    };
    let out = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(keys::chat_messages(session_id)))
        .expression_attribute_values(":prefix", s(format!("VER#{message_id}#")))
        .scan_index_forward(false)
        .limit(100)
        .consistent_read(true)
        .send()
        .await
        .context("reading a reply's versions")?;
    let mut versions: Vec<Version> = out.items().iter().filter_map(version_view).collect();
    versions.reverse();
    Ok(Some(MessageDetail { message, versions }))
}

/// The value of a reply's job input, for the executor and the quote.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ReplyInput {
    pub session_id: String,
    pub message_id: String,
    pub model: String,
    pub max_tokens: i64,
    pub system_prompt: Option<String>,
    /// Documents whose text comes first.
    #[serde(default)]
    pub attachments: Vec<String>,
}

impl ReplyInput {
    pub fn of(input: &Value) -> Option<Self> {
        serde_json::from_value(input.clone()).ok()
    }
}
