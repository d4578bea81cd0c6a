//! Exclusive placement in the core, with explicit instants: a run starts only under a lease
//! still valid, carries its fencing epoch, and is stopped — SIGKILL included — before its
//! lease can lapse; another node's lease, a lapse or a move puts the agent on standby.

mod sim;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use sim::{Sim, ms, secs};
use vigil_core::{
    Action, AgentSpec, AgentState, AuditAction, Command, Exclusive, ExitStatus, LeaseNews,
    Requester, Signal,
};

/// A lease of 10 s, a stop timeout of 2 s and a margin of 1 s: a run must begin to stop 3 s
/// before its lease's end.
const TTL: Duration = Duration::from_secs(10);
const STOP: Duration = Duration::from_secs(2);
const MARGIN: Duration = Duration::from_secs(1);

fn trader() -> AgentSpec {
    let mut spec = AgentSpec::new("trader");
    spec.stop_timeout = STOP;
    spec.policy.cooldown = Duration::ZERO;
    spec.policy.max_restarts = 1000;
    spec.exclusive = Some(Exclusive {
        margin: MARGIN,
        confirm_within: secs(3),
    });
    spec
}

fn held(epoch: u64, valid_until: Instant) -> LeaseNews {
    LeaseNews::Held { epoch, valid_until }
}

fn elsewhere(holder: &str, epoch: u64) -> LeaseNews {
    LeaseNews::Elsewhere {
        holder: holder.into(),
        epoch,
    }
}

fn state(sim: &Sim) -> AgentState {
    sim.sup.agent(sim.id("trader")).unwrap().state()
}

#[test]
fn an_exclusive_agent_starts_only_once_its_lease_is_held_and_carries_its_epoch() {
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    assert_eq!(state(&sim), AgentState::Standby);
    assert!(
        sim.spawn_fences(t).is_empty(),
        "nothing runs without a lease"
    );
    assert_eq!(sim.count("trader", AuditAction::Standby), 1);
    // Another node holds it: still nothing.
    sim.lease(t, elsewhere("fra-2", 3));
    assert_eq!(state(&sim), AgentState::Standby);
    assert!(sim.spawn_fences(t).is_empty());
    let now = sim.now.mono;
    sim.lease(t, held(4, now + TTL));
    assert_eq!(state(&sim), AgentState::Running);
    assert_eq!(sim.spawn_fences(t), vec![Some(4)]);
    let acquired = sim.records("trader", AuditAction::LeaseAcquired);
    assert_eq!(acquired.len(), 1);
    assert_eq!(acquired[0].metadata["epoch"], 4);
    // Renewals at the same epoch are not news in the journal.
    for _ in 0..5 {
        sim.advance(secs(3));
        let now = sim.now.mono;
        sim.lease(t, held(4, now + TTL));
    }
    assert_eq!(sim.count("trader", AuditAction::LeaseAcquired), 1);
    assert_eq!(sim.signals_sent(Signal::TERM), 0);
}

#[test]
fn a_lease_not_renewed_stops_the_run_before_it_can_lapse() {
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    let start = sim.now.mono;
    sim.lease(t, held(1, start + TTL));
    assert_eq!(state(&sim), AgentState::Running);
    // No renewal: at valid_until - stop_timeout - margin (7 s) the stop begins, not before.
    sim.advance(ms(6_999));
    assert_eq!(sim.signals_sent(Signal::TERM), 0);
    sim.advance(ms(1));
    assert_eq!(sim.signals_sent(Signal::TERM), 1);
    assert_eq!(sim.count("trader", AuditAction::LeaseLost), 1);
    assert_eq!(sim.count("trader", AuditAction::Fenced), 1);
    // It does not obey: SIGKILL at 9 s, a full margin before the lease's end.
    sim.advance(ms(1_999));
    assert_eq!(sim.count("trader", AuditAction::Kill), 0);
    sim.advance(ms(1));
    assert_eq!(sim.count("trader", AuditAction::Kill), 1);
    assert!(sim.now.mono + MARGIN <= start + TTL);
    sim.exit(t, ExitStatus::signal(Signal::KILL));
    assert_eq!(state(&sim), AgentState::Standby);
    // A later renewal of the same lease (nobody else took it) starts it again, same epoch.
    let now = sim.now.mono;
    sim.lease(t, held(1, now + TTL));
    assert_eq!(state(&sim), AgentState::Running);
    assert_eq!(sim.spawn_fences(t), vec![Some(1), Some(1)]);
}

#[test]
fn another_node_holding_the_lease_fences_the_run_and_a_new_epoch_starts_it_again() {
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    let now = sim.now.mono;
    sim.lease(t, held(1, now + TTL));
    sim.advance(secs(1));
    sim.lease(t, elsewhere("ams-1", 2));
    assert_eq!(sim.signals_sent(Signal::TERM), 1);
    let lost = sim.records("trader", AuditAction::LeaseLost);
    assert!(lost[0].reason.contains("ams-1"), "{}", lost[0].reason);
    sim.exit(t, ExitStatus::signal(Signal::TERM));
    assert_eq!(state(&sim), AgentState::Standby);
    // No restart, no budget spent for a fence.
    assert_eq!(sim.sup.agent(t).unwrap().total_restarts(), 0);
    sim.advance(secs(30));
    assert_eq!(sim.spawn_fences(t).len(), 1);
    let now = sim.now.mono;
    sim.lease(t, held(3, now + TTL));
    assert_eq!(sim.spawn_fences(t), vec![Some(1), Some(3)]);
}

#[test]
fn a_crash_is_restarted_under_the_lease_but_not_once_it_has_lapsed() {
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    let now = sim.now.mono;
    sim.lease(t, held(5, now + TTL));
    sim.exit(t, ExitStatus::code(1));
    sim.advance(ms(10));
    assert_eq!(sim.spawn_fences(t), vec![Some(5), Some(5)]);
    // Waiting out a cooldown as the lease lapses: on standby, not started.
    let mut spec = trader();
    spec.policy.cooldown = secs(30);
    let mut sim = Sim::new(vec![spec]);
    let t = sim.id("trader");
    let now = sim.now.mono;
    sim.lease(t, held(5, now + TTL));
    sim.exit(t, ExitStatus::code(1));
    sim.exit(t, ExitStatus::code(1));
    assert_eq!(state(&sim), AgentState::Backoff);
    sim.advance(secs(60));
    assert_eq!(state(&sim), AgentState::Standby);
    assert_eq!(sim.spawn_fences(t), vec![Some(5), Some(5)]);
}

#[test]
fn a_run_adopted_as_vigil_starts_goes_on_only_if_the_cluster_confirms_its_epoch() {
    // No answer within confirm_within: fenced.
    let mut sim = Sim::adopting(
        vec![(trader(), None)],
        vec![("trader", 500)],
        1_700_000_000_000,
    );
    let t = sim.id("trader");
    assert_eq!(state(&sim), AgentState::Running);
    sim.advance(ms(2_999));
    assert_eq!(sim.signals_sent(Signal::TERM), 0);
    sim.advance(ms(1));
    assert_eq!(sim.signals_sent(Signal::TERM), 1);
    assert_eq!(sim.count("trader", AuditAction::Fenced), 1);

    // Confirmed at another epoch than the run's (unknown here): restarted under the new one.
    let mut sim = Sim::adopting(
        vec![(trader(), None)],
        vec![("trader", 500)],
        1_700_000_000_000,
    );
    let t2 = sim.id("trader");
    let now = sim.now.mono;
    sim.lease(t2, held(9, now + TTL));
    assert_eq!(sim.signals_sent(Signal::TERM), 1);
    let fenced = sim.records("trader", AuditAction::Fenced);
    assert!(fenced[0].reason.contains("epoch 9"), "{}", fenced[0].reason);
    sim.exit(t2, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.spawn_fences(t2), vec![Some(9)]);
    let _ = t;
}

#[test]
fn a_run_adopted_with_its_epoch_goes_on_when_the_cluster_confirms_it() {
    let t0 = Instant::now();
    let mut sup = vigil_core::Supervisor::new(sim::SELF_PID);
    let id = sup.add(trader(), None);
    let now = vigil_core::Now::new(t0, 1_700_000_000_000);
    sup.adopt(now, id, 500, t0, false, Some(7))
        .expect("adopted");
    sup.start_all(now);
    sup.handle(
        now,
        vigil_core::Event::Lease {
            agent: id,
            news: held(7, t0 + TTL),
        },
    );
    let mut actions = Vec::new();
    while let Some(a) = sup.poll_action() {
        actions.push(a);
    }
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Signal { .. })),
        "{actions:?}"
    );
    assert_eq!(sup.agent(id).unwrap().state(), AgentState::Running);
    assert_eq!(sup.agent(id).unwrap().run_fence(), Some(7));
}

#[test]
fn a_move_stops_the_agent_then_gives_the_lease_to_the_named_node() {
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    let now = sim.now.mono;
    sim.lease(t, held(2, now + TTL));
    sim.lease(t, LeaseNews::Move { to: "ams-1".into() });
    assert_eq!(sim.signals_sent(Signal::TERM), 1);
    assert!(sim.released.is_empty(), "released only once stopped");
    sim.exit(t, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.released, vec![(t, 2, Some("ams-1".to_string()))]);
    assert_eq!(state(&sim), AgentState::Standby);
    // Stopped by a person, then moved: released at once.
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    let now = sim.now.mono;
    sim.lease(t, held(2, now + TTL));
    sim.command(t, Command::Stop, Requester::Cli).unwrap();
    sim.exit(t, ExitStatus::signal(Signal::TERM));
    sim.lease(t, LeaseNews::Move { to: "ams-1".into() });
    assert_eq!(sim.released, vec![(t, 2, Some("ams-1".to_string()))]);
    assert_eq!(state(&sim), AgentState::Stopped);
}

#[test]
fn a_person_can_stop_an_agent_on_standby_and_a_lease_then_starts_nothing() {
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    assert_eq!(
        sim.command(t, Command::Start, Requester::Cli),
        Ok(vigil_core::CommandOutcome::Standby)
    );
    sim.command(t, Command::Stop, Requester::Cli).unwrap();
    assert_eq!(state(&sim), AgentState::Stopped);
    let now = sim.now.mono;
    sim.lease(t, held(1, now + TTL));
    assert_eq!(state(&sim), AgentState::Stopped);
    assert!(sim.spawn_fences(t).is_empty());
    // Started by a person under the lease: it runs.
    sim.command(t, Command::Start, Requester::Cli).unwrap();
    assert_eq!(sim.spawn_fences(t), vec![Some(1)]);
}

#[test]
fn a_lease_that_arrives_too_late_to_be_of_use_starts_nothing() {
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    // Valid for 2 s more: less than stop_timeout + margin.
    let now = sim.now.mono;
    sim.lease(t, held(1, now + secs(2)));
    assert_eq!(state(&sim), AgentState::Standby);
    assert!(sim.spawn_fences(t).is_empty());
}

/// One step of a seeded history of one exclusive agent on one node.
#[derive(Clone, Debug)]
enum Op {
    /// Time passes (ms).
    Wait(u64),
    /// The cluster renews or grants the lease; its answer arrives this many ms after the
    /// request was sent (the lease counts from the request).
    Held {
        epoch_bump: bool,
        late_ms: u64,
    },
    Elsewhere,
    Move,
    Crash,
    /// The run obeys its stop signal now.
    Obey,
    Stop,
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..6_000).prop_map(Op::Wait),
        4 => (any::<bool>(), 0u64..12_000).prop_map(|(epoch_bump, late_ms)| Op::Held { epoch_bump, late_ms }),
        1 => Just(Op::Elsewhere),
        1 => Just(Op::Move),
        2 => Just(Op::Crash),
        3 => Just(Op::Obey),
        1 => Just(Op::Stop),
        1 => Just(Op::Start),
    ]
}

proptest! {
    /// Whatever the cluster says and whenever: a process is created only under a lease whose
    /// stop could still finish in time, with that lease's epoch; and no process of the agent
    /// is left alive (no SIGKILL sent yet) at the moment the lease this node last held lapses
    /// minus the margin.
    #[test]
    fn never_runs_past_its_lease(ops in proptest::collection::vec(op(), 1..80)) {
        let mut sim = Sim::new(vec![trader()]);
        let t = sim.id("trader");
        let mut epoch = 1u64;
        // The last lease held, as (epoch, valid_until).
        let mut lease: Option<(u64, Instant)> = None;
        let mut checked = 0;
        for op in ops {
            match op {
                Op::Wait(d) => sim.advance(ms(d)),
                Op::Held { epoch_bump, late_ms } => {
                    let valid_until = (sim.now.mono + TTL).checked_sub(ms(late_ms)).unwrap_or(sim.now.mono);
                    // Answers come in the order their requests were sent: a later one never
                    // ends earlier.
                    if lease.is_some_and(|(_, v)| v > valid_until) { continue; }
                    if epoch_bump { epoch += 1; }
                    lease = Some((epoch, valid_until));
                    sim.lease(t, held(epoch, valid_until));
                }
                // Another node takes the lease only once this node's has expired; the last
                // lease this node held still bounds how long its processes may live.
                Op::Elsewhere => { epoch += 1; sim.lease(t, elsewhere("b", epoch)); }
                Op::Move => sim.lease(t, LeaseNews::Move { to: "b".into() }),
                Op::Crash => if sim.live.contains_key(&t) { sim.exit(t, ExitStatus::code(1)); },
                Op::Obey => if sim.live.contains_key(&t) { sim.exit(t, ExitStatus::signal(Signal::TERM)); },
                Op::Stop => { let _ = sim.command(t, Command::Stop, Requester::Cli); }
                Op::Start => { let _ = sim.command(t, Command::Start, Requester::Cli); }
            }
            // Every spawn so far happened under a lease with room for its stop.
            for (at, action) in &sim.actions[checked..] {
                if let Action::Spawn { look_first: false, fence, .. } = action {
                    let (e, v) = lease.expect("a spawn under no lease");
                    prop_assert_eq!(*fence, Some(e));
                    prop_assert!(*at + STOP + MARGIN < v, "spawned too close to the lease's end");
                }
            }
            checked = sim.actions.len();
            // A process alive now has had SIGKILL sent, or its lease (minus the margin) is
            // still ahead.
            if sim.live.contains_key(&t) {
                let run = sim.runs[&t];
                let killed = sim.actions.iter().any(|(_, a)| matches!(a, Action::Kill { run: r, .. } if *r == run));
                let valid = lease.is_some_and(|(_, v)| sim.now.mono + MARGIN <= v);
                prop_assert!(killed || valid, "a process alive past its lease, unkilled");
            }
        }
    }
}

#[test]
fn a_reload_that_makes_an_agent_exclusive_stops_its_copy_until_it_holds_the_lease() {
    let mut local = trader();
    local.exclusive = None;
    let mut sim = Sim::new(vec![local.clone()]);
    let t = sim.id("trader");
    assert_eq!(state(&sim), AgentState::Running);
    sim.sup.reconcile(sim.now, vec![trader()]);
    sim.drain();
    assert_eq!(
        sim.signals_sent(Signal::TERM),
        1,
        "the local copy is stopped"
    );
    sim.exit(t, ExitStatus::signal(Signal::TERM));
    assert_eq!(state(&sim), AgentState::Standby);
    let now = sim.now.mono;
    sim.lease(t, held(1, now + TTL));
    assert_eq!(state(&sim), AgentState::Running);
    assert_eq!(sim.spawn_fences(t), vec![None, Some(1)]);
    // Local again, while on standby elsewhere: it runs here, with no lease to keep.
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    assert_eq!(state(&sim), AgentState::Standby);
    sim.sup.reconcile(sim.now, vec![local]);
    sim.drain();
    assert_eq!(state(&sim), AgentState::Running);
    assert_eq!(sim.spawn_fences(t), vec![None]);
    sim.advance(secs(60));
    assert_eq!(
        sim.signals_sent(Signal::TERM),
        0,
        "no fence for a local agent"
    );
}

#[test]
fn a_renewal_answered_after_the_lease_was_given_up_starts_nothing() {
    let mut sim = Sim::new(vec![trader()]);
    let t = sim.id("trader");
    let now = sim.now.mono;
    sim.lease(t, held(2, now + TTL));
    sim.lease(t, LeaseNews::Move { to: "ams-1".into() });
    sim.exit(t, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.released.len(), 1);
    // The round in flight when it was given up still says "held at 2".
    let now = sim.now.mono;
    sim.lease(t, held(2, now + TTL));
    sim.lease(t, elsewhere("ams-1", 3));
    sim.lease(t, held(2, now + TTL));
    assert_eq!(state(&sim), AgentState::Standby);
    assert_eq!(sim.spawn_fences(t), vec![Some(2)]);
    // Taken back later, at a new epoch: it runs.
    sim.lease(t, held(4, now + TTL));
    assert_eq!(sim.spawn_fences(t), vec![Some(2), Some(4)]);
}
