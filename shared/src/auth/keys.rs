//! The RS256 keys that sign access tokens, loaded from Secrets Manager once per cold start.
//!
//! The secret holds `{"keys": [{"kid", "private_key_pem", "sign_after"}]}`, newest first. Every key
//! is published in the JWKS at once; a key signs only from its `sign_after` (unix seconds), set
//! [`PUBLISH_AHEAD`] after its rotation, so API Gateway (which caches keys for up to 2 h) knows a
//! key before any token signed with it arrives. The previous key stays published until the next
//! rotation, so the tokens it signed keep verifying until they expire.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The claims of a Lambent access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub username: String,
    pub role: String,
    pub scope: String,
}

/// Why a bearer token was refused. Every variant is a 401; the distinction is for logs.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token has no known key id")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// How long a new key is published before it signs: API Gateway's key cache (2 h) and a margin.
pub const PUBLISH_AHEAD: i64 = 3 * 3600;

#[derive(Deserialize, Serialize)]
struct StoredKeys {
    keys: Vec<StoredKey>,
}

#[derive(Deserialize, Serialize)]
struct StoredKey {
    kid: String,
    #[serde(serialize_with = "expose")]
    private_key_pem: SecretString,
    #[serde(default)]
    sign_after: i64,
}

fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

struct SigningKey {
    kid: String,
    key: EncodingKey,
    sign_after: i64,
}

/// Signing and verification keys, and the JWKS that publishes the public halves.
pub struct KeyRing {
    signing: Vec<SigningKey>,
    verifying: HashMap<String, DecodingKey>,
    jwks: JwkSet,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.signing.iter().map(|k| &k.kid).collect();
        f.debug_struct("KeyRing")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Builds the ring from the secret's JSON text.
    pub fn from_secret(secret: &SecretString) -> anyhow::Result<Self> {
        let stored: StoredKeys = serde_json::from_str(secret.expose_secret())
            .context("the signing key secret is not the expected JSON")?;
        if stored.keys.is_empty() {
            bail!("the signing key secret holds no key");
        }
        let mut verifying = HashMap::new();
        let mut jwks = JwkSet { keys: Vec::new() };
        let mut signing = Vec::new();
        for key in &stored.keys {
            let encoding =
                EncodingKey::from_rsa_pem(key.private_key_pem.expose_secret().as_bytes())
                    .with_context(|| format!("key {} is not an RSA private key", key.kid))?;
            let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
                .with_context(|| format!("key {} has no public half", key.kid))?;
            jwk.common.key_id = Some(key.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
            verifying.insert(
                key.kid.clone(),
                DecodingKey::from_jwk(&jwk).context("public key")?,
            );
            jwks.keys.push(jwk);
            signing.push(SigningKey {
                kid: key.kid.clone(),
                key: encoding,
                sign_after: key.sign_after,
            });
        }
        Ok(Self {
            signing,
            verifying,
            jwks,
        })
    }

    /// The key that signs at `now`: the newest whose `sign_after` has passed, else the oldest.
    fn signer(&self, now: i64) -> anyhow::Result<&SigningKey> {
        self.signing
            .iter()
            .find(|k| k.sign_after <= now)
            .or_else(|| self.signing.last())
            .context("no signing key")
    }

    /// The key ids, newest first.
    pub fn kids(&self) -> Vec<String> {
        self.signing.iter().map(|k| k.kid.clone()).collect()
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs an access token with the key in force at its `iat`.
    pub fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let signer = self.signer(claims.iat)?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.key).context("signing an access token")
    }

    /// Verifies a token as API Gateway's JWT authorizer does: RS256 only, a known `kid`, the
    /// signature, `iss`, `aud`, `exp` and `nbf`.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        let key = header
            .kid
            .as_ref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Ok(jsonwebtoken::decode::<AccessClaims>(token, key, &validation)?.claims)
    }
}

/// A fresh 2048-bit RSA private key as PKCS#8 PEM.
pub fn new_private_key_pem() -> anyhow::Result<String> {
    use aws_lc_rs::encoding::AsDer;
    use base64::Engine as _;

    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
    let der = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).context("base64 is ASCII")?);
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// A new secret value holding one fresh key that signs at once (the local stack, a first deploy).
pub fn generate_secret(kid: &str) -> anyhow::Result<SecretString> {
    let keys = StoredKeys {
        keys: vec![StoredKey {
            kid: kid.to_owned(),
            private_key_pem: SecretString::from(new_private_key_pem()?),
            sign_after: 0,
        }],
    };
    Ok(SecretString::from(serde_json::to_string(&keys)?))
}

/// The secret value after a rotation at `now`: a new key, published at once and signing from
/// `now + PUBLISH_AHEAD`, then the key that signs now (kept so its tokens verify); older keys go.
/// Without a current value (the first rotation) the new key signs at once.
pub fn rotate(current: Option<&SecretString>, kid: &str, now: i64) -> anyhow::Result<SecretString> {
    let mut keys = Vec::new();
    let mut sign_after = now;
    if let Some(current) = current {
        let stored: StoredKeys = serde_json::from_str(current.expose_secret())
            .context("the current signing key secret is not the expected JSON")?;
        if let Some(in_force) = stored.keys.into_iter().find(|k| k.sign_after <= now) {
            sign_after = now + PUBLISH_AHEAD;
            keys.push(in_force);
        }
    }
    keys.insert(
        0,
        StoredKey {
            kid: kid.to_owned(),
            private_key_pem: SecretString::from(new_private_key_pem()?),
            sign_after,
        },
    );
    Ok(SecretString::from(serde_json::to_string(&StoredKeys {
        keys,
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://issuer".into(),
            sub: "user-1".into(),
            aud: "lambent".into(),
            exp: now + 60,
            nbf: now,
            iat: now,
            jti: "j".into(),
            username: "ann".into(),
            role: "user".into(),
            scope: "user".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_the_jwks_names_its_key() {
        let ring = KeyRing::from_secret(&generate_secret("k1").expect("key")).expect("ring");
        let now = chrono::Utc::now().timestamp();
        let token = ring.sign(&claims(now)).expect("sign");
        let verified = ring
            .verify(&token, "https://issuer", "lambent")
            .expect("valid");
        assert_eq!(verified, claims(now));
        assert_eq!(ring.jwks().keys[0].common.key_id.as_deref(), Some("k1"));
        assert!(ring.verify(&token, "https://other", "lambent").is_err());
        assert!(ring.verify(&token, "https://issuer", "other").is_err());
    }

    #[test]
    fn a_rotated_key_is_published_at_once_and_signs_later() {
        let now = chrono::Utc::now().timestamp();
        let first = rotate(None, "k1", now).expect("first");
        let second = rotate(Some(&first), "k2", now).expect("second");
        let ring = KeyRing::from_secret(&second).expect("ring");
        let kids = ring.kids();
        assert_eq!(kids, ["k2", "k1"]);

        let kid_at = |iat: i64| {
            let token = ring
                .sign(&AccessClaims { iat, ..claims(now) })
                .expect("sign");
            jsonwebtoken::decode_header(&token)
                .expect("header")
                .kid
                .expect("kid")
        };
        assert_eq!(kid_at(now), "k1");
        assert_eq!(kid_at(now + PUBLISH_AHEAD), "k2");

        // The next rotation drops k1 and keeps the key in force.
        let third = rotate(Some(&second), "k3", now + PUBLISH_AHEAD).expect("third");
        let ring = KeyRing::from_secret(&third).expect("ring");
        let kids = ring.kids();
        assert_eq!(kids, ["k3", "k2"]);
    }

    #[test]
    fn a_token_from_another_key_is_refused() {
        let ring = KeyRing::from_secret(&generate_secret("k1").expect("key")).expect("ring");
        let impostor = KeyRing::from_secret(&generate_secret("k1").expect("key")).expect("ring");
        let token = impostor
            .sign(&claims(chrono::Utc::now().timestamp()))
            .expect("sign");
        assert!(ring.verify(&token, "https://issuer", "lambent").is_err());
    }
}
