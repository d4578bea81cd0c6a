//! Who an agent is: its secrets from an `env_file` (never shown by vigil), and the user it
//! runs as (`user`/`group`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Fleet, read, unique};

#[test]
fn env_file_gives_an_agent_its_secrets_and_vigil_never_shows_them() {
    let marker = unique("identity-env");
    let mut f = Fleet::new(&format!(
        r#"[agents.bot]
command = ["sh", "-c", "echo \"account $ACCOUNT_ID symbol $SYMBOL mode $MODE\"; sleep 0.3; exit 1 # {marker}"]
cwd = "."
env_file = "secrets/{{agent}}.env"
env = {{ MODE = "live" }}
[agents.bot.policy]
max_restarts = 1
"#
    ));
    std::fs::create_dir(f.path("secrets")).unwrap();
    std::fs::write(
        f.path("secrets/bot.env"),
        "# exchange account\nexport ACCOUNT_ID='acct-7788-9911'\nSYMBOL=BTC_USDT\nMODE=paper\n",
    )
    .unwrap();
    std::fs::set_permissions(
        f.path("secrets/bot.env"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let config = f.config();
    let config = config.to_str().unwrap();

    // `vigil check` shows where the values come from, not the values.
    let out = f.vigil(&["check", "-c", config]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(shown.contains("ACCOUNT_ID=[from env_file]"), "{shown}");
    assert!(
        shown.contains("MODE=live"),
        "env overrides the file: {shown}"
    );
    assert!(!shown.contains("acct-7788-9911"), "{shown}");

    f.start();
    f.wait_for("the first exit", Duration::from_secs(10), |f| {
        !f.records_of("bot", "exit").is_empty()
    });
    // The agent got them (its own log is its own).
    let log = read(&f.state().join("logs/bot.log"));
    assert!(
        log.contains("account acct-7788-9911 symbol BTC_USDT mode live"),
        "{log}"
    );
    // The evidence vigil keeps and shows hides every value from the file (whatever its name),
    // and only those.
    f.wait_for("a diagnosis", Duration::from_secs(10), |f| {
        f.api("GET", "/agents/bot/explain", "").0 == 200
    });
    let (_, explain) = f.api("GET", "/agents/bot/explain", "");
    let text = explain.to_string();
    assert!(
        text.contains("account [REDACTED] symbol [REDACTED] mode live"),
        "{text}"
    );
    let journal = read(&f.state().join("audit.jsonl"));
    assert!(!journal.contains("acct-7788-9911"));

    // A file that cannot be read is a config error naming it, not a value.
    std::fs::write(f.path("secrets/bot.env"), "ACCOUNT_ID acct-7788-9911\n").unwrap();
    let out = f.vigil(&["check", "-c", config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("bot.env line 1: expected KEY=VALUE"), "{err}");
    assert!(!err.contains("acct-7788-9911"), "{err}");
    std::fs::remove_file(f.path("secrets/bot.env")).unwrap();
    let out = f.vigil(&["check", "-c", config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("env_file of `bot`: cannot read"), "{err}");
}

#[test]
fn an_unknown_user_is_a_config_error() {
    let f = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "300"]
user = "no-such-user-xyz"
"#,
    );
    let out = f.vigil(&["check", "-c", f.config().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("no user `no-such-user-xyz`"), "{err}");
}

fn uid_of(pid: u64) -> u32 {
    read(std::path::Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("a Uid line")
}

#[test]
#[ignore = "needs root (to run agents as another user): CI runs the ignored tests as root"]
fn user_runs_the_agent_and_its_exec_checks_as_that_user() {
    let marker = unique("identity-user");
    let mut f = Fleet::new(&format!(
        r#"[agents.bot]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
user = "nobody"
[[agents.bot.checks]]
name = "whoami"
kind = "exec"
command = ["sh", "-c", "test \"$(id -u)\" = \"$(id -u nobody)\" && test \"$HOME\" != /root"]
interval = "200ms"
"#
    ));
    f.start();
    f.wait_for("the check to pass", Duration::from_secs(10), |f| {
        f.api("GET", "/status/bot", "").1["checks"][0]["verdict"] == "ok"
    });
    let (_, s) = f.api("GET", "/status/bot", "");
    let pid = s["pid"].as_u64().unwrap();
    assert_eq!(uid_of(pid), 65534, "{s}");
    // Still vigil's to stop.
    let out = f.vigil(&["stop", "bot", "-c", f.config().to_str().unwrap()]);
    assert!(out.status.success());
    f.wait_for("the stop", Duration::from_secs(10), |f| {
        f.api("GET", "/status/bot", "").1["state"] == "stopped"
    });
}
