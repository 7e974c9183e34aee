//! Sessions: a short-lived access token and a rotating refresh token. Every refresh token belongs
//! to a family (one login); using a refresh token twice revokes its whole family.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem, Update};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::keys::{AccessClaims, KeyRing};
use crate::config::Config;
use crate::db::{Db, failed_conditions, get_i64, get_s, n, put_new, s};
use crate::error::ApiError;
use crate::keys;
use crate::users::{UserView, timestamp};

/// What a successful login, registration or refresh returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
}

fn invalid_refresh() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_refresh_token",
        detail: "the refresh token is invalid or expired",
    }
}

fn new_refresh_token() -> anyhow::Result<SecretString> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(SecretString::from(format!(
        "rt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// Who a token is for.
pub struct Subject<'a> {
    pub user_id: &'a str,
    pub username: &'a str,
    pub role: &'a str,
}

/// Signs an access token.
pub fn access_token(
    config: &Config,
    keys: &KeyRing,
    subject: &Subject<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let iat = now.timestamp();
    let ttl = i64::try_from(config.access_token_ttl.as_secs()).context("ttl")?;
    keys.sign(&AccessClaims {
        iss: config.issuer()?.to_owned(),
        sub: subject.user_id.to_owned(),
        aud: config.audience.clone(),
        exp: iat + ttl,
        nbf: iat,
        iat,
        jti: uuid::Uuid::new_v4().to_string(),
        username: subject.username.to_owned(),
        role: subject.role.to_owned(),
        scope: subject.role.to_owned(),
    })
}

/// Starts a new session for `user` (who has just signed in) and returns its tokens with the account.
/// An account whose verified email is one of `ADMIN_EMAILS` becomes an admin here, once.
pub async fn start_for(
    db: &Db,
    config: &Config,
    keys: &KeyRing,
    mut user: UserView,
    now: DateTime<Utc>,
) -> anyhow::Result<TokenResponse> {
    if user.role != "admin" && named_admin(config, &user) {
        db.client
            .update_item()
            .table_name(&db.table)
            .key("pk", s(keys::user(&user.id)))
            .key("sk", s(keys::PROFILE))
            .update_expression("SET #role = :admin")
            .condition_expression("attribute_exists(pk) AND email_verified = :yes")
            .expression_attribute_names("#role", "role")
            .expression_attribute_values(":admin", s("admin"))
            .expression_attribute_values(
                ":yes",
                aws_sdk_dynamodb::types::AttributeValue::Bool(true),
            )
            .send()
            .await
            .context("making a named admin")?;
        tracing::warn!(user_id = %user.id, "an account named in ADMIN_EMAILS is an admin now");
        user.role = "admin".to_owned();
    }
    let subject = Subject {
        user_id: &user.id,
        username: &user.username,
        role: &user.role,
    };
    let mut tokens = start(db, config, keys, &subject, now).await?;
    tokens.user = Some(user);
    Ok(tokens)
}

/// Whether the deployment names `user` an admin: its email, verified, is in `ADMIN_EMAILS`.
fn named_admin(config: &Config, user: &UserView) -> bool {
    user.email_verified
        && user
            .email
            .as_deref()
            .is_some_and(|e| config.admin_emails.contains(&e.to_lowercase()))
}

/// Starts a new session (a new family) and returns its tokens.
pub async fn start(
    db: &Db,
    config: &Config,
    keys: &KeyRing,
    subject: &Subject<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<TokenResponse> {
    let family_id = uuid::Uuid::new_v4().to_string();
    let expires_at =
        now.timestamp() + i64::try_from(config.refresh_token_ttl.as_secs()).context("ttl")?;
    let refresh = new_refresh_token()?;
    let actions = vec![
        put_new(
            db,
            vec![
                ("pk", s(keys::session_family(&family_id))),
                ("sk", s(keys::FAMILY)),
                ("user_id", s(subject.user_id)),
                ("created_at", s(timestamp(now))),
                ("expires_at", n(expires_at)),
            ],
        )?,
        put_new(
            db,
            vec![
                ("pk", s(keys::refresh_token(refresh.expose_secret()))),
                ("sk", s(keys::TOKEN)),
                ("user_id", s(subject.user_id)),
                ("family_id", s(&family_id)),
                ("started_ms", n(now.timestamp_millis())),
                ("expires_at", n(expires_at)),
            ],
        )?,
    ];
    crate::db::transact(db, actions)
        .await
        .context("starting a session")?;
    Ok(TokenResponse {
        access_token: access_token(config, keys, subject, now)?,
        refresh_token: refresh.expose_secret().to_owned(),
        token_type: "Bearer",
        expires_in: config.access_token_ttl.as_secs(),
        user: None,
    })
}

/// A refresh token's family, owner, expiry and its session's start (ms), if the token exists and
/// has not expired.
async fn lookup(
    db: &Db,
    token: &SecretString,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<(String, String, i64, i64)>> {
    let Some(item) = db
        .get(&keys::refresh_token(token.expose_secret()), keys::TOKEN)
        .await?
    else {
        return Ok(None);
    };
    let expires_at = get_i64(&item, "expires_at").unwrap_or(0);
    if expires_at <= now.timestamp() {
        return Ok(None);
    }
    let family = get_s(&item, "family_id")
        .context("token lacks family")?
        .to_owned();
    let user = get_s(&item, "user_id")
        .context("token lacks user")?
        .to_owned();
    // A token from before sessions carried their start counts as the oldest.
    let started = get_i64(&item, "started_ms").unwrap_or(0);
    Ok(Some((family, user, expires_at, started)))
}

/// Marks a family revoked; every token in it stops working.
async fn revoke_family(db: &Db, family_id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    let result = db
        .client
        .update_item()
        .table_name(&db.table)
        .key("pk", s(keys::session_family(family_id)))
        .key("sk", s(keys::FAMILY))
        .update_expression("SET revoked_at = if_not_exists(revoked_at, :now)")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":now", s(timestamp(now)))
        .send()
        .await;
    // `None`: the family expired and TTL removed it; nothing left to revoke.
    crate::db::unless_condition_failed(result).context("revoking a session")?;
    Ok(())
}

/// Exchanges a refresh token for new tokens. In one transaction: the old token is marked used
/// (only if unused), the family is checked unrevoked, and the new token is stored. A token that was
/// already used means it leaked: the whole family is revoked.
pub async fn rotate(
    db: &Db,
    token: &SecretString,
    now: DateTime<Utc>,
) -> Result<(String, SecretString), ApiError> {
    let (family_id, user_id, expires_at, started) =
        lookup(db, token, now).await?.ok_or_else(invalid_refresh)?;
    let next = new_refresh_token()?;
    let mark_used = Update::builder()
        .table_name(&db.table)
        .key("pk", s(keys::refresh_token(token.expose_secret())))
        .key("sk", s(keys::TOKEN))
        .update_expression("SET used_at = :now")
        .condition_expression("attribute_exists(pk) AND attribute_not_exists(used_at)")
        .expression_attribute_values(":now", s(timestamp(now)))
        .build()
        .context("update")?;
    let family_live = ConditionCheck::builder()
        .table_name(&db.table)
        .key("pk", s(keys::session_family(&family_id)))
        .key("sk", s(keys::FAMILY))
        .condition_expression("attribute_exists(pk) AND attribute_not_exists(revoked_at)")
        .build()
        .context("condition check")?;
    // Sessions of an account that is gone, or begun before its last password change or reset,
    // or of an account being deleted, are over.
    let account_allows = ConditionCheck::builder()
        .table_name(&db.table)
        .key("pk", s(keys::user(&user_id)))
        .key("sk", s(keys::PROFILE))
        .condition_expression(
            "attribute_exists(pk) AND (attribute_not_exists(sessions_after) OR sessions_after <= :started)",
        )
        .expression_attribute_values(":started", n(started))
        .build()
        .context("condition check")?;
    let actions = vec![
        TransactWriteItem::builder().update(mark_used).build(),
        TransactWriteItem::builder()
            .condition_check(family_live)
            .build(),
        put_new(
            db,
            vec![
                ("pk", s(keys::refresh_token(next.expose_secret()))),
                ("sk", s(keys::TOKEN)),
                ("user_id", s(&user_id)),
                ("family_id", s(&family_id)),
                ("started_ms", n(started)),
                ("expires_at", n(expires_at)),
            ],
        )?,
        TransactWriteItem::builder()
            .condition_check(account_allows)
            .build(),
    ];
    match crate::db::transact(db, actions).await {
        Ok(_) => Ok((user_id, next)),
        Err(err) => match failed_conditions(&err) {
            Some(failed) if failed.first() == Some(&true) => {
                tracing::warn!(family_id = %family_id, "refresh token reused; revoking its family");
                revoke_family(db, &family_id, now).await?;
                Err(ApiError::Unauthorized {
                    code: "refresh_token_reused",
                    detail: "this refresh token was already used; the session is revoked",
                })
            }
            Some(failed) if failed.get(1) == Some(&true) || failed.get(3) == Some(&true) => {
                Err(invalid_refresh())
            }
            _ => Err(ApiError::Internal(
                anyhow::Error::new(err).context("rotating a refresh token"),
            )),
        },
    }
}

/// Revokes the session a refresh token belongs to. Unknown tokens are ignored.
pub async fn revoke(db: &Db, token: &SecretString, now: DateTime<Utc>) -> anyhow::Result<()> {
    if let Some((family_id, ..)) = lookup(db, token, now).await? {
        revoke_family(db, &family_id, now).await?;
    }
    Ok(())
}
