//! Jobs: the 4-job cap under concurrency, credits, the worker's lifecycle, cancel, healing.

use std::process::Stdio;
use std::time::Duration;

use lambent::jobs::store::{self, JobRef, Outcome};
use lambent::jobs::worker::{self, Disposition};
use serde_json::{Value, json};

use crate::app::{TestApp, problem};

const UPDATE: &str = "DynamoDB_20120810.UpdateItem";

fn sleep_job(ms: u64) -> Value {
    json!({"kind": "sleep", "input": {"ms": ms}})
}

fn is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |job| job["status"] == status
}

#[tokio::test]
async fn sixty_four_simultaneous_submissions_admit_exactly_four_for_each_of_twenty_users() {
    // Nothing runs during the bursts, so only admission decides; the worker starts afterwards.
    let app = TestApp::spawn_without_worker(&[("REGISTER_RATE_PER_MINUTE", "1000")]).await;
    let mut users = Vec::new();
    for i in 0..20 {
        let (token, _) = app.user(&format!("burst{i}")).await;
        let job = sleep_job(100);
        let submissions = (0..64).map(|_| app.submit(&token, &job));
        let responses = futures::future::join_all(submissions).await;
        let mut admitted = Vec::new();
        let mut refused = 0;
        for response in responses {
            match response.status().as_u16() {
                202 => {
                    assert!(
                        response.headers()["location"]
                            .to_str()
                            .expect("l")
                            .starts_with("/v1/jobs/")
                    );
                    let body: Value = response.json().await.expect("json");
                    assert_eq!(body["status"], "IN_QUEUE");
                    admitted.push(body["id"].as_str().expect("id").to_owned());
                }
                429 => {
                    assert!(response.headers().contains_key("retry-after"));
                    let body = problem(response, 429, "max_concurrent_jobs").await;
                    assert_eq!(body["max_concurrent"], 4);
                    refused += 1;
                }
                other => panic!("user {i}: unexpected {other}"),
            }
        }
        assert_eq!((admitted.len(), refused), (4, 60), "user {i}");
        users.push((token, admitted));
    }
    let state = app.running.gateway.state.clone();
    let queue = app.running.stack.refs["JobsQueue"].clone();
    tokio::spawn(worker::poll(state, worker::Consumer::JOBS, queue, 16));
    for (token, jobs) in &users {
        for id in jobs {
            app.wait_for_job(token, id, is("COMPLETED")).await;
        }
        // Every slot released; the balance is the grant less four completed jobs of 1 credit.
        assert_eq!(app.credits(token).await, (100 - 4, 0));
    }
}

#[tokio::test]
async fn a_failed_job_is_refunded_exactly_once_when_released_three_times_at_once() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, user_id) = app.user("thrice").await;
    let submitted: Value = app
        .submit(&token, &sleep_job(10))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(app.credits(&token).await, (99, 1));

    let job = JobRef {
        id: submitted["id"].as_str().expect("id").to_owned(),
        user_id,
        cost: 1,
        provider: None,
        share: None,
    };
    let db = &app.running.gateway.state.db;
    let outcome = Outcome::failed("provider_error", "the provider gave up");
    let now = chrono::Utc::now();
    let (a, b, c) = tokio::join!(
        store::release(db, &job, &outcome, None, now),
        store::release(db, &job, &outcome, None, now),
        store::release(db, &job, &outcome, None, now)
    );
    let released = [a.expect("a"), b.expect("b"), c.expect("c")];
    assert_eq!(released.iter().filter(|r| **r).count(), 1, "{released:?}");
    // And once more, later.
    assert!(
        !store::release(db, &job, &outcome, None, chrono::Utc::now())
            .await
            .expect("again")
    );

    assert_eq!(app.credits(&token).await, (100, 0));
    let ledger = app.get_json("/v1/credits/transactions", &token).await;
    let refunds: Vec<_> = ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"] == "job_refund")
        .collect();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["job_id"], job.id.as_str());
    let failed = app.get_json(&format!("/v1/jobs/{}", job.id), &token).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["error"]["type"], "provider_error");
}

#[tokio::test]
async fn the_same_message_delivered_twice_runs_the_job_once() {
    let (app, token, id, body) = one_queued_job("twice", 200).await;
    let (id, state) = (&id, &app.running.gateway.state);

    let (first, second) =
        tokio::join!(worker::process(state, &body), worker::process(state, &body));
    assert_eq!(
        (first.expect("first"), second.expect("second")),
        (Disposition::Done, Disposition::Done)
    );
    // A late third delivery finds it finished.
    assert_eq!(
        worker::process(state, &body).await.expect("third"),
        Disposition::Done
    );

    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(claims(&app, id).await, "1", "claimed once");
    assert_eq!(app.credits(&token).await, (99, 0));
}

/// A stack without a worker, a user and one sleep job admitted: its id and its queue message.
async fn one_queued_job(name: &str, ms: u64) -> (TestApp, String, String, String) {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, _) = app.user(name).await;
    let id = app.submit_id(&token, &sleep_job(ms)).await;
    let body = json!({ "job_id": id }).to_string();
    (app, token, id, body)
}

/// How often a job was claimed (its item's `attempts`).
async fn claims(app: &TestApp, id: &str) -> String {
    let item = app
        .running
        .gateway
        .state
        .db
        .get(&format!("JOB#{id}"), "JOB")
        .await
        .expect("read")
        .expect("item");
    item["attempts"].as_n().expect("n").clone()
}

/// A claim that commits but answers after the SDK's attempt timeout is sent again by the SDK and
/// finds the job running: the claim names itself, so the worker knows the running job is its own
/// and runs it (before, it took it for another worker's and dropped the message, and the job
/// stayed IN_PROGRESS, its slot held, until the reaper failed it).
#[tokio::test]
async fn a_claim_answered_late_is_still_run_by_its_worker() {
    let (app, token, id, body) = one_queued_job("lateclaim", 10).await;
    let (id, state) = (&id, &app.running.gateway.state);
    app.fault(UPDATE, id, 1, json!({"answer_delay_ms": 3000}))
        .await;

    let disposition = worker::process(state, &body).await.expect("processed");
    assert_eq!(disposition, Disposition::Done);
    assert_eq!(
        app.fired(UPDATE, id).await,
        1,
        "the claim's answer was late"
    );
    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(claims(&app, id).await, "1", "claimed once");
    assert_eq!(
        app.credits(&token).await,
        (99, 0),
        "charged once, slot free"
    );
    // Another delivery of the message later finds it finished.
    assert_eq!(
        worker::process(state, &body).await.expect("again"),
        Disposition::Done
    );
}

#[tokio::test]
async fn a_worker_killed_mid_job_is_healed_by_the_reaper() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, _) = app.user("killed").await;
    let stack = &app.running.stack;

    // The worker binary in poller mode, as the GPU task runs it, in its own process.
    let mut worker = crate::app::run_job_command()
        .envs(&stack.env)
        .envs([
            ("ENABLE_TEST_KINDS", "true"),
            ("JWT_ISSUER", app.base.as_str()),
        ])
        .env("AWS_ENDPOINT_URL", &app.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("WORKER_QUEUE_URL", &stack.refs["JobsQueue"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("run-job starts");

    let id = &app.submit_id(&token, &sleep_job(4000)).await;
    app.wait_for_job(&token, id, |job| {
        job["status"] == "IN_PROGRESS" && job["progress"].as_u64() > Some(0)
    })
    .await;
    worker.kill().expect("kill");
    worker.wait().expect("wait");

    let failed = app
        .wait_for_job(&token, id, |job| job["status"] != "IN_PROGRESS")
        .await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["error"]["type"], "timed_out");
    assert_eq!(app.credits(&token).await, (100, 0));
    assert_eq!(
        app.submit(&token, &sleep_job(10)).await.status(),
        202,
        "the user can submit again"
    );
}

#[tokio::test]
async fn a_dead_lettered_job_fails_as_worker_crashed_and_is_refunded() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, _) = app.user("dead").await;
    let id = &app.submit_id(&token, &sleep_job(10)).await;
    let state = &app.running.gateway.state;

    let body = json!({ "job_id": id }).to_string();
    assert_eq!(
        worker::dead_letter(state, &body)
            .await
            .expect("dead letter"),
        Disposition::Done
    );
    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["error"]["type"], "worker_crashed");
    assert_eq!(app.credits(&token).await, (100, 0));
    // The original message, delivered late, does nothing.
    assert_eq!(
        worker::process(state, &body).await.expect("late"),
        Disposition::Done
    );
    assert_eq!(
        app.get_json(&format!("/v1/jobs/{id}"), &token).await["status"],
        "FAILED"
    );
}

#[tokio::test]
async fn cancel_in_each_state_and_foreign_ids_are_404() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("canceler").await;
    let (stranger, _) = app.user("stranger").await;
    let cancel = |token: String, id: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url(&format!("/v1/jobs/{id}/cancel")))
                .bearer_auth(token)
                .send()
                .await
                .expect("r")
        }
    };

    // Running: cancellation is requested, then honoured at the next checkpoint, and refunded.
    let running: Value = app
        .submit(&token, &sleep_job(5000))
        .await
        .json()
        .await
        .expect("json");
    let running_id = running["id"].as_str().expect("id").to_owned();
    app.wait_for_job(&token, &running_id, is("IN_PROGRESS"))
        .await;
    let response = cancel(token.clone(), running_id.clone()).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.expect("json")["cancel_requested"],
        true
    );
    let canceled = app
        .wait_for_job(&token, &running_id, |j| j["status"] != "IN_PROGRESS")
        .await;
    assert_eq!(canceled["status"], "CANCELED");
    assert_eq!(canceled["error"]["type"], "canceled_by_user");

    // Finished: 409.
    let done: Value = app
        .submit(&token, &sleep_job(0))
        .await
        .json()
        .await
        .expect("json");
    let done_id = done["id"].as_str().expect("id").to_owned();
    app.wait_for_job(&token, &done_id, is("COMPLETED")).await;
    problem(
        cancel(token.clone(), done_id.clone()).await,
        409,
        "job_finished",
    )
    .await;
    problem(
        cancel(token.clone(), running_id.clone()).await,
        409,
        "job_finished",
    )
    .await;

    // Someone else's job, an unknown id and a malformed one are all 404, on read and on cancel.
    for id in [
        done_id.clone(),
        uuid::Uuid::now_v7().to_string(),
        "not-a-job".to_owned(),
    ] {
        problem(
            app.get_with_token(&format!("/v1/jobs/{id}"), &stranger)
                .await,
            404,
            "not_found",
        )
        .await;
        problem(cancel(stranger.clone(), id).await, 404, "not_found").await;
    }
    assert_eq!(app.credits(&token).await, (100 - 1, 0));
}

#[tokio::test]
async fn a_queued_job_is_canceled_at_once_and_refunded() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, _) = app.user("queued").await;
    let id = &app.submit_id(&token, &sleep_job(10)).await;
    assert_eq!(app.credits(&token).await, (99, 1));
    let response = app
        .client
        .post(app.url(&format!("/v1/jobs/{id}/cancel")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("r");
    assert_eq!(response.status(), 200);
    let job: Value = response.json().await.expect("json");
    assert_eq!(job["status"], "CANCELED");
    assert_eq!(app.credits(&token).await, (100, 0));
    // Its message, delivered afterwards, does nothing.
    let body = json!({ "job_id": id }).to_string();
    assert_eq!(
        worker::process(&app.running.gateway.state, &body)
            .await
            .expect("late"),
        Disposition::Done
    );
    assert_eq!(
        app.get_json(&format!("/v1/jobs/{id}"), &token).await["status"],
        "CANCELED"
    );
}

#[tokio::test]
async fn bad_submissions_admit_nothing_and_charge_nothing() {
    let app = TestApp::spawn_without_worker(&[("ALLOW_PRIVATE_WEBHOOKS", "false")]).await;
    let (token, _) = app.user("careless").await;
    let cases = [
        (json!({"kind": "teleport", "input": {}}), "kind"),
        (json!({"kind": "sleep", "input": {"ms": -5}}), "input.ms"),
        (
            json!({"kind": "sleep", "input": {"ms": 10, "speed": "fast"}}),
            "input.speed",
        ),
        (json!({"kind": "sleep", "input": "zzz"}), "input"),
        (
            json!({"kind": "sleep", "input": {"ms": 10}, "webhook_url": "http://hooks.example.com/x"}),
            "webhook_url",
        ),
        (
            json!({"kind": "sleep", "input": {"ms": 10}, "webhook_url": "https://127.0.0.1/x"}),
            "webhook_url",
        ),
        (
            json!({"kind": "sleep", "input": {"ms": 10}, "webhook_url": "https://169.254.169.254/x"}),
            "webhook_url",
        ),
        (
            json!({"kind": "sleep", "input": {"ms": 10}, "webhook_url": "https://localhost/x"}),
            "webhook_url",
        ),
        (
            json!({"kind": "sleep", "input": {"ms": 10}, "priority": 1}),
            "priority",
        ),
    ];
    for (body, field) in cases {
        let problem = problem(app.submit(&token, &body).await, 422, "validation_failed").await;
        let fields: Vec<_> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["field"].clone())
            .collect();
        assert!(fields.iter().any(|f| f == field), "{body}: {fields:?}");
    }
    let bad_key = app
        .client
        .post(app.url("/v1/jobs"))
        .bearer_auth(&token)
        .header("idempotency-key", "")
        .json(&sleep_job(10))
        .send()
        .await
        .expect("r");
    problem(bad_key, 400, "invalid_idempotency_key").await;
    let anonymous = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&sleep_job(10))
        .send()
        .await
        .expect("r");
    problem(anonymous, 401, "invalid_token").await;

    // A cursor that was tampered with, or made for someone else, is refused.
    for _ in 0..3 {
        assert_eq!(app.submit(&token, &sleep_job(10)).await.status(), 202);
    }
    let page = app.get_json("/v1/jobs?limit=1", &token).await;
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let mut tampered = cursor.clone().into_bytes();
    tampered[2] = if tampered[2] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let (other, _) = app.user("other_user").await;
    for (who, cursor) in [
        (&token, tampered.as_str()),
        (&token, "garbage"),
        (&other, cursor.as_str()),
    ] {
        let response = app
            .get_with_token(&format!("/v1/jobs?cursor={cursor}"), who)
            .await;
        problem(response, 400, "invalid_cursor").await;
    }
    // Only the three valid jobs were admitted and charged.
    assert_eq!(app.credits(&token).await, (97, 3));
    assert_eq!(
        app.get_json("/v1/jobs", &token).await["items"]
            .as_array()
            .expect("items")
            .len(),
        3
    );
}

#[tokio::test]
async fn out_of_credits_is_402_and_the_idempotency_key_replays() {
    let app = TestApp::spawn_without_worker(&[("STARTING_CREDITS", "2")]).await;
    let (token, _) = app.user("thrifty").await;
    let keyed = |key: &'static str, body: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            app.client
                .post(app.url("/v1/jobs"))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .expect("r")
        }
    };
    let first: Value = keyed("order-1", sleep_job(10))
        .await
        .json()
        .await
        .expect("json");
    let again = keyed("order-1", sleep_job(10)).await;
    assert_eq!(again.status(), 202);
    assert_eq!(
        again.json::<Value>().await.expect("json")["id"],
        first["id"],
        "the same job, not a new one"
    );
    problem(
        keyed("order-1", sleep_job(20)).await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.credits(&token).await, (1, 1), "charged once");

    assert_eq!(app.submit(&token, &sleep_job(10)).await.status(), 202);
    let broke = problem(
        app.submit(&token, &sleep_job(10)).await,
        402,
        "insufficient_credits",
    )
    .await;
    assert_eq!(
        (broke["balance"].as_i64(), broke["cost"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(app.credits(&token).await, (0, 2));
}

#[tokio::test]
async fn jobs_list_newest_first_in_pages_with_filters() {
    let caps = [
        ("JOB_CAP_FREE", "10"),
        ("JOB_CAP_STANDARD", "10"),
        ("JOB_CAP_PREMIUM", "10"),
    ];
    let app = TestApp::spawn_without_worker(&caps).await;
    let (token, _) = app.user("lister").await;
    let mut ids = Vec::new();
    for ms in [1, 2, 3, 4, 5] {
        let body: Value = app
            .submit(&token, &sleep_job(ms))
            .await
            .json()
            .await
            .expect("json");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    // Cancel one so the status filter has something to tell apart.
    let canceled = &ids[1];
    app.client
        .post(app.url(&format!("/v1/jobs/{canceled}/cancel")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("r");

    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=2".to_owned();
    loop {
        let page = app.get_json(&path, &token).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|j| j["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let only_canceled = app.get_json("/v1/jobs?status=CANCELED", &token).await;
    let items = only_canceled["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(&items[0]["id"], canceled.as_str());
    assert_eq!(
        app.get_json("/v1/jobs?kind=sleep&status=IN_QUEUE", &token)
            .await["items"]
            .as_array()
            .expect("i")
            .len(),
        4
    );
    assert_eq!(
        app.get_json("/v1/jobs?kind=upscale", &token).await["items"]
            .as_array()
            .expect("i")
            .len(),
        0
    );
    problem(
        app.get_with_token("/v1/jobs?status=DONE", &token).await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        app.get_with_token("/v1/jobs?limit=1000", &token).await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn admins_grant_credits_and_the_ledger_records_them() {
    let app = TestApp::spawn_without_worker(&[("REGISTER_RATE_PER_MINUTE", "100")]).await;
    let (user_token, user_id) = app.user("grantee").await;
    let admin = app.register("boss@example.com", "boss").await;
    let grant = |token: String, body: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/admin/credits/grants"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("r")
        }
    };
    let body = json!({"user_id": user_id, "amount": 50, "note": "welcome bonus"});
    problem(
        grant(
            admin["access_token"].as_str().expect("t").to_owned(),
            body.clone(),
        )
        .await,
        403,
        "forbidden",
    )
    .await;

    // An operator makes the account an admin in the table; its next token carries the role.
    app.make_admin(admin["user"]["id"].as_str().expect("id"))
        .await;
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "boss", "password": crate::app::PASSWORD}),
        )
        .await;
    let admin_token = login.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("t")
        .to_owned();

    let granted = grant(admin_token.clone(), body).await;
    assert_eq!(granted.status(), 201);
    assert_eq!(granted.json::<Value>().await.expect("json")["balance"], 150);
    assert_eq!(app.credits(&user_token).await, (150, 0));
    let ledger = app.get_json("/v1/credits/transactions", &user_token).await;
    let grants: Vec<_> = ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["reason"] == "grant")
        .collect();
    assert_eq!(grants.len(), 2, "the starting grant and this one");
    assert!(
        grants
            .iter()
            .any(|g| g["amount"] == 50 && g["note"] == "welcome bonus")
    );

    let unknown = json!({"user_id": uuid::Uuid::new_v4().to_string(), "amount": 5});
    problem(grant(admin_token.clone(), unknown).await, 404, "not_found").await;
    let silly = json!({"user_id": user_id, "amount": 0});
    problem(grant(admin_token, silly).await, 422, "validation_failed").await;
    assert_eq!(app.credits(&user_token).await, (150, 0));
}

#[test]
fn worker_timeouts_fit_the_queue_visibility() {
    // The template's queue visibility must be at least 6 x the worker's timeout.
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(lambent_local::repo_root().join("template.yaml")).expect("read"),
    )
    .expect("yaml");
    let resources = &template["Resources"];
    let timeout = resources["RunJobFunction"]["Properties"]["Timeout"]
        .as_u64()
        .expect("timeout");
    let visibility = resources["JobsQueue"]["Properties"]["VisibilityTimeout"]
        .as_u64()
        .expect("visibility");
    assert!(visibility >= 6 * timeout, "{visibility} < 6 x {timeout}");
    let _ = Duration::from_secs(visibility);
}
