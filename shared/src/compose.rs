//! The composition root's wiring: the kinds each feature registers with the jobs core, the
//! features' runtimes, and the state every function builds once per cold start.

use aws_config::SdkConfig;

use crate::config::Config;
use crate::jobs::registry::{self, Registry};
use crate::state::State;

/// The kinds this deployment offers: photos, generation, and the core's test kinds if enabled.
/// Fails on a configuration the features refuse (a `PRESET_MODELS` entry naming no preset).
pub fn registry(config: &Config) -> anyhow::Result<Registry> {
    let mut kinds = crate::photos::kinds::kinds(config.upscale.queue);
    kinds.extend(crate::generation::kinds::kinds(config)?);
    kinds.extend(crate::personas::instagram::kinds());
    kinds.push(crate::conversations::replies::CHAT);
    kinds.extend(crate::videos::kinds::kinds());
    kinds.extend(registry::test_kinds(config));
    Ok(Registry::new(kinds)
        .with_abandon(crate::generation::work::ABANDON)
        .with_ended(crate::social::notifications::JOB_ENDED)
        .with_ended(crate::generation::marketplace::USED)
        .with_ended(crate::conversations::replies::ENDED)
        .with_check(crate::social::remixes::CHECK)
        .with_check(crate::videos::kinds::CHECK)
        .with_share(crate::generation::marketplace::SHARE))
}

/// The state of a function: adapters, the registry and every feature's runtime.
pub fn state(config: Config, sdk: &SdkConfig) -> anyhow::Result<State> {
    let registry = registry(&config)?;
    let table = config.table_name.clone();
    Ok(State::new(config, sdk, registry)?
        .with_feature(crate::generation::Runtime::default())
        .with_feature(crate::auth::id_tokens::Runtime::default())
        .with_feature(crate::auth::account::Runtime::new(sdk))
        .with_feature(crate::sealed::Runtime::new(sdk))
        .with_feature(crate::commerce::Runtime::default())
        .with_feature(crate::conversations::llm::Runtime::default())
        .with_feature(crate::search::index::Runtime::for_table(&table)))
}

/// [`state`] from the environment.
pub async fn state_from_env() -> anyhow::Result<State> {
    let config = Config::from_env()?;
    let sdk = State::sdk_from_env().await;
    state(config, &sdk)
}
