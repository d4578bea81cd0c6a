//! `vigil files NAME`: an agent's guarded files — valid or what is wrong, the last known good
//! copies and backups vigil keeps, and what changed since the newest good copy (secret
//! values hidden). Reads the files and the state dir; needs no running vigil.

use serde_json::{Value, json};

use crate::audit::format_ms;
use crate::config::{Config, GuardedFile};
use crate::guard::{self, FileState, FileStore, Kept, document};

/// Exit 0 when every file is valid, 1 when one is not, 2 when the name is unknown.
pub fn files(config: &Config, name: &str, as_json: bool) -> i32 {
    let agents: Vec<_> = config
        .agents
        .iter()
        .filter(|a| a.name == name || a.template.as_deref() == Some(name))
        .collect();
    if agents.is_empty() {
        let names: Vec<&str> = config.agents.iter().map(|a| a.name.as_str()).collect();
        let hint = crate::config::did_you_mean(name, &names)
            .map(|n| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        eprintln!(
            "error: no agent `{name}` in {}{hint}",
            config.path.display()
        );
        return super::EXIT_USAGE;
    }
    let store = FileStore::new(&config.state_dir);
    let mut all_valid = true;
    let mut reports = Vec::new();
    let mut text = String::new();
    for a in agents {
        if a.files.is_empty() {
            text.push_str(&format!("{}: no guarded files\n", a.name));
            continue;
        }
        for file in &a.files {
            let state = guard::inspect(file);
            all_valid &= state.problem().is_none();
            let good = store.good(&a.name, &file.path);
            let bad = store.bad(&a.name, &file.path);
            let diff = diff_against_good(file, &state, good.first());
            text.push_str(&render(&a.name, file, &state, &good, &bad, diff.as_deref()));
            reports.push(json!({
                "agent": a.name,
                "path": file.path.display().to_string(),
                "format": file.format.as_str(),
                "repair": file.repair.as_str(),
                "valid": state.problem().is_none(),
                "problem": state.problem(),
                "good": good.iter().map(kept_json).collect::<Vec<_>>(),
                "backups": bad.iter().map(kept_json).collect::<Vec<_>>(),
                "diff": diff.as_deref().map(|d| {
                    d.lines().map(redacted).collect::<Vec<_>>().join("\n")
                }),
            }));
        }
    }
    if as_json {
        let body = json!({ "files": reports });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        print!("{text}");
    }
    if all_valid {
        super::EXIT_OK
    } else {
        super::EXIT_FAILURE
    }
}

/// A diff line with whatever still looks secret (a token in a value under an innocent key)
/// hidden by vigil's usual patterns.
fn redacted(line: &str) -> String {
    crate::redact::line_with(line, &crate::redact::Secrets::default())
}

fn kept_json(k: &Kept) -> Value {
    json!({ "path": k.path.display().to_string(), "at": format_ms(k.at_ms), "run": k.run })
}

fn render(
    agent: &str,
    file: &GuardedFile,
    state: &FileState,
    good: &[Kept],
    bad: &[Kept],
    diff: Option<&str>,
) -> String {
    let mut out = format!(
        "{agent}  {} ({}, repair = \"{}\")\n",
        file.path.display(),
        file.format.as_str(),
        file.repair.as_str()
    );
    match state.problem() {
        None => out.push_str("  state: valid\n"),
        Some(p) => out.push_str(&format!("  state: INVALID — {p}\n")),
    }
    if !file.required.is_empty() {
        out.push_str(&format!("  required: {}\n", file.required.join(", ")));
    }
    out.push_str(&format!("  good copies: {}\n", good.len()));
    for k in good {
        let run = k.run.map_or(String::new(), |r| format!(" run {r}"));
        out.push_str(&format!(
            "    {}{run}  {}\n",
            format_ms(k.at_ms),
            k.path.display()
        ));
    }
    out.push_str(&format!("  backups of bad copies: {}\n", bad.len()));
    for k in bad {
        out.push_str(&format!(
            "    {}  {}\n",
            format_ms(k.at_ms),
            k.path.display()
        ));
    }
    match diff {
        Some("") => out.push_str("  same as the newest good copy\n"),
        Some(d) => {
            out.push_str("  changed since the newest good copy (secret values hidden):\n");
            for line in d.lines() {
                out.push_str(&format!("    {}\n", redacted(line)));
            }
        }
        None => {}
    }
    out.push('\n');
    out
}

/// A line diff of the file against its newest good copy, both as normalized JSON with the
/// values of secret-looking keys hidden; `None` when there is nothing to compare.
fn diff_against_good(file: &GuardedFile, state: &FileState, good: Option<&Kept>) -> Option<String> {
    let good = good?;
    let kept = std::fs::read(&good.path).ok()?;
    let kept = document::parse(file.format, &kept).ok()?;
    let now = match state {
        FileState::Valid { doc, .. } => doc.clone(),
        FileState::Invalid { doc: Some(doc), .. } => doc.clone(),
        _ => return Some(format!("(cannot compare: it is {})", state.problem()?)),
    };
    let shown = |v: &Value| serde_json::to_string_pretty(&hide_secrets(v)).unwrap_or_default();
    let (before, after) = (shown(&kept), shown(&now));
    if before == after {
        return Some(String::new());
    }
    let diff = similar::TextDiff::from_lines(&before, &after);
    let run = good.run.map_or(String::new(), |r| format!(" (run {r})"));
    Some(
        diff.unified_diff()
            .context_radius(2)
            .header(&format!("good{run}"), "now")
            .to_string(),
    )
}

/// The document with the values of keys that look secret (`api_key`, `password`, …) hidden.
fn hide_secrets(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    // Everything under a secret-looking key, tables included.
                    let shown = if crate::redact::secret_name(k) {
                        Value::String(crate::redact::REDACTED.into())
                    } else {
                        hide_secrets(v)
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(hide_secrets).collect()),
        other => other.clone(),
    }
}
