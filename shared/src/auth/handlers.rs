//! The identity routes: `/v1/auth/*` and `/v1/users/me`.

use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::password;
use crate::auth::sessions::{self, Subject, TokenResponse};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, form_body, json, json_body};
use crate::ratelimit::{self, Budget};
use crate::state::State;
use crate::users::{self, LoginName, NewUser, ProfilePatch, UserView};

const JSON: &[&str] = &["application/json"];

/// `POST /v1/auth/register`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// 3 to 30 letters, digits, `_` or `.`.
    #[schema(pattern = r"^[A-Za-z0-9_.]{3,30}$")]
    pub username: String,
    /// 8 to 128 characters.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 128)]
    pub password: SecretString,
}

/// `POST /v1/auth/login`: exactly one of `email` and `username`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: Option<String>,
    pub username: Option<String>,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// `POST /v1/auth/token`: the OAuth2 password grant (RFC 6749 §4.3), a refresh (§6) or the
/// code a browser sign-in left at the app's redirect_uri (§4.1.3 with PKCE), form-encoded.
#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    /// `password`, `refresh_token` or `authorization_code`.
    pub grant_type: String,
    /// An email or a username (password grant).
    pub username: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    #[schema(value_type = Option<String>)]
    pub refresh_token: Option<SecretString>,
    /// The one-time code (authorization_code grant).
    pub code: Option<String>,
    /// The PKCE verifier of the sign-in's code_challenge (authorization_code grant).
    #[schema(value_type = Option<String>)]
    pub code_verifier: Option<SecretString>,
    /// The redirect_uri the sign-in began with (authorization_code grant; checked when sent).
    pub redirect_uri: Option<String>,
    /// Accepted and ignored; every token carries the caller's role as its scope.
    pub scope: Option<String>,
}

/// `POST /v1/auth/refresh` and `POST /v1/auth/logout`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

fn bad_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        detail: "the login or the password is wrong",
    }
}

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = TokenResponse), (status = 409, description = "email_taken or username_taken", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn register(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body: RegisterRequest = json_body(&req, JSON)?;
    let mut errors = Vec::new();
    let email = users::validate_email(&body.email)
        .map_err(|e| errors.push(e))
        .ok();
    let username = users::validate_username(&body.username)
        .map_err(|e| errors.push(e))
        .ok();
    let _ = users::validate_password(secrecy::ExposeSecret::expose_secret(&body.password))
        .map_err(|e| errors.push(e));
    let (Some(email), Some(username), true) = (email, username, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let now = Utc::now();
    let limit = state.config.rate_limits.register_per_minute;
    let ip = crate::http::client_ip(&req);
    ratelimit::spend(
        &state.db,
        &[
            Budget {
                scope: "register-ip",
                key: &ip,
                limit,
            },
            Budget {
                scope: "register-account",
                key: &email,
                limit,
            },
        ],
        now.timestamp(),
    )
    .await?;
    let keys = state.keys().await?;
    let password_hash = password::hash(body.password).await?;
    let user = users::create(
        &state.db,
        NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            email,
            username,
            password_hash,
            starting_credits: state.config.starting_credits,
        },
        now,
    )
    .await?;
    tracing::info!(user_id = %user.id, "registered");
    crate::search::index::poke(state).await;
    let tokens = sessions::start_for(&state.db, &state.config, &keys, user, now).await?;
    json(StatusCode::CREATED, &tokens)
}

/// Checks a login and starts a session. The same work is done whether or not the account exists.
async fn sign_in(
    state: &State,
    req: &Request,
    name: LoginName<'_>,
    password: SecretString,
) -> Result<TokenResponse, ApiError> {
    let now = Utc::now();
    let account_key = match &name {
        LoginName::Email(e) | LoginName::Username(e) => e.trim().to_lowercase(),
    };
    let limit = state.config.rate_limits.login_per_minute;
    let ip = crate::http::client_ip(req);
    let budgets = [
        Budget {
            scope: "login-ip",
            key: &ip,
            limit,
        },
        Budget {
            scope: "login-account",
            key: &account_key,
            limit,
        },
    ];
    // Independent reads at once (a cold start's login was four round trips in a row); the
    // password is checked only once the budgets allow it. The signing keys are needed only to
    // sign, so their read (a cold start's own connection to Secrets Manager) runs on through the
    // hash; it is polled after the others, so their requests go out first.
    let checked = async {
        let (spent, record) = tokio::join!(
            ratelimit::spend(&state.db, &budgets, now.timestamp()),
            users::find_for_login(&state.db, name, now)
        );
        spent?;
        let record = record?;
        let stored = record.as_ref().and_then(|r| r.password_hash.clone());
        let matches = password::verify(password, stored).await?;
        Ok::<_, ApiError>(record.filter(|_| matches))
    };
    let (record, keys) = tokio::join!(checked, state.keys());
    let Some(record) = record? else {
        return Err(bad_credentials());
    };
    let keys = keys?;
    let user = record.view;
    tracing::info!(user_id = %user.id, "signed in");
    Ok(sessions::start_for(&state.db, &state.config, &keys, user, now).await?)
}

/// Signs in with an email or a username and a password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn login(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body: LoginRequest = json_body(&req, JSON)?;
    let name = match (&body.email, &body.username) {
        (Some(email), None) => LoginName::Email(email),
        (None, Some(username)) => LoginName::Username(username),
        _ => {
            return Err(ApiError::invalid(
                "email",
                "give exactly one of email and username",
            ));
        }
    };
    let tokens = sign_in(state, &req, name, body.password).await?;
    json(StatusCode::OK, &tokens)
}

/// The OAuth2 token endpoint (password and refresh_token grants), for clients that speak OAuth2.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse),
        (status = 201, description = "authorization_code: a new account was made for the identity", body = TokenResponse),
        (status = 400, description = "invalid_grant: the code is unknown, used, expired, or its verifier or redirect_uri does not match", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn issue_token(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let form: TokenForm = form_body(&req)?;
    let tokens = match form.grant_type.as_str() {
        "password" => {
            let (Some(username), Some(password)) = (form.username, form.password) else {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "username",
                    "the password grant needs username and password",
                )]));
            };
            let name = if username.contains('@') {
                LoginName::Email(&username)
            } else {
                LoginName::Username(&username)
            };
            sign_in(state, &req, name, password).await?
        }
        "refresh_token" => {
            let Some(refresh) = form.refresh_token else {
                return Err(ApiError::invalid(
                    "refresh_token",
                    "the refresh_token grant needs refresh_token",
                ));
            };
            refresh_tokens(state, &refresh).await?
        }
        "authorization_code" => {
            let (Some(code), Some(verifier)) = (form.code, form.code_verifier) else {
                return Err(ApiError::invalid(
                    "code",
                    "the authorization_code grant needs code and code_verifier",
                ));
            };
            let redeemed = crate::auth::oidc::redeem(
                state,
                &code,
                secrecy::ExposeSecret::expose_secret(&verifier),
                form.redirect_uri.as_deref(),
                crate::auth::oidc::Intent::SignIn,
                None,
            )
            .await?;
            let (status, tokens) = crate::auth::identities::tokens_for(
                state,
                &redeemed.provider,
                &redeemed.subject,
                redeemed.email,
                redeemed.token,
                Utc::now(),
            )
            .await?;
            return json(status, &tokens);
        }
        _ => {
            return Err(ApiError::invalid(
                "grant_type",
                "must be password, refresh_token or authorization_code",
            ));
        }
    };
    json(StatusCode::OK, &tokens)
}

async fn refresh_tokens(state: &State, refresh: &SecretString) -> Result<TokenResponse, ApiError> {
    let now = Utc::now();
    let keys = state.keys().await?;
    let (user_id, next) = sessions::rotate(&state.db, refresh, now).await?;
    let Some(record) = users::get(&state.db, &user_id, now).await? else {
        return Err(ApiError::Unauthorized {
            code: "invalid_refresh_token",
            detail: "the account no longer exists",
        });
    };
    let user = record.view;
    let subject = Subject {
        user_id: &user.id,
        username: &user.username,
        role: &user.role,
    };
    Ok(TokenResponse {
        access_token: sessions::access_token(&state.config, &keys, &subject, now)?,
        refresh_token: secrecy::ExposeSecret::expose_secret(&next).to_owned(),
        token_type: "Bearer",
        expires_in: state.config.access_token_ttl.as_secs(),
        user: None,
    })
}

/// Exchanges a refresh token for a new pair. A refresh token works once; a second use revokes the session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid_refresh_token or refresh_token_reused", body = crate::error::Problem)))]
pub async fn refresh_token(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body: RefreshRequest = json_body(&req, JSON)?;
    let tokens = refresh_tokens(state, &body.refresh_token).await?;
    json(StatusCode::OK, &tokens)
}

/// Ends the session the refresh token belongs to. Access tokens already issued lapse on their own.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "signed out")))]
pub async fn logout(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body: RefreshRequest = json_body(&req, JSON)?;
    sessions::revoke(&state.db, &body.refresh_token, Utc::now()).await?;
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

async fn current_user(state: &State, req: &Request) -> Result<UserView, ApiError> {
    let caller = Caller::from_request(req)?;
    users::get(&state.db, &caller.user_id, Utc::now())
        .await?
        .map(|record| record.view)
        .ok_or(ApiError::NotFound("the account no longer exists"))
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/auth/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = crate::error::Problem),
        (status = 404, description = "the account no longer exists (deleted)", body = crate::error::Problem)))]
pub async fn get_me(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    json(StatusCode::OK, &current_user(state, &req).await?)
}

/// Changes the caller's profile (JSON merge patch: `null` clears a field).
#[utoipa::path(patch, path = "/v1/users/me", tag = "users", security(("bearer" = [])),
    request_body(content = ProfilePatch, content_type = "application/json"),
    responses((status = 200, body = UserView), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 409, description = "username_taken", body = crate::error::Problem),
        (status = 404, description = "the account no longer exists (deleted)", body = crate::error::Problem)))]
pub async fn update_me(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let patch: ProfilePatch =
        json_body(&req, &["application/json", "application/merge-patch+json"])?;
    let now = Utc::now();
    let changes = patch.validate(now.date_naive())?;
    if let Some(username) = &patch.username {
        users::change_username(&state.db, &caller.user_id, username.trim(), now).await?;
    }
    if changes.is_empty() {
        if patch.username.is_some() {
            crate::search::index::poke(state).await;
        }
        return json(StatusCode::OK, &current_user(state, &req).await?);
    }
    let user = users::update_profile(&state.db, &caller.user_id, &changes, now)
        .await?
        .ok_or(ApiError::NotFound("the account no longer exists"))?;
    if patch.username.is_some() || changes.iter().any(|(name, _)| *name == "display_name") {
        crate::search::index::poke(state).await;
    }
    json(StatusCode::OK, &user)
}
