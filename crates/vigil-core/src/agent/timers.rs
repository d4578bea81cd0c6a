//! An agent's deadlines: one slot per kind, overwritten when armed again, cleared when done.
//! Every change is recorded so the supervisor keeps its timer index in step without scanning
//! agents.

use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKind {
    Restart,
    Kill,
    Stable,
    /// A stall investigation has waited long enough for evidence and advice.
    Investigate,
    Check(u16),
    /// A declared degradation's suspension of stall verdicts ends.
    Degraded,
    /// An exclusive agent's lease was not renewed in time: what runs must stop now.
    Fence,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    restart: Option<Instant>,
    kill: Option<Instant>,
    stable: Option<Instant>,
    investigate: Option<Instant>,
    degraded: Option<Instant>,
    fence: Option<Instant>,
    /// What the index holds for each check (mirrors `CheckSet` dues).
    checks: Vec<Option<Instant>>,
    /// (kind, old, new) since the supervisor last synced.
    pub changes: Vec<(TimerKind, Option<Instant>, Option<Instant>)>,
}

impl Timers {
    pub fn get(&self, kind: TimerKind) -> Option<Instant> {
        match kind {
            TimerKind::Restart => self.restart,
            TimerKind::Kill => self.kill,
            TimerKind::Stable => self.stable,
            TimerKind::Investigate => self.investigate,
            TimerKind::Degraded => self.degraded,
            TimerKind::Fence => self.fence,
            TimerKind::Check(i) => self.checks.get(i as usize).copied().flatten(),
        }
    }

    pub fn set(&mut self, kind: TimerKind, at: Option<Instant>) {
        let slot = match kind {
            TimerKind::Restart => &mut self.restart,
            TimerKind::Kill => &mut self.kill,
            TimerKind::Stable => &mut self.stable,
            TimerKind::Investigate => &mut self.investigate,
            TimerKind::Degraded => &mut self.degraded,
            TimerKind::Fence => &mut self.fence,
            TimerKind::Check(i) => {
                let i = i as usize;
                if self.checks.len() <= i {
                    self.checks.resize(i + 1, None);
                }
                &mut self.checks[i]
            }
        };
        if *slot != at {
            let old = std::mem::replace(slot, at);
            self.changes.push((kind, old, at));
        }
    }

    /// Every armed timer, for removing an agent.
    pub fn armed(&self) -> Vec<(TimerKind, Instant)> {
        let fixed = [
            (TimerKind::Restart, self.restart),
            (TimerKind::Kill, self.kill),
            (TimerKind::Stable, self.stable),
            (TimerKind::Investigate, self.investigate),
            (TimerKind::Degraded, self.degraded),
            (TimerKind::Fence, self.fence),
        ];
        let checks = self
            .checks
            .iter()
            .enumerate()
            .map(|(i, at)| (TimerKind::Check(i as u16), *at));
        fixed
            .into_iter()
            .chain(checks)
            .filter_map(|(k, at)| at.map(|at| (k, at)))
            .collect()
    }

    pub fn clear(&mut self) {
        for (kind, _) in self.armed() {
            self.set(kind, None);
        }
    }
}
