//! What runbooks and alerts are: `[[runbooks]]` as the core sees them, and Alertmanager's
//! alerts reduced to what decides anything.

use std::collections::BTreeMap;
use std::time::Duration;

/// How a label's value is matched: Alertmanager's `match` (equal) and `match_re` (a regular
/// expression that must match the whole value).
#[derive(Clone, Debug)]
pub enum Matcher {
    Equal(String),
    Regex(regex::Regex),
}

impl Matcher {
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self {
            Matcher::Equal(want) => value.unwrap_or("") == want,
            Matcher::Regex(re) => re.is_match(value.unwrap_or("")),
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Matcher::Equal(a), Matcher::Equal(b)) => a == b,
            (Matcher::Regex(a), Matcher::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// One step of a runbook.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The agent's log tail, and its evidence command's output when it runs.
    Collect,
    /// The diagnosis rules over what was collected: a verdict that a restart cannot help
    /// makes a later `restart` step fail rather than restart.
    Diagnose,
    /// Through the agent's policy and budget.
    Restart,
    /// Until the agent runs with every check passing on fresh evidence, at most this long.
    WaitHealthy(Duration),
    /// A command (argv; `{agent}`, `{instance}`, `{{ labels.X }}` substituted), cut at
    /// `timeout`; a non-zero exit fails the step.
    Exec {
        argv: Vec<String>,
        timeout: Duration,
    },
    /// Tell a notification channel.
    Notify(String),
}

impl Step {
    pub fn label(&self) -> String {
        match self {
            Step::Collect => "collect evidence".into(),
            Step::Diagnose => "diagnose".into(),
            Step::Restart => "restart".into(),
            Step::WaitHealthy(d) => format!("wait healthy {}", crate::time::human_duration(*d)),
            Step::Exec { argv, .. } => format!("exec {}", argv.first().map_or("", String::as_str)),
            Step::Notify(c) => format!("notify {c}"),
        }
    }
}

/// What a failed runbook does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Quarantine the agent and tell people, with the step that failed.
    Escalate,
    /// Only tell people (`runbook_failed`).
    Notify,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunbookSpec {
    pub name: String,
    /// Every one must match.
    pub matchers: Vec<(String, Matcher)>,
    /// The agent it acts on: an agent's name with `{{ labels.X }}` placeholders.
    pub agent: String,
    pub steps: Vec<Step>,
    /// For the whole runbook.
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

impl RunbookSpec {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers
            .iter()
            .all(|(k, m)| m.matches(labels.get(k).map(String::as_str)))
    }
}

/// `[alertmanager]`: what vigil does with the alerts it receives.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertPolicy {
    /// An alert with any of these labels is about vigil itself: never acted on.
    pub self_labels: Vec<(String, String)>,
    /// Runbooks running at once; more wait their turn.
    pub max_concurrent: usize,
    /// vigil's own names as agents' targets may carry them (`unit vigil.service`).
    pub self_targets: Vec<String>,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            self_labels: Vec::new(),
            max_concurrent: 4,
            self_targets: Vec::new(),
        }
    }
}

/// The alerts vigil's own Prometheus rules raise about vigil (deploy/prometheus): about
/// itself whatever the configuration says.
pub const SELF_ALERTS: &[&str] = &[
    "VigilDown",
    "VigilAbsent",
    "VigilJournalFailing",
    "LLMAdvisorFailing",
];

/// One alert, as far as deciding goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub fingerprint: String,
    /// `firing`; `false`: resolved.
    pub firing: bool,
    pub labels: BTreeMap<String, String>,
    /// When it started (RFC 3339, as Alertmanager sent it): with the fingerprint, one alert
    /// however often it is repeated.
    pub starts_at: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map_or("(no alertname)", String::as_str)
    }
}

/// What became of a group of alerts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertAnswer {
    /// Runbooks started or queued.
    pub accepted: usize,
    /// Seen before (Alertmanager's repeats and retries).
    pub duplicates: usize,
    pub refused: usize,
    /// Runbooks called off by a resolved alert.
    pub cancelled: usize,
    /// Firing alerts no runbook matches.
    pub unmatched: usize,
}

/// `{{ labels.agent }}@{{ labels.symbol }}` with the alert's labels; the missing label's
/// name when one is absent.
pub fn fill(template: &str, labels: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = after[..end].trim();
        let key = inner.strip_prefix("labels.").unwrap_or(inner);
        match labels.get(key) {
            Some(v) => out.push_str(v),
            None => return Err(key.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
