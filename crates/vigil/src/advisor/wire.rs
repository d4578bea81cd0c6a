//! The two ways of asking a model: Ollama's native `/api/chat`, and the OpenAI-compatible
//! `/v1/chat/completions` that llama.cpp's server, vLLM, LM Studio and Ollama's `/v1` speak.

use serde_json::{Value, json};

use super::answer;
use super::prompt::Prompt;
use crate::config::{LlmConfig, Provider};

/// How to ask for structured output on an OpenAI-compatible server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structured {
    /// OpenAI's `response_format: {type: json_schema}`.
    JsonSchema,
    /// `json_object` with the schema, plus a GBNF grammar: llama-cpp-python refuses
    /// `json_schema`, and its schema grammar lets raw newlines into strings.
    Grammar,
}

pub fn endpoint(cfg: &LlmConfig) -> String {
    match cfg.provider {
        Provider::Ollama => format!("{}/api/chat", cfg.url),
        Provider::OpenAi if cfg.url.ends_with("/v1") => format!("{}/chat/completions", cfg.url),
        Provider::OpenAi => format!("{}/v1/chat/completions", cfg.url),
    }
}

pub fn request(cfg: &LlmConfig, prompt: &Prompt, structured: Structured) -> Value {
    let messages = json!([
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.user},
    ]);
    match cfg.provider {
        Provider::Ollama => json!({
            "model": cfg.model,
            "messages": messages,
            "stream": false,
            "format": answer::schema(),
            "keep_alive": "30m",
            "options": {
                "temperature": 0,
                "num_predict": cfg.max_tokens,
                "num_ctx": cfg.context,
            },
        }),
        Provider::OpenAi => {
            let mut body = json!({
                "model": cfg.model,
                "messages": messages,
                "stream": false,
                "temperature": 0,
                "max_tokens": cfg.max_tokens,
            });
            match structured {
                Structured::JsonSchema => {
                    body["response_format"] = json!({
                        "type": "json_schema",
                        "json_schema": {"name": "diagnosis", "strict": true, "schema": answer::schema()},
                    });
                }
                Structured::Grammar => {
                    body["response_format"] =
                        json!({"type": "json_object", "schema": answer::schema()});
                    body["grammar"] = json!(answer::GRAMMAR);
                }
            }
            body
        }
    }
}

/// A refusal that means "I don't do `json_schema`": try the grammar instead.
pub fn refuses_json_schema(status: u16, body: &str) -> bool {
    matches!(status, 400 | 422 | 500 | 501)
        && (body.contains("json_schema") || body.contains("response_format"))
}

/// The model's text, or why there is none (cut off, missing).
pub fn content(provider: Provider, body: &Value) -> Result<String, String> {
    let (text, finish) = match provider {
        Provider::Ollama => (
            body.pointer("/message/content").and_then(Value::as_str),
            body.get("done_reason").and_then(Value::as_str),
        ),
        Provider::OpenAi => (
            body.pointer("/choices/0/message/content")
                .and_then(Value::as_str),
            body.pointer("/choices/0/finish_reason")
                .and_then(Value::as_str),
        ),
    };
    let text = text.ok_or_else(|| match body.get("error") {
        Some(e) => format!("the server answered with an error: {e}"),
        None => "the server's answer has no message".to_string(),
    })?;
    match finish {
        Some("stop") | None => Ok(text.to_string()),
        Some("length") => Err("the answer was cut off at max_tokens".into()),
        Some(other) => Err(format!("the answer ended with \"{other}\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(provider: Provider, url: &str) -> LlmConfig {
        LlmConfig {
            provider,
            url: url.into(),
            model: "m".into(),
            timeout: Duration::from_secs(60),
            max_tokens: 600,
            min_confidence: 0.5,
            context: 8192,
            api_key: None,
        }
    }

    #[test]
    fn endpoints_follow_each_servers_convention() {
        assert_eq!(
            endpoint(&cfg(Provider::Ollama, "http://h:11434")),
            "http://h:11434/api/chat"
        );
        assert_eq!(
            endpoint(&cfg(Provider::OpenAi, "http://h:8080")),
            "http://h:8080/v1/chat/completions"
        );
        assert_eq!(
            endpoint(&cfg(Provider::OpenAi, "http://h:11434/v1")),
            "http://h:11434/v1/chat/completions"
        );
    }

    #[test]
    fn a_cut_off_answer_is_not_an_answer() {
        let cut = json!({"message": {"content": "{\"cause\": \"x"}, "done": true, "done_reason": "length"});
        assert!(
            content(Provider::Ollama, &cut)
                .unwrap_err()
                .contains("cut off")
        );
        let ok = json!({"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]});
        assert_eq!(content(Provider::OpenAi, &ok).unwrap(), "{}");
    }
}
