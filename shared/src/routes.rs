//! The route table, shared by the Lambda entry, the local gateway, the OpenAPI document and the
//! template test, and the one dispatch that wraps every handler (request id, logging, problem+json).
//!
//! A route is declared once, here, by its handler: the method and path come from the handler's
//! `#[utoipa::path]` annotation, the function's name from the handler's name
//! (`receive_fal_webhook` is served by the function `receive-fal-webhook`), and its entry says
//! whether the JWT authorizer guards it.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Instant;

use futures::future::BoxFuture;
use lambda_http::{Body, Request, Response, http::HeaderValue};
use tracing::Instrument as _;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::{RefOr, schema::Schema};

use crate::auth::account;
use crate::auth::deletion;
use crate::auth::firebase;
use crate::auth::handlers as auth;
use crate::auth::identities;
use crate::auth::oidc;
use crate::commerce::{admin, artists, daily, orders, stripe, toss};
use crate::console;
use crate::conversations::{documents, folders, images, messages, sessions};
use crate::credits;
use crate::error::ApiError;
use crate::generation::{inbound, marketplace, styles};
use crate::http::request_id;
use crate::jobs::handlers as jobs;
use crate::meta;
use crate::personas;
use crate::personas::instagram;
use crate::photos::handlers as photos;
use crate::social::{
    blocks, comments, feeds, follows, moderation, notifications, posts, profiles, rankings,
    reactions, remixes, search,
};
use crate::state::State;
use crate::uploads;
use crate::videos::handlers as videos;
use crate::webhooks::endpoints;

/// What every handler returns.
pub type HandlerFuture<'a> = BoxFuture<'a, Result<Response<Body>, ApiError>>;

/// A handler: `(&State, Request)` to a response or an [`ApiError`].
pub type Handler = for<'a> fn(&'a State, Request) -> HandlerFuture<'a>;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (sign-in, documents, signed webhooks that carry their own proof).
    Public,
    /// A valid access token, checked by API Gateway's JWT authorizer.
    Bearer,
}

/// A handler's OpenAPI annotation, as `#[utoipa::path]` generates it.
#[derive(Clone, Copy)]
pub struct Doc {
    path: fn() -> String,
    methods: fn() -> Vec<HttpMethod>,
    operation: fn() -> Operation,
    schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
}

/// A route: method, path template, the function that serves it, its authorization and handler.
#[derive(Clone, Copy)]
pub struct Route {
    /// The Lambda function (and `Handler:` in template.yaml): the handler's name in kebab case.
    pub function: &'static str,
    /// The handler's name, also the OpenAPI operation id.
    pub handler_name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    /// Whether the JWT authorizer guards it.
    pub authorized: bool,
    pub handler: Handler,
    doc: Option<Doc>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.method, self.path, self.function)
    }
}

impl Route {
    fn new(handler_name: &'static str, access: Access, handler: Handler, doc: Doc) -> Self {
        let methods = (doc.methods)();
        let method = match methods.as_slice() {
            [method] => method_name(method),
            _ => panic!("{handler_name}: a route has exactly one method"),
        };
        Self {
            function: leak(handler_name.replace('_', "-")),
            handler_name,
            method,
            path: leak((doc.path)()),
            authorized: access == Access::Bearer,
            handler,
            doc: Some(doc),
        }
    }

    /// The handler's OpenAPI operation, with the security the table gives it.
    pub fn operation(&self) -> Option<Operation> {
        let doc = self.doc?;
        let mut operation = (doc.operation)();
        operation.operation_id = Some(self.handler_name.to_owned());
        operation.security = self.authorized.then(|| {
            vec![utoipa::openapi::security::SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]
        });
        Some(operation)
    }

    /// The schemas the handler's annotation refers to.
    pub fn schemas(&self, into: &mut Vec<(String, RefOr<Schema>)>) {
        if let Some(doc) = self.doc {
            (doc.schemas)(into);
        }
    }

    /// The HTTP method as utoipa names it.
    pub fn http_method(&self) -> Option<HttpMethod> {
        Some((self.doc?.methods)().remove(0))
    }
}

// The table is built once per process; its 40-odd names live as long as the process.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}

/// One table entry from a handler: `route!(Bearer, jobs::get_job)`.
macro_rules! route {
    ($access:ident, $module:ident :: $handler:ident) => {{
        fn call<'a>(state: &'a State, req: Request) -> HandlerFuture<'a> {
            Box::pin($module::$handler(state, req))
        }
        pastey::paste! {
            Route::new(stringify!($handler), Access::$access, call, Doc {
                path: <$module::[<__path_ $handler>] as utoipa::Path>::path,
                methods: <$module::[<__path_ $handler>] as utoipa::Path>::methods,
                operation: <$module::[<__path_ $handler>] as utoipa::Path>::operation,
                schemas: <$module::[<__path_ $handler>] as utoipa::__dev::SchemaReferences>::schemas,
            })
        }
    }};
}

/// The routes. `template.yaml` declares exactly these (a test proves it).
pub static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    vec![
        route!(Public, meta::health),
        route!(Public, meta::get_openapi),
        route!(Public, meta::get_docs),
        route!(Public, meta::get_jwks),
        route!(Public, meta::get_openid_configuration),
        route!(Public, console::get_console),
        route!(Public, console::get_console_file),
        route!(Public, auth::register),
        route!(Public, auth::login),
        route!(Public, firebase::sign_in_with_firebase),
        route!(Public, oidc::sign_in_with_oidc),
        route!(Public, oidc::start_oauth),
        route!(Public, oidc::oauth_callback),
        route!(Bearer, identities::list_identities),
        route!(Bearer, identities::link_identity),
        route!(Bearer, identities::unlink_identity),
        route!(Bearer, account::request_email_verification),
        route!(Public, account::verify_email),
        route!(Public, account::forgot_password),
        route!(Public, account::reset_password),
        route!(Bearer, account::change_password),
        route!(Public, auth::issue_token),
        route!(Public, auth::refresh_token),
        route!(Public, auth::logout),
        route!(Bearer, auth::get_me),
        route!(Bearer, auth::update_me),
        route!(Bearer, deletion::delete_me),
        route!(Public, profiles::get_user_profile),
        route!(Bearer, follows::follow_user),
        route!(Bearer, follows::unfollow_user),
        route!(Bearer, follows::get_relationship),
        route!(Public, follows::list_followers),
        route!(Public, follows::list_following),
        route!(Bearer, blocks::block_user),
        route!(Bearer, blocks::unblock_user),
        route!(Bearer, blocks::list_blocks),
        route!(Bearer, posts::create_post),
        route!(Bearer, posts::get_post),
        route!(Public, posts::get_public_post),
        route!(Bearer, posts::update_post),
        route!(Bearer, posts::delete_post),
        route!(Public, posts::list_user_posts),
        route!(Bearer, posts::list_my_posts),
        route!(Bearer, reactions::like_post),
        route!(Bearer, reactions::unlike_post),
        route!(Bearer, reactions::list_likes),
        route!(Bearer, reactions::share_post),
        route!(Bearer, reactions::bookmark_post),
        route!(Bearer, reactions::unbookmark_post),
        route!(Bearer, reactions::list_bookmarks),
        route!(Bearer, remixes::list_remixes),
        route!(Bearer, remixes::get_remix_chain),
        route!(Bearer, feeds::get_following_feed),
        route!(Public, feeds::list_hashtag_posts),
        route!(Bearer, search::search_posts),
        route!(Bearer, search::search_users),
        route!(Bearer, search::search_styles),
        route!(Public, rankings::get_trending_tags),
        route!(Bearer, rankings::get_for_you_feed),
        route!(Bearer, moderation::create_report),
        route!(Bearer, moderation::list_reports),
        route!(Bearer, moderation::get_report),
        route!(Bearer, moderation::resolve_report),
        route!(Bearer, notifications::list_notifications),
        route!(Bearer, notifications::get_unread_count),
        route!(Bearer, notifications::read_notification),
        route!(Bearer, notifications::read_all_notifications),
        route!(Bearer, comments::create_comment),
        route!(Bearer, comments::list_comments),
        route!(Public, comments::list_public_comments),
        route!(Bearer, comments::update_comment),
        route!(Bearer, comments::delete_comment),
        route!(Bearer, jobs::create_job),
        route!(Bearer, jobs::list_jobs),
        route!(Bearer, jobs::get_job),
        route!(Bearer, jobs::cancel_job),
        route!(Bearer, credits::get_credits),
        route!(Bearer, credits::list_credit_transactions),
        route!(Bearer, credits::grant_credits),
        route!(Bearer, daily::get_daily_reward),
        route!(Bearer, daily::claim_daily_reward),
        route!(Public, orders::list_credit_packages),
        route!(Bearer, orders::create_credit_order),
        route!(Bearer, orders::list_credit_orders),
        route!(Bearer, orders::get_credit_order),
        route!(Bearer, toss::confirm_credit_order),
        route!(Public, toss::receive_toss_webhook),
        route!(Public, stripe::receive_stripe_webhook),
        route!(Bearer, artists::become_artist),
        route!(Bearer, artists::get_artist),
        route!(Bearer, artists::request_payout),
        route!(Bearer, artists::get_payout),
        route!(Bearer, artists::list_payouts),
        route!(Bearer, artists::resolve_payout),
        route!(Bearer, admin::list_users),
        route!(Bearer, admin::list_orders),
        route!(Bearer, admin::refund_order),
        route!(Bearer, folders::create_folder),
        route!(Bearer, folders::list_folders),
        route!(Bearer, folders::rename_folder),
        route!(Bearer, folders::delete_folder),
        route!(Bearer, sessions::create_session),
        route!(Bearer, sessions::list_sessions),
        route!(Bearer, sessions::get_session),
        route!(Bearer, sessions::update_session),
        route!(Bearer, sessions::delete_session),
        route!(Bearer, sessions::bulk_delete_sessions),
        route!(Bearer, messages::list_messages),
        route!(Bearer, messages::post_message),
        route!(Bearer, messages::get_message),
        route!(Bearer, messages::regenerate_reply),
        route!(Bearer, documents::create_document),
        route!(Bearer, documents::complete_document),
        route!(Bearer, documents::list_documents),
        route!(Bearer, documents::get_document),
        route!(Bearer, documents::delete_document),
        route!(Bearer, images::ask_image),
        route!(Bearer, images::list_images),
        route!(Bearer, uploads::create_upload),
        route!(Bearer, photos::upscale_photo),
        route!(Bearer, photos::best_cut_photos),
        route!(Bearer, photos::list_photos),
        route!(Bearer, photos::get_photo),
        route!(Bearer, photos::get_photo_file),
        route!(Bearer, photos::delete_photo),
        route!(Bearer, videos::create_video),
        route!(Bearer, videos::list_videos),
        route!(Bearer, videos::get_video),
        route!(Bearer, videos::get_video_timeline),
        route!(Bearer, videos::delete_video),
        route!(Public, inbound::receive_fal_webhook),
        route!(Public, inbound::receive_replicate_webhook),
        route!(Public, inbound::receive_ai_progress),
        route!(Public, inbound::receive_ai_completion),
        route!(Public, inbound::receive_ai_failure),
        route!(Public, deletion::receive_kakao_unlink),
        route!(Public, instagram::receive_meta_data_deletion),
        route!(Bearer, endpoints::create_webhook_endpoint),
        route!(Bearer, endpoints::list_webhook_endpoints),
        route!(Bearer, endpoints::delete_webhook_endpoint),
        route!(Bearer, endpoints::list_webhook_deliveries),
        route!(Bearer, personas::create_persona),
        route!(Bearer, personas::list_personas),
        route!(Bearer, personas::get_persona),
        route!(Bearer, personas::update_persona),
        route!(Bearer, personas::delete_persona),
        route!(Public, instagram::start_instagram),
        route!(Public, instagram::instagram_callback),
        route!(Bearer, instagram::link_instagram),
        route!(Bearer, instagram::unlink_instagram),
        route!(Public, instagram::get_data_deletion),
        route!(Bearer, styles::create_style),
        route!(Bearer, styles::list_my_styles),
        route!(Bearer, styles::get_style),
        route!(Public, marketplace::list_styles),
        route!(Bearer, marketplace::update_style),
        route!(Bearer, marketplace::delete_style),
    ]
});

/// The `$default` route's function: every request no route matched.
pub static NOT_FOUND: Route = Route {
    function: "route-not-found",
    handler_name: "route_not_found",
    method: "ANY",
    path: "$default",
    authorized: false,
    handler: |state, req| Box::pin(meta::route_not_found(state, req)),
    doc: None,
};

/// The route a function serves, by its name (`receive-fal-webhook`).
pub fn by_function(function: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .chain([&NOT_FOUND])
        .find(|r| r.function == function)
}

/// The result of matching a request against [`ROUTES`].
#[derive(Debug)]
pub enum Match {
    Found(&'static Route, HashMap<String, String>),
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

/// Matches a method and path as API Gateway does: literal segments exactly, `{name}` segments bind
/// one non-empty segment, and of the routes that match, the most specific wins (a literal
/// segment before a variable one, from the left: `/v1/users/me/posts` over
/// `/v1/users/{id}/posts`).
pub fn match_route(method: &str, path: &str) -> Match {
    let mut allow = Vec::new();
    let mut best: Option<(Vec<bool>, &'static Route, HashMap<String, String>)> = None;
    for spec in ROUTES.iter() {
        let Some(params) = match_path(spec.path, path) else {
            continue;
        };
        if spec.method == method {
            let literal: Vec<bool> = spec
                .path
                .split('/')
                .map(|s| !(s.starts_with('{') && s.ends_with('}')))
                .collect();
            if best.as_ref().is_none_or(|(b, _, _)| literal > *b) {
                best = Some((literal, spec, params));
            }
            continue;
        }
        allow.push(spec.method);
    }
    if let Some((_, spec, params)) = best {
        return Match::Found(spec, params);
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

/// Runs a route's handler: a span carrying the request id around everything it logs, errors mapped
/// to problem+json, and the request id echoed in `x-request-id`.
pub async fn handle(state: &State, route: &Route, req: Request) -> Response<Body> {
    let request_id = request_id(&req);
    let span = tracing::info_span!("request", request_id = %request_id, function = route.function);
    async move {
        let started = Instant::now();
        let method = req.method().clone();
        let result = (route.handler)(state, req).await;
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
    fn the_most_specific_route_wins_as_in_api_gateway() {
        let Match::Found(mine, _) = match_route("GET", "/v1/users/me/posts") else {
            panic!("a route");
        };
        assert_eq!(mine.function, "list-my-posts");
        let Match::Found(theirs, params) = match_route("GET", "/v1/users/u1/posts") else {
            panic!("a route");
        };
        assert_eq!(
            (theirs.function, params["id"].as_str()),
            ("list-user-posts", "u1")
        );
    }

    #[test]
    fn paths_bind_parameters_and_methods_are_told_apart() {
        assert!(
            matches!(match_route("GET", "/v1/auth/me"), Match::Found(s, _) if s.function == "get-me")
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
