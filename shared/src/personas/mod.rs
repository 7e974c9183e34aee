//! SelfStar's personas (`/v1/personas`): owner-scoped CRUD of the AI characters a user keeps.
//! Generation names one with `persona_id`; an Instagram professional account can be linked to
//! one and published to (`instagram`).

pub mod instagram;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{failed_conditions, n, s};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body, path_param};
use crate::keys;
use crate::persona::{self, MAX_PERSONAS, Persona, PersonaFields};
use crate::state::State;

fn not_found() -> ApiError {
    ApiError::NotFound("no such persona")
}

fn build<T>(built: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, ApiError> {
    built.map_err(|e| ApiError::Internal(e.into()))
}

/// Creates a persona: `name` is required; at most 50 an account.
#[utoipa::path(post, path = "/v1/personas", tag = "personas", security(("bearer" = [])),
    request_body = PersonaFields,
    responses((status = 201, body = Persona), (status = 401, body = crate::error::Problem),
        (status = 404, description = "the account no longer exists (deleted)", body = crate::error::Problem),
        (status = 409, description = "too_many_personas", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn create_persona(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let fields: PersonaFields = json_body(&req, &["application/json"])?;
    let mut errors = fields.validate().err().unwrap_or_default();
    if fields.name.is_none() {
        errors.push(FieldError::new("name", "is required"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = Utc::now();
    let id = uuid::Uuid::now_v7().to_string();
    let pk = keys::user(&caller.user_id);
    let created_at = crate::users::timestamp(now);
    let mut put = Put::builder()
        .table_name(&state.db.table)
        .item("pk", s(&pk))
        .item("sk", s(keys::persona(&id)))
        .item("id", s(&id))
        .item("created_at", s(&created_at))
        .condition_expression("attribute_not_exists(pk)");
    for (name, value) in persona::attributes(&fields, now) {
        put = put.item(name, value);
    }
    // The cap is the account's count, kept in the same transaction: creates at once cannot pass it.
    let count = Update::builder()
        .table_name(&state.db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::PROFILE))
        .update_expression("ADD personas :one")
        .condition_expression(
            "attribute_exists(pk) AND attribute_not_exists(deleted_at) AND \
             (attribute_not_exists(personas) OR personas < :max)",
        )
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":max", n(MAX_PERSONAS))
        .build();
    let actions = vec![
        TransactWriteItem::builder()
            .put(build(put.build())?)
            .build(),
        TransactWriteItem::builder().update(build(count)?).build(),
    ];
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        let over = failed_conditions(&err).is_some_and(|f| f.get(1) == Some(&true));
        if !over {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("creating a persona"),
            ));
        }
        if crate::users::get(&state.db, &caller.user_id, now)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound("the account no longer exists"));
        }
        return Err(ApiError::Conflict {
            code: "too_many_personas",
            detail: format!("an account keeps at most {MAX_PERSONAS} personas"),
        });
    }
    let created = persona::get(&state.db, &caller.user_id, &id)
        .await?
        .ok_or_else(not_found)?;
    let mut response = json(StatusCode::CREATED, &created)?;
    if let Ok(location) = format!("/v1/personas/{id}").parse() {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

/// The caller's personas.
#[derive(Serialize, ToSchema)]
pub struct PersonaList {
    pub items: Vec<Persona>,
}

/// The caller's personas, oldest first (at most 50: one page).
#[utoipa::path(get, path = "/v1/personas", tag = "personas", security(("bearer" = [])),
    responses((status = 200, body = PersonaList), (status = 401, body = crate::error::Problem)))]
pub async fn list_personas(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let items = persona::items(&state.db, &caller.user_id)
        .await?
        .iter()
        .map(persona::from_item)
        .collect::<anyhow::Result<Vec<_>>>()?;
    json(StatusCode::OK, &PersonaList { items })
}

/// One of the caller's personas; anyone else's is a 404.
#[utoipa::path(get, path = "/v1/personas/{id}", tag = "personas", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Persona), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn get_persona(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let found = persona::get(&state.db, &caller.user_id, &id)
        .await?
        .ok_or_else(not_found)?;
    json(StatusCode::OK, &found)
}

/// Changes the fields given (a merge: the others stay).
#[utoipa::path(patch, path = "/v1/personas/{id}", tag = "personas", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = PersonaFields,
    responses((status = 200, body = Persona), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn update_persona(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let fields: PersonaFields =
        json_body(&req, &["application/json", "application/merge-patch+json"])?;
    fields.validate().map_err(ApiError::Validation)?;
    if persona::get(&state.db, &caller.user_id, &id)
        .await?
        .is_none()
    {
        return Err(not_found());
    }
    let update = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(keys::user(&caller.user_id)))
        .key("sk", s(keys::persona(&id)))
        .condition_expression("attribute_exists(pk)");
    let set = crate::db::set_all(persona::attributes(&fields, Utc::now()));
    let result = update
        .update_expression(set.expression)
        .set_expression_attribute_names(Some(set.names))
        .set_expression_attribute_values(Some(set.values))
        .send()
        .await;
    if crate::db::unless_condition_failed(result)?.is_none() {
        return Err(not_found());
    }
    let updated = persona::get(&state.db, &caller.user_id, &id)
        .await?
        .ok_or_else(not_found)?;
    json(StatusCode::OK, &updated)
}

/// Deletes a persona (its Instagram link with it).
#[utoipa::path(delete, path = "/v1/personas/{id}", tag = "personas", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn delete_persona(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    if id.is_empty() || id.len() > 64 {
        return Err(not_found());
    }
    // Its Instagram link first (the token, the lookup, the refresh entry).
    instagram::forget_link(state, &caller.user_id, &id).await?;
    let pk = keys::user(&caller.user_id);
    let delete = aws_sdk_dynamodb::types::Delete::builder()
        .table_name(&state.db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::persona(&id)))
        .condition_expression("attribute_exists(pk)")
        .build();
    let count = Update::builder()
        .table_name(&state.db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::PROFILE))
        .update_expression("ADD personas :minus")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":minus", n(-1))
        .build();
    let actions = vec![
        TransactWriteItem::builder().delete(build(delete)?).build(),
        TransactWriteItem::builder().update(build(count)?).build(),
    ];
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {}
        Err(err) if failed_conditions(&err).is_some() => return Err(not_found()),
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("deleting a persona"),
            ));
        }
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}
