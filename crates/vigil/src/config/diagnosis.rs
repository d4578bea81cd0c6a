//! `[diagnosis]`: how much evidence to gather, and the user's own rules (checked before the
//! built-in ones).

use std::path::Path;

use toml::de::DeValue;
use vigil_core::{Category, Remedy, Rule, Rules};

use super::diagnostic::ConfigError;
use super::llm::{LlmConfig, read_llm};
use super::reader::{Cx, Tbl, type_name};

const KEYS: &[&str] = &["log_lines", "rules", "llm"];
const RULE_KEYS: &[&str] = &["name", "pattern", "category", "action"];
const CATEGORIES: &[&str] = &["transient", "throttled", "permanent", "unknown"];
const ACTIONS: &[&str] = &["restart", "backoff", "quarantine"];

#[derive(Clone, Debug)]
pub struct DiagnosisConfig {
    /// The agent's last log lines kept as evidence of a failure.
    pub log_lines: usize,
    pub rules: Rules,
    /// `[diagnosis.llm]`: the advisor, when one is configured.
    pub llm: Option<LlmConfig>,
}

impl Default for DiagnosisConfig {
    fn default() -> Self {
        Self {
            log_lines: 50,
            rules: Rules::default(),
            llm: None,
        }
    }
}

pub fn read_diagnosis(cx: &mut Cx, t: &Tbl<'_, '_>, base_dir: &Path) -> DiagnosisConfig {
    cx.check_keys(t, KEYS);
    let mut out = DiagnosisConfig::default();
    if let Some(llm) = cx.table(t, "llm") {
        out.llm = read_llm(cx, &llm, base_dir);
    }
    if let Some(n) = cx.integer(t, "log_lines", 0..10_001) {
        out.log_lines = n as usize;
    }
    let Some(value) = t.get("rules") else {
        return out;
    };
    let DeValue::Array(items) = value.get_ref() else {
        cx.error(
            ConfigError::new(
                value.span(),
                "`rules` in [diagnosis] must be a list of tables",
            )
            .hint(
                "write each rule as [[diagnosis.rules]] with pattern = \"…\" and category = \"…\"",
            ),
        );
        return out;
    };
    let mut rules = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let DeValue::Table(table) = item.get_ref() else {
            cx.err(
                item.span(),
                format!(
                    "rule {} of [diagnosis] must be a table, found {}",
                    n + 1,
                    type_name(item.get_ref())
                ),
            );
            continue;
        };
        let rt = Tbl {
            name: format!("diagnosis.rules[{}]", n + 1),
            table,
            span: item.span(),
        };
        cx.check_keys(&rt, RULE_KEYS);
        let name = cx
            .string(&rt, "name")
            .map(|s| s.value)
            .unwrap_or_else(|| format!("rule_{}", n + 1));
        let category = cx
            .choice(&rt, "category", CATEGORIES)
            .and_then(|c| Category::from_name(&c.value));
        let action = cx
            .choice(&rt, "action", ACTIONS)
            .and_then(|a| Remedy::from_name(&a.value));
        let Some(pattern) = cx.string(&rt, "pattern") else {
            cx.err(
                rt.span.clone(),
                format!(
                    "[{}] needs `pattern`, a regular expression over log lines",
                    rt.name
                ),
            );
            continue;
        };
        // Checked against a placeholder category so a bad pattern is reported with the rest.
        if let Err(e) = Rule::new(&name, &pattern.value, Category::Unknown, Remedy::Restart) {
            cx.error(
                ConfigError::new(
                    pattern.span,
                    format!(
                        "`pattern` in [{}] is not a valid regular expression",
                        rt.name
                    ),
                )
                .hint(
                    e.to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                ),
            );
            continue;
        }
        let Some(category) = category else {
            if rt.get("category").is_none() {
                cx.err(
                    rt.span.clone(),
                    format!(
                        "[{}] needs `category`: one of {}",
                        rt.name,
                        CATEGORIES.join(", ")
                    ),
                );
            }
            continue;
        };
        let action = action.unwrap_or(category.default_remedy());
        if let Ok(rule) = Rule::new(&name, &pattern.value, category, action) {
            rules.push(rule);
        }
    }
    out.rules = Rules::with_user(rules);
    out
}
