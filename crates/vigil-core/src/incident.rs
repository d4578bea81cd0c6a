//! Fleet incidents: several agents failing for one cause within a short time are one problem,
//! handled once. When `min_agents` agents fail with the same cause within `window` — the
//! same diagnosis signature (`database_unreachable`, `rate_limited`), or behind the same
//! unreachable target of their own checks (a database, a Redis) — an incident opens: their
//! restarts are held (no budget spent on a cause outside the agents), one agent at a time is
//! started as a canary to probe the cause (every `probe_every`, doubling up to
//! `PROBE_MAX`), and once a canary stays up for `probe_for` the cause has cleared: the
//! incident is resolved and the held agents are started `spread` apart, never in a burst.
//!
//! The book lives in the outbox, where every agent's failure can consult it; the supervisor
//! runs its timers.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::event::AgentId;

/// Probes back off up to this.
const PROBE_MAX: Duration = Duration::from_secs(300);
/// Resolved incidents kept for views.
const KEEP_RESOLVED: usize = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct IncidentPolicy {
    pub enabled: bool,
    /// Agents failing for one cause that make an incident (a template with fewer than twice
    /// this many instances: half of them, at least 2).
    pub min_agents: u32,
    pub window: Duration,
    pub probe_every: Duration,
    pub probe_for: Duration,
    pub spread: Duration,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            min_agents: 3,
            window: Duration::from_secs(60),
            probe_every: Duration::from_secs(10),
            probe_for: Duration::from_secs(10),
            spread: Duration::from_secs(2),
        }
    }
}

/// What several agents can fail for together.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cause {
    /// `rule:database_unreachable`, `target:postgres://db:5432/bots`.
    pub key: String,
    /// For people: `database_unreachable`, `postgres://db:5432/bots unreachable`.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: u64,
    pub cause: Cause,
    pub opened: Instant,
    pub resolved: Option<Instant>,
    /// Every agent that failed for the cause, in order.
    pub members: Vec<(AgentId, String)>,
    /// Members whose restart is held now.
    pub held: Vec<AgentId>,
    /// The member started to probe the cause, and when it must have lasted until.
    pub canary: Option<(AgentId, Instant)>,
    /// When the current probe began.
    pub probe_since: Option<Instant>,
    pub probes: u32,
    pub(crate) next_probe: Instant,
    /// After resolution: held members still to start, and when the next one goes.
    releases: Vec<AgentId>,
    next_release: Instant,
}

impl Incident {
    /// Open from `now`, first probed `probe_every` later.
    fn open(id: u64, cause: Cause, now: Instant, probe_every: std::time::Duration) -> Incident {
        Incident {
            id,
            cause,
            opened: now,
            resolved: None,
            members: Vec::new(),
            held: Vec::new(),
            canary: None,
            probe_since: None,
            probes: 0,
            next_probe: crate::time::later(now, probe_every),
            releases: Vec::new(),
            next_release: now,
        }
    }

    /// Held members still to be started after the resolution.
    pub fn releases_pending(&self) -> usize {
        self.releases.len()
    }
}

/// What the book wants done at a deadline.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Step {
    /// Start `agent` as the canary of `incident`.
    Probe { incident: u64, agent: AgentId },
    /// The canary should have lasted: is it still up?
    CanaryDue { incident: u64, agent: AgentId },
    /// Start a held member after the cause cleared.
    Release { incident: u64, agent: AgentId },
    /// Nothing is held any more (people started the agents): nothing to probe.
    Empty { incident: u64 },
}

/// What a failure's cause means for the failing agent.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OnFailure {
    /// Not part of an incident: the usual rules.
    Proceed,
    /// Held by `incident` (opened by this failure when `opened`).
    Hold { incident: u64, opened: bool },
}

#[derive(Debug, Default)]
pub(crate) struct Incidents {
    pub policy: IncidentPolicy,
    /// Recent failures by cause: (when, agent, name).
    recent: BTreeMap<Cause, Vec<(Instant, AgentId, String)>>,
    /// Open ones, and resolved ones still releasing their held agents: only these are
    /// looked at for deadlines.
    pub list: Vec<Incident>,
    /// The newest resolved ones (newest first), kept for views only.
    pub done: VecDeque<Incident>,
    last_id: u64,
    /// Instances per template, for the threshold.
    pub template_sizes: BTreeMap<String, u32>,
    /// Incidents opened since the supervisor last looked (to hold their other members).
    pub opened: Vec<u64>,
}

impl Incidents {
    fn threshold(&self, template: Option<&str>) -> usize {
        let min = self.policy.min_agents.max(2) as usize;
        match template.and_then(|t| self.template_sizes.get(t)) {
            Some(&n) => min.min((n as usize).div_ceil(2)).max(2),
            None => min,
        }
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Incident> {
        self.list.iter_mut().find(|i| i.id == id)
    }

    /// `agent` failed for `cause` (`None`: a cause of its own).
    pub fn on_failure(
        &mut self,
        now: Instant,
        agent: AgentId,
        name: &str,
        template: Option<&str>,
        cause: Option<Cause>,
    ) -> OnFailure {
        // A canary that fails, for whatever cause, no longer probes.
        for inc in self.list.iter_mut().filter(|i| i.resolved.is_none()) {
            if inc.canary.is_some_and(|(a, _)| a == agent) {
                inc.canary = None;
                let wait = self
                    .policy
                    .probe_every
                    .saturating_mul(1 << inc.probes.min(8))
                    .min(PROBE_MAX);
                inc.next_probe = crate::time::later(now, wait);
            }
        }
        let Some(cause) = cause.filter(|_| self.policy.enabled) else {
            return OnFailure::Proceed;
        };
        if let Some(inc) = self
            .list
            .iter_mut()
            .find(|i| i.resolved.is_none() && i.cause == cause)
        {
            if !inc.members.iter().any(|(a, _)| *a == agent) {
                inc.members.push((agent, name.to_string()));
            }
            if !inc.held.contains(&agent) {
                inc.held.push(agent);
            }
            inc.releases.retain(|a| *a != agent);
            return OnFailure::Hold {
                incident: inc.id,
                opened: false,
            };
        }
        let window = self.policy.window;
        let threshold = self.threshold(template);
        let recent = self.recent.entry(cause.clone()).or_default();
        recent.retain(|(t, a, _)| now.saturating_duration_since(*t) < window && *a != agent);
        recent.push((now, agent, name.to_string()));
        let distinct: HashSet<AgentId> = recent.iter().map(|(_, a, _)| *a).collect();
        if distinct.len() < threshold {
            return OnFailure::Proceed;
        }
        let members: Vec<(AgentId, String)> = recent.drain(..).map(|(_, a, n)| (a, n)).collect();
        self.recent.remove(&cause);
        self.last_id += 1;
        let id = self.last_id;
        let mut inc = Incident::open(id, cause, now, self.policy.probe_every);
        inc.members = members;
        inc.held = vec![agent];
        self.list.insert(0, inc);
        self.opened.push(id);
        OnFailure::Hold {
            incident: id,
            opened: true,
        }
    }

    /// The earliest deadline of any incident.
    pub fn next_due(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter_map(|i| {
                if i.resolved.is_some() {
                    return (!i.releases.is_empty()).then_some(i.next_release);
                }
                // With nothing held, the deadline is when `Empty` resolves it.
                Some(i.canary.map_or(i.next_probe, |(_, until)| until))
            })
            .min()
    }

    /// Every step due at `now` (each incident's next one).
    pub fn due(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        let spread = self.policy.spread;
        for inc in &mut self.list {
            if inc.resolved.is_some() {
                if !inc.releases.is_empty() && inc.next_release <= now {
                    let agent = inc.releases.remove(0);
                    inc.next_release = crate::time::later(now, spread);
                    steps.push(Step::Release {
                        incident: inc.id,
                        agent,
                    });
                }
                continue;
            }
            match inc.canary {
                Some((agent, until)) if until <= now => steps.push(Step::CanaryDue {
                    incident: inc.id,
                    agent,
                }),
                None if inc.next_probe <= now => match inc.held.first() {
                    Some(&agent) => steps.push(Step::Probe {
                        incident: inc.id,
                        agent,
                    }),
                    None => steps.push(Step::Empty { incident: inc.id }),
                },
                _ => {}
            }
        }
        self.retire();
        steps
    }

    /// Resolved incidents with nothing left to release leave the active list for the kept
    /// ones (at most `KEEP_RESOLVED`).
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.list.len() {
            let inc = &self.list[i];
            if inc.resolved.is_some() && inc.releases.is_empty() {
                let inc = self.list.remove(i);
                self.done.push_front(inc);
                self.done.truncate(KEEP_RESOLVED);
            } else {
                i += 1;
            }
        }
    }

    /// A hold saved before vigil restarted: the incident is open again (from now, with its
    /// saved id and cause), and `agent` is held in it. Probing starts over.
    pub fn restore(
        &mut self,
        now: Instant,
        id: u64,
        cause: Cause,
        agent: AgentId,
        name: &str,
    ) -> Incident {
        self.last_id = self.last_id.max(id);
        let probe_every = self.policy.probe_every;
        let pos = match self
            .list
            .iter()
            .position(|i| i.id == id && i.resolved.is_none())
        {
            Some(p) => p,
            None => {
                self.list
                    .insert(0, Incident::open(id, cause, now, probe_every));
                0
            }
        };
        let inc = &mut self.list[pos];
        inc.members.push((agent, name.to_string()));
        inc.held.push(agent);
        inc.clone()
    }

    /// `agent` was started as `incident`'s canary.
    pub fn probing(&mut self, now: Instant, incident: u64, agent: AgentId) {
        let probe_for = self.policy.probe_for;
        if let Some(inc) = self.get_mut(incident) {
            inc.held.retain(|a| *a != agent);
            inc.canary = Some((agent, crate::time::later(now, probe_for)));
            inc.probe_since = Some(now);
            inc.probes += 1;
        }
    }

    /// The canary is still starting: it gets `probe_for` more.
    pub fn extend_canary(&mut self, now: Instant, incident: u64) {
        let probe_for = self.policy.probe_for;
        if let Some(inc) = self.get_mut(incident)
            && let Some((_, until)) = &mut inc.canary
        {
            *until = crate::time::later(now, probe_for);
        }
    }

    /// `agent` cannot be probed or released (gone, or no longer held): it leaves the hold.
    pub fn let_go(&mut self, now: Instant, incident: u64, agent: AgentId) {
        let every = self.policy.probe_every;
        if let Some(inc) = self.get_mut(incident) {
            inc.held.retain(|a| *a != agent);
            inc.releases.retain(|a| *a != agent);
            if inc.canary.is_some_and(|(a, _)| a == agent) {
                inc.canary = None;
                inc.next_probe = crate::time::later(now, every);
            }
        }
    }

    /// The canary lasted: the cause cleared. The held members go, `spread` apart.
    pub fn resolve(&mut self, now: Instant, incident: u64) -> Option<Incident> {
        let inc = self.get_mut(incident)?;
        inc.resolved = Some(now);
        inc.canary = None;
        inc.releases = std::mem::take(&mut inc.held);
        inc.next_release = now;
        let done = inc.clone();
        self.retire();
        Some(done)
    }

    /// Forget an agent that left the configuration.
    pub fn forget(&mut self, agent: AgentId) {
        for inc in &mut self.list {
            inc.held.retain(|a| *a != agent);
            inc.releases.retain(|a| *a != agent);
            if let Some((a, until)) = inc.canary
                && a == agent
            {
                inc.canary = None;
                // The next probe when this one would have been judged: a deadline in the
                // future, never one long past (which would look like a stalled loop).
                inc.next_probe = until;
            }
        }
        for failures in self.recent.values_mut() {
            failures.retain(|(_, a, _)| *a != agent);
        }
    }
}
