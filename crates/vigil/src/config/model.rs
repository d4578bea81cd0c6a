//! The resolved configuration: templates expanded, defaults applied, paths absolute.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use vigil_core::{
    AdvisorSpec, AgentSpec, CheckKind, CheckSpec, Dependency, OnUpstreamRestart, Quiet,
    RestartMode, RestartPolicy, Rules, Signal,
};

/// `log_max_size` when none is given.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 50_000_000;
/// `log_keep` when none is given.
pub const DEFAULT_LOG_KEEP: u32 = 5;

#[derive(Clone, Debug)]
pub struct Config {
    /// The file this came from (as given).
    pub path: PathBuf,
    pub state_dir: PathBuf,
    /// This vigil's name among hosts (`[vigil] node`, default the hostname): on
    /// `vigil_build_info`, which alert rules join so an alert says which host.
    pub node: String,
    pub api: ApiConfig,
    pub agents: Vec<AgentConfig>,
    pub diagnosis: super::DiagnosisConfig,
    /// `[notify.NAME]`: where people are told.
    pub notify: Vec<super::Channel>,
    /// `[incidents]`: when several agents failing for one cause are handled as one.
    pub incidents: vigil_core::IncidentPolicy,
    /// `[alertmanager]`: alerts are taken in (`POST /alertmanager`) only with it.
    pub alertmanager: Option<super::AlertmanagerConfig>,
    /// `[[runbooks]]`: what an alert makes vigil do.
    pub runbooks: Vec<vigil_core::RunbookSpec>,
    /// `[store]`: where agents' checkpoints are kept.
    pub store: super::StoreConfig,
    /// `[cluster]`: the nodes this one shares a fleet view and exclusive agents with.
    pub cluster: Option<super::ClusterConfig>,
}

/// `[api]`: the HTTP API, metrics and dashboard.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
    /// Required by every state-changing request when set.
    pub token: Option<String>,
    /// Names besides IP addresses and `localhost` that requests may carry in `Host`
    /// (lowercase; `*` admits any).
    pub hosts: Vec<String>,
    /// Connections open at once (`None`: from the descriptor limit, see `api::serve`).
    pub max_connections: Option<usize>,
    /// The bearer token `POST /alertmanager` requires (`[alertmanager] token_file`); without
    /// it, alerts are not taken in.
    pub alert_token: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9120)),
            token: None,
            hosts: Vec::new(),
            max_connections: None,
            alert_token: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// `bot`, or `trader@BTC_USDT`.
    pub name: String,
    pub template: Option<String>,
    pub instance: Option<String>,
    /// argv; with `shell = true`, `["/bin/sh", "-c", "<command>"]`.
    pub command: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// `env_file`'s variables, then `env`'s (which override them).
    pub env: Vec<(String, String)>,
    /// The names in `env` that came from `env_file`: secrets whatever they are called.
    pub env_file_keys: Vec<String>,
    /// `user`/`group`: who the agent runs as (vigil's own user when unset).
    pub run_as: Option<super::users::Credentials>,
    pub autostart: bool,
    pub restart: RestartMode,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub policy: RestartPolicy,
    pub log_max_size: u64,
    pub log_keep: u32,
    pub checks: Vec<CheckConfig>,
    pub quiet: Quiet,
    /// The global `[diagnosis]` rules (shared).
    pub diagnosis: Rules,
    /// From `[diagnosis.llm]`, when an advisor is configured.
    pub advisor: Option<AdvisorSpec>,
    /// Run on a stall, before the agent is stopped; its output joins the evidence.
    pub evidence: Option<EvidenceCommand>,
    /// How to find the agent's own process when something else started it.
    pub adopt: Option<super::Adopt>,
    /// A process of `command` (the default), or a container.
    pub target: super::Target,
    /// The agents it needs (`depends_on`, and the producers its checks name), resolved to
    /// full names.
    pub depends_on: Vec<Dependency>,
    pub on_upstream_restart: OnUpstreamRestart,
    /// Config files it cannot run without, checked before every start.
    pub files: Vec<super::GuardedFile>,
    /// Every node runs its own (`local`), or one node at a time (`exclusive`).
    pub placement: super::Placement,
}

/// An agent's `evidence` command (placeholders expanded but `{pid}`).
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceCommand {
    pub command: Vec<String>,
    pub timeout: Duration,
}

impl EvidenceCommand {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

/// One health check: what the core needs (`spec`) and how to probe (`probe`).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckConfig {
    pub spec: CheckSpec,
    pub probe: Probe,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    Heartbeat {
        path: PathBuf,
        epoch: bool,
    },
    Notify,
    Api,
    /// The container's own HEALTHCHECK: answered by the docker driver from the engine's
    /// `health_status` events, not probed.
    ContainerHealth,
    Http {
        url: String,
        expect: StatusExpect,
        body: Option<Pattern>,
    },
    Exec {
        command: Vec<String>,
    },
    File {
        path: PathBuf,
        min_size: Option<u64>,
    },
    Sql {
        url: String,
        query: String,
        params: Vec<String>,
    },
    Redis {
        url: String,
        key: String,
        exists: bool,
    },
}

/// LogSelection HTTP statuses count as healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusExpect {
    /// Any 2xx.
    Success,
    /// Any of these: (code, whole class) — (200, true) is "2xx".
    Any(Vec<(u16, bool)>),
}

impl StatusExpect {
    pub fn accepts(&self, code: u16) -> bool {
        match self {
            StatusExpect::Success => (200..300).contains(&code),
            StatusExpect::Any(list) => list.iter().any(|(c, class)| {
                if *class {
                    code / 100 == c / 100
                } else {
                    code == *c
                }
            }),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            StatusExpect::Success => "2xx".into(),
            StatusExpect::Any(list) => list
                .iter()
                .map(|(c, class)| {
                    if *class {
                        format!("{}xx", c / 100)
                    } else {
                        c.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

/// A compiled regex, compared by its text.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl AgentConfig {
    /// A run found at startup whose agent the configuration no longer has: enough to stop it
    /// the way it was to be stopped, and never to start it.
    pub fn stray(name: &str, stop_signal: Signal, stop_timeout: Duration) -> AgentConfig {
        let (template, instance) = match name.split_once('@') {
            Some((t, i)) => (Some(t.to_string()), Some(i.to_string())),
            None => (None, None),
        };
        AgentConfig {
            name: name.to_string(),
            template,
            instance,
            command: Vec::new(),
            cwd: None,
            env: Vec::new(),
            env_file_keys: Vec::new(),
            run_as: None,
            autostart: false,
            restart: RestartMode::Never,
            stop_signal,
            stop_timeout,
            policy: RestartPolicy::default(),
            log_max_size: DEFAULT_LOG_MAX_SIZE,
            log_keep: DEFAULT_LOG_KEEP,
            checks: Vec::new(),
            quiet: Quiet::default(),
            diagnosis: Rules::default(),
            advisor: None,
            evidence: None,
            adopt: None,
            target: super::Target::Process,
            depends_on: Vec::new(),
            on_upstream_restart: OnUpstreamRestart::Wait,
            files: Vec::new(),
            placement: super::Placement::Local,
        }
    }

    /// The agent speaks the notify protocol: it gets a NOTIFY_SOCKET.
    pub fn uses_notify(&self) -> bool {
        self.checks.iter().any(|c| c.spec.kind == CheckKind::Notify)
    }

    /// What the decision core needs to know.
    pub fn spec(&self) -> AgentSpec {
        AgentSpec {
            name: self.name.clone(),
            template: self.template.clone(),
            instance: self.instance.clone(),
            driver: self.target.driver(),
            target: self.target.describe(),
            external: self.target.is_external(),
            autostart: self.autostart,
            restart: self.restart,
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
            policy: self.policy.clone(),
            fingerprint: self.fingerprint(),
            checks: self.checks.iter().map(|c| c.spec.clone()).collect(),
            quiet: self.quiet.clone(),
            diagnosis: self.diagnosis.clone(),
            advisor: self.advisor.clone(),
            evidence_timeout: self.evidence.as_ref().map(|e| e.timeout),
            depends_on: self.depends_on.clone(),
            guards_files: !self.files.is_empty(),
            on_upstream_restart: self.on_upstream_restart,
            exclusive: match &self.placement {
                super::Placement::Exclusive { keep, .. } => Some(*keep),
                super::Placement::Local => None,
            },
        }
    }

    /// What candidate nodes of an exclusive agent must agree on, hashed the same way by every
    /// version of vigil on every host (SHA-256 of a canonical JSON): the process it runs and
    /// how it is stopped. Compared through the lease: a node with another definition is
    /// refused the lease, and says so.
    pub fn definition_hash(&self) -> String {
        use sha2::Digest;
        let definition = serde_json::json!({
            "command": self.command,
            "cwd": self.cwd,
            "env": self.env,
            "user": self.run_as.as_ref().map(|c| format!("{c:?}")),
            "stop_signal": self.stop_signal.to_string(),
            "stop_timeout_ms": self.stop_timeout.as_millis() as u64,
            "nodes": match &self.placement {
                super::Placement::Exclusive { nodes, .. } => nodes.clone(),
                super::Placement::Local => Vec::new(),
            },
        });
        let digest = sha2::Sha256::digest(definition.to_string().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Changes when anything about the running process changes, so a reload knows to restart.
    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.command.hash(&mut h);
        self.cwd.hash(&mut h);
        self.env.hash(&mut h);
        self.run_as.hash(&mut h);
        self.log_max_size.hash(&mut h);
        self.log_keep.hash(&mut h);
        // NOTIFY_SOCKET is in its environment only when it has a notify check.
        self.uses_notify().hash(&mut h);
        self.target.hash(&mut h);
        h.finish()
    }
}

impl AgentConfig {
    /// The environment as `vigil check` shows it: values from `env_file`, and values whose
    /// names look secret, hidden.
    /// The values its evidence must never show (besides the usual patterns): those of its
    /// secret-looking env vars and of everything from its `env_file`.
    pub fn secrets(&self) -> crate::redact::Secrets {
        crate::redact::Secrets::from_env(self.env.iter().map(|(k, v)| (k, v)), &self.env_file_keys)
    }

    pub fn shown_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| {
                let shown = if self.env_file_keys.contains(k) {
                    "[from env_file]".to_string()
                } else if crate::redact::secret_name(k) && !v.is_empty() {
                    crate::redact::REDACTED.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), shown)
            })
            .collect()
    }
}

impl Config {
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}
