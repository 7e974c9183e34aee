//! The style marketplace: an artist publishes a trained style with a price, anyone finds it
//! without signing in and generates with it; the user pays the base cost plus the price at
//! admission, the artist earns the price less the platform fee when the job completes (nothing
//! when it fails), exactly, however many run at once; earned credits are paid out by an admin.

use futures::future::join_all;
use lambent_local::fakes::{FakeProviders, output_png};
use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{
    TestApp, assert_ledger_sums, call, finished, ok_json, problem, wait_until, wait_within,
};

/// Trains a style for `token` on the fake AI server; its id once COMPLETED.
async fn trained_style(app: &TestApp, token: &str, name: &str) -> String {
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(app.upload(token, output_png(), "image/png").await);
    }
    let submitted = ok_json(
        call(
            app,
            Method::POST,
            "/v1/styles",
            Some(token),
            Some(&json!({"name": name, "upload_keys": keys, "trigger_word": "inkw"})),
        )
        .await,
        202,
    )
    .await;
    let id = submitted["id"].as_str().expect("id").to_owned();
    app.wait_for_job(token, &id, |j| j["status"] == "COMPLETED")
        .await;
    id
}

fn generation(style_id: Option<&str>) -> Value {
    let mut input = json!({"provider": "fal", "model": "fal-ai/flux-lora", "task": "text_to_image", "prompt": "inkw harbour"});
    if let Some(style) = style_id {
        input["style_id"] = json!(style);
    }
    json!({"kind": "generate", "input": input})
}

async fn ask_payout(app: &TestApp, token: &str, amount: i64) -> reqwest::Response {
    call(
        app,
        Method::POST,
        "/v1/payouts",
        Some(token),
        Some(&json!({ "amount": amount })),
    )
    .await
}

async fn patch_style(app: &TestApp, token: &str, style: &str, body: Value) -> reqwest::Response {
    call(
        app,
        Method::PATCH,
        &format!("/v1/styles/{style}"),
        Some(token),
        Some(&body),
    )
    .await
}

async fn balance(app: &TestApp, token: &str) -> i64 {
    app.credits(token).await.0
}

/// An artist with a published style of `price`: `(app, fakes, artist token, style id)`.
async fn published(price: i64) -> (TestApp, FakeProviders, String, String) {
    let (app, fakes) = crate::generation::start(&[("REGISTER_RATE_PER_MINUTE", "100")], true).await;
    let (artist, _) = app.user("mina").await;
    let style = trained_style(&app, &artist, "Ink wash").await;
    let patch = json!({"price": price, "public": true, "tags": ["Ink", "korean"], "description": "soft ink on paper"});
    // Publishing needs an artist profile.
    problem(
        call(
            &app,
            Method::PATCH,
            &format!("/v1/styles/{style}"),
            Some(&artist),
            Some(&patch),
        )
        .await,
        409,
        "not_an_artist",
    )
    .await;
    let profile = ok_json(
        call(&app, Method::POST, "/v1/users/me/artist", Some(&artist),
            Some(&json!({"display_name": "Mina Ink", "payout_details": {"bank": "KB", "account": "123-45-6789"}}))).await,
        201,
    )
    .await;
    assert_eq!(profile["payout_details_on_file"], true);
    assert!(
        profile.get("payout_details").is_none(),
        "never shown to the artist again"
    );
    let listed = ok_json(
        call(
            &app,
            Method::PATCH,
            &format!("/v1/styles/{style}"),
            Some(&artist),
            Some(&patch),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (listed["public"].as_bool(), listed["price"].as_i64()),
        (Some(true), Some(price))
    );
    assert_eq!(listed["tags"], json!(["ink", "korean"]));
    assert_eq!(listed["name"], "Ink wash");
    assert_eq!(listed["artist"]["display_name"], "Mina Ink");
    (app, fakes, artist, style)
}

#[tokio::test]
async fn a_priced_style_costs_its_price_and_pays_its_artist_only_when_the_job_completes() {
    let (app, fakes, artist, style) = published(20).await;
    // Found without signing in, by tag and by popularity.
    for query in [
        "",
        "?tags=ink",
        "?tags=ink,korean&sort=popular",
        "?sort=recent",
    ] {
        let page = ok_json(
            call(&app, Method::GET, &format!("/v1/styles{query}"), None, None).await,
            200,
        )
        .await;
        assert_eq!(page["items"][0]["id"], style.as_str(), "{query}: {page}");
    }
    let none = ok_json(
        call(&app, Method::GET, "/v1/styles?tags=oil", None, None).await,
        200,
    )
    .await;
    assert!(none["items"].as_array().expect("items").is_empty());
    problem(
        call(&app, Method::GET, "/v1/styles?sort=best", None, None).await,
        422,
        "validation_failed",
    )
    .await;

    let (user, _) = app.user("jun").await;
    // Found by search too, by its description and tags.
    let found = |q: &'static str| {
        let (app, user) = (&app, &user);
        async move {
            let page = app
                .get_json(&format!("/v1/search/styles?q={q}"), user)
                .await;
            page["items"].as_array().map_or(0, Vec::len)
        }
    };
    wait_within("search finds the published style", 180, || async {
        found("paper").await == 1 && found("korean").await == 1
    })
    .await;
    let plain = app.submit_id(&user, &generation(None)).await;
    let base = finished(&app, &user, &plain).await["cost"]
        .as_i64()
        .expect("cost");
    let artist_before = balance(&app, &artist).await;
    let user_before = balance(&app, &user).await;
    let id = app.submit_id(&user, &generation(Some(&style))).await;
    let job = finished(&app, &user, &id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(
        job["cost"],
        base + 20,
        "the base cost plus the style's price"
    );
    assert_eq!(balance(&app, &user).await, user_before - base - 20);
    // 20 less the platform's 30 %.
    assert_eq!(balance(&app, &artist).await, artist_before + 14);
    let earnings = app
        .get_json("/v1/credits/transactions?type=earning", &artist)
        .await;
    assert_eq!(earnings["items"][0]["amount"], 14);
    assert_eq!(earnings["items"][0]["style_id"], style.as_str());
    assert_eq!(earnings["items"][0]["job_id"], id.as_str());
    let input = fakes
        .request_input(job["provider"]["request_id"].as_str().expect("request"))
        .expect("input");
    assert!(
        input["loras"][0]["path"]
            .as_str()
            .is_some_and(|p| p.contains(&style)),
        "{input}"
    );

    // A failed generation: refunded in full, and the artist earns nothing.
    fakes.configure(|b| b.fail_with = Some("out of memory".into()));
    let failed = app.submit_id(&user, &generation(Some(&style))).await;
    assert_eq!(finished(&app, &user, &failed).await["status"], "FAILED");
    fakes.configure(|b| b.fail_with = None);
    assert_eq!(balance(&app, &user).await, user_before - base - 20);
    assert_eq!(balance(&app, &artist).await, artist_before + 14);
    wait_until("the use is counted", || async {
        call(&app, Method::GET, "/v1/styles?sort=popular", None, None)
            .await
            .json::<Value>()
            .await
            .expect("json")["items"][0]["uses"]
            == 1
    })
    .await;

    // Unpublished: out of the marketplace, no new generations by others; the artist keeps using it.
    ok_json(
        patch_style(&app, &artist, &style, json!({"public": false})).await,
        200,
    )
    .await;
    let page = ok_json(call(&app, Method::GET, "/v1/styles", None, None).await, 200).await;
    assert!(
        page["items"].as_array().expect("items").is_empty(),
        "{page}"
    );
    problem(
        app.submit(&user, &generation(Some(&style))).await,
        404,
        "not_found",
    )
    .await;
    let own = app.submit_id(&artist, &generation(Some(&style))).await;
    let own = finished(&app, &artist, &own).await;
    assert_eq!(own["status"], "COMPLETED", "{own}");
    assert_eq!(own["cost"], base, "an artist's own style is free to them");
    // Used by others: not deleted; the listing shows on the artist's styles.
    problem(
        call(
            &app,
            Method::DELETE,
            &format!("/v1/styles/{style}"),
            Some(&artist),
            None,
        )
        .await,
        409,
        "style_in_use",
    )
    .await;
    let mine = app.get_json("/v1/styles/me", &artist).await;
    assert_eq!(mine["items"][0]["listing"]["uses"], 1);
    // Someone else's style is not theirs to change or delete.
    problem(
        patch_style(&app, &user, &style, json!({"public": true})).await,
        404,
        "not_found",
    )
    .await;
    problem(
        call(
            &app,
            Method::DELETE,
            &format!("/v1/styles/{style}"),
            Some(&user),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_ledger_sums(&app, &user).await;
    assert_ledger_sums(&app, &artist).await;
}

#[tokio::test]
async fn twenty_generations_at_once_with_one_style_earn_exactly() {
    let (app, _fakes, artist, style) = published(10).await;
    let artist_before = balance(&app, &artist).await;
    // Five users, four jobs each (the cap), all at once.
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(app.user(&format!("fan{i}")).await.0);
    }
    let submissions = join_all(users.iter().flat_map(|token| {
        (0..4).map(|_| async {
            (
                token.clone(),
                app.submit_id(token, &generation(Some(&style))).await,
            )
        })
    }))
    .await;
    let jobs = join_all(
        submissions
            .iter()
            .map(|(token, id)| finished(&app, token, id)),
    )
    .await;
    assert!(jobs.iter().all(|j| j["status"] == "COMPLETED"), "{jobs:?}");
    // 10 less 30 %: 7 each.
    assert_eq!(balance(&app, &artist).await, artist_before + 20 * 7);
    let artist_view = app.get_json("/v1/users/me/artist", &artist).await;
    assert_eq!(
        (
            artist_view["earned_credits"].as_i64(),
            artist_view["payable_credits"].as_i64()
        ),
        (Some(140), Some(140))
    );
    wait_until("every use is counted", || async {
        app.get_json("/v1/styles/me", &artist).await["items"][0]["listing"]["uses"] == 20
    })
    .await;
    for token in &users {
        assert_ledger_sums(&app, token).await;
    }
    assert_ledger_sums(&app, &artist).await;
}

#[tokio::test]
async fn earned_credits_are_paid_out_once_by_an_admin_and_a_rejection_gives_them_back() {
    let (app, _fakes, artist, style) = published(50).await;
    let (fan, _) = app.user("fan").await;
    problem(ask_payout(&app, &fan, 1).await, 404, "not_found").await;
    let id = app.submit_id(&fan, &generation(Some(&style))).await;
    assert_eq!(finished(&app, &fan, &id).await["status"], "COMPLETED");
    // 35 earned; the artist's own credits (left from the training) are not payable.
    let before = balance(&app, &artist).await;
    problem(
        ask_payout(&app, &artist, 36).await,
        409,
        "not_enough_earnings",
    )
    .await;
    let payout = ok_json(ask_payout(&app, &artist, 20).await, 201).await;
    assert_eq!(payout["status"], "requested");
    assert_eq!(balance(&app, &artist).await, before - 20);
    let rejected = ok_json(ask_payout(&app, &artist, 15).await, 201).await;
    problem(
        ask_payout(&app, &artist, 1).await,
        409,
        "not_enough_earnings",
    )
    .await;

    // The admin sees the requests with the payout details, and resolves each once.
    let admin = app.admin("boss").await;
    problem(
        call(&app, Method::GET, "/v1/admin/payouts", Some(&artist), None).await,
        403,
        "forbidden",
    )
    .await;
    let requested = ok_json(
        call(&app, Method::GET, "/v1/admin/payouts", Some(&admin), None).await,
        200,
    )
    .await;
    assert_eq!(requested["items"].as_array().expect("items").len(), 2);
    assert_eq!(requested["items"][0]["payout_details"]["bank"], "KB");
    let paid_path = format!(
        "/v1/admin/payouts/{}/resolve",
        payout["id"].as_str().expect("id")
    );
    let paid = json!({"status": "paid", "note": "wire 77"});
    let resolves =
        join_all((0..5).map(|_| call(&app, Method::POST, &paid_path, Some(&admin), Some(&paid))))
            .await;
    let statuses: Vec<u16> = resolves.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let reject_path = format!(
        "/v1/admin/payouts/{}/resolve",
        rejected["id"].as_str().expect("id")
    );
    ok_json(
        call(
            &app,
            Method::POST,
            &reject_path,
            Some(&admin),
            Some(&json!({"status": "rejected", "note": "account closed"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(balance(&app, &artist).await, before - 20);
    let mine = app
        .get_json(
            &format!("/v1/payouts/{}", payout["id"].as_str().expect("id")),
            &artist,
        )
        .await;
    assert_eq!(
        (mine["status"].as_str(), mine["note"].as_str()),
        (Some("paid"), Some("wire 77"))
    );
    assert!(mine["payout_details"].is_null());
    problem(
        app.get_with_token(
            &format!("/v1/payouts/{}", payout["id"].as_str().expect("id")),
            &fan,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let view = app.get_json("/v1/users/me/artist", &artist).await;
    assert_eq!(
        (
            view["earned_credits"].as_i64(),
            view["payable_credits"].as_i64()
        ),
        (Some(35), Some(15))
    );
    let payouts = app
        .get_json("/v1/credits/transactions?type=payout", &artist)
        .await;
    let amounts: Vec<i64> = payouts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| l["amount"].as_i64().expect("amount"))
        .collect();
    assert_eq!(amounts, [15, -15, -20]);
    assert_ledger_sums(&app, &artist).await;
}

#[tokio::test]
async fn style_names_are_unique_per_artist_and_an_unused_style_can_be_deleted() {
    let (app, _fakes, artist, style) = published(0).await;
    let second = trained_style(&app, &artist, "Second").await;
    problem(
        patch_style(&app, &artist, &second, json!({"name": "INK WASH"})).await,
        409,
        "style_name_taken",
    )
    .await;
    ok_json(
        patch_style(&app, &artist, &second, json!({"name": "Ink wash II"})).await,
        200,
    )
    .await;
    // The first renamed: its old name is free again.
    ok_json(
        patch_style(&app, &artist, &style, json!({"name": "Ink"})).await,
        200,
    )
    .await;
    ok_json(
        patch_style(&app, &artist, &second, json!({"name": "ink wash"})).await,
        200,
    )
    .await;
    let bad = patch_style(
        &app,
        &artist,
        &second,
        json!({"price": -1, "tags": ["a b"]}),
    )
    .await;
    let body = problem(bad, 422, "validation_failed").await;
    assert_eq!(body["errors"].as_array().expect("errors").len(), 2);
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/styles/{second}"),
        Some(&artist),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    problem(
        app.get_with_token(&format!("/v1/styles/{second}"), &artist)
            .await,
        404,
        "not_found",
    )
    .await;
    // A free public style: others use it at the base cost; the artist earns nothing.
    let (user, _) = app.user("free").await;
    let before = balance(&app, &artist).await;
    let id = app.submit_id(&user, &generation(Some(&style))).await;
    assert_eq!(finished(&app, &user, &id).await["status"], "COMPLETED");
    assert_eq!(balance(&app, &artist).await, before);
    assert_ledger_sums(&app, &artist).await;
}

/// A use counted by a write answered after the SDK's attempt timeout: the SDK sends it again, and
/// a plain `+1` would count the use twice (the popular sort reads the count). Counted once.
#[tokio::test]
async fn a_use_counted_late_is_counted_once() {
    let (app, _fakes, artist, style) = published(10).await;
    let (fan, _) = app.user("latefan").await;
    let update = "DynamoDB_20120810.UpdateItem";
    let count = json!([format!("STYLE#{style}"), "LISTING", "if_not_exists(uses"]);
    app.answer_late_either(update, &count).await;
    let id = app.submit_id(&fan, &generation(Some(&style))).await;
    assert_eq!(finished(&app, &fan, &id).await["status"], "COMPLETED");
    assert_eq!(app.retried(&count).await, 1, "answered late");
    let mine = app.get_json("/v1/styles/me", &artist).await;
    assert_eq!(mine["items"][0]["listing"]["uses"], 1, "{mine}");
}
