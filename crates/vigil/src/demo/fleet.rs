//! The demo's fleet: its config (written to `<state_dir>/demo.toml` for users to read and
//! copy) and its database.

use std::path::Path;

use super::agent::SYMBOLS;

pub struct FleetOptions<'a> {
    /// vigil's own binary: the agents are its hidden `demo-agent` mode.
    pub exe: &'a Path,
    pub port: u16,
    pub llm: Option<LlmChoice<'a>>,
    /// The demo's own notification sink (`sink.rs`).
    pub sink_port: u16,
}

pub struct LlmChoice<'a> {
    pub provider: &'a str,
    pub url: &'a str,
    pub model: &'a str,
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn config(o: &FleetOptions<'_>) -> String {
    let exe = quoted(&o.exe.display().to_string());
    let instances = SYMBOLS
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let llm = match &o.llm {
        Some(l) => format!(
            "\n# A second opinion from an LLM: it can only make decisions stricter.\n[diagnosis.llm]\nprovider = {}\nurl = {}\nmodel = {}\ntimeout = \"30s\"\n",
            quoted(l.provider),
            quoted(l.url),
            quoted(l.model)
        ),
        None => String::new(),
    };
    format!(
        r#"# The fleet `vigil demo` runs: six trading bots and the market feed they read, each one a
# `vigil demo-agent` process. Copy it as a starting point for your own fleet.
#
#   vigil status -c demo.toml          the fleet at a glance
#   vigil explain -c demo.toml NAME    why an agent's last failure was handled so

[vigil]
state_dir = "."

[api]
listen = "127.0.0.1:{port}"

[defaults.policy]
cooldown = "2s"             # shortened so the healing is visible within minutes
max_restarts = 4
window = "5m"
backoff_initial = "1s"
backoff_max = "10s"
stable_after = "1m"
on_exhausted = "retry_after"
retry_after = "30s"
throttle_delay = "20s"      # a 429 spell of one bot: it waits 20-30 s before its restart

# Several agents failing for one cause (all six traders hit by one 429 storm) are one incident:
# their restarts are held, one canary probes the exchange, then the rest come back 2 s apart.
[incidents]
probe_every = "10s"
probe_for = "5s"
spread = "2s"

# People are told: a quarantine, an incident opened and resolved. Here to a local sink the demo
# runs itself and prints; yours would be Slack, Telegram, email or a webhook.
[notify.demo-sink]
kind = "webhook"
url = "http://127.0.0.1:{sink_port}/notify"

[agents.market-feed]
command = [{exe}, "demo-agent", "market-feed", "--db", "demo/trading.db", "--faults", "demo/faults"]
cwd = "."

[[agents.market-feed.checks]]
kind = "notify"             # WATCHDOG=1 through NOTIFY_SOCKET, as sd_notify(3)
max_age = "5s"

[agents.trader]
command = [{exe}, "demo-agent", "trader", "--symbol", "{{instance}}", "--db", "demo/trading.db", "--faults", "demo/faults", "--config", "demo/config/{{instance}}.json"]
cwd = "."
instances = [{instances}]
# The traders read the feed's prices: while the feed is down they wait (not restarted, no
# budget spent), and the feed is healed first. `vigil graph -c demo.toml` draws it.
depends_on = ["market-feed"]
# What a stuck bot is doing, captured before it is stopped (`vigil explain`).
evidence = ["sh", "-c", "grep -E '^(State|VmRSS|Threads)' /proc/{{pid}}/status"]
evidence_timeout = "5s"

[[agents.trader.checks]]
kind = "notify"             # the heartbeat
max_age = "5s"

[[agents.trader.checks]]
kind = "sql"                # and it must keep making decisions
name = "decisions"
url = "sqlite://demo/trading.db"
query = "SELECT max(ts) FROM decisions WHERE symbol = ?1"
params = ["{{instance}}"]
max_age = "10s"
interval = "2s"
failure_threshold = 1

# A config file a trader cannot run without: checked before every start, and restored from
# the last known good copy (kept once the trader has run healthy) when it is broken.
# `vigil files -c demo.toml trader` shows the copies.
[[agents.trader.files]]
path = "demo/config/{{instance}}.json"
required = ["/api_key_file", "/risk/max_position"]
repair = "restore"
{llm}"#,
        port = o.port,
        sink_port = o.sink_port,
    )
}

/// Each trader's config file, as an operator would have written it.
pub fn write_trader_configs(dir: &Path) -> Result<(), String> {
    let configs = dir.join("demo/config");
    std::fs::create_dir_all(&configs)
        .map_err(|e| format!("cannot create {}: {e}", configs.display()))?;
    for symbol in SYMBOLS {
        let text = format!(
            "{{\n  \"symbol\": \"{symbol}\",\n  \"api_key_file\": \"demo/keys/{symbol}\",\n  \"risk\": {{ \"max_position\": 0.1, \"stop_loss\": 0.02 }}\n}}\n"
        );
        let path = configs.join(format!("{symbol}.json"));
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// An empty database with the demo's tables (the bots and vigil's checks find them ready).
pub fn create_db(path: &Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let pool = super::agent::open(path, true).await?;
        super::agent::create_schema(&pool).await?;
        pool.close().await;
        Ok::<(), sqlx::Error>(())
    })
    .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_a_valid_vigil_config() {
        let dir = tempfile::tempdir().unwrap();
        let text = config(&FleetOptions {
            exe: Path::new("/usr/local/bin/vigil"),
            port: 0,
            sink_port: 9,
            llm: Some(LlmChoice {
                provider: "ollama",
                url: "http://127.0.0.1:11434",
                model: "qwen2.5-coder:7b",
            }),
        });
        let path = dir.path().join("demo.toml");
        std::fs::write(&path, text).unwrap();
        let config = crate::config::load(&path, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.agents.len(), 7);
        assert!(config.diagnosis.llm.is_some());
        assert_eq!(config.agents[1].name, "trader@BTC_USDT");
    }
}
