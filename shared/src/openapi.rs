//! The OpenAPI 3.1 document: the route table's operations (each handler's annotation, with the
//! security its table entry gives it) under the document-wide info, tags and schemes below.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::Response;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::routes::ROUTES;

/// What the document says besides its operations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Lambent", description = "Serverless backend for apps that sell AI generation."),
    components(schemas(crate::error::Problem, crate::error::FieldError, GatewayMessage)),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Accounts and sessions"), (name = "users", description = "Profiles"),
        (name = "jobs", description = "Jobs: admission, progress, cancel"), (name = "credits", description = "Balance, ledger, daily reward"), (name = "payments", description = "Credit packages and orders: Toss Payments and Stripe Checkout; artists and payouts"), (name = "admin", description = "Accounts and orders, for admins"), (name = "conversations", description = "Folders and sessions (WEAV)"),
        (name = "uploads", description = "Presigned uploads"),
        (name = "photos", description = "Real-ESRGAN upscaling and best-cut"),
        (name = "videos", description = "Video uploads probed by FFmpeg, with posters, thumbnail strips and previews; the studio's frames and ranges are jobs"),
        (name = "styles", description = "Styles (LoRA) trained on your images by your AI servers"),
        (name = "social", description = "Public profiles, follows, posts, likes, shares, bookmarks, comments and blocks"),
        (name = "personas", description = "SelfStar's personas: AI characters that generation can name"),
        (name = "webhooks", description = "Webhook endpoints and deliveries to you; signed webhooks from providers and AI servers (no bearer token)"),
        (name = "console", description = "The web console: a page and its files, served by the API"),
        (name = "meta", description = "Health and documents")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API description served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let mut schemas = Vec::new();
    for route in ROUTES.iter() {
        if let (Some(method), Some(mut operation)) = (route.http_method(), route.operation()) {
            complete(&mut operation, route.authorized);
            doc.paths
                .add_path_operation(route.path, vec![method], operation);
            route.schemas(&mut schemas);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.extend(schemas);
    doc
}

/// Adds the answers an operation gives whatever its handler, from what the operation takes: a
/// body (400 malformed, 413, 415, 422), the authorizer (401), a path id (404), paging (400 bad
/// cursor, 422 bad limit). Then every error answer is `application/problem+json`.
fn complete(operation: &mut Operation, authorized: bool) {
    let params = operation.parameters.as_deref().unwrap_or_default();
    let path_id = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let paged = params
        .iter()
        .any(|p| p.name == "limit" || p.name == "cursor");
    let body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut add = |status: u16, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(Response::new(description)));
    };
    if body {
        add(400, "malformed_body: the body is not well-formed");
        add(413, "payload_too_large");
        add(415, "unsupported_media_type");
        add(422, "validation_failed: `errors` names each field");
    }
    if authorized {
        add(401, "no valid bearer access token");
    }
    if path_id {
        add(404, "not_found");
    }
    if paged {
        add(400, "invalid_cursor");
        add(422, "validation_failed: `limit` is 1 to 100");
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if status.as_str() < "400" {
            continue;
        }
        response.content.shift_remove("application/json");
        response.content.insert(
            PROBLEM_JSON.to_owned(),
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        // API Gateway's JWT authorizer answers for itself, before any function runs.
        if status == "401" && authorized {
            response.content.insert(
                "application/json".to_owned(),
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("GatewayMessage")))
                    .build(),
            );
        }
    }
}

/// The media type of every error answer (RFC 9457).
const PROBLEM_JSON: &str = "application/problem+json";

/// What API Gateway itself answers when it refuses a request (`{"message": "Unauthorized"}`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GatewayMessage {
    pub message: String,
}
