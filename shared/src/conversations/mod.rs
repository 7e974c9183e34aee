//! WEAV's conversations: folders, and sessions in them (`chat`, `image`, `studio`). Everything
//! lives in its owner's partition, so someone else's id is simply not there (404).
//!
//! Folders count against a limit kept on the profile, moved in the same transaction as the
//! folder; a folder is deleted once it is empty.

pub mod documents;
pub mod folders;
pub mod images;
pub mod llm;
pub mod messages;
pub mod replies;
pub mod sessions;
pub mod stream;

use crate::error::ApiError;

/// Folders per account.
pub const MAX_FOLDERS: i64 = 200;

fn check_name(field: &str, name: &str, most: usize) -> Result<String, ApiError> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > most || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("must be 1 to {most} characters, no control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// A path's id, if it is an id at all (a UUID); anything else is not found.
fn path_id(req: &lambda_http::Request) -> Option<String> {
    crate::http::path_param(req, "id").filter(|id| uuid::Uuid::parse_str(id).is_ok())
}

/// The caller's session `id` when it is of one of `kinds` (else 422 `session_kind`, saying it
/// keeps no `what`): chat and documents are for `chat` and `studio` sessions, images for
/// `image` and `studio` ones.
pub(crate) async fn session_of(
    state: &crate::state::State,
    user_id: &str,
    id: &str,
    kinds: &[&str],
    what: &str,
) -> Result<crate::db::Item, ApiError> {
    let session = sessions::owned(state, user_id, id).await?;
    let kind = crate::db::get_s(&session, "kind").unwrap_or("unknown");
    if kinds.contains(&kind) {
        return Ok(session);
    }
    Err(ApiError::Unprocessable {
        code: "session_kind",
        detail: format!(
            "a session of kind {kind} keeps no {what}; use a {} session",
            kinds.join(" or ")
        ),
    })
}

/// The kinds of session that hold text: chat and documents.
pub(crate) const TEXT_SESSIONS: &[&str] = &["chat", "studio"];
