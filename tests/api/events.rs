//! Each function's sample event (`events/<function>.json`, the file `cargo lambda invoke
//! --data-file` takes) goes through the Lambda runtime's conversion to that function's handler.

use lambent::routes::{NOT_FOUND, ROUTES};
use lambent_local::repo_root;
use serde_json::Value;

use crate::app::TestApp;

#[tokio::test]
async fn every_sample_event_reaches_its_handler() {
    // Toss is not here: its webhook's payment cannot be read again (503, Toss sends it again).
    let app = TestApp::spawn_with(&[("TOSS_API_URL", "http://127.0.0.1:9")]).await;
    let state = &app.running.gateway.state;
    // In this order the register event creates the account the login and token events use.
    let expected = [
        ("health", 200),
        ("get-openapi", 200),
        ("get-docs", 200),
        ("get-console", 200),
        ("get-console-file", 200),
        ("get-jwks", 200),
        ("get-openid-configuration", 200),
        ("register", 201),
        ("login", 200),
        // The template's default: no Firebase project, so Firebase sign-in is off.
        ("sign-in-with-firebase", 404),
        // Nor Google, Kakao or Naver.
        ("sign-in-with-oidc", 404),
        ("start-oauth", 404),
        ("oauth-callback", 404),
        // The sample's account does not exist in a fresh stack.
        ("list-identities", 404),
        ("link-identity", 404),
        ("unlink-identity", 404),
        ("request-email-verification", 404),
        ("verify-email", 400),
        // The same answer for every email: the queue's consumer finds the account, if any.
        ("forgot-password", 202),
        ("reset-password", 400),
        ("change-password", 404),
        ("issue-token", 200),
        ("refresh-token", 401),
        ("logout", 204),
        ("get-me", 404),
        ("update-me", 404),
        // Deleting an account that is gone already is harmless.
        ("delete-me", 202),
        // The sample's account to look at does not exist.
        ("get-user-profile", 404),
        ("follow-user", 404),
        ("unfollow-user", 204),
        ("get-relationship", 404),
        ("list-followers", 404),
        ("list-following", 404),
        ("block-user", 404),
        ("unblock-user", 204),
        ("list-blocks", 200),
        // The sample's upload does not exist in a fresh stack.
        ("create-post", 404),
        // Nor its post.
        ("get-post", 404),
        ("get-public-post", 404),
        ("update-post", 404),
        ("delete-post", 404),
        ("list-user-posts", 404),
        ("list-my-posts", 200),
        ("like-post", 404),
        ("unlike-post", 200),
        ("list-likes", 404),
        ("share-post", 404),
        ("bookmark-post", 404),
        ("unbookmark-post", 200),
        ("list-bookmarks", 200),
        ("list-remixes", 404),
        ("get-remix-chain", 404),
        ("get-following-feed", 200),
        ("list-hashtag-posts", 200),
        ("get-trending-tags", 200),
        ("get-for-you-feed", 200),
        // An empty index finds nothing.
        ("search-posts", 200),
        ("search-users", 200),
        ("search-styles", 200),
        // Nor its post; the sample's caller is no admin.
        ("create-report", 404),
        ("list-reports", 403),
        ("get-report", 403),
        ("resolve-report", 403),
        ("list-notifications", 200),
        ("get-unread-count", 200),
        // The sample's notification does not exist.
        ("read-notification", 404),
        ("read-all-notifications", 200),
        ("create-comment", 404),
        ("list-comments", 404),
        ("list-public-comments", 404),
        ("update-comment", 404),
        ("delete-comment", 404),
        ("create-job", 404),
        ("list-jobs", 200),
        ("get-job", 404),
        ("cancel-job", 404),
        ("get-credits", 404),
        ("list-credit-transactions", 200),
        ("grant-credits", 403),
        // The sample's account does not exist in a fresh stack.
        ("get-daily-reward", 404),
        ("claim-daily-reward", 404),
        ("list-credit-packages", 200),
        ("create-credit-order", 404),
        ("list-credit-orders", 200),
        ("get-credit-order", 404),
        ("confirm-credit-order", 404),
        ("receive-toss-webhook", 503),
        // Signed long ago, and not with the stack's secret.
        ("receive-stripe-webhook", 400),
        ("create-upload", 201),
        ("upscale-photo", 404),
        ("best-cut-photos", 404),
        ("list-photos", 200),
        ("get-photo", 404),
        ("get-photo-file", 404),
        ("delete-photo", 404),
        ("create-video", 404),
        ("list-videos", 200),
        ("get-video", 404),
        ("get-video-timeline", 404),
        ("delete-video", 404),
        // Signed long ago: refused before any key or secret is fetched.
        ("receive-fal-webhook", 401),
        ("receive-replicate-webhook", 401),
        ("receive-ai-progress", 401),
        ("receive-ai-completion", 401),
        ("receive-ai-failure", 401),
        // Not Kakao's admin key.
        ("receive-kakao-unlink", 401),
        ("receive-meta-data-deletion", 404),
        ("create-webhook-endpoint", 201),
        ("list-webhook-endpoints", 200),
        ("delete-webhook-endpoint", 404),
        ("list-webhook-deliveries", 404),
        // The sample's uploads do not exist in a fresh stack.
        ("create-persona", 404),
        ("list-personas", 200),
        ("get-persona", 404),
        ("update-persona", 404),
        ("delete-persona", 404),
        // Instagram is off in the template's default.
        ("start-instagram", 404),
        ("instagram-callback", 404),
        ("link-instagram", 404),
        ("unlink-instagram", 404),
        ("get-data-deletion", 404),
        ("create-style", 404),
        ("list-my-styles", 200),
        ("get-style", 404),
        ("list-styles", 200),
        ("update-style", 404),
        ("delete-style", 404),
        // The sample's account does not exist in a fresh stack; nor its payout.
        ("become-artist", 404),
        ("get-artist", 404),
        ("request-payout", 404),
        ("get-payout", 404),
        // The sample's token is a user's.
        ("list-payouts", 403),
        ("resolve-payout", 403),
        ("list-users", 403),
        ("list-orders", 403),
        ("refund-order", 403),
        // The sample's account does not exist in a fresh stack, nor its folder or session.
        ("create-folder", 404),
        ("list-folders", 200),
        ("rename-folder", 404),
        ("delete-folder", 404),
        ("create-session", 404),
        ("list-sessions", 200),
        ("get-session", 404),
        ("update-session", 404),
        ("delete-session", 404),
        ("bulk-delete-sessions", 200),
        ("list-messages", 404),
        ("get-message", 404),
        ("post-message", 404),
        ("regenerate-reply", 404),
        ("create-document", 404),
        ("complete-document", 404),
        ("list-documents", 404),
        ("get-document", 404),
        ("delete-document", 404),
        ("ask-image", 404),
        ("list-images", 404),
        ("route-not-found", 404),
    ];
    let functions: Vec<_> = ROUTES.iter().chain([&NOT_FOUND]).collect();
    assert_eq!(
        expected.len(),
        functions.len(),
        "every function has an expectation"
    );
    for (function, status) in expected {
        let spec = functions
            .iter()
            .find(|s| s.function == function)
            .expect("known function");
        let text = std::fs::read_to_string(repo_root().join(format!("events/{function}.json")))
            .expect("event");
        let event: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            event["version"], "2.0",
            "{function}: an HTTP API payload 2.0 event"
        );
        let request = lambda_http::request::from_str(&text).expect("a Lambda HTTP event");
        let response = lambent::handle(state, spec, request).await;
        assert_eq!(response.status(), status, "{function}");
        assert!(
            response.headers().contains_key("x-request-id"),
            "{function}"
        );
    }
}

#[tokio::test]
async fn the_worker_reaper_and_dead_letter_events_reach_their_handlers() {
    use aws_lambda_events::event::sqs::SqsEvent;
    use lambent::jobs::worker::{self, Consumer};

    let app = TestApp::spawn().await;
    let state = &app.running.gateway.state;
    let read = |name: &str| {
        std::fs::read_to_string(repo_root().join(format!("events/{name}.json"))).expect("event")
    };

    // A message for a job that does not exist is dropped, not retried.
    let run: SqsEvent = serde_json::from_str(&read("run-job")).expect("an SQS event");
    assert_eq!(run.records.len(), 1);
    assert!(
        worker::handle_batch(state, Consumer::JOBS, run)
            .await
            .batch_item_failures
            .is_empty()
    );
    let dead: SqsEvent = serde_json::from_str(&read("fail-dead-jobs")).expect("an SQS event");
    assert!(
        worker::handle_batch(state, Consumer::DEAD_LETTERS, dead)
            .await
            .batch_item_failures
            .is_empty()
    );
    // An event for a job with no webhook URL and an owner with no endpoint goes nowhere.
    let deliver: SqsEvent = serde_json::from_str(&read("deliver-webhooks")).expect("an SQS event");
    assert!(
        worker::handle_batch(state, lambent::webhooks::deliver::DELIVERIES, deliver)
            .await
            .batch_item_failures
            .is_empty()
    );
    // Mail for an account that does not exist is dropped.
    let mail: SqsEvent = serde_json::from_str(&read("send-account-mail")).expect("an SQS event");
    assert!(
        worker::handle_batch(state, lambent::auth::account::MAIL, mail)
            .await
            .batch_item_failures
            .is_empty()
    );
    // A purge of an account that is gone finds nothing to do.
    let removal: SqsEvent =
        serde_json::from_str(&read("remove-account-data")).expect("an SQS event");
    assert!(
        worker::handle_batch(state, lambent::auth::deletion::REMOVALS, removal)
            .await
            .batch_item_failures
            .is_empty()
    );
    // A deleted post's purge: nothing of it left to remove, done.
    let social: SqsEvent =
        serde_json::from_str(&read("process-social-events")).expect("an SQS event");
    assert!(
        worker::handle_batch(state, lambent::social::events::SOCIAL, social)
            .await
            .batch_item_failures
            .is_empty()
    );
    // A wake-up of the search index's writer with nothing listed writes nothing.
    let search: SqsEvent = serde_json::from_str(&read("index-search")).expect("an SQS event");
    assert!(
        worker::handle_batch(state, lambent::social::search::WRITER, search)
            .await
            .batch_item_failures
            .is_empty()
    );
    let synced = lambent::social::search::sync(state).await.expect("sync");
    assert_eq!((synced.documents, synced.generation), (0, 0));
    // The schedule's event carries nothing the reaper needs; with nothing overdue it reaps nothing.
    let _: Value = serde_json::from_str(&read("reap-jobs")).expect("a scheduled event");
    assert_eq!(worker::reap(state).await.expect("reap").reaped, 0);
    // Likewise the Instagram refresher: no token is linked.
    let _: Value =
        serde_json::from_str(&read("refresh-instagram-tokens")).expect("a scheduled event");
    let refreshed = lambent::personas::instagram::refresh_due(state)
        .await
        .expect("refresh");
    assert_eq!(refreshed.refreshed + refreshed.lost, 0);
    // Likewise the rankings: nothing published, nothing ranked.
    let _: Value = serde_json::from_str(&read("refresh-rankings")).expect("a scheduled event");
    let ranked = lambent::social::rankings::refresh(state)
        .await
        .expect("rankings");
    assert_eq!((ranked.tags, ranked.ranked), (0, 0));
    // Likewise the reconciler: nothing waits on a provider.
    let _: Value = serde_json::from_str(&read("reconcile-jobs")).expect("a scheduled event");
    let report = lambent::generation::reconcile::run(state)
        .await
        .expect("reconcile");
    assert_eq!(report.polled, 0);
    // The streaming function URL's event (payload 2.0 without an authorizer) reaches its handler,
    // which checks the bearer token itself: the sample's is not signed by the stack's key.
    let text = read("stream-replies");
    let request = lambda_http::request::from_str(&text).expect("a function URL event");
    let state: &'static lambent::State = Box::leak(Box::new(app.running.gateway.state.clone()));
    let response = lambent::conversations::stream::handle(state, request).await;
    assert_eq!(response.status(), 401);
}

/// A record the Lambda worker fails comes back in its queue after the worker's backoff (10 s at
/// its first receive), not after the queue's visibility timeout (90 min for the jobs queue; 10 min
/// for this one): the worker asks SQS for the queue's URL by the record's ARN and sets the
/// message's visibility.
#[tokio::test]
async fn a_record_the_worker_fails_comes_back_after_its_backoff_not_the_queues_timeout() {
    use aws_lambda_events::event::sqs::SqsEvent;
    use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
    use lambent::jobs::worker::{self, Consumer, Disposition};

    let app = TestApp::spawn().await;
    let state = &app.running.gateway.state;
    let sqs = &state.sqs;
    let name = format!("backoff-{}", uuid::Uuid::now_v7().simple());
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::VisibilityTimeout, "600")
        .send()
        .await
        .expect("a queue")
        .queue_url
        .expect("its URL");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("its attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("its ARN");
    sqs.send_message()
        .queue_url(&url)
        .message_body(r#"{"job_id": "x"}"#)
        .send()
        .await
        .expect("sent");
    let receive = || async {
        sqs.receive_message()
            .queue_url(&url)
            .wait_time_seconds(10)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            // A long poll, past the clients' attempt timeout.
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(
                    aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(std::time::Duration::from_secs(15))
                        .operation_timeout(std::time::Duration::from_secs(20))
                        .build(),
                ),
            )
            .send()
            .await
            .expect("received")
            .messages
            .unwrap_or_default()
    };
    let message = receive().await.pop().expect("the message");
    let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [{
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }]}))
    .expect("an SQS event");
    const FAILS: Consumer = Consumer {
        name: "fails",
        handle: |_, _| Box::pin(async { Ok(Disposition::Retry) }),
    };
    let started = std::time::Instant::now();
    let response = worker::handle_batch(state, FAILS, event).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    // Long polls until it is back: within a few seconds of its 10, where the queue's timeout
    // would keep it away for 10 minutes.
    let again = loop {
        if let Some(again) = receive().await.pop() {
            break again;
        }
        assert!(started.elapsed().as_secs() < 60, "not back after a minute");
    };
    assert_eq!(again.message_id, message.message_id);
    let waited = started.elapsed().as_secs_f64();
    assert!((8.0..40.0).contains(&waited), "back after {waited:.1} s");
    let schedule: Vec<i32> = (0..=9).map(worker::retry_after).collect();
    assert_eq!(schedule, [10, 10, 20, 40, 80, 160, 320, 640, 900, 900]);
    assert_eq!(worker::retry_after(u32::MAX), 900);
}
