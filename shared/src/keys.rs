//! Every key of the one DynamoDB table, in one place: the partition keys (`pk`), the sort keys
//! (`sk`) and the sparse index keys each record uses. A new record type adds its keys here.

use sha2::{Digest as _, Sha256};

/// A user's items: the profile, the ledger, webhook endpoints.
pub fn user(user_id: &str) -> String {
    format!("USER#{user_id}")
}

/// A post's document in the search index.
pub fn search_post(post_id: &str) -> String {
    format!("post:{post_id}")
}

/// A style's document in the search index.
pub fn search_style(style_id: &str) -> String {
    format!("style:{style_id}")
}

/// The public posts that show a style (its showcases), newest first.
pub fn showcases(style_id: &str) -> String {
    format!("SHOWCASES#{style_id}")
}

/// An account's document in the search index.
pub fn search_user(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The profile's sort key under [`user`].
pub const PROFILE: &str = "PROFILE";

/// The sort key of a uniqueness claim (an email, a username).
pub const UNIQUE: &str = "UNIQUE";

/// The claim that an email belongs to one account (stored lower-cased).
pub fn email(email: &str) -> String {
    format!("EMAIL#{email}")
}

/// The claim that a username belongs to one account (compared lower-cased).
pub fn username(username: &str) -> String {
    format!("USERNAME#{}", username.to_lowercase())
}

/// The claim that an outside identity (a provider's subject: a Firebase uid, an OIDC `sub`)
/// belongs to one account; its sort key is [`UNIQUE`].
pub fn identity(provider: &str, subject: &str) -> String {
    format!("IDENTITY#{provider}#{subject}")
}

/// The prefix of the identities linked to an account, under [`user`].
pub const LINKED_IDENTITY_PREFIX: &str = "IDENT#";

/// An identity linked to an account, under [`user`]: one per provider.
pub fn linked_identity(provider: &str) -> String {
    format!("{LINKED_IDENTITY_PREFIX}{provider}")
}

/// A browser sign-in in flight, by the hash of its `state` (the state itself is never stored);
/// its sort key is [`FLOW`].
pub fn oauth_flow(state: &str) -> String {
    format!(
        "OAUTHFLOW#{}",
        hex::encode(Sha256::digest(state.as_bytes()))
    )
}

/// The sort key of a flow's item under [`oauth_flow`].
pub const FLOW: &str = "FLOW";

/// A one-time code a finished browser sign-in left for its app, by the code's hash; its sort key
/// is [`CODE`].
pub fn oauth_code(code: &str) -> String {
    format!("OAUTHCODE#{}", hex::encode(Sha256::digest(code.as_bytes())))
}

/// The sort key of a code's item under [`oauth_code`].
pub const CODE: &str = "CODE";

/// A provider's ID-token nonce that has been used once (by its hash); its sort key is [`UNIQUE`].
pub fn used_nonce(provider: &str, nonce: &str) -> String {
    format!(
        "NONCE#{provider}#{}",
        hex::encode(Sha256::digest(nonce.as_bytes()))
    )
}

/// A single-use token mailed to an account holder (email verification, password reset), by the
/// token's hash; its sort key is [`TOKEN`].
pub fn account_token(token: &str) -> String {
    format!(
        "ACCTTOKEN#{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

/// The prefix of a user's personas under [`user`].
pub const PERSONA_PREFIX: &str = "PERSONA#";

/// A persona's sort key under [`user`].
pub fn persona(id: &str) -> String {
    format!("{PERSONA_PREFIX}{id}")
}

/// The personas an Instagram account is linked to: `{user}#{persona}` sort keys under this
/// (Meta's data-deletion callback names the Instagram user).
pub fn instagram_user(ig_user_id: &str) -> String {
    format!("IGUSER#{ig_user_id}")
}

/// The sort key of a link under [`instagram_user`].
pub fn instagram_link(user_id: &str, persona_id: &str) -> String {
    format!("{INSTAGRAM_LINK_PREFIX}{user_id}#{persona_id}")
}

/// The prefix of the links under [`instagram_user`].
pub const INSTAGRAM_LINK_PREFIX: &str = "LINK#";

/// The partition of the linked Instagram tokens' refresh schedule.
pub const INSTAGRAM_REFRESH: &str = "IGREFRESH";

/// A token's place in the refresh schedule: due first, then whose.
pub fn instagram_refresh(due: i64, user_id: &str, persona_id: &str) -> String {
    format!("{due:012}#{user_id}#{persona_id}")
}

/// A data-deletion request Meta made, by its confirmation code; its sort key is [`UNIQUE`].
pub fn instagram_deletion(code: &str) -> String {
    format!("IGDELETION#{code}")
}

/// A follow, the item of truth that `follower` follows `followee`; its sort key is [`EDGE`].
pub fn follow(follower: &str, followee: &str) -> String {
    format!("FOLLOW#{follower}#{followee}")
}

/// The sort key of a follow under [`follow`].
pub const EDGE: &str = "EDGE";

/// The prefix of an account's followers under [`user`].
pub const FOLLOWER_PREFIX: &str = "FOLLOWER#";

/// A follower in the followee's list: by when (ms, so the list is in time order), then who.
pub fn follower_entry(at_ms: i64, follower: &str) -> String {
    format!("{FOLLOWER_PREFIX}{at_ms:013}#{follower}")
}

/// The prefix of the accounts an account follows, under [`user`].
pub const FOLLOWING_PREFIX: &str = "FOLLOWING#";

/// A followee in the follower's list.
pub fn following_entry(at_ms: i64, followee: &str) -> String {
    format!("{FOLLOWING_PREFIX}{at_ms:013}#{followee}")
}

/// A post's item; its sort key is [`POST`].
pub fn post(post_id: &str) -> String {
    format!("POST#{post_id}")
}

/// The sort key of a post's item under [`post`].
pub const POST: &str = "POST";

/// The prefix of an author's posts (every visibility) under [`user`].
pub const POSTS_PREFIX: &str = "POSTS#";

/// An author's post in their list, by when (ms), then which.
pub fn post_entry(at_ms: i64, post_id: &str) -> String {
    format!("{POSTS_PREFIX}{}", feed_entry(at_ms, post_id))
}

/// The prefix of an author's public posts under [`user`] (the logged-out listing).
pub const PUBLIC_POSTS_PREFIX: &str = "PUBPOSTS#";

/// An author's public post in their public list.
pub fn public_post_entry(at_ms: i64, post_id: &str) -> String {
    format!("{PUBLIC_POSTS_PREFIX}{at_ms:013}#{post_id}")
}

/// Shards of a post's counters: a like, a comment or a share adds to one of them (the actor's),
/// so a viral post's counts are written across this many items (each takes about 1,000 writes a
/// second; a transactional write of a small item costs 2), and a read sums them.
pub const POST_STAT_SHARDS: u32 = 16;

/// One shard of a post's counters; its sort key is [`STAT`].
pub fn post_stat(post_id: &str, shard: u32) -> String {
    format!("POSTSTAT#{post_id}#{shard}")
}

/// The sort key of a counter shard under [`post_stat`].
pub const STAT: &str = "STAT";

/// The shard of a post's counters (and of its reactions' index) an account's reactions go to.
pub fn stat_shard(user_id: &str) -> u32 {
    let digest = Sha256::digest(user_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % POST_STAT_SHARDS
}

/// A reaction's item of truth under the reacting account's [`user`]: `LIKE#<post>`,
/// `SHARE#<post>`, `BOOKMARK#<post>`.
pub fn reaction(kind: &str, post_id: &str) -> String {
    format!("{}#{post_id}", kind.to_uppercase())
}

/// The `gsi1` partition of a post's reactions, sharded as its counters are (a viral post's likes
/// spread over [`POST_STAT_SHARDS`] index partitions).
pub fn reactions_of(post_id: &str, shard: u32) -> String {
    format!("REACT#{post_id}#{shard}")
}

/// A reaction's `gsi1` sort key: the kind, then when (ms), then who; a listing of one kind is a
/// range of these, newest first.
pub fn reaction_index(kind: &str, at_ms: i64, user_id: &str) -> String {
    format!("{kind}#{at_ms:013}#{user_id}")
}

/// The prefix of an account's bookmarks list under [`user`].
pub const BOOKMARKS_PREFIX: &str = "BOOKMARKS#";

/// A bookmark in its account's list, newest first by when.
pub fn bookmark_entry(at_ms: i64, post_id: &str) -> String {
    format!("{BOOKMARKS_PREFIX}{at_ms:013}#{post_id}")
}

/// A post's comments: top-level ones at [`comment`], replies at [`reply`], and where each is at
/// [`comment_locator`].
pub fn comments(post_id: &str) -> String {
    format!("COMMENTS#{post_id}")
}

/// The prefix of a post's top-level comments under [`comments`].
pub const COMMENT_PREFIX: &str = "C#";

/// A top-level comment (ids are time-ordered, so the sort key is the time order).
pub fn comment(comment_id: &str) -> String {
    format!("{COMMENT_PREFIX}{comment_id}")
}

/// The prefix of a comment's replies under [`comments`].
pub fn replies_prefix(parent_id: &str) -> String {
    format!("R#{parent_id}#")
}

/// A reply to the comment `parent_id`.
pub fn reply(parent_id: &str, comment_id: &str) -> String {
    format!("{}{comment_id}", replies_prefix(parent_id))
}

/// Where a comment (top-level or reply) is kept, by its id, under [`comments`].
pub fn comment_locator(comment_id: &str) -> String {
    format!("ID#{comment_id}")
}

/// An account's following feed (its timeline): the posts fanned out to it, newest first.
pub fn feed(user_id: &str) -> String {
    format!("FEED#{user_id}")
}

/// A post's place in a timeline (or in an author's list, after [`POSTS_PREFIX`]): when (ms),
/// then which; one position orders both.
pub fn feed_entry(at_ms: i64, post_id: &str) -> String {
    format!("{at_ms:013}#{post_id}")
}

/// The accounts with more followers than fan-out serves: their posts are merged into their
/// followers' feeds at read time; sort keys are [`widely_followed`].
pub const WIDELY_FOLLOWED: &str = "WIDELYFOLLOWED";

/// The prefix of the accounts under [`WIDELY_FOLLOWED`].
pub const ACCOUNT_PREFIX: &str = "ACCOUNT#";

/// A widely followed account's entry under [`WIDELY_FOLLOWED`].
pub fn widely_followed(user_id: &str) -> String {
    format!("{ACCOUNT_PREFIX}{user_id}")
}

/// A post's remixes (the posts that name it as their source), newest first by [`remix_entry`].
pub fn remixes(post_id: &str) -> String {
    format!("REMIXES#{post_id}")
}

/// The prefix of the entries under [`remixes`].
pub const REMIX_PREFIX: &str = "R#";

/// A remix's entry under its source's [`remixes`].
pub fn remix_entry(at_ms: i64, post_id: &str) -> String {
    format!("{REMIX_PREFIX}{}", feed_entry(at_ms, post_id))
}

/// A hashtag's posts (public ones), newest first by [`feed_entry`].
pub fn hashtag(tag: &str) -> String {
    format!("TAG#{tag}")
}

/// An account's notifications: its groups ([`notification_group`]), the actors counted in each
/// ([`notification_actor`]) and its unread count ([`UNREAD`]). The groups are indexed newest
/// first in `gsi1` under this same key by [`notification_position`], the unread ones in `gsi2`
/// under [`unread_notifications`] by the time alone (that index's sort key is a number).
pub fn notifications(user_id: &str) -> String {
    format!("NOTIFS#{user_id}")
}

/// A notification group ("Ann and 12 others liked your post") under [`notifications`].
pub fn notification_group(group: &str) -> String {
    format!("G#{group}")
}

/// That `actor` is counted in `group` already (a repeated event counts once).
pub fn notification_actor(group: &str, actor: &str) -> String {
    format!("A#{group}#{actor}")
}

/// The unread count of an account, under [`notifications`]: the number of its unread groups.
pub const UNREAD: &str = "UNREAD";

/// The `gsi2` partition of an account's unread notification groups (sparse: reading a group
/// removes its keys).
pub fn unread_notifications(user_id: &str) -> String {
    format!("UNREAD#{user_id}")
}

/// A notification group's place in its indexes: when it last changed (ms), then which.
pub fn notification_position(at_ms: i64, group: &str) -> String {
    format!("{at_ms:013}#{group}")
}

/// The notification groups an account is counted in as an actor (sort keys
/// `N#<account>#<group>`), for its deletion.
pub fn actor_notifications(actor_id: &str) -> String {
    format!("ACTORNOTIF#{actor_id}")
}

/// The notification groups that hang on a post (sort keys `<account>#<group>`), for its purge.
pub fn post_notifications(post_id: &str) -> String {
    format!("POSTNOTIF#{post_id}")
}

/// Partitions of each hour's hashtag counts (and of each day's recent public posts).
pub const RANKING_SHARDS: u32 = 8;

fn ranking_shard(text: &str) -> u32 {
    let digest = Sha256::digest(text.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % RANKING_SHARDS
}

/// A shard of one hour's hashtag counts (`hour`: hours since the epoch); sort keys are the tags.
pub fn tag_hour(hour: i64, shard: u32) -> String {
    format!("TAGHOUR#{hour}#{shard}")
}

/// The shard of [`tag_hour`] a tag is counted in.
pub fn tag_shard(tag: &str) -> u32 {
    ranking_shard(tag)
}

/// A shard of one day's public posts (`day`: days since the epoch), newest first by
/// [`feed_entry`]: the for-you ranking's candidates.
pub fn recent_posts(day: i64, shard: u32) -> String {
    format!("RECENT#{day}#{shard}")
}

/// The shard of [`recent_posts`] a post is listed in.
pub fn recent_shard(post_id: &str) -> u32 {
    ranking_shard(post_id)
}

/// The rankings the schedule computes: sort keys [`TRENDING_TAGS`] and [`FOR_YOU`].
pub const RANKINGS: &str = "RANKINGS";
pub const TRENDING_TAGS: &str = "TAGS";
pub const FOR_YOU: &str = "FORYOU";

/// A moderation case: what was reported (`post`, `comment`, `user`) and which; its sort key is
/// [`CASE`], each report's [`report`]. Cases are indexed in `gsi1` by status
/// ([`cases`]), latest report first.
pub fn moderation(target_type: &str, target_id: &str) -> String {
    format!("MOD#{target_type}#{target_id}")
}

/// The sort key of a moderation case under [`moderation`].
pub const CASE: &str = "CASE";

/// The prefix of the reports under [`moderation`].
pub const REPORT_PREFIX: &str = "R#";

/// One account's report of a case (one per account and target).
pub fn report(reporter: &str) -> String {
    format!("{REPORT_PREFIX}{reporter}")
}

/// The `gsi1` partition of the cases in one status.
pub fn cases(status: &str) -> String {
    format!("REPORTS#{status}")
}

/// The prefix of the accounts an account blocks, under [`user`].
pub const BLOCK_PREFIX: &str = "BLOCK#";

/// That the account blocks `blocked`, under the blocker's [`user`].
pub fn block(blocked: &str) -> String {
    format!("{BLOCK_PREFIX}{blocked}")
}

/// The prefix of the accounts that block an account, under [`user`].
pub const BLOCKED_BY_PREFIX: &str = "BLOCKEDBY#";

/// That `blocker` blocks the account, under the blocked account's [`user`].
pub fn blocked_by(blocker: &str) -> String {
    format!("{BLOCKED_BY_PREFIX}{blocker}")
}

/// A job's item.
pub fn job(job_id: &str) -> String {
    format!("JOB#{job_id}")
}

/// The sort key of a job's item under [`job`].
pub const JOB: &str = "JOB";

/// A credit order: its one item, sort key [`ORDER`].
pub fn order(order_id: &str) -> String {
    format!("ORDER#{order_id}")
}

/// The sort key of an order's item.
pub const ORDER: &str = "ORDER";

/// `gsi1pk` of a user's orders (`gsi1sk`: the order's id, newest last).
pub fn orders_of(user_id: &str) -> String {
    format!("USER#{user_id}#ORDERS")
}

/// `gsi3pk` of orders by status (`gsi3sk`: created, ms; the index holds the keys alone).
pub fn orders_in(status: &str) -> String {
    format!("ORDERS#{status}")
}

/// A provider's payment, once it paid an order: `provider` is `toss` or `stripe`, `payment_id`
/// Toss's `paymentKey` or Stripe's PaymentIntent id. One payment pays one order, once.
pub fn payment(provider: &str, payment_id: &str) -> String {
    format!("PAYMENT#{provider}#{payment_id}")
}

/// The sort key of a payment's item.
pub const PAYMENT: &str = "PAYMENT";

/// A style's listing in the marketplace (sort key [`LISTING`]): its name, price, tags, whether
/// it is public, how often it was used.
pub fn style_listing(style_id: &str) -> String {
    format!("STYLE#{style_id}")
}

/// The sort key of a style's listing.
pub const LISTING: &str = "LISTING";

/// An artist's style name, taken (sort key [`STYLE_NAME`]): names are unique per artist,
/// whatever their case.
pub fn style_name(artist_id: &str, name: &str) -> String {
    format!("STYLENAME#{artist_id}#{}", name.to_lowercase())
}

/// The sort key of a taken style name.
pub const STYLE_NAME: &str = "STYLENAME";

/// `gsi1pk` of public styles (`gsi1sk`: when published, then the id): the newest first.
pub const PUBLIC_STYLES: &str = "STYLES#PUBLIC";

/// `gsi3pk` of public styles (`gsi3sk`: how often used): the most used first.
pub const POPULAR_STYLES: &str = "STYLES#POPULAR";

/// The sort key of an account's artist profile under [`user`] (its payout details, sealed).
pub const ARTIST: &str = "ARTIST";

/// A payout request (sort key [`PAYOUT`]).
pub fn payout(payout_id: &str) -> String {
    format!("PAYOUT#{payout_id}")
}

/// The sort key of a payout request.
pub const PAYOUT: &str = "PAYOUT";

/// `gsi1pk` of payout requests by status (`requested`, `paid`, `rejected`; `gsi1sk`: the id).
pub fn payouts_in(status: &str) -> String {
    format!("PAYOUTS#{status}")
}

/// The prefix of a user's conversation folders under [`user`] (`FOLDER#<id>`).
pub const FOLDER_PREFIX: &str = "FOLDER#";

/// A conversation folder's sort key under its owner's [`user`] partition.
pub fn folder(folder_id: &str) -> String {
    format!("{FOLDER_PREFIX}{folder_id}")
}

/// The prefix of a user's conversation sessions under [`user`] (`CHAT#<id>`; ids are UUIDv7,
/// so the newest sort last).
pub const CHAT_PREFIX: &str = "CHAT#";

/// A conversation session's sort key under its owner's [`user`] partition.
pub fn chat(session_id: &str) -> String {
    format!("{CHAT_PREFIX}{session_id}")
}

/// The partition of a session's messages (`CHATMSG#<session id>`); reached only through the
/// session, which is in its owner's partition.
pub fn chat_messages(session_id: &str) -> String {
    format!("CHATMSG#{session_id}")
}

/// The prefix of a message's sort key under [`chat_messages`] (`MSG#<id>`; ids are UUIDv7, so
/// the oldest sort first).
pub const MESSAGE_PREFIX: &str = "MSG#";

/// A message's sort key under [`chat_messages`].
pub fn message(message_id: &str) -> String {
    format!("{MESSAGE_PREFIX}{message_id}")
}

/// A reply's version under [`chat_messages`] (`VER#<message id>#<job id>`).
pub fn message_version(message_id: &str, job_id: &str) -> String {
    format!("VER#{message_id}#{job_id}")
}

/// The sort key, under a job's [`job`] partition, of the session message it answers (an image
/// asked in a session).
pub const JOB_MESSAGE: &str = "CHATREF";

/// `gsi1pk` of a user's sessions in one folder (`root` for none; `gsi1sk`: the session's id).
pub fn chats_in(user_id: &str, folder_id: Option<&str>) -> String {
    format!("USER#{user_id}#CHATS#{}", folder_id.unwrap_or("root"))
}

/// The sort key of an idempotency record under [`idempotency`].
pub const IDEMPOTENCY: &str = "IDEMP";

/// The `gsi1` partition of a user's jobs, newest first by id.
pub fn jobs_of(user_id: &str) -> String {
    format!("USER#{user_id}#JOBS")
}

/// Partitions of the index of unfinished jobs (`gsi2`), so the reaper's reads spread out.
pub const ACTIVE_SHARDS: u32 = 4;

/// The `gsi2` partition of an unfinished job.
pub fn active_shard(job_id: &str) -> String {
    format!("ACTIVE#{}", spread(job_id, ACTIVE_SHARDS))
}

/// Partitions of the index of jobs waiting on a provider (`gsi3`, by when we last heard of them).
pub const POLL_SHARDS: u32 = 4;

/// The `gsi3` partition of a job at a provider.
pub fn poll_shard(job_id: &str) -> String {
    format!("POLL#{}", spread(job_id, POLL_SHARDS))
}

fn spread(job_id: &str, shards: u32) -> u32 {
    job_id.bytes().map(u32::from).sum::<u32>() % shards
}

/// Partitions of the outbox: the messages of admitted jobs until their sender confirms them.
pub const OUTBOX_SHARDS: u32 = 4;

/// The outbox partition of a job's message.
pub fn outbox_shard(job_id: &str) -> String {
    format!("OUTBOX#{}", spread(job_id, OUTBOX_SHARDS))
}

/// The outbox partition by number.
pub fn outbox_partition(shard: u32) -> String {
    format!("OUTBOX#{shard}")
}

/// The sort key of a job's outbox entry: due (epoch seconds, zero-padded so keys sort by time),
/// then the job.
pub fn outbox_entry(due: i64, job_id: &str) -> String {
    format!("{due:012}#{job_id}")
}

/// A user's idempotency record for a request key (hashed: clients choose the key).
pub fn idempotency(user_id: &str, key: &str) -> String {
    format!(
        "IDEMP#{user_id}#{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

/// The prefix of a user's ledger lines under [`user`].
pub const LEDGER_PREFIX: &str = "LEDGER#";

/// A ledger line: `entry` is a job's id and `debit` / `refund`, or a fresh id and `grant`.
pub fn ledger(entry: &str, reason: &str) -> String {
    format!("{LEDGER_PREFIX}{entry}#{reason}")
}

/// A refresh token's item (by the token's hash: the token itself is never stored).
pub fn refresh_token(token: &str) -> String {
    format!("REFRESH#{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// The sort key of a refresh token's item under [`refresh_token`].
pub const TOKEN: &str = "TOKEN";

/// A session family: every refresh token one sign-in led to.
pub fn session_family(family_id: &str) -> String {
    format!("FAMILY#{family_id}")
}

/// The sort key of a session family's item under [`session_family`].
pub const FAMILY: &str = "FAMILY";

/// A rate-limit budget's counter (`digest` hashes who is counted).
pub fn rate(scope: &str, digest: &str) -> String {
    format!("RATE#{scope}#{digest}")
}

/// The prefix of a user's webhook endpoints under [`user`].
pub const ENDPOINT_PREFIX: &str = "WHEP#";

/// A webhook endpoint's sort key under [`user`].
pub fn endpoint(id: &str) -> String {
    format!("{ENDPOINT_PREFIX}{id}")
}

/// Where an endpoint's (or a job's) delivery attempts are kept.
pub fn deliveries(target: &str) -> String {
    format!("DELIVERIES#{target}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(active_shard("abc"), active_shard("abc"));
        for id in ["a", "b", "0193-x", "ffff"] {
            assert!(spread(id, ACTIVE_SHARDS) < ACTIVE_SHARDS);
        }
        assert_eq!(ledger("job1", "debit"), "LEDGER#job1#debit");
        assert!(endpoint("e1").starts_with(ENDPOINT_PREFIX));
    }
}
