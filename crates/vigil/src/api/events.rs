//! `GET /events`: a Server-Sent Events feed for the dashboard — the fleet's status once a
//! second (ages and uptimes move even when nothing else does; derived on the API's threads,
//! shared by every open dashboard) and every audit record as it is written.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

use super::Hub;

/// How often the status is sent.
const STATUS_EVERY: Duration = Duration::from_secs(1);

struct Feed {
    hub: Arc<Hub>,
    audit: broadcast::Receiver<Arc<str>>,
    next_status: Instant,
}

fn status_event(hub: &Hub) -> Event {
    Event::default()
        .event("status")
        .data(String::from_utf8_lossy(&hub.status_body()))
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        tokio::select! {
            record = self.audit.recv() => match record {
                Ok(line) => Some(Event::default().event("audit").data(&*line)),
                // A slow reader missed records: say so, and carry on with the newest.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some(Event::default().event("lagged").data(n.to_string()))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            },
            _ = sleep_until(self.next_status) => {
                self.next_status = Instant::now() + STATUS_EVERY;
                Some(status_event(&self.hub))
            }
        }
    }
}

pub async fn events(
    State(hub): State<Arc<Hub>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed {
        audit: hub.audit.subscribe(),
        hub,
        // The first event is the current status.
        next_status: Instant::now(),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|e| (Ok(e), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
