//! Domain types every layer may name: which queue runs a job, which outside provider runs it.

use serde::{Deserialize, Serialize};

/// Which queue, and so which worker fleet, runs a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Queue {
    /// The SQS-triggered Lambda worker.
    Cpu,
    /// The long-running poller in the GPU ECS task.
    Gpu,
    /// The SQS-triggered Lambda worker with FFmpeg: its layer and ONNX Runtime's do not fit in
    /// one function's 250 MB, so video kinds have their own function (the same code).
    Video,
}

impl Queue {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// Which provider runs a job.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ProviderName {
    /// fal.ai's queue API.
    Fal,
    /// Replicate's predictions API.
    Replicate,
    /// This deployment's own AI servers (`AI_SERVER_URL`).
    Ai,
}

impl ProviderName {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}
