//! The jobs core: the kinds registry, admission and release, the worker, job events, and the
//! `/v1/jobs` routes. It names no feature: features register their kinds.

pub mod events;
pub mod executor;
pub mod handlers;
pub mod model;
pub mod outbox;
pub mod registry;
pub mod store;
pub mod worker;

use chrono::{DateTime, Utc};

use crate::jobs::store::{JobRef, Outcome};
use crate::state::State;

/// Ends a job through the release transaction and, when this call is the one that ended it,
/// emits its `job.completed` / `job.failed` / `job.canceled` event and tells the registry's hooks.
/// `false`: it had already ended.
pub async fn finish(
    state: &State,
    job: &JobRef,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    finish_settled(state, job, outcome, None, now).await
}

/// [`finish`], keeping `charged` credits of a completed job's cost and giving back the rest in
/// the same release (a job priced by what it used).
pub async fn finish_settled(
    state: &State,
    job: &JobRef,
    outcome: &Outcome,
    charged: Option<i64>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let released = store::release(&state.db, job, outcome, charged, now).await?;
    if released {
        crate::jobs::events::ended(state, job, outcome).await;
        state.registry.ended(state, job, outcome).await;
    }
    Ok(released)
}
