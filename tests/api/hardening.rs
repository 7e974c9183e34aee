//! What the outside attack run found (issue #10), each through HTTP against the emulator, with
//! the emulator's fault switch and DynamoDB's key limits where the finding needs them.

use serde_json::{Value, json};

use crate::app::{PASSWORD, TRANSACT, TestApp, problem};

async fn token_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("json")
}

/// DynamoDB cancels a transaction that races another on one item (`TransactionConflict`): every
/// transaction (registration, sign-in, refresh rotation, grants) is retried, never a 500, and a
/// raced refresh still ends in reuse detection.
#[tokio::test]
async fn transaction_conflicts_are_retried_everywhere() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let email = format!("conflict-{}@example.com", uuid::Uuid::new_v4().simple());
    app.fault(TRANSACT, &email, 2, json!({"error": "TransactionConflict"}))
        .await;
    let registered = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": email, "username": "conflicted", "password": PASSWORD}),
        )
        .await;
    let registered = token_of(registered, 201).await;
    assert_eq!(
        app.fired(TRANSACT, &email).await,
        2,
        "both conflicts were met"
    );
    let user_id = registered["user"]["id"].as_str().expect("id").to_owned();

    // Sign-in starts a session (family + refresh token) in one transaction naming the user.
    app.fault(
        TRANSACT,
        &user_id,
        2,
        json!({"error": "TransactionConflict"}),
    )
    .await;
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "conflicted", "password": PASSWORD}),
        )
        .await;
    let login = token_of(login, 200).await;
    assert_eq!(app.fired(TRANSACT, &user_id).await, 2);

    // Rotation: conflicts retried; the old token then counts as used.
    let old = login["refresh_token"].as_str().expect("refresh").to_owned();
    app.fault(
        TRANSACT,
        &user_id,
        3,
        json!({"error": "TransactionConflict"}),
    )
    .await;
    let rotated = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": old}))
        .await;
    token_of(rotated, 200).await;
    assert_eq!(app.fired(TRANSACT, &user_id).await, 5);
    let reused = app
        .post_json("/v1/auth/refresh", &json!({"refresh_token": old}))
        .await;
    problem(reused, 401, "refresh_token_reused").await;

    // A grant by an admin.
    app.make_admin(&user_id).await;
    let admin = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "conflicted", "password": PASSWORD}),
        )
        .await;
    let admin = token_of(admin, 200).await["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let (grantee_token, grantee) = app.user("grantee").await;
    app.fault(
        TRANSACT,
        &grantee,
        2,
        json!({"error": "TransactionConflict"}),
    )
    .await;
    let granted = app
        .client
        .post(app.url("/v1/admin/credits/grants"))
        .bearer_auth(&admin)
        .json(&json!({"user_id": grantee, "amount": 7}))
        .send()
        .await
        .expect("grant");
    assert_eq!(granted.status(), 201);
    assert_eq!(app.fired(TRANSACT, &grantee).await, 2);
    let (balance, _) = app.credits(&grantee_token).await;
    assert_eq!(balance, 107, "granted exactly once");
}

/// A login name longer than DynamoDB's 2,048-byte key limit (which the emulator enforces on
/// reads, as AWS does) is an unknown account, not a 500.
#[tokio::test]
async fn login_names_over_the_key_limit_are_unknown_accounts() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let long = "a".repeat(3000);
    for body in [
        json!({"username": long, "password": PASSWORD}),
        json!({"email": format!("{long}@example.com"), "password": PASSWORD}),
    ] {
        let response = app.post_json("/v1/auth/login", &body).await;
        problem(response, 401, "invalid_credentials").await;
    }
    let form = app
        .client
        .post(app.url("/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", long.as_str()),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("token");
    problem(form, 401, "invalid_credentials").await;
}

const SEND: &str = "AmazonSQS.SendMessage";

fn sleep_job(ms: u64) -> Value {
    json!({"kind": "sleep", "input": {"ms": ms}})
}

/// What a job-queue SendMessage request names: the queue's URL, quoted as in the JSON body.
fn jobs_queue(app: &TestApp) -> String {
    format!("\"{}\"", app.running.stack.refs["JobsQueue"])
}

/// Outbox entries left in the table.
async fn outbox_entries(app: &TestApp) -> usize {
    app.items()
        .await
        .iter()
        .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk.starts_with("OUTBOX#")))
        .count()
}

/// A send that fails after the admission committed no longer refunds and answers 503: the job
/// is admitted, so it is queued: the outbox entry written with the admission makes the reaper
/// send it, and it runs.
#[tokio::test]
async fn a_job_whose_send_failed_is_sent_by_the_outbox_and_runs() {
    let app = TestApp::spawn_with(&[("OUTBOX_GRACE_SECONDS", "1")]).await;
    let (token, _) = app.user("unsent").await;
    let queue = jobs_queue(&app);
    app.fault(
        SEND,
        &queue,
        1,
        json!({"error": "AWS.SimpleQueueService.InternalError"}),
    )
    .await;
    let response = app.submit(&token, &sleep_job(10)).await;
    assert_eq!(response.status(), 202, "admitted is queued");
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.fired(SEND, &queue).await, 1, "the first send failed");
    let done = app
        .wait_for_job(&token, &id, |job| job["status"] == "COMPLETED")
        .await;
    assert_eq!(done["progress"], 100);
    assert_eq!(
        app.credits(&token).await,
        (99, 0),
        "charged once, slot free"
    );
    assert_eq!(outbox_entries(&app).await, 0, "the outbox is empty again");
}

/// A client that hangs up while its submission is being handled does not stop the handler half
/// way (the local gateway runs it to its end, as Lambda does): the message is sent, the job runs.
/// The outbox's grace is long here, so only the handler itself can have sent it.
#[tokio::test]
async fn a_client_that_hangs_up_does_not_stop_its_submission() {
    let app = TestApp::spawn_with(&[("OUTBOX_GRACE_SECONDS", "600")]).await;
    let (token, user_id) = app.user("hangup").await;
    // The admission commits 1.5 s after the client has gone (the emulator finishes what it
    // received); a handler dropped with its client would never send the message.
    app.fault(TRANSACT, &user_id, 1, json!({"delay_ms": 1500}))
        .await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .expect("client");
    let gone = impatient
        .post(app.url("/v1/jobs"))
        .bearer_auth(&token)
        .json(&sleep_job(10))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up before the answer");
    let mut listed = app.get_json("/v1/jobs", &token).await;
    while listed["items"][0]["id"].is_null() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        listed = app.get_json("/v1/jobs", &token).await;
    }
    let id = listed["items"][0]["id"]
        .as_str()
        .expect("admitted")
        .to_owned();
    let done = app
        .wait_for_job(&token, &id, |job| job["status"] == "COMPLETED")
        .await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(app.fired(TRANSACT, &user_id).await, 1);
    assert_eq!(app.credits(&token).await, (99, 0));
}

/// An admission that commits but answers after the SDK's attempt timeout (2.5 s) is retried by
/// the SDK under the same client request token, which DynamoDB (and the emulator) answer as done:
/// the client gets its 202 for the one job admitted, charged once. (Under load this was a 500 for a
/// job that had been admitted: the retry met its own committed writes.) The same token with
/// another request is refused.
#[tokio::test]
async fn an_admission_answered_late_is_retried_as_done_not_refused() {
    let app = TestApp::spawn_with(&[]).await;
    let (token, user_id) = app.user("latecommit").await;
    app.fault(TRANSACT, &user_id, 1, json!({"answer_delay_ms": 3000}))
        .await;
    let submitted = app.submit(&token, &sleep_job(10)).await;
    assert_eq!(submitted.status(), 202, "the retry is answered as done");
    let job: Value = submitted.json().await.expect("json");
    assert_eq!(
        app.fired(TRANSACT, &user_id).await,
        1,
        "the answer was late"
    );
    let id = job["id"].as_str().expect("id");
    let done = app
        .wait_for_job(&token, id, |job| job["status"] == "COMPLETED")
        .await;
    assert_eq!(done["status"], "COMPLETED");
    let listed = app.get_json("/v1/jobs", &token).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "one job");
    assert_eq!(
        app.credits(&token).await,
        (99, 0),
        "charged once, slot free"
    );
    let ledger = app.get_json("/v1/credits/transactions", &token).await;
    let debits = ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"] == "job_debit")
        .count();
    assert_eq!(debits, 1, "{ledger}");

    // The emulator keeps DynamoDB's rule for a token reused with another request.
    let dynamodb = aws_sdk_dynamodb::Client::new(&app.running.sdk);
    let table = &app.running.stack.refs["Table"];
    let put = |sk: &str| {
        aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .put(
                aws_sdk_dynamodb::types::Put::builder()
                    .table_name(table)
                    .item(
                        "pk",
                        aws_sdk_dynamodb::types::AttributeValue::S("TOKENTEST".into()),
                    )
                    .item("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk.into()))
                    .build()
                    .expect("put"),
            )
            .build()
    };
    let send = |sk: &'static str| {
        dynamodb
            .transact_write_items()
            .transact_items(put(sk))
            .client_request_token("one-token")
            .send()
    };
    send("a").await.expect("first");
    send("a").await.expect("the same request again");
    let other = send("b").await.expect_err("another request");
    assert!(
        matches!(
            other.as_service_error(),
            Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::IdempotentParameterMismatchException(_))
        ),
        "{other:?}"
    );
}

/// A password change that commits but answers after the SDK's attempt timeout is sent again and
/// fails its own condition (the old hash is gone): the hash it finds is the new one, so the change
/// is answered 200, not 409 `password_changed` for a change that was made.
#[tokio::test]
async fn a_password_change_answered_late_is_answered_as_made() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, user_id) = app.user("latepass").await;
    let update = "DynamoDB_20120810.UpdateItem";
    let change = json!([user_id, "password_hash = :old"]);
    app.answer_late(update, &change).await;
    let changed = app
        .client
        .post(app.url("/v1/auth/password"))
        .bearer_auth(&token)
        .json(&json!({"current_password": PASSWORD, "new_password": "a later password"}))
        .send()
        .await
        .expect("change");
    assert_eq!(changed.status(), 200);
    assert_eq!(app.fired_where(update, change).await, 1, "answered late");
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"username": "latepass", "password": "a later password"}),
        )
        .await;
    assert_eq!(login.status(), 200);
}

/// One overdue job whose release keeps failing does not stop the reaper: the others behind it
/// are reaped. (The failing job is in the index partition the reaper reads first.)
#[tokio::test]
async fn the_reaper_goes_past_a_job_it_cannot_release() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, _) = app.user("reaped").await;
    let shard = |id: &str| lambent::keys::active_shard(id);
    let (mut first, mut last) = (None, None);
    for _ in 0..60 {
        let id = app.submit_id(&token, &sleep_job(10)).await;
        if first.is_none() && shard(&id) == "ACTIVE#0" {
            first = Some(id);
        } else if last.is_none() && shard(&id) == "ACTIVE#3" {
            last = Some(id);
        } else {
            let canceled = app.cancel(&token, &id).await;
            assert_eq!(canceled.status(), 200);
        }
        if first.is_some() && last.is_some() {
            break;
        }
    }
    let (stuck, healthy) = (
        first.expect("a job in shard 0"),
        last.expect("a job in shard 3"),
    );
    app.fault(
        TRANSACT,
        &stuck,
        1000,
        json!({"error": "InternalServerError"}),
    )
    .await;
    // Both claimed by a worker that dies at once: overdue in a second.
    let db = &app.running.gateway.state.db;
    for id in [&stuck, &healthy] {
        lambent::jobs::store::claim(db, id, std::time::Duration::ZERO, chrono::Utc::now())
            .await
            .expect("claim")
            .expect("claimed");
    }
    let reaped = app
        .wait_for_job(&token, &healthy, |job| job["status"] != "IN_PROGRESS")
        .await;
    assert_eq!(reaped["error"]["type"], "timed_out");
    assert!(
        app.fired(TRANSACT, &stuck).await > 0,
        "the stuck job was tried"
    );
    let stuck_job = app.get_json(&format!("/v1/jobs/{stuck}"), &token).await;
    assert_eq!(
        stuck_job["status"], "IN_PROGRESS",
        "its release keeps failing"
    );
}

/// An `Idempotency-Key` that is not visible ASCII reaches the handler (API Gateway passes it) and
/// is refused: not dropped, which made two charged jobs of one retried request.
#[tokio::test]
async fn a_non_ascii_idempotency_key_is_refused_not_dropped() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, _) = app.user("unicode").await;
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/v1/jobs"))
            .bearer_auth(&token)
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes("ключ-1".as_bytes()).expect("value"),
            )
            .json(&sleep_job(10))
            .send()
            .await
            .expect("submit");
        problem(response, 400, "invalid_idempotency_key").await;
    }
    assert_eq!(app.credits(&token).await, (100, 0), "nothing charged");
}

/// Sends raw HTTP/1.1 and returns the status line, or what came back if it was not one.
async fn raw_status(base: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("<closed without an answer>")
        .to_owned()
}

/// A `Host` that is no host gets a 400, not a closed connection (lambda_http panicked on it).
#[tokio::test]
async fn a_malformed_host_header_is_a_400() {
    let app = TestApp::spawn_without_worker(&[]).await;
    for host in ["exa mple.com", "[::1", "a\"b", "host:port:9"] {
        let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let status = raw_status(&app.base, request.as_bytes()).await;
        assert!(
            status.starts_with("HTTP/1.1 400"),
            "Host {host:?}: {status}"
        );
    }
    let fine = raw_status(
        &app.base,
        b"GET /health HTTP/1.1\r\nHost: api.example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

/// The discovery document is cached for an hour: its URLs come from configuration, never from
/// the client's `Host`.
#[tokio::test]
async fn the_discovery_document_ignores_the_host_header() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let document: Value = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .header("host", "evil.example")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(document["issuer"], app.base.as_str());
    assert_eq!(
        document["jwks_uri"],
        format!("{}/.well-known/jwks.json", app.base)
    );
}

/// A DynamoDB that throttles us past the SDK's retries is a 503 with `Retry-After` (retry
/// shortly), not a 500 that hides a fault of ours.
#[tokio::test]
async fn a_throttled_dependency_is_a_503_to_retry() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, user_id) = app.user("throttled").await;
    app.fault(
        "DynamoDB_20120810.GetItem",
        &format!("USER#{user_id}"),
        10,
        json!({"error": "ProvisionedThroughputExceededException"}),
    )
    .await;
    let response = app.get_with_token("/v1/credits", &token).await;
    assert_eq!(response.headers()["retry-after"], "1");
    problem(response, 503, "unavailable").await;
    assert!(
        app.fired("DynamoDB_20120810.GetItem", &format!("USER#{user_id}"))
            .await
            >= 3,
        "retried first"
    );
}

/// The emulator deletes what DynamoDB's TTL would, and only that: a number of epoch seconds in
/// the past goes (from its index partition too); the future, a value more than five years old
/// (DynamoDB ignores it) and a value that is not a number stay.
#[tokio::test]
async fn the_emulator_applies_ttl_as_dynamodb_does() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use lambent::db::{n, s};

    let app = TestApp::spawn().await;
    let table = app.running.stack.refs["Table"].clone();
    let client = aws_sdk_dynamodb::Client::new(&app.running.sdk);
    let now = chrono::Utc::now().timestamp();
    let cases = [
        ("past", n(now - 60)),
        ("future", n(now + 3_600)),
        ("ancient", n(now - 6 * 365 * 86_400)),
        ("text", s((now - 60).to_string())),
    ];
    for (name, expires) in &cases {
        client
            .put_item()
            .table_name(&table)
            .item("pk", s(format!("TTLTEST#{name}")))
            .item("sk", s("x"))
            .item("gsi1pk", s("TTLTEST"))
            .item("gsi1sk", s(*name))
            .item("expires_at", expires.clone())
            .send()
            .await
            .expect("put");
    }
    let swept: Value = app
        .client
        .post(format!("{}/_lambent/ttl-sweep", app.endpoint))
        .json(&json!({"table": table}))
        .send()
        .await
        .expect("sweep")
        .json()
        .await
        .expect("json");
    assert_eq!(swept["deleted"], 1, "only the past item expired: {swept}");
    let left: Vec<String> = app
        .items()
        .await
        .iter()
        .filter_map(|i| i["pk"].as_s().ok())
        .filter_map(|pk| pk.strip_prefix("TTLTEST#").map(str::to_owned))
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["ancient", "future", "text"]);
    let indexed = client
        .query()
        .table_name(&table)
        .index_name("gsi1")
        .key_condition_expression("gsi1pk = :p")
        .expression_attribute_values(":p", s("TTLTEST"))
        .send()
        .await
        .expect("query");
    let mut names: Vec<&str> = indexed
        .items()
        .iter()
        .filter_map(|i| i.get("gsi1sk").and_then(|v: &AttributeValue| v.as_s().ok()))
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["ancient", "future", "text"]);
}

/// Under overload the gateway's timed-out attempts leave connections open at the emulator until
/// their turn comes. waitress watched its connections with select(), which cannot take a
/// descriptor past 1023: its loop died of it ("filedescriptor out of range in select()"), and
/// with it the emulator, mid-way through a load run of 200 clients on 2 cores. 1,100 idle
/// connections at once, then requests that need the emulator.
#[tokio::test]
async fn the_emulator_outlives_more_connections_than_select_can_watch() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn_without_worker(&[]).await;
    // Python opens them: it may raise its own limit on open files, which the soft limit of 1024
    // that many machines give a process would otherwise stop short of.
    let hold = r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft != resource.RLIM_INFINITY and soft < 2048:
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048 if hard == resource.RLIM_INFINITY else min(2048, hard), hard))
host, port = sys.argv[1].rsplit(":", 1)
held = [socket.create_connection((host, int(port))) for _ in range(1100)]
print("held", flush=True)
sys.stdin.read()
"#;
    let mut holder =
        tokio::process::Command::new(lambent_local::repo_root().join(".venv/bin/python"))
            .args(["-c", hold, app.endpoint.trim_start_matches("http://")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python");
    let mut line = String::new();
    tokio::io::BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .await
        .expect("read");
    assert_eq!(line.trim(), "held", "the connections were not all opened");
    // Accepted after the 1,100 (the listening socket's queue is first come, first served), this
    // account's writes find the emulator alive.
    app.register("crowd@example.com", "crowd").await;
    let mut stdin = holder.stdin.take().expect("stdin");
    stdin.shutdown().await.expect("close");
    drop(stdin);
    holder.wait().await.expect("python exits");
    app.register("after@example.com", "after").await;
}
