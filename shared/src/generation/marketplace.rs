//! The style marketplace (Style License): an artist publishes a trained style (`PATCH
//! /v1/styles/{id}`: name, description, tags, price per generation, public or not), anyone finds
//! it (`GET /v1/styles?sort=popular|recent&tags=…`, without sign-in) and generates with it. A
//! generation with someone else's public style costs its base plus the style's price, debited at
//! admission; the artist earns the price less the platform's fee in the release that completes
//! it (the jobs core's [`Share`]); a failed job refunds the user and pays nothing. A style can
//! be unpublished (generations admitted with it keep working) or deleted while unused.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{Item, get_s, n, s};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body, path_param, query_param};
use crate::jobs::model::{Job, Share, Status};
use crate::jobs::registry::{Ended, ShareOf};
use crate::jobs::store::{self, JobRef, Outcome};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// The most a style may cost per generation, in credits.
pub const MAX_PRICE: i64 = 100_000;
/// Tags per style.
pub const MAX_TAGS: usize = 10;

/// A style's listing as stored.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Stored {
    pub id: String,
    pub artist_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub price: i64,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub uses: i64,
    pub artist_name: Option<String>,
    pub trigger_word: Option<String>,
    pub published_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Who made a style.
#[derive(Serialize, ToSchema)]
pub struct ArtistCard {
    pub id: String,
    pub display_name: Option<String>,
}

/// A style as the marketplace shows it.
#[derive(Serialize, ToSchema)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// Credits per generation, on top of the generation's own cost.
    pub price: i64,
    pub public: bool,
    /// Completed generations by others with it.
    pub uses: i64,
    pub trigger_word: Option<String>,
    pub artist: ArtistCard,
    pub published_at: Option<String>,
    pub updated_at: String,
}

impl From<Stored> for Listed {
    fn from(l: Stored) -> Self {
        Self {
            artist: ArtistCard {
                id: l.artist_id,
                display_name: l.artist_name,
            },
            id: l.id,
            name: l.name,
            description: l.description,
            tags: l.tags,
            price: l.price,
            public: l.public,
            uses: l.uses,
            trigger_word: l.trigger_word,
            published_at: l.published_at,
            updated_at: l.updated_at,
        }
    }
}

/// A page of the marketplace.
#[derive(Serialize, ToSchema)]
pub struct ListedPage {
    pub items: Vec<Listed>,
    pub next_cursor: Option<String>,
}

/// `PATCH /v1/styles/{id}`: what to change.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct StylePatch {
    /// 1 to 80 characters, unique among the artist's styles (whatever the case).
    pub name: Option<String>,
    /// Up to 500 characters.
    pub description: Option<String>,
    /// Up to 10 tags of 1 to 30 letters, digits, `_` or `-` (kept lowercase).
    pub tags: Option<Vec<String>>,
    /// Credits per generation by others, 0 to 100,000.
    pub price: Option<i64>,
    /// Listed in the marketplace (needs a trained style and an artist profile).
    pub public: Option<bool>,
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such style")
}

/// A style's listing, if it has one.
pub(crate) async fn listing(state: &State, style_id: &str) -> anyhow::Result<Option<Stored>> {
    if uuid::Uuid::parse_str(style_id).is_err() {
        return Ok(None);
    }
    let Some(item) = state
        .db
        .get(&keys::style_listing(style_id), keys::LISTING)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(
        serde_dynamo::from_item(item).context("a style listing")?,
    ))
}

/// The trained style `style_id` (its `train_style` job).
async fn style_job(state: &State, style_id: &str) -> anyhow::Result<Option<Job>> {
    if uuid::Uuid::parse_str(style_id).is_err() {
        return Ok(None);
    }
    Ok(store::get(&state.db, style_id)
        .await?
        .filter(|j| j.kind == "train_style"))
}

/// The jobs core's hook: a generation with someone else's public style pays its artist.
pub const SHARE: ShareOf = |state, user_id, input| Box::pin(share(state, user_id, input));

async fn share(
    state: &State,
    user_id: &str,
    input: &serde_json::Value,
) -> Result<Option<Share>, ApiError> {
    let Some(style_id) = input["style_id"].as_str() else {
        return Ok(None);
    };
    let style = style_job(state, style_id).await?.ok_or_else(not_found)?;
    if style.user_id == user_id {
        return Ok(None);
    }
    let listed = listing(state, style_id)
        .await?
        .filter(|l| l.public && style.status == Status::Completed)
        .ok_or_else(not_found)?;
    let fee = state.config.payments.style_fee_percent;
    Ok(Some(Share {
        payee: listed.artist_id,
        price: listed.price,
        earning: listed.price * (100 - fee) / 100,
        style_id: Some(listed.id),
    }))
}

/// Whether `job` may use the style `style_id`'s weights: its owner's, the one it was admitted
/// with (even if unpublished since), or a public one.
pub(crate) async fn usable(state: &State, job: &Job, style: &Job) -> anyhow::Result<bool> {
    if style.user_id == job.user_id {
        return Ok(true);
    }
    if job
        .share
        .as_ref()
        .is_some_and(|s| s.style_id.as_deref() == Some(style.id.as_str()))
    {
        return Ok(true);
    }
    Ok(listing(state, &style.id).await?.is_some_and(|l| l.public))
}

/// The jobs core's hook: a completed generation with someone else's style counts as a use.
pub const USED: Ended = |state, job, outcome| Box::pin(used(state, job, outcome));

async fn used(state: &State, job: &JobRef, outcome: &Outcome) {
    let (Outcome::Completed(_), Some(style_id)) = (
        outcome,
        job.share.as_ref().and_then(|s| s.style_id.as_deref()),
    ) else {
        return;
    };
    // Once: a plain UpdateItem answered late would be sent again and count the use twice.
    let listing = keys::style_listing(style_id);
    let counted = async {
        let action = crate::db::tx::update(
            &state.db,
            (&listing, keys::LISTING),
            "SET uses = if_not_exists(uses, :zero) + :one, gsi3sk = if_not_exists(uses, :zero) + :one",
            Some("attribute_exists(pk)"),
            &[],
            vec![(":zero", n(0)), (":one", n(1))],
        )?;
        crate::db::once(&state.db, action).await
    }
    .await;
    // `false`: the listing was deleted meanwhile; nothing to count.
    if let Err(err) = counted {
        tracing::warn!(
            error = format!("{err:#}"),
            style_id,
            "a style's use was not counted"
        );
    }
}

fn check_patch(patch: &StylePatch) -> Result<Vec<String>, ApiError> {
    let mut errors = Vec::new();
    if let Some(name) = &patch.name
        && !(1..=80).contains(&name.trim().chars().count())
    {
        errors.push(FieldError::new("name", "must be 1 to 80 characters"));
    }
    if patch
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        errors.push(FieldError::new(
            "description",
            "must be at most 500 characters",
        ));
    }
    let mut tags = Vec::new();
    if let Some(given) = &patch.tags {
        if given.len() > MAX_TAGS {
            errors.push(FieldError::new("tags", "at most 10"));
        }
        for tag in given {
            let tag = tag.trim().to_lowercase();
            let ok = (1..=30).contains(&tag.chars().count())
                && tag
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
            if !ok {
                errors.push(FieldError::new(
                    "tags",
                    "each is 1 to 30 letters, digits, _ or -",
                ));
                break;
            }
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
    }
    if patch.price.is_some_and(|p| !(0..=MAX_PRICE).contains(&p)) {
        errors.push(FieldError::new("price", "must be from 0 to 100000"));
    }
    if errors.is_empty() {
        Ok(tags)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Publishes, edits or unpublishes one of your trained styles. The first change lists it (by
/// its training name unless you give one); `public: true` needs the training done and an artist
/// profile (`POST /v1/users/me/artist`).
#[utoipa::path(patch, path = "/v1/styles/{id}", tag = "styles", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = StylePatch,
    responses((status = 200, body = Listed), (status = 404, body = crate::error::Problem),
        (status = 409, description = "style_name_taken, style_not_trained, not_an_artist, or changed meanwhile (try again)", body = crate::error::Problem)))]
pub async fn update_style(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let patch: StylePatch = json_body(&req, &["application/json"])?;
    let tags = check_patch(&patch)?;
    let style = style_job(state, &id)
        .await?
        .filter(|j| j.user_id == caller.user_id)
        .ok_or_else(not_found)?;
    let before = listing(state, &id).await?;
    let artist = state
        .db
        .get(&keys::user(&caller.user_id), keys::ARTIST)
        .await?;
    let public = patch
        .public
        .unwrap_or_else(|| before.as_ref().is_some_and(|l| l.public));
    if public && style.status != Status::Completed {
        return Err(ApiError::Conflict {
            code: "style_not_trained",
            detail: "a style is published once its training completed".into(),
        });
    }
    if public && artist.is_none() {
        return Err(ApiError::Conflict {
            code: "not_an_artist",
            detail: "publishing needs an artist profile: POST /v1/users/me/artist".into(),
        });
    }
    let trained_name = style.input["name"].as_str().unwrap_or("style").to_owned();
    let name = patch
        .name
        .as_deref()
        .map(|n| n.trim().to_owned())
        .or_else(|| before.as_ref().map(|l| l.name.clone()))
        .unwrap_or(trained_name);
    let now = timestamp(Utc::now());
    let mut sets: Vec<(&str, AttributeValue)> = vec![
        ("id", s(&id)),
        ("artist_id", s(&caller.user_id)),
        ("name", s(&name)),
        (
            "description",
            s(patch
                .description
                .clone()
                .or_else(|| before.as_ref().map(|l| l.description.clone()))
                .unwrap_or_default()),
        ),
        (
            "tags",
            AttributeValue::L(
                if patch.tags.is_some() {
                    tags
                } else {
                    before.as_ref().map(|l| l.tags.clone()).unwrap_or_default()
                }
                .into_iter()
                .map(s)
                .collect(),
            ),
        ),
        (
            "price",
            n(patch
                .price
                .or_else(|| before.as_ref().map(|l| l.price))
                .unwrap_or(0)),
        ),
        ("public", AttributeValue::Bool(public)),
        ("updated_at", s(&now)),
        (
            "created_at",
            s(before
                .as_ref()
                .map_or(now.clone(), |l| l.created_at.clone())),
        ),
        ("uses", n(before.as_ref().map_or(0, |l| l.uses))),
    ];
    if let Some(word) = style.input["trigger_word"].as_str() {
        sets.push(("trigger_word", s(word)));
    }
    if let Some(display) = artist.as_ref().and_then(|a| get_s(a, "display_name")) {
        sets.push(("artist_name", s(display)));
    }
    let was_public = before.as_ref().is_some_and(|l| l.public);
    if public {
        let published = if was_public {
            before
                .as_ref()
                .and_then(|l| l.published_at.clone())
                .unwrap_or_else(|| now.clone())
        } else {
            now.clone()
        };
        sets.push(("published_at", s(&published)));
        sets.push(("gsi1pk", s(keys::PUBLIC_STYLES)));
        sets.push(("gsi1sk", s(format!("{published}#{id}"))));
        sets.push(("gsi3pk", s(keys::POPULAR_STYLES)));
        sets.push(("gsi3sk", n(before.as_ref().map_or(0, |l| l.uses))));
    }
    let mut item: Vec<(&str, AttributeValue)> = vec![
        ("pk", s(keys::style_listing(&id))),
        ("sk", s(keys::LISTING)),
    ];
    item.extend(sets);
    // A whole new version, if no one changed it since it was read (uses counts too).
    let (condition, values): (&str, Vec<(&str, AttributeValue)>) = match &before {
        None => ("attribute_not_exists(pk)", Vec::new()),
        Some(l) => (
            "updated_at = :before AND uses = :uses",
            vec![(":before", s(&l.updated_at)), (":uses", n(l.uses))],
        ),
    };
    let mut put = aws_sdk_dynamodb::types::Put::builder()
        .table_name(&state.db.table)
        .condition_expression(condition);
    for (k, v) in item {
        put = put.item(k, v);
    }
    for (k, v) in values {
        put = put.expression_attribute_values(k, v);
    }
    let mut actions = vec![
        aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .put(put.build().context("put")?)
            .build(),
    ];
    let old_name = before.as_ref().map(|l| l.name.to_lowercase());
    let renamed = old_name.as_deref() != Some(name.to_lowercase().as_str());
    if renamed {
        let taken = aws_sdk_dynamodb::types::Put::builder()
            .table_name(&state.db.table)
            .item("pk", s(keys::style_name(&caller.user_id, &name)))
            .item("sk", s(keys::STYLE_NAME))
            .item("style_id", s(&id))
            .condition_expression("attribute_not_exists(pk) OR style_id = :id")
            .expression_attribute_values(":id", s(&id))
            .build()
            .context("put")?;
        actions.push(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .put(taken)
                .build(),
        );
        if let Some(old) = &before {
            actions.push(crate::db::tx::delete(
                &state.db,
                (
                    &keys::style_name(&caller.user_id, &old.name),
                    keys::STYLE_NAME,
                ),
                None,
                &[],
                Vec::new(),
            )?);
        }
    }
    // The search index shows public styles.
    actions.push(crate::search::dirty(
        &state.db,
        &keys::search_style(&id),
        Utc::now().timestamp_millis(),
    )?);
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(failed) if failed.get(1) == Some(&true) && renamed => ApiError::Conflict {
                code: "style_name_taken",
                detail: format!("you have a style named {name:?}"),
            },
            Some(_) => ApiError::Conflict {
                code: "style_changed",
                detail: "the style changed meanwhile; read it and try again".into(),
            },
            None => ApiError::Internal(anyhow::Error::new(err).context("publishing a style")),
        });
    }
    crate::search::index::poke(state).await;
    tracing::info!(style_id = %id, public, "style listing changed");
    let listed = listing(state, &id).await?.ok_or_else(not_found)?;
    json(StatusCode::OK, &Listed::from(listed))
}

/// The marketplace: public styles, the newest (`sort=recent`, the default) or the most used
/// (`sort=popular`) first, optionally with every one of `tags` (comma-separated). No sign-in.
#[utoipa::path(get, path = "/v1/styles", tag = "styles",
    params(("sort" = Option<String>, Query, description = "recent (default) or popular"),
        ("tags" = Option<String>, Query, description = "comma-separated; a style has them all"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ListedPage), (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn list_styles(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let popular = match query_param(&req, "sort").as_deref() {
        None | Some("recent") => false,
        Some("popular") => true,
        Some(_) => return Err(ApiError::invalid("sort", "must be recent or popular")),
    };
    let tags: Vec<String> = query_param(&req, "tags")
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if tags.len() > 5 || tags.iter().any(|t| t.chars().count() > 30) {
        return Err(ApiError::invalid("tags", "at most 5 tags of 30 characters"));
    }
    let scope = format!("styles|{popular}|{}", tags.join(","));
    let page = crate::cursor::Paging::from_request(&req, state.cursor_key().await?, scope)?;
    let (index, partition) = if popular {
        ("gsi3", keys::POPULAR_STYLES)
    } else {
        ("gsi1", keys::PUBLIC_STYLES)
    };
    let start_key = |position: &str| -> Option<Item> {
        let (sort, id) = position.rsplit_once('|')?;
        let sort_value = if popular {
            n(sort.parse::<i64>().ok()?)
        } else {
            s(sort)
        };
        Some(crate::db::index_key(
            index,
            partition,
            sort_value,
            (&keys::style_listing(id), keys::LISTING),
        ))
    };
    let position = |item: &Item| -> Option<String> {
        let id = get_s(item, "id")?;
        let sort = match item.get(&format!("{index}sk"))? {
            AttributeValue::N(v) | AttributeValue::S(v) => v.clone(),
            _ => return None,
        };
        Some(format!("{sort}|{id}"))
    };
    let limit = page.limit;
    let mut items: Vec<Listed> = Vec::new();
    let mut start = page.after.as_deref().and_then(start_key);
    let next = loop {
        let out = state
            .db
            .index_page(index, partition, start.take(), limit.max(25), true)
            .await?;
        // The popular index holds the keys alone: the listings are read by them.
        let listings = if popular {
            let keys: Vec<(String, String)> = out
                .items()
                .iter()
                .filter_map(|i| get_s(i, "id"))
                .map(|id| (keys::style_listing(id), keys::LISTING.to_owned()))
                .collect();
            let found = state.db.batch_get(&keys).await?;
            out.items()
                .iter()
                .map(|i| {
                    let id = get_s(i, "id")?;
                    found.iter().find(|f| get_s(f, "id") == Some(id)).cloned()
                })
                .collect::<Vec<Option<Item>>>()
        } else {
            out.items().iter().cloned().map(Some).collect()
        };
        let mut last = None;
        let mut full = false;
        for (entry, item) in out.items().iter().zip(&listings) {
            if items.len() == limit {
                full = true;
                break;
            }
            last = position(entry);
            let Some(Ok(listed)) = item
                .as_ref()
                .map(|item| serde_dynamo::from_item::<_, Stored>(item.clone()))
            else {
                continue;
            };
            if listed.public && tags.iter().all(|t| listed.tags.contains(t)) {
                items.push(listed.into());
            }
        }
        let end = out.last_evaluated_key().and_then(position);
        if full {
            break last;
        }
        match end {
            None => break None,
            Some(end) if items.len() == limit => break Some(end),
            Some(end) => start = start_key(&end),
        }
    };
    let next_cursor = page.next_cursor(next);
    json(StatusCode::OK, &ListedPage { items, next_cursor })
}

/// Deletes one of your styles while no one else has generated with it (else unpublish it):
/// its listing, its name and the trained style itself.
#[utoipa::path(delete, path = "/v1/styles/{id}", tag = "styles", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::Problem),
        (status = 409, description = "style_in_use: others generated with it; unpublish it instead", body = crate::error::Problem)))]
pub async fn delete_style(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let style = style_job(state, &id)
        .await?
        .filter(|j| j.user_id == caller.user_id)
        .ok_or_else(not_found)?;
    if !style.status.is_terminal() {
        return Err(ApiError::Conflict {
            code: "style_in_training",
            detail: "cancel the training first".into(),
        });
    }
    let before = listing(state, &id).await?;
    let mut actions = Vec::new();
    if let Some(listed) = &before {
        actions.push(crate::db::tx::delete(
            &state.db,
            (&keys::style_listing(&id), keys::LISTING),
            Some("uses = :zero"),
            &[],
            vec![(":zero", n(0))],
        )?);
        actions.push(crate::db::tx::delete(
            &state.db,
            (
                &keys::style_name(&caller.user_id, &listed.name),
                keys::STYLE_NAME,
            ),
            None,
            &[],
            Vec::new(),
        )?);
    }
    actions.push(crate::db::tx::delete(
        &state.db,
        (&keys::job(&id), keys::JOB),
        None,
        &[],
        Vec::new(),
    )?);
    actions.push(crate::search::dirty(
        &state.db,
        &keys::search_style(&id),
        Utc::now().timestamp_millis(),
    )?);
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(_) => ApiError::Conflict {
                code: "style_in_use",
                detail: "others generated with this style: unpublish it instead".into(),
            },
            None => ApiError::Internal(anyhow::Error::new(err).context("deleting a style")),
        });
    }
    if let Some(key) = style
        .output
        .as_ref()
        .and_then(|o| o["files"][0]["key"].as_str())
        && let Err(err) = crate::media::delete_prefix(state, key).await
    {
        tracing::warn!(error = format!("{err:#}"), style_id = %id, "a deleted style's weights stay");
    }
    crate::search::index::poke(state).await;
    tracing::info!(style_id = %id, "style deleted");
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .context("response")?)
}
