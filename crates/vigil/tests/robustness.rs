//! vigil keeps its own promises under bad input and odd conditions: it never spins, never
//! panics on a config, never decides or kills anything the journal does not show, and says so
//! when it cannot write its journal.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Fleet, VIGIL, metric, pids_with, read, unsafe_kill};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// CPU time (user + system, in clock ticks of 10 ms) vigil has used so far.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = read(std::path::Path::new(&format!("/proc/{pid}/stat")));
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the command name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// How many times the supervision loop has woken up.
fn wakeups(f: &Fleet) -> f64 {
    let (_, text) = f.http("GET", "/metrics", &[], "");
    metric(&text, "vigil_loop_wakeups_total").expect("vigil_loop_wakeups_total is exported")
}

/// CPU ticks vigil spends over two seconds once every agent runs (a spinning loop: ~200).
fn idle_ticks(fleet: &Fleet, marker: &str, agents: usize) -> u64 {
    fleet.wait_for("every agent running", SECS(10), |f| {
        pids_with(marker).len() == agents && f.records(Some("start")).len() == agents
    });
    let before = cpu_ticks(fleet.pid());
    std::thread::sleep(SECS(2));
    cpu_ticks(fleet.pid()) - before
}

#[test]
fn with_the_api_off_an_idle_vigil_sleeps() {
    let mut fleet = Fleet::new(
        r#"[api]
enabled = false

[agents.bot]
command = ["sleep", "810001"]
instances = ["a", "b", "c"]
"#,
    );
    fleet.start();
    let ticks = idle_ticks(&fleet, "sleep 810001", 3);
    assert!(ticks < 30, "vigil used {ticks} CPU ticks in 2 s while idle");
    // Still supervising: a crash is healed.
    unsafe_kill(pids_with("sleep 810001")[0], 9);
    fleet.wait_for("restart", SECS(5), |f| {
        !f.records(Some("restart")).is_empty()
    });
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn without_a_notify_socket_an_idle_vigil_sleeps() {
    let mut fleet = Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"810002\"]\n");
    // Something else sits where the socket would go: it cannot be bound.
    std::fs::create_dir_all(fleet.state().join("notify.sock/taken")).unwrap();
    fleet.start();
    assert!(
        fleet.output().contains("cannot open the notify socket"),
        "{}",
        fleet.output()
    );
    let ticks = idle_ticks(&fleet, "sleep 810002", 1);
    assert!(ticks < 30, "vigil used {ticks} CPU ticks in 2 s while idle");
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn an_idle_fleet_never_wakes_the_supervision_loop() {
    let mut fleet =
        Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"810003\"]\ninstances = [\"a\", \"b\"]\n");
    fleet.start();
    // Started (after the look for copies outside vigil) and published: the status says so.
    fleet.wait_for("both running", SECS(10), |f| {
        let (_, s) = f.api("GET", "/status", "");
        s["agents"].as_array().is_some_and(|a| {
            a.len() == 2
                && a.iter()
                    .all(|a| a["state"] == "running" && a["pid"].is_u64())
        })
    });
    // A positive sign that the loop runs: it answers /health's ping (one wakeup).
    let (code, _) = fleet.api("GET", "/health", "");
    assert_eq!(code, 200);
    let before = wakeups(&fleet);
    assert!(before >= 1.0, "the loop has turned to answer /health");
    std::thread::sleep(SECS(2));
    assert_eq!(
        wakeups(&fleet),
        before,
        "nothing happened, yet the loop woke"
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn absurd_durations_are_refused_with_their_place_not_a_panic() {
    let fleet = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "1"]
stop_timeout = "99999999999999999999d"

[agents.bot.policy]
cooldown = "5000000000000000000s"
stable_after = "5000000000000000000s"
backoff_max = "5000000000000000000s"
on_exhausted = "retry_after"
retry_after = "5000000000000000000s"
"#,
    );
    let out = fleet.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("--> vigil.toml:3:16"), "{stderr}");
    assert!(stderr.contains("at most 365d"), "{stderr}");
    assert!(stderr.contains("5 errors in vigil.toml"), "{stderr}");
}

#[test]
fn a_reload_with_an_absurd_duration_is_refused_and_supervision_goes_on() {
    let mut fleet = Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"810004\"]\n");
    fleet.start();
    fleet.wait_for("bot", SECS(5), |_| pids_with("sleep 810004").len() == 1);
    fleet.write_config(
        "[agents.bot]\ncommand = [\"sleep\", \"810004\"]\nstop_timeout = \"99999999999999999999d\"\n",
    );
    fleet.signal(1);
    fleet.wait_for("refused reload", SECS(5), |f| {
        !f.records(Some("vigil_reload")).is_empty()
    });
    let refused = &fleet.records(Some("vigil_reload"))[0];
    assert_eq!(refused["success"], false, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("vigil.toml:3:16"),
        "{refused}"
    );
    let pid = pids_with("sleep 810004")[0];
    unsafe_kill(pid, 9);
    fleet.wait_for("healed", SECS(5), |f| {
        !f.records_of("bot", "restart").is_empty()
    });
    assert_eq!(fleet.stop(), 0);
}

/// A panic in the loop is journaled and vigil comes back at once on the same pid, still the
/// parent of its agents: no agent is left unsupervised and none is started twice.
#[test]
fn a_panic_in_the_loop_is_journaled_and_vigil_comes_back_adopting_its_agents() {
    let mut fleet =
        Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"810005\"]\ninstances = [\"a\", \"b\"]\n");
    let log = std::fs::File::create(fleet.path("vigil.out")).unwrap();
    let child = Command::new(VIGIL)
        .current_dir(fleet.dir.path())
        .args(["run", "-c"])
        .arg(fleet.config())
        .env("VIGIL_LOG", "debug")
        // A fault point of debug builds: the next SIGHUP panics inside the loop.
        .env("VIGIL_FAILPOINT", "panic-on-reload")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    fleet.child = Some(child);
    fleet.wait_for("both running", SECS(10), |_| {
        pids_with("sleep 810005").len() == 2
    });
    let before = pids_with("sleep 810005");
    fleet.signal(1);
    fleet.wait_for("the crash record", SECS(10), |f| {
        !f.records(Some("vigil_crash")).is_empty()
    });
    let crash = &fleet.records(Some("vigil_crash"))[0];
    assert!(
        crash["reason"]
            .as_str()
            .unwrap()
            .contains("failpoint panic-on-reload"),
        "{crash}"
    );
    fleet.wait_for("vigil back, adopting both", SECS(10), |f| {
        f.records(Some("vigil_start")).len() == 2 && f.records(Some("adopted")).len() == 2
    });
    assert_eq!(pids_with("sleep 810005"), before, "no second copies");
    // Supervised again: a crash is healed by the vigil that came back.
    unsafe_kill(before[0], 9);
    fleet.wait_for("healed", SECS(5), |f| {
        !f.records(Some("restart")).is_empty()
    });
    fleet.wait_for("two again", SECS(5), |_| {
        pids_with("sleep 810005").len() == 2
    });
    assert_eq!(fleet.stop(), 0);
    assert!(pids_with("sleep 810005").is_empty());
}

#[test]
fn a_mistyped_program_is_quarantined_at_once_not_retried() {
    let mut fleet = Fleet::new(
        r#"[agents.typo]
command = ["pyhton3", "bot.py"]
[agents.missing]
command = ["/nonexistent/bot"]
[agents.nowhere]
command = ["sleep", "1"]
cwd = "/nonexistent/dir"
"#,
    );
    fleet.start();
    for agent in ["typo", "missing", "nowhere"] {
        fleet.wait_for(&format!("{agent} quarantined"), SECS(5), |f| {
            !f.records_of(agent, "escalated").is_empty()
        });
        assert_eq!(fleet.records_of(agent, "spawn_failed").len(), 1, "{agent}");
        assert!(fleet.records_of(agent, "restart").is_empty(), "{agent}");
        let escalated = &fleet.records_of(agent, "escalated")[0];
        assert_eq!(
            escalated["metadata"]["diagnosis"]["category"], "permanent",
            "{escalated}"
        );
    }
    let failed = &fleet.records_of("typo", "spawn_failed")[0];
    assert_eq!(
        failed["metadata"]["error_kind"], "program_not_found",
        "{failed}"
    );
    assert!(
        failed["error"].as_str().unwrap().contains("pyhton3"),
        "{failed}"
    );
    let nowhere = &fleet.records_of("nowhere", "spawn_failed")[0];
    assert_eq!(
        nowhere["metadata"]["error_kind"], "bad_working_dir",
        "{nowhere}"
    );
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn an_escaped_daemon_of_a_crashed_run_is_killed_on_the_record() {
    let mut fleet = Fleet::new(
        r#"[agents.leaky]
# A daemon that leaves the process group, then the main process crashes.
command = ["sh", "-c", "setsid sh -c 'exec sleep 810006' & sleep 0.3; exit 1"]
restart = "never"
"#,
    );
    fleet.start();
    fleet.wait_for("crash", SECS(5), |f| {
        !f.records_of("leaky", "exit").is_empty()
    });
    fleet.wait_for("daemon gone", SECS(5), |_| {
        pids_with("sleep 810006").is_empty()
    });
    let kills = fleet.records_of("leaky", "kill");
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert!(
        kills[0]["reason"].as_str().unwrap().contains("escaped"),
        "{}",
        kills[0]
    );
    assert_eq!(kills[0]["metadata"]["pids"].as_array().unwrap().len(), 1);
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_run_of_a_removed_agent_found_at_startup_is_stopped_on_the_record_and_killed_if_stubborn() {
    let mut fleet = Fleet::new(
        r#"[agents.keep]
command = ["sleep", "810007"]
[agents.gone]
command = ["sh", "-c", "trap '' TERM; exec sleep 810008"]
stop_timeout = "500ms"
"#,
    );
    fleet.start();
    fleet.wait_for("both", SECS(5), |_| {
        pids_with("sleep 810007").len() == 1 && pids_with("sleep 810008").len() == 1
    });
    fleet.signal(9);
    fleet.wait_exit(SECS(5));
    fleet.write_config("[agents.keep]\ncommand = [\"sleep\", \"810007\"]\n");
    fleet.start();
    fleet.wait_for("the stray stopped", SECS(10), |_| {
        pids_with("sleep 810008").is_empty()
    });
    let removed = fleet.records_of("gone", "removed");
    assert_eq!(removed.len(), 1, "{:?}", fleet.records(None));
    assert_eq!(fleet.records_of("gone", "stop").len(), 1);
    assert_eq!(
        fleet.records_of("gone", "kill").len(),
        1,
        "escalated to SIGKILL"
    );
    assert_eq!(fleet.records_of("keep", "adopted").len(), 1);
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_stop_that_waits_for_a_stubborn_child_does_not_poll() {
    let mut fleet = Fleet::new(
        r#"[agents.tree]
command = ["sh", "-c", "(trap '' TERM; exec sleep 810009) & exec sleep 810010"]
stop_timeout = "2s"
"#,
    );
    fleet.start();
    fleet.wait_for("tree", SECS(5), |_| {
        pids_with("sleep 810009").len() == 1 && pids_with("sleep 810010").len() == 1
    });
    let before = wakeups(&fleet);
    let out = fleet.vigil(&["stop", "tree", "-c", "vigil.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.wait_for("killed after stop_timeout", SECS(10), |f| {
        !f.records_of("tree", "kill").is_empty() && pids_with("sleep 810009").is_empty()
    });
    fleet.wait_for("stopped", SECS(5), |f| {
        f.records_of("tree", "exit").len() == 1
    });
    let used = wakeups(&fleet) - before;
    // A 20 ms poll of the process table would wake it ~100 times in 2 s.
    assert!(used < 25.0, "the loop woke {used} times during one stop");
    assert_eq!(fleet.stop(), 0);
}

#[test]
fn a_journal_that_cannot_be_written_degrades_health_and_nothing_is_lost_once_it_can() {
    let mut fleet = Fleet::new("[agents.bot]\ncommand = [\"sleep\", \"810011\"]\n");
    std::fs::create_dir_all(fleet.state()).unwrap();
    let journal = fleet.state().join("audit.jsonl");
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", &journal).unwrap();
    let log = std::fs::File::create(fleet.path("vigil.out")).unwrap();
    let child = Command::new(VIGIL)
        .current_dir(fleet.dir.path())
        .args(["run", "-c"])
        .arg(fleet.config())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    fleet.child = Some(child);
    fleet.wait_for("API", SECS(10), |f| f.state().join("api.addr").exists());
    fleet.wait_for("bot", SECS(5), |_| pids_with("sleep 810011").len() == 1);
    let (code, health) = fleet.api("GET", "/health", "");
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["problems"][0]
            .as_str()
            .unwrap()
            .contains("audit journal"),
        "{health}"
    );
    let (_, text) = fleet.http("GET", "/metrics", &[], "");
    assert!(metric(&text, "vigil_journal_write_errors_total").unwrap_or(0.0) >= 1.0);

    // Supervision goes on without the journal.
    let pid = pids_with("sleep 810011")[0];
    unsafe_kill(pid, 9);
    fleet.wait_for("healed", SECS(5), |_| {
        let p = pids_with("sleep 810011");
        p.len() == 1 && p[0] != pid
    });

    // The disk has room again: any decision makes vigil write what waited, in order.
    std::fs::remove_file(&journal).unwrap();
    let (code, body) = fleet.api("POST", "/agents/bot/restart", "");
    assert_eq!(code, 200, "{body}");
    fleet.wait_for("the records that waited", SECS(10), |_| {
        read(&journal).contains("restart requested")
    });
    let actions: Vec<String> = read(&journal)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions[..5],
        ["vigil_start", "start", "exit", "restart", "restart"],
        "{actions:?}"
    );
    let (code, health) = fleet.api("GET", "/health", "");
    assert_eq!(code, 200, "{health}");
    assert_eq!(fleet.stop(), 0);
}

/// Slowloris against a vigil that may open only 256 descriptors: 400 connections that never
/// finish their request head. They are capped (the rest wait unaccepted in the kernel), cut
/// after the header timeout, and crashed agents are still restarted — no spawn fails for want
/// of a descriptor.
#[test]
fn slow_clients_cannot_starve_spawns_and_are_cut_off() {
    use std::io::{Read, Write};
    let mut fleet = Fleet::new(
        "[agents.worker]\ncommand = [\"sleep\", \"850001\"]\n\
         [agents.worker.policy]\ncooldown = \"0s\"\nbackoff_initial = \"10ms\"\nbackoff_max = \"50ms\"\n\
         max_restarts = 100\n",
    );
    let log = std::fs::File::create(fleet.path("vigil.out")).unwrap();
    fleet.child = Some(
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 256 && exec \"$0\" run -c \"$1\"")
            .arg(VIGIL)
            .arg(fleet.config())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    fleet.wait_for("worker running", SECS(10), |f| {
        pids_with("sleep 850001").len() == 1 && f.state().join("api.addr").exists()
    });
    let addr: std::net::SocketAddr = fleet.api_addr().parse().unwrap();
    let mut slow = Vec::new();
    for _ in 0..400 {
        // Beyond the cap and the kernel's backlog, connecting itself waits: stop there.
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        else {
            break;
        };
        let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        slow.push(s);
    }
    assert!(slow.len() > 100, "connected {}", slow.len());

    for _ in 0..10 {
        let before = pids_with("sleep 850001");
        unsafe_kill(before[0], 9);
        fleet.wait_for("a restart", SECS(10), |_| {
            let now = pids_with("sleep 850001");
            now.len() == 1 && now != before
        });
    }
    assert!(fleet.records(Some("spawn_failed")).is_empty());

    // The header timeout (10 s) closes the ones vigil accepted.
    std::thread::sleep(SECS(12));
    let mut closed = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let mut buf = [0u8; 512];
        if s.read(&mut buf).is_ok() {
            closed += 1;
        }
    }
    assert!(closed >= 16, "closed by vigil: {closed}");
    drop(slow);
    fleet.wait_for("the API answers again", SECS(30), |f| {
        f.http("GET", "/health", &[], "").0 == 200
    });
    assert_eq!(fleet.stop(), 0);
}

/// An agent logging tens of MB/s with `log_max_size = "256KB"`: every line it wrote is in its
/// rotated logs and the live log, in order; no rotated file grows far past the size (one
/// burst, not a second of writing); rotated files keep the live log's 0640.
#[test]
fn a_fast_logger_is_rotated_without_losing_a_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("chatty.py");
    let done = dir.path().join("done");
    std::fs::write(
        &script,
        format!(
            // The count appears whole (written beside, then renamed): the test reads it the
            // moment the file exists.
            r#"import os, sys, time
n = 0
end = time.time() + 2
while time.time() < end:
    sys.stdout.write("".join("line %d of a chatty agent with some padding\n" % i for i in range(n, n + 2000)))
    sys.stdout.flush()
    n += 2000
open("{0}.tmp", "w").write(str(n))
os.rename("{0}.tmp", "{0}")
time.sleep(870001)
"#,
            done.display()
        ),
    )
    .unwrap();
    let mut fleet = Fleet::new(&format!(
        "[agents.chatty]\ncommand = [\"python3\", \"{}\"]\nlog_max_size = \"256KB\"\nlog_keep = 999\n",
        script.display()
    ));
    fleet.start();
    fleet.wait_for("the writer done", SECS(20), |_| done.exists());
    let written: u64 = read(&done).trim().parse().unwrap();
    // The last writes are rotated (or not) within the settle time.
    std::thread::sleep(SECS(2));
    let logs = fleet.state().join("logs");
    let mut rotated: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&logs)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let n = path.extension()?.to_str()?.parse().ok()?;
            Some((n, path))
        })
        .collect();
    rotated.sort();
    assert!(rotated.len() >= 5, "rotated {} times", rotated.len());
    let mut all = Vec::new();
    let mut largest = 0;
    for (_, path) in rotated.iter().rev() {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o640,
            "{}",
            path.display()
        );
        largest = largest.max(meta.len());
        all.extend(std::fs::read(path).unwrap());
    }
    all.extend(std::fs::read(logs.join("chatty.log")).unwrap());
    let text = String::from_utf8(all).unwrap();
    let numbers: Vec<u64> = text
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers.len() as u64, written, "every line, once");
    assert!(
        numbers.iter().enumerate().all(|(i, n)| *n == i as u64),
        "in order"
    );
    eprintln!("largest rotated file: {largest} bytes for log_max_size 256KB");
    assert!(largest < 16_000_000, "largest rotated file {largest} bytes");
    assert_eq!(fleet.stop(), 0);
}
