//! One account, several ways in: signing in with an outside identity (Firebase, Google, Kakao,
//! Naver), and the signed-in account's linked identities (`/v1/auth/identities`).

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::oidc::{self, Intent};
use crate::auth::sessions::TokenResponse;
use crate::error::ApiError;
use crate::http::{Caller, json, json_body};
use crate::state::State;
use crate::users::{self, LinkedIdentity};

/// Every outside provider an identity can come from.
pub const PROVIDERS: &[&str] = &["firebase", "google", "kakao", "naver"];

/// Spends a try from the caller's address's budget of outside sign-ins (shared by every provider).
pub async fn limit_sign_ins(state: &State, req: &Request) -> Result<(), ApiError> {
    let ip = crate::http::client_ip(req);
    crate::ratelimit::spend_one(
        &state.db,
        "federated-ip",
        &ip,
        state.config.rate_limits.login_per_minute,
    )
    .await
}

/// The tokens of the account `provider`'s `subject` signs in to, made now if it has none (201).
pub async fn tokens_for(
    state: &State,
    provider: &str,
    subject: &str,
    email: Option<String>,
    identity_extra: Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>,
    now: DateTime<Utc>,
) -> Result<(StatusCode, TokenResponse), ApiError> {
    let signing = state.keys().await?;
    let found = users::sign_in_federated(
        &state.db,
        users::NewFederatedUser {
            id: uuid::Uuid::new_v4().to_string(),
            provider,
            subject,
            email,
            starting_credits: state.config.starting_credits,
            identity_extra,
        },
        now,
    )
    .await?;
    let (user, status) = match found {
        users::Federated::Created(user) => (user, StatusCode::CREATED),
        users::Federated::Existing(record) => (record.view, StatusCode::OK),
    };
    tracing::info!(user_id = %user.id, provider, created = status == StatusCode::CREATED, "signed in with an outside identity");
    if status == StatusCode::CREATED {
        crate::search::index::poke(state).await;
    }
    let tokens =
        crate::auth::sessions::start_for(&state.db, &state.config, &signing, user, now).await?;
    Ok((status, tokens))
}

/// [`tokens_for`] as the response: 201 with a new account, 200 with an existing one.
pub async fn sign_in(
    state: &State,
    provider: &str,
    subject: &str,
    email: Option<String>,
    now: DateTime<Utc>,
) -> Result<Response<Body>, ApiError> {
    let (status, tokens) = tokens_for(state, provider, subject, email, Vec::new(), now).await?;
    json(status, &tokens)
}

/// The caller's ways in.
#[derive(Serialize, ToSchema)]
pub struct Identities {
    /// Whether the account has a password (email or username sign-in).
    pub password: bool,
    pub identities: Vec<LinkedIdentity>,
}

/// The identities linked to the caller's account, and whether it has a password.
#[utoipa::path(get, path = "/v1/auth/identities", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Identities), (status = 401, body = crate::error::Problem),
        (status = 404, description = "the account no longer exists (deleted)", body = crate::error::Problem)))]
pub async fn list_identities(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let now = Utc::now();
    let record = users::get(&state.db, &caller.user_id, now)
        .await?
        .ok_or(ApiError::NotFound("the account no longer exists"))?;
    let identities = users::identities(&state.db, &caller.user_id).await?;
    json(
        StatusCode::OK,
        &Identities {
            password: record.password_hash.is_some(),
            identities,
        },
    )
}

/// `POST /v1/auth/identities/{provider}`: proof of the identity by either flow.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// Native: the provider SDK's ID token (for `firebase`, the Firebase ID token).
    #[schema(value_type = Option<String>, max_length = 8192)]
    pub id_token: Option<secrecy::SecretString>,
    /// Native: the nonce the app gave the SDK.
    #[schema(max_length = 256)]
    pub nonce: Option<String>,
    /// Web: the one-time code a browser sign-in started with `intent=link` left at the app's
    /// redirect_uri.
    #[schema(max_length = 128)]
    pub code: Option<String>,
    /// Web: the PKCE verifier of the `code_challenge` the browser sign-in started with.
    #[schema(value_type = Option<String>, max_length = 128)]
    pub code_verifier: Option<secrecy::SecretString>,
}

/// Links an identity to the caller's account, proven by a native ID token or a browser sign-in's
/// code. An identity that signs in to another account is a 409; so is a second identity at a
/// provider the account already has one at.
#[utoipa::path(post, path = "/v1/auth/identities/{provider}", tag = "auth", security(("bearer" = [])),
    params(("provider" = String, Path, description = "`firebase`, `google`, `kakao` or `naver`")),
    request_body = LinkRequest,
    responses((status = 201, description = "linked", body = LinkedIdentity),
        (status = 200, description = "it was linked to this account already", body = LinkedIdentity),
        (status = 400, description = "invalid_grant (the code)", body = crate::error::Problem),
        (status = 401, description = "invalid_id_token", body = crate::error::Problem),
        (status = 404, description = "no such provider is configured", body = crate::error::Problem),
        (status = 409, description = "identity_in_use or provider_already_linked", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn link_identity(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    use secrecy::ExposeSecret as _;
    let caller = Caller::from_request(&req)?;
    let name = crate::http::path_param(&req, "provider").unwrap_or_default();
    let body: LinkRequest = json_body(&req, &["application/json"])?;
    let now = Utc::now();
    limit_sign_ins(state, &req).await?;
    let (subject, email, extra) = match (&body.id_token, &body.code) {
        (Some(token), None) if name == "firebase" => {
            let project = state
                .config
                .firebase
                .project_id
                .as_deref()
                .ok_or(ApiError::NotFound("Firebase sign-in is not configured"))?;
            let identity = crate::auth::firebase::verified_identity(
                state,
                token.expose_secret(),
                project,
                now.timestamp(),
            )
            .await?;
            let email = identity.email.filter(|_| identity.email_verified);
            (identity.uid, email.map(|e| e.to_lowercase()), Vec::new())
        }
        (Some(token), None) => {
            let provider = oidc::provider(state, &req)?;
            let native = oidc::NativeSignIn {
                id_token: token.clone(),
                nonce: body.nonce.clone(),
            };
            let identity = oidc::verify_native(state, provider, &native, now.timestamp()).await?;
            (identity.subject, identity.email, Vec::new())
        }
        (None, Some(code)) => {
            oidc::provider(state, &req)?;
            let verifier = body.code_verifier.as_ref().ok_or_else(|| {
                ApiError::invalid("code_verifier", "a code is redeemed with its code_verifier")
            })?;
            let redeemed = oidc::redeem(
                state,
                code,
                verifier.expose_secret(),
                None,
                Intent::Link,
                Some(&name),
            )
            .await?;
            (redeemed.subject, redeemed.email, redeemed.token)
        }
        _ => {
            return Err(ApiError::invalid(
                "id_token",
                "send either id_token (and nonce) or code and code_verifier",
            ));
        }
    };
    let provider = PROVIDERS
        .iter()
        .find(|p| **p == name)
        .ok_or(ApiError::NotFound("no such sign-in provider is configured"))?;
    match users::link_identity(
        &state.db,
        &caller.user_id,
        provider,
        &subject,
        email.as_deref(),
        extra,
        now,
    )
    .await?
    {
        users::Linked::Created(linked) => {
            tracing::info!(user_id = %caller.user_id, provider, "linked an identity");
            json(StatusCode::CREATED, &linked)
        }
        users::Linked::Already(linked) => json(StatusCode::OK, &linked),
    }
}

/// Unlinks the caller's identity at a provider, unless it is the account's only way in (no
/// password, no other identity): then 409 `last_sign_in_method`.
#[utoipa::path(delete, path = "/v1/auth/identities/{provider}", tag = "auth", security(("bearer" = [])),
    params(("provider" = String, Path, description = "`firebase`, `google`, `kakao` or `naver`")),
    responses((status = 204, description = "unlinked"),
        (status = 401, body = crate::error::Problem),
        (status = 404, description = "the account has no identity at this provider", body = crate::error::Problem),
        (status = 409, description = "last_sign_in_method", body = crate::error::Problem)))]
pub async fn unlink_identity(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let name = crate::http::path_param(&req, "provider").unwrap_or_default();
    let provider = PROVIDERS
        .iter()
        .find(|p| **p == name)
        .ok_or(ApiError::NotFound(
            "the account has no identity at this provider",
        ))?;
    users::unlink_identity(&state.db, &caller.user_id, provider).await?;
    tracing::info!(user_id = %caller.user_id, provider, "unlinked an identity");
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}
