//! `vigil-bench cluster`: seeded fault rounds against a fleet of vigil nodes sharing one real
//! PostgreSQL, and whether an exclusive agent ever ran twice.
//!
//! Each node reaches the database through its own TCP proxy (closing it cuts the node off).
//! The agent is a Python bot using the real client: before each order (every 50 ms) it asks
//! `vigil_agent.fence_ok()`, and writes the order to PostgreSQL with its fencing epoch and the
//! database's clock. Each round, from the seed, one fault hits the node that runs the agent:
//!
//! - `node killed`: kill -9 of its vigil and of the agent (the machine died);
//! - `cut from postgres`: its proxy closes every connection and refuses new ones;
//! - `vigil killed`: kill -9 of vigil alone (the agent lives on, and must stop on its own);
//! - `moved`: `vigil fleet move` to another node.
//!
//! The round ends when another epoch places orders; the faulty node is then restored (vigil
//! started again, the cut healed) and, for a while, nothing may move again (flapping). At the
//! end, over all orders: no epoch's orders interleave with the next one's; failover times
//! (fault → first order of the next epoch), and the renewal statements per period.

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::chaos::Rng;

/// The bot: the same as the cluster's integration tests use.
const BOT: &str = include_str!("cluster_bot.py");

/// `psql -At` on `url`: the rows, `|`-separated.
fn psql(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args([url, "-qAtX", "-c", sql])
        .output()
        .context("run psql (apt install postgresql-client)")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A TCP proxy; dropping `open` (set to false) closes every connection and refuses new ones.
struct Proxy {
    addr: String,
    open: Arc<AtomicBool>,
}

impl Proxy {
    fn start(addr: &str, target: &str) -> Result<Proxy> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?.to_string();
        listener.set_nonblocking(true)?;
        let open = Arc::new(AtomicBool::new(true));
        let (flag, target) = (open.clone(), target.to_string());
        std::thread::spawn(move || {
            let mut conns: Vec<TcpStream> = Vec::new();
            while flag.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                conns.extend([client, server]);
            }
            for c in conns {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        });
        Ok(Proxy { addr, open })
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

struct Node {
    name: String,
    dir: PathBuf,
    child: Option<Child>,
    proxy: Proxy,
    target: String,
}

impl Node {
    /// One node "n1" in `dir`, reaching the database directly (its config's URL): there is
    /// nothing to cut, and its proxy leads nowhere.
    fn alone(dir: &Path) -> Result<Node> {
        Ok(Node {
            name: "n1".into(),
            dir: dir.to_path_buf(),
            child: None,
            proxy: Proxy::start("127.0.0.1:0", "127.0.0.1:1")?,
            target: String::new(),
        })
    }

    fn start(&mut self, vigil: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vigil.out"))?;
        self.child = Some(
            Command::new(vigil)
                .args(["run", "-c"])
                .arg(self.dir.join("vigil.toml"))
                .current_dir(&self.dir)
                .env("VIGIL_LOG", "warn")
                .stdout(log.try_clone()?)
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .context("start vigil")?,
        );
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// The pid of the agent's current process, from the node's status.
    fn agent_pid(&self) -> Option<u32> {
        let addr = std::fs::read_to_string(self.dir.join(".vigil/api.addr")).ok()?;
        let mut s = TcpStream::connect(addr.trim()).ok()?;
        std::io::Write::write_all(
            &mut s,
            b"GET /status/trader HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let json: Value = serde_json::from_str(body.split_once("\r\n\r\n")?.1).ok()?;
        json["pid"].as_u64().map(|p| p as u32)
    }
}

fn holder(url: &str) -> Option<(String, i64)> {
    let row = psql(
        url,
        "SELECT holder || '|' || epoch FROM vigil_leases WHERE agent = 'trader' \
         AND holder IS NOT NULL AND expires_at > now()",
    )
    .ok()?;
    let (h, e) = row.split_once('|')?;
    Some((h.to_string(), e.parse().ok()?))
}

fn acts_of(url: &str, epoch: i64) -> i64 {
    psql(
        url,
        &format!("SELECT count(*) FROM acts WHERE epoch = {epoch}"),
    )
    .ok()
    .and_then(|n| n.parse().ok())
    .unwrap_or(0)
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn cluster(
    vigil: &Path,
    rounds: usize,
    seed: u64,
    ttl_s: u64,
    pg: &str,
    python: &str,
) -> Result<Value> {
    let dir = super::scratch("cluster");
    std::fs::create_dir_all(&dir)?;
    let (db, url) = scratch_db(pg, "cluster")?;
    psql(
        &url,
        "CREATE TABLE acts (epoch bigint, node text, at timestamptz)",
    )?;
    let target = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(hp, _)| hp.to_string())
        .context("postgres://USER@HOST:PORT/DB")?;
    let names = ["n1", "n2", "n3"];
    let mut nodes = Vec::new();
    for name in names {
        let ndir = dir.join(name);
        std::fs::create_dir_all(&ndir)?;
        let proxy = Proxy::start("127.0.0.1:0", &target)?;
        std::fs::write(
            ndir.join("cluster-url"),
            url.replacen(&target, &proxy.addr, 1),
        )?;
        std::fs::write(ndir.join("bot.py"), BOT)?;
        std::fs::write(
            ndir.join("vigil.toml"),
            format!(
                "[vigil]\nnode = \"{name}\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
                 [cluster]\nurl_file = \"cluster-url\"\nlease_ttl = \"{ttl_s}s\"\n\
                 [agents.trader]\ncommand = [\"{python}\", \"bot.py\"]\nplacement = \"exclusive\"\n\
                 nodes = {names:?}\nenv = {{ ACTS_URL = \"{url}\" }}\n"
            ),
        )?;
        let mut node = Node {
            name: name.to_string(),
            dir: ndir,
            child: None,
            proxy,
            target: target.clone(),
        };
        node.start(vigil)?;
        nodes.push(node);
    }
    let result = run_rounds(vigil, &mut nodes, &url, rounds, seed, ttl_s);
    for n in &mut nodes {
        n.stop();
    }
    let report = result.and_then(|mut r| {
        r["never_twice"] = overlap(&url)?;
        Ok(r)
    });
    let _ = psql(pg, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    if let Ok(r) = &report {
        let t = &r["never_twice"];
        println!(
            "{rounds} rounds (seed {seed}, lease_ttl {ttl_s}s): {} runs, {} orders; overlapping runs: {}; \
             epochs on two nodes: {}; smallest gap between two runs: {} ms; flaps: {}; rounds without failover: {}",
            t["epochs"],
            t["orders"],
            t["overlapping_runs"].as_array().map_or(0, Vec::len),
            t["epochs_on_two_nodes"],
            t["smallest_gap_between_runs_ms"],
            r["flaps"],
            r["rounds_without_failover"].as_array().map_or(0, Vec::len),
        );
        if let Some(f) = r["failover"].as_object() {
            for (fault, s) in f {
                println!(
                    "  {fault} ({}): fault → the next run's first order, median {:.2} s, p90 {:.2} s, max {:.2} s",
                    s["n"],
                    s["median_s"].as_f64().unwrap_or_default(),
                    s["p90_s"].as_f64().unwrap_or_default(),
                    s["max_s"].as_f64().unwrap_or_default()
                );
            }
        }
        // A chaos run that broke the promise fails (CI runs a short one).
        let overlaps = r["never_twice"]["overlapping_runs"]
            .as_array()
            .map_or(0, Vec::len)
            + r["never_twice"]["epochs_on_two_nodes"]
                .as_u64()
                .unwrap_or(0) as usize;
        let stuck = r["rounds_without_failover"].as_array().map_or(0, Vec::len);
        if overlaps > 0 || stuck > 0 || r["flaps"] != 0 {
            bail!(
                "the cluster broke its promise: {overlaps} overlapping run(s), {stuck} round(s) without failover, {} flap(s)",
                r["flaps"]
            );
        }
    }
    report
}

fn run_rounds(
    vigil: &Path,
    nodes: &mut [Node],
    url: &str,
    rounds: usize,
    seed: u64,
    ttl_s: u64,
) -> Result<Value> {
    let ttl = Duration::from_secs(ttl_s);
    let mut rng = Rng(seed.max(1));
    let mut faults: HashMap<&str, u64> = HashMap::new();
    let mut failovers: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut flaps = 0;
    let mut missed = Vec::new();
    wait_until(Duration::from_secs(30), || {
        holder(url).is_some_and(|(_, e)| acts_of(url, e) > 0)
    })
    .context("no node ran the agent within 30 s")?;
    for round in 0..rounds {
        let (name, epoch) = holder(url).context("nobody holds the lease between rounds")?;
        let h = nodes
            .iter()
            .position(|n| n.name == name)
            .context("holder")?;
        let fault = match rng.below(4) {
            0 => "node killed",
            1 => "cut from postgres",
            2 => "vigil killed",
            _ => "moved",
        };
        *faults.entry(fault).or_default() += 1;
        match fault {
            "node killed" => {
                let agent = nodes[h].agent_pid();
                nodes[h].kill9();
                if let Some(pid) = agent {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
            "cut from postgres" => nodes[h].proxy.close(),
            "vigil killed" => nodes[h].kill9(),
            _ => {
                let to = nodes[(h + 1 + rng.below(nodes.len() as u64 - 1) as usize) % nodes.len()]
                    .name
                    .clone();
                Command::new(vigil)
                    .args(["fleet", "move", "trader", &to, "--no-wait", "-c"])
                    .arg(nodes[h].dir.join("vigil.toml"))
                    .stdout(Stdio::null())
                    .status()?;
            }
        }
        let moved = wait_until(ttl * 4 + Duration::from_secs(5), || {
            holder(url).is_some_and(|(_, e)| e > epoch && acts_of(url, e) > 0)
        });
        match moved {
            Some(d) => failovers.entry(fault).or_default().push(d.as_secs_f64()),
            None => missed.push(json!({"round": round, "fault": fault})),
        }
        // Restored: vigil started again, the cut healed.
        match fault {
            "node killed" | "vigil killed" => nodes[h].start(vigil)?,
            "cut from postgres" => {
                let addr = nodes[h].proxy.addr.clone();
                std::thread::sleep(Duration::from_millis(200));
                nodes[h].proxy = Proxy::start(&addr, &nodes[h].target)?;
            }
            _ => {}
        }
        // Nothing may move without a fault: a change of holder now is a flap.
        let settled = holder(url);
        std::thread::sleep(ttl + Duration::from_secs(1));
        if holder(url) != settled {
            flaps += 1;
        }
    }
    let stats = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        json!({
            "n": v.len(),
            "median_s": super::percentile(&v, 0.5),
            "p90_s": super::percentile(&v, 0.9),
            "max_s": v.last().copied().unwrap_or_default(),
        })
    };
    Ok(json!({
        "rounds": rounds,
        "seed": seed,
        "lease_ttl_s": ttl_s,
        "faults": faults,
        "failover": failovers.iter().map(|(k, v)| (k.to_string(), stats(v))).collect::<serde_json::Map<_, _>>(),
        "rounds_without_failover": missed,
        "flaps": flaps,
    }))
}

/// Over every order: epochs in order of their first order, each one's last order before the
/// next one's first; the worst gap (negative: an overlap).
fn overlap(url: &str) -> Result<Value> {
    let rows = psql(
        url,
        "SELECT epoch, count(DISTINCT node), \
         (extract(epoch FROM min(at)) * 1000)::bigint, (extract(epoch FROM max(at)) * 1000)::bigint \
         FROM acts GROUP BY epoch ORDER BY min(at)",
    )?;
    let runs: Vec<Vec<i64>> = rows
        .lines()
        .map(|l| l.split('|').filter_map(|c| c.parse().ok()).collect())
        .collect();
    let mut overlaps = Vec::new();
    let mut min_gap_ms = i64::MAX;
    for pair in runs.windows(2) {
        let gap = pair[1][2] - pair[0][3];
        min_gap_ms = min_gap_ms.min(gap);
        if gap <= 0 || pair[1][0] <= pair[0][0] {
            overlaps.push(json!({"epoch": pair[0][0], "next": pair[1][0], "gap_ms": gap}));
        }
    }
    let two_nodes = runs.iter().filter(|r| r[1] > 1).count();
    let orders = psql(url, "SELECT count(*) FROM acts")?;
    Ok(json!({
        "epochs": runs.len(),
        "orders": orders.parse::<i64>().unwrap_or_default(),
        "overlapping_runs": overlaps,
        "epochs_on_two_nodes": two_nodes,
        "smallest_gap_between_runs_ms": min_gap_ms,
    }))
}

/// `--agents N` exclusive agents on one node: how many statements the node's cluster task
/// runs per renewal period once they are all running (the database's own count of commits),
/// and vigil's CPU meanwhile.
pub fn renewals(vigil: &Path, agents: usize, seconds: u64, pg: &str) -> Result<Value> {
    let dir = super::scratch("cluster-renewals");
    std::fs::create_dir_all(&dir)?;
    let (db, url) = scratch_db(pg, "renewals")?;
    std::fs::write(dir.join("cluster-url"), &url)?;
    let ttl_s = 9;
    let mut config = format!(
        "[vigil]\nnode = \"n1\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [cluster]\nurl_file = \"cluster-url\"\nlease_ttl = \"{ttl_s}s\"\n\
         [agents.a]\ncommand = [\"sleep\", \"3600\"]\nplacement = \"exclusive\"\ninstances = ["
    );
    config += &(0..agents)
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    config += "]\n";
    std::fs::write(dir.join("vigil.toml"), config)?;
    let mut node = Node::alone(&dir)?;
    node.start(vigil)?;
    let all_held = || {
        psql(
            &url,
            "SELECT count(*) FROM vigil_leases WHERE holder = 'n1' AND expires_at > now()",
        )
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
            == Some(agents)
    };
    let result = (|| -> Result<Value> {
        let took = wait_until(Duration::from_secs(120), all_held).context("leases not all held")?;
        // Let the starts settle (published once), then count.
        std::thread::sleep(Duration::from_secs(ttl_s));
        let commits = || -> Result<i64> {
            Ok(psql(
                &url,
                &format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}'"),
            )?
            .parse()?)
        };
        let pid = node.child.as_ref().context("vigil")?.id();
        let (cpu0, c0, t0) = (super::usage(pid)?.1, commits()?, Instant::now());
        std::thread::sleep(Duration::from_secs(seconds));
        let (cpu1, c1, elapsed) = (super::usage(pid)?.1, commits()?, t0.elapsed());
        // Our own two reads are commits too (pg_stat_database counts each statement).
        let statements = (c1 - c0 - 1).max(0) as f64;
        let periods = elapsed.as_secs_f64() / (ttl_s as f64 / 3.0);
        let cpu = (cpu1 - cpu0) as f64 / super::clock_ticks() / elapsed.as_secs_f64() * 100.0;
        Ok(json!({
            "agents": agents,
            "lease_ttl_s": ttl_s,
            "all_leases_held_after_s": took.as_secs_f64(),
            "renewal_periods": periods,
            "statements_per_period": statements / periods,
            "vigil_cpu_percent": cpu,
            "all_still_held": all_held(),
        }))
    })();
    node.stop();
    let _ = psql(pg, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    if let Ok(r) = &result {
        println!(
            "{agents} exclusive agents on one node, lease_ttl {ttl_s}s: all leases held after {:.1} s; \
             {:.2} statements per renewal period; vigil CPU {:.2}% of a core; all still held: {}",
            r["all_leases_held_after_s"].as_f64().unwrap_or_default(),
            r["statements_per_period"].as_f64().unwrap_or_default(),
            r["vigil_cpu_percent"].as_f64().unwrap_or_default(),
            r["all_still_held"]
        );
    }
    result
}

/// The journal's mirror catching up: a journal of `records` records (as an outage leaves
/// it), then vigil started with `[cluster]`: how fast they reach PostgreSQL, and then a
/// restart of the mirror copies nothing twice.
pub fn mirror(vigil: &Path, records: usize, pg: &str) -> Result<Value> {
    let dir = super::scratch("cluster-mirror");
    std::fs::create_dir_all(dir.join(".vigil"))?;
    let (db, url) = scratch_db(pg, "mirror")?;
    std::fs::write(dir.join("cluster-url"), &url)?;
    std::fs::write(
        dir.join("vigil.toml"),
        "[vigil]\nnode = \"n1\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [cluster]\nurl_file = \"cluster-url\"\n[agents.a]\ncommand = [\"sleep\", \"3600\"]\n",
    )?;
    // Records as vigil writes them, of a typical size.
    let mut journal = String::with_capacity(records * 200);
    let t0 = chrono::Utc::now() - chrono::Duration::hours(1);
    for i in 0..records {
        let ts = (t0 + chrono::Duration::milliseconds(i as i64)).format("%Y-%m-%dT%H:%M:%S%.3fZ");
        journal += &format!(
            "{{\"ts\":\"{ts}\",\"agent\":\"trader@BTC_{}\",\"action\":\"restart\",\"reason\":\"restarting after exit: exited with code 1 (run {i})\",\"success\":true,\"error\":null,\"metadata\":{{\"cause\":\"exit\"}}}}\n",
            i % 50
        );
    }
    std::fs::write(dir.join(".vigil/audit.jsonl"), journal)?;
    let mut node = Node::alone(&dir)?;
    let count = || -> i64 {
        psql(&url, "SELECT count(*) FROM vigil_journal")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let result = (|| -> Result<Value> {
        let started = Instant::now();
        node.start(vigil)?;
        // The backlog plus vigil's own first records.
        let took = wait_until(Duration::from_secs(300), || count() >= records as i64)
            .context("the mirror did not catch up within 5 minutes")?;
        let copied = count();
        node.stop();
        let before = count();
        node.start(vigil)?;
        std::thread::sleep(Duration::from_secs(3));
        let after = count();
        Ok(json!({
            "records": records,
            "caught_up_s": took.as_secs_f64(),
            "since_vigil_start_s": started.elapsed().as_secs_f64(),
            "records_per_s": copied as f64 / took.as_secs_f64(),
            "added_by_a_restart": after - before,
        }))
    })();
    node.stop();
    let _ = psql(pg, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    if let Ok(r) = &result {
        println!(
            "mirror: {records} journal records copied to PostgreSQL in {:.2} s ({:.0} records/s); \
             after a restart of vigil, {} more rows (its own new records only)",
            r["caught_up_s"].as_f64().unwrap_or_default(),
            r["records_per_s"].as_f64().unwrap_or_default(),
            r["added_by_a_restart"]
        );
    }
    result
}

/// A database of its own for a run on `pg`: its name and URL.
pub fn scratch_db(pg: &str, what: &str) -> Result<(String, String)> {
    let db = format!("vigil_bench_{what}_{}", std::process::id());
    psql(pg, &format!("CREATE DATABASE {db}"))?;
    let url = format!(
        "{}/{db}",
        pg.rsplit_once('/').context("a URL with a database")?.0
    );
    Ok((db, url))
}
