//! The systemd driver against a real systemd (`.ci/systemd-setup` boots Debian's in a
//! container): vigil runs inside it, as it would on a host, and supervises units through the
//! bus — a unit that exits non-zero is restarted with its journal as evidence, an invalid API
//! key is quarantined without a restart, a stop by a human holds, a `kill -9` of vigil is
//! followed by a take-over (no restart) and a held unit found running is stopped again,
//! `check --live` warns of `Restart=`, vigil refuses to supervise the unit it runs in, and a
//! user's unit is healed through the user's own manager (`bus = "user"`).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Fleet, VIGIL, required_env, unique};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn systemd_pid() -> String {
    required_env("VIGIL_TEST_SYSTEMD_PID", "a systemd host")
}

fn share() -> PathBuf {
    required_env("VIGIL_TEST_SYSTEMD_SHARE", "a systemd host").into()
}

/// A command run inside the systemd host.
fn inside(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("nsenter")
        .args(["-t", &systemd_pid(), "-a"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsenter");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn systemctl(args: &[&str]) -> String {
    let mut all = vec!["systemctl"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&inside(&all, None).stdout)
        .trim()
        .to_string()
}

/// A unit file written into the host's /etc/systemd/system; removed (stopped) when dropped.
struct Unit {
    name: String,
}

impl Unit {
    fn install(prefix: &str, service: &str) -> Unit {
        let name = format!("{}.service", unique(prefix).replace('_', "-"));
        let body = format!("[Unit]\nDescription=vigil test {name}\n[Service]\n{service}\n");
        let out = inside(
            &["sh", "-c", &format!("cat > /etc/systemd/system/{name}")],
            Some(&body),
        );
        assert!(out.status.success(), "{out:?}");
        systemctl(&["daemon-reload"]);
        Unit { name }
    }

    fn show(&self, property: &str) -> String {
        systemctl(&["show", &self.name, "-p", property, "--value"])
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        systemctl(&["stop", &self.name]);
        let _ = inside(
            &["rm", "-f", &format!("/etc/systemd/system/{}", self.name)],
            None,
        );
    }
}

/// A fleet whose `vigil run` runs inside the systemd host.
fn fleet(config: &str) -> Fleet {
    let mut f = Fleet::new_in(&share(), config);
    f.wrap = vec![
        "nsenter".into(),
        "-t".into(),
        systemd_pid(),
        "-a".into(),
        format!("--wdns={}", f.dir.path().display()),
    ];
    f
}

#[test]
#[ignore = "needs a systemd host: set VIGIL_TEST_SYSTEMD_PID and VIGIL_TEST_SYSTEMD_SHARE (.ci/systemd-setup)"]
fn a_unit_that_exits_non_zero_is_restarted_through_the_bus_with_its_journal() {
    let unit = Unit::install(
        "vt-exit",
        "Environment=EXCHANGE_API_KEY=k3y-value-77\nExecStart=/bin/sh -c 'echo order book loaded with $EXCHANGE_API_KEY; sleep 1; echo position mismatch on BTC_USDT >&2; exit 3'",
    );
    let mut f = fleet(&format!(
        r#"
[agents.bot]
driver = "systemd"
unit = "{}"

[agents.bot.policy]
cooldown = "0s"
max_restarts = 10
"#,
        unit.name
    ));
    f.start();
    f.wait_for("a restart after the unit's failure", SECS(20), |f| {
        !f.records_of("bot", "restart").is_empty()
    });
    let exit = &f.records_of("bot", "exit")[0];
    assert_eq!(exit["metadata"]["exit_code"], 3, "{exit}");
    let status = f.status("bot");
    assert_eq!(status["driver"], "systemd", "{status}");
    assert_eq!(status["target"], format!("unit {}", unit.name));
    let explain = f.vigil(&["explain", "bot", "-c", "vigil.toml"]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        text.contains("position mismatch on BTC_USDT"),
        "the unit's journal: {text}"
    );
    assert!(text.contains("exited with code 3"), "{text}");
    assert!(text.contains(&format!("unit {}", unit.name)), "{text}");
    // The unit's own secret, in its journal, reaches neither vigil's journal nor explain.
    assert!(text.contains("order book loaded with"), "{text}");
    let journal = common::read(&f.state().join("audit.jsonl"));
    for t in [text.as_ref(), journal.as_str()] {
        assert!(!t.contains("k3y-value-77"), "a secret leaked: {t}");
    }
    assert_eq!(f.stop(), 0);
}

#[test]
#[ignore = "needs a systemd host: set VIGIL_TEST_SYSTEMD_PID and VIGIL_TEST_SYSTEMD_SHARE (.ci/systemd-setup)"]
fn a_unit_with_an_invalid_api_key_is_quarantined_without_a_restart() {
    let unit = Unit::install(
        "vt-key",
        r#"ExecStart=/bin/sh -c 'sleep 0.5; echo "ccxt.base.errors.AuthenticationError: binance {\"code\":-2015,\"msg\":\"Invalid API-key, IP, or permissions for action.\"}"; exit 1'"#,
    );
    let mut f = fleet(&format!(
        "[agents.bot]\ndriver = \"systemd\"\nunit = \"{}\"\n",
        unit.name
    ));
    f.start();
    f.wait_for("quarantined", SECS(20), |f| {
        f.status("bot")["state"] == "quarantined"
    });
    assert!(f.records_of("bot", "restart").is_empty());
    let escalated = &f.records_of("bot", "escalated")[0];
    assert_eq!(
        escalated["metadata"]["diagnosis"]["rule"],
        "invalid_api_key"
    );
    assert_eq!(unit.show("ActiveState"), "failed", "not started again");
    assert_eq!(f.stop(), 0);
}

#[test]
#[ignore = "needs a systemd host: set VIGIL_TEST_SYSTEMD_PID and VIGIL_TEST_SYSTEMD_SHARE (.ci/systemd-setup)"]
fn a_stop_by_a_human_holds_and_a_killed_vigil_takes_its_units_over() {
    let kept = Unit::install(
        "vt-kept",
        "ExecStart=/bin/sh -c 'while true; do sleep 1; done'",
    );
    let held = Unit::install(
        "vt-held",
        "ExecStart=/bin/sh -c 'while true; do sleep 1; done'",
    );
    let mut f = fleet(&format!(
        r#"
[agents.kept]
driver = "systemd"
unit = "{}"

[agents.held]
driver = "systemd"
unit = "{}"
"#,
        kept.name, held.name
    ));
    f.start();
    f.wait_for("both running", SECS(20), |f| {
        f.status("kept")["state"] == "running" && f.status("held")["state"] == "running"
    });
    let out = f.vigil(&["stop", "held", "-c", "vigil.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.wait_for("held stopped", SECS(20), |f| {
        f.status("held")["state"] == "stopped" && held.show("ActiveState") == "inactive"
    });
    let invocation = kept.show("InvocationID");
    let pid = kept.show("MainPID");

    f.signal(libc::SIGKILL);
    f.wait_exit(SECS(5));
    // As if vigil had been killed after it saved the hold but before its stop reached the
    // unit: the held unit runs.
    systemctl(&["start", &held.name]);
    assert_eq!(held.show("ActiveState"), "active");
    f.start();
    f.wait_for("kept taken over", SECS(20), |f| {
        f.status("kept")["state"] == "running"
    });
    f.wait_for("the held unit stopped again", SECS(20), |f| {
        f.status("held")["state"] == "stopped" && held.show("ActiveState") == "inactive"
    });
    let stop = f.records_of("held", "stop").pop().expect("a stop record");
    assert!(
        stop["reason"].as_str().unwrap().contains("yet it runs"),
        "{stop}"
    );
    assert_eq!(f.status("held")["held"], true);
    let status = f.status("kept");
    assert_eq!(status["adopted"], true, "{status}");
    assert_eq!(
        kept.show("InvocationID"),
        invocation,
        "taken over, not restarted"
    );
    assert_eq!(kept.show("MainPID"), pid);
    assert_eq!(f.status("held")["state"], "stopped");
    assert_eq!(held.show("ActiveState"), "inactive");

    // Its end is seen like one vigil started.
    systemctl(&["kill", "-s", "KILL", &kept.name]);
    f.wait_for("restarted after its end", SECS(20), |f| {
        kept.show("InvocationID") != invocation && f.status("kept")["state"] == "running"
    });
    assert_eq!(
        f.records_of("kept", "exit")[0]["metadata"]["signal"],
        "KILL"
    );
    assert_eq!(f.stop(), 0);
}

#[test]
#[ignore = "needs a systemd host: set VIGIL_TEST_SYSTEMD_PID and VIGIL_TEST_SYSTEMD_SHARE (.ci/systemd-setup)"]
fn check_live_warns_of_a_second_healer_and_vigil_refuses_its_own_unit() {
    let healer = Unit::install(
        "vt-healer",
        "ExecStart=/bin/sh -c 'while true; do sleep 1; done'\nRestart=always",
    );
    let f = fleet(&format!(
        "[agents.bot]\ndriver = \"systemd\"\nunit = \"{}\"\n",
        healer.name
    ));
    let dir = f.dir.path().display().to_string();
    let out = inside(
        &[
            &format!("--wdns={dir}"),
            VIGIL,
            "check",
            "--live",
            "-c",
            "vigil.toml",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Restart=always"), "{text}");
    assert!(text.contains("Restart=no"), "says what to change: {text}");

    // vigil as a unit, with a config naming that very unit.
    let own = format!("{}.service", unique("vt-self").replace('_', "-"));
    std::fs::write(
        f.path("self.toml"),
        format!("[agents.me]\ndriver = \"systemd\"\nunit = \"{own}\"\n"),
    )
    .unwrap();
    let out = inside(
        &[
            "systemd-run",
            "--quiet",
            "--wait",
            "--pipe",
            &format!("--unit={own}"),
            VIGIL,
            "check",
            "-c",
            &format!("{dir}/self.toml"),
        ],
        None,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("is the one vigil itself runs in"), "{text}");
}

#[test]
fn a_unit_agent_is_checked_for_what_does_not_apply_to_it() {
    let f = Fleet::new(
        r#"
[agents.bot]
driver = "systemd"
unit = "crypto-agent@{instance}.service"
instances = ["BTC_USDT"]
command = ["python3", "bot.py"]
[[agents.bot.checks]]
kind = "notify"
max_age = "30s"

[agents.same]
driver = "systemd"
unit = "crypto-agent"
instances = ["BTC_USDT", "ETH_USDT"]

[agents.nounit]
driver = "systemd"
bus = "session"

[agents.proc]
command = ["sleep", "1"]
unit = "x.service"
"#,
    );
    let out = f.vigil(&["check", "-c", "vigil.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        "`command` in [agents.bot] does not apply to a unit",
        "a `notify` check does not apply to a unit: its watchdog is systemd's",
        "every instance of `same` would be the same unit",
        "unknown bus \"session\"",
        "`unit` in [agents.proc] needs driver = \"systemd\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// The user whose own systemd (`systemd --user`, kept running by linger) the user-bus test
/// uses: created once in the systemd host.
const USER: &str = "vigil-test";

/// The user's uid and gid, with its manager running and its bus up.
fn user_manager() -> (u32, u32) {
    let _ = inside(
        &["sh", "-c", &format!("id -u {USER} || useradd -m {USER}")],
        None,
    );
    let id = |flag: &str| -> u32 {
        String::from_utf8_lossy(&inside(&["id", flag, USER], None).stdout)
            .trim()
            .parse()
            .expect("an id")
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let out = inside(&["loginctl", "enable-linger", USER], None);
    assert!(out.status.success(), "{out:?}");
    let bus = format!("/run/user/{uid}/bus");
    for _ in 0..100 {
        if inside(&["test", "-S", &bus], None).status.success() {
            return (uid, gid);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the user manager of {USER} did not start: no {bus}");
}

/// `systemctl --user` as the test user.
fn user_systemctl(uid: u32, args: &[&str]) -> String {
    let runtime = format!("XDG_RUNTIME_DIR=/run/user/{uid}");
    let mut all = vec![
        "runuser",
        "-u",
        USER,
        "--",
        "env",
        &runtime,
        "systemctl",
        "--user",
    ];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&inside(&all, None).stdout)
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs a systemd host: set VIGIL_TEST_SYSTEMD_PID and VIGIL_TEST_SYSTEMD_SHARE (.ci/systemd-setup)"]
fn a_user_unit_is_healed_through_the_user_s_own_manager() {
    let (uid, gid) = user_manager();
    let name = format!("{}.service", unique("vt-user").replace('_', "-"));
    let body =
        "[Service]\nExecStart=/bin/sh -c 'echo user bot up; sleep 1; echo lost the feed; exit 4'\n";
    let file = format!("/home/{USER}/.config/systemd/user/{name}");
    let out = inside(
        &[
            "runuser",
            "-u",
            USER,
            "--",
            "sh",
            "-c",
            &format!("mkdir -p $(dirname {file}) && cat > {file}"),
        ],
        Some(body),
    );
    assert!(out.status.success(), "{out:?}");
    user_systemctl(uid, &["daemon-reload"]);

    let mut f = Fleet::new_in(
        &share(),
        &format!("[agents.bot]\ndriver = \"systemd\"\nunit = \"{name}\"\nbus = \"user\"\n"),
    );
    // vigil runs as the user, with the user's bus, in a folder the user may write.
    let dir = f.dir.path().display().to_string();
    let _ = inside(&["chown", "-R", USER, &dir], None);
    f.wrap = vec![
        "nsenter".into(),
        "-t".into(),
        systemd_pid(),
        "-a".into(),
        format!("--wdns={dir}"),
        // setpriv execs (runuser would stay between the test and vigil, and take its signals).
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--init-groups".into(),
        "env".into(),
        format!("HOME=/home/{USER}"),
        format!("XDG_RUNTIME_DIR=/run/user/{uid}"),
        format!("DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus"),
    ];
    f.start();
    f.wait_for("a restart through the user's manager", SECS(30), |f| {
        !f.records_of("bot", "restart").is_empty()
    });
    let exit = &f.records_of("bot", "exit")[0];
    assert_eq!(exit["metadata"]["exit_code"], 4, "{exit}");
    let explain = f.vigil(&["explain", "bot", "-c", "vigil.toml"]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("lost the feed"), "the unit's journal: {text}");
    let status = f.status("bot");
    assert_eq!(status["target"], format!("user unit {name}"), "{status}");
    assert_eq!(f.stop(), 0);
    user_systemctl(uid, &["stop", &name]);
    let _ = inside(&["rm", "-f", &file], None);
}
