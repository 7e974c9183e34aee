//! Stripe Checkout: a Checkout Session per order (`mode=payment`, the package's price,
//! `client_reference_id` = the order), fulfilled from the `checkout.session.completed` webhook
//! (and `checkout.session.async_payment_succeeded`); `charge.refunded` takes credits back. Every
//! webhook's `Stripe-Signature` is checked: HMAC-SHA256 over `{t}.{body}` with the endpoint's
//! secret, compared in constant time, at most 300 s old.

use anyhow::Context as _;
use chrono::Utc;
use hmac::{Hmac, Mac as _};
use lambda_http::{Body, Request, Response, http::StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use crate::commerce::orders::{self, Fulfilled, Paid, Provider, Stored};
use crate::commerce::valid_payment_id;
use crate::error::ApiError;
use crate::http::{body_bytes, json as respond};
use crate::state::State;

/// How old a signed webhook may be.
pub const TOLERANCE_SECS: i64 = 300;

/// A Checkout Session Stripe made for an order.
pub(crate) struct Session {
    pub id: String,
    pub url: String,
}

fn fill(template: Option<&str>, order_id: &str, fallback: &str) -> String {
    template.unwrap_or(fallback).replace("{ORDER_ID}", order_id)
}

/// Creates the order's Checkout Session (`Idempotency-Key`: the order).
pub(crate) async fn create_session(state: &State, order: &Stored) -> Result<Session, ApiError> {
    let key = crate::commerce::keys(state)
        .await?
        .stripe()
        .ok_or(ApiError::NotFound("Stripe is not configured here"))?;
    let payments = &state.config.payments;
    // Stripe's shortest session: 30 minutes; a minute more, so the order expires first.
    let expires_at = (Utc::now() + chrono::Duration::minutes(31)).timestamp();
    let form = [
        ("mode", "payment".to_owned()),
        ("client_reference_id", order.id.clone()),
        ("metadata[order_id]", order.id.clone()),
        ("metadata[package_id]", order.package_id.clone()),
        ("line_items[0][quantity]", "1".to_owned()),
        (
            "line_items[0][price_data][currency]",
            order.currency.to_ascii_lowercase(),
        ),
        (
            "line_items[0][price_data][unit_amount]",
            order.amount.to_string(),
        ),
        (
            "line_items[0][price_data][product_data][name]",
            order.order_name.clone(),
        ),
        (
            "success_url",
            fill(
                payments.checkout_success_url.as_deref(),
                &order.id,
                "https://example.com/checkout/success?order_id={ORDER_ID}",
            ),
        ),
        (
            "cancel_url",
            fill(
                payments.checkout_cancel_url.as_deref(),
                &order.id,
                "https://example.com/checkout/cancel?order_id={ORDER_ID}",
            ),
        ),
        ("expires_at", expires_at.to_string()),
    ];
    let unavailable = |err: anyhow::Error| {
        tracing::error!(error = format!("{err:#}"), order_id = %order.id, "Stripe made no checkout session");
        ApiError::Unavailable("Stripe did not answer; try again")
    };
    let response = state
        .http
        .api
        .post(format!("{}/v1/checkout/sessions", payments.stripe_api_url))
        .bearer_auth(key.expose_secret())
        .header("idempotency-key", format!("checkout-{}", order.id))
        .form(&form)
        .send()
        .await
        .context("calling Stripe")
        .map_err(unavailable)?;
    let status = response.status().as_u16();
    let text = crate::http::read_limited(response, 256 * 1024)
        .await
        .context("reading Stripe's answer")
        .map_err(unavailable)?;
    let body: Value = serde_json::from_slice(&text).unwrap_or_default();
    if !(200..300).contains(&status) {
        return Err(unavailable(anyhow::anyhow!(
            "Stripe answered {status}: {}",
            body["error"]["code"].as_str().unwrap_or("unknown")
        )));
    }
    match (body["id"].as_str(), body["url"].as_str()) {
        (Some(id), Some(url)) => Ok(Session {
            id: id.to_owned(),
            url: url.to_owned(),
        }),
        _ => Err(unavailable(anyhow::anyhow!("a session without id or url"))),
    }
}

/// Why a webhook's signature is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header, or one without t= and v1=")]
    Malformed,
    #[error("the timestamp is more than {TOLERANCE_SECS} s from now")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// Checks a `Stripe-Signature` header (`t=<unix>,v1=<hex>[,v1=<hex>…]`) over the raw body: any
/// `v1` equal (in constant time) to HMAC-SHA256(secret, "{t}.{body}"), and `t` within the
/// tolerance of `now`.
pub fn verify(header: &str, body: &[u8], secret: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(SignatureError::Malformed);
    };
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let mut matched = false;
    for signature in &signatures {
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
            return Err(SignatureError::Mismatch);
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // verify_slice compares in constant time.
        matched |= mac.verify_slice(signature).is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// `POST /v1/webhooks/stripe`: Stripe's events, signed. Pays orders on
/// `checkout.session.completed` (when paid) and `checkout.session.async_payment_succeeded`;
/// takes credits back on `charge.refunded`. Others are acknowledged and ignored; an event for an
/// unknown order, another amount or currency changes nothing and is logged.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "webhooks",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256 of {t}.{body}>")),
    responses((status = 200, description = "applied or ignored"), (status = 400, description = "invalid_signature or a body that is not an event", body = crate::error::Problem),
        (status = 413, description = "payload_too_large", body = crate::error::Problem),
        (status = 404, description = "this deployment takes no Stripe payments", body = crate::error::Problem)))]
pub async fn receive_stripe_webhook(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let body = body_bytes(&req)?;
    let secret: &SecretString = crate::commerce::keys(state)
        .await?
        .stripe_webhook()
        .ok_or(ApiError::NotFound("Stripe is not configured here"))?;
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(err) = verify(
        header,
        body,
        secret.expose_secret().as_bytes(),
        Utc::now().timestamp(),
    ) {
        tracing::warn!(error = %err, "a Stripe webhook refused");
        return Err(ApiError::BadRequest {
            code: "invalid_signature",
            detail: err.to_string(),
        });
    }
    let event: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    let object = &event["data"]["object"];
    let acknowledged = |result: &str| respond(StatusCode::OK, &json!({"result": result}));
    let kind = event["type"].as_str().unwrap_or_default();
    match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            if object["payment_status"] != "paid" {
                // Delayed methods: async_payment_succeeded follows.
                return acknowledged("ignored");
            }
            let (Some(order_id), Some(session_id), Some(payment_id), Some(amount), Some(currency)) = (
                object["client_reference_id"].as_str(),
                object["id"].as_str(),
                object["payment_intent"]
                    .as_str()
                    .filter(|p| valid_payment_id(p)),
                object["amount_total"].as_i64(),
                object["currency"].as_str(),
            ) else {
                tracing::warn!(event_id = ?event["id"], "a paid checkout session without its order, payment or amount");
                return acknowledged("ignored");
            };
            let paid = Paid {
                provider: Provider::Stripe,
                payment_id,
                amount,
                currency,
                session_id: Some(session_id),
            };
            match orders::fulfil(state, order_id, &paid).await? {
                Fulfilled::Credited => acknowledged("applied"),
                Fulfilled::AlreadyPaid => acknowledged("ok"),
                Fulfilled::Refused(_) => acknowledged("ignored"),
            }
        }
        "charge.refunded" => {
            let (Some(payment_id), Some(refunded)) = (
                object["payment_intent"]
                    .as_str()
                    .filter(|p| valid_payment_id(p)),
                object["amount_refunded"].as_i64(),
            ) else {
                return acknowledged("ignored");
            };
            let Some(order_id) = orders::paid_by(state, Provider::Stripe, payment_id).await? else {
                tracing::warn!(payment_id, "a refund of a payment that paid no order here");
                return acknowledged("ignored");
            };
            orders::take_back(state, &order_id, Provider::Stripe, refunded).await?;
            acknowledged("applied")
        }
        _ => acknowledged("ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_signature_is_checked_over_the_timestamp_and_body() {
        let secret = b"whsec_test";
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let good = sign(secret, now, body);
        assert_eq!(
            verify(&format!("t={now},v1={good}"), body, secret, now),
            Ok(())
        );
        // Any of several v1 signatures (a rolled secret signs with both).
        assert_eq!(
            verify(
                &format!("t={now},v1=00ff,v1={good},v0=abc"),
                body,
                secret,
                now + 10
            ),
            Ok(())
        );
        assert_eq!(
            verify(&format!("t={now},v1={good}"), b"{}", secret, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&format!("t={now},v1={good}"), body, b"whsec_other", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&format!("t={now},v1={good}"), body, secret, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify("v1=abcd", body, secret, now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("", body, secret, now),
            Err(SignatureError::Malformed)
        );
    }
}
