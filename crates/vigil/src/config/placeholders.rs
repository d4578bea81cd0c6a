//! `{instance}`, `{agent}` and `{template}` in commands, paths and environment values.

use super::diagnostic::ConfigError;
use super::reader::{At, Cx};
use super::values::did_you_mean;

const KNOWN: &[&str] = &["instance", "agent", "template"];

pub struct Placeholders<'a> {
    pub agent: &'a str,
    pub has_instances: bool,
    /// `{pid}` (the agent's main process) is allowed: the evidence command.
    pub pid: bool,
}

/// Every `{word}` in `s` (a lowercase identifier between braces), with its byte offset.
fn words(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = 0;
    std::iter::from_fn(move || {
        while let Some(open) = s[rest..].find('{') {
            let start = rest + open;
            let after = &s[start + 1..];
            let len = after
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(after.len());
            rest = start + 1;
            if len > 0 && after[len..].starts_with('}') {
                return Some((start, &after[..len]));
            }
        }
        None
    })
}

/// Report unknown placeholders, and instance placeholders in agents without instances.
pub fn check_placeholders(cx: &mut Cx, s: &At<String>, scope: &Placeholders<'_>) {
    for (offset, word) in words(&s.value) {
        if word == "pid" && scope.pid {
            continue;
        }
        // +1 for the opening quote of the TOML string.
        let at = s.span.start + 1 + offset;
        let span = at..at + word.len() + 2;
        if !KNOWN.contains(&word) {
            let mut e = ConfigError::new(span, format!("unknown placeholder `{{{word}}}`"));
            let mut known = KNOWN.to_vec();
            if scope.pid {
                known.push("pid");
            }
            e = match did_you_mean(word, &known) {
                Some(k) => e.hint(format!("did you mean `{{{k}}}`?")),
                None => e.hint(format!(
                    "known placeholders here: {}",
                    known
                        .iter()
                        .map(|k| format!("{{{k}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            };
            cx.error(e);
        } else if word != "agent" && !scope.has_instances {
            cx.error(
                ConfigError::new(
                    span,
                    format!(
                        "`{{{word}}}` is used, but agent `{}` has no `instances`",
                        scope.agent
                    ),
                )
                .hint("add instances = [\"A\", \"B\"] to run one agent per instance"),
            );
        }
    }
}

/// Substitute the placeholders (already checked).
pub fn expand(s: &str, agent: &str, template: &str, instance: Option<&str>) -> String {
    if !s.contains('{') {
        return s.to_string();
    }
    let mut out = s.replace("{agent}", agent);
    if let Some(i) = instance {
        out = out.replace("{instance}", i).replace("{template}", template);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders_but_not_json() {
        let found: Vec<_> = words(r#"--symbol={instance} {"a":1} {x}{agent}"#).collect();
        assert_eq!(found, vec![(9, "instance"), (28, "x"), (31, "agent")]);
    }

    #[test]
    fn expands_known_words() {
        assert_eq!(
            expand(
                "/tmp/{template}_{instance}.hb ({agent})",
                "t@BTC",
                "t",
                Some("BTC")
            ),
            "/tmp/t_BTC.hb (t@BTC)"
        );
    }
}
