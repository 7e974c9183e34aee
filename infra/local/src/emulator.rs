//! The AWS API emulator: moto server from the project venv, with DynamoDB serialized.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running moto server. Killed when dropped; it also exits by itself when its parent does (a
/// test binary keeps its emulator in a static, which is never dropped).
pub struct Emulator {
    pub endpoint: String,
    child: Child,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root (where `template.yaml` and `.venv` live): `LAMBENT_ROOT`, else this crate's
/// grandparent.
pub fn repo_root() -> PathBuf {
    std::env::var_os("LAMBENT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

impl Emulator {
    /// Starts moto on a free loopback port and waits until it answers.
    pub async fn start(root: &Path) -> anyhow::Result<Self> {
        let python = root.join(".venv/bin/python");
        if !python.exists() {
            bail!(
                "{} is missing: run `make venv` (make dev and make test do it for you)",
                python.display()
            );
        }
        let port_file =
            std::env::temp_dir().join(format!("lambent-moto-{}.port", uuid::Uuid::new_v4()));
        let child = Command::new(&python)
            .arg(root.join("infra/local/moto_server.py"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--exit-with-parent",
                "--port-file",
            ])
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut emulator = Self {
            endpoint: String::new(),
            child,
        };
        let port = loop {
            if let Ok(text) = tokio::fs::read_to_string(&port_file).await {
                break text
                    .trim()
                    .parse::<u16>()
                    .context("the emulator wrote a bad port")?;
            }
            if let Some(status) = emulator.child.try_wait()? {
                bail!(
                    "the emulator exited at start ({status}); is the venv complete? run `make venv`"
                );
            }
            if Instant::now() > deadline {
                bail!("the emulator did not start within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = tokio::fs::remove_file(&port_file).await;
        emulator.endpoint = format!("http://127.0.0.1:{port}");
        Ok(emulator)
    }
}

/// An SDK configuration that reaches the emulator, with dummy credentials and the timeouts the
/// functions have in AWS.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .timeout_config(lambent::State::sdk_timeouts())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local",
            "local",
            None,
            None,
            "lambent-local",
        ))
        .load()
        .await
}
