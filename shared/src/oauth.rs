//! Browser OAuth flows, whichever provider they go to (Google, Kakao and Naver sign-in; an
//! Instagram account linked to a persona): what the app asks for, the flow kept in DynamoDB under
//! the hash of its `state` and bound to the browser by an HttpOnly cookie, its single use when the
//! browser comes back, and the one-time code the app redeems with its own PKCE verifier. Tokens
//! never travel in a URL.

use base64::Engine as _;
use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use sha2::{Digest as _, Sha256};

use crate::db::{Item, get_i64, get_s, n, s};
use crate::error::ApiError;
use crate::keys;
use crate::state::State;

/// How long a browser flow may take, start to callback.
pub const FLOW_TTL_SECONDS: i64 = 600;

/// How long the app has to redeem its one-time code.
pub const CODE_TTL_SECONDS: i64 = 120;

/// The cookie that binds a flow to the browser that started it.
pub const BINDING_COOKIE: &str = "lambent_oauth";

/// 32 random bytes, base64url.
pub fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("no randomness")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `BASE64URL(SHA256(verifier))`, PKCE's S256 (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Constant-time equality of two secrets' bytes.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// A 400 with its code.
pub fn bad(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code,
        detail: detail.into(),
    }
}

/// The PKCE challenge an app sends: 43 to 128 base64url characters (RFC 7636 §4.2).
fn valid_challenge(challenge: &str) -> bool {
    (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the app asks for when it sends the browser to start a flow.
pub struct AppRequest {
    /// Where the browser goes back: one of `OAUTH_REDIRECT_URIS`, exactly.
    pub redirect_uri: String,
    /// The app's PKCE challenge; its verifier redeems the code.
    pub challenge: String,
    /// The app's own state, given back with the code.
    pub app_state: Option<String>,
}

/// Reads and checks the app's request from the start URL's query: a `redirect_uri` off the
/// allow-list is a 400 with no redirect anywhere; the app must send its PKCE S256 challenge.
pub fn app_request(state: &State, req: &Request) -> Result<AppRequest, ApiError> {
    let query = |name| crate::http::query_param(req, name);
    let redirect_uri = query("redirect_uri").unwrap_or_default();
    if !state.config.oidc.redirect_uris.contains(&redirect_uri) {
        return Err(bad(
            "redirect_uri_not_allowed",
            "redirect_uri is not one of the app's registered redirect URIs",
        ));
    }
    let challenge = query("code_challenge").unwrap_or_default();
    if !valid_challenge(&challenge) {
        return Err(bad(
            "invalid_request",
            "code_challenge must be the app's PKCE S256 challenge (43 base64url characters)",
        ));
    }
    if query("code_challenge_method").is_some_and(|m| m != "S256") {
        return Err(bad("invalid_request", "code_challenge_method must be S256"));
    }
    let app_state = query("state");
    if app_state.as_ref().is_some_and(|s| s.len() > 512) {
        return Err(bad(
            "invalid_request",
            "state is longer than 512 characters",
        ));
    }
    Ok(AppRequest {
        redirect_uri,
        challenge,
        app_state,
    })
}

/// One entry of the OAuth clients secret (`OAUTH_CLIENTS_SECRET_ID`: `{"google", "kakao",
/// "naver", "kakao_admin_key", "instagram"}`); `None` where it is unset or empty.
pub async fn client_secret(state: &State, name: &str) -> anyhow::Result<Option<String>> {
    use secrecy::ExposeSecret as _;
    let Some(id) = &state.config.oidc.clients_secret_id else {
        return Ok(None);
    };
    let text = state.secret_string(id).await?;
    let secrets: serde_json::Value = serde_json::from_str(text.expose_secret())
        .map_err(|_| anyhow::anyhow!("the OAuth clients secret is not a JSON object"))?;
    Ok(secrets[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// The callback URL registered at a provider: `<OAUTH_CALLBACK_BASE_URL><path>`.
pub fn callback_url(state: &State, path: &str) -> Result<String, ApiError> {
    let base = state
        .config
        .oidc
        .callback_base_url
        .as_deref()
        .ok_or(ApiError::NotFound("browser sign-in is not configured"))?;
    Ok(format!("{base}{path}"))
}

/// A flow begun: its `state` for the provider and the cookie that binds it to this browser.
pub struct Begun {
    pub state: String,
    pub cookie: String,
}

/// Keeps a flow to `provider` for ten minutes with the app's request and `attributes`, under a
/// new `state`, bound to this browser by a cookie scoped to `cookie_path`.
pub async fn begin(
    state: &State,
    app: &AppRequest,
    provider: &str,
    attributes: Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>,
    cookie_path: &str,
) -> Result<Begun, ApiError> {
    let flow_state = random_token()?;
    let binding = random_token()?;
    let mut item = vec![
        ("pk", s(keys::oauth_flow(&flow_state))),
        ("sk", s(keys::FLOW)),
        ("provider", s(provider)),
        ("redirect_uri", s(&app.redirect_uri)),
        ("app_challenge", s(&app.challenge)),
        ("browser", s(hash(&binding))),
        ("expires_at", n(Utc::now().timestamp() + FLOW_TTL_SECONDS)),
    ];
    if let Some(app_state) = &app.app_state {
        item.push(("app_state", s(app_state)));
    }
    item.extend(attributes);
    state.db.put(item, "keeping the flow").await?;
    let secure = if state
        .config
        .oidc
        .callback_base_url
        .as_deref()
        .is_some_and(|b| b.starts_with("https://"))
    {
        "; Secure"
    } else {
        ""
    };
    Ok(Begun {
        state: flow_state,
        cookie: format!(
            "{BINDING_COOKIE}={binding}; Path={cookie_path}; Max-Age={FLOW_TTL_SECONDS}; HttpOnly; SameSite=Lax{secure}"
        ),
    })
}

/// A 302 (no caching, no referrer), setting `cookie` if given.
pub fn redirect(location: &str, cookie: Option<&str>) -> Result<Response<Body>, ApiError> {
    let mut builder = Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .header("cache-control", "no-store")
        .header("referrer-policy", "no-referrer");
    if let Some(cookie) = cookie {
        builder = builder.header("set-cookie", cookie);
    }
    builder
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// The binding cookie's value from the request's `Cookie` headers.
fn binding_of(req: &Request) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BINDING_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A flow the browser came back with, used up.
pub struct Flow {
    item: Item,
    cookie_path: String,
}

impl Flow {
    /// One of the flow's attributes.
    pub fn field(&self, name: &str) -> Option<&str> {
        get_s(&self.item, name)
    }

    /// Sends the browser back to the app with `params` and the app's state, clearing the cookie.
    pub fn back(&self, params: &[(&str, &str)]) -> Result<Response<Body>, ApiError> {
        let mut url = url::Url::parse(self.field("redirect_uri").unwrap_or_default())
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("a kept redirect_uri: {e}")))?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in params {
                pairs.append_pair(k, v);
            }
            if let Some(app_state) = self.field("app_state") {
                pairs.append_pair("state", app_state);
            }
        }
        let clear = format!(
            "{BINDING_COOKIE}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax",
            self.cookie_path
        );
        redirect(url.as_str(), Some(&clear))
    }

    /// The provider's `error`, passed on as an OAuth error code (anything odd as
    /// `access_denied`), or `None` when the answer carries none.
    pub fn provider_error(req: &Request) -> Option<String> {
        crate::http::query_param(req, "error").map(|error| {
            if error.len() <= 64 && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                error
            } else {
                "access_denied".to_owned()
            }
        })
    }

    /// Keeps a one-time code for the app that carries `attributes` and the flow's redirect URI
    /// and challenge; the code.
    pub async fn leave_code(
        &self,
        state: &State,
        intent: &str,
        attributes: Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>,
    ) -> Result<String, ApiError> {
        let code = random_token()?;
        let mut item = vec![
            ("pk", s(keys::oauth_code(&code))),
            ("sk", s(keys::CODE)),
            ("intent", s(intent)),
            (
                "app_challenge",
                s(self.field("app_challenge").unwrap_or_default()),
            ),
            (
                "redirect_uri",
                s(self.field("redirect_uri").unwrap_or_default()),
            ),
            ("expires_at", n(Utc::now().timestamp() + CODE_TTL_SECONDS)),
        ];
        item.extend(attributes);
        state.db.put(item, "keeping the code").await?;
        Ok(code)
    }
}

/// Reads the flow the browser came back with. Refused with a 400 and nothing written: no
/// `state`, or one unknown, used or expired; a flow begun at another provider; another browser's;
/// or what `check` refuses. Then the flow is used up: whoever deletes it finishes it.
pub async fn returning(
    state: &State,
    req: &Request,
    provider: &str,
    cookie_path: &str,
    check: impl FnOnce() -> Result<(), ApiError>,
) -> Result<Flow, ApiError> {
    let flow_state = crate::http::query_param(req, "state")
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or_else(|| bad("invalid_state", "the answer carries no state"))?;
    let key = keys::oauth_flow(&flow_state);
    let unknown = || {
        bad(
            "invalid_state",
            "the sign-in is unknown, finished or expired; start again",
        )
    };
    let item = state.db.get(&key, keys::FLOW).await?.ok_or_else(unknown)?;
    if get_i64(&item, "expires_at").is_none_or(|at| at <= Utc::now().timestamp()) {
        return Err(unknown());
    }
    let began_at = get_s(&item, "provider").unwrap_or_default();
    if began_at != provider {
        return Err(bad(
            "provider_mismatch",
            format!("this sign-in began at {began_at}, not {provider}"),
        ));
    }
    let browser = binding_of(req).map(|c| hash(&c)).unwrap_or_default();
    if !same(&browser, get_s(&item, "browser").unwrap_or("-")) {
        return Err(bad(
            "browser_mismatch",
            "this sign-in began in another browser",
        ));
    }
    check()?;
    if state.db.take(&key, keys::FLOW).await?.is_none() {
        return Err(unknown());
    }
    Ok(Flow {
        item,
        cookie_path: cookie_path.to_owned(),
    })
}

/// Redeems a one-time code left for `intent`: used up whatever happens next; the app's PKCE
/// verifier and (where given) its redirect URI must be the flow's. The code's attributes.
pub async fn redeem(
    state: &State,
    code: &str,
    verifier: &str,
    redirect_uri: Option<&str>,
    intent: &str,
    wrong_intent: &'static str,
) -> Result<Item, ApiError> {
    let invalid = |detail: &'static str| ApiError::BadRequest {
        code: "invalid_grant",
        detail: detail.into(),
    };
    if code.is_empty() || code.len() > 128 {
        return Err(invalid("the code is unknown, used or expired"));
    }
    let item = state
        .db
        .take(&keys::oauth_code(code), keys::CODE)
        .await?
        .ok_or_else(|| invalid("the code is unknown, used or expired"))?;
    if get_i64(&item, "expires_at").is_none_or(|at| at <= Utc::now().timestamp()) {
        return Err(invalid("the code is unknown, used or expired"));
    }
    if !same(
        &s256(verifier),
        get_s(&item, "app_challenge").unwrap_or("-"),
    ) {
        return Err(invalid(
            "code_verifier does not match the sign-in's code_challenge",
        ));
    }
    if redirect_uri.is_some_and(|r| Some(r) != get_s(&item, "redirect_uri")) {
        return Err(invalid(
            "redirect_uri is not the one the sign-in began with",
        ));
    }
    if get_s(&item, "intent") != Some(intent) {
        return Err(invalid(wrong_intent));
    }
    Ok(item)
}
