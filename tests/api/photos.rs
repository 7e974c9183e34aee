//! Photos over HTTP: upload → upscale or best-cut job → photo with its files → delete; every photo
//! and upload owner-scoped; every bad image a precise, refunded failure.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::app::{TestApp, problem, s3};

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(path),
    )
    .expect("fixture")
}

impl TestApp {
    async fn post_photo(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("r")
    }

    /// Submits a photo job (202) and gives its id.
    async fn submit_photo(&self, path: &str, token: &str, body: &Value) -> String {
        let response = self.post_photo(path, token, body).await;
        assert_eq!(response.status(), 202);
        response.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    async fn photo_job(&self, path: &str, token: &str, body: &Value) -> String {
        let id = self.submit_photo(path, token, body).await;
        let job = self
            .wait_for_job(token, &id, |j| {
                matches!(
                    j["status"].as_str(),
                    Some("COMPLETED" | "FAILED" | "CANCELED")
                )
            })
            .await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
        id
    }

    async fn download(&self, url: &str) -> Vec<u8> {
        let response = self.client.get(url).send().await.expect("get");
        assert_eq!(response.status(), 200, "{url}");
        response.bytes().await.expect("bytes").to_vec()
    }
}

fn sha256(bytes: &[u8]) -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_photo_is_upscaled_stored_listed_served_and_deleted() {
    let app = TestApp::spawn().await;
    let (token, user_id) = app.user("petcam").await;
    let scene = fixture("images/scene.png");
    let key = app.upload(&token, scene.clone(), "image/png").await;
    let (before, _) = app.credits(&token).await;

    let response = app
        .post_photo(
            "/v1/photos/upscale",
            &token,
            &json!({"upload_key": key, "model": "realesr-animevideov3-x2", "lat": 37.5665, "lng": 126.978}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(location, format!("/v1/photos/{id}"));
    app.wait_for_job(&token, &id, |j| {
        j["status"] == "COMPLETED" || j["status"] == "FAILED"
    })
    .await;

    let photo = app.get_json(&location, &token).await;
    assert_eq!(photo["status"], "COMPLETED", "{photo}");
    assert_eq!(
        (photo["lat"].as_f64(), photo["lng"].as_f64()),
        (Some(37.5665), Some(126.978))
    );
    assert_eq!(photo["model"], "realesr-animevideov3-x2");
    let upscaled = &photo["upscaled"];
    assert_eq!(
        (upscaled["width"].as_u64(), upscaled["height"].as_u64()),
        (Some(128), Some(96))
    );
    assert_eq!(upscaled["content_type"], "image/png");
    let bytes = app.download(upscaled["url"].as_str().expect("url")).await;
    assert_eq!(
        bytes.len() as u64,
        upscaled["bytes"].as_u64().expect("bytes")
    );
    assert_eq!(sha256(&bytes), upscaled["sha256"].as_str().expect("sha"));
    let image = image::load_from_memory(&bytes).expect("a PNG");
    assert_eq!((image.width(), image.height()), (128, 96));
    assert_eq!(
        photo["original"]["sha256"].as_str(),
        Some(sha256(&scene).as_str())
    );
    // The photo's files live under the owner's photos/ prefix, never under uploads/ (which expire).
    assert!(photo["upscaled"].get("key").is_none());

    // The file route redirects to a presigned URL of the asked-for variant.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = no_redirects
        .get(app.url(&format!("/v1/photos/{id}/file?variant=original")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("r");
    assert_eq!(redirect.status(), 302);
    let to = redirect.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        to.contains(&format!("photos/{user_id}/{id}/original.png")),
        "{to}"
    );
    assert_eq!(app.download(&to).await, scene);

    let page = app.get_json("/v1/photos", &token).await;
    assert_eq!(page["items"][0]["id"], id.as_str());
    // Admission debited the model's price; nothing was refunded.
    assert_eq!(app.credits(&token).await, (before - 1, 0));

    // The record's delete is answered after the SDK's attempt timeout: its retry, finding nothing,
    // must not read as "still processing" (409).
    let record = json!([format!("JOB#{id}"), "#status"]);
    app.answer_late_either("DynamoDB_20120810.DeleteItem", &record)
        .await;
    let deleted = app
        .client
        .delete(app.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .expect("r");
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.retried(&record).await, 1, "answered late");
    problem(
        app.get_with_token(&location, &token).await,
        404,
        "not_found",
    )
    .await;
    let left = s3(&app)
        .list_objects_v2()
        .bucket(&app.running.stack.refs["MediaBucket"])
        .prefix(format!("photos/{user_id}/{id}/"))
        .send()
        .await
        .expect("list");
    assert!(
        left.contents().is_empty(),
        "files left: {:?}",
        left.contents()
    );
}

/// Random 8-bit RGB (xorshift from `seed`).
fn noise(width: u32, height: u32, mut seed: u64) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let [r, g, b, ..] = seed.to_le_bytes();
        image::Rgb([r, g, b])
    })
}

/// A PNG of noise: it barely compresses, so its 4x upscale is tens of megabytes.
fn noise_png(side: u32) -> Vec<u8> {
    let noise = noise(side, side, 0x2545_f491_4f6c_dd1d);
    let mut png = std::io::Cursor::new(Vec::new());
    noise
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("png");
    png.into_inner()
}

/// The multipart uploads still open in the media bucket under `prefix`.
async fn open_uploads(app: &TestApp, prefix: &str) -> Vec<String> {
    let listed = s3(app)
        .list_multipart_uploads()
        .bucket(&app.running.stack.refs["MediaBucket"])
        .prefix(prefix)
        .send()
        .await
        .expect("list uploads");
    listed
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_large_output_is_stored_in_parts_while_it_is_made_and_reads_back_whole() {
    let app = TestApp::spawn().await;
    let (token, user_id) = app.user("poster").await;
    let key = app.upload(&token, noise_png(512), "image/png").await;
    let id = app
        .photo_job(
            "/v1/photos/upscale",
            &token,
            &json!({"upload_key": key, "model": "realesr-animevideov3-x4"}),
        )
        .await;
    let photo = app.get_json(&format!("/v1/photos/{id}"), &token).await;
    let upscaled = &photo["upscaled"];
    let size = upscaled["bytes"].as_u64().expect("bytes");
    // More than one part: the multipart path, not a single PUT.
    assert!(
        size > lambent::photos::media::PART_BYTES as u64,
        "{size} bytes"
    );
    let bytes = app.download(upscaled["url"].as_str().expect("url")).await;
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(sha256(&bytes), upscaled["sha256"].as_str().expect("sha"));
    let image = image::load_from_memory(&bytes).expect("a PNG");
    assert_eq!((image.width(), image.height()), (2048, 2048));
    assert!(
        open_uploads(&app, &format!("photos/{user_id}/"))
            .await
            .is_empty(),
        "a multipart upload was left open"
    );
}

#[tokio::test]
async fn a_canceled_upscale_leaves_no_parts_behind() {
    let app = TestApp::spawn().await;
    let (token, user_id) = app.user("quitter").await;
    let key = app.upload(&token, noise_png(1024), "image/png").await;
    let id = app
        .submit_photo(
            "/v1/photos/upscale",
            &token,
            &json!({"upload_key": key, "model": "realesr-animevideov3-x4"}),
        )
        .await;
    // Cancel once the output is being uploaded in parts while it is made (16 MiB of the 4096 px
    // PNG's 45 MB written): the parts already up must be removed.
    let prefix = format!("photos/{user_id}/{id}/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while open_uploads(&app, &prefix).await.is_empty() {
        let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
        assert!(
            matches!(job["status"].as_str(), Some("IN_QUEUE" | "IN_PROGRESS")),
            "finished before its parts were seen: {job}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no multipart upload began: {job}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.cancel(&token, &id).await.status(), 202);
    let job = app
        .wait_for_job(&token, &id, |j| {
            matches!(
                j["status"].as_str(),
                Some("CANCELED" | "COMPLETED" | "FAILED")
            )
        })
        .await;
    assert_eq!(job["status"], "CANCELED", "{job}");
    assert!(
        open_uploads(&app, &prefix).await.is_empty(),
        "the canceled upload's parts were left behind"
    );
    let left = s3(&app)
        .list_objects_v2()
        .bucket(&app.running.stack.refs["MediaBucket"])
        .prefix(&prefix)
        .send()
        .await
        .expect("list");
    assert!(left.contents().is_empty(), "{:?}", left.contents());
}

#[tokio::test]
async fn photos_and_uploads_are_their_owners_alone() {
    let app = TestApp::spawn().await;
    let (owner, _) = app.user("owner").await;
    let (other, _) = app.user("other").await;
    let key = app
        .upload(&owner, fixture("images/scene.png"), "image/png")
        .await;
    let id = app
        .photo_job(
            "/v1/photos/upscale",
            &owner,
            &json!({"upload_key": key, "model": "realesr-animevideov3-x2"}),
        )
        .await;

    let path = format!("/v1/photos/{id}");
    problem(app.get_with_token(&path, &other).await, 404, "not_found").await;
    problem(
        app.get_with_token(&format!("{path}/file"), &other).await,
        404,
        "not_found",
    )
    .await;
    let delete = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&other)
        .send()
        .await
        .expect("r");
    problem(delete, 404, "not_found").await;
    assert!(
        app.get_json("/v1/photos", &other).await["items"]
            .as_array()
            .expect("items")
            .is_empty()
    );
    // The owner's photo is untouched.
    assert_eq!(app.get_json(&path, &owner).await["status"], "COMPLETED");

    // Someone else's upload key: refused before admission, nothing charged.
    let (balance, _) = app.credits(&other).await;
    let response = app
        .post_photo("/v1/photos/upscale", &other, &json!({"upload_key": key}))
        .await;
    problem(response, 404, "not_found").await;
    let response = app
        .post_photo(
            "/v1/photos/bestcut",
            &other,
            &json!({"upload_keys": [key, key.replace(".png", "-x.png")]}),
        )
        .await;
    problem(response, 404, "not_found").await;
    // Through the generic jobs route the worker refuses it: failed `not_found`, refunded.
    let job = app
        .submit_id(
            &other,
            &json!({"kind": "upscale", "input": {"upload_key": key}}),
        )
        .await;
    let job = app
        .wait_for_job(&other, &job, |j| {
            j["status"] == "FAILED" || j["status"] == "COMPLETED"
        })
        .await;
    assert_eq!(job["error"]["type"], "not_found", "{job}");
    assert_eq!(app.credits(&other).await, (balance, 0));
}

#[tokio::test]
async fn bad_images_fail_with_a_precise_type_and_are_refunded() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("careless").await;
    let (balance, _) = app.credits(&token).await;
    let jpeg = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::load_from_memory(&fixture("images/scene.png"))
            .expect("fixture")
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("encode");
        out.into_inner()
    };
    let bomb = fixture("images/bomb-100000.png");
    let cases: Vec<(&str, Vec<u8>, &str, usize, &str)> = vec![
        (
            "text",
            b"this is not an image".to_vec(),
            "image/jpeg",
            0,
            "invalid_image",
        ),
        ("empty", Vec::new(), "image/jpeg", 0, "invalid_image"),
        (
            "truncated jpeg",
            jpeg[..jpeg.len() / 2].to_vec(),
            "image/jpeg",
            0,
            "invalid_image",
        ),
        (
            "cmyk jpeg",
            fixture("images/cmyk.jpg"),
            "image/jpeg",
            0,
            "invalid_image",
        ),
        (
            "animated gif",
            fixture("images/animated.gif"),
            "image/png",
            0,
            "invalid_image",
        ),
        ("100000x100000 png", bomb, "image/png", 0, "image_too_large"),
        (
            "over the size limit",
            vec![0xFF; 20 * 1024 * 1024 + 1],
            "image/jpeg",
            1000,
            "image_too_large",
        ),
    ];
    let mut jobs = Vec::new();
    for (name, bytes, content_type, declared, expected) in cases {
        let declared = if declared == 0 {
            bytes.len().max(1)
        } else {
            declared
        };
        let key = app
            .upload_declared(&token, bytes, content_type, declared)
            .await;
        let response = app
            .post_photo(
                "/v1/photos/upscale",
                &token,
                &json!({"upload_key": key, "model": "realesr-animevideov3-x2"}),
            )
            .await;
        assert_eq!(response.status(), 202, "{name}");
        let id = response.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        jobs.push((name, id, expected));
        // Four at a time: the cap.
        if jobs.len() % 4 == 0 {
            for (name, id, expected) in jobs.drain(..) {
                check_failed(&app, &token, name, &id, expected).await;
            }
        }
    }
    for (name, id, expected) in jobs {
        check_failed(&app, &token, name, &id, expected).await;
    }
    assert_eq!(
        app.credits(&token).await,
        (balance, 0),
        "every failure refunded"
    );
}

async fn check_failed(app: &TestApp, token: &str, name: &str, id: &str, expected: &str) {
    let job = app
        .wait_for_job(token, id, |j| {
            j["status"] == "FAILED" || j["status"] == "COMPLETED"
        })
        .await;
    assert_eq!(job["status"], "FAILED", "{name}: {job}");
    assert_eq!(job["error"]["type"], expected, "{name}: {job}");
    let photo = app.get_json(&format!("/v1/photos/{id}"), token).await;
    assert!(
        photo["upscaled"].is_null() && photo["original"].is_null(),
        "{name}"
    );
}

#[tokio::test]
async fn best_cut_picks_the_sharpest_lists_every_score_and_can_upscale_the_winner() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("burst").await;
    let expected: Value =
        serde_json::from_slice(&fixture("bestcut/expected.json")).expect("expected scores");
    let names = ["noise-blurred.png", "noise.png", "noise-very-blurred.png"];
    let mut keys = Vec::new();
    for name in names {
        keys.push(
            app.upload(&token, fixture(&format!("bestcut/{name}")), "image/png")
                .await,
        );
    }
    let id = app
        .photo_job("/v1/photos/bestcut", &token, &json!({"upload_keys": keys}))
        .await;
    let photo = app.get_json(&format!("/v1/photos/{id}"), &token).await;
    assert_eq!(photo["winner"], keys[1].as_str(), "{photo}");
    let scores = photo["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), 3);
    for (score, name) in scores.iter().zip(names) {
        let got = score["score"].as_f64().expect("score");
        let want = expected["sharpness"][name].as_f64().expect("expected");
        assert!(
            ((got - want) / want).abs() < 1e-6,
            "{name}: {got} vs OpenCV {want}"
        );
    }
    assert_eq!(
        photo["original"]["sha256"].as_str(),
        Some(sha256(&fixture("bestcut/noise.png")).as_str())
    );
    assert!(photo["upscaled"].is_null());

    let id = app
        .photo_job(
            "/v1/photos/bestcut",
            &token,
            &json!({"upload_keys": keys, "upscale": true, "model": "realesr-animevideov3-x2", "format": "jpeg", "quality": 80}),
        )
        .await;
    let photo = app.get_json(&format!("/v1/photos/{id}"), &token).await;
    assert_eq!(photo["upscaled"]["content_type"], "image/jpeg");
    assert_eq!(photo["upscaled"]["width"], 166);
}

/// A JPEG of `image` at quality 90; with `rotated`, its EXIF says "rotate 90° clockwise".
fn camera_jpeg(image: &image::RgbImage, rotated: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut out, 90,
        ))
        .expect("jpeg");
    let mut bytes = out.into_inner();
    if rotated {
        let exif: &[u8] =
            b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
        let mut segment = vec![0xFF, 0xE1];
        segment.extend(u16::try_from(exif.len() + 2).expect("small").to_be_bytes());
        segment.extend(exif);
        bytes.splice(2..2, segment);
    }
    bytes
}

/// Camera JPEGs of several sizes, more of them than the worker scores at once (it decodes each
/// into a buffer kept for the next): every score is exactly its decoded image's, the order is the
/// uploads', and the winner, whose EXIF turns it, is kept with its upright size. A corrupt photo
/// among them fails the job, refunded.
#[tokio::test]
async fn best_cut_of_camera_jpegs_scores_each_exactly_and_keeps_the_winner_upright() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("jpegburst").await;
    let blurred = |width: u32, height: u32, sigma: f32| {
        image::imageops::blur(&noise(width, height, u64::from(width)), sigma)
    };
    let photos = [
        camera_jpeg(&blurred(160, 120, 2.0), false),
        camera_jpeg(&blurred(64, 48, 1.5), false),
        camera_jpeg(&noise(96, 64, 7), true),
        camera_jpeg(&blurred(200, 150, 3.0), false),
        camera_jpeg(&blurred(120, 90, 1.0), false),
    ];
    let mut keys = Vec::new();
    for bytes in &photos {
        keys.push(app.upload(&token, bytes.clone(), "image/jpeg").await);
    }
    let id = app
        .photo_job("/v1/photos/bestcut", &token, &json!({"upload_keys": keys}))
        .await;
    let photo = app.get_json(&format!("/v1/photos/{id}"), &token).await;
    let scores = photo["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), photos.len(), "{photo}");
    for ((score, key), bytes) in scores.iter().zip(&keys).zip(&photos) {
        let decoded = image::load_from_memory(bytes).expect("decode");
        assert_eq!(score["upload_key"], key.as_str());
        assert_eq!(
            score["score"].as_f64(),
            Some(lambent::bestcut::sharpness(&decoded)),
            "{key}"
        );
    }
    assert_eq!(photo["winner"], keys[2].as_str(), "{photo}");
    assert_eq!(
        (&photo["original"]["width"], &photo["original"]["height"]),
        (&json!(64), &json!(96)),
        "{photo}"
    );
    assert_eq!(
        photo["original"]["sha256"].as_str(),
        Some(sha256(&photos[2]).as_str())
    );

    let (balance, _) = app.credits(&token).await;
    let corrupt = photos[3][..photos[3].len() / 2].to_vec();
    let mut with_corrupt = keys[..3].to_vec();
    with_corrupt.push(app.upload(&token, corrupt, "image/jpeg").await);
    with_corrupt.push(keys[4].clone());
    let id = app
        .submit_photo(
            "/v1/photos/bestcut",
            &token,
            &json!({"upload_keys": with_corrupt}),
        )
        .await;
    check_failed(&app, &token, "a corrupt photo", &id, "invalid_image").await;
    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert!(
        job["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(with_corrupt[3].as_str())),
        "{job}"
    );
    assert_eq!(app.credits(&token).await.0, balance, "refunded");
}

#[tokio::test]
async fn photo_requests_are_validated_before_admission() {
    let app = TestApp::spawn().await;
    let (token, user_id) = app.user("sloppy").await;
    let key = format!("uploads/{user_id}/nothing.png");
    for (path, body, field) in [
        (
            "/v1/photos/upscale",
            json!({"upload_key": key, "model": "esrgan-9000"}),
            "model",
        ),
        (
            "/v1/photos/upscale",
            json!({"upload_key": key, "outscale": 0.5}),
            "outscale",
        ),
        (
            "/v1/photos/upscale",
            json!({"upload_key": key, "tile": 4096}),
            "tile",
        ),
        (
            "/v1/photos/upscale",
            json!({"upload_key": "photos/x.png"}),
            "upload_key",
        ),
        (
            "/v1/photos/upscale",
            json!({"upload_key": key, "colour": "red"}),
            "colour",
        ),
        (
            "/v1/photos/bestcut",
            json!({"upload_keys": [key]}),
            "upload_keys",
        ),
        // The missing field is named itself: these routes take no `input` wrapper.
        ("/v1/photos/upscale", json!({}), "upload_key"),
        (
            "/v1/photos/upscale",
            json!({"upload_key": key, "outscale": "four"}),
            "outscale",
        ),
    ] {
        let response = app.post_photo(path, &token, &body).await;
        let problem = problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    // A well-formed request for an upload that does not exist.
    let response = app
        .post_photo("/v1/photos/upscale", &token, &json!({"upload_key": key}))
        .await;
    problem(response, 404, "not_found").await;
    assert_eq!(app.credits(&token).await.1, 0);
    assert!(
        app.get_json("/v1/photos", &token).await["items"]
            .as_array()
            .expect("items")
            .is_empty()
    );
}

/// A flat grey PNG of `width`×`height`: a few hundred KB that decode to many megapixels.
fn flat_png(width: u32, height: u32) -> Vec<u8> {
    use image::ImageEncoder as _;
    let pixels = image::GrayImage::from_pixel(width, height, image::Luma([128]));
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut bytes,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Sub,
    )
    .write_image(pixels.as_raw(), width, height, image::ExtendedColorType::L8)
    .expect("png");
    bytes
}

/// Best-cut is priced by the pixels it decodes (read from the headers at submission): two
/// 12000×3333 panoramas (80 MP, a few hundred KB) cost 4 credits, not 1; seven (280 MP) are
/// refused before anything is charged; an upload replaced by a bigger one after submission
/// fails the job (refunded) instead of decoding more than was paid for.
#[tokio::test]
async fn best_cut_is_priced_and_limited_by_decoded_pixels() {
    let app = TestApp::spawn_without_worker(&[]).await;
    let (token, _) = app.user("panoramas").await;
    let panorama = flat_png(12_000, 3_333);
    assert!(panorama.len() < 1_000_000, "{} bytes", panorama.len());
    let mut keys = Vec::new();
    for _ in 0..7 {
        keys.push(app.upload(&token, panorama.clone(), "image/png").await);
    }

    let refused = app
        .post_photo("/v1/photos/bestcut", &token, &json!({"upload_keys": keys}))
        .await;
    let body = problem(refused, 422, "validation_failed").await;
    assert!(body.to_string().contains("280 megapixels"), "{body}");
    assert_eq!(app.credits(&token).await, (100, 0), "nothing charged");

    let two = app
        .post_photo(
            "/v1/photos/bestcut",
            &token,
            &json!({"upload_keys": &keys[..2]}),
        )
        .await;
    assert_eq!(two.status(), 202);
    assert_eq!(app.credits(&token).await, (96, 1), "80 MP: 4 credits");

    // Priced for two small photos, then one is replaced by a panorama before the worker runs.
    let small = flat_png(1000, 1000);
    let first = app.upload(&token, small.clone(), "image/png").await;
    let second = app.upload(&token, small, "image/png").await;
    let submitted = app
        .post_photo(
            "/v1/photos/bestcut",
            &token,
            &json!({"upload_keys": [first, second]}),
        )
        .await;
    assert_eq!(submitted.status(), 202);
    let id = submitted.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.credits(&token).await, (95, 2));
    s3(&app)
        .put_object()
        .bucket(&app.running.stack.refs["MediaBucket"])
        .key(&second)
        .body(panorama.into())
        .send()
        .await
        .expect("replace");
    let state = &app.running.gateway.state;
    let message = json!({"job_id": id}).to_string();
    lambent::jobs::worker::process(state, &message)
        .await
        .expect("processed");
    let job = app.get_json(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["error"]["type"], "image_too_large");
    assert_eq!(
        app.credits(&token).await,
        (96, 1),
        "refunded; the first job still queued"
    );
}
