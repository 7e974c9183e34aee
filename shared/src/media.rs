//! The media bucket, shared by every kind: uploads under `uploads/{user}/` (who owns which key,
//! how large each is) and where kinds store what they make.

use anyhow::Context as _;

use crate::error::ApiError;
use crate::http::Caller;
use crate::state::State;

/// The largest upload.
pub const MAX_UPLOAD_BYTES: u64 = 20 * 1024 * 1024;

/// The prefix of a user's uploads; a job may name only keys under its owner's prefix.
pub fn user_prefix(user_id: &str) -> String {
    format!("uploads/{user_id}/")
}

/// Where kinds keep what they make for a job: `{area}/{user}/{job}/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs {
    /// Upscaled photos and best-cut results.
    Photos,
    /// Files copied from the generation providers (images, video, audio, style weights).
    Generations,
    /// Videos: imported uploads and trimmed clips, their posters, strips and previews.
    Videos,
}

impl Outputs {
    pub const ALL: [Self; 3] = [Self::Photos, Self::Generations, Self::Videos];

    fn area(self) -> &'static str {
        match self {
            Self::Photos => "photos",
            Self::Generations => "generations",
            Self::Videos => "videos",
        }
    }
}

/// The prefix of a job's outputs.
pub fn output_prefix(outputs: Outputs, user_id: &str, job_id: &str) -> String {
    format!("{}/{user_id}/{job_id}/", outputs.area())
}

/// Every prefix a user's files are under: their uploads, every job's outputs, their posts' files.
pub fn user_prefixes(user_id: &str) -> Vec<String> {
    let mut prefixes = vec![user_prefix(user_id)];
    prefixes.extend(
        Outputs::ALL
            .iter()
            .map(|o| format!("{}/{user_id}/", o.area())),
    );
    // Posts' own copies of their files.
    prefixes.push(format!("posts/{user_id}/"));
    // Conversations' documents.
    prefixes.push(format!("documents/{user_id}/"));
    prefixes
}

pub fn bucket(state: &State) -> anyhow::Result<&str> {
    state
        .config
        .media_bucket
        .as_deref()
        .context("MEDIA_BUCKET is not set")
}

/// A presigned GET of `key` in the media bucket that works for `lifetime`.
pub async fn presign_get(
    state: &State,
    key: &str,
    lifetime: std::time::Duration,
) -> anyhow::Result<String> {
    let presigned = state
        .s3
        .get_object()
        .bucket(bucket(state)?)
        .key(key)
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(lifetime)
                .context("presigning config")?,
        )
        .await
        .context("presigning a file")?;
    Ok(presigned.uri().to_owned())
}

/// Whether `key` is one of `user_id`'s uploads. Anyone else's key reads as missing.
pub fn owns(user_id: &str, key: &str) -> bool {
    key.strip_prefix(&user_prefix(user_id))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// The size of the caller's upload, or `None` when it does not exist (or is not theirs).
pub async fn upload_size(state: &State, user_id: &str, key: &str) -> anyhow::Result<Option<u64>> {
    if !owns(user_id, key) {
        return Ok(None);
    }
    match state
        .s3
        .head_object()
        .bucket(bucket(state)?)
        .key(key)
        .send()
        .await
    {
        Ok(head) => Ok(Some(
            head.content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
        )),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
        Err(err) => Err(anyhow::Error::new(err).context("reading an upload's size")),
    }
}

/// Refuses, before admission, an upload key that does not exist or is not the caller's.
pub async fn check_uploads(state: &State, caller: &Caller, keys: &[&str]) -> Result<(), ApiError> {
    for key in keys {
        if upload_size(state, &caller.user_id, key).await?.is_none() {
            return Err(ApiError::NotFound("no such upload"));
        }
    }
    Ok(())
}

/// Deletes every object under `prefix` in the media bucket (a thousand at a time); the count.
/// Safe to repeat.
pub async fn delete_prefix(state: &State, prefix: &str) -> anyhow::Result<usize> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let bucket = bucket(state)?;
    let mut deleted = 0;
    let mut token = None;
    loop {
        let page = state
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .context("listing files")?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .context("object identifier")?;
        if !objects.is_empty() {
            deleted += objects.len();
            state
                .s3
                .delete_objects()
                .bucket(bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build()?,
                )
                .send()
                .await
                .context("deleting files")?;
        }
        match page.next_continuation_token {
            Some(next) if page.is_truncated == Some(true) => token = Some(next),
            _ => return Ok(deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_callers_own_uploads_are_theirs() {
        assert!(owns("u1", "uploads/u1/a.jpg"));
        assert!(!owns("u1", "uploads/u2/a.jpg"));
        assert!(!owns("u1", "uploads/u1/"));
        assert!(!owns("u1", "uploads/u1/x/a.jpg"));
        assert!(!owns("u1", "uploads/u10/a.jpg"));
    }
}
