//! The one answer vigil accepts from an advisor: a JSON object that fits [`schema`], checked
//! again here whatever the server promised. Anything else is discarded.

use serde_json::{Value, json};
use vigil_core::diagnosis::clip;
use vigil_core::{Category, Diagnosis, Remedy, Severity, Source};

const CATEGORIES: [&str; 4] = ["transient", "throttled", "permanent", "unknown"];
const ACTIONS: [&str; 3] = ["restart", "backoff", "quarantine"];
const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];
const MAX_CAUSE: usize = 200;
const MAX_EXPLANATION: usize = 300;

/// JSON schema of the answer: Ollama's `format`, OpenAI's `response_format`.
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "cause": {"type": "string", "maxLength": MAX_CAUSE},
            "category": {"type": "string", "enum": CATEGORIES},
            "action": {"type": "string", "enum": ACTIONS},
            "severity": {"type": "string", "enum": SEVERITIES},
            "explanation": {"type": "string", "maxLength": MAX_EXPLANATION},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1}
        },
        "required": ["cause", "category", "action", "severity", "explanation", "confidence"],
        "additionalProperties": false
    })
}

/// The same shape as a llama.cpp GBNF grammar, for servers whose schema support lets raw
/// newlines into strings or ignores numeric bounds (llama-cpp-python): strings without
/// control characters and of bounded length, confidence between 0 and 1.
pub const GRAMMAR: &str = r#"root ::= "{" ws "\"cause\":" ws str "," ws "\"category\":" ws category "," ws "\"action\":" ws action "," ws "\"severity\":" ws severity "," ws "\"explanation\":" ws str "," ws "\"confidence\":" ws conf ws "}"
category ::= "\"transient\"" | "\"throttled\"" | "\"permanent\"" | "\"unknown\""
action ::= "\"restart\"" | "\"backoff\"" | "\"quarantine\""
severity ::= "\"info\"" | "\"warning\"" | "\"critical\""
str ::= "\"" char{0,150} "\""
char ::= [^"\\\x00-\x1f] | "\\" ["\\/nt]
conf ::= "0" ("." [0-9]{1,3})? | "1" (".0")?
ws ::= [ ]?
"#;

/// Parse and check an answer; `model` names the advisor in the verdict.
pub fn parse(content: &str, model: &str) -> Result<Diagnosis, String> {
    // Raw newlines and tabs inside strings are the commonest way small models break JSON;
    // outside strings they are insignificant, so turning every one into a space is safe.
    let cleaned: String = content
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    // Some models wrap the object in prose or a code fence.
    let object = match (cleaned.find('{'), cleaned.rfind('}')) {
        (Some(a), Some(b)) if a < b => &cleaned[a..=b],
        _ => {
            return Err(format!(
                "the answer is not a JSON object: {}",
                preview(&cleaned)
            ));
        }
    };
    let v: Value = serde_json::from_str(object)
        .map_err(|e| format!("the answer is not valid JSON ({e}): {}", preview(object)))?;
    let text = |key: &str| v.get(key).and_then(Value::as_str);
    let pick = |key: &str, allowed: &[&'static str]| -> Result<&'static str, String> {
        let got = text(key).ok_or_else(|| format!("the answer has no `{key}`"))?;
        let got = got.trim().to_ascii_lowercase();
        allowed
            .iter()
            .find(|a| **a == got)
            .copied()
            .ok_or_else(|| format!("`{key}` \"{got}\" is not one of {}", allowed.join(", ")))
    };
    let category = Category::from_name(pick("category", &CATEGORIES)?).expect("listed");
    let action = Remedy::from_name(pick("action", &ACTIONS)?).expect("listed");
    let severity = pick("severity", &SEVERITIES)
        .ok()
        .and_then(Severity::from_name)
        .unwrap_or(Severity::of(category));
    let cause = clip(text("cause").ok_or("the answer has no `cause`")?, MAX_CAUSE);
    let explanation = clip(text("explanation").unwrap_or(""), MAX_EXPLANATION);
    let confidence = v
        .get("confidence")
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite())
        .ok_or("the answer has no numeric `confidence`")?
        .clamp(0.0, 1.0);
    Ok(Diagnosis {
        category,
        action,
        severity,
        rule: model.to_string(),
        explanation: match (cause.is_empty(), explanation.is_empty()) {
            (false, false) => format!("{cause}: {explanation}"),
            (false, true) => cause,
            _ => explanation,
        },
        confidence,
        source: Source::Llm,
    })
}

fn preview(s: &str) -> String {
    clip(s, 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitting_answer_becomes_an_llm_verdict() {
        let d = parse(
            "```json\n{\"cause\": \"invalid key\", \"category\": \"permanent\", \"action\": \"quarantine\", \"severity\": \"critical\", \"explanation\": \"line 3\nsays so\", \"confidence\": 1.7}\n```",
            "qwen",
        )
        .unwrap();
        assert_eq!(d.category, Category::Permanent);
        assert_eq!(d.action, Remedy::Quarantine);
        assert_eq!(d.confidence, 1.0, "clamped");
        assert_eq!(d.source, Source::Llm);
        assert_eq!(d.rule, "qwen");
        assert_eq!(d.explanation, "invalid key: line 3 says so");
    }

    #[test]
    fn answers_outside_the_schema_are_refused_with_a_reason() {
        let bad = [
            ("restart everything", "not a JSON object"),
            (
                "{\"cause\": \"x\", \"category\": \"permanent\"",
                "not a JSON object",
            ),
            (
                "{\"cause\":\"x\",\"category\":\"fatal\",\"action\":\"restart\",\"confidence\":1}",
                "`category` \"fatal\"",
            ),
            (
                "{\"cause\":\"x\",\"category\":\"transient\",\"action\":\"run rm -rf /\",\"confidence\":1}",
                "`action`",
            ),
            (
                "{\"cause\":\"x\",\"category\":\"transient\",\"action\":\"restart\"}",
                "confidence",
            ),
        ];
        for (answer, why) in bad {
            let err = parse(answer, "m").unwrap_err();
            assert!(err.contains(why), "{answer}: {err}");
        }
    }

    #[test]
    fn long_strings_are_cut() {
        let long = "x".repeat(1000);
        let d = parse(
            &format!("{{\"cause\":\"{long}\",\"category\":\"unknown\",\"action\":\"restart\",\"severity\":\"loud\",\"explanation\":\"\",\"confidence\":0.5}}"),
            "m",
        )
        .unwrap();
        assert_eq!(d.explanation.chars().count(), MAX_CAUSE);
        assert_eq!(
            d.severity,
            Severity::Info,
            "an unknown severity falls back to the category's"
        );
    }
}
