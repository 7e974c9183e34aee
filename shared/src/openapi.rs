//! The OpenAPI 3.1 document: the route table's operations (each handler's annotation, with the
//! security its table entry gives it) under the document-wide info, tags and schemes below.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::ROUTES;

/// What the document says besides its operations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Lambent", description = "Serverless backend for apps that sell AI generation."),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Accounts and sessions"), (name = "users", description = "Profiles"),
        (name = "jobs", description = "Jobs: admission, progress, cancel"), (name = "credits", description = "Balance and ledger"),
        (name = "uploads", description = "Presigned uploads"),
        (name = "photos", description = "Real-ESRGAN upscaling and best-cut"),
        (name = "styles", description = "Styles (LoRA) trained on your images by your AI servers"),
        (name = "webhooks", description = "Webhook endpoints and deliveries to you; signed webhooks from providers and AI servers (no bearer token)"),
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
        if let (Some(method), Some(operation)) = (route.http_method(), route.operation()) {
            doc.paths
                .add_path_operation(route.path, vec![method], operation);
            route.schemas(&mut schemas);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.extend(schemas);
    doc
}
