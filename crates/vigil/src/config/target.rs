//! `driver`: what an agent is. A process vigil starts itself (the default), or a Docker
//! container that already exists and that vigil starts, stops and watches through the
//! engine's API.

use super::diagnostic::ConfigError;
use super::placeholders::{Placeholders, check_placeholders};
use super::reader::{At, Cx, Tbl};

/// What vigil supervises for one agent (or instance).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// A process vigil spawns from `command`.
    #[default]
    Process,
    /// `driver = "docker"`: the container of this name or id.
    Docker { container: String },
}

impl Target {
    /// The `driver` label of metrics and status.
    pub fn driver(&self) -> &'static str {
        match self {
            Target::Process => "process",
            Target::Docker { .. } => "docker",
        }
    }

    pub fn container(&self) -> Option<&str> {
        match self {
            Target::Docker { container } => Some(container),
            Target::Process => None,
        }
    }

    /// In words, for status and explain: `container market-feed`.
    pub fn describe(&self) -> Option<String> {
        self.container().map(|c| format!("container {c}"))
    }
}

/// The keys that say how to run a process: a container's own definition says that.
const PROCESS_ONLY_KEYS: &[&str] = &[
    "command", "shell", "cwd", "env", "env_file", "user", "group", "adopt",
];

/// `driver` and its target as written, before placeholders are expanded per instance.
pub(super) enum TargetSource {
    Process,
    Docker(At<String>),
}

impl TargetSource {
    pub(super) fn is_process(&self) -> bool {
        matches!(self, TargetSource::Process)
    }

    /// For one agent (or instance), placeholders expanded; `None` (the error said) when it
    /// names the container vigil itself runs in.
    pub(super) fn resolve(
        &self,
        cx: &mut Cx,
        agent: &str,
        vars: impl Fn(&str) -> String,
    ) -> Option<Target> {
        let c = match self {
            TargetSource::Process => return Some(Target::Process),
            TargetSource::Docker(c) => c,
        };
        let container = vars(&c.value);
        if let Some(own) = crate::driver::docker::own_container()
            && own.is_named(&container)
        {
            cx.error(
                ConfigError::new(
                    c.span.clone(),
                    format!("`{agent}`: container \"{container}\" is the one vigil itself runs in"),
                )
                .hint(
                    "vigil never supervises itself: let the engine restart vigil's own container",
                ),
            );
            return None;
        }
        Some(Target::Docker { container })
    }
}

/// `None` when what is written is wrong (the errors are said).
pub(super) fn read(cx: &mut Cx, t: &Tbl<'_, '_>, scope: &Placeholders<'_>) -> Option<TargetSource> {
    let driver = cx.string(t, "driver");
    let container = cx.string(t, "container");
    match driver.as_ref().map(|d| d.value.as_str()) {
        None | Some("process") => {
            if let Some(c) = container {
                cx.error(
                    ConfigError::new(
                        c.span,
                        format!("`container` in [{}] needs driver = \"docker\"", t.name),
                    )
                    .hint("add driver = \"docker\" to supervise that container"),
                );
                return None;
            }
            Some(TargetSource::Process)
        }
        Some("docker") => read_docker(cx, t, scope, container),
        Some("systemd") => {
            let d = driver.expect("matched");
            cx.error(
                ConfigError::new(
                    d.span,
                    format!("[{}]: the systemd driver is not available yet", t.name),
                )
                .hint("run the unit's command as a vigil agent (and disable the unit), or take its process over with adopt = { pidfile = \"…\" }"),
            );
            None
        }
        Some(other) => {
            let d = driver.as_ref().expect("matched");
            let mut e = ConfigError::new(
                d.span.clone(),
                format!("unknown driver \"{other}\" in [{}]", t.name),
            );
            e = match super::did_you_mean(other, &["process", "docker"]) {
                Some(s) => e.hint(format!("did you mean \"{s}\"?")),
                None => e.hint("driver = \"process\" (the default) or \"docker\""),
            };
            cx.error(e);
            None
        }
    }
}

fn read_docker(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    scope: &Placeholders<'_>,
    container: Option<At<String>>,
) -> Option<TargetSource> {
    for key in PROCESS_ONLY_KEYS {
        if let Some(v) = t.get(key) {
            cx.error(
                ConfigError::new(
                    v.span(),
                    format!(
                        "`{key}` in [{}] does not apply to a container: its own definition (image, command, environment, user) decides",
                        t.name
                    ),
                )
                .hint("remove it, and change the container with docker or compose instead"),
            );
        }
    }
    let Some(c) = container.filter(|c| !c.value.trim().is_empty()) else {
        cx.error(
            ConfigError::new(
                t.span.start..t.span.start,
                format!("[{}] has driver = \"docker\" but no `container`", t.name),
            )
            .hint("container = \"market-feed\" (a name or an id)"),
        );
        return None;
    };
    check_placeholders(cx, &c, scope);
    // `{agent}` would put an `@` in the name, which no container's name has.
    if scope.has_instances && !c.value.contains("{instance}") {
        cx.error(
            ConfigError::new(
                c.span.clone(),
                format!(
                    "[{}]: every instance of `{}` would be the same container",
                    t.name, scope.agent
                ),
            )
            .hint("name the instance in it: container = \"feed-{instance}\""),
        );
        return None;
    }
    // With keys that do not apply (said above), it is still a container: its other checks
    // are judged as a container's.
    Some(TargetSource::Docker(c))
}
