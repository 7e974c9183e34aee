//! Job kinds: what each accepts, costs, how long it may run, where it runs and what runs it.

use std::time::Duration;

use serde_json::Value;

use crate::error::FieldError;
use crate::jobs::executor::Executor;

/// Which queue, and so which worker fleet, runs a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// The SQS-triggered Lambda worker.
    Cpu,
    /// The long-running poller in the GPU ECS task.
    Gpu,
}

/// One kind of job.
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
    pub executor: Executor,
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

/// The kinds this deployment offers. Test kinds exist only when the configuration enables them.
#[derive(Clone, Debug)]
pub struct Registry {
    kinds: Vec<Kind>,
}

impl Registry {
    pub fn new(config: &crate::config::Config) -> Self {
        let mut kinds = vec![
            crate::photos::kinds::upscale_kind(config.upscale.queue),
            crate::photos::kinds::best_cut_kind(config.upscale.queue),
        ];
        kinds.extend(crate::generation::kinds::kinds());
        if config.test_kinds {
            kinds.push(SLEEP);
        }
        Self { kinds }
    }

    pub fn get(&self, name: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.name == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name).collect()
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
    executor: Executor::Sleep,
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
        assert!(Registry::new(&config("false")).get("sleep").is_none());
        assert!(Registry::new(&config("true")).get("sleep").is_some());
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
