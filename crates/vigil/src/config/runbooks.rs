//! `[alertmanager]` (taking alerts in) and `[[runbooks]]` (what an alert makes vigil do).

use std::path::Path;
use std::time::Duration;

use vigil_core::runbook::{AlertPolicy, Matcher, OnFailure, RunbookSpec, Step};

use super::diagnostic::ConfigError;
use super::reader::{Cx, Tbl};

const ALERTMANAGER_KEYS: &[&str] = &["token_file", "self_labels", "max_concurrent_runbooks"];
const RUNBOOK_KEYS: &[&str] = &[
    "name",
    "match",
    "match_re",
    "agent",
    "steps",
    "timeout",
    "on_failure",
];
const STEP_KINDS: &[&str] = &[
    "collect",
    "diagnose",
    "restart",
    "wait_healthy",
    "exec",
    "notify",
];

/// `[alertmanager]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertmanagerConfig {
    /// Alertmanager's `Authorization: Bearer` credentials.
    pub token: String,
    pub policy: AlertPolicy,
}

pub fn read_alertmanager(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    base_dir: &Path,
) -> Option<AlertmanagerConfig> {
    cx.check_keys(t, ALERTMANAGER_KEYS);
    let mut policy = AlertPolicy::default();
    if let Some(labels) = cx.string_map(t, "self_labels") {
        policy.self_labels = labels.into_iter().map(|(k, v)| (k, v.value)).collect();
    }
    if let Some(n) = cx.integer(t, "max_concurrent_runbooks", 1..1001) {
        policy.max_concurrent = n as usize;
    }
    let Some(file) = cx.string(t, "token_file") else {
        cx.error(
            ConfigError::new(t.span.clone(), "[alertmanager] needs `token_file`")
                .hint("a file holding the bearer token Alertmanager sends (http_config.authorization.credentials_file on its side); make one with `openssl rand -hex 24`"),
        );
        return None;
    };
    let token = cx.secret_in_file(&file, "token_file", base_dir, 16)?;
    Some(AlertmanagerConfig { token, policy })
}

/// `[[runbooks]]`. `channels` are the `[notify]` names a `notify` step may use.
pub fn read_runbooks(
    cx: &mut Cx,
    root: &Tbl<'_, '_>,
    base_dir: &Path,
    channels: &[String],
) -> Vec<(RunbookSpec, std::ops::Range<usize>)> {
    let mut out: Vec<(RunbookSpec, std::ops::Range<usize>)> = Vec::new();
    let example = "name = \"stalled-trader\", match = { alertname = \"TraderStalled\" }, agent = \"{{ labels.agent }}\", steps = [{ restart = true }]";
    for t in cx.table_list(root, "runbooks", "runbook", example) {
        cx.check_keys(&t, RUNBOOK_KEYS);
        let name = cx.string(&t, "name");
        let agent = cx.string(&t, "agent");
        let timeout = cx
            .duration(&t, "timeout")
            .unwrap_or(Duration::from_secs(600));
        let on_failure = match cx.choice(&t, "on_failure", &["escalate", "notify"]) {
            Some(c) if c.value == "notify" => OnFailure::Notify,
            _ => OnFailure::Escalate,
        };
        let mut matchers = Vec::new();
        for (k, v) in cx.string_map(&t, "match").unwrap_or_default() {
            matchers.push((k, Matcher::Equal(v.value)));
        }
        for (k, v) in cx.string_map(&t, "match_re").unwrap_or_default() {
            // Anchored, as Alertmanager's matchers are.
            match regex::Regex::new(&format!("^(?:{})$", v.value)) {
                Ok(re) => matchers.push((k, Matcher::Regex(re))),
                Err(e) => cx.err(
                    v.span,
                    format!(
                        "`{k}` in match_re of [{}] is not a regular expression: {e}",
                        t.name
                    ),
                ),
            }
        }
        let steps = read_steps(cx, &t, base_dir, channels);
        let (Some(name), Some(agent)) = (name, agent) else {
            cx.error(
                ConfigError::new(t.span.clone(), format!("[{}] needs `name` and `agent`", t.name))
                    .hint("agent = \"{{ labels.agent }}\" takes the agent from the alert's `agent` label; a plain name always acts on that agent"),
            );
            continue;
        };
        if t.get("match").is_none() && t.get("match_re").is_none() {
            cx.error(
                ConfigError::new(t.span.clone(), format!("runbook {} matches no alert", name.value))
                    .hint("add match = { alertname = \"…\" } (equality) or match_re = { severity = \"crit|page\" }"),
            );
        }
        if out.iter().any(|(r, _)| r.name == name.value) {
            cx.err(name.span, format!("a second runbook named {}", name.value));
            continue;
        }
        let listed = t.get("steps").is_some_and(|v| match v.get_ref() {
            toml::de::DeValue::Array(a) => !a.is_empty(),
            _ => true,
        });
        if !listed {
            cx.error(
                ConfigError::new(
                    t.span.clone(),
                    format!("runbook {} has no steps", name.value),
                )
                .hint("steps = [{ restart = true }, { wait_healthy = \"2m\" }]"),
            );
        }
        out.push((
            RunbookSpec {
                name: name.value,
                matchers,
                agent: agent.value,
                steps,
                timeout,
                on_failure,
            },
            agent.span,
        ));
    }
    out
}

fn read_steps(cx: &mut Cx, t: &Tbl<'_, '_>, base_dir: &Path, channels: &[String]) -> Vec<Step> {
    let mut steps = Vec::new();
    let example = "{ restart = true }";
    for s in cx.table_list(t, "steps", "step", example) {
        let kinds: Vec<&str> = STEP_KINDS
            .iter()
            .copied()
            .filter(|k| s.get(k).is_some())
            .collect();
        let mut known = STEP_KINDS.to_vec();
        known.push("timeout");
        cx.check_keys(&s, &known);
        let kind = match kinds.as_slice() {
            [one] => *one,
            [] => {
                cx.error(
                    ConfigError::new(s.span.clone(), format!("[{}] says no step", s.name)).hint(
                        "one of: collect = \"evidence\", diagnose = true, restart = true, wait_healthy = \"2m\", exec = [\"cmd\", \"arg\"], notify = \"CHANNEL\"",
                    ),
                );
                continue;
            }
            many => {
                cx.err(
                    s.span.clone(),
                    format!(
                        "[{}] has several steps in one ({}): write one per table",
                        s.name,
                        many.join(", ")
                    ),
                );
                continue;
            }
        };
        let step = match kind {
            "collect" => match cx.string(&s, "collect") {
                Some(v) if v.value == "evidence" => Some(Step::Collect),
                Some(v) => {
                    cx.err(
                        v.span,
                        format!(
                            "[{}]: collect = \"evidence\" is what can be collected",
                            s.name
                        ),
                    );
                    None
                }
                None => None,
            },
            "diagnose" => flag(cx, &s, "diagnose").then_some(Step::Diagnose),
            "restart" => flag(cx, &s, "restart").then_some(Step::Restart),
            "wait_healthy" => cx.duration(&s, "wait_healthy").map(Step::WaitHealthy),
            "exec" => cx.string_list(&s, "exec").and_then(|argv| {
                let mut argv: Vec<String> = argv.value.into_iter().map(|a| a.value).collect();
                if argv.is_empty() {
                    cx.err(
                        s.span.clone(),
                        format!("[{}]: exec needs a command", s.name),
                    );
                    return None;
                }
                // `scripts/reconcile.sh` is relative to the config, like every path in it.
                if argv[0].contains('/') && !argv[0].starts_with('/') {
                    argv[0] = base_dir.join(&argv[0]).to_string_lossy().into_owned();
                }
                let timeout = cx
                    .duration(&s, "timeout")
                    .unwrap_or(Duration::from_secs(60));
                Some(Step::Exec { argv, timeout })
            }),
            _ => cx.string(&s, "notify").and_then(|c| {
                if channels.contains(&c.value) {
                    Some(Step::Notify(c.value))
                } else {
                    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
                    let mut e = ConfigError::new(
                        c.span,
                        format!("[{}]: there is no [notify.{}] channel", s.name, c.value),
                    );
                    e = match super::did_you_mean(&c.value, &names) {
                        Some(n) => e.hint(format!("did you mean `{n}`?")),
                        None => e.hint("add a [notify.NAME] section, or name one of its channels"),
                    };
                    cx.error(e);
                    None
                }
            }),
        };
        if kind != "exec" && s.get("timeout").is_some() {
            cx.err(s.span.clone(), format!("[{}]: only an exec step has a timeout (the runbook's own is `timeout` in [[runbooks]])", s.name));
        }
        steps.extend(step);
    }
    steps
}

/// `restart = true`; `false` is a mistake worth saying (a step that does nothing).
fn flag(cx: &mut Cx, s: &Tbl<'_, '_>, key: &str) -> bool {
    match cx.boolean(s, key) {
        Some(true) => true,
        Some(false) => {
            let span = s.get(key).map(|v| v.span()).unwrap_or(s.span.clone());
            cx.err(
                span,
                format!("[{}]: `{key} = false` is no step: leave it out", s.name),
            );
            false
        }
        None => false,
    }
}

/// A runbook that names its agent outright must name one that is configured.
pub fn check_agents(
    cx: &mut Cx,
    runbooks: &[(RunbookSpec, std::ops::Range<usize>)],
    agents: &[super::AgentConfig],
) {
    for (rb, span) in runbooks {
        if rb.agent.contains("{{") || agents.iter().any(|a| a.name == rb.agent) {
            continue;
        }
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        let mut e = ConfigError::new(
            span.clone(),
            format!(
                "runbook {} acts on `{}`, which is not a configured agent",
                rb.name, rb.agent
            ),
        );
        e = match super::did_you_mean(&rb.agent, &names) {
            Some(n) => e.hint(format!("did you mean `{n}`?")),
            None => e.hint("name an agent (an instance: `trader@BTC_USDT`), or take it from the alert: agent = \"{{ labels.agent }}\""),
        };
        cx.error(e);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn parsed(text: &str) -> Result<crate::config::Config, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("am-token"), "0123456789abcdef0123").unwrap();
        let path = dir.path().join("vigil.toml");
        parse(&path, text, None).map_err(|e| e.to_string())
    }

    const AGENT: &str = "[agents.bot]\ncommand = [\"true\"]\n";

    #[test]
    fn runbooks_and_alertmanager_are_read() {
        let text = format!(
            "{AGENT}\n[alertmanager]\ntoken_file = \"am-token\"\nself_labels = {{ job = \"vigil\" }}\n\n\
             [notify.ops]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n\n\
             [[runbooks]]\nname = \"r\"\nmatch = {{ alertname = \"X\" }}\nmatch_re = {{ severity = \"crit|page\" }}\n\
             agent = \"{{{{ labels.agent }}}}\"\nsteps = [{{ collect = \"evidence\" }}, {{ diagnose = true }}, \
             {{ restart = true }}, {{ wait_healthy = \"2m\" }}, {{ exec = [\"scripts/x.sh\", \"{{instance}}\"], timeout = \"5s\" }}, \
             {{ notify = \"ops\" }}]\non_failure = \"notify\"\n"
        );
        let c = parsed(&text).unwrap();
        assert_eq!(c.api.alert_token.as_deref(), Some("0123456789abcdef0123"));
        let rb = &c.runbooks[0];
        assert_eq!(rb.steps.len(), 6);
        assert!(
            rb.matches(
                &[
                    ("alertname".to_string(), "X".to_string()),
                    ("severity".to_string(), "page".to_string())
                ]
                .into()
            )
        );
        assert!(
            !rb.matches(
                &[
                    ("alertname".to_string(), "X".to_string()),
                    ("severity".to_string(), "pager".to_string())
                ]
                .into()
            )
        );
        let vigil_core::runbook::Step::Exec { argv, .. } = &rb.steps[4] else {
            panic!()
        };
        assert!(
            argv[0].ends_with("/scripts/x.sh") && argv[0].starts_with('/'),
            "{argv:?}"
        );
    }

    #[test]
    fn mistakes_in_runbooks_are_named() {
        let text = format!(
            "{AGENT}\n[[runbooks]]\nname = \"r\"\nmatch_re = {{ alertname = \"(\" }}\nagent = \"bott\"\n\
             steps = [{{ notify = \"opz\" }}, {{ restart = true, diagnose = true }}, {{ restart = false }}, {{ reboot = true }}]\n"
        );
        let e = parsed(&text).unwrap_err();
        assert!(e.contains("is not a regular expression"), "{e}");
        assert!(e.contains("there is no [notify.opz] channel"), "{e}");
        assert!(e.contains("several steps in one"), "{e}");
        assert!(e.contains("`restart = false` is no step"), "{e}");
        assert!(e.contains("`reboot`"), "{e}");
        assert!(
            e.contains("acts on `bott`, which is not a configured agent"),
            "{e}"
        );
        assert!(e.contains("did you mean `bot`?"), "{e}");
    }

    #[test]
    fn alertmanager_needs_its_token() {
        let e = parsed(&format!("{AGENT}\n[alertmanager]\n")).unwrap_err();
        assert!(e.contains("[alertmanager] needs `token_file`"), "{e}");
    }

    #[test]
    fn mistakes_in_channels_are_named_without_their_secrets() {
        let text = format!(
            "{AGENT}\n[notify.a]\nkind = \"slack\"\nurl = \"hooks.slack.com/services/SECRET\"\n\n\
             [notify.b]\nkind = \"webhook\"\nurl = \"http://x\"\nevents = [\"escalatd\"]\n\n\
             [notify.c]\nkind = \"email\"\nserver = \"smtp.example.com\"\ntls = \"none\"\nfrom = \"x@y\"\nto = [\"not an address\"]\n\n\
             [notify.d]\nkind = \"telegram\"\n"
        );
        let e = parsed(&text).unwrap_err();
        assert!(
            e.contains("`url` in [notify.a] is not an http(s) address"),
            "{e}"
        );
        assert!(e.contains("did you mean `escalated`?"), "{e}");
        assert!(e.contains("unencrypted"), "{e}");
        assert!(
            e.contains("\"not an address\" is not an email address"),
            "{e}"
        );
        assert!(
            e.contains("(telegram) needs `token_file` and `chat_id`"),
            "{e}"
        );
    }
}
