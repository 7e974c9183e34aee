//! `/v1/credits`: the balance, the typed ledger, grants by an admin, and [`Movement`]: the one way
//! any feature moves credits (the balance and its ledger line in one transaction, exactly once).

use anyhow::Context as _;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cursor::Paging;
use crate::db::{get_i64, get_s, n, s};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body};
use crate::keys;
use crate::state::State;
use crate::users::{self, timestamp};

/// `GET /v1/credits`.
#[derive(Serialize, ToSchema)]
pub struct Balance {
    pub balance: i64,
    /// Jobs holding a slot now.
    pub active_jobs: i64,
}

/// What moved credits: a ledger line's `type`.
pub mod kinds {
    /// Credits bought (an order paid).
    pub const PURCHASE: &str = "purchase";
    /// Credits an admin gave (and a new account's starting credits).
    pub const GRANT: &str = "grant";
    /// A job's cost, at admission.
    pub const JOB_DEBIT: &str = "job_debit";
    /// A failed or canceled job's cost, given back.
    pub const JOB_REFUND: &str = "job_refund";
    /// An artist's share of a generation with their style.
    pub const EARNING: &str = "earning";
    /// Earned credits paid out to an artist.
    pub const PAYOUT: &str = "payout";
    /// Bought credits taken back when the payment was refunded.
    pub const PURCHASE_REFUND: &str = "purchase_refund";
    /// The daily reward.
    pub const DAILY_REWARD: &str = "daily_reward";
    /// What a job priced by its use (a chat reply's tokens) gave back of its estimate.
    pub const JOB_SETTLE: &str = "job_settle";
    /// Every type, for `?type=`.
    pub const ALL: [&str; 9] = [
        PURCHASE,
        GRANT,
        JOB_DEBIT,
        JOB_REFUND,
        EARNING,
        PAYOUT,
        PURCHASE_REFUND,
        DAILY_REWARD,
        JOB_SETTLE,
    ];
}

/// The reason job refunds were stored with before the ledger was typed.
const LEGACY_JOB_REFUND: &str = "refund";

/// One ledger entry.
#[derive(Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    /// Positive when credits came in, negative when they went out.
    pub amount: i64,
    /// `purchase`, `grant`, `job_debit`, `job_refund`, `earning`, `payout`, `purchase_refund`
    /// or `daily_reward`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The same as `type` (kept for clients of the first ledger).
    pub reason: String,
    /// The job debited or refunded, or that earned.
    pub job_id: Option<String>,
    /// The order bought or refunded.
    pub order_id: Option<String>,
    /// The style that earned.
    pub style_id: Option<String>,
    /// The payout request.
    pub payout_id: Option<String>,
    pub note: Option<String>,
    pub created_at: String,
}

/// A ledger line as stored under the user's partition.
#[derive(serde::Deserialize)]
struct StoredLine {
    sk: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    reason: String,
    job_id: Option<String>,
    order_id: Option<String>,
    style_id: Option<String>,
    payout_id: Option<String>,
    note: Option<String>,
    #[serde(default)]
    created_at: String,
}

impl From<StoredLine> for LedgerEntry {
    fn from(line: StoredLine) -> Self {
        let kind = if line.reason == LEGACY_JOB_REFUND {
            kinds::JOB_REFUND.to_owned()
        } else {
            line.reason
        };
        Self {
            id: line.sk.trim_start_matches(keys::LEDGER_PREFIX).to_owned(),
            amount: line.amount,
            reason: kind.clone(),
            kind,
            job_id: line.job_id,
            order_id: line.order_id,
            style_id: line.style_id,
            payout_id: line.payout_id,
            note: line.note,
            created_at: line.created_at,
        }
    }
}

/// What a ledger line links to.
#[derive(Clone, Copy, Debug, Default)]
pub struct Links<'a> {
    pub job_id: Option<&'a str>,
    pub order_id: Option<&'a str>,
    pub style_id: Option<&'a str>,
    pub payout_id: Option<&'a str>,
}

/// A movement of one account's credits: the balance and its ledger line, two actions of the
/// caller's transaction. The line's key is `entry` and the type: the same movement twice is
/// refused by the transaction (`attribute_not_exists`), so whatever retries it moves once.
#[derive(Clone, Copy, Debug)]
pub struct Movement<'a> {
    pub user_id: &'a str,
    /// Positive in, negative out; an outgoing movement needs the balance to cover it.
    pub amount: i64,
    /// One of [`kinds`].
    pub kind: &'static str,
    /// The line's id (an order's, a job's, or a fresh UUIDv7): newest sort last.
    pub entry: &'a str,
    pub links: Links<'a>,
    pub note: Option<&'a str>,
    /// Who made it, for grants.
    pub by: Option<&'a str>,
}

impl Movement<'_> {
    /// The ledger line's sort key.
    pub fn line_key(&self) -> String {
        keys::ledger(self.entry, self.kind)
    }

    /// The two actions, balance first: the balance's condition fails when the account is gone
    /// (or, going out, when the balance would fall below zero); the line's when it was made.
    pub fn actions(
        &self,
        db: &crate::db::Db,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<[TransactWriteItem; 2]> {
        let pk = keys::user(self.user_id);
        let balance = Update::builder()
            .table_name(&db.table)
            .key("pk", s(&pk))
            .key("sk", s(keys::PROFILE));
        let balance = if self.amount >= 0 {
            balance
                .update_expression("SET credits = credits + :amount")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":amount", n(self.amount))
        } else {
            balance
                .update_expression("SET credits = credits - :take")
                .condition_expression("attribute_exists(pk) AND credits >= :take")
                .expression_attribute_values(":take", n(-self.amount))
        };
        Ok([
            TransactWriteItem::builder()
                .update(balance.build().context("update")?)
                .build(),
            self.line(db, now)?,
        ])
    }

    /// The ledger line alone, for a transaction that changes the balance itself (with other
    /// attributes of the profile: one action per item).
    pub fn line(
        &self,
        db: &crate::db::Db,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<TransactWriteItem> {
        let mut line = Put::builder()
            .table_name(&db.table)
            .condition_expression("attribute_not_exists(pk)")
            .item("pk", s(keys::user(self.user_id)))
            .item("sk", s(self.line_key()))
            .item("amount", n(self.amount))
            .item("reason", s(self.kind))
            .item("created_at", s(timestamp(now)));
        for (name, value) in [
            ("job_id", self.links.job_id),
            ("order_id", self.links.order_id),
            ("style_id", self.links.style_id),
            ("payout_id", self.links.payout_id),
            ("note", self.note),
            ("granted_by", self.by),
        ] {
            if let Some(value) = value {
                line = line.item(name, s(value));
            }
        }
        Ok(TransactWriteItem::builder()
            .put(line.build().context("put")?)
            .build())
    }
}

/// A page of the ledger.
#[derive(Serialize, ToSchema)]
pub struct LedgerPage {
    pub items: Vec<LedgerEntry>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/admin/credits/grants`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub user_id: String,
    /// 1 to 1,000,000.
    pub amount: i64,
    pub note: Option<String>,
}

/// The answer to a grant.
#[derive(Serialize, ToSchema)]
pub struct Granted {
    pub user_id: String,
    pub amount: i64,
    pub balance: i64,
}

/// The caller's balance.
#[utoipa::path(get, path = "/v1/credits", tag = "credits", security(("bearer" = [])),
    responses((status = 200, body = Balance), (status = 404, description = "the account no longer exists (deleted)", body = crate::error::Problem)))]
pub async fn get_credits(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let item = state
        .db
        .get(&keys::user(&caller.user_id), keys::PROFILE)
        .await?
        .filter(|item| !item.contains_key("deleted_at"))
        .ok_or(ApiError::NotFound("the account no longer exists"))?;
    json(
        StatusCode::OK,
        &Balance {
            balance: get_i64(&item, "credits").unwrap_or(0),
            active_jobs: get_i64(&item, "active_jobs").unwrap_or(0),
        },
    )
}

/// The caller's ledger, newest first: every movement typed and linked to its job, order, style
/// or payout; `?type=` keeps one type (comma-separated for several).
#[utoipa::path(get, path = "/v1/credits/transactions", tag = "credits", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query),
        ("type" = Option<String>, Query, description = "purchase, grant, job_debit, job_refund, earning, payout, purchase_refund or daily_reward; comma-separated for several")),
    responses((status = 200, body = LedgerPage), (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 422, description = "an unknown type", body = crate::error::Problem)))]
pub async fn list_credit_transactions(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let types = ledger_types(&req)?;
    let scope = format!("ledger|{}|{}", caller.user_id, types.join(","));
    let page = Paging::from_request(&req, state.cursor_key().await?, scope)?;
    let pk = keys::user(&caller.user_id);
    let limit = page.limit;
    let mut items: Vec<LedgerEntry> = Vec::new();
    let mut start = page.after.clone();
    // A filter thins DynamoDB's pages: read on until the page is full or the ledger ends.
    let next = loop {
        let mut query = state
            .db
            .client
            .query()
            .table_name(&state.db.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :ledger)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":ledger", s(keys::LEDGER_PREFIX))
            .scan_index_forward(false)
            .limit(i32::try_from(limit.max(25)).unwrap_or(25))
            .set_exclusive_start_key(
                start
                    .as_ref()
                    .map(|sk| [("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(sk))].into()),
            );
        if !types.is_empty() {
            let mut wanted: Vec<&str> = types.iter().map(String::as_str).collect();
            if wanted.contains(&kinds::JOB_REFUND) {
                wanted.push(LEGACY_JOB_REFUND);
            }
            let names: Vec<String> = (0..wanted.len()).map(|i| format!(":t{i}")).collect();
            query = query.filter_expression(format!("reason IN ({})", names.join(", ")));
            for (name, kind) in names.iter().zip(&wanted) {
                query = query.expression_attribute_values(name, s(*kind));
            }
        }
        let out = query.send().await.context("reading the ledger")?;
        let mut last = None;
        let mut full = false;
        for item in out.items() {
            if items.len() == limit {
                full = true;
                break;
            }
            if let Ok(line) = serde_dynamo::from_item::<_, StoredLine>(item.clone()) {
                last = Some(line.sk.clone());
                items.push(line.into());
            }
        }
        let end = out
            .last_evaluated_key()
            .and_then(|k| get_s(k, "sk"))
            .map(str::to_owned);
        if full {
            break last;
        }
        match end {
            None => break None,
            Some(end) if items.len() == limit => break Some(end),
            Some(end) => start = Some(end),
        }
    };
    let next = page.next_cursor(next);
    json(
        StatusCode::OK,
        &LedgerPage {
            items,
            next_cursor: next,
        },
    )
}

/// `?type=`: known types, comma-separated; empty for every type.
fn ledger_types(req: &Request) -> Result<Vec<String>, ApiError> {
    let Some(text) = crate::http::query_param(req, "type") else {
        return Ok(Vec::new());
    };
    let mut types = Vec::new();
    for kind in text.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        if !kinds::ALL.contains(&kind) {
            return Err(ApiError::invalid(
                "type",
                format!("must be one of {}", kinds::ALL.join(", ")),
            ));
        }
        if !types.iter().any(|t| t == kind) {
            types.push(kind.to_owned());
        }
    }
    Ok(types)
}

/// Grants credits to a user, ledgered. Admins only.
#[utoipa::path(post, path = "/v1/admin/credits/grants", tag = "credits", security(("bearer" = [])), request_body = Grant,
    responses((status = 201, body = Granted), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn grant_credits(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::admin(&req)?;
    let body: Grant = json_body(&req, &["application/json"])?;
    let mut errors = Vec::new();
    if !(1..=1_000_000).contains(&body.amount) {
        errors.push(FieldError::new("amount", "must be from 1 to 1000000"));
    }
    if body.note.as_ref().is_some_and(|n| n.chars().count() > 200) {
        errors.push(FieldError::new("note", "must be at most 200 characters"));
    }
    if uuid::Uuid::parse_str(&body.user_id).is_err() {
        errors.push(FieldError::new("user_id", "must be a user id"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = Utc::now();
    let entry = uuid::Uuid::now_v7().to_string();
    let actions = Movement {
        user_id: &body.user_id,
        amount: body.amount,
        kind: kinds::GRANT,
        entry: &entry,
        links: Links::default(),
        note: body.note.as_deref(),
        by: Some(&caller.user_id),
    }
    .actions(&state.db, now)?
    .to_vec();
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(failed) if failed.first() == Some(&true) => ApiError::NotFound("no such user"),
            _ => ApiError::Internal(anyhow::Error::new(err).context("granting credits")),
        });
    }
    tracing::info!(user_id = %body.user_id, amount = body.amount, "credits granted");
    let balance = users::get(&state.db, &body.user_id, now)
        .await?
        .map(|u| u.view.credits)
        .unwrap_or(0);
    json(
        StatusCode::CREATED,
        &Granted {
            user_id: body.user_id,
            amount: body.amount,
            balance,
        },
    )
}
