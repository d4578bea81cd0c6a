//! Telling people: journal records routed to notification channels (`[notify.NAME]`).
//!
//! The loop only picks, among the records it has just journaled, those a channel wants (a
//! set lookup) and hands them over. Everything else happens on the `vigil-tell` thread:
//! de-duplication, the durable outbox, rate limits, deliveries and their retries. What was
//! delivered or given up comes back to the loop as `notified` / `notify_failed` records.

pub mod deliver;
pub mod message;
pub mod outbox;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};
use vigil_core::{AuditAction, AuditEntry, records};

use crate::audit::Record;
use crate::config::Channel;
use crate::metrics::Live;
use deliver::{DeliveryError, deliver};
use message::{Delivery, Message, record_id};
use outbox::{Entry, Outbox};

/// Most notifications merged into one delivery.
const DIGEST_MAX: usize = 50;
/// A notification that could not be delivered for this long is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Retries back off from 1 s up to this.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Records that are never routed: they are about notifying (a loop otherwise).
const NEVER: &[AuditAction] = &[AuditAction::Notified, AuditAction::NotifyFailed];

/// Which channels want which records: the loop's side of the notifier.
#[derive(Clone, Debug, Default)]
struct Routes(Vec<(String, HashSet<&'static str>, Vec<String>)>);

impl Routes {
    fn of(channels: &[Channel]) -> Routes {
        Routes(
            channels
                .iter()
                .map(|c| {
                    let events = c
                        .events
                        .iter()
                        .filter(|a| !NEVER.contains(a))
                        .map(|a| a.as_str())
                        .collect();
                    (c.name.clone(), events, c.agents.clone())
                })
                .collect(),
        )
    }

    /// The channels that want `r`: by its action and agent, or because it names the channel
    /// itself (a runbook's `notify` step).
    fn wanted<'a>(&'a self, r: &'a Record) -> impl Iterator<Item = &'a str> + 'a {
        let named = r.metadata.get("notify").and_then(|v| v.as_str());
        self.0
            .iter()
            .filter(move |(name, events, agents)| {
                named == Some(name.as_str())
                    || (events.contains(r.action.as_str()) && agent_matches(agents, r))
            })
            .map(|(name, _, _)| name.as_str())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `agents` names exact agents or templates; empty admits all (and vigil's own records). A
/// record about several agents (an incident's `members`) is theirs.
fn agent_matches(agents: &[String], r: &Record) -> bool {
    if agents.is_empty() {
        return true;
    }
    let one = |agent: &str| agents.iter().any(|a| crate::audit::names(a, agent));
    match r.agent.as_deref() {
        Some(agent) => one(agent),
        None => r
            .metadata
            .get("members")
            .and_then(|m| m.as_array())
            .is_some_and(|m| m.iter().filter_map(|v| v.as_str()).any(one)),
    }
}

enum Input {
    Record {
        record: Record,
        channels: Vec<String>,
    },
    Channels(Vec<Channel>),
}

/// The loop's handle on the notifier thread.
pub struct Notifier {
    routes: Routes,
    tx: mpsc::UnboundedSender<Input>,
}

impl Notifier {
    /// Start the thread: it sends what the outbox still holds and routes the journal's
    /// records it may have missed (vigil killed between a record and its notification).
    pub fn start(
        channels: Vec<Channel>,
        state_dir: &Path,
        node: &str,
        report: mpsc::UnboundedSender<AuditEntry>,
        live: Live,
    ) -> std::io::Result<Notifier> {
        let (tx, rx) = mpsc::unbounded_channel();
        let routes = Routes::of(&channels);
        let worker = Worker {
            outbox: Outbox::new(state_dir),
            journal: state_dir.join("audit.jsonl"),
            node: node.to_string(),
            channels: HashMap::new(),
            report,
            live,
            client: None,
            cursor: None,
            cursor_ids: HashSet::new(),
            unaccepted: VecDeque::new(),
        };
        std::thread::Builder::new()
            .name("vigil-tell".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                rt.block_on(worker.run(channels, rx));
            })?;
        Ok(Notifier { routes, tx })
    }

    /// Records just journaled: those a channel wants are handed over.
    pub fn offer(&self, records: &[Record]) {
        if self.routes.is_empty() {
            return;
        }
        for r in records {
            let channels: Vec<String> = self.routes.wanted(r).map(str::to_string).collect();
            if !channels.is_empty() {
                let _ = self.tx.send(Input::Record {
                    record: r.clone(),
                    channels,
                });
            }
        }
    }

    /// A reload changed `[notify]`.
    pub fn reconfigure(&mut self, channels: Vec<Channel>) {
        self.routes = Routes::of(&channels);
        let _ = self.tx.send(Input::Channels(channels));
    }
}

struct ChannelState {
    config: Channel,
    queue: VecDeque<Entry>,
    /// Deliveries in the last minute.
    sent: VecDeque<Instant>,
    /// When each (event, agent, incident) was last accepted.
    recent: HashMap<String, Instant>,
    /// No delivery before this (backing off after a failure).
    not_before: Instant,
    failures: u32,
    busy: bool,
}

impl ChannelState {
    fn new(config: Channel) -> ChannelState {
        ChannelState {
            config,
            queue: VecDeque::new(),
            sent: VecDeque::new(),
            recent: HashMap::new(),
            not_before: Instant::now(),
            failures: 0,
            busy: false,
        }
    }

    /// When the next delivery may go (`None`: nothing to send, or one is under way).
    fn due(&mut self, now: Instant) -> Option<Instant> {
        if self.busy || self.queue.is_empty() {
            return None;
        }
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        let rate_ok_at = if self.sent.len() >= self.config.max_per_minute as usize {
            self.sent[0] + Duration::from_secs(60)
        } else {
            now
        };
        Some(rate_ok_at.max(self.not_before))
    }
}

type Outcome = (String, Vec<Message>, Result<deliver::Answer, DeliveryError>);

struct Worker {
    outbox: Outbox,
    journal: PathBuf,
    node: String,
    channels: HashMap<String, ChannelState>,
    report: mpsc::UnboundedSender<AuditEntry>,
    live: Live,
    /// Built at the first delivery: its TLS roots cost memory a vigil without channels
    /// need not hold.
    client: Option<reqwest::Client>,
    /// The newest record accepted, and the ids accepted at that time.
    cursor: Option<String>,
    cursor_ids: HashSet<String>,
    /// Accepted in memory while the outbox could not be written (a full disk): retried.
    unaccepted: VecDeque<(Entry, String)>,
}

impl Worker {
    async fn run(mut self, channels: Vec<Channel>, mut rx: mpsc::UnboundedReceiver<Input>) {
        self.set_channels(channels);
        self.recover();
        let mut inflight: JoinSet<Outcome> = JoinSet::new();
        let mut open = true;
        loop {
            let now = Instant::now();
            let next = self.dispatch(now, &mut inflight);
            let sleep = tokio::time::sleep_until(next.unwrap_or(now + RETRY_MAX).into());
            tokio::select! {
                input = rx.recv(), if open => match input {
                    Some(Input::Record { record, channels }) => {
                        self.accept(&record, &channels, false)
                    }
                    Some(Input::Channels(channels)) => self.set_channels(channels),
                    None => open = false,
                },
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok(outcome) = done {
                        self.finished(outcome);
                    }
                }
                _ = sleep => {}
            }
            if !open && inflight.is_empty() && self.channels.values().all(|c| c.queue.is_empty()) {
                return;
            }
        }
    }

    fn set_channels(&mut self, channels: Vec<Channel>) {
        let mut old = std::mem::take(&mut self.channels);
        for c in channels {
            let state = match old.remove(&c.name) {
                Some(mut s) => {
                    s.config = c;
                    s
                }
                None => ChannelState::new(c),
            };
            self.channels.insert(state.config.name.clone(), state);
        }
        // A channel removed from the config: what waited for it can go nowhere.
        for (name, state) in old {
            for e in state.queue {
                self.give_up(
                    &e.message,
                    &format!("the channel {name} left the configuration"),
                );
            }
        }
    }

    /// After a start: what the outbox holds, then the journal's records since the cursor.
    fn recover(&mut self) {
        match self.outbox.pending() {
            Ok((entries, warnings)) => {
                warnings.iter().for_each(|w| warn!("{w}"));
                if !entries.is_empty() {
                    info!(
                        "{} notification(s) waiting in {} from before: sending them",
                        entries.len(),
                        self.outbox.dir().display()
                    );
                }
                for e in entries {
                    match self.channels.get_mut(&e.message.channel) {
                        Some(c) => c.queue.push_back(e),
                        None => {
                            let why =
                                format!("the channel {} is not configured", e.message.channel);
                            self.give_up(&e.message, &why);
                        }
                    }
                }
            }
            Err(e) => warn!(
                "cannot read the outbox {}: {e}",
                self.outbox.dir().display()
            ),
        }
        let cursor = self.outbox.cursor();
        let Some(ts) = cursor.ts else {
            // The first start with notifications (or a cursor lost): from now on nothing may
            // be missed — a record written before a kill, or vigil's own crash record written
            // before it executes itself again, is routed after the restart.
            let now = crate::audit::format_ms(crate::clock::now().wall_ms);
            if let Err(e) = self.outbox.set_cursor(&now, &HashSet::new()) {
                warn!("cannot write the outbox's cursor: {e}");
            }
            self.cursor = Some(now);
            return;
        };
        self.cursor = Some(ts.clone());
        self.cursor_ids = cursor.ids.into_iter().collect();
        let since = humantime::parse_rfc3339_weak(&ts).ok();
        let filter = crate::audit::Filter {
            since,
            ..Default::default()
        };
        let records = match crate::audit::read_newest(&self.journal, &filter) {
            Ok(r) => r,
            Err(e) => {
                warn!("cannot read the journal to route what was missed: {e}");
                return;
            }
        };
        let routes = Routes::of(
            &self
                .channels
                .values()
                .map(|c| c.config.clone())
                .collect::<Vec<_>>(),
        );
        for r in records {
            let channels: Vec<String> = routes.wanted(&r).map(str::to_string).collect();
            if !channels.is_empty() {
                self.accept(&r, &channels, true);
            }
        }
    }

    /// `replay`: read back from the journal after a restart, where anything older than the
    /// cursor was routed before. (Live records are never judged by their time: the wall clock
    /// can step back.)
    fn accept(&mut self, record: &Record, channels: &[String], replay: bool) {
        let now = Instant::now();
        let id = record_id(record);
        // Routed before (a replay after a restart): already in the outbox or sent.
        if self.cursor.as_deref() == Some(record.ts.as_str()) && self.cursor_ids.contains(&id) {
            return;
        }
        if replay
            && self
                .cursor
                .as_deref()
                .is_some_and(|c| record.ts.as_str() < c)
        {
            return;
        }
        for name in channels {
            let Some(ch) = self.channels.get_mut(name) else {
                continue;
            };
            let key = format!(
                "{}|{}|{}",
                record.action,
                record.agent.as_deref().unwrap_or(""),
                record
                    .metadata
                    .get("incident")
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            );
            // A message a runbook addresses to this channel is meant, every time.
            let addressed =
                record.metadata.get("notify").and_then(|v| v.as_str()) == Some(name.as_str());
            if !addressed
                && ch
                    .recent
                    .get(&key)
                    .is_some_and(|t| now.saturating_duration_since(*t) < ch.config.dedupe)
            {
                self.live.notification(name, "deduplicated", 1);
                continue;
            }
            ch.recent.insert(key, now);
            let dedupe = ch.config.dedupe;
            ch.recent
                .retain(|_, t| now.saturating_duration_since(*t) < dedupe);
            let message = Message::from_record(record, name, &self.node);
            let entry = Entry {
                message,
                accepted_ms: crate::clock::now().wall_ms,
            };
            // The id names the channel: only its own queue can hold it.
            if ch.queue.iter().any(|e| e.message.id == entry.message.id) {
                continue;
            }
            match self.outbox.accept(&entry) {
                Ok(()) => {
                    ch.queue.push_back(entry);
                    self.live.notifications_pending(name, ch.queue.len());
                }
                Err(e) => {
                    warn!(
                        "cannot keep a notification for {name} in {} ({e}): it waits in memory and is sent all the same",
                        self.outbox.dir().display()
                    );
                    ch.queue.push_back(entry.clone());
                    self.unaccepted.push_back((entry, name.clone()));
                }
            }
        }
        if self.cursor.as_deref() != Some(record.ts.as_str()) {
            self.cursor = Some(record.ts.clone());
            self.cursor_ids.clear();
        }
        self.cursor_ids.insert(id);
        if let Err(e) = self.outbox.set_cursor(&record.ts, &self.cursor_ids) {
            warn!("cannot write the outbox's cursor: {e}");
        }
    }

    /// Start every delivery that is due; the earliest time one will be.
    fn dispatch(&mut self, now: Instant, inflight: &mut JoinSet<Outcome>) -> Option<Instant> {
        // The outbox can be written again (space freed): make those still waiting durable.
        while let Some((entry, channel)) = self.unaccepted.front() {
            let waiting = self
                .channels
                .get(channel)
                .is_some_and(|c| c.queue.iter().any(|e| e.message.id == entry.message.id));
            if waiting && self.outbox.accept(entry).is_err() {
                break;
            }
            self.unaccepted.pop_front();
        }
        let mut next: Option<Instant> = None;
        for (name, ch) in &mut self.channels {
            let Some(at) = ch.due(now) else { continue };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let take = ch.queue.len().min(DIGEST_MAX);
            let messages: Vec<Message> = ch
                .queue
                .iter()
                .take(take)
                .map(|e| e.message.clone())
                .collect();
            ch.busy = true;
            ch.sent.push_back(now);
            let channel = ch.config.clone();
            let client = self
                .client
                .get_or_insert_with(|| crate::http_client::build(crate::http_client::builder))
                .clone();
            let name = name.clone();
            inflight.spawn(async move {
                let result = deliver(
                    &client,
                    &channel,
                    &Delivery {
                        messages: &messages,
                    },
                )
                .await;
                (name, messages, result)
            });
        }
        next
    }

    fn finished(&mut self, (name, messages, result): Outcome) {
        let Some(ch) = self.channels.get_mut(&name) else {
            return;
        };
        ch.busy = false;
        let kind = ch.config.kind.as_str();
        let ids: HashSet<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        match result {
            Ok(_) => {
                ch.failures = 0;
                ch.queue.retain(|e| !ids.contains(e.message.id.as_str()));
                self.live.notifications_pending(&name, ch.queue.len());
                self.live
                    .notification(&name, "delivered", messages.len() as u64);
                for m in &messages {
                    if let Err(e) = self.outbox.delivered(&m.id) {
                        warn!("cannot remove a delivered notification from the outbox: {e}");
                    }
                }
                let events: Vec<String> = messages.iter().map(|m| m.event.clone()).collect();
                let agent = match messages.as_slice() {
                    [one] => one.agent.as_deref(),
                    _ => None,
                };
                let _ = self
                    .report
                    .send(records::notified(&name, kind, &events, agent));
            }
            Err(DeliveryError::Retry { why, after }) => {
                ch.failures = ch.failures.saturating_add(1);
                let backoff = Duration::from_secs(1u64 << ch.failures.min(9)).min(RETRY_MAX);
                let wait = after.unwrap_or(backoff).min(Duration::from_secs(3600));
                ch.not_before = Instant::now() + wait;
                warn!(
                    "notification channel {name} ({kind}): {why}; {} waiting, next try in {}",
                    ch.queue.len(),
                    vigil_core::human_duration(wait)
                );
                let now_ms = crate::clock::now().wall_ms;
                let old: Vec<Message> = ch
                    .queue
                    .iter()
                    .filter(|e| now_ms - e.accepted_ms > GIVE_UP_AFTER.as_millis() as i64)
                    .map(|e| e.message.clone())
                    .collect();
                if !old.is_empty() {
                    let old_ids: HashSet<String> = old.iter().map(|m| m.id.clone()).collect();
                    ch.queue.retain(|e| !old_ids.contains(&e.message.id));
                    for m in old {
                        self.give_up(&m, &format!("undeliverable for a day; last: {why}"));
                    }
                }
            }
            Err(DeliveryError::Refused { why }) => {
                ch.failures = 0;
                ch.queue.retain(|e| !ids.contains(e.message.id.as_str()));
                warn!("notification channel {name} ({kind}) refused a delivery: {why}");
                for m in &messages {
                    self.give_up(m, &why);
                }
            }
        }
        if let Some(ch) = self.channels.get(&name) {
            self.live.notifications_pending(&name, ch.queue.len());
        }
    }

    fn give_up(&mut self, m: &Message, why: &str) {
        self.unaccepted.retain(|(e, _)| e.message.id != m.id);
        let kept = self.outbox.dir().join("failed");
        if let Err(e) = self.outbox.failed(&m.id) {
            warn!(
                "cannot move a failed notification to {}: {e}",
                kept.display()
            );
        }
        self.live.notification(&m.channel, "failed", 1);
        let _ = self.report.send(records::notify_failed(
            &m.channel,
            &m.event,
            m.agent.as_deref(),
            why,
            &kept.display().to_string(),
        ));
    }
}
