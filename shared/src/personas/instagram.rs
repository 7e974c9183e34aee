//! An Instagram professional account linked to a persona, through "Instagram API with Instagram
//! Login" (no Facebook Page needed; personal accounts can no longer be linked by any official
//! API since Basic Display ended on 2024-12-04), and publishing a finished generation to it.
//!
//! - Link: the browser flow of [`crate::oauth`] (state bound to the browser, used once) to
//!   Instagram's authorize page; the callback exchanges the code for a short-lived token, that for
//!   a long-lived one (60 days), reads the account's id and username, and leaves the app a
//!   one-time code that the signed-in owner redeems for one of their personas. The token is
//!   encrypted at rest with a KMS data key (AES-256-GCM, the persona in the encryption context)
//!   and never logged nor shown.
//! - Refresh: a daily schedule refreshes every token 20 days before it runs out (Meta: a token at
//!   least a day old and not expired refreshes for 60 days).
//! - Meta's data-deletion callback (a `signed_request` verified with the app secret) unlinks the
//!   account everywhere and answers a status URL and a confirmation code.
//! - `publish_instagram` (a job kind): the generation's image by presigned URL → a media
//!   container → polled until FINISHED → published.
//!
//! Sources: `../shared/research/identity-social-facts.md` section 5 (Meta's Instagram Platform
//! reference pages).

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use base64::Engine as _;
use chrono::{TimeZone as _, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::db::{Item, get_i64, get_s, n, s};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json as json_response, json_body, path_param};
use crate::jobs::executor::{Finished, JobError, Progress};
use crate::jobs::model::Job;
use crate::jobs::registry::Kind;
use crate::keys;
use crate::oauth;
use crate::persona;
use crate::state::State;

/// What the link asks Instagram for: the account's profile and publishing.
pub const SCOPES: &str = "instagram_business_basic,instagram_business_content_publish";

/// A token is refreshed this long before it runs out (and never within a day of its issue).
pub const REFRESH_AHEAD_SECONDS: i64 = 20 * 86_400;

/// Where the flow's binding cookie goes: the callback.
const COOKIE_PATH: &str = "/v1/instagram/";

/// The longest caption Instagram takes.
pub const MAX_CAPTION_CHARS: usize = 2_200;

fn configured(state: &State) -> Result<&str, ApiError> {
    state
        .config
        .instagram
        .app_id
        .as_deref()
        .ok_or(ApiError::NotFound("Instagram linking is not configured"))
}

/// The Instagram app's secret (`instagram` in the OAuth clients secret).
async fn app_secret(state: &State) -> anyhow::Result<String> {
    oauth::client_secret(state, "instagram")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the OAuth clients secret has no instagram secret"))
}

// Tokens at rest.

/// Where a persona's token is stored.
const TOKEN: crate::sealed::Names = crate::sealed::Names {
    ciphertext: "ig_token",
    key: "ig_token_key",
    nonce: "ig_token_nonce",
};

async fn seal(
    state: &State,
    persona_id: &str,
    token: &str,
) -> anyhow::Result<crate::sealed::Sealed> {
    crate::sealed::seal(
        state,
        &[("purpose", "instagram-token"), ("persona", persona_id)],
        token,
    )
    .await
}

async fn unseal(state: &State, persona_id: &str, item: &Item) -> anyhow::Result<String> {
    let sealed = crate::sealed::Sealed::from_item(item, TOKEN)
        .ok_or_else(|| anyhow::anyhow!("the persona holds no token"))?;
    crate::sealed::unseal(
        state,
        &[("purpose", "instagram-token"), ("persona", persona_id)],
        &sealed,
    )
    .await
}

// The Graph API.

/// Why a Graph call failed.
#[derive(Debug)]
enum GraphError {
    /// The token expired or was revoked (OAuthException 190).
    Expired(String),
    /// Instagram refused what was asked.
    Rejected(String),
    /// Instagram or the network failed: worth another try.
    Transient(String),
}

impl From<GraphError> for JobError {
    fn from(err: GraphError) -> Self {
        match err {
            GraphError::Expired(message) => JobError::Permanent {
                kind: "instagram_link_expired",
                message: format!(
                    "the Instagram link has expired; link the account again ({message})"
                ),
            },
            GraphError::Rejected(message) => JobError::Permanent {
                kind: "instagram_rejected",
                message,
            },
            GraphError::Transient(message) => JobError::Retryable(message),
        }
    }
}

async fn graph(request: reqwest::RequestBuilder) -> Result<Value, GraphError> {
    let response = request
        .send()
        .await
        .map_err(|e| GraphError::Transient(e.without_url().to_string()))?;
    let status = response.status();
    let body = crate::http::read_limited(response, 256 * 1024)
        .await
        .map_err(|e| GraphError::Transient(e.to_string()))?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(answer);
    }
    let message = answer["error"]["message"]
        .as_str()
        .or(answer["error_message"].as_str())
        .unwrap_or("no message")
        .chars()
        .take(300)
        .collect::<String>();
    if answer["error"]["code"] == 190 {
        return Err(GraphError::Expired(message));
    }
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(GraphError::Transient(format!("{status}: {message}")));
    }
    Err(GraphError::Rejected(format!("{status}: {message}")))
}

// Linking.

/// Starts linking an Instagram professional account to one of the app's personas: the browser
/// goes to Instagram's authorize page and comes back to `/v1/instagram/callback`, which leaves
/// the app a one-time code at its `redirect_uri` for `POST /v1/personas/{id}/instagram`.
#[utoipa::path(get, path = "/v1/instagram/start", tag = "personas",
    params(("persona_id" = String, Query, description = "the persona to link (checked when the code is redeemed)"),
        ("redirect_uri" = String, Query, description = "one of the configured OAUTH_REDIRECT_URIS, exactly"),
        ("code_challenge" = String, Query, description = "the app's PKCE S256 challenge"),
        ("code_challenge_method" = Option<String>, Query), ("state" = Option<String>, Query)),
    responses((status = 302, description = "to Instagram's authorize page; sets the flow's cookie"),
        (status = 400, description = "redirect_uri_not_allowed or invalid_request", body = crate::error::Problem),
        (status = 404, description = "Instagram linking is not configured", body = crate::error::Problem),
        (status = 429, body = crate::error::Problem)))]
pub async fn start_instagram(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let app_id = configured(state)?;
    let app = oauth::app_request(state, &req)?;
    let persona_id = crate::http::query_param(&req, "persona_id")
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .ok_or_else(|| oauth::bad("invalid_request", "persona_id must be a persona's id"))?;
    let callback = oauth::callback_url(state, "/v1/instagram/callback")?;
    // Each start keeps a flow: an address gets the login budget's worth a minute.
    let ip = crate::http::client_ip(&req);
    crate::ratelimit::spend_one(
        &state.db,
        "instagram-ip",
        &ip,
        state.config.rate_limits.login_per_minute,
    )
    .await?;
    let begun = oauth::begin(
        state,
        &app,
        "instagram",
        vec![("persona_id", s(&persona_id))],
        COOKIE_PATH,
    )
    .await?;
    let mut location = url::Url::parse(&format!(
        "{}/oauth/authorize",
        state.config.instagram.oauth_url
    ))
    .map_err(|e| ApiError::Internal(e.into()))?;
    location
        .query_pairs_mut()
        .append_pair("client_id", app_id)
        .append_pair("redirect_uri", &callback)
        .append_pair("response_type", "code")
        .append_pair("scope", SCOPES)
        .append_pair("state", &begun.state);
    oauth::redirect(location.as_str(), Some(&begun.cookie))
}

/// What Instagram's token exchange and the account's profile gave.
struct Linked {
    ig_user_id: String,
    username: Option<String>,
    token: String,
    expires_in: i64,
}

/// Instagram sends the browser back here: the flow is checked and used up (as for sign-in), the
/// code exchanged for a long-lived token, and the app gets a one-time code (or an `error`).
#[utoipa::path(get, path = "/v1/instagram/callback", tag = "personas",
    params(("state" = String, Query), ("code" = Option<String>, Query), ("error" = Option<String>, Query)),
    responses((status = 302, description = "to the app's redirect_uri with `code` and `state`, or `error`"),
        (status = 400, description = "invalid_state, browser_mismatch or provider_mismatch", body = crate::error::Problem),
        (status = 404, description = "Instagram linking is not configured", body = crate::error::Problem)))]
pub async fn instagram_callback(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let app_id = configured(state)?.to_owned();
    let flow = oauth::returning(state, &req, "instagram", COOKIE_PATH, || Ok(())).await?;
    if let Some(error) = oauth::Flow::provider_error(&req) {
        return flow.back(&[("error", &error)]);
    }
    // Meta appends `#_` to the redirect; a fragment never reaches a server, but a pasted one might.
    let Some(code) = crate::http::query_param(&req, "code")
        .map(|c| c.trim_end_matches("#_").to_owned())
        .filter(|c| !c.is_empty() && c.len() <= 2048)
    else {
        return flow.back(&[("error", "invalid_request")]);
    };
    let persona_id = flow.field("persona_id").unwrap_or_default().to_owned();
    let linked = match exchange(state, &app_id, &code).await {
        Ok(linked) => linked,
        Err(err) => {
            tracing::warn!(error = ?err, "linking Instagram failed");
            return flow.back(&[("error", "access_denied")]);
        }
    };
    let sealed = seal(state, &persona_id, &linked.token).await?;
    let mut attributes = vec![
        ("persona_id", s(&persona_id)),
        ("ig_user_id", s(&linked.ig_user_id)),
        (
            "ig_expires_epoch",
            n(Utc::now().timestamp() + linked.expires_in),
        ),
    ];
    attributes.extend(sealed.attributes(TOKEN));
    if let Some(username) = &linked.username {
        attributes.push(("ig_username", s(username)));
    }
    let code = flow.leave_code(state, "instagram", attributes).await?;
    tracing::info!("an Instagram account is ready to link");
    flow.back(&[("code", &code)])
}

/// Code → short-lived token (`POST {oauth}/oauth/access_token`) → long-lived token
/// (`GET {graph}/access_token?grant_type=ig_exchange_token`) → the account (`GET {graph}/me`).
async fn exchange(state: &State, app_id: &str, code: &str) -> Result<Linked, GraphError> {
    let secret = app_secret(state)
        .await
        .map_err(|e| GraphError::Transient(format!("{e:#}")))?;
    let callback = oauth::callback_url(state, "/v1/instagram/callback")
        .map_err(|e| GraphError::Rejected(e.to_string()))?;
    let config = &state.config.instagram;
    let short = graph(
        state
            .http
            .api
            .post(format!("{}/oauth/access_token", config.oauth_url))
            .form(&[
                ("client_id", app_id),
                ("client_secret", &secret),
                ("grant_type", "authorization_code"),
                ("redirect_uri", &callback),
                ("code", code),
            ]),
    )
    .await?;
    // The Business Login answer may wrap the token in `data`.
    let short = if short["data"].is_array() {
        short["data"][0].clone()
    } else {
        short
    };
    let short_token = short["access_token"]
        .as_str()
        .ok_or_else(|| GraphError::Rejected("the token answer has no access_token".into()))?;
    let long = graph(
        state
            .http
            .api
            .get(format!("{}/access_token", config.graph_url))
            .query(&[
                ("grant_type", "ig_exchange_token"),
                ("client_secret", &secret),
                ("access_token", short_token),
            ]),
    )
    .await?;
    let token = long["access_token"]
        .as_str()
        .ok_or_else(|| GraphError::Rejected("the exchange has no access_token".into()))?
        .to_owned();
    let expires_in = long["expires_in"].as_i64().unwrap_or(60 * 86_400);
    let me = graph(
        state
            .http
            .api
            .get(format!("{}/me", config.graph_url))
            .query(&[("fields", "user_id,username"), ("access_token", &token)]),
    )
    .await?;
    let ig_user_id = me["user_id"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| me["user_id"].as_i64().map(|id| id.to_string()))
        .or_else(|| short["user_id"].as_i64().map(|id| id.to_string()))
        .ok_or_else(|| GraphError::Rejected("the account has no user_id".into()))?;
    Ok(Linked {
        ig_user_id,
        username: me["username"].as_str().map(str::to_owned),
        token,
        expires_in,
    })
}

/// `POST /v1/personas/{id}/instagram`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkInstagram {
    /// The one-time code the Instagram flow left at the app's redirect_uri.
    #[schema(max_length = 128)]
    pub code: String,
    /// The PKCE verifier of the flow's code_challenge.
    #[schema(value_type = String, max_length = 128)]
    pub code_verifier: secrecy::SecretString,
}

fn expires_text(epoch: i64) -> String {
    Utc.timestamp_opt(epoch, 0)
        .single()
        .map(crate::users::timestamp)
        .unwrap_or_default()
}

/// The persona's link attributes and the link's lookup and schedule entries, written at once.
fn link_actions(
    state: &State,
    user_id: &str,
    persona_id: &str,
    ig_user_id: &str,
    expires_epoch: i64,
    previous_refresh: Option<&str>,
    mut set: Vec<(&'static str, AttributeValue)>,
) -> Result<Vec<TransactWriteItem>, ApiError> {
    // Instagram refreshes only a token at least a day old.
    let due = (expires_epoch - REFRESH_AHEAD_SECONDS).max(Utc::now().timestamp() + 25 * 3_600);
    let refresh_sk = keys::instagram_refresh(due, user_id, persona_id);
    set.push(("ig_expires_epoch", n(expires_epoch)));
    set.push(("ig_expires_at", s(expires_text(expires_epoch))));
    set.push(("ig_refresh_sk", s(&refresh_sk)));
    let set = crate::db::set_all(set);
    let update = Update::builder()
        .table_name(&state.db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::persona(persona_id)))
        .condition_expression("attribute_exists(pk)")
        .update_expression(set.expression)
        .set_expression_attribute_names(Some(set.names))
        .set_expression_attribute_values(Some(set.values))
        .build()
        .map_err(|e| ApiError::Internal(e.into()))?;
    let put = |pk: String, sk: String| {
        Put::builder()
            .table_name(&state.db.table)
            .item("pk", s(pk))
            .item("sk", s(sk))
            .item("user_id", s(user_id))
            .item("persona_id", s(persona_id))
            .build()
            .map(|p| TransactWriteItem::builder().put(p).build())
            .map_err(|e| ApiError::Internal(e.into()))
    };
    let mut actions = vec![
        TransactWriteItem::builder().update(update).build(),
        put(
            keys::instagram_user(ig_user_id),
            keys::instagram_link(user_id, persona_id),
        )?,
        put(keys::INSTAGRAM_REFRESH.to_owned(), refresh_sk.clone())?,
    ];
    if let Some(previous) = previous_refresh.filter(|p| *p != refresh_sk) {
        actions.push(delete_action(state, keys::INSTAGRAM_REFRESH, previous)?);
    }
    Ok(actions)
}

fn delete_action(state: &State, pk: &str, sk: &str) -> Result<TransactWriteItem, ApiError> {
    Delete::builder()
        .table_name(&state.db.table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .build()
        .map(|d| TransactWriteItem::builder().delete(d).build())
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Links the Instagram account a flow brought back to one of the caller's personas (a persona
/// has one; linking again replaces it). The flow's code works once, for the persona it was
/// begun for, with the app's PKCE verifier.
#[utoipa::path(post, path = "/v1/personas/{id}/instagram", tag = "personas", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = LinkInstagram,
    responses((status = 201, description = "linked", body = persona::Persona),
        (status = 400, description = "invalid_grant", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn link_instagram(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    use secrecy::ExposeSecret as _;
    configured(state)?;
    let caller = Caller::from_request(&req)?;
    let persona_id = path_param(&req, "id").unwrap_or_default();
    let body: LinkInstagram = json_body(&req, &["application/json"])?;
    let current = persona::get(&state.db, &caller.user_id, &persona_id)
        .await?
        .ok_or(ApiError::NotFound("no such persona"))?;
    let item = oauth::redeem(
        state,
        &body.code,
        body.code_verifier.expose_secret(),
        None,
        "instagram",
        "this code is not an Instagram link's",
    )
    .await?;
    let field = |name| get_s(&item, name).unwrap_or_default().to_owned();
    if field("persona_id") != persona_id {
        return Err(oauth::bad(
            "invalid_grant",
            "this code links another persona",
        ));
    }
    let stored = state
        .db
        .get(&keys::user(&caller.user_id), &keys::persona(&persona_id))
        .await?
        .ok_or(ApiError::NotFound("no such persona"))?;
    let ig_user_id = field("ig_user_id");
    let mut actions = link_actions(
        state,
        &caller.user_id,
        &persona_id,
        &ig_user_id,
        get_i64(&item, "ig_expires_epoch").unwrap_or(0),
        get_s(&stored, "ig_refresh_sk"),
        vec![
            ("ig_user_id", s(&ig_user_id)),
            ("ig_username", s(field("ig_username"))),
            ("ig_linked_at", s(crate::users::timestamp(Utc::now()))),
        ]
        .into_iter()
        .chain(
            crate::sealed::Sealed::from_item(&item, TOKEN)
                .map(|sealed| sealed.attributes(TOKEN))
                .unwrap_or_default(),
        )
        .collect(),
    )?;
    // Relinked to another account: the old account's lookup goes.
    if let Some(old) = current
        .instagram
        .as_ref()
        .filter(|l| l.user_id != ig_user_id)
    {
        actions.push(delete_action(
            state,
            &keys::instagram_user(&old.user_id),
            &keys::instagram_link(&caller.user_id, &persona_id),
        )?);
    }
    crate::db::transact(&state.db, actions)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("linking Instagram")))?;
    tracing::info!(persona_id = %persona_id, "Instagram linked");
    let linked = persona::get(&state.db, &caller.user_id, &persona_id)
        .await?
        .ok_or(ApiError::NotFound("no such persona"))?;
    json_response(StatusCode::CREATED, &linked)
}

/// Removes a persona's link: its token, its lookup and its refresh schedule entry.
pub(super) async fn forget_link(
    state: &State,
    user_id: &str,
    persona_id: &str,
) -> Result<bool, ApiError> {
    let Some(stored) = state
        .db
        .get(&keys::user(user_id), &keys::persona(persona_id))
        .await?
    else {
        return Ok(false);
    };
    let Some(ig_user_id) = get_s(&stored, "ig_user_id") else {
        return Ok(false);
    };
    let update = Update::builder()
        .table_name(&state.db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::persona(persona_id)))
        .update_expression(
            "REMOVE ig_user_id, ig_username, ig_linked_at, ig_token, ig_token_key, \
             ig_token_nonce, ig_expires_epoch, ig_expires_at, ig_refresh_sk",
        )
        .condition_expression("attribute_exists(pk)")
        .build()
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut actions = vec![
        TransactWriteItem::builder().update(update).build(),
        delete_action(
            state,
            &keys::instagram_user(ig_user_id),
            &keys::instagram_link(user_id, persona_id),
        )?,
    ];
    if let Some(refresh) = get_s(&stored, "ig_refresh_sk") {
        actions.push(delete_action(state, keys::INSTAGRAM_REFRESH, refresh)?);
    }
    crate::db::transact(&state.db, actions)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("unlinking Instagram")))?;
    Ok(true)
}

/// Unlinks the persona's Instagram account (the token is deleted).
#[utoipa::path(delete, path = "/v1/personas/{id}/instagram", tag = "personas", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "unlinked"), (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such persona, or it has no Instagram link", body = crate::error::Problem)))]
pub async fn unlink_instagram(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let persona_id = path_param(&req, "id").unwrap_or_default();
    if persona_id.is_empty() || persona_id.len() > 64 {
        return Err(ApiError::NotFound("no such persona"));
    }
    if !forget_link(state, &caller.user_id, &persona_id).await? {
        return Err(ApiError::NotFound("the persona has no Instagram link"));
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

// Refresh.

/// What a refresh pass did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Refreshed {
    pub refreshed: usize,
    /// Tokens Instagram would not refresh (expired or revoked): their links stay until unlinked,
    /// and publishing with them reports `instagram_link_expired`.
    pub lost: usize,
}

/// Refreshes every linked token due (20 days before it runs out); run daily by the schedule.
pub async fn refresh_due(state: &State) -> anyhow::Result<Refreshed> {
    refresh_due_at(state, Utc::now().timestamp()).await
}

/// [`refresh_due`] as of `now` (Unix seconds): the entries due by then.
pub async fn refresh_due_at(state: &State, now: i64) -> anyhow::Result<Refreshed> {
    let mut report = Refreshed::default();
    if state.config.instagram.app_id.is_none() {
        return Ok(report);
    }
    let due = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND sk < :now")
        .expression_attribute_values(":pk", s(keys::INSTAGRAM_REFRESH))
        .expression_attribute_values(":now", s(format!("{now:012}")))
        .limit(100)
        .send()
        .await?;
    tracing::debug!(due = due.items().len(), "Instagram tokens due");
    for entry in due.items() {
        let (Some(user_id), Some(persona_id), Some(sk)) = (
            get_s(entry, "user_id"),
            get_s(entry, "persona_id"),
            get_s(entry, "sk"),
        ) else {
            continue;
        };
        let Some(stored) = state
            .db
            .get(&keys::user(user_id), &keys::persona(persona_id))
            .await?
            .filter(|p| get_s(p, "ig_refresh_sk") == Some(sk))
        else {
            // Unlinked or relinked since: a stale entry.
            state.db.take(keys::INSTAGRAM_REFRESH, sk).await?;
            continue;
        };
        match refresh_one(state, user_id, persona_id, &stored).await {
            Ok(()) => report.refreshed += 1,
            Err(GraphError::Transient(message)) => {
                tracing::warn!(
                    persona_id,
                    message,
                    "an Instagram refresh failed; tomorrow again"
                );
            }
            Err(err) => {
                tracing::warn!(persona_id, error = ?err, "Instagram would not refresh a token");
                state.db.take(keys::INSTAGRAM_REFRESH, sk).await?;
                report.lost += 1;
            }
        }
    }
    Ok(report)
}

async fn refresh_one(
    state: &State,
    user_id: &str,
    persona_id: &str,
    stored: &Item,
) -> Result<(), GraphError> {
    let transient = |e: anyhow::Error| GraphError::Transient(format!("{e:#}"));
    let token = unseal(state, persona_id, stored).await.map_err(transient)?;
    let answer = graph(
        state
            .http
            .api
            .get(format!(
                "{}/refresh_access_token",
                state.config.instagram.graph_url
            ))
            .query(&[("grant_type", "ig_refresh_token"), ("access_token", &token)]),
    )
    .await?;
    let fresh = answer["access_token"]
        .as_str()
        .ok_or_else(|| GraphError::Rejected("the refresh has no access_token".into()))?;
    let expires_epoch =
        Utc::now().timestamp() + answer["expires_in"].as_i64().unwrap_or(60 * 86_400);
    let sealed = seal(state, persona_id, fresh).await.map_err(transient)?;
    let ig_user_id = get_s(stored, "ig_user_id").unwrap_or_default();
    let actions = link_actions(
        state,
        user_id,
        persona_id,
        ig_user_id,
        expires_epoch,
        get_s(stored, "ig_refresh_sk"),
        sealed.attributes(TOKEN),
    )
    .map_err(|e| GraphError::Transient(e.to_string()))?;
    crate::db::transact(&state.db, actions)
        .await
        .map_err(|e| GraphError::Transient(e.to_string()))?;
    tracing::info!(persona_id, "Instagram token refreshed");
    Ok(())
}

// Meta's data-deletion callback.

/// Verifies a `signed_request` (`<base64url HMAC-SHA256 of the payload>.<base64url JSON>`) with
/// the app secret, in constant time; the payload.
pub fn verify_signed_request(signed: &str, secret: &str) -> Option<Value> {
    let (signature, payload) = signed.split_once('.')?;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // Meta pads some; the signature is the same bytes either way.
    let signature = engine.decode(signature.trim_end_matches('=')).ok()?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    aws_lc_rs::hmac::verify(&key, payload.as_bytes(), &signature).ok()?;
    let payload: Value =
        serde_json::from_slice(&engine.decode(payload.trim_end_matches('=')).ok()?).ok()?;
    (payload["algorithm"]
        .as_str()?
        .eq_ignore_ascii_case("HMAC-SHA256"))
    .then_some(payload)
}

/// What Meta's data-deletion callback answers.
#[derive(Serialize, ToSchema)]
pub struct DeletionReceipt {
    /// Where the user can see the request's status.
    pub url: String,
    pub confirmation_code: String,
}

/// Meta's data-deletion request callback: the `signed_request` is verified with the app secret;
/// every link of the Instagram user it names is removed (tokens deleted) at once; the answer is
/// a status URL and a confirmation code.
#[utoipa::path(post, path = "/v1/webhooks/meta/data-deletion", tag = "webhooks",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`signed_request=<signature>.<payload>`"),
    responses((status = 200, body = DeletionReceipt),
        (status = 401, description = "invalid_signature", body = crate::error::Problem),
        (status = 404, description = "Instagram linking is not configured", body = crate::error::Problem)))]
pub async fn receive_meta_data_deletion(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    configured(state)?;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(crate::http::body_bytes(&req)?)
            .into_owned()
            .collect();
    let secret = app_secret(state).await?;
    let forged = || ApiError::Unauthorized {
        code: "invalid_signature",
        detail: "the signed_request is not signed by this app",
    };
    let payload = form
        .get("signed_request")
        .filter(|s| s.len() <= 8 * 1024)
        .and_then(|signed| verify_signed_request(signed, &secret))
        .ok_or_else(forged)?;
    let ig_user_id = payload["user_id"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| payload["user_id"].as_i64().map(|id| id.to_string()))
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .ok_or_else(forged)?;
    let links = state
        .db
        .query_prefix(
            &keys::instagram_user(&ig_user_id),
            keys::INSTAGRAM_LINK_PREFIX,
        )
        .await?;
    for link in &links {
        if let (Some(user_id), Some(persona_id)) =
            (get_s(link, "user_id"), get_s(link, "persona_id"))
        {
            forget_link(state, user_id, persona_id).await?;
        }
    }
    let code = oauth::random_token()?;
    state
        .db
        .put(
            vec![
                ("pk", s(keys::instagram_deletion(&code))),
                ("sk", s(keys::UNIQUE)),
                ("status", s("completed")),
                ("links_removed", n(links.len())),
                ("completed_at", s(crate::users::timestamp(Utc::now()))),
            ],
            "recording a data deletion",
        )
        .await?;
    tracing::info!(links = links.len(), "Meta data deletion carried out");
    let url = oauth::callback_url(state, &format!("/v1/instagram/deletions/{code}"))?;
    json_response(
        StatusCode::OK,
        &DeletionReceipt {
            url,
            confirmation_code: code,
        },
    )
}

/// A data-deletion request's status.
#[derive(Serialize, ToSchema)]
pub struct DeletionStatus {
    pub confirmation_code: String,
    /// `completed`: the Instagram data Lambent held for the user is deleted.
    pub status: String,
    pub completed_at: Option<String>,
}

/// The status page of a data-deletion request (the URL the callback answered).
#[utoipa::path(get, path = "/v1/instagram/deletions/{code}", tag = "personas",
    params(("code" = String, Path, description = "the confirmation code")),
    responses((status = 200, body = DeletionStatus), (status = 404, body = crate::error::Problem)))]
pub async fn get_data_deletion(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let code = path_param(&req, "code").unwrap_or_default();
    if code.is_empty() || code.len() > 64 {
        return Err(ApiError::NotFound("no such deletion request"));
    }
    let item = state
        .db
        .get(&keys::instagram_deletion(&code), keys::UNIQUE)
        .await?
        .ok_or(ApiError::NotFound("no such deletion request"))?;
    json_response(
        StatusCode::OK,
        &DeletionStatus {
            confirmation_code: code,
            status: get_s(&item, "status").unwrap_or("completed").to_owned(),
            completed_at: get_s(&item, "completed_at").map(str::to_owned),
        },
    )
}

// Publishing.

fn validate_publish(input: &Value) -> Result<(), Vec<FieldError>> {
    let Some(object) = input.as_object() else {
        return Err(vec![FieldError::new(
            "input",
            "must be an object {persona_id, job_id, caption?}",
        )]);
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !matches!(key.as_str(), "persona_id" | "job_id" | "caption") {
            errors.push(FieldError::new(
                format!("input.{key}"),
                "is not a field of publish_instagram",
            ));
        }
    }
    for field in ["persona_id", "job_id"] {
        if object
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(|id| uuid::Uuid::parse_str(id).is_err())
        {
            errors.push(FieldError::new(format!("input.{field}"), "must be an id"));
        }
    }
    match object.get("caption") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c.chars().count() <= MAX_CAPTION_CHARS => {}
        Some(_) => errors.push(FieldError::new(
            "input.caption",
            format!("must be text of at most {MAX_CAPTION_CHARS} characters"),
        )),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn offered(state: &State, _: &Kind, _: &Value) -> Result<(), FieldError> {
    if state.config.instagram.app_id.is_some() {
        Ok(())
    } else {
        Err(FieldError::new(
            "kind",
            "Instagram is not configured in this deployment",
        ))
    }
}

/// `publish_instagram {persona_id, job_id, caption?}`: posts the image of one of the owner's
/// finished jobs to the Instagram account linked to one of their personas.
pub const PUBLISH: Kind = Kind {
    name: "publish_instagram",
    cost: |_| 0,
    deadline: |_| Duration::from_secs(5 * 60),
    queue: crate::domain::Queue::Cpu,
    validate: validate_publish,
    offered,
    run: |state, job, progress| Box::pin(publish(state, job, progress)),
    present: None,
    quote: None,
};

/// The kinds this feature offers.
pub fn kinds() -> Vec<Kind> {
    vec![PUBLISH]
}

async fn publish(state: &State, job: &Job, progress: &Progress<'_>) -> Result<Finished, JobError> {
    let field = |name: &str| job.input[name].as_str().unwrap_or_default().to_owned();
    let (persona_id, source_id) = (field("persona_id"), field("job_id"));
    let caption = field("caption");
    let stored = state
        .db
        .get(&keys::user(&job.user_id), &keys::persona(&persona_id))
        .await?
        .ok_or_else(|| JobError::permanent("not_found", format!("no persona {persona_id}")))?;
    let ig_user_id = get_s(&stored, "ig_user_id")
        .ok_or_else(|| {
            JobError::permanent(
                "instagram_not_linked",
                "the persona has no Instagram account linked",
            )
        })?
        .to_owned();
    if get_i64(&stored, "ig_expires_epoch").is_some_and(|at| at <= Utc::now().timestamp()) {
        return Err(GraphError::Expired("the token ran out".into()).into());
    }
    let source = crate::jobs::store::get(&state.db, &source_id)
        .await?
        .filter(|j| j.user_id == job.user_id)
        .ok_or_else(|| JobError::permanent("not_found", format!("no job {source_id}")))?;
    let key = source
        .output
        .as_ref()
        .and_then(|o| o["files"].as_array())
        .and_then(|files| {
            files.iter().find(|f| {
                f["content_type"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("image/"))
            })
        })
        .and_then(|f| f["key"].as_str())
        .filter(|_| source.status == crate::jobs::model::Status::Completed)
        .ok_or_else(|| {
            JobError::permanent(
                "invalid_input",
                format!("the job {source_id} has no finished image"),
            )
        })?
        .to_owned();
    let image_url = state
        .s3
        .get_object()
        .bucket(crate::media::bucket(state)?)
        .key(&key)
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(3_600))
                .map_err(|e| JobError::Internal(e.into()))?,
        )
        .await
        .map_err(|e| JobError::Internal(anyhow::Error::new(e).context("presigning the image")))?
        .uri()
        .to_owned();
    let token = unseal(state, &persona_id, &stored).await?;
    let graph_url = &state.config.instagram.graph_url;
    progress
        .report(10, Some("creating the media container"))
        .await?;
    let container = graph(
        state
            .http
            .api
            .post(format!("{graph_url}/{ig_user_id}/media"))
            .form(&[
                ("image_url", image_url.as_str()),
                ("caption", &caption),
                ("access_token", &token),
            ]),
    )
    .await?;
    let container_id = container["id"]
        .as_str()
        .ok_or_else(|| JobError::permanent("instagram_rejected", "the container answer has no id"))?
        .to_owned();
    // Instagram fetches the image and processes it; publishing waits for FINISHED.
    let mut finished = false;
    for _ in 0..60 {
        // A checkpoint too: a cancel stops the wait.
        progress
            .report(40, Some("Instagram is processing the image"))
            .await?;
        let status = graph(
            state
                .http
                .api
                .get(format!("{graph_url}/{container_id}"))
                .query(&[("fields", "status_code"), ("access_token", &token)]),
        )
        .await?;
        match status["status_code"].as_str() {
            Some("FINISHED") => {
                finished = true;
                break;
            }
            Some("ERROR") | Some("EXPIRED") => {
                return Err(JobError::permanent(
                    "instagram_rejected",
                    format!(
                        "Instagram could not process the image ({})",
                        status["status_code"]
                    ),
                ));
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    if !finished {
        return Err(JobError::Retryable(
            "the media container is still processing".into(),
        ));
    }
    progress.report(80, Some("publishing")).await?;
    let published = graph(
        state
            .http
            .api
            .post(format!("{graph_url}/{ig_user_id}/media_publish"))
            .form(&[
                ("creation_id", container_id.as_str()),
                ("access_token", &token),
            ]),
    )
    .await?;
    let media_id = published["id"]
        .as_str()
        .ok_or_else(|| JobError::permanent("instagram_rejected", "the publish answer has no id"))?;
    tracing::info!(job_id = %job.id, "published to Instagram");
    Ok(Finished::Output(json!({
        "media_id": media_id,
        "container_id": container_id,
        "instagram_user_id": ig_user_id,
        "username": get_s(&stored, "ig_username"),
    })))
}
