//! Issue 17: the `vigil-agent` crate against a real vigil — an agent's checkpoint saved,
//! loaded, refused on a conflict, kept locally while vigil is away and sent once it is back.
//! The test plays the agent: it holds the token of a real run of `bot`.

mod common;

use std::time::Duration;

use common::{Fleet, read};
use serde::{Deserialize, Serialize};
use vigil_agent::{Agent, Checkpoint, CheckpointError, Env};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    last_ts: u64,
    positions: Vec<String>,
}

fn fleet() -> Fleet {
    let mut f = Fleet::new(
        r#"[agents.bot]
command = ["sh", "-c", "echo \"$VIGIL_AGENT_TOKEN\" > token.tmp && mv token.tmp token; exec sleep 300"]
"#,
    );
    f.start();
    f.wait_for("the run's token", Duration::from_secs(10), |f| {
        f.path("token").exists()
    });
    f
}

/// The environment vigil gave the run (its URL, name and token), local copies in the test dir.
fn env_of(f: &Fleet) -> Env {
    Env {
        url: Some(format!("http://{}", f.api_addr())),
        agent: Some("bot".into()),
        token: Some(read(&f.path("token")).trim().to_string()),
        notify_socket: None,
        state_dir: None,
        checkpoint_dir: Some(f.path("local")),
    }
}

/// vigil is back, and has adopted the run (until then it does not know the run's token).
fn started_again(f: &mut Fleet) {
    let adopted = f.records_of("bot", "adopted").len();
    f.start();
    f.wait_for("the run adopted", Duration::from_secs(10), |f| {
        f.records_of("bot", "adopted").len() > adopted
    });
}

fn state(ts: u64) -> State {
    State {
        last_ts: ts,
        positions: vec!["BTC_USDT".into()],
    }
}

#[test]
fn a_checkpoint_round_trips_and_a_stale_copy_is_refused() {
    let f = fleet();
    let agent = Agent::new(env_of(&f));
    let mut c = Checkpoint::<State>::new(&agent);
    assert_eq!(c.load().unwrap(), None);
    assert_eq!(c.save(&state(1)).unwrap(), Some(1));
    assert_eq!(c.save(&state(2)).unwrap(), Some(2));
    // A second copy of the agent (a zombie) read version 2 a moment ago; the live one writes 3.
    let mut zombie = Checkpoint::<State>::new(&agent);
    assert_eq!(zombie.load().unwrap(), Some(state(2)));
    assert_eq!(c.save(&state(3)).unwrap(), Some(3));
    match zombie.save(&state(99)) {
        Err(CheckpointError::Conflict { current }) => assert_eq!(current, Some(3)),
        other => panic!("the zombie wrote: {other:?}"),
    }
    // A new run loads what the last one saved.
    let mut next = Checkpoint::<State>::new(&agent);
    assert_eq!(next.load().unwrap(), Some(state(3)));
    assert_eq!(next.version(), 3);
}

#[test]
fn while_vigil_is_away_checkpoints_go_to_the_local_file_and_nothing_is_lost() {
    let mut f = fleet();
    let agent = Agent::new(env_of(&f));
    let mut c = Checkpoint::<State>::new(&agent);
    assert_eq!(c.save(&state(1)).unwrap(), Some(1));

    // vigil dies (its agents live on, by design).
    f.signal(9);
    let _ = f.wait_exit(Duration::from_secs(5));
    assert_eq!(c.save(&state(2)).unwrap(), None, "kept locally");
    assert_eq!(c.save(&state(3)).unwrap(), None);
    let local = read(c.local_path());
    assert!(
        local.contains("\"pending\":true") && local.contains("\"last_ts\":3"),
        "{local}"
    );
    // The agent restarts meanwhile: it resumes from its local copy.
    let mut restarted = Checkpoint::<State>::new(&agent);
    assert_eq!(restarted.load().unwrap(), Some(state(3)));

    // vigil is back (on another port: the client follows VIGIL_URL, as a new run would).
    started_again(&mut f);
    let agent = Agent::new(env_of(&f));
    let mut c = Checkpoint::<State>::new(&agent);
    assert_eq!(
        c.load().unwrap(),
        Some(state(3)),
        "the newer local copy wins"
    );
    assert_eq!(c.version(), 2, "and is now vigil's");
    let (code, body) = f.api("GET", "/agents/bot/checkpoint", "");
    assert_eq!(code, 200);
    assert_eq!(body["document"]["last_ts"], 3);
    assert!(read(c.local_path()).contains("\"pending\":false"));
    assert_eq!(c.save(&state(4)).unwrap(), Some(3));
}

#[test]
fn an_older_local_copy_never_overwrites_a_newer_version_in_vigil() {
    let mut f = fleet();
    let agent = Agent::new(env_of(&f));
    let mut c = Checkpoint::<State>::new(&agent);
    assert_eq!(c.save(&state(1)).unwrap(), Some(1));
    f.signal(9);
    let _ = f.wait_exit(Duration::from_secs(5));
    assert_eq!(c.save(&state(2)).unwrap(), None);
    started_again(&mut f);
    // Meanwhile someone wrote a newer version into vigil.
    std::thread::sleep(Duration::from_millis(20));
    let (code, _) = f.http(
        "PUT",
        "/agents/bot/checkpoint",
        &[("Content-Type", "application/json")],
        r#"{"last_ts":50,"positions":[]}"#,
    );
    assert_eq!(code, 200);
    let agent = Agent::new(env_of(&f));
    let mut c = Checkpoint::<State>::new(&agent);
    assert_eq!(
        c.load().unwrap().unwrap().last_ts,
        50,
        "vigil's newer version wins"
    );
    let (_, body) = f.api("GET", "/agents/bot/checkpoint", "");
    assert_eq!(body["version"], 2);
}

#[test]
fn a_token_vigil_does_not_know_keeps_the_checkpoint_locally_until_it_does() {
    let f = fleet();
    // A vigil that just restarted answers 401 until it has adopted the run again.
    let mut unknown = env_of(&f);
    unknown.token = Some("vat_not-known-to-this-vigil-yet".into());
    let mut c = Checkpoint::<State>::new(&Agent::new(unknown));
    assert_eq!(c.save(&state(7)).unwrap(), None, "kept locally, not lost");
    let mut c = Checkpoint::<State>::new(&Agent::new(env_of(&f)));
    assert_eq!(c.load().unwrap(), Some(state(7)));
    let (_, body) = f.api("GET", "/agents/bot/checkpoint", "");
    assert_eq!(
        body["document"]["last_ts"], 7,
        "sent once the token is known"
    );
}

#[test]
fn a_store_that_lost_everything_gets_the_agents_local_copy_back() {
    let mut f = fleet();
    let mut c = Checkpoint::<State>::new(&Agent::new(env_of(&f)));
    assert_eq!(c.save(&state(3)).unwrap(), Some(1));
    // The checkpoint database is lost (deleted while vigil was down).
    f.signal(9);
    let _ = f.wait_exit(Duration::from_secs(5));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(f.state().join(format!("checkpoints.db{suffix}")));
    }
    started_again(&mut f);
    let mut c = Checkpoint::<State>::new(&Agent::new(env_of(&f)));
    assert_eq!(
        c.load().unwrap(),
        Some(state(3)),
        "the local copy, not a fresh start"
    );
    let (_, body) = f.api("GET", "/agents/bot/checkpoint", "");
    assert_eq!(body["document"]["last_ts"], 3);
}
