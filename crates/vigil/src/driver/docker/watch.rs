//! Which container is which agent's run, and what the engine's events say about each. Kept
//! apart from the engine so the order of events and registrations is tested without one.
//!
//! A run of a container is its id and the instant it started (`StartedAt`): a `die` belongs
//! to a run when it is of that id and not older than that start. A `die` can arrive before
//! the run is registered (a container that dies at once, while its start's inspect is still
//! on its way): it is kept, unclaimed, and claimed by the registration.

use std::collections::HashMap;
use std::path::PathBuf;

use vigil_core::{AgentId, RunId};

use super::engine::{Health, Seen};
use crate::redact::Secrets;

/// An agent's run, watched.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Watched {
    agent: AgentId,
    run: RunId,
    started_ns: i64,
    oom: bool,
    /// Its `json-file` log, when the engine keeps one.
    json_log: Option<PathBuf>,
    secrets: Secrets,
}

/// A container's end, as its `die` event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Death {
    pub at_ns: i64,
    pub code: Option<i32>,
    /// An `oom` event came first.
    pub oom: bool,
}

/// A watched run that ended: the driver gathers its evidence and tells the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub agent: AgentId,
    pub run: RunId,
    pub id: String,
    pub started_ns: i64,
    pub death: Death,
    pub json_log: Option<PathBuf>,
    pub secrets: Secrets,
}

/// An event of the engine, reduced to what supervision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerEvent {
    Die { code: Option<i32> },
    Oom,
    Health(Health),
}

/// How long an unclaimed death is kept: a start's inspect takes milliseconds.
const UNCLAIMED_NS: i64 = 60_000_000_000;

#[derive(Default)]
pub struct Watches {
    by_id: HashMap<String, Watched>,
    by_run: HashMap<(AgentId, RunId), String>,
    unclaimed: HashMap<String, Death>,
    /// `oom` events of containers nobody watched yet, by when.
    unclaimed_oom: HashMap<String, i64>,
    health: HashMap<String, Health>,
    /// Runs being taken over (the look saw the container running; the inspect that confirms
    /// it is on its way), by the container's name: a stop meanwhile reaches it by that name.
    pending: HashMap<(AgentId, RunId), String>,
}

impl Watches {
    /// Watch the run of the container `seen` shows (its id, and when that run started).
    /// `Some` when it already ended (its `die` came first).
    pub fn register(&mut self, agent: AgentId, run: RunId, seen: &Seen) -> Option<Ended> {
        let (id, started_ns) = (seen.id.as_str(), seen.started_ns);
        let (json_log, secrets) = (seen.json_log.clone(), seen.secrets.clone());
        self.pending.remove(&(agent, run));
        let oom = self
            .unclaimed_oom
            .remove(id)
            .is_some_and(|at| at >= started_ns);
        if let Some(death) = self.unclaimed.remove(id)
            && death.at_ns >= started_ns
        {
            return Some(Ended {
                agent,
                run,
                id: id.to_string(),
                started_ns,
                death: Death {
                    oom: death.oom || oom,
                    ..death
                },
                json_log,
                secrets,
            });
        }
        // The caller makes sure no other run has this container (`is_watched`); a run of the
        // same agent that is still registered is replaced.
        if let Some(old) = self.by_id.insert(
            id.to_string(),
            Watched {
                agent,
                run,
                started_ns,
                oom,
                json_log,
                secrets,
            },
        ) {
            self.by_run.remove(&(old.agent, old.run));
        }
        self.by_run.insert((agent, run), id.to_string());
        match seen.health.clone() {
            Some(h) => self.health.insert(id.to_string(), h),
            None => self.health.remove(id),
        };
        None
    }

    /// The container of a run still watched, or the name of one being taken over.
    pub fn container_of(&self, agent: AgentId, run: RunId) -> Option<&str> {
        self.by_run
            .get(&(agent, run))
            .or_else(|| self.pending.get(&(agent, run)))
            .map(String::as_str)
    }

    /// A run whose container is being taken over, until it is registered or found gone.
    pub fn pending(&mut self, agent: AgentId, run: RunId, name: &str) {
        self.pending.insert((agent, run), name.to_string());
    }

    pub fn not_pending(&mut self, agent: AgentId, run: RunId) {
        self.pending.remove(&(agent, run));
    }

    /// The container `id` is another run's (two agents cannot be one container).
    pub fn is_watched(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// What a failing HEALTHCHECK printed, for the run that started at `started_ns` only.
    pub fn unhealthy_output(&mut self, id: &str, started_ns: i64, output: String) {
        if self
            .by_id
            .get(id)
            .is_some_and(|w| w.started_ns == started_ns)
            && let Some(Health::Unhealthy(out)) = self.health.get_mut(id)
        {
            *out = Some(output);
        }
    }

    /// The secrets of a watched run's container.
    pub fn secrets_of(&self, agent: AgentId, run: RunId) -> Secrets {
        self.by_run
            .get(&(agent, run))
            .and_then(|id| self.by_id.get(id))
            .map(|w| w.secrets.clone())
            .unwrap_or_default()
    }

    /// The container of a run still watched, and when that run started.
    pub fn run_of(&self, agent: AgentId, run: RunId) -> Option<(String, i64)> {
        let id = self.by_run.get(&(agent, run))?;
        Some((id.clone(), self.by_id.get(id)?.started_ns))
    }

    /// The container's HEALTHCHECK, for a run still watched: `None` when it has none (or has
    /// not said yet).
    pub fn health_of(&self, agent: AgentId, run: RunId) -> Option<Option<&Health>> {
        let id = self.by_run.get(&(agent, run))?;
        Some(self.health.get(id))
    }

    /// When the watched run of `id` started.
    pub fn started_of(&self, id: &str) -> Option<i64> {
        self.by_id.get(id).map(|w| w.started_ns)
    }

    /// Every watched run: checked again after the event stream was lost.
    pub fn watched(&self) -> Vec<(String, i64)> {
        self.by_id
            .iter()
            .map(|(id, w)| (id.clone(), w.started_ns))
            .collect()
    }

    /// An event of the engine at `at_ns`; `Some` when it ends a watched run.
    pub fn on_event(&mut self, id: &str, at_ns: i64, event: ContainerEvent) -> Option<Ended> {
        match event {
            ContainerEvent::Oom => {
                match self.by_id.get_mut(id) {
                    Some(w) if at_ns >= w.started_ns => w.oom = true,
                    _ => {
                        self.unclaimed_oom.insert(id.to_string(), at_ns);
                    }
                }
                None
            }
            ContainerEvent::Health(h) => {
                if self.by_id.get(id).is_some_and(|w| at_ns >= w.started_ns) {
                    self.health.insert(id.to_string(), h);
                }
                None
            }
            ContainerEvent::Die { code } => {
                let death = Death {
                    at_ns,
                    code,
                    oom: false,
                };
                match self.by_id.get(id) {
                    // A death of an earlier run (an event replayed after a reconnect).
                    Some(w) if at_ns < w.started_ns => None,
                    Some(_) => self.end(id, death),
                    None => {
                        self.prune(at_ns);
                        let oom = self.unclaimed_oom.remove(id).is_some();
                        self.unclaimed
                            .insert(id.to_string(), Death { oom, ..death });
                        None
                    }
                }
            }
        }
    }

    /// The watched run of `id` that started at `started_ns` ended (seen by an inspect after
    /// the stream was lost; a newer run registered meanwhile is not this one).
    pub fn end_run(&mut self, id: &str, started_ns: i64, death: Death) -> Option<Ended> {
        if self.by_id.get(id)?.started_ns != started_ns {
            return None;
        }
        self.end(id, death)
    }

    fn end(&mut self, id: &str, death: Death) -> Option<Ended> {
        let w = self.by_id.remove(id)?;
        self.by_run.remove(&(w.agent, w.run));
        self.health.remove(id);
        Some(Ended {
            agent: w.agent,
            run: w.run,
            id: id.to_string(),
            started_ns: w.started_ns,
            death: Death {
                oom: death.oom || w.oom,
                ..death
            },
            json_log: w.json_log,
            secrets: w.secrets,
        })
    }

    /// Stop watching an agent's runs (it is gone from the config).
    pub fn forget_agent(&mut self, agent: AgentId) {
        let ids: Vec<String> = self
            .by_run
            .iter()
            .filter(|((a, _), _)| *a == agent)
            .map(|(_, id)| id.clone())
            .collect();
        for id in ids {
            if let Some(w) = self.by_id.remove(&id) {
                self.by_run.remove(&(w.agent, w.run));
            }
            self.health.remove(&id);
        }
    }

    fn prune(&mut self, now_ns: i64) {
        self.unclaimed
            .retain(|_, d| now_ns - d.at_ns < UNCLAIMED_NS);
        self.unclaimed_oom
            .retain(|_, at| now_ns - *at < UNCLAIMED_NS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: AgentId = AgentId(0);
    const S: i64 = 1_000_000_000_000;

    fn seen(id: &str, health: Option<Health>) -> Seen {
        Seen {
            id: id.to_string(),
            started_ns: S,
            health,
            ..Default::default()
        }
    }

    fn die(code: i32) -> ContainerEvent {
        ContainerEvent::Die { code: Some(code) }
    }

    #[test]
    fn a_die_ends_the_watched_run() {
        let mut w = Watches::default();
        assert_eq!(w.register(A, RunId(1), &seen("c1", None)), None);
        let ended = w.on_event("c1", S + 5, die(3)).expect("ended");
        assert_eq!((ended.run, ended.death.code), (RunId(1), Some(3)));
        assert_eq!(w.container_of(A, RunId(1)), None, "no longer its to signal");
        assert_eq!(w.on_event("c1", S + 6, die(3)), None, "ended once");
    }

    #[test]
    fn a_die_before_the_registration_is_claimed_by_it() {
        let mut w = Watches::default();
        assert_eq!(w.on_event("c1", S + 5, die(1)), None);
        let ended = w
            .register(A, RunId(1), &seen("c1", None))
            .expect("ended at once");
        assert_eq!(ended.death.code, Some(1));
    }

    #[test]
    fn the_previous_run_s_die_does_not_end_the_next() {
        let mut w = Watches::default();
        // Unclaimed, from before this run started.
        w.on_event("c1", S - 5, die(137));
        assert_eq!(w.register(A, RunId(2), &seen("c1", None)), None);
        // Replayed after a reconnect.
        assert_eq!(w.on_event("c1", S - 5, die(137)), None);
        assert_eq!(w.container_of(A, RunId(2)), Some("c1"));
    }

    #[test]
    fn an_oom_marks_the_death_that_follows() {
        let mut w = Watches::default();
        w.register(A, RunId(1), &seen("c1", None));
        w.on_event("c1", S + 1, ContainerEvent::Oom);
        assert!(w.on_event("c1", S + 2, die(137)).unwrap().death.oom);
        // Before the registration, too.
        w.on_event("c2", S + 1, ContainerEvent::Oom);
        w.on_event("c2", S + 2, die(137));
        assert!(
            w.register(A, RunId(2), &seen("c2", None))
                .unwrap()
                .death
                .oom
        );
    }

    #[test]
    fn health_follows_the_events_of_a_watched_run() {
        let mut w = Watches::default();
        w.register(A, RunId(1), &seen("c1", Some(Health::Starting)));
        assert_eq!(w.health_of(A, RunId(1)), Some(Some(&Health::Starting)));
        w.on_event("c1", S + 1, ContainerEvent::Health(Health::Unhealthy(None)));
        assert_eq!(
            w.health_of(A, RunId(1)),
            Some(Some(&Health::Unhealthy(None)))
        );
        assert_eq!(w.health_of(A, RunId(9)), None, "not a watched run");
    }
}
