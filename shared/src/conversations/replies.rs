//! The `chat` job kind: writes a reply with a chat model. Priced by tokens: the estimate (the
//! context's upper bound and the longest reply) is debited at admission, and the release keeps
//! what the provider's usage figures cost, giving back the rest in the same transaction.
//!
//! The reply's text goes to its version item as it comes (and to the message while it has no
//! completed version), each second or so, so a client that polls sees it grow; a client that
//! asked for a stream gets every piece at once (see [`crate::conversations::stream`]).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use serde_json::{Value, json};

use crate::config::ChatModel;
use crate::conversations::llm::{ChatError, Turn, Usage, price, tokens_at_most};
use crate::conversations::messages::{ReplyInput, stored};
use crate::db::{get_s, n, s};
use crate::error::{ApiError, FieldError};
use crate::jobs::executor::{Finished, JobError, Progress};
use crate::jobs::model::Job;
use crate::jobs::registry::Kind;
use crate::jobs::store::{JobRef, Outcome};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// The kind's name.
pub const KIND: &str = "chat";

/// How long a reply may take.
const DEADLINE: Duration = Duration::from_secs(5 * 60);

/// Further attempts at a busy provider before the job goes back to its queue.
const OPEN_RETRIES: u32 = 3;

/// How often the text so far is stored while it streams.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where a streamed reply's pieces go (the client of a streaming request).
pub type Sink = tokio::sync::mpsc::UnboundedSender<String>;

/// `chat`: `{session_id, message_id, model, max_tokens, system_prompt?}` writes the reply
/// `message_id` of the owner's session.
pub const CHAT: Kind = Kind {
    name: KIND,
    cost: |_| 1,
    deadline: |_| DEADLINE,
    queue: crate::domain::Queue::Cpu,
    validate,
    offered,
    run: |state, job, progress| Box::pin(run(state, job, progress, None)),
    present: None,
    quote: Some(|state, owner, input| Box::pin(quote(state, owner, input))),
};

fn validate(input: &Value) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let uuid = |name: &str| {
        input
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|v| uuid::Uuid::parse_str(v).is_ok())
    };
    for name in ["session_id", "message_id"] {
        if !uuid(name) {
            errors.push(FieldError::new(format!("input.{name}"), "must be an id"));
        }
    }
    if !input.get("model").is_some_and(Value::is_string) {
        errors.push(FieldError::new("input.model", "must be a model's name"));
    }
    if input
        .get("max_tokens")
        .and_then(Value::as_i64)
        .is_none_or(|t| t < 1)
    {
        errors.push(FieldError::new(
            "input.max_tokens",
            "must be a positive integer",
        ));
    }
    if input.get("system_prompt").is_some_and(|p| {
        p.as_str().is_none_or(|p| {
            p.chars().count() > crate::conversations::messages::MAX_SYSTEM_PROMPT_CHARS
        })
    }) {
        errors.push(FieldError::new(
            "input.system_prompt",
            "must be text of at most 8000 characters",
        ));
    }
    if input.get("attachments").is_some_and(|a| {
        a.as_array().is_none_or(|list| {
            list.len() > crate::conversations::messages::MAX_ATTACHMENTS
                || list.iter().any(|id| {
                    id.as_str()
                        .is_none_or(|id| uuid::Uuid::parse_str(id).is_err())
                })
        })
    }) {
        errors.push(FieldError::new(
            "input.attachments",
            "must be at most 10 document ids",
        ));
    }
    if let Some(object) = input.as_object() {
        for key in object.keys().filter(|k| {
            !matches!(
                k.as_str(),
                "session_id"
                    | "message_id"
                    | "model"
                    | "max_tokens"
                    | "system_prompt"
                    | "attachments"
            )
        }) {
            errors.push(FieldError::new(
                format!("input.{key}"),
                "is not a field of chat",
            ));
        }
    } else {
        errors.push(FieldError::new("input", "must be an object"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn offered(state: &State, _: &Kind, input: &Value) -> Result<(), FieldError> {
    if state.config.generation.provider_keys_secret_id.is_none() {
        return Err(FieldError::new(
            "kind",
            "text generation is not configured in this deployment",
        ));
    }
    let model = input.get("model").and_then(Value::as_str);
    let max = state.config.chat.max_output_tokens;
    if state.config.chat.model(model).is_none() {
        return Err(FieldError::new(
            "input.model",
            "is not a model of this deployment",
        ));
    }
    if input
        .get("max_tokens")
        .and_then(Value::as_i64)
        .is_none_or(|t| t > max)
    {
        return Err(FieldError::new(
            "input.max_tokens",
            format!("must be at most {max}"),
        ));
    }
    Ok(())
}

/// The model a reply's input names.
fn model_of<'a>(state: &'a State, input: &ReplyInput) -> Option<&'a ChatModel> {
    state.config.chat.model(Some(&input.model))
}

/// The conversation sent for the reply `input.message_id`: the system prompt, then the
/// session's messages before the reply, newest first until the context budget is spent (the
/// latest message always), oldest first. And its tokens at most.
async fn context(state: &State, input: &ReplyInput) -> anyhow::Result<(Vec<Turn>, i64)> {
    let budget = state.config.chat.context_tokens;
    let pk = keys::chat_messages(&input.session_id);
    let mut turns = Vec::new();
    let mut tokens = 0_i64;
    let mut start = None;
    'pages: for _ in 0..20 {
        let out = state
            .db
            .client
            .query()
            .table_name(&state.db.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :first AND :reply")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":first", s(keys::MESSAGE_PREFIX))
            .expression_attribute_values(":reply", s(keys::message(&input.message_id)))
            .scan_index_forward(false)
            .limit(100)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .context("reading a session's messages")?;
        for item in out.items() {
            if get_s(item, "id") == Some(input.message_id.as_str()) {
                continue;
            }
            if get_s(item, "kind") == Some("image") {
                continue;
            }
            let role = match get_s(item, "role") {
                Some("user") => "user",
                Some("assistant") if get_s(item, "status") == Some("completed") => "assistant",
                _ => continue,
            };
            let content = get_s(item, "content").unwrap_or_default();
            if content.is_empty() {
                continue;
            }
            let cost = tokens_at_most(content);
            if !turns.is_empty() && tokens + cost > budget {
                break 'pages;
            }
            tokens += cost;
            turns.push(Turn {
                role,
                content: content.to_owned(),
            });
        }
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    // The session's documents with text, within what the messages left (half the budget at
    // most), oldest first; a document that does not fit whole is cut.
    let mut room = (budget - tokens).min(budget / 2);
    let mut documents = String::new();
    let mut found =
        crate::conversations::documents::session_documents(state, &input.session_id).await?;
    // The message's attachments first, in the order it named them; the others after.
    found.sort_by_key(|item| {
        get_s(item, "id")
            .and_then(|id| input.attachments.iter().position(|a| a == id))
            .unwrap_or(usize::MAX)
    });
    for item in found {
        let (Some(name), Some(text)) = (get_s(&item, "filename"), get_s(&item, "text")) else {
            continue;
        };
        let header = format!("## {name}\n");
        let available = room - tokens_at_most(&header) - 2;
        if available <= 0 {
            break;
        }
        let mut cut = usize::try_from(available).unwrap_or(0).min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        documents.push_str(&header);
        documents.push_str(&text[..cut]);
        documents.push_str("\n\n");
        room -= tokens_at_most(&header) + i64::try_from(cut).unwrap_or(0) + 2;
    }
    if !documents.is_empty() {
        let content = format!(
            "The user's documents for this conversation:\n\n{}",
            documents.trim_end()
        );
        tokens += tokens_at_most(&content);
        turns.push(Turn {
            role: "system",
            content,
        });
    }
    if let Some(prompt) = input.system_prompt.as_deref().filter(|p| !p.is_empty()) {
        tokens += tokens_at_most(prompt);
        turns.push(Turn {
            role: "system",
            content: prompt.to_owned(),
        });
    }
    turns.reverse();
    Ok((turns, tokens))
}

/// The estimate debited at admission: the context's tokens at most, and the longest reply.
async fn quote(state: &State, owner: &str, input: &Value) -> Result<i64, ApiError> {
    let reply = ReplyInput::of(input).ok_or(ApiError::NotFound("no such message"))?;
    crate::conversations::sessions::owned(state, owner, &reply.session_id).await?;
    let message = stored(state, &reply.session_id, &reply.message_id)
        .await?
        .ok_or(ApiError::NotFound("no such message"))?;
    if get_s(&message, "role") != Some("assistant") {
        return Err(ApiError::NotFound("no such message"));
    }
    let model = model_of(state, &reply)
        .ok_or_else(|| ApiError::invalid("input.model", "is not a model of this deployment"))?;
    let (_, tokens) = context(state, &reply).await?;
    let usage = Usage {
        input_tokens: tokens,
        output_tokens: reply.max_tokens,
    };
    Ok(price(usage, model.input_per_1k, model.output_per_1k).max(1))
}

/// Writes a reply's version and, while the reply has no completed version (or `done`), the
/// message itself.
async fn record(
    state: &State,
    input: &ReplyInput,
    job_id: &str,
    fields: &[(&str, aws_sdk_dynamodb::types::AttributeValue)],
    done: bool,
) -> anyhow::Result<()> {
    let pk = keys::chat_messages(&input.session_id);
    let now = timestamp(Utc::now());
    let mut sets: Vec<String> = vec!["updated_at = :now".into()];
    let mut values = vec![(":now".to_owned(), s(&now))];
    for (i, (_, value)) in fields.iter().enumerate() {
        sets.push(format!("#f{i} = :v{i}"));
        values.push((format!(":v{i}"), value.clone()));
    }
    let names: Vec<(String, String)> = fields
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (format!("#f{i}"), (*name).to_owned()))
        .collect();
    // The version: created by its first write.
    let mut version = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::message_version(&input.message_id, job_id)))
        .update_expression(format!(
            "SET {}, job_id = :job, model = :model, created_at = if_not_exists(created_at, :now)",
            sets.join(", ")
        ))
        .expression_attribute_values(":job", s(job_id))
        .expression_attribute_values(":model", s(&input.model));
    for (name, attribute) in &names {
        version = version.expression_attribute_names(name, attribute);
    }
    for (name, value) in &values {
        version = version.expression_attribute_values(name, value.clone());
    }
    version.send().await.context("writing a reply's version")?;
    // The message: the newest completed version shows; before any, this one as it goes.
    let mut message = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::message(&input.message_id)));
    if done {
        message = message
            .update_expression(format!(
                "SET {}, current_version = :job, model = :model REMOVE #error",
                sets.join(", ")
            ))
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(current_version) OR current_version < :job)")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":job", s(job_id));
    } else {
        message = message
            .update_expression(format!("SET {}, model = :model", sets.join(", ")))
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(current_version)");
    }
    message = message.expression_attribute_values(":model", s(&input.model));
    for (name, attribute) in &names {
        message = message.expression_attribute_names(name, attribute);
    }
    for (name, value) in values {
        message = message.expression_attribute_values(name, value);
    }
    // Not there (the session was deleted) or a newer version shows: nothing to change.
    crate::db::unless_condition_failed(message.send().await).context("writing a reply")?;
    if done {
        // Every completed version counts, whichever of two at once finished last (the message
        // shows the newest).
        // Once (a plain UpdateItem answered late is sent again and counts twice); `false`: the
        // session was deleted meanwhile.
        let count = crate::db::tx::update(
            &state.db,
            (&pk, &keys::message(&input.message_id)),
            "ADD version_count :one",
            Some("attribute_exists(pk)"),
            &[],
            vec![(":one", n(1))],
        )?;
        crate::db::once(&state.db, count)
            .await
            .context("counting a reply's versions")?;
    }
    Ok(())
}

/// Marks a reply's version (and the message, while it has no completed version) as ended
/// without text of its own: `failed` or `canceled`, with what came before the end.
async fn end_without_reply(
    state: &State,
    input: &ReplyInput,
    job_id: &str,
    status: &str,
    error: &str,
    text: Option<&str>,
) {
    let mut fields = vec![("status", s(status)), ("error", s(error))];
    if let Some(text) = text {
        fields.push(("content", s(text)));
    }
    if let Err(err) = record(state, input, job_id, &fields, false).await {
        tracing::warn!(
            job_id,
            error = format!("{err:#}"),
            "a reply's end was not recorded"
        );
    }
}

/// Writes the reply of `job`, handing each piece to `sink` too when a client streams it.
pub async fn run(
    state: &State,
    job: &Job,
    progress: &Progress<'_>,
    sink: Option<&Sink>,
) -> Result<Finished, JobError> {
    let invalid = |message: &str| JobError::Permanent {
        kind: "invalid_input",
        message: message.to_owned(),
    };
    let input = ReplyInput::of(&job.input).ok_or_else(|| invalid("the input names no reply"))?;
    let model = model_of(state, &input)
        .cloned()
        .ok_or_else(|| invalid("this deployment no longer offers the model"))?;
    state
        .db
        .get(&keys::user(&job.user_id), &keys::chat(&input.session_id))
        .await?
        .ok_or_else(|| invalid("the session was deleted"))?;
    let (turns, _) = context(state, &input).await?;
    let chat = match crate::conversations::llm::adapter(state, model.provider).await {
        Ok(chat) => chat,
        Err(crate::conversations::llm::Unavailable::NotConfigured(what)) => {
            tracing::error!(job_id = %job.id, what, "the chat provider is not configured");
            end_without_reply(
                state,
                &input,
                &job.id,
                "failed",
                "text generation is not configured",
                None,
            )
            .await;
            return Err(JobError::Permanent {
                kind: "provider_error",
                message: "text generation is not configured in this deployment".into(),
            });
        }
        Err(crate::conversations::llm::Unavailable::Keys(err)) => {
            return Err(JobError::Internal(err));
        }
    };
    let mut flushed = Instant::now();
    let mut canceled = false;
    // The reply is marked as being written while the provider is asked (the first token comes
    // no later for it). A busy provider (429, 5xx, a broken connection before any text) is asked
    // again a few times here, before the job goes back to its queue.
    let streaming = [("status", s("streaming")), ("content", s(""))];
    let (marked, mut opened) = tokio::join!(
        record(state, &input, &job.id, &streaming, false),
        chat.open(&model.model, &turns, input.max_tokens, DEADLINE)
    );
    marked?;
    for attempt in 0..OPEN_RETRIES {
        match &opened {
            Err(ChatError::Provider(err)) if err.is_retryable() => {
                tracing::info!(job_id = %job.id, attempt, error = %err, "the chat provider is busy; asking again");
                tokio::time::sleep(crate::backoff::exponential(
                    Duration::from_millis(500),
                    attempt,
                    0.25,
                ))
                .await;
                opened = chat
                    .open(&model.model, &turns, input.max_tokens, DEADLINE)
                    .await;
            }
            _ => break,
        }
    }
    let streamed = match opened {
        Ok(mut stream) => loop {
            match stream.next().await {
                Ok(Some(piece)) => {
                    if let Some(sink) = sink {
                        // A client that left does not stop the reply: it is stored for polling.
                        let _ = sink.send(piece);
                    }
                    if flushed.elapsed() >= FLUSH_EVERY {
                        flushed = Instant::now();
                        if let Err(err) = record(
                            state,
                            &input,
                            &job.id,
                            &[("content", s(stream.text()))],
                            false,
                        )
                        .await
                        {
                            tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "the reply so far was not stored");
                        }
                        if let Err(JobError::Canceled) = progress.report(50, Some("writing")).await
                        {
                            canceled = true;
                            break (stream.text().to_owned(), None, Err(None));
                        }
                    }
                }
                Ok(None) => break (stream.text().to_owned(), stream.usage(), Ok(())),
                Err(err) => break (stream.text().to_owned(), None, Err(Some(err))),
            }
        },
        Err(err) => (String::new(), None, Err(Some(err))),
    };
    let (text, usage, result) = streamed;
    match result {
        Ok(()) => {
            let usage = usage.unwrap_or_else(|| {
                // No usage chunk: our own upper bounds (the estimate caps it anyway).
                tracing::warn!(job_id = %job.id, "the provider sent no usage; counting bytes");
                Usage {
                    input_tokens: turns.iter().map(|t| tokens_at_most(&t.content)).sum(),
                    output_tokens: tokens_at_most(&text),
                }
            });
            let cost = price(usage, model.input_per_1k, model.output_per_1k);
            record(
                state,
                &input,
                &job.id,
                &[
                    ("status", s("completed")),
                    ("content", s(&text)),
                    ("input_tokens", n(usage.input_tokens)),
                    ("output_tokens", n(usage.output_tokens)),
                    ("charged", n(cost.min(job.cost))),
                ],
                true,
            )
            .await?;
            Ok(Finished::Settled {
                output: json!({
                    "session_id": input.session_id,
                    "message_id": input.message_id,
                    "model": model.model,
                    "usage": usage,
                    "characters": text.chars().count(),
                }),
                cost,
            })
        }
        Err(None) => {
            debug_assert!(canceled);
            end_without_reply(
                state,
                &input,
                &job.id,
                "canceled",
                "canceled by its owner",
                Some(&text),
            )
            .await;
            Err(JobError::Canceled)
        }
        Err(Some(ChatError::Provider(err))) if err.is_retryable() && text.is_empty() => {
            tracing::warn!(job_id = %job.id, error = %err, "the chat provider is unavailable; retrying");
            record(state, &input, &job.id, &[("status", s("pending"))], false).await?;
            Err(JobError::Retryable(err.to_string()))
        }
        Err(Some(err)) => {
            tracing::warn!(job_id = %job.id, error = %err, "the reply failed");
            let message = if text.is_empty() {
                "the provider refused the reply (its model or this deployment's access)"
            } else {
                "the provider failed while writing the reply"
            };
            end_without_reply(state, &input, &job.id, "failed", message, Some(&text)).await;
            Err(JobError::Permanent {
                kind: "provider_error",
                message: message.to_owned(),
            })
        }
    }
}

/// An image asked in a session: its reply takes the job's end.
async fn image_ended(state: &State, job_id: &str, status: &str, error: &str) {
    let link = match state.db.get(&keys::job(job_id), keys::JOB_MESSAGE).await {
        Ok(Some(link)) => link,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(
                job_id,
                error = format!("{err:#}"),
                "reading a job's message"
            );
            return;
        }
    };
    let (Some(session_id), Some(message_id)) =
        (get_s(&link, "session_id"), get_s(&link, "message_id"))
    else {
        return;
    };
    let mut update = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(keys::chat_messages(session_id)))
        .key("sk", s(keys::message(message_id)))
        .condition_expression("attribute_exists(pk) AND job_id = :job")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":job", s(job_id))
        .expression_attribute_values(":status", s(status))
        .expression_attribute_values(":now", s(timestamp(Utc::now())));
    update = if status == "completed" {
        update
            .update_expression("SET #status = :status, updated_at = :now, version_count = :one")
            .expression_attribute_values(":one", n(1))
    } else {
        update
            .update_expression("SET #status = :status, updated_at = :now, #error = :error")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":error", s(error))
    };
    if let Err(err) = crate::db::unless_condition_failed(update.send().await) {
        tracing::warn!(
            job_id,
            error = format!("{err:#}"),
            "an image reply's end was not recorded"
        );
    }
}

/// Hears of every job that ends: a `chat` job that failed or was canceled where its executor
/// could not say so (the reaper, the dead-letter consumer) ends its reply as failed; an image
/// asked in a session ends its reply as its job ended.
pub const ENDED: crate::jobs::registry::Ended =
    |state, job, outcome| Box::pin(ended(state, job, outcome));

async fn ended(state: &State, job: &JobRef, outcome: &Outcome) {
    let (status, error) = match outcome {
        // A completed chat reply was written by its executor: only an image reply follows here.
        Outcome::Completed(_) => {
            image_ended(state, &job.id, "completed", "").await;
            return;
        }
        Outcome::Failed { message, .. } => ("failed", message.as_str()),
        Outcome::Canceled { message } => ("canceled", message.as_str()),
    };
    let stored = match crate::jobs::store::get(&state.db, &job.id).await {
        Ok(Some(stored)) if stored.kind == KIND => stored,
        Ok(Some(_)) => {
            image_ended(state, &job.id, status, error).await;
            return;
        }
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "reading an ended job");
            return;
        }
    };
    let Some(input) = ReplyInput::of(&stored.input) else {
        return;
    };
    // Only a version still in the works: the executor's own end stands.
    let version = state
        .db
        .get(
            &keys::chat_messages(&input.session_id),
            &keys::message_version(&input.message_id, &job.id),
        )
        .await;
    let open = match version {
        Ok(Some(item)) => matches!(get_s(&item, "status"), Some("pending" | "streaming")),
        Ok(None) => true,
        Err(_) => true,
    };
    if open {
        end_without_reply(state, &input, &job.id, status, error, None).await;
    }
}
