//! Health checks against real things: files, the notify socket (a Python agent using only
//! the standard library), HTTP, commands, PostgreSQL and Redis.

mod common;

use std::time::Duration;

use common::{Fleet, Proxy, pids_with, postgres_url, record_time, redis_url, unique, via};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn stalls(f: &Fleet, agent: &str) -> Vec<serde_json::Value> {
    f.records_of(agent, "stalled")
}

#[test]
fn a_bot_that_stops_touching_its_heartbeat_is_restarted_max_age_later_not_a_poll_later() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("hb");
    let mut fleet = Fleet::new(&format!(
        r#"[agents.bot]
# Touches its heartbeat five times, 100ms apart, then hangs.
command = ["sh", "-c", "for i in 1 2 3 4 5; do touch {hb}; sleep 0.1; done; exec sleep 800001"]
[[agents.bot.checks]]
kind = "heartbeat"
path = "{hb}"
max_age = "1s"
interval = "1h"
"#,
        hb = hb.display()
    ));
    fleet.start();
    fleet.wait_for("stall", SECS(10), |f| !stalls(f, "bot").is_empty());
    let stall = &stalls(&fleet, "bot")[0];
    let reason = stall["reason"].as_str().unwrap();
    assert!(reason.starts_with("stalled: heartbeat age=1"), "{reason}");
    assert!(reason.ends_with(" > 1s"), "{reason}");
    // Seen one max_age after the last touch, though the poll interval is an hour: the age
    // vigil measured at the verdict is just over 1s.
    let age: f64 = reason
        .trim_start_matches("stalled: heartbeat age=")
        .split('s')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1.0..1.5).contains(&age),
        "seen {age}s after the last touch"
    );
    fleet.wait_for("restart", SECS(5), |f| {
        !f.records_of("bot", "restart").is_empty()
    });
    assert_eq!(
        fleet.records_of("bot", "restart")[0]["reason"],
        stall["reason"]
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_python_agent_heartbeats_through_the_notify_socket_and_nobody_else_can() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.py");
    std::fs::write(
        &script,
        r#"import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(addr)
time.sleep(0.3)                      # a slow start: not ready yet
s.send(b"READY=1\nSTATUS=trading BTC_USDT")
for _ in range(int(sys.argv[1])):
    time.sleep(0.2)
    s.send(b"WATCHDOG=1")
print("stuck", flush=True)
time.sleep(800002)
"#,
    )
    .unwrap();
    let mut fleet = Fleet::new(&format!(
        r#"[agents.bot]
command = ["python3", "{script}", "8"]
[[agents.bot.checks]]
kind = "notify"
max_age = "1s"
ready = true
grace = "3s"

[agents.impostor]
# Another agent trying to keep `bot` alive by writing to the same socket: ignored.
command = ["python3", "-c", "import os,socket,time\naddr=os.environ.get('NOTIFY_SOCKET') or open('{sock}').read()\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\nwhile True:\n  s.sendto(b'WATCHDOG=1', addr)\n  time.sleep(0.05)"]
"#,
        script = script.display(),
        sock = dir.path().join("sockpath").display(),
    ));
    std::fs::write(
        dir.path().join("sockpath"),
        fleet.state().join("notify.sock").to_str().unwrap(),
    )
    .unwrap();
    fleet.start();
    fleet.wait_for("stall", SECS(15), |f| !stalls(f, "bot").is_empty());
    let reason = stalls(&fleet, "bot")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.starts_with("stalled: notify no WATCHDOG=1 for 1"),
        "{reason}"
    );
    // It heartbeat for 8 × 0.2s after READY at ~0.3s: the stall cannot come before ~2.9s.
    let started = record_time(&fleet.records_of("bot", "start")[0]);
    let stalled = record_time(&stalls(&fleet, "bot")[0]);
    assert!(stalled.duration_since(started).unwrap() > Duration::from_millis(2500));
    // The impostor was running (and sending) the whole time.
    assert!(
        fleet.records_of("impostor", "exit").is_empty(),
        "{}",
        fleet.output()
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_slow_starter_inside_grace_is_not_killed() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("hb");
    let mut fleet = Fleet::new(&format!(
        r#"[agents.slow]
# Needs 1.5s before its first heartbeat, then beats every 100ms.
command = ["sh", "-c", "sleep 1.5; while true; do touch {hb}; sleep 0.1; done"]
[[agents.slow.checks]]
kind = "heartbeat"
path = "{hb}"
max_age = "500ms"
grace = "3s"
"#,
        hb = hb.display()
    ));
    fleet.start();
    // Its first heartbeat comes 1.5 s in, long after max_age: the check has looked, and grace
    // kept the verdict from counting.
    fleet.wait_for("the first heartbeat seen", SECS(10), |f| {
        verdicts(f, "slow")
            .first()
            .is_some_and(|(_, v, _)| v == "ok")
    });
    fleet.settled();
    assert!(
        stalls(&fleet, "slow").is_empty(),
        "killed inside its grace:\n{}",
        fleet.output()
    );
    assert_eq!(fleet.records_of("slow", "start").len(), 1);
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_quiet_window_suppresses_the_stall_verdict() {
    let mut fleet = Fleet::new(
        r#"[agents.closed]
command = ["sleep", "800003"]
quiet = ["daily 00:00-23:59 UTC"]
[[agents.closed.checks]]
kind = "file"
path = "/nonexistent/output.jsonl"
max_age = "300ms"
interval = "100ms"
failure_threshold = 1
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("quiet    daily 00:00-23:59 UTC (quiet now); stall verdicts suspended"),
        "{text}"
    );
    fleet.start();
    fleet.wait_for("a failing verdict", SECS(5), |f| {
        !f.records_of("closed", "check").is_empty()
    });
    // With failure_threshold = 1 a counted failure stalls in the same batch as its record.
    fleet.settled();
    assert!(stalls(&fleet, "closed").is_empty());
    let check = &fleet.records_of("closed", "check")[0];
    assert!(
        check["reason"]
            .as_str()
            .unwrap()
            .ends_with("(quiet window)"),
        "{check}"
    );
    // Liveness still counts in a quiet window: a crash is restarted.
    let pid = pids_with("sleep 800003")[0];
    common::unsafe_kill(pid, 9);
    fleet.wait_for("restart", SECS(5), |f| {
        !f.records_of("closed", "restart").is_empty()
    });
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn http_exec_and_file_checks_judge_a_real_server_command_and_output() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("health"), "status: ok\n").unwrap();
    let mut fleet = Fleet::new(&format!(
        r#"[agents.web]
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", "{dir}"]
[[agents.web.checks]]
kind = "http"
url = "http://127.0.0.1:{port}/health"
expect_body = "status: ok"
interval = "100ms"
grace = "3s"
[[agents.web.checks]]
kind = "exec"
name = "flag"
command = ["sh", "-c", "echo checking $VIGIL_AGENT; test -e {dir}/flag || {{ echo 'flag file missing'; exit 1; }}"]
interval = "100ms"
grace = "3s"
[[agents.web.checks]]
kind = "file"
path = "{dir}/health"
min_size = 5
max_age = "1h"
interval = "100ms"
"#,
        dir = dir.path().display()
    ));
    std::fs::write(dir.path().join("flag"), "").unwrap();
    fleet.start();
    // All three pass; then the exec check's flag disappears.
    fleet.wait_for("all three pass", SECS(10), |f| {
        let v = verdicts(f, "web");
        v.len() == 3 && v.iter().all(|(_, verdict, _)| verdict == "ok")
    });
    assert!(stalls(&fleet, "web").is_empty(), "{}", fleet.output());
    std::fs::remove_file(dir.path().join("flag")).unwrap();
    fleet.wait_for("exec stall", SECS(10), |f| !stalls(f, "web").is_empty());
    let reason = stalls(&fleet, "web")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        reason,
        "stalled: exec flag sh exited with code 1: flag file missing"
    );
    std::fs::write(dir.path().join("flag"), "").unwrap();
    // Recovered means new output from the new run, not the file the old one left.
    fleet.wait_for("restart", SECS(10), |f| {
        !f.records_of("web", "restart").is_empty()
    });
    std::fs::write(dir.path().join("health"), "status: ok\n").unwrap();
    // After the restart the body check passes again: then the body changes.
    fleet.wait_for("recovered", SECS(10), |f| {
        !f.records_of("web", "recovered").is_empty()
    });
    std::fs::write(dir.path().join("health"), "status: degraded\n").unwrap();
    fleet.wait_for("http stall", SECS(10), |f| stalls(f, "web").len() == 2);
    let reason = stalls(&fleet, "web")[1]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("but the body does not match /status: ok/"),
        "{reason}"
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
#[ignore = "needs PostgreSQL: set VIGIL_TEST_POSTGRES_URL"]
fn a_stale_postgres_table_restarts_the_bot_with_the_age_in_the_reason() {
    let url = postgres_url();
    let table = unique("vigil_decisions");
    psql(
        &url,
        &format!("CREATE TABLE {table} (symbol text, created_at timestamptz)"),
    );
    psql(
        &url,
        &format!(
            "INSERT INTO {table} VALUES ('BTC_USDT', now() - interval '1523 seconds'), ('ETH_USDT', now())"
        ),
    );
    let mut fleet = Fleet::new(&format!(
        r#"[agents.trader]
command = ["sleep", "800004"]
instances = ["BTC_USDT", "ETH_USDT"]
[[agents.trader.checks]]
kind = "sql"
name = "decisions"
url = "{url}"
query = "SELECT max(created_at) FROM {table} WHERE symbol = $1"
params = ["{{instance}}"]
max_age = "2s"
interval = "200ms"
"#
    ));
    // ETH keeps deciding.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, table, stop) = (url.clone(), table.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                psql(
                    &url,
                    &format!("INSERT INTO {table} VALUES ('ETH_USDT', now())"),
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    fleet.start();
    fleet.wait_for("BTC stalls", SECS(15), |f| {
        !stalls(f, "trader@BTC_USDT").is_empty()
    });
    let reason = stalls(&fleet, "trader@BTC_USDT")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.starts_with("stalled: sql decisions age=152"),
        "{reason}"
    );
    assert!(reason.ends_with("s > 2s"), "{reason}");
    fleet.wait_for("BTC restarted", SECS(5), |f| {
        !f.records_of("trader@BTC_USDT", "restart").is_empty()
    });
    assert!(stalls(&fleet, "trader@ETH_USDT").is_empty());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(fleet.stop(), 0);
    psql(&url, &format!("DROP TABLE {table}"));
}

#[test]
#[ignore = "needs PostgreSQL and Redis: set VIGIL_TEST_POSTGRES_URL and VIGIL_TEST_REDIS_URL"]
fn stopping_postgres_or_redis_makes_their_checks_unknown_and_restarts_nobody() {
    let (pg, redis) = (postgres_url(), redis_url());
    let table = unique("vigil_progress");
    psql(&pg, &format!("CREATE TABLE {table} (ts timestamptz)"));
    psql(&pg, &format!("INSERT INTO {table} VALUES (now())"));
    let key = unique("vigil:hb");
    redis_cmd(&redis, &["SET", &key, &now_epoch().to_string()]);
    let pg_proxy = Proxy::start(&common::host_port(&pg));
    let redis_proxy = Proxy::start(&common::host_port(&redis));
    let mut fleet = Fleet::new(&format!(
        r#"[agents.a]
command = ["sleep", "800005"]
[[agents.a.checks]]
kind = "sql"
url = "{pg}"
query = "SELECT max(ts) FROM {table}"
max_age = "1h"
interval = "100ms"
timeout = "500ms"

[agents.b]
command = ["sleep", "800006"]
[[agents.b.checks]]
kind = "redis"
url = "{redis}"
key = "{key}"
max_age = "1h"
interval = "100ms"
timeout = "500ms"
"#,
        pg = via(&pg, &pg_proxy.addr),
        redis = via(&redis, &redis_proxy.addr),
    ));
    fleet.start();
    for agent in ["a", "b"] {
        fleet.wait_for("both pass", SECS(10), |f| {
            verdicts(f, agent)
                .first()
                .is_some_and(|(_, v, _)| v == "ok")
        });
    }
    assert!(
        fleet.records(Some("check")).is_empty(),
        "both pass:\n{}",
        fleet.output()
    );
    pg_proxy.stop();
    redis_proxy.stop();
    fleet.wait_for("unknown verdicts", SECS(10), |f| {
        ["a", "b"].iter().all(|a| {
            f.records_of(a, "check")
                .iter()
                .any(|r| r["metadata"]["verdict"] == "unknown")
        })
    });
    // Many intervals later (each probe moves its check's `at`), nobody was restarted.
    let at = |f: &Fleet, agent: &str| {
        let (_, body) = f.api("GET", &format!("/status/{agent}"), "");
        body["checks"][0]["at"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for agent in ["a", "b"] {
        let first = at(&fleet, agent);
        let mut seen = 0;
        let mut last = first.clone();
        fleet.wait_for("ten more probes", SECS(10), |f| {
            let now = at(f, agent);
            if now != last {
                seen += 1;
                last = now;
            }
            seen >= 10
        });
    }
    fleet.settled();
    for agent in ["a", "b"] {
        assert!(stalls(&fleet, agent).is_empty());
        assert!(fleet.records_of(agent, "restart").is_empty());
        assert_eq!(fleet.records_of(agent, "start").len(), 1);
    }
    let unknown = fleet.records_of("a", "check")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(unknown.starts_with("sql: ok → unknown"), "{unknown}");
    assert_eq!(fleet.stop(), 0);
    psql(&pg, &format!("DROP TABLE {table}"));
}

#[test]
#[ignore = "needs Redis: set VIGIL_TEST_REDIS_URL"]
fn redis_keys_with_epochs_and_keys_with_a_ttl() {
    let redis = redis_url();
    let stale = unique("vigil:stale");
    let ttl = unique("vigil:ttl");
    redis_cmd(&redis, &["SET", &stale, &(now_epoch() - 600).to_string()]);
    let mut fleet = Fleet::new(&format!(
        r#"[agents.epoch]
command = ["sleep", "800007"]
[[agents.epoch.checks]]
kind = "redis"
url = "{redis}"
key = "{stale}"
max_age = "1s"
interval = "100ms"

[agents.alive]
command = ["sleep", "800008"]
[[agents.alive.checks]]
kind = "redis"
url = "{redis}"
key = "{ttl}"
mode = "exists"
max_age = "1s"
interval = "100ms"
"#
    ));
    // `alive` refreshes its TTL key; `epoch` never updates its timestamp.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refresher = {
        let (redis, ttl, stop) = (redis.clone(), ttl.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                redis_cmd(&redis, &["SET", &ttl, "1", "PX", "400"]);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    fleet.start();
    fleet.wait_for("epoch stall", SECS(10), |f| !stalls(f, "epoch").is_empty());
    let reason = stalls(&fleet, "epoch")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.starts_with("stalled: redis age=60"), "{reason}");
    assert!(stalls(&fleet, "alive").is_empty());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    refresher.join().unwrap();
    // The TTL runs out: no key, so no sign of life.
    fleet.wait_for("ttl stall", SECS(10), |f| !stalls(f, "alive").is_empty());
    assert_eq!(fleet.stop(), 0);
}

/// Verdicts of every check of `agent`, by check name: (verdict, detail).
fn verdicts(f: &Fleet, agent: &str) -> Vec<(String, String, String)> {
    let (_, body) = f.api("GET", &format!("/status/{agent}"), "");
    body["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["verdict"].as_str().unwrap_or_default().to_string(),
                        c["detail"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn sql_checks(url: &str, queries: &[(&str, &str)]) -> String {
    queries
        .iter()
        .map(|(name, query)| {
            format!(
                "[[agents.db.checks]]\nkind = \"sql\"\nname = \"{name}\"\nurl = \"{url}\"\nquery = \"{query}\"\nmax_age = \"2d\"\ninterval = \"100ms\"\n"
            )
        })
        .collect()
}

fn wait_all_ok(f: &Fleet, agent: &str, n: usize) {
    f.wait_for("every sql check judged", SECS(15), |f| {
        let v = verdicts(f, agent);
        // Not before the agent runs (its checks say `not_running` until then).
        v.len() == n
            && v.iter()
                .all(|(_, verdict, _)| verdict != "pending" && verdict != "not_running")
    });
    let bad: Vec<_> = verdicts(f, agent)
        .into_iter()
        .filter(|(_, verdict, _)| verdict != "ok")
        .collect();
    assert!(bad.is_empty(), "not understood: {bad:?}\n{}", f.output());
}

#[test]
#[ignore = "needs PostgreSQL: set VIGIL_TEST_POSTGRES_URL"]
fn every_natural_postgres_time_type_is_understood() {
    let url = postgres_url();
    let table = unique("vigil_times");
    psql(&url, &format!("CREATE TABLE {table} (ts timestamptz)"));
    psql(
        &url,
        &format!("INSERT INTO {table} VALUES (now() - interval '5 seconds')"),
    );
    let queries = [
        ("timestamptz", format!("SELECT max(ts) FROM {table}")),
        (
            "timestamp",
            format!("SELECT max(ts) AT TIME ZONE 'UTC' FROM {table}"),
        ),
        ("date", "SELECT current_date".to_string()),
        (
            "numeric",
            format!("SELECT extract(epoch FROM max(ts)) FROM {table}"),
        ),
        (
            "numeric_ms",
            format!("SELECT extract(epoch FROM max(ts)) * 1000 FROM {table}"),
        ),
        (
            "float8",
            format!("SELECT extract(epoch FROM max(ts))::float8 FROM {table}"),
        ),
        (
            "float4",
            "SELECT extract(epoch FROM now())::float4".to_string(),
        ),
        (
            "int8",
            format!("SELECT extract(epoch FROM max(ts))::bigint FROM {table}"),
        ),
        (
            "int8_ms",
            format!("SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM {table}"),
        ),
        (
            "int4",
            format!("SELECT extract(epoch FROM max(ts))::int FROM {table}"),
        ),
        (
            "rfc3339",
            format!(
                "SELECT to_char(max(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD\\\"T\\\"HH24:MI:SS\\\"Z\\\"') FROM {table}"
            ),
        ),
    ];
    let queries: Vec<(&str, &str)> = queries.iter().map(|(n, q)| (*n, q.as_str())).collect();
    let mut fleet = Fleet::new(&format!(
        "[agents.db]\ncommand = [\"sleep\", \"800011\"]\n{}",
        sql_checks(&url, &queries)
    ));
    fleet.start();
    wait_all_ok(&fleet, "db", queries.len());
    assert_eq!(fleet.stop(), 0);
    psql(&url, &format!("DROP TABLE {table}"));
}

#[test]
fn every_natural_sqlite_time_type_is_understood() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.db");
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3,time\nc=sqlite3.connect('{}')\nnow=time.time()-5\nc.execute('CREATE TABLE t (iso TEXT, secs INTEGER, ms INTEGER, real REAL, plain TEXT)')\nc.execute('INSERT INTO t VALUES (strftime(\\'%Y-%m-%dT%H:%M:%SZ\\', ?, \\'unixepoch\\'), ?, ?, ?, datetime(?, \\'unixepoch\\'))', (now, int(now), int(now*1000), now, now))\nc.commit()",
            db.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    let url = format!("sqlite://{}", db.display());
    let queries = [
        ("rfc3339", "SELECT max(iso) FROM t"),
        ("seconds", "SELECT max(secs) FROM t"),
        ("milliseconds", "SELECT max(ms) FROM t"),
        ("real", "SELECT max(real) FROM t"),
        ("datetime", "SELECT max(plain) FROM t"),
        ("date", "SELECT date('now')"),
        ("numeric_text", "SELECT strftime('%s', 'now')"),
    ];
    let mut fleet = Fleet::new(&format!(
        "[agents.db]\ncommand = [\"sleep\", \"800012\"]\n{}",
        sql_checks(&url, &queries)
    ));
    fleet.start();
    wait_all_ok(&fleet, "db", queries.len());
    assert_eq!(fleet.stop(), 0);
}

#[test]
#[ignore = "needs Redis: set VIGIL_TEST_REDIS_URL"]
fn a_redis_that_never_answers_does_not_hold_up_probes_of_another_redis() {
    let redis = redis_url();
    // Accepts connections and never says a word: a hung Redis.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(64) {
            conns.push(c);
        }
    });
    let key = unique("vigil:live");
    let mut fleet = Fleet::new(&format!(
        r#"[agents.hung]
command = ["sleep", "800013"]
[[agents.hung.checks]]
kind = "redis"
url = "redis://{silent_addr}/"
key = "x"
max_age = "1h"
interval = "100ms"
timeout = "3s"

[agents.live]
command = ["sleep", "800014"]
[[agents.live.checks]]
kind = "redis"
url = "{redis}"
key = "{key}"
max_age = "1h"
interval = "100ms"
timeout = "500ms"
"#
    ));
    redis_cmd(&redis, &["SET", &key, &now_epoch().to_string()]);
    fleet.start();
    fleet.wait_for("live judged", SECS(10), |f| {
        verdicts(f, "live")
            .first()
            .is_some_and(|(_, v, _)| v != "pending" && v != "not_running")
    });
    std::thread::sleep(SECS(3));
    let live = verdicts(&fleet, "live");
    assert_eq!(live[0].1, "ok", "{live:?}");
    assert!(
        fleet.records_of("live", "check").is_empty(),
        "the live Redis was judged through the hung one: {:?}",
        fleet.records_of("live", "check")
    );
    assert_eq!(fleet.stop(), 0);
    drop(held);
}

#[test]
#[ignore = "needs Redis: set VIGIL_TEST_REDIS_URL"]
fn a_redis_key_left_by_the_previous_run_is_not_a_recovery() {
    let redis = redis_url();
    let key = unique("vigil:alive");
    // Written once, by the run before the crash; nobody refreshes it after.
    redis_cmd(&redis, &["SET", &key, "1", "PX", "20000"]);
    let mut fleet = Fleet::new(&format!(
        r#"[agents.bot]
command = ["sleep", "800015"]
[[agents.bot.checks]]
kind = "redis"
url = "{redis}"
key = "{key}"
mode = "exists"
max_age = "3s"
interval = "100ms"
"#
    ));
    fleet.start();
    fleet.wait_for("ok", SECS(10), |f| {
        verdicts(f, "bot")
            .first()
            .is_some_and(|(_, v, _)| v == "ok")
    });
    let pid = pids_with("sleep 800015")[0];
    common::unsafe_kill(pid, 9);
    fleet.wait_for("restart", SECS(5), |f| {
        !f.records_of("bot", "restart").is_empty()
    });
    fleet.wait_for("a stall: the key was not written again", SECS(10), |f| {
        !stalls(f, "bot").is_empty()
    });
    assert!(
        fleet.records_of("bot", "recovered").is_empty(),
        "{:?}",
        fleet.records_of("bot", "recovered")
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn broken_check_configs_are_reported_with_their_place() {
    let fleet = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "1"]
[[agents.bot.checks]]
kind = "heartbeet"
[[agents.bot.checks]]
kind = "sql"
url = "mysql://x"
query = "SELECT 1"
[[agents.bot.checks]]
kind = "http"
url = "http://x/"
expect_body = "("
interval = "5 mn"
quiet = ["weekends 00:00-23:59 Europe/Paris"]
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("unknown check kind \"heartbeet\""), "{err}");
    assert!(err.contains("did you mean \"heartbeat\"?"), "{err}");
    assert!(err.contains("vigil.toml:4:8"), "{err}");
    assert!(
        err.contains("[agents.bot.checks[2]] needs `max_age`"),
        "{err}"
    );
    assert!(
        err.contains("sql check URL \"mysql://x\" is not supported"),
        "{err}"
    );
    assert!(
        err.contains("`expect_body` in [agents.bot.checks[3]] is not a valid regex"),
        "{err}"
    );
    assert!(
        err.contains("unknown key `quiet` in [agents.bot.checks[3]]"),
        "{err}"
    );
}

fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Run one SQL statement against the test database.
fn psql(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect(sql);
    });
}

fn redis_cmd(url: &str, args: &[&str]) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().expect("connect to Redis");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query(&mut conn).expect("redis command");
}
