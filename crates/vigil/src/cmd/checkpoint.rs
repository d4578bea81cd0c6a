//! `vigil checkpoint NAME [--history] [--json]`: an agent's checkpoints, as the running vigil
//! keeps them.

use serde_json::Value;

use super::control::{encode, get};
use super::{EXIT_OK, printable};
use crate::cli::ApiArgs;

pub fn show(args: &ApiArgs, name: &str, history: bool, limit: Option<u32>, json_out: bool) -> i32 {
    let agent = encode(name);
    let path = if history {
        match limit {
            Some(n) => format!("/agents/{agent}/checkpoints?limit={n}"),
            None => format!("/agents/{agent}/checkpoints"),
        }
    } else {
        format!("/agents/{agent}/checkpoint")
    };
    let body = match get(args, &path) {
        Ok(body) => body,
        Err(code) => return code,
    };
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        return EXIT_OK;
    }
    if !history {
        println!("{}", heading(name, &body));
        let doc = serde_json::to_string_pretty(&body["document"]).unwrap_or_default();
        println!("{}", printable(&doc));
        return EXIT_OK;
    }
    let all = body["checkpoints"].as_array().cloned().unwrap_or_default();
    if all.is_empty() {
        println!("{name} has no checkpoint yet");
    }
    for c in &all {
        let size = serde_json::to_string(&c["document"]).map_or(0, |s| s.len());
        println!("{}  {} bytes", heading(name, c), size);
    }
    EXIT_OK
}

fn heading(name: &str, c: &Value) -> String {
    let at = c["ts"].as_str().unwrap_or("");
    let age = chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| {
            let secs = (chrono::Utc::now().timestamp_millis() - t.timestamp_millis()).max(0) / 1000;
            format!(
                " ({} ago)",
                vigil_core::human_duration(std::time::Duration::from_secs(secs as u64))
            )
        })
        .unwrap_or_default();
    format!("{name}  version {}  at {at}{age}", c["version"])
}
