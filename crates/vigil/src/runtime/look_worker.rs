//! Looks for agents already running outside vigil (`driver::outside`), answered off the
//! supervision loop by one thread. Looks that arrive while it reads the process table wait,
//! and the next read answers all of them: a storm of restarts after waits in a large fleet
//! costs one read of `/proc` per read's duration, not one per restart.

use std::collections::HashSet;
use std::sync::mpsc;

use tokio::sync::mpsc::UnboundedSender;
use vigil_core::Event;

use crate::driver::outside::{self, Look};
use crate::driver::process::STATE_DIR_VAR;

struct Batch {
    looks: Vec<Look>,
    /// The main processes vigil watched when the batch was sent.
    watched: HashSet<u32>,
}

pub struct LookWorker {
    batches: mpsc::Sender<Batch>,
}

impl LookWorker {
    /// `mark`: the state dir every run of this vigil carries. The thread ends with the worker.
    pub fn start(
        self_pid: u32,
        mark: String,
        events: UnboundedSender<Event>,
    ) -> std::io::Result<LookWorker> {
        let (batches, queued) = mpsc::channel::<Batch>();
        std::thread::Builder::new()
            .name("vigil-looks".into())
            .spawn(move || {
                while let Ok(first) = queued.recv() {
                    let mut looks = first.looks;
                    let mut watched = first.watched;
                    // The latest batch knows the latest watched set.
                    while let Ok(more) = queued.try_recv() {
                        looks.extend(more.looks);
                        watched = more.watched;
                    }
                    let own = outside::Own {
                        self_pid,
                        watched: &watched,
                        mark: (STATE_DIR_VAR, &mark),
                    };
                    for (agent, run, outside) in outside::look_all(&looks, &own) {
                        let looked = Event::Looked {
                            agent,
                            run,
                            outside,
                        };
                        if events.send(looked).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(LookWorker { batches })
    }

    pub fn look(&self, looks: Vec<Look>, watched: HashSet<u32>) {
        let _ = self.batches.send(Batch { looks, watched });
    }
}
