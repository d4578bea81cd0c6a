//! Alerts in from a real Alertmanager (Debian's prometheus-alertmanager, fed by amtool): it
//! delivers to vigil with its bearer token, a runbook restarts the named agent and tells a
//! channel; Alertmanager's repeats run nothing; a resolved alert calls off a waiting runbook;
//! an alert about vigil itself is refused; without the token, 401 and nothing runs.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sink::Sink;
use common::{Fleet, free_port};
use serde_json::{Value, json};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const TOKEN: &str = "am-token-0123456789abcdef";

struct Alertmanager {
    child: Child,
    url: String,
}

impl Alertmanager {
    /// Routing every alert to `vigil_url` at once, repeating every 2 s.
    fn start(dir: &Path, vigil_url: &str) -> Alertmanager {
        let token = dir.join("am-token");
        std::fs::write(&token, TOKEN).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                r#"route:
  receiver: vigil
  group_by: [alertname, agent]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: vigil
    webhook_configs:
      - url: {vigil_url}/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials_file: {}
"#,
                token.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
            .spawn()
            .expect("prometheus-alertmanager (Debian package prometheus-alertmanager)");
        let url = format!("http://127.0.0.1:{port}");
        let am = Alertmanager { child, url };
        for _ in 0..100 {
            let addr = format!("127.0.0.1:{port}");
            if std::net::TcpStream::connect(&addr).is_ok()
                && common::http(&addr, "GET", "/-/ready", &[], "").0 == 200
            {
                return am;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("alertmanager did not start");
    }

    /// `amtool alert add LABELS…` (`end`: resolves it).
    fn add(&self, labels: &[&str], end: Option<&str>) {
        let mut c = Command::new("amtool");
        c.args(["alert", "add"]).args(labels);
        if let Some(end) = end {
            c.arg(format!("--end={end}"));
        }
        let out = c
            .arg(format!("--alertmanager.url={}", self.url))
            .output()
            .expect("amtool");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, hook: &Sink) -> String {
    std::fs::write(dir.join("am-token"), TOKEN).unwrap();
    format!(
        r#"[alertmanager]
token_file = "{token}"

[notify.ops]
kind = "webhook"
url = "{hook}"
events = []

[agents.bot]
command = ["sleep", "730001"]

[agents.watcher]
command = ["sleep", "730002"]

[[agents.watcher.checks]]
kind = "api"
max_age = "1h"

[[runbooks]]
name = "stalled-trader"
match = {{ alertname = "TraderStalled" }}
agent = "{{{{ labels.agent }}}}"
steps = [
  {{ collect = "evidence" }},
  {{ restart = true }},
  {{ wait_healthy = "20s" }},
  {{ exec = ["sh", "-c", "echo reconciled $VIGIL_AGENT {{instance}}"], timeout = "5s" }},
  {{ notify = "ops" }},
]

[[runbooks]]
name = "watch-and-wait"
match_re = {{ alertname = "Watch.*" }}
agent = "watcher"
steps = [{{ wait_healthy = "10m" }}, {{ restart = true }}]
on_failure = "notify"
"#,
        token = dir.join("am-token").display(),
        hook = hook.url("/ops"),
    )
}

fn api_url(fleet: &Fleet) -> String {
    format!("http://{}", fleet.api_addr())
}

#[test]
#[ignore = "needs Alertmanager: apt-get install prometheus-alertmanager (.ci/run does)"]
fn alertmanager_delivers_and_a_runbook_restarts_the_named_agent_once() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Sink::http(dir.path(), &[]);
    let mut fleet = Fleet::new(&config(dir.path(), &hook));
    fleet.start();
    fleet.wait_for("bot running", SECS(10), |f| {
        f.status("bot")["state"] == "running"
    });
    let pid = fleet.status("bot")["pid"].clone();
    let am = Alertmanager::start(dir.path(), &api_url(&fleet));

    am.add(
        &["alertname=TraderStalled", "agent=bot", "severity=page"],
        None,
    );
    fleet.wait_for("the runbook done", SECS(30), |f| {
        !f.records(Some("runbook_succeeded")).is_empty()
    });
    let restart = fleet.records_of("bot", "restart");
    assert_eq!(restart.len(), 1, "{restart:?}");
    assert_eq!(restart[0]["metadata"]["cause"], "runbook");
    fleet.wait_for("a new process", SECS(5), |f| f.status("bot")["pid"] != pid);
    let steps = fleet.records(Some("runbook_step"));
    assert_eq!(steps.len(), 5, "{steps:?}");
    assert!(
        steps[3]["reason"]
            .as_str()
            .unwrap()
            .contains("reconciled bot"),
        "{steps:?}"
    );
    // The notify step told the channel (which wants no other event).
    fleet.wait_for("ops told", SECS(10), |_| !hook.received().is_empty());
    let body: Value = serde_json::from_str(hook.received()[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["notifications"][0]["event"], "runbook_step");

    // Alertmanager repeats the alert every 2 s: nothing runs again.
    fleet.wait_for("two repeats", SECS(20), |f| {
        f.records(Some("alert_received"))
            .iter()
            .filter(|r| r["reason"].as_str().unwrap().contains("1 repeat(s)"))
            .count()
            >= 2
    });
    assert_eq!(fleet.records(Some("runbook_started")).len(), 1);
    assert_eq!(fleet.records_of("bot", "restart").len(), 1);

    let out = fleet.vigil(&["runbooks"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("stalled-trader  succeeded") && text.contains("agent bot"),
        "{text}"
    );

    // An alert about vigil itself is refused, and said so.
    am.add(
        &["alertname=VigilDown", "component=vigil", "agent=bot"],
        None,
    );
    fleet.wait_for("refused", SECS(20), |f| {
        !f.records(Some("alert_refused")).is_empty()
    });
    let refused = &fleet.records(Some("alert_refused"))[0];
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("about vigil itself"),
        "{refused}"
    );
    assert_eq!(fleet.records(Some("runbook_started")).len(), 1);
    fleet.stop();
}

#[test]
#[ignore = "needs Alertmanager: apt-get install prometheus-alertmanager (.ci/run does)"]
fn a_resolved_alert_calls_off_its_waiting_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Sink::http(dir.path(), &[]);
    let mut fleet = Fleet::new(&config(dir.path(), &hook));
    fleet.start();
    let am = Alertmanager::start(dir.path(), &api_url(&fleet));
    am.add(&["alertname=WatchQueue", "agent=watcher"], None);
    fleet.wait_for("the runbook waiting", SECS(20), |f| {
        f.api("GET", "/runbooks", "").1["runbooks"][0]["state"] == "waiting_healthy"
    });
    // It ends: Alertmanager sends it resolved.
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    am.add(&["alertname=WatchQueue", "agent=watcher"], Some(&now));
    fleet.wait_for("called off", SECS(20), |f| {
        !f.records(Some("runbook_cancelled")).is_empty()
    });
    assert!(fleet.records_of("watcher", "restart").is_empty());
    assert_eq!(
        fleet.api("GET", "/runbooks", "").1["runbooks"][0]["state"],
        "cancelled"
    );
    fleet.stop();
}

#[test]
fn without_alertmanagers_token_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Sink::http(dir.path(), &[]);
    let mut fleet = Fleet::new(&config(dir.path(), &hook));
    fleet.start();
    let payload = json!({
        "version": "4", "status": "firing", "receiver": "vigil",
        "alerts": [{"status": "firing", "labels": {"alertname": "TraderStalled", "agent": "bot"},
                    "startsAt": "2026-11-30T10:00:00Z", "fingerprint": "f00"}]
    })
    .to_string();
    let json_type = ("Content-Type", "application/json");
    let (code, body) = fleet.http("POST", "/alertmanager", &[json_type], &payload);
    assert_eq!(code, 401, "{body}");
    let wrong = ("Authorization", "Bearer not-the-token-at-all");
    let (code, _) = fleet.http("POST", "/alertmanager", &[json_type, wrong], &payload);
    assert_eq!(code, 401);
    // A body over 1 MiB is refused even with the token.
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let big = "x".repeat(1024 * 1024 + 10);
    let (code, _) = fleet.http("POST", "/alertmanager", &[json_type, auth], &big);
    assert_eq!(code, 413);
    let (code, body) = fleet.http(
        "POST",
        "/alertmanager",
        &[json_type, auth],
        "{\"version\": 4",
    );
    assert_eq!(code, 400, "{body}");
    // Then with the token: taken, and the journal says so.
    let (code, body) = fleet.http("POST", "/alertmanager", &[json_type, auth], &payload);
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["accepted"], 1);
    let denied = fleet.records(Some("api_denied"));
    assert!(!denied.is_empty());
    let received = fleet.records(Some("alert_received"));
    assert_eq!(received.len(), 1, "only the authorized one: {received:?}");
    fleet.stop();
}
