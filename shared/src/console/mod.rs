//! `GET /console`: the web console, served by the API itself. Plain HTML, CSS and JavaScript
//! modules compiled into the executable (`console/*`): no build step, no CDN, nothing fetched
//! from anywhere but this API and the media bucket's presigned URLs it hands out. Its policy
//! (`Content-Security-Policy`) says so to the browser, which refuses every other host.
//!
//! Tokens live in the page's memory only: a reload signs out. The one thing it keeps in
//! `sessionStorage` is a browser sign-in's PKCE verifier, for the minutes between leaving for
//! the provider and coming back, removed on return.

use lambda_http::{Body, Request, Response, http::StatusCode};
use serde_json::json;

use crate::error::ApiError;
use crate::http::path_param;
use crate::state::State;

/// The console's files: name, content type, text.
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console.css"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("icon.svg")),
];

const PAGE: &str = include_str!("index.html");

/// The web console's page.
#[utoipa::path(get, path = "/console", tag = "console",
    params(("code" = Option<String>, Query, description = "a browser sign-in's code, when a provider sends the browser back"),
        ("state" = Option<String>, Query, description = "the console's own state, given back with the code")),
    responses((status = 200, description = "HTML", content_type = "text/html")))]
pub async fn get_console(state: &State, _req: Request) -> Result<Response<Body>, ApiError> {
    respond(
        state,
        "text/html; charset=utf-8",
        "no-cache",
        PAGE.to_owned(),
    )
    .await
}

/// One of the console's files (`console.js`, `console.css`, `icon.svg`), or `config.json`:
/// what this deployment offers the console (browser sign-in providers, upscaling models).
#[utoipa::path(get, path = "/console/{file}", tag = "console",
    params(("file" = String, Path, description = "`console.js`, `console.css`, `icon.svg` or `config.json`")),
    responses((status = 200, description = "the file"), (status = 404, body = crate::error::Problem)))]
pub async fn get_console_file(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let name = path_param(&req, "file").unwrap_or_default();
    if name == "config.json" {
        let config = json!({
            "oauth_providers": state
                .config
                .oidc
                .providers
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>(),
            "browser_sign_in": state.config.oidc.callback_base_url.is_some(),
            "upscale_models": crate::upscale::MODELS
                .iter()
                .map(|(name, scale)| json!({"name": name, "scale": scale}))
                .collect::<Vec<_>>(),
            "default_upscale_model": crate::upscale::DEFAULT_MODEL,
        });
        return respond(state, "application/json", "no-cache", config.to_string()).await;
    }
    let (_, content_type, text) = FILES
        .iter()
        .find(|(file, _, _)| *file == name)
        .ok_or(ApiError::NotFound("no such console file"))?;
    respond(
        state,
        content_type,
        "public, max-age=300",
        (*text).to_owned(),
    )
    .await
}

/// A console response, with the policy that keeps the page to this API and the media bucket.
async fn respond(
    state: &State,
    content_type: &str,
    cache: &str,
    text: String,
) -> Result<Response<Body>, ApiError> {
    let media = media_origin(state).await;
    let media = media.as_deref().unwrap_or("");
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data: {media}; \
         media-src 'self' blob: {media}; connect-src 'self' {media}; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .header("cache-control", cache)
        .header("content-security-policy", policy)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(Body::Text(text))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// The origin (`scheme://host[:port]`) of the media bucket's presigned URLs: where the console
/// PUTs uploads and reads photos from. Presigning is computed here, with no request to S3.
async fn media_origin(state: &State) -> Option<String> {
    let url = crate::media::presign_get(state, "console", std::time::Duration::from_secs(60))
        .await
        .ok()?;
    let url = url::Url::parse(&url).ok()?;
    Some(url.origin().ascii_serialization())
}
