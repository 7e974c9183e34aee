//! `/v1/folders`: create, list, rename, delete (once empty).

use anyhow::Context as _;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::conversations::{MAX_FOLDERS, check_name, path_id};
use crate::db::{Item, get_i64, get_s, n, s};
use crate::error::ApiError;
use crate::http::{Caller, json, json_body};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// `POST /v1/folders`, `PATCH /v1/folders/{id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FolderName {
    /// 1 to 100 characters.
    pub name: String,
}

/// A folder of sessions.
#[derive(Serialize, ToSchema)]
pub struct Folder {
    pub id: String,
    pub name: String,
    /// Sessions in it.
    pub session_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// Your folders.
#[derive(Serialize, ToSchema)]
pub struct FolderList {
    pub items: Vec<Folder>,
}

fn view(item: &Item) -> Folder {
    Folder {
        id: get_s(item, "id").unwrap_or_default().to_owned(),
        name: get_s(item, "name").unwrap_or_default().to_owned(),
        session_count: get_i64(item, "session_count").unwrap_or(0),
        created_at: get_s(item, "created_at").unwrap_or_default().to_owned(),
        updated_at: get_s(item, "updated_at").unwrap_or_default().to_owned(),
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such folder")
}

/// The caller's folder `id`.
pub(crate) async fn owned(
    state: &State,
    user_id: &str,
    id: &str,
) -> Result<Option<Item>, ApiError> {
    Ok(state
        .db
        .get(&keys::user(user_id), &keys::folder(id))
        .await?)
}

/// Makes a folder (200 at most).
#[utoipa::path(post, path = "/v1/folders", tag = "conversations", security(("bearer" = [])), request_body = FolderName,
    responses((status = 201, body = Folder), (status = 404, description = "the account no longer exists", body = crate::error::Problem),
        (status = 409, description = "too_many_folders", body = crate::error::Problem)))]
pub async fn create_folder(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: FolderName = json_body(&req, &["application/json"])?;
    let name = check_name("name", &body.name, 100)?;
    let id = uuid::Uuid::now_v7().to_string();
    let now = timestamp(Utc::now());
    let pk = keys::user(&caller.user_id);
    let actions = vec![
        crate::db::tx::update(
            &state.db,
            (&pk, keys::PROFILE),
            "SET folder_count = if_not_exists(folder_count, :zero) + :one",
            Some(
                "attribute_exists(pk) AND attribute_not_exists(deleted_at) AND (attribute_not_exists(folder_count) OR folder_count < :max)",
            ),
            &[],
            vec![(":zero", n(0)), (":one", n(1)), (":max", n(MAX_FOLDERS))],
        )?,
        crate::db::tx::put(
            &state.db,
            vec![
                ("pk", s(&pk)),
                ("sk", s(keys::folder(&id))),
                ("id", s(&id)),
                ("name", s(&name)),
                ("session_count", n(0)),
                ("created_at", s(&now)),
                ("updated_at", s(&now)),
            ],
            Some("attribute_not_exists(pk)"),
        )?,
    ];
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        if crate::db::failed_conditions(&err).is_some() {
            let profile = state.db.get(&pk, keys::PROFILE).await?;
            return Err(match profile {
                Some(p) if !p.contains_key("deleted_at") => ApiError::Conflict {
                    code: "too_many_folders",
                    detail: format!("an account keeps at most {MAX_FOLDERS} folders"),
                },
                _ => ApiError::NotFound("the account no longer exists"),
            });
        }
        return Err(ApiError::Internal(
            anyhow::Error::new(err).context("making a folder"),
        ));
    }
    let item = owned(state, &caller.user_id, &id)
        .await?
        .context("the folder went")?;
    let location = format!("/v1/folders/{id}");
    let mut response = json(StatusCode::CREATED, &view(&item))?;
    if let Ok(value) = location.parse() {
        response.headers_mut().insert("location", value);
    }
    Ok(response)
}

/// Your folders, oldest first.
#[utoipa::path(get, path = "/v1/folders", tag = "conversations", security(("bearer" = [])),
    responses((status = 200, body = FolderList)))]
pub async fn list_folders(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let items = state
        .db
        .query_prefix(&keys::user(&caller.user_id), keys::FOLDER_PREFIX)
        .await?;
    json(
        StatusCode::OK,
        &FolderList {
            items: items.iter().map(view).collect(),
        },
    )
}

/// Renames one of your folders.
#[utoipa::path(patch, path = "/v1/folders/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = FolderName,
    responses((status = 200, body = Folder), (status = 404, body = crate::error::Problem)))]
pub async fn rename_folder(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(not_found)?;
    let body: FolderName = json_body(&req, &["application/json"])?;
    let name = check_name("name", &body.name, 100)?;
    let result = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(keys::user(&caller.user_id)))
        .key("sk", s(keys::folder(&id)))
        .update_expression("SET #name = :name, updated_at = :now")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_names("#name", "name")
        .expression_attribute_values(":name", s(&name))
        .expression_attribute_values(":now", s(timestamp(Utc::now())))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
        .send()
        .await;
    let updated = crate::db::unless_condition_failed(result)
        .context("renaming a folder")?
        .and_then(|out| out.attributes)
        .ok_or_else(not_found)?;
    json(StatusCode::OK, &view(&updated))
}

/// Deletes one of your folders once no session is in it (move or delete them first).
#[utoipa::path(delete, path = "/v1/folders/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::Problem),
        (status = 409, description = "folder_not_empty", body = crate::error::Problem)))]
pub async fn delete_folder(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(not_found)?;
    let pk = keys::user(&caller.user_id);
    let actions = vec![
        crate::db::tx::delete(
            &state.db,
            (&pk, &keys::folder(&id)),
            Some("attribute_exists(pk) AND session_count = :zero"),
            &[],
            vec![(":zero", n(0))],
        )?,
        crate::db::tx::update(
            &state.db,
            (&pk, keys::PROFILE),
            "SET folder_count = folder_count - :one",
            Some("folder_count > :zero"),
            &[],
            vec![(":zero", n(0)), (":one", n(1))],
        )?,
    ];
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        if crate::db::failed_conditions(&err).is_some() {
            return Err(match owned(state, &caller.user_id, &id).await? {
                Some(_) => ApiError::Conflict {
                    code: "folder_not_empty",
                    detail: "move or delete its sessions first".into(),
                },
                None => not_found(),
            });
        }
        return Err(ApiError::Internal(
            anyhow::Error::new(err).context("deleting a folder"),
        ));
    }
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .context("response")?)
}
