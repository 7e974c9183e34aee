//! Domain types every layer may name: which queue runs a job, which outside provider runs it.

use serde::{Deserialize, Serialize};

/// Which queue, and so which worker fleet, runs a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// The SQS-triggered Lambda worker.
    Cpu,
    /// The long-running poller in the GPU ECS task.
    Gpu,
}

/// Which provider runs a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderName {
    /// fal.ai's queue API.
    Fal,
    /// Replicate's predictions API.
    Replicate,
    /// This deployment's own AI servers (`AI_SERVER_URL`).
    Ai,
}

impl ProviderName {
    pub const ALL: [Self; 3] = [Self::Fal, Self::Replicate, Self::Ai];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fal => "fal",
            Self::Replicate => "replicate",
            Self::Ai => "ai",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}
