//! `lambent-dev`: the whole backend on http://127.0.0.1:3000 against a local AWS emulator.

use std::collections::HashMap;

use anyhow::Context as _;
use lambent_local::{Emulator, Options, repo_root};

/// Configuration a developer may set in the shell to override the template's values.
const OVERRIDABLE: &[&str] = &[
    "STARTING_CREDITS",
    "UPSCALE_PROVIDER",
    "UPSCALE_PRECISION",
    "UPSCALE_AMX",
    "UPSCALE_TILE",
    "ACCESS_TOKEN_TTL_SECONDS",
    "REFRESH_TOKEN_TTL_SECONDS",
    "REGISTER_RATE_PER_MINUTE",
    "LOGIN_RATE_PER_MINUTE",
    "JOB_CAP_FREE",
    "JOB_CAP_STANDARD",
    "JOB_CAP_PREMIUM",
    "FAL_QUEUE_URL",
    "FAL_JWKS_URL",
    "FIREBASE_PROJECT_ID",
    "FIREBASE_CERTS_URL",
    "REPLICATE_API_URL",
    "AI_SERVER_URL",
    "RECONCILE_QUIET_SECONDS",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lambent::telemetry::init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .map(|p| p.parse())
        .transpose()
        .context("PORT")?
        .unwrap_or(3000);
    let emulator = Emulator::start(&repo_root()).await?;
    // Local stand-ins for fal, Replicate and an AI server (no internet needed), unless the shell
    // points at real ones.
    let fakes = lambent_local::fakes::FakeProviders::start().await?;
    let mut overrides: HashMap<String, String> = fakes.overrides().into_iter().collect();
    overrides.extend(
        OVERRIDABLE
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?))),
    );
    let running = lambent_local::start(
        &emulator.endpoint,
        Options {
            prefix: "lambent-local".into(),
            port,
            overrides,
            worker: true,
            reaper_every: Some(std::time::Duration::from_secs(5)),
            rankings_every: Some(std::time::Duration::from_secs(30)),
        },
    )
    .await?;
    let state = &running.gateway.state;
    let refs = &running.stack.refs;
    let keys: serde_json::Value = serde_json::from_str(secrecy::ExposeSecret::expose_secret(
        &state.secret_string(&refs["ProviderKeys"]).await?,
    ))?;
    let ai_secret = state.secret_string(&refs["AiWebhookSecret"]).await?;
    let oauth_clients: serde_json::Value = serde_json::from_str(
        secrecy::ExposeSecret::expose_secret(&state.secret_string(&refs["OAuthClients"]).await?),
    )?;
    fakes.set_oauth_client_secrets(&oauth_clients);
    lambent_local::connect_payments(&fakes, &running).await?;
    fakes.set_provider_keys(&keys, secrecy::ExposeSecret::expose_secret(&ai_secret));
    let photo = repo_root().join("tests/fixtures/images/scene.png");
    let ffmpeg = lambent_local::models::ffmpeg_dir(&repo_root())?.join("ffmpeg");
    walkthrough(
        &running.base_url,
        &running.stream_url,
        &emulator.endpoint,
        fakes.base_url(),
        &photo.display().to_string(),
        &ffmpeg.display().to_string(),
    );
    tokio::select! {
        result = running.server => result.context("the gateway stopped")??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn walkthrough(base: &str, stream: &str, emulator: &str, fakes: &str, photo: &str, ffmpeg: &str) {
    println!(
        r#"
Lambent is serving on {base}   (AWS emulator: {emulator}; fal, Replicate, an AI server, Firebase, Google, Kakao and Naver are local fakes)

The web console: open {base}/console in a browser (sign up there, or sign in as ann below).

Try it, in another terminal:

  curl -s {base}/health; echo

  # register (201) and keep the tokens
  curl -s -X POST {base}/v1/auth/register -H 'content-type: application/json' \
    -d '{{"email":"ann@example.com","username":"ann","password":"correct horse"}}'; echo

  # log in (200); TOKEN is the access token, REFRESH the refresh token
  curl -s -X POST {base}/v1/auth/login -H 'content-type: application/json' \
    -d '{{"email":"ann@example.com","password":"correct horse"}}' > /tmp/lambent-tokens.json
  TOKEN=$(python3 -c 'import json;print(json.load(open("/tmp/lambent-tokens.json"))["access_token"])')
  REFRESH=$(python3 -c 'import json;print(json.load(open("/tmp/lambent-tokens.json"))["refresh_token"])')

  # your profile (200), then change it
  curl -s {base}/v1/auth/me -H "authorization: Bearer $TOKEN"; echo
  curl -s -X PATCH {base}/v1/users/me -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{{"display_name":"Ann","birthday":"1990-04-01","gender":"female"}}'; echo

  # submit a job (202): the worker runs it, IN_QUEUE -> IN_PROGRESS -> COMPLETED; then your credits
  JOB=$(curl -s -X POST {base}/v1/jobs -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{{"kind":"sleep","input":{{"ms":500}}}}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  until curl -s {base}/v1/jobs/$JOB -H "authorization: Bearer $TOKEN" | grep -q '"COMPLETED"'; do sleep 0.2; done
  curl -s {base}/v1/jobs/$JOB -H "authorization: Bearer $TOKEN"; echo
  curl -s {base}/v1/credits/transactions -H "authorization: Bearer $TOKEN"; echo

  # upscale a photo: an upload URL (201), PUT the file there, the job (202), the photo with its files
  PHOTO_FILE={photo}
  curl -s -X POST {base}/v1/uploads -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{{\"content_type\":\"image/png\",\"size\":$(stat -c %s $PHOTO_FILE)}}" > /tmp/lambent-upload.json
  KEY=$(python3 -c 'import json;print(json.load(open("/tmp/lambent-upload.json"))["key"])')
  curl -s -X PUT "$(python3 -c 'import json;print(json.load(open("/tmp/lambent-upload.json"))["url"])')" \
    -H 'content-type: image/png' --data-binary @$PHOTO_FILE
  PHOTO=$(curl -s -X POST {base}/v1/photos/upscale -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{{\"upload_key\":\"$KEY\",\"model\":\"realesr-animevideov3-x2\"}}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  until curl -s {base}/v1/photos/$PHOTO -H "authorization: Bearer $TOKEN" | grep -qE '"status":"(COMPLETED|FAILED)"'; do sleep 0.2; done
  curl -s {base}/v1/photos/$PHOTO -H "authorization: Bearer $TOKEN"; echo

  # a video (LOKIZ): a 4-second clip FFmpeg makes here, uploaded, made a video (202: probed, with a
  # poster, a thumbnail strip and a preview); a frame captured at 1.5 s (a PNG upload any image kind
  # takes), then 1 s to 3.5 s cut out (keyframe to keyframe: packets copied, not encoded again)
  {ffmpeg} -v error -y -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440 -t 4 \
    -c:v libx264 -g 15 -pix_fmt yuv420p -c:a aac /tmp/lambent-clip.mp4
  curl -s -X POST {base}/v1/uploads -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{{\"content_type\":\"video/mp4\",\"size\":$(stat -c %s /tmp/lambent-clip.mp4)}}" > /tmp/lambent-upload.json
  KEY=$(python3 -c 'import json;print(json.load(open("/tmp/lambent-upload.json"))["key"])')
  curl -s -X PUT "$(python3 -c 'import json;print(json.load(open("/tmp/lambent-upload.json"))["url"])')" \
    -H 'content-type: video/mp4' --data-binary @/tmp/lambent-clip.mp4
  VIDEO=$(curl -s -X POST {base}/v1/videos -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{{\"upload_key\":\"$KEY\"}}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  until curl -s {base}/v1/videos/$VIDEO -H "authorization: Bearer $TOKEN" | grep -qE '"status":"(COMPLETED|FAILED)"'; do sleep 0.2; done
  curl -s {base}/v1/videos/$VIDEO -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys;v=json.load(sys.stdin);p=v["probe"]
print("video:", v["status"], p["container"], p["video"]["codec"], p["video"]["width"], "x", p["video"]["height"], p["duration_seconds"], "s", p["video"]["frame_rate"], "fps, audio", p["audio"]["codec"])'
  FRAME=$(curl -s -X POST {base}/v1/jobs -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{{\"kind\":\"capture_frame\",\"input\":{{\"video_id\":\"$VIDEO\",\"at_seconds\":1.5}}}}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  until curl -s {base}/v1/jobs/$FRAME -H "authorization: Bearer $TOKEN" | grep -qE '"status":"(COMPLETED|FAILED)"'; do sleep 0.2; done
  curl -s {base}/v1/jobs/$FRAME -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys;o=json.load(sys.stdin)["output"]
print("frame:", o["upload_key"], o["width"], "x", o["height"])'
  CUT=$(curl -s -X POST {base}/v1/jobs -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{{\"kind\":\"select_range\",\"input\":{{\"video_id\":\"$VIDEO\",\"start\":1,\"end\":3.5}}}}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  until curl -s {base}/v1/videos/$CUT -H "authorization: Bearer $TOKEN" | grep -qE '"status":"(COMPLETED|FAILED)"'; do sleep 0.2; done
  curl -s {base}/v1/videos/$CUT -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys;v=json.load(sys.stdin)
print("cut:", v["status"], v["mode"], v["probe"]["duration_seconds"], "s")'
  curl -s {base}/v1/videos/$VIDEO/timeline -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys;t=json.load(sys.stdin)
print("timeline:", t["duration_seconds"], "s, keyframes", t["keyframes"], ",", len(t["strip"]), "thumbnails")'

  # generate an image at fal (the local fake): submitted, finalized by fal's signed webhook, copied to S3
  GEN=$(curl -s -X POST {base}/v1/jobs -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{{"kind":"generate","input":{{"provider":"fal","model":"fal-ai/flux/dev","task":"text_to_image","prompt":"a lighthouse at dusk"}}}}' \
    | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  until curl -s {base}/v1/jobs/$GEN -H "authorization: Bearer $TOKEN" | grep -qE '"status":"(COMPLETED|FAILED)"'; do sleep 0.2; done
  curl -s {base}/v1/jobs/$GEN -H "authorization: Bearer $TOKEN"; echo

  # publish the generation as a post (201); Bob signs up, follows Ann (201), likes the post (201)
  # and reads his following feed, where the follow's backfill brought it (from the social queue)
  POST=$(curl -s -X POST {base}/v1/posts -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{{\"job_id\":\"$GEN\",\"caption\":\"a lighthouse at dusk #lighthouse\"}}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  ANN=$(curl -s {base}/v1/auth/me -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  BOB=$(curl -s -X POST {base}/v1/auth/register -H 'content-type: application/json' \
    -d '{{"email":"bob@example.com","username":"bob","password":"correct horse"}}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')
  curl -s -X POST {base}/v1/users/$ANN/follow -H "authorization: Bearer $BOB"; echo
  curl -s -X POST {base}/v1/posts/$POST/like -H "authorization: Bearer $BOB"; echo
  until curl -s {base}/v1/feeds/following -H "authorization: Bearer $BOB" | grep -q "$POST"; do sleep 0.2; done
  curl -s {base}/v1/feeds/following -H "authorization: Bearer $BOB" \
    | python3 -c 'import json,sys;p=json.load(sys.stdin)["items"][0];print("feed of bob:", p["caption"], "- likes", p["counts"]["likes"])'
  curl -s {base}/v1/hashtags/lighthouse/posts | cut -c1-200; echo

  # Ann's notifications, written by the social queue's consumer (her jobs' too), and her unread count
  until curl -s {base}/v1/notifications -H "authorization: Bearer $TOKEN" | grep -q 'liked your post'; do sleep 0.2; done
  curl -s {base}/v1/notifications -H "authorization: Bearer $TOKEN" \
    | python3 -c 'import json,sys;print("notifications of ann:", "; ".join(n["text"] for n in json.load(sys.stdin)["items"] if n["type"] in ("like","follow")))'
  curl -s {base}/v1/notifications/unread-count -H "authorization: Bearer $TOKEN"; echo

  # search (the index's writer runs from its queue in a moment): Bob finds the post as he types
  # "lightho", and Ann by her handle's first letters
  until curl -s -G {base}/v1/search/posts --data-urlencode q=lightho -H "authorization: Bearer $BOB" | grep -q "$POST"; do sleep 0.2; done
  curl -s -G {base}/v1/search/posts --data-urlencode q=lightho -H "authorization: Bearer $BOB" \
    | python3 -c 'import json,sys;r=json.load(sys.stdin);print("search lightho:", r["total"], "post:", r["items"][0]["caption"])'
  curl -s -G {base}/v1/search/users --data-urlencode q=an -H "authorization: Bearer $BOB" \
    | python3 -c 'import json,sys;print("search an:", [u["username"] for u in json.load(sys.stdin)["items"]])'

  # buy 100 credits with Toss Payments (the fake Toss): an order whose amount the server sets, the
  # payment window (its success redirect's paymentKey, orderId, amount), then the confirm
  ORDER=$(curl -s -X POST {base}/v1/credits/orders -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{{"package_id":"basic_100"}}' | python3 -c 'import json,sys;o=json.load(sys.stdin);print(o["id"], o["amount"])')
  REDIRECT=$(curl -s "{fakes}/toss/window?orderId=${{ORDER% *}}&amount=${{ORDER#* }}")
  curl -s -X POST {base}/v1/credits/orders/${{ORDER% *}}/confirm -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d "$REDIRECT" \
    | python3 -c 'import json,sys;o=json.load(sys.stdin);print("order:", o["status"], o["credits"], "credits for", o["amount"], o["currency"])'
  curl -s "{base}/v1/credits/transactions?type=purchase" -H "authorization: Bearer $TOKEN" | cut -c1-200; echo

  # a chat session, and a reply streamed as it is written: Server-Sent Events from the streaming
  # function URL ({stream}; the fake LLM answers word by word), then the session's two messages
  SESSION=$(curl -s -X POST {base}/v1/sessions -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{{"kind":"chat"}}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  curl -sN -X POST {stream}/v1/sessions/$SESSION/messages -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{{"content":"Tell me about lighthouses"}}' | python3 -c 'import json,sys
for line in sys.stdin:
    if line.startswith("event: "): event = line[7:].strip()
    elif line.startswith("data: ") and event == "delta": print(json.loads(line[6:])["text"], end="", flush=True)
    elif line.startswith("data: ") and event == "done": d = json.loads(line[6:]); print("\n" + "reply:", d["reply"]["status"], "charged", d["job"]["charged"], "of", d["job"]["cost"], "credits")'
  curl -s {base}/v1/sessions/$SESSION/messages -H "authorization: Bearer $TOKEN" \
    | python3 -c 'import json,sys;[print(m["role"] + ":", m["content"]) for m in json.load(sys.stdin)["items"]]'

  # rotate the refresh token (200); using the old one again revokes the session (401)
  curl -s -X POST {base}/v1/auth/refresh -H 'content-type: application/json' -d "{{\"refresh_token\":\"$REFRESH\"}}"; echo
  curl -s -X POST {base}/v1/auth/refresh -H 'content-type: application/json' -d "{{\"refresh_token\":\"$REFRESH\"}}"; echo

  # sign in with Firebase (WEAV): the fake Firebase signs an ID token for a uid as the client SDK
  # would hold it; the exchange makes the uid's account (201), and signs in to it after (200)
  ID_TOKEN=$(curl -s -X POST {fakes}/firebase/id-token -d '{{"uid":"weav-user-1","email":"weav@example.com"}}' \
    | python3 -c 'import json,sys;print(json.load(sys.stdin)["id_token"])')
  curl -s -X POST {base}/v1/auth/firebase -H 'content-type: application/json' -d "{{\"id_token\":\"$ID_TOKEN\"}}" \
    | python3 -c 'import json,sys;print(json.dumps(json.load(sys.stdin)["user"]))'

  # sign in with Kakao in a browser (SelfStar): the app's PKCE pair, the start (302 to the fake
  # Kakao, with the flow's cookie), Kakao's answer (302 to the callback), the callback (302 to the
  # app with a one-time code), and the app redeeming the code with its verifier (201: a new account)
  VERIFIER=walkthrough-verifier-$(python3 -c 'import secrets;print(secrets.token_urlsafe(32))')
  CHALLENGE=$(python3 -c 'import base64,hashlib,sys;print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).decode().rstrip("="))' "$VERIFIER")
  TO_KAKAO=$(curl -s -o /dev/null -w '%{{redirect_url}}' -c /tmp/lambent-oauth-cookies --get {base}/v1/auth/oauth/kakao/start \
    --data-urlencode 'redirect_uri={fakes}/app/callback' --data-urlencode "code_challenge=$CHALLENGE" --data-urlencode 'login_hint=kakao-user-1')
  TO_CALLBACK=$(curl -s -o /dev/null -w '%{{redirect_url}}' "$TO_KAKAO")
  TO_APP=$(curl -s -o /dev/null -w '%{{redirect_url}}' -b /tmp/lambent-oauth-cookies "$TO_CALLBACK")
  CODE=$(python3 -c 'import sys,urllib.parse as u;print(u.parse_qs(u.urlparse(sys.argv[1]).query)["code"][0])' "$TO_APP")
  curl -s -X POST {base}/v1/auth/token -d grant_type=authorization_code -d "code=$CODE" -d "code_verifier=$VERIFIER" \
    | python3 -c 'import json,sys;t=json.load(sys.stdin);print("kakao sign-in:", t["token_type"], t["user"]["username"][:2])'

  # the API description (or open {base}/docs in a browser)
  curl -s {base}/openapi.json | cut -c1-300

Stop with Ctrl-C.
"#
    );
}
