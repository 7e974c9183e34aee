//! Generation at providers, end to end: submit → provider → signed webhook → COMPLETED with the
//! outputs in S3, against local fakes that speak fal's, Replicate's and an AI server's protocols
//! and sign for real. Forged, stale, foreign, duplicate and late webhooks change nothing.

use std::process::Stdio;

use lambent_local::fakes::{
    FakeProviders, Webhook, ed25519_pair, fal_headers, output_png, standard_headers,
};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::app::{TestApp, finished, problem};

/// A stack whose providers are the fakes, with the fakes holding the stack's keys.
pub(crate) async fn start(extra: &[(&str, &str)], worker: bool) -> (TestApp, FakeProviders) {
    let fakes = FakeProviders::start().await.expect("fakes start");
    let app = TestApp::spawn_with_fakes(&fakes, extra, worker).await;
    let state = &app.running.gateway.state;
    let keys: Value = serde_json::from_str(
        state
            .secret_string(&app.running.stack.refs["ProviderKeys"])
            .await
            .expect("provider keys")
            .expose_secret(),
    )
    .expect("json");
    let ai_secret = state
        .secret_string(&app.running.stack.refs["AiWebhookSecret"])
        .await
        .expect("ai secret");
    fakes.set_provider_keys(&keys, ai_secret.expose_secret());
    (app, fakes)
}

pub(crate) fn text_to_image(provider: &str, model: &str) -> Value {
    json!({"kind": "generate", "input": {"provider": provider, "model": model, "task": "text_to_image",
        "prompt": "a lighthouse at dusk", "width": 512, "height": 512}})
}

/// Asserts the job's one output is the fake's PNG, stored in our bucket and served by its URL.
async fn assert_output_stored(app: &TestApp, job: &Value) {
    let files = job["output"]["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{job}");
    let file = &files[0];
    let png = output_png();
    assert_eq!(file["content_type"], "image/png");
    assert_eq!(file["bytes"], png.len());
    assert_eq!(file["sha256"], hex::encode(sha2::Sha256::digest(&png)));
    assert_eq!(
        (file["width"].as_u64(), file["height"].as_u64()),
        (Some(24), Some(16))
    );
    let key = file["key"].as_str().expect("key");
    assert!(key.starts_with("generations/") && key.contains(job["id"].as_str().expect("id")));
    let url = file["url"].as_str().expect("a presigned url");
    let fetched = app.client.get(url).send().await.expect("download");
    assert_eq!(
        fetched.bytes().await.expect("bytes").to_vec(),
        png,
        "our copy, not the provider's"
    );
}

/// Waits until the job is at its provider and returns the provider's request id.
async fn at_provider(app: &TestApp, token: &str, id: &str) -> String {
    let job = app
        .wait_for_job(token, id, |job| job["provider"]["request_id"].is_string())
        .await;
    assert_eq!(job["status"], "IN_PROGRESS");
    job["provider"]["request_id"]
        .as_str()
        .expect("request")
        .to_owned()
}

/// Waits for the fakes to have produced `count` webhooks.
pub(crate) async fn webhooks(fakes: &FakeProviders, count: usize) -> Vec<Webhook> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let webhooks = fakes.webhooks();
        if webhooks.len() >= count {
            return webhooks;
        }
        assert!(std::time::Instant::now() < deadline, "no webhook came");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How many refunds the owner's ledger holds.
async fn refunds(app: &TestApp, token: &str) -> usize {
    let ledger = app.get_json("/v1/credits/transactions", token).await;
    ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"] == "job_refund")
        .count()
}

#[tokio::test]
async fn a_fal_job_goes_submit_webhook_completed_with_its_output_in_s3() {
    let (app, fakes) = start(&[], true).await;
    let (token, _) = app.user("falcon").await;

    let id = app
        .submit_id(&token, &text_to_image("fal", "fal-ai/flux/dev"))
        .await;
    let job = app
        .wait_for_job(&token, &id, |j| {
            j["status"] != "IN_QUEUE" && j["status"] != "IN_PROGRESS"
        })
        .await;

    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["progress"], 100);
    assert_eq!(job["output"]["provider"], "fal");
    assert_eq!(job["output"]["model"], "fal-ai/flux/dev");
    assert_output_stored(&app, &job).await;
    assert_eq!(
        app.credits(&token).await,
        (96, 0),
        "4 credits, slot released"
    );
    assert_eq!(fakes.submissions(), [("fal".to_owned(), 200)]);
    let sent = webhooks(&fakes, 1).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].answered, Some(200));
}

#[tokio::test]
async fn a_replicate_job_and_a_lokiz_preset_complete_by_webhook() {
    let (app, fakes) = start(&[], true).await;
    let (token, _) = app.user("replicant").await;

    let id = app
        .submit_id(
            &token,
            &text_to_image("replicate", "black-forest-labs/flux-schnell"),
        )
        .await;
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_output_stored(&app, &job).await;

    // LOKIZ's music operation: 5 credits, on Replicate.
    let music = app
        .submit_id(
            &token,
            &json!({"kind": "music", "input": {"prompt": "lo-fi beat", "duration_seconds": 20}}),
        )
        .await;
    let job = finished(&app, &token, &music).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["output"]["model"], "meta/musicgen");
    assert_eq!(app.credits(&token).await, (100 - 4 - 5, 0));
    assert_eq!(fakes.submissions().len(), 2);
}

#[tokio::test]
async fn an_ai_server_job_reports_progress_and_completes() {
    let (app, fakes) = start(&[], true).await;
    let (token, _) = app.user("aiserver").await;

    let id = app
        .submit_id(&token, &text_to_image("ai", "studio/portrait-v2"))
        .await;
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_output_stored(&app, &job).await;
    let sent = webhooks(&fakes, 2).await;
    let methods: Vec<_> = sent
        .iter()
        .map(|w| (w.method.as_str(), w.answered))
        .collect();
    assert_eq!(
        methods,
        [("PATCH", Some(200)), ("POST", Some(200))],
        "progress, then completion"
    );

    // A report signed with another secret is refused.
    let forged = lambent_local::fakes::standard_webhook(
        "POST",
        sent[1].url.clone(),
        "whsec_c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMh",
        json!({"error": "forged"}).to_string(),
    )
    .expect("sign");
    assert_eq!(fakes.send(&forged).await.expect("send"), 401);

    // The progress report replayed after the end changes nothing.
    assert_eq!(fakes.send(&sent[0]).await.expect("replay"), 200);
    let after = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(
        (after["status"].as_str(), after["progress"].as_u64()),
        (Some("COMPLETED"), Some(100))
    );
}

#[tokio::test]
async fn forged_stale_foreign_and_unknown_fal_webhooks_change_nothing_then_duplicates_finalize_once()
 {
    let (app, fakes) = start(&[], true).await;
    fakes.configure(|b| b.hold_webhooks = true);
    let (token, _) = app.user("target").await;
    let (other_token, _) = app.user("bystander").await;
    let id = app
        .submit_id(&token, &text_to_image("fal", "fal-ai/flux/dev"))
        .await;
    let request_id = at_provider(&app, &token, &id).await;
    let other = app
        .submit_id(&other_token, &text_to_image("fal", "fal-ai/flux/dev"))
        .await;
    at_provider(&app, &other_token, &other).await;
    let held = webhooks(&fakes, 2).await;
    let genuine = held
        .iter()
        .find(|w| w.url.contains(&id))
        .expect("the target's webhook")
        .clone();
    assert_eq!(genuine.answered, None, "held back");

    let now = chrono::Utc::now().timestamp();
    let with_headers = |headers: Vec<(String, String)>| Webhook {
        headers,
        ..genuine.clone()
    };
    let mut forged = genuine.clone();
    for (name, value) in &mut forged.headers {
        if name == "x-fal-webhook-signature" {
            *value = "ab".repeat(64);
        }
    }
    let stranger = ed25519_pair().expect("key");
    let mut tampered = genuine.clone();
    tampered.body = tampered.body.replace("\"OK\"", "\"ERROR\"");
    let attempts = [
        ("forged signature", forged, 401),
        (
            "another key",
            with_headers(fal_headers(
                &stranger,
                &request_id,
                now,
                genuine.body.as_bytes(),
            )),
            401,
        ),
        (
            "stale",
            with_headers(fal_headers(
                fakes.fal_pair(),
                &request_id,
                now - 400,
                genuine.body.as_bytes(),
            )),
            401,
        ),
        ("tampered body", tampered, 401),
        (
            "another fal account",
            with_headers(lambent_local::fakes::fal_headers_of(
                fakes.fal_pair(),
                "someone-else-at-fal",
                &request_id,
                now,
                genuine.body.as_bytes(),
            )),
            401,
        ),
        ("no signature", with_headers(Vec::new()), 401),
        (
            "another user's job",
            Webhook {
                url: genuine.url.replace(&id, &other),
                ..genuine.clone()
            },
            200,
        ),
        (
            "unknown job",
            Webhook {
                url: genuine.url.replace(&id, &uuid::Uuid::new_v4().to_string()),
                ..genuine.clone()
            },
            200,
        ),
    ];
    for (what, webhook, status) in attempts {
        assert_eq!(fakes.send(&webhook).await.expect("send"), status, "{what}");
        for (job, owner) in [(&id, &token), (&other, &other_token)] {
            let job = app.get_json(&format!("/v1/jobs/{job}"), owner).await;
            assert_eq!(job["status"], "IN_PROGRESS", "{what} changed nothing");
        }
    }
    assert_eq!(app.credits(&token).await, (96, 1));

    // The genuine webhook, five times, then a failure signed by fal after the completion.
    for attempt in 0..5 {
        assert_eq!(
            fakes.send(&genuine).await.expect("send"),
            200,
            "delivery {attempt}"
        );
    }
    let failed_body =
        json!({"request_id": request_id, "gateway_request_id": request_id, "status": "ERROR",
        "error": "late failure", "payload": {"detail": "late failure"}})
        .to_string();
    let late_failure = Webhook {
        headers: fal_headers(fakes.fal_pair(), &request_id, now, failed_body.as_bytes()),
        body: failed_body,
        ..genuine.clone()
    };
    assert_eq!(fakes.send(&late_failure).await.expect("send"), 200);

    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "COMPLETED");
    assert_output_stored(&app, &job).await;
    assert_eq!(
        app.credits(&token).await,
        (96, 0),
        "charged once, never refunded"
    );
    assert_eq!(refunds(&app, &token).await, 0);
}

#[tokio::test]
async fn a_provider_failure_refunds_once_however_often_and_late_it_is_told() {
    let (app, fakes) = start(&[], true).await;
    fakes.configure(|b| b.fail_with = Some("the model refused the prompt".into()));
    let (token, _) = app.user("refused").await;

    let id = app
        .submit_id(
            &token,
            &text_to_image("replicate", "black-forest-labs/flux-schnell"),
        )
        .await;
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["error"]["type"], "provider_error");
    // The provider's words are logged, never shown: the owner gets a message of ours.
    assert_eq!(
        job["error"]["message"],
        "the provider could not complete the job"
    );
    assert!(!job.to_string().contains("refused the prompt"), "{job}");
    assert_eq!(app.credits(&token).await, (100, 0));

    // The failure again and again, then a success signed by Replicate: one refund, still FAILED.
    let failure = webhooks(&fakes, 1).await.remove(0);
    for _ in 0..4 {
        assert_eq!(fakes.send(&failure).await.expect("send"), 200);
    }
    let mut prediction: Value = serde_json::from_str(&failure.body).expect("json");
    prediction["status"] = json!("succeeded");
    prediction["output"] = json!([format!("{}/files/late.png", fakes.base_url())]);
    let body = prediction.to_string();
    let success = Webhook {
        headers: standard_headers(
            fakes.replicate_secret(),
            "msg_late",
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        )
        .expect("sign"),
        body,
        ..failure.clone()
    };
    assert_eq!(fakes.send(&success).await.expect("send"), 200);
    // And one signed with another secret is refused.
    let forged = Webhook {
        headers: standard_headers(
            "whsec_c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMh",
            "msg_x",
            chrono::Utc::now().timestamp(),
            success.body.as_bytes(),
        )
        .expect("sign"),
        ..success.clone()
    };
    assert_eq!(fakes.send(&forged).await.expect("send"), 401);

    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "FAILED");
    assert_eq!(app.credits(&token).await, (100, 0));
    assert_eq!(refunds(&app, &token).await, 1);
}

#[tokio::test]
async fn submission_is_retried_through_429_and_500_then_fails_cleanly_and_is_refunded() {
    let (app, fakes) = start(&[], true).await;
    let (token, _) = app.user("throttled").await;

    // 429 then success: retried after Retry-After.
    fakes.configure(|b| b.submit_failures = [429].into());
    let id = app
        .submit_id(&token, &text_to_image("fal", "fal-ai/flux/dev"))
        .await;
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");

    // 429, then 500 on every attempt: the job fails as provider_error and is refunded.
    fakes.configure(|b| b.submit_failures = [429, 500, 500, 500].into());
    let id = app
        .submit_id(&token, &text_to_image("fal", "fal-ai/flux/dev"))
        .await;
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["error"]["type"], "provider_error");
    assert!(
        job["error"]["message"]
            .as_str()
            .expect("message")
            .contains("4 attempts"),
        "{job}"
    );
    assert!(
        !job.to_string().contains("scripted failure"),
        "no provider body: {job}"
    );
    assert_eq!(app.credits(&token).await, (96, 0));
    let statuses: Vec<u16> = fakes.submissions().iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [429, 200, 429, 500, 500, 500]);

    // A refusal (422, whatever its body says) fails at once with a message of ours, refunded.
    fakes.configure(|b| b.submit_failures = [422].into());
    let id = app
        .submit_id(&token, &text_to_image("fal", "fal-ai/flux/dev"))
        .await;
    let refused = finished(&app, &token, &id).await;
    assert_eq!(
        (
            refused["status"].as_str(),
            refused["error"]["message"].as_str()
        ),
        (
            Some("FAILED"),
            Some("the provider refused the job (its input, model or this deployment's access)")
        )
    );
    assert!(
        !refused.to_string().contains("scripted failure"),
        "{refused}"
    );
    assert_eq!(app.credits(&token).await, (96, 0));
}

#[tokio::test]
async fn a_job_whose_worker_died_after_submitting_is_finalized_by_the_reconciler() {
    let (app, fakes) = start(&[("RECONCILE_QUIET_SECONDS", "1")], false).await;
    fakes.configure(|b| b.hold_webhooks = true);
    let (token, _) = app.user("orphan").await;
    let stack = &app.running.stack;

    // The worker in its own process, as Lambda or the GPU task runs it.
    let mut worker = crate::app::run_job_command()
        .envs(&stack.env)
        .envs(fakes.overrides())
        .envs([
            ("JWT_ISSUER", app.base.as_str()),
            ("WEBHOOK_BASE_URL", app.base.as_str()),
            ("S3_FORCE_PATH_STYLE", "true"),
            ("ALLOW_PRIVATE_WEBHOOKS", "true"),
        ])
        .env("AWS_ENDPOINT_URL", &app.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("WORKER_QUEUE_URL", &stack.refs["JobsQueue"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("run-job starts (make test builds it)");
    let id = app
        .submit_id(&token, &text_to_image("fal", "fal-ai/flux/dev"))
        .await;
    let request_id = at_provider(&app, &token, &id).await;
    worker.kill().expect("kill");
    worker.wait().expect("wait");

    // No webhook comes; the reconciler polls fal's status and result.
    let job = app
        .wait_for_job(&token, &id, |j| j["status"] != "IN_PROGRESS")
        .await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_output_stored(&app, &job).await;
    assert_eq!(app.credits(&token).await, (96, 0));
    assert_eq!(fakes.request_state(&request_id), Some("succeeded"));
    assert!(
        fakes.webhooks().iter().all(|w| w.answered.is_none()),
        "no webhook reached us"
    );
}

/// The record of a submission (the provider's request id on the job) that commits but answers
/// after the SDK's attempt timeout is sent again and fails its condition (the id is there): the
/// worker sees its own request id and leaves the job at its provider. Before, it took the job for
/// ended and canceled the request it had just paid for, and the job never finished.
#[tokio::test]
async fn a_submission_recorded_late_stays_at_its_provider() {
    let (app, fakes) = start(&[], false).await;
    // The request keeps running at the provider until it is canceled.
    fakes.configure(|b| b.stall = true);
    let (token, _) = app.user("latenote").await;
    let id = app
        .submit_id(&token, &text_to_image("fal", "fal-ai/flux/dev"))
        .await;
    let update = "DynamoDB_20120810.UpdateItem";
    let record = json!([id, "provider_request_id = :request"]);
    app.answer_late(update, &record).await;
    let state = &app.running.gateway.state;
    let body = json!({ "job_id": id }).to_string();
    let disposition = lambent::jobs::worker::process(state, &body)
        .await
        .expect("processed");
    assert_eq!(disposition, lambent::jobs::worker::Disposition::Done);
    assert_eq!(
        app.fired_where(update, record).await,
        1,
        "the record's answer was late"
    );
    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "IN_PROGRESS", "{job}");
    let request_id = job["provider"]["request_id"].as_str().expect("request");
    assert_ne!(
        fakes.request_state(request_id),
        Some("canceled"),
        "still running at the provider"
    );
    assert_eq!(fakes.submissions().len(), 1, "submitted once");

    // Its owner can still cancel it there, refunded once.
    let canceled = app.cancel(&token, &id).await;
    assert!(
        [200, 202].contains(&canceled.status().as_u16()),
        "{}",
        canceled.status()
    );
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "CANCELED", "{job}");
    assert_eq!(fakes.request_state(request_id), Some("canceled"));
    assert_eq!(app.credits(&token).await, (100, 0));
}

#[tokio::test]
async fn canceling_a_job_at_a_provider_cancels_it_there_and_refunds() {
    let (app, fakes) = start(&[], true).await;
    fakes.configure(|b| b.stall = true);
    let (token, _) = app.user("changedmind").await;
    let id = app
        .submit_id(
            &token,
            &text_to_image("replicate", "black-forest-labs/flux-schnell"),
        )
        .await;
    let request_id = at_provider(&app, &token, &id).await;

    let canceled = app.cancel(&token, &id).await;
    assert_eq!(canceled.status(), 200);
    let job: Value = canceled.json().await.expect("json");
    assert_eq!(job["status"], "CANCELED");
    assert_eq!(job["error"]["type"], "canceled_by_user");
    assert_eq!(app.credits(&token).await, (100, 0));
    assert_eq!(
        fakes.request_state(&request_id),
        Some("canceled"),
        "stopped at Replicate too"
    );

    // A completion signed by Replicate arriving after the cancel changes nothing.
    let body = json!({"id": request_id, "status": "succeeded", "output": [format!("{}/files/x.png", fakes.base_url())]}).to_string();
    let late = Webhook {
        method: "POST".into(),
        url: app.url(&format!("/v1/webhooks/replicate?job_id={id}")),
        headers: standard_headers(
            fakes.replicate_secret(),
            "msg_after_cancel",
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        )
        .expect("sign"),
        body,
        answered: None,
    };
    assert_eq!(fakes.send(&late).await.expect("send"), 200);
    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "CANCELED");
    assert_eq!(app.credits(&token).await, (100, 0));
}

#[tokio::test]
async fn bad_generation_requests_are_refused_before_anything_is_charged() {
    let (app, _fakes) = start(&[], true).await;
    let (token, _) = app.user("sloppy").await;
    let cases = [
        json!({"kind": "generate", "input": {"provider": "midjourney", "model": "a/b", "task": "text_to_image", "prompt": "x"}}),
        json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev", "task": "text_to_image"}}),
        json!({"kind": "generate", "input": {"provider": "fal", "model": "../../admin", "task": "text_to_image", "prompt": "x"}}),
        json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev", "task": "image_to_video"}}),
        json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev", "task": "text_to_image", "prompt": "x", "num_images": 50}}),
        json!({"kind": "template", "input": {"upload_key": "uploads/x/y.png"}}),
        json!({"kind": "music", "input": {"prompt": "x", "duration_seconds": 9999}}),
    ];
    for body in cases {
        problem(app.submit(&token, &body).await, 422, "validation_failed").await;
    }
    assert_eq!(app.credits(&token).await, (100, 0));

    // A provider this deployment does not offer is refused up front too.
    let plain = TestApp::spawn().await;
    let (token, _) = plain.user("noai").await;
    let body = problem(
        plain
            .submit(&token, &text_to_image("ai", "studio/portrait-v2"))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "input.provider", "{body}");
}

#[tokio::test]
async fn a_job_with_someone_elses_upload_fails_as_not_found_and_is_refunded() {
    let (app, fakes) = start(&[], true).await;
    let (token, _) = app.user("borrower").await;
    let body = json!({"kind": "template", "input": {"upload_key": "uploads/00000000-0000-4000-8000-000000000000/x.png", "template": "dolly-zoom"}});
    let id = app.submit_id(&token, &body).await;
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["error"]["type"], "not_found", "{job}");
    assert_eq!(app.credits(&token).await, (100, 0));
    assert!(
        fakes.submissions().is_empty(),
        "nothing reached the provider"
    );
}

#[tokio::test]
async fn a_style_trains_on_the_ai_server_with_progress_and_is_then_used_by_generate() {
    let (app, fakes) = start(&[], true).await;
    let (token, _) = app.user("painter").await;
    let (other, _) = app.user("copycat").await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(app.upload(&token, output_png(), "image/png").await);
    }

    let response = app
        .client
        .post(app.url("/v1/styles"))
        .bearer_auth(&token)
        .json(&json!({"name": "Watercolor", "upload_keys": keys, "trigger_word": "wtrclr", "steps": 800}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let submitted: Value = response.json().await.expect("json");
    let id = submitted["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/v1/styles/{id}"));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let style = loop {
        let style = app.get_json(&location, &token).await;
        if style["status"] == "COMPLETED" || style["status"] == "FAILED" {
            break style;
        }
        assert!(std::time::Instant::now() < deadline, "{style}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(style["status"], "COMPLETED", "{style}");
    assert_eq!(
        (style["name"].as_str(), style["trigger_word"].as_str()),
        (Some("Watercolor"), Some("wtrclr"))
    );
    assert_eq!(
        style["model"]["sha256"],
        hex::encode(sha2::Sha256::digest(output_png()))
    );
    assert!(style["model"]["url"].is_string());
    let progress: Vec<_> = fakes
        .webhooks()
        .iter()
        .filter(|w| w.method == "PATCH")
        .map(|w| w.answered)
        .collect();
    assert_eq!(progress, [Some(200)], "progress reached us by webhook");
    let training = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    let input = fakes
        .request_input(
            training["provider"]["request_id"]
                .as_str()
                .expect("request"),
        )
        .expect("input");
    assert_eq!(input["task"], "train_style");
    assert_eq!(input["image_urls"].as_array().expect("urls").len(), 4);
    assert_eq!(input["steps"], 800);
    assert_eq!(app.credits(&token).await, (50, 0));

    let listed = app.get_json("/v1/styles/me", &token).await;
    assert_eq!(listed["items"].as_array().expect("items").len(), 1);
    problem(
        app.get_with_token(&location, &other).await,
        404,
        "not_found",
    )
    .await;
    assert!(
        app.get_json("/v1/styles/me", &other).await["items"]
            .as_array()
            .expect("items")
            .is_empty()
    );

    // The style in a generation: fal gets its weights as a LoRA.
    let body = json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux-lora", "task": "text_to_image",
        "prompt": "wtrclr harbour", "style_id": id}});
    let job_id = app.submit_id(&token, &body).await;
    let job = finished(&app, &token, &job_id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let input = fakes
        .request_input(job["provider"]["request_id"].as_str().expect("request"))
        .expect("input");
    assert!(
        input["loras"][0]["path"]
            .as_str()
            .is_some_and(|p| p.contains(&id)),
        "{input}"
    );

    // Someone else's unpublished style: refused before admission, nothing debited.
    problem(app.submit(&other, &body).await, 404, "not_found").await;
    assert_eq!(app.credits(&other).await, (100, 0));
}

#[tokio::test]
async fn a_job_past_its_deadline_is_failed_and_canceled_at_its_provider() {
    let (app, fakes) = start(&[], true).await;
    fakes.configure(|b| b.stall = true);
    let (token, _) = app.user("slowpoke").await;
    let id = app
        .submit_id(
            &token,
            &text_to_image("replicate", "black-forest-labs/flux-schnell"),
        )
        .await;
    let request_id = at_provider(&app, &token, &id).await;

    // Time passes: the job's run deadline is now behind it.
    let past = aws_sdk_dynamodb::types::AttributeValue::N(
        (chrono::Utc::now().timestamp() - 1).to_string(),
    );
    aws_sdk_dynamodb::Client::new(&app.running.sdk)
        .update_item()
        .table_name(&app.running.stack.refs["Table"])
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("JOB#{id}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("JOB".into()),
        )
        .update_expression("SET deadline = :past, gsi2sk = :past")
        .expression_attribute_values(":past", past)
        .send()
        .await
        .expect("update");

    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["error"]["type"], "timed_out");
    assert_eq!(app.credits(&token).await, (100, 0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fakes.request_state(&request_id) != Some("canceled") {
        assert!(
            std::time::Instant::now() < deadline,
            "not canceled at Replicate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_preset_runs_where_the_configuration_says() {
    let (app, fakes) = start(&[("PRESET_MODELS", "music=fal:fal-ai/stable-audio")], true).await;
    let (token, _) = app.user("composer").await;
    let id = app
        .submit_id(
            &token,
            &json!({"kind": "music", "input": {"prompt": "rain on a tin roof"}}),
        )
        .await;
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["output"]["provider"], "fal");
    assert_eq!(job["output"]["model"], "fal-ai/stable-audio");
    assert_eq!(fakes.submissions(), [("fal".to_owned(), 200)]);
    let input = fakes
        .request_input(job["provider"]["request_id"].as_str().expect("request"))
        .expect("input");
    assert_eq!(
        input["seconds_total"], 30,
        "fal's name for the duration, defaulted"
    );
    assert_eq!(app.credits(&token).await, (95, 0));
}

/// A cancel while the worker is submitting (the provider answers 429 first, so the job is running
/// with no request on record for a second) is a cancel: the request is canceled at the provider
/// once it exists, the job ends CANCELED and is refunded once. It never completes charged.
#[tokio::test]
async fn a_cancel_during_submission_cancels_at_the_provider_and_refunds() {
    let (app, fakes) = start(&[], true).await;
    // The worker waits out a long Retry-After: the cancel comes while it is still submitting.
    fakes.configure(|b| {
        b.submit_failures.push_back(429);
        b.retry_after_secs = Some(6);
    });
    let (token, _) = app.user("hasty").await;
    let id = app
        .submit_id(&token, &text_to_image("fal", "fal-ai/flux/schnell"))
        .await;
    app.wait_for_job(&token, &id, |job| job["status"] == "IN_PROGRESS")
        .await;
    let canceled = app.cancel(&token, &id).await;
    assert_eq!(canceled.status(), 202, "asked; the worker is submitting");
    let job = finished(&app, &token, &id).await;
    assert_eq!(job["status"], "CANCELED", "{job}");
    assert_eq!(app.credits(&token).await, (100, 0));
    assert_eq!(refunds(&app, &token).await, 1);
    if let Some(request_id) = job["provider"]["request_id"].as_str() {
        assert_eq!(fakes.request_state(request_id), Some("canceled"));
    }
}

/// Cancels at every moment of a job's life, over and over: whatever the answer, it is the truth.
/// 200 means CANCELED and refunded, 202 means it ends CANCELED and refunded, 409 means it had
/// ended otherwise (and then it was COMPLETED and charged).
#[tokio::test]
async fn a_cancel_answer_always_says_what_happened() {
    let (app, _fakes) = start(&[], true).await;
    let (token, _) = app.user("fickle").await;
    for attempt in 0..12u64 {
        let (before, _) = app.credits(&token).await;
        let id = app
            .submit_id(&token, &text_to_image("fal", "fal-ai/flux/schnell"))
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(attempt * 40)).await;
        let answer = app.cancel(&token, &id).await;
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.expect("json");
        let job = finished(&app, &token, &id).await;
        let (after, active) = app.credits(&token).await;
        assert_eq!(active, 0);
        match status {
            200 => {
                assert_eq!(body["status"], "CANCELED", "{body}");
                assert_eq!(job["status"], "CANCELED");
                assert_eq!(after, before, "refunded");
            }
            202 => {
                assert_eq!(job["status"], "CANCELED", "asked, then canceled: {job}");
                assert_eq!(after, before, "refunded");
            }
            409 => {
                assert_eq!(body["code"], "job_finished");
                assert_eq!(job["status"], "COMPLETED");
                assert_eq!(after, before - job["cost"].as_i64().expect("cost"));
            }
            other => panic!("cancel answered {other}: {body}"),
        }
    }
}

/// An AI server's signed report is bound to its job and its route: replayed at another job's URL,
/// or at another report's route of the same job, it is refused and changes nothing.
#[tokio::test]
async fn an_ai_report_replayed_at_another_job_or_route_is_refused() {
    let (app, fakes) = start(&[], true).await;
    fakes.configure(|b| b.hold_webhooks = true);
    let (token, _) = app.user("replayer").await;
    let first = app
        .submit_id(&token, &text_to_image("ai", "studio/portrait-v2"))
        .await;
    let second = app
        .submit_id(&token, &text_to_image("ai", "studio/portrait-v2"))
        .await;
    let sent = webhooks(&fakes, 4).await;
    let of = |id: &str, report: &str| {
        sent.iter()
            .find(|w| w.url.ends_with(&format!("/{id}/{report}")))
            .cloned()
            .expect("a held report")
    };
    // The first job's completion, sent to the second job's completion URL.
    let mut elsewhere = of(&first, "complete");
    elsewhere.url = elsewhere.url.replace(&first, &second);
    assert_eq!(fakes.send(&elsewhere).await.expect("send"), 400);
    // The first job's completion, sent to its own failure URL.
    let mut other_route = of(&first, "complete");
    other_route.url = other_route.url.replace("/complete", "/failed");
    assert_eq!(fakes.send(&other_route).await.expect("send"), 400);
    for id in [&first, &second] {
        let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
        assert_eq!(job["status"], "IN_PROGRESS", "{job}");
    }
    // Each report at its own URL applies.
    for id in [&first, &second] {
        assert_eq!(fakes.send(&of(id, "complete")).await.expect("send"), 200);
        assert_eq!(finished(&app, &token, id).await["status"], "COMPLETED");
    }
}

/// `arguments` pass extra provider fields, never files: a field Lambent fills from uploads or
/// styles (or leaves empty), or a URL anywhere, would make the provider fetch what the user chose.
#[tokio::test]
async fn arguments_cannot_make_a_provider_fetch_a_url() {
    let (app, _fakes) = start(&[], true).await;
    let (token, _) = app.user("smuggler").await;
    for (arguments, field) in [
        (
            json!({"loras": [{"path": "https://169.254.169.254/latest/meta-data", "scale": 1}]}),
            "input.arguments.loras",
        ),
        (
            json!({"image_url": "https://example.com/a.png"}),
            "input.arguments.image_url",
        ),
        (json!({"style_url": "x"}), "input.arguments.style_url"),
        (
            json!({"extra": {"nested": ["http://10.0.0.1/secret"]}}),
            "input.arguments.extra",
        ),
    ] {
        let mut body = text_to_image("ai", "studio/portrait-v2");
        body["input"]["arguments"] = arguments;
        let refused = problem(app.submit(&token, &body).await, 422, "validation_failed").await;
        assert!(
            refused["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .any(|e| e["field"] == field),
            "{refused}"
        );
    }
    let mut fine = text_to_image("fal", "fal-ai/flux/schnell");
    fine["input"]["arguments"] = json!({"guidance_scale": 3.5});
    assert_eq!(app.submit(&token, &fine).await.status(), 202);
    assert_eq!(app.credits(&token).await.0, 96, "only the fine one charged");
}
