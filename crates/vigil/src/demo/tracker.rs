//! Follows the audit journal as vigil writes it and ties each record to the fault that caused
//! it: injected → detected (exit, stalled) → acted (restart, backoff, escalated) → healed
//! (recovered) or escalated. One terminal line per step.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde_json::Value;

use super::faults::Kind;
use super::view::View;
use crate::audit::Record;

pub struct Fault {
    pub kind: Kind,
    pub agent: String,
    /// Faults injected together (the 429 storm) share a group.
    pub group: usize,
    pub injected_ms: i64,
    pub detected_ms: Option<i64>,
    pub acted: Option<String>,
    pub restarted_ms: Option<i64>,
    pub outcome: Option<Outcome>,
    pub resolved_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Healed,
    Escalated,
}

impl Fault {
    pub fn open(&self) -> bool {
        self.outcome.is_none()
    }
}

#[derive(Default)]
pub struct Totals {
    pub restarts: usize,
    pub quarantines: usize,
    pub budget_exhaustions: usize,
    pub advice: usize,
    pub llm_errors: usize,
    /// Traders that waited for the market feed while it was down.
    pub waited_for_feed: usize,
    /// Traders restarted while the market feed was down (the graph says: none).
    pub restarted_while_feed_down: usize,
    /// Guarded files repaired before a start.
    pub files_repaired: usize,
    pub incidents_opened: usize,
    pub incidents_resolved: usize,
    /// Agents whose failure an incident held (no restart, no budget spent).
    pub held_by_incident: usize,
    /// Notifications the demo's sink received.
    pub told: usize,
}

pub struct Tracker {
    journal: PathBuf,
    offset: u64,
    partial: String,
    pub faults: Vec<Fault>,
    pub totals: Totals,
    /// Agents quarantined or waiting out an exhausted budget (they take no faults meanwhile).
    pub quarantined: HashMap<String, bool>,
}

fn ts_ms(record: &Record) -> Option<i64> {
    let at = record.time()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(at.as_millis() as i64)
}

impl Tracker {
    pub fn new(journal: PathBuf) -> Tracker {
        Tracker {
            journal,
            offset: 0,
            partial: String::new(),
            faults: Vec::new(),
            totals: Totals::default(),
            quarantined: HashMap::new(),
        }
    }

    pub fn injected(&mut self, kind: Kind, agent: &str, group: usize, at_ms: i64) {
        self.faults.push(Fault {
            kind,
            agent: agent.to_string(),
            group,
            injected_ms: at_ms,
            detected_ms: None,
            acted: None,
            restarted_ms: None,
            outcome: None,
            resolved_ms: None,
        });
    }

    /// An agent with a fault still being handled takes no other.
    pub fn busy(&self, agent: &str) -> bool {
        self.faults.iter().any(|f| f.open() && f.agent == agent)
            || self.quarantined.get(agent).copied().unwrap_or(false)
    }

    pub fn open_faults(&self) -> usize {
        self.faults.iter().filter(|f| f.open()).count()
    }

    /// The market feed's hang was healed within the last minute (its traders resume after).
    fn recently_healed_feed(&self, at_ms: i64) -> bool {
        self.faults
            .iter()
            .any(|f| f.kind == Kind::FeedHang && f.resolved_ms.is_some_and(|r| at_ms - r < 60_000))
    }

    /// Read what vigil wrote since the last call.
    pub fn poll(&mut self, view: &View) {
        let Ok(mut file) = std::fs::File::open(&self.journal) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut text = String::new();
        let Ok(n) = file.read_to_string(&mut text) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&text);
        let Some(end) = self.partial.rfind('\n') else {
            return;
        };
        let complete: String = self.partial.drain(..=end).collect();
        for line in complete.lines() {
            if let Ok(record) = serde_json::from_str::<Record>(line) {
                self.observe(&record, view);
            }
        }
    }

    fn observe(&mut self, r: &Record, view: &View) {
        let action = r.action.as_str();
        let Some(agent) = r.agent.as_deref() else {
            match action {
                "incident_opened" => {
                    self.totals.incidents_opened += 1;
                    view.line("fleet", "incident", &r.reason);
                }
                "incident_resolved" => {
                    self.totals.incidents_resolved += 1;
                    view.line("fleet", "resolved", &r.reason);
                }
                _ => {}
            }
            return;
        };
        let incident = r.metadata.get("incident").and_then(Value::as_u64);
        let at = ts_ms(r).unwrap_or_default();
        let reason = r.reason.as_str();
        let meta = |key: &str| r.metadata.get(key).unwrap_or(&Value::Null);
        match action {
            "restart" if meta("cause").is_string() => self.totals.restarts += 1,
            "rate_limited" => self.totals.budget_exhaustions += 1,
            "advice" => {
                self.totals.advice += 1;
                view.line(agent, "advice", reason);
            }
            "llm_error" => {
                self.totals.llm_errors += 1;
                view.line(agent, "llm_error", reason);
            }
            _ => {}
        }
        let feed_down = self
            .faults
            .iter()
            .any(|f| f.open() && f.kind == Kind::FeedHang);
        if agent != "market-feed" && feed_down {
            match action {
                "waiting" => {
                    self.totals.waited_for_feed += 1;
                    view.line(agent, "waiting", reason);
                }
                "restart" => self.totals.restarted_while_feed_down += 1,
                _ => {}
            }
        }
        match action {
            "resumed" if feed_down || self.recently_healed_feed(at) => {
                view.line(agent, "resumed", reason)
            }
            "file_repaired" => {
                self.totals.files_repaired += 1;
                view.line(agent, "repaired", reason);
            }
            _ => {}
        }
        if action == "escalated" && reason.starts_with("quarantined") {
            self.totals.quarantines += 1;
        }
        // Quarantined, or waiting out an exhausted budget: down until reset or retried.
        if action == "escalated" {
            self.quarantined.insert(agent.to_string(), true);
        }
        if action == "reset" || (action == "restart" && reason.starts_with("retrying")) {
            self.quarantined.remove(agent);
        }
        let Some(fault) = self
            .faults
            .iter_mut()
            .find(|f| f.open() && f.agent == agent && f.injected_ms <= at + 5)
        else {
            return;
        };
        let since = |from: i64| (at - from) as f64 / 1000.0;
        // Held by an incident, then started again (as its canary or once it cleared).
        match (action, incident) {
            ("waiting", Some(n)) if fault.detected_ms.is_some() => {
                self.totals.held_by_incident += 1;
                fault
                    .acted
                    .get_or_insert_with(|| format!("held by incident {n}"));
                view.line(agent, "held", reason);
            }
            ("resumed", Some(_)) => {
                fault.restarted_ms.get_or_insert(at);
                view.line(agent, "restarted", reason);
            }
            _ => {}
        }
        match action {
            "exit" | "stalled" if fault.detected_ms.is_none() && !r.success => {
                fault.detected_ms = Some(at);
                view.line(
                    agent,
                    "detected",
                    &format!(
                        "{reason} ({:.1}s after the fault)",
                        since(fault.injected_ms)
                    ),
                );
            }
            "restart" | "backoff" | "escalated" | "stop" if fault.detected_ms.is_some() => {
                let diagnosis = meta("diagnosis");
                if fault.acted.is_none() && diagnosis.is_object() {
                    let verdict = format!(
                        "{} ({}) → {}",
                        diagnosis["category"].as_str().unwrap_or("?"),
                        diagnosis["rule"].as_str().unwrap_or("?"),
                        diagnosis["action"].as_str().unwrap_or("?"),
                    );
                    view.line(agent, "diagnosed", &verdict);
                    fault.acted = Some(verdict);
                }
                match action {
                    "restart" => {
                        fault.restarted_ms.get_or_insert(at);
                        view.line(agent, "restarted", reason);
                    }
                    "backoff" => view.line(agent, "backoff", reason),
                    "escalated" => {
                        fault.outcome = Some(Outcome::Escalated);
                        fault.resolved_ms = Some(at);
                        view.line(agent, "escalated", reason);
                    }
                    _ => {}
                }
            }
            "recovered" if fault.detected_ms.is_some() => {
                fault.outcome = Some(Outcome::Healed);
                fault.resolved_ms = Some(at);
                view.line(
                    agent,
                    "healed",
                    &format!(
                        "checks pass again, {:.1}s after detection",
                        since(fault.detected_ms.unwrap_or(at))
                    ),
                );
            }
            _ => {}
        }
    }
}
