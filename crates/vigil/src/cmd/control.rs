//! `vigil status` and `vigil restart|stop|start|reset`: talk to a running vigil over its API.

use std::time::Duration;

use serde_json::{Value, json};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::cli::ApiArgs;
use crate::config;

/// vigil is not running, or not reachable at the address used.
pub const EXIT_UNREACHABLE: i32 = 3;

/// Where the API is and the token for it.
pub(super) struct Endpoint {
    url: String,
    token: Option<String>,
}

/// `--url`/`--token` (or `VIGIL_URL`/`VIGIL_TOKEN`) first; else the address the running vigil
/// wrote to `<state_dir>/api.addr` (`--state-dir`/`VIGIL_STATE_DIR`, else the config's), else
/// `[api] listen`, and `[api] token`. Only `[vigil]` and `[api]` of the config are read: a
/// mistake elsewhere in it (say, the one a reload just refused) must not keep the operator
/// from asking the running vigil what is going on.
pub(super) fn endpoint(args: &ApiArgs) -> Result<Endpoint, String> {
    let cfg = &args.cfg;
    let head = match config::load_head(&cfg.config, cfg.state_dir.as_deref()) {
        Ok(h) => Some(h),
        // No config at all: the defaults (and the state dir, if given).
        Err(_) if !cfg.config.exists() => None,
        Err(e) if args.url.is_none() => return Err(e.to_string()),
        // With --url, a broken config only means no token from it.
        Err(_) => None,
    };
    let state_dir = head
        .as_ref()
        .map(|h| h.state_dir.clone())
        .or_else(|| cfg.state_dir.clone());
    let written = state_dir
        .and_then(|dir| std::fs::read_to_string(crate::api::addr_file(&dir)).ok())
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    let url = match (&args.url, written, &head) {
        (Some(u), _, _) => u.trim_end_matches('/').to_string(),
        (None, Some(addr), _) => format!("http://{addr}"),
        (None, None, Some(h)) => format!("http://{}", h.api.listen),
        (None, None, None) => "http://127.0.0.1:9120".to_string(),
    };
    let token = args
        .token
        .clone()
        .or_else(|| head.and_then(|h| h.api.token));
    Ok(Endpoint { url, token })
}

pub(super) enum Reply {
    Answer(u16, Value),
    Unreachable(String),
}

pub(super) fn call(
    ep: &Endpoint,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Reply::Unreachable(e.to_string()),
    };
    rt.block_on(async {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(30))
        };
        let client = crate::http_client::build(builder);
        let post = method == reqwest::Method::POST;
        let mut req = client
            .request(method, format!("{}{path}", ep.url))
            .header("x-vigil-client", "cli");
        if let Some(t) = &ep.token {
            req = req.bearer_auth(t);
        }
        // vigil takes changes only as JSON (web pages cannot send it unasked).
        if post {
            req = req.header("content-type", "application/json");
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Reply::Unreachable(crate::errors::chain(&e)),
        };
        let code = resp.status().as_u16();
        match resp.text().await {
            Ok(text) => Reply::Answer(
                code,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ),
            Err(e) => Reply::Unreachable(crate::errors::chain(&e)),
        }
    })
}

pub(super) fn unreachable(ep: &Endpoint, why: &str) -> i32 {
    eprintln!(
        "error: cannot reach vigil at {} ({why})\nIs `vigil run` running? Pass --url, or -c with its config.",
        ep.url
    );
    EXIT_UNREACHABLE
}

pub(super) fn api_error(code: u16, body: &Value) -> i32 {
    let msg = body
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    eprintln!("error: {msg}");
    match code {
        401 => {
            eprintln!(
                "(pass --token, set VIGIL_TOKEN, or run with the config that holds [api] token)"
            );
            EXIT_USAGE
        }
        400..=499 => EXIT_USAGE,
        // vigil answered, and refused (shutting down, or its journal cannot be written).
        503 => super::EXIT_FAILURE,
        _ => EXIT_UNREACHABLE,
    }
}

/// Every agent's `/status` by name, when a vigil answers at `ep`.
pub(super) fn fleet_status(ep: &Endpoint) -> Option<std::collections::HashMap<String, Value>> {
    let Reply::Answer(200, body) = call(ep, reqwest::Method::GET, "/status", None) else {
        return None;
    };
    let agents = body.get("agents")?.as_array()?;
    Some(
        agents
            .iter()
            .filter_map(|a| Some((a.get("name")?.as_str()?.to_string(), a.clone())))
            .collect(),
    )
}

/// `GET path` of the running vigil: its JSON answer, or the exit code after saying why not.
pub(super) fn get(args: &ApiArgs, path: &str) -> Result<Value, i32> {
    let ep = endpoint(args).map_err(|e| {
        eprintln!("{e}");
        EXIT_USAGE
    })?;
    match call(&ep, reqwest::Method::GET, path, None) {
        Reply::Unreachable(why) => Err(unreachable(&ep, &why)),
        Reply::Answer(200, body) => Ok(body),
        Reply::Answer(code, body) => Err(api_error(code, &body)),
    }
}

/// `vigil runbooks`: what alerts made vigil do.
pub fn runbooks(args: &ApiArgs, json_out: bool) -> i32 {
    let body = match get(args, "/runbooks") {
        Ok(body) => body,
        Err(code) => return code,
    };
    let list = body["runbooks"].as_array().cloned().unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else if list.is_empty() {
        println!("no runbook has run");
    } else {
        for r in &list {
            let state = s(&r["state"]);
            let at = match r["step_label"].as_str() {
                Some(l) => format!(" at step {} ({l})", r["step"]),
                None => String::new(),
            };
            println!(
                "run {}  {}  {state}{at}  agent {}  alert {}  started {}",
                r["id"],
                s(&r["runbook"]),
                s(&r["agent"]),
                s(&r["alert"]),
                r["started"].as_str().unwrap_or("(queued)")
            );
            for d in r["done"].as_array().into_iter().flatten() {
                let ok = if d["ok"].as_bool() == Some(true) {
                    "ok"
                } else {
                    "FAILED"
                };
                println!("  {:<20} {ok:<6} {}", s(&d["step"]), s(&d["detail"]));
            }
            if let Some(how) = r["outcome"].as_str() {
                println!("  → {how}");
            }
        }
    }
    if list.iter().any(|r| r["state"] == "failed") {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

/// `vigil incidents`: what the fleet fails of together, and what vigil does about it.
pub fn incidents(args: &ApiArgs, json_out: bool) -> i32 {
    let body = match get(args, "/incidents") {
        Ok(body) => body,
        Err(code) => return code,
    };
    let list = body["incidents"].as_array().cloned().unwrap_or_default();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else if list.is_empty() {
        println!("no incidents");
    } else {
        let names = |v: &Value| -> String {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        for i in &list {
            let state = match i["resolved"].as_str() {
                Some(at) => format!("resolved {at}"),
                None => "OPEN".to_string(),
            };
            println!(
                "incident {}  {state}  cause: {}  opened {}",
                i["id"],
                i["cause_text"].as_str().unwrap_or(""),
                i["opened"].as_str().unwrap_or("")
            );
            println!("  agents: {}", names(&i["members"]));
            if i["resolved"].is_null() {
                let canary = match i["canary"].as_str() {
                    Some(c) => format!("{c} is the canary now"),
                    None => "next canary soon".to_string(),
                };
                println!(
                    "  held: {}  ({} probe(s) so far; {canary})",
                    names(&i["held"]),
                    i["probes"]
                );
            }
        }
    }
    if list.iter().any(|i| i["resolved"].is_null()) {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

/// `vigil status [NAME] [--json]`; exit 1 when a shown agent needs attention.
pub fn status(args: &ApiArgs, name: Option<&str>, json_out: bool) -> i32 {
    let path = match name {
        Some(n) => format!("/status/{}", encode(n)),
        None => "/status".to_string(),
    };
    let body = match get(args, &path) {
        Ok(body) => body,
        Err(code) => return code,
    };
    let agents: Vec<Value> = match body.get("agents") {
        Some(Value::Array(list)) => list.clone(),
        _ => vec![body.clone()],
    };
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "agents": agents })).unwrap_or_default()
        );
    } else {
        print!("{}", table(&agents));
    }
    if agents.iter().any(has_problem) {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

/// Quarantined, waiting to restart, in conflict with a copy outside vigil, stalled, or with a check failing or blind (`unknown`: vigil
/// cannot tell whether it passes): a person should look.
/// A failing check of an agent that declared itself degraded, while that holds its stall
/// verdicts back, is what it announced: no one needs to look.
fn has_problem(a: &Value) -> bool {
    let state = a.get("state").and_then(Value::as_str).unwrap_or("");
    let stalled = a.get("stalled_since").is_some_and(|v| !v.is_null());
    let announced = degraded_suspending(a);
    matches!(state, "quarantined" | "backoff" | "conflict")
        || stalled
        || (check_problem(a).is_some() && !announced)
}

/// It declared itself degraded and its stall verdicts wait for that now.
fn degraded_suspending(a: &Value) -> bool {
    a.pointer("/degraded/stall_checks_suspended_until")
        .is_some_and(|v| !v.is_null())
}

/// The first failing check, else the first `unknown` one, as `check NAME failing: DETAIL`.
fn check_problem(a: &Value) -> Option<String> {
    let checks = a.get("checks").and_then(Value::as_array)?;
    let with = |verdict: &str| {
        checks
            .iter()
            .find(|c| c.get("verdict").and_then(Value::as_str) == Some(verdict))
    };
    let (c, verdict) = with("failing")
        .map(|c| (c, "failing"))
        .or_else(|| with("unknown").map(|c| (c, "unknown")))?;
    let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
    let detail = c.get("detail").and_then(Value::as_str).unwrap_or("");
    Some(if detail.is_empty() {
        format!("check {name} {verdict}")
    } else {
        format!("check {name} {verdict}: {detail}")
    })
}

/// `3 ok`, `2 ok, 1 unknown`, `-` (no checks, or not running).
fn checks_summary(a: &Value) -> String {
    let Some(checks) = a.get("checks").and_then(Value::as_array) else {
        return "-".into();
    };
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for c in checks {
        let v = c.get("verdict").and_then(Value::as_str).unwrap_or("?");
        if v == crate::view::NOT_RUNNING {
            continue;
        }
        match counts.iter_mut().find(|(k, _)| *k == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    if counts.is_empty() {
        return "-".into();
    }
    counts.sort_by_key(|(v, _)| match *v {
        "ok" => 0,
        "failing" => 1,
        "unknown" => 2,
        _ => 3,
    });
    counts
        .iter()
        .map(|(v, n)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn dur(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 86_400 {
        format!(
            "{}d {:02}:{:02}:{:02}",
            s / 86_400,
            s % 86_400 / 3600,
            s % 3600 / 60,
            s % 60
        )
    } else {
        format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    }
}

fn table(agents: &[Value]) -> String {
    let rows: Vec<[String; 8]> = agents
        .iter()
        .map(|a| {
            let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let n = |v: Option<&Value>| v.and_then(Value::as_f64);
            let restarts = a.get("restarts");
            // What is wrong now comes before what went wrong last.
            let problem = a
                .get("quarantine_reason")
                .and_then(Value::as_str)
                .or_else(|| a.pointer("/waiting_on/text").and_then(Value::as_str))
                .or_else(|| a.pointer("/conflict/reason").and_then(Value::as_str))
                .or_else(|| a.pointer("/lease/standby").and_then(Value::as_str))
                .map(str::to_string)
                .or_else(|| {
                    a.pointer("/degraded/reason")
                        .and_then(Value::as_str)
                        .map(|r| format!("degraded (it says): {r}"))
                })
                .or_else(|| check_problem(a))
                .or_else(|| {
                    a.get("last_problem")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "-".into());
            let mut state = s("state").to_uppercase();
            if a.get("stalled_since").is_some_and(|v| !v.is_null()) {
                state.push_str(" (STALLED)");
            } else if a.get("degraded").is_some_and(|v| !v.is_null()) {
                state.push_str(" (DEGRADED)");
            } else if a.get("quiet").and_then(Value::as_bool) == Some(true) {
                state.push_str(" (QUIET)");
            } else if a.get("adopted").and_then(Value::as_bool) == Some(true) {
                state.push_str(" (ADOPTED)");
            }
            if let Some(epoch) = a.pointer("/lease/epoch").and_then(Value::as_u64) {
                state.push_str(&format!(" [lease {epoch}]"));
            }
            [
                s("name"),
                state,
                n(a.get("pid")).map_or("-".into(), |p| p.to_string()),
                n(a.get("uptime_s")).map_or("-".into(), dur),
                format!(
                    "{}/{}",
                    n(restarts.and_then(|r| r.get("in_window"))).unwrap_or(0.0),
                    n(restarts.and_then(|r| r.get("total"))).unwrap_or(0.0)
                ),
                format!(
                    "{}/{}",
                    n(a.get("budget_remaining")).unwrap_or(0.0),
                    n(restarts.and_then(|r| r.get("max"))).unwrap_or(0.0)
                ),
                checks_summary(a),
                super::printable(&problem).into_owned(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "BUDGET",
        "CHECKS",
        "LAST PROBLEM",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// `vigil reload`: what changed, or the config's errors (exit 2) with nothing changed.
pub fn reload(args: &ApiArgs) -> i32 {
    let ep = match endpoint(args) {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let body = match call(&ep, reqwest::Method::POST, "/reload", None) {
        Reply::Unreachable(why) => return unreachable(&ep, &why),
        Reply::Answer(200, body) => body,
        Reply::Answer(422, body) => {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("");
            eprintln!("reload refused, nothing changed:\n{error}");
            return EXIT_USAGE;
        }
        Reply::Answer(code, body) => return api_error(code, &body),
    };
    println!("reloaded: {}", reload_summary(&body));
    EXIT_OK
}

/// `2 added (a, b), 1 restarted (c), 3 unchanged`.
fn reload_summary(body: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["added", "removed", "restarted", "updated"] {
        let names: Vec<&str> = body
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !names.is_empty() {
            parts.push(format!("{} {key} ({})", names.len(), names.join(", ")));
        }
    }
    let unchanged = body.get("unchanged").and_then(Value::as_u64).unwrap_or(0);
    parts.push(format!("{unchanged} unchanged"));
    parts.join(", ")
}

/// `vigil shutdown`: every agent stopped gracefully, then vigil exits; waits for that.
pub fn shutdown(args: &ApiArgs, wait: bool) -> i32 {
    let ep = match endpoint(args) {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let stopping = match call(&ep, reqwest::Method::POST, "/shutdown", None) {
        Reply::Unreachable(why) => return unreachable(&ep, &why),
        Reply::Answer(200, body) => body.get("stopping").and_then(Value::as_u64).unwrap_or(0),
        Reply::Answer(code, body) => return api_error(code, &body),
    };
    println!("vigil is stopping {stopping} agents");
    if !wait {
        return EXIT_OK;
    }
    // Its API closes when it exits. Agents may take their stop_timeout each (in parallel).
    let deadline = std::time::Instant::now() + Duration::from_secs(15 * 60);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if let Reply::Unreachable(_) = call(&ep, reqwest::Method::GET, "/health", None) {
            println!("vigil has stopped");
            return EXIT_OK;
        }
    }
    eprintln!("error: vigil is still running after 15 minutes");
    EXIT_FAILURE
}

/// Agent names are `template@instance`: keep them readable in the path, escape the rest.
pub(super) fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'@' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `vigil restart|stop|start|reset NAME`: exit 1 when vigil refused for every agent named.
/// `force`: `start --force` (start past a copy running outside vigil).
pub fn command(args: &ApiArgs, verb: &str, name: &str, reason: Option<&str>, force: bool) -> i32 {
    let ep = match endpoint(args) {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let body = match (reason, force) {
        (None, false) => None,
        (reason, force) => Some(json!({ "reason": reason, "force": force })),
    };
    let path = format!("/agents/{}/{verb}", encode(name));
    let (code, body) = match call(&ep, reqwest::Method::POST, &path, body) {
        Reply::Unreachable(why) => return unreachable(&ep, &why),
        Reply::Answer(code @ (200 | 409), body) => (code, body),
        Reply::Answer(code, body) => return api_error(code, &body),
    };
    let results = body
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in &results {
        let agent = r.get("agent").and_then(Value::as_str).unwrap_or("?");
        let outcome = r.get("outcome").and_then(Value::as_str).unwrap_or("?");
        if r.get("ok").and_then(Value::as_bool) == Some(true) {
            println!("{agent}: {outcome}");
        } else {
            eprintln!("{agent}: refused: {outcome}");
        }
    }
    if code == 409 { EXIT_FAILURE } else { EXIT_OK }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up_and_flags_problems() {
        let agents = vec![
            json!({"name": "trader@BTC_USDT", "state": "running", "pid": 1234, "uptime_s": 3723.4,
                   "restarts": {"in_window": 1, "total": 5, "max": 3}, "budget_remaining": 2,
                   "last_problem": "exited with code 1", "checks": [{"verdict": "ok"}]}),
            json!({"name": "bot", "state": "quarantined", "pid": null, "uptime_s": null,
                   "restarts": {"in_window": 3, "total": 3, "max": 3}, "budget_remaining": 0,
                   "quarantine_reason": "invalid API key", "checks": []}),
        ];
        let t = table(&agents);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME             STATE"));
        assert!(
            lines[1].contains("RUNNING")
                && lines[1].contains("1:02:03")
                && lines[1].contains("1/5")
        );
        assert!(lines[2].contains("QUARANTINED") && lines[2].ends_with("invalid API key"));
        assert!(!has_problem(&agents[0]));
        assert!(has_problem(&agents[1]));
        assert_eq!(encode("trader@BTC_USDT"), "trader@BTC_USDT");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn missing_config_means_the_default_address() {
        let dir = tempfile::tempdir().unwrap();
        let args = ApiArgs {
            url: None,
            token: None,
            cfg: crate::cli::ConfigArgs {
                config: dir.path().join("absent.toml"),
                state_dir: None,
            },
        };
        assert_eq!(endpoint(&args).unwrap().url, "http://127.0.0.1:9120");
    }
}
