//! Presigned uploads: a key under the caller's prefix, a short-lived URL that signs the declared
//! type and size, and a PUT that lands the object.

use serde_json::{Value, json};

use crate::app::{TestApp, problem};

#[tokio::test]
async fn an_upload_url_is_scoped_signed_and_works() {
    let app = TestApp::spawn().await;
    let (token, user_id) = app.user("uploader").await;
    let image = vec![0xFF_u8; 1234];
    let response = app
        .client
        .post(app.url("/v1/uploads"))
        .bearer_auth(&token)
        .json(&json!({"content_type": "image/jpeg", "size": image.len()}))
        .send()
        .await
        .expect("r");
    assert_eq!(response.status(), 201);
    let upload: Value = response.json().await.expect("json");
    let key = upload["key"].as_str().expect("key");
    assert!(
        key.starts_with(&format!("uploads/{user_id}/")) && key.ends_with(".jpg"),
        "{key}"
    );
    assert_eq!(upload["method"], "PUT");

    // What S3 will check: the expiry and the signed headers.
    let url = reqwest::Url::parse(upload["url"].as_str().expect("url")).expect("a URL");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["X-Amz-Expires"], "900");
    let signed = &query["X-Amz-SignedHeaders"];
    assert!(
        signed.contains("content-type") && signed.contains("host"),
        "{signed}"
    );
    assert!(url.path().ends_with(key), "{url}");

    let mut put = app.client.put(url.clone()).body(image.clone());
    for (name, value) in upload["headers"].as_object().expect("headers") {
        put = put.header(name, value.as_str().expect("value"));
    }
    let stored = put
        .header("content-type", "image/jpeg")
        .send()
        .await
        .expect("put");
    assert!(stored.status().is_success(), "{}", stored.status());
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&app.running.sdk)
            .force_path_style(true)
            .build(),
    );
    let head = s3
        .head_object()
        .bucket(&app.running.stack.refs["MediaBucket"])
        .key(key)
        .send()
        .await
        .expect("the object landed");
    assert_eq!(head.content_length(), Some(1234));
}

#[tokio::test]
async fn uploads_of_other_types_or_sizes_are_refused() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("picky").await;
    for (body, field) in [
        (
            json!({"content_type": "application/pdf", "size": 10}),
            "content_type",
        ),
        (json!({"content_type": "image/png", "size": 0}), "size"),
        (
            json!({"content_type": "image/png", "size": 20 * 1024 * 1024 + 1}),
            "size",
        ),
        (
            json!({"content_type": "image/png", "size": 10, "key": "uploads/someone-else/x.png"}),
            "key",
        ),
    ] {
        let response = app
            .client
            .post(app.url("/v1/uploads"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("r");
        let problem = problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let anonymous = app
        .client
        .post(app.url("/v1/uploads"))
        .json(&json!({"content_type": "image/png", "size": 10}))
        .send()
        .await
        .expect("r");
    problem(anonymous, 401, "invalid_token").await;
}
