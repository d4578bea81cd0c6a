//! The shipped alert rules, evaluated by a real Prometheus scraping a live vigil: a stall vigil
//! keeps healing is one continuous condition (so `for: 5m` can elapse), an agent inside its
//! quiet window and an agent a person stopped never match, and `increase()` of restarts
//! agrees with `vigil status`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, free_port, unique};
use serde_json::Value;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/prometheus/vigil.rules.yml"
);

struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second as job `vigil`, evaluating the shipped rules every second.
    fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [\"{RULES}\"]\n\
                 scrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        let p = Prometheus { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(&p.addr).is_ok()
                && common::http(&p.addr, "GET", "/-/ready", &[], "").0 == 200
            {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = common::http(&self.addr, "GET", path, &[], "");
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn query(&self, q: &str) -> Vec<Value> {
        let v = self.get(&format!("/api/v1/query?query={}", encode(q)));
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts pending or firing now (expression true at the last evaluation).
    fn alerts(&self) -> Vec<Value> {
        let v = self.get("/api/v1/alerts");
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn alert_for<'a>(alerts: &'a [Value], name: &str, agent: &str) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == name && a["labels"]["agent"] == agent)
}

#[test]
#[ignore = "needs prometheus: apt-get install prometheus (`.ci/run` does)"]
fn the_shipped_rules_see_one_stall_across_restarts_and_nothing_for_quiet_or_stopped_agents() {
    let marker = unique("prometheus-rules");
    let port = free_port();
    let mut f = Fleet::new(&format!(
        r#"[vigil]
node = "fra-1"

[api]
listen = "127.0.0.1:{port}"

# Never a first sign of life: stalled, restarted, stalled again.
[agents.mute]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
autostart = false
[agents.mute.policy]
cooldown = "0s"
max_restarts = 1000
backoff_initial = "100ms"
backoff_max = "500ms"
[[agents.mute.checks]]
kind = "notify"
max_age = "1s"

# The same, inside a quiet window that covers the whole day.
[agents.closed]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
quiet = ["daily 00:00-12:00 UTC", "daily 11:59-00:01 UTC"]
[[agents.closed.checks]]
kind = "notify"
max_age = "1s"

# Stopped by a person after its first stall.
[agents.parked]
command = ["sh", "-c", "exec sleep 300 # {marker}"]
[[agents.parked.checks]]
kind = "notify"
max_age = "1s"
"#
    ));
    // Prometheus first, so that it sees vigil's first samples.
    let prom_dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(prom_dir.path(), &format!("127.0.0.1:{port}"));
    f.start();
    let config = f.config();
    let config = config.to_str().unwrap();
    f.wait_for("parked's first stall", Duration::from_secs(10), |f| {
        !f.records_of("parked", "stalled").is_empty()
    });
    assert!(f.vigil(&["stop", "parked", "-c", config]).status.success());
    // Prometheus has seen mute's counters at 0 before its first restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prom
        .query(r#"vigil_agent_restarts_total{agent="mute",reason="stall"} == 0"#)
        .is_empty()
    {
        assert!(Instant::now() < deadline, "prometheus never scraped vigil");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(f.vigil(&["start", "mute", "-c", config]).status.success());

    // The stall condition turns true and stays true: its pending alert keeps the moment it
    // became active through every restart vigil makes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let active_at = loop {
        if let Some(a) = alert_for(&prom.alerts(), "AgentStalled", "mute") {
            break a["activeAt"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "AgentStalled never became pending"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let restarts_then = f.records_of("mute", "restart").len();
    let watch_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < watch_until {
        let alerts = prom.alerts();
        let a = alert_for(&alerts, "AgentStalled", "mute").expect("still pending");
        assert_eq!(a["activeAt"].as_str().unwrap(), active_at, "restarted: {a}");
        assert_eq!(a["labels"]["node"], "fra-1");
        for agent in ["closed", "parked"] {
            assert!(
                !alerts.iter().any(|a| a["labels"]["agent"] == agent),
                "{agent}: {alerts:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        f.records_of("mute", "restart").len() >= restarts_then + 3,
        "vigil restarted the stalled agent several times meanwhile"
    );
    // Over the whole time range, no rule ever matched the quiet or the stopped agent.
    let ever = prom.query(r#"max_over_time(ALERTS{agent=~"closed|parked"}[10m])"#);
    assert!(ever.is_empty(), "{ever:?}");

    // Stop the stalled agent and let Prometheus see the final count: increase() over the
    // whole run counts every restart, the first included.
    assert!(f.vigil(&["stop", "mute", "-c", config]).status.success());
    std::thread::sleep(Duration::from_secs(3));
    let (_, status) = f.api("GET", "/status/mute", "");
    let total = status["restarts"]["total"].as_f64().unwrap();
    // At the last sample's time: increase() extrapolates to the end of its range, and a range
    // that ends after the last sample would add a fraction of a restart.
    let raw = prom.query(r#"vigil_agent_restarts_total{agent="mute",reason="stall"}[10m]"#);
    let last = raw[0]["values"].as_array().unwrap().last().unwrap()[0]
        .as_f64()
        .unwrap();
    let q = r#"sum by (agent) (increase(vigil_agent_restarts_total{agent="mute"}[10m]))"#;
    let v = prom.get(&format!("/api/v1/query?query={}&time={last}", encode(q)));
    let counted = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    let scraped = f.http("GET", "/metrics", &[], "").1;
    let exported: Vec<&str> = scraped
        .lines()
        .filter(|l| l.starts_with(r#"vigil_agent_restarts_total{agent="mute""#))
        .collect();
    assert_eq!(
        counted, total,
        "increase() vs vigil status: {exported:?} {raw:?}"
    );
}
