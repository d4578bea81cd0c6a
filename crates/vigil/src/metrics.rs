//! Prometheus metrics. No global registry: one is built at startup and rendered per scrape.
//! Agent metrics come from the latest snapshot at scrape time; the check-duration histogram
//! is fed by the probes as they finish.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use std::sync::atomic::Ordering;

use vigil_core::AgentState;

use crate::health::Health;
use crate::view::{AgentView, FleetView};

type Labels = Vec<(&'static str, String)>;
/// Labels borrowed from the snapshot: a scrape of 1000 agents encodes ~12,000 samples, and
/// copying their label values would cost more than encoding them.
type Borrowed<'a> = Vec<(&'static str, &'a str)>;

/// Metrics that are updated as things happen (rather than read from a snapshot).
#[derive(Clone)]
pub struct Live {
    /// How long probes take, by check kind.
    pub check_duration: Family<Labels, Histogram>,
    /// Notify datagrams, by result (`accepted`, `ignored`).
    pub notify_datagrams: Family<Labels, Counter>,
    /// Verdicts on failures, by category and source (`rules`, `llm`).
    pub diagnoses: Family<Labels, Counter>,
    /// Questions to the advisor, by outcome (`ok`, `cached`, `error`, `timeout`, `invalid`,
    /// `busy`).
    pub llm_requests: Family<Labels, Counter>,
    /// How long the model takes to answer (answers only: no cache hits, timeouts or errors).
    pub llm_latency: Histogram,
}

const LLM_LATENCY_BUCKETS: [f64; 18] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
    180.0, 300.0,
];

impl Default for Live {
    fn default() -> Self {
        let live = Self {
            check_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 4.0, 10))
            }),
            notify_datagrams: Family::default(),
            diagnoses: Family::default(),
            llm_requests: Family::default(),
            // Local models answer in 1–60 s: buckets fine enough there that a quantile is
            // not an interpolation across a 50 s wide bucket.
            llm_latency: Histogram::new(LLM_LATENCY_BUCKETS.iter().copied()),
        };
        live.init_diagnoses("rules");
        live
    }
}

impl Live {
    pub fn observe_check(&self, kind: &'static str, took: Duration) {
        self.check_duration
            .get_or_create(&vec![("kind", kind.to_string())])
            .observe(took.as_secs_f64());
    }

    pub fn diagnosed(&self, category: &str, source: &str) {
        self.diagnoses
            .get_or_create(&vec![
                ("category", category.to_string()),
                ("source", source.to_string()),
            ])
            .inc();
    }

    /// Every outcome is shown from the start (at 0) once an advisor is configured, so an
    /// alert on errors works before the first error.
    /// Every category is shown from the start (at 0), so `increase()` sees the first one.
    fn init_diagnoses(&self, source: &str) {
        for category in vigil_core::Category::ALL {
            let _ = self.diagnoses.get_or_create(&vec![
                ("category", category.as_str().to_string()),
                ("source", source.to_string()),
            ]);
        }
    }

    pub fn init_llm(&self) {
        for outcome in ["ok", "cached", "error", "timeout", "invalid", "busy"] {
            let _ = self
                .llm_requests
                .get_or_create(&vec![("outcome", outcome.to_string())]);
        }
        self.init_diagnoses("llm");
    }

    pub fn llm_request(&self, outcome: &str, took: Option<Duration>) {
        self.llm_requests
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
        if let Some(took) = took {
            self.llm_latency.observe(took.as_secs_f64());
        }
    }

    pub fn notify(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "ignored" };
        self.notify_datagrams
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }
}

/// Every vigil metric, rendered in the Prometheus text format.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(
        view: watch::Receiver<Arc<FleetView>>,
        live: &Live,
        health: Arc<Health>,
        node: &str,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register_with_unit(
            "vigil_check_duration",
            "How long health-check probes take, by check kind",
            Unit::Seconds,
            live.check_duration.clone(),
        );
        registry.register(
            "vigil_notify_datagrams",
            "Datagrams received on the notify socket, by result (ignored: not sent by an agent's process tree)",
            live.notify_datagrams.clone(),
        );
        registry.register(
            "vigil_diagnoses",
            "Verdicts on agent failures, by category and source (rules, llm)",
            live.diagnoses.clone(),
        );
        registry.register(
            "vigil_llm_requests",
            "Questions to the LLM advisor, by outcome (ok, cached, error, timeout: no answer within the timeout, invalid, busy: another question held the model for the whole wait)",
            live.llm_requests.clone(),
        );
        registry.register_with_unit(
            "vigil_llm_latency",
            "How long the LLM advisor's model takes to answer, once it has the question (answers only: no cache hits, timeouts or errors)",
            Unit::Seconds,
            live.llm_latency.clone(),
        );
        registry.register_collector(Box::new(FleetCollector {
            view,
            node: node.to_string(),
        }));
        registry.register_collector(Box::new(HealthCollector { health }));
        registry.register_collector(Box::new(ProcessCollector));
        Self { registry }
    }

    /// OpenMetrics when the scraper asks for it (Prometheus does), else the classic
    /// Prometheus text format (curl, `promtool check metrics`).
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(64 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        if openmetrics {
            out
        } else {
            to_prometheus_text(&out)
        }
    }
}

/// OpenMetrics → Prometheus text 0.0.4: counter families are named with their `_total`
/// suffix there, and `# UNIT` / `# EOF` do not exist.
fn to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 256);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[derive(Debug)]
struct FleetCollector {
    view: watch::Receiver<Arc<FleetView>>,
    node: String,
}

/// Every restart reason, each exported from 0 so that `increase()` counts the first restart.
const RESTART_REASONS: [&str; 5] = ["exit", "stall", "spawn_failed", "retry", "requested"];

fn agent_labels(a: &AgentView) -> Borrowed<'_> {
    let mut l = Vec::with_capacity(5);
    l.push(("agent", a.name.as_str()));
    // Not `instance`: that label is the scrape target's, and Prometheus would rename ours.
    if let (Some(t), Some(i)) = (&a.template, &a.instance) {
        l.push(("template", t.as_str()));
        l.push(("agent_instance", i.as_str()));
    }
    l
}

fn with<'a>(mut labels: Borrowed<'a>, key: &'static str, value: &'a str) -> Borrowed<'a> {
    labels.push((key, value));
    labels
}

/// One gauge family, a sample per item that has a value.
fn gauges<'a, T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    items: impl Iterator<Item = (Borrowed<'a>, T)>,
) -> std::fmt::Result
where
    T: prometheus_client::encoding::EncodeGaugeValue,
{
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in items {
        family.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snap = self.view.borrow().clone();
        let agents = &snap.agents;
        let now_ms = crate::clock::now().wall_ms;
        gauges(
            &mut encoder,
            "vigil_build_info",
            "Version of the running vigil and the node it runs on (always 1); join on it to name the host in alerts",
            None,
            std::iter::once((
                vec![
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("node", self.node.as_str()),
                ],
                1u32,
            )),
        )?;
        encoder
            .encode_descriptor(
                "vigil_agents",
                "Agents in the configuration",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(agents.len() as u64))?;
        gauges(
            &mut encoder,
            "vigil_agent_up",
            "1 when the agent's process is running (started and not stopping), else 0",
            None,
            agents
                .iter()
                .map(|a| (agent_labels(a), u32::from(a.state == AgentState::Running))),
        )?;
        gauges(
            &mut encoder,
            "vigil_agent_state",
            "1 for the agent's current state (starting, running, backoff, stopping, stopped, quarantined), 0 for the others",
            None,
            agents.iter().flat_map(|a| {
                AgentState::ALL.iter().map(move |s| {
                    (
                        with(agent_labels(a), "state", s.as_str()),
                        u32::from(a.state == *s),
                    )
                })
            }),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "vigil_agent_restarts",
                "Restarts of the agent, by reason (exit, stall, spawn_failed, retry, requested)",
                None,
                MetricType::Counter,
            )?;
            for a in agents {
                for reason in RESTART_REASONS {
                    let n = a.restarts_by_cause.get(reason).copied().unwrap_or(0);
                    let labels = with(agent_labels(a), "reason", reason);
                    family
                        .encode_family(&labels)?
                        .encode_counter::<Borrowed<'_>, u64, f64>(&n, None)?;
                }
                for (reason, n) in &a.restarts_by_cause {
                    if !RESTART_REASONS.contains(&reason.as_str()) {
                        let labels = with(agent_labels(a), "reason", reason);
                        family
                            .encode_family(&labels)?
                            .encode_counter::<Borrowed<'_>, u64, f64>(n, None)?;
                    }
                }
            }
        }
        gauges(
            &mut encoder,
            "vigil_agent_stalled",
            "1 from vigil's first stall verdict until the agent has proven healthy again (or a person stopped or reset it); stays 1 across the restarts that try to heal it and across restarts of vigil",
            None,
            agents
                .iter()
                .map(|a| (agent_labels(a), u32::from(a.stalled_since_ms.is_some()))),
        )?;
        gauges(
            &mut encoder,
            "vigil_agent_stalled_since",
            "When the open stall episode began, seconds since the Unix epoch (only while stalled)",
            Some(&Unit::Seconds),
            agents.iter().filter_map(|a| {
                a.stalled_since_ms
                    .map(|ms| (agent_labels(a), ms as f64 / 1000.0))
            }),
        )?;
        gauges(
            &mut encoder,
            "vigil_agent_quiet",
            "1 while the agent is inside one of its quiet windows (progress is not judged), else 0",
            None,
            agents
                .iter()
                .map(|a| (agent_labels(a), u32::from(a.is_quiet(now_ms)))),
        )?;
        gauges(
            &mut encoder,
            "vigil_agent_healthy",
            "1 when the agent is running and every check has passed in this run, else 0",
            None,
            agents
                .iter()
                .map(|a| (agent_labels(a), u32::from(a.is_healthy()))),
        )?;
        gauges(
            &mut encoder,
            "vigil_agent_consecutive_failures",
            "Failures (exits, stalls) in a row without a healthy run in between",
            None,
            agents.iter().map(|a| (agent_labels(a), a.crash_streak)),
        )?;
        gauges(
            &mut encoder,
            "vigil_agent_restart_budget_remaining",
            "Automatic restarts still allowed in the sliding window",
            None,
            agents
                .iter()
                .map(|a| (agent_labels(a), a.budget_remaining(now_ms))),
        )?;
        gauges(
            &mut encoder,
            "vigil_agent_last_progress_age",
            "Age of the oldest last progress among the agent's progress checks (heartbeat, notify, api, file, sql, redis), measured from the end of its last quiet window at the earliest; only while the agent is starting or running and not quiet",
            Some(&Unit::Seconds),
            agents.iter().filter_map(|a| {
                a.progress(now_ms).map(|(age, _)| {
                    (
                        agent_labels(a),
                        (age.as_secs_f64() * 1000.0).round() / 1000.0,
                    )
                })
            }),
        )?;
        gauges(
            &mut encoder,
            "vigil_check_up",
            "1 when the check passes, 0 when it fails; no sample while it is unknown or pending, or while the agent is not starting or running",
            None,
            agents.iter().filter(|a| a.is_live()).flat_map(|a| {
                a.checks.iter().filter_map(move |c| {
                    c.up().map(|up| {
                        (
                            with(
                                with(agent_labels(a), "check", &c.name),
                                "kind",
                                c.kind.as_str(),
                            ),
                            up,
                        )
                    })
                })
            }),
        )?;
        let mut family = encoder.encode_descriptor(
            "vigil_actions",
            "Audit records written, by action",
            None,
            MetricType::Counter,
        )?;
        for (action, n) in snap.actions.iter() {
            family
                .encode_family(&vec![("action", action.to_string())])?
                .encode_counter::<Labels, u64, f64>(n, None)?;
        }
        Ok(())
    }
}

/// vigil's own health: how often its loop wakes, and whether its journal is being written.
#[derive(Debug)]
struct HealthCollector {
    health: Arc<Health>,
}

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let h = &self.health;
        let counters = [
            (
                "vigil_loop_wakeups",
                "Turns of the supervision loop (an idle fleet does not wake it)",
                h.loop_wakeups.load(Ordering::Relaxed),
            ),
            (
                "vigil_journal_write_errors",
                "Batches of audit records that could not be written (kept in memory and written later)",
                h.journal.write_errors.load(Ordering::Relaxed),
            ),
            (
                "vigil_journal_records_dropped",
                "Audit records lost because too many waited in memory while the journal could not be written",
                h.journal.dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<Labels, u64, f64>(&value, None)?;
        }
        encoder
            .encode_descriptor(
                "vigil_journal_records_waiting",
                "Audit records waiting in memory for the journal to be writable again",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(h.journal.waiting.load(Ordering::Relaxed) as i64))?;
        Ok(())
    }
}

/// The standard process metrics, read from /proc/self.
#[derive(Debug)]
struct ProcessCollector;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return Ok(());
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            return Ok(());
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let ticks = clock_ticks();
        let cpu = (num(11) + num(12)) / ticks;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as f64;
        let rss = num(21) * page;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let start = boot + num(19) / ticks;
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| {
                        l.split_whitespace()
                            .nth(3)
                            .and_then(|v| v.parse::<f64>().ok())
                    })
            })
            .unwrap_or(0.0);

        let mut cpu_family = encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent by vigil",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        cpu_family.encode_counter::<Labels, f64, f64>(&cpu, None)?;
        for (name, help, unit, value) in [
            (
                "process_resident_memory",
                "vigil's resident memory size",
                Some(Unit::Bytes),
                rss,
            ),
            (
                "process_start_time",
                "When vigil started, seconds since the Unix epoch",
                Some(Unit::Seconds),
                start,
            ),
            (
                "process_open_fds",
                "File descriptors vigil has open",
                None,
                fds as f64,
            ),
            (
                "process_max_fds",
                "vigil's limit on open file descriptors",
                None,
                max_fds,
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
            m.encode_gauge(&value)?;
        }
        Ok(())
    }
}
