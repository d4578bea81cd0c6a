//! `GET /events`: a Server-Sent Events feed for the dashboard — the fleet's status when it
//! changes (at most once a second) and every audit record as it is written.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, sleep_until};

use super::{Hub, Snapshot};

/// Status pictures are sent at most this often, however fast the fleet changes.
const STATUS_EVERY: Duration = Duration::from_secs(1);

struct Feed {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    audit: broadcast::Receiver<Arc<str>>,
    /// The first event is always the current status.
    first: bool,
    next_status: Instant,
    status_pending: bool,
}

fn status_event(snap: &Snapshot) -> Event {
    Event::default()
        .event("status")
        .data(String::from_utf8_lossy(&snap.status_json))
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        if self.first {
            self.first = false;
            self.snapshot.mark_unchanged();
            self.next_status = Instant::now() + STATUS_EVERY;
            return Some(status_event(&self.snapshot.borrow()));
        }
        loop {
            tokio::select! {
                record = self.audit.recv() => match record {
                    Ok(line) => return Some(Event::default().event("audit").data(&*line)),
                    // A slow reader missed records: say so, and carry on with the newest.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Some(Event::default().event("lagged").data(n.to_string()));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.snapshot.changed(), if !self.status_pending => {
                    if changed.is_err() {
                        return None;
                    }
                    self.status_pending = true;
                }
                _ = sleep_until(self.next_status), if self.status_pending => {
                    self.status_pending = false;
                    self.next_status = Instant::now() + STATUS_EVERY;
                    self.snapshot.mark_unchanged();
                    return Some(status_event(&self.snapshot.borrow()));
                }
            }
        }
    }
}

pub async fn events(
    State(hub): State<Arc<Hub>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed {
        snapshot: hub.snapshot.clone(),
        audit: hub.audit.subscribe(),
        first: true,
        next_status: Instant::now(),
        status_pending: false,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|e| (Ok(e), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
