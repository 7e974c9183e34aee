//! OpenID Connect sign-in with Google, Kakao and Naver, both ways apps use it.
//!
//! - **Native**: the platform SDK signed the user in and the app sends its ID token
//!   (`POST /v1/auth/oidc/{provider}`). The token is verified against the provider's JWKS: a
//!   pinned asymmetric algorithm, a `kid` the provider publishes, `iss` the provider's issuer,
//!   `aud` one of the configured client ids (Kakao's REST, native and JavaScript keys differ; so
//!   do Google's web and platform client ids), the times with a minute's skew, a lifetime of at
//!   most a day, and a `nonce` used once.
//! - **Web**: the authorization code flow with PKCE S256, `state` and `nonce`
//!   (`GET /v1/auth/oauth/{provider}/start` → the provider → `…/callback`). The flow is kept ten
//!   minutes in DynamoDB under the hash of its `state`, bound to the browser by an HttpOnly
//!   cookie, used once. The answer's issuer (RFC 9207's `iss` parameter where sent, and the ID
//!   token's `iss`) must be the provider the flow started with: a code from one provider
//!   presented at another's callback is refused (RFC 9700 §2.1's mix-up defence). The app gets a
//!   one-time code at its exactly allow-listed `redirect_uri`, never tokens in a URL, and redeems
//!   it with its own PKCE verifier at `/v1/auth/token` (sign-in) or `/v1/auth/identities` (link).
//!
//! Sources: `../shared/research/identity-social-facts.md` sections 2–4 (Google's OIDC reference,
//! Kakao's SDKs and docs, Naver's developer guide) and RFC 9700.

use chrono::{DateTime, Utc};
use jsonwebtoken::Algorithm;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::auth::id_tokens::{self, Format, Refusal, Source};
use crate::config::OidcProvider;
use crate::db::{get_s, n, s};
use crate::error::ApiError;
use crate::keys;
use crate::oauth::{self, same};
use crate::state::State;

/// The algorithms an OpenID Provider's ID token may be signed with here (never `none`, never a
/// symmetric one: the keys come from a document anyone can read).
pub const ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

/// The longest `sub` accepted (OpenID Connect Core §2: at most 255 ASCII characters).
pub const MAX_SUBJECT_CHARS: usize = 255;

/// Google's libraries refuse an ID token valid for more than a day; so does Lambent.
pub const MAX_LIFETIME_SECONDS: i64 = 86_400;

/// Who a verified ID token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// An email the provider says it verified (`email_verified`); anything else is left out.
    pub email: Option<String>,
    pub nonce: Option<String>,
    pub expires_at: i64,
}

/// `aud`: one string or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains_any(&self, accepted: &[String]) -> bool {
        match self {
            Self::One(aud) => accepted.contains(aud),
            Self::Many(auds) => auds.iter().any(|a| accepted.contains(a)),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// Google sends a boolean; some providers send `"true"`.
    #[serde(default, deserialize_with = "loose_bool")]
    email_verified: bool,
}

fn loose_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Bool(b) => b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// Verifies an ID token of `provider` for one of `audiences` at `now`. With `nonce`, the token
/// must carry exactly it; a token that carries a nonce needs the caller to know it.
pub fn verify(
    token: &str,
    keys: &id_tokens::Keys,
    provider: &OidcProvider,
    audiences: &[String],
    nonce: Option<&str>,
    now: i64,
) -> Result<Identity, Refusal> {
    let claims: Claims = id_tokens::decode(token, keys, ALGORITHMS)?;
    if !provider.issued(&claims.iss) {
        return Err(Refusal::Issuer);
    }
    if !claims.aud.contains_any(audiences) {
        return Err(Refusal::Audience);
    }
    // With several audiences, the party it was issued to must be one of ours (OIDC Core §3.1.3.7).
    if let (Audience::Many(_), Some(azp)) = (&claims.aud, &claims.azp)
        && !audiences.contains(azp)
    {
        return Err(Refusal::Audience);
    }
    id_tokens::check_times(claims.exp, claims.iat, None, now)?;
    if claims.exp - claims.iat > MAX_LIFETIME_SECONDS {
        return Err(Refusal::Lifetime);
    }
    let chars = claims.sub.chars().count();
    if chars == 0 || chars > MAX_SUBJECT_CHARS {
        return Err(Refusal::Subject);
    }
    match (nonce, claims.nonce.as_deref()) {
        (Some(expected), Some(got)) if same(expected, got) => {}
        (None, None) => {}
        _ => return Err(Refusal::Nonce),
    }
    Ok(Identity {
        subject: claims.sub,
        email: claims
            .email
            .filter(|e| claims.email_verified && e.len() <= crate::users::MAX_EMAIL_BYTES)
            .map(|e| e.to_lowercase()),
        nonce: claims.nonce,
        expires_at: claims.exp,
    })
}

/// The part of an OpenID Provider's configuration Lambent uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// The provider's configuration (`<issuer>/.well-known/openid-configuration`), whose `issuer`
/// must be the configured one (OpenID Connect Discovery §4.3).
pub async fn discovery(state: &State, provider: &OidcProvider) -> Result<Discovery, ApiError> {
    let url = format!("{}/.well-known/openid-configuration", provider.issuer);
    let document = id_tokens::document(state, &url).await.map_err(|err| {
        tracing::warn!(
            provider = provider.name,
            error = format!("{err:#}"),
            "reading the provider's configuration"
        );
        ApiError::Unavailable("the provider's configuration could not be read; try again")
    })?;
    let discovery = Discovery::deserialize(&*document).map_err(|err| {
        tracing::warn!(provider = provider.name, error = %err, "the provider's configuration is incomplete");
        ApiError::Unavailable("the provider's configuration could not be read; try again")
    })?;
    if discovery.issuer != provider.issuer {
        tracing::warn!(provider = provider.name, issuer = %discovery.issuer, "the provider's configuration names another issuer");
        return Err(ApiError::Unavailable(
            "the provider's configuration names another issuer",
        ));
    }
    Ok(discovery)
}

/// The configured provider a path names; 404 for any other.
pub fn provider<'a>(state: &'a State, req: &Request) -> Result<&'a OidcProvider, ApiError> {
    let name = crate::http::path_param(req, "provider").unwrap_or_default();
    state
        .config
        .oidc
        .provider(&name)
        .ok_or(ApiError::NotFound("no such sign-in provider is configured"))
}

/// Verifies `token` against the provider's keys, fetched again once when it names a key not held.
pub async fn verified(
    state: &State,
    provider: &OidcProvider,
    token: &str,
    audiences: &[String],
    nonce: Option<&str>,
    now: i64,
) -> Result<Identity, ApiError> {
    let discovery = discovery(state, provider).await?;
    let source = Source {
        url: &discovery.jwks_uri,
        format: Format::Jwks,
        floor: state.config.oidc.refetch_floor,
        issuer: provider.name,
    };
    let check = |keys: &id_tokens::Keys| verify(token, keys, provider, audiences, nonce, now);
    let mut result = check(&*id_tokens::keys(state, source, false).await?);
    if result == Err(Refusal::UnknownKey) {
        result = check(&*id_tokens::keys(state, source, true).await?);
    }
    result.map_err(Refusal::problem)
}

/// Marks a token's nonce used (kept until the token expires); a second use is refused.
pub async fn spend_nonce(
    state: &State,
    provider: &str,
    identity: &Identity,
) -> Result<(), ApiError> {
    let Some(nonce) = &identity.nonce else {
        return Ok(());
    };
    // Once: a PutItem answered late would be sent again, meet itself, and refuse this sign-in.
    let spend = crate::db::put_new(
        &state.db,
        vec![
            ("pk", s(keys::used_nonce(provider, nonce))),
            ("sk", s(keys::UNIQUE)),
            (
                "expires_at",
                n(identity.expires_at + id_tokens::SKEW_SECONDS),
            ),
        ],
    )?;
    if crate::db::once(&state.db, spend).await? {
        Ok(())
    } else {
        Err(Refusal::Nonce.problem())
    }
}

fn callback_url(state: &State, provider: &OidcProvider) -> Result<String, ApiError> {
    oauth::callback_url(state, &format!("/v1/auth/oauth/{}/callback", provider.name))
}

/// What the app asks for in a browser sign-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Sign in (or up): the code is redeemed at `/v1/auth/token`.
    SignIn,
    /// Link to the signed-in account: the code is redeemed at `POST /v1/auth/identities/{provider}`.
    Link,
}

impl Intent {
    fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::Link => "link",
        }
    }
}

/// Starts a browser sign-in: checks the app's `redirect_uri` against the allow-list (exact
/// strings; no redirect anywhere else), keeps the flow ten minutes, binds it to this browser
/// with a cookie and sends the browser to the provider.
#[utoipa::path(get, path = "/v1/auth/oauth/{provider}/start", tag = "auth",
    params(("provider" = String, Path, description = "`google`, `kakao` or `naver`"),
        ("redirect_uri" = String, Query, description = "where the app wants the browser back: one of the configured `OAUTH_REDIRECT_URIS`, exactly"),
        ("code_challenge" = String, Query, description = "the app's PKCE challenge, `BASE64URL(SHA256(code_verifier))`; the verifier redeems the code"),
        ("code_challenge_method" = Option<String>, Query, description = "`S256` (the only one accepted)"),
        ("state" = Option<String>, Query, description = "the app's own state, given back at its redirect_uri (at most 512 characters)"),
        ("intent" = Option<String>, Query, description = "`sign_in` (default) or `link` (the code links the identity to a signed-in account)"),
        ("login_hint" = Option<String>, Query, description = "passed to the provider")),
    responses((status = 302, description = "to the provider's authorization endpoint; sets the flow's browser cookie"),
        (status = 400, description = "redirect_uri_not_allowed or invalid_request", body = crate::error::Problem),
        (status = 404, description = "no such provider is configured", body = crate::error::Problem),
        (status = 429, body = crate::error::Problem), (status = 503, body = crate::error::Problem)))]
pub async fn start_oauth(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let provider = provider(state, &req)?;
    let app = oauth::app_request(state, &req)?;
    let query = |name| crate::http::query_param(&req, name);
    let intent = match query("intent").as_deref() {
        None | Some("sign_in") => Intent::SignIn,
        Some("link") => Intent::Link,
        Some(_) => {
            return Err(oauth::bad(
                "invalid_request",
                "intent must be sign_in or link",
            ));
        }
    };
    let login_hint = query("login_hint").filter(|h| h.len() <= 256);
    let callback = callback_url(state, provider)?;
    crate::auth::identities::limit_sign_ins(state, &req).await?;
    let discovery = discovery(state, provider).await?;
    let nonce = oauth::random_token()?;
    let verifier = oauth::random_token()?;
    let begun = oauth::begin(
        state,
        &app,
        provider.name,
        vec![
            ("intent", s(intent.as_str())),
            ("nonce", s(&nonce)),
            ("verifier", s(&verifier)),
        ],
        COOKIE_PATH,
    )
    .await?;
    let mut location = url::Url::parse(&discovery.authorization_endpoint)
        .map_err(|_| ApiError::Unavailable("the provider's authorization endpoint is not a URL"))?;
    {
        let mut pairs = location.query_pairs_mut();
        pairs
            .append_pair("response_type", "code")
            .append_pair("client_id", provider.web_client_id())
            .append_pair("redirect_uri", &callback)
            .append_pair("scope", provider.scopes)
            .append_pair("state", &begun.state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &oauth::s256(&verifier))
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = &login_hint {
            pairs.append_pair("login_hint", hint);
        }
    }
    oauth::redirect(location.as_str(), Some(&begun.cookie))
}

/// Where the flows' binding cookie is sent: the callbacks.
const COOKIE_PATH: &str = "/v1/auth/oauth/";

/// The provider sends the browser back here. Refused with a 400 and nothing written: a `state`
/// unknown, used or expired, from another browser, or begun at another provider; an `iss` that is
/// not this provider's. Otherwise the flow is used up, the code exchanged with the PKCE verifier,
/// the ID token verified (issuer, audience, nonce), and the browser sent to the app's
/// `redirect_uri` with a one-time `code` (or an `error`) and the app's `state`.
#[utoipa::path(get, path = "/v1/auth/oauth/{provider}/callback", tag = "auth",
    params(("provider" = String, Path, description = "the provider the flow started with"),
        ("state" = String, Query), ("code" = Option<String>, Query), ("error" = Option<String>, Query),
        ("iss" = Option<String>, Query, description = "RFC 9207: the issuer of the answer")),
    responses((status = 302, description = "to the app's redirect_uri with `code` and `state`, or `error`"),
        (status = 400, description = "invalid_state, browser_mismatch, provider_mismatch or issuer_mismatch", body = crate::error::Problem),
        (status = 404, description = "no such provider is configured", body = crate::error::Problem)))]
pub async fn oauth_callback(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let provider = provider(state, &req)?;
    let flow =
        oauth::returning(
            state,
            &req,
            provider.name,
            COOKIE_PATH,
            || match crate::http::query_param(&req, "iss") {
                Some(iss) if !provider.issued(&iss) => Err(oauth::bad(
                    "issuer_mismatch",
                    "the answer comes from another issuer than the one this sign-in began at",
                )),
                _ => Ok(()),
            },
        )
        .await?;
    if let Some(error) = oauth::Flow::provider_error(&req) {
        return flow.back(&[("error", &error)]);
    }
    let Some(code) =
        crate::http::query_param(&req, "code").filter(|c| !c.is_empty() && c.len() <= 2048)
    else {
        return flow.back(&[("error", "invalid_request")]);
    };
    let intent = flow.field("intent").unwrap_or_default().to_owned();
    match finish(state, provider, &flow, &code, Utc::now()).await {
        Ok((identity, token)) => {
            let mut attributes = vec![
                ("provider", s(provider.name)),
                ("subject", s(&identity.subject)),
            ];
            if let Some(email) = &identity.email {
                attributes.push(("email", s(email)));
            }
            if let Some(token) = token {
                attributes
                    .extend(seal_token(state, provider.name, &identity.subject, &token).await?);
            }
            let lambent_code = flow.leave_code(state, &intent, attributes).await?;
            tracing::info!(provider = provider.name, intent = %intent, "browser sign-in finished");
            flow.back(&[("code", &lambent_code)])
        }
        Err(error) => {
            tracing::warn!(provider = provider.name, error = %error.log, "browser sign-in failed");
            flow.back(&[("error", error.code)])
        }
    }
}

/// A token the provider's token endpoint answered.
pub struct ProviderToken {
    /// `refresh_token` or `access_token` (RFC 7009's `token_type_hint`).
    pub kind: &'static str,
    pub token: String,
}

/// Where an identity's provider token is kept: on the account's copy of the identity.
pub const PROVIDER_TOKEN: crate::sealed::Names = crate::sealed::Names {
    ciphertext: "provider_token",
    key: "provider_token_key",
    nonce: "provider_token_nonce",
};

/// The KMS encryption context of an identity's provider token.
fn token_context(identity: &str) -> [(&'static str, &str); 2] {
    [("purpose", "provider-token"), ("identity", identity)]
}

/// The attributes that keep a provider's token sealed (none where no KMS key is configured: then
/// the link is left to the user to end at the provider).
async fn seal_token(
    state: &State,
    provider: &str,
    subject: &str,
    token: &ProviderToken,
) -> Result<Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>, ApiError> {
    if state.config.tokens_key_id.is_none() {
        return Ok(Vec::new());
    }
    let identity = format!("{provider}#{subject}");
    let sealed = crate::sealed::seal(state, &token_context(&identity), &token.token).await?;
    let mut attributes = sealed.attributes(PROVIDER_TOKEN);
    attributes.push(("provider_token_kind", s(token.kind)));
    Ok(attributes)
}

/// The sealed provider token attributes of an item (a code, an identity's copy).
pub fn token_attributes(
    item: &crate::db::Item,
) -> Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)> {
    let Some(sealed) = crate::sealed::Sealed::from_item(item, PROVIDER_TOKEN) else {
        return Vec::new();
    };
    let mut attributes = sealed.attributes(PROVIDER_TOKEN);
    if let Some(kind) = get_s(item, "provider_token_kind") {
        attributes.push(("provider_token_kind", s(kind)));
    }
    attributes
}

/// Revokes the app's access at the provider with the token an identity's copy keeps (RFC 7009:
/// Google's `revocation_endpoint`, Naver's `oauth2.0/revoke` with the client's credentials). A
/// copy without a token (a native sign-in: the SDK holds the tokens) has nothing to revoke; a
/// token the provider no longer knows is revoked already.
pub async fn revoke(state: &State, copy: &crate::db::Item) -> anyhow::Result<()> {
    let (Some(provider_name), Some(subject), Some(sealed)) = (
        get_s(copy, "provider"),
        get_s(copy, "subject"),
        crate::sealed::Sealed::from_item(copy, PROVIDER_TOKEN),
    ) else {
        return Ok(());
    };
    let Some(provider) = state.config.oidc.provider(provider_name) else {
        return Ok(());
    };
    let identity = format!("{provider_name}#{subject}");
    let token = crate::sealed::unseal(state, &token_context(&identity), &sealed).await?;
    let discovery = discovery(state, provider)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let endpoint = match (&discovery.revocation_endpoint, provider.name) {
        (Some(endpoint), _) => endpoint.clone(),
        (None, "naver") => format!("{}/oauth2.0/revoke", provider.issuer),
        (None, _) => return Ok(()),
    };
    let mut form = vec![
        ("token", token),
        (
            "token_type_hint",
            get_s(copy, "provider_token_kind")
                .unwrap_or("refresh_token")
                .to_owned(),
        ),
    ];
    if provider.name == "naver" {
        form.push(("client_id", provider.web_client_id().to_owned()));
        if let Some(secret) = oauth::client_secret(state, provider.name).await? {
            form.push(("client_secret", secret));
        }
    }
    let response = state
        .http
        .api
        .post(&endpoint)
        .form(&form)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("revoking at {}: {}", provider.name, e.without_url()))?;
    let status = response.status();
    let body = crate::http::read_limited(response, 16 * 1024).await?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
    if status.is_success()
        || answer["error"] == "invalid_token"
        || answer["error"] == "invalid_grant"
    {
        tracing::info!(provider = provider.name, "revoked the app's access");
        return Ok(());
    }
    anyhow::bail!("{}'s revocation answered {status}", provider.name)
}

/// Why a flow failed after it was used up: the code the app sees, and what the log says.
struct Failure {
    code: &'static str,
    log: String,
}

/// Exchanges the provider's code (with the flow's PKCE verifier and the client secret) and
/// verifies the ID token it answers with: this provider's issuer, the web client's audience, the
/// flow's nonce. Naver's email comes from its profile API when the ID token names none.
async fn finish(
    state: &State,
    provider: &OidcProvider,
    flow: &oauth::Flow,
    code: &str,
    now: DateTime<Utc>,
) -> Result<(Identity, Option<ProviderToken>), Failure> {
    let failure = |code: &'static str| move |log: String| Failure { code, log };
    let discovery = discovery(state, provider)
        .await
        .map_err(|e| failure("temporarily_unavailable")(e.to_string()))?;
    let callback =
        callback_url(state, provider).map_err(|e| failure("server_error")(e.to_string()))?;
    let secret = oauth::client_secret(state, provider.name)
        .await
        .map_err(|e| failure("server_error")(format!("{e:#}")))?;
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_owned()),
        ("redirect_uri", callback),
        ("client_id", provider.web_client_id().to_owned()),
        (
            "code_verifier",
            flow.field("verifier").unwrap_or_default().to_owned(),
        ),
    ];
    if let Some(secret) = secret {
        form.push(("client_secret", secret));
    }
    let response = state
        .http
        .api
        .post(&discovery.token_endpoint)
        .form(&form)
        .send()
        .await
        .map_err(|e| failure("temporarily_unavailable")(e.without_url().to_string()))?;
    let status = response.status();
    let body = crate::http::read_limited(response, 64 * 1024)
        .await
        .map_err(|e| failure("temporarily_unavailable")(e.to_string()))?;
    if !status.is_success() {
        return Err(failure("access_denied")(format!(
            "the token endpoint answered {status}"
        )));
    }
    let answer: Value = serde_json::from_slice(&body)
        .map_err(|e| failure("server_error")(format!("the token answer is not JSON: {e}")))?;
    let id_token = answer["id_token"]
        .as_str()
        .ok_or_else(|| failure("server_error")("the token answer has no id_token".into()))?;
    let audiences = [provider.web_client_id().to_owned()];
    let mut identity = verified(
        state,
        provider,
        id_token,
        &audiences,
        flow.field("nonce").or(Some("-")),
        now.timestamp(),
    )
    .await
    .map_err(|e| failure("invalid_id_token")(e.to_string()))?;
    if identity.email.is_none()
        && let (Some(url), Some(access)) = (&provider.profile_url, answer["access_token"].as_str())
    {
        identity.email = profile_email(state, url, access).await;
    }
    // Kept (sealed) to revoke the app's access when the account is deleted: the refresh token
    // where the provider gives one (revoking it revokes its access tokens), else the access token.
    let token = ["refresh_token", "access_token"].iter().find_map(|kind| {
        answer[*kind]
            .as_str()
            .filter(|t| !t.is_empty() && t.len() <= 4096)
            .map(|t| ProviderToken {
                kind,
                token: t.to_owned(),
            })
    });
    Ok((identity, token))
}

/// Naver's classic profile API (`{resultcode: "00", response: {id, email, …}}`): the email the
/// account holds, when the user agreed to share it.
async fn profile_email(state: &State, url: &str, access_token: &str) -> Option<String> {
    let response = state
        .http
        .api
        .get(url)
        .bearer_auth(access_token)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = crate::http::read_limited(response, 64 * 1024).await.ok()?;
    let profile: Value = serde_json::from_slice(&body).ok()?;
    if profile["resultcode"] != "00" {
        return None;
    }
    profile["response"]["email"]
        .as_str()
        .filter(|e| e.len() <= crate::users::MAX_EMAIL_BYTES && e.contains('@'))
        .map(str::to_lowercase)
}

/// A browser sign-in's result, as the app redeems it.
pub struct Redeemed {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    /// The provider's token, sealed, for the identity's copy.
    pub token: Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>,
}

/// Redeems a browser sign-in's one-time code for `intent` (see [`oauth::redeem`]); with
/// `provider`, the code must be that provider's.
pub async fn redeem(
    state: &State,
    code: &str,
    verifier: &str,
    redirect_uri: Option<&str>,
    intent: Intent,
    provider: Option<&str>,
) -> Result<Redeemed, ApiError> {
    let wrong = match intent {
        Intent::SignIn => "this code links an identity; redeem it at /v1/auth/identities",
        Intent::Link => "this code signs in; redeem it at /v1/auth/token",
    };
    let item = oauth::redeem(state, code, verifier, redirect_uri, intent.as_str(), wrong).await?;
    let found = get_s(&item, "provider").unwrap_or_default();
    if provider.is_some_and(|p| p != found) {
        return Err(ApiError::BadRequest {
            code: "invalid_grant",
            detail: "this code is another provider's".into(),
        });
    }
    Ok(Redeemed {
        provider: found.to_owned(),
        subject: get_s(&item, "subject").unwrap_or_default().to_owned(),
        email: get_s(&item, "email").map(str::to_owned),
        token: token_attributes(&item),
    })
}

/// `POST /v1/auth/oidc/{provider}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NativeSignIn {
    /// The ID token the platform SDK holds (Google Sign-In's `idToken`, Kakao SDK's `idToken`).
    #[schema(value_type = String, max_length = 8192)]
    pub id_token: secrecy::SecretString,
    /// The nonce the app gave the SDK; required when the token carries one, and used once.
    #[schema(max_length = 256)]
    pub nonce: Option<String>,
}

/// Verifies a native SDK's ID token for `provider` (any configured audience) and spends its nonce.
pub async fn verify_native(
    state: &State,
    provider: &OidcProvider,
    body: &NativeSignIn,
    now: i64,
) -> Result<Identity, ApiError> {
    use secrecy::ExposeSecret as _;
    if body.nonce.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(ApiError::invalid("nonce", "must be at most 256 characters"));
    }
    let identity = verified(
        state,
        provider,
        body.id_token.expose_secret(),
        &provider.client_ids,
        body.nonce.as_deref(),
        now,
    )
    .await?;
    spend_nonce(state, provider.name, &identity).await?;
    Ok(identity)
}

/// Exchanges a provider SDK's ID token for Lambent's tokens: the account is the provider
/// subject's, made on its first sign-in (201), the same one after (200). An email the provider
/// vouches for is recorded on a new account, never used to find or merge one.
#[utoipa::path(post, path = "/v1/auth/oidc/{provider}", tag = "auth", request_body = NativeSignIn,
    params(("provider" = String, Path, description = "`google`, `kakao` or `naver`")),
    responses((status = 200, description = "signed in to the identity's account", body = crate::auth::sessions::TokenResponse),
        (status = 201, description = "a new account was made for the identity", body = crate::auth::sessions::TokenResponse),
        (status = 401, description = "invalid_id_token", body = crate::error::Problem),
        (status = 404, description = "no such provider is configured", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem),
        (status = 503, body = crate::error::Problem)))]
pub async fn sign_in_with_oidc(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let provider = provider(state, &req)?;
    let body: NativeSignIn = crate::http::json_body(&req, &["application/json"])?;
    let now = Utc::now();
    crate::auth::identities::limit_sign_ins(state, &req).await?;
    let identity = verify_native(state, provider, &body, now.timestamp()).await?;
    crate::auth::identities::sign_in(state, provider.name, &identity.subject, identity.email, now)
        .await
}
