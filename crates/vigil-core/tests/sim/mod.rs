//! A simulated edge: executes the core's actions the way the daemon would, with fake pids and
//! a clock that only moves when a test says so.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use vigil_core::{
    Action, AgentId, AgentSpec, AuditAction, AuditEntry, Command, CommandError, CommandOutcome,
    Event, ExitStatus, FailureReport, Now, Requester, Supervisor,
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
    /// Main processes that exited while their tree was being watched.
    pub watched: HashMap<AgentId, u32>,
    pub audit: Vec<(Instant, AuditEntry)>,
    pub actions: Vec<(Instant, Action)>,
    /// Agents whose next spawns fail.
    pub failing_spawns: HashSet<AgentId>,
    /// Probes asked for and not answered yet: (agent, check, run).
    pub probes: Vec<(AgentId, usize, u64)>,
    /// Stall investigations asked for: (agent, pid).
    pub investigations: Vec<(AgentId, u32)>,
    /// Judged failures reported to the edge.
    pub reports: Vec<(AgentId, FailureReport)>,
}

impl Sim {
    pub fn new(specs: Vec<AgentSpec>) -> Self {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(SELF_PID);
        for spec in specs {
            sup.add(spec, None);
        }
        let mut sim = Sim {
            sup,
            now: Now::new(t0, 1_700_000_000_000),
            t0,
            next_pid: 100,
            live: HashMap::new(),
            watched: HashMap::new(),
            audit: Vec::new(),
            actions: Vec::new(),
            failing_spawns: HashSet::new(),
            probes: Vec::new(),
            investigations: Vec::new(),
            reports: Vec::new(),
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
                Action::Spawn { agent } => {
                    assert!(
                        !self.live.contains_key(&agent) && !self.watched.contains_key(&agent),
                        "two live instances of {agent:?}"
                    );
                    if self.failing_spawns.contains(&agent) {
                        self.sup.handle(
                            self.now,
                            Event::SpawnFailed {
                                agent,
                                error: "No such file or directory (os error 2)".into(),
                            },
                        );
                    } else {
                        self.next_pid += 1;
                        self.live.insert(agent, self.next_pid);
                        self.sup.handle(
                            self.now,
                            Event::Spawned {
                                agent,
                                pid: self.next_pid,
                            },
                        );
                    }
                }
                Action::Signal { pid, .. } | Action::Kill { pid, .. } => {
                    assert_ne!(pid, SELF_PID, "vigil must never signal itself");
                    assert!(pid > 1);
                }
                Action::WatchTree { agent, pid } => {
                    self.watched.insert(agent, pid);
                }
                Action::Forget { .. } => {}
                Action::RunCheck { agent, check, run } => self.probes.push((agent, check, run)),
                Action::Investigate { agent, pid } => self.investigations.push((agent, pid)),
                Action::Diagnosed { agent, report } => self.reports.push((agent, *report)),
            }
        }
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
        self.sup
            .handle(self.now, Event::LogTail { agent, pid, lines });
        self.drain();
    }

    /// The advisor answers about the failure of the run of `pid`.
    pub fn advise(
        &mut self,
        agent: AgentId,
        pid: Option<u32>,
        advice: Result<vigil_core::Diagnosis, String>,
    ) {
        self.sup
            .handle(self.now, Event::Advice { agent, pid, advice });
        self.drain();
    }

    /// The agent's main process ends on its own (crash) or after a signal.
    pub fn exit(&mut self, agent: AgentId, status: ExitStatus) {
        self.exit_with_tree(agent, status, false);
    }

    /// The agent prints `log` and exits with `status` (the edge sends the tail first).
    pub fn exit_logging(&mut self, agent: AgentId, status: ExitStatus, log: &[&str]) {
        let pid = *self.live.get(&agent).expect("agent has a live process");
        let lines = log.iter().map(|l| l.to_string()).collect();
        self.sup
            .handle(self.now, Event::LogTail { agent, pid, lines });
        self.exit(agent, status);
    }

    pub fn exit_with_tree(&mut self, agent: AgentId, status: ExitStatus, tree_alive: bool) {
        let pid = self.live.remove(&agent).expect("agent has a live process");
        self.sup.handle(
            self.now,
            Event::Exited {
                agent,
                pid,
                status,
                tree_alive,
            },
        );
        self.drain();
    }

    pub fn tree_empty(&mut self, agent: AgentId) {
        let pid = self.watched.remove(&agent).expect("tree was watched");
        self.sup.handle(self.now, Event::TreeEmpty { agent, pid });
        self.drain();
    }

    pub fn command(
        &mut self,
        agent: AgentId,
        command: Command,
        by: Requester,
    ) -> Result<CommandOutcome, CommandError> {
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
            .filter(|(_, a)| matches!(a, Action::Spawn { agent: x } if *x == agent))
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
        let (_, check, run) = self.probes.remove(i);
        self.sup.handle(
            self.now,
            Event::CheckResult {
                agent,
                check,
                run,
                observation,
            },
        );
        self.drain();
    }

    pub fn notify(&mut self, agent: AgentId, datagram: &str) {
        let message = vigil_core::NotifyMessage::parse(datagram.as_bytes());
        self.sup.handle(self.now, Event::Notify { agent, message });
        self.drain();
    }

    /// Wall-clock milliseconds `ago` before now.
    pub fn wall_ago(&self, ago: Duration) -> i64 {
        self.now.wall_ms - ago.as_millis() as i64
    }

    pub fn elapsed(&self) -> Duration {
        self.now.mono - self.t0
    }
}
