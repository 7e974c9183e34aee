//! A stand-in for Firebase Authentication's token signing: an RSA key whose self-signed X.509
//! certificate is published as Google publishes securetoken's (a JSON object of kid → PEM, with
//! `Cache-Control: max-age`), and ID tokens signed with it as Firebase issues them (RS256, `kid`,
//! `iss` `https://securetoken.google.com/<project>`, `aud` the project, `sub` the uid).

use aws_lc_rs::encoding::AsDer as _;
use serde_json::{Value, json};

/// The project id the local stack accepts tokens of.
pub const PROJECT_ID: &str = "lambent-local";

/// One signing key and its certificate.
pub struct Signer {
    pub kid: String,
    key_pem: String,
    pub certificate: String,
}

impl Signer {
    pub fn generate() -> anyhow::Result<Self> {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        let der = pair
            .as_der()
            .map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_ref().to_vec());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)?;
        let params =
            rcgen::CertificateParams::new(vec!["securetoken.system.gserviceaccount.com".into()])?;
        let certificate = params.self_signed(&key)?.pem();
        Ok(Self {
            kid: format!("local-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            key_pem: key.serialize_pem(),
            certificate,
        })
    }

    /// An ID token with the given claims (over Firebase's usual ones) and header `kid`.
    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> anyhow::Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.unwrap_or(&self.kid).to_owned());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.key_pem.as_bytes())?;
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }
}

/// The claims Firebase puts in an ID token for `uid`, issued now for an hour.
pub fn claims(uid: &str, email: Option<&str>) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": format!("https://securetoken.google.com/{PROJECT_ID}"),
        "aud": PROJECT_ID,
        "auth_time": now - 5,
        "user_id": uid,
        "sub": uid,
        "iat": now,
        "exp": now + 3_600,
        "firebase": {"identities": {}, "sign_in_provider": "password"},
    });
    if let Some(email) = email {
        claims["email"] = json!(email);
        claims["email_verified"] = json!(true);
    }
    claims
}

/// The certificates document: every key still published.
pub fn certificates(signers: &[Signer]) -> Value {
    Value::Object(
        signers
            .iter()
            .map(|s| (s.kid.clone(), Value::String(s.certificate.clone())))
            .collect(),
    )
}
