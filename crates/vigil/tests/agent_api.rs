//! Issue 17: what agents ask of vigil — checkpoints (compare-and-swap, durable, in SQLite or
//! PostgreSQL), per-run tokens, declared degradation — with real processes and a real vigil.

mod common;

use std::time::Duration;

use common::{Fleet, Proxy, postgres_url, read, unique};
use serde_json::Value;

/// Each agent writes its run's token (and how many times it started) where the test reads it.
fn token_agent(name: &str) -> String {
    format!(
        r#"[agents.{name}]
command = ["sh", "-c", "echo \"$VIGIL_AGENT_TOKEN\" > token.$VIGIL_AGENT.tmp && mv token.$VIGIL_AGENT.tmp token.$VIGIL_AGENT; exec sleep 300"]
"#
    )
}

fn token_of(f: &Fleet, agent: &str) -> String {
    let path = f.path(&format!("token.{agent}"));
    f.wait_for(&format!("{agent}'s token"), Duration::from_secs(10), |_| {
        path.exists()
    });
    read(&path).trim().to_string()
}

fn put(f: &Fleet, agent: &str, token: &str, if_match: Option<&str>, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Content-Type", "application/json")];
    if !token.is_empty() {
        headers.push(("Authorization", &auth));
    }
    if let Some(v) = if_match {
        headers.push(("If-Match", v));
    }
    let (code, text) = f.http(
        "PUT",
        &format!("/agents/{agent}/checkpoint"),
        &headers,
        body,
    );
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get(f: &Fleet, path: &str, token: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let headers: Vec<(&str, &str)> = if token.is_empty() {
        Vec::new()
    } else {
        vec![("Authorization", &auth)]
    };
    let (code, text) = f.http("GET", path, &headers, "");
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn post(f: &Fleet, path: &str, token: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Content-Type", "application/json")];
    if !token.is_empty() {
        headers.push(("Authorization", &auth));
    }
    let (code, text) = f.http("POST", path, &headers, body);
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn a_runs_token_writes_its_own_agent_only_and_ends_with_its_run() {
    let mut f = Fleet::new(&format!("{}\n{}", token_agent("a"), token_agent("b")));
    f.start();
    let a = token_of(&f, "a");
    let b = token_of(&f, "b");
    assert!(a.starts_with("vat_") && a != b, "{a} {b}");

    assert_eq!(put(&f, "a", &a, None, r#"{"n":1}"#).0, 201);
    let (code, body) = put(&f, "b", &a, None, r#"{"n":1}"#);
    assert_eq!(code, 403, "A's token wrote B's checkpoint: {body}");
    let (code, _) = post(&f, "/agents/b/status", &a, r#"{"state":"ok"}"#);
    assert_eq!(code, 403, "A's token spoke for B");
    // No control endpoint, not even for itself.
    for verb in ["restart", "stop", "start", "reset"] {
        let (code, body) = post(&f, &format!("/agents/a/{verb}"), &a, "{}");
        assert_eq!(code, 403, "an agent token may {verb}: {body}");
    }
    assert_eq!(post(&f, "/reload", &a, "{}").0, 403);
    f.settled();
    assert!(
        f.records_of("a", "restart").is_empty(),
        "nothing was done with it"
    );
    // Its own: read back.
    let (code, body) = get(&f, "/agents/a/checkpoint", &a);
    assert_eq!((code, &body["document"]["n"]), (200, &Value::from(1)));

    // A new run: the old token is refused, the new one works.
    std::fs::remove_file(f.path("token.a")).unwrap();
    let (code, _) = post(&f, "/agents/a/restart", "", "{}");
    assert_eq!(code, 200);
    let a2 = token_of(&f, "a");
    assert_ne!(a, a2);
    let (code, body) = put(&f, "a", &a, None, r#"{"n":2}"#);
    assert_eq!(code, 401, "the token of a run that ended: {body}");
    assert_eq!(put(&f, "a", &a2, Some("1"), r#"{"n":2}"#).0, 200);

    // The token survives a restart of vigil (the run does, and vigil derives it again), and
    // never reaches vigil's log or journal.
    f.signal(9);
    let _ = f.wait_exit(Duration::from_secs(5));
    f.start();
    f.wait_for("a adopted", Duration::from_secs(10), |f| {
        f.status("a")["state"] == "running"
    });
    assert_eq!(put(&f, "a", &a2, Some("2"), r#"{"n":3}"#).0, 200);
    let journal = read(&f.state().join("audit.jsonl"));
    for t in [&a, &a2, &b] {
        assert!(!journal.contains(t.as_str()), "a token in the journal");
        assert!(!f.output().contains(t.as_str()), "a token in vigil's log");
    }
    assert!(
        f.records(Some("api_denied")).iter().any(|r| r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("with the token of a run of a")),
        "refusals are journaled"
    );
}

#[test]
fn checkpoints_are_compare_and_swap_versioned_and_survive_kill_9() {
    let mut f = Fleet::new(&format!("{}\n[store]\nkeep = 3\n", token_agent("bot")));
    f.start();
    let t = token_of(&f, "bot");
    assert_eq!(get(&f, "/agents/bot/checkpoint", &t).0, 404, "none yet");
    let (code, body) = put(&f, "bot", &t, Some("0"), r#"{"positions":["BTC"],"ts":1}"#);
    assert_eq!((code, &body["version"]), (201, &Value::from(1)));
    // `If-Match: 0` means "none yet": a second copy starting fresh cannot overwrite.
    let (code, body) = put(&f, "bot", &t, Some("0"), r#"{"zombie":true}"#);
    assert_eq!((code, &body["current_version"]), (412, &Value::from(1)));
    let (code, _) = put(
        &f,
        "bot",
        &t,
        Some("\"1\""),
        r#"{"positions":["BTC","ETH"],"ts":2}"#,
    );
    assert_eq!(code, 200);
    // A writer that read version 1 lost the race.
    let (code, body) = put(&f, "bot", &t, Some("1"), r#"{"zombie":true}"#);
    assert_eq!(
        (code, &body["current_version"]),
        (412, &Value::from(2)),
        "{body}"
    );
    for ts in 3..=5 {
        assert_eq!(
            put(&f, "bot", &t, None, &format!(r#"{{"ts":{ts}}}"#)).0,
            200
        );
    }

    // Durable before the answer: a kill -9 right after loses nothing.
    f.signal(9);
    let _ = f.wait_exit(Duration::from_secs(5));
    f.start();
    // (Until vigil has adopted the run again, its token is answered 503.)
    f.wait_for("the run adopted", Duration::from_secs(10), |f| {
        get(f, "/agents/bot/checkpoint", &t).0 != 503
    });
    let (code, body) = get(&f, "/agents/bot/checkpoint", &t);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 5);
    assert_eq!(body["document"], serde_json::json!({"ts": 5}));
    let (_, history) = get(&f, "/agents/bot/checkpoints", &t);
    let versions: Vec<i64> = history["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["version"].as_i64().unwrap())
        .collect();
    assert_eq!(
        versions,
        vec![5, 4, 3],
        "the last `keep` versions, newest first"
    );
    let (_, two) = get(&f, "/agents/bot/checkpoints?limit=2", &t);
    assert_eq!(two["checkpoints"].as_array().unwrap().len(), 2);

    // Status and the CLI show it.
    f.wait_for("the checkpoint in /status", Duration::from_secs(5), |f| {
        f.status("bot")["checkpoint"]["version"] == 5
    });
    let out = f.vigil(&["checkpoint", "bot", "-c", "vigil.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("version 5") && text.contains("\"ts\": 5"),
        "{text}"
    );
    let out = f.vigil(&[
        "checkpoint",
        "bot",
        "--history",
        "--json",
        "-c",
        "vigil.toml",
    ]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["checkpoints"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_checkpoints_and_requests_are_refused_with_a_reason() {
    let mut f = Fleet::new(&format!(
        "{}\n[agents.tpl]\ncommand = [\"sleep\", \"300\"]\ninstances = [\"x\"]\n",
        token_agent("bot")
    ));
    f.start();
    let t = token_of(&f, "bot");
    let (code, body) = put(&f, "bot", &t, None, "{not json");
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a JSON document"),
        "{body}"
    );
    let (code, _) = put(&f, "bot", &t, Some("seven"), "{}");
    assert_eq!(code, 400);
    let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (code, _) = put(&f, "bot", &t, None, &big);
    assert_eq!(code, 413, "over 1 MiB");
    let (code, body) = put(&f, "tpl", "", None, "{}");
    assert!(
        code == 400 && body["error"].as_str().unwrap().contains("template"),
        "{body}"
    );
    let (code, _) = put(&f, "nobody", "", None, "{}");
    assert_eq!(code, 404);
    let (code, _) = f.http(
        "PUT",
        "/agents/bot/checkpoint",
        &[("Content-Type", "text/plain")],
        "{}",
    );
    assert_eq!(code, 415, "a web page's form cannot write a checkpoint");
    let (code, body) = post(&f, "/agents/bot/status", &t, r#"{"state":"degraded"}"#);
    assert!(
        code == 400 && body["error"].as_str().unwrap().contains("reason"),
        "{body}"
    );
    let (code, _) = post(
        &f,
        "/agents/bot/status",
        &t,
        r#"{"state":"degraded","reason":"x","until":"2001-01-01T00:00:00Z"}"#,
    );
    assert_eq!(code, 400, "an `until` in the past");
    let (code, _) = post(&f, "/agents/bot/status", &t, r#"{"state":"sleepy"}"#);
    assert_eq!(code, 400);
    // Still fine afterwards.
    assert_eq!(put(&f, "bot", &t, None, "{}").0, 201);
}

#[test]
fn with_an_api_token_people_need_it_and_agents_need_their_own() {
    let mut f = Fleet::new(&format!(
        "{}\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"a-person-s-token-1234\"\n",
        token_agent("bot")
    ));
    f.start();
    let t = token_of(&f, "bot");
    assert_eq!(put(&f, "bot", "", None, "{}").0, 401);
    assert_eq!(
        get(&f, "/agents/bot/checkpoint", "").0,
        401,
        "a bot's state is private"
    );
    assert_eq!(put(&f, "bot", "wrong", None, "{}").0, 401);
    assert_eq!(put(&f, "bot", &t, None, r#"{"by":"bot"}"#).0, 201);
    let (code, body) = get(&f, "/agents/bot/checkpoint", "a-person-s-token-1234");
    assert_eq!((code, &body["document"]["by"]), (200, &Value::from("bot")));
}

/// An agent that stops beating right away: stalled after ~1 s unless it is degraded.
fn silent_agent(extra: &str) -> String {
    format!(
        r#"[agents.bot]
command = ["sh", "-c", "echo \"$VIGIL_AGENT_TOKEN\" > token.bot.tmp && mv token.bot.tmp token.bot; exec sleep 300"]
{extra}
[agents.bot.policy]
cooldown = "0s"
max_restarts = 100
llm_before_restart = false

[[agents.bot.checks]]
kind = "api"
max_age = "1s"
grace = "1s"
"#
    )
}

#[test]
fn a_declared_degradation_suspends_stall_verdicts_until_its_time() {
    let mut f = Fleet::new(&silent_agent(""));
    f.start();
    let t = token_of(&f, "bot");
    let until = (chrono::Utc::now() + chrono::Duration::seconds(4))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (code, body) = post(
        &f,
        "/agents/bot/status",
        &t,
        &format!(
            r#"{{"state":"degraded","reason":"binance 429, breaker open","until":"{until}"}}"#
        ),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "degraded");
    assert!(body["stall_checks_suspended_until"].is_string(), "{body}");
    f.wait_for("degraded in status", Duration::from_secs(5), |f| {
        f.status("bot")["degraded"]["reason"] == "binance 429, breaker open"
    });
    let metrics = f.http("GET", "/metrics", &[], "").1;
    assert_eq!(
        common::metric(&metrics, "vigil_agent_degraded{agent=\"bot\"}"),
        Some(1.0)
    );

    // The stall is seen (a positive sign) but not acted on.
    f.wait_for("the suspended stall", Duration::from_secs(10), |f| {
        f.records_of("bot", "degraded")
            .iter()
            .any(|r| r["metadata"]["suspended_stall"].is_string())
    });
    assert!(
        f.records_of("bot", "stalled").is_empty(),
        "stalled while degraded"
    );
    assert!(f.records_of("bot", "restart").is_empty());

    // Its time passes: the journal says why normal rules apply, and then they do.
    f.wait_for("the degradation's end", Duration::from_secs(10), |f| {
        !f.records_of("bot", "degraded_ended").is_empty()
    });
    f.wait_for("the stall acted on", Duration::from_secs(10), |f| {
        !f.records_of("bot", "stalled").is_empty()
    });
    let ended = &f.records_of("bot", "degraded_ended")[0];
    let stalled = &f.records_of("bot", "stalled")[0];
    assert!(common::record_time(ended) <= common::record_time(stalled));
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .contains("the time it declared has passed")
    );
}

#[test]
fn max_degraded_bounds_a_degradation_and_declaring_again_buys_no_more() {
    let mut f = Fleet::new(&silent_agent("").replace(
        "llm_before_restart = false",
        "llm_before_restart = false\nmax_degraded = \"2s\"",
    ));
    f.start();
    let t = token_of(&f, "bot");
    let degrade = |f: &Fleet| {
        post(
            f,
            "/agents/bot/status",
            &t,
            r#"{"state":"degraded","reason":"exchange maintenance"}"#,
        )
    };
    let (code, body) = degrade(&f);
    assert_eq!(code, 200);
    assert!(
        body["note"].as_str().unwrap().contains("max_degraded = 2s"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    // Declaring again within the episode does not extend it past its bound.
    let (_, again) = degrade(&f);
    let first = chrono::DateTime::parse_from_rfc3339(
        body["stall_checks_suspended_until"].as_str().unwrap(),
    )
    .unwrap();
    let second = chrono::DateTime::parse_from_rfc3339(
        again["stall_checks_suspended_until"].as_str().unwrap(),
    )
    .unwrap();
    assert!(second <= first, "{first} then {second}");
    f.wait_for("the bound", Duration::from_secs(10), |f| {
        f.records_of("bot", "degraded_ended").iter().any(|r| {
            r["reason"]
                .as_str()
                .unwrap_or("")
                .contains("max_degraded allows")
        })
    });
    f.wait_for("the stall acted on", Duration::from_secs(10), |f| {
        !f.records_of("bot", "stalled").is_empty()
    });
    // A crash is never suspended: the new run is not degraded.
    f.wait_for("a new run", Duration::from_secs(10), |f| {
        f.status("bot")["restarts"]["total"].as_u64() >= Some(1)
    });
    assert!(f.status("bot")["degraded"].is_null());
}

#[test]
fn degradation_is_declared_over_the_notify_socket_too() {
    let script = r#"
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", addr)
s.sendto(("DEGRADED=feed 429\nDEGRADED_UNTIL=%.3f" % (time.time() + 60)).encode(), addr)
open("declared", "w").close()
while not os.path.exists("clear"):
    time.sleep(0.05)
s.sendto(b"DEGRADED=0", addr)
time.sleep(300)
"#;
    let mut f = Fleet::new("");
    std::fs::write(f.path("bot.py"), script).unwrap();
    f.write_config(&format!(
        r#"[agents.bot]
command = ["python3", "{}"]
cwd = "{}"

[[agents.bot.checks]]
kind = "notify"
max_age = "1s"
grace = "1s"
"#,
        f.path("bot.py").display(),
        f.path("").display()
    ));
    f.start();
    f.wait_for("degraded", Duration::from_secs(10), |f| {
        f.status("bot")["degraded"]["reason"] == "feed 429"
    });
    f.wait_for("the suspended stall", Duration::from_secs(10), |f| {
        f.records_of("bot", "degraded")
            .iter()
            .any(|r| r["metadata"]["suspended_stall"].is_string())
    });
    assert!(f.records_of("bot", "stalled").is_empty());
    std::fs::write(f.path("clear"), "").unwrap();
    f.wait_for("ok again", Duration::from_secs(10), |f| {
        f.records_of("bot", "degraded_ended").iter().any(|r| {
            r["reason"]
                .as_str()
                .unwrap_or("")
                .contains("declared itself ok")
        })
    });
    f.wait_for("the stall acted on", Duration::from_secs(10), |f| {
        !f.records_of("bot", "stalled").is_empty()
    });
}

#[test]
#[ignore = "needs PostgreSQL: set VIGIL_TEST_POSTGRES_URL"]
fn checkpoints_in_postgresql_survive_vigil_and_wait_out_an_outage() {
    let table_free_agent = unique("pgbot");
    let pg = postgres_url();
    let proxy = Proxy::start(&common::host_port(&pg));
    let mut f = Fleet::new(&format!(
        "{}\n[store]\nurl = \"{}\"\n",
        token_agent(&table_free_agent),
        common::via(&pg, &proxy.addr)
    ));
    f.start();
    let t = token_of(&f, &table_free_agent);
    let (code, body) = put(&f, &table_free_agent, &t, Some("0"), r#"{"pnl":12.5}"#);
    assert_eq!(code, 201, "{body}");
    assert_eq!(put(&f, &table_free_agent, &t, Some("0"), "{}").0, 412);
    assert_eq!(
        put(&f, &table_free_agent, &t, Some("1"), r#"{"pnl":13}"#).0,
        200
    );

    // PostgreSQL away: 503 (the client keeps a local copy), and vigil supervises on.
    proxy.stop();
    let (code, body) = put(&f, &table_free_agent, &t, Some("2"), r#"{"pnl":14}"#);
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{body}"
    );
    assert!(!body["error"].as_str().unwrap().contains("password"));
    assert_eq!(f.status(&table_free_agent)["state"], "running");
    let back = Proxy::start_at(&proxy.addr, &common::host_port(&pg));
    f.wait_for("PostgreSQL back", Duration::from_secs(20), |f| {
        put(f, &table_free_agent, &t, Some("2"), r#"{"pnl":14}"#).0 == 200
    });

    // Another vigil on the same database reads it.
    f.stop();
    f.start();
    // (Stopping vigil stopped the agent: its run's token ended with it. A person reads.)
    let (code, body) = get(&f, &format!("/agents/{table_free_agent}/checkpoint"), "");
    assert_eq!((code, &body["version"]), (200, &Value::from(3)), "{body}");
    assert_eq!(body["document"]["pnl"], 14);
    drop(back);
}

#[test]
fn what_an_agent_declares_is_redacted_like_its_evidence() {
    let script = r#"
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(("STATUS=calling https://bob:hunter2pass@exchange.example/api with " + os.environ["EXCHANGE_API_SECRET"]).encode(), addr)
s.sendto(("DEGRADED=auth failed for " + os.environ["EXCHANGE_API_SECRET"]).encode(), addr)
open("token.bot", "w").write(os.environ["VIGIL_AGENT_TOKEN"])
time.sleep(300)
"#;
    let mut f = Fleet::new("");
    std::fs::write(f.path("bot.py"), script).unwrap();
    f.write_config(&format!(
        r#"[agents.bot]
command = ["python3", "{}"]
cwd = "{}"
env = {{ EXCHANGE_API_SECRET = "zq8-very-secret-value" }}

[[agents.bot.checks]]
kind = "notify"
max_age = "60s"
"#,
        f.path("bot.py").display(),
        f.path("").display()
    ));
    f.start();
    f.wait_for("degraded", Duration::from_secs(10), |f| {
        f.status("bot")["degraded"].is_object() && f.status("bot")["status_text"].is_string()
    });
    let t = token_of(&f, "bot");
    let (code, _) = post(
        &f,
        "/agents/bot/status",
        &t,
        r#"{"state":"degraded","reason":"login with zq8-very-secret-value refused"}"#,
    );
    assert_eq!(code, 200);
    f.wait_for("the API's declaration", Duration::from_secs(5), |f| {
        f.status("bot")["degraded"]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("login with")
    });
    let shown = format!(
        "{}\n{}\n{}",
        f.status("bot"),
        read(&f.state().join("audit.jsonl")),
        f.output()
    );
    for secret in ["zq8-very-secret-value", "hunter2pass"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert!(shown.contains("[REDACTED]"));
}
