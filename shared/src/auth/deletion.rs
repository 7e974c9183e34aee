//! Deleting an account (`DELETE /v1/users/me`, which the app stores require) and Kakao's unlink
//! callback.
//!
//! The request ends the account at once (one transaction: the profile marked, every session
//! over, the username, email and identity claims gone, so nothing signs in to it and each is free
//! again) and queues the purge; the queue's consumer then stops the account's jobs, ends its
//! Kakao link with the admin key and revokes its Google and Naver tokens, deletes its files, its jobs and their delivery logs, its
//! webhook endpoints and theirs, its ledger and its profile. Every step is safe to repeat, so
//! the queue retrying a failed purge, or the user asking twice, finishes the same deletion.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::get_s;
use crate::error::ApiError;
use crate::http::{Caller, json};
use crate::jobs::handlers::{Stopped, stop};
use crate::jobs::store;
use crate::jobs::worker::{Consumer, Disposition};
use crate::keys;
use crate::state::State;
use crate::users;

/// Work for the removal queue.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
enum Removal {
    /// Purge a deleted account's data.
    DeleteAccount { user_id: String },
    /// The provider ended the link (Kakao's unlink callback): forget the identity.
    ProviderUnlinked {
        provider: String,
        subject: String,
        referrer: Option<String>,
    },
}

async fn enqueue(state: &State, removal: &Removal) -> Result<(), ApiError> {
    let queue = state
        .config
        .removal_queue_url
        .as_deref()
        .ok_or(ApiError::NotFound("account deletion is not configured"))?;
    Ok(state.send_json(queue, removal).await?)
}

/// What a deletion request is told.
#[derive(Serialize, ToSchema)]
pub struct Deletion {
    /// `deleting`: the account is gone for every sign-in now; its data goes within minutes.
    pub status: &'static str,
}

/// Deletes the caller's account: it ends at once (no sign-in reaches it; every session is
/// over; its email, username and identities are free) and its data is purged from a queue within
/// minutes (jobs stopped, files, jobs, ledger, endpoints deleted, Kakao's link ended). A second
/// call, with an access token still in its 15 minutes, is harmless: 202 again.
#[utoipa::path(delete, path = "/v1/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 202, description = "the account is deleted; its data is being purged", body = Deletion),
        (status = 401, body = crate::error::Problem),
        (status = 404, description = "account deletion is not configured", body = crate::error::Problem)))]
pub async fn delete_me(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    if state.config.removal_queue_url.is_none() {
        return Err(ApiError::NotFound("account deletion is not configured"));
    }
    let began = users::begin_deletion(&state.db, &caller.user_id, Utc::now()).await?;
    enqueue(
        state,
        &Removal::DeleteAccount {
            user_id: caller.user_id.clone(),
        },
    )
    .await?;
    tracing::info!(user_id = %caller.user_id, first = began, "account deletion requested");
    crate::search::index::poke(state).await;
    json(StatusCode::ACCEPTED, &Deletion { status: "deleting" })
}

/// The removal queue's consumer.
pub const REMOVALS: Consumer = Consumer {
    name: "account removals",
    handle: |state, body| Box::pin(process(state, body)),
};

/// Carries out one removal. A purge whose jobs are still stopping is retried by the queue.
pub async fn process(state: &State, body: &str) -> anyhow::Result<Disposition> {
    let Ok(removal) = serde_json::from_str::<Removal>(body) else {
        tracing::warn!("dropping a removal message that does not parse");
        return Ok(Disposition::Done);
    };
    match removal {
        Removal::DeleteAccount { user_id } => purge(state, &user_id).await,
        Removal::ProviderUnlinked {
            provider,
            subject,
            referrer,
        } => {
            let user = users::forget_identity(&state.db, &provider, &subject).await?;
            tracing::info!(
                provider,
                referrer = referrer.as_deref().unwrap_or("-"),
                user_id = user.as_deref().unwrap_or("-"),
                "the provider ended a link"
            );
            Ok(Disposition::Done)
        }
    }
}

/// Purges a deleted account's data, in an order that a retry resumes: jobs (stopped first),
/// the provider links, files, then the account's own partition, its profile with it.
async fn purge(state: &State, user_id: &str) -> anyhow::Result<Disposition> {
    let pk = keys::user(user_id);
    if let Some(profile) = state.db.get(&pk, keys::PROFILE).await? {
        // Only a deleted account is purged: a message naming a live one is no request of its owner.
        if !profile.contains_key("deleted_at") {
            tracing::warn!(user_id, "a purge of an account not deleted: ignored");
            return Ok(Disposition::Done);
        }
    }
    // Jobs first: each is stopped, and deleted once it has ended. A job running here stops at its
    // next checkpoint, so the purge looks again for a while before leaving it to the queue.
    let started = std::time::Instant::now();
    loop {
        let stopping = stop_and_delete_jobs(state, user_id).await?;
        if stopping == 0 {
            break;
        }
        if started.elapsed() > JOBS_STOP_WAIT {
            tracing::info!(
                user_id,
                stopping,
                "a purge waits for the account's jobs to stop"
            );
            return Ok(Disposition::Retry);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // The providers' links: Kakao's ended with the admin key, Google's and Naver's revoked with
    // the token a browser sign-in left (a native sign-in's tokens are the app's SDK's).
    for copy in state
        .db
        .query_prefix(&pk, keys::LINKED_IDENTITY_PREFIX)
        .await?
    {
        let (Some(provider), Some(subject)) = (get_s(&copy, "provider"), get_s(&copy, "subject"))
        else {
            continue;
        };
        // Signed up again since (the deletion freed the identity)? That link is the new account's.
        let owner = state
            .db
            .get(&keys::identity(provider, subject), keys::UNIQUE)
            .await?;
        if owner
            .as_ref()
            .and_then(|o| get_s(o, "user_id"))
            .is_some_and(|owner| owner != user_id)
        {
            continue;
        }
        match provider {
            "kakao" => kakao_unlink(state, subject).await?,
            _ => crate::auth::oidc::revoke(state, &copy).await?,
        }
    }
    for prefix in crate::media::user_prefixes(user_id) {
        crate::media::delete_prefix(state, &prefix).await?;
    }
    // Personas' Instagram links: their lookups and refresh entries live outside the partition.
    for persona in crate::persona::items(&state.db, user_id).await? {
        let (Some(persona_id), Some(ig_user_id)) =
            (get_s(&persona, "id"), get_s(&persona, "ig_user_id"))
        else {
            continue;
        };
        state
            .db
            .take(
                &keys::instagram_user(ig_user_id),
                &keys::instagram_link(user_id, persona_id),
            )
            .await?;
        if let Some(refresh) = get_s(&persona, "ig_refresh_sk") {
            state.db.take(keys::INSTAGRAM_REFRESH, refresh).await?;
        }
    }
    // Follows both ways: each taken out of the other account's list and count too.
    for entry in state.db.query_prefix(&pk, keys::FOLLOWING_PREFIX).await? {
        if let Some(followee) = get_s(&entry, "user_id") {
            crate::follow::remove(&state.db, user_id, followee).await?;
        }
    }
    for entry in state.db.query_prefix(&pk, keys::FOLLOWER_PREFIX).await? {
        if let Some(follower) = get_s(&entry, "user_id") {
            crate::follow::remove(&state.db, follower, user_id).await?;
        }
    }
    // Posts (with what hangs on them), likes and shares (taken back from the posts' counts).
    crate::post::remove_account(&state.db, user_id).await?;
    state.db.delete_partition(&keys::feed(user_id)).await?;
    crate::notification::remove_account(&state.db, user_id).await?;
    // Blocks both ways: their mirrors in the other accounts' partitions.
    let mut mirrors = Vec::new();
    for (prefix, mirror) in [
        (keys::BLOCK_PREFIX, keys::blocked_by as fn(&str) -> String),
        (keys::BLOCKED_BY_PREFIX, keys::block),
    ] {
        for entry in state.db.query_prefix(&pk, prefix).await? {
            if let Some(other) = get_s(&entry, "user_id") {
                mirrors.push(crate::db::key(&keys::user(other), &mirror(user_id)));
            }
        }
    }
    state.db.delete_keys(mirrors).await?;
    for endpoint in state.db.query_prefix(&pk, keys::ENDPOINT_PREFIX).await? {
        if let Some(id) =
            get_s(&endpoint, "sk").and_then(|sk| sk.strip_prefix(keys::ENDPOINT_PREFIX))
        {
            state.db.delete_partition(&keys::deliveries(id)).await?;
        }
    }
    // Conversations: each session's messages and documents live in a partition of their own.
    for session in state.db.query_prefix(&pk, keys::CHAT_PREFIX).await? {
        if let Some(id) = get_s(&session, "sk").and_then(|sk| sk.strip_prefix(keys::CHAT_PREFIX)) {
            state.db.delete_partition(&keys::chat_messages(id)).await?;
        }
    }
    let deleted = state.db.delete_partition(&pk).await?;
    tracing::info!(user_id, items = deleted, "account purged");
    Ok(Disposition::Done)
}

/// How long a purge waits for running jobs to stop before the queue retries it.
const JOBS_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Stops every job of the account and deletes those that have ended (with their delivery logs);
/// how many are still stopping.
async fn stop_and_delete_jobs(state: &State, user_id: &str) -> anyhow::Result<usize> {
    let now = Utc::now();
    let mut stopping = 0;
    let mut after: Option<String> = None;
    loop {
        let filter = store::ListFilter::default();
        let (jobs, next) = store::list(&state.db, user_id, &filter, 100, after.as_deref()).await?;
        for job in jobs {
            match stop(state, &job, "its account was deleted", now).await? {
                Stopped::Ended => {
                    state
                        .db
                        .delete_partition(&keys::deliveries(&job.id))
                        .await?;
                    store::delete_finished(&state.db, &job.id).await?;
                }
                Stopped::Canceled | Stopped::Requested | Stopped::Moved => stopping += 1,
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(stopping),
        }
    }
}

/// Ends the app's link with a Kakao user, as an admin (`POST /v1/user/unlink` with
/// `Authorization: KakaoAK <admin key>`, `target_id_type=user_id`). A user Kakao no longer links
/// (error -101) is done already; other failures are retried by the queue.
async fn kakao_unlink(state: &State, kakao_id: &str) -> anyhow::Result<()> {
    let Some(admin_key) = crate::oauth::client_secret(state, "kakao_admin_key").await? else {
        tracing::warn!("no Kakao admin key is configured: the Kakao link is left to Kakao");
        return Ok(());
    };
    let response = state
        .http
        .api
        .post(format!(
            "{}/v1/user/unlink",
            state.config.oidc.kakao_api_url
        ))
        .header("authorization", format!("KakaoAK {admin_key}"))
        .form(&[("target_id_type", "user_id"), ("target_id", kakao_id)])
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("calling Kakao's unlink: {}", e.without_url()))?;
    let status = response.status();
    let body = crate::http::read_limited(response, 16 * 1024).await?;
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status.is_success() || answer["code"] == -101 {
        return Ok(());
    }
    anyhow::bail!("Kakao's unlink answered {status}")
}

/// Kakao's unlink callback: Kakao calls it (GET or POST, `app_id`, `user_id`, `referrer_type`)
/// when a user unlinks the app on Kakao's side or leaves Kakao. Its `Authorization: KakaoAK
/// <admin key>` is compared in constant time; the answer is a 200 at once, for a user Lambent
/// knows or not, and the identity is forgotten from the removal queue (the account keeps its
/// other ways in; with none left, it stays until its owner signs in another way or it is
/// deleted). Source: developers.kakao.com/docs/latest/en/kakaologin/callback.
#[utoipa::path(post, path = "/v1/webhooks/kakao/unlink", tag = "webhooks",
    params(("app_id" = Option<String>, Query), ("user_id" = String, Query, description = "the Kakao user id (회원번호)"),
        ("referrer_type" = Option<String>, Query, description = "ACCOUNT_DELETE, FORCED_ACCOUNT_DELETE, UNLINK_FROM_APPS, UNLINK_FROM_ADMIN or INCOMPLETE_SIGN_UP")),
    responses((status = 200, description = "taken: the identity is forgotten shortly"),
        (status = 401, description = "not Kakao: the admin key is missing or wrong", body = crate::error::Problem),
        (status = 404, description = "Kakao sign-in is not configured", body = crate::error::Problem)))]
pub async fn receive_kakao_unlink(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    use subtle::ConstantTimeEq as _;
    let Some(admin_key) = crate::oauth::client_secret(state, "kakao_admin_key").await? else {
        return Err(ApiError::NotFound("Kakao sign-in is not configured"));
    };
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let expected = format!("KakaoAK {admin_key}");
    let genuine = presented.len() == expected.len()
        && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()));
    if !genuine {
        return Err(ApiError::Unauthorized {
            code: "invalid_signature",
            detail: "this is not Kakao: the admin key is missing or wrong",
        });
    }
    // Kakao sends the fields as a query (GET) or a form (POST).
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(crate::http::body_bytes(&req).unwrap_or_default())
            .into_owned()
            .collect();
    let field =
        |name: &str| crate::http::query_param(&req, name).or_else(|| form.get(name).cloned());
    let user_id = field("user_id")
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ApiError::invalid("user_id", "Kakao's user id, digits"))?;
    enqueue(
        state,
        &Removal::ProviderUnlinked {
            provider: "kakao".into(),
            subject: user_id,
            referrer: field("referrer_type").filter(|r| r.len() <= 64),
        },
    )
    .await?;
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}
