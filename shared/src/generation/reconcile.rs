//! The reconciler (scheduled): jobs at a provider that went quiet (no webhook for
//! `RECONCILE_QUIET_SECONDS`) are polled at the provider and finalized from what it says. Jobs past
//! their deadline are the reaper's: it fails them and cancels them at the provider.

use chrono::Utc;

use crate::generation::finalize::{self, Applied};
use crate::generation::providers::Provider as _;
use crate::generation::{self, Unavailable};
use crate::jobs::model::Status;
use crate::jobs::store;
use crate::state::State;

/// What one reconciler run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub polled: usize,
    pub finalized: usize,
    pub errors: usize,
}

/// Polls every quiet job once.
pub async fn run(state: &State) -> anyhow::Result<Report> {
    let mut report = Report::default();
    for job_id in
        store::due_for_poll(&state.db, state.config.generation.quiet, Utc::now(), 100).await?
    {
        let Some(job) = store::get(&state.db, &job_id).await? else {
            continue;
        };
        let Some(provider) = job.provider.clone() else {
            continue;
        };
        if job.status != Status::InProgress {
            continue;
        }
        report.polled += 1;
        let remote = match generation::adapter(state, provider.name).await {
            Ok(adapter) => adapter.status(&provider.model, &provider.request_id).await,
            Err(Unavailable::NotConfigured(name)) => {
                tracing::error!(job_id = %job.id, provider = name, "a job's provider is no longer configured");
                report.errors += 1;
                continue;
            }
            Err(Unavailable::Keys(err)) => return Err(err),
        };
        let applied = match remote {
            Ok(remote) => finalize::apply(state, &job, remote).await,
            Err(err) => Err(anyhow::anyhow!("polling the provider: {err}")),
        };
        match applied {
            Ok(Applied::Completed | Applied::Failed | Applied::Canceled) => {
                tracing::info!(job_id = %job.id, "finalized by the reconciler");
                report.finalized += 1;
            }
            Ok(Applied::Progress | Applied::Unchanged) => {
                store::postpone_poll(&state.db, &job.id, Utc::now()).await?;
            }
            Err(err) => {
                tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "reconciling failed; trying again next run");
                report.errors += 1;
                store::postpone_poll(&state.db, &job.id, Utc::now()).await?;
            }
        }
    }
    Ok(report)
}
