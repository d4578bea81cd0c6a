//! The LLM advisor: a second opinion on a failure from a local model (Ollama, llama.cpp's
//! server, vLLM…). It runs on the I/O runtime, never on the supervision loop, and its verdict
//! goes back to the core as an `Advice` event — where it can only make the decision stricter.
//! Down, slow or talking nonsense, it costs nothing but an `llm_error` record.

mod answer;
mod cache;
mod prompt;
mod wire;

use std::sync::Mutex;
use std::time::Instant;

use vigil_core::{Diagnosis, FailureReport, human_duration};

use crate::checks::describe_http_error;
use crate::config::LlmConfig;
use crate::metrics::Live;
use cache::Cache;
use wire::Structured;

pub struct Advisor {
    cfg: LlmConfig,
    client: reqwest::Client,
    cache: Mutex<Cache>,
    /// Learnt from the server: whether it takes `json_schema` or needs the grammar.
    structured: Mutex<Structured>,
    live: Live,
    /// One question at a time: a local model answers one prompt at a time anyway, and a
    /// fleet failing together then asks once, the others reuse the cached verdict.
    one_at_a_time: tokio::sync::Semaphore,
}

/// Why there is no usable advice.
#[derive(Debug, thiserror::Error)]
pub enum AdviceError {
    /// The server is down, refused, or answered with an HTTP error.
    #[error("{0}")]
    Unavailable(String),
    /// It answered, but not with something that fits the schema.
    #[error("{0}")]
    Invalid(String),
    #[error("no answer from {url} within {after}")]
    Timeout { url: String, after: String },
    #[error("no advisor is configured any more")]
    NotConfigured,
    /// Another question held the model for the whole wait.
    #[error("the advisor was busy with another question for {waited}")]
    Busy { waited: String },
}

impl AdviceError {
    /// The outcome label of `vigil_llm_requests_total`.
    fn outcome(&self) -> &'static str {
        match self {
            AdviceError::Unavailable(_) | AdviceError::NotConfigured => "error",
            AdviceError::Invalid(_) => "invalid",
            AdviceError::Timeout { .. } => "timeout",
            AdviceError::Busy { .. } => "busy",
        }
    }
}

struct PostError {
    status: Option<u16>,
    message: String,
    body: String,
}

impl Advisor {
    pub fn new(cfg: LlmConfig, live: Live) -> Self {
        let builder =
            || crate::http_client::builder().connect_timeout(std::time::Duration::from_secs(5));
        let client = crate::http_client::build(builder);
        live.init_llm();
        Self {
            cfg,
            client,
            cache: Mutex::new(Cache::default()),
            structured: Mutex::new(Structured::JsonSchema),
            live,
            one_at_a_time: tokio::sync::Semaphore::new(1),
        }
    }

    /// The advisor's verdict on one failure, or why there is none. The model gets `timeout`
    /// for each question; waiting for the turn behind an earlier question is bounded by
    /// `timeout` too but is not part of it, so one slow answer never makes the questions
    /// queued behind it time out (they usually find that answer in the cache).
    pub async fn advise(
        &self,
        agent: &str,
        report: &FailureReport,
    ) -> Result<Diagnosis, AdviceError> {
        let key = cache::key(report);
        let Ok(Ok(_turn)) =
            tokio::time::timeout(self.cfg.timeout, self.one_at_a_time.acquire()).await
        else {
            self.live.llm_request("busy", None);
            return Err(AdviceError::Busy {
                waited: human_duration(self.cfg.timeout),
            });
        };
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key, Instant::now());
        if let Some(mut verdict) = cached {
            verdict.rule = format!("{} (cached)", self.cfg.model);
            self.live.llm_request("cached", None);
            return Ok(verdict);
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(self.cfg.timeout, self.ask(agent, report)).await {
            Ok(answer) => answer,
            Err(_) => Err(AdviceError::Timeout {
                url: self.cfg.url.clone(),
                after: human_duration(self.cfg.timeout),
            }),
        };
        let outcome = result.as_ref().map_or_else(AdviceError::outcome, |_| "ok");
        // Only answers are timed: a timeout or a refused connection is not a latency.
        let answered = matches!(&result, Ok(_) | Err(AdviceError::Invalid(_)));
        self.live
            .llm_request(outcome, answered.then(|| started.elapsed()));
        if let Ok(verdict) = &result {
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(
                key,
                Instant::now(),
                verdict.clone(),
            );
        }
        result
    }

    async fn ask(&self, agent: &str, report: &FailureReport) -> Result<Diagnosis, AdviceError> {
        let prompt = prompt::build(agent, report);
        let mode = *self.structured.lock().unwrap_or_else(|e| e.into_inner());
        let body = match self.post(&wire::request(&self.cfg, &prompt, mode)).await {
            Err(refused)
                if mode == Structured::JsonSchema
                    && refused
                        .status
                        .is_some_and(|s| wire::refuses_json_schema(s, &refused.body)) =>
            {
                tracing::info!(
                    "the advisor at {} does not take a json_schema response format; using a grammar",
                    self.cfg.url
                );
                *self.structured.lock().unwrap_or_else(|e| e.into_inner()) = Structured::Grammar;
                self.post(&wire::request(&self.cfg, &prompt, Structured::Grammar))
                    .await
            }
            other => other,
        };
        let body = body.map_err(|e| AdviceError::Unavailable(e.message))?;
        let value: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| AdviceError::Invalid(format!("the server's answer is not JSON ({e})")))?;
        let content = wire::content(self.cfg.provider, &value).map_err(AdviceError::Invalid)?;
        answer::parse(&content, &self.cfg.model).map_err(AdviceError::Invalid)
    }

    /// POST a request; the answer's body, or what went wrong.
    async fn post(&self, request: &serde_json::Value) -> Result<String, PostError> {
        let mut call = self
            .client
            .post(wire::endpoint(&self.cfg))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.to_string());
        if let Some(key) = &self.cfg.api_key {
            call = call.bearer_auth(key);
        }
        let unreachable = |e: reqwest::Error| PostError {
            status: None,
            message: format!(
                "{} advisor at {}: {}",
                self.cfg.provider.as_str(),
                self.cfg.url,
                describe_http_error(&e)
            ),
            body: String::new(),
        };
        let response = call.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            let preview: String = text.chars().take(200).collect();
            return Err(PostError {
                status: Some(status.as_u16()),
                message: format!("{} answered HTTP {status}: {preview}", self.cfg.url),
                body: text,
            });
        }
        Ok(text)
    }
}
