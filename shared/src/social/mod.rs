//! The social layer (LOKIZ, Style License): public profiles and follows so far.
//!
//! A follow is one item of truth, `FOLLOW#<follower>#<followee>` (written with
//! `attribute_not_exists`: a second follow, or two at once, is the same one follow), listed under
//! both accounts (`FOLLOWER#…` under the followee, `FOLLOWING#…` under the follower, newest first
//! by the follow's time) and counted on both profiles, all in one transaction; an unfollow takes
//! the same items and counts back in one transaction whose condition is the follow itself. So
//! the counts are exact under any concurrency. Each follow or unfollow writes the followee's
//! profile, one item: DynamoDB takes about 1,000 writes a second on an item, so an account
//! gaining followers faster than that waits on the transaction's retries; the sharded counters of
//! likes (where 5,000 a second on one post is the requirement) are the way past it.

pub mod follows;
pub mod profiles;
