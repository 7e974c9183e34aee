//! `/v1/sessions`: a conversation of one kind (`chat`, `image`, `studio`), in a folder or none;
//! create, list (all, or one folder's, newest first), get, rename and move, delete, bulk delete.
//! A folder's `session_count` moves in the same transaction as the session.

use anyhow::Context as _;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::conversations::{check_name, folders, path_id};
use crate::cursor::Paging;
use crate::db::{Item, get_i64, get_s, n, s};
use crate::error::ApiError;
use crate::http::{Caller, json, json_body, query_param};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// Sessions a bulk delete takes at once.
pub const MAX_BULK: usize = 100;

/// What a session holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// Talk with an LLM.
    Chat,
    /// Generate and edit images.
    Image,
    /// Both, with documents.
    Studio,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Image => "image",
            Self::Studio => "studio",
        }
    }
}

/// `POST /v1/sessions`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub kind: SessionKind,
    /// 1 to 200 characters; by default the first prompt's beginning, once there is one.
    pub title: Option<String>,
    /// One of your folders; none, the session is in no folder.
    pub folder_id: Option<String>,
}

/// `PATCH /v1/sessions/{id}`: a new title, another folder (`null`: none).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    pub title: Option<String>,
    /// Absent: where it is; `null`: out of its folder; an id: into that folder.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub folder_id: Option<Option<String>>,
}

/// A field given (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A session.
#[derive(Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub kind: SessionKind,
    pub title: Option<String>,
    pub folder_id: Option<String>,
    pub message_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A page of sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionPage {
    pub items: Vec<Session>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/sessions/bulk-delete`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDelete {
    /// 1 to 100 of your sessions.
    pub ids: Vec<String>,
}

/// What a bulk delete did.
#[derive(Serialize, ToSchema)]
pub struct BulkDeleted {
    pub deleted: Vec<String>,
    /// Not yours, or gone already.
    pub not_found: Vec<String>,
}

fn view(item: &Item) -> Option<Session> {
    let kind = match get_s(item, "kind")? {
        "chat" => SessionKind::Chat,
        "image" => SessionKind::Image,
        "studio" => SessionKind::Studio,
        _ => return None,
    };
    Some(Session {
        id: get_s(item, "id")?.to_owned(),
        kind,
        title: get_s(item, "title").map(str::to_owned),
        folder_id: get_s(item, "folder_id").map(str::to_owned),
        message_count: get_i64(item, "message_count").unwrap_or(0),
        created_at: get_s(item, "created_at").unwrap_or_default().to_owned(),
        updated_at: get_s(item, "updated_at").unwrap_or_default().to_owned(),
    })
}

pub(crate) fn not_found() -> ApiError {
    ApiError::NotFound("no such session")
}

fn folder_gone() -> ApiError {
    ApiError::NotFound("no such folder")
}

/// The caller's session `id`.
pub(crate) async fn owned(state: &State, user_id: &str, id: &str) -> Result<Item, ApiError> {
    state
        .db
        .get(&keys::user(user_id), &keys::chat(id))
        .await?
        .ok_or_else(not_found)
}

/// The folder's count moved by `delta` (the folder must be there).
fn count_in(
    state: &State,
    user_id: &str,
    folder_id: &str,
    delta: i64,
) -> anyhow::Result<aws_sdk_dynamodb::types::TransactWriteItem> {
    crate::db::tx::update(
        &state.db,
        (&keys::user(user_id), &keys::folder(folder_id)),
        "SET session_count = session_count + :delta",
        Some("attribute_exists(pk)"),
        &[],
        vec![(":delta", n(delta))],
    )
}

fn check_folder(id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| folder_gone())
}

/// Starts a session.
#[utoipa::path(post, path = "/v1/sessions", tag = "conversations", security(("bearer" = [])), request_body = CreateSession,
    responses((status = 201, body = Session), (status = 404, description = "no such folder, or the account no longer exists", body = crate::error::Problem)))]
pub async fn create_session(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: CreateSession = json_body(&req, &["application/json"])?;
    let title = body
        .title
        .as_deref()
        .map(|t| check_name("title", t, 200))
        .transpose()?;
    if let Some(folder) = &body.folder_id {
        check_folder(folder)?;
    }
    let id = uuid::Uuid::now_v7().to_string();
    let now = timestamp(Utc::now());
    let mut item = vec![
        ("pk", s(keys::user(&caller.user_id))),
        ("sk", s(keys::chat(&id))),
        ("id", s(&id)),
        ("kind", s(body.kind.as_str())),
        ("message_count", n(0)),
        ("created_at", s(&now)),
        ("updated_at", s(&now)),
        (
            "gsi1pk",
            s(keys::chats_in(&caller.user_id, body.folder_id.as_deref())),
        ),
        ("gsi1sk", s(&id)),
    ];
    if let Some(title) = &title {
        item.push(("title", s(title)));
    }
    if let Some(folder) = &body.folder_id {
        item.push(("folder_id", s(folder)));
    }
    let mut actions = vec![
        crate::db::tx::put(&state.db, item, Some("attribute_not_exists(pk)"))?,
        crate::db::tx::check(
            &state.db,
            (&keys::user(&caller.user_id), keys::PROFILE),
            "attribute_exists(pk) AND attribute_not_exists(deleted_at)",
        )?,
    ];
    if let Some(folder) = &body.folder_id {
        actions.push(count_in(state, &caller.user_id, folder, 1)?);
    }
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(failed) if failed.get(1) == Some(&true) => {
                ApiError::NotFound("the account no longer exists")
            }
            Some(_) => folder_gone(),
            None => ApiError::Internal(anyhow::Error::new(err).context("starting a session")),
        });
    }
    let item = owned(state, &caller.user_id, &id).await?;
    let session = view(&item).context("a session as stored")?;
    let mut response = json(StatusCode::CREATED, &session)?;
    if let Ok(value) = format!("/v1/sessions/{id}").parse() {
        response.headers_mut().insert("location", value);
    }
    Ok(response)
}

/// Your sessions, newest first: all of them, or one folder's (`?folder_id=`, `root` for those in
/// none).
#[utoipa::path(get, path = "/v1/sessions", tag = "conversations", security(("bearer" = [])),
    params(("folder_id" = Option<String>, Query, description = "a folder's id, or root"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = SessionPage), (status = 404, description = "no such folder", body = crate::error::Problem)))]
pub async fn list_sessions(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let folder = query_param(&req, "folder_id");
    if let Some(folder) = folder.as_deref().filter(|f| *f != "root") {
        check_folder(folder)?;
        folders::owned(state, &caller.user_id, folder)
            .await?
            .ok_or_else(folder_gone)?;
    }
    let scope = format!(
        "sessions|{}|{}",
        caller.user_id,
        folder.as_deref().unwrap_or("*")
    );
    let page = Paging::from_request(&req, state.cursor_key().await?, scope)?;
    let user_pk = keys::user(&caller.user_id);
    let query = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .scan_index_forward(false)
        .limit(i32::try_from(page.limit).unwrap_or(20));
    let (query, index_pk) = match folder.as_deref() {
        None => (
            query
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(&user_pk))
                .expression_attribute_values(":prefix", s(keys::CHAT_PREFIX)),
            None,
        ),
        Some(f) => {
            let pk = keys::chats_in(&caller.user_id, Some(f).filter(|f| *f != "root"));
            (
                query
                    .index_name("gsi1")
                    .key_condition_expression("gsi1pk = :pk")
                    .expression_attribute_values(":pk", s(&pk)),
                Some(pk),
            )
        }
    };
    let start = page.after.as_ref().map(|id| {
        let mut key: Item = [
            ("pk".to_owned(), s(&user_pk)),
            ("sk".to_owned(), s(keys::chat(id))),
        ]
        .into();
        if let Some(pk) = &index_pk {
            key.insert("gsi1pk".to_owned(), s(pk));
            key.insert("gsi1sk".to_owned(), s(id));
        }
        key
    });
    let out = query
        .set_exclusive_start_key(start)
        .send()
        .await
        .context("listing sessions")?;
    let items = out.items().iter().filter_map(view).collect();
    let next = page.next_cursor(
        out.last_evaluated_key()
            .and_then(|k| get_s(k, "sk"))
            .map(|sk| sk.trim_start_matches(keys::CHAT_PREFIX).to_owned()),
    );
    json(
        StatusCode::OK,
        &SessionPage {
            items,
            next_cursor: next,
        },
    )
}

/// One of your sessions.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Session), (status = 404, body = crate::error::Problem)))]
pub async fn get_session(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(not_found)?;
    let item = owned(state, &caller.user_id, &id).await?;
    json(StatusCode::OK, &view(&item).ok_or_else(not_found)?)
}

/// Renames one of your sessions, or moves it into a folder or out of its folder.
#[utoipa::path(patch, path = "/v1/sessions/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = UpdateSession,
    responses((status = 200, body = Session), (status = 404, description = "no such session or folder", body = crate::error::Problem),
        (status = 409, description = "session_changed: moved meanwhile; try again", body = crate::error::Problem)))]
pub async fn update_session(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(not_found)?;
    let body: UpdateSession = json_body(&req, &["application/json"])?;
    let title = body
        .title
        .as_deref()
        .map(|t| check_name("title", t, 200))
        .transpose()?;
    if let Some(Some(folder)) = &body.folder_id {
        check_folder(folder)?;
    }
    let item = owned(state, &caller.user_id, &id).await?;
    let current = get_s(&item, "folder_id").map(str::to_owned);
    let now = timestamp(Utc::now());
    let mut sets = vec!["updated_at = :now".to_owned()];
    let mut removes = Vec::new();
    let mut values = vec![(":now", s(&now))];
    if let Some(title) = &title {
        sets.push("title = :title".to_owned());
        values.push((":title", s(title)));
    }
    let moved = body.folder_id.clone().filter(|target| *target != current);
    let mut actions = Vec::new();
    if let Some(target) = &moved {
        sets.push("gsi1pk = :index".to_owned());
        values.push((
            ":index",
            s(keys::chats_in(&caller.user_id, target.as_deref())),
        ));
        match target {
            Some(folder) => {
                sets.push("folder_id = :folder".to_owned());
                values.push((":folder", s(folder)));
                actions.push(count_in(state, &caller.user_id, folder, 1)?);
            }
            None => removes.push("folder_id"),
        }
        if let Some(old) = &current {
            actions.push(count_in(state, &caller.user_id, old, -1)?);
        }
    }
    // Moved by someone else meanwhile: the counts would be wrong.
    let condition = match &current {
        Some(folder) => {
            values.push((":current", s(folder)));
            "attribute_exists(pk) AND folder_id = :current"
        }
        None => "attribute_exists(pk) AND attribute_not_exists(folder_id)",
    };
    let mut expression = format!("SET {}", sets.join(", "));
    if !removes.is_empty() {
        expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    actions.insert(
        0,
        crate::db::tx::update(
            &state.db,
            (&keys::user(&caller.user_id), &keys::chat(&id)),
            &expression,
            Some(condition),
            &[],
            values,
        )?,
    );
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(failed) if failed.first() == Some(&true) => ApiError::Conflict {
                code: "session_changed",
                detail: "the session moved meanwhile; read it and try again".into(),
            },
            Some(_) => folder_gone(),
            None => ApiError::Internal(anyhow::Error::new(err).context("changing a session")),
        });
    }
    let item = owned(state, &caller.user_id, &id).await?;
    json(StatusCode::OK, &view(&item).ok_or_else(not_found)?)
}

/// Deletes a session (and its folder's count); `false` when it was not there.
async fn delete(state: &State, user_id: &str, id: &str) -> Result<bool, ApiError> {
    let pk = keys::user(user_id);
    let Some(item) = state.db.get(&pk, &keys::chat(id)).await? else {
        return Ok(false);
    };
    let mut actions = Vec::new();
    let folder = get_s(&item, "folder_id").map(str::to_owned);
    let (condition, values) = match &folder {
        Some(f) => (
            "attribute_exists(pk) AND folder_id = :folder",
            vec![(":folder", s(f))],
        ),
        None => (
            "attribute_exists(pk) AND attribute_not_exists(folder_id)",
            Vec::new(),
        ),
    };
    actions.push(crate::db::tx::delete(
        &state.db,
        (&pk, &keys::chat(id)),
        Some(condition),
        &[],
        values,
    )?);
    if let Some(f) = &folder {
        actions.push(count_in(state, user_id, f, -1)?);
    }
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {
            purge(state, user_id, id).await?;
            Ok(true)
        }
        // Gone or moved meanwhile: read it again.
        Err(err) if crate::db::failed_conditions(&err).is_some() => {
            if state.db.get(&pk, &keys::chat(id)).await?.is_some() {
                return Err(ApiError::Conflict {
                    code: "session_changed",
                    detail: "the session moved meanwhile; try again".into(),
                });
            }
            Ok(false)
        }
        Err(err) => Err(ApiError::Internal(
            anyhow::Error::new(err).context("deleting a session"),
        )),
    }
}

/// Removes what a deleted session held: its messages, their versions and its documents (their
/// records and files). The session is gone first, so nothing reaches them meanwhile.
async fn purge(state: &State, user_id: &str, id: &str) -> anyhow::Result<()> {
    let items = state
        .db
        .delete_partition(&keys::chat_messages(id))
        .await
        .context("deleting a session's messages")?;
    let files = crate::media::delete_prefix(state, &format!("documents/{user_id}/{id}/")).await?;
    tracing::info!(session_id = id, items, files, "session purged");
    Ok(())
}

/// Deletes one of your sessions, with its messages and documents.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::Problem),
        (status = 409, description = "session_changed", body = crate::error::Problem)))]
pub async fn delete_session(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(not_found)?;
    if !delete(state, &caller.user_id, &id).await? {
        return Err(not_found());
    }
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .context("response")?)
}

/// Deletes up to 100 of your sessions at once; ids that are not yours (or gone) are listed as
/// not found.
#[utoipa::path(post, path = "/v1/sessions/bulk-delete", tag = "conversations", security(("bearer" = [])), request_body = BulkDelete,
    responses((status = 200, body = BulkDeleted), (status = 409, description = "session_changed", body = crate::error::Problem)))]
pub async fn bulk_delete_sessions(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: BulkDelete = json_body(&req, &["application/json"])?;
    if body.ids.is_empty() || body.ids.len() > MAX_BULK {
        return Err(ApiError::invalid("ids", "must hold 1 to 100 ids"));
    }
    let mut ids: Vec<String> = Vec::with_capacity(body.ids.len());
    for id in body.ids {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut answer = BulkDeleted {
        deleted: Vec::new(),
        not_found: Vec::new(),
    };
    for id in ids {
        let gone =
            uuid::Uuid::parse_str(&id).is_ok() && delete(state, &caller.user_id, &id).await?;
        if gone {
            answer.deleted.push(id);
        } else {
            answer.not_found.push(id);
        }
    }
    json(StatusCode::OK, &answer)
}
