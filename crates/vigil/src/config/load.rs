//! From TOML text to a resolved [`Config`], reporting every mistake at once.

use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_core::Rules;

use toml::de::DeTable;
use vigil_core::signal::STOP_SIGNALS;
use vigil_core::{CheckKind, OnExhausted, Quiet, RestartMode, RestartPolicy, Signal};

use super::checks::{read_checks, read_quiet};
use super::diagnosis::{DiagnosisConfig, read_diagnosis};
use super::diagnostic::{ConfigError, ConfigErrors};
use super::model::{AgentConfig, ApiConfig, Config, EvidenceCommand};
use super::placeholders::{Placeholders, check_placeholders, expand};
use super::reader::{At, Cx, Tbl};
use super::values::did_you_mean;

const TOP_KEYS: &[&str] = &[
    "vigil",
    "api",
    "diagnosis",
    "notify",
    "incidents",
    "alertmanager",
    "runbooks",
    "store",
    "cluster",
    "defaults",
    "agents",
];
const INCIDENT_KEYS: &[&str] = &[
    "enabled",
    "min_agents",
    "window",
    "probe_every",
    "probe_for",
    "spread",
];
const API_KEYS: &[&str] = &[
    "listen",
    "token",
    "token_file",
    "enabled",
    "hosts",
    "max_connections",
];
const VIGIL_KEYS: &[&str] = &["state_dir", "node"];
const COMMON_KEYS: &[&str] = &[
    "autostart",
    "restart",
    "stop_signal",
    "stop_timeout",
    "log_max_size",
    "log_keep",
    "quiet",
    "policy",
];
const AGENT_ONLY_KEYS: &[&str] = &[
    "command",
    "shell",
    "cwd",
    "env",
    "env_file",
    "user",
    "group",
    "instances",
    "checks",
    "evidence",
    "evidence_timeout",
    "adopt",
    "driver",
    "container",
    "unit",
    "bus",
    "depends_on",
    "on_upstream_restart",
    "files",
    "placement",
    "nodes",
];
const POLICY_KEYS: &[&str] = &[
    "cooldown",
    "max_restarts",
    "window",
    "backoff_initial",
    "backoff_max",
    "stable_after",
    "on_exhausted",
    "retry_after",
    "failure_threshold",
    "throttle_delay",
    "llm_before_restart",
    "max_degraded",
];
const RESTART_MODES: &[&str] = &["always", "on-failure", "never"];
const ON_EXHAUSTED: &[&str] = &["quarantine", "retry_after"];

/// Settings shared by `[defaults]` and each `[agents.NAME]`.
#[derive(Clone)]
struct Common {
    autostart: bool,
    restart: RestartMode,
    stop_signal: Signal,
    stop_timeout: Duration,
    log_max_size: u64,
    log_keep: u32,
    quiet: Quiet,
    policy: RestartPolicy,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            autostart: true,
            restart: RestartMode::Always,
            stop_signal: Signal::TERM,
            stop_timeout: Duration::from_secs(10),
            log_max_size: super::model::DEFAULT_LOG_MAX_SIZE,
            log_keep: super::model::DEFAULT_LOG_KEEP,
            quiet: Quiet::default(),
            policy: RestartPolicy::default(),
        }
    }
}

/// What `vigil status`, `logs`, `restart` … need to reach a running vigil: where its state
/// dir is, and its API. Read on their own, so that a config with a mistake elsewhere (the
/// one a reload just refused) does not lock the operator out of reading why.
pub struct ConfigHead {
    pub state_dir: PathBuf,
    pub node: String,
    /// `[vigil] node` was given (not the hostname).
    pub node_given: bool,
    pub api: ApiConfig,
}

/// Only `[vigil]` and `[api]` of `text`; errors elsewhere are ignored.
pub fn parse_head(
    path: &Path,
    text: &str,
    state_dir_override: Option<&Path>,
) -> Result<ConfigHead, ConfigErrors> {
    let mut cx = Cx::default();
    let (doc, _) = DeTable::parse_recoverable(text);
    let root = Tbl {
        name: String::new(),
        table: doc.get_ref(),
        span: doc.span(),
    };
    let head = read_head(&mut cx, &root, &base_dir_of(path), state_dir_override);
    if cx.errors.is_empty() {
        Ok(head)
    } else {
        Err(config_errors(cx, path, text))
    }
}

fn base_dir_of(path: &Path) -> PathBuf {
    path.parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn read_head(
    cx: &mut Cx,
    root: &Tbl<'_, '_>,
    base_dir: &Path,
    state_dir_override: Option<&Path>,
) -> ConfigHead {
    let mut state_dir = base_dir.join(".vigil");
    let mut node = None;
    if let Some(vigil) = cx.table(root, "vigil") {
        cx.check_keys(&vigil, VIGIL_KEYS);
        if let Some(dir) = cx.string(&vigil, "state_dir") {
            state_dir = base_dir.join(dir.value);
        }
        if let Some(name) = cx.string(&vigil, "node") {
            match super::values::node_name(&name.value) {
                Ok(()) => node = Some(name.value),
                Err(why) => cx.error(
                    ConfigError::new(name.span, format!("[vigil] node: {why}"))
                        .hint("e.g. node = \"fra-1\"; the default is this machine's hostname"),
                ),
            }
        }
    }
    if let Some(dir) = state_dir_override {
        state_dir = dir.to_path_buf();
    }
    let api = match cx.table(root, "api") {
        Some(t) => read_api(cx, &t, base_dir),
        None => ApiConfig::default(),
    };
    ConfigHead {
        state_dir: absolute(&state_dir),
        node_given: node.is_some(),
        node: node.unwrap_or_else(super::values::hostname),
        api,
    }
}

/// Parse and resolve `text`, read from `path`. `state_dir_override` is `--state-dir`.
pub fn parse(
    path: &Path,
    text: &str,
    state_dir_override: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Cx::default();
    let (doc, parse_errors) = DeTable::parse_recoverable(text);
    for e in parse_errors {
        let span = e.span().unwrap_or(0..0);
        cx.error(ConfigError::new(
            span,
            format!("TOML syntax: {}", e.message().trim()),
        ));
    }
    // One syntax error (`autostart = yes`) leaves the rest in step, and every other mistake
    // is worth reporting with it. Several mean the parser lost its footing (an unterminated
    // string swallows the next lines): what follows the first is parsed out of step, and
    // judging it would bury the one real mistake under invented ones.
    if cx.errors.len() > 1 {
        let mut first = config_errors(cx, path, text);
        first.errors.truncate(1);
        return Err(first);
    }
    let base_dir = base_dir_of(path);
    let root = Tbl {
        name: String::new(),
        table: doc.get_ref(),
        span: doc.span(),
    };
    cx.check_keys(&root, TOP_KEYS);
    let ConfigHead {
        state_dir,
        node,
        node_given,
        mut api,
    } = read_head(&mut cx, &root, &base_dir, state_dir_override);
    let diagnosis = match cx.table(&root, "diagnosis") {
        Some(t) => read_diagnosis(&mut cx, &t, &base_dir),
        None => DiagnosisConfig::default(),
    };

    let notify = match cx.table(&root, "notify") {
        Some(t) => super::notify::read_notify(&mut cx, &t, &base_dir),
        None => Vec::new(),
    };

    let alertmanager = cx
        .table(&root, "alertmanager")
        .and_then(|t| super::runbooks::read_alertmanager(&mut cx, &t, &base_dir));
    api.alert_token = alertmanager.as_ref().map(|a| a.token.clone());
    let channels: Vec<String> = notify.iter().map(|c| c.name.clone()).collect();
    let runbooks = super::runbooks::read_runbooks(&mut cx, &root, &base_dir, &channels);
    let store = match cx.table(&root, "store") {
        Some(t) => super::store::read_store(&mut cx, &t, &base_dir),
        None => super::StoreConfig::default(),
    };
    let cluster = cx
        .table(&root, "cluster")
        .and_then(|t| super::cluster::read_cluster(&mut cx, &t, &base_dir, (&node, node_given)));
    let node = cluster.as_ref().map_or(node, |c| c.node.clone());
    let incidents = match cx.table(&root, "incidents") {
        Some(t) => read_incidents(&mut cx, &t),
        None => vigil_core::IncidentPolicy::default(),
    };

    let defaults = match cx.table(&root, "defaults") {
        Some(t) => {
            cx.check_keys(&t, COMMON_KEYS);
            read_common(&mut cx, &t, &Common::default())
        }
        None => Common::default(),
    };

    let mut agents = Vec::new();
    let mut edges = Vec::new();
    match cx.table(&root, "agents") {
        Some(t) => {
            for (key, value) in t.entries() {
                let name = At {
                    value: key.get_ref().to_string(),
                    span: key.span(),
                };
                let toml::de::DeValue::Table(table) = value.get_ref() else {
                    cx.err(
                        value.span(),
                        format!(
                            "agent `{}` must be a table ([agents.{}])",
                            name.value, name.value
                        ),
                    );
                    continue;
                };
                let tbl = Tbl {
                    name: format!("agents.{}", name.value),
                    table,
                    span: value.span(),
                };
                read_agent(
                    &mut cx,
                    &name,
                    &tbl,
                    (&defaults, cluster.as_ref()),
                    &base_dir,
                    (&mut agents, &mut edges),
                );
            }
            one_agent_per_container(&mut cx, &t, &agents);
            if cx.errors.is_empty() {
                super::graph::resolve(&mut cx, &mut agents, &edges);
            }
            if t.entries().next().is_none() {
                cx.err(
                    t.span.clone(),
                    "[agents] is empty: there is nothing to supervise",
                );
            }
        }
        None if cx.errors.is_empty() => {
            cx.error(
                ConfigError::new(
                    0..0,
                    "no [agents.NAME] section: there is nothing to supervise",
                )
                .hint("add one, e.g. [agents.bot] with command = [\"python3\", \"bot.py\"]"),
            );
        }
        None => {}
    }
    super::runbooks::check_agents(&mut cx, &runbooks, &agents);

    if cx.errors.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            node,
            api,
            agents: agents
                .into_iter()
                .map(|mut a| {
                    a.diagnosis = diagnosis.rules.clone();
                    a.advisor = diagnosis.llm.as_ref().map(|l| l.advisor_spec());
                    a
                })
                .collect(),
            diagnosis,
            notify,
            incidents,
            alertmanager,
            runbooks: runbooks.into_iter().map(|(r, _)| r).collect(),
            store,
            cluster,
        })
    } else {
        Err(config_errors(cx, path, text))
    }
}

/// Two agents cannot be one container (or unit): each would take the other's runs for its own.
fn one_agent_per_container(cx: &mut Cx, agents_table: &Tbl<'_, '_>, agents: &[AgentConfig]) {
    let mut seen: std::collections::HashMap<(&str, &str, bool), &str> = Default::default();
    for a in agents {
        let (key, name, user) = match &a.target {
            super::Target::Docker { container } => ("container", container.as_str(), false),
            super::Target::Systemd { unit, user } => ("unit", unit.as_str(), *user),
            super::Target::Process => continue,
        };
        let Some(first) = seen.insert((key, name, user), &a.name) else {
            continue;
        };
        let block = a.template.as_deref().unwrap_or(&a.name);
        let span = agents_table
            .get(block)
            .and_then(|v| match v.get_ref() {
                toml::de::DeValue::Table(t) => t.get(key).map(|c| c.span()),
                _ => None,
            })
            .unwrap_or(agents_table.span.clone());
        cx.error(
            ConfigError::new(
                span,
                format!("`{}` and `{first}` name the same {key} \"{name}\"", a.name),
            )
            .hint(format!("one agent per {key}: give each its own")),
        );
    }
}

/// Every error, in the order of the file.
fn config_errors(mut cx: Cx, path: &Path, text: &str) -> ConfigErrors {
    cx.errors.sort_by_key(|e| e.span.start);
    ConfigErrors {
        path: path.to_path_buf(),
        text: text.to_string(),
        errors: cx.errors,
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn read_api(cx: &mut Cx, t: &Tbl<'_, '_>, base_dir: &Path) -> ApiConfig {
    cx.check_keys(t, API_KEYS);
    let mut api = ApiConfig::default();
    if let Some(b) = cx.boolean(t, "enabled") {
        api.enabled = b;
    }
    if let Some(listen) = cx.string(t, "listen") {
        match listen.value.parse::<std::net::SocketAddr>() {
            Ok(addr) => api.listen = addr,
            Err(_) => cx.error(
                ConfigError::new(listen.span, format!("`listen` in [api]: \"{}\" is not an address", listen.value))
                    .hint("write IP:PORT, e.g. \"127.0.0.1:9120\" (only this machine) or \"0.0.0.0:9120\" (with a token)"),
            ),
        }
    }
    if let Some(n) = cx.integer(t, "max_connections", 1..100_001) {
        api.max_connections = Some(n as usize);
    }
    if let Some(hosts) = cx.string_list(t, "hosts") {
        for host in hosts.value {
            let name = host.value.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = name == "*"
                || (!name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            if valid {
                api.hosts.push(name);
            } else {
                cx.error(
                    ConfigError::new(
                        host.span,
                        format!("`hosts` in [api]: \"{}\" is not a host name", host.value),
                    )
                    .hint("write names without scheme or port, e.g. [\"vigil.lan\"]; IP addresses and localhost are always accepted"),
                );
            }
        }
    }
    let token = cx.string(t, "token");
    let token_file = cx.string(t, "token_file");
    match (token, token_file) {
        (Some(t1), Some(_)) => cx.err(t1.span, "[api] has both `token` and `token_file`: keep one"),
        (Some(tok), None) => {
            if tok.value.trim().len() < 16 {
                cx.error(
                    ConfigError::new(tok.span, "`token` in [api] is too short").hint(
                        "use at least 16 characters, e.g. the output of `openssl rand -hex 24`",
                    ),
                );
            }
            api.token = Some(tok.value.trim().to_string());
        }
        (None, Some(file)) => {
            if let Some(token) = cx.secret_in_file(&file, "token_file", base_dir, 16) {
                api.token = Some(token);
            }
        }
        (None, None) => {}
    }
    if api.enabled && api.token.is_none() && !api.listen.ip().is_loopback() {
        let span = t.get("listen").map(|v| v.span()).unwrap_or(t.span.clone());
        cx.error(
            ConfigError::new(
                span,
                format!(
                    "[api] listens on {}, beyond this machine, without a token",
                    api.listen
                ),
            )
            .hint("set token_file (or token), or listen on 127.0.0.1"),
        );
    }
    api
}

fn read_incidents(cx: &mut Cx, t: &Tbl<'_, '_>) -> vigil_core::IncidentPolicy {
    cx.check_keys(t, INCIDENT_KEYS);
    let mut p = vigil_core::IncidentPolicy::default();
    if let Some(b) = cx.boolean(t, "enabled") {
        p.enabled = b;
    }
    if let Some(n) = cx.integer(t, "min_agents", 2..100_001) {
        p.min_agents = n as u32;
    }
    // Floors: a zero probe interval is a restart storm, a zero spread a burst.
    for (key, slot, floor) in [
        ("window", &mut p.window, Duration::from_secs(1)),
        ("probe_every", &mut p.probe_every, Duration::from_secs(1)),
        ("probe_for", &mut p.probe_for, Duration::from_secs(1)),
        ("spread", &mut p.spread, Duration::from_millis(100)),
    ] {
        if let Some(d) = cx.duration(t, key) {
            if d < floor {
                let span = t.get(key).map(|v| v.span()).unwrap_or(t.span.clone());
                cx.err(
                    span,
                    format!(
                        "`{key}` in [incidents] must be at least {}",
                        vigil_core::human_duration(floor)
                    ),
                );
            }
            *slot = d.max(floor);
        }
    }
    p
}

fn read_common(cx: &mut Cx, t: &Tbl<'_, '_>, base: &Common) -> Common {
    let mut c = base.clone();
    if let Some(b) = cx.boolean(t, "autostart") {
        c.autostart = b;
    }
    if let Some(mode) = cx.choice(t, "restart", RESTART_MODES) {
        c.restart = match mode.value.as_str() {
            "on-failure" => RestartMode::OnFailure,
            "never" => RestartMode::Never,
            _ => RestartMode::Always,
        };
    }
    if let Some(sig) = cx.string(t, "stop_signal") {
        match Signal::from_name(&sig.value) {
            Some(s) => c.stop_signal = s,
            None => cx.error(
                ConfigError::new(
                    sig.span,
                    format!(
                        "`stop_signal` in [{}]: unknown signal \"{}\"",
                        t.name, sig.value
                    ),
                )
                .hint(format!("use one of {}", STOP_SIGNALS.join(", "))),
            ),
        }
    }
    if let Some(d) = cx.duration(t, "stop_timeout") {
        c.stop_timeout = d;
    }
    if let Some(n) = cx.size(t, "log_max_size") {
        if n < 4096 {
            cx.err(
                t.get("log_max_size").map(|v| v.span()).unwrap_or_default(),
                format!("`log_max_size` in [{}] must be at least 4KB", t.name),
            );
        } else {
            c.log_max_size = n;
        }
    }
    if let Some(n) = cx.integer(t, "log_keep", 0..1000) {
        c.log_keep = n as u32;
    }
    c.quiet = read_quiet(cx, t, &c.quiet);
    if let Some(p) = cx.table(t, "policy") {
        cx.check_keys(&p, POLICY_KEYS);
        c.policy = read_policy(cx, &p, &c.policy);
    }
    c
}

fn read_policy(cx: &mut Cx, t: &Tbl<'_, '_>, base: &RestartPolicy) -> RestartPolicy {
    let mut p = base.clone();
    if let Some(d) = cx.duration(t, "cooldown") {
        p.cooldown = d;
    }
    if let Some(d) = cx.duration(t, "max_degraded") {
        p.max_degraded = d;
    }
    if let Some(n) = cx.integer(t, "max_restarts", 0..1_000_001) {
        p.max_restarts = n as u32;
    }
    if let Some(d) = cx.duration(t, "window") {
        if d.is_zero() {
            cx.err(
                t.get("window").unwrap().span(),
                format!("`window` in [{}] must be longer than 0s", t.name),
            );
        } else {
            p.window = d;
        }
    }
    if let Some(d) = cx.duration(t, "backoff_initial") {
        p.backoff_initial = d;
    }
    if let Some(d) = cx.duration(t, "backoff_max") {
        p.backoff_max = d;
    }
    if let Some(d) = cx.duration(t, "throttle_delay") {
        p.throttle_delay = d;
    }
    if let Some(b) = cx.boolean(t, "llm_before_restart") {
        p.llm_before_restart = b;
    }
    if let Some(d) = cx.duration(t, "stable_after") {
        p.stable_after = d;
    }
    if let Some(n) = cx.integer(t, "failure_threshold", 1..10_000) {
        p.failure_threshold = n as u32;
    }
    let retry_after = cx.duration(t, "retry_after");
    let mode = cx.choice(t, "on_exhausted", ON_EXHAUSTED);
    match (mode.as_ref().map(|m| m.value.as_str()), retry_after) {
        (Some("retry_after"), wait) => {
            p.on_exhausted = OnExhausted::RetryAfter(wait.unwrap_or(Duration::from_secs(3600)));
        }
        (Some(_), Some(_)) => cx.error(
            ConfigError::new(
                t.get("retry_after").unwrap().span(),
                format!(
                    "`retry_after` in [{}] has no effect with on_exhausted = \"quarantine\"",
                    t.name
                ),
            )
            .hint("set on_exhausted = \"retry_after\", or remove retry_after"),
        ),
        (Some(_), None) => p.on_exhausted = OnExhausted::Quarantine,
        (None, Some(wait)) => match p.on_exhausted {
            OnExhausted::RetryAfter(_) => p.on_exhausted = OnExhausted::RetryAfter(wait),
            OnExhausted::Quarantine => cx.error(
                ConfigError::new(
                    t.get("retry_after").unwrap().span(),
                    format!(
                        "`retry_after` in [{}] has no effect while on_exhausted is \"quarantine\"",
                        t.name
                    ),
                )
                .hint("add on_exhausted = \"retry_after\" next to it"),
            ),
        },
        (None, None) => {}
    }
    if p.backoff_initial > p.backoff_max {
        let span = t
            .get("backoff_initial")
            .or_else(|| t.get("backoff_max"))
            .map(|v| v.span())
            .unwrap_or(t.span.clone());
        cx.err(
            span,
            format!(
                "in [{}], backoff_initial must not be longer than backoff_max",
                t.name
            ),
        );
    }
    p
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !s.starts_with('.')
}

fn read_agent(
    cx: &mut Cx,
    name: &At<String>,
    t: &Tbl<'_, '_>,
    (defaults, cluster): (&Common, Option<&super::ClusterConfig>),
    base_dir: &Path,
    (out, edges): (&mut Vec<AgentConfig>, &mut Vec<super::graph::Edge>),
) {
    let errors_before = cx.errors.len();
    if !valid_name(&name.value) {
        cx.error(
            ConfigError::new(
                name.span.clone(),
                format!("agent name `{}` is not allowed", name.value),
            )
            .hint("use letters, digits, `_`, `-` and `.` (instances are added as NAME@INSTANCE)"),
        );
    }
    let known: Vec<&str> = AGENT_ONLY_KEYS.iter().chain(COMMON_KEYS).copied().collect();
    cx.check_keys(t, &known);
    let common = read_common(cx, t, defaults);

    let instances = cx.string_list(t, "instances");
    if let Some(list) = &instances {
        if list.value.is_empty() {
            cx.err(
                list.span.clone(),
                format!("`instances` in [{}] is empty", t.name),
            );
        }
        let mut seen = std::collections::HashSet::with_capacity(list.value.len());
        for inst in list.value.iter() {
            if !valid_name(&inst.value) {
                cx.error(
                    ConfigError::new(
                        inst.span.clone(),
                        format!("instance name \"{}\" is not allowed", inst.value),
                    )
                    .hint("use letters, digits, `_`, `-` and `.`"),
                );
            }
            if !seen.insert(inst.value.as_str()) {
                cx.err(
                    inst.span.clone(),
                    format!("instance \"{}\" is listed twice", inst.value),
                );
            }
        }
    }
    let scope = Placeholders {
        agent: &name.value,
        // `instances` given but unusable (its error is said): no placeholder errors on top.
        has_instances: instances.is_some() || t.get("instances").is_some(),
        pid: false,
    };

    let target = super::target::read(cx, t, &scope);
    let mut stop_timeout = common.stop_timeout;
    let stop_timeout_given =
        t.get("stop_timeout").is_some() || stop_timeout != Common::default().stop_timeout;
    let placement = super::cluster::read_placement(
        cx,
        t,
        cluster,
        (&mut stop_timeout, stop_timeout_given),
        target.as_ref().is_none_or(|t| t.is_process()),
    );
    let shell = cx.boolean(t, "shell").unwrap_or(false);
    let command: Option<Vec<At<String>>> = match t.get("command") {
        // A container's command is its image's (the error, if one is given, is said).
        _ if target.as_ref().is_none_or(|t| !t.is_process()) => None,
        None => {
            // A misspelt `command` is already reported as an unknown key with a suggestion.
            let misspelt = t
                .entries()
                .any(|(k, _)| did_you_mean(k.get_ref(), &["command"]).is_some());
            if !misspelt {
                cx.error(
                    ConfigError::new(
                        t.span.start..t.span.start,
                        format!("[{}] has no `command`", t.name),
                    )
                    .hint("add command = [\"program\", \"arg\", ...]"),
                );
            }
            None
        }
        Some(v) => match v.get_ref() {
            toml::de::DeValue::String(s) if shell => Some(vec![At {
                value: s.to_string(),
                span: v.span(),
            }]),
            toml::de::DeValue::String(s) => {
                let argv: Vec<String> = s.split_whitespace().map(|w| format!("\"{w}\"")).collect();
                cx.error(
                    ConfigError::new(v.span(), format!("`command` in [{}] must be an argv array", t.name))
                        .hint(format!(
                            "command = [{}] (no shell involved), or add shell = true to run it with /bin/sh -c",
                            argv.join(", ")
                        )),
                );
                None
            }
            _ if shell => {
                cx.err(
                    v.span(),
                    format!(
                        "with shell = true, `command` in [{}] must be one string",
                        t.name
                    ),
                );
                None
            }
            _ => match cx.string_list(t, "command") {
                Some(list) if list.value.is_empty() || list.value[0].value.is_empty() => {
                    cx.err(list.span, format!("`command` in [{}] is empty", t.name));
                    None
                }
                other => other.map(|l| l.value),
            },
        },
    };
    let cwd = cx.string(t, "cwd");
    let env = cx.string_map(t, "env").unwrap_or_default();
    for (k, _) in &env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            cx.err(
                t.span.clone(),
                format!(
                    "environment variable name `{k}` in [{}] is not valid",
                    t.name
                ),
            );
        }
    }

    let env_file = cx.string(t, "env_file");
    let user = cx.string(t, "user");
    let group = cx.string(t, "group");
    let credentials = match (&user, &group) {
        (Some(u), g) => match super::users::resolve(&u.value, g.as_ref().map(|g| g.value.as_str()))
        {
            // Only root may become another user; anyone may "become" itself.
            Ok(c)
                if !rustix::process::geteuid().is_root()
                    && c.uid != rustix::process::geteuid().as_raw() =>
            {
                cx.error(
                    ConfigError::new(
                        u.span.clone(),
                        format!(
                            "[{}]: running an agent as `{}` needs vigil to run as root",
                            t.name, c.user
                        ),
                    )
                    .hint("run vigil as root (the systemd unit: remove User=), or drop `user`"),
                );
                None
            }
            Ok(c) => Some(c),
            Err(why) => {
                let span = match g {
                    Some(g) if why.contains("group") => g.span.clone(),
                    _ => u.span.clone(),
                };
                cx.error(
                    ConfigError::new(span, format!("[{}]: {why}", t.name))
                        .hint("create it (useradd --system NAME), or name an existing user"),
                );
                None
            }
        },
        (None, Some(g)) => {
            cx.err(
                g.span.clone(),
                format!("`group` in [{}] needs `user` too", t.name),
            );
            None
        }
        (None, None) => None,
    };

    let checks = read_checks(cx, t, &scope, common.policy.failure_threshold);
    // The notify socket lives in vigil's state dir, which another user cannot reach.
    if let (Some(u), Some(_)) = (&user, &credentials)
        && checks.iter().any(|c| c.kind() == CheckKind::Notify)
    {
        cx.error(
            ConfigError::new(
                u.span.clone(),
                format!(
                    "[{}]: a `notify` check cannot reach an agent that runs as another user (the socket is in vigil's state dir)",
                    t.name
                ),
            )
            .hint("use an `api` check (POST /agents/NAME/heartbeat) or a `heartbeat` file instead"),
        );
    }
    // A container's watchdog is the engine's HEALTHCHECK, a unit's is systemd's: vigil's
    // socket is in neither. And only a container has a HEALTHCHECK.
    let checks_span = t
        .get("checks")
        .map_or(t.span.start..t.span.start, |v| v.span());
    let is_container = target.as_ref().is_some_and(|t| t.is_docker());
    let is_unit = target.as_ref().is_some_and(|t| t.is_systemd());
    let notify = checks.iter().any(|c| c.kind() == CheckKind::Notify);
    if is_container && notify {
        cx.error(
            ConfigError::new(
                checks_span.clone(),
                format!("[{}]: a `notify` check does not apply to a container (it has no NOTIFY_SOCKET of vigil's)", t.name),
            )
            .hint("use kind = \"container_health\" (the container's own HEALTHCHECK), an `api` check, or a progress check"),
        );
    }
    if is_unit && notify {
        cx.error(
            ConfigError::new(
                checks_span.clone(),
                format!("[{}]: a `notify` check does not apply to a unit: its watchdog is systemd's", t.name),
            )
            .hint("give the unit WatchdogSec= (systemd ends a silent one, and vigil sees that end), or use an `api` or progress check"),
        );
    }
    if target.is_some()
        && !is_container
        && checks
            .iter()
            .any(|c| c.kind() == CheckKind::ContainerHealth)
    {
        cx.error(
            ConfigError::new(
                checks_span,
                format!(
                    "[{}]: a `container_health` check needs driver = \"docker\"",
                    t.name
                ),
            )
            .hint("for a process or a unit, use an `http`, `exec` or progress check"),
        );
    }
    let evidence = read_evidence(cx, t, &scope);
    let adopt = super::adopt::read(cx, t, &scope);
    let depends_on = super::graph::read_depends_on(cx, t, &scope);
    let on_upstream_restart = super::graph::read_on_upstream_restart(cx, t);
    let files = super::files::read_files(cx, t, &scope);
    // A process vigil did not start has no NOTIFY_SOCKET: its heartbeats cannot reach vigil,
    // and the taken-over agent would be stalled for the silence.
    if let Some(adopt) = &adopt
        && checks.iter().any(|c| c.kind() == CheckKind::Notify)
    {
        cx.error(
            ConfigError::new(
                adopt.span(),
                format!(
                    "[{}]: `adopt` and a `notify` check do not go together: a process vigil did not start has no NOTIFY_SOCKET to send its heartbeats to",
                    t.name
                ),
            )
            .hint("use an `api` check (POST /agents/NAME/heartbeat), a `heartbeat` file, or a progress check instead"),
        );
    }
    let mut templated: Vec<&At<String>> = Vec::new();
    templated.extend(command.iter().flatten());
    templated.extend(cwd.iter());
    templated.extend(env.iter().map(|(_, v)| v));
    templated.extend(env_file.iter());
    for s in templated {
        check_placeholders(cx, s, &scope);
    }

    if cx.errors.len() != errors_before {
        return;
    }
    let target = target.expect("checked above");
    let command = command.unwrap_or_default();
    let runs: Vec<(String, Option<String>)> = match &instances {
        Some(list) => list
            .value
            .iter()
            .map(|i| (format!("{}@{}", name.value, i.value), Some(i.value.clone())))
            .collect(),
        None => vec![(name.value.clone(), None)],
    };
    for (full_name, instance) in runs {
        let vars = |s: &str| expand(s, &full_name, &name.value, instance.as_deref());
        let Some(agent_target) = target.resolve(cx, &full_name, vars) else {
            continue;
        };
        let mut argv: Vec<String> = command.iter().map(|a| vars(&a.value)).collect();
        if shell {
            argv = vec!["/bin/sh".into(), "-c".into(), argv.remove(0)];
        }
        let cwd_path = cwd
            .as_ref()
            .map(|c| absolute(&base_dir.join(vars(&c.value))));
        // Relative check paths are relative to the agent's working directory.
        let check_base = cwd_path.clone().unwrap_or_else(|| absolute(base_dir));
        let agent_checks = checks
            .iter()
            .map(|c| c.expand(&full_name, &name.value, instance.as_deref(), &check_base))
            .collect();
        let written = depends_on.iter().map(|d| (&d.agent, d.ready, false));
        // A check's producer is a dependency too: its stale output is that agent's.
        let implied = checks
            .iter()
            .filter_map(|c| c.produced_by())
            .map(|p| (p, vigil_core::Ready::Running, true));
        for (to, ready, implied) in written.chain(implied) {
            edges.push(super::graph::Edge {
                from: full_name.clone(),
                to: vars(&to.value),
                ready,
                implied,
                span: to.span.clone(),
            });
        }
        // The file's variables first; `env` in the config overrides them.
        let mut agent_env: Vec<(String, String)> = Vec::new();
        let mut env_file_keys: Vec<String> = Vec::new();
        if let Some(f) = &env_file {
            let path = absolute(&base_dir.join(vars(&f.value)));
            match read_env_file(&path) {
                Ok(file_vars) => {
                    env_file_keys = file_vars.iter().map(|(k, _)| k.clone()).collect();
                    agent_env = file_vars;
                }
                Err(why) => cx.error(
                    ConfigError::new(f.span.clone(), format!("env_file of `{full_name}`: {why}"))
                        .hint("KEY=VALUE lines, as systemd's EnvironmentFile= reads them"),
                ),
            }
        }
        for (k, v) in &env {
            let v = vars(&v.value);
            env_file_keys.retain(|f| f != k);
            match agent_env.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v,
                None => agent_env.push((k.clone(), v)),
            }
        }
        out.push(AgentConfig {
            name: full_name.clone(),
            template: instance.as_ref().map(|_| name.value.clone()),
            instance: instance.clone(),
            command: argv,
            cwd: cwd_path,
            env: agent_env,
            env_file_keys,
            run_as: credentials.clone(),
            autostart: common.autostart,
            restart: common.restart,
            stop_signal: common.stop_signal,
            stop_timeout,
            policy: common.policy.clone(),
            log_max_size: common.log_max_size,
            log_keep: common.log_keep,
            checks: agent_checks,
            quiet: common.quiet.clone(),
            diagnosis: Rules::default(),
            advisor: None,
            evidence: evidence.as_ref().map(|e| EvidenceCommand {
                command: e.command.iter().map(|a| vars(a)).collect(),
                timeout: e.timeout,
            }),
            adopt: adopt.as_ref().map(|a| a.resolve(vars, &check_base)),
            target: agent_target,
            // Resolved once every agent is known.
            depends_on: Vec::new(),
            on_upstream_restart,
            files: files
                .iter()
                .map(|f| f.expand(&full_name, &name.value, instance.as_deref(), &check_base))
                .collect(),
            placement: placement.clone(),
        });
    }
}

/// An `env_file`'s variables; the reason it cannot be used (never quoting a value).
fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // A file of secrets anyone on the machine can read is a leak waiting to happen.
    if let Ok(meta) = std::fs::metadata(path)
        && meta.mode() & 0o004 != 0
    {
        tracing::warn!(
            "{} is readable by every user of this machine: chmod o-r it (it holds an agent's secrets)",
            path.display()
        );
    }
    super::env_file::parse(&text)
        .map_err(|e| format!("{} line {}: {}", path.display(), e.line, e.message))
}

/// `evidence = ["py-spy", "dump", "--pid", "{pid}"]`: run on a stall, before the stop.
fn read_evidence(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    scope: &Placeholders<'_>,
) -> Option<EvidenceCommand> {
    let timeout = cx.duration(t, "evidence_timeout");
    let list = cx.string_list(t, "evidence")?;
    if list.value.is_empty() || list.value[0].value.is_empty() {
        cx.err(list.span, format!("`evidence` in [{}] is empty", t.name));
        return None;
    }
    let scope = Placeholders {
        pid: true,
        ..*scope
    };
    for arg in &list.value {
        check_placeholders(cx, arg, &scope);
    }
    Some(EvidenceCommand {
        command: list.value.into_iter().map(|a| a.value).collect(),
        timeout: timeout.unwrap_or(EvidenceCommand::DEFAULT_TIMEOUT),
    })
}
