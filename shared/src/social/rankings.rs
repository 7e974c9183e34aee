//! What the schedule ranks: trending hashtags (public posts carrying each tag over the last 24
//! hours) and the for-you feed (the last three days' public posts ranked by engagement, decayed
//! with age). Publishing counts a public post's tags in its hour (`TAGHOUR#<hour>#<shard>`) and
//! lists it under its day (`RECENT#<day>#<shard>`), both in the publishing transaction, so each
//! post counts once; `refresh-rankings` (every 10 minutes) sums the window, ranks, and writes the
//! two rankings as two items the routes read (one read each, whatever the traffic).

use std::collections::HashMap;

use anyhow::Context as _;
use aws_sdk_dynamodb::types::TransactWriteItem;
use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{Db, get_i64, get_s, n, s, tx};
use crate::error::ApiError;
use crate::http::{Caller, json};
use crate::keys;
use crate::social::posts::{self, PostCounts};
use crate::state::State;

/// The trending window, in hours.
pub const TREND_HOURS: i64 = 24;

/// How many tags the trending list holds.
pub const TRENDING_TAGS: usize = 50;

/// The for-you window, in days (today and the two before).
pub const FOR_YOU_DAYS: i64 = 3;

/// The most candidates a ranking pass reads, newest first.
pub const MAX_CANDIDATES: usize = 2_000;

/// How many posts the for-you ranking keeps.
pub const RANKED: usize = 500;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The writes that make a public post published at `at` (ms) count and rank: its tags in their
/// hour, the post in its day. Both expire once out of their windows.
pub fn publish_actions(
    db: &Db,
    post_id: &str,
    at: i64,
    tags: &[String],
) -> anyhow::Result<Vec<TransactWriteItem>> {
    let mut actions = Vec::with_capacity(tags.len() + 1);
    for tag in tags {
        actions.push(crate::post::tag_hour_count(db, at, tag, 1)?);
    }
    actions.push(recent_entry(db, post_id, at)?);
    Ok(actions)
}

/// A public post's entry among its day's.
pub fn recent_entry(db: &Db, post_id: &str, at: i64) -> anyhow::Result<TransactWriteItem> {
    let (pk, sk) = recent_key(post_id, at);
    tx::put(
        db,
        vec![
            ("pk", s(pk)),
            ("sk", s(sk)),
            ("post_id", s(post_id)),
            ("at", n(at)),
            ("expires_at", n(at / 1000 + (FOR_YOU_DAYS + 1) * 24 * 3600)),
        ],
        None,
    )
}

/// Where a public post is listed among its day's.
pub fn recent_key(post_id: &str, at: i64) -> (String, String) {
    (
        keys::recent_posts(at.div_euclid(DAY_MS), keys::recent_shard(post_id)),
        keys::feed_entry(at, post_id),
    )
}

/// A trending tag.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct TrendingTag {
    pub tag: String,
    /// Public posts carrying it in the window.
    pub posts: i64,
}

/// `GET /v1/hashtags/trending`.
#[derive(Serialize, ToSchema)]
pub struct Trending {
    pub tags: Vec<TrendingTag>,
    pub window_hours: i64,
    /// When the schedule last ranked them (RFC 3339); `null` before its first run.
    pub computed_at: Option<String>,
}

/// What one ranking pass did.
#[derive(Debug, Serialize)]
pub struct Refreshed {
    pub tags: usize,
    pub candidates: usize,
    pub ranked: usize,
}

/// A post's engagement score: likes, comments (×2), shares and remixes (×3), over its age in
/// hours plus two to the power 1.5 (the Hacker News gravity), so a fresh post with a few likes
/// can pass an old one with many.
pub fn score(counts: &PostCounts, age_hours: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let engagement =
        (counts.likes + 2 * counts.comments + 3 * (counts.shares + counts.remixes)) as f64;
    (engagement + 1.0) / (age_hours.max(0.0) + 2.0).powf(1.5)
}

/// Ranks both: trending tags and the for-you feed.
pub async fn refresh(state: &State) -> anyhow::Result<Refreshed> {
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let stamp = crate::users::timestamp(now);
    let tags = trending_now(&state.db, now_ms).await?;
    let tag_count = tags.len();
    store(
        &state.db,
        keys::TRENDING_TAGS,
        ("tags", serde_json::to_string(&tags)?),
        &stamp,
    )
    .await?;
    let candidates = candidates(&state.db, now_ms).await?;
    let ids: Vec<&str> = candidates.iter().map(|(id, _)| id.as_str()).collect();
    let counts = posts::counts(state, &ids).await?;
    #[allow(clippy::cast_precision_loss)]
    let mut ranked: Vec<(String, f64)> = candidates
        .iter()
        .map(|(id, at)| {
            let age = (now_ms - at) as f64 / HOUR_MS as f64;
            let counts = counts.get(id).copied().unwrap_or_default();
            (id.clone(), score(&counts, age))
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    ranked.truncate(RANKED);
    let ranked_ids: Vec<&str> = ranked.iter().map(|(id, _)| id.as_str()).collect();
    store(
        &state.db,
        keys::FOR_YOU,
        ("posts", serde_json::to_string(&ranked_ids)?),
        &stamp,
    )
    .await?;
    Ok(Refreshed {
        tags: tag_count,
        candidates: candidates.len(),
        ranked: ranked.len(),
    })
}

/// Writes one ranking (`attribute`: its JSON) with when it was computed.
async fn store(
    db: &Db,
    sk: &str,
    (attribute, ranking): (&str, String),
    computed_at: &str,
) -> anyhow::Result<()> {
    let mut item = crate::db::key(keys::RANKINGS, sk);
    item.insert(attribute.to_owned(), s(ranking));
    item.insert("computed_at".to_owned(), s(computed_at));
    db.put_items(vec![item]).await
}

/// The window's tags, most used first (ties by name), at most [`TRENDING_TAGS`].
async fn trending_now(db: &Db, now_ms: i64) -> anyhow::Result<Vec<TrendingTag>> {
    let hour = now_ms.div_euclid(HOUR_MS);
    let reads = (hour - TREND_HOURS + 1..=hour).flat_map(|h| {
        (0..keys::RANKING_SHARDS).map(move |shard| async move {
            let items = db.query_all(&keys::tag_hour(h, shard)).await?;
            Ok::<_, anyhow::Error>(
                items
                    .iter()
                    .filter_map(|i| {
                        Some((get_s(i, "sk")?.to_owned(), get_i64(i, "posts").unwrap_or(0)))
                    })
                    .collect::<Vec<_>>(),
            )
        })
    });
    let mut totals: HashMap<String, i64> = HashMap::new();
    for (tag, posts) in futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
    {
        *totals.entry(tag).or_default() += posts;
    }
    let mut tags: Vec<TrendingTag> = totals
        .into_iter()
        .filter(|(_, posts)| *posts > 0)
        .map(|(tag, posts)| TrendingTag { tag, posts })
        .collect();
    tags.sort_by(|a, b| b.posts.cmp(&a.posts).then_with(|| a.tag.cmp(&b.tag)));
    tags.truncate(TRENDING_TAGS);
    Ok(tags)
}

/// The window's public posts (id, when), newest first, at most [`MAX_CANDIDATES`].
async fn candidates(db: &Db, now_ms: i64) -> anyhow::Result<Vec<(String, i64)>> {
    let today = now_ms.div_euclid(DAY_MS);
    let since = now_ms - FOR_YOU_DAYS * DAY_MS;
    let per_partition = i32::try_from(MAX_CANDIDATES).unwrap_or(2_000);
    let reads = (today - FOR_YOU_DAYS + 1..=today).flat_map(|day| {
        (0..keys::RANKING_SHARDS).map(move |shard| async move {
            let out = db
                .client
                .query()
                .table_name(&db.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(keys::recent_posts(day, shard)))
                .scan_index_forward(false)
                .limit(per_partition)
                .send()
                .await
                .context("reading a day's posts")?;
            Ok::<_, anyhow::Error>(
                out.items()
                    .iter()
                    .filter_map(|i| Some((get_s(i, "post_id")?.to_owned(), get_i64(i, "at")?)))
                    .collect::<Vec<_>>(),
            )
        })
    });
    let mut found: Vec<(String, i64)> = futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .filter(|(_, at)| *at >= since)
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.1));
    found.truncate(MAX_CANDIDATES);
    Ok(found)
}

/// The trending hashtags: public posts per tag over the last 24 hours, as the schedule last
/// counted them (every 10 minutes). Readable without signing in.
#[utoipa::path(get, path = "/v1/hashtags/trending", tag = "social",
    responses((status = 200, body = Trending), (status = 429, body = crate::error::Problem)))]
pub async fn get_trending_tags(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    crate::social::profiles::limit_reads(state, &req).await?;
    let item = state.db.get(keys::RANKINGS, keys::TRENDING_TAGS).await?;
    let tags = item
        .as_ref()
        .and_then(|i| get_s(i, "tags"))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    json(
        StatusCode::OK,
        &Trending {
            tags,
            window_hours: TREND_HOURS,
            computed_at: item
                .as_ref()
                .and_then(|i| get_s(i, "computed_at"))
                .map(str::to_owned),
        },
    )
}

/// For you: the last three days' public posts ranked by engagement decayed with age (likes,
/// comments ×2, shares and remixes ×3, over (age in hours + 2)^1.5), as the schedule last
/// ranked them; those the caller may not see left out. Cursor pages.
#[utoipa::path(get, path = "/v1/feeds/for-you", tag = "social", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = posts::PostPage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn get_for_you_feed(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let paging = crate::cursor::Paging::from_request(
        &req,
        state.cursor_key().await?,
        format!("foryou|{}", caller.user_id),
    )?;
    let item = state.db.get(keys::RANKINGS, keys::FOR_YOU).await?;
    let ranked: Vec<String> = item
        .as_ref()
        .and_then(|i| get_s(i, "posts"))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    // The position is the offset into the ranking it was read from; a newer ranking read on
    // from there may repeat or skip a post, never fails.
    let from = paging
        .after
        .as_deref()
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0)
        .min(ranked.len());
    let to = (from + paging.limit).min(ranked.len());
    let found = posts::load_many(state, &ranked[from..to]).await?;
    let visible = posts::visible_posts(state, Some(&caller.user_id), found).await?;
    let mut by_id: HashMap<String, posts::Post> =
        visible.into_iter().map(|p| (p.id.clone(), p)).collect();
    let ordered: Vec<posts::Post> = ranked[from..to]
        .iter()
        .filter_map(|id| by_id.remove(id))
        .collect();
    let items = posts::views(state, Some(&caller.user_id), ordered).await?;
    let next = (to < ranked.len()).then(|| to.to_string());
    posts::page(&req, items, paging.next_cursor(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_post_with_a_few_likes_passes_an_old_one_with_many() {
        let few = PostCounts {
            likes: 5,
            ..PostCounts::default()
        };
        let many = PostCounts {
            likes: 60,
            ..PostCounts::default()
        };
        assert!(score(&few, 1.0) > score(&many, 48.0));
        assert!(score(&many, 1.0) > score(&few, 1.0));
        let comments = PostCounts {
            comments: 3,
            ..PostCounts::default()
        };
        assert!(score(&comments, 1.0) > score(&few, 1.0));
    }
}
