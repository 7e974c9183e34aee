//! Toss Payments and Stripe, as Lambent's adapters meet them.
//!
//! Toss (`/toss`): the payment window (`GET /toss/window?orderId=&amount=`: what the success
//! redirect carries, a payment authorized and waiting for its confirm), `POST
//! /v1/payments/confirm` (Basic auth with the secret key, `Idempotency-Key` honoured),
//! `GET /v1/payments/{paymentKey}`, `POST /v1/payments/{paymentKey}/cancel`; each change of
//! status is announced by an unsigned `PAYMENT_STATUS_CHANGED` webhook, as Toss does.
//!
//! Stripe (`/stripe`): `POST /v1/checkout/sessions` (form-encoded, Bearer secret key), the buyer
//! paying on the session's page (`POST /stripe/pay/{session}`), `POST /v1/refunds`; events are
//! signed for real (`Stripe-Signature: t=…,v1=HMAC-SHA256(whsec, "{t}.{body}")`).

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};

/// A Toss payment.
#[derive(Clone, Debug)]
pub struct TossPayment {
    pub payment_key: String,
    pub order_id: String,
    pub total_amount: i64,
    pub balance_amount: i64,
    pub status: &'static str,
    cancels: Vec<Value>,
    /// Paid into a virtual account: confirmed, it waits for the deposit.
    pub virtual_account: bool,
}

impl TossPayment {
    fn json(&self) -> Value {
        json!({
            "mId": "tvivarepublica",
            "version": "2022-11-16",
            "paymentKey": self.payment_key,
            "orderId": self.order_id,
            "orderName": "credits",
            "status": self.status,
            "method": if self.virtual_account { "가상계좌" } else { "카드" },
            "currency": "KRW",
            "totalAmount": self.total_amount,
            "balanceAmount": self.balance_amount,
            "cancels": if self.cancels.is_empty() { Value::Null } else { Value::from(self.cancels.clone()) },
        })
    }
}

/// A Stripe Checkout Session and what became of it.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub client_reference_id: String,
    pub amount_total: i64,
    pub currency: String,
    pub payment_intent: Option<String>,
    pub amount_refunded: i64,
}

impl Session {
    fn json(&self, base: &str) -> Value {
        json!({
            "id": self.id,
            "object": "checkout.session",
            "mode": "payment",
            "client_reference_id": self.client_reference_id,
            "amount_total": self.amount_total,
            "currency": self.currency,
            "payment_intent": self.payment_intent,
            "payment_status": if self.payment_intent.is_some() { "paid" } else { "unpaid" },
            "status": if self.payment_intent.is_some() { "complete" } else { "open" },
            "url": format!("{base}/stripe/pay/{}", self.id),
        })
    }
}

/// The fake Toss's and Stripe's state.
#[derive(Default)]
pub struct Payments {
    pub toss_secret: String,
    pub stripe_secret: String,
    pub stripe_webhook_secret: String,
    /// Where each sends its webhooks (Lambent's routes).
    pub toss_webhook_url: Option<String>,
    pub stripe_webhook_url: Option<String>,
    pub toss: HashMap<String, TossPayment>,
    toss_idempotent: HashMap<String, (u16, Value)>,
    pub sessions: HashMap<String, Session>,
    stripe_idempotent: HashMap<String, Value>,
    /// Confirms Toss answered, in order.
    pub toss_confirms: usize,
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`.
pub fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A Stripe event around `object`.
pub fn stripe_event(kind: &str, object: Value) -> Value {
    json!({
        "id": random_id("evt_"),
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": chrono::Utc::now().timestamp(),
        "type": kind,
        "livemode": false,
        "data": {"object": object},
    })
}

/// A message a fake sends to Lambent: `(url, headers, body)`.
pub type Outgoing = (String, Vec<(String, String)>, String);

impl Payments {
    fn toss_webhook(&self, payment: &TossPayment) -> Option<Outgoing> {
        let url = self.toss_webhook_url.clone()?;
        let body = json!({
            "eventType": "PAYMENT_STATUS_CHANGED",
            "createdAt": chrono::Utc::now().to_rfc3339(),
            "data": payment.json(),
        });
        Some((url, Vec::new(), body.to_string()))
    }

    /// A Stripe event, signed now with the endpoint's secret.
    pub fn stripe_webhook(&self, event: &Value) -> Option<Outgoing> {
        let url = self.stripe_webhook_url.clone()?;
        let body = event.to_string();
        let signature = stripe_signature(
            &self.stripe_webhook_secret,
            chrono::Utc::now().timestamp(),
            &body,
        );
        Some((url, vec![("stripe-signature".into(), signature)], body))
    }

    /// The payment window: the buyer paid; Toss holds the payment for the merchant's confirm.
    pub fn toss_authorize(&mut self, order_id: &str, amount: i64) -> TossPayment {
        let payment = TossPayment {
            payment_key: random_id("tgen_"),
            order_id: order_id.to_owned(),
            total_amount: amount,
            balance_amount: amount,
            status: "IN_PROGRESS",
            cancels: Vec::new(),
            virtual_account: false,
        };
        self.toss
            .insert(payment.payment_key.clone(), payment.clone());
        payment
    }

    /// The payment window with a virtual account: confirmed, the payment waits for the deposit.
    pub fn toss_authorize_virtual_account(&mut self, order_id: &str, amount: i64) -> TossPayment {
        let mut payment = self.toss_authorize(order_id, amount);
        payment.virtual_account = true;
        self.toss
            .insert(payment.payment_key.clone(), payment.clone());
        payment
    }

    /// The buyer's deposit into the virtual account: DONE, announced by webhook.
    pub fn toss_deposit(&mut self, payment_key: &str) -> Option<Outgoing> {
        let payment = self.toss.get_mut(payment_key)?;
        if payment.status != "WAITING_FOR_DEPOSIT" {
            return None;
        }
        payment.status = "DONE";
        let payment = payment.clone();
        self.toss_webhook(&payment)
    }

    /// Toss's API: `(status, body, webhook to send)`.
    pub fn toss_api(
        &mut self,
        method: &str,
        rest: &str,
        authorization: &str,
        idempotency_key: &str,
        body: &[u8],
    ) -> (u16, Value, Option<Outgoing>) {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", self.toss_secret))
        );
        if self.toss_secret.is_empty() || authorization != expected {
            return (
                401,
                json!({"code": "UNAUTHORIZED_KEY", "message": "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다."}),
                None,
            );
        }
        if method == "POST"
            && !idempotency_key.is_empty()
            && let Some((status, answer)) = self.toss_idempotent.get(idempotency_key)
        {
            return (*status, answer.clone(), None);
        }
        let asked: Value = serde_json::from_slice(body).unwrap_or_default();
        let segments: Vec<&str> = rest.split('/').collect();
        let (status, answer, webhook) = match (method, segments.as_slice()) {
            ("POST", ["v1", "payments", "confirm"]) => self.toss_confirm(&asked),
            ("GET", ["v1", "payments", key]) => match self.toss.get(*key) {
                Some(payment) => (200, payment.json(), None),
                None => not_found_payment(),
            },
            ("POST", ["v1", "payments", key, "cancel"]) => self.toss_cancel(key, &asked),
            _ => (
                404,
                json!({"code": "NOT_FOUND", "message": "no such API"}),
                None,
            ),
        };
        if method == "POST" && !idempotency_key.is_empty() {
            self.toss_idempotent
                .insert(idempotency_key.to_owned(), (status, answer.clone()));
        }
        (status, answer, webhook)
    }

    fn toss_confirm(&mut self, asked: &Value) -> (u16, Value, Option<Outgoing>) {
        let key = asked["paymentKey"].as_str().unwrap_or_default();
        let Some(payment) = self.toss.get_mut(key) else {
            return not_found_payment();
        };
        if payment.status != "IN_PROGRESS" {
            return (
                400,
                json!({"code": "ALREADY_PROCESSED_PAYMENT", "message": "이미 처리된 결제 입니다."}),
                None,
            );
        }
        if asked["orderId"].as_str() != Some(payment.order_id.as_str())
            || asked["amount"].as_i64() != Some(payment.total_amount)
        {
            return (
                400,
                json!({"code": "INVALID_REQUEST", "message": "잘못된 요청입니다."}),
                None,
            );
        }
        payment.status = if payment.virtual_account {
            "WAITING_FOR_DEPOSIT"
        } else {
            "DONE"
        };
        let payment = payment.clone();
        self.toss_confirms += 1;
        let webhook = self.toss_webhook(&payment);
        (200, payment.json(), webhook)
    }

    fn toss_cancel(&mut self, key: &str, asked: &Value) -> (u16, Value, Option<Outgoing>) {
        let Some(payment) = self.toss.get_mut(key) else {
            return not_found_payment();
        };
        let amount = asked["cancelAmount"]
            .as_i64()
            .unwrap_or(payment.balance_amount);
        if !matches!(payment.status, "DONE" | "PARTIAL_CANCELED")
            || amount <= 0
            || amount > payment.balance_amount
        {
            return (
                400,
                json!({"code": "NOT_CANCELABLE_AMOUNT", "message": "취소 할 수 없는 금액 입니다."}),
                None,
            );
        }
        payment.balance_amount -= amount;
        payment.status = if payment.balance_amount == 0 {
            "CANCELED"
        } else {
            "PARTIAL_CANCELED"
        };
        payment.cancels.push(json!({
            "transactionKey": random_id("txn_"),
            "cancelReason": asked["cancelReason"],
            "cancelAmount": amount,
            "canceledAt": chrono::Utc::now().to_rfc3339(),
        }));
        let payment = payment.clone();
        let webhook = self.toss_webhook(&payment);
        (200, payment.json(), webhook)
    }

    /// Stripe's API: `(status, body, webhook to send)`.
    pub fn stripe_api(
        &mut self,
        base: &str,
        method: &str,
        rest: &str,
        authorization: &str,
        idempotency_key: &str,
        body: &[u8],
    ) -> (u16, Value, Option<Outgoing>) {
        if self.stripe_secret.is_empty()
            || authorization != format!("Bearer {}", self.stripe_secret)
        {
            return (
                401,
                json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}),
                None,
            );
        }
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        match (method, rest) {
            ("POST", "v1/checkout/sessions") => {
                if let Some(answer) = self.stripe_idempotent.get(idempotency_key) {
                    return (200, answer.clone(), None);
                }
                let field = |name: &str| form.get(name).cloned().unwrap_or_default();
                let amount = field("line_items[0][price_data][unit_amount]")
                    .parse::<i64>()
                    .unwrap_or(0)
                    * field("line_items[0][quantity]").parse::<i64>().unwrap_or(1);
                if field("mode") != "payment" || amount <= 0 || field("success_url").is_empty() {
                    return (
                        400,
                        json!({"error": {"type": "invalid_request_error", "message": "Missing required param"}}),
                        None,
                    );
                }
                let session = Session {
                    id: random_id("cs_test_"),
                    client_reference_id: field("client_reference_id"),
                    amount_total: amount,
                    currency: field("line_items[0][price_data][currency]"),
                    payment_intent: None,
                    amount_refunded: 0,
                };
                let answer = session.json(base);
                self.sessions.insert(session.id.clone(), session);
                if !idempotency_key.is_empty() {
                    self.stripe_idempotent
                        .insert(idempotency_key.to_owned(), answer.clone());
                }
                (200, answer, None)
            }
            ("POST", "v1/refunds") => {
                let intent = form.get("payment_intent").cloned().unwrap_or_default();
                let Some(session) = self
                    .sessions
                    .values_mut()
                    .find(|s| s.payment_intent.as_deref() == Some(intent.as_str()))
                else {
                    return (
                        404,
                        json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}}),
                        None,
                    );
                };
                let left = session.amount_total - session.amount_refunded;
                let amount = form
                    .get("amount")
                    .and_then(|a| a.parse::<i64>().ok())
                    .unwrap_or(left);
                if amount <= 0 || amount > left {
                    return (
                        400,
                        json!({"error": {"type": "invalid_request_error", "code": "charge_already_refunded"}}),
                        None,
                    );
                }
                session.amount_refunded += amount;
                let session = session.clone();
                let event = stripe_event("charge.refunded", charge(&session));
                let webhook = self.stripe_webhook(&event);
                (
                    200,
                    json!({"id": random_id("re_"), "object": "refund", "amount": amount, "payment_intent": intent, "status": "succeeded"}),
                    webhook,
                )
            }
            _ => (
                404,
                json!({"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}),
                None,
            ),
        }
    }

    /// The buyer pays a session: its `checkout.session.completed` event, signed.
    pub fn stripe_pay(
        &mut self,
        base: &str,
        session_id: &str,
    ) -> Option<(Value, Option<Outgoing>)> {
        let session = self.sessions.get_mut(session_id)?;
        if session.payment_intent.is_none() {
            session.payment_intent = Some(random_id("pi_"));
        }
        let object = session.json(base);
        let event = stripe_event("checkout.session.completed", object);
        let webhook = self.stripe_webhook(&event);
        Some((event, webhook))
    }
}

fn not_found_payment() -> (u16, Value, Option<Outgoing>) {
    (
        404,
        json!({"code": "NOT_FOUND_PAYMENT", "message": "존재하지 않는 결제 정보 입니다."}),
        None,
    )
}

/// A session's charge, as `charge.refunded` carries it.
pub fn charge(session: &Session) -> Value {
    json!({
        "id": format!("ch_{}", session.payment_intent.as_deref().unwrap_or_default().trim_start_matches("pi_")),
        "object": "charge",
        "amount": session.amount_total,
        "amount_refunded": session.amount_refunded,
        "currency": session.currency,
        "payment_intent": session.payment_intent,
        "refunded": session.amount_refunded == session.amount_total,
    })
}
