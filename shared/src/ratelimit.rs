//! Fixed-window request budgets kept in DynamoDB, so they hold across every Lambda instance.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::ReturnValue;
use sha2::{Digest, Sha256};

use crate::db::{Db, get_i64, n, s};
use crate::error::ApiError;
use crate::keys;

const WINDOW_SECS: i64 = 60;

/// One budget to spend: `limit` requests per minute for `key` within `scope`.
#[derive(Clone, Debug)]
pub struct Budget<'a> {
    pub scope: &'static str,
    pub key: &'a str,
    pub limit: u32,
}

/// Spends one request from every budget; 429 with `Retry-After` when any is exhausted.
/// Keys are hashed so no address or email is stored in the counter items.
/// Spends a try from one budget of this minute's (`key`'s in `scope`).
pub async fn spend_one(
    db: &Db,
    scope: &'static str,
    key: &str,
    limit: u32,
) -> Result<(), ApiError> {
    spend(
        db,
        &[Budget { scope, key, limit }],
        chrono::Utc::now().timestamp(),
    )
    .await
}

pub async fn spend(db: &Db, budgets: &[Budget<'_>], now: i64) -> Result<(), ApiError> {
    let window = now.div_euclid(WINDOW_SECS);
    let retry_after = u64::try_from(WINDOW_SECS - now.rem_euclid(WINDOW_SECS)).unwrap_or(1);
    // Every budget is counted, at once (one round trip, not one per budget).
    let counted = budgets.iter().map(|budget| async move {
        let digest = hex::encode(&Sha256::digest(budget.key.as_bytes())[..16]);
        let out = db
            .client
            .update_item()
            .table_name(&db.table)
            .key("pk", s(keys::rate(budget.scope, &digest)))
            .key("sk", s(window.to_string()))
            .update_expression("ADD hits :one SET expires_at = :expires")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expires", n((window + 2) * WINDOW_SECS))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .context("counting a request")?;
        let hits = out
            .attributes
            .as_ref()
            .and_then(|a| get_i64(a, "hits"))
            .unwrap_or(0);
        anyhow::Ok(hits > i64::from(budget.limit))
    });
    let exhausted = futures::future::try_join_all(counted)
        .await?
        .into_iter()
        .any(|over| over);
    if exhausted {
        return Err(ApiError::RateLimited {
            retry_after_secs: retry_after,
        });
    }
    Ok(())
}
