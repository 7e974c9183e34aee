//! The search index in S3 and its readers' and writer's copies: the pointer in DynamoDB, the
//! files under `search/` in the media bucket, each process's folders under /tmp.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use tantivy::IndexReader;

use crate::db::{Db, get_i64, get_s, n, s};
use crate::search::{Change, FILES_PREFIX, Found, Local, POINTER, POINTER_CHECK, Search};

/// The pointer: which version of the index is current.
#[derive(Clone, Debug, Default)]
struct Pointer {
    generation: i64,
    meta: String,
    files: BTreeSet<String>,
    /// Files the previous version dropped: deleted when the next one is published (a reader
    /// fetching the previous version still finds them meanwhile).
    retired: BTreeSet<String>,
}

fn json_set(item: &crate::db::Item, name: &str) -> BTreeSet<String> {
    get_s(item, name)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

async fn pointer(db: &Db) -> anyhow::Result<Option<Pointer>> {
    let Some(item) = db.get(POINTER.0, POINTER.1).await? else {
        return Ok(None);
    };
    Ok(Some(Pointer {
        generation: get_i64(&item, "generation").unwrap_or(0),
        meta: get_s(&item, "meta").unwrap_or_default().to_owned(),
        files: json_set(&item, "files"),
        retired: json_set(&item, "retired"),
    }))
}

/// Each process's copies of the index: the readers' and the writer's (never the same folder).
pub struct Runtime {
    root: PathBuf,
    reader: tokio::sync::Mutex<Option<Copy>>,
    writer: tokio::sync::Mutex<Option<i64>>,
    /// When this process's writer last began a read of the waiting list that found it empty (ms).
    last_run: std::sync::atomic::AtomicI64,
}

struct Copy {
    generation: i64,
    local: std::sync::Arc<Local>,
    reader: IndexReader,
    checked: Instant,
}

impl Runtime {
    /// Copies under `root` (a folder of the process's temporary space, one per table).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            reader: tokio::sync::Mutex::new(None),
            writer: tokio::sync::Mutex::new(None),
            last_run: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Notes that a run of the writer that began reading the waiting list at `began` (ms) found
    /// it empty: everything listed before then is written.
    pub fn caught_up(&self, began: i64) {
        self.last_run
            .fetch_max(began, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the wake-up `body` (as [`poke`] sends it) was answered already (see [`Self::answered`]).
    pub fn answers(&self, body: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|b| b.get("at")?.as_i64())
            .is_some_and(|sent_at| self.answered(sent_at))
    }

    /// Whether a wake-up sent at `sent_at` (ms, the sender's clock) was answered already: a
    /// read of the list that began after it was sent (with a second's margin for the clocks)
    /// found nothing left, so what the sender had listed is written (the list is read
    /// consistently).
    pub fn answered(&self, sent_at: i64) -> bool {
        sent_at + WAKE_MARGIN_MS < self.last_run.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The runtime for the table `table`, under the system's temporary folder.
    pub fn for_table(table: &str) -> Self {
        let safe: String = table
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        remove_orphans(&std::env::temp_dir());
        Self::new(
            std::env::temp_dir().join(format!("lambent-search-{safe}-{}", std::process::id())),
        )
    }
}

/// Removes the copies of processes that are gone (a process that stops is not dropped): each
/// folder's name ends with its process's id. Only where `/proc` tells which processes live.
fn remove_orphans(temp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("lambent-search-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // The copies are a cache of what S3 holds.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// How far two processes' clocks may differ, for [`Runtime::answered`].
const WAKE_MARGIN_MS: i64 = 1_000;

/// Where the index's files are kept: the media bucket.
fn bucket(config: &crate::Config) -> anyhow::Result<&str> {
    config
        .media_bucket
        .as_deref()
        .context("MEDIA_BUCKET is not set: the search index lives there")
}

/// Makes `dir` hold the version `pointer` names: its missing files fetched, its `meta.json`,
/// nothing else of the index's.
async fn materialize(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &Path,
    pointer: &Pointer,
) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let fetches: Vec<_> = pointer
        .files
        .iter()
        .map(|name| fetch(s3, bucket, dir, name))
        .collect();
    futures::stream::iter(fetches)
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    let meta = dir.join("meta.json");
    let partial = dir.join("meta.json.partial");
    tokio::fs::write(&partial, &pointer.meta).await?;
    tokio::fs::rename(&partial, &meta).await?;
    remove_others(dir, &pointer.files).await
}

/// Copies the index file `name` to `dir`, unless it is there.
async fn fetch(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &Path,
    name: &str,
) -> anyhow::Result<()> {
    let path = dir.join(name);
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Ok(());
    }
    let key = format!("{FILES_PREFIX}{name}");
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .with_context(|| format!("reading s3://{bucket}/{key}"))?;
    let partial = dir.join(format!("{name}.partial"));
    let mut file = tokio::fs::File::create(&partial).await?;
    tokio::io::copy(&mut object.body.into_async_read(), &mut file).await?;
    file.sync_all().await?;
    tokio::fs::rename(&partial, &path).await?;
    Ok(())
}

/// Copies the index file `name` from `dir` to S3.
async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &Path,
    name: &str,
) -> anyhow::Result<()> {
    let path = dir.join(name);
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    s3.put_object()
        .bucket(bucket)
        .key(format!("{FILES_PREFIX}{name}"))
        .body(body)
        .send()
        .await
        .with_context(|| format!("uploading the index file {name}"))?;
    Ok(())
}

/// Removes the index files of `dir` that `keep` does not name (an open reader keeps its
/// mapped files until it drops them).
async fn remove_others(dir: &Path, keep: &BTreeSet<String>) -> anyhow::Result<()> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == "meta.json" || name.starts_with(".tantivy") || name == ".managed.json";
        if !ours && !keep.contains(&name) {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
    Ok(())
}

/// Searches the current version of the index (fetching it first if it moved).
pub async fn search(state: &crate::state::State, search: Search<'_>) -> anyhow::Result<Found> {
    let runtime = state.feature::<Runtime>()?;
    let (local, reader) = {
        let mut copy = runtime.reader.lock().await;
        let stale = copy
            .as_ref()
            .is_none_or(|c| c.checked.elapsed() >= POINTER_CHECK);
        if stale {
            match pointer(&state.db).await? {
                None => return Ok(Found::default()),
                Some(p) if copy.as_ref().is_some_and(|c| c.generation == p.generation) => {
                    if let Some(c) = copy.as_mut() {
                        c.checked = Instant::now();
                    }
                }
                Some(p) => {
                    let dir = runtime.root.join("reader");
                    materialize(&state.s3, bucket(&state.config)?, &dir, &p).await?;
                    let local =
                        tokio::task::spawn_blocking(move || Local::open_or_create(&dir)).await??;
                    let reader = local.reader()?;
                    *copy = Some(Copy {
                        generation: p.generation,
                        local: std::sync::Arc::new(local),
                        reader,
                        checked: Instant::now(),
                    });
                }
            }
        }
        match copy.as_ref() {
            Some(c) => (c.local.clone(), c.reader.clone()),
            None => return Ok(Found::default()),
        }
    };
    let (text, kind, exclude) = (
        search.text.to_owned(),
        search.kind,
        search.exclude_owners.clone(),
    );
    let (offset, limit) = (search.offset, search.limit);
    tokio::task::spawn_blocking(move || {
        local.search(
            &reader,
            &Search {
                text: &text,
                kind,
                exclude_owners: &exclude,
                offset,
                limit,
            },
        )
    })
    .await?
}

/// What a write of the index did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Published {
    pub generation: i64,
    pub files: usize,
    pub uploaded: usize,
}

/// Applies `changes` and publishes the new version: its new files to S3, then the pointer,
/// conditioned on the version it was made from. Fails (changing nothing others read) when
/// another writer published first; the caller tries again later from the newer version.
pub async fn apply(state: &crate::state::State, changes: Vec<Change>) -> anyhow::Result<Published> {
    let runtime = state.feature::<Runtime>()?;
    let mut writer_generation = runtime.writer.lock().await;
    let bucket = bucket(&state.config)?;
    let dir = runtime.root.join("writer");
    let current = pointer(&state.db).await?.unwrap_or_default();
    if *writer_generation != Some(current.generation) {
        // Start from the published version: another process may have written since.
        let _ = tokio::fs::remove_dir_all(&dir).await;
        if current.generation > 0 {
            materialize(&state.s3, bucket, &dir, &current).await?;
        }
        *writer_generation = None;
    }
    let work_dir = dir.clone();
    let files =
        tokio::task::spawn_blocking(move || Local::open_or_create(&work_dir)?.apply(&changes))
            .await??;
    let new: Vec<&String> = files.difference(&current.files).collect();
    let uploads: Vec<_> = new
        .iter()
        .map(|name| upload(&state.s3, bucket, &dir, name))
        .collect();
    futures::stream::iter(uploads)
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    let meta = tokio::fs::read_to_string(dir.join("meta.json")).await?;
    let generation = current.generation + 1;
    let retired: BTreeSet<String> = current.files.difference(&files).cloned().collect();
    let published = state
        .db
        .client
        .put_item()
        .table_name(&state.db.table)
        .item("pk", s(POINTER.0))
        .item("sk", s(POINTER.1))
        .item("generation", n(generation))
        .item("meta", s(meta))
        .item("files", s(serde_json::to_string(&files)?))
        .item("retired", s(serde_json::to_string(&retired)?))
        .condition_expression("attribute_not_exists(pk) OR generation = :previous")
        .expression_attribute_values(":previous", n(current.generation))
        .send()
        .await;
    if let Err(err) = published {
        *writer_generation = None;
        return Err(anyhow::Error::new(err).context("publishing the search index"));
    }
    *writer_generation = Some(generation);
    // The version before the previous one is read by no one now.
    for name in current.retired.difference(&files) {
        let _ = state
            .s3
            .delete_object()
            .bucket(bucket)
            .key(format!("{FILES_PREFIX}{name}"))
            .send()
            .await;
    }
    remove_others(&dir, &files).await?;
    Ok(Published {
        generation,
        files: files.len(),
        uploaded: new.len(),
    })
}

/// Wakes the writer (`SEARCH_QUEUE_URL`) after a change to the list; a failure is logged, not
/// the request's: the writer's schedule finds the list all the same.
pub async fn poke(state: &crate::state::State) {
    let Some(queue) = &state.config.search_queue_url else {
        return;
    };
    if let Err(err) = state
        .send_json(
            queue,
            &serde_json::json!({"sync": true, "at": chrono::Utc::now().timestamp_millis()}),
        )
        .await
    {
        tracing::warn!(
            error = format!("{err:#}"),
            "the search writer was not woken"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_process_s_copies_are_removed_and_a_live_one_s_kept() {
        let temp = std::env::temp_dir().join(format!("lambent-orphans-{}", uuid::Uuid::new_v4()));
        let live = temp.join(format!("lambent-search-t1-Table-{}", std::process::id()));
        let gone = temp.join(format!("lambent-search-t2-Table-{}", u32::MAX - 7));
        let other = temp.join("someone-else-42");
        for dir in [&live, &gone, &other] {
            std::fs::create_dir_all(dir).expect("dir");
        }
        remove_orphans(&temp);
        assert!(live.exists() && other.exists());
        assert!(!gone.exists());
        let _ = std::fs::remove_dir_all(&temp);
    }

    #[test]
    fn a_wake_up_sent_before_a_run_that_caught_up_is_answered() {
        let runtime = Runtime::new(std::env::temp_dir().join("lambent-search-answered-test"));
        assert!(!runtime.answered(0), "nothing has run");
        runtime.caught_up(10_000);
        assert!(runtime.answered(8_999));
        assert!(
            !runtime.answered(9_000),
            "within the clocks' margin: run again"
        );
        assert!(!runtime.answered(12_000));
        runtime.caught_up(5_000);
        assert!(
            runtime.answered(8_999),
            "an older run does not move it back"
        );
    }
}
