//! Local stand-ins for the outside providers, speaking their documented protocols and signing for
//! real: fal.ai's queue (webhooks signed with an Ed25519 key served as a JWKS), Replicate's
//! predictions (Standard Webhooks with the account's secret) and an AI server (Standard Webhooks
//! with the shared secret, which it also checks on our submissions). Tests steer them (refuse
//! submissions, hold webhooks back, fail jobs) and read what they saw; `make dev` runs them so
//! the walkthrough can generate without the internet.

mod ai_server;
mod fal;
pub mod firebase;
pub mod instagram;
pub mod llm;
pub mod oidc;
pub mod payments;
mod replicate;

pub use fal::{FAL_USER_ID, fal_headers, fal_headers_of};

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What the fakes do; tests change it between steps.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Keys our adapters must present (from the stack's ProviderKeys secret).
    pub fal_key: String,
    pub replicate_token: String,
    /// The secret shared with the AI server (the stack's AiWebhookSecret).
    pub ai_secret: String,
    /// Statuses to answer the next submissions with, one each (429 carries a `Retry-After`).
    pub submit_failures: VecDeque<u16>,
    /// The `Retry-After` seconds a scripted 429 carries (1 when unset).
    pub retry_after_secs: Option<u64>,
    /// Hold webhooks back (a lost webhook; the reconciler must poll).
    pub hold_webhooks: bool,
    /// Fail every request with this message.
    pub fail_with: Option<String>,
    /// Leave requests running (until canceled).
    pub stall: bool,
    /// Answer Firebase's certificates URL with 503 (Google down: held keys must keep working).
    pub firebase_certs_down: bool,
}

/// A webhook a fake sent (or would have sent), to replay or tamper with.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Our answer's status; `None` when held back.
    pub answered: Option<u16>,
}

#[derive(Clone, Debug)]
struct Request {
    provider: &'static str,
    webhook: String,
    state: &'static str,
    input: Value,
}

struct Inner {
    base_url: String,
    llm: llm::FakeLlm,
    behaviour: Mutex<Behaviour>,
    requests: Mutex<HashMap<String, Request>>,
    /// Outputs that are not the PNG, by request: the video a video-to-video request was given,
    /// fetched from its URL and served back (so the output is a real video, and a bad presigned
    /// URL fails the request), or a music request's WAV.
    made: Mutex<HashMap<String, Made>>,
    submissions: Mutex<Vec<(String, u16)>>,
    webhooks: Mutex<Vec<Webhook>>,
    fal_pair: Ed25519KeyPair,
    replicate_secret: String,
    client: reqwest::Client,
    /// Firebase's signing keys, newest last (a rotation publishes a new one beside the old).
    firebase: Mutex<Vec<firebase::Signer>>,
    firebase_fetches: std::sync::atomic::AtomicUsize,
    /// Google's, Kakao's and Naver's OpenID Providers.
    oidc: Mutex<Vec<oidc::Issuer>>,
    /// Instagram's OAuth and Graph endpoints.
    instagram: Mutex<instagram::Instagram>,
    /// Toss Payments and Stripe.
    payments: Mutex<payments::Payments>,
}

/// The fake providers on one loopback port: `/fal`, `/replicate`, `/ai`, and `/files`.
#[derive(Clone)]
pub struct FakeProviders {
    inner: Arc<Inner>,
}

/// A file a request made that is not the PNG.
#[derive(Clone)]
struct Made {
    bytes: Vec<u8>,
    content_type: &'static str,
}

/// `seconds` of a 440 Hz tone, 16-bit mono PCM at 22,050 Hz, as a WAV file.
pub fn tone_wav(seconds: f64) -> Vec<u8> {
    const RATE: u32 = 22_050;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let samples = (seconds * f64::from(RATE)) as u32;
    let data = samples * 2;
    let mut wav = Vec::with_capacity(44 + data as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    for n in 0..samples {
        let t = f64::from(n) / f64::from(RATE);
        #[allow(clippy::cast_possible_truncation)]
        let sample = ((t * 440.0 * std::f64::consts::TAU).sin() * 12_000.0) as i16;
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    wav
}

/// The PNG every fake job produces.
pub fn output_png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([
            u8::try_from(x * 10).unwrap_or(0),
            u8::try_from(y * 15).unwrap_or(0),
            128,
        ])
    });
    let mut bytes = Vec::new();
    // Writing to memory cannot fail for a valid image.
    let _ = image::DynamicImage::ImageRgb8(image).write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    );
    bytes
}

/// Serves HTTP/1 on `listener` with `handle`, each connection on its own task, until the listener
/// fails.
pub fn spawn_server<H, F>(listener: TcpListener, handle: H)
where
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = handle(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// A fresh Ed25519 key pair.
pub fn ed25519_pair() -> anyhow::Result<Ed25519KeyPair> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("keygen"))?;
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("key"))
}

/// Standard Webhooks headers over `body` with `secret`.
pub fn standard_headers(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> anyhow::Result<Vec<(String, String)>> {
    let signer = standardwebhooks::Webhook::new(secret)
        .map_err(|_| anyhow::anyhow!("the secret is not base64"))?;
    let signature = signer
        .sign(id, timestamp, body)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), signature),
    ])
}

/// A webhook signed per Standard Webhooks with a fresh message id.
pub fn standard_webhook(
    method: &str,
    url: String,
    secret: &str,
    body: String,
) -> anyhow::Result<Webhook> {
    let message = format!("msg_{}", uuid::Uuid::new_v4().simple());
    Ok(Webhook {
        method: method.into(),
        headers: standard_headers(
            secret,
            &message,
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        )?,
        url,
        body,
        answered: None,
    })
}

fn response(status: u16, body: &Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

impl FakeProviders {
    /// Starts the fakes on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let inner = Arc::new(Inner {
            llm: llm::FakeLlm::start().await?,
            base_url: base_url.clone(),
            behaviour: Mutex::new(Behaviour::default()),
            requests: Mutex::new(HashMap::new()),
            made: Mutex::new(HashMap::new()),
            submissions: Mutex::new(Vec::new()),
            webhooks: Mutex::new(Vec::new()),
            fal_pair: ed25519_pair()?,
            replicate_secret: format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(secret)
            ),
            client: reqwest::Client::new(),
            firebase: Mutex::new(vec![firebase::Signer::generate()?]),
            firebase_fetches: std::sync::atomic::AtomicUsize::new(0),
            oidc: Mutex::new(
                oidc::PROVIDERS
                    .iter()
                    .map(|(name, _)| oidc::Issuer::new(name, &base_url))
                    .collect::<anyhow::Result<_>>()?,
            ),
            instagram: Mutex::new(instagram::Instagram::default()),
            payments: Mutex::new(payments::Payments::default()),
        });
        let fakes = Self { inner };
        let server = fakes.clone();
        spawn_server(listener, move |req| {
            let server = server.clone();
            async move { server.dispatch(req).await }
        });
        Ok(fakes)
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The configuration that points Lambent's adapters at these fakes.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let base = &self.inner.base_url;
        vec![
            ("FAL_QUEUE_URL".into(), format!("{base}/fal")),
            (
                "FAL_JWKS_URL".into(),
                format!("{base}/fal/.well-known/jwks.json"),
            ),
            ("REPLICATE_API_URL".into(), format!("{base}/replicate")),
            ("AI_SERVER_URL".into(), format!("{base}/ai")),
            (
                "FIREBASE_CERTS_URL".into(),
                format!("{base}/firebase/certs"),
            ),
            ("FIREBASE_PROJECT_ID".into(), firebase::PROJECT_ID.into()),
            ("GOOGLE_ISSUER".into(), format!("{base}/oidc/google")),
            ("KAKAO_ISSUER".into(), format!("{base}/oidc/kakao")),
            ("NAVER_ISSUER".into(), format!("{base}/oidc/naver")),
            (
                "NAVER_PROFILE_URL".into(),
                format!("{base}/oidc/naver/v1/nid/me"),
            ),
            ("GOOGLE_CLIENT_IDS".into(), oidc::PROVIDERS[0].1.join(",")),
            ("KAKAO_CLIENT_IDS".into(), oidc::PROVIDERS[1].1.join(",")),
            ("NAVER_CLIENT_IDS".into(), oidc::PROVIDERS[2].1.join(",")),
            ("OAUTH_REDIRECT_URIS".into(), self.app_redirect_uri()),
            ("KAKAO_API_URL".into(), format!("{base}/oidc/kakao")),
            ("INSTAGRAM_APP_ID".into(), instagram::APP_ID.into()),
            ("INSTAGRAM_OAUTH_URL".into(), format!("{base}/instagram")),
            (
                "INSTAGRAM_GRAPH_URL".into(),
                format!("{base}/instagram-graph"),
            ),
            ("TOSS_API_URL".into(), format!("{base}/toss")),
            ("STRIPE_API_URL".into(), format!("{base}/stripe")),
        ]
        .into_iter()
        .chain(self.inner.llm.overrides())
        .collect()
    }

    /// The fake OpenAI-compatible LLM.
    pub fn llm(&self) -> &llm::FakeLlm {
        &self.inner.llm
    }

    /// Gives the fakes the stack's provider keys (its ProviderKeys secret, as JSON) and the AI
    /// servers' shared secret.
    pub fn set_provider_keys(&self, keys: &Value, ai_secret: &str) {
        self.configure(|b| {
            b.fal_key = keys["fal_key"].as_str().unwrap_or_default().to_owned();
            b.replicate_token = keys["replicate_api_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            b.ai_secret = ai_secret.to_owned();
        });
        self.inner.llm.configure(|l| {
            l.key = keys["llm_api_key"].as_str().unwrap_or_default().to_owned();
            l.fal_key = keys["fal_key"].as_str().unwrap_or_default().to_owned();
        });
    }

    /// The redirect URI of the stand-in app a browser sign-in returns to (it shows the query).
    pub fn app_redirect_uri(&self) -> String {
        format!("{}/app/callback", self.inner.base_url)
    }

    /// Makes the fake providers' token endpoints want the client secrets of the stack's
    /// OAuthClients secret (`{"google": …, "kakao": …, "naver": …}`).
    pub fn set_oauth_client_secrets(&self, secrets: &Value) {
        self.with_instagram(|i| i.secret = secrets["instagram"].as_str().map(str::to_owned));
        for issuer in self.inner.oidc.lock().expect("oidc").iter_mut() {
            issuer.client_secret = secrets[issuer.name].as_str().map(str::to_owned);
            if issuer.name == "kakao" {
                issuer.admin_key = secrets["kakao_admin_key"].as_str().map(str::to_owned);
            }
        }
    }

    fn with_issuer<T>(&self, provider: &str, f: impl FnOnce(&mut oidc::Issuer) -> T) -> T {
        let mut issuers = self.inner.oidc.lock().expect("oidc");
        let issuer = issuers
            .iter_mut()
            .find(|i| i.name == provider)
            .expect("a faked provider");
        f(issuer)
    }

    /// The claims `provider` puts in an ID token for `subject` issued to `aud` (see
    /// [`oidc::Issuer::claims`]).
    pub fn oidc_claims(
        &self,
        provider: &str,
        subject: &str,
        aud: &str,
        nonce: Option<&str>,
    ) -> Value {
        self.with_issuer(provider, |i| i.claims(subject, aud, nonce))
    }

    /// An ID token of `provider` with `claims`, signed by its newest key; `kid` overrides the
    /// header's key id.
    pub fn oidc_token(&self, provider: &str, claims: &Value, kid: Option<&str>) -> String {
        self.with_issuer(provider, |i| i.sign(claims, kid).expect("signing"))
    }

    /// The issuer URL of a faked provider.
    pub fn oidc_issuer(&self, provider: &str) -> String {
        self.with_issuer(provider, |i| i.url.clone())
    }

    /// Publishes a new signing key for `provider` beside the old; tokens are signed with it now.
    pub fn rotate_oidc_key(&self, provider: &str) {
        let signer = oidc::Signer::generate(provider).expect("key");
        self.with_issuer(provider, |i| i.signers.push(signer));
    }

    /// Runs `f` on the fake Instagram's state.
    pub fn with_instagram<T>(&self, f: impl FnOnce(&mut instagram::Instagram) -> T) -> T {
        f(&mut self.inner.instagram.lock().expect("instagram"))
    }

    /// What was published to the fake Instagram, oldest first.
    pub fn instagram_published(&self) -> Vec<instagram::Published> {
        self.with_instagram(|i| i.published.clone())
    }

    /// The subjects whose tokens `provider`'s revoke endpoint revoked.
    pub fn oidc_revoked(&self, provider: &str) -> Vec<String> {
        self.with_issuer(provider, |i| i.revoked.clone())
    }

    /// The Kakao user ids the admin unlink API was called for.
    pub fn kakao_unlinked(&self) -> Vec<String> {
        self.with_issuer("kakao", |i| i.unlinked.clone())
    }

    /// How often `provider`'s JWKS was fetched.
    pub fn oidc_jwks_fetches(&self, provider: &str) -> usize {
        self.with_issuer(provider, |i| i.jwks_fetches)
    }

    /// A Firebase ID token with `claims` (see [`firebase::claims`]), signed by the newest key;
    /// `kid` overrides the header's key id.
    pub fn firebase_token(&self, claims: &Value, kid: Option<&str>) -> String {
        let signers = self.inner.firebase.lock().expect("firebase keys");
        let signer = signers.last().expect("a key");
        signer.sign(claims, kid).expect("signing")
    }

    /// Publishes a new Firebase signing key beside the old ones; tokens are signed with it now.
    pub fn rotate_firebase_key(&self) {
        let signer = firebase::Signer::generate().expect("key");
        self.inner
            .firebase
            .lock()
            .expect("firebase keys")
            .push(signer);
    }

    /// How often Firebase's certificates were fetched.
    pub fn firebase_certificate_fetches(&self) -> usize {
        self.inner
            .firebase_fetches
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs `f` on the fake Toss's and Stripe's state.
    pub fn with_payments<T>(&self, f: impl FnOnce(&mut payments::Payments) -> T) -> T {
        f(&mut self.inner.payments.lock().expect("payments"))
    }

    /// Sends a fake's message to Lambent, recorded among [`Self::webhooks`]; our status.
    pub async fn deliver_payment_event(&self, outgoing: payments::Outgoing) -> Option<u16> {
        let (url, headers, body) = outgoing;
        let mut webhook = Webhook {
            method: "POST".into(),
            url,
            headers,
            body,
            answered: None,
        };
        let status = self.send(&webhook).await.ok();
        webhook.answered = status;
        if let Ok(mut sent) = self.inner.webhooks.lock() {
            sent.push(webhook);
        }
        status
    }

    /// Toss's payment window: the buyer pays `amount` for `order_id`; the payment waits for
    /// the merchant's confirm. Its `paymentKey`.
    pub fn toss_authorize(&self, order_id: &str, amount: i64) -> String {
        self.with_payments(|p| p.toss_authorize(order_id, amount).payment_key)
    }

    /// The window with a virtual account: its `paymentKey`; confirmed, it waits for
    /// [`Self::toss_deposit`].
    pub fn toss_authorize_virtual_account(&self, order_id: &str, amount: i64) -> String {
        self.with_payments(|p| {
            p.toss_authorize_virtual_account(order_id, amount)
                .payment_key
        })
    }

    /// The deposit into a virtual account arrives: Toss's webhook is delivered before this
    /// returns; our status.
    pub async fn toss_deposit(&self, payment_key: &str) -> Option<u16> {
        let outgoing = self.with_payments(|p| p.toss_deposit(payment_key))?;
        self.deliver_payment_event(outgoing).await
    }

    /// The buyer pays a Stripe Checkout Session; Stripe's signed `checkout.session.completed`
    /// is delivered before this returns: the event and our status.
    pub async fn stripe_pay(&self, session_id: &str) -> Option<(Value, Option<u16>)> {
        let base = self.inner.base_url.clone();
        let (event, webhook) = self.with_payments(|p| p.stripe_pay(&base, session_id))?;
        let status = match webhook {
            Some(outgoing) => self.deliver_payment_event(outgoing).await,
            None => None,
        };
        Some((event, status))
    }

    async fn payments_api(
        &self,
        provider: &str,
        method: &str,
        rest: &str,
        query: &str,
        headers: &hyper::HeaderMap,
        body: &[u8],
    ) -> hyper::Response<Full<Bytes>> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (authorization, idempotency_key) = (header("authorization"), header("idempotency-key"));
        let base = self.inner.base_url.clone();
        if provider == "toss" && rest == "window" {
            // The payment window's success redirect: what the client sends to confirm.
            let pairs: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let order_id = pairs.get("orderId").cloned().unwrap_or_default();
            let amount = pairs
                .get("amount")
                .and_then(|a| a.parse::<i64>().ok())
                .unwrap_or(0);
            let payment_key = self.toss_authorize(&order_id, amount);
            return response(
                200,
                &json!({"paymentKey": payment_key, "orderId": order_id, "amount": amount}),
            );
        }
        if provider == "stripe"
            && let Some(session) = rest.strip_prefix("pay/")
        {
            return match self.stripe_pay(session).await {
                Some((event, status)) => response(
                    200,
                    &json!({"paid": true, "event": event, "webhook_status": status}),
                ),
                None => response(404, &json!({"error": "no such session"})),
            };
        }
        let (status, answer, webhook) = self.with_payments(|p| match provider {
            "toss" => p.toss_api(method, rest, &authorization, &idempotency_key, body),
            _ => p.stripe_api(&base, method, rest, &authorization, &idempotency_key, body),
        });
        if let Some(outgoing) = webhook {
            // Toss and Stripe announce changes on their own time, not within the API call.
            let fakes = self.clone();
            tokio::spawn(async move {
                fakes.deliver_payment_event(outgoing).await;
            });
        }
        response(status, &answer)
    }

    /// Changes the behaviour.
    pub fn configure(&self, change: impl FnOnce(&mut Behaviour)) {
        if let Ok(mut behaviour) = self.inner.behaviour.lock() {
            change(&mut behaviour);
        }
    }

    fn behaviour(&self) -> Behaviour {
        self.inner
            .behaviour
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    /// Every submission: `(provider, status answered)`.
    pub fn submissions(&self) -> Vec<(String, u16)> {
        self.inner
            .submissions
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Every webhook sent or held back, oldest first.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.inner
            .webhooks
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// The secret the fake Replicate signs webhooks with.
    pub fn replicate_secret(&self) -> &str {
        &self.inner.replicate_secret
    }

    /// Where a request stands at its fake provider: `running`, `succeeded`, `failed`, `canceled`.
    pub fn request_state(&self, id: &str) -> Option<&'static str> {
        self.request(id).map(|r| r.state)
    }

    /// The input a request was submitted with.
    pub fn request_input(&self, id: &str) -> Option<Value> {
        self.request(id).map(|r| r.input)
    }

    /// The fal signing key (tests sign forgeries with another).
    pub fn fal_pair(&self) -> &Ed25519KeyPair {
        &self.inner.fal_pair
    }

    /// Sends a webhook (again) as the fake would, returning our status.
    pub async fn send(&self, webhook: &Webhook) -> anyhow::Result<u16> {
        let method = reqwest::Method::from_bytes(webhook.method.as_bytes())?;
        let mut request = self
            .inner
            .client
            .request(method, &webhook.url)
            .header("content-type", "application/json")
            .body(webhook.body.clone());
        for (name, value) in &webhook.headers {
            request = request.header(name, value);
        }
        Ok(request.send().await?.status().as_u16())
    }

    async fn instagram_graph(
        &self,
        method: &str,
        rest: &str,
        query: &str,
        body: &[u8],
    ) -> hyper::Response<Full<Bytes>> {
        let query: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let segments: Vec<&str> = rest.split('/').collect();
        let (status, answer) = match (method, segments.as_slice()) {
            ("GET", ["access_token"]) => self.with_instagram(|i| i.exchange(&query)),
            ("GET", ["refresh_access_token"]) => self.with_instagram(|i| i.refresh(&query)),
            ("GET", ["me"]) => self.with_instagram(|i| i.me(&query)),
            ("POST", [user, "media"]) => {
                let token = form.get("access_token").cloned().unwrap_or_default();
                if !self.with_instagram(|i| i.owner(&token, user)) {
                    return response(
                        400,
                        &json!({"error": {"message": "Error validating access token: Session has expired", "type": "OAuthException", "code": 190}}),
                    );
                }
                // Instagram fetches the image itself, from the URL it is given.
                let url = form.get("image_url").cloned().unwrap_or_default();
                let fetched = match self.inner.client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|b| b.len()).unwrap_or(0)
                    }
                    _ => 0,
                };
                if fetched == 0 {
                    return response(
                        400,
                        &json!({"error": {"message": "The image could not be fetched", "type": "OAuthException", "code": 9004}}),
                    );
                }
                let caption = form.get("caption").cloned().unwrap_or_default();
                let id = self.with_instagram(|i| i.container(user, &caption, fetched));
                (200, json!({"id": id}))
            }
            ("POST", [user, "media_publish"]) => self.with_instagram(|i| i.publish(user, &form)),
            ("GET", [container]) => {
                let token = query.get("access_token").cloned().unwrap_or_default();
                self.with_instagram(|i| i.status(container, &token))
            }
            _ => (
                404,
                json!({"error": {"message": "Unknown path", "code": 803}}),
            ),
        };
        response(status, &answer)
    }

    fn oidc(
        &self,
        method: &str,
        rest: &str,
        query: &str,
        body: &[u8],
        authorization: &str,
    ) -> hyper::Response<Full<Bytes>> {
        let (provider, endpoint) = rest.split_once('/').unwrap_or((rest, ""));
        let mut issuers = self.inner.oidc.lock().expect("oidc");
        let Some(issuer) = issuers.iter_mut().find(|i| i.name == provider) else {
            return response(404, &json!({"error": "no such provider"}));
        };
        let pairs = |raw: &[u8]| -> HashMap<String, String> {
            url::form_urlencoded::parse(raw).into_owned().collect()
        };
        match (method, endpoint) {
            ("GET", ".well-known/openid-configuration") => response(200, &issuer.discovery()),
            ("GET", "jwks") => {
                issuer.jwks_fetches += 1;
                hyper::Response::builder()
                    .header("content-type", "application/json")
                    .header("cache-control", "public, max-age=3600")
                    .body(Full::new(Bytes::from(issuer.jwks().to_string())))
                    .unwrap_or_default()
            }
            ("GET", "authorize") => match issuer.authorize(&pairs(query.as_bytes())) {
                Ok(location) => hyper::Response::builder()
                    .status(302)
                    .header("location", location)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default(),
                Err(error) => response(
                    400,
                    &json!({"error": "invalid_request", "error_description": error}),
                ),
            },
            ("POST", "token") => match issuer.token(&pairs(body)) {
                Ok(answer) => response(200, &answer),
                Err((status, error)) => response(status, &json!({"error": error})),
            },
            ("POST", "revoke") => {
                let (status, answer) = issuer.revoke(&pairs(body));
                response(status, &answer)
            }
            ("POST", "v1/user/unlink") if provider == "kakao" => {
                let (status, answer) = issuer.kakao_unlink(authorization, &pairs(body));
                response(status, &answer)
            }
            ("GET", "v1/nid/me") if provider == "naver" => {
                match issuer.naver_profile(authorization) {
                    Some(profile) => response(200, &profile),
                    None => response(
                        401,
                        &json!({"resultcode": "024", "message": "Authentication failed"}),
                    ),
                }
            }
            _ => response(404, &json!({"error": "not found"})),
        }
    }

    async fn dispatch(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let behaviour = self.behaviour();
        let method = parts.method.as_str();
        if let Some((id, _)) = path
            .strip_prefix("/files/")
            .and_then(|f| f.rsplit_once('.'))
            .filter(|(_, ext)| *ext != "png")
        {
            let made = self.inner.made.lock().ok().and_then(|m| m.get(id).cloned());
            return match made {
                Some(made) => hyper::Response::builder()
                    .header("content-type", made.content_type)
                    .body(Full::new(Bytes::from(made.bytes)))
                    .unwrap_or_default(),
                None => response(404, &json!({"detail": "no such file"})),
            };
        }
        if path.starts_with("/files/") {
            return hyper::Response::builder()
                .header("content-type", "image/png")
                .body(Full::new(Bytes::from(output_png())))
                .unwrap_or_default();
        }
        if path == "/firebase/certs" {
            self.inner
                .firebase_fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if behaviour.firebase_certs_down {
                return response(503, &json!({"error": "unavailable"}));
            }
            let document = self
                .inner
                .firebase
                .lock()
                .map(|s| firebase::certificates(&s))
                .unwrap_or_default();
            return hyper::Response::builder()
                .header("content-type", "application/json; charset=UTF-8")
                .header(
                    "cache-control",
                    "public, max-age=3600, must-revalidate, no-transform",
                )
                .body(Full::new(Bytes::from(document.to_string())))
                .unwrap_or_default();
        }
        for provider in ["toss", "stripe"] {
            if let Some(rest) = path.strip_prefix(&format!("/{provider}/")) {
                return self
                    .payments_api(provider, method, rest, &query, &parts.headers, &body)
                    .await;
            }
        }
        if let Some(rest) = path.strip_prefix("/instagram-graph/") {
            return self.instagram_graph(method, rest, &query, &body).await;
        }
        if path == "/instagram/oauth/authorize" && method == "GET" {
            let pairs = url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            return match self.with_instagram(|i| i.authorize(&pairs)) {
                Ok(location) => hyper::Response::builder()
                    .status(302)
                    .header("location", location)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default(),
                Err(error) => response(400, &json!({"error_message": error})),
            };
        }
        if path == "/instagram/oauth/access_token" && method == "POST" {
            let form = url::form_urlencoded::parse(&body).into_owned().collect();
            let (status, answer) = self.with_instagram(|i| i.access_token(&form));
            return response(status, &answer);
        }
        if let Some(rest) = path.strip_prefix("/oidc/") {
            return self.oidc(method, rest, &query, &body, &header("authorization"));
        }
        if path == "/app/callback" {
            // The stand-in app: shows what the browser came back with.
            let pairs: serde_json::Map<String, Value> =
                url::form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect();
            return response(200, &Value::Object(pairs));
        }
        if path == "/firebase/id-token" && method == "POST" {
            // The dev walkthrough's stand-in for a client SDK's sign-in: `{"uid", "email"?}`.
            let asked: Value = serde_json::from_slice(&body).unwrap_or_default();
            let Some(uid) = asked["uid"].as_str() else {
                return response(400, &json!({"error": "send {\"uid\": …}"}));
            };
            let claims = firebase::claims(uid, asked["email"].as_str());
            return response(
                200,
                &json!({"id_token": self.firebase_token(&claims, None)}),
            );
        }
        if path == "/fal/.well-known/jwks.json" {
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(self.inner.fal_pair.public_key().as_ref());
            return response(
                200,
                &json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "local-fal", "x": x}]}),
            );
        }
        if let Some(rest) = path.strip_prefix("/fal/") {
            if header("authorization") != format!("Key {}", behaviour.fal_key) {
                return response(401, &json!({"detail": "bad key"}));
            }
            // fal bills a request that never starts unless told how long it may wait.
            let submits = method == "POST" && !rest.contains("/requests/");
            if submits && header("x-fal-request-timeout").parse::<u64>().is_err() {
                return response(400, &json!({"detail": "send X-Fal-Request-Timeout"}));
            }
            return self.fal(method, rest, &query, &body).await;
        }
        if let Some(rest) = path.strip_prefix("/replicate/v1/") {
            if header("authorization") != format!("Bearer {}", behaviour.replicate_token) {
                return response(401, &json!({"detail": "bad token"}));
            }
            let creates = method == "POST" && rest.ends_with("predictions");
            if creates && !header("cancel-after").ends_with('s') {
                return response(400, &json!({"detail": "send Cancel-After"}));
            }
            return self.replicate(method, rest, &body).await;
        }
        if let Some(rest) = path.strip_prefix("/ai/v1/jobs") {
            let verified = standardwebhooks::Webhook::new(&behaviour.ai_secret)
                .ok()
                .is_some_and(|s| s.verify(&body, &parts.headers).is_ok());
            if !verified {
                return response(401, &json!({"error": "bad signature"}));
            }
            return self.ai(method, rest, &body).await;
        }
        response(404, &json!({"detail": "no such route"}))
    }

    /// Takes the next scripted submission failure, if any, as its answer.
    fn scripted_failure(&self, provider: &str) -> Option<hyper::Response<Full<Bytes>>> {
        let (status, retry_after) = self.inner.behaviour.lock().ok().and_then(|mut b| {
            let status = b.submit_failures.pop_front()?;
            Some((status, b.retry_after_secs.unwrap_or(1)))
        })?;
        if let Ok(mut submissions) = self.inner.submissions.lock() {
            submissions.push((provider.to_owned(), status));
        }
        let mut answer = response(status, &json!({"detail": "scripted failure"}));
        if status == 429
            && let Ok(value) = retry_after.to_string().parse()
        {
            answer.headers_mut().insert("retry-after", value);
        }
        Some(answer)
    }

    fn accept(&self, provider: &'static str, id: &str, webhook: String, input: Value) {
        if let Ok(mut submissions) = self.inner.submissions.lock() {
            submissions.push((provider.to_owned(), 200));
        }
        if let Ok(mut requests) = self.inner.requests.lock() {
            requests.insert(
                id.to_owned(),
                Request {
                    provider,
                    webhook,
                    state: "running",
                    input,
                },
            );
        }
        let fakes = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { fakes.finish(&id).await });
    }

    fn request(&self, id: &str) -> Option<Request> {
        self.inner.requests.lock().ok()?.get(id).cloned()
    }

    fn file_url(&self, id: &str) -> String {
        format!("{}/files/{id}.png", self.inner.base_url)
    }

    /// The URL and type of a request's output when it is not the PNG.
    fn made_file(&self, id: &str) -> Option<(String, &'static str)> {
        let made = self.inner.made.lock().ok()?.get(id)?.content_type;
        let extension = if made == "audio/wav" { "wav" } else { "mp4" };
        Some((
            format!("{}/files/{id}.{extension}", self.inner.base_url),
            made,
        ))
    }

    fn keep(&self, id: &str, bytes: Vec<u8>, content_type: &'static str) {
        if let Ok(mut made) = self.inner.made.lock() {
            made.insert(
                id.to_owned(),
                Made {
                    bytes,
                    content_type,
                },
            );
        }
    }

    /// Runs a request to its end and sends its webhooks.
    async fn finish(&self, id: &str) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let behaviour = self.behaviour();
        let Some(request) = self.request(id) else {
            return;
        };
        if behaviour.stall {
            return;
        }
        if request.provider == "ai"
            && let Ok(progress) = self.ai_webhook(
                &request,
                "progress",
                &json!({"progress": 50, "message": "halfway"}),
            )
        {
            self.deliver(progress, behaviour.hold_webhooks).await;
        }
        let mut failed = behaviour.fail_with.clone();
        // A video-to-video request reads its video as the provider would, from its URL.
        let video_url = ["video_url", "video"]
            .iter()
            .find_map(|k| request.input.get(*k).and_then(Value::as_str))
            .map(str::to_owned);
        if let Some(url) = video_url
            && failed.is_none()
        {
            match self.inner.client.get(&url).send().await {
                Ok(answer) if answer.status().is_success() => {
                    let bytes = answer.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    self.keep(id, bytes, "video/mp4");
                }
                Ok(answer) => failed = Some(format!("the video URL answered {}", answer.status())),
                Err(_) => failed = Some("the video URL could not be read".into()),
            }
        }
        // Music (MusicGen's `duration`, Stable Audio's `seconds_total`, no picture): a tone.
        let input = &request.input;
        let music = input.get("seconds_total").is_some()
            || (input.get("duration").is_some()
                && input.get("image").is_none()
                && input.get("image_url").is_none());
        if music && failed.is_none() {
            self.keep(id, tone_wav(2.0), "audio/wav");
        }
        let state = if failed.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        if let Ok(mut requests) = self.inner.requests.lock()
            && let Some(r) = requests.get_mut(id)
        {
            if r.state != "running" {
                return;
            }
            r.state = state;
        }
        let webhook = match request.provider {
            "fal" => Ok(self.fal_webhook(id, &request, failed.as_deref())),
            "replicate" => self.replicate_webhook(id, &request, failed.as_deref()),
            _ => match &failed {
                Some(message) => self.ai_webhook(&request, "failed", &json!({"error": message})),
                None => self.ai_webhook(
                    &request,
                    "complete",
                    &match self.made_file(id) {
                        Some((url, content_type)) => json!({"outputs": [{"url": url, "content_type": content_type}]}),
                        None => json!({"outputs": [{"url": self.file_url(id), "content_type": "image/png"}]}),
                    },
                ),
            },
        };
        if let Ok(webhook) = webhook {
            self.deliver(webhook, behaviour.hold_webhooks).await;
        }
    }

    /// Sends a webhook, retrying non-2xx answers a few times as the providers do.
    async fn deliver(&self, mut webhook: Webhook, hold: bool) {
        if !hold {
            for _ in 0..20 {
                webhook.answered = self.send(&webhook).await.ok();
                if webhook.answered.is_some_and(|s| (200..300).contains(&s)) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        if let Ok(mut webhooks) = self.inner.webhooks.lock() {
            webhooks.push(webhook);
        }
    }

    fn set_state(&self, id: &str, state: &'static str) -> Option<&'static str> {
        let mut requests = self.inner.requests.lock().ok()?;
        let request = requests.get_mut(id)?;
        let before = request.state;
        if before == "running" {
            request.state = state;
        }
        Some(before)
    }
}
