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

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::id_tokens::{self, Format, Source};
pub use crate::auth::id_tokens::{
    Keys, MAX_TOKEN_BYTES, Refusal, SKEW_SECONDS, parse_certificates,
};

/// The issuer of a project's tokens is this followed by the project id.
pub const ISSUER_PREFIX: &str = "https://securetoken.google.com/";

/// The longest uid Firebase issues (firebase-admin checks the same).
pub const MAX_UID_CHARS: usize = 128;

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

#[derive(Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    iss: String,
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
    let claims: Claims = id_tokens::decode(token, keys, &[Algorithm::RS256])?;
    if claims.aud != project_id {
        return Err(Refusal::Audience);
    }
    if claims.iss.strip_prefix(ISSUER_PREFIX) != Some(project_id) {
        return Err(Refusal::Issuer);
    }
    id_tokens::check_times(claims.exp, claims.iat, Some(claims.auth_time), now)?;
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

/// Verifies `token` against Google's certificates, fetched again once if it names a key not held
/// (Google may have rotated its keys since): the Firebase uid's identity, or the client's 401.
pub async fn verified_identity(
    state: &crate::state::State,
    token: &str,
    project: &str,
    now: i64,
) -> Result<Identity, crate::error::ApiError> {
    let source = Source {
        url: &state.config.firebase.certs_url,
        format: Format::X509,
        floor: state.config.firebase.refetch_floor,
        issuer: "firebase",
    };
    let mut verified = verify(
        token,
        &*id_tokens::keys(state, source, false).await?,
        project,
        now,
    );
    if verified == Err(Refusal::UnknownKey) {
        verified = verify(
            token,
            &*id_tokens::keys(state, source, true).await?,
            project,
            now,
        );
    }
    verified.map_err(Refusal::problem)
}

/// `POST /v1/auth/firebase`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirebaseSignIn {
    /// The ID token the Firebase client SDK holds (`getIdToken()`).
    #[schema(value_type = String, max_length = 8192)]
    pub id_token: secrecy::SecretString,
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
    crate::auth::identities::limit_sign_ins(state, &req).await?;
    let identity = verified_identity(
        state,
        body.id_token.expose_secret(),
        &project,
        now.timestamp(),
    )
    .await?;
    let email = identity
        .email
        .filter(|_| identity.email_verified)
        .map(|e| e.to_lowercase());
    crate::auth::identities::sign_in(state, "firebase", &identity.uid, email, now).await
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
        let skew = SKEW_SECONDS;
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
}
