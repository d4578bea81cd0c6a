//! The demo's terminal view: one line per step, `[mm:ss] agent  step  what`, coloured when
//! stdout is a terminal.

use std::io::IsTerminal;
use std::time::Instant;

pub struct View {
    started: Instant,
    color: bool,
}

impl View {
    pub fn new() -> View {
        View {
            started: Instant::now(),
            color: std::io::stdout().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn clock(&self) -> String {
        let s = self.started.elapsed().as_secs();
        format!("[{:02}:{:02}]", s / 60, s % 60)
    }

    /// A step in a fault's life (or another record worth seeing).
    pub fn line(&self, agent: &str, step: &str, what: &str) {
        let code = match step {
            "fault" => "1;35",
            "detected" => "1;33",
            "diagnosed" => "36",
            "restarted" | "backoff" => "34",
            "healed" => "1;32",
            "escalated" | "llm_error" => "1;31",
            _ => "0",
        };
        let what: String = what.chars().take(150).collect();
        println!(
            "{} {:<16} {} {what}",
            self.clock(),
            agent,
            self.paint(code, &format!("{step:<10}"))
        );
    }

    /// A message from the demo itself.
    pub fn say(&self, what: &str) {
        println!("{} {}", self.clock(), self.paint("1", what));
    }

    pub fn bold(&self, what: &str) -> String {
        self.paint("1", what)
    }
}
