//! Provider outputs copied into our bucket at once (provider URLs expire within the hour), each
//! recorded with its content type, size, SHA-256 and, for images, its dimensions.

use anyhow::Context as _;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use crate::generation::providers::{ProviderError, RemoteFile, read_limited};
use crate::jobs::model::Job;
use crate::state::State;

/// The most files one job keeps.
pub const MAX_FILES: usize = 16;
/// The largest file one job keeps.
pub const MAX_FILE_BYTES: usize = 100 * 1024 * 1024;

/// A generated file in our bucket.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
pub struct FileArtifact {
    pub key: String,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Why outputs could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The files are gone or unusable: the job fails.
    #[error("{0}")]
    Permanent(String),
    /// Worth another attempt (the provider's webhook retry, or the reconciler).
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
}

/// Known media types and the extension their keys get.
const EXTENSIONS: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/webp", "webp"),
    ("image/gif", "gif"),
    ("video/mp4", "mp4"),
    ("video/webm", "webm"),
    ("video/quicktime", "mov"),
    ("audio/mpeg", "mp3"),
    ("audio/wav", "wav"),
    ("audio/x-wav", "wav"),
    ("audio/ogg", "ogg"),
    ("audio/flac", "flac"),
    ("application/json", "json"),
];

fn extension(content_type: &str) -> &'static str {
    EXTENSIONS
        .iter()
        .find(|(t, _)| *t == content_type)
        .map_or("bin", |(_, e)| e)
}

/// The key of a job's `index`-th file.
pub fn file_key(job: &Job, index: usize, content_type: &str) -> String {
    format!(
        "{}{index}.{}",
        crate::media::output_prefix(crate::media::Outputs::Generations, &job.user_id, &job.id),
        extension(content_type)
    )
}

/// Copies every file to `generations/{user}/{job}/{n}.{ext}`. The keys depend only on the job and
/// the file's place, so a second delivery of the same result overwrites the same objects.
pub async fn copy(
    state: &State,
    job: &Job,
    files: &[RemoteFile],
) -> Result<Vec<FileArtifact>, CopyError> {
    if files.len() > MAX_FILES {
        return Err(CopyError::Permanent(format!(
            "the provider returned {} files; at most {MAX_FILES} are kept",
            files.len()
        )));
    }
    let bucket = crate::media::bucket(state)?;
    let mut artifacts = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        crate::net::validate_url(&file.url, "url", state.config.allow_private_webhooks).map_err(
            |e| CopyError::Permanent(format!("an output URL was refused: {}", e.message)),
        )?;
        let response = state.http.files.get(&file.url).send().await.map_err(|e| {
            CopyError::Transient(anyhow::anyhow!("fetching an output: {}", e.without_url()))
        })?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(CopyError::Transient(anyhow::anyhow!(
                "the provider's file server answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(CopyError::Permanent(format!(
                "an output file could not be fetched ({status})"
            )));
        }
        let header_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let bytes = read_limited(response, MAX_FILE_BYTES)
            .await
            .map_err(|e| match e {
                ProviderError::Rejected(m) => CopyError::Permanent(m),
                other => CopyError::Transient(anyhow::anyhow!("reading an output: {other}")),
            })?;
        // Only the header is read: any size is fine for recording dimensions.
        let limits = crate::images::Limits {
            max_bytes: MAX_FILE_BYTES as u64,
            max_side: u32::MAX,
            max_pixels: u64::MAX,
        };
        let inspected = crate::images::inspect(&bytes, &limits).ok();
        // Trust the bytes for images; else the provider's declared type, then the server's.
        let content_type = inspected
            .as_ref()
            .map(|i| i.format.to_mime_type().to_owned())
            .or_else(|| file.content_type.clone())
            .or(header_type)
            .filter(|t| t.len() <= 100 && t.contains('/'))
            .unwrap_or_else(|| "application/octet-stream".into());
        let key = file_key(job, index, &content_type);
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        state
            .s3
            .put_object()
            .bucket(bucket)
            .key(&key)
            .content_type(&content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .context("storing an output")?;
        artifacts.push(FileArtifact {
            key,
            content_type,
            bytes: size,
            sha256,
            width: inspected.as_ref().map(|i| i.width),
            height: inspected.as_ref().map(|i| i.height),
        });
    }
    Ok(artifacts)
}

/// How long a presigned file URL in a job view works.
pub const FILE_URL_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// Adds a presigned GET `url` to each of a finished job's generated files.
pub async fn add_urls(state: &State, job: &mut Job) -> anyhow::Result<()> {
    let Some(files) = job
        .output
        .as_mut()
        .and_then(|o| o.get_mut("files"))
        .and_then(serde_json::Value::as_array_mut)
    else {
        return Ok(());
    };
    let prefix =
        crate::media::output_prefix(crate::media::Outputs::Generations, &job.user_id, &job.id);
    let bucket = crate::media::bucket(state)?;
    for file in files {
        let Some(key) = file["key"].as_str().filter(|k| k.starts_with(&prefix)) else {
            continue;
        };
        let url = state
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(
                FILE_URL_LIFETIME,
            )?)
            .await?;
        file["url"] = serde_json::Value::String(url.uri().to_owned());
    }
    Ok(())
}
