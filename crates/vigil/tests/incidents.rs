//! Fleet incidents with real processes and a real PostgreSQL: six bots lose their database
//! (a proxy in front of it stops); vigil's own `sql` check says `unknown` and every bot
//! crashes with "connection refused". One incident opens, one notification goes out, no bot
//! is quarantined or spends its budget on it; once the database is back a canary proves it
//! and the others start one by one.

mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{Fleet, Proxy, metric, postgres_url, record_time, via};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Every instance `bot@1` … `bot@6` in `state`.
fn six(fleet: &Fleet, state: &str) -> bool {
    (1..=6).all(|i| fleet.status(&format!("bot@{i}"))["state"] == state)
}

/// What the webhook was told, event by event.
fn told(hook: &Sink) -> Vec<String> {
    hook.received()
        .iter()
        .flat_map(|r| {
            let body: serde_json::Value =
                serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["event"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// When the held agents were started again after the incident resolved, in order, each at
/// least `gap` after the one before.
fn released_spread(fleet: &Fleet, gap: Duration) -> Vec<std::time::SystemTime> {
    let resolved_at = record_time(&fleet.records(Some("incident_resolved"))[0]);
    let mut starts: Vec<_> = fleet
        .records(Some("resumed"))
        .iter()
        .map(record_time)
        .filter(|t| *t >= resolved_at)
        .collect();
    starts.sort();
    for pair in starts.windows(2) {
        let between = pair[1].duration_since(pair[0]).unwrap();
        assert!(between >= gap, "a burst: {starts:?}");
    }
    starts
}

#[test]
#[ignore = "needs PostgreSQL: set VIGIL_TEST_POSTGRES_URL"]
fn a_database_outage_is_one_incident_and_the_fleet_comes_back_spread_out() {
    let pg = postgres_url();
    let proxy = Proxy::start(&common::host_port(&pg));
    let url = via(&pg, &proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    let hook = Sink::http(dir.path(), &[]);
    let config = format!(
        r#"[incidents]
probe_every = "2s"
probe_for = "2s"
spread = "1s"

[notify.ops]
kind = "webhook"
url = "{hook}"

[agents.bot]
instances = ["1", "2", "3", "4", "5", "6"]
# A bot that trades while its database answers, and dies the way psycopg does when it does not.
command = ["sh", "-c", "while psql \"$DB\" -qtAc 'select 1' >/dev/null 2>&1; do sleep 0.2; done; psql \"$DB\" -qtAc 'select 1'; exit 1"]
env = {{ DB = "{url}" }}

[agents.bot.policy]
max_restarts = 3
window = "10m"

[[agents.bot.checks]]
kind = "sql"
url = "{url}"
query = "SELECT now()"
max_age = "1h"
interval = "300ms"
timeout = "1s"
"#,
        hook = hook.url("/hook"),
    );
    let mut fleet = Fleet::new(&config);
    fleet.start();
    fleet.wait_for("six bots running", SECS(20), |f| six(f, "running"));
    // Let every check prove the database once.
    std::thread::sleep(Duration::from_millis(800));

    let addr = proxy.addr.clone();
    proxy.stop();
    fleet.wait_for("an incident", SECS(20), |f| {
        !f.records(Some("incident_opened")).is_empty()
    });
    fleet.wait_for("all six held", SECS(20), |f| six(f, "waiting"));
    let opened = fleet.records(Some("incident_opened"));
    assert_eq!(opened.len(), 1, "{opened:?}");
    // One cause for all: the database their own checks found unreachable, or (when the bots
    // died before vigil's probe noticed) what their logs say, in either case the database.
    let target = format!("target:postgres://{addr}/test");
    let cause = opened[0]["metadata"]["cause"].as_str().unwrap().to_string();
    assert!(
        cause == target || cause == "rule:database_unreachable",
        "{opened:?}"
    );
    let waiting = fleet.status("bot@6");
    assert!(
        waiting["waiting_on"]["text"]
            .as_str()
            .unwrap()
            .contains("incident 1"),
        "{waiting}"
    );
    // Before the incident opened at most two bots were restarted; nobody is quarantined.
    assert!(fleet.records(Some("restart")).len() <= 2);
    let out = fleet.vigil(&["incidents"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("OPEN") && text.contains("unreachable"),
        "{text}"
    );
    let metrics = fleet.http("GET", "/metrics", &[], "").1;
    assert_eq!(metric(&metrics, "vigil_incidents_open"), Some(1.0));

    // A canary probes every 2 s, then 4 s…: the database is still down, nobody else moves.
    std::thread::sleep(SECS(5));
    assert!(fleet.records(Some("escalated")).is_empty());
    assert!(fleet.records(Some("rate_limited")).is_empty());

    // The database is back where it was.
    let _back = Proxy::start_at(&addr, &common::host_port(&pg));
    fleet.wait_for("the incident resolved", SECS(30), |f| {
        !f.records(Some("incident_resolved")).is_empty()
    });
    fleet.wait_for("all six running again", SECS(30), |f| six(f, "running"));
    let starts = released_spread(&fleet, Duration::from_millis(900));
    assert!(starts.len() >= 4, "{starts:?}");
    assert!(fleet.records(Some("escalated")).is_empty());
    assert!(fleet.records(Some("restart")).len() <= 2);

    // People were told once that it opened and once that it was resolved.
    fleet.wait_for("two notifications", SECS(10), |_| {
        hook.received().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let told = told(&hook);
    assert_eq!(told, ["incident_opened", "incident_resolved"], "{told:?}");
    let metrics = fleet.http("GET", "/metrics", &[], "").1;
    assert_eq!(metric(&metrics, "vigil_incidents_open"), Some(0.0));
    assert_eq!(
        metric(
            &metrics,
            &format!("vigil_incidents_total{{cause=\"{cause}\"}}")
        ),
        Some(1.0)
    );
    fleet.stop();
}

#[test]
fn a_429_storm_on_six_bots_is_one_incident_one_notification_and_no_burst() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Sink::http(dir.path(), &[]);
    // Each bot trades until the exchange rate-limits everyone (`storm`), and runs on once the
    // storm is over (`over`).
    let config = format!(
        r#"[incidents]
probe_every = "1s"
probe_for = "1s"
spread = "500ms"

[notify.ops]
kind = "webhook"
url = "{hook}"

[agents.bot]
instances = ["1", "2", "3", "4", "5", "6"]
command = ["sh", "-c", "if [ -e over ]; then exec sleep 730201; fi; while [ ! -e storm ]; do sleep 0.05; done; echo 'ccxt.base.errors.RateLimitExceeded: binance 429 Too Many Requests' >&2; exit 1"]

[agents.bot.policy]
throttle_delay = "30s"
"#,
        hook = hook.url("/hook"),
    );
    let mut fleet = Fleet::new(&config);
    fleet.start();
    fleet.wait_for("six bots running", SECS(20), |f| six(f, "running"));
    std::fs::write(fleet.path("storm"), "").unwrap();
    fleet.wait_for("all six held", SECS(20), |f| six(f, "waiting"));
    let opened = fleet.records(Some("incident_opened"));
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["metadata"]["cause"], "rule:rate_limited");
    // vigil dies mid-incident (kill -9) and comes back: the bots are held again, not started
    // into the storm all at once.
    fleet.signal(libc::SIGKILL);
    fleet.wait_exit(SECS(5));
    fleet.start();
    fleet.wait_for("all six held again", SECS(20), |f| six(f, "waiting"));
    let again = fleet
        .records(Some("waiting"))
        .into_iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .unwrap()
                .contains("after vigil restarted")
        })
        .count();
    assert_eq!(again, 6);
    assert!(
        fleet.records(Some("start")).len() <= 6,
        "nobody started by the new vigil"
    );
    // The exchange is fine again.
    std::fs::write(fleet.path("over"), "").unwrap();
    fleet.wait_for("all six running again", SECS(30), |f| six(f, "running"));
    let starts = released_spread(&fleet, Duration::from_millis(450));
    assert_eq!(starts.len(), 5, "the canary, then five: {starts:?}");
    // Nobody spent budget on the storm, nobody was quarantined.
    assert!(fleet.records(Some("restart")).is_empty());
    assert!(fleet.records(Some("escalated")).is_empty());
    // One notification for the storm (and one when it was over).
    fleet.wait_for("two notifications", SECS(10), |_| {
        hook.received().len() >= 2
    });
    let events = told(&hook);
    assert_eq!(events, ["incident_opened", "incident_resolved"]);
    fleet.stop();
}
