//! `vigil check`: every mistake at once, each with file:line:column and a hint.

mod common;

use common::Fleet;

#[test]
fn reports_every_mistake_with_line_column_and_hint() {
    let fleet = Fleet::new(
        r#"[agents.bot]
comand = ["python3", "bot.py"]

[agents.bot.policy]
cooldown = "5 mn"

[agents.worker]
command = ["./worker"]
stop_signal = "TERMINATE"
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: unknown key `comand` in [agents.bot]"),
        "{stderr}"
    );
    assert!(stderr.contains("--> vigil.toml:2:1"), "{stderr}");
    assert!(stderr.contains("hint: did you mean `command`?"), "{stderr}");
    assert!(stderr.contains("--> vigil.toml:5:12"), "{stderr}");
    assert!(
        stderr.contains("bad duration \"5 mn\": unknown unit `mn`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"hint: durations are a number with a unit: "500ms""#),
        "{stderr}"
    );
    assert!(stderr.contains("--> vigil.toml:9:15"), "{stderr}");
    assert!(stderr.contains("unknown signal \"TERMINATE\""), "{stderr}");
    assert!(
        stderr.contains("3 errors in vigil.toml; nothing was applied"),
        "{stderr}"
    );
}

#[test]
fn syntax_errors_and_value_errors_are_reported_together() {
    let fleet = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "1"]
autostart = yes

[agents.other]
command = "python3 other.py"
max_restarts = 3
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("vigil.toml:3:13"),
        "syntax error located: {stderr}"
    );
    assert!(
        stderr.contains("`command` in [agents.other] must be an argv array"),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"command = ["python3", "other.py"]"#),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown key `max_restarts` in [agents.other]"),
        "{stderr}"
    );
}

#[test]
fn resolves_instances_defaults_and_overrides() {
    let fleet = Fleet::new(
        r#"[vigil]
state_dir = "run"

[defaults.policy]
max_restarts = 5
window = "30m"

[agents.trader]
command = ["python3", "bot.py", "--symbol", "{instance}"]
instances = ["BTC_USDT", "ETH_USDT"]
env = { HEARTBEAT = "/tmp/{template}_{instance}_heartbeat" }

[agents.trader.policy]
cooldown = "10s"
on_exhausted = "retry_after"
retry_after = "2h"
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK — 2 agents"), "{stdout}");
    assert!(stdout.contains("trader@ETH_USDT  (template trader, instance ETH_USDT)"));
    assert!(stdout.contains("command  python3 bot.py --symbol BTC_USDT"));
    assert!(stdout.contains("HEARTBEAT=/tmp/trader_ETH_USDT_heartbeat"));
    assert!(stdout.contains("cooldown 10s · max 5 restarts per 30m"));
    assert!(stdout.contains("on exhausted: retry after 2h"));

    let out = fleet.vigil(&["check", "-c", "vigil.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agents"][1]["name"], "trader@ETH_USDT");
    assert_eq!(v["agents"][1]["policy"]["max_restarts"], 5);
    assert!(v["state_dir"].as_str().unwrap().ends_with("/run"));
}

#[test]
fn placeholders_are_checked() {
    let fleet = Fleet::new(
        r#"[agents.bot]
command = ["bot", "--symbol", "{instance}", "--id", "{instnce}"]
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("`{instance}` is used, but agent `bot` has no `instances`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown placeholder `{instnce}`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `{instance}`?"), "{stderr}");
}

#[test]
fn api_host_names_are_names() {
    let fleet = Fleet::new(
        r#"[api]
hosts = ["vigil.lan", "http://vigil.lan:9120"]

[agents.bot]
command = ["sleep", "1"]
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(r#"`hosts` in [api]: "http://vigil.lan:9120" is not a host name"#),
        "{stderr}"
    );
    assert!(stderr.contains("--> vigil.toml:2:23"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let fleet = Fleet::new("");
    let out = fleet.vigil(&["check", "-c", "nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config nope.toml"));
}

#[test]
fn nul_bytes_that_no_spawn_could_use_are_refused_with_their_place() {
    let fleet = Fleet::new(
        r#"[agents.bot]
command = ["python3", "bot\u0000.py"]
env = { "API\u0000KEY" = "x", TOKEN = "a\u0000b", "A=B" = "c" }
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--> vigil.toml:2:23"), "{stderr}");
    assert!(stderr.contains("contains a NUL byte"), "{stderr}");
    assert!(stderr.contains("is not a usable name"), "{stderr}");
    assert!(stderr.contains("4 errors in vigil.toml"), "{stderr}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let fleet = Fleet::new(
        "[agents.bot]\ncommand = [\"sleep\", \"1\"]\ninstances = [\"a\", \"b\", \"c\"]\n",
    );
    // `vigil check | head -1`: the reader goes away after one line.
    let mut child = std::process::Command::new(common::VIGIL)
        .args(["check", "-c", "vigil.toml"])
        .current_dir(fleet.path("."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An unterminated string desynchronises the parser: only the real mistake is reported, not
/// the invented ones after it ("bad duration", "missing comma" …); and a value of the wrong
/// type is reported once, not also as every placeholder that needed it.
#[test]
fn one_mistake_is_reported_once_not_as_a_cascade() {
    let fleet = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "300]
stop_timeout = "5s"

[agents.b2]
command = ["x"]
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--> vigil.toml:2:26"), "{stderr}");
    assert!(stderr.contains("1 error in"), "{stderr}");

    fleet.write_config(
        r#"[agents.bot]
command = ["bot", "{instance}"]
instances = "BTC_USDT"
cwd = "/tmp/{instance}"
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`instances` in [agents.bot] must be an array of strings"),
        "{stderr}"
    );
    assert!(!stderr.contains("has no `instances`"), "{stderr}");

    fleet.write_config(
        r#"[default.policy]
max_restarts = 3
[agents.bot]
command = ["x"]
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `defaults`?"), "{stderr}");
}

#[test]
fn exclusive_placement_needs_a_cluster_and_a_stop_that_fits_its_lease() {
    let fleet = Fleet::new(
        r#"[agents.alone]
command = ["sleep", "60"]
placement = "exclusive"

[agents.local]
command = ["sleep", "60"]
nodes = ["fra-1"]
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("placement = \"exclusive\" needs a [cluster]"),
        "{stderr}"
    );
    assert!(stderr.contains("--> vigil.toml:3:13"), "{stderr}");
    assert!(
        stderr.contains("`nodes` in [agents.local] names candidates for placement = \"exclusive\""),
        "{stderr}"
    );

    std::fs::write(
        fleet.path("cluster-url"),
        "postgres://vigil:s3cret@db.internal/fleet",
    )
    .unwrap();
    fleet.write_config(
        r#"[cluster]
url_file = "cluster-url"
node = "fra-1"

[agents.slow]
command = ["sleep", "60"]
placement = "exclusive"
stop_timeout = "30s"

[agents.fits]
command = ["sleep", "60"]
placement = "exclusive"
nodes = ["fra-1", "fra-2", "fra-1"]
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("stop_timeout 30s of an exclusive agent does not fit its lease: at most 4s with lease_ttl 10s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("node \"fra-1\" is listed twice"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the URL's password is never shown: {stderr}"
    );

    // Fixed: the default stop_timeout is made to fit the lease, and `vigil check` says so.
    fleet.write_config(
        r#"[cluster]
url_file = "cluster-url"
node = "fra-1"

[agents.fits]
command = ["sleep", "60"]
placement = "exclusive"
nodes = ["fra-1", "fra-2"]
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cluster: node fra-1 · PostgreSQL postgres://vigil:***@db.internal/fleet"),
        "{stdout}"
    );
    assert!(stdout.contains("SIGKILL after 4s"), "{stdout}");
    assert!(
        stdout.contains("exclusive: one node at a time, of fra-1, fra-2"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"), "{stdout}");
}
