//! The HTTP API, metrics and CLI control against a real vigil and real agents.

mod common;

use std::time::Duration;

use common::{Fleet, metric, unique};
use serde_json::Value;

fn fleet(marker: &str) -> Fleet {
    Fleet::new(&format!(
        r#"[agents.worker]
command = ["sh", "-c", "exec sleep 300 # {marker}-worker"]

[agents.trader]
command = ["sh", "-c", "exec sleep 300 # {marker}-trader-{{instance}}"]
instances = ["BTC", "ETH"]
"#
    ))
}

fn state_of(f: &Fleet, name: &str) -> String {
    let (_, body) = f.api("GET", &format!("/status/{name}"), "");
    body["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn status_health_and_commands_over_http() {
    let marker = unique("api");
    let mut f = fleet(&marker);
    f.start();
    f.wait_for("three running agents", Duration::from_secs(10), |f| {
        ["worker", "trader@BTC", "trader@ETH"]
            .iter()
            .all(|n| state_of(f, n) == "running")
    });

    let (code, health) = f.api("GET", "/health", "");
    assert_eq!(code, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["agents"], 3);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));

    let (code, status) = f.api("GET", "/status", "");
    assert_eq!(code, 200);
    let agents = status["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    let btc = agents.iter().find(|a| a["name"] == "trader@BTC").unwrap();
    assert_eq!(btc["template"], "trader");
    assert_eq!(btc["instance"], "BTC");
    assert!(btc["pid"].as_u64().unwrap() > 1);
    assert_eq!(btc["restarts"]["total"], 0);
    assert!(btc["budget_remaining"].as_u64().unwrap() > 0);

    // A template name answers for all its instances; an unknown name is a JSON 404.
    let (code, both) = f.api("GET", "/status/trader", "");
    assert_eq!(code, 200);
    assert_eq!(both["agents"].as_array().unwrap().len(), 2);
    let (code, err) = f.api("GET", "/status/workr", "");
    assert_eq!(code, 404);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("did you mean `worker`"),
        "{err}"
    );

    // A restart with a reason: a new process, and the journal names the caller.
    let old = f.api("GET", "/status/worker", "").1["pid"].clone();
    let (code, body) = f.api(
        "POST",
        "/agents/worker/restart",
        r#"{"reason": "deploying v2"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "restarting");
    f.wait_for("a new worker", Duration::from_secs(10), |f| {
        let (_, now) = f.api("GET", "/status/worker", "");
        now["state"] == "running" && now["pid"] != old
    });
    let restart = f.records_of("worker", "restart");
    let reason = restart.last().unwrap()["reason"].as_str().unwrap();
    assert!(
        reason.contains("api") && reason.contains("deploying v2"),
        "{reason}"
    );

    // A template stops every instance.
    let (code, body) = f.api("POST", "/agents/trader/stop", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    f.wait_for("traders stopped", Duration::from_secs(10), |f| {
        state_of(f, "trader@BTC") == "stopped" && state_of(f, "trader@ETH") == "stopped"
    });
    let (code, _) = f.api("POST", "/agents/trader@BTC/start", "");
    assert_eq!(code, 200);
    f.wait_for("BTC running again", Duration::from_secs(10), |f| {
        state_of(f, "trader@BTC") == "running"
    });

    // The journal over HTTP: filtered, newest last.
    let (code, audit) = f.api("GET", "/audit?agent=trader&action=stop", "");
    assert_eq!(code, 200);
    let recs = audit["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "{audit}");
    let (_, last) = f.api("GET", "/audit?limit=1", "");
    assert_eq!(last["records"].as_array().unwrap().len(), 1);
    assert_eq!(last["records"][0]["agent"], "trader@BTC");
}

#[test]
fn bad_requests_get_a_json_4xx_that_says_what_is_wrong() {
    let mut f = fleet(&unique("api-bad"));
    f.start();
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "POST",
            "/agents/worker/restart",
            "{not json",
            400,
            "must be empty or JSON",
        ),
        (
            "POST",
            "/agents/worker/explode",
            "",
            404,
            "unknown action `explode`",
        ),
        (
            "POST",
            "/agents/nobody/restart",
            "",
            404,
            "no agent or template named `nobody`",
        ),
        (
            "POST",
            "/agents/nobody/heartbeat",
            "",
            404,
            "no agent or template named `nobody`",
        ),
        (
            "POST",
            "/agents/worker/heartbeat",
            "",
            409,
            "no check of kind \"api\"",
        ),
        (
            "GET",
            "/audit?limit=zero",
            "",
            400,
            "`limit=zero` must be a number",
        ),
        (
            "GET",
            "/audit?action=explode",
            "",
            400,
            "not an audit action",
        ),
        ("GET", "/audit?since=yesterday", "", 400, "since"),
        (
            "GET",
            "/audit?colour=red",
            "",
            400,
            "unknown query parameter `colour`",
        ),
        ("GET", "/nowhere", "", 404, "no such endpoint: /nowhere"),
        (
            "GET",
            "/agents/worker/restart",
            "",
            405,
            "GET is not allowed",
        ),
    ];
    for (method, path, body, want, says) in cases {
        let (code, json) = f.api(method, path, body);
        assert_eq!(code, *want, "{method} {path}: {json}");
        let msg = json["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{method} {path}: {msg}");
    }
    let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(100_000));
    let (code, json) = f.api("POST", "/agents/worker/restart", &huge);
    assert_eq!(code, 413, "{json}");
    // Still alive and well.
    assert_eq!(f.api("GET", "/health", "").0, 200);
}

#[test]
fn a_token_protects_changes_and_refusals_are_audited() {
    let token = "s3cret-token-0123456789";
    let mut f = Fleet::new(&format!(
        r#"[api]
listen = "127.0.0.1:0"
token = "{token}"

[agents.worker]
command = ["sleep", "300"]
"#
    ));
    f.start();
    f.wait_for("worker running", Duration::from_secs(5), |f| {
        state_of(f, "worker") == "running"
    });
    let (code, body) = f.api("POST", "/agents/worker/stop", "");
    assert_eq!(code, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    let (code, _) = f.http(
        "POST",
        "/agents/worker/stop",
        &[
            ("Authorization", "Bearer wrong-token-0123456789"),
            ("Content-Type", "application/json"),
        ],
        "",
    );
    assert_eq!(code, 401);
    f.wait_for("an api_denied record", Duration::from_secs(5), |f| {
        !f.records(Some("api_denied")).is_empty()
    });
    let denied = &f.records(Some("api_denied"))[0];
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("/agents/worker/stop"),
        "{denied}"
    );
    assert!(f.records_of("worker", "stop").is_empty());

    // Reads stay open; the right token works.
    assert_eq!(f.api("GET", "/status", "").0, 200);
    let auth = format!("Bearer {token}");
    let (code, body) = f.http(
        "POST",
        "/agents/worker/stop",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        "",
    );
    assert_eq!(code, 200, "{body}");

    // The CLI takes the token from the config.
    let out = f.vigil(&["start", "worker", "-c", "vigil.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = f.vigil(&[
        "stop",
        "worker",
        "-c",
        "vigil.toml",
        "--token",
        "not-the-token-at-all",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// vigil listens on localhost without a token by default, and every web page the user opens
/// can send requests there: none of them may change anything, and a page on a name that
/// rebinds to 127.0.0.1 may not read anything.
#[test]
fn web_pages_can_neither_change_nor_read_vigil() {
    let marker = unique("csrf");
    let mut f = Fleet::new(&format!(
        r#"[agents.worker]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
"#
    ));
    f.start();
    f.wait_for("worker running", Duration::from_secs(10), |f| {
        state_of(f, "worker") == "running"
    });
    let addr = f.api_addr();
    let stop = "/agents/worker/stop";
    let json = ("Content-Type", "application/json");

    // What a page may send without asking the browser's permission first (a "simple"
    // request): a form post, `text/plain`, or no body at all.
    for (headers, body) in [
        (vec![("Content-Type", "text/plain")], r#"{"reason": "x"}"#),
        (
            vec![("Content-Type", "application/x-www-form-urlencoded")],
            "reason=x",
        ),
        (vec![], ""),
    ] {
        let (code, text) = f.http("POST", stop, &headers, body);
        assert_eq!(code, 415, "{headers:?}: {text}");
        assert!(text.contains("application/json"), "{text}");
    }
    // A JSON request that a browser sent from another site (after a preflight vigil never
    // answers, or from an old browser): refused by its Origin or Sec-Fetch-Site.
    let evil_origin = ("Origin", "http://evil.example");
    let null_origin = ("Origin", "null");
    let cross_site = ("Sec-Fetch-Site", "cross-site");
    let same_site = ("Sec-Fetch-Site", "same-site");
    for extra in [evil_origin, null_origin, cross_site, same_site] {
        let (code, text) = f.http("POST", stop, &[json, extra], "{}");
        assert_eq!(code, 403, "{extra:?}: {text}");
    }
    // DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 is
    // same-origin with itself, but says so in Host.
    let port = addr.rsplit(':').next().unwrap();
    let evil_host = format!("evil.example:{port}");
    for path in [
        "/status",
        "/audit",
        "/agents/worker/explain",
        "/events",
        "/",
    ] {
        let (code, text) = f.http("GET", path, &[("Host", &evil_host)], "");
        assert_eq!(code, 403, "{path}: {text}");
        assert!(text.contains("[api] hosts"), "{text}");
    }
    let (code, text) = f.http("POST", stop, &[json, ("Host", &evil_host)], "{}");
    assert_eq!(code, 403, "{text}");

    f.settled();
    assert_eq!(state_of(&f, "worker"), "running");
    assert!(f.records_of("worker", "stop").is_empty());
    f.wait_for("an api_denied record", Duration::from_secs(5), |f| {
        !f.records(Some("api_denied")).is_empty()
    });

    // The dashboard cannot be framed, and says what it may load.
    let (code, head, _) = common::http_response(&addr, "GET", "/", &[], "");
    assert_eq!(code, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(head.contains("frame-ancestors 'none'"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");

    // The same page asking from its own origin (and `localhost`, and curl) still works.
    let local = format!("localhost:{port}");
    let own_origin = format!("http://{addr}");
    let (code, text) = f.http("GET", "/status", &[("Host", &local)], "");
    assert_eq!(code, 200, "{text}");
    let (code, text) = f.http(
        "POST",
        stop,
        &[
            json,
            ("Origin", &own_origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        r#"{"reason": "from the dashboard"}"#,
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = f.http("POST", "/agents/worker/start", &[json], "");
    assert_eq!(code, 200, "{text}");
}

#[test]
fn refuses_to_listen_beyond_this_machine_without_a_token() {
    let f = Fleet::new(
        r#"[api]
listen = "0.0.0.0:9120"

[agents.worker]
command = ["sleep", "300"]
"#,
    );
    let out = f.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("without a token"), "{stderr}");
}

#[test]
fn heartbeats_over_http_keep_an_api_check_healthy() {
    let marker = unique("api-hb");
    let mut f = Fleet::new(&format!(
        r#"[agents.pusher]
command = ["sh", "-c", "exec sleep 300 # {marker}"]

[[agents.pusher.checks]]
kind = "api"
max_age = "700ms"
grace = "0s"

[agents.pusher.policy]
cooldown = "0s"
"#
    ));
    f.start();
    // Heartbeats every 100 ms for 2 s: never a stall.
    for _ in 0..20 {
        let (code, body) = f.api("POST", "/agents/pusher/heartbeat", "");
        assert_eq!(code, 202, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        f.records_of("pusher", "stalled").is_empty(),
        "{:?}",
        f.records(None)
    );
    let (_, status) = f.api("GET", "/status/pusher", "");
    assert_eq!(status["checks"][0]["verdict"], "ok", "{status}");
    // Silence: the check fails and vigil restarts the agent.
    f.wait_for("a stall restart", Duration::from_secs(5), |f| {
        f.records_of("pusher", "restart")
            .iter()
            .any(|r| r["metadata"]["cause"] == "stall")
    });
}

#[test]
fn metrics_describe_the_fleet_and_pass_promtool() {
    let marker = unique("api-metrics");
    let mut f = Fleet::new(&format!(
        r#"[agents.crasher]
command = ["sh", "-c", "sleep 0.2; exit 3 # {marker}"]

[agents.crasher.policy]
cooldown = "0s"
max_restarts = 100

[agents.steady]
command = ["sh", "-c", "exec sleep 300 # {marker}"]

[[agents.steady.checks]]
kind = "exec"
command = ["true"]
interval = "100ms"
"#
    ));
    f.start();
    f.wait_for("two crash restarts", Duration::from_secs(10), |f| {
        f.records_of("crasher", "restart").len() >= 2
    });
    // Metrics show a picture at most 100 ms old.
    f.wait_for(
        "the exec check to pass and both restarts",
        Duration::from_secs(5),
        |f| {
            let text = f.http("GET", "/metrics", &[], "").1;
            text.contains(r#"vigil_check_up{agent="steady",check="exec",kind="exec"} 1"#)
                && metric(&text, r#"vigil_agent_restarts_total{agent="crasher""#).unwrap_or(0.0)
                    >= 1.0
                && metric(&text, r#"vigil_actions_total{action="restart"}"#).unwrap_or(0.0) >= 2.0
        },
    );
    let (code, text) = f.http("GET", "/metrics", &[], "");
    assert_eq!(code, 200);
    assert_eq!(
        metric(&text, r#"vigil_agent_up{agent="steady"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"vigil_agent_state{agent="steady",state="running"}"#
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &text,
            r#"vigil_agent_restarts_total{agent="crasher",reason="exit"}"#
        )
        .unwrap()
            >= 1.0
    );
    assert!(metric(&text, r#"vigil_actions_total{action="restart"}"#).unwrap() >= 2.0);
    assert!(
        metric(
            &text,
            "vigil_agent_restart_budget_remaining{agent=\"crasher\"}"
        )
        .is_some()
    );
    assert!(metric(&text, "vigil_check_duration_seconds_count{kind=\"exec\"}").unwrap() >= 1.0);
    assert!(metric(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(text.contains(&format!(
        "vigil_build_info{{version=\"{}\",node=\"",
        env!("CARGO_PKG_VERSION")
    )));
    for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(line.split(' ').count() > 3, "no help text: {line}");
    }

    // Prometheus itself asks for OpenMetrics.
    let (_, om) = f.http(
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        "",
    );
    assert!(om.trim_end().ends_with("# EOF"));
}

/// Prometheus's own linter accepts what vigil exports, crash-looping agent and all.
#[test]
#[ignore = "needs promtool: apt-get install prometheus (`.ci/run` does)"]
fn metrics_pass_promtool() {
    let marker = unique("api-promtool");
    let mut f = Fleet::new(&format!(
        r#"[agents.flaky]
command = ["sh", "-c", "sleep 0.2; exit 3 # {marker}"]
[[agents.flaky.checks]]
kind = "api"
max_age = "1h"
[agents.steady]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
instances = ["a", "b"]
"#
    ));
    f.start();
    f.wait_for("a restart", Duration::from_secs(10), |f| {
        !f.records_of("flaky", "restart").is_empty()
    });
    let (_, text) = f.http("GET", "/metrics", &[], "");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("this test needs promtool (apt-get install prometheus; `.ci/run` does)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

#[test]
fn cli_status_and_control_with_exit_codes() {
    let marker = unique("api-cli");
    let mut f = Fleet::new(&format!(
        r#"[agents.worker]
command = ["sh", "-c", "exec sleep 300 # {marker}"]

[agents.broken]
command = ["sh", "-c", "exit 1"]

[agents.broken.policy]
max_restarts = 1
cooldown = "0s"
on_exhausted = "quarantine"
"#
    ));
    // Not running yet: exit 3, and a message that says so.
    let out = f.vigil(&["status", "-c", "vigil.toml"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach vigil"));

    f.start();
    f.wait_for("broken quarantined", Duration::from_secs(10), |f| {
        state_of(f, "broken") == "quarantined" && state_of(f, "worker") == "running"
    });
    let out = f.vigil(&["status", "-c", "vigil.toml"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a quarantined agent is a problem:\n{table}"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LAST PROBLEM"),
        "{table}"
    );
    assert!(
        table.contains("QUARANTINED") && table.contains("RUNNING"),
        "{table}"
    );

    let out = f.vigil(&["status", "worker", "-c", "vigil.toml", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["agents"][0]["state"], "running");

    let out = f.vigil(&[
        "restart",
        "worker",
        "-c",
        "vigil.toml",
        "--reason",
        "by hand",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("worker: restarting"));
    let reason = f.records_of("worker", "restart").last().unwrap()["reason"].clone();
    assert!(reason.as_str().unwrap().contains("cli"), "{reason}");

    // Restarting a quarantined agent is refused (its problem: exit 1); a typo is usage (2).
    let out = f.vigil(&["restart", "broken", "-c", "vigil.toml"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reset"));
    let out = f.vigil(&["restart", "wroker", "-c", "vigil.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `worker`"));
    let out = f.vigil(&["reset", "broken", "-c", "vigil.toml"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
