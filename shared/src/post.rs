//! Posts and their reactions as stored, for the social layer that makes them and for account
//! deletion, which takes a deleted account's posts and reactions out with it.
//!
//! A post is its item (`POST#<id>`/`POST`), its author's list entries (`POSTS#…`, and
//! `PUBPOSTS#…` while it is public), its counter shards (`POSTSTAT#<id>#<n>`: a reaction or a
//! comment needs its shard to exist, so none lands on a post once it is gone), and, once deleted,
//! a purge marker (`POST#<id>`/`PURGE`) until its reactions and comments are gone too.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::TransactWriteItem;

use crate::db::{Db, Item, failed_conditions, get_i64, get_s, key, n, s, tx};
use crate::keys;

/// The sort key of a deleted post's purge marker under [`keys::post`].
pub const PURGE: &str = "PURGE";

/// The kinds of reaction, by their item's prefix and counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    Like,
    Share,
    Bookmark,
}

impl Reaction {
    pub const ALL: [Self; 3] = [Self::Like, Self::Share, Self::Bookmark];

    pub fn name(self) -> &'static str {
        match self {
            Self::Like => "like",
            Self::Share => "share",
            Self::Bookmark => "bookmark",
        }
    }

    /// The counter its shard keeps (`None`: bookmarks are private and uncounted).
    pub fn counter(self) -> Option<&'static str> {
        match self {
            Self::Like => Some("likes"),
            Self::Share => Some("shares"),
            Self::Bookmark => None,
        }
    }
}

/// `ADD <counter> :by` on `user_id`'s shard of a post's counters, which must exist.
pub fn count(
    db: &Db,
    post_id: &str,
    user_id: &str,
    counter: &str,
    by: i64,
) -> anyhow::Result<TransactWriteItem> {
    let shard = keys::post_stat(post_id, keys::stat_shard(user_id));
    tx::update(
        db,
        (&shard, keys::STAT),
        &format!("ADD {counter} :by"),
        Some("attribute_exists(pk)"),
        &[],
        vec![(":by", n(by))],
    )
}

/// `ADD posts <by>` on a hashtag's count in the hour a post was published at (`at`, ms): the
/// trending window's counts, kept with the post's publication, edits and deletion.
pub fn tag_hour_count(db: &Db, at: i64, tag: &str, by: i64) -> anyhow::Result<TransactWriteItem> {
    let hour = at.div_euclid(3_600_000);
    tx::update(
        db,
        (&keys::tag_hour(hour, keys::tag_shard(tag)), tag),
        "ADD posts :by SET expires_at = if_not_exists(expires_at, :expires)",
        None,
        &[],
        vec![(":by", n(by)), (":expires", n(at / 1000 + 2 * 24 * 3600))],
    )
}

/// Takes `user_id`'s reaction to a post back, if there is one: its item (and a bookmark's list
/// entry) and its count, in one transaction conditioned on the item (two at once take it once).
/// `false` when there was none. A post that is gone has no count left to keep.
pub async fn unreact(
    db: &Db,
    user_id: &str,
    reaction: Reaction,
    post_id: &str,
) -> anyhow::Result<bool> {
    let user = keys::user(user_id);
    let sk = keys::reaction(reaction.name(), post_id);
    let Some(item) = db.get(&user, &sk).await? else {
        return Ok(false);
    };
    let at = get_i64(&item, "at").unwrap_or(0);
    let mut actions = vec![tx::delete(
        db,
        (&user, &sk),
        Some("#at = :at"),
        &[("#at", "at")],
        vec![(":at", n(at))],
    )?];
    if reaction == Reaction::Bookmark {
        let entry = keys::bookmark_entry(at, post_id);
        actions.push(tx::delete(db, (&user, &entry), None, &[], vec![])?);
    }
    let shard = keys::post_stat(post_id, keys::stat_shard(user_id));
    let counted = reaction.counter().is_some() && db.get(&shard, keys::STAT).await?.is_some();
    if let (Some(counter), true) = (reaction.counter(), counted) {
        actions.push(count(db, post_id, user_id, counter, -1)?);
    }
    match crate::db::transact(db, actions).await {
        Ok(()) => Ok(true),
        Err(err) if failed_conditions(&err).is_some() => Ok(false),
        Err(err) => Err(anyhow::Error::new(err).context("taking a reaction back")),
    }
}

/// Deletes an author's post: its item, list entries, counter shards and the author's count, and
/// leaves a purge marker, in one transaction conditioned on the post being theirs. `false` when
/// there was no such post of theirs.
pub async fn remove(db: &Db, author_id: &str, post_id: &str) -> anyhow::Result<bool> {
    let pk = keys::post(post_id);
    let Some(item) = db.get(&pk, keys::POST).await? else {
        return Ok(false);
    };
    if get_s(&item, "author_id") != Some(author_id) {
        return Ok(false);
    }
    let at = get_i64(&item, "at").unwrap_or(0);
    let user = keys::user(author_id);
    let mut actions = vec![
        tx::delete(
            db,
            (&pk, keys::POST),
            Some("author_id = :me"),
            &[],
            vec![(":me", s(author_id))],
        )?,
        tx::delete(
            db,
            (&user, &keys::post_entry(at, post_id)),
            None,
            &[],
            vec![],
        )?,
        tx::delete(
            db,
            (&user, &keys::public_post_entry(at, post_id)),
            None,
            &[],
            vec![],
        )?,
        tx::put(
            db,
            vec![
                ("pk", s(&pk)),
                ("sk", s(PURGE)),
                ("author_id", s(author_id)),
            ],
            None,
        )?,
    ];
    if get_s(&item, "visibility") == Some("public") {
        // Out of the search index too, and off its style's showcases (the style is found
        // while another public post shows it).
        let now = chrono::Utc::now().timestamp_millis();
        actions.push(crate::search::dirty(db, &keys::search_post(post_id), now)?);
        if let Some(style_id) = get_s(&item, "style_id") {
            actions.push(tx::delete(
                db,
                (&keys::showcases(style_id), &keys::feed_entry(at, post_id)),
                None,
                &[],
                vec![],
            )?);
            actions.push(crate::search::dirty(
                db,
                &keys::search_style(style_id),
                now,
            )?);
        }
        let tags: Vec<String> = get_s(&item, "hashtags")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        let position = keys::feed_entry(at, post_id);
        // Off its day's list (the rankings' candidates).
        actions.push(tx::delete(
            db,
            (
                &keys::recent_posts(at.div_euclid(24 * 3_600_000), keys::recent_shard(post_id)),
                &position,
            ),
            None,
            &[],
            vec![],
        )?);
        for tag in tags {
            actions.push(tx::delete(
                db,
                (&keys::hashtag(&tag), &position),
                None,
                &[],
                vec![],
            )?);
            actions.push(tag_hour_count(db, at, &tag, -1)?);
        }
    }
    for shard in 0..keys::POST_STAT_SHARDS {
        actions.push(tx::delete(
            db,
            (&keys::post_stat(post_id, shard), keys::STAT),
            None,
            &[],
            vec![],
        )?);
    }
    if let Some(source) = get_s(&item, "remix_of") {
        // Off its source's list and count (the count only while the source exists: its shards go
        // with it).
        actions.push(tx::delete(
            db,
            (&keys::remixes(source), &keys::remix_entry(at, post_id)),
            None,
            &[],
            vec![],
        )?);
        let shard = keys::post_stat(source, keys::stat_shard(author_id));
        if db.get(&shard, keys::STAT).await?.is_some() {
            actions.push(count(db, source, author_id, "remixes", -1)?);
        }
    }
    if db.get(&user, keys::PROFILE).await?.is_some() {
        actions.push(tx::update(
            db,
            (&user, keys::PROFILE),
            "ADD posts_count :by",
            Some("attribute_exists(pk)"),
            &[],
            vec![(":by", n(-1))],
        )?);
    }
    match crate::db::transact(db, actions).await {
        Ok(()) => Ok(true),
        Err(err) if failed_conditions(&err).is_some() => Ok(false),
        Err(err) => Err(anyhow::Error::new(err).context("deleting a post")),
    }
}

/// A post's reactions of one kind, newest first, across its shards: up to `limit` from before
/// `before` (a [`keys::reaction_index`] position; `None`: from the newest). Each shard is read
/// for the page and the pages merged, so one cursor position serves them all.
pub async fn reactions(
    db: &Db,
    post_id: &str,
    reaction: Reaction,
    before: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<Item>> {
    let kind = reaction.name();
    let low = format!("{kind}#");
    let high = before.map_or_else(|| format!("{kind}$"), str::to_owned);
    let reads = (0..keys::POST_STAT_SHARDS).map(|shard| {
        let low = low.clone();
        let high = high.clone();
        async move {
            db.client
                .query()
                .table_name(&db.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :pk AND gsi1sk BETWEEN :low AND :high")
                .expression_attribute_values(":pk", s(keys::reactions_of(post_id, shard)))
                .expression_attribute_values(":low", s(low))
                .expression_attribute_values(":high", s(&high))
                .scan_index_forward(false)
                .limit(i32::try_from(limit + 1).unwrap_or(101))
                .send()
                .await
                .context("reading a post's reactions")
                .map(|out| {
                    out.items
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|item| get_s(item, "gsi1sk") != Some(high.as_str()))
                        .collect::<Vec<_>>()
                })
        }
    });
    let mut items: Vec<Item> = futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .collect();
    items.sort_by(|a, b| get_s(b, "gsi1sk").cmp(&get_s(a, "gsi1sk")));
    items.truncate(limit);
    Ok(items)
}

/// Removes what a deleted post leaves: every reaction to it (with bookmarks' list entries), its
/// comments, then its purge marker. Safe to repeat.
pub async fn purge(db: &Db, post_id: &str) -> anyhow::Result<()> {
    for reaction in Reaction::ALL {
        loop {
            let page = reactions(db, post_id, reaction, None, 100).await?;
            if page.is_empty() {
                break;
            }
            let mut keys = Vec::new();
            for item in &page {
                let (Some(pk), Some(sk)) = (get_s(item, "pk"), get_s(item, "sk")) else {
                    continue;
                };
                keys.push(key(pk, sk));
                if reaction == Reaction::Bookmark {
                    let at = get_i64(item, "at").unwrap_or(0);
                    keys.push(key(pk, &keys::bookmark_entry(at, post_id)));
                }
            }
            db.delete_keys(keys).await?;
        }
    }
    db.delete_partition(&keys::comments(post_id)).await?;
    // Its remixes stay (they are their authors' posts); their list under it goes.
    db.delete_partition(&keys::remixes(post_id)).await?;
    crate::notification::purge_post(db, post_id).await?;
    db.delete_keys(vec![key(&keys::post(post_id), PURGE)]).await
}

/// Everything of an account's in the social layer, for its deletion: its posts (deleted and
/// purged), its likes and shares (taken back, so the counts stay exact). Bookmarks live in its
/// own partition and go with it. Safe to repeat.
pub async fn remove_account(db: &Db, user_id: &str) -> anyhow::Result<()> {
    let user = keys::user(user_id);
    loop {
        let entries = db.query_prefix(&user, keys::POSTS_PREFIX).await?;
        if entries.is_empty() {
            break;
        }
        for entry in &entries {
            let Some(post_id) = get_s(entry, "post_id") else {
                continue;
            };
            if !remove(db, user_id, post_id).await? {
                // An entry whose post is gone already.
                let sk = get_s(entry, "sk").unwrap_or_default();
                db.delete_keys(vec![key(&user, sk)]).await?;
            }
            purge(db, post_id).await?;
        }
    }
    for reaction in [Reaction::Like, Reaction::Share] {
        let prefix = format!("{}#", reaction.name().to_uppercase());
        loop {
            let items = db.query_prefix(&user, &prefix).await?;
            if items.is_empty() {
                break;
            }
            for item in &items {
                let post_id = get_s(item, "post_id").unwrap_or_default();
                if !unreact(db, user_id, reaction, post_id).await? {
                    let sk = get_s(item, "sk").unwrap_or_default();
                    db.delete_keys(vec![key(&user, sk)]).await?;
                }
            }
        }
    }
    Ok(())
}
