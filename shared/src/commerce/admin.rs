//! What admins do with accounts and money: list accounts (`GET /v1/admin/users`), list orders
//! (`GET /v1/admin/orders`) and refund one (`POST /v1/admin/orders/{id}/refund`: the provider
//! gives the money back, and the credits it bought are taken back as far as the balance goes).
//! Grants are `POST /v1/admin/credits/grants`; payouts are resolved in [`super::artists`].

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::commerce::orders::{self, Order, OrderPage, Provider, Stored};
use crate::cursor::Paging;
use crate::db::{Item, get_i64, get_s, s};
use crate::error::ApiError;
use crate::http::{Caller, json as respond, json_body, path_param, query_param};
use crate::keys;
use crate::state::State;

/// An account as admins see it.
#[derive(Serialize, ToSchema)]
pub struct AdminUser {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub role: String,
    pub credits: i64,
    pub created_at: String,
    /// Set while the account is being deleted.
    pub deleted_at: Option<String>,
}

/// A page of accounts.
#[derive(Serialize, ToSchema)]
pub struct AdminUserPage {
    pub items: Vec<AdminUser>,
    pub next_cursor: Option<String>,
}

fn admin_user(item: &Item) -> AdminUser {
    AdminUser {
        id: get_s(item, "id").unwrap_or_default().to_owned(),
        username: get_s(item, "username").unwrap_or_default().to_owned(),
        email: get_s(item, "email").map(str::to_owned),
        email_verified: matches!(item.get("email_verified"), Some(AttributeValue::Bool(true))),
        role: get_s(item, "role").unwrap_or("user").to_owned(),
        credits: get_i64(item, "credits").unwrap_or(0),
        created_at: get_s(item, "created_at").unwrap_or_default().to_owned(),
        deleted_at: get_s(item, "deleted_at").map(str::to_owned),
    }
}

/// Accounts: the one with `?email=` or `?username=`, or all of them, a page at a time (a scan of
/// the table: for an admin's look, not for analytics). Admins only.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(("email" = Option<String>, Query), ("username" = Option<String>, Query),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = AdminUserPage), (status = 403, body = crate::error::Problem)))]
pub async fn list_users(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    Caller::admin(&req)?;
    let lookup = match (query_param(&req, "email"), query_param(&req, "username")) {
        (Some(email), _) => Some(keys::email(&email.trim().to_lowercase())),
        (None, Some(username)) => Some(keys::username(username.trim())),
        (None, None) => None,
    };
    if let Some(pk) = lookup {
        let mut items = Vec::new();
        let found = state.db.get(&pk, keys::UNIQUE).await?;
        if let Some(user_id) = found.as_ref().and_then(|i| get_s(i, "user_id"))
            && let Some(profile) = state.db.get(&keys::user(user_id), keys::PROFILE).await?
        {
            items.push(admin_user(&profile));
        }
        return respond(
            StatusCode::OK,
            &AdminUserPage {
                items,
                next_cursor: None,
            },
        );
    }
    let page = Paging::from_request(&req, state.cursor_key().await?, "admin-users".to_owned())?;
    let mut items = Vec::new();
    let mut start = page.after.clone();
    let next = loop {
        let out = state
            .db
            .client
            .scan()
            .table_name(&state.db.table)
            .filter_expression("sk = :profile")
            .expression_attribute_values(":profile", s(keys::PROFILE))
            .limit(200)
            .set_exclusive_start_key(start.as_ref().map(|pk| {
                [
                    ("pk".to_owned(), s(pk)),
                    ("sk".to_owned(), s(keys::PROFILE)),
                ]
                .into()
            }))
            .send()
            .await
            .context("listing accounts")?;
        let mut last = None;
        let mut full = false;
        for item in out.items() {
            if items.len() == page.limit {
                full = true;
                break;
            }
            last = get_s(item, "pk").map(str::to_owned);
            items.push(admin_user(item));
        }
        if full {
            break last;
        }
        // A scan page ends on any item; resume after its key (a profile's, or the next's).
        match out.last_evaluated_key() {
            None => break None,
            Some(end) => {
                let end_pk = get_s(end, "pk").map(str::to_owned);
                if items.len() == page.limit {
                    break last.or(end_pk);
                }
                if get_s(end, "sk") != Some(keys::PROFILE) {
                    // Resuming needs a profile's key: the last one read, or none read yet.
                    match last.clone() {
                        Some(pk) => start = Some(pk),
                        None => {
                            tracing::warn!("an account scan page held no profile");
                            break None;
                        }
                    }
                } else {
                    start = end_pk;
                }
            }
        }
    };
    let next_cursor = page.next_cursor(next);
    respond(StatusCode::OK, &AdminUserPage { items, next_cursor })
}

/// Orders, newest first: by `?status=` (`pending`, `paid`, `partially_refunded`, `refunded`;
/// default `paid`) or of one `?user_id=`. Admins only.
#[utoipa::path(get, path = "/v1/admin/orders", tag = "admin", security(("bearer" = [])),
    params(("status" = Option<String>, Query), ("user_id" = Option<String>, Query),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = OrderPage), (status = 403, body = crate::error::Problem)))]
pub async fn list_orders(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    Caller::admin(&req)?;
    let user = query_param(&req, "user_id");
    let status = query_param(&req, "status").unwrap_or_else(|| "paid".to_owned());
    if !matches!(
        status.as_str(),
        "pending" | "paid" | "partially_refunded" | "refunded"
    ) {
        return Err(ApiError::invalid(
            "status",
            "must be pending, paid, partially_refunded or refunded",
        ));
    }
    let (index, partition, scope) = match &user {
        Some(user_id) => (
            "gsi1",
            keys::orders_of(user_id),
            format!("admin-orders|u|{user_id}"),
        ),
        None => (
            "gsi3",
            keys::orders_in(&status),
            format!("admin-orders|s|{status}"),
        ),
    };
    let page = Paging::from_request(&req, state.cursor_key().await?, scope)?;
    let start = page.after.as_deref().and_then(|position| {
        let (sort, id) = position.split_once('|')?;
        let sort = if index == "gsi3" {
            crate::db::n(sort.parse::<i64>().ok()?)
        } else {
            s(sort)
        };
        Some(crate::db::index_key(
            index,
            &partition,
            sort,
            (&keys::order(id), keys::ORDER),
        ))
    });
    let out = state
        .db
        .index_page(index, &partition, start, page.limit, true)
        .await?;
    // The status index holds the keys alone: the orders are read by them.
    let ids: Vec<String> = out
        .items()
        .iter()
        .filter_map(|i| get_s(i, "id").map(str::to_owned))
        .collect();
    let found = state
        .db
        .batch_get(
            &ids.iter()
                .map(|id| (keys::order(id), keys::ORDER.to_owned()))
                .collect::<Vec<_>>(),
        )
        .await?;
    let now = Utc::now();
    let items: Vec<Order> = ids
        .iter()
        .filter_map(|id| found.iter().find(|f| get_s(f, "id") == Some(id.as_str())))
        .filter_map(|item| serde_dynamo::from_item::<_, Stored>(item.clone()).ok())
        .map(|order| order.into_view(now))
        .collect();
    let next = out.last_evaluated_key().and_then(|k| {
        let sort = match k.get(&format!("{index}sk"))? {
            AttributeValue::N(v) | AttributeValue::S(v) => v.clone(),
            _ => return None,
        };
        Some(format!(
            "{sort}|{}",
            get_s(k, "pk")?.trim_start_matches("ORDER#")
        ))
    });
    let next_cursor = page.next_cursor(next);
    respond(StatusCode::OK, &OrderPage { items, next_cursor })
}

/// `POST /v1/admin/orders/{id}/refund`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundOrder {
    /// What to give back, in the currency's smallest unit; default all that is left.
    pub amount: Option<i64>,
    /// Shown to the buyer by the provider (Toss's `cancelReason`); up to 200 characters.
    pub reason: String,
}

/// Refunds a paid order at its provider (Toss's cancel, Stripe's refund) and takes back the
/// credits the refunded share bought, as far as the balance goes (the order records the rest).
/// Admins only.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/refund", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RefundOrder,
    responses((status = 200, body = Order), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, description = "order_not_paid, or nothing left to refund", body = crate::error::Problem),
        (status = 503, description = "the provider did not answer; try again", body = crate::error::Problem)))]
pub async fn refund_order(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::admin(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let body: RefundOrder = json_body(&req, &["application/json"])?;
    if !(1..=200).contains(&body.reason.trim().chars().count()) {
        return Err(ApiError::invalid("reason", "must be 1 to 200 characters"));
    }
    let order = orders::load(state, &id)
        .await?
        .ok_or(ApiError::NotFound("no such order"))?;
    let left = order.amount - order.refunded_amount;
    let payment_id = match (&order.payment_id, order.status.as_str()) {
        (Some(p), "paid" | "partially_refunded") if left > 0 => p.clone(),
        _ => {
            return Err(ApiError::Conflict {
                code: "order_not_paid",
                detail: "the order is not paid, or is refunded in full".into(),
            });
        }
    };
    let amount = body.amount.unwrap_or(left);
    if !(1..=left).contains(&amount) {
        return Err(ApiError::invalid(
            "amount",
            format!("must be from 1 to {left}"),
        ));
    }
    let provider = order.provider().context("an order without its provider")?;
    let target = order.refunded_amount + amount;
    // One refund per refunded total: a retried request cannot give back twice.
    let idempotency = format!("refund-{id}-{target}");
    let unavailable = |err: anyhow::Error| {
        tracing::error!(error = format!("{err:#}"), order_id = %id, "a refund was not made");
        ApiError::Unavailable("the payment provider did not answer; try again")
    };
    let keys = crate::commerce::keys(state).await?;
    let refunded = match provider {
        Provider::Toss => {
            let secret = keys
                .toss()
                .ok_or(ApiError::NotFound("Toss Payments is not configured here"))?;
            let payment = crate::commerce::toss::cancel(
                state,
                secret,
                &payment_id,
                &idempotency,
                amount,
                body.reason.trim(),
            )
            .await
            .map_err(|e| unavailable(anyhow::anyhow!("{e}")))?;
            payment.total_amount - payment.balance_amount
        }
        Provider::Stripe => {
            let secret = keys
                .stripe()
                .ok_or(ApiError::NotFound("Stripe is not configured here"))?;
            let response = state
                .http
                .api
                .post(format!(
                    "{}/v1/refunds",
                    state.config.payments.stripe_api_url
                ))
                .bearer_auth(secret.expose_secret())
                .header("idempotency-key", &idempotency)
                .form(&[
                    ("payment_intent", payment_id.as_str()),
                    ("amount", &amount.to_string()),
                    ("metadata[order_id]", id.as_str()),
                ])
                .send()
                .await
                .context("calling Stripe")
                .map_err(unavailable)?;
            if !response.status().is_success() {
                return Err(unavailable(anyhow::anyhow!(
                    "Stripe answered {}",
                    response.status()
                )));
            }
            target
        }
    };
    orders::take_back(state, &id, provider, refunded).await?;
    tracing::info!(order_id = %id, admin = %caller.user_id, amount, "order refunded by an admin");
    let order = orders::load(state, &id)
        .await?
        .ok_or(ApiError::NotFound("no such order"))?;
    respond(StatusCode::OK, &order.into_view(Utc::now()))
}
