//! The account's life by mail and by password: email verification, password reset, change of
//! password.
//!
//! Mail goes through a queue: the API puts `{purpose, …}` on it and answers at once, whoever the
//! request names (a reset asked for an unknown email costs the API the same as a known one, and
//! gets the same answer); the queue's consumer finds the account, writes a single-use token (its
//! hash only, with its purpose, the email it was sent to and its expiry; DynamoDB's TTL removes
//! it) and sends the mail through Amazon SES, retried by SQS if SES fails. A token is used up by
//! the request that presents it, whatever that request's outcome; a reset token issued before
//! the account's last password change no longer works; a change or reset ends the account's
//! other sessions.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{get_i64, get_s, n, s};
use crate::error::ApiError;
use crate::http::{Caller, json, json_body};
use crate::jobs::worker::{Consumer, Disposition};
use crate::keys;
use crate::state::State;
use crate::users;

/// How long a verification link works.
pub const VERIFY_TTL_SECONDS: i64 = 24 * 3_600;

/// How long a reset link works.
pub const RESET_TTL_SECONDS: i64 = 3_600;

/// The longest token accepted (they are 43 characters).
const MAX_TOKEN_CHARS: usize = 128;

/// Mail to send.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
enum Mail {
    VerifyEmail { user_id: String },
    ResetPassword { email: String },
}

impl Mail {
    fn purpose(&self) -> &'static str {
        match self {
            Self::VerifyEmail { .. } => "verify_email",
            Self::ResetPassword { .. } => "reset_password",
        }
    }
}

/// SES, for the mail queue's consumer; the composition root installs it.
pub struct Runtime {
    ses: aws_sdk_sesv2::Client,
}

impl Runtime {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            ses: aws_sdk_sesv2::Client::new(sdk),
        }
    }
}

async fn enqueue(state: &State, mail: &Mail) -> Result<(), ApiError> {
    let queue = state
        .config
        .mail
        .queue_url
        .as_deref()
        .ok_or(ApiError::NotFound(
            "mail to account holders is not configured",
        ))?;
    Ok(state.send_json(queue, mail).await?)
}

/// The mail queue's consumer.
pub const MAIL: Consumer = Consumer {
    name: "account mail",
    handle: |state, body| Box::pin(process(state, body)),
};

/// Sends one queued mail. A message that does not parse is dropped; an account that no longer
/// qualifies (gone, verified meanwhile, no password) gets nothing; SES failing is retried.
pub async fn process(state: &State, body: &str) -> anyhow::Result<Disposition> {
    let Ok(mail) = serde_json::from_str::<Mail>(body) else {
        tracing::warn!("dropping a mail message that does not parse");
        return Ok(Disposition::Done);
    };
    let now = Utc::now();
    let (user_id, email, ttl) = match &mail {
        Mail::VerifyEmail { user_id } => {
            let Some(record) = users::get(&state.db, user_id, now).await? else {
                return Ok(Disposition::Done);
            };
            match record.view.email {
                Some(email) if !record.view.email_verified => {
                    (record.view.id, email, VERIFY_TTL_SECONDS)
                }
                _ => return Ok(Disposition::Done),
            }
        }
        Mail::ResetPassword { email } => {
            let found = users::find_by_email(&state.db, email, now).await?;
            let Some(record) = found.filter(|r| r.password_hash.is_some()) else {
                tracing::info!("a password reset for no password account: nothing sent");
                return Ok(Disposition::Done);
            };
            (record.view.id, email.clone(), RESET_TTL_SECONDS)
        }
    };
    let token = issue(state, mail.purpose(), &user_id, &email, ttl, now).await?;
    let (subject, page, text) = match mail {
        Mail::VerifyEmail { .. } => (
            "Confirm your email",
            "verify-email",
            "Confirm that this is your email address",
        ),
        Mail::ResetPassword { .. } => (
            "Reset your password",
            "reset-password",
            "Someone (we hope you) asked to reset your password. If it was not you, ignore this mail",
        ),
    };
    let link = match &state.config.mail.link_base_url {
        Some(base) => format!("{base}/{page}?token={token}"),
        None => format!("your code: {token}"),
    };
    let hours = ttl / 3_600;
    let body = format!("{text}:\n\n{link}\n\nIt works once, for {hours} hour(s).\n");
    send(state, &email, subject, &body).await?;
    tracing::info!(user_id = %user_id, purpose = mail.purpose(), "account mail sent");
    Ok(Disposition::Done)
}

/// A fresh single-use token for `purpose`, stored by its hash.
async fn issue(
    state: &State,
    purpose: &str,
    user_id: &str,
    email: &str,
    ttl: i64,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    state
        .db
        .put(
            vec![
                ("pk", s(keys::account_token(&token))),
                ("sk", s(keys::TOKEN)),
                ("purpose", s(purpose)),
                ("user_id", s(user_id)),
                ("email", s(email)),
                ("issued_ms", n(now.timestamp_millis())),
                ("expires_at", n(now.timestamp() + ttl)),
            ],
            "keeping a mailed token",
        )
        .await?;
    Ok(token)
}

async fn send(state: &State, to: &str, subject: &str, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use aws_sdk_sesv2::types::{Body as MailBody, Content, Destination, EmailContent, Message};
    let from = state
        .config
        .mail
        .from
        .as_deref()
        .context("MAIL_FROM is not set")?;
    let runtime = state.feature::<Runtime>()?;
    let content = |data: &str| Content::builder().data(data).charset("UTF-8").build();
    runtime
        .ses
        .send_email()
        .from_email_address(from)
        .destination(Destination::builder().to_addresses(to).build())
        .content(
            EmailContent::builder()
                .simple(
                    Message::builder()
                        .subject(content(subject)?)
                        .body(MailBody::builder().text(content(text)?).build())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .context("sending mail through SES")?;
    Ok(())
}

/// A presented token, used up: its account, email and issue time, if it is one for `purpose`
/// and has not expired. Any other token is a 400 `invalid_token`, and is used up all the same.
/// Tries count against the caller's address's login budget.
async fn consume(
    state: &State,
    req: &Request,
    token: &str,
    purpose: &str,
) -> Result<(String, String, i64), ApiError> {
    let ip = crate::http::client_ip(req);
    let per_minute = state.config.rate_limits.login_per_minute;
    limit(state, "mail-token-ip", &ip, per_minute).await?;
    let invalid = || ApiError::BadRequest {
        code: "invalid_token",
        detail: "the token is unknown, used or expired; ask for a new mail".into(),
    };
    if token.is_empty() || token.chars().count() > MAX_TOKEN_CHARS {
        return Err(invalid());
    }
    let item = state
        .db
        .take(&keys::account_token(token), keys::TOKEN)
        .await?
        .ok_or_else(invalid)?;
    let live = get_i64(&item, "expires_at").is_some_and(|at| at > Utc::now().timestamp());
    if !live || get_s(&item, "purpose") != Some(purpose) {
        return Err(invalid());
    }
    let field = |name| get_s(&item, name).unwrap_or_default().to_owned();
    Ok((
        field("user_id"),
        field("email"),
        get_i64(&item, "issued_ms").unwrap_or(0),
    ))
}

/// Spends a try from a budget of this minute's.
async fn limit(state: &State, scope: &'static str, key: &str, limit: u32) -> Result<(), ApiError> {
    crate::ratelimit::spend_one(&state.db, scope, key, limit).await
}

/// The answer to a mail request: the same whether or not anyone gets mail.
#[derive(Serialize, ToSchema)]
pub struct MailQueued {
    pub detail: &'static str,
}

fn accepted(detail: &'static str) -> Result<Response<Body>, ApiError> {
    json(StatusCode::ACCEPTED, &MailQueued { detail })
}

/// Mails the caller a link that verifies the account's email.
#[utoipa::path(post, path = "/v1/auth/email/verification", tag = "auth", security(("bearer" = [])),
    responses((status = 202, description = "the mail is on its way", body = MailQueued),
        (status = 401, body = crate::error::Problem),
        (status = 404, description = "mail is not configured, or the account is gone", body = crate::error::Problem),
        (status = 409, description = "no_email or email_already_verified", body = crate::error::Problem),
        (status = 429, body = crate::error::Problem)))]
pub async fn request_email_verification(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let record = users::get(&state.db, &caller.user_id, Utc::now())
        .await?
        .ok_or(ApiError::NotFound("the account no longer exists"))?;
    if record.view.email.is_none() {
        return Err(ApiError::Conflict {
            code: "no_email",
            detail: "the account has no email to verify".into(),
        });
    }
    if record.view.email_verified {
        return Err(ApiError::Conflict {
            code: "email_already_verified",
            detail: "the account's email is verified already".into(),
        });
    }
    limit(state, "verify-mail-user", &caller.user_id, 3).await?;
    enqueue(
        state,
        &Mail::VerifyEmail {
            user_id: caller.user_id,
        },
    )
    .await?;
    accepted("a verification link is on its way to the account's email")
}

/// `POST /v1/auth/email/verify`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmail {
    /// The token of the verification mail.
    #[schema(max_length = 128)]
    pub token: String,
}

/// The email's verification, as the account shows it.
#[derive(Serialize, ToSchema)]
pub struct EmailVerified {
    pub email: String,
    pub email_verified: bool,
}

/// Verifies the email a verification mail was sent to (no sign-in needed: the link is opened
/// wherever the mail is read). The token works once; an email changed since is not verified.
#[utoipa::path(post, path = "/v1/auth/email/verify", tag = "auth", request_body = VerifyEmail,
    responses((status = 200, body = EmailVerified),
        (status = 400, description = "invalid_token", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn verify_email(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body: VerifyEmail = json_body(&req, &["application/json"])?;
    let (user_id, email, _) = consume(state, &req, &body.token, "verify_email").await?;
    if !users::mark_email_verified(&state.db, &user_id, &email, Utc::now()).await? {
        return Err(ApiError::BadRequest {
            code: "invalid_token",
            detail: "the account's email has changed since this mail was sent".into(),
        });
    }
    json(
        StatusCode::OK,
        &EmailVerified {
            email,
            email_verified: true,
        },
    )
}

/// `POST /v1/auth/password/forgot`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPassword {
    #[schema(max_length = 254)]
    pub email: String,
}

/// Mails a password reset link to the account with this email, if there is one: the answer is
/// the same either way (no account enumeration), and so is the work the API does.
#[utoipa::path(post, path = "/v1/auth/password/forgot", tag = "auth", request_body = ForgotPassword,
    responses((status = 202, description = "if an account has this email, a reset link is on its way", body = MailQueued),
        (status = 404, description = "mail is not configured", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn forgot_password(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body: ForgotPassword = json_body(&req, &["application/json"])?;
    let email = users::validate_email(&body.email).map_err(|e| ApiError::Validation(vec![e]))?;
    let ip = crate::http::client_ip(&req);
    let per_minute = state.config.rate_limits.login_per_minute;
    limit(state, "reset-mail-ip", &ip, per_minute).await?;
    limit(state, "reset-mail-email", &email, 3).await?;
    enqueue(state, &Mail::ResetPassword { email }).await?;
    accepted("if an account has this email, a reset link is on its way")
}

/// `POST /v1/auth/password/reset`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    /// The token of the reset mail.
    #[schema(max_length = 128)]
    pub token: String,
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 128)]
    pub new_password: SecretString,
}

/// Sets a new password with a reset mail's token, and ends every session of the account.
#[utoipa::path(post, path = "/v1/auth/password/reset", tag = "auth", request_body = ResetPassword,
    responses((status = 204, description = "the password is set; sign in with it"),
        (status = 400, description = "invalid_token", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn reset_password(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body: ResetPassword = json_body(&req, &["application/json"])?;
    // A password refused keeps the token: the user may try another.
    users::validate_password(body.new_password.expose_secret())
        .map_err(|e| ApiError::invalid("new_password", e.message))?;
    let (user_id, _, issued) = consume(state, &req, &body.token, "reset_password").await?;
    let hash = crate::auth::password::hash(body.new_password).await?;
    let set = users::set_password(
        &state.db,
        &user_id,
        &hash,
        users::Replacing::IssuedBefore(issued),
        Utc::now(),
    )
    .await?;
    if !set {
        return Err(ApiError::BadRequest {
            code: "invalid_token",
            detail: "the password has changed since this mail was sent; ask for a new one".into(),
        });
    }
    tracing::info!(user_id = %user_id, "password reset");
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// `POST /v1/auth/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password now; absent for an account that has none yet (made by an outside sign-in).
    #[schema(value_type = Option<String>, format = Password, max_length = 128)]
    pub current_password: Option<SecretString>,
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 128)]
    pub new_password: SecretString,
}

/// Changes the caller's password (or sets a first one), ends the account's other sessions and
/// returns tokens of a new one for this client.
#[utoipa::path(post, path = "/v1/auth/password", tag = "auth", security(("bearer" = [])),
    request_body = ChangePassword,
    responses((status = 200, description = "changed; the other sessions are over", body = crate::auth::sessions::TokenResponse),
        (status = 401, description = "invalid_credentials: the current password is wrong", body = crate::error::Problem),
        (status = 404, description = "the account no longer exists (deleted)", body = crate::error::Problem),
        (status = 409, description = "password_changed: it changed meanwhile", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn change_password(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: ChangePassword = json_body(&req, &["application/json"])?;
    users::validate_password(body.new_password.expose_secret())
        .map_err(|e| ApiError::invalid("new_password", e.message))?;
    limit(
        state,
        "password-user",
        &caller.user_id,
        state.config.rate_limits.login_per_minute,
    )
    .await?;
    let now = Utc::now();
    let record = users::get(&state.db, &caller.user_id, now)
        .await?
        .ok_or(ApiError::NotFound("the account no longer exists"))?;
    let replacing = match (&record.password_hash, body.current_password) {
        (Some(stored), Some(current)) => {
            if !crate::auth::password::verify(current, Some(stored.clone())).await? {
                return Err(ApiError::Unauthorized {
                    code: "invalid_credentials",
                    detail: "the current password is wrong",
                });
            }
            users::Replacing::Hash(stored)
        }
        (None, None) => users::Replacing::Nothing,
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "current_password",
                "the account has a password: send it as current_password",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "current_password",
                "the account has no password yet: leave current_password out",
            ));
        }
    };
    let hash = crate::auth::password::hash(body.new_password).await?;
    if !users::set_password(&state.db, &caller.user_id, &hash, replacing, now).await? {
        return Err(ApiError::Conflict {
            code: "password_changed",
            detail: "the password changed meanwhile; try again".into(),
        });
    }
    tracing::info!(user_id = %caller.user_id, "password changed");
    let signing = state.keys().await?;
    let tokens =
        crate::auth::sessions::start_for(&state.db, &state.config, &signing, record.view, now)
            .await?;
    json(StatusCode::OK, &tokens)
}
