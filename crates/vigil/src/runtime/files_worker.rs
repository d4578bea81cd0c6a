//! Guarded files (`crate::guard`) checked, mended and kept off the supervision loop, by one
//! thread: reading and parsing config files is no work for the loop's thread. Jobs run in
//! order, so a keep and the next start's check of one agent never cross.

use std::collections::HashMap;
use std::sync::mpsc;

use tokio::sync::mpsc::UnboundedSender;
use vigil_core::{AgentId, Event, RunId};

use crate::config::GuardedFile;
use crate::guard::{self, FileStore};

enum Job {
    Guard {
        agent: AgentId,
        run: RunId,
        name: String,
        files: Vec<GuardedFile>,
    },
    Keep {
        run: RunId,
        name: String,
        files: Vec<GuardedFile>,
    },
}

pub struct FilesWorker {
    jobs: mpsc::Sender<Job>,
}

impl FilesWorker {
    /// The thread ends with the worker.
    pub fn start(store: FileStore, events: UnboundedSender<Event>) -> std::io::Result<FilesWorker> {
        let (jobs, queued) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("vigil-files".into())
            .spawn(move || {
                // What each agent's current run found in its files at its start.
                let mut validated: HashMap<String, (RunId, guard::Validated)> = HashMap::new();
                while let Ok(job) = queued.recv() {
                    let now_ms = crate::clock::now().wall_ms;
                    match job {
                        Job::Guard {
                            agent,
                            run,
                            name,
                            files,
                        } => {
                            let (verdict, found) = guard::guard(&name, &files, &store, now_ms);
                            validated.insert(name, (run, found));
                            let guarded = Event::FilesGuarded {
                                agent,
                                run,
                                verdict,
                            };
                            if events.send(guarded).is_err() {
                                return;
                            }
                        }
                        // A run that was not guarded at its start (taken over from an earlier
                        // vigil) has nothing it is known to have read: nothing is kept.
                        Job::Keep { run, name, files } => {
                            if let Some((_, found)) =
                                validated.get(&name).filter(|(r, _)| *r == run)
                            {
                                guard::keep(&name, run.0, &files, found, &store, now_ms);
                            }
                        }
                    }
                }
            })?;
        Ok(FilesWorker { jobs })
    }

    pub fn guard(&self, agent: AgentId, run: RunId, name: &str, files: &[GuardedFile]) {
        let _ = self.jobs.send(Job::Guard {
            agent,
            run,
            name: name.to_string(),
            files: files.to_vec(),
        });
    }

    pub fn keep(&self, run: RunId, name: &str, files: &[GuardedFile]) {
        let _ = self.jobs.send(Job::Keep {
            run,
            name: name.to_string(),
            files: files.to_vec(),
        });
    }
}
