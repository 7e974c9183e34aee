//! `lambent-stack` (make bench): the emulator and one stack bootstrapped from template.yaml, with
//! the gateway and no worker, for a bench that runs the function executable itself (cold starts
//! of real routes against the emulator). Writes `{endpoint, base_url, env}` as JSON to the path
//! after `--out`, then serves until stdin closes.

use std::collections::HashMap;

use anyhow::Context as _;
use lambent_local::{Emulator, Options, arg, repo_root};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = arg("--out").context("--out PATH")?;
    let emulator = Emulator::start(&repo_root()).await?;
    let running = lambent_local::start(
        &emulator.endpoint,
        Options {
            prefix: "bench-cold".into(),
            port: 0,
            // Sign-ins and registrations many times a minute from one address.
            overrides: HashMap::from([
                ("LOGIN_RATE_PER_MINUTE".into(), "100000".into()),
                ("REGISTER_RATE_PER_MINUTE".into(), "100000".into()),
            ]),
            worker: false,
            reaper_every: None,
            rankings_every: None,
        },
    )
    .await?;
    let description = serde_json::json!({
        "endpoint": emulator.endpoint,
        "base_url": running.base_url,
        "env": running.env,
    });
    std::fs::write(&out, description.to_string()).with_context(|| out.clone())?;
    // Until the bench closes our stdin (or goes away).
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        std::io::stdin().read_to_end(&mut Vec::new())
    })
    .await;
    Ok(())
}
