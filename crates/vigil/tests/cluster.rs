//! Several vigil nodes sharing one real PostgreSQL: an exclusive agent runs on one node at a
//! time, fails over when its node dies or is cut from the database, never runs twice, and
//! does not move back when the cut heals.
//!
//! Each node runs in a network namespace of its own (`ip netns`, a veth pair to the host) and
//! reaches the database over that link: a cut is the link going down, a dead node is every
//! process of its namespace killed. The agent is a Python bot using the real client: before
//! each "order" it asks `vigil_agent.fence_ok()`, and records the order in PostgreSQL (over a
//! Unix socket, so a cut node's bot stays on the record) with its fencing epoch and the
//! database's clock — the one clock every node shares. No two epochs' orders may interleave.
//! (Needs root, for the namespaces; CI runs them.)

mod common;

use std::time::{Duration, Instant};

use common::{Fleet, Proxy, postgres_url, required_env, unique};
use serde_json::Value;

const TTL_S: u64 = 3;

/// A bot that "trades" every 50 ms while its lease lets it, recording each order.
const BOT: &str = include_str!("../../vigil-bench/src/cluster_bot.py");

/// A database of its own for one test (the cluster's tables and the bot's orders).
struct Db {
    admin: String,
    name: String,
    url: String,
    /// A Unix socket forwarded to PostgreSQL, for the bots inside the nodes' namespaces.
    sock: tempfile::TempDir,
}

impl Db {
    fn new() -> Db {
        let admin = postgres_url();
        let name = unique("vigil_cluster");
        sql(&admin, &format!("CREATE DATABASE {name}"));
        let url = with_db(&admin, &name);
        sql(
            &url,
            "CREATE TABLE acts (epoch bigint NOT NULL, node text NOT NULL, at timestamptz NOT NULL)",
        );
        let sock = tempfile::tempdir().unwrap();
        forward_unix(&sock.path().join(".s.PGSQL.5432"), common::host_port(&url));
        Db {
            admin,
            name,
            url,
            sock,
        }
    }

    /// The database over the Unix socket (as libpq names one: its directory).
    fn socket_url(&self) -> String {
        let user = self
            .url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map_or("postgres", |(user, _)| user);
        format!(
            "postgresql://{user}@/{}?host={}",
            self.name,
            self.sock.path().display()
        )
    }

    /// (holder, epoch) of the trader's lease, if anyone holds it unexpired (none before the
    /// first vigil made the tables).
    fn holder(&self) -> Option<(String, i64)> {
        try_fetch(
            &self.url,
            "SELECT holder, epoch FROM vigil_leases \
             WHERE agent = 'trader' AND holder IS NOT NULL AND expires_at > now()",
        )
        .ok()?
        .into_iter()
        .next()
    }

    /// Epochs that acted, in order: (epoch, node, first order, last order), in ms since 1970.
    fn runs(&self) -> Vec<(i64, String, i64, i64)> {
        let nodes: Vec<(i64, i64)> = fetch(
            &self.url,
            "SELECT epoch, count(DISTINCT node) FROM acts GROUP BY epoch",
        );
        assert!(
            nodes.iter().all(|(_, n)| *n == 1),
            "one epoch acted on two nodes: {nodes:?}"
        );
        fetch(
            &self.url,
            "SELECT epoch, min(node), (extract(epoch FROM min(at)) * 1000)::bigint, \
             (extract(epoch FROM max(at)) * 1000)::bigint FROM acts GROUP BY epoch ORDER BY min(at)",
        )
    }

    /// No two runs' orders interleave: each epoch's last order is before the next one's first.
    fn assert_never_twice(&self) -> Vec<(i64, String, i64, i64)> {
        let runs = self.runs();
        for pair in runs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.0 < b.0,
                "epochs must grow from one run to the next: {runs:?}"
            );
            assert!(
                a.3 < b.2,
                "epoch {} ({}) still acted {} ms after epoch {} ({}) began: {runs:?}",
                a.0,
                a.1,
                a.3 - b.2,
                b.0,
                b.1
            );
        }
        runs
    }

    fn acts_of(&self, epoch: i64) -> i64 {
        let n: Vec<(i64,)> = fetch(
            &self.url,
            &format!("SELECT count(*) FROM acts WHERE epoch = {epoch}"),
        );
        n[0].0
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            sql(
                &self.admin,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            )
        });
    }
}

/// Accepts on a Unix socket and forwards each connection to `target` (TCP), for good.
fn forward_unix(path: &std::path::Path, target: String) {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind the socket");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Both);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{db}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sql(url: &str, statement: &str) {
    runtime().block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .expect(statement);
    });
}

/// Rows of a statement, typed.
fn fetch<T>(url: &str, statement: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    try_fetch(url, statement).expect(statement)
}

fn try_fetch<T>(url: &str, statement: &str) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    runtime().block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(statement.to_string()))
            .fetch_all(&mut conn)
            .await
    })
}

/// One vigil node in a network namespace of its own, joined to the host by a veth pair: it
/// reaches the cluster's database over that link (through a proxy on the host's end), so a
/// cut is the link going down — packets dropped, no refusal, as in a real partition. Its API
/// listens on its end of the link. The bot inside reaches PostgreSQL over a Unix socket (the
/// file system is shared), so what it does stays on the record even while its node is cut.
struct Node {
    name: String,
    fleet: Fleet,
    ns: Netns,
    _proxy: Proxy,
}

/// A network namespace and its veth pair (removed on drop, with everything still in it).
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {} (these tests need root, for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Netns {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let k = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // Interface names are at most 15 bytes.
        let tag = format!("{}{k}", pid % 100_000);
        let (name, host_if, ns_if) = (
            format!("vigil-t{tag}"),
            format!("vgh{tag}"),
            format!("vgn{tag}"),
        );
        let net = format!("10.{}.{}", 100 + pid % 100, k % 250);
        let (host_ip, ns_ip) = (format!("{net}.1"), format!("{net}.2"));
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let cidr = format!("{ns_ip}/24");
        for cmd in [
            ["addr", "add", cidr.as_str(), "dev", ns_if.as_str()].as_slice(),
            &["link", "set", ns_if.as_str(), "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut args = vec!["netns", "exec", name.as_str(), "ip"];
            args.extend_from_slice(cmd);
            ip(&args);
        }
        Netns {
            name,
            host_if,
            host_ip,
            ns_ip,
        }
    }

    fn kill_all(&self) {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .expect("run ip");
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            common::unsafe_kill(pid.parse().unwrap(), 9);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // Gone with the namespace, as a rule; this is for a namespace that could not be made.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Node {
    fn new(name: &str, db: &Db, python: &str, nodes: &[&str]) -> Node {
        let ns = Netns::new();
        let proxy = Proxy::start_at(&format!("{}:0", ns.host_ip), &common::host_port(&db.url));
        let mut fleet = Fleet::new(&format!(
            r#"
[vigil]
node = "{name}"

[api]
listen = "{api}:0"
token = "a-token-for-the-cluster-tests"

[cluster]
url_file = "cluster-url"
lease_ttl = "{TTL_S}s"

[agents.trader]
command = ["{python}", "bot.py"]
placement = "exclusive"
nodes = {nodes:?}
env = {{ ACTS_URL = "{acts}" }}
"#,
            api = ns.ns_ip,
            acts = db.socket_url(),
        ));
        std::fs::write(fleet.path("cluster-url"), common::via(&db.url, &proxy.addr)).unwrap();
        // The same command on every node (`bot.py` in the node's dir): a definition of its
        // own would be refused the lease.
        std::fs::write(fleet.path("bot.py"), BOT).unwrap();
        // `setsid --fork --wait`: vigil is the wrapper's child, as `Fleet` expects of a wrapper.
        fleet.wrap = [
            "ip", "netns", "exec", &ns.name, "setsid", "--fork", "--wait",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Node {
            name: name.to_string(),
            fleet,
            ns,
            _proxy: proxy,
        }
    }

    /// `vigil status trader` from inside the node (its API is on its end of the link, which a
    /// cut takes down).
    fn status(&self) -> Value {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                common::VIGIL,
                "status",
                "trader",
                "--json",
            ])
            .current_dir(self.fleet.dir.path())
            .output()
            .expect("run vigil status");
        let all: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        all["agents"][0].clone()
    }

    fn state(&self) -> String {
        self.status()["state"].as_str().unwrap_or("").to_string()
    }

    /// The link to the host goes down: the node's packets are dropped, as in a partition.
    fn cut(&mut self) {
        ip(&["link", "set", &self.ns.host_if, "down"]);
    }

    fn heal(&mut self) {
        ip(&["link", "set", &self.ns.host_if, "up"]);
    }

    /// kill -9 of vigil, and — the host died — of every process of the node.
    fn kill9(&mut self, with_agent: bool) -> Instant {
        let at = Instant::now();
        if with_agent {
            self.ns.kill_all();
        } else {
            self.fleet.signal(9);
        }
        let _ = self.fleet.wait_exit(Duration::from_secs(5));
        at
    }
}

/// A node for each name, every one a candidate, in that order of preference.
fn nodes(db: &Db, python: &str, names: &[&str]) -> Vec<Node> {
    names
        .iter()
        .map(|n| Node::new(n, db, python, names))
        .collect()
}

fn python() -> String {
    required_env(
        "VIGIL_TEST_PYTHON",
        "a Python with the vigil-agent client (.ci/python-setup)",
    )
}

fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nodes started, the trader running on one of them and acting: that node's index.
fn running(nodes: &mut [Node], db: &Db) -> usize {
    for n in nodes.iter_mut() {
        n.fleet.start();
    }
    wait("a holder", Duration::from_secs(20), || {
        db.holder().is_some()
    });
    let (holder, epoch) = db.holder().unwrap();
    wait("its first orders", Duration::from_secs(20), || {
        db.acts_of(epoch) > 3
    });
    nodes.iter().position(|n| n.name == holder).unwrap()
}

#[test]
#[ignore = "needs PostgreSQL and the Python client: set VIGIL_TEST_POSTGRES_URL and VIGIL_TEST_PYTHON"]
fn a_dead_node_is_replaced_within_the_lease_and_the_agent_never_runs_twice() {
    let (db, py) = (Db::new(), python());
    let mut nodes = nodes(&db, &py, &["n1", "n2", "n3"]);
    let h = running(&mut nodes, &db);
    assert_eq!(nodes[h].name, "n1", "the preferred node takes it first");
    let (_, epoch) = db.holder().unwrap();
    for (i, n) in nodes.iter().enumerate() {
        let want = if i == h { "running" } else { "standby" };
        assert_eq!(n.state(), want, "{}: {}", n.name, n.status());
    }
    assert_eq!(nodes[h].status()["lease"]["epoch"], epoch);

    let killed = nodes[h].kill9(true);
    wait(
        "another node's orders",
        Duration::from_secs(TTL_S + 10),
        || {
            db.holder()
                .is_some_and(|(_, e)| e > epoch && db.acts_of(e) > 0)
        },
    );
    let failover = killed.elapsed();
    let (new_holder, new_epoch) = db.holder().unwrap();
    assert_eq!(new_holder, "n2", "the next node in order of preference");
    assert_eq!(new_epoch, epoch + 1);
    // Measured by `vigil-bench cluster`; here only a bound that catches a broken failover.
    assert!(
        failover < Duration::from_secs(TTL_S + 5),
        "failover took {failover:?}"
    );
    let runs = db.assert_never_twice();
    assert_eq!(runs.len(), 2, "{runs:?}");

    // The dead node comes back: it stays on standby, nothing moves back.
    nodes[h].fleet.start();
    std::thread::sleep(Duration::from_secs(2 * TTL_S));
    assert_eq!(nodes[h].state(), "standby", "{}", nodes[h].status());
    assert_eq!(db.holder(), Some(("n2".into(), new_epoch)));
    assert!(
        nodes[h]
            .fleet
            .records_of("trader", "standby")
            .last()
            .is_some_and(|r| r["reason"].as_str().unwrap().contains("n2")),
        "{:?}",
        nodes[h].fleet.records_of("trader", "standby")
    );
    db.assert_never_twice();
}

#[test]
#[ignore = "needs PostgreSQL and the Python client: set VIGIL_TEST_POSTGRES_URL and VIGIL_TEST_PYTHON"]
fn a_node_cut_from_postgres_stops_its_agent_before_another_starts_it_and_nothing_flaps_after() {
    let (db, py) = (Db::new(), python());
    let mut nodes = nodes(&db, &py, &["n1", "n2"]);
    let h = running(&mut nodes, &db);
    let (_, epoch) = db.holder().unwrap();
    let agent_pid = nodes[h].status()["pid"].as_i64().unwrap();

    nodes[h].cut();
    wait(
        "the other node's orders",
        Duration::from_secs(TTL_S + 10),
        || {
            db.holder()
                .is_some_and(|(_, e)| e > epoch && db.acts_of(e) > 0)
        },
    );
    // The cut node stopped its agent itself, on the record, before the other one started.
    let cut = &nodes[h].fleet;
    let fenced = cut.records_of("trader", "fenced");
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert!(
        fenced[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not renewed in time"),
        "{}",
        fenced[0]
    );
    assert_eq!(cut.records_of("trader", "lease_lost").len(), 1);
    assert!(!std::path::Path::new(&format!("/proc/{agent_pid}")).exists());
    let other = &nodes[1 - h].fleet;
    let acquired = other.records_of("trader", "lease_acquired");
    assert!(
        common::record_time(&fenced[0]) < common::record_time(acquired.last().unwrap()),
        "fenced at {}, the other took it at {}",
        fenced[0]["ts"],
        acquired.last().unwrap()["ts"]
    );
    assert_eq!(nodes[h].state(), "standby");
    db.assert_never_twice();

    // The cut heals: nothing moves back, nothing flaps.
    let (holder, new_epoch) = db.holder().unwrap();
    nodes[h].heal();
    wait(
        "the healed node's renewals",
        Duration::from_secs(10),
        || {
            common::metric(
                &common::http(&nodes[h].fleet.api_addr(), "GET", "/metrics", &[], "").1,
                "vigil_cluster_up",
            ) == Some(1.0)
        },
    );
    std::thread::sleep(Duration::from_secs(3 * TTL_S));
    assert_eq!(db.holder(), Some((holder, new_epoch)));
    assert_eq!(
        nodes[h].fleet.records_of("trader", "lease_acquired").len(),
        1
    );
    assert_eq!(nodes[1 - h].fleet.records_of("trader", "fenced").len(), 0);
    assert_eq!(nodes[h].state(), "standby");
    assert_eq!(db.assert_never_twice().len(), 2);

    // Each node's journal is in PostgreSQL, the cut node's too once it healed: every record
    // once, none missing (the mirror caught up, and copying again duplicated nothing).
    for n in &nodes {
        wait(
            &format!("{}'s journal mirrored", n.name),
            Duration::from_secs(15),
            || {
                let mirrored: Vec<(i64,)> = fetch(
                    &db.url,
                    &format!(
                        "SELECT count(*) FROM vigil_journal WHERE node = '{}'",
                        n.name
                    ),
                );
                mirrored[0].0 as usize == n.fleet.records(None).len()
            },
        );
    }
    let out = nodes[1 - h]
        .fleet
        .vigil(&["fleet", "audit", "--action", "fenced", "--json"]);
    let fenced: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert_eq!(fenced[0]["node"], nodes[h].name.as_str());
    assert_eq!(fenced[0]["agent"], "trader");
}

#[test]
#[ignore = "needs PostgreSQL and the Python client: set VIGIL_TEST_POSTGRES_URL and VIGIL_TEST_PYTHON"]
fn an_agent_left_by_a_killed_vigil_stops_acting_on_its_own_and_is_stopped_when_vigil_returns() {
    let (db, py) = (Db::new(), python());
    let mut nodes = nodes(&db, &py, &["n1", "n2"]);
    let h = running(&mut nodes, &db);
    let (_, epoch) = db.holder().unwrap();
    let orphan = nodes[h].status()["pid"].as_i64().unwrap();
    // Only vigil dies: its agent lives on (by design), and nobody can stop it.
    nodes[h].kill9(false);
    wait(
        "the other node's orders",
        Duration::from_secs(TTL_S + 10),
        || {
            db.holder()
                .is_some_and(|(_, e)| e > epoch && db.acts_of(e) > 0)
        },
    );
    assert!(
        std::path::Path::new(&format!("/proc/{orphan}")).exists(),
        "the agent outlives its vigil"
    );
    // It checks its lease before each order: it stopped acting when the lease lapsed.
    std::thread::sleep(Duration::from_secs(1));
    db.assert_never_twice();
    let stale = db.acts_of(epoch);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(db.acts_of(epoch), stale, "the orphan still acts");

    // Its vigil comes back: it takes the orphan over and stops it at once — its lease file
    // says the lease lapsed while vigil was away — before the cluster is even asked.
    nodes[h].fleet.start();
    wait("the orphan stopped", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{orphan}")).exists()
    });
    let fenced = nodes[h].fleet.records_of("trader", "fenced");
    assert!(
        fenced.last().is_some_and(|r| r["reason"]
            .as_str()
            .unwrap()
            .contains("not known valid any more when vigil started")),
        "{fenced:?}"
    );
    assert_eq!(nodes[h].state(), "standby");
    db.assert_never_twice();
}

#[test]
#[ignore = "needs PostgreSQL and the Python client: set VIGIL_TEST_POSTGRES_URL and VIGIL_TEST_PYTHON"]
fn fleet_status_shows_every_node_and_a_move_hands_the_agent_over_without_overlap() {
    let (db, py) = (Db::new(), python());
    let mut nodes = nodes(&db, &py, &["n1", "n2"]);
    let h = running(&mut nodes, &db);
    let (holder, epoch) = db.holder().unwrap();
    let other = &nodes[1 - h];
    // Both nodes' agents, as each published them.
    let mut fleet = Value::Null;
    wait(
        "both nodes' agents in the fleet view",
        Duration::from_secs(10),
        || {
            let out = other.fleet.vigil(&["fleet", "status", "--json"]);
            fleet = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let states: Vec<(String, String)> = fleet["agents"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|a| {
                            (
                                a["node"].as_str().unwrap().into(),
                                a["state"].as_str().unwrap().into(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            states.contains(&(holder.clone(), "running".into()))
                && states.contains(&(other.name.clone(), "standby".into()))
        },
    );
    assert_eq!(fleet["nodes"].as_array().unwrap().len(), 2, "{fleet:#}");
    assert!(
        fleet["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["up"] == true)
    );
    let out = other.fleet.vigil(&["fleet", "status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("held, epoch {epoch}")), "{text}");

    // Moved by a person: stopped on one node, then started on the other, never both.
    let out = other.fleet.vigil(&["fleet", "move", "trader", &other.name]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("runs on {} now", other.name)),
        "{said}"
    );
    wait("orders from the new node", Duration::from_secs(10), || {
        db.acts_of(epoch + 1) > 0
    });
    assert_eq!(db.holder(), Some((other.name.clone(), epoch + 1)));
    let lost = nodes[h].fleet.records_of("trader", "lease_lost");
    assert!(
        lost[0]["reason"]
            .as_str()
            .unwrap()
            .contains("moved by a person"),
        "{lost:?}"
    );
    assert_eq!(db.assert_never_twice().len(), 2);
    // A restart from anywhere reaches the node that runs it: a person's, on its record.
    wait(
        "the fleet view to show the move",
        Duration::from_secs(10),
        || {
            let out = other.fleet.vigil(&["fleet", "status", "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            v["agents"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["node"] == other.name.as_str() && a["state"] == "running")
            })
        },
    );
    let out = nodes[h]
        .fleet
        .vigil(&["fleet", "restart", "trader", "--reason", "new keys"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("trader on {}: trader: restarting", other.name)),
        "{said}"
    );
    let restarts = other.fleet.records_of("trader", "restart");
    assert!(
        restarts.last().is_some_and(|r| r["reason"]
            .as_str()
            .unwrap()
            .contains("from vigil fleet: new keys")),
        "{restarts:?}"
    );
    // A node that is up is not forgotten.
    let out = other.fleet.vigil(&["fleet", "forget", &other.name]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is up"));
    // An unknown node is refused, and says so.
    let out = other.fleet.vigil(&["fleet", "move", "trader", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node nowhere"));
}

#[test]
#[ignore = "needs PostgreSQL and the Python client: set VIGIL_TEST_POSTGRES_URL and VIGIL_TEST_PYTHON"]
fn a_second_vigil_with_the_same_node_name_renews_and_runs_nothing() {
    let (db, py) = (Db::new(), python());
    let mut first = vec![Node::new("n1", &db, &py, &["n1"])];
    running(&mut first, &db);
    let (_, epoch) = db.holder().unwrap();
    // A copy-pasted config on another host: the same node name, its own state dir.
    let mut second = Node::new("n1", &db, &py, &["n1"]);
    second.fleet.start();
    second
        .fleet
        .wait_for("its refusal", Duration::from_secs(10), |f| {
            f.output().contains("another vigil is node n1 and is alive")
        });
    std::thread::sleep(Duration::from_secs(TTL_S));
    assert_eq!(second.state(), "standby", "{}", second.status());
    assert!(
        second
            .fleet
            .records_of("trader", "lease_acquired")
            .is_empty()
    );
    assert_eq!(db.holder(), Some(("n1".into(), epoch)));
    assert_eq!(first[0].state(), "running");
    assert_eq!(db.assert_never_twice().len(), 1);
}

#[test]
#[ignore = "needs PostgreSQL and the Python client: set VIGIL_TEST_POSTGRES_URL and VIGIL_TEST_PYTHON"]
fn a_vigil_killed_and_back_within_the_lease_keeps_its_agent_running() {
    let (db, py) = (Db::new(), python());
    let mut nodes = vec![Node::new("n1", &db, &py, &["n1", "n2"])];
    running(&mut nodes, &db);
    let (_, epoch) = db.holder().unwrap();
    let pid = nodes[0].status()["pid"].as_i64().unwrap();
    nodes[0].kill9(false);
    nodes[0].fleet.start();
    std::thread::sleep(Duration::from_secs(2 * TTL_S));
    // The same process, under the same lease: adopted, not fenced, not restarted.
    assert_eq!(nodes[0].status()["pid"].as_i64(), Some(pid));
    assert_eq!(db.holder(), Some(("n1".into(), epoch)));
    assert!(nodes[0].fleet.records_of("trader", "fenced").is_empty());
    assert_eq!(nodes[0].fleet.records_of("trader", "adopted").len(), 1);
    let before = db.acts_of(epoch);
    std::thread::sleep(Duration::from_secs(1));
    assert!(db.acts_of(epoch) > before, "its orders go on");
}
