//! A stand-in for Ollama's native chat API (`POST /api/chat`, as its docs/api.md documents it:
//! `stream: false` gives one JSON object whose `message.content` holds the model's text, and
//! `done_reason` says why it stopped). It answers what the test tells it to, after an optional
//! delay, and keeps every request for the test to inspect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

#[derive(Clone)]
pub struct StandIn {
    pub addr: String,
    state: Arc<Mutex<State>>,
}

struct State {
    answer: String,
    delay: Duration,
    requests: Vec<Value>,
}

impl StandIn {
    /// Serves until the test process ends.
    pub fn start(answer: &str) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            answer: answer.to_string(),
            delay: Duration::ZERO,
            requests: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(conn, &state));
            }
        });
        StandIn { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// A verdict in the answer schema, as a model would write it.
pub fn verdict(category: &str, action: &str, confidence: f64) -> String {
    json!({
        "cause": "the model's reading of the log",
        "category": category,
        "action": action,
        "severity": "critical",
        "explanation": "stand-in answer",
        "confidence": confidence,
    })
    .to_string()
}

fn serve(mut conn: std::net::TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, reply) = if request_line.starts_with("POST /api/chat ") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(request) => {
                let model = request["model"].clone();
                let (answer, delay) = {
                    let mut s = state.lock().unwrap();
                    s.requests.push(request);
                    (s.answer.clone(), s.delay)
                };
                std::thread::sleep(delay);
                (
                    "200 OK",
                    json!({
                        "model": model,
                        "created_at": "2026-11-23T10:00:00Z",
                        "message": {"role": "assistant", "content": answer},
                        "done": true,
                        "done_reason": "stop",
                        "total_duration": 1_000_000,
                    }),
                )
            }
            Err(e) => ("400 Bad Request", json!({"error": e.to_string()})),
        }
    } else {
        ("404 Not Found", json!({"error": "not found"}))
    };
    let reply = reply.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
}
