//! Likes, shares and bookmarks: each one item of truth per (account, post), counted on the
//! post's counter shards in the same transaction (see the module above); the likers listed from
//! their sharded index, the bookmarks from the account's own list.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{failed_conditions, get_s, n, s, tx};
use crate::error::ApiError;
use crate::http::{Caller, json, path_param};
use crate::keys;
use crate::post::{self, Reaction};
use crate::social::posts::{self, PostPage};
use crate::social::profiles;
use crate::state::State;

/// The caller's reaction to a post. (The post's counts are on the post: a reaction's answer
/// reads nothing more, so a viral post's likes cost one read and one transaction each.)
#[derive(Serialize, ToSchema)]
pub struct ReactionState {
    /// Whether the caller has it (liked, shared, bookmarked) now.
    pub active: bool,
}

/// Adds the caller's reaction: 201 when new, 200 when it was there already (a double tap is
/// one like); 404 for a post the caller may not see, or one deleted meanwhile.
async fn react(
    state: &State,
    req: &Request,
    reaction: Reaction,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let id = path_param(req, "id").unwrap_or_default();
    let post = posts::visible(state, Some(&caller.user_id), &id).await?;
    let me = caller.user_id.as_str();
    let at = Utc::now().timestamp_millis();
    let user = keys::user(me);
    let shard = keys::stat_shard(me);
    let item = vec![
        ("pk", s(&user)),
        ("sk", s(keys::reaction(reaction.name(), &post.id))),
        ("kind", s(reaction.name())),
        ("post_id", s(&post.id)),
        ("user_id", s(me)),
        ("at", n(at)),
        ("gsi1pk", s(keys::reactions_of(&post.id, shard))),
        ("gsi1sk", s(keys::reaction_index(reaction.name(), at, me))),
    ];
    let mut actions = vec![tx::put(&state.db, item, Some("attribute_not_exists(pk)"))?];
    // The shard exists exactly as long as the post: a post deleted meanwhile takes nothing.
    match reaction.counter() {
        Some(counter) => actions.push(post::count(&state.db, &post.id, me, counter, 1)?),
        None => {
            actions.push(tx::check(
                &state.db,
                (&keys::post_stat(&post.id, shard), keys::STAT),
                "attribute_exists(pk)",
            )?);
            actions.push(tx::put(
                &state.db,
                vec![
                    ("pk", s(&user)),
                    ("sk", s(keys::bookmark_entry(at, &post.id))),
                    ("post_id", s(&post.id)),
                ],
                None,
            )?);
        }
    }
    let status = match crate::db::transact(&state.db, actions).await {
        Ok(()) => StatusCode::CREATED,
        Err(err) => match failed_conditions(&err) {
            Some(failed) if failed.first() == Some(&true) => StatusCode::OK,
            Some(_) => return Err(ApiError::NotFound("no such post")),
            None => {
                return Err(ApiError::Internal(
                    anyhow::Error::new(err).context("reacting to a post"),
                ));
            }
        },
    };
    if status == StatusCode::CREATED && reaction == Reaction::Like {
        crate::social::events::notify(
            state,
            crate::social::events::Event::Liked {
                post_id: post.id.clone(),
                actor: me.to_owned(),
            },
        )
        .await;
    }
    json(status, &ReactionState { active: true })
}

/// Takes the caller's reaction back; 200 whether or not there was one.
async fn unreact(
    state: &State,
    req: &Request,
    reaction: Reaction,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let id = path_param(req, "id").unwrap_or_default();
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::NotFound("no such post"));
    }
    post::unreact(&state.db, &caller.user_id, reaction, &id).await?;
    json(StatusCode::OK, &ReactionState { active: false })
}

/// Likes a post (201; 200 when liked already: a double tap is one like).
#[utoipa::path(post, path = "/v1/posts/{id}/like", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 201, description = "liked", body = ReactionState),
        (status = 200, description = "liked already", body = ReactionState),
        (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such post, or not one the caller may see", body = crate::error::Problem)))]
pub async fn like_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    react(state, &req, Reaction::Like).await
}

/// Takes the caller's like back (200 whether or not there was one).
#[utoipa::path(delete, path = "/v1/posts/{id}/like", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ReactionState), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn unlike_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    unreact(state, &req, Reaction::Like).await
}

/// Shares a post: counted once per account (201; 200 when shared already).
#[utoipa::path(post, path = "/v1/posts/{id}/share", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 201, description = "shared", body = ReactionState),
        (status = 200, description = "shared already", body = ReactionState),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn share_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    react(state, &req, Reaction::Share).await
}

/// Bookmarks a post, privately (201; 200 when bookmarked already).
#[utoipa::path(post, path = "/v1/posts/{id}/bookmark", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 201, description = "bookmarked", body = ReactionState),
        (status = 200, description = "bookmarked already", body = ReactionState),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn bookmark_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    react(state, &req, Reaction::Bookmark).await
}

/// Takes a bookmark out (200 whether or not there was one).
#[utoipa::path(delete, path = "/v1/posts/{id}/bookmark", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ReactionState), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn unbookmark_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    unreact(state, &req, Reaction::Bookmark).await
}

/// A page of accounts.
#[derive(Serialize, ToSchema)]
pub struct AccountPage {
    pub items: Vec<profiles::AccountEntry>,
    /// The next page's cursor (also in the `Link` header); `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of accounts as served, with its `Link`.
pub fn account_page(
    req: &Request,
    items: Vec<profiles::AccountEntry>,
    next_cursor: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let link = next_cursor.clone();
    crate::social::page_response(req, &AccountPage { items, next_cursor }, link.as_deref())
}

/// A post's likers, newest first (cursor pages), as far as the caller may see the post;
/// accounts that block the caller, or that it blocks, are left out.
#[utoipa::path(get, path = "/v1/posts/{id}/likes", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = AccountPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn list_likes(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let post = posts::visible(state, Some(&caller.user_id), &id).await?;
    let paging = crate::cursor::Paging::from_request(
        &req,
        state.cursor_key().await?,
        format!("likes|{}", post.id),
    )?;
    let items = post::reactions(
        &state.db,
        &post.id,
        Reaction::Like,
        paging.after.as_deref(),
        paging.limit,
    )
    .await?;
    let next = (items.len() == paging.limit)
        .then(|| {
            items
                .last()
                .and_then(|i| get_s(i, "gsi1sk"))
                .map(str::to_owned)
        })
        .flatten();
    let hidden = crate::social::hidden_from(state, &caller.user_id).await?;
    let entries = profiles::entries(state, &items, &hidden).await?;
    account_page(&req, entries, paging.next_cursor(next))
}

/// Your bookmarks, newest first (cursor pages); a post you may no longer see is left out.
#[utoipa::path(get, path = "/v1/users/me/bookmarks", tag = "social", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PostPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn list_bookmarks(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let paging = crate::cursor::Paging::from_request(
        &req,
        state.cursor_key().await?,
        format!("bookmarks|{}", caller.user_id),
    )?;
    let user = keys::user(&caller.user_id);
    let (items, next) =
        crate::social::list_page(state, (&user, keys::BOOKMARKS_PREFIX), &paging, true).await?;
    posts::entries_page(
        state,
        &req,
        Some(&caller.user_id),
        &items,
        paging.next_cursor(next),
    )
    .await
}
