//! The route table, shared by the Lambda binaries, the local gateway and the template test, and
//! the one dispatch that wraps every handler (request id, logging, problem+json).

use std::collections::HashMap;
use std::time::Instant;

use lambda_http::{Body, Request, Response, http::HeaderValue};
use tracing::Instrument as _;

use crate::auth::handlers as auth;
use crate::credits;
use crate::generation::{inbound, styles};
use crate::http::request_id;
use crate::jobs::handlers as jobs;
use crate::meta;
use crate::photos::handlers as photos;
use crate::state::State;
use crate::webhooks::endpoints;

/// Every route of the HTTP API, and API Gateway's `$default` catch-all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Health,
    OpenApi,
    Docs,
    Jwks,
    OpenIdConfiguration,
    Register,
    Login,
    Token,
    Refresh,
    Logout,
    Me,
    UpdateMe,
    CreateJob,
    ListJobs,
    GetJob,
    CancelJob,
    GetCredits,
    ListCreditTransactions,
    GrantCredits,
    CreateUpload,
    UpscalePhoto,
    BestCutPhotos,
    ListPhotos,
    GetPhoto,
    GetPhotoFile,
    DeletePhoto,
    FalWebhook,
    ReplicateWebhook,
    AiProgressWebhook,
    AiCompleteWebhook,
    AiFailedWebhook,
    CreateWebhookEndpoint,
    ListWebhookEndpoints,
    DeleteWebhookEndpoint,
    ListWebhookDeliveries,
    CreateStyle,
    ListStyles,
    GetStyle,
    NotFound,
}

/// How a route is exposed: method, path template, the function (and binary) that serves it,
/// and whether the JWT authorizer guards it.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub route: Route,
    pub method: &'static str,
    pub path: &'static str,
    pub function: &'static str,
    pub authorized: bool,
}

const fn spec(
    route: Route,
    method: &'static str,
    path: &'static str,
    function: &'static str,
    authorized: bool,
) -> RouteSpec {
    RouteSpec {
        route,
        method,
        path,
        function,
        authorized,
    }
}

/// The routes. `template.yaml` declares exactly these (a test proves it).
pub const ROUTES: &[RouteSpec] = &[
    spec(Route::Health, "GET", "/health", "health", false),
    spec(Route::OpenApi, "GET", "/openapi.json", "get-openapi", false),
    spec(Route::Docs, "GET", "/docs", "get-docs", false),
    spec(
        Route::Jwks,
        "GET",
        "/.well-known/jwks.json",
        "get-jwks",
        false,
    ),
    spec(
        Route::OpenIdConfiguration,
        "GET",
        "/.well-known/openid-configuration",
        "get-openid-configuration",
        false,
    ),
    spec(
        Route::Register,
        "POST",
        "/v1/auth/register",
        "register",
        false,
    ),
    spec(Route::Login, "POST", "/v1/auth/login", "login", false),
    spec(Route::Token, "POST", "/v1/auth/token", "issue-token", false),
    spec(
        Route::Refresh,
        "POST",
        "/v1/auth/refresh",
        "refresh-token",
        false,
    ),
    spec(Route::Logout, "POST", "/v1/auth/logout", "logout", false),
    spec(Route::Me, "GET", "/v1/auth/me", "get-me", true),
    spec(Route::UpdateMe, "PATCH", "/v1/users/me", "update-me", true),
    spec(Route::CreateJob, "POST", "/v1/jobs", "create-job", true),
    spec(Route::ListJobs, "GET", "/v1/jobs", "list-jobs", true),
    spec(Route::GetJob, "GET", "/v1/jobs/{id}", "get-job", true),
    spec(
        Route::CancelJob,
        "POST",
        "/v1/jobs/{id}/cancel",
        "cancel-job",
        true,
    ),
    spec(Route::GetCredits, "GET", "/v1/credits", "get-credits", true),
    spec(
        Route::ListCreditTransactions,
        "GET",
        "/v1/credits/transactions",
        "list-credit-transactions",
        true,
    ),
    spec(
        Route::GrantCredits,
        "POST",
        "/v1/admin/credits/grants",
        "grant-credits",
        true,
    ),
    spec(
        Route::CreateUpload,
        "POST",
        "/v1/uploads",
        "create-upload",
        true,
    ),
    spec(
        Route::UpscalePhoto,
        "POST",
        "/v1/photos/upscale",
        "upscale-photo",
        true,
    ),
    spec(
        Route::BestCutPhotos,
        "POST",
        "/v1/photos/bestcut",
        "best-cut-photos",
        true,
    ),
    spec(Route::ListPhotos, "GET", "/v1/photos", "list-photos", true),
    spec(Route::GetPhoto, "GET", "/v1/photos/{id}", "get-photo", true),
    spec(
        Route::GetPhotoFile,
        "GET",
        "/v1/photos/{id}/file",
        "get-photo-file",
        true,
    ),
    spec(
        Route::DeletePhoto,
        "DELETE",
        "/v1/photos/{id}",
        "delete-photo",
        true,
    ),
    spec(
        Route::FalWebhook,
        "POST",
        "/v1/webhooks/fal",
        "receive-fal-webhook",
        false,
    ),
    spec(
        Route::ReplicateWebhook,
        "POST",
        "/v1/webhooks/replicate",
        "receive-replicate-webhook",
        false,
    ),
    spec(
        Route::AiProgressWebhook,
        "PATCH",
        "/v1/webhooks/ai/{id}/progress",
        "receive-ai-progress",
        false,
    ),
    spec(
        Route::AiCompleteWebhook,
        "POST",
        "/v1/webhooks/ai/{id}/complete",
        "receive-ai-completion",
        false,
    ),
    spec(
        Route::AiFailedWebhook,
        "POST",
        "/v1/webhooks/ai/{id}/failed",
        "receive-ai-failure",
        false,
    ),
    spec(
        Route::CreateWebhookEndpoint,
        "POST",
        "/v1/webhook-endpoints",
        "create-webhook-endpoint",
        true,
    ),
    spec(
        Route::ListWebhookEndpoints,
        "GET",
        "/v1/webhook-endpoints",
        "list-webhook-endpoints",
        true,
    ),
    spec(
        Route::DeleteWebhookEndpoint,
        "DELETE",
        "/v1/webhook-endpoints/{id}",
        "delete-webhook-endpoint",
        true,
    ),
    spec(
        Route::ListWebhookDeliveries,
        "GET",
        "/v1/webhook-endpoints/{id}/deliveries",
        "list-webhook-deliveries",
        true,
    ),
    spec(
        Route::CreateStyle,
        "POST",
        "/v1/styles",
        "create-style",
        true,
    ),
    spec(Route::ListStyles, "GET", "/v1/styles", "list-styles", true),
    spec(Route::GetStyle, "GET", "/v1/styles/{id}", "get-style", true),
];

/// The `$default` route's function.
pub const NOT_FOUND: RouteSpec = spec(Route::NotFound, "ANY", "$default", "route-not-found", false);

/// The result of matching a request against [`ROUTES`].
#[derive(Debug)]
pub enum Match {
    Found(&'static RouteSpec, HashMap<String, String>),
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

/// Matches a method and path as API Gateway does: literal segments exactly, `{name}` segments bind
/// one non-empty segment.
pub fn match_route(method: &str, path: &str) -> Match {
    let mut allow = Vec::new();
    for spec in ROUTES {
        let Some(params) = match_path(spec.path, path) else {
            continue;
        };
        if spec.method == method {
            return Match::Found(spec, params);
        }
        allow.push(spec.method);
    }
    if allow.is_empty() {
        Match::NotFound
    } else {
        Match::MethodNotAllowed(allow)
    }
}

fn match_path(template: &str, path: &str) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {
                params.insert(w[1..w.len() - 1].to_owned(), g.to_owned());
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

impl Route {
    /// The spec of this route.
    pub fn spec(self) -> &'static RouteSpec {
        ROUTES
            .iter()
            .find(|s| s.route == self)
            .unwrap_or(&NOT_FOUND)
    }
}

/// Runs a route's handler: a span carrying the request id around everything it logs, errors mapped
/// to problem+json, and the request id echoed in `x-request-id`.
pub async fn handle(state: &State, route: Route, req: Request) -> Response<Body> {
    let request_id = request_id(&req);
    let span =
        tracing::info_span!("request", request_id = %request_id, function = route.spec().function);
    async move {
        let started = Instant::now();
        let method = req.method().clone();
        let result = match route {
            Route::Health => meta::health(state, req).await,
            Route::OpenApi => meta::openapi(state, req).await,
            Route::Docs => meta::docs(state, req).await,
            Route::Jwks => meta::jwks(state, req).await,
            Route::OpenIdConfiguration => meta::openid_configuration(state, req).await,
            Route::Register => auth::register(state, req).await,
            Route::Login => auth::login(state, req).await,
            Route::Token => auth::token(state, req).await,
            Route::Refresh => auth::refresh(state, req).await,
            Route::Logout => auth::logout(state, req).await,
            Route::Me => auth::me(state, req).await,
            Route::UpdateMe => auth::update_me(state, req).await,
            Route::CreateJob => jobs::create(state, req).await,
            Route::ListJobs => jobs::list(state, req).await,
            Route::GetJob => jobs::get(state, req).await,
            Route::CancelJob => jobs::cancel(state, req).await,
            Route::GetCredits => credits::balance(state, req).await,
            Route::ListCreditTransactions => credits::transactions(state, req).await,
            Route::GrantCredits => credits::grant(state, req).await,
            Route::CreateUpload => crate::uploads::create(state, req).await,
            Route::UpscalePhoto => photos::upscale(state, req).await,
            Route::BestCutPhotos => photos::best_cut(state, req).await,
            Route::ListPhotos => photos::list(state, req).await,
            Route::GetPhoto => photos::get(state, req).await,
            Route::GetPhotoFile => photos::file_redirect(state, req).await,
            Route::DeletePhoto => photos::delete(state, req).await,
            Route::FalWebhook => inbound::fal(state, req).await,
            Route::ReplicateWebhook => inbound::replicate(state, req).await,
            Route::AiProgressWebhook => inbound::ai_progress(state, req).await,
            Route::AiCompleteWebhook => inbound::ai_complete(state, req).await,
            Route::AiFailedWebhook => inbound::ai_failed(state, req).await,
            Route::CreateWebhookEndpoint => endpoints::create(state, req).await,
            Route::ListWebhookEndpoints => endpoints::list(state, req).await,
            Route::DeleteWebhookEndpoint => endpoints::delete(state, req).await,
            Route::ListWebhookDeliveries => endpoints::deliveries(state, req).await,
            Route::CreateStyle => styles::create(state, req).await,
            Route::ListStyles => styles::list(state, req).await,
            Route::GetStyle => styles::get(state, req).await,
            Route::NotFound => meta::not_found(state, req).await,
        };
        let mut response = result.unwrap_or_else(|err| err.into_response(&request_id));
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        tracing::info!(
            method = %method,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "handled"
        );
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_bind_parameters_and_methods_are_told_apart() {
        assert!(
            matches!(match_route("GET", "/v1/auth/me"), Match::Found(s, _) if s.route == Route::Me)
        );
        assert!(
            matches!(match_route("DELETE", "/v1/auth/me"), Match::MethodNotAllowed(a) if a == ["GET"])
        );
        assert!(matches!(match_route("GET", "/v1/nothing"), Match::NotFound));
        let params = match_path("/v1/jobs/{id}/cancel", "/v1/jobs/abc/cancel").expect("match");
        assert_eq!(params["id"], "abc");
        assert!(match_path("/v1/jobs/{id}", "/v1/jobs/").is_none());
    }

    #[test]
    fn function_names_are_unique() {
        let mut names: Vec<_> = ROUTES.iter().map(|s| s.function).collect();
        names.push(NOT_FOUND.function);
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
