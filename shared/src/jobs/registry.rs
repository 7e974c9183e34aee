//! Job kinds: what each accepts, costs, how long it may run, where it runs and what runs it.

use std::time::Duration;

use serde_json::Value;

use crate::error::FieldError;
use futures::future::BoxFuture;

use crate::domain::Queue;
use crate::jobs::executor::{Finished, JobError, Progress};
use crate::jobs::model::{Job, ProviderJob};
use crate::jobs::store::{JobRef, Outcome};
use crate::state::State;

/// Runs a claimed job: to completion here, or until a provider has it.
pub type Run =
    for<'a> fn(&'a State, &'a Job, &'a Progress<'a>) -> BoxFuture<'a, Result<Finished, JobError>>;

/// Adds to a job's view what a client needs (presigned URLs of its files).
pub type Present = for<'a> fn(&'a State, &'a mut Job) -> BoxFuture<'a, anyhow::Result<()>>;

/// Prices an input by what it names (the pixels of its files, say) when its fields alone do not
/// tell: the owner's id and the input; an error refuses the submission before admission.
pub type Quote =
    for<'a> fn(&'a State, &'a str, &'a Value) -> BoxFuture<'a, Result<i64, crate::error::ApiError>>;

/// Stops paying for a job that ended here while an outside provider still runs it.
pub type Abandon = for<'a> fn(&'a State, &'a str, &'a ProviderJob) -> BoxFuture<'a, ()>;

/// Hears that a job ended (the release that ended it is done): a feature's reaction to it,
/// queued, never the release's business (errors are the hook's to log).
pub type Ended = for<'a> fn(&'a State, &'a JobRef, &'a Outcome) -> BoxFuture<'a, ()>;

/// Checks an input against what a feature knows before admission (the post a generation remixes
/// may be seen and remixed by the owner, say): the owner's id and the input; an error refuses the
/// submission, nothing debited.
pub type Check =
    for<'a> fn(&'a State, &'a str, &'a Value) -> BoxFuture<'a, Result<(), crate::error::ApiError>>;

/// Finds who earns a share of a submission's cost (the artist of the style a generation uses):
/// the owner's id and the input; an error refuses the submission, nothing debited.
pub type ShareOf =
    for<'a> fn(
        &'a State,
        &'a str,
        &'a Value,
    )
        -> BoxFuture<'a, Result<Option<crate::jobs::model::Share>, crate::error::ApiError>>;

/// One kind of job, as the feature that offers it defines it.
#[derive(Clone, Copy)]
pub struct Kind {
    pub name: &'static str,
    /// Credits debited at admission (refunded if the job fails or is canceled).
    pub cost: fn(&Value) -> i64,
    /// How long a claimed job may run before the reaper fails it.
    pub deadline: fn(&Value) -> Duration,
    pub queue: Queue,
    /// Checks the input before admission; every problem is reported.
    pub validate: fn(&Value) -> Result<(), Vec<FieldError>>,
    /// Whether this deployment can run this input (its provider configured), after `validate`.
    pub offered: fn(&State, &Kind, &Value) -> Result<(), FieldError>,
    pub run: Run,
    pub present: Option<Present>,
    /// Prices the input at submission instead of `cost` (which then prices only what the
    /// input's fields tell, for listings and tests).
    pub quote: Option<Quote>,
}

impl Kind {
    /// For kinds that run wherever they are deployed.
    pub fn always_offered(_: &State, _: &Kind, _: &Value) -> Result<(), FieldError> {
        Ok(())
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// How long an admitted job may wait in its queue before the reaper fails it.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The kinds this deployment offers, as the composition root registers them, and what stops a
/// job at its outside provider.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    kinds: Vec<Kind>,
    abandon: Option<AbandonHook>,
    ended: Vec<EndedHook>,
    checks: Vec<CheckHook>,
    shares: Vec<ShareHook>,
}

#[derive(Clone, Copy)]
struct ShareHook(ShareOf);

impl std::fmt::Debug for ShareHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShareOf")
    }
}

#[derive(Clone, Copy)]
struct CheckHook(Check);

impl std::fmt::Debug for CheckHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Check")
    }
}

#[derive(Clone, Copy)]
struct EndedHook(Ended);

impl std::fmt::Debug for EndedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ended")
    }
}

#[derive(Clone, Copy)]
struct AbandonHook(Abandon);

impl std::fmt::Debug for AbandonHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Abandon")
    }
}

impl Registry {
    pub fn new(kinds: Vec<Kind>) -> Self {
        Self {
            kinds,
            abandon: None,
            ended: Vec::new(),
            checks: Vec::new(),
            shares: Vec::new(),
        }
    }

    /// Registers a check every submission's input passes before admission.
    pub fn with_check(mut self, check: Check) -> Self {
        self.checks.push(CheckHook(check));
        self
    }

    /// Runs every registered check on a submission's input.
    pub async fn check(
        &self,
        state: &State,
        user_id: &str,
        input: &Value,
    ) -> Result<(), crate::error::ApiError> {
        for CheckHook(check) in &self.checks {
            check(state, user_id, input).await?;
        }
        Ok(())
    }

    /// Registers what finds a share of a submission's cost for another account.
    pub fn with_share(mut self, share: ShareOf) -> Self {
        self.shares.push(ShareHook(share));
        self
    }

    /// The share of a submission's cost another account earns, if a hook finds one.
    pub async fn share(
        &self,
        state: &State,
        user_id: &str,
        input: &Value,
    ) -> Result<Option<crate::jobs::model::Share>, crate::error::ApiError> {
        for ShareHook(hook) in &self.shares {
            if let Some(share) = hook(state, user_id, input).await? {
                return Ok(Some(share));
            }
        }
        Ok(None)
    }

    /// Registers what hears of every job that ends.
    pub fn with_ended(mut self, ended: Ended) -> Self {
        self.ended.push(EndedHook(ended));
        self
    }

    /// Tells every registered hook that `job` ended with `outcome`.
    pub async fn ended(&self, state: &State, job: &JobRef, outcome: &Outcome) {
        for EndedHook(hook) in &self.ended {
            hook(state, job, outcome).await;
        }
    }

    /// Registers what cancels a job at its provider.
    pub fn with_abandon(mut self, abandon: Abandon) -> Self {
        self.abandon = Some(AbandonHook(abandon));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.name == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name).collect()
    }

    /// Cancels a job at its provider, if one runs it (best effort: errors are logged).
    pub async fn abandon(&self, state: &State, job_id: &str, provider: Option<&ProviderJob>) {
        if let (Some(AbandonHook(abandon)), Some(provider)) = (self.abandon, provider) {
            abandon(state, job_id, provider).await;
        }
    }
}

/// The core's own kinds: `sleep` where the configuration enables test kinds.
pub fn test_kinds(config: &crate::config::Config) -> Vec<Kind> {
    if config.test_kinds {
        vec![SLEEP]
    } else {
        Vec::new()
    }
}

/// The longest a `sleep` job may sleep.
pub const SLEEP_MAX_MS: u64 = 15 * 60 * 1000;

/// `sleep`: `{"ms": N, "fail": bool}` sleeps N ms, reporting progress, and fails if told to.
/// Only for tests and local development.
pub const SLEEP: Kind = Kind {
    name: "sleep",
    cost: |_| 1,
    // Its run time plus a margin for a loaded machine; the reaper fails it after that.
    deadline: |input| {
        Duration::from_millis(input["ms"].as_u64().unwrap_or(0)) + Duration::from_secs(10)
    },
    queue: Queue::Cpu,
    validate: validate_sleep,
    offered: Kind::always_offered,
    run: |_, job, progress| {
        Box::pin(async move {
            crate::jobs::executor::sleep(&job.input, progress)
                .await
                .map(Finished::Output)
        })
    },
    present: None,
    quote: None,
};

fn validate_sleep(input: &Value) -> Result<(), Vec<FieldError>> {
    let Some(object) = input.as_object() else {
        return Err(vec![FieldError::new(
            "input",
            "must be an object {ms, fail?}",
        )]);
    };
    let mut errors = Vec::new();
    match object.get("ms").map(Value::as_u64) {
        Some(Some(ms)) if ms <= SLEEP_MAX_MS => {}
        _ => errors.push(FieldError::new(
            "input.ms",
            format!("must be an integer from 0 to {SLEEP_MAX_MS}"),
        )),
    }
    if object.get("fail").is_some_and(|f| !f.is_boolean()) {
        errors.push(FieldError::new("input.fail", "must be a boolean"));
    }
    for key in object
        .keys()
        .filter(|k| !matches!(k.as_str(), "ms" | "fail"))
    {
        errors.push(FieldError::new(
            format!("input.{key}"),
            "is not a field of sleep",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_kinds_exist_only_when_enabled() {
        let config = |test_kinds: &str| {
            let env = std::collections::HashMap::from([
                ("TABLE_NAME", "t"),
                ("SIGNING_KEY_SECRET_ID", "s"),
                ("JWT_AUDIENCE", "a"),
                ("ENABLE_TEST_KINDS", test_kinds),
            ]);
            crate::config::Config::from_lookup(|k| env.get(k).map(|v| v.to_string()))
                .expect("config")
        };
        assert!(test_kinds(&config("false")).is_empty());
        assert_eq!(test_kinds(&config("true"))[0].name, "sleep");
    }

    #[test]
    fn sleep_input_is_checked() {
        assert!(validate_sleep(&json!({"ms": 10})).is_ok());
        assert!(validate_sleep(&json!({"ms": 10, "fail": true})).is_ok());
        let errors =
            validate_sleep(&json!({"ms": -1, "fail": "yes", "extra": 1})).expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["input.ms", "input.fail", "input.extra"]);
        assert!(validate_sleep(&json!([1])).is_err());
        assert!(validate_sleep(&json!({"ms": SLEEP_MAX_MS + 1})).is_err());
    }
}
