//! The RS256 keys that sign access tokens, loaded from Secrets Manager once per cold start.
//!
//! The secret holds `{"keys": [{"kid": "...", "private_key_pem": "-----BEGIN PRIVATE KEY-----..."}]}`.
//! The first key signs; every key is published in the JWKS, so a rotation prepends a new key and
//! drops the old one only after the longest token lifetime plus API Gateway's key cache (2 h).

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

#[derive(Deserialize)]
struct StoredKeys {
    keys: Vec<StoredKey>,
}

#[derive(Deserialize)]
struct StoredKey {
    kid: String,
    private_key_pem: SecretString,
}

/// Signing and verification keys, and the JWKS that publishes the public halves.
pub struct KeyRing {
    signing_kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: JwkSet,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
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
        let mut first = None;
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
            if first.is_none() {
                first = Some((key.kid.clone(), encoding));
            }
        }
        let (signing_kid, signing) = first.context("no signing key")?;
        Ok(Self {
            signing_kid,
            signing,
            verifying,
            jwks,
        })
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs an access token with the current key.
    pub fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing).context("signing an access token")
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

/// A new secret value holding one fresh 2048-bit RSA key, for the local stack and for rotation.
pub fn generate_secret(kid: &str) -> anyhow::Result<SecretString> {
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
    let value = serde_json::json!({ "keys": [{ "kid": kid, "private_key_pem": pem }] });
    Ok(SecretString::from(value.to_string()))
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
    fn a_token_from_another_key_is_refused() {
        let ring = KeyRing::from_secret(&generate_secret("k1").expect("key")).expect("ring");
        let impostor = KeyRing::from_secret(&generate_secret("k1").expect("key")).expect("ring");
        let token = impostor
            .sign(&claims(chrono::Utc::now().timestamp()))
            .expect("sign");
        assert!(ring.verify(&token, "https://issuer", "lambent").is_err());
    }
}
