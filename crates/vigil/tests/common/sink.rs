//! Stand-ins for hosted services (`tests/sinks/`), run as real servers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::free_port;

/// A stand-in service: killed when dropped.
pub struct Sink {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Sink {
    pub fn start(python: &str, script: &str, dir: &Path, extra: &[&str]) -> Sink {
        Sink::start_on(free_port(), python, script, dir, extra)
    }

    /// On `port` (a service coming back where it was).
    pub fn start_on(port: u16, python: &str, script: &str, dir: &Path, extra: &[&str]) -> Sink {
        let log = dir.join(format!("sink-{port}.jsonl"));
        let mut child = Command::new(python)
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/sinks")
                    .join(script),
            )
            .arg(port.to_string())
            .arg(&log)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the sink did not start");
        Sink { child, port, log }
    }

    pub fn http(dir: &Path, extra: &[&str]) -> Sink {
        Sink::start("python3", "http_sink.py", dir, extra)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What it received, oldest first.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
