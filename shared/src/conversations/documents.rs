//! `/v1/sessions/{id}/documents`: PDF, text and Markdown files kept with a chat or studio session,
//! their text offered to its replies as context. A document is created with a presigned PUT (the
//! file never passes through a function), then completed: the file is read back, checked (its
//! real size, its type by its bytes, its pages) and its text extracted there and then. What
//! cannot be read is refused and removed; a PDF without a text layer (a scan) is kept, and says
//! it offers no context.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_s3::presigning::PresigningConfig;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::conversations::{check_name, path_id, sessions};
use crate::db::{Item, get_i64, get_s, n, s};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body, path_param};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// The largest document.
pub const MAX_DOCUMENT_BYTES: u64 = 20 * 1024 * 1024;
/// The most pages of a PDF read.
pub const MAX_PAGES: usize = 300;
/// The most text kept of a document (UTF-8 bytes).
pub const MAX_TEXT_BYTES: usize = 200_000;
/// Documents per session.
pub const MAX_DOCUMENTS: i64 = 50;
/// How long an upload or download URL works.
const URL_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The types accepted.
const TYPES: &[&str] = &["application/pdf", "text/plain", "text/markdown"];

/// `POST /v1/sessions/{id}/documents`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDocument {
    /// 1 to 200 characters.
    pub filename: String,
    /// `application/pdf`, `text/plain` or `text/markdown`.
    pub content_type: String,
    /// Exact size in bytes, 1 to 20 MiB.
    #[schema(minimum = 1, maximum = 20_971_520)]
    pub size: u64,
}

/// Where a document stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocumentStatus {
    /// Waiting for its file and `…/complete`.
    Uploading,
    /// Read; its text (if it has any) is offered to the session's replies.
    Ready,
}

/// A document of a session.
#[derive(Serialize, ToSchema)]
pub struct Document {
    pub id: String,
    pub session_id: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub status: DocumentStatus,
    /// A PDF's pages.
    pub pages: Option<i64>,
    /// Characters of text extracted (0: none, so no context).
    pub text_chars: Option<i64>,
    /// Whether its text offers context to replies.
    pub has_text: bool,
    /// The text stopped at 200,000 bytes.
    pub text_truncated: bool,
    /// Why it offers no context, when it does not.
    pub note: Option<String>,
    pub created_at: String,
    /// A presigned GET of the file, for 15 minutes (one document's answer, once ready).
    pub download_url: Option<String>,
}

/// A new document and where to upload its file.
#[derive(Serialize, ToSchema)]
pub struct CreatedDocument {
    pub document: Document,
    pub upload: DocumentUpload,
}

/// The presigned PUT of a document's file.
#[derive(Serialize, ToSchema)]
pub struct DocumentUpload {
    pub method: &'static str,
    pub url: String,
    /// Headers the PUT must carry, as signed.
    pub headers: BTreeMap<String, String>,
    pub expires_at: String,
}

/// A session's documents, oldest first (50 at most).
#[derive(Serialize, ToSchema)]
pub struct DocumentList {
    pub items: Vec<Document>,
}

fn view(item: &Item) -> Option<Document> {
    Some(Document {
        id: get_s(item, "id")?.to_owned(),
        session_id: get_s(item, "session_id")?.to_owned(),
        filename: get_s(item, "filename").unwrap_or_default().to_owned(),
        content_type: get_s(item, "content_type").unwrap_or_default().to_owned(),
        size: get_i64(item, "size").unwrap_or(0),
        status: match get_s(item, "status") {
            Some("ready") => DocumentStatus::Ready,
            _ => DocumentStatus::Uploading,
        },
        pages: get_i64(item, "pages"),
        text_chars: get_i64(item, "text_chars"),
        has_text: get_i64(item, "text_chars").is_some_and(|c| c > 0),
        text_truncated: item
            .get("text_truncated")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        note: get_s(item, "note").map(str::to_owned),
        created_at: get_s(item, "created_at").unwrap_or_default().to_owned(),
        download_url: None,
    })
}

fn document_gone() -> ApiError {
    ApiError::NotFound("no such document")
}

/// The S3 key of a document's file.
fn file_key(user_id: &str, session_id: &str, document_id: &str) -> String {
    format!("documents/{user_id}/{session_id}/{document_id}")
}

/// The sort key of a document under its session's [`keys::chat_messages`] partition.
fn document_sk(document_id: &str) -> String {
    format!("DOC#{document_id}")
}

/// The document of a path in the caller's session.
async fn owned(state: &State, req: &Request) -> Result<(Caller, String, Item), ApiError> {
    let caller = Caller::from_request(req)?;
    let id = path_id(req).ok_or_else(sessions::not_found)?;
    let document_id = path_param(req, "document_id")
        .filter(|d| uuid::Uuid::parse_str(d).is_ok())
        .ok_or_else(document_gone)?;
    sessions::owned(state, &caller.user_id, &id).await?;
    let item = state
        .db
        .get(&keys::chat_messages(&id), &document_sk(&document_id))
        .await?
        .ok_or_else(document_gone)?;
    Ok((caller, id, item))
}

/// Starts a document: its record (uploading) and a presigned PUT for its file.
#[utoipa::path(post, path = "/v1/sessions/{id}/documents", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = CreateDocument,
    responses((status = 201, body = CreatedDocument), (status = 404, body = crate::error::Problem),
        (status = 422, description = "invalid fields (a file over 20 MiB among them); session_kind; too_many_documents", body = crate::error::Problem)))]
pub async fn create_document(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(sessions::not_found)?;
    let body: CreateDocument = json_body(&req, &["application/json"])?;
    let mut errors = Vec::new();
    let filename = check_name("filename", &body.filename, 200)
        .map_err(|_| {
            errors.push(FieldError::new(
                "filename",
                "must be 1 to 200 characters, no control characters",
            ));
        })
        .ok();
    if !TYPES.contains(&body.content_type.as_str()) {
        errors.push(FieldError::new(
            "content_type",
            "must be application/pdf, text/plain or text/markdown",
        ));
    }
    if !(1..=MAX_DOCUMENT_BYTES).contains(&body.size) {
        errors.push(FieldError::new(
            "size",
            format!("must be from 1 to {MAX_DOCUMENT_BYTES} bytes (20 MiB)"),
        ));
    }
    let (Some(filename), true) = (filename, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    crate::conversations::session_of(
        state,
        &caller.user_id,
        &id,
        crate::conversations::TEXT_SESSIONS,
        "documents",
    )
    .await?;
    let document_id = uuid::Uuid::now_v7().to_string();
    let now = timestamp(Utc::now());
    let size = i64::try_from(body.size).context("size")?;
    let stored = vec![
        ("pk", s(keys::chat_messages(&id))),
        ("sk", s(document_sk(&document_id))),
        ("id", s(&document_id)),
        ("session_id", s(&id)),
        ("user_id", s(&caller.user_id)),
        ("filename", s(&filename)),
        ("content_type", s(&body.content_type)),
        ("size", n(size)),
        ("status", s("uploading")),
        ("created_at", s(&now)),
    ];
    // What is stored is what the answer shows: no read back.
    let item: Item = stored
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    let actions = vec![
        crate::db::tx::put(&state.db, stored, Some("attribute_not_exists(pk)"))?,
        crate::db::tx::update(
            &state.db,
            (&keys::user(&caller.user_id), &keys::chat(&id)),
            "SET document_count = if_not_exists(document_count, :zero) + :one",
            Some(
                "attribute_exists(pk) AND (attribute_not_exists(document_count) OR document_count < :most)",
            ),
            &[],
            vec![(":zero", n(0)), (":one", n(1)), (":most", n(MAX_DOCUMENTS))],
        )?,
    ];
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(failed) if failed.get(1) == Some(&true) => {
                match sessions::owned(state, &caller.user_id, &id).await {
                    Ok(_) => ApiError::Unprocessable {
                        code: "too_many_documents",
                        detail: format!("a session keeps at most {MAX_DOCUMENTS} documents"),
                    },
                    Err(err) => err,
                }
            }
            _ => ApiError::Internal(anyhow::Error::new(err).context("starting a document")),
        });
    }
    let presigned = state
        .s3
        .put_object()
        .bucket(crate::media::bucket(state)?)
        .key(file_key(&caller.user_id, &id, &document_id))
        .content_type(&body.content_type)
        .content_length(size)
        .presigned(PresigningConfig::expires_in(URL_LIFETIME).context("presigning config")?)
        .await
        .context("presigning a document's upload")?;
    let expires_at = Utc::now() + chrono::Duration::from_std(URL_LIFETIME).context("lifetime")?;
    json(
        StatusCode::CREATED,
        &CreatedDocument {
            document: view(&item).context("a document as stored")?,
            upload: DocumentUpload {
                method: "PUT",
                url: presigned.uri().to_owned(),
                headers: presigned
                    .headers()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                    .collect(),
                expires_at: timestamp(expires_at),
            },
        },
    )
}

/// Why a completed file is refused: it is removed with its record.
fn refused(code: &'static str, detail: String) -> ApiError {
    ApiError::Unprocessable { code, detail }
}

/// Reads an uploaded document back: its real size, its type by its bytes, its pages and text.
/// Refused files (too large, not what they said, encrypted, too many pages) are removed with
/// their record. A ready document answers as it is.
#[utoipa::path(post, path = "/v1/sessions/{id}/documents/{document_id}/complete", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path), ("document_id" = String, Path)),
    responses((status = 200, body = Document), (status = 404, body = crate::error::Problem),
        (status = 409, description = "not_uploaded: the file is not there yet", body = crate::error::Problem),
        (status = 422, description = "file_too_large, not_a_pdf, not_text, pdf_encrypted, too_many_pages: refused and removed", body = crate::error::Problem)))]
pub async fn complete_document(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let (caller, id, item) = owned(state, &req).await?;
    let document_id = get_s(&item, "id").unwrap_or_default().to_owned();
    if get_s(&item, "status") == Some("ready") {
        return json(StatusCode::OK, &view(&item).ok_or_else(document_gone)?);
    }
    let key = file_key(&caller.user_id, &id, &document_id);
    let bucket = crate::media::bucket(state)?;
    let head = state.s3.head_object().bucket(bucket).key(&key).send().await;
    let real = match head {
        Ok(head) => head.content_length().unwrap_or(0),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
            return Err(ApiError::Conflict {
                code: "not_uploaded",
                detail: "the file is not uploaded yet: PUT it to the upload URL first".into(),
            });
        }
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("reading a document's size"),
            ));
        }
    };
    let content_type = get_s(&item, "content_type").unwrap_or_default().to_owned();
    let read = match u64::try_from(real) {
        Ok(size) if size > MAX_DOCUMENT_BYTES => Err(refused(
            "file_too_large",
            format!(
                "the file is {size} bytes; a document is at most {MAX_DOCUMENT_BYTES} (20 MiB)"
            ),
        )),
        _ => read_text(state, bucket, &key, &content_type).await,
    };
    let extracted = match read {
        Ok(extracted) => extracted,
        Err(err) => {
            remove(state, &caller.user_id, &id, &document_id).await?;
            return Err(err);
        }
    };
    let chars = i64::try_from(extracted.text.chars().count()).unwrap_or(i64::MAX);
    let note = match (chars, content_type.as_str()) {
        (0, "application/pdf") => {
            Some("the PDF has no text layer (a scan?): stored, but it offers no context")
        }
        (0, _) => Some("the file holds no text: stored, but it offers no context"),
        _ => None,
    };
    let mut sets =
        "SET #status = :ready, text_chars = :chars, text_truncated = :truncated, #size = :size"
            .to_owned();
    let mut values = vec![
        (":ready", s("ready")),
        (":chars", n(chars)),
        (
            ":truncated",
            aws_sdk_dynamodb::types::AttributeValue::Bool(extracted.truncated),
        ),
        (":size", n(real)),
    ];
    if chars > 0 {
        sets.push_str(", #text = :text");
        values.push((":text", s(&extracted.text)));
    }
    if let Some(pages) = extracted.pages {
        sets.push_str(", pages = :pages");
        values.push((":pages", n(i64::try_from(pages).unwrap_or(0))));
    }
    if let Some(note) = note {
        sets.push_str(", note = :note");
        values.push((":note", s(note)));
    }
    let mut update = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(keys::chat_messages(&id)))
        .key("sk", s(document_sk(&document_id)))
        .update_expression(sets)
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#size", "size");
    if chars > 0 {
        update = update.expression_attribute_names("#text", "text");
    }
    for (name, value) in values {
        update = update.expression_attribute_values(name, value);
    }
    let item = crate::db::unless_condition_failed(
        update
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await,
    )
    .context("recording a document's text")?
    .and_then(|out| out.attributes)
    .ok_or_else(document_gone)?;
    tracing::info!(document_id, chars, "document read");
    json(StatusCode::OK, &view(&item).ok_or_else(document_gone)?)
}

/// What a file's text is.
struct Text {
    text: String,
    pages: Option<usize>,
    truncated: bool,
}

async fn read_text(
    state: &State,
    bucket: &str,
    key: &str,
    content_type: &str,
) -> Result<Text, ApiError> {
    let object = state
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .context("reading a document")?;
    let bytes = object
        .body
        .collect()
        .await
        .context("reading a document")?
        .into_bytes();
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_DOCUMENT_BYTES {
        return Err(refused(
            "file_too_large",
            "a document is at most 20 MiB".into(),
        ));
    }
    if content_type == "application/pdf" {
        let read = tokio::task::spawn_blocking(move || {
            crate::pdf::extract(&bytes, MAX_PAGES, MAX_TEXT_BYTES)
        })
        .await
        .context("reading a PDF")?;
        return match read {
            Ok(read) => Ok(Text {
                text: read.text,
                pages: Some(read.pages),
                truncated: read.truncated,
            }),
            Err(crate::pdf::PdfError::NotPdf) => {
                Err(refused("not_a_pdf", "the file is not a PDF".into()))
            }
            Err(crate::pdf::PdfError::Encrypted) => Err(refused(
                "pdf_encrypted",
                "the PDF is encrypted; upload it without a password".into(),
            )),
            Err(crate::pdf::PdfError::TooManyPages(pages, most)) => Err(refused(
                "too_many_pages",
                format!("the PDF has {pages} pages; a document has at most {most}"),
            )),
        };
    }
    if bytes.starts_with(b"%PDF-") || bytes.contains(&0) {
        return Err(refused("not_text", "the file is not text".into()));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| refused("not_text", "the file is not UTF-8 text".into()))?;
    let mut cut = text.len().min(MAX_TEXT_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Ok(Text {
        text: text[..cut].trim().to_owned(),
        pages: None,
        truncated: cut < text.len(),
    })
}

/// Removes a document: its record, the session's count, its file.
async fn remove(
    state: &State,
    user_id: &str,
    id: &str,
    document_id: &str,
) -> Result<bool, ApiError> {
    let actions = vec![
        crate::db::tx::delete(
            &state.db,
            (&keys::chat_messages(id), &document_sk(document_id)),
            Some("attribute_exists(pk)"),
            &[],
            Vec::new(),
        )?,
        crate::db::tx::update(
            &state.db,
            (&keys::user(user_id), &keys::chat(id)),
            "SET document_count = document_count - :one",
            Some("attribute_exists(pk) AND document_count > :zero"),
            &[],
            vec![(":one", n(1)), (":zero", n(0))],
        )?,
    ];
    let gone = match crate::db::transact(&state.db, actions).await {
        Ok(()) => true,
        Err(err) if crate::db::failed_conditions(&err).is_some() => false,
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("removing a document"),
            ));
        }
    };
    state
        .s3
        .delete_object()
        .bucket(crate::media::bucket(state)?)
        .key(file_key(user_id, id, document_id))
        .send()
        .await
        .context("removing a document's file")?;
    Ok(gone)
}

/// Your session's documents, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/documents", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = DocumentList), (status = 404, body = crate::error::Problem)))]
pub async fn list_documents(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_id(&req).ok_or_else(sessions::not_found)?;
    sessions::owned(state, &caller.user_id, &id).await?;
    let items = session_documents(state, &id).await?;
    json(
        StatusCode::OK,
        &DocumentList {
            items: items.iter().filter_map(view).collect(),
        },
    )
}

/// Every document item of a session (50 at most), oldest first.
pub(crate) async fn session_documents(
    state: &State,
    session_id: &str,
) -> anyhow::Result<Vec<Item>> {
    let out = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(keys::chat_messages(session_id)))
        .expression_attribute_values(":prefix", s("DOC#"))
        .limit(i32::try_from(MAX_DOCUMENTS).unwrap_or(50))
        .send()
        .await
        .context("listing a session's documents")?;
    Ok(out.items.unwrap_or_default())
}

/// One document of your session, with a download URL once it is ready.
#[utoipa::path(get, path = "/v1/sessions/{id}/documents/{document_id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path), ("document_id" = String, Path)),
    responses((status = 200, body = Document), (status = 404, body = crate::error::Problem)))]
pub async fn get_document(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let (caller, id, item) = owned(state, &req).await?;
    let mut document = view(&item).ok_or_else(document_gone)?;
    if document.status == DocumentStatus::Ready {
        document.download_url = Some(
            crate::media::presign_get(
                state,
                &file_key(&caller.user_id, &id, &document.id),
                URL_LIFETIME,
            )
            .await?,
        );
    }
    json(StatusCode::OK, &document)
}

/// Deletes a document of your session and its file.
#[utoipa::path(delete, path = "/v1/sessions/{id}/documents/{document_id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path), ("document_id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::Problem)))]
pub async fn delete_document(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let (caller, id, item) = owned(state, &req).await?;
    let document_id = get_s(&item, "id").unwrap_or_default().to_owned();
    if !remove(state, &caller.user_id, &id, &document_id).await? {
        return Err(document_gone());
    }
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .context("response")?)
}
