//! Feeds: following (fanned out on write to each follower's timeline, from the social queue a
//! page of followers at a time; widely followed accounts merged in as the feed is read), by
//! hashtag, by user (`GET /v1/users/{id}/posts`).
//!
//! Every feed orders posts by [`keys::feed_entry`] (publication time, then id), so one cursor
//! position pages a timeline and the widely followed accounts' own lists together.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use lambda_http::{Body, Request, Response};

use crate::db::{Item, get_i64, get_s, n, s};
use crate::error::ApiError;
use crate::http::{Caller, path_param};
use crate::keys;
use crate::social::posts::{self, Post, PostPage, Visibility};
use crate::social::profiles;
use crate::state::State;

/// A new follow brings this many of the followed account's latest posts into the feed.
pub const BACKFILL_POSTS: usize = 50;
/// How long a timeline keeps a post (older ones are in their authors' lists).
pub const TIMELINE_DAYS: i64 = 30;

fn timeline_item(follower: &str, post_id: &str, author_id: &str, at: i64) -> Item {
    let expires = Utc::now().timestamp() + TIMELINE_DAYS * 86_400;
    Item::from([
        ("pk".to_owned(), s(keys::feed(follower))),
        ("sk".to_owned(), s(keys::feed_entry(at, post_id))),
        ("post_id".to_owned(), s(post_id)),
        ("author_id".to_owned(), s(author_id)),
        ("at".to_owned(), n(at)),
        ("expires_at".to_owned(), n(expires)),
    ])
}

/// What a fan-out step did.
#[derive(Debug, PartialEq, Eq)]
pub enum FanOut {
    /// Written to this many timelines; `next` is where the next page of followers starts.
    Wrote {
        timelines: usize,
        next: Option<String>,
    },
    /// The author has more followers than fan-out serves: merged at read time instead.
    Merged,
}

/// One step of a post's fan-out: the followers after `after` (a page of them), each given the
/// post in their timeline (BatchWriteItem, what it leaves unprocessed sent again); the first
/// step also gives it to its author and decides between fan-out and read-time merging.
pub async fn fan_out(
    state: &State,
    post_id: &str,
    author_id: &str,
    at: i64,
    after: Option<&str>,
) -> anyhow::Result<FanOut> {
    let user = keys::user(author_id);
    if after.is_none() {
        let followers = match state.db.get(&user, keys::PROFILE).await? {
            Some(profile) => get_i64(&profile, "followers_count").unwrap_or(0),
            None => {
                return Ok(FanOut::Wrote {
                    timelines: 0,
                    next: None,
                });
            }
        };
        let widely = u64::try_from(followers).unwrap_or(0) > state.config.fanout_max_followers;
        if widely {
            // The mark and the author's own timeline entry, in one batch.
            state
                .db
                .put_items(vec![
                    Item::from([
                        ("pk".to_owned(), s(keys::WIDELY_FOLLOWED)),
                        ("sk".to_owned(), s(keys::widely_followed(author_id))),
                    ]),
                    timeline_item(author_id, post_id, author_id, at),
                ])
                .await?;
            return Ok(FanOut::Merged);
        }
        state
            .db
            .delete_keys(vec![Item::from([
                ("pk".to_owned(), s(keys::WIDELY_FOLLOWED)),
                ("sk".to_owned(), s(keys::widely_followed(author_id))),
            ])])
            .await?;
    }
    let mut query = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(&user))
        .expression_attribute_values(":prefix", s(keys::FOLLOWER_PREFIX))
        .projection_expression("sk, user_id")
        .limit(i32::try_from(state.config.fanout_page_size).unwrap_or(1_000));
    if let Some(after) = after {
        query = query
            .exclusive_start_key("pk", s(&user))
            .exclusive_start_key("sk", s(after));
    }
    let out = query.send().await?;
    let mut items: Vec<Item> = out
        .items()
        .iter()
        .filter_map(|f| get_s(f, "user_id"))
        .map(|follower| timeline_item(follower, post_id, author_id, at))
        .collect();
    if after.is_none() {
        items.push(timeline_item(author_id, post_id, author_id, at));
    }
    let timelines = items.len();
    state.db.put_items(items).await?;
    let next = out
        .last_evaluated_key()
        .and_then(|k| get_s(k, "sk"))
        .map(str::to_owned);
    Ok(FanOut::Wrote { timelines, next })
}

/// A new follow's backfill: the followed account's latest posts the follower may see, into the
/// follower's timeline (none for a widely followed account: its posts are merged at read).
pub async fn backfill(state: &State, follower: &str, followee: &str) -> anyhow::Result<usize> {
    if state
        .db
        .get(keys::WIDELY_FOLLOWED, &keys::widely_followed(followee))
        .await?
        .is_some()
    {
        return Ok(0);
    }
    let out = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(keys::user(followee)))
        .expression_attribute_values(":prefix", s(keys::POSTS_PREFIX))
        .scan_index_forward(false)
        .limit(i32::try_from(BACKFILL_POSTS).unwrap_or(50))
        .send()
        .await?;
    let ids: Vec<String> = out
        .items()
        .iter()
        .filter_map(|e| get_s(e, "post_id").map(str::to_owned))
        .collect();
    let found = posts::load_many(state, &ids)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let items: Vec<Item> = found
        .iter()
        .filter(|p| p.visibility != Visibility::Private)
        .map(|p| timeline_item(follower, &p.id, followee, p.at))
        .collect();
    let count = items.len();
    state.db.put_items(items).await?;
    Ok(count)
}

/// An unfollow's clean-up: the followed account's posts out of the follower's timeline (the
/// feed leaves them out from the moment of the unfollow; this frees the space).
pub async fn unfill(state: &State, follower: &str, followee: &str) -> anyhow::Result<usize> {
    let pk = keys::feed(follower);
    let mut removed = 0;
    let mut start = None;
    loop {
        let out = state
            .db
            .client
            .query()
            .table_name(&state.db.table)
            .key_condition_expression("pk = :pk")
            .filter_expression("author_id = :author")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":author", s(followee))
            .projection_expression("pk, sk")
            .set_exclusive_start_key(start.take())
            .send()
            .await?;
        removed += out.items().len();
        state.db.delete_keys(out.items().to_vec()).await?;
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(removed);
        }
    }
}

/// Up to `limit` entries of partition `pk` under `prefix`, newest first, before `before` (a
/// [`keys::feed_entry`] position), each with its position.
async fn entries_before(
    state: &State,
    pk: &str,
    prefix: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Item)>, ApiError> {
    // Positions begin with a digit: the range's floor is the prefix's first one.
    let low = format!("{prefix}0");
    let high = match before {
        Some(position) => format!("{prefix}{position}"),
        None => format!("{prefix}~"),
    };
    let out = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
        .expression_attribute_values(":pk", s(pk))
        .expression_attribute_values(":low", s(&low))
        .expression_attribute_values(":high", s(&high))
        .scan_index_forward(false)
        .limit(i32::try_from(limit + 1).unwrap_or(101))
        .send()
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("reading a feed")))?;
    Ok(out
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|item| {
            let position = get_s(&item, "sk")?.strip_prefix(prefix)?.to_owned();
            (Some(position.as_str()) != before).then_some((position, item))
        })
        .take(limit)
        .collect())
}

/// Answers a page of feed candidates (position, post id), newest first: the posts the viewer
/// may see, with the cursor of the next page when the candidates filled this one.
async fn respond(
    state: &State,
    req: &Request,
    viewer: Option<&str>,
    paging: &crate::cursor::Paging<'_>,
    mut candidates: Vec<(String, String)>,
    keep: impl Fn(&Post) -> bool,
) -> Result<Response<Body>, ApiError> {
    candidates.sort_by(|a, b| b.0.cmp(&a.0));
    candidates.dedup_by(|a, b| a.1 == b.1);
    candidates.truncate(paging.limit);
    let next = (candidates.len() == paging.limit)
        .then(|| candidates.last().map(|(position, _)| position.clone()))
        .flatten();
    let ids: Vec<String> = candidates.into_iter().map(|(_, id)| id).collect();
    let found = posts::load_many(state, &ids).await?;
    let visible = posts::visible_posts(state, viewer, found).await?;
    let items = posts::views(
        state,
        viewer,
        visible.into_iter().filter(|p| keep(p)).collect(),
    )
    .await?;
    posts::page(req, items, paging.next_cursor(next))
}

/// Your following feed: the posts of the accounts you follow (and your own), newest first, in
/// cursor pages. Posts of accounts you no longer follow, or that block you, are left out.
#[utoipa::path(get, path = "/v1/feeds/following", tag = "social", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PostPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn get_following_feed(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let me = caller.user_id.as_str();
    let paging =
        crate::cursor::Paging::from_request(&req, state.cursor_key().await?, format!("feed|{me}"))?;
    let before = paging.after.as_deref();
    // The timeline and the widely followed accounts (those the caller follows have their
    // latest posts merged in), read at once.
    let feed = keys::feed(me);
    let (timeline, widely) = tokio::try_join!(
        entries_before(state, &feed, "", before, paging.limit),
        async {
            Ok::<_, ApiError>(
                state
                    .db
                    .query_prefix(keys::WIDELY_FOLLOWED, keys::ACCOUNT_PREFIX)
                    .await?,
            )
        },
    )?;
    let widely: Vec<String> = widely
        .iter()
        .filter_map(|i| {
            get_s(i, "sk")?
                .strip_prefix(keys::ACCOUNT_PREFIX)
                .map(str::to_owned)
        })
        .collect();
    let edges: Vec<(String, String)> = widely
        .iter()
        .map(|w| (keys::follow(me, w), keys::EDGE.to_owned()))
        .collect();
    let followed_widely: Vec<String> = state
        .db
        .batch_get_many(&edges)
        .await?
        .iter()
        .filter_map(|e| get_s(e, "followee").map(str::to_owned))
        .collect();
    let mut candidates: Vec<(String, String)> = Vec::new();
    let mut authors: HashMap<String, String> = HashMap::new();
    for (position, item) in timeline {
        if let (Some(post_id), Some(author)) = (get_s(&item, "post_id"), get_s(&item, "author_id"))
        {
            authors.insert(post_id.to_owned(), author.to_owned());
            candidates.push((position, post_id.to_owned()));
        }
    }
    let merged = futures::future::try_join_all(followed_widely.iter().map(|account| {
        let user = keys::user(account);
        async move {
            entries_before(state, &user, keys::POSTS_PREFIX, before, paging.limit)
                .await
                .map(|entries| (account.clone(), entries))
        }
    }))
    .await?;
    for (account, entries) in merged {
        for (position, item) in entries {
            if let Some(post_id) = get_s(&item, "post_id") {
                authors.insert(post_id.to_owned(), account.clone());
                candidates.push((position, post_id.to_owned()));
            }
        }
    }
    // Still followed? (An unfollow takes effect here at once; its clean-up follows.)
    let mut others: Vec<(String, String)> = authors
        .values()
        .filter(|a| a.as_str() != me)
        .map(|a| (keys::follow(me, a), keys::EDGE.to_owned()))
        .collect();
    others.sort();
    others.dedup();
    let followed: HashSet<String> = state
        .db
        .batch_get_many(&others)
        .await?
        .iter()
        .filter_map(|e| get_s(e, "followee").map(str::to_owned))
        .collect();
    respond(state, &req, Some(me), &paging, candidates, |post| {
        post.author_id == me || followed.contains(&post.author_id)
    })
    .await
}

/// The public posts carrying a hashtag, newest first (cursor pages; readable without signing
/// in). The tag without its `#`, any case.
#[utoipa::path(get, path = "/v1/hashtags/{tag}/posts", tag = "social",
    params(("tag" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PostPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn list_hashtag_posts(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    profiles::limit_reads(state, &req).await?;
    let tag = path_param(&req, "tag")
        .unwrap_or_default()
        .trim_start_matches('#')
        .to_lowercase();
    if tag.is_empty() || tag.chars().count() > 100 {
        return Err(ApiError::invalid("tag", "1 to 100 characters"));
    }
    let paging =
        crate::cursor::Paging::from_request(&req, state.cursor_key().await?, format!("tag|{tag}"))?;
    let entries = entries_before(
        state,
        &keys::hashtag(&tag),
        "",
        paging.after.as_deref(),
        paging.limit,
    )
    .await?;
    let candidates = entries
        .into_iter()
        .filter_map(|(position, item)| Some((position, get_s(&item, "post_id")?.to_owned())))
        .collect();
    // A post edited since no longer carrying the tag, or no longer public, is left out.
    respond(state, &req, None, &paging, candidates, |post| {
        post.hashtags.contains(&tag)
    })
    .await
}
