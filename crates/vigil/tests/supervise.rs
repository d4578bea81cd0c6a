//! The daemon against real processes: crashes, crash loops, process trees, reloads, restarts
//! of vigil itself, and the journal.

mod common;

use std::time::Duration;

use common::{Fleet, pids_with, read, record_time, unsafe_kill};

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn kill_9_of_an_agent_is_followed_by_its_restart_within_milliseconds() {
    let mut fleet = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "710001"]
"#,
    );
    fleet.start();
    fleet.wait_for("bot running", SECS(5), |_| {
        pids_with("sleep 710001").len() == 1
    });
    let first = pids_with("sleep 710001")[0];
    unsafe_kill(first, 9);
    fleet.wait_for("restart", SECS(5), |f| {
        !f.records_of("bot", "restart").is_empty()
    });
    fleet.wait_for("new process", SECS(5), |_| {
        let pids = pids_with("sleep 710001");
        pids.len() == 1 && pids[0] != first
    });
    let exit = &fleet.records_of("bot", "exit")[0];
    let restart = &fleet.records_of("bot", "restart")[0];
    assert_eq!(
        exit["reason"].as_str().unwrap().split(" after").next(),
        Some("killed by SIGKILL")
    );
    assert_eq!(exit["metadata"]["signal"], "KILL");
    assert_eq!(exit["metadata"]["pid"], first);
    assert_eq!(restart["reason"], "killed by SIGKILL");
    assert_eq!(restart["metadata"]["restarts_in_window"], 1);
    assert_eq!(restart["metadata"]["budget_remaining"], 2);
    // No cooldown or backoff stands between the first crash and its restart.
    let gap = record_time(restart)
        .duration_since(record_time(exit))
        .unwrap();
    assert!(gap < Duration::from_millis(1000), "restart took {gap:?}");
    assert!(fleet.records(Some("backoff")).is_empty());
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_crash_loop_ends_quarantined_after_max_restarts_with_one_escalation() {
    let mut fleet = Fleet::new(
        r#"[agents.flaky]
command = ["sh", "-c", "echo 'connecting'; exit 3"]

[agents.flaky.policy]
cooldown = "0s"
backoff_initial = "10ms"
max_restarts = 3
window = "1h"
"#,
    );
    fleet.start();
    fleet.wait_for("escalation", SECS(10), |f| {
        !f.records_of("flaky", "escalated").is_empty()
    });
    fleet.settled();
    assert_eq!(fleet.records_of("flaky", "restart").len(), 3);
    assert_eq!(fleet.records_of("flaky", "exit").len(), 4);
    assert_eq!(fleet.records_of("flaky", "escalated").len(), 1);
    let escalated = &fleet.records_of("flaky", "escalated")[0];
    assert!(
        escalated["reason"].as_str().unwrap().contains(
            "quarantined: restart budget exhausted (3 of 3 restarts used in the last 1h)"
        )
    );
    assert_eq!(escalated["success"], false);
    fleet.wait_for("the quarantine saved", SECS(5), |f| {
        f.saved_state()
            .get("flaky")
            .is_some_and(|s| s["quarantined"].is_string())
    });
    assert_eq!(fleet.stop(), 0);

    // A quarantine survives a restart of vigil: the agent stays down.
    fleet.start();
    let (_, status) = fleet.api("GET", "/status/flaky", "");
    assert_eq!(status["state"], "quarantined", "{status}");
    fleet.settled();
    assert_eq!(fleet.records_of("flaky", "exit").len(), 4);
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn sigterm_stops_every_agent_tree_and_leaves_no_process_behind() {
    let mut fleet = Fleet::new(
        r#"[agents.stubborn]
# A child that ignores SIGTERM, and a grandchild that daemonized into its own session.
command = ["sh", "-c", "(trap '' TERM; exec sleep 720001) & setsid sh -c 'exec sleep 720002' & exec sleep 720003"]
stop_timeout = "500ms"

[agents.plain]
command = ["sleep", "720004"]
instances = ["a", "b"]
"#,
    );
    fleet.start();
    fleet.wait_for("all processes up", SECS(5), |_| {
        ["720001", "720002", "720003", "720004"]
            .iter()
            .all(|m| !pids_with(&format!("sleep {m}")).is_empty())
    });
    assert_eq!(fleet.stop(), 0);
    for m in ["720001", "720002", "720003", "720004"] {
        assert!(
            pids_with(&format!("sleep {m}")).is_empty(),
            "sleep {m} survived"
        );
    }
    assert_eq!(
        fleet.records_of("stubborn", "kill").len(),
        1,
        "SIGKILL after stop_timeout"
    );
    assert_eq!(fleet.records(Some("vigil_stop")).len(), 1);
    // A shutdown is not a human stop: the next vigil starts them again.
    fleet.start();
    fleet.wait_for("restarted by the next vigil", SECS(5), |_| {
        pids_with("sleep 720004").len() == 2
    });
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn agents_get_their_identity_environment_and_log_file() {
    let mut fleet = Fleet::new(
        r#"[agents.echo]
command = ["sh", "-c", "echo \"agent=$VIGIL_AGENT instance=$VIGIL_INSTANCE symbol=$SYMBOL\"; echo oops >&2; exec sleep 730001"]
instances = ["BTC_USDT"]
env = { SYMBOL = "{instance}" }
"#,
    );
    fleet.start();
    let log = fleet.state().join("logs/echo@BTC_USDT.log");
    fleet.wait_for("log lines", SECS(5), |_| read(&log).contains("oops"));
    assert!(read(&log).contains("agent=echo@BTC_USDT instance=BTC_USDT symbol=BTC_USDT"));
    let out = fleet.vigil(&["logs", "echo@BTC_USDT", "-n", "1", "-c", "vigil.toml"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "oops\n");
    let out = fleet.vigil(&["logs", "nobody", "-c", "vigil.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no log for agent or template \"nobody\"")
    );
    assert_eq!(fleet.stop(), 0);
}

/// An agent holds its stdin (/dev/null), stdout and stderr (its log) and nothing else: not
/// one of vigil's descriptors (a pidfd per agent, the journal, sockets), not one vigil itself
/// inherited without close-on-exec — however many agents vigil runs, and on every restart.
#[test]
fn agents_hold_only_their_stdin_stdout_and_stderr() {
    let mut fleet = Fleet::new(
        r#"[agents.fds]
command = ["sh", "-c", "echo fds:; ls /proc/$$/fd; echo end; ls -l /proc/$$/fd/0; echo nofile=$(ulimit -n); exec sleep 730003"]
instances = ["1", "2", "3"]
"#,
    );
    // A descriptor vigil inherits without close-on-exec (as from a careless parent).
    let leaked = std::fs::File::open(fleet.config()).unwrap();
    // SAFETY: dup of a descriptor this test owns; the copy is left open for vigil to inherit.
    let inherited = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&leaked)) };
    assert!(inherited > 2);
    // vigil raises its own descriptor limit (a pidfd per agent); agents get the one it was
    // started with.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on structs owned here; lowering the soft limit is always allowed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        libc::setrlimit(
            libc::RLIMIT_NOFILE,
            &libc::rlimit {
                rlim_cur: 1000.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            },
        );
    }
    fleet.start();
    // SAFETY: as above, giving back the soft limit this test found.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    let vigil_limits = read(std::path::Path::new(&format!(
        "/proc/{}/limits",
        fleet.pid()
    )));
    let open_files = vigil_limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_string();
    assert_eq!(open_files, limit.rlim_max.to_string(), "{vigil_limits}");
    for i in 1..=3 {
        let log = fleet.state().join(format!("logs/fds@{i}.log"));
        // Its last line is written last.
        fleet.wait_for("the agent's descriptors and limit", SECS(5), |_| {
            read(&log).contains("nofile=")
        });
        let text = read(&log);
        assert!(text.contains("fds:\n0\n1\n2\nend\n"), "{text}");
        assert!(text.contains("-> /dev/null"), "{text}");
        let expected = format!("nofile={}\n", 1000.min(limit.rlim_max));
        assert!(text.contains(&expected), "{text}");
    }
    // SAFETY: closing the copy made above.
    unsafe { libc::close(inherited) };
    // A restart starts the same way.
    let logs = |f: &Fleet| -> String {
        (1..=3)
            .map(|i| read(&f.state().join(format!("logs/fds@{i}.log"))))
            .collect()
    };
    let before = logs(&fleet).matches("fds:").count();
    unsafe_kill(pids_with("sleep 730003")[0], libc::SIGKILL);
    fleet.wait_for("the restarted agent's descriptors", SECS(5), |f| {
        logs(f).matches("nofile=").count() > before
    });
    assert_eq!(
        logs(&fleet).matches("fds:\n0\n1\n2\nend\n").count(),
        before + 1
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn sighup_reload_adds_removes_restarts_changed_and_refuses_broken_configs() {
    let mut fleet = Fleet::new(
        r#"[agents.keep]
command = ["sleep", "740001"]
[agents.gone]
command = ["sleep", "740002"]
[agents.changed]
command = ["sleep", "740003"]
"#,
    );
    fleet.start();
    fleet.wait_for("three agents", SECS(5), |_| {
        ["740001", "740002", "740003"]
            .iter()
            .all(|m| pids_with(&format!("sleep {m}")).len() == 1)
    });
    let keep = pids_with("sleep 740001")[0];

    // A broken config is refused as a whole.
    fleet.write_config("[agents.keep]\ncommand = [\"sleep\", \"740001\"]\nbogus = 1\n");
    fleet.signal(1);
    fleet.wait_for("refused reload", SECS(5), |f| {
        !f.records(Some("vigil_reload")).is_empty()
    });
    let refused = &fleet.records(Some("vigil_reload"))[0];
    assert_eq!(refused["success"], false);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("vigil.toml:3:1: unknown key `bogus`")
    );
    assert_eq!(pids_with("sleep 740002").len(), 1, "nothing was touched");

    fleet.write_config(
        r#"[agents.keep]
command = ["sleep", "740001"]
[agents.changed]
command = ["sleep", "740013"]
[agents.added]
command = ["sleep", "740004"]
"#,
    );
    fleet.signal(1);
    fleet.wait_for("applied reload", SECS(5), |f| {
        f.records(Some("vigil_reload")).len() == 2
    });
    fleet.wait_for("new state", SECS(5), |_| {
        pids_with("sleep 740002").is_empty()
            && pids_with("sleep 740003").is_empty()
            && pids_with("sleep 740013").len() == 1
            && pids_with("sleep 740004").len() == 1
    });
    assert_eq!(
        pids_with("sleep 740001"),
        vec![keep],
        "untouched agents keep running"
    );
    let applied = &fleet.records(Some("vigil_reload"))[1];
    assert_eq!(applied["metadata"]["added"], serde_json::json!(["added"]));
    assert_eq!(applied["metadata"]["removed"], serde_json::json!(["gone"]));
    assert_eq!(
        applied["metadata"]["restarted"],
        serde_json::json!(["changed"])
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_torn_journal_line_is_skipped_and_never_corrupts_what_follows() {
    let mut fleet = Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"750001\"]\n");
    std::fs::create_dir_all(fleet.state()).unwrap();
    std::fs::write(
        fleet.state().join("audit.jsonl"),
        "{\"ts\":\"2026-01-01T00:00:00.000Z\",\"agent\":\"bot\",\"action\":\"start\",\"reason\":\"x\",\"success\":true,\"error\":null,\"metadata\":{}}\n{\"ts\":\"2026-01-01T00:00:01",
    )
    .unwrap();
    fleet.start();
    assert!(fleet.output().contains("the last record was cut short"));
    assert_eq!(fleet.stop(), 0);
    let out = fleet.vigil(&["audit", "-c", "vigil.toml", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("audit.jsonl:2: skipped a damaged record"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["reason"], "x");
    assert!(lines.iter().any(|r| r["action"] == "vigil_start"));
    assert!(lines.iter().any(|r| r["action"] == "vigil_stop"));
}

#[test]
fn a_restarted_vigil_adopts_running_agents_instead_of_starting_copies() {
    let mut fleet = Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"760001\"]\n");
    fleet.start();
    fleet.wait_for("bot", SECS(5), |_| pids_with("sleep 760001").len() == 1);
    let pid = pids_with("sleep 760001")[0];
    // vigil dies hard: the agent keeps running (no pipe to vigil, no parent-death signal).
    fleet.signal(9);
    fleet.wait_exit(SECS(5));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(pids_with("sleep 760001"), vec![pid]);

    fleet.start();
    fleet.wait_for("adoption", SECS(5), |f| {
        !f.records_of("bot", "adopted").is_empty()
    });
    fleet.settled();
    assert_eq!(pids_with("sleep 760001"), vec![pid], "no second copy");
    // The adopted agent is supervised: its death is noticed and healed.
    unsafe_kill(pid, 9);
    fleet.wait_for("restart after adoption", SECS(5), |f| {
        !f.records_of("bot", "restart").is_empty()
    });
    fleet.wait_for("new process", SECS(5), |_| {
        let p = pids_with("sleep 760001");
        p.len() == 1 && p[0] != pid
    });
    assert_eq!(fleet.stop(), 0);
    assert!(pids_with("sleep 760001").is_empty());
}

#[test]
fn a_second_vigil_on_the_same_state_dir_refuses_to_start() {
    let mut fleet = Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"770001\"]\n");
    fleet.start();
    let out = fleet.vigil(&["run", "-c", "vigil.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "another vigil (pid {}) is already running",
            fleet.pid()
        )),
        "{stderr}"
    );
    assert_eq!(pids_with("sleep 770001").len(), 1);
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_missing_executable_is_recorded_with_its_reason() {
    let mut fleet = Fleet::new(
        r#"[agents.ghost]
command = ["/nonexistent/bot"]
[agents.ghost.policy]
cooldown = "0s"
backoff_initial = "10ms"
max_restarts = 1
"#,
    );
    fleet.start();
    fleet.wait_for("quarantine", SECS(5), |f| {
        !f.records_of("ghost", "escalated").is_empty()
    });
    let failed = &fleet.records_of("ghost", "spawn_failed")[0];
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .starts_with("/nonexistent/bot: command not found")
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn audit_command_filters_by_template_action_and_time() {
    let mut fleet = Fleet::new(
        r#"[agents.trader]
command = ["sleep", "780001"]
instances = ["BTC", "ETH"]
[agents.other]
command = ["sleep", "780002"]
"#,
    );
    fleet.start();
    fleet.wait_for("starts", SECS(5), |f| f.records(Some("start")).len() == 3);
    assert_eq!(fleet.stop(), 0);
    let out = fleet.vigil(&[
        "audit",
        "-c",
        "vigil.toml",
        "--agent",
        "trader",
        "--action",
        "start",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("trader@BTC") && text.contains("trader@ETH") && !text.contains("other"));
    let out = fleet.vigil(&[
        "audit",
        "-c",
        "vigil.toml",
        "--since",
        "1h",
        "-n",
        "1",
        "--json",
    ]);
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["action"], "vigil_stop");
    let out = fleet.vigil(&[
        "audit",
        "-c",
        "vigil.toml",
        "--since",
        "2100-01-01T00:00:00Z",
    ]);
    assert!(out.stdout.is_empty());
    let out = fleet.vigil(&["audit", "-c", "vigil.toml", "--action", "restarted"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known actions: start, exit, restart"));
}

/// A stop sends the stop signal once to a process of the group: a second SIGTERM is, to many
/// programs, "stop now, skip the clean shutdown" (seen by the issue 17 scenario tests).
#[test]
fn a_stop_signals_each_process_once() {
    let script = r#"
import signal, time
n = 0
def term(*_):
    global n
    n += 1
    open("terms", "w").write(str(n))
signal.signal(signal.SIGTERM, term)
open("ready", "w").close()
while n == 0:
    time.sleep(0.01)
time.sleep(1.0)
"#;
    let mut f = Fleet::new("");
    std::fs::write(f.path("once.py"), script).unwrap();
    f.write_config(&format!(
        "[agents.once]\ncommand = [\"python3\", \"{}\"]\ncwd = \"{}\"\nstop_timeout = \"10s\"\n",
        f.path("once.py").display(),
        f.path("").display()
    ));
    f.start();
    f.wait_for("the agent ready", Duration::from_secs(10), |f| {
        f.path("ready").exists()
    });
    let out = f.vigil(&["stop", "once", "-c", "vigil.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.wait_for("its exit", Duration::from_secs(10), |f| {
        !f.records_of("once", "exit").is_empty()
    });
    assert_eq!(
        read(&f.path("terms")),
        "1",
        "SIGTERM delivered more than once"
    );
}
