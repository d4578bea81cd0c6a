//! The results of systemd's jobs, from one `JobRemoved` subscription per connection: a start
//! or stop waits for its own job's result by the job's object path. (A subscription per job
//! had every job's signal delivered to every waiting job: n² messages for n units started at
//! once.)

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Results that came before anyone waited for them (a quick job can end before the call that
/// queued it has returned its path) are kept this many at most.
const EARLY_KEPT: usize = 1024;

#[derive(Default)]
pub struct Jobs {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<String, oneshot::Sender<String>>,
    early: VecDeque<(String, String)>,
}

impl Jobs {
    /// systemd says the job at `path` ended with `result` (`done`, `failed`, `canceled`, …).
    pub fn removed(&self, path: &str, result: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.waiting.remove(path) {
            Some(waiter) => {
                let _ = waiter.send(result);
            }
            None => {
                if inner.early.len() == EARLY_KEPT {
                    inner.early.pop_front();
                }
                inner.early.push_back((path.to_string(), result));
            }
        }
    }

    /// The result of the job at `path`, once systemd says it (`Err`: the connection ended).
    pub fn result_of(&self, path: &str) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.early.iter().position(|(p, _)| p == path) {
            Some(i) => {
                let (_, result) = inner.early.remove(i).expect("just found");
                let _ = tx.send(result);
            }
            None => {
                inner.waiting.insert(path.to_string(), tx);
            }
        }
        rx
    }

    /// The connection ended: nobody waits any more (their receivers see it).
    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.waiting.clear();
        inner.early.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_s_result_reaches_its_waiter_whether_it_came_before_or_after() {
        let jobs = Jobs::default();
        let waiting = jobs.result_of("/org/freedesktop/systemd1/job/7");
        jobs.removed("/org/freedesktop/systemd1/job/8", "done".into());
        jobs.removed("/org/freedesktop/systemd1/job/7", "failed".into());
        assert_eq!(waiting.await.unwrap(), "failed");
        // Job 8 ended before its caller asked.
        let early = jobs.result_of("/org/freedesktop/systemd1/job/8");
        assert_eq!(early.await.unwrap(), "done");
    }

    #[tokio::test]
    async fn early_results_are_bounded_and_a_lost_connection_ends_the_waits() {
        let jobs = Jobs::default();
        for i in 0..2 * EARLY_KEPT {
            jobs.removed(&format!("/job/{i}"), "done".into());
        }
        assert_eq!(
            jobs.inner.lock().unwrap().early.len(),
            EARLY_KEPT,
            "bounded"
        );
        let waiting = jobs.result_of("/job/never");
        jobs.clear();
        assert!(waiting.await.is_err());
    }
}
