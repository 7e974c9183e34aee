//! The social layer's queue and its consumer: what follows from a request without holding it up
//! (a deleted post's reactions, comments and files).

use anyhow::Context as _;
use aws_sdk_dynamodb::types::TransactWriteItem;
use serde::{Deserialize, Serialize};

use crate::db::{n, s};

use crate::error::ApiError;
use crate::jobs::worker::{Consumer, Disposition};
use crate::notification::New;
use crate::social::feeds::{self, FanOut};
use crate::social::{notifications, posts};
use crate::state::State;

/// A message on the social queue.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A post was deleted: remove what hangs on it.
    PostDeleted { post_id: String, author_id: String },
    /// A post was published to followers (or everyone): fan it out, a page of followers at a
    /// time from `after`.
    PostPublished {
        post_id: String,
        author_id: String,
        at: i64,
        #[serde(default)]
        after: Option<String>,
    },
    /// A follow began: bring the followed account's latest posts into the follower's feed.
    Followed { follower: String, followee: String },
    /// A follow ended: take the followed account's posts out of the follower's feed.
    Unfollowed { follower: String, followee: String },
    /// A post was liked: notify its author.
    Liked { post_id: String, actor: String },
    /// A comment was added: notify the post's author, the author of the comment it replies to
    /// and those it mentions.
    Commented {
        post_id: String,
        comment_id: String,
        actor: String,
        /// The comment it replies to and its author.
        #[serde(default)]
        parent: Option<(String, String)>,
        #[serde(default)]
        mentions: Vec<String>,
    },
    /// A job ended (`completed` or `failed`): notify its owner.
    JobEnded {
        job_id: String,
        user_id: String,
        status: String,
    },
}

/// The social queue's consumer.
pub const SOCIAL: Consumer = Consumer {
    name: "social events",
    handle: |state, body| Box::pin(process(state, body)),
};

/// Carries out one event; a failure is retried by the queue (each step is safe to repeat).
pub async fn process(state: &State, body: &str) -> anyhow::Result<Disposition> {
    let Ok(event) = serde_json::from_str::<Event>(body) else {
        tracing::warn!("dropping a social event that does not parse");
        return Ok(Disposition::Done);
    };
    match event {
        Event::PostDeleted { post_id, author_id } => {
            purge(state, &author_id, &post_id).await?;
        }
        Event::PostPublished {
            post_id,
            author_id,
            at,
            after,
        } => {
            if after.is_none() {
                published(state, &post_id, &author_id).await?;
            }
            let step = feeds::fan_out(state, &post_id, &author_id, at, after.as_deref()).await?;
            tracing::info!(post_id, ?step, "fan-out step");
            if let FanOut::Wrote {
                next: Some(next), ..
            } = step
            {
                // The next page of followers, as a message of its own: no one message (or
                // Lambda) holds the whole fan-out of a large account.
                let event = Event::PostPublished {
                    post_id,
                    author_id,
                    at,
                    after: Some(next),
                };
                send(state, &event).await?;
            }
        }
        Event::Followed { follower, followee } => {
            notifications::add(
                state,
                New {
                    user_id: &followee,
                    kind: "follow",
                    group: "follow".to_owned(),
                    actor: Some(&follower),
                    ..New::default()
                },
            )
            .await?;
            let posts = feeds::backfill(state, &follower, &followee).await?;
            tracing::info!(posts, "feed backfilled");
        }
        Event::Unfollowed { follower, followee } => {
            let posts = feeds::unfill(state, &follower, &followee).await?;
            tracing::info!(posts, "feed cleaned");
        }
        Event::Liked { post_id, actor } => {
            if let Some(post) = posts::load(state, &post_id).await? {
                notifications::add(
                    state,
                    New {
                        user_id: &post.author_id,
                        kind: "like",
                        group: format!("like.{post_id}"),
                        actor: Some(&actor),
                        post_id: Some(&post_id),
                        ..New::default()
                    },
                )
                .await?;
            }
        }
        Event::Commented {
            post_id,
            comment_id,
            actor,
            parent,
            mentions,
        } => {
            commented(state, &post_id, &comment_id, &actor, parent.as_ref()).await?;
            notifications::mentioned(state, &post_id, Some(&comment_id), &actor, &mentions).await?;
        }
        Event::JobEnded {
            job_id,
            user_id,
            status,
        } => notifications::job(state, &job_id, &user_id, &status).await?,
    }
    Ok(Disposition::Done)
}

/// Who a new post notifies (on its first fan-out step only): the accounts it mentions; for a
/// remix, the authors of its source and of the chain's original.
async fn published(state: &State, post_id: &str, author_id: &str) -> anyhow::Result<()> {
    let Some(post) = posts::load(state, post_id).await? else {
        return Ok(());
    };
    notifications::mentioned(state, post_id, None, author_id, &post.mentions).await?;
    let mut sources: Vec<&String> = post.remix_of.iter().collect();
    sources.extend(post.remix_chain.first());
    sources.dedup();
    let mut notified = Vec::new();
    for source_id in sources {
        let Some(source) = posts::load(state, source_id).await? else {
            continue;
        };
        if notified.contains(&source.author_id) {
            continue;
        }
        notifications::add(
            state,
            New {
                user_id: &source.author_id,
                kind: "remix",
                group: format!("remix.{source_id}"),
                actor: Some(author_id),
                post_id: Some(source_id),
                ..New::default()
            },
        )
        .await?;
        notified.push(source.author_id);
    }
    Ok(())
}

/// A comment notifies the post's author and, for a reply, the parent comment's author.
async fn commented(
    state: &State,
    post_id: &str,
    comment_id: &str,
    actor: &str,
    parent: Option<&(String, String)>,
) -> anyhow::Result<()> {
    let Some(post) = posts::load(state, post_id).await? else {
        return Ok(());
    };
    notifications::add(
        state,
        New {
            user_id: &post.author_id,
            kind: "comment",
            group: format!("comment.{post_id}"),
            actor: Some(actor),
            post_id: Some(post_id),
            comment_id: Some(comment_id),
            ..New::default()
        },
    )
    .await?;
    // A reply to the post author's own comment is their "comment on your post" already.
    if let Some((parent_id, parent_author)) = parent.filter(|(_, a)| *a != post.author_id) {
        notifications::add(
            state,
            New {
                user_id: parent_author,
                kind: "reply",
                group: format!("reply.{parent_id}"),
                actor: Some(actor),
                post_id: Some(post_id),
                comment_id: Some(comment_id),
                ..New::default()
            },
        )
        .await?;
    }
    Ok(())
}

async fn purge(state: &State, author_id: &str, post_id: &str) -> anyhow::Result<()> {
    crate::post::purge(&state.db, post_id).await?;
    let files = crate::media::delete_prefix(
        state,
        &crate::social::posts::media_prefix(author_id, post_id),
    )
    .await?;
    tracing::info!(post_id, files, "deleted post purged");
    Ok(())
}

async fn send(state: &State, event: &Event) -> anyhow::Result<()> {
    match &state.config.social_queue_url {
        Some(queue) => state.send_json(queue, event).await,
        None => Box::pin(process(state, &serde_json::to_string(event)?))
            .await
            .map(|_| ()),
    }
}

/// Partitions of the social outbox.
const OUTBOX_SHARDS: u32 = 4;
/// The social outbox's partition prefix: `SOCIALOUTBOX#<shard>`, sort key `<ms>#<id>`.
const OUTBOX_PREFIX: &str = "SOCIALOUTBOX#";

/// An event whose loss would leave feeds wrong (a publish's fan-out, a follow's backfill): kept
/// in the table by the transaction that makes it, until it is queued. Whatever stops the sender
/// between the commit and the send, [`resend_due`] sends it later; each event is safe to repeat.
pub struct Pending {
    pk: String,
    sk: String,
    event: Event,
}

impl Pending {
    pub fn new(event: Event) -> Self {
        let id = uuid::Uuid::new_v4();
        let shard = id.as_u128() % u128::from(OUTBOX_SHARDS);
        Self {
            pk: format!("{OUTBOX_PREFIX}{shard}"),
            sk: format!("{:013}#{id}", chrono::Utc::now().timestamp_millis()),
            event,
        }
    }

    /// The action that keeps it, for the transaction that makes the event.
    pub fn record(&self, db: &crate::db::Db) -> anyhow::Result<TransactWriteItem> {
        crate::db::tx::put(
            db,
            vec![
                ("pk", s(&self.pk)),
                ("sk", s(&self.sk)),
                ("event", s(serde_json::to_string(&self.event)?)),
                // A safety net only: the sweep removes every entry long before.
                ("expires_at", n(chrono::Utc::now().timestamp() + 7 * 86_400)),
            ],
            None,
        )
    }

    /// Queues it, then forgets it; a failure is logged and left to [`resend_due`].
    pub async fn queue(self, state: &State) {
        match send(state, &self.event).await {
            Ok(()) => {
                if let Err(err) = forget(state, &self.pk, &self.sk).await {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "a sent social event stays in the outbox"
                    );
                }
            }
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                event = ?self.event,
                "a social event was not queued; the outbox sends it later"
            ),
        }
    }
}

async fn forget(state: &State, pk: &str, sk: &str) -> anyhow::Result<()> {
    state.db.delete_keys(vec![crate::db::key(pk, sk)]).await
}

/// Sends the outbox's events older than the outbox's grace (`OUTBOX_GRACE_SECONDS`): those
/// whose sender stopped before sending. The number sent.
pub async fn resend_due(state: &State) -> anyhow::Result<usize> {
    let grace = i64::try_from(state.config.outbox_grace.as_millis()).unwrap_or(15_000);
    let cutoff = format!("{:013}", chrono::Utc::now().timestamp_millis() - grace);
    let mut sent = 0;
    for shard in 0..OUTBOX_SHARDS {
        let pk = format!("{OUTBOX_PREFIX}{shard}");
        let due = state
            .db
            .client
            .query()
            .table_name(&state.db.table)
            .key_condition_expression("pk = :pk AND sk < :cutoff")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":cutoff", s(&cutoff))
            .limit(500)
            .send()
            .await
            .context("reading the social outbox")?;
        for item in due.items() {
            let Some(sk) = crate::db::get_s(item, "sk") else {
                continue;
            };
            match crate::db::get_s(item, "event").map(serde_json::from_str::<Event>) {
                Some(Ok(event)) => {
                    send(state, &event).await?;
                    sent += 1;
                }
                _ => tracing::warn!(sk, "dropping an outbox entry that does not parse"),
            }
            forget(state, &pk, sk).await?;
        }
    }
    if sent > 0 {
        tracing::warn!(sent, "social events sent again from the outbox");
    }
    Ok(sent)
}

/// Queues work that follows from a request; a failure to queue is logged, not the request's
/// (the post, the follow is made: what follows is the feed's, which reads the follows anyway).
pub async fn notify(state: &State, event: Event) {
    if let Err(err) = send(state, &event).await {
        tracing::error!(
            error = format!("{err:#}"),
            ?event,
            "a social event was not queued"
        );
    }
}

/// Asks for a deleted post's purge: from the queue, or here when there is none.
pub async fn deleted(state: &State, author_id: &str, post_id: &str) -> Result<(), ApiError> {
    let event = Event::PostDeleted {
        post_id: post_id.to_owned(),
        author_id: author_id.to_owned(),
    };
    Ok(send(state, &event).await?)
}
