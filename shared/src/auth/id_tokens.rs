//! What every outside ID token needs, whoever issued it: the issuer's public keys (fetched,
//! cached per `Cache-Control: max-age`, fetched again for an unknown `kid` at most once per a
//! floor, kept when a refresh fails), the refusals a client is told, and signature checking with
//! the algorithm pinned by the caller.
//!
//! Two key formats: Google's X.509 map (`{"<kid>": "<PEM certificate>"}`, Firebase's securetoken
//! keys) and JSON Web Key Sets (RFC 7517: Google's, Kakao's and Naver's OIDC keys).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::State;

/// The longest token read at all: providers' are 1–2 KB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Leeway on `exp`, `iat` and `auth_time`, for clocks that disagree.
pub const SKEW_SECONDS: i64 = 60;

/// The public keys of one issuer, by `kid`.
pub struct Keys(HashMap<String, DecodingKey>);

impl Keys {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.0.get(kid)
    }
}

/// How a key document is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"<kid>": "<PEM X.509 certificate>", …}` (Google's securetoken certificates).
    X509,
    /// `{"keys": [<JWK>, …]}`.
    Jwks,
}

/// The RSA public keys of a certificates document. Entries that are not RSA certificates are
/// left out.
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

/// The RSA and EC signing keys of a JWKS that have a `kid`. Symmetric (`oct`) keys are never
/// taken from a document anyone could serve, nor keys marked for encryption.
pub fn parse_jwks(document: &Value) -> Keys {
    use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
    let mut keys = HashMap::new();
    for entry in document["keys"].as_array().into_iter().flatten() {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        let signing = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
        let asymmetric = matches!(
            jwk.algorithm,
            AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
        );
        let (Some(kid), true, true) = (jwk.common.key_id.clone(), signing, asymmetric) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, key);
        }
    }
    Keys(keys)
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
    /// `exp` too far past `iat` (Google's libraries refuse a lifetime over a day).
    Lifetime,
    Subject,
    /// The `nonce` is not the one the sign-in started with, or was used before.
    Nonce,
}

impl Refusal {
    pub fn detail(self) -> &'static str {
        match self {
            Self::Malformed => "the ID token is not a JWT with the claims it needs",
            Self::Algorithm => "the ID token is not signed with an algorithm accepted here",
            Self::UnknownKey => {
                "the ID token names no key its issuer publishes (it may have expired)"
            }
            Self::Signature => "the ID token's signature is not valid",
            Self::Audience => "the ID token was issued for another app",
            Self::Issuer => "the ID token was not issued by the provider it was sent for",
            Self::Expired => "the ID token has expired",
            Self::IssuedInFuture => "the ID token was issued in the future",
            Self::Lifetime => "the ID token is valid for longer than a provider issues tokens",
            Self::Subject => "the ID token names no valid user",
            Self::Nonce => "the ID token's nonce is not this sign-in's, or was used before",
        }
    }

    /// The problem a client gets.
    pub fn problem(self) -> ApiError {
        ApiError::Unauthorized {
            code: "invalid_id_token",
            detail: self.detail(),
        }
    }
}

/// Decodes `token` with the key its header names, accepting only `algorithms`; `aud`, `iss` and
/// the times are the caller's to check (against its clock, not the system's).
pub fn decode<C: DeserializeOwned>(
    token: &str,
    keys: &Keys,
    algorithms: &[Algorithm],
) -> Result<C, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
    if !algorithms.contains(&header.alg) {
        return Err(Refusal::Algorithm);
    }
    let kid = header.kid.ok_or(Refusal::UnknownKey)?;
    let key = keys.get(&kid).ok_or(Refusal::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<C>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::InvalidSignature => Refusal::Signature,
                // The key's family is not the header's algorithm's.
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => Refusal::Algorithm,
                _ => Refusal::Malformed,
            }
        })
}

/// Checks `exp` and `iat` (and `auth_time` where given) against `now` with [`SKEW_SECONDS`].
pub fn check_times(exp: i64, iat: i64, auth_time: Option<i64>, now: i64) -> Result<(), Refusal> {
    if exp + SKEW_SECONDS < now {
        return Err(Refusal::Expired);
    }
    if iat > now + SKEW_SECONDS || auth_time.is_some_and(|t| t > now + SKEW_SECONDS) {
        return Err(Refusal::IssuedInFuture);
    }
    Ok(())
}

/// The keys of every issuer this process has verified a token of, and their discovery
/// documents; the composition root installs one per State.
#[derive(Default)]
pub struct Runtime {
    keys: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::RwLock<Option<Cached>>>>>,
    documents: tokio::sync::RwLock<HashMap<String, Document>>,
}

/// A document, when it was fetched and how long it stays fresh.
type Document = (Instant, Duration, Arc<Value>);

struct Cached {
    keys: Arc<Keys>,
    fetched: Instant,
    /// From the answer's `Cache-Control: max-age`; the refetch floor after a failed refresh.
    fresh_for: Duration,
}

/// How long keys and documents are kept when their answer names no `max-age`.
const DEFAULT_FRESH_FOR: Duration = Duration::from_secs(3_600);

/// The largest key or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Where an issuer's keys are and how they are written.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub url: &'a str,
    pub format: Format,
    /// The shortest time between two fetches when a token names a key not held.
    pub floor: Duration,
    /// Who publishes them, for the 503 when none can be had.
    pub issuer: &'static str,
}

/// The keys at `source`, fetched when stale (or, with `refresh`, when older than the floor). A
/// failed refresh keeps the keys already held (firebase-admin-go does the same) and tries again
/// after the floor; with none held it is a 503.
pub async fn keys(state: &State, source: Source<'_>, refresh: bool) -> Result<Arc<Keys>, ApiError> {
    let runtime = state.feature::<Runtime>()?;
    let slot = runtime
        .keys
        .lock()
        .await
        .entry(source.url.to_owned())
        .or_default()
        .clone();
    let usable = |cached: &Option<Cached>| {
        cached.as_ref().and_then(|c| {
            let age = c.fetched.elapsed();
            let fresh = if refresh {
                age < source.floor.min(c.fresh_for)
            } else {
                age < c.fresh_for
            };
            fresh.then(|| c.keys.clone())
        })
    };
    if let Some(keys) = usable(&*slot.read().await) {
        return Ok(keys);
    }
    let mut cached = slot.write().await;
    if let Some(keys) = usable(&cached) {
        return Ok(keys);
    }
    let fetched = fetch(state, source.url)
        .await
        .and_then(|(document, fresh_for)| {
            let keys = match source.format {
                Format::X509 => parse_certificates(&document),
                Format::Jwks => parse_jwks(&document),
            };
            anyhow::ensure!(!keys.is_empty(), "the document holds no signing key");
            Ok((keys, fresh_for))
        });
    match fetched {
        Ok((keys, fresh_for)) => {
            let keys = Arc::new(keys);
            *cached = Some(Cached {
                keys: keys.clone(),
                fetched: Instant::now(),
                fresh_for,
            });
            Ok(keys)
        }
        Err(err) => {
            tracing::warn!(
                issuer = source.issuer,
                error = format!("{err:#}"),
                "fetching signing keys"
            );
            match cached.as_mut() {
                Some(held) => {
                    held.fetched = Instant::now();
                    held.fresh_for = source.floor;
                    Ok(held.keys.clone())
                }
                None => Err(ApiError::Unavailable(
                    "the provider's signing keys could not be fetched; try again",
                )),
            }
        }
    }
}

/// A JSON document (an OpenID Provider's configuration), cached per its `max-age`.
pub async fn document(state: &State, url: &str) -> anyhow::Result<Arc<Value>> {
    let runtime = state.feature::<Runtime>()?;
    if let Some((at, fresh_for, doc)) = runtime.documents.read().await.get(url)
        && at.elapsed() < *fresh_for
    {
        return Ok(doc.clone());
    }
    let (doc, fresh_for) = fetch(state, url).await?;
    let doc = Arc::new(doc);
    runtime
        .documents
        .write()
        .await
        .insert(url.to_owned(), (Instant::now(), fresh_for, doc.clone()));
    Ok(doc)
}

async fn fetch(state: &State, url: &str) -> anyhow::Result<(Value, Duration)> {
    use anyhow::Context as _;
    let response = state
        .http
        .api
        .get(url)
        .send()
        .await
        .with_context(|| format!("requesting {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    let fresh_for = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age)
        .unwrap_or(DEFAULT_FRESH_FOR);
    let body = crate::http::read_limited(response, MAX_DOCUMENT_BYTES)
        .await
        .with_context(|| format!("reading {url}"))?;
    let document: Value = serde_json::from_slice(&body).context("the document is not JSON")?;
    Ok((document, fresh_for))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_jwks_yields_its_asymmetric_signing_keys_only() {
        let document = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"}
        ]});
        let keys = parse_jwks(&document);
        assert_eq!(keys.len(), 1);
        assert!(keys.get("r1").is_some());
    }

    #[test]
    fn times_have_a_minute_of_skew() {
        let now = 1_800_000_000;
        assert_eq!(check_times(now - 30, now - 100, None, now), Ok(()));
        assert_eq!(
            check_times(now - 61, now - 100, None, now),
            Err(Refusal::Expired)
        );
        assert_eq!(
            check_times(now + 60, now + 61, None, now),
            Err(Refusal::IssuedInFuture)
        );
        assert_eq!(
            check_times(now + 60, now, Some(now + 61), now),
            Err(Refusal::IssuedInFuture)
        );
    }
}
