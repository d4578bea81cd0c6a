//! `vigil demo`, end to end: a short seeded run injects every kind of fault and must heal or
//! escalate each one.

mod common;

use std::process::Command;

use common::VIGIL;

#[test]
fn a_short_seeded_demo_heals_or_escalates_every_fault() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(VIGIL)
        .args([
            "demo",
            "--duration",
            "75s",
            "--fault-every",
            "4s..6s",
            "--seed",
            "7",
        ])
        .args(["--port", "0", "--state-dir"])
        .arg(dir.path())
        .output()
        .expect("run vigil demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary = stdout.split("\nsummary\n").nth(1).expect("a summary");
    for kind in [
        "crash (traceback)",
        "hang (no heartbeat)",
        "stall (heartbeat, no rows)",
        "database is locked",
        "invalid API key",
        "429 storm (all traders)",
        "market feed hang",
        "config file corrupted",
    ] {
        assert!(summary.contains(kind), "{kind} missing from:\n{summary}");
    }
    assert!(
        summary.contains("every fault was healed or escalated"),
        "{summary}"
    );
    assert!(summary.contains("quarantines 1"), "{summary}");
    assert!(summary.contains("429 storm: "), "{summary}");
    assert!(summary.contains("none at once"), "{summary}");
    // The feed's fault: every trader waited for it, none was restarted for it.
    assert!(
        summary.contains("were restarted 0 time(s) meanwhile"),
        "{summary}"
    );
    assert!(
        !summary.contains("traders waited for it 0 time(s)"),
        "{summary}"
    );
    // The corrupted config was restored, not quarantined.
    assert!(
        summary
            .contains("config files restored from their last known good copy before a restart: "),
        "{summary}"
    );
    let corrupted = summary
        .lines()
        .find(|l| l.starts_with("config file corrupted"))
        .unwrap();
    let cols: Vec<&str> = corrupted.split_whitespace().collect();
    assert_eq!(&cols[cols.len() - 2..], ["0", "0"], "{corrupted}");
    // The invalid key was escalated, never restarted.
    let key = summary
        .lines()
        .find(|l| l.starts_with("invalid API key"))
        .unwrap();
    let cols: Vec<&str> = key.split_whitespace().collect();
    assert_eq!(&cols[cols.len() - 3..], ["0", "1", "0"], "{key}");
    // The config it ran is there to read and copy, and it is valid.
    let check = Command::new(VIGIL)
        .args(["check", "-c"])
        .arg(dir.path().join("demo.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_demo_never_wipes_a_directory_that_is_not_its_own() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("audit.jsonl"), "{}\n").unwrap();
    let out = Command::new(VIGIL)
        .args(["demo", "--port", "0", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("will not wipe it"));
    assert!(dir.path().join("audit.jsonl").exists());
}
