//! Remix ("glitch") chains (LOKIZ): a post made from another records its source and the chain
//! above it (from the original down to the source, copied from the source when the remix is
//! published, so the whole chain is one read of its posts); a post lists its remixes, newest
//! first, and counts them on its shards. Who may remix: whoever may see the post, except that
//! someone else's private post is never a source, and neither is the post of an account that
//! blocks the remixer (a 404, as any post one may not see), checked before a generation that names
//! the post is admitted and again when its result is published.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::http::{Caller, json, path_param};
use crate::keys;
use crate::social::posts::{self, Post, PostView, Visibility};
use crate::state::State;

/// The longest chain a remix may extend: a remix of a post this deep is refused.
pub const MAX_CHAIN: usize = 100;

/// The post `source_id` as a source `user_id` may remix; 404 when it is not one.
pub async fn source(state: &State, user_id: &str, source_id: &str) -> Result<Post, ApiError> {
    let post = posts::load(state, source_id)
        .await?
        .ok_or(ApiError::NotFound("no such post to remix"))?;
    let own = post.author_id == user_id;
    if (post.visibility == Visibility::Private && !own)
        || !posts::can_see(state, Some(user_id), &post).await?
    {
        return Err(ApiError::NotFound("no such post to remix"));
    }
    if post.remix_chain.len() + 1 >= MAX_CHAIN {
        return Err(ApiError::Unprocessable {
            code: "remix_chain_too_long",
            detail: format!("a remix chain holds at most {MAX_CHAIN} posts"),
        });
    }
    Ok(post)
}

/// The chain a remix of `source` carries: the source's own, then the source.
pub fn chain_of_remix(source: &Post) -> Vec<String> {
    let mut chain = source.remix_chain.clone();
    chain.push(source.id.clone());
    chain
}

async fn check(state: &State, user_id: &str, input: &Value) -> Result<(), ApiError> {
    match input.get("remix_of").and_then(Value::as_str) {
        Some(source_id) => source(state, user_id, source_id).await.map(|_| ()),
        None => Ok(()),
    }
}

/// What the jobs core asks of every submission: a `remix_of` it names must be a post the
/// submitter may remix.
pub const CHECK: crate::jobs::registry::Check =
    |state, user_id, input| Box::pin(check(state, user_id, input));

/// A post's remixes, newest first (cursor pages); those the caller may not see are left out.
#[utoipa::path(get, path = "/v1/posts/{id}/remixes", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = posts::PostPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such post, or not one the caller may see", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn list_remixes(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let post = posts::visible(state, Some(&caller.user_id), &id).await?;
    let paging = crate::cursor::Paging::from_request(
        &req,
        state.cursor_key().await?,
        format!("remixes|{}|{}", post.id, caller.user_id),
    )?;
    let partition = keys::remixes(&post.id);
    let (items, next) =
        crate::social::list_page(state, (&partition, keys::REMIX_PREFIX), &paging, true).await?;
    posts::entries_page(
        state,
        &req,
        Some(&caller.user_id),
        &items,
        paging.next_cursor(next),
    )
    .await
}

/// One post of a chain: `post` is `null` where it was deleted or the caller may not see it.
#[derive(Serialize, ToSchema)]
pub struct ChainLink {
    pub id: String,
    pub post: Option<PostView>,
}

/// A remix chain, from the original to the post asked about.
#[derive(Serialize, ToSchema)]
pub struct Chain {
    pub items: Vec<ChainLink>,
}

/// The chain a post belongs to, in order: the original first, the post last (just the post when
/// it remixes nothing).
#[utoipa::path(get, path = "/v1/posts/{id}/chain", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Chain), (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such post, or not one the caller may see", body = crate::error::Problem)))]
pub async fn get_remix_chain(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let post = posts::visible(state, Some(&caller.user_id), &id).await?;
    let ids = chain_of_remix(&post);
    let found = posts::load_many(state, &ids).await?;
    let visible = posts::visible_posts(state, Some(&caller.user_id), found).await?;
    let mut views: std::collections::HashMap<String, PostView> =
        posts::views(state, Some(&caller.user_id), visible)
            .await?
            .into_iter()
            .map(|v| (v.id.clone(), v))
            .collect();
    let items = ids
        .into_iter()
        .map(|id| ChainLink {
            post: views.remove(&id),
            id,
        })
        .collect();
    json(StatusCode::OK, &Chain { items })
}
