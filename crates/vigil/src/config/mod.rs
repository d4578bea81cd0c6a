//! The configuration file: `vigil.toml`.

mod adopt;
mod checks;
mod cluster;
mod diagnosis;
mod diagnostic;
pub mod env_file;
mod files;
mod graph;
mod llm;
mod load;
mod model;
mod notify;
mod placeholders;
mod reader;
mod runbooks;
mod store;
mod target;
pub mod users;
mod values;

use std::path::Path;

pub use adopt::Adopt;
pub use cluster::{ClusterConfig, Placement};
pub use diagnosis::DiagnosisConfig;
pub use diagnostic::ConfigErrors;
pub use files::{FileFormat, GuardedFile, Repair};
pub use llm::{LlmConfig, Provider};
pub use load::parse;
pub use model::{
    AgentConfig, ApiConfig, CheckConfig, Config, EvidenceCommand, Pattern, Probe, StatusExpect,
};
pub use notify::{Channel, ChannelKind, DEFAULT_EVENTS, EmailConfig, SmtpTls};
pub use runbooks::AlertmanagerConfig;
pub use store::StoreConfig;
pub use target::Target;
pub use values::{did_you_mean, parse_duration};

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Read and resolve a config file. `state_dir` overrides `[vigil] state_dir`.
/// Only what reaches a running vigil (`[vigil]`, `[api]`), whatever is wrong elsewhere.
pub fn load_head(path: &Path, state_dir: Option<&Path>) -> Result<load::ConfigHead, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load::parse_head(path, &text, state_dir).map_err(LoadError::Invalid)
}

pub fn load(path: &Path, state_dir: Option<&Path>) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load::parse(path, &text, state_dir).map_err(LoadError::Invalid)
}
