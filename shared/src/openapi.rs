//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::auth::handlers as auth;
use crate::credits;
use crate::generation::{inbound, styles};
use crate::jobs::handlers as jobs;
use crate::meta;
use crate::photos::handlers as photos;
use crate::webhooks::endpoints;

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Lambent", description = "Serverless backend for apps that sell AI generation."),
    paths(
        meta::health, meta::openapi, meta::docs, meta::jwks, meta::openid_configuration,
        auth::register, auth::login, auth::token, auth::refresh, auth::logout, auth::me, auth::update_me,
        jobs::create, jobs::list, jobs::get, jobs::cancel, credits::balance, credits::transactions, credits::grant, crate::uploads::create,
        photos::upscale, photos::best_cut, photos::list, photos::get, photos::file_redirect, photos::delete,
        inbound::fal, inbound::replicate, inbound::ai_progress, inbound::ai_complete, inbound::ai_failed,
        endpoints::create, endpoints::list, endpoints::delete, endpoints::deliveries,
        styles::create, styles::list, styles::get,
    ),
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
