//! The one `select!`: each arm only turns its source into an [`Input`]; the handler does the
//! rest. A source that closes is marked done and its arm disabled, so a closed channel can
//! never make the loop spin. One timer follows the core's earliest deadline and is re-armed
//! only when that deadline moves; another shows pending changes to readers.

use std::time::{Duration, Instant};

use tokio::signal::unix::Signal as SignalStream;
use tokio::sync::mpsc;
use vigil_core::{AuditEntry, Event};

use super::handler::{Handler, Input};
use super::offload::Done;
use crate::api::ApiRequest;

/// Most items taken from a channel in one turn.
const BATCH: usize = 1024;

pub struct Sources {
    /// Outcomes of work on the I/O threads (check results, evidence, advice, tree watches).
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Notify datagrams; `None` when the socket could not be opened.
    pub notify: Option<mpsc::Receiver<Event>>,
    pub api: mpsc::Receiver<ApiRequest>,
    pub offload: mpsc::UnboundedReceiver<Done>,
    /// Records the edges' own threads ask to journal (deliveries of notifications).
    pub records: mpsc::UnboundedReceiver<AuditEntry>,
    pub sigchld: SignalStream,
    pub sigterm: SignalStream,
    pub sigint: SignalStream,
    pub sighup: SignalStream,
    /// systemd's watchdog period (half of `WatchdogSec`), when vigil runs under it.
    pub watchdog: Option<Duration>,
}

/// A deadline's sleep, reset only when the deadline moves.
struct Deadline {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    at: Option<Instant>,
}

impl Deadline {
    fn new() -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            at: None,
        }
    }

    fn follow(&mut self, at: Option<Instant>) {
        if at != self.at {
            if let Some(at) = at {
                self.sleep.as_mut().reset(at.into());
            }
            self.at = at;
        }
    }

    /// Fires once per deadline; says how late it fired.
    async fn fired(&mut self) -> Duration {
        (&mut self.sleep).await;
        let late = self.at.map(|at| at.elapsed()).unwrap_or_default();
        self.at = None;
        late
    }
}

pub async fn run(h: &mut Handler, mut s: Sources) {
    let mut timer = Deadline::new();
    let mut publish = Deadline::new();
    let mut journal_retry = Deadline::new();
    let mut watchdog = s.watchdog.map(|every| {
        let mut i = tokio::time::interval(every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut api_open = true;
    let mut events_open = true;
    let mut offload_open = true;
    let mut records_open = true;
    let mut events = Vec::with_capacity(BATCH);
    let mut datagrams = Vec::with_capacity(BATCH);
    let mut requests = Vec::with_capacity(BATCH);
    let mut records = Vec::new();
    loop {
        timer.follow(h.sup.poll_timeout());
        publish.follow(h.publisher.due());
        journal_retry.follow(h.journal_retry_due());
        let input = tokio::select! {
            biased;
            // Exits that are ready together make one turn: one journal sync for a burst.
            exits = h.exec.exits.next(), if !h.exec.exits.is_empty() => Input::Exits(exits),
            // Orphans can wait until the restarts of this turn are done.
            _ = s.sigchld.recv() => Input::Orphans,
            late = timer.fired(), if timer.at.is_some() => Input::Timer { late },
            n = s.events.recv_many(&mut events, BATCH), if events_open => {
                if n == 0 {
                    events_open = false;
                    Input::Closed("events")
                } else {
                    Input::Events(std::mem::take(&mut events))
                }
            }
            n = recv_notify(&mut s.notify, &mut datagrams) => match n {
                0 => {
                    s.notify = None;
                    Input::Closed("notify")
                }
                _ => Input::Events(std::mem::take(&mut datagrams)),
            },
            _ = s.sigterm.recv() => Input::Stop("SIGTERM"),
            _ = s.sigint.recv() => Input::Stop("SIGINT"),
            _ = s.sighup.recv() => Input::Reload,
            n = s.api.recv_many(&mut requests, BATCH), if api_open => {
                if n == 0 {
                    api_open = false;
                    Input::Closed("api")
                } else {
                    Input::Api(std::mem::take(&mut requests))
                }
            }
            done = s.offload.recv(), if offload_open => match done {
                Some(Done::Config(loaded)) => Input::Config(loaded),
                None => {
                    offload_open = false;
                    Input::Closed("offload")
                }
            },
            n = s.records.recv_many(&mut records, BATCH), if records_open => {
                if n == 0 {
                    records_open = false;
                    Input::Closed("records")
                } else {
                    Input::Records(std::mem::take(&mut records))
                }
            }
            // From this loop and nowhere else: if it is wedged, systemd stops hearing from it.
            _ = tick(&mut watchdog) => Input::Watchdog,
            _ = publish.fired(), if publish.at.is_some() => Input::Publish,
            _ = journal_retry.fired(), if journal_retry.at.is_some() => Input::RetryJournal,
        };
        h.turn(crate::clock::now(), input);
        if h.finished() {
            break;
        }
    }
}

async fn recv_notify(rx: &mut Option<mpsc::Receiver<Event>>, buf: &mut Vec<Event>) -> usize {
    match rx {
        Some(rx) => rx.recv_many(buf, BATCH).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
