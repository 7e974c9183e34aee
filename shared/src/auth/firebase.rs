//! Firebase ID tokens (WEAV signs its users in with Firebase): verified as Firebase's docs ask,
//! which is more than each admin SDK checks on its own (Node skips `iat` and `auth_time`).
//!
//! - the header: `alg` RS256 only, a `kid` that names one of the certificates Google publishes
//!   for `securetoken@system.gserviceaccount.com` (a JSON object of kid → PEM X.509 certificate,
//!   not a JWKS);
//! - the claims: `aud` the project id, `iss` `https://securetoken.google.com/<project id>`, `sub`
//!   (the Firebase uid) 1–128 characters, `exp` in the future, `iat` and `auth_time` in the past,
//!   each with [`SKEW_SECONDS`] of leeway (the SDKs disagree: Node 0 s, Python 0–60 s, Go 300 s).
//!
//! Source: firebase.google.com/docs/auth/admin/verify-id-tokens and firebase-admin-go's
//! `auth/token_verifier.go` (`../shared/research/identity-social-facts.md`, section 1).

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

/// The issuer of a project's tokens is this followed by the project id.
pub const ISSUER_PREFIX: &str = "https://securetoken.google.com/";

/// Leeway on `exp`, `iat` and `auth_time`, for clocks that disagree.
pub const SKEW_SECONDS: u64 = 60;

/// The longest uid Firebase issues (firebase-admin checks the same).
pub const MAX_UID_CHARS: usize = 128;

/// The longest token read at all: Firebase's are about 1 KB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The public keys of the certificates, by `kid`.
pub struct Keys(HashMap<String, DecodingKey>);

impl Keys {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The RSA public keys of a certificates document (`{"<kid>": "<PEM certificate>", …}`).
/// Entries that are not RSA certificates are left out.
pub fn parse_certificates(document: &Value) -> Keys {
    let mut keys = HashMap::new();
    for (kid, pem) in document.as_object().into_iter().flatten() {
        let Some(pem) = pem.as_str() else { continue };
        if let Some(key) = rsa_key_of(pem) {
            keys.insert(kid.clone(), key);
        }
    }
    Keys(keys)
}

fn rsa_key_of(pem: &str) -> Option<DecodingKey> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let certificate = pem.parse_x509().ok()?;
    let spki = certificate.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return None;
    }
    // The SPKI's bit string is the PKCS#1 RSAPublicKey that `from_rsa_der` reads.
    Some(DecodingKey::from_rsa_der(&spki.subject_public_key.data))
}

/// How long a response may be cached, from its `Cache-Control` header (`max-age=N`).
pub fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        value
            .trim()
            .trim_matches('"')
            .parse()
            .ok()
            .map(Duration::from_secs)
    })
}

/// Who a verified token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The Firebase uid.
    pub uid: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// `firebase.sign_in_provider` (`password`, `google.com`, `phone`, …).
    pub sign_in_provider: Option<String>,
}

/// Why a token was refused; every variant is a 401 to the client (its words: [`Refusal::detail`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Algorithm,
    UnknownKey,
    Signature,
    Audience,
    Issuer,
    Expired,
    IssuedInFuture,
    Subject,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    firebase: Option<Value>,
}

/// Verifies a Firebase ID token for `project_id` at `now` (Unix seconds).
pub fn verify(token: &str, keys: &Keys, project_id: &str, now: i64) -> Result<Identity, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(Refusal::Algorithm);
    }
    let kid = header.kid.ok_or(Refusal::UnknownKey)?;
    let key = keys.0.get(&kid).ok_or(Refusal::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = SKEW_SECONDS;
    validation.set_audience(&[project_id]);
    validation.set_issuer(&[format!("{ISSUER_PREFIX}{project_id}")]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    // Times are checked below against `now`, not the system clock.
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|err| {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::InvalidSignature => Refusal::Signature,
            ErrorKind::InvalidAudience => Refusal::Audience,
            ErrorKind::InvalidIssuer => Refusal::Issuer,
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::InvalidAlgorithm => Refusal::Algorithm,
            ErrorKind::InvalidSubject => Refusal::Subject,
            _ => Refusal::Malformed,
        }
    })?;
    let claims = data.claims;
    let skew = i64::try_from(SKEW_SECONDS).unwrap_or(0);
    if claims.exp + skew < now {
        return Err(Refusal::Expired);
    }
    if claims.iat > now + skew || claims.auth_time > now + skew {
        return Err(Refusal::IssuedInFuture);
    }
    let uid_chars = claims.sub.chars().count();
    if uid_chars == 0 || uid_chars > MAX_UID_CHARS {
        return Err(Refusal::Subject);
    }
    let sign_in_provider = claims
        .firebase
        .as_ref()
        .and_then(|f| f["sign_in_provider"].as_str())
        .map(str::to_owned);
    Ok(Identity {
        uid: claims.sub,
        email: claims.email,
        email_verified: claims.email_verified.unwrap_or(false),
        sign_in_provider,
    })
}

// The route: `POST /v1/auth/firebase`.

/// Google's certificates, cached for this process; the composition root installs one per State.
#[derive(Default)]
pub struct Runtime {
    keys: tokio::sync::RwLock<Option<Cached>>,
}

struct Cached {
    keys: std::sync::Arc<Keys>,
    fetched: std::time::Instant,
    /// From the answer's `Cache-Control: max-age`; the refetch floor after a failed refresh.
    fresh_for: Duration,
}

/// How long certificates are kept when Google's answer names no `max-age`.
const DEFAULT_FRESH_FOR: Duration = Duration::from_secs(3_600);

/// The certificates, fetched when stale (or, with `refresh`, when older than the refetch floor,
/// a minute by default). A failed refresh keeps the keys already held (firebase-admin-go does the
/// same) and tries again after the floor; with none held it is a 503.
async fn certificates(
    state: &crate::state::State,
    refresh: bool,
) -> Result<std::sync::Arc<Keys>, crate::error::ApiError> {
    let runtime = state.feature::<Runtime>()?;
    let floor = state.config.firebase.refetch_floor;
    let usable = |cached: &Option<Cached>| {
        cached.as_ref().and_then(|c| {
            let age = c.fetched.elapsed();
            let fresh = if refresh {
                age < floor.min(c.fresh_for)
            } else {
                age < c.fresh_for
            };
            fresh.then(|| c.keys.clone())
        })
    };
    if let Some(keys) = usable(&*runtime.keys.read().await) {
        return Ok(keys);
    }
    let mut cached = runtime.keys.write().await;
    if let Some(keys) = usable(&cached) {
        return Ok(keys);
    }
    match fetch(state).await {
        Ok((keys, fresh_for)) => {
            let keys = std::sync::Arc::new(keys);
            *cached = Some(Cached {
                keys: keys.clone(),
                fetched: std::time::Instant::now(),
                fresh_for,
            });
            Ok(keys)
        }
        Err(err) => {
            tracing::warn!(
                error = format!("{err:#}"),
                "fetching Firebase's certificates"
            );
            match cached.as_mut() {
                Some(held) => {
                    held.fetched = std::time::Instant::now();
                    held.fresh_for = floor;
                    Ok(held.keys.clone())
                }
                None => Err(crate::error::ApiError::Unavailable(
                    "Firebase's signing certificates could not be fetched; try again",
                )),
            }
        }
    }
}

async fn fetch(state: &crate::state::State) -> anyhow::Result<(Keys, Duration)> {
    use anyhow::Context as _;
    let response = state
        .http
        .api
        .get(&state.config.firebase.certs_url)
        .send()
        .await
        .context("requesting the certificates")?;
    anyhow::ensure!(
        response.status().is_success(),
        "the certificates answered {}",
        response.status()
    );
    let fresh_for = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age)
        .unwrap_or(DEFAULT_FRESH_FOR);
    let body = response.bytes().await.context("reading the certificates")?;
    anyhow::ensure!(body.len() <= 256 * 1024, "the certificates are too large");
    let document: Value = serde_json::from_slice(&body).context("the certificates are not JSON")?;
    let keys = parse_certificates(&document);
    anyhow::ensure!(!keys.is_empty(), "the document holds no RSA certificate");
    Ok((keys, fresh_for))
}

/// `POST /v1/auth/firebase`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirebaseSignIn {
    /// The ID token the Firebase client SDK holds (`getIdToken()`).
    #[schema(value_type = String, max_length = 8192)]
    pub id_token: secrecy::SecretString,
}

impl Refusal {
    fn detail(self) -> &'static str {
        match self {
            Self::Malformed => "the ID token is not a JWT",
            Self::Algorithm => "the ID token is not signed with RS256",
            Self::UnknownKey => "the ID token names no key Google publishes (it may have expired)",
            Self::Signature => "the ID token's signature is not valid",
            Self::Audience => "the ID token was issued for another Firebase project",
            Self::Issuer => "the ID token was not issued by Firebase for this project",
            Self::Expired => "the ID token has expired",
            Self::IssuedInFuture => "the ID token was issued in the future",
            Self::Subject => "the ID token names no valid user",
        }
    }
}

/// Exchanges a Firebase ID token for Lambent's tokens (WEAV). The account is the Firebase uid's:
/// made on its first sign-in (201), the same one after (200). An email the token vouches for
/// (`email_verified`) is recorded on a new account, never used to find or merge one.
#[utoipa::path(post, path = "/v1/auth/firebase", tag = "auth", request_body = FirebaseSignIn,
    responses((status = 200, description = "signed in to the uid's account", body = crate::auth::sessions::TokenResponse),
        (status = 201, description = "a new account was made for the uid", body = crate::auth::sessions::TokenResponse),
        (status = 401, description = "invalid_id_token", body = crate::error::Problem),
        (status = 404, description = "Firebase sign-in is not configured", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn sign_in_with_firebase(
    state: &crate::state::State,
    req: lambda_http::Request,
) -> Result<lambda_http::Response<lambda_http::Body>, crate::error::ApiError> {
    use crate::error::ApiError;
    use secrecy::ExposeSecret as _;

    let body: FirebaseSignIn = crate::http::json_body(&req, &["application/json"])?;
    let project = state
        .config
        .firebase
        .project_id
        .clone()
        .ok_or(ApiError::NotFound("Firebase sign-in is not configured"))?;
    let now = chrono::Utc::now();
    let ip = crate::auth::handlers::client_ip(&req);
    crate::ratelimit::spend(
        &state.db,
        &[crate::ratelimit::Budget {
            scope: "firebase-ip",
            key: &ip,
            limit: state.config.rate_limits.login_per_minute,
        }],
        now.timestamp(),
    )
    .await?;
    let token = body.id_token.expose_secret();
    let mut verified = verify(
        token,
        &*certificates(state, false).await?,
        &project,
        now.timestamp(),
    );
    if verified == Err(Refusal::UnknownKey) {
        // Google may have rotated its keys since they were fetched.
        verified = verify(
            token,
            &*certificates(state, true).await?,
            &project,
            now.timestamp(),
        );
    }
    let identity = verified.map_err(|refusal| ApiError::Unauthorized {
        code: "invalid_id_token",
        detail: refusal.detail(),
    })?;
    let signing = state.keys().await?;
    let found = crate::users::sign_in_federated(
        &state.db,
        crate::users::NewFederatedUser {
            id: uuid::Uuid::new_v4().to_string(),
            provider: "firebase",
            subject: &identity.uid,
            email: identity
                .email
                .filter(|_| identity.email_verified)
                .map(|e| e.to_lowercase()),
            starting_credits: state.config.starting_credits,
        },
        now,
    )
    .await?;
    let (user, status) = match found {
        crate::users::Federated::Created(user) => (user, lambda_http::http::StatusCode::CREATED),
        crate::users::Federated::Existing(record) => {
            (record.view, lambda_http::http::StatusCode::OK)
        }
    };
    tracing::info!(user_id = %user.id, created = status.as_u16() == 201, "signed in with Firebase");
    let tokens =
        crate::auth::sessions::start_for(&state.db, &state.config, &signing, user, now).await?;
    crate::http::json(status, &tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PROJECT: &str = "lambent-test";

    /// A key pair and its self-signed certificate, as Google publishes them.
    struct Signer {
        pem_key: String,
        certificate: String,
    }

    fn signer() -> Signer {
        use aws_lc_rs::encoding::AsDer;
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
        let der = pair.as_der().expect("der");
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_ref().to_vec());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
            .expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["securetoken.system.gserviceaccount.com".into()])
                .expect("params");
        let certificate = params.self_signed(&key).expect("certificate").pem();
        Signer {
            pem_key: key.serialize_pem(),
            certificate,
        }
    }

    fn sign(signer: &Signer, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let key = match alg {
            Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(b"shared"),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(signer.pem_key.as_bytes()).expect("key"),
        };
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    fn claims(now: i64) -> Value {
        json!({
            "iss": format!("{ISSUER_PREFIX}{PROJECT}"), "aud": PROJECT, "sub": "uid-1",
            "iat": now - 10, "exp": now + 3_600, "auth_time": now - 100,
            "email": "ann@example.com", "email_verified": true,
            "firebase": {"sign_in_provider": "google.com"}
        })
    }

    #[test]
    fn a_token_signed_by_a_published_certificate_is_verified() {
        let google = signer();
        let keys = parse_certificates(&json!({"k1": google.certificate, "bad": "not a cert"}));
        assert_eq!(keys.len(), 1);
        let now = 1_800_000_000;
        let token = sign(&google, Algorithm::RS256, Some("k1"), &claims(now));
        let identity = verify(&token, &keys, PROJECT, now).expect("verified");
        assert_eq!(identity.uid, "uid-1");
        assert_eq!(identity.email.as_deref(), Some("ann@example.com"));
        assert!(identity.email_verified);
        assert_eq!(identity.sign_in_provider.as_deref(), Some("google.com"));
    }

    #[test]
    fn every_rule_refuses_its_token() {
        let google = signer();
        let impostor = signer();
        let keys = parse_certificates(&json!({"k1": google.certificate}));
        let now = 1_800_000_000;
        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = claims(now);
            change(&mut c);
            sign(&google, Algorithm::RS256, Some("k1"), &c)
        };
        let skew = i64::try_from(SKEW_SECONDS).expect("skew");
        let cases: Vec<(&str, String, Refusal)> = vec![
            ("garbage", "x.y.z".into(), Refusal::Malformed),
            (
                "HS256",
                sign(&google, Algorithm::HS256, Some("k1"), &claims(now)),
                Refusal::Algorithm,
            ),
            (
                "no kid",
                sign(&google, Algorithm::RS256, None, &claims(now)),
                Refusal::UnknownKey,
            ),
            (
                "unknown kid",
                sign(&google, Algorithm::RS256, Some("k2"), &claims(now)),
                Refusal::UnknownKey,
            ),
            (
                "another key",
                sign(&impostor, Algorithm::RS256, Some("k1"), &claims(now)),
                Refusal::Signature,
            ),
            (
                "aud",
                with(&|c| c["aud"] = json!("other-project")),
                Refusal::Audience,
            ),
            (
                "iss",
                with(&|c| c["iss"] = json!("https://securetoken.google.com/other-project")),
                Refusal::Issuer,
            ),
            (
                "iss of Google sign-in",
                with(&|c| c["iss"] = json!("https://accounts.google.com")),
                Refusal::Issuer,
            ),
            (
                "expired",
                with(&|c| c["exp"] = json!(now - skew - 1)),
                Refusal::Expired,
            ),
            (
                "iat ahead",
                with(&|c| c["iat"] = json!(now + skew + 5)),
                Refusal::IssuedInFuture,
            ),
            (
                "auth_time ahead",
                with(&|c| c["auth_time"] = json!(now + skew + 5)),
                Refusal::IssuedInFuture,
            ),
            (
                "empty sub",
                with(&|c| c["sub"] = json!("")),
                Refusal::Subject,
            ),
            (
                "long sub",
                with(&|c| c["sub"] = json!("u".repeat(MAX_UID_CHARS + 1))),
                Refusal::Subject,
            ),
            (
                "no auth_time",
                with(&|c| {
                    c.as_object_mut().expect("object").remove("auth_time");
                }),
                Refusal::Malformed,
            ),
        ];
        for (name, token, expected) in cases {
            assert_eq!(verify(&token, &keys, PROJECT, now), Err(expected), "{name}");
        }
        // `alg: none` is no JWT jsonwebtoken reads.
        let none = format!(
            "{}.{}.",
            base64url(&json!({"alg": "none", "kid": "k1"})),
            base64url(&claims(now))
        );
        assert_eq!(verify(&none, &keys, PROJECT, now), Err(Refusal::Malformed));
        // Within the skew, still good.
        let late = with(&|c| c["exp"] = json!(now - skew + 5));
        assert!(verify(&late, &keys, PROJECT, now).is_ok());
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(verify(&long, &keys, PROJECT, now), Err(Refusal::Malformed));
    }

    fn base64url(value: &Value) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=19809, must-revalidate, no-transform"),
            Some(Duration::from_secs(19_809))
        );
        assert_eq!(max_age("MAX-AGE = 60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
