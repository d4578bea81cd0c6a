//! The dashboard in a real headless Chromium (Debian `chromium` + `chromium-driver`): it
//! shows the fleet, shows a crash without a reload, and its restart button restarts; it
//! paints only what is wrong now as wrong (a healed agent's failure is history, a dead
//! agent's checks are not green, an `unknown` check is not a failure) and its header says
//! "ok" only when no agent needs attention.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, free_port, unique};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client) {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists(),
        "this test needs Chromium: {CHROMEDRIVER} not found (apt-get install chromium chromium-driver; `.ci/run` does)"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = free_port();
    let driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-extensions", "--no-first-run"]
        }
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connected = ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match connected {
            Ok(client) => return (driver, client),
            Err(e) if Instant::now() > deadline => panic!("cannot start a browser session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Evaluate a JavaScript expression in the page.
async fn js(c: &Client, expr: &str) -> Value {
    c.execute(&format!("return {expr};"), vec![])
        .await
        .expect("execute")
}

async fn card_text(c: &Client, agent: &str) -> String {
    js(
        c,
        &format!("(document.querySelector('[data-agent=\"{agent}\"]') || {{}}).textContent || ''"),
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// The text of the first element matching `css`, or "".
async fn text(c: &Client, css: &str) -> String {
    c.execute(
        "return (document.querySelector(arguments[0]) || {}).textContent || '';",
        vec![json!(css)],
    )
    .await
    .expect("execute")
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// What the page paints in `hue` (`"red"` or `"green"`) under the elements matching `css`:
/// each element's own text and each marker drawn before a line (a check's dot), as the eye
/// sees them (computed colours, not class names).
async fn painted(c: &Client, css: &str, hue: &str) -> Vec<String> {
    let found = c
        .execute(
            r#"
            const [css, hue] = arguments;
            const is = (colour) => {
              const m = (colour || "").match(/[\d.]+/g);
              if (!m || m.length < 3) return false;
              const [r, g, b] = m.map(Number);
              if (m.length > 3 && Number(m[3]) === 0) return false;
              return hue === "red"
                ? r > 150 && g < 0.75 * r && b < 0.75 * r && Math.abs(g - b) < 40
                : g > 120 && g > r + 40 && g > b + 20;
            };
            const out = [];
            for (const root of document.querySelectorAll(css)) {
              for (const e of [root, ...root.querySelectorAll("*")]) {
                const own = [...e.childNodes].filter((n) => n.nodeType === 3)
                  .map((n) => n.textContent).join("").trim();
                if (own && is(getComputedStyle(e).color)) out.push(own);
                const before = getComputedStyle(e, "::before");
                if (before.content && before.content !== "none" && before.content !== "normal"
                    && is(before.color)) {
                  out.push(before.content + " before " + e.textContent);
                }
              }
            }
            return out;
            "#,
            vec![json!(css), json!(hue)],
        )
        .await
        .expect("execute");
    serde_json::from_value(found).unwrap_or_default()
}

async fn header_text(c: &Client) -> String {
    text(c, "header").await
}

async fn until(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver (`.ci/run` does)"]
async fn dashboard_shows_the_fleet_live_and_restarts_from_a_button() {
    let marker = unique("dash");
    let mut f = Fleet::new(&format!(
        r#"[agents.bot]
command = ["sh", "-c", "sleep 300; echo {marker}"]

[agents.bot.policy]
cooldown = "0s"

[agents.trader]
command = ["sh", "-c", "sleep 300; echo {marker}"]
instances = ["BTC", "ETH"]
"#
    ));
    f.start();
    let (_driver, c) = browser().await;
    let url = format!("http://{}/", f.api_addr());
    c.goto(&url).await.expect("open the dashboard");

    until(
        "three agents on the page",
        Duration::from_secs(10),
        async || {
            js(&c, "document.querySelectorAll('[data-agent]').length").await == json!(3)
                && card_text(&c, "bot").await.contains("running")
        },
    )
    .await;
    assert!(card_text(&c, "trader@BTC").await.contains("budget left"));

    // A crash shows without a reload: the journal feed and the card both tell.
    let pid = f.api("GET", "/status/bot", "").1["pid"].as_i64().unwrap();
    common::unsafe_kill(pid as i32, 9);
    let took = until(
        "the crash on the page",
        Duration::from_secs(2),
        async || {
            card_text(&c, "bot").await.contains("killed by SIGKILL")
                && js(&c, "document.getElementById('feed').textContent")
                    .await
                    .as_str()
                    .unwrap_or("")
                    .contains("exit")
        },
    )
    .await;
    eprintln!("the crash showed on the page after {took:?}");

    // The restart button restarts the agent.
    let before = f.api("GET", "/status/bot", "").1["pid"].clone();
    let restarts = f.records_of("bot", "restart").len();
    until(
        "bot running before the click",
        Duration::from_secs(5),
        async || card_text(&c, "bot").await.contains("running"),
    )
    .await;
    c.find(Locator::Css(
        "[data-agent=\"bot\"] button[data-action=\"restart\"]",
    ))
    .await
    .expect("the restart button")
    .click()
    .await
    .expect("click");
    f.wait_for(
        "a restart from the dashboard",
        Duration::from_secs(5),
        |f| {
            let recs = f.records_of("bot", "restart");
            recs.len() > restarts
                && recs.last().unwrap()["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("dashboard")
        },
    );
    f.wait_for("a new bot process", Duration::from_secs(5), |f| {
        let now = f.api("GET", "/status/bot", "").1;
        now["state"] == "running" && now["pid"] != before
    });
    c.close().await.ok();
}

/// Issue 13: a healed agent kept its old red exit and diagnosis, and an `unknown` diagnosis
/// read like a cause. Once it runs again and is healthy, its failure is history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver (`.ci/run` does)"]
async fn dashboard_shows_a_healed_agents_failure_as_history() {
    // Fails once, having printed an ordinary price line, then runs.
    let mut f = Fleet::new(
        r#"[agents.flaky]
command = ["sh", "-c", "if [ -e crashed ]; then exec sleep 300; fi; touch crashed; echo 'BTC/USDT 43210.50 bid 43210.40 ask 43210.60'; exit 3"]
cwd = "."

[agents.flaky.policy]
cooldown = "0s"
"#,
    );
    f.start();
    f.wait_for(
        "flaky running and healthy after its failure",
        Duration::from_secs(10),
        |f| {
            let s = f.api("GET", "/status/flaky", "").1;
            s["state"] == "running" && s["healthy"] == true && s["last_exit"]["code"] == 3
        },
    );
    let status = f.api("GET", "/status/flaky", "").1;
    assert_eq!(status["diagnosis"]["category"], "unknown", "{status}");

    let (_driver, c) = browser().await;
    c.goto(&format!("http://{}/", f.api_addr()))
        .await
        .expect("open the dashboard");
    until(
        "the healed agent on the page",
        Duration::from_secs(10),
        async || card_text(&c, "flaky").await.contains("running"),
    )
    .await;

    let card = card_text(&c, "flaky").await;
    assert!(
        card.contains("exited with code 3") && card.contains("recovered"),
        "the failure is shown, as recovered from: {card}"
    );
    let red = painted(&c, "[data-agent=\"flaky\"]", "red").await;
    assert!(red.is_empty(), "a healed agent is painted red: {red:?}");
    assert!(
        card.contains("no known cause"),
        "an `unknown` diagnosis is labelled as no known cause: {card}"
    );
    assert!(
        !card.contains("43210"),
        "an ordinary log line is quoted as the explanation: {card}"
    );
    // Nothing needs attention: the header says so.
    until("the header saying ok", Duration::from_secs(5), async || {
        header_text(&c).await.contains("ok")
    })
    .await;
    let header = header_text(&c).await;
    assert!(!header.contains("attention"), "{header}");
    c.close().await.ok();
}

/// Issue 13: a dead agent showed green checks beside its red bar, and the header said "ok"
/// while an agent was quarantined. A quiet agent says it is quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver (`.ci/run` does)"]
async fn dashboard_shows_a_dead_agent_without_green_and_the_header_counts_it() {
    let mut f = Fleet::new(
        r#"[agents.dead]
command = ["sh", "-c", "touch hb; sleep 1; exit 1"]
cwd = "."

[agents.dead.policy]
max_restarts = 0

[[agents.dead.checks]]
kind = "heartbeat"
path = "hb"
max_age = "1m"

[agents.calm]
command = ["sleep", "300"]
quiet = ["daily 00:00-23:59 UTC"]
"#,
    );
    f.start();
    let (_driver, c) = browser().await;
    c.goto(&format!("http://{}/", f.api_addr()))
        .await
        .expect("open the dashboard");
    until(
        "the dead agent quarantined on the page",
        Duration::from_secs(10),
        async || card_text(&c, "dead").await.contains("quarantined"),
    )
    .await;
    let status = f.api("GET", "/status/dead", "").1;
    assert_eq!(status["checks"][0]["verdict"], "not_running", "{status}");

    let checks = text(&c, "[data-agent=\"dead\"] .checks").await;
    assert!(
        checks.contains("not running"),
        "a dead agent's checks say it is not running: {checks}"
    );
    let green = painted(&c, "[data-agent=\"dead\"]", "green").await;
    assert!(green.is_empty(), "a dead agent shows green: {green:?}");

    until(
        "the header counting the quarantined agent",
        Duration::from_secs(5),
        async || header_text(&c).await.contains("1 needs attention"),
    )
    .await;
    let header = header_text(&c).await;
    assert!(
        !header
            .split(|ch: char| !ch.is_alphanumeric())
            .any(|w| w == "ok"),
        "the header says ok while an agent is quarantined: {header}"
    );
    let red = painted(&c, "header", "red").await;
    assert!(
        red.iter().any(|t| t.contains("attention")),
        "the count is not red: {red:?}"
    );

    let badge = text(&c, "[data-agent=\"calm\"] .badge.quiet").await;
    assert_eq!(badge, "quiet", "{}", card_text(&c, "calm").await);
    c.close().await.ok();
}

/// Issue 13: a stall episode stays open across the restarts that try to heal it; the card
/// says how long it has lasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver (`.ci/run` does)"]
async fn dashboard_shows_how_long_an_agent_has_been_stalled() {
    // Never touches its heartbeat.
    let mut f = Fleet::new(
        r#"[agents.stuck]
command = ["sleep", "300"]
cwd = "."

[agents.stuck.policy]
cooldown = "0s"
max_restarts = 50
backoff_max = "1s"

[[agents.stuck.checks]]
kind = "heartbeat"
path = "hb"
max_age = "1s"
"#,
    );
    f.start();
    f.wait_for(
        "a stall that outlives a restart",
        Duration::from_secs(15),
        |f| {
            let s = f.api("GET", "/status/stuck", "").1;
            s["stalled_since"].is_string() && s["restarts"]["total"].as_u64() >= Some(2)
        },
    );
    let (_driver, c) = browser().await;
    c.goto(&format!("http://{}/", f.api_addr()))
        .await
        .expect("open the dashboard");
    until(
        "the stall on the card",
        Duration::from_secs(10),
        async || {
            let card = card_text(&c, "stuck").await;
            card.contains("stalled for") && card.contains("keeps restarting")
        },
    )
    .await;
    let red = painted(&c, "[data-agent=\"stuck\"]", "red").await;
    assert!(
        red.iter().any(|t| t.contains("stalled for")),
        "the stall is not shown as a problem: {red:?}"
    );
    until(
        "the header counting the stalled agent",
        Duration::from_secs(5),
        async || header_text(&c).await.contains("1 needs attention"),
    )
    .await;
    c.close().await.ok();
}

/// Issue 13: an `unknown` check (vigil cannot tell) looked like a failure in the feed. It is
/// shown as unknown, on the card and in the feed, and needs no attention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver (`.ci/run` does)"]
async fn dashboard_does_not_paint_an_unknown_check_as_a_failure() {
    let mut f = Fleet::new("");
    // A link to echo, not a script: removing a script can race with the shell that is about to
    // open it (exit 127, a real failure before the unknown), removing a link cannot — exec
    // either finds echo or finds nothing.
    let probe = f.path("probe");
    std::os::unix::fs::symlink("/bin/echo", &probe).unwrap();
    f.write_config(&format!(
        r#"[agents.db]
command = ["sleep", "300"]

[[agents.db.checks]]
kind = "exec"
name = "db"
command = ["{}", "reachable"]
interval = "100ms"
"#,
        probe.display()
    ));
    f.start();
    let (_driver, c) = browser().await;
    c.goto(&format!("http://{}/", f.api_addr()))
        .await
        .expect("open the dashboard");
    until(
        "the check passing on the page",
        Duration::from_secs(10),
        async || card_text(&c, "db").await.contains("reachable"),
    )
    .await;

    // The probe goes away: vigil cannot tell any more.
    std::fs::remove_file(&probe).unwrap();
    until(
        "the unknown verdict in the feed",
        Duration::from_secs(10),
        async || text(&c, "#feed").await.contains("ok → unknown"),
    )
    .await;
    let record = f.records_of("db", "check");
    assert_eq!(record.last().unwrap()["metadata"]["verdict"], "unknown");

    let rows = c
        .execute(
            "return [...document.querySelectorAll('#feed .rec')]
               .filter((r) => r.textContent.includes('→ unknown')).map((r) => r.className);",
            vec![],
        )
        .await
        .expect("execute");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|c| !c.as_str().unwrap().contains("failed")),
        "an unknown check is styled as a failure in the feed: {rows}"
    );
    let red = painted(&c, "#feed", "red").await;
    assert!(
        red.is_empty(),
        "the feed paints an unknown check red: {red:?}"
    );

    until(
        "the unknown check on the card",
        Duration::from_secs(5),
        async || {
            js(
                &c,
                "(document.querySelector('[data-agent=\"db\"] .check') || {}).className",
            )
            .await
                == json!("check unknown")
        },
    )
    .await;
    let marker = js(
        &c,
        "getComputedStyle(document.querySelector('[data-agent=\"db\"] .check'), '::before').content",
    )
    .await;
    assert!(
        marker.as_str().unwrap_or("").contains('?'),
        "an unknown check is marked with a question: {marker}"
    );
    let red = painted(&c, "[data-agent=\"db\"]", "red").await;
    assert!(red.is_empty(), "an unknown check is painted red: {red:?}");
    let header = header_text(&c).await;
    assert!(
        !header.contains("attention"),
        "an unknown check needs no attention: {header}"
    );
    c.close().await.ok();
}

/// Issue 15: the graph of which agent feeds which, with the edge that blocks now drawn red and
/// the waiting agent's card saying what it waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver (`.ci/run` does)"]
async fn dashboard_draws_the_graph_and_the_edge_that_blocks() {
    let mut f = Fleet::new(
        r#"[agents.feed]
command = ["sh", "-c", "while [ ! -e stop ]; do sleep 0.1; done; exit 1"]
cwd = "."

[agents.feed.policy]
max_restarts = 0

[agents.trader]
command = ["sleep", "740001"]
depends_on = ["feed"]
"#,
    );
    f.start();
    f.wait_for("the trader running", Duration::from_secs(10), |f| {
        f.api("GET", "/status/trader", "").1["state"] == "running"
    });
    let (_driver, c) = browser().await;
    c.goto(&format!("http://{}/", f.api_addr()))
        .await
        .expect("open the dashboard");
    until("the graph", Duration::from_secs(10), async || {
        js(&c, "document.querySelectorAll('#graph svg line').length").await == json!(1)
    })
    .await;
    assert_eq!(
        js(
            &c,
            "[...document.querySelectorAll('#graph svg g')].map(g => g.dataset.node).join(',')"
        )
        .await,
        json!("feed,trader")
    );
    assert_eq!(
        js(
            &c,
            "document.querySelector('#graph svg line').getAttribute('class')"
        )
        .await,
        json!("")
    );

    // The feed dies for good: the trader waits, and the edge blocks.
    std::fs::write(f.path("stop"), "").unwrap();
    until("the blocking edge", Duration::from_secs(10), async || {
        js(
            &c,
            "document.querySelector('#graph svg line').getAttribute('class')",
        )
        .await
            == json!("blocking")
    })
    .await;
    let red = js(
        &c,
        "getComputedStyle(document.querySelector('#graph svg line')).stroke",
    )
    .await;
    assert_eq!(red, json!("rgb(200, 65, 59)"), "the blocking edge is red");
    until("the waiting card", Duration::from_secs(5), async || {
        card_text(&c, "trader")
            .await
            .contains("waiting for feed: quarantined")
    })
    .await;
    assert!(
        text(&c, "#graph")
            .await
            .contains("blocking now: trader waits for feed")
    );
    c.close().await.ok();
}

/// Issue 17: an agent that declared itself degraded says so on its card (with why, and until
/// when its stalls wait), and each card shows how old its last checkpoint is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver (`.ci/run` does)"]
async fn dashboard_shows_a_declared_degradation_and_the_last_checkpoint() {
    let mut f = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "300"]
"#,
    );
    f.start();
    // A declaration is a running agent's: wait for its process.
    f.wait_for("the agent's process", Duration::from_secs(10), |f| {
        f.status("bot")["pid"].is_u64()
    });
    let json = [("Content-Type", "application/json")];
    let (code, _) = f.http(
        "PUT",
        "/agents/bot/checkpoint",
        &json,
        r#"{"position":0.25}"#,
    );
    assert_eq!(code, 201);
    let (code, body) = f.http(
        "POST",
        "/agents/bot/status",
        &json,
        r#"{"state":"degraded","reason":"binance 429, breaker open"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"accepted\":true"), "{body}");
    let (_driver, c) = browser().await;
    c.goto(&format!("http://{}/", f.api_addr()))
        .await
        .expect("open the dashboard");
    until(
        "the degraded badge and the checkpoint",
        Duration::from_secs(10),
        async || {
            let card = card_text(&c, "bot").await;
            card.contains("degraded: binance 429, breaker open")
                && card.contains("checkpoint")
                && card.contains("v1")
        },
    )
    .await;
    let title = js(
        &c,
        "document.querySelector('[data-agent=\"bot\"] .badge.degraded').title",
    )
    .await;
    assert!(
        title
            .as_str()
            .unwrap_or("")
            .contains("stalls are not acted on until"),
        "{title}"
    );
    let header = header_text(&c).await;
    assert!(
        !header.contains("attention"),
        "degraded on purpose needs no attention: {header}"
    );
    c.close().await.ok();
}

#[tokio::test]
#[ignore = "needs Chromium, ChromeDriver and PostgreSQL: apt-get install chromium chromium-driver; set VIGIL_TEST_POSTGRES_URL (`.ci/run` does)"]
async fn dashboard_shows_the_cluster_with_its_nodes_and_leases() {
    // A database of the test's own for the cluster's tables.
    let admin = common::postgres_url();
    let db = unique("vigil_dash_cluster");
    let exec = |url: String, sql: String| async move {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("sql");
    };
    exec(admin.clone(), format!("CREATE DATABASE {db}")).await;
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let mut f = Fleet::new(
        r#"[vigil]
node = "fra-1"

[cluster]
url_file = "cluster-url"
lease_ttl = "3s"

[agents.trader]
command = ["sleep", "300"]
placement = "exclusive"
nodes = ["fra-1", "fra-2"]
"#,
    );
    std::fs::write(f.path("cluster-url"), &url).unwrap();
    f.start();
    f.wait_for("the lease", Duration::from_secs(15), |f| {
        f.status("trader")["lease"]["held"] == true
    });
    let (_driver, c) = browser().await;
    c.goto(&format!("http://{}/", f.api_addr()))
        .await
        .expect("open the dashboard");
    until("the fleet section", Duration::from_secs(15), async || {
        let fleet = text(&c, "#cluster").await;
        fleet.contains("fra-1") && fleet.contains("held, epoch 1") && fleet.contains("up")
    })
    .await;
    let hidden = js(&c, "document.getElementById('cluster').hidden").await;
    assert_eq!(hidden, json!(false));
    let card = card_text(&c, "trader").await;
    assert!(
        card.contains("lease") && card.contains("held, epoch 1"),
        "{card}"
    );
    c.close().await.ok();
    f.stop();
    exec(admin, format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}
