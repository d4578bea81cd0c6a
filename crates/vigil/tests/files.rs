//! Guarded config files with real processes and real files: a truncated config is restored
//! from its last known good copy and the agent starts; a missing required key with
//! `repair = "none"` quarantines the agent with a `config_error` diagnosis; secrets never
//! reach the journal.

mod common;

use std::time::Duration;

use common::{Fleet, pids_with, unsafe_kill};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SECRET: &str = "sk-live-9f8e7d6c5b4a";

/// A trader that reads its JSON config at start and dies on a bad one, as real bots do.
fn trader(marker: &str, repair: &str) -> String {
    format!(
        r#"[agents.trader]
command = ["python3", "-c", "import json, time, sys; c = json.load(open('config/' + sys.argv[1] + '.json')); c['risk']['max_position']; time.sleep({marker})", "{{instance}}"]
instances = ["BTC"]

[agents.trader.policy]
stable_after = "300ms"
cooldown = "0s"
backoff_initial = "10ms"

[[agents.trader.files]]
path = "config/{{instance}}.json"
required = ["/api_key_file", "/risk/max_position"]
defaults = {{ "/risk/max_position" = 0.1 }}
repair = "{repair}"
"#
    )
}

fn good_config() -> String {
    format!(
        r#"{{"api_key_file": "/etc/bot/key", "api_secret": "{SECRET}", "risk": {{"max_position": 0.5}}}}"#
    )
}

fn journal(fleet: &Fleet) -> String {
    std::fs::read_to_string(fleet.state().join("audit.jsonl")).unwrap_or_default()
}

#[test]
fn a_truncated_config_is_restored_from_its_last_good_copy_and_the_agent_starts() {
    let mut fleet = Fleet::new(&trader("730001", "restore"));
    std::fs::create_dir_all(fleet.path("config")).unwrap();
    std::fs::write(fleet.path("config/BTC.json"), good_config()).unwrap();
    fleet.start();
    // Once it has run healthy (stable_after), its config is kept as the last known good.
    let kept_dir = fleet.state().join("files").join("trader@BTC");
    fleet.wait_for("a good copy kept", SECS(10), |_| {
        walk(&kept_dir).iter().any(|p| p.contains("/good-"))
    });
    let first = pids_with("time.sleep(730001)");
    assert_eq!(first.len(), 1);

    // The file is cut short mid-write, and the bot crashes.
    let good = good_config();
    std::fs::write(fleet.path("config/BTC.json"), &good[..40]).unwrap();
    unsafe_kill(first[0], 9);
    fleet.wait_for("the file repaired", SECS(10), |f| {
        !f.records_of("trader@BTC", "file_repaired").is_empty()
    });
    fleet.wait_for("the trader running again", SECS(10), |_| {
        let pids = pids_with("time.sleep(730001)");
        pids.len() == 1 && pids != first
    });
    assert_eq!(
        std::fs::read_to_string(fleet.path("config/BTC.json")).unwrap(),
        good
    );
    let repaired = &fleet.records_of("trader@BTC", "file_repaired")[0];
    let reason = repaired["reason"].as_str().unwrap();
    assert!(reason.contains("was not valid JSON"), "{reason}");
    assert!(
        reason.contains("restored the good copy kept after run"),
        "{reason}"
    );
    let backup = repaired["metadata"]["backup"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(backup).unwrap(), &good[..40]);
    // Restarted once, for the crash; never started into the broken file.
    fleet.settled();
    assert!(fleet.records_of("trader@BTC", "escalated").is_empty());
    assert!(
        !journal(&fleet).contains(SECRET),
        "a secret reached the journal"
    );

    // `vigil files` shows it valid, with its copies, and never the secret.
    let out = fleet.vigil(&["files", "trader"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("state: valid"), "{text}");
    assert!(text.contains("backups of bad copies: 1"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_missing_required_key_with_repair_none_quarantines_with_a_config_diagnosis() {
    let mut fleet = Fleet::new(&trader("730002", "none"));
    std::fs::create_dir_all(fleet.path("config")).unwrap();
    let without_key = format!(r#"{{"api_secret": "{SECRET}", "risk": {{}}}}"#);
    std::fs::write(fleet.path("config/BTC.json"), &without_key).unwrap();
    fleet.start();
    fleet.wait_for("the trader quarantined", SECS(10), |f| {
        f.status("trader@BTC")["state"] == "quarantined"
    });
    let status = fleet.status("trader@BTC");
    assert_eq!(status["diagnosis"]["rule"], "config_error");
    assert!(
        status["quarantine_reason"]
            .as_str()
            .unwrap()
            .contains("missing /api_key_file, /risk/max_position (repair = \"none\")"),
        "{status}"
    );
    // Never started, the file untouched, nothing secret written.
    assert!(pids_with("time.sleep(730002)").is_empty());
    assert!(fleet.records_of("trader@BTC", "start").len() <= 1);
    assert!(fleet.records_of("trader@BTC", "exit").is_empty());
    assert_eq!(
        std::fs::read_to_string(fleet.path("config/BTC.json")).unwrap(),
        without_key
    );
    assert!(!journal(&fleet).contains(SECRET));
    let out = fleet.vigil(&["files", "trader@BTC", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["files"][0]["valid"], false);

    // Mended by hand, a reset starts it.
    std::fs::write(fleet.path("config/BTC.json"), good_config()).unwrap();
    assert!(fleet.vigil(&["reset", "trader@BTC"]).status.success());
    fleet.wait_for("the trader running", SECS(10), |_| {
        pids_with("time.sleep(730002)").len() == 1
    });
    assert_eq!(fleet.stop(), 0);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
