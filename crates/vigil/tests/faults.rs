//! vigil under faults: killed at the worst moment, it never leaves a second copy of an agent
//! and never signals a process that is not the agent's.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Fleet, VIGIL, pids_with, unsafe_kill};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn config(marker: u32) -> String {
    format!(
        r#"[agents.a]
command = ["sleep", "{}"]
[agents.b]
command = ["sleep", "{}"]
[agents.c]
command = ["sleep", "{}"]
"#,
        marker + 1,
        marker + 2,
        marker + 3
    )
}

/// Start vigil with a fault point; returns its exit code.
fn run_with_failpoint(fleet: &mut Fleet, failpoint: &str) -> i32 {
    let log = std::fs::File::create(fleet.path("vigil-fault.out")).unwrap();
    let child = Command::new(VIGIL)
        .args(["run", "-c"])
        .arg(fleet.config())
        .env("VIGIL_FAILPOINT", failpoint)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    fleet.child = Some(child);
    fleet.wait_exit(SECS(10))
}

/// A `kill -9` of vigil right after the n-th spawn of its first batch (a fault point of debug
/// builds: `abort()` at that exact step, so nothing after it runs — no state written, no
/// record of the spawn's outcome). The next vigil finds the runs already started by their
/// marks, adopts them, and starts only the others: one copy of every agent, whatever n.
#[test]
fn a_kill_9_at_any_step_of_a_spawn_batch_never_leaves_a_second_copy() {
    for n in 1..=3u32 {
        let marker = 820_000 + n * 10;
        let mut fleet = Fleet::new(&config(marker));
        let code = run_with_failpoint(&mut fleet, &format!("abort-after-spawn:{n}"));
        assert_eq!(code, -1, "vigil was aborted (killed by SIGABRT)");
        let started: Vec<u32> = (1..=3)
            .filter(|i| pids_with(&format!("sleep {}", marker + i)).len() == 1)
            .collect();
        assert_eq!(started.len(), n as usize, "the first {n} spawns happened");

        fleet.start();
        fleet.wait_for("every agent running", SECS(10), |_| {
            (1..=3).all(|i| !pids_with(&format!("sleep {}", marker + i)).is_empty())
        });
        fleet.settled();
        for i in 1..=3 {
            let copies = pids_with(&format!("sleep {}", marker + i));
            assert_eq!(copies.len(), 1, "n = {n}: agent {i} runs {copies:?}");
        }
        assert_eq!(
            fleet.records(Some("adopted")).len(),
            n as usize,
            "n = {n}: the runs started before the kill are adopted"
        );
        assert_eq!(fleet.stop(), 0);
        for i in 1..=3 {
            assert!(pids_with(&format!("sleep {}", marker + i)).is_empty());
        }
    }
}

/// Two runs of one agent found at startup (a second copy left by some earlier accident): the
/// one vigil knows is adopted, the other is stopped on the record.
#[test]
fn a_second_copy_found_at_startup_is_stopped() {
    let marker = 820_100;
    let mut fleet = Fleet::new(&format!(
        "[agents.solo]\ncommand = [\"sleep\", \"{}\"]\nstop_timeout = \"500ms\"\n",
        marker + 1
    ));
    fleet.start();
    fleet.wait_for("solo", SECS(5), |_| {
        pids_with(&format!("sleep {}", marker + 1)).len() == 1
    });
    let first = pids_with(&format!("sleep {}", marker + 1))[0];
    fleet.signal(9);
    fleet.wait_exit(SECS(5));
    // A copy with the same marks, as if started by a vigil that died before saving it.
    let environ = std::fs::read(format!("/proc/{first}/environ")).unwrap();
    // In a session of its own, as vigil starts every run.
    let mut copy = Command::new("setsid");
    copy.arg("sleep")
        .arg(format!("{}", marker + 1))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for kv in environ.split(|b| *b == 0).filter(|kv| !kv.is_empty()) {
        let kv = String::from_utf8_lossy(kv);
        if let Some((k, v)) = kv.split_once('=') {
            let v = if k == "VIGIL_RUN" {
                format!("{v}-copy")
            } else {
                v.to_string()
            };
            copy.env(k, v);
        }
    }
    let mut copy = copy.spawn().unwrap();
    assert_eq!(pids_with(&format!("sleep {}", marker + 1)).len(), 2);

    fleet.start();
    fleet.wait_for("the copy stopped", SECS(10), |_| {
        copy.try_wait().ok().flatten().is_some()
    });
    fleet.settled();
    assert_eq!(
        pids_with(&format!("sleep {}", marker + 1)),
        vec![first],
        "the known run stays"
    );
    assert_eq!(fleet.records_of("solo", "adopted").len(), 1);
    let removed = fleet.records(Some("removed"));
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(
        removed[0]["agent"].as_str().unwrap().starts_with("solo#"),
        "{}",
        removed[0]
    );
    assert_eq!(fleet.stop(), 0);
    unsafe_kill(first, 9);
}

/// Make the next process started on this machine get pid `pid` (root only: the kernel's
/// `ns_last_pid`), then start a stranger there: its own session, like any daemon.
fn stranger_at(pid: i32) -> std::process::Child {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("this test needs root: it writes /proc/sys/kernel/ns_last_pid");
        let child = Command::new("setsid")
            .args(["sleep", "830099"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if child.id() as i32 == pid {
            return child;
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not start a process at pid {pid}");
}

/// While an agent stops, its main process exits and its pid goes to a stranger, while an
/// escaped daemon of the run keeps the stop waiting. At `stop_timeout` vigil SIGKILLs what is
/// left of the run: the daemon, never the stranger that now has the main process's pid (and
/// leads a session and a process group with that id).
#[test]
#[ignore = "needs root: it chooses the next pid through /proc/sys/kernel/ns_last_pid"]
fn a_reused_pid_is_never_signalled() {
    let mut fleet = Fleet::new(
        r#"[agents.leaky]
command = ["sh", "-c", "setsid sh -c 'trap \"\" TERM; exec sleep 830002' & exec sleep 830001"]
stop_timeout = "3s"
"#,
    );
    fleet.start();
    fleet.wait_for("main and daemon", SECS(5), |_| {
        pids_with("sleep 830001").len() == 1 && pids_with("sleep 830002").len() == 1
    });
    let main = pids_with("sleep 830001")[0];
    let out = fleet.vigil(&["stop", "leaky", "-c", "vigil.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.wait_for("the main process gone", SECS(5), |_| {
        pids_with("sleep 830001").is_empty()
    });
    fleet.settled();
    let mut stranger = stranger_at(main);
    fleet.wait_for("SIGKILL at stop_timeout", SECS(10), |f| {
        !f.records_of("leaky", "kill").is_empty()
    });
    fleet.wait_for("the daemon killed", SECS(5), |_| {
        pids_with("sleep 830002").is_empty()
    });
    fleet.settled();
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "vigil killed the stranger that got pid {main}"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
    fleet.wait_for("stopped", SECS(5), |f| {
        f.records_of("leaky", "exit").len() == 1
    });
    assert_eq!(fleet.stop(), 0);
}
