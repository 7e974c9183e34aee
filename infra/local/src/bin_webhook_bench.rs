//! `lambent-webhook-bench` (make bench): webhook figures on the local stack, printed as JSON for
//! infra/bench/webhooks.py to set beside its peers.
//!
//! - finalize: a fal job's signed completion webhook, receipt → COMPLETED (the handler verifies
//!   the signature, copies the output to S3 and commits the release before it answers 200);
//! - signing and verifying in process: Standard Webhooks HMAC-SHA256 (outbound), fal's Ed25519
//!   (inbound);
//! - delivery: events queued → signed → delivered → verified by a local receiver, end to end
//!   through the emulator's SQS.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use lambent_local::fakes::{FakeProviders, fal_headers, spawn_server};
use lambent_local::{Emulator, Options, repo_root};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

async fn get_job(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{base}/v1/jobs/{id}"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?)
}

/// Calls per second of `work`, over at least `iterations` calls.
fn rate(iterations: usize, mut work: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..iterations {
        work();
    }
    iterations as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
#[allow(clippy::print_stdout)]
async fn main() -> anyhow::Result<()> {
    let jobs = arg("--jobs", 50);
    let signatures = arg("--signatures", 20_000);
    let deliveries = arg("--deliveries", 200);

    let emulator = Emulator::start(&repo_root()).await?;
    let fakes = FakeProviders::start().await?;
    let mut overrides: HashMap<String, String> = fakes.overrides().into_iter().collect();
    for (name, value) in [
        ("STARTING_CREDITS", "1000000"),
        ("JOB_CAP_FREE", "1000"),
        ("JOB_CAP_STANDARD", "1000"),
        ("JOB_CAP_PREMIUM", "1000"),
        ("RUST_LOG", "warn"),
    ] {
        overrides.insert(name.into(), value.into());
    }
    let running = lambent_local::start(
        &emulator.endpoint,
        Options {
            prefix: format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            port: 0,
            overrides,
            worker: true,
            reaper_every: Some(Duration::from_secs(5)),
            rankings_every: None,
        },
    )
    .await?;
    let state = running.gateway.state.clone();
    let keys: Value = serde_json::from_str(
        state
            .secret_string(&running.stack.refs["ProviderKeys"])
            .await?
            .expose_secret(),
    )?;
    fakes.configure(|b| {
        b.fal_key = keys["fal_key"].as_str().unwrap_or_default().to_owned();
        b.hold_webhooks = true;
    });
    let base = running.base_url.clone();
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": "bench@example.com", "username": "bench", "password": "correct horse"}))
        .send()
        .await?
        .json()
        .await?;
    let token = registered["access_token"]
        .as_str()
        .context("a token")?
        .to_owned();

    // Finalize latency: jobs at fal with their webhooks held back, then each delivered.
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let submitted: Value = client
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&token)
            .json(
                &json!({"kind": "generate", "input": {"provider": "fal", "model": "fal-ai/flux/dev",
                "task": "text_to_image", "prompt": "a lighthouse"}}),
            )
            .send()
            .await?
            .json()
            .await?;
        ids.push(submitted["id"].as_str().context("an id")?.to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        let held = fakes.webhooks();
        if held.len() >= jobs {
            break held;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} webhooks held",
            held.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut latencies = Vec::with_capacity(jobs);
    for webhook in &held {
        // Wait until the worker recorded the request, as a real webhook would find it.
        let id = ids
            .iter()
            .find(|id| webhook.url.contains(id.as_str()))
            .context("the webhook's job")?;
        loop {
            let job = get_job(&client, &base, &token, id).await?;
            if job["provider"]["request_id"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let status = fakes.send(webhook).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status == 200, "the webhook got {status}");
    }
    for id in &ids {
        let job = get_job(&client, &base, &token, id).await?;
        anyhow::ensure!(
            job["status"] == "COMPLETED",
            "job {id} is {}",
            job["status"]
        );
    }
    latencies.sort_by(f64::total_cmp);

    // Signing and verifying in process.
    let body = json!({"type": "job.completed", "timestamp": "2026-11-22T14:00:00Z",
        "data": {"id": "01a203ce-62ed-723c-859c-1d2f4e23f43d", "status": "COMPLETED"}})
    .to_string();
    let secret = lambent::jobs::events::new_secret()?;
    let signer = standardwebhooks::Webhook::new(&secret).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = chrono::Utc::now().timestamp();
    let sign_rate = rate(signatures, || {
        let _ = std::hint::black_box(signer.sign("evt_1", now, body.as_bytes()));
    });
    let signature = signer
        .sign("evt_1", now, body.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", "evt_1".parse()?);
    headers.insert("webhook-timestamp", now.to_string().parse()?);
    headers.insert("webhook-signature", signature.parse()?);
    let verify_rate = rate(signatures, || {
        let _ = std::hint::black_box(signer.verify(body.as_bytes(), &headers));
    });
    let fal_body = held.first().map(|w| w.body.clone()).unwrap_or_default();
    let pair = fakes.fal_pair();
    let fal_keys = vec![
        aws_lc_rs::signature::KeyPair::public_key(pair)
            .as_ref()
            .to_vec(),
    ];
    let mut fal_map = http::HeaderMap::new();
    for (name, value) in fal_headers(pair, "req-1", now, fal_body.as_bytes()) {
        fal_map.insert(
            http::HeaderName::from_bytes(name.as_bytes())?,
            value.parse()?,
        );
    }
    let fal_rate = rate(signatures / 4, || {
        let _ = std::hint::black_box(lambent::generation::fal::verify(
            &fal_map,
            fal_body.as_bytes(),
            &fal_keys,
            now,
        ));
    });

    // Delivery throughput: events for an endpoint, through the queue, to a verifying receiver.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let endpoint: Value = client
        .post(format!("{base}/v1/webhook-endpoints"))
        .bearer_auth(&token)
        .json(&json!({"url": url, "events": ["job.completed"]}))
        .send()
        .await?
        .json()
        .await?;
    let receiver_secret = endpoint["secret"].as_str().context("a secret")?.to_owned();
    let verified = Arc::new(AtomicUsize::new(0));
    let counter = verified.clone();
    spawn_server(
        listener,
        move |req: hyper::Request<hyper::body::Incoming>| {
            let (counter, secret) = (counter.clone(), receiver_secret.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let ok = standardwebhooks::Webhook::new(&secret)
                    .is_ok_and(|w| w.verify(&body, &parts.headers).is_ok());
                if ok {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                hyper::Response::new(Full::new(Bytes::new()))
            }
        },
    );
    let user_id = registered["user"]["id"]
        .as_str()
        .context("a user")?
        .to_owned();
    let started = Instant::now();
    for n in 0..deliveries {
        let event = lambent::jobs::events::Event {
            id: format!("evt_bench_{n}"),
            kind: "job.completed".into(),
            job_id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.clone(),
            timestamp: now,
            data: json!({"status": "COMPLETED"}),
        };
        lambent::jobs::events::emit(&state, event).await;
    }
    let queued = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    while verified.load(Ordering::SeqCst) < deliveries {
        anyhow::ensure!(Instant::now() < deadline, "deliveries stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = started.elapsed().as_secs_f64();

    let report = json!({
        "finalize_ms": {"jobs": jobs, "p50": percentile(&latencies, 0.5), "p95": percentile(&latencies, 0.95),
            "min": latencies.first(), "max": latencies.last()},
        "sign_per_s": sign_rate,
        "verify_per_s": verify_rate,
        "fal_verify_per_s": fal_rate,
        "body_bytes": body.len(),
        "fal_body_bytes": fal_body.len(),
        "deliveries": {"events": deliveries, "queued_s": queued, "delivered_s": delivered,
            "per_s": deliveries as f64 / delivered},
    });
    println!("{report}");
    Ok(())
}
