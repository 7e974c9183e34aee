//! Notifications: likes, comments, replies, follows, mentions, remixes and the caller's jobs
//! ending, grouped ("Ann and 12 others liked your post"), listed newest first (all or unread
//! only), read one at a time or all at once, with an exact unread count (see
//! [`crate::notification`]). Written by the social queue's consumer, never by the request that
//! caused them: a like answers without waiting on the liked account's notifications.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{Item, get_i64, get_s};
use crate::error::ApiError;
use crate::http::{Caller, json, path_param, query_param};
use crate::jobs::store::{JobRef, Outcome};
use crate::keys;
use crate::notification::{self, New};
use crate::social::posts::{self, Author};
use crate::state::State;

/// The most a group id (`<type>.<subject>`) may be: longer ones are nobody's.
const MAX_ID: usize = 160;

/// How many unread groups "read all" marks at once.
const READ_ALL_CONCURRENCY: usize = 8;

/// A notification as listed: one group of events.
#[derive(Serialize, ToSchema)]
pub struct NotificationView {
    /// The group's id (`like.<post>`, `follow`, `job.<job>`…), for `POST …/{id}/read`.
    pub id: String,
    /// `like`, `comment`, `reply`, `follow`, `mention`, `remix`, `job_completed`, `job_failed`,
    /// `style_trained`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who did it, most recent first (at most two; `actor_count` says how many in all).
    pub actors: Vec<Author>,
    pub actor_count: i64,
    /// The group as a sentence: "ann and 12 others liked your post".
    pub text: String,
    pub unread: bool,
    pub post_id: Option<String>,
    pub comment_id: Option<String>,
    pub job_id: Option<String>,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// A page of notifications, newest first.
#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
    pub next_cursor: Option<String>,
}

/// The caller's unread count: how many notifications (groups) are unread.
#[derive(Serialize, ToSchema)]
pub struct UnreadCount {
    pub unread: i64,
}

/// What "read all" did.
#[derive(Serialize, ToSchema)]
pub struct ReadAll {
    /// How many notifications it marked read.
    pub marked: usize,
    /// The unread count after it (notifications that arrived meanwhile stay unread).
    pub unread: i64,
}

fn name_of(author: &Author) -> String {
    author
        .display_name
        .clone()
        .unwrap_or_else(|| author.username.clone())
}

/// The sentence of a group.
fn sentence(kind: &str, actors: &[Author], count: i64, job_kind: Option<&str>) -> String {
    let who = match (actors, count) {
        ([], _) => "someone".to_owned(),
        ([one], 1) => name_of(one),
        ([one, two], 2) => format!("{} and {}", name_of(one), name_of(two)),
        ([one, ..], 2) => format!("{} and 1 other", name_of(one)),
        ([one, ..], n) if n > 2 => format!("{} and {} others", name_of(one), n - 1),
        ([one, ..], _) => name_of(one),
    };
    let job = job_kind.unwrap_or("job").replace('_', " ");
    match kind {
        "like" => format!("{who} liked your post"),
        "comment" => format!("{who} commented on your post"),
        "reply" => format!("{who} replied to your comment"),
        "follow" => format!("{who} started following you"),
        "mention" => format!("{who} mentioned you"),
        "remix" => format!("{who} remixed your post"),
        "job_completed" => format!("Your {job} job completed"),
        "job_failed" => format!("Your {job} job failed"),
        "style_trained" => "Your style finished training".to_owned(),
        other => other.replace('_', " "),
    }
}

async fn views(
    state: &State,
    viewer: &str,
    items: &[Item],
) -> Result<Vec<NotificationView>, ApiError> {
    let hidden = crate::social::hidden_from(state, viewer).await?;
    let actor_ids: Vec<&str> = items
        .iter()
        .flat_map(|i| [get_s(i, "last_actor"), get_s(i, "previous_actor")])
        .flatten()
        .collect();
    let authors = posts::authors(state, actor_ids.into_iter()).await?;
    let mut views = Vec::with_capacity(items.len());
    for item in items {
        let kind = get_s(item, "kind").unwrap_or_default().to_owned();
        let count = get_i64(item, "actor_count").unwrap_or(1);
        let mut ids: Vec<&str> = [get_s(item, "last_actor"), get_s(item, "previous_actor")]
            .into_iter()
            .flatten()
            .collect();
        ids.dedup();
        let had_actors = !ids.is_empty();
        let actors: Vec<Author> = ids
            .iter()
            .filter(|id| !hidden.contains(**id))
            .filter_map(|id| authors.get(*id).cloned())
            .collect();
        // A group whose only actor the viewer blocks (or who left) says nothing to show.
        if had_actors && actors.is_empty() && count <= 1 {
            continue;
        }
        let text = sentence(&kind, &actors, count, get_s(item, "job_kind"));
        let at = get_i64(item, "updated_at").unwrap_or(0);
        views.push(NotificationView {
            id: get_s(item, "group_id").unwrap_or_default().to_owned(),
            kind,
            actors,
            actor_count: count,
            text,
            unread: item
                .get("unread")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            post_id: get_s(item, "post_id").map(str::to_owned),
            comment_id: get_s(item, "comment_id").map(str::to_owned),
            job_id: get_s(item, "job_id").map(str::to_owned),
            updated_at: chrono::DateTime::from_timestamp_millis(at)
                .map(crate::users::timestamp)
                .unwrap_or_default(),
        });
    }
    Ok(views)
}

/// Your notifications, newest first (cursor pages); `?unread=true` for the unread ones only.
#[utoipa::path(get, path = "/v1/notifications", tag = "social", security(("bearer" = [])),
    params(("unread" = Option<bool>, Query, description = "only the unread ones"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = NotificationPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn list_notifications(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let unread_only = match query_param(&req, "unread").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::Validation(vec![crate::error::FieldError::new(
                "unread",
                "true or false",
            )]));
        }
    };
    let paging = crate::cursor::Paging::from_request(
        &req,
        state.cursor_key().await?,
        format!("notifications|{unread_only}|{}", caller.user_id),
    )?;
    let (items, next) = notification::list(
        &state.db,
        &caller.user_id,
        unread_only,
        paging.after.as_deref(),
        paging.limit,
    )
    .await?;
    let items = views(state, &caller.user_id, &items).await?;
    let next_cursor = paging.next_cursor(next);
    let link = next_cursor.clone();
    crate::social::page_response(
        &req,
        &NotificationPage { items, next_cursor },
        link.as_deref(),
    )
}

/// Your unread count (notifications, grouped as listed).
#[utoipa::path(get, path = "/v1/notifications/unread-count", tag = "social", security(("bearer" = [])),
    responses((status = 200, body = UnreadCount), (status = 401, body = crate::error::Problem)))]
pub async fn get_unread_count(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let unread = notification::unread(&state.db, &caller.user_id).await?;
    json(StatusCode::OK, &UnreadCount { unread })
}

/// Marks one of your notifications read (200 whether or not it was unread); the unread count
/// after.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = UnreadCount), (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such notification of yours", body = crate::error::Problem)))]
pub async fn read_notification(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    if id.is_empty() || id.len() > MAX_ID || id.contains('#') {
        return Err(ApiError::NotFound("no such notification"));
    }
    notification::mark_read(&state.db, &caller.user_id, &id)
        .await?
        .ok_or(ApiError::NotFound("no such notification"))?;
    let unread = notification::unread(&state.db, &caller.user_id).await?;
    json(StatusCode::OK, &UnreadCount { unread })
}

/// Marks every unread notification of yours read; those that arrive meanwhile stay unread.
#[utoipa::path(post, path = "/v1/notifications/read-all", tag = "social", security(("bearer" = [])),
    responses((status = 200, body = ReadAll), (status = 401, body = crate::error::Problem)))]
pub async fn read_all_notifications(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let caller = Caller::from_request(&req)?;
    let me = caller.user_id.as_str();
    let groups = notification::unread_groups(&state.db, me).await?;
    let marked: Vec<Option<bool>> = futures::stream::iter(groups)
        .map(|group| async move { notification::mark_read(&state.db, me, &group).await })
        .buffer_unordered(READ_ALL_CONCURRENCY)
        .try_collect()
        .await?;
    let marked = marked.iter().filter(|m| **m == Some(true)).count();
    let unread = notification::unread(&state.db, me).await?;
    json(StatusCode::OK, &ReadAll { marked, unread })
}

/// Counts an event in its group; events someone causes on their own things, between accounts
/// that block each other, or of an account being deleted, notify no one.
pub async fn add(state: &State, event: New<'_>) -> anyhow::Result<()> {
    if let Some(actor) = event.actor
        && (actor == event.user_id
            || crate::social::blocked_between(state, actor, event.user_id).await?)
    {
        return Ok(());
    }
    let counted = notification::add(&state.db, &event, Utc::now().timestamp_millis()).await?;
    tracing::debug!(kind = event.kind, counted, "notification");
    Ok(())
}

/// The account a `@handle` names, if any.
async fn account_of(state: &State, handle: &str) -> anyhow::Result<Option<String>> {
    if handle.is_empty() || handle.len() > 64 {
        return Ok(None);
    }
    let item = state.db.get(&keys::username(handle), keys::UNIQUE).await?;
    Ok(item.and_then(|i| get_s(&i, "user_id").map(str::to_owned)))
}

/// Notifies the accounts `handles` name that `actor` mentioned them, in a post or in a comment
/// on it; only those who may see the post.
pub async fn mentioned(
    state: &State,
    post_id: &str,
    comment_id: Option<&str>,
    actor: &str,
    handles: &[String],
) -> anyhow::Result<()> {
    let Some(post) = posts::load(state, post_id).await? else {
        return Ok(());
    };
    let group = format!("mention.{}", comment_id.unwrap_or(post_id));
    for handle in handles.iter().take(posts::MAX_MENTIONS) {
        let Some(user_id) = account_of(state, handle).await? else {
            continue;
        };
        if !posts::can_see(state, Some(&user_id), &post).await? {
            continue;
        }
        add(
            state,
            New {
                user_id: &user_id,
                kind: "mention",
                group: group.clone(),
                actor: Some(actor),
                post_id: Some(post_id),
                comment_id,
                job_id: None,
                job_kind: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// A job of the caller's ended: completed (a style trained) or failed; a canceled one is the
/// caller's own doing and notifies no one.
async fn job_ended(state: &State, job: &JobRef, outcome: &Outcome) {
    let status = match outcome {
        Outcome::Completed(_) => "completed",
        Outcome::Failed { .. } => "failed",
        Outcome::Canceled { .. } => return,
    };
    crate::social::events::notify(
        state,
        crate::social::events::Event::JobEnded {
            job_id: job.id.clone(),
            user_id: job.user_id.clone(),
            status: status.to_owned(),
        },
    )
    .await;
}

/// What the jobs core calls when a job ends.
pub const JOB_ENDED: crate::jobs::registry::Ended =
    |state, job, outcome| Box::pin(job_ended(state, job, outcome));

/// Notifies a job's owner that it ended.
pub async fn job(state: &State, job_id: &str, user_id: &str, status: &str) -> anyhow::Result<()> {
    let Some(job) = crate::jobs::store::get(&state.db, job_id).await? else {
        return Ok(());
    };
    let kind = match (status, job.kind.as_str()) {
        ("completed", "train_style") => "style_trained",
        ("completed", _) => "job_completed",
        _ => "job_failed",
    };
    add(
        state,
        New {
            user_id,
            kind,
            group: format!("job.{job_id}"),
            actor: None,
            post_id: None,
            comment_id: None,
            job_id: Some(job_id),
            job_kind: Some(&job.kind),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(name: &str) -> Author {
        Author {
            id: name.to_owned(),
            username: name.to_owned(),
            display_name: None,
            photo_url: None,
        }
    }

    #[test]
    fn groups_read_as_sentences() {
        let ann = author("ann");
        let bob = author("bob");
        assert_eq!(
            sentence("like", std::slice::from_ref(&ann), 1, None),
            "ann liked your post"
        );
        assert_eq!(
            sentence("like", &[ann.clone(), bob.clone()], 2, None),
            "ann and bob liked your post"
        );
        assert_eq!(
            sentence("like", &[ann.clone(), bob], 13, None),
            "ann and 12 others liked your post"
        );
        assert_eq!(
            sentence("follow", &[ann], 2, None),
            "ann and 1 other started following you"
        );
        assert_eq!(
            sentence("job_failed", &[], 1, Some("text_to_image")),
            "Your text to image job failed"
        );
    }
}
