//! Prometheus metrics. No global registry: one is built at startup and rendered per scrape.
//! Agent metrics come from the latest snapshot at scrape time; the check-duration histogram
//! is fed by the probes as they finish.

mod exposition;
mod fleet;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use std::sync::atomic::Ordering;

use crate::health::Health;
use crate::view::FleetView;

type Labels = Vec<(&'static str, String)>;

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
    /// Notifications, by channel and outcome (`delivered`, `failed`, `deduplicated`).
    pub notifications: Family<Labels, Counter>,
    /// Notifications accepted and not yet delivered, by channel.
    pub notifications_pending: Family<Labels, Gauge>,
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
            notifications: Family::default(),
            notifications_pending: Family::default(),
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

    pub fn notification(&self, channel: &str, outcome: &'static str, n: u64) {
        self.notifications
            .get_or_create(&vec![
                ("channel", channel.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc_by(n);
    }

    pub fn notifications_pending(&self, channel: &str, n: usize) {
        self.notifications_pending
            .get_or_create(&vec![("channel", channel.to_string())])
            .set(n as i64);
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
    view: watch::Receiver<Arc<FleetView>>,
    node: String,
    /// How long the last scrape's text was.
    last_size: std::sync::atomic::AtomicUsize,
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
        registry.register(
            "vigil_notifications",
            "Notifications to people, by channel and outcome (delivered; failed: refused by the channel or given up after a day; deduplicated: the same event about the same agent within the channel's dedupe window)",
            live.notifications.clone(),
        );
        registry.register(
            "vigil_notifications_pending",
            "Notifications accepted (kept in the outbox) and not yet delivered, by channel",
            live.notifications_pending.clone(),
        );
        registry.register_collector(Box::new(HealthCollector { health }));
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            registry,
            view,
            node: node.to_string(),
            last_size: Default::default(),
        }
    }

    /// OpenMetrics when the scraper asks for it (Prometheus does), else the classic
    /// Prometheus text format (curl, `promtool check metrics`). Rendered afresh at every
    /// scrape (a copy kept between scrapes would hold 15 MB for 10,000 agents), into a buffer
    /// sized like the last one: growing 15 MB by doubling copies it over and over.
    pub fn render(&self, openmetrics: bool) -> String {
        let size = self.last_size.load(Ordering::Relaxed);
        let mut out = String::with_capacity(size + size / 8 + 64 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out.truncate(without_eof(&out).len());
        let view = self.view.borrow().clone();
        fleet::write(&mut out, &view, &self.node, crate::clock::now().wall_ms);
        out.push_str("# EOF\n");
        self.last_size.store(out.len(), Ordering::Relaxed);
        if openmetrics {
            out
        } else {
            to_prometheus_text(&out)
        }
    }
}

/// OpenMetrics text without its closing `# EOF` line.
fn without_eof(text: &str) -> &str {
    text.strip_suffix("# EOF\n").unwrap_or(text)
}

/// OpenMetrics → Prometheus text 0.0.4: counter families are named with their `_total`
/// suffix there, and `# UNIT` / `# EOF` do not exist. Only comment lines change: the samples
/// between them are copied as they are, a block at a time.
fn to_prometheus_text(om: &str) -> String {
    let comments = comment_lines(om);
    let counters: std::collections::HashSet<&str> = comments
        .iter()
        .filter_map(|&(s, e)| om[s..e].strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 256);
    let mut copied = 0;
    for (start, end) in comments {
        out.push_str(&om[copied..start]);
        copied = (end + 1).min(om.len());
        let line = &om[start..end];
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out.push_str(&om[copied..]);
    out
}

/// Where each line that starts with `#` begins and ends (without its newline).
fn comment_lines(text: &str) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut next = if text.starts_with('#') {
        Some(0)
    } else {
        text.find("\n#").map(|i| i + 1)
    };
    while let Some(start) = next {
        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        lines.push((start, end));
        next = text[end..].find("\n#").map(|i| end + i + 1);
    }
    lines
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
        if h.clustered.load(Ordering::Relaxed) {
            encoder
                .encode_descriptor(
                    "vigil_cluster_up",
                    "1 while the cluster's PostgreSQL answers this node's renewal rounds, else 0 ([cluster] only)",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&i64::from(h.cluster_up.load(Ordering::Relaxed)))?;
            encoder
                .encode_descriptor(
                    "vigil_mirror_lag_bytes",
                    "Bytes of this node's audit journal not yet copied to the cluster's PostgreSQL (vigil fleet audit)",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&(h.mirror.lag_bytes.load(Ordering::Relaxed) as i64))?;
            encoder
                .encode_descriptor(
                    "vigil_mirror_records",
                    "Audit records copied to the cluster's PostgreSQL since vigil started",
                    None,
                    MetricType::Counter,
                )?
                .encode_counter::<Labels, u64, f64>(
                    &h.mirror.copied.load(Ordering::Relaxed),
                    None,
                )?;
        }
        Ok(())
    }
}

/// The standard process metrics, read from /proc/self.
#[derive(Debug)]
struct ProcessCollector;

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
        let ticks = crate::driver::proctree::ticks_per_second() as f64;
        let cpu = (num(11) + num(12)) / ticks;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as f64;
        let rss = num(21) * page;
        let start = crate::driver::proctree::wall_ms_of(num(19) as u64)
            .map_or(num(19) / ticks, |ms| ms as f64 / 1000.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP vigil_actions Audit records written.\n\
                  # TYPE vigil_actions counter\n\
                  vigil_actions_total{action=\"spawn\"} 3\n\
                  vigil_actions_total{action=\"exit\"} 1\n\
                  # HELP vigil_check_duration_seconds How long.\n\
                  # TYPE vigil_check_duration_seconds histogram\n\
                  # UNIT vigil_check_duration_seconds seconds\n\
                  vigil_check_duration_seconds_sum 0.5\n\
                  # HELP vigil_agents Agents.\n\
                  # TYPE vigil_agents gauge\n\
                  vigil_agents 2\n\
                  # EOF\n";
        let expected = "# HELP vigil_actions_total Audit records written.\n\
                        # TYPE vigil_actions_total counter\n\
                        vigil_actions_total{action=\"spawn\"} 3\n\
                        vigil_actions_total{action=\"exit\"} 1\n\
                        # HELP vigil_check_duration_seconds How long.\n\
                        # TYPE vigil_check_duration_seconds histogram\n\
                        vigil_check_duration_seconds_sum 0.5\n\
                        # HELP vigil_agents Agents.\n\
                        # TYPE vigil_agents gauge\n\
                        vigil_agents 2\n";
        assert_eq!(to_prometheus_text(om), expected);
        // Samples only, a sample first, no final newline: copied as they are.
        assert_eq!(to_prometheus_text("a 1\nb 2"), "a 1\nb 2");
        assert_eq!(to_prometheus_text(""), "");
        // A `#` inside a label value is not a comment line.
        let odd = "x{l=\"#\"} 1\n# TYPE x gauge\n";
        assert_eq!(to_prometheus_text(odd), odd);
    }
}
