//! `[[agents.NAME.checks]]` and `quiet = [...]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeValue;
use vigil_core::quiet::QUIET_FORMS;
use vigil_core::{CheckKind, CheckSpec, Quiet, QuietWindow};

use super::diagnostic::ConfigError;
use super::model::{CheckConfig, Pattern, Probe, StatusExpect};
use super::placeholders::{Placeholders, check_placeholders, expand};
use super::reader::{At, Cx, Tbl, type_name};
use super::values::did_you_mean;

const COMMON: &[&str] = &[
    "kind",
    "name",
    "interval",
    "timeout",
    "failure_threshold",
    "grace",
    "produced_by",
];

fn kind_keys(kind: CheckKind) -> &'static [&'static str] {
    match kind {
        CheckKind::Heartbeat => &["path", "max_age", "content"],
        CheckKind::Notify => &["max_age", "ready"],
        CheckKind::Api => &["max_age"],
        CheckKind::Http => &["url", "expect_status", "expect_body"],
        CheckKind::Exec => &["command"],
        CheckKind::File => &["path", "max_age", "min_size"],
        CheckKind::Sql => &["url", "query", "params", "max_age"],
        CheckKind::Redis => &["url", "key", "mode", "max_age"],
        CheckKind::ContainerHealth => &[],
    }
}

/// A check before `{instance}` is substituted (one per template, expanded per instance).
pub struct CheckTemplate {
    spec: CheckSpec,
    probe: Probe,
    /// The agent whose output it watches, as written (`feed@{instance}`).
    produced_by: Option<At<String>>,
}

impl CheckTemplate {
    pub fn kind(&self) -> vigil_core::CheckKind {
        self.spec.kind
    }

    pub fn produced_by(&self) -> Option<&At<String>> {
        self.produced_by.as_ref()
    }

    /// The check for one agent: placeholders substituted in every string.
    pub fn expand(
        &self,
        agent: &str,
        template: &str,
        instance: Option<&str>,
        base: &Path,
    ) -> CheckConfig {
        let x = |s: &str| expand(s, agent, template, instance);
        let path = |p: &Path| base.join(x(&p.to_string_lossy()));
        let probe = match &self.probe {
            Probe::Heartbeat { path: p, epoch } => Probe::Heartbeat {
                path: path(p),
                epoch: *epoch,
            },
            Probe::File { path: p, min_size } => Probe::File {
                path: path(p),
                min_size: *min_size,
            },
            Probe::Http { url, expect, body } => Probe::Http {
                url: x(url),
                expect: expect.clone(),
                body: body.clone(),
            },
            Probe::Exec { command } => Probe::Exec {
                command: command.iter().map(|a| x(a)).collect(),
            },
            Probe::Sql { url, query, params } => Probe::Sql {
                url: absolute_sqlite(&x(url), base),
                query: query.clone(),
                params: params.iter().map(|p| x(p)).collect(),
            },
            Probe::Redis { url, key, exists } => Probe::Redis {
                url: x(url),
                key: x(key),
                exists: *exists,
            },
            Probe::Notify => Probe::Notify,
            Probe::ContainerHealth => Probe::ContainerHealth,
            Probe::Api => Probe::Api,
        };
        let mut spec = self.spec.clone();
        spec.produced_by = self.produced_by.as_ref().map(|p| x(&p.value));
        // The core does not know what is probed, only whether it changed: a reload that
        // changes a URL or a query is a changed check (reset, and reported as updated).
        spec.probe_fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{probe:?}").hash(&mut h);
            h.finish()
        };
        spec.target = probe_target(&probe);
        CheckConfig { spec, probe }
    }
}

/// The service a probe talks to, without credentials or query: agents whose checks find the
/// same one unreachable share a cause (a fleet incident). `postgres://db:5432/bots`,
/// `redis://cache:6379`, `http://exchange:8080`.
fn probe_target(probe: &Probe) -> Option<String> {
    let url = match probe {
        Probe::Sql { url, .. } | Probe::Redis { url, .. } | Probe::Http { url, .. } => url,
        _ => return None,
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Some(format!(
            "sqlite://{}",
            path.split('?').next().unwrap_or(path)
        ));
    }
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = match probe {
        // The database is part of what is shared; an HTTP path is not.
        Probe::Sql { .. } | Probe::Redis { .. } => u.path().trim_end_matches('/'),
        _ => "",
    };
    Some(format!("{}://{host}{port}{path}", u.scheme()))
}

/// `sqlite://relative/file.db` is relative to `base`, like every other path in the config.
fn absolute_sqlite(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(rest) if !rest.starts_with('/') && !rest.starts_with(':') => {
            format!("sqlite://{}", base.join(rest).display())
        }
        _ => url.to_string(),
    }
}

fn required(cx: &mut Cx, t: &Tbl<'_, '_>, key: &str, what: &str, example: &str) -> bool {
    if t.get(key).is_some() {
        return true;
    }
    cx.error(
        ConfigError::new(
            t.span.start..t.span.start,
            format!("[{}] needs `{key}`, {what}", t.name),
        )
        .hint(format!("add {key} = {example}")),
    );
    false
}

fn scheme_ok(cx: &mut Cx, url: &At<String>, allowed: &[&str], what: &str) {
    let ok = allowed
        .iter()
        .any(|s| url.value.starts_with(&format!("{s}://")));
    if !ok {
        cx.error(
            ConfigError::new(
                url.span.clone(),
                format!("{what} URL \"{}\" is not supported", url.value),
            )
            .hint(format!(
                "use {}",
                allowed
                    .iter()
                    .map(|s| format!("{s}://…"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        );
    }
}

/// Read every `[[agents.NAME.checks]]` entry. `default_threshold` is the policy's.
pub fn read_checks(
    cx: &mut Cx,
    agent: &Tbl<'_, '_>,
    scope: &Placeholders<'_>,
    default_threshold: u32,
) -> Vec<CheckTemplate> {
    let mut out: Vec<CheckTemplate> = Vec::new();
    for t in cx.table_list(agent, "checks", "check", "kind = \"…\"") {
        if let Some(check) = read_check(cx, &t, scope, default_threshold) {
            if out.iter().any(|c| c.spec.name == check.spec.name) {
                let span = t
                    .get("name")
                    .or(t.get("kind"))
                    .map(|v| v.span())
                    .unwrap_or(t.span.clone());
                cx.error(
                    ConfigError::new(
                        span,
                        format!(
                            "two checks of [{}] are named \"{}\"",
                            agent.name, check.spec.name
                        ),
                    )
                    .hint("give each one its own name = \"…\""),
                );
                continue;
            }
            out.push(check);
        }
    }
    out
}

fn read_check(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    scope: &Placeholders<'_>,
    default_threshold: u32,
) -> Option<CheckTemplate> {
    let kinds: Vec<&str> = CheckKind::ALL.iter().map(|k| k.as_str()).collect();
    if !required(cx, t, "kind", "the kind of check", "\"heartbeat\"") {
        return None;
    }
    let kind_at = cx.string(t, "kind")?;
    let Some(kind) = CheckKind::from_name(&kind_at.value) else {
        let mut e = ConfigError::new(
            kind_at.span.clone(),
            format!("unknown check kind \"{}\"", kind_at.value),
        );
        e = match did_you_mean(&kind_at.value, &kinds) {
            Some(k) => e.hint(format!("did you mean \"{k}\"? kinds: {}", kinds.join(", "))),
            None => e.hint(format!("kinds: {}", kinds.join(", "))),
        };
        cx.error(e);
        return None;
    };
    let known: Vec<&str> = COMMON.iter().chain(kind_keys(kind)).copied().collect();
    cx.check_keys(t, &known);
    let errors_before = cx.errors.len();

    let name = cx
        .string(t, "name")
        .map(|n| n.value)
        .unwrap_or_else(|| kind.as_str().to_string());
    let mut spec = CheckSpec::new(&name, kind);
    if !kind.is_push() {
        spec.failure_threshold = default_threshold;
    }
    if let Some(d) = cx.duration(t, "interval") {
        if d < Duration::from_millis(10) {
            cx.err(
                t.get("interval").unwrap().span(),
                format!("`interval` in [{}] must be at least 10ms", t.name),
            );
        }
        spec.interval = d;
    }
    if let Some(d) = cx.duration(t, "timeout") {
        spec.timeout = d;
    }
    if let Some(n) = cx.integer(t, "failure_threshold", 1..10_000) {
        spec.failure_threshold = n as u32;
    }
    if let Some(d) = cx.duration(t, "grace") {
        spec.grace = d;
    }
    let needs_age = !matches!(
        kind,
        CheckKind::Http | CheckKind::Exec | CheckKind::Notify | CheckKind::ContainerHealth
    );
    if needs_age {
        required(
            cx,
            t,
            "max_age",
            "the longest time without progress",
            "\"30s\"",
        );
    }
    spec.max_age = cx.duration(t, "max_age");

    let mut templated: Vec<At<String>> = Vec::new();
    let text = |cx: &mut Cx, key: &str, templated: &mut Vec<At<String>>| -> Option<String> {
        let s = cx.string(t, key)?;
        templated.push(s.clone());
        Some(s.value)
    };
    let probe = match kind {
        CheckKind::Heartbeat => {
            required(
                cx,
                t,
                "path",
                "the file the agent touches",
                "\"/tmp/{instance}_heartbeat\"",
            );
            let path = text(cx, "path", &mut templated);
            let epoch = cx
                .choice(t, "content", &["mtime", "epoch"])
                .is_some_and(|c| c.value == "epoch");
            path.map(|p| Probe::Heartbeat {
                path: PathBuf::from(p),
                epoch,
            })
        }
        CheckKind::Notify => {
            spec.ready = cx.boolean(t, "ready").unwrap_or(false);
            if spec.max_age.is_none() && !spec.ready {
                cx.error(
                    ConfigError::new(t.span.start..t.span.start, format!("[{}] needs `max_age` or `ready = true`", t.name))
                        .hint("max_age = \"30s\": the longest time between two WATCHDOG=1 (or the agent's WATCHDOG_USEC)"),
                );
            }
            Some(Probe::Notify)
        }
        CheckKind::Api => Some(Probe::Api),
        CheckKind::ContainerHealth => Some(Probe::ContainerHealth),
        CheckKind::Http => {
            required(
                cx,
                t,
                "url",
                "what to GET",
                "\"http://127.0.0.1:8080/health\"",
            );
            let url = cx.string(t, "url");
            if let Some(u) = &url {
                scheme_ok(cx, u, &["http", "https"], "http check");
                templated.push(u.clone());
            }
            let expect = read_expect_status(cx, t);
            let body =
                cx.string(t, "expect_body")
                    .and_then(|b| match regex::Regex::new(&b.value) {
                        Ok(r) => Some(Pattern(r)),
                        Err(e) => {
                            cx.err(
                                b.span,
                                format!("`expect_body` in [{}] is not a valid regex: {e}", t.name),
                            );
                            None
                        }
                    });
            url.map(|u| Probe::Http {
                url: u.value,
                expect,
                body,
            })
        }
        CheckKind::Exec => {
            required(
                cx,
                t,
                "command",
                "the command to run",
                "[\"./healthcheck.sh\"]",
            );
            let command = cx.string_list(t, "command");
            if let Some(c) = &command
                && c.value.is_empty()
            {
                cx.err(
                    c.span.clone(),
                    format!("`command` in [{}] is empty", t.name),
                );
            }
            command.map(|c| {
                templated.extend(c.value.iter().cloned());
                Probe::Exec {
                    command: c.value.into_iter().map(|a| a.value).collect(),
                }
            })
        }
        CheckKind::File => {
            required(
                cx,
                t,
                "path",
                "the file the agent produces",
                "\"logs/output.jsonl\"",
            );
            let path = text(cx, "path", &mut templated);
            let min_size = cx.size(t, "min_size");
            path.map(|p| Probe::File {
                path: PathBuf::from(p),
                min_size,
            })
        }
        CheckKind::Sql => {
            required(cx, t, "url", "the database", "\"postgres://user@host/db\"");
            required(
                cx,
                t,
                "query",
                "a query returning one timestamp or epoch",
                "\"SELECT max(ts) FROM decisions WHERE symbol = $1\"",
            );
            let url = cx.string(t, "url");
            if let Some(u) = &url {
                scheme_ok(cx, u, &["postgres", "postgresql", "sqlite"], "sql check");
                templated.push(u.clone());
            }
            let query = cx.string(t, "query");
            let params = cx
                .string_list(t, "params")
                .map(|p| p.value)
                .unwrap_or_default();
            templated.extend(params.iter().cloned());
            match (url, query) {
                (Some(u), Some(q)) => Some(Probe::Sql {
                    url: u.value,
                    query: q.value,
                    params: params.into_iter().map(|p| p.value).collect(),
                }),
                _ => None,
            }
        }
        CheckKind::Redis => {
            required(
                cx,
                t,
                "url",
                "the Redis server",
                "\"redis://127.0.0.1:6379/\"",
            );
            required(
                cx,
                t,
                "key",
                "the key the agent writes",
                "\"heartbeat:{instance}\"",
            );
            let url = cx.string(t, "url");
            if let Some(u) = &url {
                scheme_ok(cx, u, &["redis", "rediss", "unix"], "redis check");
                templated.push(u.clone());
            }
            let key = text(cx, "key", &mut templated);
            let exists = cx
                .choice(t, "mode", &["epoch", "exists"])
                .is_some_and(|m| m.value == "exists");
            match (url, key) {
                (Some(u), Some(k)) => Some(Probe::Redis {
                    url: u.value,
                    key: k,
                    exists,
                }),
                _ => None,
            }
        }
    };
    for s in &templated {
        check_placeholders(cx, s, scope);
    }
    let produced_by = cx.string(t, "produced_by");
    if let Some(p) = &produced_by {
        if kind.is_push() || kind == CheckKind::ContainerHealth {
            cx.error(
                ConfigError::new(
                    p.span.clone(),
                    format!(
                        "`produced_by` in [{}]: a `{kind}` check hears the agent itself, not \
                         another agent's output",
                        t.name
                    ),
                )
                .hint("put produced_by on a check of an output file, a table or a key: file, heartbeat, sql, redis"),
            );
        }
        check_placeholders(cx, p, scope);
    }
    if cx.errors.len() != errors_before {
        return None;
    }
    Some(CheckTemplate {
        spec,
        probe: probe?,
        produced_by,
    })
}

fn read_expect_status(cx: &mut Cx, t: &Tbl<'_, '_>) -> StatusExpect {
    let Some(v) = t.get("expect_status") else {
        return StatusExpect::Success;
    };
    let code = |cx: &mut Cx, v: &toml::Spanned<DeValue<'_>>| -> Option<u16> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(i.as_str(), i.radix()).ok()?;
                if (100..600).contains(&n) {
                    Some(n as u16)
                } else {
                    cx.err(
                        v.span(),
                        format!("`expect_status` in [{}]: {n} is not an HTTP status", t.name),
                    );
                    None
                }
            }
            DeValue::String(s) if s.len() == 3 && s.ends_with("xx") => {
                let class = s[..1].parse::<u16>().ok().filter(|c| (1..6).contains(c));
                if class.is_none() {
                    cx.err(
                        v.span(),
                        format!(
                            "`expect_status` in [{}]: \"{s}\" is not a status class",
                            t.name
                        ),
                    );
                }
                class.map(|c| c * 100)
            }
            other => {
                cx.error(
                    ConfigError::new(
                        v.span(),
                        format!(
                            "`expect_status` in [{}] must be a status code, found {}",
                            t.name,
                            type_name(other)
                        ),
                    )
                    .hint("expect_status = 200, [200, 204], or \"2xx\""),
                );
                None
            }
        }
    };
    // Codes ending in 00 from a "Nxx" string mean the whole class.
    let class_of = |v: &toml::Spanned<DeValue<'_>>| matches!(v.get_ref(), DeValue::String(_));
    match v.get_ref() {
        DeValue::Array(items) => {
            let mut list = Vec::new();
            for item in items.iter() {
                if let Some(c) = code(cx, item) {
                    list.push(if class_of(item) {
                        (c, true)
                    } else {
                        (c, false)
                    });
                }
            }
            StatusExpect::Any(list)
        }
        _ => match code(cx, v) {
            Some(c) if class_of(v) => StatusExpect::Any(vec![(c, true)]),
            Some(c) => StatusExpect::Any(vec![(c, false)]),
            None => StatusExpect::Success,
        },
    }
}

/// `quiet = ["Sat 00:00-Sun 23:59 UTC", ...]`.
pub fn read_quiet(cx: &mut Cx, t: &Tbl<'_, '_>, base: &Quiet) -> Quiet {
    let Some(list) = cx.string_list(t, "quiet") else {
        return base.clone();
    };
    let mut windows = Vec::new();
    for w in list.value {
        match QuietWindow::parse(&w.value) {
            Ok(q) => windows.push(q),
            Err(why) => cx.error(
                ConfigError::new(w.span, format!("`quiet` in [{}]: {why}", t.name))
                    .hint(format!("quiet windows look like {QUIET_FORMS}")),
            ),
        }
    }
    Quiet { windows }
}
