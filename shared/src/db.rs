//! The DynamoDB adapter: one table, items keyed by `pk` / `sk`, expired items removed by TTL on `expires_at`.

use std::collections::HashMap;

use anyhow::Context as _;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::AttributeValue;

/// An item as the SDK returns it.
pub type Item = HashMap<String, AttributeValue>;

/// The table and a client for it.
#[derive(Clone, Debug)]
pub struct Db {
    pub client: Client,
    pub table: String,
}

impl Db {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// A strongly consistent read of one item.
    pub async fn get(&self, pk: &str, sk: &str) -> anyhow::Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .with_context(|| format!("reading item {sk}"))?;
        Ok(out.item)
    }
}

impl Db {
    /// One page of an index's partition (`<index>pk = partition`), from `start` (a last
    /// evaluated key: [`index_key`]), newest first or oldest first.
    pub async fn index_page(
        &self,
        index: &str,
        partition: &str,
        start: Option<Item>,
        limit: usize,
        newest_first: bool,
    ) -> anyhow::Result<aws_sdk_dynamodb::operation::query::QueryOutput> {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(format!("{index}pk = :pk"))
            .expression_attribute_values(":pk", s(partition))
            .scan_index_forward(!newest_first)
            .limit(i32::try_from(limit).unwrap_or(100))
            .set_exclusive_start_key(start)
            .send()
            .await
            .with_context(|| format!("querying {index}"))
    }

    /// Every item of partition `pk` whose sort key begins with `prefix` (strongly consistent; the
    /// callers' partitions hold at most a few dozen such items, one page).
    pub async fn query_prefix(&self, pk: &str, prefix: &str) -> anyhow::Result<Vec<Item>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
            .consistent_read(true)
            .send()
            .await
            .with_context(|| format!("querying {prefix} items"))?;
        Ok(out.items.unwrap_or_default())
    }

    /// Every item of partition `pk`, every page (strongly consistent): for partitions a pass
    /// reads whole (a purge, a schedule's count).
    pub async fn query_all(&self, pk: &str) -> anyhow::Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .context("reading a partition")?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Deletes an item if it exists and returns it: whoever takes it has it, once. Read first,
    /// then deleted through [`once`]: a DeleteItem returning the old item, answered late, would be
    /// sent again, find nothing, and the caller would be told that what it took was not there.
    pub async fn take(&self, pk: &str, sk: &str) -> anyhow::Result<Option<Item>> {
        let Some(item) = self.get(pk, sk).await? else {
            return Ok(None);
        };
        let delete = tx::delete(self, (pk, sk), Some("attribute_exists(pk)"), &[], vec![])?;
        Ok(once(self, delete).await?.then_some(item))
    }

    /// Deletes every item of partition `pk`, a page at a time (batches of 25, what DynamoDB
    /// leaves unprocessed sent again); the count deleted. Safe to repeat.
    pub async fn delete_partition(&self, pk: &str) -> anyhow::Result<usize> {
        let mut deleted = 0;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .projection_expression("pk, sk")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .context("reading a partition")?;
            deleted += out.items().len();
            self.delete_keys(out.items().to_vec()).await?;
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(deleted);
            }
        }
    }

    /// Deletes the items of these keys (`pk`, `sk`), 25 to a BatchWriteItem, what DynamoDB leaves
    /// unprocessed sent again. A missing item is no error.
    pub async fn delete_keys(&self, keys: Vec<Item>) -> anyhow::Result<()> {
        use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
        let requests = keys
            .into_iter()
            .map(|key| {
                let key = key
                    .into_iter()
                    .filter(|(name, _)| name == "pk" || name == "sk")
                    .collect();
                DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
                    .context("delete request")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.write_batches(requests).await
    }

    /// Puts these items whole, 25 to a BatchWriteItem, what DynamoDB leaves unprocessed sent
    /// again.
    pub async fn put_items(&self, items: Vec<Item>) -> anyhow::Result<()> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let requests = items
            .into_iter()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .context("put request")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.write_batches(requests).await
    }

    async fn write_batches(
        &self,
        requests: Vec<aws_sdk_dynamodb::types::WriteRequest>,
    ) -> anyhow::Result<()> {
        for chunk in requests.chunks(25) {
            let mut requests = chunk.to_vec();
            for attempt in 0..10u64 {
                if requests.is_empty() {
                    break;
                }
                if attempt > 0 {
                    let wait = std::time::Duration::from_millis(25 << attempt.min(5));
                    tokio::time::sleep(crate::backoff::jittered(wait, 0.5)).await;
                }
                let answer = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .context("writing a batch")?;
                requests = answer
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
            }
            anyhow::ensure!(requests.is_empty(), "DynamoDB left writes unprocessed");
        }
        Ok(())
    }

    /// The items of any number of keys, in BatchGetItems of 100 at once.
    pub async fn batch_get_many(&self, keys: &[(String, String)]) -> anyhow::Result<Vec<Item>> {
        let batches =
            futures::future::try_join_all(keys.chunks(100).map(|chunk| self.batch_get(chunk)))
                .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// The items of up to 100 keys (`pk`, `sk`) in one BatchGetItem (strongly consistent; what
    /// DynamoDB leaves unprocessed asked again), in no particular order; missing ones left out.
    pub async fn batch_get(&self, keys: &[(String, String)]) -> anyhow::Result<Vec<Item>> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        anyhow::ensure!(keys.len() <= 100, "a batch of at most 100 keys");
        let mut items = Vec::new();
        let mut pending: Vec<Item> = keys.iter().map(|(pk, sk)| key(pk, sk)).collect();
        for attempt in 0..8u64 {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(attempt * 50)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .context("batch keys")?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .context("reading a batch")?;
            if let Some(mut found) = out.responses {
                items.extend(found.remove(&self.table).unwrap_or_default());
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|k| k.keys)
                .unwrap_or_default();
        }
        anyhow::ensure!(pending.is_empty(), "DynamoDB left reads unprocessed");
        Ok(items)
    }

    /// Writes an item whole (`what` names it in errors).
    pub async fn put(
        &self,
        item: Vec<(&str, AttributeValue)>,
        what: &'static str,
    ) -> anyhow::Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(
                item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .send()
            .await
            .context(what)?;
        Ok(())
    }
}

/// `SET #f0 = :v0, …` for a list of attributes, with the names and values it uses.
pub struct SetAll {
    pub expression: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

/// The `SET` of every attribute given (names through placeholders: any may be a reserved word).
pub fn set_all<'a>(attributes: impl IntoIterator<Item = (&'a str, AttributeValue)>) -> SetAll {
    let mut sets = Vec::new();
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    for (i, (name, value)) in attributes.into_iter().enumerate() {
        sets.push(format!("#f{i} = :v{i}"));
        names.insert(format!("#f{i}"), name.to_owned());
        values.insert(format!(":v{i}"), value);
    }
    SetAll {
        expression: format!("SET {}", sets.join(", ")),
        names,
        values,
    }
}

/// The position of an item in an index (`<index>pk`, `<index>sk`, and the item's `pk`, `sk`):
/// where [`Db::index_page`] goes on from.
pub fn index_key(
    index: &str,
    partition: &str,
    sort: AttributeValue,
    (pk, sk): (&str, &str),
) -> Item {
    Item::from([
        (format!("{index}pk"), s(partition)),
        (format!("{index}sk"), sort),
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
    ])
}

/// A string attribute.
/// The key `(pk, sk)` of an item, as BatchGetItem and BatchWriteItem's deletes take it.
pub fn key(pk: &str, sk: &str) -> Item {
    Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A string attribute of an item, if present.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

/// A numeric attribute of an item, if present and integral.
pub fn get_i64(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// Which actions of a cancelled transaction failed their condition, by index; `None` when the
/// transaction failed for another reason (which the caller reports as an internal error).
pub fn failed_conditions(err: &SdkError<TransactWriteItemsError>) -> Option<Vec<bool>> {
    let TransactWriteItemsError::TransactionCanceledException(cancel) = err.as_service_error()?
    else {
        return None;
    };
    let reasons = cancel.cancellation_reasons();
    Some(
        reasons
            .iter()
            .map(|r| r.code() == Some("ConditionalCheckFailed"))
            .collect(),
    )
}

/// The cancellation reason code of every action of a cancelled transaction (`None` where the
/// action was fine); `None` when the transaction failed for another reason.
pub fn cancellation_codes(err: &SdkError<TransactWriteItemsError>) -> Option<Vec<String>> {
    let TransactWriteItemsError::TransactionCanceledException(cancel) = err.as_service_error()?
    else {
        return None;
    };
    Some(
        cancel
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().unwrap_or("None").to_owned())
            .collect(),
    )
}

/// Runs a transaction. DynamoDB cancels transactions that race on one item (`TransactionConflict`);
/// those are retried with jittered backoff, up to 8 attempts. A failed condition is returned as is.
///
/// Every attempt names a client request token, which makes it idempotent for 10 minutes: the SDK
/// resends the same token when an attempt times out, so a transaction that committed after its
/// caller stopped waiting is answered as done, not carried out again nor cancelled by its own
/// writes. A `TransactionInProgressException` (that first attempt still running) is waited out
/// under the same token; a conflict, which carried out nothing, is retried under a new one.
pub async fn transact(
    db: &Db,
    actions: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
) -> Result<(), SdkError<TransactWriteItemsError>> {
    let mut attempt = 0u64;
    let mut token = uuid::Uuid::new_v4().to_string();
    loop {
        attempt += 1;
        let result = db
            .client
            .transact_write_items()
            .set_transact_items(Some(actions.clone()))
            .client_request_token(&token)
            .send()
            .await;
        let Err(err) = result else { return Ok(()) };
        let in_progress = matches!(
            err.as_service_error(),
            Some(TransactWriteItemsError::TransactionInProgressException(_))
        );
        let conflict_only = cancellation_codes(&err).is_some_and(|codes| {
            codes.iter().any(|c| c == "TransactionConflict")
                && !codes.iter().any(|c| c == "ConditionalCheckFailed")
        });
        if !(in_progress || conflict_only) || attempt >= 8 {
            return Err(err);
        }
        if conflict_only {
            token = uuid::Uuid::new_v4().to_string();
        }
        let wait = std::time::Duration::from_millis(attempt * 10 + 10);
        tokio::time::sleep(crate::backoff::jittered(wait, 0.5)).await;
    }
}

/// Carries out one conditional write exactly once: `false` when its condition did not hold.
///
/// A single-item write (PutItem, UpdateItem, DeleteItem) has no client request token: when it
/// commits but answers after the SDK's attempt timeout, the SDK sends it again, and the second
/// attempt meets the first one's effect. A count is then counted twice, and a write conditioned
/// on the item's state (new, present, unchanged) fails its condition and reads as refused. Sent as
/// a one-action transaction through [`transact`], the retry carries the first attempt's token and
/// is answered as done. It costs the transaction's double write units; it is for writes whose
/// retry would be misread, not for those that can simply be repeated.
pub async fn once(
    db: &Db,
    action: aws_sdk_dynamodb::types::TransactWriteItem,
) -> anyhow::Result<bool> {
    match transact(db, vec![action]).await {
        Ok(()) => Ok(true),
        Err(err) if failed_conditions(&err).is_some_and(|failed| failed.contains(&true)) => {
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}

/// Builders of transaction actions: an item, its condition (`None`: none) and the names and
/// values the expressions use.
pub mod tx {
    use anyhow::Context as _;
    use aws_sdk_dynamodb::types::{
        AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
    };

    use super::{Db, s};

    /// `#name` placeholders and `:value`s an action's expressions use.
    pub type Names<'a> = &'a [(&'a str, &'a str)];
    pub type Values<'a> = Vec<(&'a str, AttributeValue)>;

    /// Puts `item` (its `pk` and `sk` among the attributes).
    pub fn put(
        db: &Db,
        item: Values<'_>,
        condition: Option<&str>,
    ) -> anyhow::Result<TransactWriteItem> {
        let mut put = Put::builder()
            .table_name(&db.table)
            .set_condition_expression(condition.map(str::to_owned));
        for (name, value) in item {
            put = put.item(name, value);
        }
        Ok(TransactWriteItem::builder()
            .put(put.build().context("put")?)
            .build())
    }

    /// Updates the item `(pk, sk)` with `expression`.
    pub fn update(
        db: &Db,
        (pk, sk): (&str, &str),
        expression: &str,
        condition: Option<&str>,
        names: Names<'_>,
        values: Values<'_>,
    ) -> anyhow::Result<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&db.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(expression)
            .set_condition_expression(condition.map(str::to_owned));
        for (name, attribute) in names {
            update = update.expression_attribute_names(*name, *attribute);
        }
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        Ok(TransactWriteItem::builder()
            .update(update.build().context("update")?)
            .build())
    }

    /// Deletes the item `(pk, sk)`.
    pub fn delete(
        db: &Db,
        (pk, sk): (&str, &str),
        condition: Option<&str>,
        names: Names<'_>,
        values: Values<'_>,
    ) -> anyhow::Result<TransactWriteItem> {
        let mut delete = Delete::builder()
            .table_name(&db.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .set_condition_expression(condition.map(str::to_owned));
        for (name, attribute) in names {
            delete = delete.expression_attribute_names(*name, *attribute);
        }
        for (name, value) in values {
            delete = delete.expression_attribute_values(name, value);
        }
        Ok(TransactWriteItem::builder()
            .delete(delete.build().context("delete")?)
            .build())
    }

    /// Holds the transaction to `condition` on the item `(pk, sk)` without writing it.
    pub fn check(
        db: &Db,
        (pk, sk): (&str, &str),
        condition: &str,
    ) -> anyhow::Result<TransactWriteItem> {
        let check = ConditionCheck::builder()
            .table_name(&db.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression(condition);
        Ok(TransactWriteItem::builder()
            .condition_check(check.build().context("condition check")?)
            .build())
    }
}

/// A transaction action that puts a new item (`attribute_not_exists(pk)`).
pub fn put_new(
    db: &Db,
    attributes: Vec<(&str, AttributeValue)>,
) -> anyhow::Result<aws_sdk_dynamodb::types::TransactWriteItem> {
    let mut builder = aws_sdk_dynamodb::types::Put::builder()
        .table_name(&db.table)
        .condition_expression("attribute_not_exists(pk)");
    for (name, value) in attributes {
        builder = builder.item(name, value);
    }
    Ok(aws_sdk_dynamodb::types::TransactWriteItem::builder()
        .put(builder.build().context("put")?)
        .build())
}

/// The output of a conditional write, or `None` when its condition did not hold; other errors pass.
pub fn unless_condition_failed<T, E>(result: Result<T, SdkError<E>>) -> anyhow::Result<Option<T>>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(err) if is_condition_failure(&err) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// What a conditional UpdateItem came to: `Ok(output)`, or `Err(old)` when its condition failed,
/// `old` being the item as `ReturnValuesOnConditionCheckFailure::AllOld` returned it (`None`
/// without one). Any other failure is the outer error.
pub fn update_or_old(
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    >,
) -> anyhow::Result<Result<aws_sdk_dynamodb::operation::update_item::UpdateItemOutput, Option<Item>>>
{
    match result {
        Ok(out) => Ok(Ok(out)),
        Err(err) => match err.as_service_error() {
            Some(
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                    failed,
                ),
            ) => Ok(Err(failed.item.clone())),
            _ => Err(err.into()),
        },
    }
}

/// Whether an error is a failed condition of a single-item write.
pub fn is_condition_failure<E>(err: &SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}
