//! What a notification says: one journal record, told to people.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::audit::Record;
use crate::redact;

/// One journal record for one channel; the outbox keeps it until it is delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Stable for one record and channel: a record routed twice (a replay after a crash)
    /// is recognised.
    pub id: String,
    pub channel: String,
    /// The journal action (`escalated`, `incident_opened`, `test`).
    pub event: String,
    pub agent: Option<String>,
    /// The vigil that sends it (`[vigil] node`).
    pub node: String,
    /// When it happened (the record's time, RFC 3339).
    pub ts: String,
    /// One line: `[fra-1] trader@BTC_USDT escalated`.
    pub title: String,
    pub text: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A stable id for what a record says (FNV-1a over its fields).
pub fn record_id(r: &Record) -> String {
    let parts = [
        r.ts.as_str(),
        r.agent.as_deref().unwrap_or("-"),
        r.action.as_str(),
        r.reason.as_str(),
    ];
    format!("{:016x}", vigil_core::fnv::fnv1a_parts(parts, 0))
}

/// A plain wording of what the action means to someone paged at night.
fn headline(action: &str) -> &str {
    match action {
        "escalated" => "needs a human",
        "rate_limited" => "restart budget exhausted",
        "incident_opened" => "incident opened",
        "incident_resolved" => "incident resolved",
        "runbook_failed" => "runbook failed",
        "runbook_step" => "runbook",
        "vigil_crash" => "vigil's supervision loop crashed",
        "vigil_stalled" => "vigil's supervision loop stalled",
        other => other,
    }
}

impl Message {
    pub fn from_record(r: &Record, channel: &str, node: &str) -> Message {
        let clean = |s: &str| redact::line_with(s, &redact::Secrets::default());
        let subject = r.agent.as_deref().unwrap_or("vigil");
        let mut text = clean(&r.reason);
        if let Some(e) = r.error.as_deref() {
            text.push_str(&format!(" (error: {})", clean(e)));
        }
        Message {
            id: format!("{}-{channel}", record_id(r)),
            channel: channel.to_string(),
            event: r.action.clone(),
            agent: r.agent.clone(),
            node: node.to_string(),
            ts: r.ts.clone(),
            title: format!("[{node}] {subject}: {}", headline(&r.action)),
            text,
            metadata: r.metadata.clone(),
        }
    }

    /// The message `vigil notify test` sends.
    pub fn test(channel: &str, node: &str) -> Message {
        Message {
            id: format!("test-{}", crate::clock::now().wall_ms),
            channel: channel.to_string(),
            event: "test".into(),
            agent: None,
            node: node.to_string(),
            ts: crate::audit::format_ms(crate::clock::now().wall_ms),
            title: format!("[{node}] vigil: test notification"),
            text: format!(
                "This is a test from vigil on {node} (`vigil notify test {channel}`): this channel works."
            ),
            metadata: Map::new(),
        }
    }
}

/// One delivery: a message, or several that waited together (a rate limit, a channel that
/// was down) sent as one digest.
pub struct Delivery<'a> {
    pub messages: &'a [Message],
}

impl Delivery<'_> {
    pub fn title(&self) -> String {
        match self.messages {
            [one] => one.title.clone(),
            many => format!(
                "[{}] vigil: {} notifications",
                many.first().map_or("", |m| m.node.as_str()),
                many.len()
            ),
        }
    }

    /// Plain text: the title, then one paragraph per message.
    pub fn text(&self) -> String {
        match self.messages {
            [one] => format!("{}\n{}", one.title, one.text),
            many => {
                let mut out = self.title();
                for m in many {
                    out.push_str(&format!("\n\n{} ({})\n{}", m.title, m.ts, m.text));
                }
                out
            }
        }
    }
}
