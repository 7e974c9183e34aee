//! Posts: a finished job's outputs, photos or a style showcase, published with a caption
//! (hashtags and mentions read from it) to everyone, to followers or to no one else; edited with
//! `If-Match`; deleted with everything that hangs on them.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::db::{Item, get_i64, get_s, n, s, tx};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json_body, path_param};
use crate::jobs::model::Status;
use crate::keys;
use crate::post::Reaction;
use crate::social::{blocked_between, profiles};
use crate::state::State;

/// The longest caption, in characters (Instagram's).
pub const MAX_CAPTION_CHARS: usize = 2_200;
/// The most distinct hashtags a caption may carry (Instagram's).
pub const MAX_HASHTAGS: usize = 30;
/// The most distinct accounts a caption may mention.
pub const MAX_MENTIONS: usize = 20;
/// The most media one post carries (a carousel's).
pub const MAX_MEDIA: usize = 10;
/// The longest hashtag, in characters.
const MAX_HASHTAG_CHARS: usize = 100;
/// How long a medium's URL works.
pub const MEDIA_URL_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Who may see a post.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone, signed in or not.
    #[default]
    Public,
    /// The author's followers.
    Followers,
    /// The author alone.
    Private,
}

impl Visibility {
    fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Followers => "followers",
            Self::Private => "private",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "public" => Some(Self::Public),
            "followers" => Some(Self::Followers),
            "private" => Some(Self::Private),
            _ => None,
        }
    }
}

/// A post's file, as stored.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Medium {
    pub key: String,
    pub content_type: String,
    pub bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// The attribute moderation sets on a post or comment it hides.
pub const MODERATION_HIDDEN: &str = "moderation_hidden";

/// A post as stored.
#[derive(Clone, Debug)]
pub struct Post {
    pub id: String,
    pub author_id: String,
    pub caption: String,
    pub hashtags: Vec<String>,
    pub mentions: Vec<String>,
    pub visibility: Visibility,
    pub media: Vec<Medium>,
    pub style_id: Option<String>,
    pub source_job_id: Option<String>,
    /// The post this one remixes, and the chain above it: from the original to the source.
    pub remix_of: Option<String>,
    pub remix_chain: Vec<String>,
    /// Hidden by moderation (reported past the threshold): only its author sees it.
    pub hidden: bool,
    pub version: i64,
    /// When it was published (ms).
    pub at: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl Post {
    fn from_item(item: &Item) -> Option<Self> {
        let text = |name| get_s(item, name).map(str::to_owned);
        let list = |name| -> Vec<String> {
            get_s(item, name)
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default()
        };
        Some(Self {
            id: text("id")?,
            author_id: text("author_id")?,
            caption: text("caption").unwrap_or_default(),
            hashtags: list("hashtags"),
            mentions: list("mentions"),
            visibility: get_s(item, "visibility").and_then(Visibility::parse)?,
            media: get_s(item, "media")
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default(),
            style_id: text("style_id"),
            source_job_id: text("source_job_id"),
            remix_of: text("remix_of"),
            remix_chain: list("remix_chain"),
            hidden: item.contains_key(MODERATION_HIDDEN),
            version: get_i64(item, "version").unwrap_or(1),
            at: get_i64(item, "at").unwrap_or(0),
            created_at: text("created_at").unwrap_or_default(),
            updated_at: text("updated_at").unwrap_or_default(),
        })
    }

    /// The strong ETag of this version (RFC 9110 §8.8.3).
    pub fn etag(&self) -> String {
        format!("\"v{}\"", self.version)
    }
}

/// The post `id` names, if it exists.
pub async fn load(state: &State, id: &str) -> Result<Option<Post>, ApiError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    let item = state.db.get(&keys::post(id), keys::POST).await?;
    Ok(item.as_ref().and_then(Post::from_item))
}

/// Whether `viewer` (`None`: someone not signed in) may see the post: its author always; anyone
/// else not blocked either way, and for a followers' post only a follower.
pub async fn can_see(state: &State, viewer: Option<&str>, post: &Post) -> Result<bool, ApiError> {
    let Some(viewer) = viewer else {
        return Ok(post.visibility == Visibility::Public && !post.hidden);
    };
    if viewer == post.author_id {
        return Ok(true);
    }
    if post.hidden {
        return Ok(false);
    }
    match post.visibility {
        Visibility::Private => return Ok(false),
        Visibility::Public => {}
        Visibility::Followers => {
            let follows = state
                .db
                .get(&keys::follow(viewer, &post.author_id), keys::EDGE)
                .await?
                .is_some();
            if !follows {
                return Ok(false);
            }
        }
    }
    Ok(!blocked_between(state, viewer, &post.author_id).await?)
}

/// Those of `posts` that `viewer` may see, in order: the blocks read once, the follows of the
/// followers' posts' authors in one batch.
pub async fn visible_posts(
    state: &State,
    viewer: Option<&str>,
    posts: Vec<Post>,
) -> Result<Vec<Post>, ApiError> {
    let Some(viewer) = viewer else {
        return Ok(posts
            .into_iter()
            .filter(|p| p.visibility == Visibility::Public && !p.hidden)
            .collect());
    };
    let hidden = crate::social::hidden_from(state, viewer).await?;
    let mut authors: Vec<(String, String)> = posts
        .iter()
        .filter(|p| p.visibility == Visibility::Followers && p.author_id != viewer)
        .map(|p| (keys::follow(viewer, &p.author_id), keys::EDGE.to_owned()))
        .collect();
    authors.sort();
    authors.dedup();
    let followed: std::collections::HashSet<String> = state
        .db
        .batch_get_many(&authors)
        .await?
        .iter()
        .filter_map(|edge| get_s(edge, "followee").map(str::to_owned))
        .collect();
    Ok(posts
        .into_iter()
        .filter(|p| {
            p.author_id == viewer
                || (!hidden.contains(&p.author_id)
                    && !p.hidden
                    && match p.visibility {
                        Visibility::Public => true,
                        Visibility::Followers => followed.contains(&p.author_id),
                        Visibility::Private => false,
                    })
        })
        .collect())
}

/// The post `id` names as `viewer` may see it; 404 when it does not exist or they may not.
pub async fn visible(state: &State, viewer: Option<&str>, id: &str) -> Result<Post, ApiError> {
    match load(state, id).await? {
        Some(post) if can_see(state, viewer, &post).await? => Ok(post),
        _ => Err(ApiError::NotFound("no such post")),
    }
}

/// The hashtags (`#word`, lower-cased) and mentions (`@handle`) of a caption, each once, in order.
pub fn extract(caption: &str) -> (Vec<String>, Vec<String>) {
    let mut hashtags: Vec<String> = Vec::new();
    let mut mentions: Vec<String> = Vec::new();
    let chars: Vec<char> = caption.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if (c == '#' || c == '@') && starts {
            let word_char = |ch: char| {
                if c == '#' {
                    ch.is_alphanumeric() || ch == '_'
                } else {
                    ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'
                }
            };
            let end = (i + 1..chars.len())
                .find(|&j| !word_char(chars[j]))
                .unwrap_or(chars.len());
            let word: String = chars[i + 1..end].iter().collect();
            let word = word.trim_end_matches('.').to_lowercase();
            let into = if c == '#' {
                &mut hashtags
            } else {
                &mut mentions
            };
            if !word.is_empty() && !into.contains(&word) {
                into.push(word);
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    (hashtags, mentions)
}

fn check_caption(caption: &str) -> Result<(Vec<String>, Vec<String>), FieldError> {
    if caption.chars().count() > MAX_CAPTION_CHARS {
        return Err(FieldError::new(
            "caption",
            format!("at most {MAX_CAPTION_CHARS} characters"),
        ));
    }
    let (hashtags, mentions) = extract(caption);
    if hashtags.len() > MAX_HASHTAGS {
        return Err(FieldError::new(
            "caption",
            format!("at most {MAX_HASHTAGS} hashtags"),
        ));
    }
    if hashtags
        .iter()
        .any(|h| h.chars().count() > MAX_HASHTAG_CHARS)
    {
        return Err(FieldError::new(
            "caption",
            format!("a hashtag has at most {MAX_HASHTAG_CHARS} characters"),
        ));
    }
    if mentions.len() > MAX_MENTIONS {
        return Err(FieldError::new(
            "caption",
            format!("at most {MAX_MENTIONS} mentions"),
        ));
    }
    Ok((hashtags, mentions))
}

/// `POST /v1/posts`: what to publish (a finished job's outputs or photos you uploaded), with
/// an optional caption, visibility and style.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePost {
    /// Up to 2,200 characters; its `#hashtags` (at most 30) and `@mentions` (at most 20) are
    /// read from it.
    #[serde(default)]
    #[schema(max_length = 2200)]
    pub caption: Option<String>,
    /// `public` (default), `followers` or `private`.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// A finished (`COMPLETED`) job of yours whose image and video outputs the post shows.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Or up to 10 of your uploads (`POST /v1/uploads`).
    #[serde(default)]
    #[schema(max_items = 10)]
    pub upload_keys: Option<Vec<String>>,
    /// A style of yours (a finished `train_style` job) the post shows off.
    #[serde(default)]
    pub style_id: Option<String>,
    /// The post this one remixes (a post you may see, not someone else's private one); by default
    /// the `remix_of` of the job's input.
    #[serde(default)]
    pub remix_of: Option<String>,
}

/// The author as a post shows them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Author {
    pub id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
}

/// A post's file, as served: a presigned URL.
#[derive(Serialize, ToSchema)]
pub struct MediumView {
    pub url: String,
    pub url_expires_at: String,
    pub content_type: String,
    pub bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// A post's counts, exact: the sums of its counter shards.
#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct PostCounts {
    pub likes: i64,
    pub comments: i64,
    pub shares: i64,
    pub remixes: i64,
}

/// Where the signed-in viewer stands with a post.
#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct ViewerState {
    pub liked: bool,
    pub bookmarked: bool,
    pub shared: bool,
}

/// A post as served.
#[derive(Serialize, ToSchema)]
pub struct PostView {
    pub id: String,
    /// `null` when the author's account is being deleted.
    pub author: Option<Author>,
    pub caption: String,
    pub hashtags: Vec<String>,
    pub mentions: Vec<String>,
    pub visibility: Visibility,
    pub media: Vec<MediumView>,
    pub style_id: Option<String>,
    pub source_job_id: Option<String>,
    /// The post this one remixes (its source), if any; `GET /v1/posts/{id}/chain` walks up to
    /// the original.
    pub remix_of: Option<String>,
    pub counts: PostCounts,
    /// Only to a signed-in viewer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer: Option<ViewerState>,
    /// The version `If-Match` names (also the `ETag`).
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// The counts of these posts, from their shards (BatchGetItems of 100).
pub async fn counts(
    state: &State,
    post_ids: &[&str],
) -> Result<HashMap<String, PostCounts>, ApiError> {
    let keys: Vec<(String, String)> = post_ids
        .iter()
        .flat_map(|id| {
            (0..keys::POST_STAT_SHARDS)
                .map(move |shard| (keys::post_stat(id, shard), keys::STAT.to_owned()))
        })
        .collect();
    let mut totals: HashMap<String, PostCounts> = post_ids
        .iter()
        .map(|id| ((*id).to_owned(), PostCounts::default()))
        .collect();
    for shard in state.db.batch_get_many(&keys).await? {
        let Some(post_id) = get_s(&shard, "post_id") else {
            continue;
        };
        if let Some(total) = totals.get_mut(post_id) {
            total.likes += get_i64(&shard, "likes").unwrap_or(0);
            total.comments += get_i64(&shard, "comments").unwrap_or(0);
            total.shares += get_i64(&shard, "shares").unwrap_or(0);
            total.remixes += get_i64(&shard, "remixes").unwrap_or(0);
        }
    }
    Ok(totals)
}

/// Where `viewer` stands with each of these posts (their reactions' items, in one batch).
async fn viewer_states(
    state: &State,
    viewer: &str,
    post_ids: &[&str],
) -> Result<HashMap<String, ViewerState>, ApiError> {
    let keys: Vec<(String, String)> = post_ids
        .iter()
        .flat_map(|id| {
            Reaction::ALL
                .iter()
                .map(move |r| (keys::user(viewer), keys::reaction(r.name(), id)))
        })
        .collect();
    let mut states: HashMap<String, ViewerState> = HashMap::new();
    for item in state.db.batch_get_many(&keys).await? {
        let (Some(post_id), Some(kind)) = (get_s(&item, "post_id"), get_s(&item, "kind")) else {
            continue;
        };
        let entry = states.entry(post_id.to_owned()).or_default();
        match kind {
            "like" => entry.liked = true,
            "share" => entry.shared = true,
            "bookmark" => entry.bookmarked = true,
            _ => {}
        }
    }
    Ok(states)
}

/// These accounts as posts and comments show them (one batch); accounts being deleted left out.
pub async fn authors(
    state: &State,
    ids: impl Iterator<Item = &str>,
) -> Result<HashMap<String, Author>, ApiError> {
    Ok(profiles::many(state, ids)
        .await?
        .into_iter()
        .map(|(id, p)| {
            (
                id,
                Author {
                    id: p.id,
                    username: p.username,
                    display_name: p.display_name,
                    photo_url: p.photo_url,
                },
            )
        })
        .collect())
}

/// A page of posts as served, with its `Link`.
pub fn page(
    req: &Request,
    items: Vec<PostView>,
    next_cursor: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let link = next_cursor.clone();
    crate::social::page_response(req, &PostPage { items, next_cursor }, link.as_deref())
}

/// These posts as `viewer` is shown them, in the same order: authors, counts and the viewer's
/// reactions read in batches, the three at once.
pub async fn views(
    state: &State,
    viewer: Option<&str>,
    posts: Vec<Post>,
) -> Result<Vec<PostView>, ApiError> {
    let ids: Vec<&str> = posts.iter().map(|p| p.id.as_str()).collect();
    let reactions = async {
        match viewer {
            Some(viewer) => viewer_states(state, viewer, &ids).await.map(Some),
            None => Ok(None),
        }
    };
    let (counts, viewer_states, authors) = tokio::try_join!(
        counts(state, &ids),
        reactions,
        authors(state, posts.iter().map(|p| p.author_id.as_str())),
    )?;
    let expires = crate::users::timestamp(
        Utc::now() + chrono::Duration::from_std(MEDIA_URL_LIFETIME).context("lifetime")?,
    );
    let mut views = Vec::with_capacity(posts.len());
    for post in posts {
        let mut media = Vec::with_capacity(post.media.len());
        for medium in &post.media {
            media.push(MediumView {
                url: crate::media::presign_get(state, &medium.key, MEDIA_URL_LIFETIME).await?,
                url_expires_at: expires.clone(),
                content_type: medium.content_type.clone(),
                bytes: medium.bytes,
                width: medium.width,
                height: medium.height,
            });
        }
        views.push(PostView {
            author: authors.get(&post.author_id).cloned(),
            counts: counts.get(&post.id).copied().unwrap_or_default(),
            viewer: viewer_states
                .as_ref()
                .map(|states| states.get(&post.id).copied().unwrap_or_default()),
            id: post.id,
            caption: post.caption,
            hashtags: post.hashtags,
            mentions: post.mentions,
            visibility: post.visibility,
            media,
            style_id: post.style_id,
            source_job_id: post.source_job_id,
            remix_of: post.remix_of,
            version: post.version,
            created_at: post.created_at,
            updated_at: post.updated_at,
        });
    }
    Ok(views)
}

fn with_etag(mut response: Response<Body>, etag: &str) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert("etag", value);
    }
    response
}

async fn respond(
    state: &State,
    viewer: Option<&str>,
    status: StatusCode,
    post: Post,
) -> Result<Response<Body>, ApiError> {
    let etag = post.etag();
    let view = views(state, viewer, vec![post])
        .await?
        .pop()
        .context("one view")?;
    Ok(with_etag(crate::http::json(status, &view)?, &etag))
}

/// The image and video files among a finished job's outputs (every `{key, content_type}` under
/// the job's own prefixes).
fn job_media(job_output: &Value, user_id: &str, job_id: &str) -> Vec<Medium> {
    let prefixes: Vec<String> = crate::media::Outputs::ALL
        .iter()
        .map(|o| crate::media::output_prefix(*o, user_id, job_id))
        .collect();
    let mut found = Vec::new();
    let mut stack = vec![job_output];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let (Some(Value::String(key)), Some(Value::String(content_type))) =
                    (map.get("key"), map.get("content_type"))
                    && prefixes.iter().any(|p| key.starts_with(p))
                    && (content_type.starts_with("image/") || content_type.starts_with("video/"))
                {
                    found.push(Medium {
                        key: key.clone(),
                        content_type: content_type.clone(),
                        bytes: map.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                        width: map
                            .get("width")
                            .and_then(Value::as_u64)
                            .and_then(|w| u32::try_from(w).ok()),
                        height: map
                            .get("height")
                            .and_then(Value::as_u64)
                            .and_then(|h| u32::try_from(h).ok()),
                    });
                } else {
                    stack.extend(map.values().rev());
                }
            }
            Value::Array(items) => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
    found
}

/// The caller's finished job `id` of `kind` (any kind when `None`); 404 otherwise.
async fn finished_job(
    state: &State,
    caller: &Caller,
    id: &str,
    kind: Option<&str>,
    what: &'static str,
) -> Result<crate::jobs::model::Job, ApiError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::NotFound(what));
    }
    crate::jobs::store::get(&state.db, id)
        .await?
        .filter(|job| job.user_id == caller.user_id)
        .filter(|job| kind.is_none_or(|k| job.kind == k))
        .filter(|job| job.status == Status::Completed)
        .ok_or(ApiError::NotFound(what))
}

/// The files a new post shows, before they are copied to it.
async fn sources(
    state: &State,
    caller: &Caller,
    body: &CreatePost,
) -> Result<(Vec<Medium>, Option<String>), ApiError> {
    match (&body.job_id, &body.upload_keys) {
        (Some(job_id), None) => {
            let job = finished_job(state, caller, job_id, None, "no such finished job").await?;
            let media = job_media(
                job.output.as_ref().unwrap_or(&Value::Null),
                &caller.user_id,
                &job.id,
            );
            if media.is_empty() {
                return Err(ApiError::Unprocessable {
                    code: "nothing_to_post",
                    detail: "the job made no image or video to post".into(),
                });
            }
            let remix_of = job
                .input
                .get("remix_of")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok((media.into_iter().take(MAX_MEDIA).collect(), remix_of))
        }
        (None, Some(keys)) => {
            if keys.is_empty() || keys.len() > MAX_MEDIA {
                return Err(ApiError::invalid(
                    "upload_keys",
                    format!("1 to {MAX_MEDIA} uploads"),
                ));
            }
            let mut media = Vec::new();
            for key in keys {
                if !crate::media::owns(&caller.user_id, key) {
                    return Err(ApiError::NotFound("no such upload"));
                }
                let head = state
                    .s3
                    .head_object()
                    .bucket(crate::media::bucket(state)?)
                    .key(key)
                    .send()
                    .await;
                let head = match head {
                    Ok(head) => head,
                    Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
                        return Err(ApiError::NotFound("no such upload"));
                    }
                    Err(err) => {
                        return Err(ApiError::Internal(
                            anyhow::Error::new(err).context("reading an upload"),
                        ));
                    }
                };
                media.push(Medium {
                    key: key.clone(),
                    content_type: head
                        .content_type()
                        .unwrap_or("application/octet-stream")
                        .to_owned(),
                    bytes: head
                        .content_length()
                        .and_then(|b| u64::try_from(b).ok())
                        .unwrap_or(0),
                    width: None,
                    height: None,
                });
            }
            Ok((media, None))
        }
        _ => Err(ApiError::invalid(
            "job_id",
            "give exactly one of job_id and upload_keys",
        )),
    }
}

/// The prefix of a post's own copies of its files.
pub fn media_prefix(author_id: &str, post_id: &str) -> String {
    format!("posts/{author_id}/{post_id}/")
}

/// Copies the files into the post's own prefix, so the post keeps them whatever becomes of the
/// job or the upload.
async fn copy_media(
    state: &State,
    author_id: &str,
    post_id: &str,
    media: Vec<Medium>,
) -> Result<Vec<Medium>, ApiError> {
    let bucket = crate::media::bucket(state)?;
    let prefix = media_prefix(author_id, post_id);
    let copies = media.into_iter().enumerate().map(|(i, medium)| {
        let prefix = &prefix;
        async move {
            let extension = medium
                .key
                .rsplit_once('.')
                .map(|(_, e)| e)
                .filter(|e| e.len() <= 5 && !e.contains('/'))
                .unwrap_or("bin");
            let key = format!("{prefix}{i}.{extension}");
            state
                .s3
                .copy_object()
                .bucket(bucket)
                .copy_source(format!("{bucket}/{}", medium.key))
                .key(&key)
                .send()
                .await
                .context("copying a post's file")?;
            Ok::<_, anyhow::Error>(Medium { key, ..medium })
        }
    });
    Ok(futures::future::try_join_all(copies).await?)
}

/// Publishes a post: a finished job's image or video outputs, or up to 10 of your uploads, with
/// an optional caption (hashtags and mentions read from it), visibility and style. Its files
/// are copied to it, so it keeps them.
#[utoipa::path(post, path = "/v1/posts", tag = "social", security(("bearer" = [])), request_body = CreatePost,
    responses((status = 201, body = PostView, headers(("etag" = String))),
        (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such finished job, upload or style of yours; or the account no longer exists", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn create_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: CreatePost = json_body(&req, &["application/json"])?;
    let caption = body.caption.clone().unwrap_or_default();
    let (hashtags, mentions) =
        check_caption(&caption).map_err(|e| ApiError::Validation(vec![e]))?;
    if let Some(style_id) = &body.style_id {
        finished_job(
            state,
            &caller,
            style_id,
            Some("train_style"),
            "no such style",
        )
        .await?;
    }
    let (media, job_remix_of) = sources(state, &caller, &body).await?;
    let source = match body.remix_of.as_ref().or(job_remix_of.as_ref()) {
        Some(source_id) => {
            Some(crate::social::remixes::source(state, &caller.user_id, source_id).await?)
        }
        None => None,
    };
    let id = uuid::Uuid::now_v7().to_string();
    let media = copy_media(state, &caller.user_id, &id, media).await?;
    let now = Utc::now();
    let at = now.timestamp_millis();
    let stamp = crate::users::timestamp(now);
    let visibility = body.visibility.unwrap_or_default();
    let post = Post {
        id: id.clone(),
        author_id: caller.user_id.clone(),
        caption,
        hashtags,
        mentions,
        visibility,
        media,
        style_id: body.style_id.clone(),
        source_job_id: body.job_id.clone(),
        remix_of: source.as_ref().map(|s| s.id.clone()),
        remix_chain: source
            .as_ref()
            .map(crate::social::remixes::chain_of_remix)
            .unwrap_or_default(),
        hidden: false,
        version: 1,
        at,
        created_at: stamp.clone(),
        updated_at: stamp,
    };
    let mut item = vec![
        ("pk", s(keys::post(&id))),
        ("sk", s(keys::POST)),
        ("id", s(&id)),
        ("author_id", s(&caller.user_id)),
        ("caption", s(&post.caption)),
        (
            "hashtags",
            s(serde_json::to_string(&post.hashtags).context("tags")?),
        ),
        (
            "mentions",
            s(serde_json::to_string(&post.mentions).context("mentions")?),
        ),
        ("visibility", s(visibility.as_str())),
        (
            "media",
            s(serde_json::to_string(&post.media).context("media")?),
        ),
        ("version", n(1)),
        ("at", n(at)),
        ("created_at", s(&post.created_at)),
        ("updated_at", s(&post.updated_at)),
    ];
    if let Some(style_id) = &post.style_id {
        item.push(("style_id", s(style_id)));
    }
    if let Some(job_id) = &post.source_job_id {
        item.push(("source_job_id", s(job_id)));
    }
    if let Some(source) = &post.remix_of {
        item.push(("remix_of", s(source)));
        item.push((
            "remix_chain",
            s(serde_json::to_string(&post.remix_chain).context("chain")?),
        ));
    }
    let user = keys::user(&caller.user_id);
    let mut actions = vec![
        tx::put(&state.db, item, Some("attribute_not_exists(pk)"))?,
        entry(state, &user, keys::post_entry(at, &id), &id)?,
        tx::update(
            &state.db,
            (&user, keys::PROFILE),
            "ADD posts_count :one",
            Some("attribute_exists(pk) AND attribute_not_exists(deleted_at)"),
            &[],
            vec![(":one", n(1))],
        )?,
    ];
    if visibility == Visibility::Public {
        actions.push(entry(state, &user, keys::public_post_entry(at, &id), &id)?);
        for tag in &post.hashtags {
            actions.push(entry(
                state,
                &keys::hashtag(tag),
                keys::feed_entry(at, &id),
                &id,
            )?);
        }
        actions.push(crate::search::dirty(
            &state.db,
            &keys::search_post(&id),
            at,
        )?);
        // A public post of a style shows it: the style is found by search while one does.
        if let Some(style_id) = &post.style_id {
            actions.push(entry(
                state,
                &keys::showcases(style_id),
                keys::feed_entry(at, &id),
                &id,
            )?);
        }
        // Counted in its tags' hour and listed in its day, for the rankings.
        actions.extend(crate::social::rankings::publish_actions(
            &state.db,
            &id,
            at,
            &post.hashtags,
        )?);
    }
    // A remix is listed under its source and counted on the source's shards: the count's
    // condition (the shard exists) is the source still existing.
    let remix_count = match &post.remix_of {
        Some(source) => {
            actions.push(entry(
                state,
                &keys::remixes(source),
                keys::remix_entry(at, &id),
                &id,
            )?);
            actions.push(crate::post::count(
                &state.db,
                source,
                &caller.user_id,
                "remixes",
                1,
            )?);
            Some(actions.len() - 1)
        }
        None => None,
    };
    for shard in 0..keys::POST_STAT_SHARDS {
        actions.push(tx::put(
            &state.db,
            vec![
                ("pk", s(keys::post_stat(&id, shard))),
                ("sk", s(keys::STAT)),
                ("post_id", s(&id)),
            ],
            None,
        )?);
    }
    // The fan-out to followers, kept with the post until it is queued.
    let published = (visibility != Visibility::Private).then(|| {
        crate::social::events::Pending::new(crate::social::events::Event::PostPublished {
            post_id: id.clone(),
            author_id: caller.user_id.clone(),
            at,
            after: None,
        })
    });
    if let Some(pending) = &published {
        actions.push(pending.record(&state.db)?);
    }
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {}
        Err(err) if crate::db::failed_conditions(&err).is_some() => {
            crate::media::delete_prefix(state, &media_prefix(&caller.user_id, &id)).await?;
            let failed = crate::db::failed_conditions(&err).unwrap_or_default();
            if remix_count.is_some_and(|i| failed.get(i) == Some(&true)) {
                return Err(ApiError::NotFound("no such post to remix"));
            }
            return Err(ApiError::NotFound("the account no longer exists"));
        }
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("publishing a post"),
            ));
        }
    }
    tracing::info!(post_id = %id, visibility = visibility.as_str(), "post published");
    if visibility == Visibility::Public {
        crate::search::index::poke(state).await;
    }
    if let Some(pending) = published {
        pending.queue(state).await;
    }
    respond(state, Some(&caller.user_id), StatusCode::CREATED, post).await
}

fn entry(
    state: &State,
    user: &str,
    sk: String,
    post_id: &str,
) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, ApiError> {
    Ok(tx::put(
        &state.db,
        vec![("pk", s(user)), ("sk", s(sk)), ("post_id", s(post_id))],
        None,
    )?)
}

/// A post, as the signed-in caller may see it (followers' posts to followers, private ones to
/// their author), with the caller's likes, bookmarks and shares of it.
#[utoipa::path(get, path = "/v1/posts/{id}", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = PostView, headers(("etag" = String))),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn get_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let post = visible(state, Some(&caller.user_id), &id).await?;
    respond(state, Some(&caller.user_id), StatusCode::OK, post).await
}

/// A public post, readable without signing in (rate-limited per address).
#[utoipa::path(get, path = "/v1/public/posts/{id}", tag = "social", params(("id" = String, Path)),
    responses((status = 200, body = PostView, headers(("etag" = String))),
        (status = 404, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn get_public_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    profiles::limit_reads(state, &req).await?;
    let id = path_param(&req, "id").unwrap_or_default();
    let post = visible(state, None, &id).await?;
    respond(state, None, StatusCode::OK, post).await
}

/// `PATCH /v1/posts/{id}`: what to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePost {
    #[serde(default)]
    #[schema(max_length = 2200)]
    pub caption: Option<String>,
    #[serde(default)]
    pub visibility: Option<Visibility>,
}

/// The version an `If-Match` names: `Some(None)` for `*`, 428 without one, 412 for one that is
/// no version of ours (weak tags never match, RFC 9110 §13.1.1).
fn if_match(req: &Request) -> Result<Option<i64>, ApiError> {
    let raw = req
        .headers()
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(ApiError::PreconditionRequired(
            "send If-Match with the post's ETag",
        ))?;
    if raw == "*" {
        return Ok(None);
    }
    raw.strip_prefix("\"v")
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or(ApiError::PreconditionFailed(
            "the post has changed since that version; read it again",
        ))
}

/// Edits your post's caption or visibility. Needs `If-Match` with the post's `ETag`: 412 when
/// the post changed since (a stale edit loses nothing), 428 without one.
#[utoipa::path(patch, path = "/v1/posts/{id}", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path),
        ("If-Match" = String, Header, description = "the post's ETag, as the last read gave it")),
    request_body = UpdatePost,
    responses((status = 200, body = PostView, headers(("etag" = String))),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 412, description = "stale_version", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
        (status = 428, description = "precondition_required", body = crate::error::Problem)))]
pub async fn update_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let body: UpdatePost = json_body(&req, &["application/json", "application/merge-patch+json"])?;
    let mut post = load(state, &id)
        .await?
        .filter(|p| p.author_id == caller.user_id)
        .ok_or(ApiError::NotFound("no such post"))?;
    let expected = if_match(&req)?.unwrap_or(post.version);
    if expected != post.version {
        return Err(ApiError::PreconditionFailed(
            "the post has changed since that version; read it again",
        ));
    }
    let was_public = post.visibility == Visibility::Public;
    let old_tags = post.hashtags.clone();
    if let Some(caption) = body.caption {
        let (hashtags, mentions) =
            check_caption(&caption).map_err(|e| ApiError::Validation(vec![e]))?;
        post.caption = caption;
        post.hashtags = hashtags;
        post.mentions = mentions;
    }
    if let Some(visibility) = body.visibility {
        post.visibility = visibility;
    }
    post.version += 1;
    post.updated_at = crate::users::timestamp(Utc::now());
    let pk = keys::post(&id);
    let set = crate::db::set_all([
        ("caption", s(&post.caption)),
        (
            "hashtags",
            s(serde_json::to_string(&post.hashtags).context("tags")?),
        ),
        (
            "mentions",
            s(serde_json::to_string(&post.mentions).context("mentions")?),
        ),
        ("visibility", s(post.visibility.as_str())),
        ("version", n(post.version)),
        ("updated_at", s(&post.updated_at)),
    ]);
    let mut names: Vec<(&str, &str)> = set
        .names
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    names.push(("#version", "version"));
    let mut values: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)> = set
        .values
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    values.push((":expected", n(expected)));
    let mut actions = vec![tx::update(
        &state.db,
        (&pk, keys::POST),
        &set.expression,
        Some("#version = :expected"),
        &names,
        values,
    )?];
    let searchable = was_public || post.visibility == Visibility::Public;
    if searchable {
        actions.push(crate::search::dirty(
            &state.db,
            &keys::search_post(&id),
            Utc::now().timestamp_millis(),
        )?);
    }
    let user = keys::user(&caller.user_id);
    let public_entry = keys::public_post_entry(post.at, &id);
    let is_public = post.visibility == Visibility::Public;
    let (recent_pk, recent_sk) = crate::social::rankings::recent_key(&id, post.at);
    let showcase = post
        .style_id
        .as_ref()
        .map(|style_id| (keys::showcases(style_id), keys::feed_entry(post.at, &id)));
    match (was_public, is_public) {
        (false, true) => {
            if let Some((pk, sk)) = &showcase {
                actions.push(entry(state, pk, sk.clone(), &id)?);
            }
            actions.push(entry(state, &user, public_entry, &id)?);
            actions.push(crate::social::rankings::recent_entry(
                &state.db, &id, post.at,
            )?);
        }
        (true, false) => {
            if let Some((pk, sk)) = &showcase {
                actions.push(tx::delete(&state.db, (pk, sk), None, &[], vec![])?);
            }
            actions.push(tx::delete(
                &state.db,
                (&user, &public_entry),
                None,
                &[],
                vec![],
            )?);
            actions.push(tx::delete(
                &state.db,
                (&recent_pk, &recent_sk),
                None,
                &[],
                vec![],
            )?);
        }
        _ => {}
    }
    // The hashtags' lists hold the post while it is public and carries the tag.
    let position = keys::feed_entry(post.at, &id);
    let before: Vec<&String> = if was_public {
        old_tags.iter().collect()
    } else {
        vec![]
    };
    let after: Vec<&String> = if is_public {
        post.hashtags.iter().collect()
    } else {
        vec![]
    };
    // The trending counts change after the edit, in transactions of their own (an edit may
    // swap 30 tags for 30 others: with the lists' entries, more than one transaction holds).
    let mut counts = Vec::new();
    for tag in before.iter().filter(|t| !after.contains(t)) {
        actions.push(tx::delete(
            &state.db,
            (&keys::hashtag(tag), &position),
            None,
            &[],
            vec![],
        )?);
        counts.push(crate::post::tag_hour_count(&state.db, post.at, tag, -1)?);
    }
    for tag in after.iter().filter(|t| !before.contains(t)) {
        actions.push(entry(state, &keys::hashtag(tag), position.clone(), &id)?);
        counts.push(crate::post::tag_hour_count(&state.db, post.at, tag, 1)?);
    }
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {
            for chunk in counts.chunks(100) {
                crate::db::transact(&state.db, chunk.to_vec())
                    .await
                    .context("counting an edit's hashtags")?;
            }
        }
        Err(err) if crate::db::failed_conditions(&err).is_some() => {
            return Err(ApiError::PreconditionFailed(
                "the post has changed since that version; read it again",
            ));
        }
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("editing a post"),
            ));
        }
    }
    if searchable {
        crate::search::index::poke(state).await;
    }
    respond(state, Some(&caller.user_id), StatusCode::OK, post).await
}

/// Deletes your post; its likes, bookmarks, shares, comments and files follow within moments
/// (from a queue). Deleting it again is harmless (204).
#[utoipa::path(delete, path = "/v1/posts/{id}", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn delete_post(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::NotFound("no such post"));
    }
    let removed = crate::post::remove(&state.db, &caller.user_id, &id).await?;
    if !removed {
        // Deleted already by its author: the purge is asked for again (it may not have been
        // queued). Anyone else's post, or none: 404.
        let marker = state.db.get(&keys::post(&id), crate::post::PURGE).await?;
        if marker.as_ref().and_then(|m| get_s(m, "author_id")) != Some(caller.user_id.as_str()) {
            return Err(ApiError::NotFound("no such post"));
        }
    }
    crate::social::events::deleted(state, &caller.user_id, &id).await?;
    crate::search::index::poke(state).await;
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// A page of posts.
#[derive(Serialize, ToSchema)]
pub struct PostPage {
    pub items: Vec<PostView>,
    /// The next page's cursor (also in the `Link` header); `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of an author's list (`prefix`: all posts or the public ones), as `viewer` may see it.
async fn author_page(
    state: &State,
    req: &Request,
    viewer: Option<&str>,
    author_id: &str,
    prefix: &'static str,
) -> Result<Response<Body>, ApiError> {
    let paging = crate::cursor::Paging::from_request(
        req,
        state.cursor_key().await?,
        format!("{prefix}|{author_id}|{}", viewer.unwrap_or("-")),
    )?;
    let user = keys::user(author_id);
    let (items, next) = crate::social::list_page(state, (&user, prefix), &paging, true).await?;
    entries_page(state, req, viewer, &items, paging.next_cursor(next)).await
}

/// A page of list entries (each naming its `post_id`) as `viewer` may see the posts they name,
/// with the next page's cursor.
pub async fn entries_page(
    state: &State,
    req: &Request,
    viewer: Option<&str>,
    entries: &[Item],
    next_cursor: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let ids: Vec<String> = entries
        .iter()
        .filter_map(|e| get_s(e, "post_id").map(str::to_owned))
        .collect();
    let posts = visible_posts(state, viewer, load_many(state, &ids).await?).await?;
    let items = views(state, viewer, posts).await?;
    page(req, items, next_cursor)
}

/// These posts, in this order, leaving out any that are gone.
pub async fn load_many(state: &State, ids: &[String]) -> Result<Vec<Post>, ApiError> {
    let keys: Vec<(String, String)> = ids
        .iter()
        .map(|id| (keys::post(id), keys::POST.to_owned()))
        .collect();
    let mut found: HashMap<String, Post> = state
        .db
        .batch_get_many(&keys)
        .await?
        .iter()
        .filter_map(Post::from_item)
        .map(|p| (p.id.clone(), p))
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// An account's public posts, newest first (cursor pages; readable without signing in).
#[utoipa::path(get, path = "/v1/users/{id}/posts", tag = "social",
    params(("id" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PostPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn list_user_posts(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    profiles::limit_reads(state, &req).await?;
    let id = path_param(&req, "id").unwrap_or_default();
    if profiles::find(state, &id).await?.is_none() {
        return Err(ApiError::NotFound("no such account"));
    }
    author_page(state, &req, None, &id, keys::PUBLIC_POSTS_PREFIX).await
}

/// Your own posts, every visibility, newest first.
#[utoipa::path(get, path = "/v1/users/me/posts", tag = "social", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PostPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn list_my_posts(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    author_page(
        state,
        &req,
        Some(&caller.user_id),
        &caller.user_id,
        keys::POSTS_PREFIX,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashtags_and_mentions_come_from_the_caption_once_each() {
        let (tags, mentions) =
            extract("Sunset #Beach #고양이 and #beach again, ping @ann.b. mail a@b.c #x_1!");
        assert_eq!(tags, ["beach", "고양이", "x_1"]);
        assert_eq!(mentions, ["ann.b"]);
        let (tags, _) = extract("no#tag here # alone");
        assert!(tags.is_empty());
    }

    #[test]
    fn captions_over_the_limits_are_refused() {
        assert!(check_caption(&"a".repeat(MAX_CAPTION_CHARS)).is_ok());
        assert!(check_caption(&"가".repeat(MAX_CAPTION_CHARS + 1)).is_err());
        let many: String = (0..=MAX_HASHTAGS).map(|i| format!("#t{i} ")).collect();
        assert!(check_caption(&many).is_err());
    }
}
