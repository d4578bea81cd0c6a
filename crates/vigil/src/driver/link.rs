//! What the docker and systemd drivers share: their way back to the core, and whether their
//! source of ends (the engine's event stream, systemd's signals) is followed right now — no
//! start may be done while an end could go unseen.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use vigil_core::{AgentId, Event, ExitStatus, RunId};

/// How long an operation waits for the source of ends before it gives up (the engine or the
/// bus is down).
const WATCHING_WAIT: Duration = Duration::from_secs(10);

pub struct Link {
    events: UnboundedSender<Event>,
    watching: tokio::sync::watch::Sender<bool>,
}

impl Link {
    pub fn new(events: UnboundedSender<Event>) -> Link {
        Link {
            events,
            watching: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// A run that ended while nobody could see how (it was gone when it was to be watched).
    pub fn ended_unseen(&self, agent: AgentId, run: RunId) {
        self.send(Event::Exited {
            agent,
            run,
            status: ExitStatus::unknown(),
            tree_alive: false,
            escaped: Vec::new(),
        });
    }

    pub fn set_watching(&self, on: bool) {
        self.watching.send_replace(on);
    }

    /// Whether ends are seen now, waiting a while for it.
    pub async fn watching(&self) -> bool {
        let mut watching = self.watching.subscribe();
        matches!(
            tokio::time::timeout(WATCHING_WAIT, watching.wait_for(|w| *w)).await,
            Ok(Ok(_))
        )
    }
}

/// How long a run that an engine or systemd started `started` after the epoch (their own
/// clocks: ns for Docker, µs for systemd) has been running.
pub fn age_since(started: Duration) -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(Duration::ZERO, |now| now.saturating_sub(started))
}

/// The first wait between tries to reach an engine or a bus, doubled up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Tries to reach an engine or a bus again: waits that grow, and one warning per outage.
pub struct Retry {
    driver: &'static str,
    delay: Duration,
    down: bool,
}

impl Retry {
    pub fn new(driver: &'static str) -> Retry {
        Retry {
            driver,
            delay: RETRY_FIRST,
            down: false,
        }
    }

    /// A try failed: say so (once), then wait before the next.
    pub async fn failed(&mut self, why: impl std::fmt::Display) {
        if !self.down {
            tracing::warn!("{} driver: {why}; trying again", self.driver);
            self.down = true;
        }
        self.pause().await;
        self.delay = (self.delay * 2).min(RETRY_MAX);
    }

    pub fn succeeded(&mut self) {
        if self.down {
            tracing::info!("{} driver: reached again", self.driver);
        }
        self.down = false;
        self.delay = RETRY_FIRST;
    }

    /// Before reconnecting after a connection that worked ended.
    pub async fn pause(&self) {
        tokio::time::sleep(self.delay).await;
    }
}
