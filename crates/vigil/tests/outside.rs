//! Agents already running outside vigil, against real processes: a copy vigil did not start
//! keeps the agent from starting (never two copies); `adopt` takes the agent's own process
//! over; both survive a `kill -9` of vigil.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Fleet, pids_with, unsafe_kill};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A bot started by hand (by the test, in its own process group), killed when dropped.
struct ByHand(Child);

impl ByHand {
    fn start(argv: &[&str], cwd: &Path) -> ByHand {
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the bot by hand");
        let marker = argv.join(" ");
        let deadline = std::time::Instant::now() + SECS(5);
        while !pids_with(&marker).contains(&(child.id() as i32)) {
            assert!(
                std::time::Instant::now() < deadline,
                "{marker} did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        ByHand(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Whether it has ended (collected).
    fn ended(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_some()
    }
}

impl Drop for ByHand {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the group is the test's own child's.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

#[test]
fn an_agent_already_running_outside_vigil_is_not_started_a_second_time() {
    let mut fleet = Fleet::new(
        r#"
[agents.bot]
command = ["sleep", "780001"]
cwd = "."

[agents.other]
command = ["sleep", "780002"]
cwd = "."
"#,
    );
    let copy = ByHand::start(&["sleep", "780001"], fleet.dir.path());
    // `vigil check --live` sees it before vigil runs, and says what to do.
    let out = fleet.vigil(&["check", "--live", "-c", "vigil.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "bot: CONFLICT: pid {} runs the same command",
            copy.pid()
        )),
        "{text}"
    );
    assert!(text.contains("other: not running outside vigil"), "{text}");

    fleet.start();
    fleet.wait_for("the conflict", SECS(5), |f| {
        !f.records_of("bot", "conflict").is_empty()
    });
    fleet.wait_for("other", SECS(5), |_| pids_with("sleep 780002").len() == 1);
    fleet.settled();
    assert_eq!(
        pids_with("sleep 780001"),
        vec![copy.pid()],
        "no second copy"
    );
    let record = &fleet.records_of("bot", "conflict")[0];
    assert_eq!(record["success"], false);
    assert_eq!(record["metadata"]["pid"], copy.pid());
    // The status view follows the journal within its publishing interval.
    fleet.wait_for("status conflict", SECS(5), |f| {
        f.status("bot")["state"] == "conflict"
    });
    let status = fleet.status("bot");
    assert_eq!(status["conflict"]["pid"], copy.pid());
    assert_eq!(status["pid"], serde_json::Value::Null);
    // The CLI's status flags it, with the reason.
    let out = fleet.vigil(&["status", "-c", "vigil.toml"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("CONFLICT"), "{table}");
    let metrics = fleet.http("GET", "/metrics", &[], "").1;
    assert_eq!(
        common::metric(
            &metrics,
            r#"vigil_agent_state{agent="bot",state="conflict"}"#
        ),
        Some(1.0),
        "{metrics}"
    );

    // `vigil explain` says why it did not start (it has not failed).
    let out = fleet.vigil(&["explain", "bot", "-c", "vigil.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("it was not started, because pid") && err.contains("runs the same command"),
        "{err}"
    );

    // While the copy runs, a plain start looks again and refuses again.
    let out = fleet.vigil(&["start", "bot", "-c", "vigil.toml"]);
    assert!(out.status.success());
    fleet.wait_for("the second conflict", SECS(5), |f| {
        f.records_of("bot", "conflict").len() == 2
    });
    assert_eq!(pids_with("sleep 780001"), vec![copy.pid()]);

    // The human stops the copy; the next start starts vigil's own.
    drop(copy);
    let out = fleet.vigil(&["start", "bot", "-c", "vigil.toml"]);
    assert!(out.status.success());
    fleet.wait_for("bot started by vigil", SECS(5), |f| {
        f.status("bot")["state"] == "running"
    });
    assert_eq!(pids_with("sleep 780001").len(), 1);
    assert_eq!(fleet.stop(), 0);
    assert!(pids_with("sleep 780001").is_empty());
}

#[test]
fn start_force_starts_next_to_the_copy_on_the_record() {
    let mut fleet = Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"780011\"]\ncwd = \".\"\n");
    let copy = ByHand::start(&["sleep", "780011"], fleet.dir.path());
    fleet.start();
    fleet.wait_for("the conflict", SECS(5), |f| {
        !f.records_of("bot", "conflict").is_empty()
    });
    let out = fleet.vigil(&[
        "start",
        "bot",
        "--force",
        "--reason",
        "the copy is a backtest",
        "-c",
        "vigil.toml",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.wait_for("two copies, on purpose", SECS(5), |_| {
        pids_with("sleep 780011").len() == 2
    });
    let start = fleet.records_of("bot", "start").pop().unwrap();
    assert_eq!(start["metadata"]["forced_past_pid"], copy.pid(), "{start}");
    assert!(
        start["reason"]
            .as_str()
            .unwrap()
            .contains("the copy is a backtest"),
        "{start}"
    );
    // `force` is for start only.
    let (code, body) = fleet.api("POST", "/agents/bot/restart", r#"{"force": true}"#);
    assert_eq!(code, 400, "{body}");
    assert_eq!(fleet.stop(), 0);
    assert_eq!(
        pids_with("sleep 780011"),
        vec![copy.pid()],
        "the copy is not vigil's"
    );
}

#[test]
fn adopt_takes_over_the_process_a_pidfile_names_and_stops_it_like_its_own() {
    let mut fleet = Fleet::new(
        r#"
[agents.bot]
command = ["sleep", "780021"]
cwd = "."
adopt = { pidfile = "bot.pid" }
stop_timeout = "5s"
"#,
    );
    let mut bot = ByHand::start(&["sleep", "780021"], fleet.dir.path());
    std::fs::write(fleet.path("bot.pid"), format!("{}\n", bot.pid())).unwrap();
    fleet.start();
    fleet.wait_for("adoption", SECS(5), |f| {
        !f.records_of("bot", "adopted").is_empty()
    });
    fleet.settled();
    assert_eq!(
        pids_with("sleep 780021"),
        vec![bot.pid()],
        "taken over, not doubled"
    );
    let adopted = &fleet.records_of("bot", "adopted")[0];
    assert_eq!(adopted["metadata"]["pid"], bot.pid());
    let pidfile = fleet.path("bot.pid");
    assert_eq!(
        adopted["metadata"]["found_by"],
        format!("pidfile {}", pidfile.display()),
        "{adopted}"
    );
    fleet.wait_for("status running", SECS(5), |f| {
        f.status("bot")["state"] == "running"
    });
    assert_eq!(fleet.status("bot")["pid"], bot.pid());
    assert_eq!(fleet.status("bot")["adopted"], true);
    let out = fleet.vigil(&["status", "-c", "vigil.toml"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("RUNNING (ADOPTED)"), "{table}");

    // A human stop reaches it (it is not vigil's child: the signal goes through its pidfd).
    let out = fleet.vigil(&["stop", "bot", "-c", "vigil.toml"]);
    assert!(out.status.success());
    fleet.wait_for("the adopted bot stopped", SECS(5), |f| {
        f.status("bot")["state"] == "stopped"
    });
    assert!(bot.ended(), "SIGTERM reached the adopted process");
    // Started again, vigil runs its own (the pidfile names a process that is gone).
    let out = fleet.vigil(&["start", "bot", "-c", "vigil.toml"]);
    assert!(out.status.success());
    fleet.wait_for("vigil's own bot", SECS(5), |_| {
        pids_with("sleep 780021").len() == 1
    });
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn an_adopted_process_that_dies_is_restarted_and_survives_a_kill_9_of_vigil() {
    let mut fleet = Fleet::new(
        r#"
[agents.bot]
command = ["sleep", "780031"]
cwd = "."
adopt = { match = "sleep 780031" }
"#,
    );
    let bot = ByHand::start(&["sleep", "780031"], fleet.dir.path());
    fleet.start();
    fleet.wait_for("adoption", SECS(5), |f| {
        !f.records_of("bot", "adopted").is_empty()
    });
    // vigil dies hard and comes back: it takes over the same process again, no restart.
    fleet.signal(9);
    fleet.wait_exit(SECS(5));
    fleet.start();
    fleet.wait_for("adoption after kill -9", SECS(5), |f| {
        f.records_of("bot", "adopted").len() == 2
    });
    fleet.settled();
    assert_eq!(pids_with("sleep 780031"), vec![bot.pid()]);
    assert!(fleet.records_of("bot", "restart").is_empty());

    // The adopted process dies: vigil notices at once (its pidfd) and starts its own.
    unsafe_kill(bot.pid(), 9);
    fleet.wait_for("restart", SECS(5), |f| {
        !f.records_of("bot", "restart").is_empty()
    });
    fleet.wait_for("vigil's own bot", SECS(5), |_| {
        let p = pids_with("sleep 780031");
        p.len() == 1 && p[0] != bot.pid()
    });
    let exit = fleet.records_of("bot", "exit").pop().unwrap();
    assert_eq!(exit["metadata"]["pid"], bot.pid(), "{exit}");
    assert_eq!(fleet.stop(), 0);
    assert!(pids_with("sleep 780031").is_empty());
}

#[test]
fn a_taken_over_process_that_leads_no_process_group_is_stopped_through_its_pidfd() {
    let mut fleet = Fleet::new(
        r#"
[agents.bot]
command = ["sleep", "780041"]
adopt = { match = "sleep 780041" }
stop_timeout = "3s"
"#,
    );
    // A shell started the bot and waits for it: the bot is neither a group nor a session
    // leader, so no process group reaches it.
    let _shell = ByHand::start(&["sh", "-c", "sleep 780041 & wait"], fleet.dir.path());
    fleet.wait_for("the bot", SECS(5), |_| pids_with("sleep 780041").len() == 2);
    fleet.start();
    fleet.wait_for("adoption", SECS(5), |f| {
        !f.records_of("bot", "adopted").is_empty()
    });
    let adopted = fleet.records_of("bot", "adopted")[0]["metadata"]["pid"]
        .as_i64()
        .unwrap() as i32;
    let cmdline = std::fs::read(format!("/proc/{adopted}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with(b"sleep\0"),
        "the program, not its shell"
    );
    let out = fleet.vigil(&["stop", "bot", "-c", "vigil.toml"]);
    assert!(out.status.success());
    fleet.wait_for("the bot stopped by SIGTERM", SECS(2), |_| {
        !pids_with("sleep 780041").contains(&adopted)
    });
    let stop = fleet.records_of("bot", "exit").pop().unwrap();
    assert_eq!(stop["metadata"]["pid"], adopted, "{stop}");
    assert!(
        fleet.records_of("bot", "kill").is_empty(),
        "no SIGKILL was needed"
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_config_cannot_adopt_with_a_notify_check_or_two_ways_at_once() {
    let fleet = Fleet::new(
        r#"
[agents.bot]
command = ["sleep", "1"]
adopt = { pidfile = "bot.pid", match = "sleep" }

[agents.beat]
command = ["sleep", "1"]
adopt = { pidfile = "beat.pid" }
[[agents.beat.checks]]
kind = "notify"
max_age = "30s"

[agents.many]
command = ["sleep", "1"]
instances = ["a", "b"]
adopt = { pidfile = "/run/bot.pid" }
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("both `pidfile` and `match`"), "{err}");
    assert!(err.contains("`adopt` and a `notify` check"), "{err}");
    assert!(
        err.contains("every instance of `many` would take over the same process"),
        "{err}"
    );
}
