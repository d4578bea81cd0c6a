//! What a round's rows mean for each candidate: held here, held elsewhere, or free — and then
//! whether this node may take it now. Pure: the rows in, the verdicts out.

use std::time::Duration;

use super::leases::{Candidate, LeaseRow};

/// The verdict on one candidate's lease after a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Renewed here at this epoch; `move_to`: a person moves it to that node.
    Held { epoch: u64, move_to: Option<String> },
    /// Another node holds it (unexpired).
    Elsewhere { holder: String, epoch: u64 },
    /// Free, and this node may take it now.
    Take,
    /// Free (or expired), but not for this node, or not yet: why.
    Refused(String),
}

/// What one round decided: a verdict per candidate (by index) and when to look again.
pub struct Decisions {
    pub verdicts: Vec<Verdict>,
    /// The next round: at the latest one renewal period on, sooner when a lease held
    /// elsewhere expires before that (a standby takes it then, not a period later).
    pub next: Duration,
}

pub fn decide(
    node: &str,
    renew_every: Duration,
    cands: &[Candidate],
    rows: &[LeaseRow],
) -> Decisions {
    let mut next = renew_every;
    let mut soon = |d: Duration| next = next.min(d.max(Duration::from_millis(20)));
    let verdicts = cands
        .iter()
        .map(|c| {
            let Some(row) = rows.iter().find(|r| r.agent == c.name) else {
                return Verdict::Refused("the cluster did not answer for it".into());
            };
            if let Some(epoch) = row.renewed_epoch {
                return Verdict::Held {
                    epoch: epoch as u64,
                    move_to: row.move_to.clone().filter(|to| to != node),
                };
            }
            let remaining = row.remaining_ms.unwrap_or(-1);
            match &row.holder {
                Some(holder) if remaining > 0 && holder != node => {
                    // Looked at again just after it would expire.
                    soon(Duration::from_millis(remaining as u64 + 25));
                    return Verdict::Elsewhere {
                        holder: holder.clone(),
                        epoch: row.epoch.unwrap_or_default() as u64,
                    };
                }
                // Held here by the row, yet not renewed: another node took it between the
                // statement's snapshot and its update. The next round says who.
                Some(holder) if remaining > 0 => {
                    soon(Duration::from_millis(100));
                    return Verdict::Refused("its lease changed hands during the round".into());
                }
                _ => {}
            }
            if !c.admitted {
                return Verdict::Refused(format!(
                    "this node is not among its nodes ({})",
                    c.better.join(", ")
                ));
            }
            let moved_here = row.move_to.as_deref() == Some(node);
            if let Some(to) = row.move_to.as_deref().filter(|to| *to != node) {
                return Verdict::Refused(format!("a person moves it to node {to}"));
            }
            if let Some(def) = &row.definition
                && row.epoch.unwrap_or_default() > 0
                && *def != c.definition
                && !moved_here
            {
                return Verdict::Refused(format!(
                    "its definition here (command, environment, stop) differs from the one it last ran with (hash {def}, here {}): candidate nodes must define it alike",
                    c.definition
                ));
            }
            if row.alive_better > 0 && !moved_here {
                // A node it prefers is up: it gets one renewal period per such node to take the
                // lease first (it may not be a candidate at all, or be refused).
                let free_for = Duration::from_millis((-remaining).max(0) as u64);
                let wait = renew_every * row.alive_better as u32;
                if free_for < wait {
                    soon(wait - free_for);
                    return Verdict::Refused(format!(
                        "{} node(s) it prefers to this one are up and may take it first",
                        row.alive_better
                    ));
                }
            }
            Verdict::Take
        })
        .collect();
    Decisions { verdicts, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, better: &[&str]) -> Candidate {
        Candidate {
            agent: vigil_core::AgentId(0),
            name: name.into(),
            definition: "d1".into(),
            better: better.iter().map(|s| s.to_string()).collect(),
            admitted: true,
            fence_lead: Duration::from_secs(3),
        }
    }

    fn row(agent: &str) -> LeaseRow {
        LeaseRow {
            agent: agent.into(),
            holder: None,
            epoch: None,
            definition: None,
            move_to: None,
            remaining_ms: None,
            renewed_epoch: None,
            alive_better: 0,
        }
    }

    const PERIOD: Duration = Duration::from_millis(3_333);

    #[test]
    fn a_lease_never_seen_is_taken_and_one_held_elsewhere_is_looked_at_when_it_expires() {
        let c = [cand("a", &[]), cand("b", &[])];
        let held = LeaseRow {
            holder: Some("fra-2".into()),
            epoch: Some(4),
            definition: Some("d1".into()),
            remaining_ms: Some(1_200),
            ..row("b")
        };
        let d = decide("fra-1", PERIOD, &c, &[row("a"), held]);
        assert_eq!(d.verdicts[0], Verdict::Take);
        assert_eq!(
            d.verdicts[1],
            Verdict::Elsewhere {
                holder: "fra-2".into(),
                epoch: 4
            }
        );
        assert_eq!(d.next, Duration::from_millis(1_225));
    }

    #[test]
    fn a_preferred_node_that_is_up_gets_a_period_to_take_a_free_lease_first() {
        let c = [cand("a", &["fra-1"])];
        let free = LeaseRow {
            epoch: Some(3),
            definition: Some("d1".into()),
            remaining_ms: Some(-1_000),
            alive_better: 1,
            ..row("a")
        };
        let d = decide("fra-2", PERIOD, &c, &[free]);
        assert!(matches!(d.verdicts[0], Verdict::Refused(_)));
        assert_eq!(d.next, PERIOD - Duration::from_secs(1));
        let later = LeaseRow {
            epoch: Some(3),
            definition: Some("d1".into()),
            remaining_ms: Some(-4_000),
            alive_better: 1,
            ..row("a")
        };
        assert_eq!(
            decide("fra-2", PERIOD, &c, &[later]).verdicts[0],
            Verdict::Take
        );
    }

    #[test]
    fn another_definition_or_a_move_elsewhere_is_refused_but_a_move_here_is_taken() {
        let c = [cand("a", &[])];
        let other_def = LeaseRow {
            epoch: Some(2),
            definition: Some("d0".into()),
            remaining_ms: Some(-10),
            ..row("a")
        };
        let Verdict::Refused(why) = &decide("n1", PERIOD, &c, &[other_def]).verdicts[0] else {
            panic!()
        };
        assert!(why.contains("d0"), "{why}");
        let moved = LeaseRow {
            epoch: Some(2),
            definition: Some("d0".into()),
            move_to: Some("n2".into()),
            remaining_ms: Some(-10),
            ..row("a")
        };
        assert!(matches!(
            decide("n1", PERIOD, &c, &[moved]).verdicts[0],
            Verdict::Refused(_)
        ));
        let here = LeaseRow {
            epoch: Some(2),
            definition: Some("d0".into()),
            move_to: Some("n1".into()),
            remaining_ms: Some(-10),
            alive_better: 2,
            ..row("a")
        };
        assert_eq!(decide("n1", PERIOD, &c, &[here]).verdicts[0], Verdict::Take);
    }

    #[test]
    fn a_renewed_lease_is_held_and_says_where_a_person_moves_it() {
        let c = [cand("a", &[])];
        let renewed = LeaseRow {
            holder: Some("n1".into()),
            epoch: Some(5),
            renewed_epoch: Some(5),
            move_to: Some("n2".into()),
            remaining_ms: Some(100),
            ..row("a")
        };
        assert_eq!(
            decide("n1", PERIOD, &c, &[renewed]).verdicts[0],
            Verdict::Held {
                epoch: 5,
                move_to: Some("n2".into())
            }
        );
    }
}
