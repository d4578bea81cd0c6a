//! `vigil`: the daemon and its command line.

use vigil::{audit, cli, cmd, config, crash, demo, errors, memory, runtime};

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;

use cli::{Cli, Cmd, ConfigArgs};
use cmd::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Run { .. }) {
        // A command's output piped into `head` ends quietly when `head` is done, as for any
        // Unix tool (Rust ignores SIGPIPE, and printing then panics). The daemon keeps
        // ignoring it: a reader gone from a socket must never kill the supervisor.
        // SAFETY: called before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // TLS (https checks and API URLs, postgres/redis over TLS) uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let code = match cli.command {
        Cmd::Run { cfg } => run(cfg),
        Cmd::Check { cfg, json, live } => check(&cfg, json, live),
        Cmd::Graph { dot, mermaid, api } => {
            let format = match (dot, mermaid) {
                (true, _) => cmd::graph::Format::Dot,
                (_, true) => cmd::graph::Format::Mermaid,
                _ => cmd::graph::Format::Tree,
            };
            cmd::graph::graph(&api, format)
        }
        Cmd::Doctor { fix, json, api } => cmd::doctor::doctor(&api, fix, json),
        Cmd::Files { name, cfg, json } => match config::load(&cfg.config, cfg.state_dir.as_deref())
        {
            Ok(c) => cmd::files::files(&c, &name, json),
            Err(e) => {
                eprintln!("{e}");
                EXIT_USAGE
            }
        },
        Cmd::Incidents { json, api } => cmd::control::incidents(&api, json),
        Cmd::Runbooks { json, api } => cmd::control::runbooks(&api, json),
        Cmd::Checkpoint {
            name,
            history,
            limit,
            json,
            api,
        } => cmd::checkpoint::show(&api, &name, history, limit, json),
        Cmd::Fleet(cli::FleetCmd::Status { json, cfg }) => {
            with_config(&cfg, |c| cmd::fleet::status(c, json))
        }
        Cmd::Fleet(cli::FleetCmd::Audit {
            node,
            agent,
            action,
            since,
            limit,
            json,
            cfg,
        }) => {
            let since = match since
                .map(|s| cmd::audit::parse_since(&s, SystemTime::now()))
                .transpose()
            {
                Ok(since) => since,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_USAGE as u8);
                }
            };
            let q = cmd::fleet::AuditQuery {
                node: node.as_deref(),
                agent: agent.as_deref(),
                action: action.as_deref(),
                since,
                limit,
                json,
            };
            with_config(&cfg, |c| cmd::fleet::audit(c, &q))
        }
        Cmd::Fleet(cli::FleetCmd::Restart {
            name,
            node,
            reason,
            cfg,
        }) => with_config(&cfg, |c| {
            cmd::fleet::restart(c, &name, node.as_deref(), reason.as_deref())
        }),
        Cmd::Fleet(cli::FleetCmd::Forget { node, cfg }) => {
            with_config(&cfg, |c| cmd::fleet::forget(c, &node))
        }
        Cmd::Fleet(cli::FleetCmd::Move {
            name,
            node,
            no_wait,
            cfg,
        }) => with_config(&cfg, |c| cmd::fleet::move_agent(c, &name, &node, no_wait)),
        Cmd::Notify(cli::NotifyCmd::Test { name, cfg }) => {
            match config::load(&cfg.config, cfg.state_dir.as_deref()) {
                Ok(c) => cmd::notify::test(&c, &name),
                Err(e) => {
                    eprintln!("{e}");
                    EXIT_USAGE
                }
            }
        }
        Cmd::Audit {
            cfg,
            agent,
            action,
            since,
            limit,
            json,
        } => audit(&cfg, agent, action, since, limit, json),
        Cmd::Status { name, json, api } => cmd::control::status(&api, name.as_deref(), json),
        Cmd::Demo(args) => demo::run(args),
        Cmd::DemoAgent {
            role,
            symbol,
            db,
            faults,
            config,
        } => demo::agent::run(&role, symbol.as_deref(), &db, &faults, config.as_deref()),
        Cmd::Explain { name, json, api } => cmd::explain::explain(&api, &name, json),
        Cmd::Restart(a) => control(&a, "restart"),
        Cmd::Stop(a) => control(&a, "stop"),
        Cmd::Start { control: a, force } => {
            cmd::control::command(&a.api, "start", &a.name, a.reason.as_deref(), force)
        }
        Cmd::Reset(a) => control(&a, "reset"),
        Cmd::Reload { api } => cmd::control::reload(&api),
        Cmd::Shutdown { no_wait, api } => cmd::control::shutdown(&api, !no_wait),
        Cmd::Logs {
            name,
            all,
            lines,
            follow,
            cfg,
        } => {
            let which = match &name {
                Some(n) if !all => cmd::logs::LogSelection::Name(n),
                _ => cmd::logs::LogSelection::All,
            };
            logs(&cfg, &which, lines, follow)
        }
    };
    ExitCode::from(code as u8)
}

/// Run `f` on the config, or say why it cannot be read (exit 2).
fn with_config(cfg: &ConfigArgs, f: impl FnOnce(&config::Config) -> i32) -> i32 {
    match config::load(&cfg.config, cfg.state_dir.as_deref()) {
        Ok(c) => f(&c),
        Err(e) => {
            eprintln!("{e}");
            EXIT_USAGE
        }
    }
}

fn control(args: &cli::ControlArgs, verb: &str) -> i32 {
    cmd::control::command(&args.api, verb, &args.name, args.reason.as_deref(), false)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The Docker client logs whole API answers at debug level: a container's inspect
        // holds its environment, secrets included.
        .add_directive("bollard=warn".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn run(cfg: ConfigArgs) -> i32 {
    // Before anything opens a file: low descriptors for agents' starts.
    vigil::driver::spawn::reserve_slots();
    let limit = vigil::fd_limit::raise();
    init_tracing();
    crash::install_hook();
    memory::limit_arenas();
    let config = match config::load(&cfg.config, cfg.state_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    // One pidfd per agent, and room for the API's connections, logs and probes.
    if let Some((_, allowed)) = limit
        && allowed < config.agents.len() as u64 + 256
    {
        tracing::warn!(
            "vigil may open at most {allowed} descriptors (its hard limit) and needs one per agent and a few hundred more for {} agents: raise it (LimitNOFILE= in its unit, ulimit -Hn) or some agents' exits cannot be watched",
            config.agents.len()
        );
    }
    // Probes and everything else that may block run on their own threads…
    let io = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vigil-io")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the I/O runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let journal = config.state_dir.join("audit.jsonl");
    let opts = runtime::RunOptions {
        config,
        state_dir_override: cfg.state_dir,
        io: io.handle().clone(),
    };
    // …while the supervision loop has a thread and an event queue of its own: a crash wakes
    // it directly, never through another thread. Not the main thread: the kernel hands the
    // orphans of agents' trees to the main thread (vigil is their subreaper), so with the
    // agents born on the loop's thread, the main thread's children are exactly those orphans
    // — finding and reaping them reads a list as long as the orphans, not the fleet.
    let looping = std::thread::Builder::new()
        .name("vigil-loop".into())
        // The size of the main thread's stack, which the loop ran on before.
        .stack_size(8 << 20)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            // A panic in the loop unwinds to here: whatever it held (the state dir lock, the
            // journal) is released, then vigil journals the crash and comes back (see `crash`).
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(runtime::run(opts))
            }));
            drop(runtime);
            Ok::<_, String>(outcome.map(|r| r.map_err(|e| errors::chain(&e))))
        });
    let outcome = match looping.map(|t| t.join()) {
        Ok(Ok(Ok(Ok(result)))) => result,
        Ok(Ok(Err(e))) => Err(e),
        // Only a panic unwinds out of the loop's catch_unwind.
        Ok(Ok(Ok(Err(_)))) | Ok(Err(_)) => return crash::after_panic(&journal),
        Err(e) => Err(format!("cannot start the supervision loop's thread: {e}")),
    };
    match outcome {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

fn check(cfg: &ConfigArgs, json: bool, live: bool) -> i32 {
    match config::load(&cfg.config, cfg.state_dir.as_deref()) {
        Ok(c) => {
            let live = live.then(|| cmd::check_live::report(&c));
            if json {
                let mut out = cmd::check::render_json(&c);
                if let (Some(live), Some(obj)) = (&live, out.as_object_mut()) {
                    obj.insert("live".into(), live.json.clone());
                }
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                print!("{}", cmd::check::render(&c));
                if let Some(live) = &live {
                    print!("{}", live.text);
                }
            }
            if live.is_some_and(|l| l.conflicts > 0) {
                EXIT_FAILURE
            } else {
                EXIT_OK
            }
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_USAGE
        }
    }
}

fn audit(
    cfg: &ConfigArgs,
    agent: Option<String>,
    action: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    json: bool,
) -> i32 {
    if let Some(a) = &action
        && let Err(e) = cmd::audit::check_action(a)
    {
        eprintln!("error: {e}");
        return EXIT_USAGE;
    }
    let since = match since
        .map(|s| cmd::audit::parse_since(&s, SystemTime::now()))
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let state_dir = match cmd::state_dir(cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let query = cmd::audit::Query {
        state_dir: &state_dir,
        filter: audit::Filter {
            agent,
            action,
            since,
            limit,
        },
        json,
    };
    match cmd::audit::print(&query) {
        Ok(_) => EXIT_OK,
        Err(e) => {
            eprintln!(
                "error: cannot read {}: {e}",
                state_dir.join("audit.jsonl").display()
            );
            EXIT_FAILURE
        }
    }
}

fn logs(cfg: &ConfigArgs, which: &cmd::logs::LogSelection<'_>, lines: usize, follow: bool) -> i32 {
    let state_dir = match cmd::state_dir(cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    match cmd::logs::print(&state_dir, which, lines, follow) {
        Ok(true) => EXIT_OK,
        Ok(false) => {
            let what = match which {
                cmd::logs::LogSelection::Name(name) => format!("for agent or template {name:?}"),
                cmd::logs::LogSelection::All => "at all".to_string(),
            };
            eprintln!(
                "error: no log {what} in {} (has it run yet? is the name right?)",
                state_dir.join("logs").display()
            );
            EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}
