//! The dashboard in a real headless Chromium (Debian `chromium` + `chromium-driver`): it
//! shows the fleet, shows a crash without a reload, and its restart button restarts.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, unique};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
