//! Follows: follow / unfollow (idempotent), "do I follow", the followers and following lists.

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{failed_conditions, n, s};
use crate::error::ApiError;
use crate::http::{Caller, json, path_param};
use crate::keys;
use crate::social::profiles;
use crate::state::State;

fn build<T>(built: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, ApiError> {
    built.map_err(|e| ApiError::Internal(e.into()))
}

fn put(
    state: &State,
    attributes: Vec<(&str, AttributeValue)>,
    new: bool,
) -> Result<TransactWriteItem, ApiError> {
    let mut put = Put::builder().table_name(&state.db.table);
    for (name, value) in attributes {
        put = put.item(name, value);
    }
    if new {
        put = put.condition_expression("attribute_not_exists(pk)");
    }
    Ok(TransactWriteItem::builder()
        .put(build(put.build())?)
        .build())
}

/// `ADD <counter> :by` on a profile that exists (and, for `live`, is not being deleted).
fn count(
    state: &State,
    user_id: &str,
    counter: &str,
    by: i64,
    live: bool,
) -> Result<TransactWriteItem, ApiError> {
    let condition = if live {
        "attribute_exists(pk) AND attribute_not_exists(deleted_at)"
    } else {
        "attribute_exists(pk)"
    };
    let update = Update::builder()
        .table_name(&state.db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::PROFILE))
        .update_expression(format!("ADD {counter} :by"))
        .condition_expression(condition)
        .expression_attribute_values(":by", n(by));
    Ok(TransactWriteItem::builder()
        .update(build(update.build())?)
        .build())
}

/// Where the caller stands with an account.
#[derive(Serialize, ToSchema)]
pub struct Relationship {
    /// The caller follows the account.
    pub following: bool,
    /// The account follows the caller.
    pub followed_by: bool,
}

async fn follows(state: &State, follower: &str, followee: &str) -> Result<bool, ApiError> {
    Ok(state
        .db
        .get(&keys::follow(follower, followee), keys::EDGE)
        .await?
        .is_some())
}

fn target(req: &Request, caller: &Caller) -> Result<String, ApiError> {
    let id = path_param(req, "id").unwrap_or_default();
    if id == caller.user_id {
        return Err(ApiError::invalid("id", "an account does not follow itself"));
    }
    Ok(id)
}

/// Follows an account: 201 when it is new, 200 when the caller followed it already (a double tap
/// is one follow).
#[utoipa::path(post, path = "/v1/users/{id}/follow", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 201, description = "followed", body = Relationship),
        (status = 200, description = "followed already", body = Relationship),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, description = "the caller's own id", body = crate::error::Problem)))]
pub async fn follow_user(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let followee = target(&req, &caller)?;
    if followee.is_empty() || followee.len() > 64 {
        return Err(ApiError::NotFound("no such account"));
    }
    // The followee's existence is the transaction's condition on its profile.
    let at = Utc::now().timestamp_millis();
    let me = caller.user_id.as_str();
    let actions = vec![
        put(
            state,
            vec![
                ("pk", s(keys::follow(me, &followee))),
                ("sk", s(keys::EDGE)),
                ("follower", s(me)),
                ("followee", s(&followee)),
                ("at", n(at)),
            ],
            true,
        )?,
        put(
            state,
            vec![
                ("pk", s(keys::user(&followee))),
                ("sk", s(keys::follower_entry(at, me))),
                ("user_id", s(me)),
                ("at", n(at)),
            ],
            false,
        )?,
        put(
            state,
            vec![
                ("pk", s(keys::user(me))),
                ("sk", s(keys::following_entry(at, &followee))),
                ("user_id", s(&followee)),
                ("at", n(at)),
            ],
            false,
        )?,
        count(state, &followee, "followers_count", 1, true)?,
        count(state, me, "following_count", 1, true)?,
        // Neither blocks the other (a block removes follows both ways and keeps them out).
        crate::db::tx::check(
            &state.db,
            (&keys::user(&followee), &keys::block(me)),
            "attribute_not_exists(pk)",
        )?,
        crate::db::tx::check(
            &state.db,
            (&keys::user(me), &keys::block(&followee)),
            "attribute_not_exists(pk)",
        )?,
    ];
    // The backfill and the followee's notification, kept with the follow until queued.
    let pending = crate::social::events::Pending::new(crate::social::events::Event::Followed {
        follower: me.to_owned(),
        followee: followee.clone(),
    });
    let mut actions = actions;
    actions.push(pending.record(&state.db)?);
    let followed_by = follows(state, &followee, me).await?;
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {
            pending.queue(state).await;
            json(
                StatusCode::CREATED,
                &Relationship {
                    following: true,
                    followed_by,
                },
            )
        }
        Err(err) => match failed_conditions(&err) {
            Some(failed) if failed.first() == Some(&true) => json(
                StatusCode::OK,
                &Relationship {
                    following: true,
                    followed_by,
                },
            ),
            Some(_) => Err(ApiError::NotFound("no such account")),
            None => Err(ApiError::Internal(
                anyhow::Error::new(err).context("following"),
            )),
        },
    }
}

/// Unfollows an account; 204 whether or not the caller followed it.
#[utoipa::path(delete, path = "/v1/users/{id}/follow", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "not following (any more)"), (status = 401, body = crate::error::Problem),
        (status = 422, description = "the caller's own id", body = crate::error::Problem)))]
pub async fn unfollow_user(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let followee = target(&req, &caller)?;
    if followee.len() <= 64 && crate::follow::remove(&state.db, &caller.user_id, &followee).await? {
        crate::social::events::notify(
            state,
            crate::social::events::Event::Unfollowed {
                follower: caller.user_id.clone(),
                followee,
            },
        )
        .await;
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Whether the caller follows the account, and it the caller.
#[utoipa::path(get, path = "/v1/users/{id}/follow", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Relationship), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn get_relationship(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let other = path_param(&req, "id").unwrap_or_default();
    if profiles::find(state, &other).await?.is_none() {
        return Err(ApiError::NotFound("no such account"));
    }
    json(
        StatusCode::OK,
        &Relationship {
            following: follows(state, &caller.user_id, &other).await?,
            followed_by: follows(state, &other, &caller.user_id).await?,
        },
    )
}

/// A page of a follow list.
#[derive(Serialize, ToSchema)]
pub struct FollowPage {
    pub items: Vec<profiles::AccountEntry>,
    /// The next page's cursor; `null` on the last page.
    pub next_cursor: Option<String>,
}

async fn page(
    state: &State,
    req: &Request,
    prefix: &'static str,
) -> Result<Response<Body>, ApiError> {
    profiles::limit_reads(state, req).await?;
    let id = path_param(req, "id").unwrap_or_default();
    if profiles::find(state, &id).await?.is_none() {
        return Err(ApiError::NotFound("no such account"));
    }
    let paging = crate::cursor::Paging::from_request(
        req,
        state.cursor_key().await?,
        format!("{prefix}|{id}"),
    )?;
    let (items, next) =
        crate::social::list_page(state, (&keys::user(&id), prefix), &paging, true).await?;
    // The accounts of the page in one read; one being deleted is left out of the lists until its
    // purge takes it out.
    let items = profiles::entries(state, &items, &Default::default()).await?;
    let next_cursor = paging.next_cursor(next);
    crate::social::page_response(
        req,
        &FollowPage {
            items,
            next_cursor: next_cursor.clone(),
        },
        next_cursor.as_deref(),
    )
}

/// An account's followers, newest first (cursor pages; readable without signing in).
#[utoipa::path(get, path = "/v1/users/{id}/followers", tag = "social",
    params(("id" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = FollowPage), (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn list_followers(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    page(state, &req, keys::FOLLOWER_PREFIX).await
}

/// The accounts an account follows, newest first (cursor pages; readable without signing in).
#[utoipa::path(get, path = "/v1/users/{id}/following", tag = "social",
    params(("id" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = FollowPage), (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn list_following(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    page(state, &req, keys::FOLLOWING_PREFIX).await
}
