//! The social layer (LOKIZ, Style License): public profiles, follows, posts, likes, bookmarks,
//! shares, comments, blocks, remix chains, notifications and moderation.
//!
//! A follow is one item of truth, `FOLLOW#<follower>#<followee>` (written with
//! `attribute_not_exists`: a second follow, or two at once, is the same one follow), listed under
//! both accounts (`FOLLOWER#…` under the followee, `FOLLOWING#…` under the follower, newest first
//! by the follow's time) and counted on both profiles, all in one transaction; an unfollow takes
//! the same items and counts back in one transaction whose condition is the follow itself. So
//! the counts are exact under any concurrency. Each follow or unfollow writes the followee's
//! profile, one item: DynamoDB takes about 1,000 writes a second on an item, so an account
//! gaining followers faster than that waits on the transaction's retries.
//!
//! A post's likes, comments and shares are counted on [`keys::POST_STAT_SHARDS`] counter items
//! of their own partition each (`POSTSTAT#<post>#<n>`), never on the post: a reaction is one
//! transaction that writes its item of truth (under the reacting account, `LIKE#<post>`, with
//! `attribute_not_exists`) and adds one to the reacting account's shard, conditioned on the
//! shard existing (it exists exactly as long as the post). So a double tap is one like, a like
//! and an unlike racing end where they should, and 5,000 likes a second on one post are 16
//! items taking about 310 transactional writes a second each (a third of what one item takes),
//! the index of its likers sharded the same way. A read sums the shards (one BatchGetItem).
//! Counting from a stream instead would take the write off the request path but make the count
//! eventual and its exactness depend on the consumer applying each record once; the shards keep
//! it exact at the moment the like is answered.

pub mod blocks;
pub mod comments;
pub mod events;
pub mod feeds;
pub mod follows;
pub mod moderation;
pub mod notifications;
pub mod posts;
pub mod profiles;
pub mod rankings;
pub mod reactions;
pub mod remixes;
pub mod search;

use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use crate::error::ApiError;
use crate::keys;
use crate::state::State;

/// Whether either account blocks the other.
pub async fn blocked_between(state: &State, a: &str, b: &str) -> Result<bool, ApiError> {
    if a == b {
        return Ok(false);
    }
    let found = state
        .db
        .batch_get(&[
            (keys::user(a), keys::block(b)),
            (keys::user(b), keys::block(a)),
        ])
        .await?;
    Ok(!found.is_empty())
}

/// The accounts the viewer blocks or is blocked by: hidden from everything the viewer reads.
pub async fn hidden_from(
    state: &State,
    viewer: &str,
) -> Result<std::collections::HashSet<String>, ApiError> {
    let mut hidden = std::collections::HashSet::new();
    for prefix in [keys::BLOCK_PREFIX, keys::BLOCKED_BY_PREFIX] {
        for item in state.db.query_prefix(&keys::user(viewer), prefix).await? {
            if let Some(other) =
                crate::db::get_s(&item, "sk").and_then(|sk| sk.strip_prefix(prefix))
            {
                hidden.insert(other.to_owned());
            }
        }
    }
    Ok(hidden)
}

/// A page of a listing as JSON, with `Link: <…>; rel="next"` (RFC 8288) beside its
/// `next_cursor`: the same request with the next page's cursor.
pub fn page_response<T: Serialize>(
    req: &Request,
    page: &T,
    next_cursor: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let mut response = crate::http::json(StatusCode::OK, page)?;
    if let Some(cursor) = next_cursor {
        let mut query: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .filter(|(name, _)| name != "cursor")
                    .collect()
            })
            .unwrap_or_default();
        query.push(("cursor".to_owned(), cursor.to_owned()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let link = format!("<{}?{query}>; rel=\"next\"", req.uri().path());
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert("link", value);
        }
    }
    Ok(response)
}

/// One page of the items of partition `pk` whose sort key begins with `prefix`, newest (highest
/// key) first or oldest first, from where `paging` says; with the position of the next page, if
/// any.
pub async fn list_page(
    state: &State,
    (pk, prefix): (&str, &str),
    paging: &crate::cursor::Paging<'_>,
    newest_first: bool,
) -> Result<(Vec<crate::db::Item>, Option<String>), ApiError> {
    use crate::db::{get_s, s};
    let mut query = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(pk))
        .expression_attribute_values(":prefix", s(prefix))
        .scan_index_forward(!newest_first)
        .limit(i32::try_from(paging.limit).unwrap_or(20));
    if let Some(after) = &paging.after {
        query = query
            .exclusive_start_key("pk", s(pk))
            .exclusive_start_key("sk", s(after));
    }
    let out = query
        .send()
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("listing a page")))?;
    let next = out
        .last_evaluated_key()
        .and_then(|k| get_s(k, "sk"))
        .map(str::to_owned);
    Ok((out.items.unwrap_or_default(), next))
}
