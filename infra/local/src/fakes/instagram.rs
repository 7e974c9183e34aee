//! A stand-in for "Instagram API with Instagram Login": the authorize page (signs the creator in at
//! once: `fake_user`, or `local-creator`), the code → short-lived → long-lived token exchanges
//! (checking the app id, secret and redirect URI), `me`, token refresh (at least a day old, not
//! expired: by the fake's own clock, which tests move), and publishing (a media container from an
//! `image_url` the fake really fetches, its status, `media_publish`). Expired or unknown tokens get
//! Graph's OAuthException 190.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Value, json};

/// The app id the local stack is configured with.
pub const APP_ID: &str = "local-instagram-app";

/// A token the fake issued.
#[derive(Clone, Debug)]
struct Token {
    ig_user_id: String,
    long_lived: bool,
    issued: i64,
    expires: i64,
}

/// Something published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub ig_user_id: String,
    pub caption: String,
    pub image_bytes: usize,
}

/// The fake's state.
#[derive(Default)]
pub struct Instagram {
    pub secret: Option<String>,
    /// Seconds the fake's clock is ahead of the real one.
    pub clock_offset: i64,
    /// How long the long-lived tokens it issues last (60 days by default).
    pub long_lived_seconds: Option<i64>,
    grants: HashMap<String, (String, String)>,
    tokens: HashMap<String, Token>,
    containers: HashMap<String, (String, String, usize)>,
    pub published: Vec<Published>,
}

fn expired() -> (u16, Value) {
    (
        400,
        json!({"error": {"message": "Error validating access token: Session has expired",
            "type": "OAuthException", "code": 190}}),
    )
}

fn new_id() -> String {
    // Instagram's ids are long decimal numbers.
    let n = uuid::Uuid::new_v4().as_u128() % 10u128.pow(17);
    format!("178{n:017}")
}

impl Instagram {
    fn now(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.clock_offset
    }

    /// The account a fake user name signs in as: a stable id per name.
    pub fn user_id(name: &str) -> String {
        let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(name));
        let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default()) % 10u64.pow(15);
        format!("1784{n:015}")
    }

    fn issue(&mut self, ig_user_id: &str, long_lived: bool) -> (String, i64) {
        let lifetime = if long_lived {
            self.long_lived_seconds.unwrap_or(60 * 86_400)
        } else {
            3_600
        };
        let token = format!("IG{}", uuid::Uuid::new_v4().simple());
        let now = self.now();
        self.tokens.insert(
            token.clone(),
            Token {
                ig_user_id: ig_user_id.to_owned(),
                long_lived,
                issued: now,
                expires: now + lifetime,
            },
        );
        (token, lifetime)
    }

    fn valid(&self, token: &str) -> Option<&Token> {
        self.tokens.get(token).filter(|t| t.expires > self.now())
    }

    /// `GET /oauth/authorize`: the browser's location after the creator allows the app.
    pub fn authorize(&mut self, query: &HashMap<String, String>) -> Result<String, String> {
        if query.get("client_id").map(String::as_str) != Some(APP_ID) {
            return Err("unknown client_id".into());
        }
        if query.get("response_type").map(String::as_str) != Some("code") {
            return Err("response_type must be code".into());
        }
        let redirect_uri = query.get("redirect_uri").ok_or("no redirect_uri")?.clone();
        let user = query
            .get("fake_user")
            .cloned()
            .unwrap_or_else(|| "local-creator".into());
        let code = format!("AQ{}", uuid::Uuid::new_v4().simple());
        self.grants
            .insert(code.clone(), (redirect_uri.clone(), user));
        let mut location = url::Url::parse(&redirect_uri).map_err(|e| e.to_string())?;
        location.query_pairs_mut().append_pair("code", &code);
        if let Some(state) = query.get("state") {
            location.query_pairs_mut().append_pair("state", state);
        }
        // Meta appends `#_` to the redirect.
        location.set_fragment(Some("_"));
        Ok(location.to_string())
    }

    /// `POST /oauth/access_token`: the code, once, for a short-lived token.
    pub fn access_token(&mut self, form: &HashMap<String, String>) -> (u16, Value) {
        let get = |k: &str| form.get(k).cloned().unwrap_or_default();
        if get("client_id") != APP_ID
            || self.secret.as_deref() != Some(get("client_secret").as_str())
        {
            return (
                400,
                json!({"error_type": "OAuthException", "code": 400, "error_message": "Invalid client"}),
            );
        }
        let Some((redirect_uri, user)) = self.grants.remove(&get("code")) else {
            return (
                400,
                json!({"error_type": "OAuthException", "code": 400, "error_message": "Invalid authorization code"}),
            );
        };
        if get("grant_type") != "authorization_code" || get("redirect_uri") != redirect_uri {
            return (
                400,
                json!({"error_type": "OAuthException", "code": 400, "error_message": "Invalid redirect_uri"}),
            );
        }
        let ig_user_id = Self::user_id(&user);
        let (token, _) = self.issue(&ig_user_id, false);
        (
            200,
            json!({"access_token": token, "user_id": ig_user_id.parse::<u64>().unwrap_or_default(),
            "permissions": ["instagram_business_basic", "instagram_business_content_publish"]}),
        )
    }

    /// `GET /access_token?grant_type=ig_exchange_token`: a short-lived token for a long-lived one.
    pub fn exchange(&mut self, query: &HashMap<String, String>) -> (u16, Value) {
        let get = |k: &str| query.get(k).cloned().unwrap_or_default();
        if get("grant_type") != "ig_exchange_token"
            || self.secret.as_deref() != Some(get("client_secret").as_str())
        {
            return (
                400,
                json!({"error": {"message": "Invalid parameters", "type": "OAuthException", "code": 100}}),
            );
        }
        let Some(short) = self
            .valid(&get("access_token"))
            .filter(|t| !t.long_lived)
            .cloned()
        else {
            return expired();
        };
        let (token, lifetime) = self.issue(&short.ig_user_id, true);
        (
            200,
            json!({"access_token": token, "token_type": "bearer", "expires_in": lifetime}),
        )
    }

    /// `GET /refresh_access_token?grant_type=ig_refresh_token`: a long-lived token at least a day
    /// old and not expired, for a fresh one.
    pub fn refresh(&mut self, query: &HashMap<String, String>) -> (u16, Value) {
        let Some(old) = self
            .valid(
                query
                    .get("access_token")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
            .filter(|t| t.long_lived)
            .cloned()
        else {
            return expired();
        };
        if self.now() - old.issued < 86_400 {
            return (
                400,
                json!({"error": {"message": "The token is less than 24 hours old", "type": "OAuthException", "code": 100}}),
            );
        }
        let (token, lifetime) = self.issue(&old.ig_user_id, true);
        (
            200,
            json!({"access_token": token, "token_type": "bearer", "expires_in": lifetime}),
        )
    }

    /// `GET /me`.
    pub fn me(&self, query: &HashMap<String, String>) -> (u16, Value) {
        match self.valid(
            query
                .get("access_token")
                .map(String::as_str)
                .unwrap_or_default(),
        ) {
            Some(token) => (
                200,
                json!({"user_id": token.ig_user_id, "username": format!("creator_{}", &token.ig_user_id[10..])}),
            ),
            None => expired(),
        }
    }

    /// Who a token is, if it is valid and `ig_user_id`'s.
    pub fn owner(&self, token: &str, ig_user_id: &str) -> bool {
        self.valid(token)
            .is_some_and(|t| t.ig_user_id == ig_user_id)
    }

    /// Records a container for an image the fake fetched.
    pub fn container(&mut self, ig_user_id: &str, caption: &str, image_bytes: usize) -> String {
        let id = new_id();
        self.containers.insert(
            id.clone(),
            (ig_user_id.to_owned(), caption.to_owned(), image_bytes),
        );
        id
    }

    /// `GET /{container}?fields=status_code`.
    pub fn status(&self, container: &str, token: &str) -> (u16, Value) {
        match (self.containers.get(container), self.valid(token)) {
            (Some((owner, ..)), Some(t)) if &t.ig_user_id == owner => {
                (200, json!({"status_code": "FINISHED", "id": container}))
            }
            (_, None) => expired(),
            _ => (
                400,
                json!({"error": {"message": "Unsupported get request", "type": "GraphMethodException", "code": 100}}),
            ),
        }
    }

    /// `POST /{ig_user_id}/media_publish`.
    pub fn publish(&mut self, ig_user_id: &str, form: &HashMap<String, String>) -> (u16, Value) {
        if !self.owner(
            form.get("access_token")
                .map(String::as_str)
                .unwrap_or_default(),
            ig_user_id,
        ) {
            return expired();
        }
        let Some((owner, caption, bytes)) = form
            .get("creation_id")
            .and_then(|c| self.containers.remove(c))
        else {
            return (
                400,
                json!({"error": {"message": "Invalid creation_id", "type": "OAuthException", "code": 100}}),
            );
        };
        if owner != ig_user_id {
            return (
                400,
                json!({"error": {"message": "Invalid creation_id", "type": "OAuthException", "code": 100}}),
            );
        }
        self.published.push(Published {
            ig_user_id: owner,
            caption,
            image_bytes: bytes,
        });
        (200, json!({"id": new_id()}))
    }
}

/// A `signed_request` as Meta sends its data-deletion callback: `<sig>.<payload>`, each base64url,
/// the signature HMAC-SHA256 of the encoded payload with the app secret.
pub fn signed_request(secret: &str, payload: &Value) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = engine.encode(payload.to_string());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let signature = aws_lc_rs::hmac::sign(&key, payload.as_bytes());
    format!("{}.{payload}", engine.encode(signature.as_ref()))
}
