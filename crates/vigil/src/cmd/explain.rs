//! `vigil explain NAME`: why an agent's last failure was handled the way it was — the
//! evidence vigil saw, the rules' verdict, the advisor's, and the decisions in the journal.

use serde_json::Value;

use super::control::{Reply, api_error, call, encode, endpoint, unreachable};
use super::{EXIT_OK, EXIT_USAGE};
use crate::cli::ApiArgs;

pub fn explain(args: &ApiArgs, name: &str, json_out: bool) -> i32 {
    let ep = match endpoint(args) {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let case = match call(
        &ep,
        reqwest::Method::GET,
        &format!("/agents/{}/explain", encode(name)),
        None,
    ) {
        Reply::Unreachable(why) => return unreachable(&ep, &why),
        Reply::Answer(200, body) => body,
        Reply::Answer(code, body) => return api_error(code, &body),
    };
    let decisions = match call(
        &ep,
        reqwest::Method::GET,
        &format!("/audit?agent={}&limit=8", encode(name)),
        None,
    ) {
        Reply::Answer(200, body) => body["records"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    };
    if json_out {
        let mut out = case;
        out["decisions"] = Value::Array(decisions);
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", super::printable(&render(&case, &decisions)));
    }
    EXIT_OK
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn verdict(d: &Value) -> String {
    format!(
        "{} → {}  ({}, confidence {:.2})\n           {}",
        text(d, "category"),
        text(d, "action"),
        text(d, "rule"),
        d["confidence"].as_f64().unwrap_or(0.0),
        text(d, "explanation"),
    )
}

fn render(case: &Value, decisions: &[Value]) -> String {
    let mut out = String::new();
    let pid = case["pid"]
        .as_u64()
        .map(|p| format!(", pid {p}"))
        .unwrap_or_default();
    let pid = match case["target"].as_str() {
        Some(target) => format!(", {target}{pid}"),
        None => pid,
    };
    let ran = case["uptime_s"]
        .as_f64()
        .map(|s| format!(", after running {s:.1}s"))
        .unwrap_or_default();
    out.push_str(&format!(
        "{} — last failure at {}{pid}\n  what happened: {} ({}){ran}\n\n",
        text(case, "agent"),
        text(case, "at"),
        text(case, "reason"),
        text(case, "cause"),
    ));
    let evidence = case["evidence"].as_array().cloned().unwrap_or_default();
    if evidence.is_empty() {
        out.push_str("evidence: no log output from this run\n");
    } else {
        out.push_str(&format!(
            "evidence (last {} lines, secrets redacted):\n",
            evidence.len()
        ));
        for line in &evidence {
            out.push_str(&format!("  | {}\n", line.as_str().unwrap_or("")));
        }
    }
    out.push_str(&format!("\nrules:     {}\n", verdict(&case["rules"])));
    let advisor = &case["advisor"];
    let said = match text(advisor, "state") {
        "answered" => verdict(&advisor["verdict"]),
        "pending" => "asked, no answer yet".to_string(),
        "failed" => format!(
            "no answer ({}); the rules' verdict stands",
            text(advisor, "error")
        ),
        _ => "not asked (no [diagnosis.llm], or the rules already quarantined it)".to_string(),
    };
    out.push_str(&format!("advisor:   {said}\n"));
    if !decisions.is_empty() {
        out.push_str("\nwhat vigil did (newest audit records):\n");
        for r in decisions {
            out.push_str(&format!(
                "  {}  {:<10} {}\n",
                text(r, "ts"),
                text(r, "action"),
                text(r, "reason"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_case_reads_top_to_bottom() {
        let case = json!({
            "agent": "bot", "at": "2026-11-23T10:00:00.000Z", "pid": 42,
            "cause": "exit", "reason": "exited with code 1",
            "evidence": ["binance: Invalid API-key"],
            "rules": {"category": "permanent", "action": "quarantine", "rule": "invalid_api_key",
                      "confidence": 0.9, "explanation": "binance: Invalid API-key"},
            "advisor": {"state": "failed", "error": "connection refused"},
        });
        let text = render(
            &case,
            &[json!({"ts": "t", "action": "escalated", "reason": "quarantined"})],
        );
        assert!(text.starts_with("bot — last failure at 2026-11-23T10:00:00.000Z, pid 42\n"));
        assert!(text.contains("  | binance: Invalid API-key\n"));
        assert!(
            text.contains("rules:     permanent → quarantine  (invalid_api_key, confidence 0.90)")
        );
        assert!(text.contains("advisor:   no answer (connection refused)"));
        assert!(text.contains("escalated  quarantined"));
    }
}
