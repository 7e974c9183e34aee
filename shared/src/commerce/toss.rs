//! Toss Payments: the client's confirm after the payment window (`POST
//! /v1/credits/orders/{id}/confirm`: the amount checked against the order, then Toss's
//! `POST /v1/payments/confirm` with the secret key) and Toss's `PAYMENT_STATUS_CHANGED` webhooks,
//! which carry no signature: each is a hint, and the payment is read again from Toss before
//! anything changes.

use anyhow::Context as _;
use base64::Engine as _;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::commerce::orders::{self, Fulfilled, Paid, Provider};
use crate::commerce::valid_payment_id;
use crate::error::ApiError;
use crate::http::{Caller, body_bytes, json as respond, json_body, path_param};
use crate::state::State;

/// A payment as Toss tells it (the fields Lambent reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Payment {
    pub payment_key: String,
    pub order_id: String,
    /// READY, IN_PROGRESS, WAITING_FOR_DEPOSIT, DONE, CANCELED, PARTIAL_CANCELED, ABORTED, EXPIRED.
    pub status: String,
    pub total_amount: i64,
    /// What is left after cancels.
    pub balance_amount: i64,
    #[serde(default = "krw")]
    pub currency: String,
}

fn krw() -> String {
    "KRW".to_owned()
}

/// Why Toss did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TossError {
    /// Toss refused: its code (`ALREADY_PROCESSED_PAYMENT`, `REJECT_CARD_PAYMENT`, …).
    #[error("Toss refused: {code}")]
    Refused { status: u16, code: String },
    /// Toss could not be reached or failed.
    #[error(transparent)]
    Unavailable(#[from] anyhow::Error),
}

async fn secret(state: &State) -> Result<&SecretString, ApiError> {
    crate::commerce::keys(state)
        .await?
        .toss()
        .ok_or(ApiError::NotFound("Toss Payments is not configured here"))
}

/// `Authorization: Basic base64("{secretKey}:")`.
fn authorization(secret: &SecretString) -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", secret.expose_secret()));
    format!("Basic {token}")
}

async fn call(
    secret: &SecretString,
    request: reqwest::RequestBuilder,
) -> Result<Payment, TossError> {
    let response = request
        .header("authorization", authorization(secret))
        .send()
        .await
        .context("calling Toss Payments")?;
    let status = response.status().as_u16();
    let text = crate::http::read_limited(response, 64 * 1024)
        .await
        .context("reading Toss's answer")?;
    if (200..300).contains(&status) {
        return Ok(serde_json::from_slice(&text).context("Toss's payment")?);
    }
    let body: Value = serde_json::from_slice(&text).unwrap_or_default();
    let code = body["code"].as_str().unwrap_or("UNKNOWN").to_owned();
    if status >= 500 || status == 429 {
        return Err(TossError::Unavailable(anyhow::anyhow!(
            "Toss answered {status} {code}"
        )));
    }
    Err(TossError::Refused { status, code })
}

/// Confirms a payment the window authorized (`Idempotency-Key`: the order, so a retried
/// confirm cannot charge twice).
async fn confirm(
    state: &State,
    secret: &SecretString,
    payment_key: &str,
    order_id: &str,
    amount: i64,
) -> Result<Payment, TossError> {
    let url = format!("{}/v1/payments/confirm", state.config.payments.toss_api_url);
    let request = state
        .http
        .api
        .post(url)
        .header("idempotency-key", format!("confirm-{order_id}"))
        .json(&json!({"paymentKey": payment_key, "orderId": order_id, "amount": amount}));
    call(secret, request).await
}

/// Reads a payment as Toss has it now.
pub(crate) async fn payment(
    state: &State,
    secret: &SecretString,
    payment_key: &str,
) -> Result<Payment, TossError> {
    let url = format!(
        "{}/v1/payments/{payment_key}",
        state.config.payments.toss_api_url
    );
    call(secret, state.http.api.get(url)).await
}

/// Cancels `amount` of a payment (all or part; `Idempotency-Key` given): the payment after.
pub(crate) async fn cancel(
    state: &State,
    secret: &SecretString,
    payment_key: &str,
    idempotency_key: &str,
    amount: i64,
    reason: &str,
) -> Result<Payment, TossError> {
    let url = format!(
        "{}/v1/payments/{payment_key}/cancel",
        state.config.payments.toss_api_url
    );
    let request = state
        .http
        .api
        .post(url)
        .header("idempotency-key", idempotency_key)
        .json(&json!({"cancelReason": reason, "cancelAmount": amount}));
    call(secret, request).await
}

/// Acts on a payment as Toss has it: DONE pays its order; CANCELED and PARTIAL_CANCELED take
/// the refunded share back.
async fn apply(state: &State, payment: &Payment) -> anyhow::Result<Option<Fulfilled>> {
    match payment.status.as_str() {
        "DONE" => {
            let paid = Paid {
                provider: Provider::Toss,
                payment_id: &payment.payment_key,
                amount: payment.total_amount,
                currency: &payment.currency,
                session_id: None,
            };
            Ok(Some(orders::fulfil(state, &payment.order_id, &paid).await?))
        }
        "CANCELED" | "PARTIAL_CANCELED" => {
            let order = orders::paid_by(state, Provider::Toss, &payment.payment_key).await?;
            match order {
                Some(order) if order == payment.order_id => {
                    let refunded = payment.total_amount - payment.balance_amount;
                    orders::take_back(state, &order, Provider::Toss, refunded).await?;
                }
                _ => {
                    tracing::warn!(payment_key = %payment.payment_key, "a cancel of a payment that paid no order here")
                }
            }
            Ok(None)
        }
        other => {
            tracing::info!(payment_key = %payment.payment_key, status = other, "a Toss payment not done: nothing to do");
            Ok(None)
        }
    }
}

/// `POST /v1/credits/orders/{id}/confirm`: what Toss's success redirect carries.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPayment {
    #[serde(rename = "paymentKey")]
    pub payment_key: String,
    /// The order's id, if given, must be this order's.
    #[serde(rename = "orderId")]
    pub order_id: Option<String>,
    /// Must be the order's amount.
    pub amount: i64,
}

/// Confirms a Toss payment of your order (after Toss's payment window redirected with
/// `paymentKey`, `orderId` and `amount`): the amount is checked against the order, Toss
/// confirms it, and the credits are yours, once, however often this or Toss's webhook comes.
#[utoipa::path(post, path = "/v1/credits/orders/{id}/confirm", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = ConfirmPayment,
    responses((status = 200, body = orders::Order),
        (status = 202, description = "a virtual account waits for the deposit: the credits come with Toss's webhook", body = orders::Order),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "order_expired, or paid by another payment", body = crate::error::Problem),
        (status = 422, description = "amount_mismatch, or Toss refused the payment (payment_refused)", body = crate::error::Problem),
        (status = 503, description = "Toss did not answer; confirm again", body = crate::error::Problem)))]
pub async fn confirm_credit_order(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let body: ConfirmPayment = json_body(&req, &["application/json"])?;
    let order = match orders::load(state, &id).await? {
        Some(order) if order.user_id == caller.user_id => order,
        _ => return Err(ApiError::NotFound("no such order")),
    };
    if !valid_payment_id(&body.payment_key) {
        return Err(ApiError::invalid(
            "paymentKey",
            "must be Toss's paymentKey (letters, digits, _ and -, up to 200)",
        ));
    }
    if body.order_id.as_deref().is_some_and(|o| o != order.id) {
        return Err(ApiError::invalid("orderId", "must be this order's id"));
    }
    if order.provider() != Some(Provider::Toss) {
        return Err(ApiError::Conflict {
            code: "not_a_toss_order",
            detail: "this order is paid through Stripe Checkout".into(),
        });
    }
    let secret = secret(state).await?;
    if order.status != "pending" {
        if order.payment_id.as_deref() == Some(body.payment_key.as_str()) {
            return view(state, &order.id).await;
        }
        return Err(ApiError::Conflict {
            code: "order_paid",
            detail: "this order was paid by another payment".into(),
        });
    }
    if body.amount != order.amount {
        tracing::warn!(order_id = %order.id, sent = body.amount, expected = order.amount, "a confirm with another amount");
        return Err(ApiError::Unprocessable {
            code: "amount_mismatch",
            detail: format!(
                "the amount is not the order's ({} {})",
                order.amount, order.currency
            ),
        });
    }
    if order.expired(Utc::now()) {
        return Err(ApiError::Conflict {
            code: "order_expired",
            detail: "the order was not paid in time; create another".into(),
        });
    }
    let payment = match confirm(state, secret, &body.payment_key, &order.id, order.amount).await {
        Ok(payment) => payment,
        // Confirmed already (by an earlier try): what Toss has now decides.
        Err(TossError::Refused { code, .. }) if code == "ALREADY_PROCESSED_PAYMENT" => {
            payment(state, secret, &body.payment_key)
                .await
                .map_err(toss_failure)?
        }
        Err(err) => return Err(toss_failure(err)),
    };
    if payment.order_id == order.id && payment.status == "WAITING_FOR_DEPOSIT" {
        // A virtual account: the credits come with the deposit, by Toss's webhook, days later
        // perhaps; the order stays until then (no expiry).
        let kept = state
            .db
            .client
            .update_item()
            .table_name(&state.db.table)
            .key("pk", crate::db::s(crate::keys::order(&order.id)))
            .key("sk", crate::db::s(crate::keys::ORDER))
            .update_expression("SET payment_id = :payment REMOVE expires_at")
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":payment", crate::db::s(&payment.payment_key))
            .expression_attribute_values(":pending", crate::db::s("pending"))
            .send()
            .await;
        // Paid meanwhile (the deposit was quick): nothing to keep.
        crate::db::unless_condition_failed(kept).context("keeping an order for its deposit")?;
        tracing::info!(order_id = %order.id, "a virtual account waits for its deposit");
        return view_as(state, &order.id, StatusCode::ACCEPTED).await;
    }
    if payment.order_id != order.id || payment.status != "DONE" {
        tracing::error!(order_id = %order.id, payment_order = %payment.order_id, status = %payment.status, "Toss confirmed a payment that is not this order's");
        return Err(ApiError::Unprocessable {
            code: "payment_refused",
            detail: "Toss Payments did not complete this order's payment".into(),
        });
    }
    match apply(state, &payment).await? {
        Some(Fulfilled::Credited | Fulfilled::AlreadyPaid) => view(state, &order.id).await,
        _ => Err(ApiError::Unprocessable {
            code: "payment_refused",
            detail: "the payment does not match the order".into(),
        }),
    }
}

/// The order as it is now.
async fn view(state: &State, id: &str) -> Result<Response<Body>, ApiError> {
    view_as(state, id, StatusCode::OK).await
}

async fn view_as(state: &State, id: &str, status: StatusCode) -> Result<Response<Body>, ApiError> {
    let order = orders::load(state, id)
        .await?
        .ok_or(ApiError::NotFound("no such order"))?;
    respond(status, &order.into_view(Utc::now()))
}

fn toss_failure(err: TossError) -> ApiError {
    match err {
        TossError::Refused { status, code } => {
            tracing::warn!(status, code = %code, "Toss refused a confirm");
            ApiError::Unprocessable {
                code: "payment_refused",
                detail: format!("Toss Payments refused the payment ({code})"),
            }
        }
        TossError::Unavailable(err) => {
            tracing::error!(error = format!("{err:#}"), "Toss Payments did not answer");
            ApiError::Unavailable("Toss Payments did not answer; confirm again")
        }
    }
}

/// `POST /v1/webhooks/toss`: Toss's `PAYMENT_STATUS_CHANGED`. Unsigned, so only a hint: the
/// payment is read again from Toss with the secret key, and what Toss says decides.
#[utoipa::path(post, path = "/v1/webhooks/toss", tag = "webhooks",
    request_body(content = Object, description = "Toss's `{eventType, createdAt, data: <Payment>}`", content_type = "application/json"),
    responses((status = 200, description = "applied or ignored"),
        (status = 404, description = "this deployment takes no Toss payments", body = crate::error::Problem),
        (status = 422, description = "no paymentKey in `data`", body = crate::error::Problem),
        (status = 503, description = "Toss could not be asked; Toss sends it again", body = crate::error::Problem)))]
pub async fn receive_toss_webhook(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body: Value = serde_json::from_slice(body_bytes(&req)?)
        .map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    let acknowledged = |result: &str| respond(StatusCode::OK, &json!({"result": result}));
    if body["eventType"] != "PAYMENT_STATUS_CHANGED" {
        return acknowledged("ignored");
    }
    let Some(payment_key) = body["data"]["paymentKey"]
        .as_str()
        .filter(|k| valid_payment_id(k))
    else {
        return Err(ApiError::invalid("data.paymentKey", "must be a paymentKey"));
    };
    let secret = secret(state).await?;
    let payment = match payment(state, secret, payment_key).await {
        Ok(payment) => payment,
        Err(TossError::Refused { status, code }) => {
            tracing::warn!(payment_key, status, code = %code, "a Toss webhook for a payment Toss does not know");
            return acknowledged("ignored");
        }
        Err(TossError::Unavailable(err)) => {
            tracing::error!(
                error = format!("{err:#}"),
                "Toss could not be asked about a webhook"
            );
            return Err(ApiError::Unavailable(
                "Toss Payments could not be asked; send it again",
            ));
        }
    };
    match apply(state, &payment).await? {
        Some(Fulfilled::Credited) => acknowledged("applied"),
        Some(Fulfilled::AlreadyPaid) | None => acknowledged("ok"),
        Some(Fulfilled::Refused(_)) => acknowledged("ignored"),
    }
}
