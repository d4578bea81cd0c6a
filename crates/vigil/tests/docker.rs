//! The docker driver against a real Docker Engine (`.ci/docker-setup` starts one and imports
//! the `local/busybox:1` image): a container killed from outside is restarted, a 429 backs
//! off, an OOM kill is diagnosed as such, a stop by a human holds, a `kill -9` of vigil is
//! followed by a take-over (no restart), the container's HEALTHCHECK is a check, and vigil
//! refuses to supervise the container it runs in.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Fleet, required_env, unique};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const IMAGE: &str = "local/busybox:1";

fn docker_host() -> String {
    required_env("VIGIL_TEST_DOCKER_HOST", "a Docker Engine")
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .output()
        .expect("run the docker CLI")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A container the test created (not started), removed when dropped.
struct Container {
    name: String,
}

impl Container {
    fn create(prefix: &str, extra: &[&str], script: &str) -> Container {
        let name = unique(prefix).replace('_', "-");
        let mut args = vec!["create", "--name", &name, "--network", "none"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        docker_ok(&args);
        Container { name }
    }

    fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    fn started_at(&self) -> String {
        self.inspect("{{.State.StartedAt}}")
    }

    fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

fn fleet(config: &str) -> Fleet {
    let mut f = Fleet::new(config);
    f.env.push(("DOCKER_HOST".into(), docker_host()));
    f
}

#[test]
#[ignore = "needs a Docker Engine: set VIGIL_TEST_DOCKER_HOST (.ci/docker-setup)"]
fn a_container_killed_from_outside_is_restarted_with_its_log_as_evidence() {
    let c = Container::create(
        "feed",
        &[],
        "echo feed up; while true; do echo tick; sleep 1; done",
    );
    let mut f = fleet(&format!(
        r#"
[agents.feed]
driver = "docker"
container = "{}"
stop_timeout = "2s"
"#,
        c.name
    ));
    f.start();
    f.wait_for("the container started by vigil", SECS(20), |f| {
        f.status("feed")["state"] == "running"
    });
    assert!(c.running());
    let first = c.started_at();
    let status = f.status("feed");
    assert_eq!(status["driver"], "docker", "{status}");
    assert_eq!(
        status["target"],
        format!("container {}", c.name),
        "{status}"
    );

    docker_ok(&["kill", &c.name]);
    f.wait_for("the restart", SECS(20), |f| {
        !f.records_of("feed", "restart").is_empty()
    });
    f.wait_for("running again", SECS(20), |f| {
        f.status("feed")["state"] == "running" && c.running()
    });
    assert_ne!(c.started_at(), first, "a new run of the same container");
    let exit = &f.records_of("feed", "exit")[0];
    assert_eq!(exit["metadata"]["signal"], "KILL", "{exit}");
    let explain = f.vigil(&["explain", "feed", "-c", "vigil.toml"]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("feed up"), "the container's own log: {text}");
    assert!(text.contains("killed by SIGKILL"), "{text}");
    let metrics = f.http("GET", "/metrics", &[], "").1;
    assert!(
        metrics.contains(r#"vigil_agent_info{agent="feed",driver="docker""#),
        "{metrics}"
    );
    assert_eq!(f.stop(), 0);
    f.wait_for("the container stopped with vigil", SECS(10), |_| {
        !c.running()
    });
}

#[test]
#[ignore = "needs a Docker Engine: set VIGIL_TEST_DOCKER_HOST (.ci/docker-setup)"]
fn a_429_backs_off_and_an_oom_kill_is_diagnosed_as_such() {
    let limited = Container::create(
        "limited",
        &["-e", "BINANCE_API_SECRET=s3cr3t-value-42"],
        "sleep 1; echo \"ccxt.base.errors.RateLimitExceeded: binance 429 Too Many Requests (signed with $BINANCE_API_SECRET)\"; exit 1",
    );
    let hungry = Container::create(
        "hungry",
        &["--memory", "16m", "--memory-swap", "16m"],
        "echo loading the order book; sleep 1; x=$(yes | head -c 400000000); echo loaded",
    );
    let mut f = fleet(&format!(
        r#"
[defaults.policy]
cooldown = "0s"
throttle_delay = "1h"

[agents.limited]
driver = "docker"
container = "{}"

[agents.hungry]
driver = "docker"
container = "{}"
"#,
        limited.name, hungry.name
    ));
    f.start();
    f.wait_for("limited backing off, hungry OOM-killed", SECS(40), |f| {
        !f.records_of("limited", "backoff").is_empty() && !f.records_of("hungry", "exit").is_empty()
    });
    // The 429: a wait, not a restart.
    assert!(f.records_of("limited", "restart").is_empty());
    let backoff = &f.records_of("limited", "backoff")[0];
    assert_eq!(backoff["metadata"]["diagnosis"]["category"], "throttled");
    // The container's own secret, printed in its log, reaches neither the journal nor explain.
    let journal = common::read(&f.state().join("audit.jsonl"));
    let explain = f.vigil(&["explain", "limited", "-c", "vigil.toml"]);
    let explained = String::from_utf8_lossy(&explain.stdout);
    assert!(explained.contains("429"), "{explained}");
    for text in [&journal, explained.as_ref()] {
        assert!(!text.contains("s3cr3t-value-42"), "a secret leaked: {text}");
    }
    // The OOM kill: known from the engine, not guessed from a log line.
    f.wait_for("hungry judged", SECS(10), |f| {
        f.status("hungry")["diagnosis"]["rule"] == "out_of_memory"
    });
    let exit = &f.records_of("hungry", "exit")[0];
    assert!(
        exit["reason"].as_str().unwrap().contains("OOM killer"),
        "{exit}"
    );
    assert_eq!(hungry.inspect("{{.State.OOMKilled}}"), "true");
    assert_eq!(f.stop(), 0);
}

#[test]
#[ignore = "needs a Docker Engine: set VIGIL_TEST_DOCKER_HOST (.ci/docker-setup)"]
fn a_stop_by_a_human_holds_and_a_killed_vigil_takes_its_containers_over() {
    // PID 1 of a container ignores SIGTERM unless it handles it: the stop timeout decides.
    let kept = Container::create("kept", &[], "while true; do sleep 1; done");
    let held = Container::create("held", &[], "while true; do sleep 1; done");
    let mut f = fleet(&format!(
        r#"
[agents.kept]
driver = "docker"
container = "{}"
stop_timeout = "1s"

[agents.held]
driver = "docker"
container = "{}"
stop_timeout = "1s"
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
    f.wait_for("held stopped", SECS(10), |f| {
        f.status("held")["state"] == "stopped" && !held.running()
    });
    let started = kept.started_at();

    // vigil dies without a word; a new one finds the container running and takes it over.
    f.signal(libc::SIGKILL);
    f.wait_exit(SECS(5));
    // As if vigil had died after it saved the hold but before its stop reached the
    // container: the held container runs. The new vigil stops it again.
    docker_ok(&["start", &held.name]);
    assert!(held.running());
    f.start();
    f.wait_for("kept taken over", SECS(20), |f| {
        f.status("kept")["state"] == "running"
    });
    f.wait_for("the held container stopped again", SECS(20), |f| {
        f.status("held")["state"] == "stopped" && !held.running()
    });
    let stop = f.records_of("held", "stop").pop().expect("a stop record");
    assert!(
        stop["reason"].as_str().unwrap().contains("yet it runs"),
        "{stop}"
    );
    let status = f.status("kept");
    assert_eq!(status["adopted"], true, "{status}");
    assert_eq!(kept.started_at(), started, "taken over, not restarted");
    assert!(!f.records_of("kept", "adopted").is_empty());
    // The stop by a human is remembered: held stays stopped.
    assert_eq!(f.status("held")["state"], "stopped");
    assert!(!held.running());

    // The taken-over container is watched like one vigil started.
    docker_ok(&["kill", &kept.name]);
    f.wait_for("restarted after its end", SECS(20), |f| {
        kept.started_at() != started && f.status("kept")["state"] == "running"
    });
    assert_eq!(f.stop(), 0);
}

#[test]
#[ignore = "needs a Docker Engine: set VIGIL_TEST_DOCKER_HOST (.ci/docker-setup)"]
fn an_unhealthy_healthcheck_restarts_the_container() {
    // Healthy while /tmp/ok exists; the container removes it after a few seconds, once.
    let c = Container::create(
        "health",
        &[
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
        "if [ -f /tmp/once ]; then touch /tmp/ok; else touch /tmp/once /tmp/ok; sleep 3; rm /tmp/ok; fi; while true; do sleep 1; done",
    );
    let mut f = fleet(&format!(
        r#"
[agents.web]
driver = "docker"
container = "{}"
stop_timeout = "1s"

[[agents.web.checks]]
kind = "container_health"
interval = "1s"
failure_threshold = 2
"#,
        c.name
    ));
    f.start();
    f.wait_for("healthy", SECS(20), |f| {
        f.status("web")["checks"][0]["verdict"] == "ok"
    });
    let first = c.started_at();
    f.wait_for(
        "the stall on an unhealthy HEALTHCHECK and the restart",
        SECS(30),
        |f| !f.records_of("web", "restart").is_empty(),
    );
    let stalled = &f.records_of("web", "stalled")[0];
    assert!(
        stalled["reason"].as_str().unwrap().contains("HEALTHCHECK"),
        "{stalled}"
    );
    f.wait_for("healthy again", SECS(30), |f| {
        c.started_at() != first && f.status("web")["checks"][0]["verdict"] == "ok"
    });
    assert_eq!(f.stop(), 0);
}

#[test]
#[ignore = "needs a Docker Engine: set VIGIL_TEST_DOCKER_HOST (.ci/docker-setup)"]
fn vigil_refuses_to_supervise_the_container_it_runs_in() {
    // vigil in a container of its own (the host's libraries mounted for it), with a config
    // that names that very container by its id.
    let vigil = std::path::Path::new(common::VIGIL);
    let dir = tempfile::tempdir().unwrap();
    let name = unique("self").replace('_', "-");
    let mut args: Vec<String> = ["create", "--name", &name, "--network", "none"]
        .map(String::from)
        .to_vec();
    for lib in ["/lib", "/lib64", "/usr"] {
        if std::path::Path::new(lib).exists() {
            args.extend(["-v".into(), format!("{lib}:{lib}:ro")]);
        }
    }
    args.extend([
        "-v".into(),
        format!("{}:/vigil:ro", vigil.display()),
        "-v".into(),
        format!("{}:/cfg", dir.path().display()),
        IMAGE.into(),
        "/vigil".into(),
        "check".into(),
        "-c".into(),
        "/cfg/vigil.toml".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = docker_ok(&argv);
    let _gone = Container { name };
    std::fs::write(
        dir.path().join("vigil.toml"),
        format!(
            "[agents.me]\ndriver = \"docker\"\ncontainer = \"{}\"\n",
            &id[..12]
        ),
    )
    .unwrap();
    let out = docker(&["start", "-a", &id]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("is the one vigil itself runs in"), "{text}");
}

#[test]
fn a_container_agent_is_checked_for_what_does_not_apply_to_it() {
    let f = Fleet::new(
        r#"
[agents.feed]
driver = "docker"
container = "market-feed"
command = ["python3", "feed.py"]
env = { A = "1" }
[[agents.feed.checks]]
kind = "notify"
max_age = "30s"

[agents.many]
driver = "docker"
container = "trader"
instances = ["BTC", "ETH"]

[agents.bare]
driver = "docker"

[agents.proc]
command = ["sleep", "1"]
container = "x"
[[agents.proc.checks]]
kind = "container_health"

[agents.plain]
command = ["sleep", "1"]
[[agents.plain.checks]]
kind = "container_health"

[agents.unit]
driver = "systemd"

[agents.typo]
driver = "dokcer"
container = "x"

[agents.one]
driver = "docker"
container = "shared"

[agents.two]
driver = "docker"
container = "shared"
"#,
    );
    let out = f.vigil(&["check", "-c", "vigil.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        "`command` in [agents.feed] does not apply to a container",
        "`env` in [agents.feed] does not apply to a container",
        "a `notify` check does not apply to a container",
        "every instance of `many` would be the same container",
        "has driver = \"docker\" but no `container`",
        "`container` in [agents.proc] needs driver = \"docker\"",
        "a `container_health` check needs driver = \"docker\"",
        "has driver = \"systemd\" but no `unit`",
        "did you mean \"docker\"?",
        "`two` and `one` name the same container \"shared\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
