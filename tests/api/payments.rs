//! Credits bought and given: packages, Toss Payments and Stripe orders against the local fakes
//! (which speak their protocols and sign for real), exactly once whatever arrives twice,
//! refunds that never take the balance below zero, the daily reward, and a ledger that always
//! sums to the balance.

use futures::future::join_all;
use lambent_local::fakes::FakeProviders;
use lambent_local::fakes::payments::{stripe_event, stripe_signature};
use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, assert_ledger_sums, call, ledger, ok_json, problem, wait_until};

async fn start() -> (TestApp, FakeProviders) {
    let fakes = FakeProviders::start().await.expect("fakes start");
    // No starting credits: every credit in these tests was bought, given or earned here.
    let app = TestApp::spawn_with_fakes(&fakes, &[("STARTING_CREDITS", "0")], true).await;
    (app, fakes)
}

async fn balance(app: &TestApp, token: &str) -> i64 {
    app.credits(token).await.0
}

async fn order(app: &TestApp, token: &str, body: Value) -> Value {
    ok_json(
        call(
            app,
            Method::POST,
            "/v1/credits/orders",
            Some(token),
            Some(&body),
        )
        .await,
        201,
    )
    .await
}

async fn get_order(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_json(&format!("/v1/credits/orders/{id}"), token)
        .await
}

async fn confirm(
    app: &TestApp,
    token: &str,
    id: &str,
    key: &str,
    amount: i64,
) -> reqwest::Response {
    call(
        app,
        Method::POST,
        &format!("/v1/credits/orders/{id}/confirm"),
        Some(token),
        Some(&json!({"paymentKey": key, "orderId": id, "amount": amount})),
    )
    .await
}

/// Toss's webhook as Toss sends it (unsigned), claiming `status`.
async fn toss_webhook(app: &TestApp, key: &str, order_id: &str, status: &str, amount: i64) -> u16 {
    call(
        app,
        Method::POST,
        "/v1/webhooks/toss",
        None,
        Some(&json!({"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2026-12-05T10:00:00.000000",
            "data": {"paymentKey": key, "orderId": order_id, "status": status, "totalAmount": amount,
                "balanceAmount": amount, "currency": "KRW"}})),
    )
    .await
    .status()
    .as_u16()
}

/// A Stripe event to our route, signed with `secret` at `t`.
async fn stripe_post(app: &TestApp, event: &Value, secret: &str, t: i64) -> reqwest::Response {
    let body = event.to_string();
    app.client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", stripe_signature(secret, t, &body))
        .body(body)
        .send()
        .await
        .expect("request")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Calls the fake Toss's API as the merchant (an admin's cancel in Toss's dashboard, say).
async fn toss_cancel(fakes: &FakeProviders, key: &str, amount: i64) {
    let secret = fakes.with_payments(|p| p.toss_secret.clone());
    let response = reqwest::Client::new()
        .post(format!(
            "{}/toss/v1/payments/{key}/cancel",
            fakes.base_url()
        ))
        .basic_auth(secret, Some(""))
        .json(&json!({"cancelReason": "고객 요청", "cancelAmount": amount}))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 200);
}

async fn wait_for_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    wait_until(&format!("the order becomes {status}"), || async {
        get_order(app, token, id).await["status"] == status
    })
    .await;
    get_order(app, token, id).await
}

#[tokio::test]
async fn packages_are_listed_per_currency_without_sign_in() {
    let (app, _fakes) = start().await;
    let all = ok_json(
        call(&app, Method::GET, "/v1/credits/packages", None, None).await,
        200,
    )
    .await;
    let items = all["items"].as_array().expect("items");
    assert_eq!(items.len(), 6, "three packages in KRW and USD: {all}");
    let krw = ok_json(
        call(
            &app,
            Method::GET,
            "/v1/credits/packages?currency=krw",
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    let prices: Vec<(String, i64, i64)> = krw["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id").to_owned(),
                p["credits"].as_i64().expect("credits"),
                p["price"].as_i64().expect("price"),
            )
        })
        .collect();
    assert_eq!(
        prices,
        [
            ("basic_100".into(), 100, 10_000),
            ("standard_500".into(), 500, 45_000),
            ("premium_1000".into(), 1000, 80_000)
        ]
    );
    assert_eq!(krw["items"][0]["providers"], json!(["toss", "stripe"]));
}

#[tokio::test]
async fn each_package_bought_through_toss_is_credited_once_with_its_ledger_line() {
    let (app, fakes) = start().await;
    let (token, _) = app.user("hana").await;
    let mut expected = 0;
    for (package, credits, amount) in [
        ("basic_100", 100, 10_000),
        ("standard_500", 500, 45_000),
        ("premium_1000", 1000, 80_000),
    ] {
        let created = order(&app, &token, json!({"package_id": package})).await;
        assert_eq!(
            (
                created["provider"].as_str(),
                created["currency"].as_str(),
                created["amount"].as_i64(),
                created["status"].as_str()
            ),
            (Some("toss"), Some("KRW"), Some(amount), Some("pending")),
            "{created}"
        );
        assert!(
            created["customer_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("ck_"))
        );
        let id = created["id"].as_str().expect("id");
        let key = fakes.toss_authorize(id, amount);
        let paid = ok_json(confirm(&app, &token, id, &key, amount).await, 200).await;
        assert_eq!(paid["status"], "paid", "{paid}");
        expected += credits;
        assert_eq!(balance(&app, &token).await, expected);
        // Toss's own DONE webhook arrives too, and changes nothing.
        wait_until("Toss's webhook is answered", || async {
            fakes
                .webhooks()
                .iter()
                .any(|w| w.body.contains(&key) && w.answered == Some(200))
        })
        .await;
        // The client confirming again (a retry) is answered with the paid order.
        let again = ok_json(confirm(&app, &token, id, &key, amount).await, 200).await;
        assert_eq!(again["status"], "paid");
        assert_eq!(balance(&app, &token).await, expected);
    }
    let purchases = ledger(&app, &token, Some("purchase")).await;
    assert_eq!(purchases.len(), 3);
    assert!(
        purchases
            .iter()
            .all(|l| l["type"] == "purchase" && l["order_id"].is_string())
    );
    assert_eq!(fakes.with_payments(|p| p.toss_confirms), 3);
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn each_package_bought_through_stripe_is_credited_once_however_often_the_event_comes() {
    let (app, fakes) = start().await;
    let (token, _) = app.user("sam").await;
    let secret = fakes.with_payments(|p| p.stripe_webhook_secret.clone());
    let mut expected = 0;
    for (package, credits, cents) in [
        ("basic_100", 100, 999),
        ("standard_500", 500, 3_999),
        ("premium_1000", 1000, 6_999),
    ] {
        let created = order(
            &app,
            &token,
            json!({"package_id": package, "currency": "USD"}),
        )
        .await;
        assert_eq!(created["provider"], "stripe");
        assert_eq!(created["amount"], cents);
        let url = created["checkout_url"].as_str().expect("checkout url");
        let session = url.rsplit('/').next().expect("session id");
        let (event, status) = fakes.stripe_pay(session).await.expect("a session");
        assert_eq!(status, Some(200));
        expected += credits;
        assert_eq!(balance(&app, &token).await, expected);
        // Stripe delivers again, five times at once, re-signed: still once.
        let replays = join_all((0..5).map(|_| stripe_post(&app, &event, &secret, now()))).await;
        assert!(replays.iter().all(|r| r.status() == 200));
        assert_eq!(balance(&app, &token).await, expected);
        let id = created["id"].as_str().expect("id");
        assert_eq!(get_order(&app, &token, id).await["status"], "paid");
    }
    assert_eq!(ledger(&app, &token, Some("purchase")).await.len(), 3);
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn a_confirm_racing_five_webhooks_credits_once() {
    let (app, fakes) = start().await;
    let (token, _) = app.user("rush").await;
    let created = order(&app, &token, json!({"package_id": "standard_500"})).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let key = fakes.toss_authorize(&id, 45_000);
    let webhooks = join_all((0..5).map(|_| toss_webhook(&app, &key, &id, "DONE", 45_000)));
    let (confirmed, answers) = tokio::join!(confirm(&app, &token, &id, &key, 45_000), webhooks);
    assert_eq!(confirmed.status(), 200);
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    // And five more once Toss says DONE.
    let answers = join_all((0..5).map(|_| toss_webhook(&app, &key, &id, "DONE", 45_000))).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    assert_eq!(balance(&app, &token).await, 500);
    assert_eq!(ledger(&app, &token, Some("purchase")).await.len(), 1);
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn forged_stale_and_tampered_events_credit_nothing() {
    let (app, fakes) = start().await;
    let (token, _) = app.user("mallory").await;
    let secret = fakes.with_payments(|p| p.stripe_webhook_secret.clone());
    let created = order(
        &app,
        &token,
        json!({"package_id": "basic_100", "provider": "stripe"}),
    )
    .await;
    let id = created["id"].as_str().expect("id");
    let session = created["checkout_url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("session")
        .to_owned();
    let paid = |amount: i64, currency: &str, session: &str| {
        stripe_event(
            "checkout.session.completed",
            json!({"id": session, "object": "checkout.session", "client_reference_id": id,
                "amount_total": amount, "currency": currency, "payment_status": "paid",
                "payment_intent": "pi_forged"}),
        )
    };
    // Signed with another secret.
    let forged = stripe_post(&app, &paid(999, "usd", &session), "whsec_not_ours", now()).await;
    problem(forged, 400, "invalid_signature").await;
    // Signed right, six minutes ago (a replay).
    let stale = stripe_post(&app, &paid(999, "usd", &session), &secret, now() - 360).await;
    problem(stale, 400, "invalid_signature").await;
    // No signature at all.
    let bare = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .body(paid(999, "usd", &session).to_string())
        .send()
        .await
        .expect("request");
    problem(bare, 400, "invalid_signature").await;
    // Signed right, but for less money, another currency, or another session.
    for event in [
        paid(1, "usd", &session),
        paid(999, "eur", &session),
        paid(999, "usd", "cs_test_someone_elses"),
    ] {
        let answer = stripe_post(&app, &event, &secret, now()).await;
        assert_eq!(answer.status(), 200, "acknowledged, so Stripe stops");
        assert_eq!(
            answer.json::<Value>().await.expect("json")["result"],
            "ignored"
        );
    }
    // An event for an order that does not exist.
    let mut unknown = paid(999, "usd", &session);
    unknown["data"]["object"]["client_reference_id"] = json!(uuid::Uuid::now_v7().to_string());
    assert_eq!(
        stripe_post(&app, &unknown, &secret, now()).await.status(),
        200
    );
    assert_eq!(balance(&app, &token).await, 0);
    assert_eq!(get_order(&app, &token, id).await["status"], "pending");

    // Toss: a webhook claiming DONE for a payment Toss holds unconfirmed changes nothing (the
    // payment is read again from Toss); nor one for a payment Toss does not know.
    let toss_order = order(&app, &token, json!({"package_id": "basic_100"})).await;
    let toss_id = toss_order["id"].as_str().expect("id");
    let key = fakes.toss_authorize(toss_id, 10_000);
    assert_eq!(toss_webhook(&app, &key, toss_id, "DONE", 10_000).await, 200);
    assert_eq!(
        toss_webhook(&app, "tgen_unknown", toss_id, "DONE", 10_000).await,
        200
    );
    assert_eq!(balance(&app, &token).await, 0);
    assert_eq!(get_order(&app, &token, toss_id).await["status"], "pending");
    // A confirm with another amount than the order's: refused before Toss is asked.
    let tampered = confirm(&app, &token, toss_id, &key, 100).await;
    problem(tampered, 422, "amount_mismatch").await;
    assert_eq!(fakes.with_payments(|p| p.toss[&key].status), "IN_PROGRESS");
    // Someone else's order is not there for them.
    let (other, _) = app.user("other").await;
    let theirs = confirm(&app, &other, toss_id, &key, 10_000).await;
    problem(theirs, 404, "not_found").await;
    assert_eq!(balance(&app, &token).await, 0);
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn a_refund_takes_back_what_is_left_and_the_balance_never_goes_below_zero() {
    let (app, fakes) = start().await;
    let (token, _) = app.user("spender").await;
    let created = order(&app, &token, json!({"package_id": "basic_100"})).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let key = fakes.toss_authorize(&id, 10_000);
    ok_json(confirm(&app, &token, &id, &key, 10_000).await, 200).await;
    // Three credits spent on jobs.
    for _ in 0..3 {
        let job = app
            .submit_id(&token, &json!({"kind": "sleep", "input": {"ms": 0}}))
            .await;
        app.wait_for_job(&token, &job, |j| j["status"] == "COMPLETED")
            .await;
    }
    assert_eq!(balance(&app, &token).await, 97);
    // Half refunded at Toss: the half's 50 credits go.
    toss_cancel(&fakes, &key, 5_000).await;
    let half = wait_for_status(&app, &token, &id, "partially_refunded").await;
    assert_eq!(
        (
            half["refunded_amount"].as_i64(),
            half["credits_taken_back"].as_i64(),
            half["unrecovered_credits"].as_i64()
        ),
        (Some(5_000), Some(50), Some(0))
    );
    assert_eq!(balance(&app, &token).await, 47);
    // The rest refunded: 50 more are due, 47 are left; the balance stops at zero.
    toss_cancel(&fakes, &key, 5_000).await;
    let whole = wait_for_status(&app, &token, &id, "refunded").await;
    assert_eq!(
        (
            whole["credits_taken_back"].as_i64(),
            whole["unrecovered_credits"].as_i64()
        ),
        (Some(97), Some(3))
    );
    assert_eq!(balance(&app, &token).await, 0);
    // Toss's webhooks again: nothing more.
    assert_eq!(toss_webhook(&app, &key, &id, "CANCELED", 10_000).await, 200);
    assert_eq!(balance(&app, &token).await, 0);
    let refunds = ledger(&app, &token, Some("purchase_refund")).await;
    let taken: Vec<i64> = refunds
        .iter()
        .map(|l| l["amount"].as_i64().expect("amount"))
        .collect();
    assert_eq!(taken, [-47, -50]);
    assert!(refunds.iter().all(|l| l["order_id"] == id.as_str()));
    assert_ledger_sums(&app, &token).await;

    // Stripe: charge.refunded takes its credits back the same way.
    let created = order(
        &app,
        &token,
        json!({"package_id": "basic_100", "currency": "USD"}),
    )
    .await;
    let stripe_id = created["id"].as_str().expect("id").to_owned();
    let session = created["checkout_url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("session")
        .to_owned();
    fakes.stripe_pay(&session).await.expect("paid");
    assert_eq!(balance(&app, &token).await, 100);
    let stripe_secret = fakes.with_payments(|p| p.stripe_secret.clone());
    let intent = fakes
        .with_payments(|p| p.sessions[&session].payment_intent.clone())
        .expect("intent");
    let refund = reqwest::Client::new()
        .post(format!("{}/stripe/v1/refunds", fakes.base_url()))
        .bearer_auth(stripe_secret)
        .form(&[("payment_intent", intent.as_str())])
        .send()
        .await
        .expect("refund");
    assert_eq!(refund.status(), 200);
    wait_for_status(&app, &token, &stripe_id, "refunded").await;
    assert_eq!(balance(&app, &token).await, 0);
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn twenty_daily_claims_at_once_give_one_reward() {
    let (app, _fakes) = start().await;
    let (token, _) = app.user("daily").await;
    let before = app.get_json("/v1/credits/daily", &token).await;
    assert_eq!(
        (before["credits"].as_i64(), before["available"].as_bool()),
        (Some(10), Some(true))
    );
    let seoul = json!({"utc_offset_minutes": 540});
    let claims = join_all((0..20).map(|_| {
        call(
            &app,
            Method::POST,
            "/v1/credits/daily/claim",
            Some(&token),
            Some(&seoul),
        )
    }))
    .await;
    let mut statuses: Vec<u16> = claims.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert_eq!(balance(&app, &token).await, 10);
    let after = app.get_json("/v1/credits/daily", &token).await;
    assert_eq!(after["available"], false);
    assert_eq!(after["utc_offset_minutes"], 540);
    // Another offset does not bring the next day forward.
    let moved = call(
        &app,
        Method::POST,
        "/v1/credits/daily/claim",
        Some(&token),
        Some(&json!({"utc_offset_minutes": -600})),
    )
    .await;
    problem(moved, 409, "already_claimed").await;
    let bad = call(
        &app,
        Method::POST,
        "/v1/credits/daily/claim",
        Some(&token),
        Some(&json!({"utc_offset_minutes": 9000})),
    )
    .await;
    problem(bad, 422, "validation_failed").await;
    let lines = ledger(&app, &token, Some("daily_reward")).await;
    assert_eq!(lines.len(), 1);
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn the_ledger_is_typed_and_filtered() {
    let (app, _fakes) = start().await;
    let (token, user_id) = app.user("typed").await;
    let admin = app.admin("boss").await;
    let granted = call(
        &app,
        Method::POST,
        "/v1/admin/credits/grants",
        Some(&admin),
        Some(&json!({"user_id": user_id, "amount": 5})),
    )
    .await;
    assert_eq!(granted.status(), 201);
    let job = app
        .submit_id(
            &token,
            &json!({"kind": "sleep", "input": {"ms": 0, "fail": true}}),
        )
        .await;
    app.wait_for_job(&token, &job, |j| j["status"] == "FAILED")
        .await;
    let all = ledger(&app, &token, None).await;
    let types: Vec<&str> = all
        .iter()
        .map(|l| l["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["job_refund", "job_debit", "grant"]);
    assert!(all[..2].iter().all(|l| l["job_id"] == job.as_str()));
    assert_eq!(all[2]["reason"], "grant");
    let refunds = ledger(&app, &token, Some("job_refund,job_debit")).await;
    assert_eq!(refunds.len(), 2);
    assert_eq!(ledger(&app, &token, Some("purchase")).await.len(), 0);
    let unknown = app
        .get_with_token("/v1/credits/transactions?type=bonus", &token)
        .await;
    problem(unknown, 422, "validation_failed").await;
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn admins_list_orders_and_refund_at_the_provider() {
    let (app, fakes) = start().await;
    let (token, user_id) = app.user("buyer").await;
    let admin = app.admin("cashier").await;
    // One order through each provider, and one left pending.
    let toss = order(&app, &token, json!({"package_id": "standard_500"})).await;
    let toss_id = toss["id"].as_str().expect("id").to_owned();
    let key = fakes.toss_authorize(&toss_id, 45_000);
    ok_json(confirm(&app, &token, &toss_id, &key, 45_000).await, 200).await;
    let stripe = order(
        &app,
        &token,
        json!({"package_id": "basic_100", "currency": "USD"}),
    )
    .await;
    let stripe_id = stripe["id"].as_str().expect("id").to_owned();
    let session = stripe["checkout_url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("session")
        .to_owned();
    fakes.stripe_pay(&session).await.expect("paid");
    order(&app, &token, json!({"package_id": "basic_100"})).await;
    assert_eq!(balance(&app, &token).await, 600);

    problem(
        app.get_with_token("/v1/admin/orders", &token).await,
        403,
        "forbidden",
    )
    .await;
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|o| o["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let paid = app.get_json("/v1/admin/orders", &admin).await;
    assert_eq!(ids(&paid), [stripe_id.clone(), toss_id.clone()]);
    let pending = app
        .get_json("/v1/admin/orders?status=pending", &admin)
        .await;
    assert_eq!(ids(&pending).len(), 1);
    let theirs = app
        .get_json(&format!("/v1/admin/orders?user_id={user_id}"), &admin)
        .await;
    assert_eq!(ids(&theirs).len(), 3);

    // A fifth of the Toss order back: 100 credits; at Toss, the payment is partly canceled.
    let refund = |id: String, body: Value| {
        let (app, admin) = (&app, &admin);
        async move {
            call(
                app,
                Method::POST,
                &format!("/v1/admin/orders/{id}/refund"),
                Some(admin),
                Some(&body),
            )
            .await
        }
    };
    let part = ok_json(
        refund(
            toss_id.clone(),
            json!({"amount": 9_000, "reason": "고객 요청"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (part["status"].as_str(), part["credits_taken_back"].as_i64()),
        (Some("partially_refunded"), Some(100))
    );
    assert_eq!(fakes.with_payments(|p| p.toss[&key].balance_amount), 36_000);
    // Too much, then the rest.
    problem(
        refund(toss_id.clone(), json!({"amount": 36_001, "reason": "x"})).await,
        422,
        "validation_failed",
    )
    .await;
    let rest = ok_json(
        refund(toss_id.clone(), json!({"reason": "전액 환불"})).await,
        200,
    )
    .await;
    assert_eq!(rest["status"], "refunded");
    problem(
        refund(toss_id.clone(), json!({"reason": "again"})).await,
        409,
        "order_not_paid",
    )
    .await;
    // Stripe: refunded at Stripe; its charge.refunded webhook then changes nothing more.
    let stripe_refund = ok_json(
        refund(stripe_id.clone(), json!({"reason": "duplicate"})).await,
        200,
    )
    .await;
    assert_eq!(stripe_refund["status"], "refunded");
    wait_until("Stripe's charge.refunded is answered", || async {
        fakes
            .webhooks()
            .iter()
            .any(|w| w.body.contains("charge.refunded") && w.answered == Some(200))
    })
    .await;
    assert_eq!(balance(&app, &token).await, 0);
    let refunds = app
        .get_json("/v1/admin/orders?status=refunded", &admin)
        .await;
    assert_eq!(ids(&refunds).len(), 2);
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn a_virtual_account_is_credited_when_the_deposit_arrives() {
    let (app, fakes) = start().await;
    let (token, _) = app.user("depositor").await;
    let created = order(&app, &token, json!({"package_id": "basic_100"})).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let key = fakes.toss_authorize_virtual_account(&id, 10_000);
    // Confirmed: the account is issued, nothing paid yet.
    let waiting = ok_json(confirm(&app, &token, &id, &key, 10_000).await, 202).await;
    assert_eq!(waiting["status"], "pending");
    assert_eq!(balance(&app, &token).await, 0);
    // Toss's webhook while it waits changes nothing.
    assert_eq!(toss_webhook(&app, &key, &id, "DONE", 10_000).await, 200);
    assert_eq!(balance(&app, &token).await, 0);
    // The deposit: Toss's webhook, read again, pays the order.
    assert_eq!(fakes.toss_deposit(&key).await, Some(200));
    assert_eq!(get_order(&app, &token, &id).await["status"], "paid");
    assert_eq!(balance(&app, &token).await, 100);
    assert_ledger_sums(&app, &token).await;
}
