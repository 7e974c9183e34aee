//! A follow as stored, for the social layer that makes them and for account deletion, which
//! takes a deleted account's follows back out of the other accounts' lists and counts.

use aws_sdk_dynamodb::types::{Delete, TransactWriteItem, Update};

use crate::db::{Db, failed_conditions, get_i64, n, s};
use crate::error::ApiError;
use crate::keys;

fn build<T>(built: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, ApiError> {
    built.map_err(|e| ApiError::Internal(e.into()))
}

fn delete(db: &Db, pk: String, sk: String) -> Result<TransactWriteItem, ApiError> {
    let delete = Delete::builder()
        .table_name(&db.table)
        .key("pk", s(pk))
        .key("sk", s(sk));
    Ok(TransactWriteItem::builder()
        .delete(build(delete.build())?)
        .build())
}

/// `ADD <counter> :by` on a profile that exists.
fn count(db: &Db, user_id: &str, counter: &str, by: i64) -> Result<TransactWriteItem, ApiError> {
    let update = Update::builder()
        .table_name(&db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::PROFILE))
        .update_expression(format!("ADD {counter} :by"))
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":by", n(by));
    Ok(TransactWriteItem::builder()
        .update(build(update.build())?)
        .build())
}

/// Removes `follower`'s follow of `followee`, if there is one: the follow, both entries and both
/// counts in one transaction conditioned on the follow (two unfollows at once take it once).
/// `false` when there was none.
pub async fn remove(db: &Db, follower: &str, followee: &str) -> Result<bool, ApiError> {
    let Some(edge) = db
        .get(&keys::follow(follower, followee), keys::EDGE)
        .await?
    else {
        return Ok(false);
    };
    let at = get_i64(&edge, "at").unwrap_or(0);
    let remove = Delete::builder()
        .table_name(&db.table)
        .key("pk", s(keys::follow(follower, followee)))
        .key("sk", s(keys::EDGE))
        .condition_expression("#at = :at")
        .expression_attribute_names("#at", "at")
        .expression_attribute_values(":at", n(at));
    let mut actions = vec![
        TransactWriteItem::builder()
            .delete(build(remove.build())?)
            .build(),
        delete(db, keys::user(followee), keys::follower_entry(at, follower))?,
        delete(
            db,
            keys::user(follower),
            keys::following_entry(at, followee),
        )?,
    ];
    // A side whose account is gone has no count left to keep.
    for (user, counter) in [(followee, "followers_count"), (follower, "following_count")] {
        if db.get(&keys::user(user), keys::PROFILE).await?.is_some() {
            actions.push(count(db, user, counter, -1)?);
        }
    }
    match crate::db::transact(db, actions).await {
        Ok(()) => Ok(true),
        Err(err) if failed_conditions(&err).is_some() => Ok(false),
        Err(err) => Err(ApiError::Internal(
            anyhow::Error::new(err).context("unfollowing"),
        )),
    }
}
