//! Which agent feeds which, with real processes and real files: an agent starts after what it
//! depends on, waits (not restarted, no budget spent) while that one is down, and a stale
//! output is blamed on the agent that produces it.

mod common;

use std::time::Duration;

use common::{Fleet, metric, pids_with};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A feed that writes `signals.json` every 100 ms until `stop` exists (then it crashes), and a
/// trader that watches that file: produced by the feed, and depending on it.
fn pipeline(marker: &str) -> String {
    format!(
        r#"[agents.feed]
command = ["sh", "-c", "while [ ! -e stop ]; do date > signals.json; sleep 0.1; done; echo 'feed lost'; exit 1"]

[agents.feed.policy]
max_restarts = 0

[[agents.feed.checks]]
kind = "file"
path = "signals.json"
max_age = "2s"
interval = "200ms"

[agents.trader]
command = ["sleep", "{marker}"]
depends_on = ["feed"]

[[agents.trader.checks]]
kind = "file"
path = "signals.json"
max_age = "1s"
interval = "200ms"
produced_by = "feed"
"#
    )
}

#[test]
fn a_downstream_waits_for_its_quarantined_upstream_instead_of_burning_its_budget() {
    let mut fleet = Fleet::new(&pipeline("720001"));
    fleet.start();
    // It starts once the feed has proven itself, not with it.
    fleet.wait_for("the trader running", SECS(10), |f| {
        f.status("trader")["state"] == "running"
    });
    let waited = fleet.records_of("trader", "waiting");
    assert_eq!(waited.len(), 1, "{waited:?}");
    assert_eq!(waited[0]["metadata"]["upstream"], "feed");
    let resumed = fleet.records_of("trader", "resumed");
    assert!(
        resumed[0]["reason"]
            .as_str()
            .unwrap()
            .ends_with(": starting it"),
        "{resumed:?}"
    );
    let trader_pid = pids_with("sleep 720001");
    assert_eq!(trader_pid.len(), 1);

    // The feed dies for good (a budget of no restarts): quarantined.
    std::fs::write(fleet.path("stop"), "").unwrap();
    fleet.wait_for("the feed quarantined", SECS(10), |f| {
        f.status("feed")["state"] == "quarantined"
    });
    fleet.wait_for("the trader waiting", SECS(5), |f| {
        f.status("trader")["state"] == "waiting"
    });
    // Its output goes stale: the trader's check fails, held for the feed.
    fleet.wait_for("the trader's check failing", SECS(10), |f| {
        f.status("trader")["checks"][0]["verdict"] == "failing"
    });
    std::thread::sleep(SECS(2));
    fleet.settled();
    let status = fleet.status("trader");
    assert_eq!(status["state"], "waiting");
    assert_eq!(status["waiting_on"]["agent"], "feed");
    assert_eq!(status["waiting_on"]["upstream_state"], "quarantined");
    let text = status["waiting_on"]["text"].as_str().unwrap();
    assert!(text.starts_with("waiting for feed: quarantined "), "{text}");
    assert!(
        status["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .ends_with("(waiting for its upstream)"),
        "{status}"
    );
    assert_eq!(status["depends_on"][0]["agent"], "feed");
    assert_eq!(status["depends_on"][0]["satisfied"], false);
    // Not restarted, not stopped, no budget spent; the same process runs on.
    assert!(fleet.records_of("trader", "restart").is_empty());
    assert!(fleet.records_of("trader", "stalled").is_empty());
    assert_eq!(status["budget_remaining"], status["restarts"]["max"]);
    assert_eq!(pids_with("sleep 720001"), trader_pid);
    let metrics = fleet.http("GET", "/metrics", &[], "").1;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_agent_state{agent="trader",state="waiting"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, r#"vigil_agent_up{agent="trader"}"#),
        Some(1.0)
    );
    let shown = fleet.vigil(&["status"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("waiting for feed: quarantined"), "{shown}");

    // A human mends the feed: it runs again, the trader's checks start over and pass.
    std::fs::remove_file(fleet.path("stop")).unwrap();
    let reset = fleet.vigil(&["reset", "feed"]);
    assert!(reset.status.success(), "{reset:?}");
    fleet.wait_for("the trader running again", SECS(10), |f| {
        let s = f.status("trader");
        s["state"] == "running" && s["checks"][0]["verdict"] == "ok"
    });
    assert!(fleet.records_of("trader", "restart").is_empty());
    assert_eq!(pids_with("sleep 720001"), trader_pid);
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_stale_output_stalls_its_producer_and_the_watcher_runs_on() {
    let mut fleet = Fleet::new(
        r#"[agents.feed]
command = ["sh", "-c", "date > signals.json; while true; do if [ ! -e hang ]; then date > signals.json; fi; sleep 0.1; done"]

[agents.trader]
command = ["sleep", "720002"]

[[agents.trader.checks]]
kind = "file"
name = "signals"
path = "signals.json"
max_age = "1s"
interval = "200ms"
produced_by = "feed"
"#,
    );
    fleet.start();
    fleet.wait_for("both running", SECS(10), |f| {
        f.status("trader")["state"] == "running" && f.status("feed")["state"] == "running"
    });
    let trader_pid = pids_with("sleep 720002");
    // The feed hangs: alive, writing nothing.
    std::fs::write(fleet.path("hang"), "").unwrap();
    fleet.wait_for("the feed stalled", SECS(10), |f| {
        !f.records_of("feed", "stalled").is_empty()
    });
    let stalled = &fleet.records_of("feed", "stalled")[0];
    assert_eq!(stalled["metadata"]["seen_by"], "trader");
    assert!(
        stalled["reason"]
            .as_str()
            .unwrap()
            .starts_with("output stale: file signals age="),
        "{stalled}"
    );
    fleet.wait_for("the feed restarted", SECS(10), |f| {
        !f.records_of("feed", "restart").is_empty()
    });
    std::fs::remove_file(fleet.path("hang")).unwrap();
    fleet.wait_for("the trader healthy again", SECS(10), |f| {
        let s = f.status("trader");
        s["state"] == "running" && s["checks"][0]["verdict"] == "ok"
    });
    fleet.settled();
    assert!(fleet.records_of("trader", "stalled").is_empty());
    assert!(fleet.records_of("trader", "restart").is_empty());
    assert_eq!(pids_with("sleep 720002"), trader_pid);
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn doctor_names_the_upstream_to_blame_and_fix_heals_it_first() {
    let mut fleet = Fleet::new(
        r#"[agents.feed]
command = ["sh", "-c", "while true; do if [ ! -e hang ]; then date > signals.json; fi; sleep 0.1; done"]

[[agents.feed.checks]]
kind = "file"
name = "signals"
path = "signals.json"
max_age = "30s"
interval = "10s"

[agents.trader]
command = ["sleep", "720003"]
depends_on = [{ agent = "feed", ready = "running" }]

[[agents.trader.checks]]
kind = "file"
name = "signals"
path = "signals.json"
max_age = "30s"
interval = "10s"
"#,
    );
    fleet.start();
    fleet.wait_for("both running", SECS(10), |f| {
        f.status("trader")["state"] == "running" && f.path("signals.json").exists()
    });
    let fine = fleet.vigil(&["doctor"]);
    assert_eq!(fine.status.code(), Some(0), "{fine:?}");
    assert!(String::from_utf8_lossy(&fine.stdout).contains("everything is fine"));

    // The feed hangs; the output goes stale by vigil doctor's clock (max_age is long enough
    // that vigil's own checks have not acted yet).
    std::fs::write(fleet.path("hang"), "").unwrap();
    // (A write already past its look at `hang` lands first.)
    std::thread::sleep(Duration::from_millis(400));
    let old = std::time::SystemTime::now() - SECS(120);
    std::fs::File::options()
        .write(true)
        .open(fleet.path("signals.json"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = fleet.vigil(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let trader = findings.iter().find(|f| f["agent"] == "trader").unwrap();
    assert_eq!(trader["blame"], "feed", "{report}");
    assert!(
        trader["action"]
            .as_str()
            .unwrap()
            .starts_with("waits for feed"),
        "{report}"
    );
    let feed = findings.iter().find(|f| f["agent"] == "feed").unwrap();
    assert!(feed["blame"].is_null());
    let restarts = fleet.records_of("feed", "restart").len();
    let fixed = fleet.vigil(&["doctor", "--fix"]);
    std::fs::remove_file(fleet.path("hang")).unwrap();
    let text = String::from_utf8_lossy(&fixed.stdout);
    assert!(text.contains("fixed: feed: restarted"), "{text}");
    assert!(!text.contains("fixed: trader"), "{text}");
    fleet.wait_for("the feed restarted", SECS(10), |f| {
        f.records_of("feed", "restart").len() > restarts
    });
    let restart = fleet.records_of("feed", "restart").pop().unwrap();
    assert!(
        restart["reason"]
            .as_str()
            .unwrap()
            .contains("vigil doctor --fix"),
        "{restart}"
    );
    assert_eq!(fleet.stop(), 0);
}
