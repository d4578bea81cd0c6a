//! Health checks as the core sees them: when to probe, when a deadline has passed, and what
//! a result means. Probing itself happens at the edges.
//!
//! Two styles:
//! - push (`heartbeat`, `notify`, `api`): the agent shows signs of life; a deadline at
//!   `max_age` after the last one decides, so a stall is seen when it happens, not at the next
//!   poll. For `heartbeat` files the edge confirms at the deadline (one `stat`); for `notify`
//!   and `api` the core itself saw every sign of life.
//! - polled (`http`, `exec`, `file`, `sql`, `redis`): probed every `interval`, never two at a
//!   time; the edge cuts a probe at `timeout`.
//!
//! Progress is always measured from the latest of: the last sign of progress, the start of the
//! current run, and the end of the last quiet window — a fresh start or a market reopening
//! gets `max_age` to show progress.

use std::fmt;
use std::time::{Duration, Instant};

use crate::quiet::Quiet;
use crate::time::{Now, later};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    Heartbeat,
    Notify,
    Api,
    Http,
    Exec,
    File,
    Sql,
    Redis,
    /// A container's own HEALTHCHECK, as its engine reports it.
    ContainerHealth,
}

impl CheckKind {
    pub const ALL: [CheckKind; 9] = [
        CheckKind::Heartbeat,
        CheckKind::Notify,
        CheckKind::Api,
        CheckKind::Http,
        CheckKind::Exec,
        CheckKind::File,
        CheckKind::Sql,
        CheckKind::Redis,
        CheckKind::ContainerHealth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Heartbeat => "heartbeat",
            CheckKind::Notify => "notify",
            CheckKind::Api => "api",
            CheckKind::Http => "http",
            CheckKind::Exec => "exec",
            CheckKind::File => "file",
            CheckKind::Sql => "sql",
            CheckKind::Redis => "redis",
            CheckKind::ContainerHealth => "container_health",
        }
    }

    pub fn from_name(s: &str) -> Option<CheckKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// Deadline-driven rather than polled.
    pub fn is_push(self) -> bool {
        matches!(
            self,
            CheckKind::Heartbeat | CheckKind::Notify | CheckKind::Api
        )
    }

    /// The core sees every sign of life itself (no probe at the deadline).
    fn signs_reach_core(self) -> bool {
        matches!(self, CheckKind::Notify | CheckKind::Api)
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    /// Unique within the agent; defaults to the kind.
    pub name: String,
    pub kind: CheckKind,
    /// Polled checks: time between the end of one probe and the start of the next. Push
    /// checks: time between re-evaluations once failing.
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failing verdicts before the agent counts as stalled.
    pub failure_threshold: u32,
    /// No failing verdict counts until this long after a start.
    pub grace: Duration,
    /// Progress older than this fails (required for push and progress checks).
    pub max_age: Option<Duration>,
    /// `notify` only: the agent counts as started only after `READY=1`.
    pub ready: bool,
    /// What the edge probes (a URL, a query, a path), reduced to whether it changed.
    pub probe_fingerprint: u64,
    /// The agent whose output this check watches (`produced_by`): a stall it finds is that
    /// agent's, which is diagnosed and healed instead of the watcher.
    pub produced_by: Option<String>,
    /// The service the probe talks to (`postgres://db:5432/bots`, `redis://cache:6379`),
    /// without secrets: agents failing while it is unreachable share a cause.
    pub target: Option<String>,
}

impl CheckSpec {
    pub fn new(name: &str, kind: CheckKind) -> Self {
        Self {
            name: name.to_string(),
            kind,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            failure_threshold: if kind.is_push() { 1 } else { 2 },
            grace: Duration::ZERO,
            max_age: None,
            ready: false,
            probe_fingerprint: 0,
            produced_by: None,
            target: None,
        }
    }

    /// `sql decisions`, or just `heartbeat` when the name is the kind.
    pub fn label(&self) -> String {
        if self.name == self.kind.as_str() {
            self.name.clone()
        } else {
            format!("{} {}", self.kind, self.name)
        }
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// The probe judged health itself (an HTTP status, an exit code).
    Healthy(String),
    Unhealthy(String),
    /// The last sign of progress, as wall-clock milliseconds (`None`: none yet). The core
    /// judges its age.
    Progress {
        at_wall_ms: Option<i64>,
    },
    /// The probe could not judge: its own target is broken (database down, Redis unreachable,
    /// a command that does not exist). Never restarts anyone by itself.
    Unknown(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No result yet in this run.
    Pending,
    Ok,
    Failing,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pending => "pending",
            Verdict::Ok => "ok",
            Verdict::Failing => "failing",
            Verdict::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckStatus {
    pub verdict: Verdict,
    pub detail: String,
    pub consecutive_failures: u32,
    /// When the verdict was reached.
    pub at: Option<Instant>,
    /// Age of the last progress, for progress checks.
    pub age: Option<Duration>,
    /// The last sign of progress or life, for progress and push checks.
    pub last_progress: Option<Instant>,
}

impl Default for CheckStatus {
    fn default() -> Self {
        Self {
            verdict: Verdict::Pending,
            detail: String::new(),
            consecutive_failures: 0,
            at: None,
            age: None,
            last_progress: None,
        }
    }
}

/// A `NOTIFY_SOCKET` datagram, as sd_notify(3) defines it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyMessage {
    pub ready: bool,
    pub watchdog: bool,
    /// `WATCHDOG=trigger`: the agent says it is broken.
    pub watchdog_trigger: bool,
    pub stopping: bool,
    pub status: Option<String>,
    pub watchdog_usec: Option<u64>,
    /// `DEGRADED=<reason>`: the agent declares itself degraded (`DEGRADED=0`: ok again).
    pub degraded: Option<String>,
    /// `DEGRADED_UNTIL=<unix seconds>`: until when (wall-clock milliseconds).
    pub degraded_until_ms: Option<i64>,
}

impl NotifyMessage {
    /// Parse newline-separated `KEY=VALUE` pairs; unknown keys are ignored, as systemd does.
    pub fn parse(datagram: &[u8]) -> NotifyMessage {
        let mut m = NotifyMessage::default();
        for line in datagram.split(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "READY" => m.ready = v == "1",
                "WATCHDOG" if v == "1" => m.watchdog = true,
                "WATCHDOG" if v == "trigger" => m.watchdog_trigger = true,
                "STOPPING" => m.stopping = v == "1",
                "STATUS" => m.status = Some(v.chars().take(200).collect()),
                "WATCHDOG_USEC" => m.watchdog_usec = v.parse().ok().filter(|n| *n > 0),
                "DEGRADED" => m.degraded = Some(v.trim().chars().take(200).collect()),
                "DEGRADED_UNTIL" => {
                    m.degraded_until_ms = v
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e11)
                        .map(|s| (s * 1000.0) as i64)
                }
                _ => {}
            }
        }
        m
    }

    /// What the agent declared about itself in this message, if anything (`now_ms`: the
    /// wall clock, for `DEGRADED_UNTIL`).
    pub fn declared(&self, now_ms: i64) -> Option<crate::agent::Declared> {
        let reason = self.degraded.as_deref()?;
        if reason.is_empty() || reason == "0" {
            return Some(crate::agent::Declared::Ok);
        }
        let until = self
            .degraded_until_ms
            .map(|ms| std::time::Duration::from_millis((ms - now_ms).max(0) as u64));
        Some(crate::agent::Declared::Degraded {
            reason: reason.to_string(),
            until,
        })
    }

    pub fn is_sign_of_life(&self) -> bool {
        self.ready || self.watchdog
    }
}

/// Something the agent must act on after a check input.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CheckOutput {
    /// Probe check `index` now.
    Probe(usize),
    /// A check's verdict changed.
    Changed { index: usize, from: Verdict },
    /// The agent is stalled. `triggered`: it said so itself (`WATCHDOG=trigger`), which no
    /// declared degradation suspends.
    Stalled {
        index: usize,
        reason: String,
        triggered: bool,
    },
    /// Every check has passed in this run.
    AllOk,
}

#[derive(Clone, Debug)]
pub(crate) struct Check {
    pub spec: CheckSpec,
    pub status: CheckStatus,
    in_flight: bool,
    last_sign: Option<Instant>,
    /// `WATCHDOG_USEC` sent by the agent replaces `max_age`.
    max_age_override: Option<Duration>,
    /// Passed in this run on evidence from this run: a probe that judged health itself, or
    /// progress newer than the run's start. Old progress that is still young enough passes
    /// the check, but proves nothing about the new run.
    proven_this_run: bool,
    /// When this check's timer should fire next.
    pub due: Option<Instant>,
}

impl Check {
    fn new(spec: CheckSpec) -> Self {
        Self {
            spec,
            status: CheckStatus::default(),
            in_flight: false,
            last_sign: None,
            max_age_override: None,
            proven_this_run: false,
            due: None,
        }
    }

    fn max_age(&self) -> Duration {
        self.max_age_override
            .or(self.spec.max_age)
            .unwrap_or(Duration::from_secs(60))
    }
}

/// One verdict on its way into a check's status.
struct Judged {
    verdict: Verdict,
    detail: String,
    age: Option<Duration>,
    /// The evidence comes from the run being watched (see `Check::proven_this_run`).
    fresh: bool,
}

impl Judged {
    /// A sign of life the core saw itself (notify, API heartbeat).
    fn alive() -> Judged {
        Judged {
            verdict: Verdict::Ok,
            detail: "alive".into(),
            age: Some(Duration::ZERO),
            fresh: true,
        }
    }
}

/// The checks of one agent and the run they watch.
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckSet {
    pub checks: Vec<Check>,
    /// Since when the run being watched is up (spawn, or READY=1); `None` while inactive.
    run_start: Option<Instant>,
    /// Grace counts from the spawn, even when the agent became ready later.
    grace_from: Option<Instant>,
    /// Increments at every start and whenever the checks themselves change (a reload), so
    /// results of probes started for an earlier run or earlier checks are dropped.
    pub generation: u64,
    /// The agent said `STOPPING=1`: it is shutting down on its own; no stall verdicts.
    suspended: bool,
    /// An agent it depends on is down: its failing verdicts are that agent's, and do not count.
    pub upstream_down: bool,
    /// The agent's last `STATUS=` line.
    pub status_text: Option<String>,
    /// vigil itself was not running its loop until then: signs of life sent before may have
    /// been read only now, so silence is measured from here at the earliest.
    blind_end: Option<Instant>,
}

/// `after` from now, pushed to the next boundary of a wall-clock grid (a twentieth of
/// `after`, at most 50 ms). Polled checks of many agents then come due together and are
/// probed in one batch, instead of waking vigil a thousand times a second.
fn on_grid(now: Now, after: Duration) -> Instant {
    let grid = (after.as_millis() as i64 / 20).clamp(1, 50);
    let target = now.wall_ms.saturating_add(crate::time::millis(after));
    let pad = (grid - target.rem_euclid(grid)) % grid;
    later(later(now.mono, after), Duration::from_millis(pad as u64))
}

/// Seconds for humans: milliseconds shown below ten seconds (`1.004s`, `2.3s`, `1s`), whole
/// seconds above (`1523s`).
pub fn fmt_secs(d: Duration) -> String {
    if d.as_secs() >= 10 {
        return format!("{}s", d.as_secs());
    }
    let text = format!("{:.3}", d.as_secs_f64());
    format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
}

impl CheckSet {
    pub fn new(specs: Vec<CheckSpec>) -> Self {
        Self {
            checks: specs.into_iter().map(Check::new).collect(),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    pub fn is_active(&self) -> bool {
        self.run_start.is_some()
    }

    /// Check `i`'s stall still stands now: the agent is still not ready (the readiness check),
    /// or the check still fails past its threshold — and counts (not in a quiet window, not
    /// while the agent is stopping on its own).
    pub fn still_stalled(&self, i: usize, now: Now, quiet: &Quiet) -> bool {
        let Some(c) = self.checks.get(i) else {
            return false;
        };
        if !self.is_active() {
            return self.ready_check() == Some(i);
        }
        c.status.verdict == Verdict::Failing
            && c.status.consecutive_failures >= c.spec.failure_threshold
            && !self.suspended
            && !quiet.is_quiet(now.wall_ms)
    }

    /// The `notify` check that gates readiness, if any.
    pub fn ready_check(&self) -> Option<usize> {
        self.checks
            .iter()
            .position(|c| c.spec.kind == CheckKind::Notify && c.spec.ready)
    }

    /// The same checks for a new generation (a reload changed them): results of probes
    /// started for the old ones are dropped.
    pub fn replaced(specs: Vec<CheckSpec>, previous: &CheckSet) -> CheckSet {
        CheckSet {
            generation: previous.generation + 1,
            ..CheckSet::new(specs)
        }
    }

    /// A new run was spawned: forget the previous run's results.
    pub fn new_run(&mut self) {
        self.generation += 1;
        self.run_start = None;
        self.suspended = false;
        self.status_text = None;
        for c in &mut self.checks {
            c.status = CheckStatus::default();
            c.in_flight = false;
            c.last_sign = None;
            c.max_age_override = None;
            c.proven_this_run = false;
            c.due = None;
        }
    }

    /// While waiting for `READY=1`: the one deadline is the ready check's.
    pub fn arm_ready_deadline(&mut self, start: Instant) {
        if let Some(i) = self.ready_check() {
            let c = &mut self.checks[i];
            c.due = Some(later(start, c.max_age().max(c.spec.grace)));
        }
    }

    /// Start watching a run that is up since `now` and was spawned at `spawned`.
    pub fn start(&mut self, now: Instant, spawned: Instant) {
        self.run_start = Some(now);
        self.grace_from = Some(spawned);
        for c in &mut self.checks {
            c.in_flight = false;
            c.due = Some(if c.spec.kind.is_push() {
                c.last_sign = Some(now);
                later(now, c.max_age()).max(later(spawned, c.spec.grace))
            } else {
                later(now, c.spec.interval)
            });
        }
    }

    /// Every check has passed in this run on this run's evidence, and none has reached its
    /// failure threshold: the agent is `healthy` for what depends on it. A single failing
    /// probe below the threshold (or one inside grace, a quiet window, a stop) is not enough
    /// to hold every dependent. An agent without checks is healthy once up.
    pub fn healthy(&self) -> bool {
        self.is_active()
            && self.checks.iter().all(|c| {
                c.proven_this_run && c.status.consecutive_failures < c.spec.failure_threshold.max(1)
            })
    }

    /// The upstream it waited for is back: its checks start over as after a start — failures
    /// forgotten, a new grace period, silence measured from `now` — so what the upstream's
    /// outage left stale is not a stall of this agent.
    pub fn resume_after_upstream(&mut self, now: Instant) {
        self.upstream_down = false;
        if self.run_start.is_some() {
            self.grace_from = Some(now);
            self.blind_end = Some(self.blind_end.map_or(now, |b| b.max(now)));
        }
        for c in &mut self.checks {
            c.status.consecutive_failures = 0;
            if c.spec.kind.is_push() && self.run_start.is_some() {
                c.due = Some(later(now, c.max_age().max(c.spec.grace)));
            }
        }
        if self.run_start.is_none() {
            // Still waiting for READY=1: the deadline starts over too.
            self.arm_ready_deadline(now);
        }
    }

    pub fn stop(&mut self) {
        self.run_start = None;
        for c in &mut self.checks {
            c.due = None;
            c.in_flight = false;
        }
    }

    fn in_grace(&self, c: &Check, now: Instant) -> bool {
        self.grace_from
            .is_some_and(|s| now < later(s, c.spec.grace))
    }

    /// The instant progress is measured from: the latest of the sign, the run start and the
    /// end of the last quiet window.
    fn reference(&self, sign: Option<Instant>, now: Now, quiet: &Quiet) -> Option<Instant> {
        let quiet_end = quiet.last_end(now.wall_ms).and_then(|w| now.mono_of(w));
        let blind_end = self.blind_end.filter(|_| self.run_start.is_some());
        [sign, self.run_start, quiet_end, blind_end]
            .into_iter()
            .flatten()
            .max()
    }

    /// vigil's loop was not running until `now` (see `blind_end`).
    pub fn vigil_was_blind(&mut self, now: Instant) {
        self.blind_end = Some(now);
    }

    /// How long the slowest check takes to call a stall, as it judges (a `WATCHDOG_USEC`
    /// from the agent, the default `max_age` of push checks included): an agent that has
    /// passed every check for longer has proven it is no longer stalled.
    pub fn stall_proof_period(&self) -> Duration {
        self.checks
            .iter()
            .map(|c| {
                if c.spec.kind.is_push() || c.spec.max_age.is_some() {
                    c.max_age()
                } else {
                    c.spec
                        .interval
                        .checked_mul(c.spec.failure_threshold.max(1))
                        .unwrap_or(Duration::MAX)
                }
            })
            .max()
            .unwrap_or_default()
    }

    /// A check's timer fired.
    pub fn on_due(&mut self, i: usize, now: Now, quiet: &Quiet, out: &mut Vec<CheckOutput>) {
        if i >= self.checks.len() {
            return;
        }
        self.checks[i].due = None;
        if !self.is_active() {
            // Waiting for READY=1 and it did not come.
            if self.ready_check() == Some(i) {
                let waited = self.checks[i].max_age().max(self.checks[i].spec.grace);
                if let Some(blind) = self.blind_end
                    && now.mono < later(blind, waited)
                {
                    // A READY=1 may be queued behind vigil's own stall.
                    self.checks[i].due = Some(later(blind, waited));
                    return;
                }
                let c = &self.checks[i];
                out.push(CheckOutput::Stalled {
                    index: i,
                    reason: format!(
                        "not ready: no READY=1 within {} of the start",
                        fmt_secs(c.max_age().max(c.spec.grace))
                    ),
                    triggered: false,
                });
            }
            return;
        }
        let kind = self.checks[i].spec.kind;
        if !kind.signs_reach_core() {
            if !self.checks[i].in_flight {
                self.checks[i].in_flight = true;
                out.push(CheckOutput::Probe(i));
            }
            return;
        }
        // notify / api: the core knows the last sign; re-arm lazily or judge.
        let max_age = self.checks[i].max_age();
        let reference = self
            .reference(self.checks[i].last_sign, now, quiet)
            .unwrap_or(now.mono);
        let grace_end = self
            .grace_from
            .map_or(now.mono, |s| later(s, self.checks[i].spec.grace));
        let deadline = later(reference, max_age).max(grace_end);
        if now.mono < deadline {
            self.checks[i].due = Some(deadline);
            // Signs came in time: still passing, which is news to an open stall episode.
            if self.checks[i].status.verdict == Verdict::Ok
                && self.checks.iter().all(|c| c.proven_this_run)
            {
                out.push(CheckOutput::AllOk);
            }
            return;
        }
        let silent = now.mono.saturating_duration_since(reference);
        let what = match kind {
            CheckKind::Notify => "WATCHDOG=1",
            _ => "heartbeat",
        };
        let detail = format!("no {what} for {} > {}", fmt_secs(silent), fmt_secs(max_age));
        self.apply(
            i,
            now,
            quiet,
            Judged {
                verdict: Verdict::Failing,
                detail,
                age: Some(silent),
                fresh: false,
            },
            out,
        );
    }

    /// A probe's result arrived.
    pub fn on_result(
        &mut self,
        i: usize,
        generation: u64,
        observation: Observation,
        now: Now,
        quiet: &Quiet,
        out: &mut Vec<CheckOutput>,
    ) {
        if generation != self.generation || !self.is_active() || i >= self.checks.len() {
            return;
        }
        self.checks[i].in_flight = false;
        let (verdict, detail, age, sign) = match observation {
            Observation::Healthy(d) => (Verdict::Ok, d, None, None),
            Observation::Unhealthy(d) => (Verdict::Failing, d, None, None),
            Observation::Unknown(e) => (Verdict::Unknown, e, None, None),
            Observation::Progress { at_wall_ms } => {
                let max_age = self.checks[i].max_age();
                // A sign from the future (clock skew) counts as now.
                let sign = at_wall_ms.map(|w| now.mono_of(w.min(now.wall_ms)).unwrap_or(now.mono));
                let reference = self.reference(sign, now, quiet).unwrap_or(now.mono);
                let effective = now.mono.saturating_duration_since(reference);
                let real =
                    at_wall_ms.map(|w| Duration::from_millis((now.wall_ms - w).max(0) as u64));
                let shown = real.unwrap_or(effective);
                // Exactly max_age without progress is already a stall.
                if effective < max_age {
                    (
                        Verdict::Ok,
                        format!("age={}", fmt_secs(shown)),
                        Some(shown),
                        sign,
                    )
                } else {
                    let detail = match real {
                        Some(r) => format!("age={} > {}", fmt_secs(r), fmt_secs(max_age)),
                        None => format!(
                            "nothing yet, {} after the start > {}",
                            fmt_secs(effective),
                            fmt_secs(max_age)
                        ),
                    };
                    (Verdict::Failing, detail, Some(shown), sign)
                }
            }
        };
        let c = &mut self.checks[i];
        if c.spec.kind.is_push()
            && let Some(s) = sign
        {
            c.last_sign = Some(c.last_sign.map_or(s, |l| l.max(s)));
        }
        if sign.is_some() {
            c.status.last_progress = sign;
        }
        // Judged by the probe itself, or progress made since this run began.
        let fresh = match sign {
            Some(s) => self.grace_from.is_some_and(|spawned| s >= spawned),
            None => age.is_none(),
        };
        let judged = Judged {
            verdict,
            detail,
            age,
            fresh,
        };
        self.apply(i, now, quiet, judged, out);
        // Schedule the next look.
        let c = &self.checks[i];
        let next = if c.spec.kind.is_push() && verdict == Verdict::Ok {
            let reference = self.reference(c.last_sign, now, quiet).unwrap_or(now.mono);
            later(reference, c.max_age()).max(later(now.mono, Duration::from_millis(1)))
        } else if c.spec.kind.is_push() && quiet.is_quiet(now.wall_ms) {
            quiet
                .quiet_until(now.wall_ms)
                .and_then(|w| now.mono_of(w))
                .map_or(later(now.mono, c.spec.interval), |end| {
                    later(end, c.max_age())
                })
        } else {
            on_grid(now, c.spec.interval)
        };
        self.checks[i].due = Some(next);
    }

    /// Record a verdict and decide what it means.
    fn apply(
        &mut self,
        i: usize,
        now: Now,
        quiet: &Quiet,
        judged: Judged,
        out: &mut Vec<CheckOutput>,
    ) {
        let Judged {
            verdict,
            mut detail,
            age,
            fresh,
        } = judged;
        let in_grace = self.in_grace(&self.checks[i], now.mono);
        let is_quiet = quiet.is_quiet(now.wall_ms);
        let suspended = self.suspended;
        let upstream_down = self.upstream_down;
        let c = &mut self.checks[i];
        let from = c.status.verdict;
        let mut counts = false;
        match verdict {
            Verdict::Ok => {
                c.status.consecutive_failures = 0;
                c.proven_this_run |= fresh;
            }
            Verdict::Failing if in_grace => detail.push_str(" (within grace)"),
            Verdict::Failing if is_quiet => detail.push_str(" (quiet window)"),
            Verdict::Failing if suspended => detail.push_str(" (agent is stopping)"),
            Verdict::Failing if upstream_down => detail.push_str(" (waiting for its upstream)"),
            Verdict::Failing => {
                c.status.consecutive_failures += 1;
                counts = true;
            }
            Verdict::Unknown | Verdict::Pending => {}
        }
        c.status.verdict = verdict;
        c.status.detail = detail;
        c.status.at = Some(now.mono);
        c.status.age = age;
        // Passing at the first look is the normal start, not news.
        if from != verdict && !(from == Verdict::Pending && verdict == Verdict::Ok) {
            out.push(CheckOutput::Changed { index: i, from });
        }
        if counts && c.status.consecutive_failures >= c.spec.failure_threshold {
            out.push(CheckOutput::Stalled {
                index: i,
                reason: format!("stalled: {} {}", c.spec.label(), c.status.detail),
                triggered: false,
            });
        }
        if verdict == Verdict::Ok && fresh && self.checks.iter().all(|c| c.proven_this_run) {
            out.push(CheckOutput::AllOk);
        }
    }

    /// A datagram from the agent's notify socket. Returns whether the agent just became ready.
    pub fn on_notify(&mut self, msg: &NotifyMessage, now: Now, out: &mut Vec<CheckOutput>) -> bool {
        if let Some(s) = &msg.status {
            self.status_text = Some(s.clone());
        }
        if msg.stopping {
            self.suspended = true;
        }
        let became_ready = msg.ready && !self.is_active() && self.ready_check().is_some();
        for (i, c) in self.checks.iter_mut().enumerate() {
            if c.spec.kind != CheckKind::Notify {
                continue;
            }
            if let Some(usec) = msg.watchdog_usec {
                c.max_age_override = Some(Duration::from_micros(usec));
            }
            if msg.is_sign_of_life() {
                c.last_sign = Some(now.mono);
                c.status.last_progress = Some(now.mono);
            }
            if msg.watchdog_trigger && self.run_start.is_some() && !self.suspended {
                out.push(CheckOutput::Stalled {
                    index: i,
                    reason: format!(
                        "stalled: {} WATCHDOG=trigger sent by the agent",
                        c.spec.label()
                    ),
                    triggered: true,
                });
                return false;
            }
        }
        // A sign of life fixes a failing notify check at once.
        if msg.is_sign_of_life() && self.is_active() {
            for i in 0..self.checks.len() {
                if self.checks[i].spec.kind == CheckKind::Notify
                    && self.checks[i].status.verdict != Verdict::Ok
                {
                    self.apply(i, now, &Quiet::default(), Judged::alive(), out);
                    let c = &mut self.checks[i];
                    c.due = Some(later(now.mono, c.max_age()));
                }
            }
        }
        became_ready
    }

    /// A heartbeat through the API, for `api` checks. Returns whether any check took it.
    pub fn on_api_heartbeat(&mut self, now: Now, out: &mut Vec<CheckOutput>) -> bool {
        let mut took = false;
        for i in 0..self.checks.len() {
            if self.checks[i].spec.kind != CheckKind::Api {
                continue;
            }
            took = true;
            self.checks[i].last_sign = Some(now.mono);
            self.checks[i].status.last_progress = Some(now.mono);
            if self.is_active() && self.checks[i].status.verdict != Verdict::Ok {
                self.apply(i, now, &Quiet::default(), Judged::alive(), out);
                let c = &mut self.checks[i];
                c.due = Some(later(now.mono, c.max_age()));
            }
        }
        took
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_notify_datagrams() {
        let m = NotifyMessage::parse(b"READY=1\nSTATUS=warming up\nWATCHDOG_USEC=2000000\nX=1");
        assert!(m.ready && !m.watchdog);
        assert_eq!(m.status.as_deref(), Some("warming up"));
        assert_eq!(m.watchdog_usec, Some(2_000_000));
        assert!(NotifyMessage::parse(b"WATCHDOG=trigger").watchdog_trigger);
        assert!(NotifyMessage::parse(b"WATCHDOG=1").is_sign_of_life());
        assert_eq!(
            NotifyMessage::parse(b"garbage\xff\x00"),
            NotifyMessage::default()
        );
    }

    #[test]
    fn labels_and_seconds() {
        let mut s = CheckSpec::new("decisions", CheckKind::Sql);
        assert_eq!(s.label(), "sql decisions");
        s.name = "sql".into();
        assert_eq!(s.label(), "sql");
        assert_eq!(fmt_secs(Duration::from_millis(2340)), "2.34s");
        assert_eq!(fmt_secs(Duration::from_millis(1004)), "1.004s");
        assert_eq!(fmt_secs(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_secs(Duration::from_secs(1523)), "1523s");
    }
}
