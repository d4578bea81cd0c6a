//! Fleet incidents with explicit instants: six bots losing their database are one incident,
//! not six healings — their restarts are held (no budget spent), one canary at a time probes
//! the cause with a backoff, and once the cause clears the held bots start spread out.

mod sim;

use std::time::{Duration, Instant};

use sim::{Sim, ms, secs};
use vigil_core::{AgentSpec, AgentState, AuditAction, AuditEntry, ExitStatus};

const DB_DOWN: &[&str] =
    &["psycopg2.OperationalError: could not connect to server: Connection refused"];
const RATE_LIMITED: &[&str] = &["binance 429 Too Many Requests: request weight exceeded"];

fn bots(n: usize) -> Vec<AgentSpec> {
    (1..=n)
        .map(|i| {
            let mut s = AgentSpec::new(&format!("bot@{i}"));
            s.template = Some("bot".into());
            s.instance = Some(i.to_string());
            s
        })
        .collect()
}

/// Bots each with a `sql` check of one database.
fn sql_bots(n: usize) -> Vec<AgentSpec> {
    bots(n)
        .into_iter()
        .map(|mut s| {
            let mut c = vigil_core::CheckSpec::new("sql", vigil_core::CheckKind::Sql);
            c.max_age = Some(secs(3600));
            c.interval = secs(1);
            c.target = Some("postgres://db:5432/bots".into());
            s.checks = vec![c];
            s
        })
        .collect()
}

/// Answer every probe `agent` is waiting for with `observation`.
fn answer_all(
    sim: &mut Sim,
    agent: vigil_core::AgentId,
    observation: impl Fn(&Sim) -> vigil_core::Observation,
) {
    while sim.probes.iter().any(|(a, _, _)| *a == agent) {
        let o = observation(sim);
        sim.answer(agent, o);
    }
}

fn fleet_records(sim: &Sim, action: AuditAction) -> Vec<&AuditEntry> {
    sim.audit
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.action == action)
        .collect()
}

fn crash(sim: &mut Sim, name: &str, log: &[&str]) {
    let id = sim.id(name);
    sim.exit_logging(id, ExitStatus::code(1), log);
}

fn state(sim: &Sim, name: &str) -> AgentState {
    sim.sup.agent(sim.id(name)).unwrap().state()
}

/// Spawn instants of every bot after `since`, in order.
fn starts_after(sim: &Sim, since: Instant) -> Vec<(Instant, String)> {
    let mut out: Vec<(Instant, String)> = sim
        .actions
        .iter()
        .filter_map(|(t, a)| match a {
            vigil_core::Action::Spawn {
                agent,
                look_first: false,
                ..
            } if *t > since => Some((*t, sim.sup.agent(*agent).unwrap().name().to_string())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_database_outage_is_one_incident_not_six_healings() {
    let mut sim = Sim::new(bots(6));
    sim.advance(secs(30));
    // The database goes away: every bot crashes within a second.
    for i in 1..=6 {
        crash(&mut sim, &format!("bot@{i}"), DB_DOWN);
        sim.advance(ms(150));
    }
    let opened = fleet_records(&sim, AuditAction::IncidentOpened);
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].metadata["cause"], "rule:database_unreachable");
    assert_eq!(opened[0].metadata["members"].as_array().unwrap().len(), 3);
    // The first two were restarted before the third made it an incident; from then on no
    // restart is spent on the database.
    let restarts = fleet_records(&sim, AuditAction::Restart).len();
    assert_eq!(restarts, 2);
    for i in 3..=6 {
        assert_eq!(
            state(&sim, &format!("bot@{i}")),
            AgentState::Waiting,
            "bot@{i}"
        );
    }
    // The two restarted ones crash again: held too, still no budget.
    crash(&mut sim, "bot@1", DB_DOWN);
    crash(&mut sim, "bot@2", DB_DOWN);
    assert_eq!(fleet_records(&sim, AuditAction::Restart).len(), 2);
    assert_eq!(state(&sim, "bot@1"), AgentState::Waiting);

    // The probe: one canary after 10 s; the database is still down, it crashes again.
    let before = sim.now.mono;
    sim.advance(secs(10));
    let canaries = starts_after(&sim, before);
    assert_eq!(canaries.len(), 1, "{canaries:?}");
    let canary = canaries[0].1.clone();
    sim.advance(secs(1));
    crash(&mut sim, &canary, DB_DOWN);
    // The next probe waits twice as long.
    let before = sim.now.mono;
    sim.advance(secs(15));
    assert!(starts_after(&sim, before).is_empty());
    sim.advance(secs(10));
    let canaries = starts_after(&sim, before);
    assert_eq!(canaries.len(), 1, "{canaries:?}");

    // The database is back: the canary stays up, the incident resolves, and the five others
    // start two seconds apart.
    let before = sim.now.mono;
    sim.advance(secs(10));
    let resolved = fleet_records(&sim, AuditAction::IncidentResolved);
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].metadata["members"].as_array().unwrap().len(), 6);
    sim.advance(secs(20));
    let released = starts_after(&sim, before);
    assert_eq!(released.len(), 5, "{released:?}");
    for pair in released.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= secs(2), "{released:?}");
    }
    for i in 1..=6 {
        assert_eq!(
            state(&sim, &format!("bot@{i}")),
            AgentState::Running,
            "bot@{i}"
        );
    }
    // Nobody was quarantined, and no budget was spent after the first two.
    assert!(fleet_records(&sim, AuditAction::Escalated).is_empty());
    assert!(fleet_records(&sim, AuditAction::RateLimited).is_empty());
    assert_eq!(fleet_records(&sim, AuditAction::Restart).len(), 2);
}

#[test]
fn without_an_incident_two_failures_are_each_their_own() {
    let mut sim = Sim::new(bots(6));
    sim.advance(secs(30));
    crash(&mut sim, "bot@1", DB_DOWN);
    crash(&mut sim, "bot@2", DB_DOWN);
    // A third, but outside the window: no incident.
    sim.advance(secs(61));
    crash(&mut sim, "bot@3", DB_DOWN);
    assert!(fleet_records(&sim, AuditAction::IncidentOpened).is_empty());
    assert_eq!(fleet_records(&sim, AuditAction::Restart).len(), 3);
    // A generic crash is no shared cause, however many there are.
    for i in 4..=6 {
        crash(
            &mut sim,
            &format!("bot@{i}"),
            &["Traceback: KeyError 'price'"],
        );
    }
    assert!(fleet_records(&sim, AuditAction::IncidentOpened).is_empty());
}

#[test]
fn a_small_template_opens_an_incident_at_half_its_instances() {
    // Two instances: both failing for one cause is the whole template.
    let mut sim = Sim::new(bots(2));
    sim.advance(secs(30));
    crash(&mut sim, "bot@1", RATE_LIMITED);
    crash(&mut sim, "bot@2", RATE_LIMITED);
    let opened = fleet_records(&sim, AuditAction::IncidentOpened);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].metadata["cause"], "rule:rate_limited");
}

#[test]
fn incidents_can_be_turned_off() {
    let mut sim = Sim::new(bots(6));
    sim.sup.set_incident_policy(vigil_core::IncidentPolicy {
        enabled: false,
        ..Default::default()
    });
    sim.advance(secs(30));
    for i in 1..=6 {
        crash(&mut sim, &format!("bot@{i}"), DB_DOWN);
    }
    assert!(fleet_records(&sim, AuditAction::IncidentOpened).is_empty());
    assert_eq!(fleet_records(&sim, AuditAction::Restart).len(), 6);
}

#[test]
fn a_rate_limit_storm_is_one_incident_and_the_fleet_comes_back_one_by_one() {
    let mut sim = Sim::new(bots(6));
    sim.advance(secs(30));
    for i in 1..=6 {
        crash(&mut sim, &format!("bot@{i}"), RATE_LIMITED);
    }
    assert_eq!(fleet_records(&sim, AuditAction::IncidentOpened).len(), 1);
    // The first two were throttled (waiting, nothing spent yet): their waits are held too.
    for i in 1..=6 {
        assert_eq!(
            state(&sim, &format!("bot@{i}")),
            AgentState::Waiting,
            "bot@{i}"
        );
    }
    // One canary probes the exchange; it stays up: the others follow, 2 s apart.
    let before = sim.now.mono;
    sim.advance(secs(60));
    let starts = starts_after(&sim, before);
    assert_eq!(starts.len(), 6, "{starts:?}");
    for pair in starts[1..].windows(2) {
        assert!(pair[1].0 - pair[0].0 >= secs(2), "{starts:?}");
    }
    assert!(
        starts[1].0 - starts[0].0 >= secs(10),
        "the canary proves itself first"
    );
    assert_eq!(fleet_records(&sim, AuditAction::IncidentResolved).len(), 1);
    assert!(fleet_records(&sim, AuditAction::Escalated).is_empty());
    let _ = Duration::ZERO;
}

#[test]
fn agents_whose_checks_find_one_service_unreachable_share_that_cause() {
    // Their logs say nothing shared (a generic crash), but their own checks found the same
    // database unreachable.
    let mut sim = Sim::new(sql_bots(3));
    sim.advance(secs(30));
    for i in 1..=3 {
        let id = sim.id(&format!("bot@{i}"));
        answer_all(&mut sim, id, |_| {
            vigil_core::Observation::Unknown("connection refused".into())
        });
    }
    for i in 1..=3 {
        crash(
            &mut sim,
            &format!("bot@{i}"),
            &["Traceback: KeyError 'price'"],
        );
    }
    let opened = fleet_records(&sim, AuditAction::IncidentOpened);
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(
        opened[0].metadata["cause"],
        "target:postgres://db:5432/bots"
    );
    assert!(
        opened[0]
            .reason
            .contains("postgres://db:5432/bots unreachable")
    );
}

#[test]
fn a_person_can_take_an_agent_out_of_an_incident() {
    let mut sim = Sim::new(bots(6));
    sim.advance(secs(30));
    for i in 1..=6 {
        crash(&mut sim, &format!("bot@{i}"), DB_DOWN);
    }
    assert_eq!(state(&sim, "bot@6"), AgentState::Waiting);
    let id = sim.id("bot@6");
    let spawns = sim.spawns(id).len();
    // A person starts it: the hold yields, on the record.
    let out = sim.command(id, vigil_core::Command::Start, vigil_core::Requester::Cli);
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(sim.spawns(id).len(), spawns + 1);
    assert_ne!(state(&sim, "bot@6"), AgentState::Waiting);
    // A person stops another: it stays stopped, never started as a canary.
    let five = sim.id("bot@5");
    let _ = sim.command(five, vigil_core::Command::Stop, vigil_core::Requester::Cli);
    assert_eq!(state(&sim, "bot@5"), AgentState::Stopped);
    let spawns5 = sim.spawns(five).len();
    sim.advance(secs(120));
    assert_eq!(
        sim.spawns(five).len(),
        spawns5,
        "a stopped agent is not probed"
    );
}

#[test]
fn a_canary_of_an_unreachable_service_must_see_it_back() {
    let mut sim = Sim::new(sql_bots(3));
    sim.advance(secs(30));
    let unknown = || vigil_core::Observation::Unknown("connection refused".into());
    for i in 1..=3 {
        let id = sim.id(&format!("bot@{i}"));
        answer_all(&mut sim, id, |_| unknown());
    }
    for i in 1..=3 {
        crash(
            &mut sim,
            &format!("bot@{i}"),
            &["Traceback: KeyError 'price'"],
        );
    }
    assert_eq!(fleet_records(&sim, AuditAction::IncidentOpened).len(), 1);
    // The canary starts and stays up, but its own check still cannot reach the database.
    for _ in 0..30 {
        sim.advance(secs(1));
        let canary = (1..=3)
            .map(|i| sim.id(&format!("bot@{i}")))
            .find(|id| sim.live.contains_key(id));
        if let Some(id) = canary {
            answer_all(&mut sim, id, |_| unknown());
        }
    }
    assert!(fleet_records(&sim, AuditAction::IncidentResolved).is_empty());
    // (bot@1 was restarted before the second failure made it an incident; bot@2 is the
    // canary.) bot@3 stays held while the service is down.
    assert_eq!(state(&sim, "bot@3"), AgentState::Waiting);
    // The database answers again: the canary's check passes, the incident resolves.
    let canary = sim.id("bot@2");
    assert!(sim.live.contains_key(&canary));
    for _ in 0..20 {
        sim.advance(secs(1));
        answer_all(&mut sim, canary, |sim| vigil_core::Observation::Progress {
            at_wall_ms: Some(sim.now.wall_ms),
        });
    }
    assert_eq!(fleet_records(&sim, AuditAction::IncidentResolved).len(), 1);
}

#[test]
fn a_vigil_restarted_during_an_incident_holds_its_agents_again() {
    // What the vigil before this one saved: three bots held by incident 4.
    let cause = vigil_core::Cause {
        key: "rule:database_unreachable".into(),
        text: "database_unreachable".into(),
    };
    let memory = || {
        Some(vigil_core::AgentMemory {
            incident: Some((4, cause.clone())),
            ..Default::default()
        })
    };
    let mut specs = bots(4);
    let free = specs.pop().unwrap();
    let agents = specs
        .into_iter()
        .map(|s| (s, memory()))
        .chain([(free, None)])
        .collect();
    let mut sim = Sim::restarted(agents, Vec::new());
    for i in 1..=3 {
        assert_eq!(
            state(&sim, &format!("bot@{i}")),
            AgentState::Waiting,
            "bot@{i}"
        );
        assert!(
            sim.spawns(sim.id(&format!("bot@{i}"))).is_empty(),
            "not started"
        );
    }
    assert_eq!(state(&sim, "bot@4"), AgentState::Running);
    let incidents: Vec<_> = sim.sup.incidents().collect();
    assert_eq!(incidents.len(), 1);
    assert_eq!((incidents[0].id, incidents[0].held.len()), (4, 3));
    // The probe starts over: one canary, then the rest spread out.
    let before = sim.now.mono;
    sim.advance(secs(40));
    let starts = starts_after(&sim, before);
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert!(starts[1].0 - starts[0].0 >= secs(10));
    assert!(starts[2].0 - starts[1].0 >= secs(2));
    assert_eq!(fleet_records(&sim, AuditAction::IncidentResolved).len(), 1);
    // A new incident after this one gets a new id.
    for i in 1..=4 {
        crash(&mut sim, &format!("bot@{i}"), DB_DOWN);
    }
    let opened = fleet_records(&sim, AuditAction::IncidentOpened);
    assert_eq!(opened.last().unwrap().metadata["incident"], 5);
}
