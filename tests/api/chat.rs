//! WEAV's chat: messages in a session, replies written by a `chat` job at an OpenAI-compatible
//! provider (the local fake, which streams words and counts tokens), streamed as Server-Sent
//! Events from the streaming function URL or polled; priced by the provider's usage, the estimate
//! settled in the release.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, assert_ledger_sums, call, finished, ledger, ok_json, problem};

/// An event of a stream and when it came (since the request was sent).
struct Event {
    name: String,
    data: Value,
    at: Duration,
}

/// Posts to the streaming function URL and reads its events as they come.
async fn stream(app: &TestApp, token: &str, path: &str, body: &Value) -> (u16, Vec<Event>) {
    let started = Instant::now();
    let mut response = app
        .client
        .post(format!("{}{path}", app.running.stream_url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("stream request");
    let status = response.status().as_u16();
    let mut events = Vec::new();
    let mut pending = String::new();
    while let Some(chunk) = response.chunk().await.expect("a chunk") {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            events.push(Event {
                name,
                data: serde_json::from_str(&data).expect("JSON data"),
                at: started.elapsed(),
            });
        }
    }
    if status != 200 {
        // A problem+json answer: one "event" of the whole body.
        events.push(Event {
            name: "problem".into(),
            data: serde_json::from_str(&pending).unwrap_or(Value::Null),
            at: started.elapsed(),
        });
    }
    (status, events)
}

fn texts(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.name == "delta")
        .map(|e| e.data["text"].as_str().expect("text"))
        .collect()
}

async fn chat_session(app: &TestApp, token: &str, kind: &str) -> String {
    let made = ok_json(
        call(
            app,
            Method::POST,
            "/v1/sessions",
            Some(token),
            Some(&json!({ "kind": kind })),
        )
        .await,
        201,
    )
    .await;
    made["id"].as_str().expect("id").to_owned()
}

/// Credits of `usage` at the default model's prices (1 and 2 per 1,000 tokens), rounded up.
fn price(usage: &Value) -> i64 {
    let input = usage["input_tokens"].as_i64().expect("input");
    let output = usage["output_tokens"].as_i64().expect("output");
    (input + 2 * output + 999) / 1000
}

/// What the fake counts for a conversation it was sent (its tokenizer: a quarter of the bytes).
fn fake_prompt_tokens(messages: &[(String, String)]) -> i64 {
    messages
        .iter()
        .map(|(_, c)| lambent_local::fakes::llm::tokens(c) + 3)
        .sum()
}

/// Every message of a session, oldest first, through pages of `limit`.
async fn all_messages(app: &TestApp, token: &str, session: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/sessions/{session}/messages?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(&path, token).await;
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn a_three_turn_chat_streams_as_written_is_stored_as_streamed_and_settles_to_usage() {
    let (app, fakes) = crate::generation::start(&[], true).await;
    let first_token = Duration::from_millis(400);
    let between = Duration::from_millis(120);
    fakes.llm().configure(|l| {
        l.first_token_delay = first_token;
        l.token_delay = between;
    });
    let (token, _) = app.user("talker").await;
    let session = chat_session(&app, &token, "chat").await;
    let prompts = [
        "Tell me about lighthouses at night",
        "Which one is the oldest still standing",
        "And how tall is it",
    ];
    for (turn, prompt) in prompts.iter().enumerate() {
        let (status, events) = stream(
            &app,
            &token,
            &format!("/v1/sessions/{session}/messages"),
            &json!({ "content": prompt }),
        )
        .await;
        assert_eq!(status, 200);
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"accepted"), "{names:?}");
        assert_eq!(names.last(), Some(&"done"), "{names:?}");
        let accepted = &events[0].data;
        assert_eq!(accepted["user_message"]["content"], *prompt);
        assert_eq!(accepted["reply"]["status"], "pending");
        // Streamed as written: the first piece comes with the fake's first token (not after the
        // whole reply), and the reply's last piece comes words later.
        let deltas: Vec<&Event> = events.iter().filter(|e| e.name == "delta").collect();
        assert!(deltas.len() >= 5, "{names:?}");
        let first = deltas[0].at;
        let last = deltas[deltas.len() - 1].at;
        assert!(
            first < first_token + Duration::from_secs(3),
            "the first piece came after {first:?}"
        );
        assert!(
            last >= first + between * 3,
            "pieces came together: first {first:?}, last {last:?}"
        );
        let streamed = texts(&events);
        assert_eq!(streamed, format!("You said: {prompt}"));
        // The end: the stored reply is the streamed text; the job kept what the usage cost.
        let done = &events[events.len() - 1].data;
        assert_eq!(done["reply"]["content"], streamed.as_str());
        assert_eq!(done["reply"]["status"], "completed");
        let usage = &done["reply"]["usage"];
        let sent = &fakes.llm().requests()[turn];
        assert_eq!(
            usage["input_tokens"].as_i64(),
            Some(fake_prompt_tokens(&sent.messages)),
            "the provider's usage, as reported"
        );
        assert_eq!(done["job"]["status"], "COMPLETED");
        assert_eq!(done["job"]["charged"].as_i64(), Some(price(usage)));
        assert!(done["job"]["cost"].as_i64() >= done["job"]["charged"].as_i64());
        // The context: every earlier turn, oldest first, then this prompt.
        let roles: Vec<&str> = sent.messages.iter().map(|(r, _)| r.as_str()).collect();
        let expected: Vec<&str> = (0..turn)
            .flat_map(|_| ["user", "assistant"])
            .chain(["user"])
            .collect();
        assert_eq!(roles, expected);
        assert_eq!(sent.messages.last().map(|(_, c)| c.as_str()), Some(*prompt));
        let job = app
            .get_json(
                &format!("/v1/jobs/{}", accepted["job"]["id"].as_str().expect("id")),
                &token,
            )
            .await;
        assert_eq!(job["charged"], done["job"]["charged"]);
    }
    // The session lists all six, in order, as stored.
    let messages = all_messages(&app, &token, &session, 4).await;
    assert_eq!(messages.len(), 6);
    for (i, message) in messages.iter().enumerate() {
        let prompt = prompts[i / 2];
        if i % 2 == 0 {
            assert_eq!(message["role"], "user");
            assert_eq!(message["content"], prompt);
        } else {
            assert_eq!(message["role"], "assistant");
            assert_eq!(message["content"], format!("You said: {prompt}"));
            assert_eq!(message["version_count"], 1);
        }
    }
    let stored = app
        .get_json(&format!("/v1/sessions/{session}"), &token)
        .await;
    assert_eq!(stored["message_count"], 6);
    assert_eq!(stored["title"], prompts[0], "titled by the first prompt");

    // Regenerate the last reply (polled, not streamed): both versions kept, the newest shown.
    fakes.llm().configure(|l| {
        l.reply = Some("The tallest is about fifty metres".into());
        l.first_token_delay = Duration::from_millis(10);
        l.token_delay = Duration::from_millis(5);
    });
    let reply_id = messages[5]["id"].as_str().expect("id");
    // Its count of versions is answered after the SDK's attempt timeout: the retry must not count
    // the version twice.
    let update = "DynamoDB_20120810.UpdateItem";
    let count = json!([reply_id, "ADD version_count"]);
    app.answer_late_either(update, &count).await;
    let posted = ok_json(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages/{reply_id}/regenerate"),
            Some(&token),
            None,
        )
        .await,
        202,
    )
    .await;
    assert!(posted["user_message"].is_null());
    assert_eq!(posted["stream_url"], app.running.stream_url);
    let job = finished(&app, &token, posted["job"]["id"].as_str().expect("job")).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let detail = app
        .get_json(
            &format!("/v1/sessions/{session}/messages/{reply_id}"),
            &token,
        )
        .await;
    assert_eq!(detail["content"], "The tallest is about fifty metres");
    assert_eq!(app.retried(&count).await, 1, "answered late");
    let detail = app
        .get_json(
            &format!("/v1/sessions/{session}/messages/{reply_id}"),
            &token,
        )
        .await;
    assert_eq!(detail["version_count"], 2);
    let versions: Vec<&str> = detail["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["content"].as_str().expect("content"))
        .collect();
    assert_eq!(
        versions,
        [
            "You said: And how tall is it",
            "The tallest is about fifty metres"
        ]
    );
    // The regenerate's context is the same conversation, without the reply it replaces.
    let sent = fakes.llm().requests();
    assert_eq!(sent[3].messages, sent[2].messages);

    // Money: each reply debited its estimate and got back all but its usage's price.
    let debits = ledger(&app, &token, Some("job_debit")).await;
    let settles = ledger(&app, &token, Some("job_settle")).await;
    assert_eq!(debits.len(), 4);
    for debit in &debits {
        let job_id = debit["job_id"].as_str().expect("job");
        let job = app.get_json(&format!("/v1/jobs/{job_id}"), &token).await;
        let kept = job["charged"].as_i64().expect("charged");
        let back: i64 = settles
            .iter()
            .filter(|s| s["job_id"] == job_id)
            .map(|s| s["amount"].as_i64().expect("amount"))
            .sum();
        assert_eq!(-debit["amount"].as_i64().expect("amount"), kept + back);
        assert!(kept >= 1);
    }
    assert_ledger_sums(&app, &token).await;
}

#[tokio::test]
async fn a_failure_mid_stream_refunds_and_two_regenerates_charge_twice() {
    let (app, fakes) = crate::generation::start(&[], true).await;
    let (token, _) = app.user("failing").await;
    let session = chat_session(&app, &token, "studio").await;
    let before = app.credits(&token).await.0;

    // The provider fails after two pieces: the stream tells it, the reply is failed, refunded.
    fakes.llm().configure(|l| l.fail_after = Some(2));
    let (status, events) = stream(
        &app,
        &token,
        &format!("/v1/sessions/{session}/messages"),
        &json!({ "content": "one two three four five" }),
    )
    .await;
    assert_eq!(status, 200);
    let end = events.last().expect("an end");
    assert_eq!(end.name, "error", "{:?}", end.data);
    assert_eq!(end.data["type"], "provider_error");
    assert_eq!(end.data["job"]["status"], "FAILED");
    assert_eq!(texts(&events), "You said:");
    let reply_id = events[0].data["reply"]["id"]
        .as_str()
        .expect("reply")
        .to_owned();
    let reply = app
        .get_json(
            &format!("/v1/sessions/{session}/messages/{reply_id}"),
            &token,
        )
        .await;
    assert_eq!(reply["status"], "failed");
    assert_eq!(reply["versions"][0]["status"], "failed");
    assert_eq!(
        app.credits(&token).await,
        (before, 0),
        "refunded, slot freed"
    );
    assert_eq!(ledger(&app, &token, Some("job_refund")).await.len(), 1);

    // Two regenerates at once: two jobs, two versions, two charges (never three).
    fakes.llm().configure(|l| l.fail_after = None);
    let path = format!("/v1/sessions/{session}/messages/{reply_id}/regenerate");
    let empty = json!({});
    let (a, b) = tokio::join!(
        call(&app, Method::POST, &path, Some(&token), Some(&empty)),
        call(&app, Method::POST, &path, Some(&token), None)
    );
    let (a, b) = (ok_json(a, 202).await, ok_json(b, 202).await);
    for posted in [&a, &b] {
        let job = finished(&app, &token, posted["job"]["id"].as_str().expect("job")).await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
    }
    assert_ne!(a["job"]["id"], b["job"]["id"]);
    let detail = app
        .get_json(
            &format!("/v1/sessions/{session}/messages/{reply_id}"),
            &token,
        )
        .await;
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["version_count"], 2);
    assert_eq!(detail["versions"].as_array().expect("versions").len(), 3);
    assert_eq!(ledger(&app, &token, Some("job_debit")).await.len(), 3);
    assert_eq!(ledger(&app, &token, Some("job_settle")).await.len(), 2);
    assert_eq!(ledger(&app, &token, Some("job_refund")).await.len(), 1);
    assert_ledger_sums(&app, &token).await;
    assert_eq!(app.credits(&token).await.1, 0);
}

#[tokio::test]
async fn others_sessions_and_messages_are_404_and_bad_input_is_refused_cleanly() {
    let (app, fakes) = crate::generation::start(
        &[(
            "CHAT_MODELS",
            "openai:gpt-4o-mini:1:2,openai:costly:1000000:1000000,fal:google/gemini-2.5-flash:1:2",
        )],
        true,
    )
    .await;
    fakes
        .llm()
        .configure(|l| l.first_token_delay = Duration::from_millis(1));
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let session = chat_session(&app, &ann, "chat").await;
    let posted = ok_json(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&ann),
            Some(&json!({"content": "hello"})),
        )
        .await,
        202,
    )
    .await;
    let job = finished(&app, &ann, posted["job"]["id"].as_str().expect("job")).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let reply = posted["reply"]["id"].as_str().expect("reply");
    let user_message = posted["user_message"]["id"].as_str().expect("message");

    // Bob sees none of it, and cannot write to it, through the API or the stream.
    for path in [
        format!("/v1/sessions/{session}/messages"),
        format!("/v1/sessions/{session}/messages/{reply}"),
    ] {
        problem(
            call(&app, Method::GET, &path, Some(&bob), None).await,
            404,
            "not_found",
        )
        .await;
    }
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&bob),
            Some(&json!({"content": "mine now"})),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages/{reply}/regenerate"),
            Some(&bob),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let (status, events) = stream(
        &app,
        &bob,
        &format!("/v1/sessions/{session}/messages"),
        &json!({"content": "mine now"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(events[0].data["code"], "not_found");
    let (status, _) = stream(
        &app,
        "not-a-token",
        &format!("/v1/sessions/{session}/messages"),
        &json!({"content": "hi"}),
    )
    .await;
    assert_eq!(status, 401);
    // A chat job submitted by hand for someone else's reply is a 404 too, nothing debited.
    let before = app.credits(&bob).await.0;
    let submitted = app
        .submit(
            &bob,
            &json!({"kind": "chat", "input": {"session_id": session, "message_id": reply,
                "model": "gpt-4o-mini", "max_tokens": 10}}),
        )
        .await;
    problem(submitted, 404, "not_found").await;
    assert_eq!(app.credits(&bob).await.0, before);

    // A user's message is not a reply; an image session holds no chat.
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages/{user_message}/regenerate"),
            Some(&ann),
            None,
        )
        .await,
        422,
        "not_a_reply",
    )
    .await;
    let images = chat_session(&app, &ann, "image").await;
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{images}/messages"),
            Some(&ann),
            Some(&json!({"content": "hello"})),
        )
        .await,
        422,
        "session_kind",
    )
    .await;

    // Bad fields: every problem at once, nothing stored.
    let too_long = "a".repeat(32_001);
    let refused = problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&ann),
            Some(&json!({"content": too_long, "model": "gpt-9", "max_tokens": 0})),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = refused["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["content", "model", "max_tokens"]);
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&ann),
            Some(&json!({"content": "   "})),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(all_messages(&app, &ann, &session, 10).await.len(), 2);

    // fal's LLM endpoint (its key, its route) for a fal model; a busy provider is asked again.
    fakes.llm().configure(|l| l.refusals = [429, 503].into());
    let before = fakes.llm().requests().len();
    let (status, events) = stream(
        &app,
        &ann,
        &format!("/v1/sessions/{session}/messages"),
        &json!({"content": "through fal", "model": "google/gemini-2.5-flash"}),
    )
    .await;
    assert_eq!(status, 200, "{:?}", events.first().map(|e| &e.data));
    assert_eq!(events.last().map(|e| e.name.as_str()), Some("done"));
    assert_eq!(texts(&events), "You said: through fal");
    let asked = fakes.llm().requests();
    assert_eq!(asked.len() - before, 3, "two refusals, then the reply");
    assert!(
        asked[before..]
            .iter()
            .all(|r| r.via_fal && r.model == "google/gemini-2.5-flash")
    );

    // Out of credits for the estimate: refused (402), and the message and its reply taken back.
    let refused = call(
        &app,
        Method::POST,
        &format!("/v1/sessions/{session}/messages"),
        Some(&ann),
        Some(&json!({"content": "an expensive question", "model": "costly"})),
    )
    .await;
    problem(refused, 402, "insufficient_credits").await;
    assert_eq!(all_messages(&app, &ann, &session, 10).await.len(), 4);
    let stored = app.get_json(&format!("/v1/sessions/{session}"), &ann).await;
    assert_eq!(stored["message_count"], 4);
    assert_ledger_sums(&app, &ann).await;
}

/// A one-page PDF whose page shows `content` (a content stream), deflated.
fn pdf(content: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(content.as_bytes()).expect("deflate");
    let data = encoder.finish().expect("deflate");
    let mut out = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
        2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
        3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n"
        .to_vec();
    out.extend(
        format!(
            "4 0 obj << /Length {} /Filter /FlateDecode >>\nstream\n",
            data.len()
        )
        .as_bytes(),
    );
    out.extend(&data);
    out.extend(b"\nendstream\nendobj\ntrailer << /Root 1 0 R >>\n%%EOF\n");
    out
}

/// Creates a document, PUTs `bytes` (declaring `declared` bytes) and completes it.
async fn document(
    app: &TestApp,
    token: &str,
    session: &str,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
    declared: usize,
) -> reqwest::Response {
    let created = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/sessions/{session}/documents"),
            Some(token),
            Some(&json!({"filename": filename, "content_type": content_type, "size": declared})),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(created["document"]["status"], "uploading");
    let id = created["document"]["id"].as_str().expect("id");
    let stored = app
        .client
        .put(created["upload"]["url"].as_str().expect("url"))
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("put");
    assert!(stored.status().is_success());
    call(
        app,
        Method::POST,
        &format!("/v1/sessions/{session}/documents/{id}/complete"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn documents_are_read_at_upload_offered_as_context_and_refused_clearly() {
    let (app, fakes) = crate::generation::start(&[], true).await;
    fakes
        .llm()
        .configure(|l| l.first_token_delay = Duration::from_millis(1));
    let (ann, _) = app.user("reader").await;
    let (bob, _) = app.user("snoop").await;
    let session = chat_session(&app, &ann, "studio").await;

    // A PDF with a text layer, and a Markdown note: read, their text kept.
    let guide = pdf("BT /F1 12 Tf 72 712 Td (The Bell Rock lighthouse dates from 1810.) Tj ET");
    let read = ok_json(
        document(
            &app,
            &ann,
            &session,
            "guide.pdf",
            "application/pdf",
            guide.clone(),
            guide.len(),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(read["status"], "ready");
    assert_eq!(read["pages"], 1);
    assert_eq!(read["has_text"], true);
    let notes = "# Notes\nKeepers lived there in shifts."
        .as_bytes()
        .to_vec();
    let len = notes.len();
    ok_json(
        document(
            &app,
            &ann,
            &session,
            "notes.md",
            "text/markdown",
            notes,
            len,
        )
        .await,
        200,
    )
    .await;
    // A scan: kept, no text, and it says so.
    let scan = pdf("q 612 0 0 792 0 0 cm /Im1 Do Q");
    let kept = ok_json(
        document(
            &app,
            &ann,
            &session,
            "scan.pdf",
            "application/pdf",
            scan.clone(),
            scan.len(),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (kept["has_text"].as_bool(), kept["text_chars"].as_i64()),
        (Some(false), Some(0))
    );
    assert!(
        kept["note"]
            .as_str()
            .expect("note")
            .contains("no text layer")
    );

    // Downloaded as uploaded.
    let one = app
        .get_json(
            &format!(
                "/v1/sessions/{session}/documents/{}",
                read["id"].as_str().expect("id")
            ),
            &ann,
        )
        .await;
    let file = app
        .client
        .get(one["download_url"].as_str().expect("url"))
        .send()
        .await
        .expect("download");
    assert_eq!(file.bytes().await.expect("bytes").to_vec(), guide);

    // A reply gets their text as context.
    let posted = ok_json(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&ann),
            Some(&json!({"content": "When was it built?"})),
        )
        .await,
        202,
    )
    .await;
    let job = finished(&app, &ann, posted["job"]["id"].as_str().expect("job")).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let sent = fakes.llm().requests().pop().expect("a request");
    let (role, context) = &sent.messages[0];
    assert_eq!(role, "system");
    assert!(
        context.contains("The Bell Rock lighthouse dates from 1810."),
        "{context}"
    );
    assert!(
        context.contains("Keepers lived there in shifts."),
        "{context}"
    );
    assert!(
        context.find("The Bell Rock").expect("guide") < context.find("Keepers").expect("notes"),
        "oldest first"
    );
    // A message about the notes: they come first; an unknown document is a 404.
    let listed = app
        .get_json(&format!("/v1/sessions/{session}/documents"), &ann)
        .await;
    let notes_id = listed["items"][1]["id"].as_str().expect("id").to_owned();
    let posted = ok_json(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&ann),
            Some(&json!({"content": "Who kept it?", "attachments": [notes_id]})),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(posted["user_message"]["attachments"][0], notes_id.as_str());
    finished(&app, &ann, posted["job"]["id"].as_str().expect("job")).await;
    let sent = fakes.llm().requests().pop().expect("a request");
    let context = &sent.messages[0].1;
    assert!(
        context.find("Keepers").expect("notes") < context.find("The Bell Rock").expect("guide"),
        "the attachment first: {context}"
    );
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&ann),
            Some(
                &json!({"content": "And this?", "attachments": [uuid::Uuid::now_v7().to_string()]}),
            ),
        )
        .await,
        404,
        "not_found",
    )
    .await;

    // Refused clearly, nothing left: 50 MB declared; a liar's 21 MiB; a text that says it is a PDF.
    let refused = call(
        &app,
        Method::POST,
        &format!("/v1/sessions/{session}/documents"),
        Some(&ann),
        Some(
            &json!({"filename": "huge.pdf", "content_type": "application/pdf", "size": 50_000_000}),
        ),
    )
    .await;
    let body = problem(refused, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "size");
    let mut big = pdf("BT (x) Tj ET");
    big.resize(21 * 1024 * 1024, b' ');
    problem(
        document(
            &app,
            &ann,
            &session,
            "big.pdf",
            "application/pdf",
            big,
            1000,
        )
        .await,
        422,
        "file_too_large",
    )
    .await;
    problem(
        document(
            &app,
            &ann,
            &session,
            "fake.pdf",
            "application/pdf",
            b"just text".to_vec(),
            9,
        )
        .await,
        422,
        "not_a_pdf",
    )
    .await;
    let listed = app
        .get_json(&format!("/v1/sessions/{session}/documents"), &ann)
        .await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["filename"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["guide.pdf", "notes.md", "scan.pdf"]);

    // Someone else's documents are not there; an image session keeps none.
    let id = read["id"].as_str().expect("id");
    for (method, path) in [
        (Method::GET, format!("/v1/sessions/{session}/documents")),
        (
            Method::GET,
            format!("/v1/sessions/{session}/documents/{id}"),
        ),
        (
            Method::DELETE,
            format!("/v1/sessions/{session}/documents/{id}"),
        ),
        (
            Method::POST,
            format!("/v1/sessions/{session}/documents/{id}/complete"),
        ),
    ] {
        problem(
            call(&app, method, &path, Some(&bob), None).await,
            404,
            "not_found",
        )
        .await;
    }
    let images = chat_session(&app, &ann, "image").await;
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{images}/documents"),
            Some(&ann),
            Some(&json!({"filename": "a.txt", "content_type": "text/plain", "size": 3})),
        )
        .await,
        422,
        "session_kind",
    )
    .await;
    // Deleted: gone from the list, its file too.
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/sessions/{session}/documents/{id}"),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let file = app
        .client
        .get(one["download_url"].as_str().expect("url"))
        .send()
        .await
        .expect("download");
    assert_eq!(file.status(), 404);
    let listed = app
        .get_json(&format!("/v1/sessions/{session}/documents"), &ann)
        .await;
    assert_eq!(listed["items"].as_array().expect("items").len(), 2);
    // The session deleted: its messages, versions, documents and their files go with it.
    let notes_id = listed["items"][0]["id"].as_str().expect("id").to_owned();
    let notes = app
        .get_json(
            &format!("/v1/sessions/{session}/documents/{notes_id}"),
            &ann,
        )
        .await;
    let gone = call(
        &app,
        Method::DELETE,
        &format!("/v1/sessions/{session}"),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(gone.status(), 204);
    let state = &app.running.gateway.state;
    let left = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("CHATMSG#{session}")),
        )
        .send()
        .await
        .expect("query");
    assert_eq!(left.count(), 0, "the session's partition is empty");
    let file = app
        .client
        .get(notes["download_url"].as_str().expect("url"))
        .send()
        .await
        .expect("download");
    assert_eq!(file.status(), 404);
}

#[tokio::test]
async fn images_are_asked_and_kept_in_image_sessions() {
    let (app, _fakes) = crate::generation::start(&[], true).await;
    let (token, _) = app.user("painter").await;
    let session = chat_session(&app, &token, "image").await;
    let ask = |input: Value| {
        let path = format!("/v1/sessions/{session}/images");
        let app = &app;
        let token = token.clone();
        async move {
            call(
                app,
                Method::POST,
                &path,
                Some(&token),
                Some(&json!({ "input": input })),
            )
            .await
        }
    };
    let asked = ok_json(
        ask(
            json!({"provider": "fal", "model": "fal-ai/flux/schnell", "task": "text_to_image",
            "prompt": "a lighthouse at dusk"}),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(asked["user_message"]["kind"], "image");
    assert_eq!(asked["user_message"]["content"], "a lighthouse at dusk");
    assert_eq!(asked["reply"]["status"], "pending");
    let job = finished(&app, &token, asked["job"]["id"].as_str().expect("job")).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    // The reply follows its job to its end.
    let reply = asked["reply"]["id"].as_str().expect("reply").to_owned();
    crate::app::wait_until("the image reply completes", || async {
        let message = app
            .get_json(&format!("/v1/sessions/{session}/messages/{reply}"), &token)
            .await;
        message["status"] == "completed"
    })
    .await;
    // An edit with a reference image: the image is kept with the session.
    let key = app.upload(&token, crate::app::scene(), "image/png").await;
    let edit = ok_json(
        ask(json!({"provider": "fal", "model": "fal-ai/flux/dev/image-to-image", "task": "image_to_image",
            "prompt": "the same at dawn", "upload_key": key}))
        .await,
        202,
    )
    .await;
    finished(&app, &token, edit["job"]["id"].as_str().expect("job")).await;
    let images = app
        .get_json(&format!("/v1/sessions/{session}/images"), &token)
        .await;
    let items = images["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["message"]["id"], reply.as_str());
    assert_eq!(items[0]["job"]["status"], "COMPLETED");
    let file = &items[0]["job"]["output"]["files"][0];
    assert!(
        file["url"].as_str().is_some_and(|u| u.starts_with("http")),
        "{file}"
    );
    assert_eq!(images["references"][0]["upload_key"], key.as_str());
    // Refused input takes the prompt back; a chat session keeps no images.
    let stored = app
        .get_json(&format!("/v1/sessions/{session}"), &token)
        .await;
    assert_eq!(stored["message_count"], 4);
    problem(
        ask(json!({"provider": "fal", "model": "fal-ai/flux/schnell", "task": "text_to_image"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    let stored = app
        .get_json(&format!("/v1/sessions/{session}"), &token)
        .await;
    assert_eq!(stored["message_count"], 4);
    let chat = chat_session(&app, &token, "chat").await;
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{chat}/images"),
            Some(&token),
            Some(
                &json!({"input": {"provider": "fal", "model": "fal-ai/flux/schnell",
                "task": "text_to_image", "prompt": "x"}}),
            ),
        )
        .await,
        422,
        "session_kind",
    )
    .await;
    assert_ledger_sums(&app, &token).await;
}

/// A session at its limit: 10,000 messages page in order, the context stays within its budget,
/// and the next message is refused clearly.
#[tokio::test]
async fn ten_thousand_messages_page_in_order_and_the_next_is_refused() {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let (app, fakes) = crate::generation::start(&[], true).await;
    fakes
        .llm()
        .configure(|l| l.first_token_delay = Duration::from_millis(1));
    let (token, user_id) = app.user("chatty").await;
    let session = chat_session(&app, &token, "chat").await;
    // 9,998 earlier messages, written as the API writes them (ids in time order).
    let state = &app.running.gateway.state;
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let mut requests = Vec::new();
    for i in 0..9_998 {
        let id = uuid::Uuid::now_v7().to_string();
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let item = std::collections::HashMap::from([
            ("pk".to_owned(), s(&format!("CHATMSG#{session}"))),
            ("sk".to_owned(), s(&format!("MSG#{id}"))),
            ("id".to_owned(), s(&id)),
            ("session_id".to_owned(), s(&session)),
            ("role".to_owned(), s(role)),
            ("kind".to_owned(), s("text")),
            (
                "content".to_owned(),
                s(&format!("message {i} {}", "x".repeat(40))),
            ),
            ("status".to_owned(), s("completed")),
            ("created_at".to_owned(), s("2026-12-05T00:00:00.000Z")),
            ("updated_at".to_owned(), s("2026-12-05T00:00:00.000Z")),
        ]);
        requests.push(
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .set_item(Some(item))
                        .build()
                        .expect("put"),
                )
                .build(),
        );
    }
    for chunk in requests.chunks(25) {
        let mut pending = chunk.to_vec();
        while !pending.is_empty() {
            let out = state
                .db
                .client
                .batch_write_item()
                .request_items(&state.db.table, pending)
                .send()
                .await
                .expect("batch");
            pending = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&state.db.table))
                .unwrap_or_default();
        }
    }
    state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(&format!("USER#{user_id}")))
        .key("sk", s(&format!("CHAT#{session}")))
        .update_expression("SET message_count = :count")
        .expression_attribute_values(":count", AttributeValue::N("9998".into()))
        .send()
        .await
        .expect("count");
    // The 9,999th and 10,000th: the reply's context is the budget's newest messages, not all.
    let posted = ok_json(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&token),
            Some(&json!({"content": "the last word"})),
        )
        .await,
        202,
    )
    .await;
    let job = finished(&app, &token, posted["job"]["id"].as_str().expect("job")).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let sent = fakes.llm().requests().pop().expect("a request");
    let sent_bytes: usize = sent.messages.iter().map(|(_, c)| c.len() + 4).sum();
    assert!(
        sent.messages.len() > 10 && sent.messages.len() < 9_998,
        "{}",
        sent.messages.len()
    );
    assert!(sent_bytes <= 16_000, "{sent_bytes}");
    assert_eq!(
        sent.messages.last().map(|(_, c)| c.as_str()),
        Some("the last word")
    );
    // The next is refused, and leaves nothing.
    problem(
        call(
            &app,
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(&token),
            Some(&json!({"content": "one more"})),
        )
        .await,
        422,
        "too_many_messages",
    )
    .await;
    // Every message, in order, a hundred a page.
    let messages = all_messages(&app, &token, &session, 100).await;
    assert_eq!(messages.len(), 10_000);
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no repeats"
    );
    assert_eq!(messages[9_998]["content"], "the last word");
    assert_eq!(messages[9_999]["role"], "assistant");
}
