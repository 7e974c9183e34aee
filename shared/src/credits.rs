//! `/v1/credits`: the balance, the ledger, and grants by an admin (the only way credits come in).

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

/// One ledger entry.
#[derive(Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    /// Positive for grants and refunds, negative for job debits.
    pub amount: i64,
    /// `grant`, `job_debit` or `refund`.
    pub reason: String,
    pub job_id: Option<String>,
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
    note: Option<String>,
    #[serde(default)]
    created_at: String,
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

/// The caller's ledger, newest first: grants, job debits and refunds, each linked to its job.
#[utoipa::path(get, path = "/v1/credits/transactions", tag = "credits", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)), responses((status = 200, body = LedgerPage)))]
pub async fn list_credit_transactions(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let scope = format!("ledger|{}", caller.user_id);
    let page = Paging::from_request(&req, state.cursor_key().await?, scope)?;
    let pk = keys::user(&caller.user_id);
    let out = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :ledger)")
        .expression_attribute_values(":pk", s(&pk))
        .expression_attribute_values(":ledger", s(keys::LEDGER_PREFIX))
        .scan_index_forward(false)
        .limit(i32::try_from(page.limit).unwrap_or(20))
        .set_exclusive_start_key(
            page.after
                .as_ref()
                .map(|sk| [("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(sk))].into()),
        )
        .send()
        .await
        .context("reading the ledger")?;
    let items = out
        .items()
        .iter()
        .filter_map(|item| {
            let line: StoredLine = serde_dynamo::from_item(item.clone()).ok()?;
            Some(LedgerEntry {
                id: line.sk.trim_start_matches(keys::LEDGER_PREFIX).to_owned(),
                amount: line.amount,
                reason: line.reason,
                job_id: line.job_id,
                note: line.note,
                created_at: line.created_at,
            })
        })
        .collect();
    let next = page.next_cursor(
        out.last_evaluated_key()
            .and_then(|k| get_s(k, "sk"))
            .map(str::to_owned),
    );
    json(
        StatusCode::OK,
        &LedgerPage {
            items,
            next_cursor: next,
        },
    )
}

/// Grants credits to a user, ledgered. Admins only.
#[utoipa::path(post, path = "/v1/admin/credits/grants", tag = "credits", security(("bearer" = [])), request_body = Grant,
    responses((status = 201, body = Granted), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn grant_credits(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    if caller.role != "admin" {
        return Err(ApiError::Forbidden { role: "admin" });
    }
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
    let pk = keys::user(&body.user_id);
    let credit = Update::builder()
        .table_name(&state.db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::PROFILE))
        .update_expression("SET credits = credits + :amount")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":amount", n(body.amount))
        .build()
        .context("update")?;
    let mut entry = Put::builder()
        .table_name(&state.db.table)
        .condition_expression("attribute_not_exists(pk)")
        .item("pk", s(&pk))
        .item(
            "sk",
            s(keys::ledger(&uuid::Uuid::now_v7().to_string(), "grant")),
        )
        .item("amount", n(body.amount))
        .item("reason", s("grant"))
        .item("granted_by", s(&caller.user_id))
        .item("created_at", s(timestamp(now)));
    if let Some(note) = &body.note {
        entry = entry.item("note", s(note));
    }
    let actions = vec![
        TransactWriteItem::builder().update(credit).build(),
        TransactWriteItem::builder()
            .put(entry.build().context("put")?)
            .build(),
    ];
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
