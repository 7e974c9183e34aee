//! Comments on posts, one level of replies: add, list (oldest or newest first), edit your own,
//! delete your own or any on your post. A post's comment count is on its counter shards, a
//! comment's reply count on the comment, each moved in the transaction that adds or removes.
//!
//! A post's comments share one partition (`COMMENTS#<post>`): top-level ones at `C#<id>`, replies
//! at `R#<parent>#<id>` (ids are UUIDv7, so keys sort by time), and a locator `ID#<id>` for each.
//! A deleted comment that has replies stays as a tombstone (no body, no author) so its replies
//! keep their place; one without replies goes.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{Item, failed_conditions, get_i64, get_s, n, s, tx};
use crate::error::ApiError;
use crate::http::{Caller, json, json_body, path_param, query_param};
use crate::keys;
use crate::social::posts::{self, Author, Post};
use crate::social::profiles;
use crate::state::State;

/// The longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2_200;

/// `POST /v1/posts/{id}/comments`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateComment {
    /// 1 to 2,200 characters.
    #[schema(min_length = 1, max_length = 2200)]
    pub body: String,
    /// A top-level comment of the post to reply to (one level of replies).
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// `PATCH /v1/posts/{id}/comments/{comment_id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateComment {
    #[schema(min_length = 1, max_length = 2200)]
    pub body: String,
}

/// A comment as served.
#[derive(Serialize, ToSchema)]
pub struct CommentView {
    pub id: String,
    pub post_id: String,
    /// The comment this one replies to.
    pub parent_id: Option<String>,
    /// `null` once deleted (or the author's account is gone).
    pub author: Option<Author>,
    /// `null` once deleted.
    pub body: Option<String>,
    /// Deleted, kept for its replies.
    pub deleted: bool,
    /// Replies to it (top-level comments).
    pub replies: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A page of comments.
#[derive(Serialize, ToSchema)]
pub struct CommentPage {
    pub items: Vec<CommentView>,
    /// The next page's cursor (also in the `Link` header); `null` on the last page.
    pub next_cursor: Option<String>,
}

fn check_body(body: &str) -> Result<String, ApiError> {
    let body = body.trim();
    if body.is_empty() || body.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::invalid(
            "body",
            format!("1 to {MAX_COMMENT_CHARS} characters"),
        ));
    }
    Ok(body.to_owned())
}

/// A comment's item and its sort key, by its id.
pub async fn find(
    state: &State,
    post_id: &str,
    comment_id: &str,
) -> Result<Option<Item>, ApiError> {
    if uuid::Uuid::parse_str(comment_id).is_err() {
        return Ok(None);
    }
    let partition = keys::comments(post_id);
    let Some(locator) = state
        .db
        .get(&partition, &keys::comment_locator(comment_id))
        .await?
    else {
        return Ok(None);
    };
    let Some(sk) = get_s(&locator, "at_sk") else {
        return Ok(None);
    };
    Ok(state.db.get(&partition, sk).await?)
}

async fn views(
    state: &State,
    items: &[Item],
    hidden: &std::collections::HashSet<String>,
) -> Result<Vec<CommentView>, ApiError> {
    let authors = posts::authors(state, items.iter().filter_map(|i| get_s(i, "author_id"))).await?;
    Ok(items
        .iter()
        .filter(|i| get_s(i, "sk").is_some_and(|sk| !sk.starts_with("ID#")))
        .filter(|i| get_s(i, "author_id").is_none_or(|a| !hidden.contains(a)))
        // Hidden by moderation: shown to no one.
        .filter(|i| !i.contains_key(posts::MODERATION_HIDDEN))
        .filter_map(|i| {
            let deleted = i.contains_key("deleted_at");
            Some(CommentView {
                id: get_s(i, "id")?.to_owned(),
                post_id: get_s(i, "post_id")?.to_owned(),
                parent_id: get_s(i, "parent_id").map(str::to_owned),
                author: if deleted {
                    None
                } else {
                    get_s(i, "author_id").and_then(|a| authors.get(a).cloned())
                },
                body: if deleted {
                    None
                } else {
                    get_s(i, "body").map(str::to_owned)
                },
                deleted,
                replies: get_i64(i, "replies_count").unwrap_or(0).max(0),
                created_at: get_s(i, "created_at").unwrap_or_default().to_owned(),
                updated_at: get_s(i, "updated_at").unwrap_or_default().to_owned(),
            })
        })
        .collect())
}

/// Comments on a post you may see, or replies to one of them (`?reply_to=`); the first the
/// oldest, or with `?order=newest` the newest.
#[utoipa::path(post, path = "/v1/posts/{id}/comments", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = CreateComment,
    responses((status = 201, body = CommentView), (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such post (or comment to reply to) the caller may see; or the account no longer exists", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn create_comment(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let request: CreateComment = json_body(&req, &["application/json"])?;
    let body = check_body(&request.body)?;
    let post = posts::visible(state, Some(&caller.user_id), &id).await?;
    let parent = match &request.reply_to {
        Some(parent_id) => {
            let parent = find(state, &post.id, parent_id)
                .await?
                .filter(|p| !p.contains_key("parent_id") && !p.contains_key("deleted_at"))
                .ok_or(ApiError::NotFound("no such comment to reply to"))?;
            Some(parent)
        }
        None => None,
    };
    let comment_id = uuid::Uuid::now_v7().to_string();
    let now = Utc::now();
    let stamp = crate::users::timestamp(now);
    let partition = keys::comments(&post.id);
    let parent_id = parent
        .as_ref()
        .and_then(|p| get_s(p, "id"))
        .map(str::to_owned);
    let sk = match &parent_id {
        Some(parent_id) => keys::reply(parent_id, &comment_id),
        None => keys::comment(&comment_id),
    };
    let mut item = vec![
        ("pk", s(&partition)),
        ("sk", s(&sk)),
        ("id", s(&comment_id)),
        ("post_id", s(&post.id)),
        ("author_id", s(&caller.user_id)),
        ("body", s(&body)),
        ("at", n(now.timestamp_millis())),
        ("created_at", s(&stamp)),
        ("updated_at", s(&stamp)),
    ];
    if let Some(parent_id) = &parent_id {
        item.push(("parent_id", s(parent_id)));
    }
    let mut actions = vec![
        tx::put(&state.db, item, Some("attribute_not_exists(pk)"))?,
        tx::put(
            &state.db,
            vec![
                ("pk", s(&partition)),
                ("sk", s(keys::comment_locator(&comment_id))),
                ("at_sk", s(&sk)),
            ],
            None,
        )?,
        crate::post::count(&state.db, &post.id, &caller.user_id, "comments", 1)?,
    ];
    if let Some(parent_id) = &parent_id {
        actions.push(tx::update(
            &state.db,
            (&partition, &keys::comment(parent_id)),
            "ADD replies_count :one",
            Some("attribute_exists(pk) AND attribute_not_exists(deleted_at)"),
            &[],
            vec![(":one", n(1))],
        )?);
    }
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {}
        Err(err) if failed_conditions(&err).is_some() => {
            return Err(ApiError::NotFound("no such post (or comment to reply to)"));
        }
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("adding a comment"),
            ));
        }
    }
    let (_, mentions) = posts::extract(&body);
    crate::social::events::notify(
        state,
        crate::social::events::Event::Commented {
            post_id: post.id.clone(),
            comment_id: comment_id.clone(),
            actor: caller.user_id.clone(),
            parent: parent.as_ref().and_then(|p| {
                Some((
                    get_s(p, "id")?.to_owned(),
                    get_s(p, "author_id")?.to_owned(),
                ))
            }),
            mentions: mentions.into_iter().take(posts::MAX_MENTIONS).collect(),
        },
    )
    .await;
    let item = state
        .db
        .get(&partition, &sk)
        .await?
        .ok_or(ApiError::NotFound("no such comment"))?;
    let view = views(state, &[item], &Default::default())
        .await?
        .pop()
        .ok_or(ApiError::NotFound("no such comment"))?;
    json(StatusCode::CREATED, &view)
}

async fn page(
    state: &State,
    req: &Request,
    viewer: Option<&str>,
    post: &Post,
) -> Result<Response<Body>, ApiError> {
    let newest_first = match query_param(req, "order").as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(_) => return Err(ApiError::invalid("order", "oldest or newest")),
    };
    let parent = query_param(req, "reply_to");
    if parent
        .as_deref()
        .is_some_and(|p| uuid::Uuid::parse_str(p).is_err())
    {
        return Err(ApiError::NotFound("no such comment"));
    }
    let prefix = parent
        .as_deref()
        .map_or_else(|| keys::COMMENT_PREFIX.to_owned(), keys::replies_prefix);
    let paging = crate::cursor::Paging::from_request(
        req,
        state.cursor_key().await?,
        format!("comments|{}|{prefix}|{newest_first}", post.id),
    )?;
    let partition = keys::comments(&post.id);
    let (items, next) =
        crate::social::list_page(state, (&partition, &prefix), &paging, newest_first).await?;
    let hidden = match viewer {
        Some(viewer) => crate::social::hidden_from(state, viewer).await?,
        None => Default::default(),
    };
    let items = views(state, &items, &hidden).await?;
    let next_cursor = paging.next_cursor(next);
    crate::social::page_response(
        req,
        &CommentPage {
            items,
            next_cursor: next_cursor.clone(),
        },
        next_cursor.as_deref(),
    )
}

/// A post's comments (or, with `?reply_to=`, a comment's replies), oldest first or with
/// `?order=newest` newest first, in cursor pages; those of accounts blocked either way are left
/// out.
#[utoipa::path(get, path = "/v1/posts/{id}/comments", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path), ("order" = Option<String>, Query, description = "oldest (default) or newest"),
        ("reply_to" = Option<String>, Query, description = "a comment whose replies to list"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = CommentPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn list_comments(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let post = posts::visible(state, Some(&caller.user_id), &id).await?;
    page(state, &req, Some(&caller.user_id), &post).await
}

/// A public post's comments, readable without signing in (rate-limited per address).
#[utoipa::path(get, path = "/v1/public/posts/{id}/comments", tag = "social",
    params(("id" = String, Path), ("order" = Option<String>, Query, description = "oldest (default) or newest"),
        ("reply_to" = Option<String>, Query, description = "a comment whose replies to list"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = CommentPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn list_public_comments(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    profiles::limit_reads(state, &req).await?;
    let id = path_param(&req, "id").unwrap_or_default();
    let post = posts::visible(state, None, &id).await?;
    page(state, &req, None, &post).await
}

/// Edits your comment.
#[utoipa::path(patch, path = "/v1/posts/{id}/comments/{comment_id}", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path), ("comment_id" = String, Path)), request_body = UpdateComment,
    responses((status = 200, body = CommentView), (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such comment of the caller's", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn update_comment(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let post_id = path_param(&req, "id").unwrap_or_default();
    let comment_id = path_param(&req, "comment_id").unwrap_or_default();
    let request: UpdateComment =
        json_body(&req, &["application/json", "application/merge-patch+json"])?;
    let body = check_body(&request.body)?;
    let not_found = || ApiError::NotFound("no such comment");
    let item = find(state, &post_id, &comment_id)
        .await?
        .ok_or_else(not_found)?;
    let sk = get_s(&item, "sk").ok_or_else(not_found)?.to_owned();
    let partition = keys::comments(&post_id);
    let updated = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(&partition))
        .key("sk", s(&sk))
        .update_expression("SET body = :body, updated_at = :now")
        .condition_expression("author_id = :me AND attribute_not_exists(deleted_at)")
        .expression_attribute_values(":body", s(&body))
        .expression_attribute_values(":now", s(crate::users::timestamp(Utc::now())))
        .expression_attribute_values(":me", s(&caller.user_id))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
        .send()
        .await;
    let item = crate::db::unless_condition_failed(updated)?
        .and_then(|out| out.attributes)
        .ok_or_else(not_found)?;
    let view = views(state, &[item], &Default::default())
        .await?
        .pop()
        .ok_or_else(not_found)?;
    json(StatusCode::OK, &view)
}

/// Deletes a comment: your own, or any on your post. One with replies stays as a tombstone
/// (`deleted: true`, no body or author) so its replies keep their place.
#[utoipa::path(delete, path = "/v1/posts/{id}/comments/{comment_id}", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path), ("comment_id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such comment the caller may delete", body = crate::error::Problem)))]
pub async fn delete_comment(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let post_id = path_param(&req, "id").unwrap_or_default();
    let comment_id = path_param(&req, "comment_id").unwrap_or_default();
    remove(state, &post_id, &comment_id, Some(&caller.user_id)).await?;
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Deletes a comment (a tombstone when it has replies) and its count, as `by` may: its author
/// or the post's; `None`: moderation, which may delete any. 404 when there is no such comment
/// they may delete.
pub async fn remove(
    state: &State,
    post_id: &str,
    comment_id: &str,
    by: Option<&str>,
) -> Result<(), ApiError> {
    let not_found = || ApiError::NotFound("no such comment");
    let post = posts::load(state, post_id).await?.ok_or_else(not_found)?;
    let partition = keys::comments(&post.id);
    // A reply landing meanwhile changes what the deletion is: read again and decide again.
    for _ in 0..4 {
        let item = find(state, &post.id, comment_id)
            .await?
            .filter(|i| !i.contains_key("deleted_at"))
            .ok_or_else(not_found)?;
        let author = get_s(&item, "author_id").unwrap_or_default().to_owned();
        if by.is_some_and(|by| author != by && post.author_id != by) {
            return Err(not_found());
        }
        let sk = get_s(&item, "sk").ok_or_else(not_found)?.to_owned();
        let replies = get_i64(&item, "replies_count").unwrap_or(0);
        let mut actions = vec![crate::post::count(
            &state.db, &post.id, &author, "comments", -1,
        )?];
        if replies > 0 {
            actions.push(tx::update(
                &state.db,
                (&partition, &sk),
                "SET deleted_at = :now REMOVE body",
                Some("attribute_exists(pk) AND attribute_not_exists(deleted_at)"),
                &[],
                vec![(":now", s(crate::users::timestamp(Utc::now())))],
            )?);
        } else {
            actions.push(tx::delete(
                &state.db,
                (&partition, &sk),
                Some("attribute_exists(pk) AND attribute_not_exists(deleted_at) AND (attribute_not_exists(replies_count) OR replies_count = :zero)"),
                &[],
                vec![(":zero", n(0))],
            )?);
            actions.push(tx::delete(
                &state.db,
                (&partition, &keys::comment_locator(comment_id)),
                None,
                &[],
                vec![],
            )?);
        }
        if let Some(parent_id) = get_s(&item, "parent_id") {
            actions.push(tx::update(
                &state.db,
                (&partition, &keys::comment(parent_id)),
                "ADD replies_count :minus",
                Some("attribute_exists(pk)"),
                &[],
                vec![(":minus", n(-1))],
            )?);
        }
        match crate::db::transact(&state.db, actions).await {
            Ok(()) => return Ok(()),
            Err(err) if failed_conditions(&err).is_some() => {}
            Err(err) => {
                return Err(ApiError::Internal(
                    anyhow::Error::new(err).context("deleting a comment"),
                ));
            }
        }
    }
    Err(not_found())
}
