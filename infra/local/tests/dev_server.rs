//! `make dev`'s server: it starts on its own, its printed walkthrough works as printed, and its
//! logs are JSON lines that carry the request id and never a password or a token.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The server, killed however the test ends: left running, it would hold cargo's output pipe open
/// and hang `make test`.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dev_server_walkthrough_works_and_logs_no_secrets() {
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_lambent-dev"))
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("lambent-dev starts"),
    );
    let stdout = server.0.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // The walkthrough: the commands between "Try it" and "Stop with".
    let mut script = Vec::new();
    let mut logs = Vec::new();
    let mut in_walkthrough = false;
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the walkthrough is printed");
        if line.starts_with("Try it") {
            in_walkthrough = true;
        } else if line.starts_with("Stop with") {
            break;
        } else if in_walkthrough {
            script.push(line);
        } else if line.starts_with('{') {
            logs.push(line);
        }
    }
    let output = Command::new("timeout")
        .args(["120", "bash", "-euo", "pipefail", "-c", &script.join("\n")])
        .output()
        .expect("bash runs");
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "the walkthrough failed: {printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        r#""status":"ok""#,
        r#""display_name":"Ann""#,
        r#""gender":"female""#,
        "refresh_token_reused",
        r#""openapi":"3.1.0""#,
        r#""output":{"slept_ms":500}"#,
        r#""reason":"job_debit""#,
        r#""model":"realesr-animevideov3-x2""#,
        r#""width":128,"height":96"#,
        // The generated image, copied from the fake fal into the bucket.
        r#""content_type":"image/png","height":16"#,
        r#""model":"fal-ai/flux/dev","provider":"fal""#,
        // The Firebase sign-in's new account, with the email the fake vouched for.
        r#""email": "weav@example.com""#,
        // The Kakao browser sign-in: a new account's tokens from the one-time code.
        "kakao sign-in: Bearer u_",
        // The generation published, followed, liked and in the follower's feed.
        "feed of bob: a lighthouse at dusk #lighthouse - likes 1",
        // Bob's like as Ann's notification.
        "bob liked your post",
        // The search index, written from its queue: the post by a prefix, Ann by her handle's.
        "search lightho: 1 post: a lighthouse at dusk #lighthouse",
        "search an: ['ann']",
        // A package bought through the fake Toss.
        "order: paid 100 credits for 10000 KRW",
        r#""type":"purchase""#,
    ] {
        assert!(
            printed.contains(expected),
            "the walkthrough did not show {expected}: {printed}"
        );
    }
    let tokens: Value =
        serde_json::from_str(&std::fs::read_to_string("/tmp/lambent-tokens.json").expect("tokens"))
            .expect("json");

    drop(server);
    logs.extend(lines.try_iter().filter(|l| l.starts_with('{')));

    let secrets = [
        "correct horse",
        tokens["access_token"].as_str().expect("access"),
        tokens["refresh_token"].as_str().expect("refresh"),
    ];
    let mut handled = 0;
    for line in &logs {
        for secret in secrets {
            assert!(!line.contains(secret), "a secret reached the logs: {line}");
        }
        let entry: Value = serde_json::from_str(line).expect("every log line is JSON");
        if entry["message"] == "handled" {
            handled += 1;
            assert!(
                entry["span"]["request_id"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty()),
                "{line}"
            );
        }
    }
    let requests = script
        .iter()
        .filter(|l| l.trim_start().starts_with("curl"))
        .count();
    // Every request is logged once (the job's status is polled, so perhaps more than once).
    assert!(
        handled >= requests,
        "{handled} of {requests} requests logged"
    );
}
