//! Blocks: an account blocks another, and each stops seeing the other: follows both ways are
//! removed and refused, posts and comments hidden both ways, likes and comments on the blocker's
//! posts refused (their posts read as missing).

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{failed_conditions, n, s, tx};
use crate::error::ApiError;
use crate::http::{Caller, json, path_param};
use crate::keys;
use crate::social::profiles;
use crate::social::reactions::AccountPage;
use crate::state::State;

/// Whether the caller blocks an account.
#[derive(Serialize, ToSchema)]
pub struct BlockState {
    pub blocking: bool,
}

fn target(req: &Request, caller: &Caller) -> Result<String, ApiError> {
    let id = path_param(req, "id").unwrap_or_default();
    if id == caller.user_id {
        return Err(ApiError::invalid("id", "an account does not block itself"));
    }
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::NotFound("no such account"));
    }
    Ok(id)
}

/// Blocks an account (201; 200 when blocked already): follows between the two are removed, and
/// neither sees the other's posts, comments or likes from now on.
#[utoipa::path(post, path = "/v1/users/{id}/block", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 201, description = "blocked", body = BlockState),
        (status = 200, description = "blocked already", body = BlockState),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, description = "the caller's own id", body = crate::error::Problem)))]
pub async fn block_user(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let other = target(&req, &caller)?;
    let me = caller.user_id.as_str();
    let at = Utc::now().timestamp_millis();
    let actions = vec![
        tx::put(
            &state.db,
            vec![
                ("pk", s(keys::user(me))),
                ("sk", s(keys::block(&other))),
                ("user_id", s(&other)),
                ("at", n(at)),
            ],
            Some("attribute_not_exists(pk)"),
        )?,
        tx::put(
            &state.db,
            vec![
                ("pk", s(keys::user(&other))),
                ("sk", s(keys::blocked_by(me))),
                ("user_id", s(me)),
                ("at", n(at)),
            ],
            None,
        )?,
        tx::check(
            &state.db,
            (&keys::user(&other), keys::PROFILE),
            "attribute_exists(pk) AND attribute_not_exists(deleted_at)",
        )?,
    ];
    let status = match crate::db::transact(&state.db, actions).await {
        Ok(()) => StatusCode::CREATED,
        Err(err) => match failed_conditions(&err) {
            Some(failed) if failed.first() == Some(&true) => StatusCode::OK,
            Some(_) => return Err(ApiError::NotFound("no such account")),
            None => {
                return Err(ApiError::Internal(
                    anyhow::Error::new(err).context("blocking"),
                ));
            }
        },
    };
    // The block is in place, so no new follow can land (follows check for it); these take out
    // any made before.
    for (follower, followee) in [(me, other.as_str()), (other.as_str(), me)] {
        if crate::follow::remove(&state.db, follower, followee).await? {
            crate::social::events::notify(
                state,
                crate::social::events::Event::Unfollowed {
                    follower: follower.to_owned(),
                    followee: followee.to_owned(),
                },
            )
            .await;
        }
    }
    tracing::info!(blocker = me, blocked = %other, "blocked");
    json(status, &BlockState { blocking: true })
}

/// Unblocks an account (204 whether or not it was blocked). Follows removed by the block stay
/// removed.
#[utoipa::path(delete, path = "/v1/users/{id}/block", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "not blocked (any more)"), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, description = "the caller's own id", body = crate::error::Problem)))]
pub async fn unblock_user(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let other = target(&req, &caller)?;
    let me = caller.user_id.as_str();
    let actions = vec![
        tx::delete(
            &state.db,
            (&keys::user(me), &keys::block(&other)),
            Some("attribute_exists(pk)"),
            &[],
            vec![],
        )?,
        tx::delete(
            &state.db,
            (&keys::user(&other), &keys::blocked_by(me)),
            None,
            &[],
            vec![],
        )?,
    ];
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {}
        Err(err) if failed_conditions(&err).is_some() => {}
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("unblocking"),
            ));
        }
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// The accounts you block (cursor pages).
#[utoipa::path(get, path = "/v1/users/me/blocks", tag = "social", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = AccountPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn list_blocks(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let paging = crate::cursor::Paging::from_request(
        &req,
        state.cursor_key().await?,
        format!("blocks|{}", caller.user_id),
    )?;
    let (items, next) = crate::social::list_page(
        state,
        (&keys::user(&caller.user_id), keys::BLOCK_PREFIX),
        &paging,
        false,
    )
    .await?;
    let entries = profiles::entries(state, &items, &Default::default()).await?;
    crate::social::reactions::account_page(&req, entries, paging.next_cursor(next))
}
