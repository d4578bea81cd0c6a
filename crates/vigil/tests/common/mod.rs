//! Running the real `vigil` binary against real processes, with bounded waits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod ollama;
pub mod sink;

pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// A scratch directory with a `vigil.toml`, and the vigil running it.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// Set for `vigil run` and every `vigil` command of this fleet.
    pub env: Vec<(String, String)>,
    /// `vigil run` runs as `WRAP… vigil run …` (inside a container: `nsenter -t PID -a`); the
    /// wrapper must exec or wait for vigil, and pass its exit on.
    pub wrap: Vec<String>,
}

/// Tests run in parallel: each vigil's API takes a free port (written to `.vigil/api.addr`)
/// unless the test configures `[api]` itself.
fn with_free_port(config: &str) -> String {
    if config.contains("[api]") {
        config.to_string()
    } else {
        format!("{config}\n[api]\nlisten = \"127.0.0.1:0\"\n")
    }
}

impl Fleet {
    pub fn new(config: &str) -> Fleet {
        Fleet::in_dir(tempfile::tempdir().expect("tempdir"), config)
    }

    /// A fleet whose scratch dir is made in `parent` (a dir shared with a container).
    pub fn new_in(parent: &Path, config: &str) -> Fleet {
        Fleet::in_dir(tempfile::tempdir_in(parent).expect("tempdir"), config)
    }

    fn in_dir(dir: tempfile::TempDir, config: &str) -> Fleet {
        std::fs::write(dir.path().join("vigil.toml"), with_free_port(config))
            .expect("write config");
        Fleet {
            dir,
            child: None,
            env: Vec::new(),
            wrap: Vec::new(),
        }
    }

    /// `vigil run …`, wrapped when the fleet says so.
    fn run_command(&self) -> Command {
        let mut c = match self.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(VIGIL);
                c
            }
            None => Command::new(VIGIL),
        };
        c.current_dir(self.dir.path());
        c
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("vigil.toml")
    }

    pub fn state(&self) -> PathBuf {
        self.path(".vigil")
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config(), with_free_port(config)).expect("write config");
    }

    /// `127.0.0.1:PORT` of the running vigil's API.
    pub fn api_addr(&self) -> String {
        read(&self.state().join("api.addr")).trim().to_string()
    }

    /// One HTTP request to the running vigil's API: (status, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        http(&self.api_addr(), method, path, headers, body)
    }

    /// `GET /status/NAME`: one agent's status.
    pub fn status(&self, name: &str) -> Value {
        self.api("GET", &format!("/status/{name}"), "").1
    }

    /// `http` with the body parsed as JSON (every API answer is JSON).
    /// Changes are sent as JSON, as the CLI and the dashboard send them.
    pub fn api(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let json = [("Content-Type", "application/json")];
        let headers: &[(&str, &str)] = if method == "POST" { &json } else { &[] };
        let (code, text) = self.http(method, path, headers, body);
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (code, json)
    }

    /// A positive sign that vigil has handled everything that happened before this call: its
    /// loop answers `/health`'s ping only after the inputs already waiting for it. Tests that
    /// assert that something did *not* happen call this first.
    pub fn settled(&self) {
        let (code, body) = self.api("GET", "/health", "");
        assert!(
            code == 200 || body["status"] == "degraded",
            "vigil's loop did not answer: {body}"
        );
    }

    /// The saved state (`state.jsonl`: the last line for each agent wins).
    pub fn saved_state(&self) -> serde_json::Map<String, Value> {
        let mut state = serde_json::Map::new();
        for line in read(&self.state().join("state.jsonl")).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let agent = v["agent"].as_str().unwrap_or_default().to_string();
            match v.get("state") {
                Some(s) => state.insert(agent, s.clone()),
                None => state.remove(&agent),
            };
        }
        state
    }

    /// Start `vigil run` without waiting for anything (for a vigil whose state dir is not the
    /// default one, or that is expected to fail).
    ///
    /// Every vigil runs in its own scratch dir, so its agents without `cwd` do too: tests run
    /// in parallel, and the same command in the same directory under two vigils is a copy
    /// (the second is not started: see the README's "Agents started elsewhere").
    pub fn launch(&mut self) {
        let log = std::fs::File::create(self.path("vigil.out")).unwrap();
        let child = self
            .run_command()
            .args(["run", "-c"])
            .arg(self.config())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn vigil");
        self.child = Some(child);
    }

    /// Start `vigil run` and wait until its start is in the journal.
    pub fn start(&mut self) {
        let n = self.records(Some("vigil_start")).len();
        let log = std::fs::File::create(self.path("vigil.out")).unwrap();
        let child = self
            .run_command()
            .arg("run")
            .arg("-c")
            .arg(self.config())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("VIGIL_LOG", "debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn vigil");
        self.child = Some(child);
        self.wait_for(
            &format!("vigil start #{}", n + 1),
            Duration::from_secs(10),
            |f| f.records(Some("vigil_start")).len() > n,
        );
    }

    /// vigil's pid (when wrapped, the wrapper's child's).
    pub fn pid(&self) -> i32 {
        self.vigil_pid().expect("the wrapper started no vigil")
    }

    fn vigil_pid(&self) -> Option<i32> {
        let pid = self.child.as_ref()?.id() as i32;
        if self.wrap.is_empty() {
            return Some(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            if let Some(child) = children.split_whitespace().next() {
                return child.parse().ok();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe_kill(self.pid(), sig);
    }

    /// SIGTERM vigil and wait for it to exit; returns its exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal(15);
        self.wait_exit(Duration::from_secs(20))
    }

    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("vigil did not exit within {limit:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// vigil's own log (stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.path("vigil.out")).unwrap_or_default()
    }

    /// Journal records, optionally of one action.
    pub fn records(&self, action: Option<&str>) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state().join("audit.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| action.is_none_or(|a| r["action"] == a))
            .collect()
    }

    pub fn records_of(&self, agent: &str, action: &str) -> Vec<Value> {
        self.records(Some(action))
            .into_iter()
            .filter(|r| r["agent"] == agent)
            .collect()
    }

    /// Poll until `cond` holds; panic with vigil's log after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Fleet) -> bool) {
        let deadline = Instant::now() + limit;
        while !cond(self) {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- vigil output ---\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run a vigil subcommand against this fleet.
    pub fn vigil(&self, args: &[&str]) -> Output {
        Command::new(VIGIL)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run vigil")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.wrap.is_empty()
            && let Some(pid) = self.vigil_pid()
        {
            unsafe_kill(pid, 15);
        }
        if let Some(mut child) = self.child.take() {
            unsafe_kill(child.id() as i32, 15);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn unsafe_kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Pids of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmd.contains(marker) && !zombie {
            out.push(pid);
        }
    }
    out
}

pub fn record_time(r: &Value) -> std::time::SystemTime {
    humantime::parse_rfc3339_weak(r["ts"].as_str().unwrap()).unwrap()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The value of a variable a test needs, or a panic that says how to provide it. Tests that
/// call this are `#[ignore]`d (`cargo test` lists them as ignored; `.ci/run` runs them with
/// `--include-ignored`), so a missing service fails loudly instead of passing silently.
pub fn required_env(var: &str, what: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("this test needs {what}: set {var} (DEVELOPERS.md says how; `.ci/run` does)")
    })
}

/// `VIGIL_TEST_POSTGRES_URL`.
pub fn postgres_url() -> String {
    required_env("VIGIL_TEST_POSTGRES_URL", "PostgreSQL")
}

/// `VIGIL_TEST_REDIS_URL`.
pub fn redis_url() -> String {
    required_env("VIGIL_TEST_REDIS_URL", "Redis")
}

/// host:port of a URL like `postgres://user@127.0.0.1:5432/db`.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_string()
}

/// Replace host:port in a URL.
pub fn via(url: &str, host_port_: &str) -> String {
    url.replacen(&host_port(url), host_port_, 1)
}

/// A TCP proxy in front of a real server. Stopping it is, for its clients, the server going
/// away: open connections break and new ones are refused.
pub struct Proxy {
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        Proxy::start_at("127.0.0.1:0", target)
    }

    /// On a given address (the server coming back where it was).
    pub fn start_at(addr: &str, target: &str) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (stop2, conns2, target) = (stop.clone(), conns.clone(), target.to_string());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                conns2
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, stop, conns }
    }

    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A unique name for tables, keys and files of one test.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A minimal HTTP/1.1 client (one request per connection), so tests see exactly what a
/// user's curl would: only the headers given (and `Host: ADDR` unless one is given).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (code, _, body) = http_response(addr, method, path, headers, body);
    (code, body)
}

/// `http`, with the response's head (status line and headers) too.
pub fn http_response(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (code, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the first sample whose line starts with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
