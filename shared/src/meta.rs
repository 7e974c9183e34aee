//! Public documents: health, the OpenAPI description and its page, and the OpenID discovery
//! documents API Gateway's JWT authorizer reads.

use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::http::{document, json};
use crate::routes::{Match, match_route};
use crate::state::State;

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// The deployed version.
    pub version: &'static str,
}

/// Liveness: answers without touching any dependency.
#[utoipa::path(get, path = "/health", tag = "meta", responses((status = 200, body = Health)))]
pub async fn health(_state: &State, _req: Request) -> Result<Response<Body>, ApiError> {
    json(
        StatusCode::OK,
        &Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

/// The OpenAPI 3.1 document, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn get_openapi(_state: &State, _req: Request) -> Result<Response<Body>, ApiError> {
    let text = crate::openapi::document()
        .to_json()
        .map_err(|e| ApiError::Internal(e.into()))?;
    document("application/json", 300, text)
}

/// A page that renders the OpenAPI document.
#[utoipa::path(get, path = "/docs", tag = "meta", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub async fn get_docs(_state: &State, _req: Request) -> Result<Response<Body>, ApiError> {
    document("text/html; charset=utf-8", 300, DOCS_PAGE.to_owned())
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Lambent API</title>
</head>
<body>
  <script id="api-reference" data-url="openapi.json"></script>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1"></script>
  <noscript>The API description is at <a href="openapi.json">openapi.json</a>.</noscript>
</body>
</html>
"#;

/// The public signing keys.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "meta", responses((status = 200, description = "JWK set")))]
pub async fn get_jwks(state: &State, _req: Request) -> Result<Response<Body>, ApiError> {
    let keys = state
        .keys_fresher_than(Some(std::time::Duration::from_secs(600)))
        .await?;
    let text = serde_json::to_string(keys.jwks()).map_err(|e| ApiError::Internal(e.into()))?;
    // API Gateway caches keys for up to 2 hours; an hour here keeps rotation predictable.
    document("application/json", 3600, text)
}

/// OpenID Connect discovery, as API Gateway's JWT authorizer fetches it. Every URL comes from the
/// configured issuer (`JWT_ISSUER`: the identity API in AWS, the gateway locally), never from the
/// request: the document is cached for an hour, and a client's `Host` must not write it.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "meta", responses((status = 200, description = "discovery document")))]
pub async fn get_openid_configuration(
    state: &State,
    _req: Request,
) -> Result<Response<Body>, ApiError> {
    let issuer = state.config.issuer()?;
    let text = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/v1/auth/token"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["none"],
    })
    .to_string();
    document("application/json", 3600, text)
}

/// API Gateway's `$default` route: every request no other route matched. 405 with `Allow` when the
/// path exists under another method, 404 otherwise.
pub async fn route_not_found(_state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    match match_route(req.method().as_str(), req.uri().path()) {
        Match::MethodNotAllowed(allow) => Err(ApiError::MethodNotAllowed { allow }),
        _ => Err(ApiError::NotFound("no route matches this path")),
    }
}
