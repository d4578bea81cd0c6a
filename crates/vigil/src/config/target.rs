//! `driver`: what an agent is. A process vigil starts itself (the default), a Docker
//! container that already exists, or a systemd unit — which vigil starts, stops and watches
//! through the engine's or systemd's own API.

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
    /// `driver = "systemd"`: this unit, of the system's manager or (`user`) the user's own.
    Systemd { unit: String, user: bool },
}

impl Target {
    /// The `driver` label of metrics and status.
    pub fn driver(&self) -> &'static str {
        match self {
            Target::Process => "process",
            Target::Docker { .. } => "docker",
            Target::Systemd { .. } => "systemd",
        }
    }

    pub fn container(&self) -> Option<&str> {
        match self {
            Target::Docker { container } => Some(container),
            _ => None,
        }
    }

    /// The unit, and whether it is the user's manager's.
    pub fn unit(&self) -> Option<(&str, bool)> {
        match self {
            Target::Systemd { unit, user } => Some((unit, *user)),
            _ => None,
        }
    }

    /// Not a process of vigil's: an engine or systemd runs it.
    pub fn is_external(&self) -> bool {
        !matches!(self, Target::Process)
    }

    /// In words, for status and explain: `container market-feed`, `unit bot@BTC.service`.
    pub fn describe(&self) -> Option<String> {
        match self {
            Target::Process => None,
            Target::Docker { container } => Some(format!("container {container}")),
            Target::Systemd { unit, user: false } => Some(format!("unit {unit}")),
            Target::Systemd { unit, user: true } => Some(format!("user unit {unit}")),
        }
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
    Systemd { unit: At<String>, user: bool },
}

impl TargetSource {
    pub(super) fn is_process(&self) -> bool {
        matches!(self, TargetSource::Process)
    }

    pub(super) fn is_docker(&self) -> bool {
        matches!(self, TargetSource::Docker(_))
    }

    pub(super) fn is_systemd(&self) -> bool {
        matches!(self, TargetSource::Systemd { .. })
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
            TargetSource::Systemd { unit, user } => {
                let mut name = vars(&unit.value);
                // As systemctl does: a name without a type is a service.
                if !name.contains('.') {
                    name.push_str(".service");
                }
                if !user && crate::driver::units::own_unit() == Some(name.as_str()) {
                    cx.error(
                        ConfigError::new(
                            unit.span.clone(),
                            format!("`{agent}`: unit {name} is the one vigil itself runs in"),
                        )
                        .hint("vigil never supervises itself: let systemd restart vigil (Restart=on-failure in vigil's own unit)"),
                    );
                    return None;
                }
                return Some(Target::Systemd {
                    unit: name,
                    user: *user,
                });
            }
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
    let unit = cx.string(t, "unit");
    let bus = cx.string(t, "bus");
    let kind = driver.as_ref().map(|d| d.value.as_str());
    // Each target key belongs to its driver.
    let misplaced = [
        (container.as_ref(), "container", "docker"),
        (unit.as_ref(), "unit", "systemd"),
        (bus.as_ref(), "bus", "systemd"),
    ];
    let mut ok = true;
    for (value, key, needs) in misplaced {
        if let Some(v) = value
            && kind != Some(needs)
        {
            ok = false;
            cx.error(
                ConfigError::new(
                    v.span.clone(),
                    format!("`{key}` in [{}] needs driver = \"{needs}\"", t.name),
                )
                .hint(format!("add driver = \"{needs}\", or remove `{key}`")),
            );
        }
    }
    match kind {
        None | Some("process") => ok.then_some(TargetSource::Process),
        Some("docker") => read_docker(cx, t, scope, container),
        Some("systemd") => read_systemd(cx, t, scope, unit, bus),
        Some(other) => {
            let d = driver.as_ref().expect("matched");
            let mut e = ConfigError::new(
                d.span.clone(),
                format!("unknown driver \"{other}\" in [{}]", t.name),
            );
            e = match super::did_you_mean(other, &["process", "docker", "systemd"]) {
                Some(s) => e.hint(format!("did you mean \"{s}\"?")),
                None => e.hint("driver = \"process\" (the default), \"docker\" or \"systemd\""),
            };
            cx.error(e);
            None
        }
    }
}

/// Keys about running a process, refused for a target that something else runs.
fn refuse_process_keys(cx: &mut Cx, t: &Tbl<'_, '_>, what: &str, how: &str) {
    for key in PROCESS_ONLY_KEYS {
        if let Some(v) = t.get(key) {
            cx.error(
                ConfigError::new(
                    v.span(),
                    format!(
                        "`{key}` in [{}] does not apply to a {what}: its own definition (command, environment, user) decides",
                        t.name
                    ),
                )
                .hint(format!("remove it, and change the {what} {how} instead")),
            );
        }
    }
}

fn read_systemd(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    scope: &Placeholders<'_>,
    unit: Option<At<String>>,
    bus: Option<At<String>>,
) -> Option<TargetSource> {
    refuse_process_keys(cx, t, "unit", "with systemctl edit");
    let user = match bus.as_ref().map(|b| b.value.as_str()) {
        None | Some("system") => false,
        Some("user") => true,
        Some(other) => {
            let b = bus.as_ref().expect("matched");
            cx.error(
                ConfigError::new(
                    b.span.clone(),
                    format!("unknown bus \"{other}\" in [{}]", t.name),
                )
                .hint("bus = \"system\" (the default) or \"user\" (the user's own manager)"),
            );
            return None;
        }
    };
    let Some(u) = unit.filter(|u| !u.value.trim().is_empty()) else {
        cx.error(
            ConfigError::new(
                t.span.start..t.span.start,
                format!("[{}] has driver = \"systemd\" but no `unit`", t.name),
            )
            .hint("unit = \"crypto-agent@{instance}.service\""),
        );
        return None;
    };
    check_placeholders(cx, &u, scope);
    if scope.has_instances && !u.value.contains("{instance}") {
        cx.error(
            ConfigError::new(
                u.span.clone(),
                format!(
                    "[{}]: every instance of `{}` would be the same unit",
                    t.name, scope.agent
                ),
            )
            .hint("name the instance in it: unit = \"crypto-agent@{instance}.service\""),
        );
        return None;
    }
    Some(TargetSource::Systemd { unit: u, user })
}

fn read_docker(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    scope: &Placeholders<'_>,
    container: Option<At<String>>,
) -> Option<TargetSource> {
    refuse_process_keys(cx, t, "container", "with docker or compose");
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
