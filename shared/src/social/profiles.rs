//! `GET /v1/users/{id}`: an account's public profile.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{Item, get_i64, get_s};
use crate::error::ApiError;
use crate::http::{json, path_param};
use crate::keys;
use crate::state::State;

/// What anyone may see of an account.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PublicProfile {
    pub id: String,
    /// The account's unique handle (its username).
    pub username: String,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    pub bio: Option<String>,
    pub counts: Counts,
    pub created_at: String,
}

/// An account's counts, kept exact by the transactions that change them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Counts {
    pub posts: i64,
    pub followers: i64,
    pub following: i64,
}

/// The public profile of a profile item; `None` for an account being deleted.
pub fn public(item: &Item) -> Option<PublicProfile> {
    if item.contains_key("deleted_at") {
        return None;
    }
    let text = |name| get_s(item, name).map(str::to_owned);
    let count = |name| get_i64(item, name).unwrap_or(0).max(0);
    Some(PublicProfile {
        id: text("id")?,
        username: text("username")?,
        display_name: text("display_name"),
        photo_url: text("photo_url"),
        bio: text("bio"),
        counts: Counts {
            posts: count("posts_count"),
            followers: count("followers_count"),
            following: count("following_count"),
        },
        created_at: text("created_at").unwrap_or_default(),
    })
}

/// The public profiles of the accounts `ids` that exist, by id: one batch read.
pub async fn many<'a>(
    state: &State,
    ids: impl Iterator<Item = &'a str>,
) -> Result<std::collections::HashMap<String, PublicProfile>, ApiError> {
    let mut keys: Vec<(String, String)> = ids
        .map(|id| (keys::user(id), keys::PROFILE.to_owned()))
        .collect();
    keys.sort();
    keys.dedup();
    Ok(state
        .db
        .batch_get_many(&keys)
        .await?
        .iter()
        .filter_map(public)
        .map(|p| (p.id.clone(), p))
        .collect())
}

/// The account `id` names, if it exists.
pub async fn find(state: &State, id: &str) -> Result<Option<PublicProfile>, ApiError> {
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    let item = state.db.get(&keys::user(id), keys::PROFILE).await?;
    Ok(item.as_ref().and_then(public))
}

/// An account in a list (followers, following, likers, blocks).
#[derive(Serialize, ToSchema)]
pub struct AccountEntry {
    pub id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    /// When it joined the list (the follow, the like, the block).
    pub since: String,
}

/// The accounts of a list's page (items naming one by `user_id`, since `at` in ms), in order,
/// their profiles read in one batch; accounts being deleted, and those in `hidden`, are left out.
pub async fn entries(
    state: &State,
    items: &[Item],
    hidden: &std::collections::HashSet<String>,
) -> Result<Vec<AccountEntry>, ApiError> {
    let page: Vec<(String, i64)> = items
        .iter()
        .filter_map(|i| {
            Some((
                get_s(i, "user_id")?.to_owned(),
                get_i64(i, "at").unwrap_or(0),
            ))
        })
        .collect();
    let profiles = many(state, page.iter().map(|(id, _)| id.as_str())).await?;
    Ok(page
        .iter()
        .filter(|(id, _)| !hidden.contains(id))
        .filter_map(|(id, at)| {
            let profile = profiles.get(id)?.clone();
            Some(AccountEntry {
                id: profile.id,
                username: profile.username,
                display_name: profile.display_name,
                photo_url: profile.photo_url,
                since: chrono::DateTime::from_timestamp_millis(*at)
                    .map(crate::users::timestamp)
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// Spends a try from the caller's address's budget of public reads.
pub async fn limit_reads(state: &State, req: &Request) -> Result<(), ApiError> {
    let ip = crate::http::client_ip(req);
    crate::ratelimit::spend_one(&state.db, "public-read-ip", &ip, PUBLIC_READS_PER_MINUTE).await
}

/// Public reads an address may make a minute.
pub const PUBLIC_READS_PER_MINUTE: u32 = 600;

/// An account's public profile: handle, display name, photo, bio and its counts of posts,
/// followers and following. Readable without signing in (rate-limited per address).
#[utoipa::path(get, path = "/v1/users/{id}", tag = "social", params(("id" = String, Path)),
    responses((status = 200, body = PublicProfile), (status = 404, body = crate::error::Problem),
        (status = 429, body = crate::error::Problem)))]
pub async fn get_user_profile(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    limit_reads(state, &req).await?;
    let id = path_param(&req, "id").unwrap_or_default();
    let profile = find(state, &id)
        .await?
        .ok_or(ApiError::NotFound("no such account"))?;
    json(StatusCode::OK, &profile)
}
