//! The deployment kit (deploy/) fits the vigil it ships with: the alert rules and the Grafana
//! dashboard use only metrics a running vigil really exports, and install.sh is idempotent
//! and changes nothing with --dry-run.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Fleet, VIGIL, unique};
use regex::Regex;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(rel)
}

/// Every series name a running vigil exports (histograms with their _bucket/_sum/_count).
fn exported_names() -> HashSet<String> {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let m = unique("deploy");
    let mut f = Fleet::new(&format!(
        r#"[agents.bot]
command = ["sh", "-c", "while true; do touch hb; sleep 0.2; done # {m}"]
cwd = "."
checks = [{{ kind = "heartbeat", path = "hb", max_age = "5s" }}]

[diagnosis.llm]
provider = "ollama"
url = "http://{closed}"
model = "m"
"#
    ));
    f.start();
    f.wait_for("the bot's check passing", Duration::from_secs(10), |f| {
        f.http("GET", "/metrics", &[], "")
            .1
            .contains("vigil_check_up{")
    });
    let text = f.http("GET", "/metrics", &[], "").1;
    let mut names = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

fn used_names(text: &str) -> HashSet<String> {
    Regex::new(r"\b((?:vigil|process)_[a-z_]+)\b")
        .unwrap()
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .collect()
}

#[test]
fn rules_and_dashboard_use_only_metrics_vigil_exports() {
    let exported = exported_names();
    let rules = std::fs::read_to_string(deploy("prometheus/vigil.rules.yml")).unwrap();
    let dashboard_text = std::fs::read_to_string(deploy("grafana/vigil-dashboard.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");
    let mut exprs = String::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    for (what, text) in [("rules", rules.as_str()), ("dashboard", exprs.as_str())] {
        let used = used_names(text);
        assert!(used.len() >= 5, "{what}: {used:?}");
        let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses metrics vigil does not export: {unknown:?}"
        );
    }
}

fn install(args: &[&str]) -> (bool, String) {
    let out = Command::new(deploy("install.sh"))
        .args(["--binary", VIGIL])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn install_sh_is_idempotent_and_a_dry_run_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();

    let (ok, text) = install(&["--root", r, "--dry-run"]);
    assert!(ok, "{text}");
    assert!(text.contains("would run: install -D -m 0755"), "{text}");
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "a dry run wrote files"
    );

    let (ok, text) = install(&["--root", r, "--prefix", "/opt/vigil", "--user", "bots"]);
    assert!(ok, "{text}");
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/vigil.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/vigil/bin/vigil run -c /etc/vigil/vigil.toml"),
        "{unit}"
    );
    assert!(unit.contains("User=bots"));
    assert!(unit.contains("Type=notify") && unit.contains("KillMode=process"));
    assert!(
        !unit.contains('@'),
        "a placeholder left in the unit:\n{unit}"
    );
    assert!(root.path().join("opt/vigil/bin/vigil").exists());
    let config = std::fs::read_to_string(root.path().join("etc/vigil/vigil.toml")).unwrap();
    assert!(config.contains("state_dir = \"/var/lib/vigil\""));

    // An edited config is kept; a second run has nothing to do.
    std::fs::write(root.path().join("etc/vigil/vigil.toml"), "# mine\n").unwrap();
    let (ok, text) = install(&["--root", r, "--prefix", "/opt/vigil", "--user", "bots"]);
    assert!(ok, "{text}");
    assert!(text.contains("nothing to do"), "{text}");
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/vigil/vigil.toml")).unwrap(),
        "# mine\n"
    );
}
