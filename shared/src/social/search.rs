//! Search of posts (caption, hashtags) and accounts (handle, display name), Korean and English,
//! with as-you-type prefixes, on the serverless index of [`crate::search`].
//!
//! What is searchable is decided by the writer from the current state, never from the change
//! that woke it: a public post that is not hidden, of a live account; a live account. Every
//! transaction that changes one of those also lists the document for the writer (in the same
//! transaction, or before its write), so no change is lost if a process stops; the writer
//! (`index-search`, one at a time) is woken by a message and also runs on a schedule. Results
//! are read again from the table before they are shown, so a post deleted a moment ago, or one
//! the caller may not see, is never shown even before the writer has run.

use std::collections::HashMap;

use anyhow::Context as _;

use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::get_s;
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, query_param};
use crate::jobs::model::Status;
use crate::jobs::worker::{Consumer, Disposition};
use crate::keys;
use crate::search::{self, Change, Doc, Search};
use crate::social::posts::{self, PostView, Visibility};
use crate::social::profiles::{self, PublicProfile};
use crate::state::State;

/// The deepest a search pages (results past it are not worth reading).
const MAX_OFFSET: usize = 1_000;
/// How many waiting documents one write takes from each shard of the list.
const BATCH_PER_SHARD: i32 = 250;
/// Writes per run of the writer; a longer list is left to the next run, woken at once.
const WRITES_PER_RUN: usize = 10;

/// What a run of the writer did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Synced {
    /// Documents taken off the list (indexed or removed).
    pub documents: usize,
    /// The index's version after the run (0: nothing written).
    pub generation: i64,
}

/// One run of the writer: the waiting documents, as they are now, into the index.
pub async fn sync(state: &State) -> anyhow::Result<Synced> {
    let mut synced = Synced::default();
    let runtime = state.feature::<search::index::Runtime>()?;
    for _ in 0..WRITES_PER_RUN {
        let began = chrono::Utc::now().timestamp_millis();
        let waiting = search::waiting(&state.db, BATCH_PER_SHARD).await?;
        if waiting.is_empty() {
            runtime.caught_up(began);
            return Ok(synced);
        }
        let ids: Vec<&str> = waiting.iter().map(|w| w.id.as_str()).collect();
        let changes = changes(state, &ids).await?;
        let published = search::index::apply(state, changes).await?;
        search::done(&state.db, &waiting).await?;
        synced.documents += waiting.len();
        synced.generation = published.generation;
        tracing::info!(
            documents = waiting.len(),
            ?published,
            "search index written"
        );
    }
    // More is waiting than a run takes: the next run starts now.
    search::index::poke(state).await;
    Ok(synced)
}

/// The writer's queue consumer: any message is a reason to run.
pub const WRITER: Consumer = Consumer {
    name: "search index",
    handle: |state, body| {
        Box::pin(async move {
            // A wake-up sent before a run of this process began is answered by that run: under
            // load, one run answers every wake-up sent meanwhile.
            if state.feature::<search::index::Runtime>()?.answers(body) {
                return Ok(Disposition::Done);
            }
            let synced = sync(state).await?;
            tracing::info!(?synced, "search writer ran");
            Ok(Disposition::Done)
        })
    },
};

/// The documents `ids` as they should be in the index now.
async fn changes(state: &State, listed: &[&str]) -> anyhow::Result<Vec<Change>> {
    let post_ids: Vec<String> = listed
        .iter()
        .filter_map(|id| id.strip_prefix("post:").map(str::to_owned))
        .collect();
    let posts: HashMap<String, posts::Post> = posts::load_many(state, &post_ids)
        .await?
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    // A post's style is written again with it (published, edited, hidden, shown again).
    let mut ids: Vec<String> = listed.iter().map(|id| (*id).to_owned()).collect();
    for style_id in posts.values().filter_map(|p| p.style_id.as_deref()) {
        let doc = keys::search_style(style_id);
        if !ids.contains(&doc) {
            ids.push(doc);
        }
    }
    let accounts = ids
        .iter()
        .filter_map(|id| id.strip_prefix("user:"))
        .chain(posts.values().map(|p| p.author_id.as_str()));
    let profiles = profiles::many(state, accounts).await?;
    let mut changes = Vec::with_capacity(ids.len());
    for id in ids {
        let doc = if let Some(post_id) = id.strip_prefix("post:") {
            posts
                .get(post_id)
                .filter(|p| p.visibility == Visibility::Public && !p.hidden)
                .filter(|p| profiles.contains_key(&p.author_id))
                .map(|p| Doc {
                    id: id.clone(),
                    kind: "post",
                    owner: p.author_id.clone(),
                    text: p.caption.clone(),
                    tags: p.hashtags.clone(),
                    at: p.at,
                    card: None,
                })
        } else if let Some(user_id) = id.strip_prefix("user:") {
            profiles.get(user_id).map(|p| Doc {
                id: id.clone(),
                kind: "user",
                owner: p.id.clone(),
                text: format!("{} {}", p.username, p.display_name.as_deref().unwrap_or("")),
                tags: vec![p.username.to_lowercase()],
                at: 0,
                card: None,
            })
        } else if let Some(style_id) = id.strip_prefix("style:") {
            style_doc(state, &id, style_id).await?
        } else {
            None
        };
        changes.push(doc.map_or_else(|| Change::Remove(id), Change::Put));
    }
    Ok(changes)
}

/// The most showcases a style's document lists (newest first) and reads for its tags.
const SHOWCASES_READ: i32 = 100;
const SHOWCASES_SHOWN: usize = 3;

/// What a style's hit shows without another read of the style.
#[derive(Deserialize, Serialize)]
struct StyleCard {
    name: String,
    trigger_word: Option<String>,
    /// Its newest public showcases.
    showcases: Vec<String>,
    /// Its artist, when it is published in the marketplace (found without a showcase).
    #[serde(default)]
    listed_by: Option<String>,
}

/// A trained style is found while it is published in the marketplace (its listing public) or,
/// never listed, while a public post of its artist shows it (a showcase): by its name, trigger
/// word and description, its tags and its showcases' hashtags, its artist's handle and name.
async fn style_doc(state: &State, id: &str, style_id: &str) -> anyhow::Result<Option<Doc>> {
    let Some(job) = crate::jobs::store::get(&state.db, style_id).await? else {
        return Ok(None);
    };
    if job.kind != "train_style" || job.status != Status::Completed {
        return Ok(None);
    }
    let listing = state
        .db
        .get(&keys::style_listing(style_id), keys::LISTING)
        .await?;
    let listed = |name: &str| {
        listing
            .as_ref()
            .and_then(|l| get_s(l, name))
            .map(str::to_owned)
    };
    let public = listing.as_ref().map(|l| {
        matches!(
            l.get("public"),
            Some(aws_sdk_dynamodb::types::AttributeValue::Bool(true))
        )
    });
    if public == Some(false) {
        return Ok(None);
    }
    let listed_tags: Vec<String> = match listing.as_ref().and_then(|l| l.get("tags")) {
        Some(aws_sdk_dynamodb::types::AttributeValue::L(tags)) => {
            tags.iter().filter_map(|t| t.as_s().ok().cloned()).collect()
        }
        _ => Vec::new(),
    };
    let published_ms = listed("published_at")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.timestamp_millis());
    let Some(artist) = profiles::find(state, &job.user_id).await? else {
        return Ok(None);
    };
    let entries = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", crate::db::s(keys::showcases(style_id)))
        .scan_index_forward(false)
        .limit(SHOWCASES_READ)
        .send()
        .await
        .context("reading a style's showcases")?
        .items
        .unwrap_or_default();
    let ids: Vec<String> = entries
        .iter()
        .filter_map(|e| get_s(e, "post_id").map(str::to_owned))
        .collect();
    let shown: Vec<posts::Post> = posts::load_many(state, &ids)
        .await?
        .into_iter()
        .filter(|p| p.visibility == Visibility::Public && !p.hidden)
        .filter(|p| p.author_id == job.user_id && p.style_id.as_deref() == Some(style_id))
        .collect();
    let at = match (shown.first(), published_ms) {
        (Some(newest), _) => newest.at,
        (None, Some(published)) => published,
        (None, None) => return Ok(None),
    };
    let text = |name| {
        job.input
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let card = StyleCard {
        name: listed("name").or_else(|| text("name")).unwrap_or_default(),
        trigger_word: text("trigger_word"),
        showcases: shown
            .iter()
            .take(SHOWCASES_SHOWN)
            .map(|p| p.id.clone())
            .collect(),
        listed_by: (public == Some(true)).then(|| job.user_id.clone()),
    };
    let mut tags: Vec<String> = shown.iter().flat_map(|p| p.hashtags.clone()).collect();
    tags.extend(listed_tags);
    tags.sort();
    tags.dedup();
    Ok(Some(Doc {
        id: id.to_owned(),
        kind: "style",
        owner: job.user_id.clone(),
        text: format!(
            "{} {} {} {} {}",
            card.name,
            card.trigger_word.as_deref().unwrap_or(""),
            listed("description").unwrap_or_default(),
            artist.username,
            artist.display_name.as_deref().unwrap_or("")
        ),
        tags,
        at,
        card: Some(serde_json::to_string(&card)?),
    }))
}

/// Posts found.
#[derive(Serialize, ToSchema)]
pub struct PostResults {
    /// How many posts match (those of accounts you block, or that block you, left out).
    pub total: usize,
    /// Best first.
    pub items: Vec<PostView>,
    /// The next page's cursor (also in the `Link` header); `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Accounts found.
#[derive(Serialize, ToSchema)]
pub struct UserResults {
    /// How many accounts match (those you block, or that block you, left out).
    pub total: usize,
    /// Best first.
    pub items: Vec<PublicProfile>,
    /// The next page's cursor (also in the `Link` header); `null` on the last page.
    pub next_cursor: Option<String>,
}

/// What a search found for the request: the index's page and the next page's cursor.
struct Asked {
    caller: Caller,
    found: search::Found,
    next_cursor: Option<String>,
}

/// Runs the request's query (`q`, the page, the caller's blocks left out) on documents of `kind`.
async fn asked(state: &State, req: &Request, kind: &'static str) -> Result<Asked, ApiError> {
    let caller = Caller::from_request(req)?;
    let text = query_param(req, "q").unwrap_or_default();
    let chars = text.chars().count();
    if text.trim().is_empty() || chars > search::MAX_QUERY_CHARS {
        return Err(ApiError::Validation(vec![FieldError::new(
            "q",
            format!("1 to {} characters", search::MAX_QUERY_CHARS),
        )]));
    }
    let key = state.cursor_key().await?;
    let scope = format!("search|{kind}|{}|{text}", caller.user_id);
    let paging = crate::cursor::Paging::from_request(req, key, scope.clone())?;
    let offset = match &paging.after {
        Some(after) => after.parse::<usize>().map_err(|_| ApiError::BadRequest {
            code: "invalid_cursor",
            detail: "this cursor is not one of this search's".into(),
        })?,
        None => 0,
    };
    let limit = paging.limit;
    let hidden = crate::social::hidden_from(state, &caller.user_id).await?;
    let found = search::index::search(
        state,
        Search {
            text: &text,
            kind,
            exclude_owners: &hidden,
            offset,
            limit,
        },
    )
    .await?;
    let next = offset + limit;
    let next_cursor = (next < found.total && next < MAX_OFFSET)
        .then(|| crate::cursor::encode(key, &scope, &next.to_string()));
    Ok(Asked {
        caller,
        found,
        next_cursor,
    })
}

/// The public posts `ids` that `viewer` may see, as shown to them, in order.
async fn public_views(
    state: &State,
    viewer: &str,
    ids: &[String],
) -> Result<Vec<PostView>, ApiError> {
    let viewer = Some(viewer);
    let shown = posts::visible_posts(state, viewer, posts::load_many(state, ids).await?)
        .await?
        .into_iter()
        .filter(|p| p.visibility == Visibility::Public)
        .collect();
    posts::views(state, viewer, shown).await
}

/// Searches public posts by caption and hashtag, Korean and English: whole words (`고양이`,
/// `cats` finds `cat`), prefixes as you type (`고양`, `ca`), `#tags`. Every word must match.
#[utoipa::path(get, path = "/v1/search/posts", tag = "social", security(("bearer" = [])),
    params(("q" = String, Query, description = "1 to 200 characters"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PostResults, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn search_posts(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let Asked {
        caller,
        found,
        next_cursor,
    } = asked(state, &req, "post").await?;
    let post_ids: Vec<String> = found
        .hits
        .iter()
        .filter_map(|hit| hit.id.strip_prefix("post:").map(str::to_owned))
        .collect();
    let page = PostResults {
        total: found.total,
        items: public_views(state, &caller.user_id, &post_ids).await?,
        next_cursor: next_cursor.clone(),
    };
    crate::social::page_response(&req, &page, next_cursor.as_deref())
}

/// Searches accounts by handle and display name, with prefixes as you type (`an` finds `ann`).
#[utoipa::path(get, path = "/v1/search/users", tag = "social", security(("bearer" = [])),
    params(("q" = String, Query, description = "1 to 200 characters"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = UserResults, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn search_users(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let Asked {
        found, next_cursor, ..
    } = asked(state, &req, "user").await?;
    let ids: Vec<&str> = found
        .hits
        .iter()
        .filter_map(|hit| hit.id.strip_prefix("user:"))
        .collect();
    let mut by_id = profiles::many(state, ids.iter().copied()).await?;
    let page = UserResults {
        total: found.total,
        items: ids.iter().filter_map(|id| by_id.remove(*id)).collect(),
        next_cursor: next_cursor.clone(),
    };
    crate::social::page_response(&req, &page, next_cursor.as_deref())
}

/// A style found, with its artist and its newest public showcases.
#[derive(Serialize, ToSchema)]
pub struct StyleResult {
    pub id: String,
    pub name: String,
    pub trigger_word: Option<String>,
    pub artist: posts::Author,
    /// Its newest public posts (up to 3), as you may see them.
    pub showcases: Vec<PostView>,
}

/// Styles found.
#[derive(Serialize, ToSchema)]
pub struct StyleResults {
    /// How many styles match (those of accounts you block, or that block you, left out).
    pub total: usize,
    /// Best first.
    pub items: Vec<StyleResult>,
    /// The next page's cursor (also in the `Link` header); `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Searches styles by name, trigger word and description, their tags and their showcases'
/// `#tags`, and their artist's handle and name; prefixes as you type. A style is found while it
/// is published in the marketplace, or (never listed) while a public post of its artist shows it
/// (`style_id` on the post).
#[utoipa::path(get, path = "/v1/search/styles", tag = "social", security(("bearer" = [])),
    params(("q" = String, Query, description = "1 to 200 characters"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = StyleResults, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn search_styles(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let Asked {
        caller,
        found,
        next_cursor,
    } = asked(state, &req, "style").await?;
    let cards: Vec<(String, StyleCard)> = found
        .hits
        .iter()
        .filter_map(|hit| {
            let id = hit.id.strip_prefix("style:")?.to_owned();
            Some((id, serde_json::from_str(hit.card.as_deref()?).ok()?))
        })
        .collect();
    let post_ids: Vec<String> = cards
        .iter()
        .flat_map(|(_, card)| card.showcases.iter().cloned())
        .collect();
    let mut views: HashMap<String, PostView> = public_views(state, &caller.user_id, &post_ids)
        .await?
        .into_iter()
        .map(|v| (v.id.clone(), v))
        .collect();
    let listers = posts::authors(
        state,
        cards
            .iter()
            .filter_map(|(_, card)| card.listed_by.as_deref()),
    )
    .await?;
    let mut items = Vec::with_capacity(cards.len());
    for (id, card) in cards {
        let showcases: Vec<PostView> = card
            .showcases
            .iter()
            .filter_map(|post_id| views.remove(post_id))
            .collect();
        // Shown with a showcase the caller may see (the index may lag a moment), or as its
        // artist published it.
        let artist = match showcases.first().and_then(|v| v.author.clone()) {
            Some(artist) => artist,
            None => match card
                .listed_by
                .as_deref()
                .and_then(|a| listers.get(a).cloned())
            {
                Some(artist) => artist,
                None => continue,
            },
        };
        items.push(StyleResult {
            id,
            name: card.name,
            trigger_word: card.trigger_word,
            artist,
            showcases,
        });
    }
    let page = StyleResults {
        total: found.total,
        items,
        next_cursor: next_cursor.clone(),
    };
    crate::social::page_response(&req, &page, next_cursor.as_deref())
}
