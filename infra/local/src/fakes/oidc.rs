//! Stand-ins for Google's, Kakao's and Naver's OpenID Providers, each at `/oidc/<name>` with the
//! endpoints apps and Lambent use: discovery (`/.well-known/openid-configuration`), a JWKS,
//! `authorize` (signs the user in at once: the user is `login_hint`, or `local-user`), `token`
//! (checks the client id and secret, the redirect URI and the PKCE verifier; answers an RS256 ID
//! token with the flow's nonce) and, for Naver, the classic profile API (`/v1/nid/me`).
//!
//! Where the providers differ, the fakes do as they do: Google sends RFC 9207's `iss` with the
//! code and `email_verified` in its tokens; Kakao's and Naver's answers carry no `iss`, and
//! Naver's ID token has no email (its profile API has it).

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The providers faked, and their client ids: the first the web client's, then a native one.
pub const PROVIDERS: &[(&str, &[&str])] = &[
    (
        "google",
        &["google-web.apps.local", "google-ios.apps.local"],
    ),
    (
        "kakao",
        &["kakao-rest-key", "kakao-native-key", "kakao-js-key"],
    ),
    ("naver", &["naver-client-id"]),
];

/// The web client ids, by provider.
pub fn web_client_id(provider: &str) -> &'static str {
    PROVIDERS
        .iter()
        .find(|(name, _)| *name == provider)
        .map(|(_, ids)| ids[0])
        .unwrap_or_default()
}

/// One provider's signing key.
pub struct Signer {
    pub kid: String,
    key: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl Signer {
    pub fn generate(provider: &str) -> anyhow::Result<Self> {
        let pem = lambent::auth::keys::new_private_key_pem()?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())?;
        let kid = format!(
            "{provider}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut jwk = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(
            &key,
            jsonwebtoken::Algorithm::RS256,
        )?)?;
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Ok(Self { kid, key, jwk })
    }

    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> anyhow::Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.unwrap_or(&self.kid).to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}

/// A code the fake's authorize endpoint issued, waiting for the token endpoint.
pub struct Grant {
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: Option<String>,
    pub nonce: Option<String>,
    pub subject: String,
}

/// One provider's state.
pub struct Issuer {
    pub name: &'static str,
    pub url: String,
    pub signers: Vec<Signer>,
    pub grants: HashMap<String, Grant>,
    /// Access tokens issued, with their subject (the profile API reads them).
    pub access: HashMap<String, String>,
    pub jwks_fetches: usize,
    /// The client secret the token endpoint wants (from the stack's OAuthClients secret).
    pub client_secret: Option<String>,
    /// Kakao's admin key (`Authorization: KakaoAK …` on the admin APIs).
    pub admin_key: Option<String>,
    /// The user ids the admin unlink API was called for.
    pub unlinked: Vec<String>,
    /// Refresh tokens issued, with their subject.
    pub refresh: HashMap<String, String>,
    /// The subjects whose tokens were revoked (RFC 7009 `revoke`).
    pub revoked: Vec<String>,
}

impl Issuer {
    pub fn new(name: &'static str, base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            url: format!("{base}/oidc/{name}"),
            signers: vec![Signer::generate(name)?],
            grants: HashMap::new(),
            access: HashMap::new(),
            jwks_fetches: 0,
            client_secret: None,
            admin_key: None,
            unlinked: Vec::new(),
            refresh: HashMap::new(),
            revoked: Vec::new(),
        })
    }

    pub fn discovery(&self) -> Value {
        let url = &self.url;
        json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
            "userinfo_endpoint": format!("{url}/userinfo"),
            "revocation_endpoint": format!("{url}/revoke"),
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": self.name == "google",
        })
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": self.signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()})
    }

    /// The claims of an ID token for `subject`, issued now for an hour to `aud`.
    pub fn claims(&self, subject: &str, aud: &str, nonce: Option<&str>) -> Value {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "iss": self.url, "sub": subject, "aud": aud, "iat": now, "exp": now + 3_600,
            "auth_time": now,
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        match self.name {
            "google" => {
                claims["email"] = json!(format!("{subject}@gmail.example"));
                claims["email_verified"] = json!(true);
                claims["azp"] = json!(aud);
            }
            "kakao" => {
                claims["nickname"] = json!(subject);
            }
            _ => {}
        }
        claims
    }

    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> anyhow::Result<String> {
        let signer = self
            .signers
            .last()
            .ok_or_else(|| anyhow::anyhow!("no key"))?;
        signer.sign(claims, kid)
    }

    /// `GET authorize`: the user signs in at once; the browser goes back with a code.
    pub fn authorize(&mut self, query: &HashMap<String, String>) -> Result<String, String> {
        let get = |name: &str| query.get(name).cloned();
        let client_id = get("client_id").unwrap_or_default();
        if client_id != web_client_id(self.name) {
            return Err(format!("unknown client_id {client_id}"));
        }
        if get("response_type").as_deref() != Some("code") {
            return Err("response_type must be code".into());
        }
        if !get("scope")
            .unwrap_or_default()
            .split(' ')
            .any(|s| s == "openid")
        {
            return Err("scope must include openid".into());
        }
        let redirect_uri = get("redirect_uri").ok_or("no redirect_uri")?;
        if get("code_challenge").is_some()
            && get("code_challenge_method").as_deref() != Some("S256")
        {
            return Err("code_challenge_method must be S256".into());
        }
        let subject = get("login_hint").unwrap_or_else(|| "local-user".into());
        let mut location = url::Url::parse(&redirect_uri).map_err(|e| e.to_string())?;
        {
            let mut pairs = location.query_pairs_mut();
            if subject == "deny" {
                pairs.append_pair("error", "access_denied");
            } else {
                let code = format!("{}-code-{}", self.name, uuid::Uuid::new_v4().simple());
                self.grants.insert(
                    code.clone(),
                    Grant {
                        client_id,
                        redirect_uri: redirect_uri.clone(),
                        challenge: get("code_challenge"),
                        nonce: get("nonce"),
                        subject,
                    },
                );
                pairs.append_pair("code", &code);
            }
            if let Some(state) = get("state") {
                pairs.append_pair("state", &state);
            }
            if self.name == "google" {
                pairs.append_pair("iss", &self.url);
            }
        }
        Ok(location.to_string())
    }

    /// `POST token` (authorization_code): the code once, with its client, redirect URI and
    /// PKCE verifier.
    pub fn token(&mut self, form: &HashMap<String, String>) -> Result<Value, (u16, &'static str)> {
        let get = |name: &str| form.get(name).cloned().unwrap_or_default();
        if get("grant_type") != "authorization_code" {
            return Err((400, "unsupported_grant_type"));
        }
        let grant = self
            .grants
            .remove(&get("code"))
            .ok_or((400, "invalid_grant"))?;
        if get("client_id") != grant.client_id {
            return Err((401, "invalid_client"));
        }
        if let Some(secret) = &self.client_secret
            && &get("client_secret") != secret
        {
            return Err((401, "invalid_client"));
        }
        if get("redirect_uri") != grant.redirect_uri {
            return Err((400, "invalid_grant"));
        }
        if let Some(challenge) = &grant.challenge {
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(get("code_verifier").as_bytes()));
            if &computed != challenge {
                return Err((400, "invalid_grant"));
            }
        }
        let claims = self.claims(&grant.subject, &grant.client_id, grant.nonce.as_deref());
        let id_token = self
            .sign(&claims, None)
            .map_err(|_| (500, "server_error"))?;
        let access = format!("{}-access-{}", self.name, uuid::Uuid::new_v4().simple());
        let refresh = format!("{}-refresh-{}", self.name, uuid::Uuid::new_v4().simple());
        self.access.insert(access.clone(), grant.subject.clone());
        self.refresh.insert(refresh.clone(), grant.subject);
        Ok(json!({
            "access_token": access, "token_type": "bearer", "expires_in": 3599,
            "refresh_token": refresh, "scope": "openid", "id_token": id_token,
        }))
    }

    /// Kakao's admin unlink (`POST /v1/user/unlink`, `target_id_type=user_id&target_id=…`):
    /// `{id}`, or Kakao's error for a forged key (-401) or a user not linked (-101).
    pub fn kakao_unlink(
        &mut self,
        authorization: &str,
        form: &HashMap<String, String>,
    ) -> (u16, Value) {
        let genuine = self
            .admin_key
            .as_ref()
            .is_some_and(|key| authorization == format!("KakaoAK {key}"));
        if !genuine {
            return (401, json!({"msg": "wrong appKey", "code": -401}));
        }
        let target = form.get("target_id").cloned().unwrap_or_default();
        if form.get("target_id_type").map(String::as_str) != Some("user_id") || target.is_empty() {
            return (
                400,
                json!({"msg": "target_id_type and target_id are required", "code": -2}),
            );
        }
        if self.unlinked.contains(&target) {
            return (
                400,
                json!({"msg": "NotRegisteredUserException", "code": -101}),
            );
        }
        self.unlinked.push(target.clone());
        (
            200,
            json!({"id": target.parse::<i64>().unwrap_or_default()}),
        )
    }

    /// `POST revoke` (RFC 7009): the token and its pair stop working; Naver also wants the
    /// client's id and secret. A token it does not know is fine (200), as RFC 7009 says.
    pub fn revoke(&mut self, form: &HashMap<String, String>) -> (u16, Value) {
        let get = |k: &str| form.get(k).cloned().unwrap_or_default();
        if self.name == "naver"
            && (get("client_id") != web_client_id(self.name)
                || self.client_secret.as_deref() != Some(get("client_secret").as_str()))
        {
            return (401, json!({"error": "unauthorized_client"}));
        }
        let token = get("token");
        let subject = self
            .refresh
            .remove(&token)
            .or_else(|| self.access.remove(&token));
        if let Some(subject) = subject {
            self.access.retain(|_, s| *s != subject);
            self.refresh.retain(|_, s| *s != subject);
            self.revoked.push(subject);
        }
        (200, json!({}))
    }

    /// Naver's classic profile API for an access token.
    pub fn naver_profile(&self, authorization: &str) -> Option<Value> {
        let subject = self.access.get(authorization.strip_prefix("Bearer ")?)?;
        Some(
            json!({"resultcode": "00", "message": "success", "response": {
                "id": subject, "nickname": subject, "email": format!("{subject}@naver.example"),
            }}),
        )
    }
}
