//! Videos over HTTP: clips made here by FFmpeg from test patterns (never committed) are uploaded,
//! probed, captured and cut; bad files are refused with their own error types; every video is its
//! owner's.

use std::path::PathBuf;
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, call, finished, ok_json, problem, s3};

fn tools() -> PathBuf {
    lambent_local::models::ffmpeg_dir(&lambent_local::repo_root()).expect("make ffmpeg")
}

/// Runs the test's own FFmpeg (the one the stack uses) with `args`.
fn ffmpeg(args: &[&str]) {
    let status = Command::new(tools().join("ffmpeg"))
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// A directory of clips, removed with it.
struct Clips {
    dir: PathBuf,
}

impl Drop for Clips {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Clips {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("lambent-clips-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("clips dir");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("clip")
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// 4 s of a 320×240 test pattern at 30 fps, a keyframe every half second, with a tone.
    fn mp4(&self) -> &Self {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-g",
            "15",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            &self.arg("clip.mp4"),
        ]);
        self
    }

    fn webm(&self) -> &Self {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-t",
            "4",
            "-c:v",
            "libvpx-vp9",
            "-g",
            "15",
            "-b:v",
            "300k",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            &self.arg("clip.webm"),
        ]);
        self
    }

    /// The MP4's streams in a QuickTime file that a player turns 90° clockwise (a phone held
    /// upright: FFmpeg's display matrix says -90, counter-clockwise).
    fn mov(&self) -> &Self {
        ffmpeg(&[
            "-display_rotation",
            "-90",
            "-i",
            &self.arg("clip.mp4"),
            "-c",
            "copy",
            &self.arg("clip.mov"),
        ]);
        self
    }
}

/// PSNR of two same-sized RGB images, in dB (infinite when equal).
fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut sum = 0f64;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = f64::from(*x) - f64::from(*y);
        sum += d * d;
    }
    let mse = sum / a.as_raw().len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

async fn object(app: &TestApp, key: &str) -> Vec<u8> {
    s3(app)
        .get_object()
        .bucket(&app.running.stack.refs["MediaBucket"])
        .key(key)
        .send()
        .await
        .expect("object")
        .body
        .collect()
        .await
        .expect("body")
        .to_vec()
}

/// Uploads `bytes` as `content_type` and makes a video of it: the video's id.
async fn import(app: &TestApp, token: &str, bytes: Vec<u8>, content_type: &str) -> String {
    let key = app.upload(token, bytes, content_type).await;
    let submitted = ok_json(
        call(
            app,
            Method::POST,
            "/v1/videos",
            Some(token),
            Some(&json!({"upload_key": key})),
        )
        .await,
        202,
    )
    .await;
    submitted["id"].as_str().expect("id").to_owned()
}

async fn video(app: &TestApp, token: &str, id: &str) -> Value {
    finished(app, token, id).await;
    app.get_json(&format!("/v1/videos/{id}"), token).await
}

async fn studio(app: &TestApp, token: &str, kind: &str, input: Value) -> Value {
    let id = app
        .submit_id(token, &json!({"kind": kind, "input": input}))
        .await;
    finished(app, token, &id).await
}

fn close(a: f64, b: f64, within: f64) -> bool {
    (a - b).abs() <= within
}

/// FFmpeg's own frame at `at` seconds of `clip`.
fn reference_frame(clips: &Clips, clip: &str, at: &str) -> image::RgbImage {
    let out = clips.arg(&format!("{clip}-{at}.png"));
    ffmpeg(&["-ss", at, "-i", &clips.arg(clip), "-frames:v", "1", &out]);
    image::open(&out).expect("png").to_rgb8()
}

#[tokio::test]
async fn clips_are_probed_captured_and_trimmed() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("vera").await;
    let clips = Clips::new();
    clips.mp4().webm().mov();

    // Arrange: three containers, three codecs, one rotated.
    let mp4 = import(&app, &token, clips.bytes("clip.mp4"), "video/mp4").await;
    let webm = import(&app, &token, clips.bytes("clip.webm"), "video/webm").await;
    let mov = import(&app, &token, clips.bytes("clip.mov"), "video/quicktime").await;

    // Probed correctly.
    let v = video(&app, &token, &mp4).await;
    assert_eq!(v["status"], "COMPLETED", "{v}");
    let p = &v["probe"];
    assert!(p["container"].as_str().expect("c").contains("mp4"), "{p}");
    assert_eq!(p["video"]["codec"], "h264");
    assert_eq!(
        (p["video"]["width"].as_u64(), p["video"]["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(p["video"]["rotation"], 0);
    assert!(
        close(p["video"]["frame_rate"].as_f64().expect("fps"), 30.0, 0.01),
        "{p}"
    );
    assert!(
        close(p["duration_seconds"].as_f64().expect("d"), 4.0, 0.1),
        "{p}"
    );
    assert_eq!(p["audio"]["codec"], "aac");
    assert_eq!(p["audio"]["sample_rate"], 48000);
    assert_eq!(v["content_type"], "video/mp4");
    // Its files: the source as uploaded, a poster, a preview.
    let source = reqwest::get(v["source"]["url"].as_str().expect("url"))
        .await
        .expect("get");
    assert_eq!(
        source.bytes().await.expect("b").to_vec(),
        clips.bytes("clip.mp4")
    );
    let poster = reqwest::get(v["poster"]["url"].as_str().expect("url"))
        .await
        .expect("get");
    assert!(poster.bytes().await.expect("b").starts_with(&[0xFF, 0xD8]));
    assert!(v["preview"]["bytes"].as_u64().expect("preview") > 0);

    let v = video(&app, &token, &webm).await;
    assert_eq!(v["status"], "COMPLETED", "{v}");
    assert_eq!(v["probe"]["video"]["codec"], "vp9");
    assert!(
        v["probe"]["container"]
            .as_str()
            .expect("c")
            .contains("webm")
    );
    assert!(v["probe"]["audio"].is_null());
    assert!(close(
        v["probe"]["duration_seconds"].as_f64().expect("d"),
        4.0,
        0.1
    ));

    let v = video(&app, &token, &mov).await;
    assert_eq!(v["status"], "COMPLETED", "{v}");
    let p = &v["probe"]["video"];
    assert_eq!(p["rotation"], 90, "{p}");
    assert_eq!(
        (p["display_width"].as_u64(), p["display_height"].as_u64()),
        (Some(240), Some(320))
    );

    // The timeline: keyframes every half second, ten thumbnails.
    let timeline = app
        .get_json(&format!("/v1/videos/{mp4}/timeline"), &token)
        .await;
    let keyframes: Vec<f64> = serde_json::from_value(timeline["keyframes"].clone()).expect("k");
    assert_eq!(keyframes.len(), 8, "{keyframes:?}");
    assert!(keyframes.iter().any(|k| close(*k, 1.0, 0.001)));
    let strip = timeline["strip"].as_array().expect("strip");
    assert_eq!(strip.len(), 10);
    let thumb = reqwest::get(strip[3]["url"].as_str().expect("url"))
        .await
        .expect("get");
    let thumb = image::load_from_memory(&thumb.bytes().await.expect("b")).expect("jpeg");
    assert_eq!(thumb.height(), 90);

    // A frame at 1.5 s equals FFmpeg's own extraction of it, rotated as a player shows it.
    for (id, clip, size) in [
        (&mp4, "clip.mp4", (320, 240)),
        (&mov, "clip.mov", (240, 320)),
    ] {
        let job = studio(
            &app,
            &token,
            "capture_frame",
            json!({"video_id": id, "at_seconds": 1.5}),
        )
        .await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
        let key = job["output"]["upload_key"].as_str().expect("key");
        let frame = image::load_from_memory(&object(&app, key).await)
            .expect("png")
            .to_rgb8();
        assert_eq!(frame.dimensions(), size);
        let reference = reference_frame(&clips, clip, "1.5");
        let db = psnr(&frame, &reference);
        assert!(db >= 45.0, "{clip}: {db} dB");
    }
    // The frame is an upload like any other: an image kind takes it.
    let frame = studio(
        &app,
        &token,
        "capture_frame",
        json!({"video_id": mp4, "at_seconds": 0.2}),
    )
    .await;
    let upscaled = app
        .submit_id(
            &token,
            &json!({"kind": "upscale", "input": {
            "upload_key": frame["output"]["upload_key"], "model": "realesr-animevideov3-x2"}}),
        )
        .await;
    let upscaled = finished(&app, &token, &upscaled).await;
    assert_eq!(upscaled["status"], "COMPLETED", "{upscaled}");
    assert_eq!(upscaled["output"]["upscaled"]["width"], 640);

    // A range from a keyframe is copied; from elsewhere it is encoded again. Either way the clip
    // runs as long as the range, within one frame.
    for (start, end, mode) in [(1.0, 3.5, "copy"), (1.2, 3.7, "reencode")] {
        let job = studio(
            &app,
            &token,
            "select_range",
            json!({"video_id": mp4, "start": start, "end": end}),
        )
        .await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
        let cut = app
            .get_json(
                &format!("/v1/videos/{}", job["id"].as_str().expect("id")),
                &token,
            )
            .await;
        assert_eq!(cut["kind"], "select_range");
        assert_eq!(cut["mode"], mode, "{cut}");
        assert_eq!(cut["source_video_id"], mp4.as_str());
        let duration = cut["probe"]["duration_seconds"].as_f64().expect("d");
        assert!(
            close(duration, end - start, 1.0 / 30.0 + 0.001),
            "{mode}: {duration}"
        );
    }
    let job = studio(
        &app,
        &token,
        "select_range",
        json!({"video_id": webm, "start": 0.5, "end": 2.0}),
    )
    .await;
    let cut = app
        .get_json(
            &format!("/v1/videos/{}", job["id"].as_str().expect("id")),
            &token,
        )
        .await;
    assert_eq!(
        (cut["mode"].as_str(), cut["content_type"].as_str()),
        (Some("copy"), Some("video/webm")),
        "{cut}"
    );

    // A post shows a video: the clip itself, not its poster, strip or preview.
    let post = ok_json(
        call(
            &app,
            Method::POST,
            "/v1/posts",
            Some(&token),
            Some(&json!({"job_id": mp4, "caption": "a clip"})),
        )
        .await,
        201,
    )
    .await;
    let media = post["media"].as_array().expect("media");
    assert_eq!(media.len(), 1, "{post}");
    assert_eq!(media[0]["content_type"], "video/mp4");
    let shown = reqwest::get(media[0]["url"].as_str().expect("url"))
        .await
        .expect("get");
    assert_eq!(
        shown.bytes().await.expect("b").to_vec(),
        clips.bytes("clip.mp4")
    );

    // Listed: three imports and three cuts.
    let listed = app.get_json("/v1/videos", &token).await;
    assert_eq!(listed["items"].as_array().expect("items").len(), 6);

    // Deleted with its files.
    let bucket = app.running.stack.refs["MediaBucket"].clone();
    let response = call(
        &app,
        Method::DELETE,
        &format!("/v1/videos/{webm}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(response.status(), 204);
    let response = call(
        &app,
        Method::GET,
        &format!("/v1/videos/{webm}"),
        Some(&token),
        None,
    )
    .await;
    problem(response, 404, "not_found").await;
    let left = s3(&app)
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("videos/")
        .send()
        .await
        .expect("list");
    assert!(
        left.contents()
            .iter()
            .all(|o| !o.key().unwrap_or("").contains(webm.as_str())),
        "the deleted video's files are gone"
    );
}

/// A faststart MP4 cut at 60 % (its index says more than the file holds), and one whose index at
/// the end is cut off.
fn truncated(clips: &Clips) -> (Vec<u8>, Vec<u8>) {
    ffmpeg(&[
        "-i",
        &clips.arg("clip.mp4"),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        &clips.arg("fast.mp4"),
    ]);
    let cut = |b: Vec<u8>| {
        let n = b.len() * 6 / 10;
        b[..n].to_vec()
    };
    (cut(clips.bytes("fast.mp4")), cut(clips.bytes("clip.mp4")))
}

/// A QuickTime file whose header and frames say 20000×20000 (Motion JPEG, patched).
fn huge(clips: &Clips) -> Vec<u8> {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=5",
        "-t",
        "1",
        "-c:v",
        "mjpeg",
        &clips.arg("small.mov"),
    ]);
    let mut bytes = clips.bytes("small.mov");
    let side = 20_000u16.to_be_bytes();
    // The sample description: `jpeg`, then 24 bytes to its width and height.
    let entry = bytes
        .windows(4)
        .position(|w| w == b"jpeg")
        .expect("stsd entry");
    for at in [entry + 28, entry + 30] {
        bytes[at..at + 2].copy_from_slice(&side);
    }
    // Every frame's start-of-frame header: height, then width.
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(2).position(|w| w == [0xFF, 0xC0]) {
        let at = i + p;
        bytes[at + 5..at + 7].copy_from_slice(&side);
        bytes[at + 7..at + 9].copy_from_slice(&side);
        i = at + 2;
    }
    bytes
}

fn long_clip(clips: &Clips) -> Vec<u8> {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=5",
        "-t",
        "240",
        "-c:v",
        "libx264",
        &clips.arg("long.mp4"),
    ]);
    clips.bytes("long.mp4")
}

#[tokio::test]
async fn bad_videos_are_refused_with_their_own_types() {
    // Studio jobs cost 2 credits here, to show what a refusal gives back.
    let app = TestApp::spawn_with(&[("VIDEO_STUDIO_CREDITS", "2")]).await;
    let (token, _) = app.user("ravi").await;
    let (other, _) = app.user("otto").await;
    let clips = Clips::new();
    clips.mp4();
    let (fast_cut, tail_cut) = truncated(&clips);

    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "a text file named .mp4",
            b"this is not a video\n".repeat(50),
            "video/mp4",
            "not_a_video",
        ),
        (
            "a truncated faststart mp4",
            fast_cut,
            "video/mp4",
            "truncated",
        ),
        (
            "an mp4 cut before its index",
            tail_cut,
            "video/mp4",
            "truncated",
        ),
        (
            "a 4-minute clip",
            long_clip(&clips),
            "video/mp4",
            "too_long",
        ),
        (
            "a 20000×20000 header",
            huge(&clips),
            "video/quicktime",
            "too_large",
        ),
    ];
    let mut ids = Vec::new();
    for (what, bytes, content_type, _) in &cases {
        ids.push((
            what,
            import(&app, &token, bytes.clone(), content_type).await,
        ));
    }
    for ((what, id), (_, _, _, code)) in ids.iter().zip(&cases) {
        let v = video(&app, &token, id).await;
        assert_eq!(v["status"], "FAILED", "{what}: {v}");
        assert_eq!(v["error"]["type"], *code, "{what}: {v}");
    }
    // An upload over the video limit is refused when asked for.
    let response = call(
        &app,
        Method::POST,
        "/v1/uploads",
        Some(&token),
        Some(&json!({"content_type": "video/mp4", "size": 200_000_001})),
    )
    .await;
    problem(response, 422, "validation_failed").await;

    let good = import(&app, &token, clips.bytes("clip.mp4"), "video/mp4").await;
    assert_eq!(video(&app, &token, &good).await["status"], "COMPLETED");
    let (balance, _) = app.credits(&token).await;

    // Ranges: 11 s, past the end; a frame past the end. Refused before admission.
    for (kind, input, field) in [
        (
            "select_range",
            json!({"video_id": good, "start": 0, "end": 11}),
            "end",
        ),
        (
            "select_range",
            json!({"video_id": good, "start": 2, "end": 5}),
            "end",
        ),
        (
            "select_range",
            json!({"video_id": good, "start": 4.5, "end": 5}),
            "start",
        ),
        (
            "capture_frame",
            json!({"video_id": good, "at_seconds": 4.2}),
            "at_seconds",
        ),
    ] {
        let body = problem(
            app.submit(&token, &json!({"kind": kind, "input": input}))
                .await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    // Someone else's video is not there, for every route and kind.
    for path in [
        format!("/v1/videos/{good}"),
        format!("/v1/videos/{good}/timeline"),
    ] {
        problem(
            call(&app, Method::GET, &path, Some(&other), None).await,
            404,
            "not_found",
        )
        .await;
    }
    problem(
        call(
            &app,
            Method::DELETE,
            &format!("/v1/videos/{good}"),
            Some(&other),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let body = json!({"kind": "capture_frame", "input": {"video_id": good, "at_seconds": 1}});
    problem(app.submit(&other, &body).await, 404, "not_found").await;
    assert_eq!(app.credits(&token).await.0, balance, "nothing was debited");

    // A studio job that fails where it runs is refunded: its video's file vanished meanwhile.
    let source = app.get_json(&format!("/v1/videos/{good}"), &token).await;
    let url = source["source"]["url"].as_str().expect("url");
    let key = url
        .split('?')
        .next()
        .expect("path")
        .split(&format!("{}/", app.running.stack.refs["MediaBucket"]))
        .nth(1)
        .expect("key");
    let job = studio(
        &app,
        &token,
        "capture_frame",
        json!({"video_id": good, "at_seconds": 1}),
    )
    .await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(
        app.credits(&token).await.0,
        balance - 2,
        "a capture costs 2 here"
    );
    s3(&app)
        .delete_object()
        .bucket(&app.running.stack.refs["MediaBucket"])
        .key(key)
        .send()
        .await
        .expect("delete");
    let job = studio(
        &app,
        &token,
        "select_range",
        json!({"video_id": good, "start": 1, "end": 2}),
    )
    .await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["error"]["type"], "not_found");
    assert_eq!(
        app.credits(&token).await,
        (balance - 2, 0),
        "refunded, and its slot freed"
    );
}

#[tokio::test]
async fn a_glitch_sends_the_video_to_the_provider_and_its_output_becomes_a_video() {
    let (app, fakes) = crate::generation::start(&[], true).await;
    let (token, _) = app.user("gina").await;
    let (other, _) = app.user("olaf").await;
    let clips = Clips::new();
    clips.mp4();
    let motion = import(&app, &token, clips.bytes("clip.mp4"), "video/mp4").await;
    assert_eq!(video(&app, &token, &motion).await["status"], "COMPLETED");
    let character = app.upload(&token, crate::app::scene(), "image/png").await;

    // Someone else's video cannot be glitched; nothing is debited.
    let theirs = app.upload(&other, crate::app::scene(), "image/png").await;
    let body =
        json!({"kind": "glitch_animate", "input": {"upload_key": theirs, "video_id": motion}});
    problem(app.submit(&other, &body).await, 404, "not_found").await;

    let (before, _) = app.credits(&token).await;
    for (kind, input) in [
        (
            "glitch_animate",
            json!({"upload_key": character, "video_id": motion}),
        ),
        (
            "glitch_replace",
            json!({"subject_upload_key": character, "video_id": motion}),
        ),
    ] {
        let id = app
            .submit_id(&token, &json!({"kind": kind, "input": input}))
            .await;
        let job = finished(&app, &token, &id).await;
        assert_eq!(job["status"], "COMPLETED", "{kind}: {job}");
        // Wan Animate at fal: the video and the character by presigned URLs of our bucket.
        let sent = fakes
            .request_input(job["provider"]["request_id"].as_str().expect("request"))
            .expect("input");
        let video_url = sent["video_url"].as_str().expect("video_url");
        assert!(
            video_url.contains("/videos/") && video_url.contains("X-Amz-Signature"),
            "{sent}"
        );
        assert!(
            sent["image_url"]
                .as_str()
                .expect("image_url")
                .contains("X-Amz-Signature"),
            "{sent}"
        );
        assert_eq!(
            job["provider"]["model"]
                .as_str()
                .map(|m| m.contains("wan/v2.2-14b/animate")),
            Some(true)
        );
        // The output is the video the provider made (the fake returns the one it read), stored.
        let file = &job["output"]["files"][0];
        assert_eq!(file["content_type"], "video/mp4", "{job}");
        let stored = object(&app, file["key"].as_str().expect("key")).await;
        assert_eq!(stored, clips.bytes("clip.mp4"));

        // Made a video of, it is probed and listed with the others.
        let made = ok_json(
            call(
                &app,
                Method::POST,
                "/v1/videos",
                Some(&token),
                Some(&json!({"job_id": id})),
            )
            .await,
            202,
        )
        .await;
        let made = video(&app, &token, made["id"].as_str().expect("id")).await;
        assert_eq!(made["status"], "COMPLETED", "{made}");
        assert_eq!(made["from_job_id"], id.as_str());
        assert_eq!(made["probe"]["video"]["codec"], "h264");
    }
    assert_eq!(
        app.credits(&token).await,
        (before - 60, 0),
        "30 credits each"
    );
    let listed = app.get_json("/v1/videos", &token).await;
    assert_eq!(listed["items"].as_array().expect("items").len(), 3);
    // Another's job cannot be made a video of.
    let body = json!({"job_id": motion});
    problem(
        call(&app, Method::POST, "/v1/videos", Some(&other), Some(&body)).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn music_goes_over_a_clip_and_a_frame_becomes_a_template_and_a_sticker() {
    let (app, fakes) = crate::generation::start(&[], true).await;
    let (token, _) = app.user("mona").await;
    let clips = Clips::new();
    clips.mp4().webm();
    let with_sound = import(&app, &token, clips.bytes("clip.mp4"), "video/mp4").await;
    let silent = import(&app, &token, clips.bytes("clip.webm"), "video/webm").await;
    let music = app
        .submit_id(
            &token,
            &json!({"kind": "music", "input": {"prompt": "lo-fi beat", "duration_seconds": 2}}),
        )
        .await;
    let music = finished(&app, &token, &music).await;
    assert_eq!(
        music["output"]["files"][0]["content_type"], "audio/wav",
        "{music}"
    );

    // The music (2 s, looped) over the whole 4 s of each clip: replacing the sound, or under it.
    for (video_id, mix, codec) in [(&silent, false, "vp9"), (&with_sound, true, "h264")] {
        assert_eq!(video(&app, &token, video_id).await["status"], "COMPLETED");
        let job = studio(
            &app,
            &token,
            "mux_audio",
            json!({"video_id": video_id, "audio_job_id": music["id"], "mix": mix}),
        )
        .await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
        let muxed = app
            .get_json(
                &format!("/v1/videos/{}", job["id"].as_str().expect("id")),
                &token,
            )
            .await;
        assert_eq!(muxed["kind"], "mux_audio");
        assert_eq!(muxed["probe"]["audio"]["codec"], "aac", "{muxed}");
        assert_eq!(
            muxed["probe"]["video"]["codec"], codec,
            "the picture is copied"
        );
        let duration = muxed["probe"]["duration_seconds"].as_f64().expect("d");
        assert!(close(duration, 4.0, 0.05), "{duration}");
    }
    // Audio that is not the caller's, or a job with no audio, is refused before admission.
    let (other, _) = app.user("nils").await;
    let body = json!({"kind": "mux_audio", "input": {"video_id": silent, "audio_job_id": silent}});
    problem(app.submit(&token, &body).await, 404, "not_found").await;
    let body =
        json!({"kind": "mux_audio", "input": {"video_id": silent, "audio_job_id": music["id"]}});
    problem(app.submit(&other, &body).await, 404, "not_found").await;

    // A captured frame starts a template (image to video at fal) and becomes a sticker.
    let frame = studio(
        &app,
        &token,
        "capture_frame",
        json!({"video_id": with_sound, "at_seconds": 1}),
    )
    .await;
    let key = frame["output"]["upload_key"].clone();
    for (kind, input, model) in [
        (
            "template",
            json!({"upload_key": key, "template": "dolly-zoom"}),
            "kling-video",
        ),
        (
            "remove_background",
            json!({"upload_key": key}),
            "fal-ai/birefnet",
        ),
    ] {
        let id = app
            .submit_id(&token, &json!({"kind": kind, "input": input}))
            .await;
        let job = finished(&app, &token, &id).await;
        assert_eq!(job["status"], "COMPLETED", "{kind}: {job}");
        assert!(
            job["output"]["model"]
                .as_str()
                .expect("model")
                .contains(model)
        );
        let sent = fakes
            .request_input(job["provider"]["request_id"].as_str().expect("request"))
            .expect("input");
        assert!(
            sent["image_url"]
                .as_str()
                .expect("image_url")
                .contains(key.as_str().expect("key")),
            "{sent}"
        );
    }
}
