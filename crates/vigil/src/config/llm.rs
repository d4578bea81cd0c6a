//! `[diagnosis.llm]`: an optional advisor (Ollama, or any OpenAI-compatible server) that can
//! make vigil's verdicts stricter, never looser.

use std::path::Path;
use std::time::Duration;

use vigil_core::AdvisorSpec;

use super::diagnostic::ConfigError;
use super::reader::{Cx, Tbl};

const KEYS: &[&str] = &[
    "provider",
    "url",
    "model",
    "timeout",
    "max_tokens",
    "min_confidence",
    "context",
    "api_key_file",
    "enabled",
];
const PROVIDERS: &[&str] = &["ollama", "openai"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Ollama's native `/api/chat`.
    Ollama,
    /// `/v1/chat/completions`: llama.cpp server, vLLM, LM Studio, Ollama's `/v1`, OpenAI.
    OpenAi,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ollama => "ollama",
            Provider::OpenAi => "openai",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfig {
    pub provider: Provider,
    /// The server's base address (`http://127.0.0.1:11434`).
    pub url: String,
    pub model: String,
    /// For one answer; cold prompts on a CPU take tens of seconds.
    pub timeout: Duration,
    pub max_tokens: u32,
    /// Advice less sure than this is recorded but not acted on.
    pub min_confidence: f64,
    /// The context window asked of Ollama (its default, 4096, is small for 50 log lines).
    pub context: u32,
    /// A bearer token, for hosted OpenAI-compatible servers.
    pub api_key: Option<String>,
}

impl LlmConfig {
    pub fn advisor_spec(&self) -> AdvisorSpec {
        AdvisorSpec {
            min_confidence: self.min_confidence,
            // Up to `timeout` for its turn behind another question, then `timeout` to be
            // answered: the core holds out for both (an answer usually comes much sooner).
            wait: self.timeout.saturating_mul(2),
        }
    }
}

pub fn read_llm(cx: &mut Cx, t: &Tbl<'_, '_>, base_dir: &Path) -> Option<LlmConfig> {
    cx.check_keys(t, KEYS);
    let provider = cx.choice(t, "provider", PROVIDERS);
    let model = cx.string(t, "model");
    let url = cx.string(t, "url");
    let timeout = cx.duration(t, "timeout");
    let max_tokens = cx.integer(t, "max_tokens", 64..100_001);
    let min_confidence = cx.fraction(t, "min_confidence");
    let context = cx.integer(t, "context", 512..1_048_577);
    let key_file = cx.string(t, "api_key_file");
    if cx.boolean(t, "enabled") == Some(false) {
        return None;
    }
    let Some(provider) = provider else {
        if t.get("provider").is_none() {
            cx.error(
                ConfigError::new(t.span.clone(), "[diagnosis.llm] needs `provider`")
                    .hint("provider = \"ollama\" (Ollama's own API) or \"openai\" (llama.cpp server, vLLM, LM Studio, OpenAI)"),
            );
        }
        return None;
    };
    let provider = match provider.value.as_str() {
        "ollama" => Provider::Ollama,
        _ => Provider::OpenAi,
    };
    let Some(model) = model else {
        cx.error(
            ConfigError::new(t.span.clone(), "[diagnosis.llm] needs `model`").hint(
                "the model's name on the server, e.g. model = \"qwen2.5-coder:7b\" for Ollama",
            ),
        );
        return None;
    };
    let url = match url {
        Some(u) => {
            let parsed = reqwest::Url::parse(&u.value);
            match parsed {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {
                    u.value.trim_end_matches('/').to_string()
                }
                _ => {
                    cx.error(
                        ConfigError::new(
                            u.span,
                            format!(
                                "`url` in [diagnosis.llm]: \"{}\" is not an http(s) address",
                                u.value
                            ),
                        )
                        .hint("e.g. url = \"http://127.0.0.1:11434\""),
                    );
                    return None;
                }
            }
        }
        None => match provider {
            Provider::Ollama => "http://127.0.0.1:11434".to_string(),
            Provider::OpenAi => "http://127.0.0.1:8080".to_string(),
        },
    };
    let api_key = match key_file {
        Some(file) => Some(cx.secret_in_file(&file, "api_key_file", base_dir, 0)?),
        None => None,
    };
    Some(LlmConfig {
        provider,
        url,
        model: model.value,
        timeout: timeout.unwrap_or(Duration::from_secs(60)),
        max_tokens: max_tokens.unwrap_or(600) as u32,
        min_confidence: min_confidence.unwrap_or(0.5),
        context: context.unwrap_or(8192) as u32,
        api_key,
    })
}
