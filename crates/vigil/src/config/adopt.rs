//! `adopt`: how to find an agent's own process when something other than vigil started it
//! (a cron job, a shell, an old init script), so vigil takes it over instead of starting a
//! second copy.

use std::path::{Path, PathBuf};

use super::diagnostic::ConfigError;
use super::placeholders::{Placeholders, check_placeholders};
use super::reader::{At, Cx, Tbl};

/// How the agent's process is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adopt {
    /// `adopt = { pidfile = "/run/bot.pid" }`: the process whose pid the file holds (absolute
    /// once loaded; relative paths are relative to the agent's `cwd`).
    Pidfile(PathBuf),
    /// `adopt = { match = "bot.py --symbol {instance}" }`: the one process whose command line
    /// (its arguments joined by spaces) contains this text.
    Match(String),
}

impl Adopt {
    /// In words, for records and status: `pidfile /run/bot.pid`.
    pub fn describe(&self) -> String {
        match self {
            Adopt::Pidfile(p) => format!("pidfile {}", p.display()),
            Adopt::Match(m) => format!("match {m:?}"),
        }
    }
}

/// `adopt` as written, before placeholders are expanded per instance.
pub(super) enum AdoptSource {
    Pidfile(At<String>),
    Match(At<String>),
}

pub(super) fn read(cx: &mut Cx, t: &Tbl<'_, '_>, scope: &Placeholders<'_>) -> Option<AdoptSource> {
    let a = cx.table(t, "adopt")?;
    cx.check_keys(&a, &["pidfile", "match"]);
    let source = match (cx.string(&a, "pidfile"), cx.string(&a, "match")) {
        (Some(p), None) if !p.value.trim().is_empty() => AdoptSource::Pidfile(p),
        (None, Some(m)) if !m.value.trim().is_empty() => AdoptSource::Match(m),
        (Some(_), Some(_)) => {
            cx.error(
                ConfigError::new(
                    a.span.clone(),
                    format!("[{}] has both `pidfile` and `match`", a.name),
                )
                .hint("one way to find the process: a pidfile when it writes one, else match"),
            );
            return None;
        }
        (Some(At { span, .. }), None) | (None, Some(At { span, .. })) => {
            cx.err(span, format!("[{}]: the value is empty", a.name));
            return None;
        }
        (None, None) => {
            cx.error(
                ConfigError::new(a.span.clone(), format!("[{}] is empty", a.name)).hint(
                    "adopt = { pidfile = \"/run/bot.pid\" } or adopt = { match = \"bot.py --symbol {instance}\" }",
                ),
            );
            return None;
        }
    };
    let (AdoptSource::Pidfile(s) | AdoptSource::Match(s)) = &source;
    check_placeholders(cx, s, scope);
    // Every instance would name the same process: one process cannot be several agents.
    if scope.has_instances && !s.value.contains("{instance}") && !s.value.contains("{agent}") {
        cx.error(
            ConfigError::new(
                s.span.clone(),
                format!(
                    "[{}]: every instance of `{}` would take over the same process",
                    a.name, scope.agent
                ),
            )
            .hint("name the instance in it: pidfile = \"/run/bot-{instance}.pid\" or match = \"bot.py --symbol {instance}\""),
        );
        return None;
    }
    Some(source)
}

impl AdoptSource {
    /// For one agent (or instance): placeholders expanded, a relative pidfile made absolute
    /// against the agent's working directory.
    pub(super) fn resolve(&self, vars: impl Fn(&str) -> String, cwd: &Path) -> Adopt {
        match self {
            AdoptSource::Pidfile(p) => Adopt::Pidfile(cwd.join(vars(&p.value))),
            AdoptSource::Match(m) => Adopt::Match(vars(&m.value)),
        }
    }

    pub(super) fn span(&self) -> std::ops::Range<usize> {
        let (AdoptSource::Pidfile(s) | AdoptSource::Match(s)) = self;
        s.span.clone()
    }
}
