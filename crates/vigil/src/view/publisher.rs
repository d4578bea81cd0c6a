//! The supervision loop's side of the picture: it notes what changed and, at most every
//! [`MIN_GAP`], publishes a new [`FleetView`] in which only the changed agents are rebuilt.
//! Nothing changed, nothing published; no API, no work at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use vigil_core::{AgentId, AuditAction, Changes, Now, Supervisor};

use super::{AgentView, FleetView};
use crate::audit::Record;

/// A change is shown within this long; changes in between are shown together.
pub const MIN_GAP: Duration = Duration::from_millis(100);

pub struct Publisher {
    outlet: Option<Outlet>,
}

struct Outlet {
    view: watch::Sender<Arc<FleetView>>,
    audit: broadcast::Sender<Arc<str>>,
    agents: Vec<Arc<AgentView>>,
    ids: Vec<AgentId>,
    known: HashSet<AgentId>,
    index: Arc<HashMap<String, usize>>,
    actions: Arc<BTreeMap<&'static str, u64>>,
    restarts: HashMap<String, BTreeMap<String, u64>>,
    incidents_by_cause: Arc<BTreeMap<String, u64>>,
    dirty: HashSet<AgentId>,
    /// Agents were added or forgotten: the order and the index are rebuilt.
    membership: bool,
    /// Something is waiting to be published.
    pending: bool,
    version: u64,
    last: Option<Instant>,
}

impl Publisher {
    pub fn new(view: watch::Sender<Arc<FleetView>>, audit: broadcast::Sender<Arc<str>>) -> Self {
        Publisher {
            outlet: Some(Outlet {
                view,
                audit,
                agents: Vec::new(),
                ids: Vec::new(),
                known: HashSet::new(),
                index: Arc::default(),
                actions: Arc::default(),
                restarts: HashMap::new(),
                incidents_by_cause: Arc::default(),
                dirty: HashSet::new(),
                membership: true,
                pending: true,
                version: 0,
                last: None,
            }),
        }
    }

    /// Another reader of the pictures (none without an API).
    pub fn subscribe(&self) -> Option<watch::Receiver<Arc<FleetView>>> {
        self.outlet.as_ref().map(|o| o.view.subscribe())
    }

    /// Without an API nobody reads pictures.
    pub fn disabled() -> Self {
        Publisher { outlet: None }
    }

    /// What the core says changed.
    pub fn note(&mut self, changes: &Changes) {
        let Some(o) = &mut self.outlet else { return };
        if changes.touched.is_empty() && changes.forgotten.is_empty() {
            return;
        }
        o.dirty.extend(changes.touched.iter().copied());
        if !changes.forgotten.is_empty() || changes.touched.iter().any(|id| !o.known.contains(id)) {
            o.membership = true;
        }
        for (_, name) in &changes.forgotten {
            o.restarts.remove(name);
        }
        o.pending = true;
    }

    /// Count records just written (for metrics) and pass them to live feeds.
    pub fn records(&mut self, records: &[Record], sup: &Supervisor) {
        let Some(o) = &mut self.outlet else { return };
        if records.is_empty() {
            return;
        }
        let actions = Arc::make_mut(&mut o.actions);
        for r in records {
            if let Some(action) = AuditAction::from_name(&r.action) {
                *actions.entry(action.as_str()).or_default() += 1;
            }
            if r.action == AuditAction::IncidentOpened.as_str()
                && let Some(cause) = r.metadata.get("cause").and_then(|c| c.as_str())
            {
                *Arc::make_mut(&mut o.incidents_by_cause)
                    .entry(cause.to_string())
                    .or_default() += 1;
            }
            if r.action == AuditAction::Restart.as_str()
                && let Some(agent) = &r.agent
            {
                let cause = r
                    .metadata
                    .get("cause")
                    .and_then(|c| c.as_str())
                    .unwrap_or("requested");
                *o.restarts
                    .entry(agent.clone())
                    .or_default()
                    .entry(cause.to_string())
                    .or_default() += 1;
                o.dirty.extend(sup.id(agent));
            }
            if o.audit.receiver_count() > 0
                && let Ok(line) = serde_json::to_string(r)
            {
                let _ = o.audit.send(line.into());
            }
        }
        o.pending = true;
    }

    /// When the next picture should go out, if anything is waiting.
    pub fn due(&self) -> Option<Instant> {
        let o = self.outlet.as_ref()?;
        o.pending
            .then(|| o.last.map_or_else(Instant::now, |t| t + MIN_GAP))
    }

    /// Publish now if something is waiting (after a person's command, so its answer and the
    /// picture agree; or when `due`).
    pub fn publish(&mut self, sup: &Supervisor, now: Now) {
        let Some(o) = &mut self.outlet else { return };
        if !o.pending {
            return;
        }
        let view_of = |id: AgentId, restarts: &HashMap<String, BTreeMap<String, u64>>| {
            sup.agent(id).map(|a| {
                let by_cause = restarts.get(a.name()).cloned().unwrap_or_default();
                Arc::new(AgentView::of(a, now, by_cause))
            })
        };
        if o.membership {
            let old: HashMap<AgentId, Arc<AgentView>> =
                o.ids.drain(..).zip(o.agents.drain(..)).collect();
            for a in sup.agents() {
                let id = a.id();
                let view = match old.get(&id) {
                    Some(v) if !o.dirty.contains(&id) => v.clone(),
                    _ => match view_of(id, &o.restarts) {
                        Some(v) => v,
                        None => continue,
                    },
                };
                o.ids.push(id);
                o.agents.push(view);
            }
            o.known = o.ids.iter().copied().collect();
            o.index = Arc::new(
                o.agents
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (a.name.clone(), i))
                    .collect(),
            );
            o.membership = false;
        } else {
            for id in o.dirty.iter() {
                if let Some(pos) = o.index.get(sup.agent(*id).map_or("", |a| a.name()))
                    && let Some(view) = view_of(*id, &o.restarts)
                {
                    o.agents[*pos] = view;
                }
            }
        }
        o.dirty.clear();
        o.version += 1;
        o.view.send_replace(Arc::new(FleetView {
            agents: o.agents.clone(),
            index: o.index.clone(),
            actions: o.actions.clone(),
            shutting_down: sup.is_shutting_down(),
            incidents: Arc::new(
                sup.incidents()
                    .map(|i| super::IncidentView::of(i, sup, now))
                    .collect(),
            ),
            runbooks: Arc::new(
                sup.runbook_runs()
                    .map(|r| super::RunbookView::of(r, sup, now))
                    .collect(),
            ),
            incidents_by_cause: o.incidents_by_cause.clone(),
            version: o.version,
        }));
        o.pending = false;
        o.last = Some(now.mono);
    }
}
