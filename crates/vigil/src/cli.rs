//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vigil",
    version,
    about = "A self-healing supervisor for fleets of long-running agents",
    long_about = "vigil runs your agents (trading bots, workers, services), restarts them within \
milliseconds of a crash, within a restart budget, and writes every decision to an audit journal.\n\n\
See it at work with `vigil demo`. For your own fleet: `vigil check -c vigil.toml`, then `vigil run -c vigil.toml`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// The configuration file
    #[arg(
        short = 'c',
        long = "config",
        env = "VIGIL_CONFIG",
        default_value = "vigil.toml"
    )]
    pub config: PathBuf,
    /// Where logs, the audit journal and state live (overrides `[vigil] state_dir`)
    #[arg(long, env = "VIGIL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// How to reach a running vigil.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// vigil's API, e.g. http://127.0.0.1:9120 (default: from the config and its state dir)
    #[arg(long, env = "VIGIL_URL")]
    pub url: Option<String>,
    /// The API token (default: `[api] token` / `token_file` from the config)
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub cfg: ConfigArgs,
}

/// `vigil restart|stop|start|reset NAME`.
#[derive(Args, Debug, Clone)]
pub struct ControlArgs {
    /// An agent (`trader@BTC_USDT`), or a template (`trader`) for all its instances
    pub name: String,
    /// Why — written to the audit journal with the request
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the supervisor in the foreground (SIGTERM/SIGINT stop it and every agent,
    /// SIGHUP reloads the config)
    Run {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Validate a config: print the resolved agents (exit 0) or every error (exit 2)
    Check {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Print the resolved agents as JSON
        #[arg(long)]
        json: bool,
        /// Also look at this machine now: which agents already run outside vigil (a process
        /// to take over with `adopt`, or a copy that would keep the agent from starting).
        /// Exit 1 when an agent would be in conflict
        #[arg(long)]
        live: bool,
    },
    /// Look at the whole fleet now: the graph, every guarded file, and every check of every
    /// agent probed once; say what is wrong, who is to blame (an upstream, when its
    /// dependents fail with it) and what vigil would do. Exit 0 when all is fine, 1 when not
    Doctor {
        /// Also carry out what vigil would do, through the running vigil, upstreams first: a
        /// person's restart of each agent to blame (its guarded files are mended as it starts)
        #[arg(long)]
        fix: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show an agent's guarded files (`[[agents.NAME.files]]`): valid or what is wrong, the
    /// last known good copies and backups vigil keeps, and what changed since the newest good
    /// copy (secret values hidden). Exit 1 when a file is invalid
    Files {
        /// An agent (`trader@BTC_USDT`), or a template (`trader`) for all its instances
        name: String,
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show fleet incidents: several agents failing for one cause, handled once (their
    /// restarts held while a canary probes the cause). Exit 1 while one is open
    Incidents {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show runbooks at work or waiting, and the newest that ended: for which alert and
    /// agent, each step's outcome. Exit 1 when one of those shown failed
    Runbooks {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show an agent's checkpoint: the state it saved through vigil (`PUT
    /// /agents/NAME/checkpoint`) to resume from after a restart
    Checkpoint {
        /// The agent (e.g. `bot` or `trader@BTC_USDT`)
        name: String,
        /// Every kept version, newest first, instead of the latest document
        #[arg(long)]
        history: bool,
        /// With --history: at most this many versions
        #[arg(long)]
        limit: Option<u32>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Notification channels (`[notify.NAME]`)
    #[command(subcommand)]
    Notify(NotifyCmd),
    /// The whole fleet of a cluster (`[cluster]`): every node and agent, and moves of
    /// exclusive agents between nodes. Read from the cluster's PostgreSQL
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Show which agent feeds which (`depends_on`, `produced_by`): a tree, upstreams first.
    /// With a vigil running, each agent's state, and the edges that block now
    Graph {
        /// Print Graphviz DOT (`vigil graph --dot | dot -Tsvg > graph.svg`)
        #[arg(long, conflicts_with = "mermaid")]
        dot: bool,
        /// Print a Mermaid flowchart (GitHub and many wikis draw it)
        #[arg(long)]
        mermaid: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show every agent (or one) of a running vigil: state, pid, uptime, restarts, budget and
    /// last problem. Exit 1 when one needs attention, 3 when vigil cannot be reached
    Status {
        /// One agent, or a template for all its instances
        name: Option<String>,
        /// The API's JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A self-healing trading fleet in one command: six bots and a market feed supervised by
    /// vigil, with the seeds' failures injected on a seeded schedule (crashes, hangs, stalls,
    /// locked databases, an invalid API key, a 429 storm), each shown being detected,
    /// diagnosed and healed, then a summary. Exit 0 when every fault was healed or escalated
    Demo(DemoArgs),
    /// One of the demo's agents (used by `vigil demo`)
    #[command(hide = true)]
    DemoAgent {
        /// `market-feed` or `trader`
        role: String,
        #[arg(long)]
        symbol: Option<String>,
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value = "demo/faults")]
        faults: PathBuf,
        /// A trader's JSON config (read at start, and again on a `config_corrupt` fault)
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Why did an agent's last failure end the way it did: the evidence vigil saw (log tail,
    /// evidence command), the rules' verdict, the LLM advisor's, and what vigil did
    Explain {
        /// The agent (e.g. `bot` or `trader@BTC_USDT`)
        name: String,
        /// The API's JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Restart an agent now (a person's restart: it does not use the restart budget)
    Restart(ControlArgs),
    /// Stop an agent; it stays stopped, across vigil restarts, until `vigil start`
    Stop(ControlArgs),
    /// Start a stopped agent. vigil looks first for the agent's command already running
    /// outside vigil: if it finds one, the agent goes to `conflict` and is not started
    Start {
        #[command(flatten)]
        control: ControlArgs,
        /// Start even though a process vigil does not own runs the agent's command (after
        /// checking that it is not the agent, or to run a second copy on purpose)
        #[arg(long)]
        force: bool,
    },
    /// Clear an agent's quarantine and restart budget, and start it
    Reset(ControlArgs),
    /// Make a running vigil read its config again (as SIGHUP does) and say what changed;
    /// a config with errors is refused and nothing changes (exit 2)
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop every agent gracefully and end a running vigil (as SIGTERM does); waits until it
    /// has exited
    Shutdown {
        /// Return once vigil has begun stopping, without waiting for it to exit
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Read the audit journal: what vigil did, when and why
    Audit {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Only this agent (a template name matches all its instances)
        #[arg(long)]
        agent: Option<String>,
        /// Only this action (start, exit, restart, stop, kill, backoff, rate_limited,
        /// escalated, recovered, reset, spawn_failed, adopted, removed, vigil_start, …)
        #[arg(long)]
        action: Option<String>,
        /// Only records newer than this: a duration ago ("1h", "30m") or an RFC 3339 time
        #[arg(long)]
        since: Option<String>,
        /// Only the newest N records
        #[arg(short = 'n', long)]
        limit: Option<usize>,
        /// One JSON object per line, as stored
        #[arg(long)]
        json: bool,
    },
    /// Show the last lines of an agent's log (or of every instance of a template, or of all
    /// agents), and optionally follow them: several logs are prefixed with the agent's name,
    /// and followed lines are interleaved as they are written, with the time they were read
    Logs {
        /// The agent (e.g. `bot` or `trader@BTC_USDT`), or a template (`trader`: every instance)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every agent's log
        #[arg(long)]
        all: bool,
        /// How many lines
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        /// Keep printing new lines as they are written (Ctrl-C to stop)
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}

/// `vigil demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// How long to inject faults ("3m", "90s")
    #[arg(long, default_value = "5m", value_parser = crate::config::parse_duration)]
    pub duration: std::time::Duration,
    /// Repeat a run: the same seed injects the same faults in the same order
    #[arg(long)]
    pub seed: Option<u64>,
    /// The dashboard's and API's port on 127.0.0.1 (0: any free port)
    #[arg(long, default_value_t = 9120)]
    pub port: u16,
    /// Where the demo's config, journal, logs and database go (default: $TMPDIR/vigil-demo)
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Time between two faults, MIN..MAX
    #[arg(long, default_value = "20s..40s", value_parser = crate::demo::parse_gap)]
    pub fault_every: (std::time::Duration, std::time::Duration),
    /// An LLM server to ask for second opinions (e.g. http://127.0.0.1:11434 for Ollama)
    #[arg(long)]
    pub llm_url: Option<String>,
    /// `ollama` or `openai` (any /v1/chat/completions server)
    #[arg(long, default_value = "ollama")]
    pub llm_provider: String,
    /// The model's name on that server
    #[arg(long, default_value = "qwen2.5-coder:7b")]
    pub llm_model: String,
}

#[derive(Subcommand, Debug)]
pub enum NotifyCmd {
    /// Send a test message to a channel now, from this command (not through a running
    /// vigil), and print the channel's answer. Exit 0 when it took the message, 1 when not
    Test {
        /// The channel: `ops` for `[notify.ops]`
        name: String,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum FleetCmd {
    /// Every node (up or down, as its renewals say) and every agent on each, with exclusive
    /// agents' leases. Exit 1 when a node is down or an exclusive agent runs nowhere
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Every node's audit journal, as mirrored to the cluster's PostgreSQL, oldest first,
    /// each record with its node
    Audit {
        /// Only this node's records
        #[arg(long)]
        node: Option<String>,
        /// Only this agent (a template name matches all its instances)
        #[arg(long)]
        agent: Option<String>,
        /// Only this action (start, exit, restart, lease_acquired, fenced, …)
        #[arg(long)]
        action: Option<String>,
        /// Only records newer than this: a duration ago ("1h", "30m") or an RFC 3339 time
        #[arg(long)]
        since: Option<String>,
        /// The newest N records
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line, with its `node`
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Restart an agent (or a template's instances) where it runs, on whichever node: a
    /// person's restart, journaled there with the reason. Waits for each node's answer
    Restart {
        /// The agent or template
        name: String,
        /// Only on this node
        #[arg(long)]
        node: Option<String>,
        /// Why — written to the node's journal with the restart
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Take a node that is down out of the fleet view for good (its journal's copy stays)
    Forget {
        /// The node
        node: String,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Move an exclusive agent to NODE: the node running it stops it and gives its lease to
    /// NODE, which starts it (never both at once). Waits to say how it went
    Move {
        /// The agent (e.g. `trader@BTC_USDT`)
        name: String,
        /// The node to run it (one of its `nodes`)
        node: String,
        /// Ask for the move and return at once
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}
