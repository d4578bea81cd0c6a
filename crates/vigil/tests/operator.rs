//! What an operator reads — metrics, `/status`, `vigil status` — tells the truth about stalls,
//! quiet windows and stopped agents, and stays reachable while the config has a mistake.

mod common;

use std::time::{Duration, Instant};

use common::{Fleet, metric, unique};

/// Samples `/metrics` until `cond` holds, returning the text.
fn metrics_until(f: &Fleet, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = f.http("GET", "/metrics", &[], "").1;
        if cond(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{text}\n--- vigil output ---\n{}",
            f.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent that never sends a first sign of life is stalled, restarted, stalled again: one
/// stall to an operator, from the first verdict on, across every restart and across a restart
/// of vigil itself — so an alert with `for: 5m` on it can fire.
#[test]
fn a_stall_vigil_keeps_healing_stays_one_stall_across_restarts_of_the_agent_and_of_vigil() {
    let marker = unique("operator-stall");
    let mut f = Fleet::new(&format!(
        r#"[vigil]
node = "fra-1"

[agents.mute]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
[agents.mute.policy]
cooldown = "0s"
max_restarts = 1000
backoff_initial = "10ms"
backoff_max = "100ms"
[[agents.mute.checks]]
kind = "notify"
max_age = "500ms"

[agents.steady]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
"#
    ));
    f.start();
    let stalled = r#"vigil_agent_stalled{agent="mute"}"#;
    let since = r#"vigil_agent_stalled_since_seconds{agent="mute"}"#;
    let text = metrics_until(&f, "the first stall", |t| metric(t, stalled) == Some(1.0));
    let first_since = metric(&text, since).expect("since is shown while stalled");
    assert!(text.contains(r#"vigil_build_info{version=""#) && text.contains(r#"node="fra-1"}"#));
    // Every reason is there from 0, so `increase()` counts the first restart.
    assert_eq!(
        metric(
            &text,
            r#"vigil_agent_restarts_total{agent="steady",reason="exit"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, r#"vigil_agent_stalled{agent="steady"}"#),
        Some(0.0)
    );
    // Through several restarts, every sample says stalled, since the same moment.
    let until = f.records_of("mute", "restart").len() + 3;
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.records_of("mute", "restart").len() < until {
        let text = f.http("GET", "/metrics", &[], "").1;
        assert_eq!(metric(&text, stalled), Some(1.0), "{text}");
        assert_eq!(metric(&text, since), Some(first_since));
        assert!(Instant::now() < deadline, "{}", f.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    // `/status` says so too, and `vigil status` flags it.
    let (_, status) = f.api("GET", "/status/mute", "");
    assert!(status["stalled_since"].is_string(), "{status}");
    let out = f.vigil(&["status", "-c", f.config().to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("(STALLED)"), "{table}");
    assert_eq!(out.status.code(), Some(1), "{table}");

    // A new vigil (after kill -9) picks the same stall up.
    f.signal(9);
    f.wait_exit(Duration::from_secs(10));
    f.start();
    let text = metrics_until(&f, "the stall after vigil's restart", |t| {
        metric(t, stalled).is_some()
    });
    assert_eq!(metric(&text, stalled), Some(1.0), "{text}");
    assert_eq!(metric(&text, since), Some(first_since));
}

/// A stopped agent's last checks and progress describe a run that is over; an agent in its
/// quiet window has no progress age to alert on, and says it is quiet.
#[test]
fn stopped_and_quiet_agents_show_no_current_checks_or_progress() {
    let marker = unique("operator-quiet");
    let mut f = Fleet::new(&format!(
        r#"[agents.closed]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
# Always quiet: two windows that cover the whole day.
quiet = ["daily 00:00-12:00 UTC", "daily 11:59-00:01 UTC"]
[[agents.closed.checks]]
kind = "file"
path = "never-written"
max_age = "1s"

[agents.parked]
command = ["sh", "-c", "touch beat; while sleep 0.2; do touch beat; done # {marker}"]
cwd = "."
[[agents.parked.checks]]
kind = "heartbeat"
path = "beat"
max_age = "5s"
interval = "200ms"

[agents.fleet]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
instances = ["BTC_USDT"]
"#
    ));
    f.start();
    let text = metrics_until(&f, "parked's heartbeat check to pass", |t| {
        metric(t, r#"vigil_check_up{agent="parked""#) == Some(1.0)
    });
    assert_eq!(
        metric(&text, r#"vigil_agent_quiet{agent="closed"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, r#"vigil_agent_quiet{agent="parked"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"vigil_agent_last_progress_age_seconds{agent="closed""#
        ),
        None,
        "no progress is judged inside a quiet window"
    );
    // A template's instance is not exported as `instance` (the scrape target's label).
    assert!(
        text.contains(r#"{agent="fleet@BTC_USDT",template="fleet",agent_instance="BTC_USDT"}"#),
        "{text}"
    );
    // The age of a probed heartbeat is its age at the last look: it does not climb between
    // looks (a file touched every 200 ms never looks 5 s old).
    for _ in 0..20 {
        let (_, s) = f.api("GET", "/status/parked", "");
        let age = s["progress_age_s"].as_f64().expect("progress age");
        assert!(age < 1.0, "{s}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = f.vigil(&["stop", "parked", "-c", f.config().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = metrics_until(&f, "parked to stop", |t| {
        metric(t, r#"vigil_agent_state{agent="parked",state="stopped"}"#) == Some(1.0)
    });
    assert_eq!(metric(&text, r#"vigil_check_up{agent="parked""#), None);
    assert_eq!(
        metric(
            &text,
            r#"vigil_agent_last_progress_age_seconds{agent="parked""#
        ),
        None
    );
    let (_, s) = f.api("GET", "/status/parked", "");
    assert_eq!(s["checks"][0]["verdict"], "not_running", "{s}");
    assert!(s["progress_age_s"].is_null(), "{s}");
    assert_eq!(s["healthy"], false);
}

/// A config a reload refused must not lock the operator out of the running vigil: status,
/// audit and logs read only `[vigil]` and `[api]`. And `--state-dir` finds a vigil without
/// any config.
#[test]
fn a_broken_config_does_not_lock_the_operator_out() {
    let marker = unique("operator-broken");
    let mut f = Fleet::new(&format!(
        r#"[agents.bot]
command = ["sh", "-c", "echo hello; exec sleep 300 # {marker}"]
"#
    ));
    f.start();
    let addr = f.api_addr();
    // The mistake a person makes while editing: the running vigil keeps the old config.
    f.write_config(&format!(
        r#"[agents.bot]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
restart = "sometimes"
[api]
listen = "{addr}"
"#
    ));
    let config = f.config();
    let config = config.to_str().unwrap();
    assert_eq!(f.vigil(&["check", "-c", config]).status.code(), Some(2));
    for args in [
        vec!["status", "-c", config],
        vec!["audit", "-c", config],
        vec!["logs", "bot", "-c", config],
    ] {
        let out = f.vigil(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `explain` reaches vigil, which answers that the agent has not failed.
    let out = f.vigil(&["explain", "bot", "-c", config]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has not failed"),
        "{out:?}"
    );
    // No config at all, only the state dir (flag or environment).
    let state = f.state();
    let out = f.vigil(&[
        "status",
        "-c",
        "/nonexistent/vigil.toml",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("bot"),
        "{out:?}"
    );
}

/// `vigil status` does not hide a check that cannot tell (`unknown`): vigil is blind there.
#[test]
fn status_shows_unknown_checks_as_a_problem() {
    let marker = unique("operator-unknown");
    let mut f = Fleet::new(&format!(
        r#"[agents.bot]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
[[agents.bot.checks]]
name = "db"
kind = "exec"
command = ["/nonexistent/probe-{marker}"]
interval = "200ms"
"#
    ));
    f.start();
    f.wait_for("the check to be unknown", Duration::from_secs(10), |f| {
        f.api("GET", "/status/bot", "").1["checks"][0]["verdict"] == "unknown"
    });
    let out = f.vigil(&["status", "-c", f.config().to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("1 unknown"), "{table}");
    assert!(table.contains("check db unknown"), "{table}");
    assert_eq!(out.status.code(), Some(1), "{table}");
}

/// `vigil reload` says what changed — a check's command included — and refuses a broken
/// config with its errors; `vigil shutdown` stops every agent and vigil.
#[test]
fn reload_and_shutdown_from_the_cli() {
    let marker = unique("operator-reload");
    let config = |probe: &str| {
        format!(
            r#"[agents.bot]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
[[agents.bot.checks]]
kind = "exec"
command = ["{probe}"]
interval = "200ms"

[agents.other]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
"#
        )
    };
    let mut f = Fleet::new(&config("true"));
    f.start();
    let path = f.config();
    let path = path.to_str().unwrap();
    f.write_config(&config("/bin/true"));
    let out = f.vigil(&["reload", "-c", path]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(said.trim(), "reloaded: 1 updated (bot), 1 unchanged");

    f.write_config(&format!("{}\nstop_timeout = \"soon\"\n", config("true")));
    let out = f.vigil(&["reload", "-c", path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("reload refused, nothing changed"), "{err}");
    assert!(err.contains("bad duration \"soon\""), "{err}");

    // Started after a look for a copy outside vigil, on an I/O thread: wait for its pid.
    f.wait_for("other's pid", Duration::from_secs(5), |f| {
        f.api("GET", "/status/other", "").1["pid"].is_u64()
    });
    let (_, s) = f.api("GET", "/status/other", "");
    let pid = s["pid"].as_u64().unwrap() as i32;
    let out = f.vigil(&["shutdown", "-c", path]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("vigil is stopping 2 agents"), "{said}");
    assert!(said.contains("vigil has stopped"), "{said}");
    assert_eq!(f.wait_exit(Duration::from_secs(10)), 0);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// A template's logs together, and every agent's followed live, interleaved and stamped.
#[test]
fn logs_of_a_template_and_of_everything_followed() {
    let marker = unique("operator-logs");
    let mut f = Fleet::new(&format!(
        r#"[agents.tick]
command = ["sh", "-c", "echo start {{instance}}; while sleep 0.2; do echo tick {{instance}}; done # {marker}"]
instances = ["a", "b"]

[agents.solo]
command = ["sh", "-c", "echo solo here; exec sleep 300 # {marker}"]
"#
    ));
    f.start();
    f.wait_for("both instances to log", Duration::from_secs(10), |f| {
        ["tick@a", "tick@b"].iter().all(|n| {
            std::fs::read_to_string(f.state().join(format!("logs/{n}.log")))
                .is_ok_and(|l| l.contains("tick"))
        })
    });
    let path = f.config();
    let path = path.to_str().unwrap();
    let out = f.vigil(&["logs", "tick", "-n", "1", "-c", path]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("tick@a | tick a"), "{text}");
    assert!(lines[1].starts_with("tick@b | tick b"), "{text}");

    let mut follow = std::process::Command::new(common::VIGIL)
        .args(["logs", "--all", "-f", "-n", "0", "-c", path])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.iter().any(|l: &String| l.contains("tick@a | tick a"))
        && seen.iter().any(|l| l.contains("tick@b | tick b")))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("followed lines: {seen:?}"),
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    // HH:MM:SS.mmm, then the agent, then its line.
    let first = &seen[0];
    assert_eq!(first.as_bytes()[2], b':', "{first}");
    assert_eq!(first.as_bytes()[8], b'.', "{first}");
    assert!(first.contains(" | "), "{first}");
}

/// A machine without CA certificates (a minimal image): http checks and the CLI still work
/// over plain http; building an https-capable client must not bring vigil down.
#[test]
fn no_ca_certificates_does_not_break_plain_http() {
    let marker = unique("operator-noca");
    let port = common::free_port();
    let mut f = Fleet::new(&format!(
        r#"[api]
listen = "127.0.0.1:{port}"

[agents.web]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
[[agents.web.checks]]
kind = "http"
url = "http://127.0.0.1:{port}/health"
interval = "200ms"
"#
    ));
    let empty = f.path("no-certs");
    std::fs::create_dir(&empty).unwrap();
    // rustls reads the system's roots from these when set.
    let none = empty.join("none.pem").to_string_lossy().into_owned();
    f.env.push(("SSL_CERT_FILE".into(), none));
    f.env
        .push(("SSL_CERT_DIR".into(), empty.to_string_lossy().into_owned()));
    f.start();
    f.wait_for("the http check to pass", Duration::from_secs(10), |f| {
        f.api("GET", "/status/web", "").1["checks"][0]["verdict"] == "ok"
    });
    let out = f.vigil(&["status", "-c", f.config().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(f.output().contains("cannot set up https"), "{}", f.output());
}

/// A database check against a port nothing listens on says so at once, not "no connection
/// within the check's timeout" after waiting all of it.
#[test]
fn a_refused_database_port_is_reported_as_refused_at_once() {
    let marker = unique("operator-refused");
    let port = common::free_port();
    let mut f = Fleet::new(&format!(
        r#"[agents.bot]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
[[agents.bot.checks]]
name = "db"
kind = "sql"
url = "postgres://vigil@127.0.0.1:{port}/trading"
query = "SELECT now()"
max_age = "1h"
interval = "200ms"
timeout = "20s"
"#
    ));
    f.start();
    let started = Instant::now();
    f.wait_for("the check to say why", Duration::from_secs(10), |f| {
        f.api("GET", "/status/bot", "").1["checks"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("connection refused by 127.0.0.1:{port}")))
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    let (_, s) = f.api("GET", "/status/bot", "");
    assert_eq!(s["checks"][0]["verdict"], "unknown", "{s}");
}
