//! The fleet: routes inputs to agents, owns the timer index and the action queue.
//!
//! Shaped like a sans-IO protocol state machine (quinn-proto's `Connection`):
//!
//! - getters take `&self` (`agent`, `agents`, `id`, `is_idle`, …);
//! - inputs: [`Supervisor::handle`] (facts), [`Supervisor::handle_timeout`] (time),
//!   [`Supervisor::command`] and [`Supervisor::reconcile`] (people and reloads);
//! - outputs: after every input, drain [`Supervisor::poll_action`] until it returns `None` and
//!   carry the actions out in order (an `Audit` is written before any later action runs); then
//!   read [`Supervisor::poll_timeout`] and call `handle_timeout` no later than that. What
//!   changed for readers and for persistence is collected by [`Supervisor::take_changes`].
//!
//! `now` never goes backwards from one call to the next.

mod alerts;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::action::Action;
use crate::agent::{Agent, AgentMemory, CommandError, CommandOutcome, Outbox, TimerKind};
use crate::event::{AgentId, Command, Event, Requester, RunId};
use crate::graph::{Level, Ready};
use crate::incident::{Incident, IncidentPolicy, Step};
use crate::spec::AgentSpec;
use crate::time::Now;

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Agents restarted because what runs changed.
    pub restarted: Vec<String>,
    /// Agents whose policy or settings changed without a restart.
    pub updated: Vec<String>,
    pub unchanged: usize,
}

/// What changed since the last [`Supervisor::take_changes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Agents whose visible state may have changed (status, checks, …), forgotten ones too.
    pub touched: Vec<AgentId>,
    /// Agents whose persisted memory or live run changed.
    pub persist: Vec<AgentId>,
    /// Agents forgotten (they left the configuration and have no process any more).
    pub forgotten: Vec<(AgentId, String)>,
}

pub struct Supervisor {
    agents: Vec<Option<Agent>>,
    by_name: HashMap<String, AgentId>,
    timers: BTreeSet<(Instant, AgentId, TimerKind)>,
    out: Outbox,
    shutting_down: bool,
    touched: HashSet<AgentId>,
    persist: HashSet<AgentId>,
    forgotten: Vec<(AgentId, String)>,
    /// The last `now` seen, to catch a clock that goes backwards in debug builds.
    last_now: Option<Instant>,
    /// Which agent feeds which, by id.
    graph: Graph,
    /// Alerts seen and runbooks at work.
    runbooks: crate::runbook::Runbooks,
}

/// The dependency graph by id, with each upstream's last level: an agent whose level changes
/// is looked at again by the agents that depend on it, and only they. An agent without
/// dependents costs one empty-list check per input.
#[derive(Default)]
struct Graph {
    /// By agent: the agents it depends on, and how far along each must be.
    ups: Vec<Vec<(AgentId, Ready)>>,
    /// By agent: the agents that depend on it.
    downs: Vec<Vec<AgentId>>,
    /// By agent: its level as last seen (kept for agents with dependents).
    levels: Vec<Level>,
    /// Agents whose level changed since their dependents last looked.
    changed: Vec<AgentId>,
    /// Agents to look at their upstreams again whatever changed (after a rebuild: every
    /// agent with upstreams, and every agent still waiting — its upstream may be gone).
    recheck: Vec<AgentId>,
    /// Stalls of producers found by their watchers, not yet handed over.
    blames: Vec<crate::agent::Blame>,
    /// An agent was added, forgotten or its dependencies changed: rebuilt before next use.
    stale: bool,
}

impl Supervisor {
    /// `self_pid` is vigil's own pid: the core never emits an action against it.
    pub fn new(self_pid: u32) -> Self {
        Self {
            agents: Vec::new(),
            by_name: HashMap::new(),
            timers: BTreeSet::new(),
            out: Outbox {
                actions: VecDeque::new(),
                blames: Vec::new(),
                self_pid,
                last_run: 0,
                incidents: Default::default(),
            },
            shutting_down: false,
            touched: HashSet::new(),
            persist: HashSet::new(),
            forgotten: Vec::new(),
            last_now: None,
            graph: Graph::default(),
            runbooks: Default::default(),
        }
    }

    /// Room for `additional` more agents, allocated once: growing by doubling would leave up to
    /// half the room unused for good (at 10,000 agents, megabytes).
    pub fn reserve(&mut self, additional: usize) {
        self.agents.reserve_exact(additional);
        self.by_name.reserve(additional);
    }

    /// Register an agent (stopped, or quarantined if its memory says so). Names are unique.
    pub fn add(&mut self, spec: AgentSpec, memory: Option<AgentMemory>) -> AgentId {
        if let Some(id) = self.by_name.get(&spec.name) {
            return *id;
        }
        let id = AgentId(self.agents.len() as u32);
        self.by_name.insert(spec.name.clone(), id);
        if let Some(t) = &spec.template {
            *self
                .out
                .incidents
                .template_sizes
                .entry(t.clone())
                .or_default() += 1;
        }
        if !spec.depends_on.is_empty() || !self.graph.downs.is_empty() {
            self.graph.stale = true;
        }
        self.agents.push(Some(Agent::new(id, spec, memory)));
        self.touched.insert(id);
        id
    }

    /// Take over a live process left by a previous vigil; returns the run it becomes.
    /// `outside`: that vigil had itself taken it over from something else (`adopt`); `fence`:
    /// the lease epoch it was started under (exclusive placement), as saved.
    pub fn adopt(
        &mut self,
        now: Now,
        id: AgentId,
        pid: u32,
        since: Instant,
        outside: bool,
        fence: Option<u64>,
    ) -> Option<RunId> {
        self.tick(now);
        self.with_agent(id, |a, out| a.adopt(pid, since, outside, fence, now, out))
            .flatten()
    }

    /// A live run found at startup whose agent the configuration no longer has: taken over
    /// with `spec` (how it must be stopped), then stopped and forgotten, on the record.
    /// `None` when the name is configured after all or the pid is not one vigil may manage.
    pub fn adopt_stray(
        &mut self,
        now: Now,
        spec: AgentSpec,
        pid: u32,
        since: Instant,
    ) -> Option<(AgentId, RunId)> {
        if self.by_name.contains_key(&spec.name) || !self.out.targetable(pid) {
            return None;
        }
        let id = self.add(spec, None);
        let run = self.adopt(now, id, pid, since, false, None)?;
        self.with_agent(id, |a, out| a.remove_stray(now.mono, out));
        Some((id, run))
    }

    /// Start every agent that should run: autostart, not held by a human, not quarantined.
    pub fn start_all(&mut self, now: Now) {
        self.tick(now);
        // Who waits for whom is known before anything starts: an agent whose upstream is not
        // up yet waits for it instead of starting.
        self.settle(now);
        let ids: Vec<AgentId> = self.agents().map(|a| a.id()).collect();
        for id in &ids {
            // Held by an incident when the last vigil stopped: held again, not started.
            let restored = self
                .with_agent(*id, |a, _| a.take_restored_hold())
                .flatten();
            if let Some((incident, cause)) = restored {
                let name = self
                    .agent(*id)
                    .map(|a| a.name().to_string())
                    .unwrap_or_default();
                let inc = self
                    .out
                    .incidents
                    .restore(now.mono, incident, cause, *id, &name);
                self.with_agent(*id, |a, out| a.hold_restored(now.mono, &inc, out));
            }
        }
        for id in ids {
            self.with_agent(id, |a, out| {
                if a.spec().autostart && !a.is_held() && a.state() == crate::AgentState::Stopped {
                    let _ = a.request_start(now.mono, Requester::Autostart, out);
                } else {
                    a.look_while_off(now.mono, out);
                }
            });
        }
        self.settle(now);
    }

    pub fn handle(&mut self, now: Now, event: Event) {
        self.tick(now);
        let t = now.mono;
        match event {
            Event::Spawned { agent, run, pid } => {
                self.with_agent(agent, |a, out| a.on_spawned(t, run, pid, out));
            }
            Event::Looked {
                agent,
                run,
                outside,
            } => {
                self.with_agent(agent, |a, out| a.on_looked(t, run, outside, out));
            }
            Event::FilesGuarded {
                agent,
                run,
                verdict,
            } => {
                self.with_agent(agent, |a, out| a.on_files_guarded(run, verdict, out));
            }
            Event::SpawnFailed { agent, run, error } => {
                self.with_agent(agent, |a, out| a.on_spawn_failed(t, run, error, out));
            }
            Event::Exited {
                agent,
                run,
                status,
                tree_alive,
                escaped,
            } => {
                self.with_agent(agent, |a, out| {
                    a.on_exited(t, run, status, tree_alive, escaped, out)
                });
            }
            Event::TreeEmpty { agent, run } => {
                self.with_agent(agent, |a, out| a.on_tree_empty(t, run, out));
            }
            Event::LogTail { agent, run, lines } => {
                self.with_agent(agent, |a, out| a.on_log_tail(t, run, lines, out));
            }
            Event::Advice { agent, run, advice } => {
                self.with_agent(agent, |a, out| a.on_advice(t, run, advice, out));
            }
            Event::CheckResult {
                agent,
                check,
                generation,
                observation,
            } => {
                self.with_agent(agent, |a, out| {
                    a.on_check_result(now, check, generation, observation, out)
                });
            }
            Event::Notify {
                agent,
                run,
                message,
            } => {
                self.with_agent(agent, |a, out| a.on_notify(now, run, &message, out));
            }
            Event::ActionFailed {
                agent,
                run,
                action,
                error,
            } => {
                self.with_agent(agent, |a, out| a.on_action_failed(run, action, &error, out));
            }
            Event::Lease { agent, news } => {
                self.with_agent(agent, |a, out| a.on_lease(now.mono, news, out));
            }
            Event::RunbookEvidence { runbook, lines } => {
                self.on_runbook_evidence(now, runbook, lines);
            }
            Event::RunbookExec { runbook, result } => {
                self.on_runbook_exec(now, runbook, result);
            }
            Event::RunbookAdvice { runbook, advice } => {
                self.on_runbook_advice(now, runbook, advice);
            }
        }
        self.settle(now);
    }

    /// The edge noticed its loop ran `late` after a deadline: vigil itself was stopped
    /// (SIGSTOP, a debugger) or starved of CPU. Signs of life sent meanwhile may still wait in
    /// a socket, unread: every silence is measured from `now` at the earliest, so no agent is
    /// stalled for vigil's own absence. Call it before [`Supervisor::handle_timeout`].
    pub fn loop_stalled(&mut self, now: Now, late: Duration) {
        self.tick(now);
        for agent in self.agents.iter_mut().flatten() {
            agent.vigil_was_blind(now.mono);
        }
        self.out
            .actions
            .push_back(Action::Audit(crate::records::vigil_stalled(late)));
    }

    /// Fire every timer due at `now`. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Now) {
        self.tick(now);
        while let Some(&(at, id, kind)) = self.timers.first() {
            if at > now.mono {
                break;
            }
            self.timers.pop_first();
            self.with_agent(id, |a, out| {
                // The agent's own slot is the truth; the index entry may be stale.
                if a.timers.get(kind) == Some(at) {
                    a.on_timer(now, kind, out);
                }
            });
        }
        self.incident_steps(now);
        self.settle(now);
    }

    /// Probe, judge and release what the incidents want now.
    fn incident_steps(&mut self, now: Now) {
        let t = now.mono;
        for step in self.out.incidents.due(t) {
            match step {
                Step::Probe { incident, agent } => {
                    let what = "started as the canary: if it stays up, the cause has cleared";
                    let started = self
                        .with_agent(agent, |a, out| a.release_from(t, incident, what, out))
                        .unwrap_or(false);
                    if started {
                        self.out.incidents.probing(t, incident, agent);
                        self.graph.recheck.push(agent);
                    } else {
                        self.out.incidents.let_go(t, incident, agent);
                    }
                }
                Step::CanaryDue { incident, agent } => {
                    let Some(a) = self.agent(agent) else {
                        self.out.incidents.let_go(t, incident, agent);
                        continue;
                    };
                    if a.is_starting() {
                        self.out.incidents.extend_canary(t, incident);
                        continue;
                    }
                    let inc = self.out.incidents.list.iter().find(|i| i.id == incident);
                    let since = inc.and_then(|i| i.probe_since).unwrap_or(t);
                    // For a service their checks found unreachable, the canary's own check of
                    // it must pass again: staying up while it retries inside proves nothing.
                    let target_ok = match inc.and_then(|i| i.cause.key.strip_prefix("target:")) {
                        Some(target) => a.target_ok_since(target, since),
                        None => true,
                    };
                    if !a.level().running {
                        self.out.incidents.let_go(t, incident, agent);
                        continue;
                    }
                    if !target_ok {
                        // Up, but the service is not proven back: the canary keeps probing
                        // (its check says when), and nobody else is released meanwhile.
                        self.out.incidents.extend_canary(t, incident);
                        continue;
                    }
                    let how = format!(
                        "the canary {} stayed up for {}",
                        a.name(),
                        crate::time::human_duration(self.out.incidents.policy.probe_for)
                    );
                    self.resolve_incident(t, incident, &how);
                }
                Step::Release { incident, agent } => {
                    let what = "the cause cleared: starting it (no restart budget spent)";
                    self.with_agent(agent, |a, out| a.release_from(t, incident, what, out));
                    self.graph.recheck.push(agent);
                }
                Step::Empty { incident } => {
                    self.resolve_incident(t, incident, "no agent is held by it any more");
                }
            }
        }
    }

    /// The cause cleared (`how`): resolved, journaled, its held agents released from now on.
    fn resolve_incident(&mut self, t: Instant, incident: u64, how: &str) {
        let spread = self.out.incidents.policy.spread;
        if let Some(inc) = self.out.incidents.resolve(t, incident) {
            let lasted = t.saturating_duration_since(inc.opened);
            let entry = crate::records::incident_resolved(&inc, lasted, how, spread);
            self.out.actions.push_back(Action::Audit(entry));
        }
    }

    /// A person's request (CLI, API).
    pub fn command(
        &mut self,
        now: Now,
        id: AgentId,
        command: Command,
        by: Requester,
    ) -> Option<Result<CommandOutcome, CommandError>> {
        self.command_with_note(now, id, command, by, None)
    }

    /// A person's request with their reason, which goes into the audit record.
    pub fn command_with_note(
        &mut self,
        now: Now,
        id: AgentId,
        command: Command,
        by: Requester,
        note: Option<&str>,
    ) -> Option<Result<CommandOutcome, CommandError>> {
        self.tick(now);
        if self.shutting_down && command != Command::Stop {
            return Some(Err(CommandError::ShuttingDown));
        }
        self.settle(now);
        let outcome = self.with_agent(id, |a, out| a.command(now.mono, command, by, note, out));
        self.settle(now);
        outcome
    }

    /// Apply a reloaded configuration: start what was added, stop what was removed, restart
    /// what changed in a way that needs it, and leave everything else running.
    pub fn reconcile(&mut self, now: Now, specs: Vec<AgentSpec>) -> ReloadReport {
        self.tick(now);
        let mut report = ReloadReport::default();
        let wanted: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let gone: Vec<AgentId> = self
            .agents()
            .filter(|a| !wanted.contains(a.name()) && !a.is_being_removed())
            .map(|a| a.id())
            .collect();
        for id in gone {
            self.with_agent(id, |a, out| {
                report.removed.push(a.name().to_string());
                a.remove(now.mono, out);
            });
        }
        let mut added = Vec::new();
        for spec in specs {
            let name = spec.name.clone();
            match self.by_name.get(&name).copied() {
                None => {
                    let autostart = spec.autostart;
                    let id = self.add(spec, None);
                    if autostart && !self.shutting_down {
                        added.push(id);
                    }
                    report.added.push(name);
                }
                Some(id) => {
                    let unchanged = self
                        .agent(id)
                        .is_some_and(|a| a.spec() == &spec && !a.is_being_removed());
                    if unchanged {
                        report.unchanged += 1;
                        continue;
                    }
                    let restarted = self
                        .with_agent(id, |a, out| a.update(now.mono, spec, out))
                        .unwrap_or(false);
                    if restarted {
                        report.restarted.push(name);
                    } else {
                        report.updated.push(name);
                    }
                }
            }
        }
        // What the added agents depend on is known before they start: one whose upstream is
        // down waits for it.
        self.graph.stale = true;
        self.settle(now);
        for id in added {
            self.with_agent(id, |a, out| {
                let _ = a.request_start(now.mono, Requester::Reload, out);
            });
        }
        self.settle(now);
        report
    }

    /// Stop everything; `is_idle` turns true once no agent process is left.
    pub fn shutdown(&mut self, now: Now) {
        self.tick(now);
        self.shutting_down = true;
        let ids: Vec<AgentId> = self.agents().map(|a| a.id()).collect();
        for id in ids {
            self.with_agent(id, |a, out| {
                a.request_stop(now.mono, Requester::Shutdown, out);
            });
        }
        self.settle(now);
    }

    /// Don't wait for stop timeouts: every agent still stopping gets SIGKILL now (a second
    /// Ctrl-C).
    pub fn hurry(&mut self, now: Now) {
        self.tick(now);
        let ids: Vec<AgentId> = self
            .agents()
            .filter(|a| a.timers.get(TimerKind::Kill).is_some())
            .map(|a| a.id())
            .collect();
        for id in ids {
            self.with_agent(id, |a, out| a.on_timer(now, TimerKind::Kill, out));
        }
        self.settle(now);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// No agent has a process.
    pub fn is_idle(&self) -> bool {
        self.agents().all(|a| !a.is_live())
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.out.actions.pop_front();
        if action.is_none() {
            self.out.release_room();
        }
        action
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.first().map(|(at, _, _)| *at),
            self.out.incidents.next_due(),
            self.runbooks.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When several agents failing for one cause make an incident (`[incidents]`).
    pub fn set_incident_policy(&mut self, policy: IncidentPolicy) {
        self.out.incidents.policy = policy;
    }

    /// Open incidents first (and resolved ones still releasing), then the newest resolved.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.out
            .incidents
            .list
            .iter()
            .chain(self.out.incidents.done.iter())
    }

    /// A heartbeat through the API. `None`: no such agent; `Some(false)`: it has no `api` check.
    pub fn api_heartbeat(&mut self, now: Now, id: AgentId) -> Option<bool> {
        self.tick(now);
        let took = self.with_agent(id, |a, out| a.on_api_heartbeat(now, out));
        self.settle(now);
        took
    }

    /// An agent's declaration about itself (`POST /agents/NAME/status`, or `DEGRADED=` on
    /// the notify socket with `run`). `None`: no such agent.
    pub fn declare(
        &mut self,
        now: Now,
        id: AgentId,
        run: Option<RunId>,
        declared: crate::agent::Declared,
    ) -> Option<crate::agent::DeclaredAnswer> {
        self.tick(now);
        let answer = self.with_agent(id, |a, out| a.declare(now, run, declared, out));
        self.settle(now);
        answer
    }

    /// What changed since the last call: for the published status and for persistence.
    pub fn take_changes(&mut self) -> Changes {
        let mut touched: Vec<AgentId> = self.touched.drain().collect();
        touched.sort_unstable();
        // Forgotten agents are never in `persist` (dropped when they are forgotten).
        let mut persist: Vec<AgentId> = self.persist.drain().collect();
        persist.sort_unstable();
        Changes {
            touched,
            persist,
            forgotten: std::mem::take(&mut self.forgotten),
        }
    }

    pub fn id(&self, name: &str) -> Option<AgentId> {
        self.by_name.get(name).copied()
    }

    pub fn agent(&self, id: AgentId) -> Option<&Agent> {
        self.agents.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Agents in the order they were added (configuration order).
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.iter().flatten()
    }

    /// Hand every blame to its producer and let the dependents of every agent whose level
    /// changed look at their upstreams again, until nothing changes any more (the graph has
    /// no cycle: each change travels downstream only).
    fn settle(&mut self, now: Now) {
        // Only runs at work are looked at: ended ones are kept apart, for views.
        if !self.runbooks.runs.is_empty() {
            self.pump_runbooks(now);
        }
        if self.graph.stale {
            self.rebuild_graph();
        }
        // An incident just opened: its members waiting to restart are held too.
        for id in std::mem::take(&mut self.out.incidents.opened) {
            let Some(inc) = self.out.incidents.list.iter().find(|i| i.id == id).cloned() else {
                continue;
            };
            for (member, _) in &inc.members {
                let held = self
                    .with_agent(*member, |a, out| {
                        a.hold_waiting_restart(now.mono, &inc, out)
                    })
                    .unwrap_or(false);
                if held && let Some(i) = self.out.incidents.get_mut(id) {
                    i.held.push(*member);
                }
            }
        }
        loop {
            if let Some(blame) = self.graph.blames.pop() {
                match self.by_name.get(&blame.producer).copied() {
                    Some(id) => {
                        self.with_agent(id, |a, out| a.blamed(now, blame, out));
                    }
                    // A producer no longer configured: the stall is the watcher's after all.
                    None => {
                        if let Some(id) = self.by_name.get(&blame.watcher).copied() {
                            self.with_agent(id, |a, out| a.own_stall(now, blame, out));
                        }
                    }
                }
                continue;
            }
            if let Some(id) = self.graph.recheck.pop() {
                let first_down = self.first_down_upstream(id);
                self.with_agent(id, |a, out| a.set_upstream(now.mono, first_down, out));
                continue;
            }
            let Some(id) = self.graph.changed.pop() else {
                break;
            };
            let downs = self
                .graph
                .downs
                .get(id.0 as usize)
                .cloned()
                .unwrap_or_default();
            for down in downs {
                let first_down = self.first_down_upstream(down);
                self.with_agent(down, |a, out| a.set_upstream(now.mono, first_down, out));
            }
        }
    }

    /// The first upstream of `id` that is not as far along as its edge requires: its name and
    /// what it is doing.
    fn first_down_upstream(&self, id: AgentId) -> Option<(String, String)> {
        let ups = self.graph.ups.get(id.0 as usize)?;
        ups.iter().find_map(|&(up, ready)| {
            let level = self.graph.levels.get(up.0 as usize).copied()?;
            if level.satisfies(ready) {
                return None;
            }
            self.agent(up).map(|a| (a.name().to_string(), a.down_why()))
        })
    }

    /// Index the graph anew from the agents' specs (after an agent came or went, or a reload),
    /// and have every agent with upstreams look at them again.
    fn rebuild_graph(&mut self) {
        let n = self.agents.len();
        let g = &mut self.graph;
        g.stale = false;
        g.ups = vec![Vec::new(); n];
        g.downs = vec![Vec::new(); n];
        g.levels = vec![Level::default(); n];
        for agent in self.agents.iter().flatten() {
            let id = agent.id();
            for dep in &agent.spec().depends_on {
                if let Some(&up) = self.by_name.get(&dep.agent)
                    && up != id
                {
                    g.ups[id.0 as usize].push((up, dep.ready));
                    g.downs[up.0 as usize].push(id);
                }
            }
        }
        g.changed.clear();
        for agent in self.agents.iter().flatten() {
            let id = agent.id().0 as usize;
            if !g.downs[id].is_empty() {
                g.levels[id] = agent.level();
            }
            if !g.ups[id].is_empty() || agent.waiting_on().is_some() {
                g.recheck.push(agent.id());
            }
        }
        if g.downs.iter().all(Vec::is_empty) {
            // Nothing depends on anything: nothing to look at later (the rechecks release
            // whatever still waits).
            g.ups.clear();
            g.downs.clear();
            g.levels.clear();
        }
    }

    fn tick(&mut self, now: Now) {
        debug_assert!(
            self.last_now.is_none_or(|t| now.mono >= t),
            "now went backwards"
        );
        self.last_now = Some(now.mono);
    }

    fn with_agent<R>(
        &mut self,
        id: AgentId,
        f: impl FnOnce(&mut Agent, &mut Outbox) -> R,
    ) -> Option<R> {
        let slot = self.agents.get_mut(id.0 as usize)?;
        let agent = slot.as_mut()?;
        let before = agent.persist_key();
        let result = f(agent, &mut self.out);
        agent.sync_check_timers();
        if !self.out.blames.is_empty() {
            self.graph.blames.append(&mut self.out.blames);
        }
        if let Some(downs) = self.graph.downs.get(id.0 as usize)
            && !downs.is_empty()
        {
            let level = agent.level();
            let seen = &mut self.graph.levels[id.0 as usize];
            if *seen != level {
                *seen = level;
                self.graph.changed.push(id);
            }
        }
        for (kind, old, new) in agent.timers.changes.drain(..) {
            if let Some(at) = old {
                self.timers.remove(&(at, id, kind));
            }
            if let Some(at) = new {
                self.timers.insert((at, id, kind));
            }
        }
        self.touched.insert(id);
        if agent.persist_key() != before {
            self.persist.insert(id);
        }
        if agent.removed {
            for (kind, at) in agent.timers.armed() {
                self.timers.remove(&(at, id, kind));
            }
            let name = agent.name().to_string();
            let template = agent.spec().template.clone();
            *slot = None;
            self.by_name.remove(&name);
            self.persist.remove(&id);
            self.forgotten.push((id, name));
            self.out.incidents.forget(id);
            if let Some(n) = template
                .as_ref()
                .and_then(|t| self.out.incidents.template_sizes.get_mut(t))
            {
                *n = n.saturating_sub(1);
            }
            if self
                .graph
                .downs
                .get(id.0 as usize)
                .is_some_and(|d| !d.is_empty())
            {
                self.graph.stale = true;
            }
        }
        Some(result)
    }
}
