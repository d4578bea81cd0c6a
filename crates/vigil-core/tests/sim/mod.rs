//! A simulated edge: executes the core's actions the way the daemon would, with fake pids and
//! a clock that only moves when a test says so.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use vigil_core::{
    Action, AgentId, AgentSpec, AuditAction, AuditEntry, Command, CommandError, CommandOutcome,
    Event, ExitStatus, FailureReport, Now, Outside, Requester, RunId, SpawnErrorKind, SpawnFailure,
    Supervisor,
};

pub const SELF_PID: u32 = 4242;

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub struct Sim {
    pub sup: Supervisor,
    pub now: Now,
    pub t0: Instant,
    next_pid: u32,
    /// Live main process per agent.
    pub live: HashMap<AgentId, u32>,
    /// The run of each live main process.
    pub runs: HashMap<AgentId, RunId>,
    /// Main pid of every run that got a process.
    pub pid_of: HashMap<RunId, u32>,
    /// Runs whose main process exited while their tree was being watched.
    pub watched: HashMap<AgentId, RunId>,
    /// Pids the next spawns get, before fresh ones (to test pid reuse and vigil's own pid).
    pub pid_pool: Vec<u32>,
    pub audit: Vec<(Instant, AuditEntry)>,
    pub actions: Vec<(Instant, Action)>,
    /// Agents whose next spawns fail.
    pub failing_spawns: HashSet<AgentId>,
    /// Probes asked for and not answered yet: (agent, check, generation).
    pub probes: Vec<(AgentId, usize, u64)>,
    /// Stall investigations asked for: (agent, pid).
    pub investigations: Vec<(AgentId, u32)>,
    /// Judged failures reported to the edge.
    pub reports: Vec<(AgentId, FailureReport)>,
    /// What a look before a start finds for an agent (nothing when absent).
    pub outside: HashMap<AgentId, Outside>,
    /// Looks asked for, per agent.
    pub looks: HashMap<AgentId, usize>,
    /// Hold looks back instead of answering at once (to interleave them with other inputs).
    pub hold_looks: bool,
    /// Looks asked for and not answered yet.
    pub pending_looks: Vec<(AgentId, RunId)>,
    /// Agents whose last look found a copy, with no forced start since: vigil must not create
    /// a process for them without looking again.
    pub copy_found: HashSet<AgentId>,
    /// What the guard of an agent's files answers (ready, nothing repaired, when absent).
    pub files: HashMap<AgentId, vigil_core::FilesVerdict>,
    /// Guards asked for, and runs whose files were kept.
    pub guards: Vec<(AgentId, RunId)>,
    pub kept: Vec<(AgentId, RunId)>,
    /// What a runbook's `collect` finds, and the commands its `exec` steps ran.
    pub evidence: Vec<String>,
    pub execs: Vec<Vec<String>>,
    /// What the advisor answers a runbook's `diagnose` step.
    pub runbook_advice: Option<vigil_core::Diagnosis>,
    /// Leases given up: (agent, epoch, to).
    pub released: Vec<(AgentId, u64, Option<String>)>,
}

impl Sim {
    pub fn new(specs: Vec<AgentSpec>) -> Self {
        Sim::restarted(specs.into_iter().map(|s| (s, None)).collect(), Vec::new())
    }

    /// A vigil that starts: each agent with what an earlier vigil saved of it, and what runs
    /// outside vigil for some of them (by name) at that moment.
    pub fn restarted(
        agents: Vec<(AgentSpec, Option<vigil_core::AgentMemory>)>,
        outside: Vec<(&str, Outside)>,
    ) -> Self {
        Sim::build(agents, outside, false)
    }

    /// A vigil that starts at wall time `wall_ms` and finds the runs an earlier one left
    /// alive (name, pid): adopted before anything is started, as the daemon does.
    pub fn adopting(
        agents: Vec<(AgentSpec, Option<vigil_core::AgentMemory>)>,
        alive: Vec<(&str, u32)>,
        wall_ms: i64,
    ) -> Self {
        let mut sim = Sim::build_with(
            agents,
            Vec::new(),
            false,
            |sup, now| {
                for (name, pid) in &alive {
                    let id = sup.id(name).expect("agent exists");
                    sup.adopt(now, id, *pid, now.mono, false, None)
                        .expect("adopted");
                }
            },
            wall_ms,
        );
        for (name, pid) in alive {
            let id = sim.id(name);
            let run = sim.sup.agent(id).and_then(|a| a.run()).expect("a run");
            sim.live.insert(id, pid);
            sim.runs.insert(id, run);
            sim.pid_of.insert(run, pid);
        }
        sim
    }

    /// As `restarted`, with the looks vigil starts with held back (`answer_looks`).
    pub fn restarted_holding_looks(
        agents: Vec<(AgentSpec, Option<vigil_core::AgentMemory>)>,
        outside: Vec<(&str, Outside)>,
    ) -> Self {
        Sim::build(agents, outside, true)
    }

    fn build(
        agents: Vec<(AgentSpec, Option<vigil_core::AgentMemory>)>,
        outside: Vec<(&str, Outside)>,
        hold_looks: bool,
    ) -> Self {
        Sim::build_with(agents, outside, hold_looks, |_, _| {}, 1_700_000_000_000)
    }

    fn build_with(
        agents: Vec<(AgentSpec, Option<vigil_core::AgentMemory>)>,
        outside: Vec<(&str, Outside)>,
        hold_looks: bool,
        before_start: impl FnOnce(&mut Supervisor, Now),
        wall_ms: i64,
    ) -> Self {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(SELF_PID);
        for (spec, memory) in agents {
            sup.add(spec, memory);
        }
        before_start(&mut sup, Now::new(t0, wall_ms));
        let outside = outside
            .into_iter()
            .map(|(name, o)| (sup.id(name).expect("agent exists"), o))
            .collect();
        let mut sim = Sim {
            sup,
            now: Now::new(t0, wall_ms),
            t0,
            next_pid: 100,
            live: HashMap::new(),
            runs: HashMap::new(),
            pid_of: HashMap::new(),
            watched: HashMap::new(),
            pid_pool: Vec::new(),
            audit: Vec::new(),
            actions: Vec::new(),
            failing_spawns: HashSet::new(),
            probes: Vec::new(),
            investigations: Vec::new(),
            reports: Vec::new(),
            outside,
            looks: HashMap::new(),
            hold_looks,
            pending_looks: Vec::new(),
            copy_found: HashSet::new(),
            files: HashMap::new(),
            guards: Vec::new(),
            kept: Vec::new(),
            evidence: Vec::new(),
            execs: Vec::new(),
            runbook_advice: None,
            released: Vec::new(),
        };
        sim.sup.start_all(sim.now);
        sim.drain();
        sim
    }

    pub fn id(&self, name: &str) -> AgentId {
        self.sup.id(name).expect("agent exists")
    }

    /// Execute queued actions until none is left, feeding results back like the runtime.
    pub fn drain(&mut self) {
        while let Some(action) = self.sup.poll_action() {
            self.actions.push((self.now.mono, action.clone()));
            match action {
                Action::Audit(entry) => self.audit.push((self.now.mono, entry)),
                Action::Spawn {
                    agent,
                    run,
                    look_first: true,
                    ..
                } => {
                    *self.looks.entry(agent).or_default() += 1;
                    if self.hold_looks {
                        self.pending_looks.push((agent, run));
                    } else {
                        self.answer_look(agent, run);
                    }
                }
                Action::Adopt {
                    agent, run, pid, ..
                } => {
                    assert!(
                        !self.live.contains_key(&agent) && !self.watched.contains_key(&agent),
                        "two live instances of {agent:?}"
                    );
                    assert!(
                        pid > 1 && pid != SELF_PID,
                        "vigil must never adopt itself or init"
                    );
                    self.pid_of.insert(run, pid);
                    self.live.insert(agent, pid);
                    self.runs.insert(agent, run);
                }
                Action::Spawn {
                    agent,
                    run,
                    look_first: false,
                    ..
                } => {
                    assert!(
                        !self.copy_found.contains(&agent),
                        "{agent:?} spawned next to a copy its last look found"
                    );
                    assert!(
                        !self.live.contains_key(&agent) && !self.watched.contains_key(&agent),
                        "two live instances of {agent:?}"
                    );
                    if self.failing_spawns.contains(&agent) {
                        self.sup.handle(
                            self.now,
                            Event::SpawnFailed {
                                agent,
                                run,
                                error: SpawnFailure {
                                    kind: SpawnErrorKind::ProgramNotFound,
                                    message: "No such file or directory (os error 2)".into(),
                                },
                            },
                        );
                    } else {
                        let pid = if self.pid_pool.is_empty() {
                            self.next_pid += 1;
                            self.next_pid
                        } else {
                            self.pid_pool.remove(0)
                        };
                        self.pid_of.insert(run, pid);
                        if pid > 1 && pid != SELF_PID {
                            self.live.insert(agent, pid);
                            self.runs.insert(agent, run);
                        }
                        self.sup
                            .handle(self.now, Event::Spawned { agent, run, pid });
                    }
                }
                Action::Signal { run, .. } | Action::Kill { run, .. } => {
                    let pid = self.pid_of.get(&run).copied();
                    assert_ne!(pid, Some(SELF_PID), "vigil must never signal itself");
                    assert!(
                        pid.is_some_and(|p| p > 1),
                        "a signal for a run without a process"
                    );
                }
                Action::KillEscaped { pids, .. } => {
                    assert!(pids.iter().all(|p| *p > 1 && *p != SELF_PID));
                }
                Action::WatchTree { agent, run } => {
                    self.watched.insert(agent, run);
                }
                Action::Forget { .. } => {}
                Action::ReleaseLease { agent, epoch, to } => self.released.push((agent, epoch, to)),
                Action::RunCheck {
                    agent,
                    check,
                    generation,
                } => self.probes.push((agent, check, generation)),
                Action::Investigate { agent, run } => {
                    self.investigations.push((agent, self.pid_of[&run]))
                }
                Action::Diagnosed { agent, report } => self.reports.push((agent, *report)),
                Action::GuardFiles { agent, run } => {
                    self.guards.push((agent, run));
                    let verdict = self.files.get(&agent).cloned().unwrap_or(
                        vigil_core::FilesVerdict::Ready {
                            repaired: Vec::new(),
                        },
                    );
                    self.sup.handle(
                        self.now,
                        Event::FilesGuarded {
                            agent,
                            run,
                            verdict,
                        },
                    );
                }
                Action::KeepFiles { agent, run } => self.kept.push((agent, run)),
                Action::CollectEvidence { runbook, .. } => {
                    let lines = self.evidence.clone();
                    self.sup
                        .handle(self.now, Event::RunbookEvidence { runbook, lines });
                }
                Action::AdviseRunbook { runbook, .. } => {
                    let advice = self
                        .runbook_advice
                        .clone()
                        .ok_or_else(|| "the advisor is not configured".to_string());
                    self.sup
                        .handle(self.now, Event::RunbookAdvice { runbook, advice });
                }
                Action::RunbookExec { runbook, argv, .. } => {
                    self.execs.push(argv.clone());
                    let result = match argv.first().map(String::as_str) {
                        Some("false") => Err("exited with code 1".to_string()),
                        _ => Ok("exited with code 0".to_string()),
                    };
                    self.sup
                        .handle(self.now, Event::RunbookExec { runbook, result });
                }
            }
        }
    }

    /// The edge answers a look with what `outside` says runs for the agent now.
    fn answer_look(&mut self, agent: AgentId, run: RunId) {
        let outside = self
            .outside
            .get(&agent)
            .cloned()
            .unwrap_or(Outside::Nothing);
        if matches!(outside, Outside::Copy { .. }) {
            self.copy_found.insert(agent);
        } else {
            self.copy_found.remove(&agent);
        }
        self.sup.handle(
            self.now,
            Event::Looked {
                agent,
                run,
                outside,
            },
        );
    }

    /// Answer the looks held back (oldest first).
    pub fn answer_looks(&mut self) {
        for (agent, run) in std::mem::take(&mut self.pending_looks) {
            self.answer_look(agent, run);
            self.drain();
        }
    }

    /// The run whose main process is (or was) `pid`.
    pub fn run_of(&self, pid: u32) -> RunId {
        *self
            .pid_of
            .iter()
            .filter(|(_, p)| **p == pid)
            .map(|(r, _)| r)
            .max()
            .expect("a run with that pid")
    }

    /// Move the clock forward, firing timers at their exact instants.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now.mono + d;
        while let Some(at) = self.sup.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.after(at.saturating_duration_since(self.now.mono));
            self.sup.handle_timeout(self.now);
            self.drain();
        }
        self.now = self
            .now
            .after(target.saturating_duration_since(self.now.mono));
    }

    /// The cluster says something about an agent's lease.
    pub fn lease(&mut self, agent: AgentId, news: vigil_core::LeaseNews) {
        self.sup.handle(self.now, Event::Lease { agent, news });
        self.drain();
    }

    /// The fence epochs of the agent's spawns (the `Spawn` actions that create a process).
    pub fn spawn_fences(&self, agent: AgentId) -> Vec<Option<u64>> {
        self.actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Spawn {
                    agent: a,
                    look_first: false,
                    fence,
                    ..
                } if *a == agent => Some(*fence),
                _ => None,
            })
            .collect()
    }

    /// How many times `signal` was sent to any agent.
    pub fn signals_sent(&self, signal: vigil_core::Signal) -> usize {
        self.actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Signal { signal: s, .. } if *s == signal))
            .count()
    }

    /// The edge answers an investigation (or an exit) with the run's last log lines.
    pub fn log_tail(&mut self, agent: AgentId, pid: u32, log: &[&str]) {
        let lines = log.iter().map(|l| l.to_string()).collect();
        let run = self.run_of(pid);
        self.sup
            .handle(self.now, Event::LogTail { agent, run, lines });
        self.drain();
    }

    /// The advisor answers about the failure of the run of `pid`.
    pub fn advise(
        &mut self,
        agent: AgentId,
        pid: Option<u32>,
        advice: Result<vigil_core::Diagnosis, String>,
    ) {
        let run = pid.map(|p| self.run_of(p));
        self.sup
            .handle(self.now, Event::Advice { agent, run, advice });
        self.drain();
    }

    /// The agent's main process ends on its own (crash) or after a signal.
    pub fn exit(&mut self, agent: AgentId, status: ExitStatus) {
        self.exit_with_tree(agent, status, false);
    }

    /// The agent prints `log` and exits with `status` (the edge sends the tail first).
    pub fn exit_logging(&mut self, agent: AgentId, status: ExitStatus, log: &[&str]) {
        let run = self.runs[&agent];
        let lines = log.iter().map(|l| l.to_string()).collect();
        self.sup
            .handle(self.now, Event::LogTail { agent, run, lines });
        self.exit(agent, status);
    }

    pub fn exit_with_tree(&mut self, agent: AgentId, status: ExitStatus, tree_alive: bool) {
        self.live.remove(&agent).expect("agent has a live process");
        let run = self.runs.remove(&agent).expect("a live run");
        self.sup.handle(
            self.now,
            Event::Exited {
                agent,
                run,
                status,
                tree_alive,
                escaped: Vec::new(),
            },
        );
        self.drain();
    }

    pub fn tree_empty(&mut self, agent: AgentId) {
        let run = self.watched.remove(&agent).expect("tree was watched");
        self.sup.handle(self.now, Event::TreeEmpty { agent, run });
        self.drain();
    }

    pub fn command(
        &mut self,
        agent: AgentId,
        command: Command,
        by: Requester,
    ) -> Result<CommandOutcome, CommandError> {
        if command == Command::ForceStart {
            // A person decided: a copy outside vigil no longer keeps it from starting.
            self.copy_found.remove(&agent);
        }
        let r = self
            .sup
            .command(self.now, agent, command, by)
            .expect("agent exists");
        self.drain();
        r
    }

    pub fn records(&self, agent: &str, action: AuditAction) -> Vec<&AuditEntry> {
        self.audit
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.agent.as_deref() == Some(agent) && e.action == action)
            .collect()
    }

    pub fn count(&self, agent: &str, action: AuditAction) -> usize {
        self.records(agent, action).len()
    }

    pub fn spawns(&self, agent: AgentId) -> Vec<Instant> {
        self.actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Spawn { agent: x, look_first: false, .. } if *x == agent))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Answer the oldest pending probe of `agent`.
    pub fn answer(&mut self, agent: AgentId, observation: vigil_core::Observation) {
        let i = self
            .probes
            .iter()
            .position(|(a, _, _)| *a == agent)
            .expect("a pending probe");
        let (_, check, generation) = self.probes.remove(i);
        self.sup.handle(
            self.now,
            Event::CheckResult {
                agent,
                check,
                generation,
                observation,
            },
        );
        self.drain();
    }

    pub fn notify(&mut self, agent: AgentId, datagram: &str) {
        let message = vigil_core::NotifyMessage::parse(datagram.as_bytes());
        let run = self.runs[&agent];
        self.sup.handle(
            self.now,
            Event::Notify {
                agent,
                run,
                message,
            },
        );
        self.drain();
    }

    /// What the agent declares about itself (`POST /agents/NAME/status`).
    pub fn declare(
        &mut self,
        agent: AgentId,
        declared: vigil_core::Declared,
    ) -> vigil_core::DeclaredAnswer {
        let answer = self
            .sup
            .declare(self.now, agent, None, declared)
            .expect("agent exists");
        self.drain();
        answer
    }

    /// Wall-clock milliseconds `ago` before now.
    pub fn wall_ago(&self, ago: Duration) -> i64 {
        self.now.wall_ms - ago.as_millis() as i64
    }

    pub fn elapsed(&self) -> Duration {
        self.now.mono - self.t0
    }
}
