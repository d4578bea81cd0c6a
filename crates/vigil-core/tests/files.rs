//! Guarded files in the core: checked before every start, journaled when repaired, a file
//! broken beyond repair quarantines the agent, and a healthy run's files are kept.

mod sim;

use sim::{Sim, secs};
use vigil_core::{
    AgentSpec, AgentState, AuditAction, CheckKind, CheckSpec, ExitStatus, FileRepair, FilesVerdict,
};

fn guarded(name: &str) -> AgentSpec {
    let mut spec = AgentSpec::new(name);
    spec.guards_files = true;
    let mut c = CheckSpec::new("api", CheckKind::Api);
    c.max_age = Some(secs(30));
    spec.checks = vec![c];
    spec
}

fn beat(sim: &mut Sim, name: &str) {
    let id = sim.id(name);
    sim.sup.api_heartbeat(sim.now, id);
    sim.drain();
}

#[test]
fn every_start_checks_the_files_first_and_a_repair_is_journaled_by_keys() {
    let mut sim = Sim::new(Vec::new());
    let id = sim.sup.add(guarded("trader"), None);
    sim.files.insert(
        id,
        FilesVerdict::Ready {
            repaired: vec![FileRepair {
                path: "/srv/config/BTC.json".into(),
                problem: "not valid JSON: EOF while parsing an object at line 3".into(),
                how: "restored the copy kept after run 3".into(),
                keys: vec!["/risk/max_position".into()],
                backup: Some("/var/lib/vigil/files/trader/bad-1.json".into()),
            }],
        },
    );
    sim.sup.start_all(sim.now);
    sim.drain();
    assert_eq!(sim.guards.len(), 1);
    assert_eq!(sim.spawns(id).len(), 1, "started once the files are ready");
    let repaired = &sim.records("trader", AuditAction::FileRepaired)[0];
    assert_eq!(
        repaired.reason,
        "/srv/config/BTC.json was not valid JSON: EOF while parsing an object at line 3: \
         restored the copy kept after run 3"
    );
    assert_eq!(repaired.metadata["keys"][0], "/risk/max_position");
    assert!(repaired.metadata.contains_key("backup"));
    // A crash's restart checks them again.
    sim.files.remove(&id);
    sim.exit(id, ExitStatus::code(1));
    assert_eq!(sim.guards.len(), 2);
    assert_eq!(sim.spawns(id).len(), 2);
}

#[test]
fn a_file_broken_beyond_repair_quarantines_with_a_config_diagnosis() {
    let mut sim = Sim::new(Vec::new());
    let id = sim.sup.add(guarded("trader"), None);
    sim.files.insert(
        id,
        FilesVerdict::Broken {
            path: "/srv/config/BTC.json".into(),
            problem: "missing /api_key_file".into(),
            repaired: Vec::new(),
        },
    );
    sim.sup.start_all(sim.now);
    sim.drain();
    assert!(sim.spawns(id).is_empty());
    let agent = sim.sup.agent(id).unwrap();
    assert_eq!(agent.state(), AgentState::Quarantined);
    assert_eq!(agent.diagnosis().unwrap().rule, "config_error");
    let escalated = &sim.records("trader", AuditAction::Escalated)[0];
    assert!(
        escalated
            .reason
            .contains("/srv/config/BTC.json is missing /api_key_file"),
        "{}",
        escalated.reason
    );
    assert_eq!(agent.total_restarts(), 0);
}

#[test]
fn a_run_that_proves_healthy_keeps_its_files_once() {
    let mut sim = Sim::new(vec![guarded("trader")]);
    let id = sim.id("trader");
    assert!(sim.kept.is_empty(), "not before it has proven anything");
    sim.advance(secs(1));
    beat(&mut sim, "trader");
    beat(&mut sim, "trader");
    sim.advance(secs(20));
    beat(&mut sim, "trader");
    assert_eq!(sim.kept.len(), 1);
    assert_eq!(sim.kept[0].1, sim.runs[&id]);
    sim.exit(id, ExitStatus::code(1));
    beat(&mut sim, "trader");
    assert_eq!(sim.kept.len(), 2, "the new run proves itself too");
}

#[test]
fn a_crash_blamed_on_its_config_is_restarted_only_when_a_guarded_file_was_mended() {
    let mut sim = Sim::new(vec![guarded("trader")]);
    let id = sim.id("trader");
    sim.advance(secs(1));
    sim.files.insert(
        id,
        FilesVerdict::Ready {
            repaired: vec![FileRepair {
                path: "/srv/config/BTC.json".into(),
                problem: "not valid JSON (it ends too early at line 1 column 40)".into(),
                how: "restored the good copy kept after run 1".into(),
                keys: Vec::new(),
                backup: None,
            }],
        },
    );
    sim.exit_logging(
        id,
        ExitStatus::code(1),
        &["json.decoder.JSONDecodeError: Expecting ',' delimiter: line 1 column 40"],
    );
    assert_eq!(sim.spawns(id).len(), 2, "restarted into the mended file");
    assert_eq!(sim.count("trader", AuditAction::FileRepaired), 1);
    assert_eq!(sim.count("trader", AuditAction::Escalated), 0);

    // The same crash with nothing wrong in its files: quarantined as diagnosed.
    sim.files.remove(&id);
    sim.advance(secs(1));
    sim.exit_logging(
        id,
        ExitStatus::code(1),
        &["json.decoder.JSONDecodeError: Expecting ',' delimiter: line 1 column 40"],
    );
    // (Its restart waits out the cooldown, then its files are checked first.)
    sim.advance(secs(60));
    assert_eq!(sim.spawns(id).len(), 2);
    let agent = sim.sup.agent(id).unwrap();
    assert_eq!(agent.state(), AgentState::Quarantined);
    assert_eq!(agent.diagnosis().unwrap().rule, "config_error");
}

#[test]
fn a_reset_forgets_a_config_failure_that_waited_for_its_files_check() {
    let mut spec = guarded("trader");
    spec.policy.cooldown = secs(30);
    let mut sim = Sim::new(vec![spec]);
    let id = sim.id("trader");
    sim.advance(secs(1));
    sim.exit(id, ExitStatus::code(1));
    // A config error, with a cooldown to wait out first.
    sim.exit_logging(
        id,
        ExitStatus::code(1),
        &["json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)"],
    );
    assert_eq!(sim.sup.agent(id).unwrap().state(), AgentState::Backoff);
    sim.command(id, vigil_core::Command::Reset, vigil_core::Requester::Cli)
        .unwrap();
    // Its files are fine: the person's reset starts it, and it is not quarantined for the
    // failure the reset cleared.
    assert_eq!(sim.sup.agent(id).unwrap().state(), AgentState::Running);
    assert_eq!(sim.count("trader", AuditAction::Escalated), 0);
}
