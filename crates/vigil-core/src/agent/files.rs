//! Guarded files (`files`): checked, and mended where the agent's `repair` allows, before
//! every start; kept as the last known good once a run has proven healthy. A file broken
//! beyond repair quarantines the agent with a `config` diagnosis instead of restarting it
//! into the same crash.

use super::{Agent, Failure, Outbox, Phase, Run};
use crate::action::Action;
use crate::diagnosis::{Category, Diagnosis, FailureCause, Remedy, Severity, Source};
use crate::event::{FilesVerdict, RunId};
use crate::records;

impl Agent {
    pub(crate) fn on_files_guarded(&mut self, id: RunId, verdict: FilesVerdict, out: &mut Outbox) {
        let (run, look) = match self.phase {
            Phase::Starting(run) if run.id == id => match run.guarding {
                Some(look) => (run, look),
                None => return,
            },
            // An answer for a start that was called off: nothing was created for it.
            _ => return,
        };
        let (repaired, broken) = match verdict {
            FilesVerdict::Ready { repaired } => (repaired, None),
            FilesVerdict::Broken {
                path,
                problem,
                repaired,
            } => (repaired, Some((path, problem))),
        };
        for r in &repaired {
            out.audit(records::file_repaired(self.name(), r));
        }
        if let Some(suspect) = self.config_suspect.take()
            && repaired.is_empty()
            && broken.is_none()
        {
            // Its files are fine: what its evidence says is wrong with its config is not in
            // them, and a restart cannot help.
            let (failure, verdict) = *suspect;
            self.phase = Phase::Stopped;
            self.quarantine_diagnosed(&failure, &verdict, out);
            return;
        }
        if let Some((path, problem)) = broken {
            let failure = Failure {
                reason: format!("{path} is {problem}"),
                cause: FailureCause::SpawnFailed,
                uptime: None,
                verdict: None,
                spawn_error: None,
                run: None,
                oom_killed: false,
            };
            let verdict = Diagnosis {
                category: Category::Permanent,
                action: Remedy::Quarantine,
                severity: Severity::Critical,
                rule: "config_error".into(),
                explanation: format!(
                    "its guarded file {path} is {problem}, and its `repair` has nothing to mend \
                     it from"
                ),
                confidence: 1.0,
                source: Source::Rules,
            };
            self.diagnosis = Some(Box::new(verdict.clone()));
            self.phase = Phase::Stopped;
            self.quarantine_diagnosed(&failure, &verdict, out);
            return;
        }
        // An upstream fell while the files were checked: it waits for it rather than starts.
        if !look && self.wait_for_upstream("its files checked", out) {
            return;
        }
        self.phase = Phase::Starting(Run {
            looking: look,
            guarding: None,
            ..run
        });
        out.push(Action::Spawn {
            agent: self.id,
            run: run.id,
            look_first: look,
            fence: run.fence,
        });
    }

    /// The current run has proven healthy: its files are worth keeping (once per run).
    pub(super) fn keep_files(&mut self, out: &mut Outbox) {
        let Phase::Running(run) = self.phase else {
            return;
        };
        if !self.spec.guards_files || self.files_kept == Some(run.id) {
            return;
        }
        self.files_kept = Some(run.id);
        out.push(Action::KeepFiles {
            agent: self.id,
            run: run.id,
        });
    }
}
