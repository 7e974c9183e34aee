//! Notifications as stored: one group per (account, what happened to what: `like.<post>`,
//! `follow`, `job.<job>`), counting the distinct actors in it, and an unread count that is the
//! number of unread groups, exact under any race.
//!
//! An actor joins a group in one transaction with the item that says it joined
//! ([`keys::notification_actor`], `attribute_not_exists`: a redelivered event, a like taken back
//! and given again, counts once). A group that becomes unread adds one to the count in the same
//! transaction, on the condition that it was read (or new); a group read takes one off, on the
//! condition that it was unread. So a like and a "read all" racing end with the count equal to
//! the unread groups, whichever wins.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::db::{Db, Item, failed_conditions, get_i64, get_s, key, n, s, tx};
use crate::keys;

/// What happened, to whom, by whom.
#[derive(Clone, Debug, Default)]
pub struct New<'a> {
    /// The account notified.
    pub user_id: &'a str,
    /// `like`, `comment`, `reply`, `follow`, `mention`, `remix`, `job_completed`, `job_failed`,
    /// `style_trained`.
    pub kind: &'a str,
    /// What groups it: events of one group are one notification.
    pub group: String,
    /// Who did it (`None`: the system, e.g. a job ending).
    pub actor: Option<&'a str>,
    pub post_id: Option<&'a str>,
    pub comment_id: Option<&'a str>,
    pub job_id: Option<&'a str>,
    /// The ended job's kind, for its sentence.
    pub job_kind: Option<&'a str>,
}

/// The prefix of the references under [`keys::post_notifications`].
const REF_PREFIX: &str = "N#";

/// How many times a group's write is tried when it races a read or another actor.
const ATTEMPTS: usize = 12;

/// Adds an event to its group: `true` when it was counted, `false` when this actor was counted in
/// the group already or either account no longer exists (or is being deleted).
pub async fn add(db: &Db, event: &New<'_>, at_ms: i64) -> anyhow::Result<bool> {
    let pk = keys::notifications(event.user_id);
    let group_sk = keys::notification_group(&event.group);
    let actor = event.actor.unwrap_or("-");
    let position = keys::notification_position(at_ms, &event.group);
    let mut set: Vec<String> = [
        "#kind = :kind",
        "user_id = :user",
        "group_id = :group",
        "updated_at = :at",
        "gsi1pk = :pk",
        "gsi1sk = :position",
        "gsi2pk = :unread_pk",
        "gsi2sk = :at",
        "unread = :true",
        "created_at = if_not_exists(created_at, :at)",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut values: Vec<(&str, AttributeValue)> = vec![
        (":kind", s(event.kind)),
        (":user", s(event.user_id)),
        (":group", s(&event.group)),
        (":at", n(at_ms)),
        (":pk", s(&pk)),
        (":position", s(&position)),
        (":unread_pk", s(keys::unread_notifications(event.user_id))),
        (":true", AttributeValue::Bool(true)),
        (":one", n(1)),
    ];
    if let Some(actor) = event.actor {
        set.push("previous_actor = if_not_exists(last_actor, :actor)".to_owned());
        set.push("last_actor = :actor".to_owned());
        values.push((":actor", s(actor)));
    }
    for (name, placeholder, value) in [
        ("post_id", ":post", event.post_id),
        ("comment_id", ":comment", event.comment_id),
        ("job_id", ":job", event.job_id),
        ("job_kind", ":job_kind", event.job_kind),
    ] {
        if let Some(value) = value {
            set.push(format!("{name} = {placeholder}"));
            values.push((placeholder, s(value)));
        }
    }
    let expression = format!("SET {} ADD actor_count :one", set.join(", "));
    let joined = || {
        tx::put(
            db,
            vec![
                ("pk", s(&pk)),
                ("sk", s(keys::notification_actor(&event.group, actor))),
                ("at", n(at_ms)),
            ],
            Some("attribute_not_exists(pk)"),
        )
    };

    // First as the group most likely is: an account's event (a like, a comment) joins a post's
    // group that is usually unread already (a busy post: no count to change); the system's (a job
    // or a training ending) opens a group of its own, new (the count goes up with it). A wrong
    // guess costs one more try, the other way.
    let mut unread_already = event.actor.is_some();
    // Both accounts must exist and not be being deleted, when the write lands: a deletion's
    // purge, which begins after the account is marked, then finds all there is to remove.
    let live = |user_id: &str| {
        tx::check(
            db,
            (&keys::user(user_id), keys::PROFILE),
            "attribute_exists(pk) AND attribute_not_exists(deleted_at)",
        )
    };
    for _ in 0..ATTEMPTS {
        let mut actions = vec![joined()?, live(event.user_id)?];
        if let Some(actor) = event.actor {
            actions.push(live(actor)?);
            // Where the actor's deletion finds this group.
            actions.push(reference(db, keys::actor_notifications(actor), event)?);
        }
        let accounts = actions.len();
        if unread_already {
            actions.push(tx::update(
                db,
                (&pk, &group_sk),
                &expression,
                Some("unread = :true"),
                &[("#kind", "kind")],
                values.clone(),
            )?);
        } else {
            let mut values = values.clone();
            values.push((":false", AttributeValue::Bool(false)));
            actions.push(tx::update(
                db,
                (&pk, &group_sk),
                &expression,
                Some("attribute_not_exists(pk) OR unread = :false"),
                &[("#kind", "kind")],
                values,
            )?);
            actions.push(count(db, event.user_id, 1)?);
            if let Some(post_id) = event.post_id {
                // Where the post's purge finds this group.
                actions.push(reference(db, keys::post_notifications(post_id), event)?);
            }
        }
        match crate::db::transact(db, actions).await {
            Ok(()) => return Ok(true),
            Err(err) => match failed_conditions(&err) {
                // Counted already, or an account is gone.
                Some(failed) if failed.iter().take(accounts).any(|f| *f) => return Ok(false),
                // The group was not as supposed: it was read, or made unread, meanwhile.
                Some(failed) if failed.iter().any(|f| *f) => unread_already = !unread_already,
                // Cancelled by racing writes alone (a busy group: many likes at once), past the
                // transaction's own retries: the same write again, after a pause.
                Some(_) => {
                    let pause = std::time::Duration::from_millis(50);
                    tokio::time::sleep(crate::backoff::jittered(pause, 0.5)).await;
                }
                None => {
                    return Err(anyhow::Error::new(err).context("adding a notification"));
                }
            },
        }
    }
    anyhow::bail!("a notification group kept changing under its write")
}

/// A reference to the event's group under `partition` (an actor's, a post's), for a purge.
fn reference(
    db: &Db,
    partition: String,
    event: &New<'_>,
) -> anyhow::Result<aws_sdk_dynamodb::types::TransactWriteItem> {
    tx::put(
        db,
        vec![
            ("pk", s(partition)),
            (
                "sk",
                s(format!("{REF_PREFIX}{}#{}", event.user_id, event.group)),
            ),
            ("user_id", s(event.user_id)),
            ("group_id", s(&event.group)),
        ],
        None,
    )
}

/// The unread count's change, as a transaction action.
fn count(
    db: &Db,
    user_id: &str,
    by: i64,
) -> anyhow::Result<aws_sdk_dynamodb::types::TransactWriteItem> {
    tx::update(
        db,
        (&keys::notifications(user_id), keys::UNREAD),
        "ADD unread :by",
        None,
        &[],
        vec![(":by", n(by))],
    )
}

/// Marks a group read: `Some(true)` when it was unread, `Some(false)` when read already, `None`
/// when there is no such group.
pub async fn mark_read(db: &Db, user_id: &str, group: &str) -> anyhow::Result<Option<bool>> {
    let pk = keys::notifications(user_id);
    let sk = keys::notification_group(group);
    let actions = vec![
        tx::update(
            db,
            (&pk, &sk),
            "SET unread = :false REMOVE gsi2pk, gsi2sk",
            Some("unread = :true"),
            &[],
            vec![
                (":false", AttributeValue::Bool(false)),
                (":true", AttributeValue::Bool(true)),
            ],
        )?,
        count(db, user_id, -1)?,
    ];
    match crate::db::transact(db, actions).await {
        Ok(()) => Ok(Some(true)),
        Err(err) if failed_conditions(&err).is_some() => Ok(db.get(&pk, &sk).await?.map(|_| false)),
        Err(err) => Err(anyhow::Error::new(err).context("marking a notification read")),
    }
}

/// The account's unread count (strongly consistent).
pub async fn unread(db: &Db, user_id: &str) -> anyhow::Result<i64> {
    let item = db
        .client
        .get_item()
        .table_name(&db.table)
        .key("pk", s(keys::notifications(user_id)))
        .key("sk", s(keys::UNREAD))
        .consistent_read(true)
        .send()
        .await
        .context("reading the unread count")?;
    Ok(item
        .item
        .as_ref()
        .and_then(|i| get_i64(i, "unread"))
        .unwrap_or(0)
        .max(0))
}

/// Up to `limit` of the account's groups, newest first, from after `position` (a
/// [`keys::notification_position`]); only the unread ones when `unread_only`. With the position
/// of the next page, if any.
pub async fn list(
    db: &Db,
    user_id: &str,
    unread_only: bool,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<Item>, Option<String>)> {
    let (index, pk_name, sk_name, partition) = if unread_only {
        (
            "gsi2",
            "gsi2pk",
            "gsi2sk",
            keys::unread_notifications(user_id),
        )
    } else {
        ("gsi1", "gsi1pk", "gsi1sk", keys::notifications(user_id))
    };
    let mut query = db
        .client
        .query()
        .table_name(&db.table)
        .index_name(index)
        .key_condition_expression(format!("{pk_name} = :pk"))
        .expression_attribute_values(":pk", s(&partition))
        .scan_index_forward(false)
        .limit(i32::try_from(limit).unwrap_or(20));
    if let Some(after) = after {
        let (at, group) = after.split_once('#').unwrap_or(("0", ""));
        // `gsi1` orders by the position itself, `gsi2` (whose sort key is a number) by the time.
        let at_value = if unread_only {
            n(at.parse::<i64>().unwrap_or(0))
        } else {
            s(after)
        };
        query = query
            .exclusive_start_key(pk_name, s(&partition))
            .exclusive_start_key(sk_name, at_value)
            .exclusive_start_key("pk", s(keys::notifications(user_id)))
            .exclusive_start_key("sk", s(keys::notification_group(group)));
    }
    let out = query.send().await.context("listing notifications")?;
    let next = out.last_evaluated_key().and_then(|k| {
        let group = get_s(k, "sk")?.strip_prefix("G#")?;
        let at = match get_s(k, sk_name) {
            Some(position) => position.split_once('#')?.0.parse().ok()?,
            None => get_i64(k, sk_name)?,
        };
        Some(keys::notification_position(at, group))
    });
    let mut items = out.items.unwrap_or_default();
    if unread_only {
        // The unread index holds keys: the groups themselves, in the same order.
        let keys: Vec<(String, String)> = items
            .iter()
            .filter_map(|i| Some((get_s(i, "pk")?.to_owned(), get_s(i, "sk")?.to_owned())))
            .collect();
        let found = db.batch_get_many(&keys).await?;
        let by_key: std::collections::HashMap<String, Item> = found
            .into_iter()
            .filter_map(|i| Some((get_s(&i, "sk")?.to_owned(), i)))
            .collect();
        items = keys
            .iter()
            .filter_map(|(_, sk)| by_key.get(sk).cloned())
            .collect();
    }
    Ok((items, next))
}

/// Every unread group of the account (their group ids), a page at a time, for "read all".
pub async fn unread_groups(db: &Db, user_id: &str) -> anyhow::Result<Vec<String>> {
    let mut groups = Vec::new();
    let mut start = None;
    loop {
        let out = db
            .client
            .query()
            .table_name(&db.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s(keys::unread_notifications(user_id)))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .context("listing unread notifications")?;
        groups.extend(out.items().iter().filter_map(|i| {
            get_s(i, "sk")
                .and_then(|sk| sk.strip_prefix("G#"))
                .map(str::to_owned)
        }));
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(groups);
        }
    }
}

/// Removes a group and its actors (its unread share of the count with it). Safe to repeat.
pub async fn remove(db: &Db, user_id: &str, group: &str) -> anyhow::Result<()> {
    let pk = keys::notifications(user_id);
    let sk = keys::notification_group(group);
    let post_id = db
        .get(&pk, &sk)
        .await?
        .and_then(|g| get_s(&g, "post_id").map(str::to_owned));
    let unread = vec![
        tx::delete(
            db,
            (&pk, &sk),
            Some("unread = :true"),
            &[],
            vec![(":true", AttributeValue::Bool(true))],
        )?,
        count(db, user_id, -1)?,
    ];
    match crate::db::transact(db, unread).await {
        Ok(()) => {}
        Err(err) if failed_conditions(&err).is_some() => {
            // Read, or gone: no count to change.
            db.delete_keys(vec![key(&pk, &sk)]).await?;
        }
        Err(err) => return Err(anyhow::Error::new(err).context("removing a notification")),
    }
    // Its actors, with the references their partitions hold to it; the post's reference.
    let reference = format!("{REF_PREFIX}{user_id}#{group}");
    loop {
        let actors = db.query_prefix(&pk, &format!("A#{group}#")).await?;
        if actors.is_empty() {
            break;
        }
        let mut doomed = Vec::new();
        for sk in actors.iter().filter_map(|i| get_s(i, "sk")) {
            doomed.push(key(&pk, sk));
            if let Some((_, actor)) = sk.rsplit_once('#').filter(|(_, a)| *a != "-") {
                doomed.push(key(&keys::actor_notifications(actor), &reference));
            }
        }
        db.delete_keys(doomed).await?;
    }
    if let Some(post_id) = post_id {
        db.delete_keys(vec![key(&keys::post_notifications(&post_id), &reference)])
            .await?;
    }
    Ok(())
}

/// Everything of a deleted account's in notifications: its own groups (with the references to
/// them that other accounts' and posts' partitions hold), and its place in others' groups. Safe
/// to repeat.
pub async fn remove_account(db: &Db, user_id: &str) -> anyhow::Result<()> {
    let pk = keys::notifications(user_id);
    let mut refs = Vec::new();
    for item in db.query_all(&pk).await? {
        let sk = get_s(&item, "sk").unwrap_or_default();
        if let Some((group, actor)) = sk.strip_prefix("A#").and_then(|r| r.rsplit_once('#')) {
            refs.push(key(
                &keys::actor_notifications(actor),
                &format!("{REF_PREFIX}{user_id}#{group}"),
            ));
        } else if let (Some(group), Some(post_id)) =
            (sk.strip_prefix("G#"), get_s(&item, "post_id"))
        {
            refs.push(key(
                &keys::post_notifications(post_id),
                &format!("{REF_PREFIX}{user_id}#{group}"),
            ));
        }
    }
    db.delete_keys(refs).await?;
    db.delete_partition(&pk).await?;
    remove_actor(db, user_id).await
}

/// Takes a deleted account out of every group it is counted in (a group left with no one is
/// removed, its unread share of the count with it). Safe to repeat.
pub async fn remove_actor(db: &Db, actor_id: &str) -> anyhow::Result<()> {
    drain(db, &keys::actor_notifications(actor_id), Some(actor_id)).await
}

/// Carries out and deletes every reference under `partition`, a page at a time: the actor
/// `leaving` leaves each group named, or (`None`) each group is removed.
async fn drain(db: &Db, partition: &str, leaving: Option<&str>) -> anyhow::Result<()> {
    loop {
        let refs = refs_page(db, partition).await?;
        if refs.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        for item in &refs {
            if let (Some(user_id), Some(group)) = (get_s(item, "user_id"), get_s(item, "group_id"))
            {
                match leaving {
                    Some(actor_id) => leave(db, user_id, group, actor_id).await?,
                    None => remove(db, user_id, group).await?,
                }
            }
            if let Some(sk) = get_s(item, "sk") {
                done.push(key(partition, sk));
            }
        }
        db.delete_keys(done).await?;
    }
}

/// Takes one actor out of a group: its item and its share of the group's count, in one
/// transaction conditioned on the item (twice at once take it once).
async fn leave(db: &Db, user_id: &str, group: &str, actor_id: &str) -> anyhow::Result<()> {
    let pk = keys::notifications(user_id);
    let group_sk = keys::notification_group(group);
    let actions = vec![
        tx::delete(
            db,
            (&pk, &keys::notification_actor(group, actor_id)),
            Some("attribute_exists(pk)"),
            &[],
            vec![],
        )?,
        tx::update(
            db,
            (&pk, &group_sk),
            "ADD actor_count :minus",
            Some("attribute_exists(pk)"),
            &[],
            vec![(":minus", n(-1))],
        )?,
    ];
    match crate::db::transact(db, actions).await {
        Ok(()) => {}
        Err(err) if failed_conditions(&err).is_some() => return Ok(()),
        Err(err) => return Err(anyhow::Error::new(err).context("leaving a notification")),
    }
    let left = db
        .get(&pk, &group_sk)
        .await?
        .and_then(|g| get_i64(&g, "actor_count"))
        .unwrap_or(0);
    if left <= 0 {
        remove(db, user_id, group).await?;
    }
    Ok(())
}

/// A page of references (`N#…`) under `partition`.
async fn refs_page(db: &Db, partition: &str) -> anyhow::Result<Vec<Item>> {
    let out = db
        .client
        .query()
        .table_name(&db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(partition))
        .expression_attribute_values(":prefix", s(REF_PREFIX))
        .consistent_read(true)
        .limit(100)
        .send()
        .await
        .context("reading notification references")?;
    Ok(out.items.unwrap_or_default())
}

/// Removes every notification that hangs on a deleted post (likes of it, comments on it,
/// mentions in it), whoever's they are. Safe to repeat.
pub async fn purge_post(db: &Db, post_id: &str) -> anyhow::Result<()> {
    drain(db, &keys::post_notifications(post_id), None).await
}
