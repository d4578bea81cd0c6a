//! `<state_dir>/state.jsonl`: what must survive a restart of vigil — restart budgets, stops by
//! a human, quarantines, and the runs still alive (so a new vigil adopts them instead of
//! starting second copies).
//!
//! An append-only log, one JSON object per line, each the whole saved state of one agent
//! (`{"agent": "bot", "state": {…}}`) or its removal (`{"agent": "bot"}`); the last line for an
//! agent wins. A change costs one appended line and one `fdatasync`, whatever the size of the
//! fleet; when the log has grown to several times the fleet, it is rewritten compactly (temp
//! file, fsync, rename). Written by the persistence worker, never by the supervision loop.
//! A torn last line (vigil killed mid-write) is skipped when read.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedAgent {
    /// Wall-clock milliseconds of the automatic restarts still inside the window.
    #[serde(default)]
    pub restarts_ms: Vec<i64>,
    #[serde(default)]
    pub total_restarts: u64,
    #[serde(default)]
    pub held: bool,
    #[serde(default)]
    pub quarantined: Option<String>,
    #[serde(default)]
    pub crash_streak: u32,
    #[serde(default)]
    pub escalated: bool,
    /// An open stall episode began then (wall-clock milliseconds): still stalled after a
    /// restart of vigil, so an alert on it does not start over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_since_ms: Option<i64>,
    /// The live run: main pid, its /proc start time, when it started, its run tag.
    #[serde(default)]
    pub run: Option<SavedRun>,
    /// A fleet incident held it: the next vigil holds it again rather than start it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<SavedHold>,
    /// The live run had declared itself degraded: the next vigil keeps what is left of its
    /// suspension of stall verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<vigil_core::SavedDegradation>,
}

/// An incident's hold on an agent, as saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedHold {
    pub id: u64,
    /// `rule:database_unreachable`, `target:postgres://db:5432/bots`.
    pub cause: String,
    pub cause_text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    pub pid: u32,
    pub start_time: u64,
    pub started_ms: i64,
    pub run_tag: String,
    /// How this run must be stopped, should its agent leave the configuration while vigil is
    /// down (the next vigil stops it with these).
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub stop_timeout_ms: Option<u64>,
    /// Exclusive placement: the fencing epoch of the lease it was started under (its
    /// `VIGIL_FENCE`), so the next vigil knows whether the run may go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

/// What a taken-over run's tag carries after the agent's name: `bot#outside.PID.START`.
pub const OUTSIDE_TAG: &str = "#outside.";

/// What a container's run tag carries after the agent's name: `feed#container.RUN`.
pub const CONTAINER_TAG: &str = "#container.";
/// A system unit's: `bot#unit.RUN`; a user unit's: `bot#user-unit.RUN`.
pub const UNIT_TAG: &str = "#unit.";
pub const USER_UNIT_TAG: &str = "#user-unit.";

impl SavedRun {
    /// A process vigil spawned (it carries vigil's environment: its tag, its token), not a
    /// taken-over process, a container or a unit.
    pub fn spawned_by_vigil(&self) -> bool {
        ![OUTSIDE_TAG, CONTAINER_TAG, UNIT_TAG, USER_UNIT_TAG]
            .iter()
            .any(|t| self.run_tag.contains(t))
    }

    /// The run is a container's (the docker driver): its pid and start are the engine's, and
    /// a restarted vigil finds it by looking at the container, not at `/proc`.
    pub fn is_container(&self) -> bool {
        self.run_tag.contains(CONTAINER_TAG)
    }

    /// The run is a systemd unit's: `Some(user)` (whether of the user's own manager).
    pub fn unit_bus(&self) -> Option<bool> {
        if self.run_tag.contains(USER_UNIT_TAG) {
            Some(true)
        } else if self.run_tag.contains(UNIT_TAG) {
            Some(false)
        } else {
            None
        }
    }

    /// An engine or systemd runs it: a restarted vigil finds it by looking at its container
    /// or unit, not at `/proc`.
    pub fn is_external(&self) -> bool {
        self.is_container() || self.unit_bus().is_some()
    }

    /// The run's process was started by something else and taken over (`adopt`): it is not
    /// vigil's child, is in no cgroup of vigil's and carries none of its marks.
    pub fn taken_over(&self) -> bool {
        self.run_tag.contains(OUTSIDE_TAG)
    }
}

/// Everything saved, by agent name.
pub type SavedState = BTreeMap<String, SavedAgent>;

#[derive(Serialize, Deserialize)]
struct Line {
    agent: String,
    /// `None`: the agent was forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<SavedAgent>,
}

/// The state as the persistence worker keeps it: in memory, and in the log on disk.
pub struct StateStore {
    path: PathBuf,
    file: Option<File>,
    current: SavedState,
    /// Lines in the log file.
    lines: usize,
    /// A write failed: the next write rewrites everything, so nothing is lost.
    rewrite: bool,
}

/// The file name, in the state dir.
pub const FILE: &str = "state.jsonl";
/// What vigil before 0.2 wrote (one JSON document, rewritten on every change).
const LEGACY: &str = "state.json";

impl StateStore {
    /// Read what was saved. Problems (an unreadable line, a legacy file) come back as warnings;
    /// the state is always usable.
    pub fn open(state_dir: &Path) -> (StateStore, Vec<String>) {
        let path = state_dir.join(FILE);
        let mut warnings = Vec::new();
        let (current, lines, mut rewrite) = match read_log(&path, &mut warnings) {
            // A damaged or unterminated line is rewritten away before anything is appended,
            // or the next line would be glued to it.
            Some((state, lines, damaged)) => (state, lines, damaged),
            None => match read_legacy(&state_dir.join(LEGACY), &mut warnings) {
                Some(state) => (state, 0, true),
                None => (SavedState::new(), 0, false),
            },
        };
        let mut store = StateStore {
            path,
            file: None,
            current,
            lines,
            rewrite: false,
        };
        if rewrite {
            match store.compact() {
                Ok(()) => {
                    let _ = fs::remove_file(state_dir.join(LEGACY));
                    rewrite = false;
                }
                Err(e) => warnings.push(format!("cannot write {}: {e}", store.path.display())),
            }
        }
        store.rewrite = rewrite;
        (store, warnings)
    }

    pub fn state(&self) -> &SavedState {
        &self.current
    }

    /// Record changes (`None`: forget the agent), durably: appended and synced, or the whole
    /// state rewritten when the log has grown too long or the last write failed.
    pub fn apply(&mut self, changes: Vec<(String, Option<SavedAgent>)>) -> io::Result<()> {
        let mut buf = Vec::with_capacity(changes.len() * 200);
        for (agent, state) in changes {
            match &state {
                Some(s) => self.current.insert(agent.clone(), s.clone()),
                None => self.current.remove(&agent),
            };
            serde_json::to_writer(&mut buf, &Line { agent, state }).map_err(io::Error::other)?;
            buf.push(b'\n');
            self.lines += 1;
        }
        // A log deleted or moved away under vigil (with its state dir) is written whole again.
        let stale =
            (self.file.as_ref()).is_some_and(|f| crate::owned_file::is_stale(f, &self.path));
        if stale || self.rewrite || self.lines > 64.max(4 * self.current.len()) {
            return self.compact();
        }
        let result = self.append(&buf);
        if result.is_err() {
            self.file = None;
            self.rewrite = true;
        }
        result
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            let open = || {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
            };
            self.file = Some(crate::owned_file::open_creating_dir(&self.path, open)?);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(buf)?;
        file.sync_data()
    }

    /// Write the whole state to a new file and put it in place atomically.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let result = (|| {
            let mut buf = Vec::with_capacity(self.current.len() * 200);
            for (agent, state) in &self.current {
                let line = Line {
                    agent: agent.clone(),
                    state: Some(state.clone()),
                };
                serde_json::to_writer(&mut buf, &line).map_err(io::Error::other)?;
                buf.push(b'\n');
            }
            let mut file = crate::owned_file::open_creating_dir(&tmp, || File::create(&tmp))?;
            file.write_all(&buf)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        self.file = None;
        match result {
            Ok(()) => {
                self.lines = self.current.len();
                self.rewrite = false;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                self.rewrite = true;
                Err(e)
            }
        }
    }
}

/// The log (state, lines, whether a line was damaged or the last one unterminated), or
/// `None` when there is none.
fn read_log(path: &Path, warnings: &mut Vec<String>) -> Option<(SavedState, usize, bool)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warnings.push(format!(
                "cannot read {}: {e}; starting with empty restart history",
                path.display()
            ));
            return Some((SavedState::new(), 0, false));
        }
    };
    let mut state = SavedState::new();
    let mut lines = 0;
    let mut damaged = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut terminated = true;
    let mut n = 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        n += 1;
        terminated = line.last() == Some(&b'\n');
        if terminated {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        lines += 1;
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line {
                agent,
                state: Some(s),
            }) => {
                state.insert(agent, s);
            }
            Ok(Line { agent, state: None }) => {
                state.remove(&agent);
            }
            Err(_) => damaged.push(n),
        }
    }
    if !damaged.is_empty() {
        warnings.push(format!(
            "{}: skipped unreadable line(s) {damaged:?} (a write cut short by a crash); the lines before and after are used",
            path.display()
        ));
    }
    Some((state, lines, !damaged.is_empty() || !terminated))
}

/// The document vigil wrote before the log: `{"agents": {"bot": {…}}}`.
fn read_legacy(path: &Path, warnings: &mut Vec<String>) -> Option<SavedState> {
    #[derive(Deserialize)]
    struct Legacy {
        #[serde(default)]
        agents: SavedState,
    }
    let bytes = fs::read(path).ok()?;
    match serde_json::from_slice::<Legacy>(&bytes) {
        Ok(l) => Some(l.agents),
        Err(e) => {
            warnings.push(format!(
                "{} is unreadable ({e}); starting with empty restart history",
                path.display()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(total: u64) -> SavedAgent {
        SavedAgent {
            total_restarts: total,
            ..SavedAgent::default()
        }
    }

    #[test]
    fn changes_append_and_the_last_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, warnings) = StateStore::open(dir.path());
        assert!(warnings.is_empty() && store.state().is_empty());
        store
            .apply(vec![
                ("a".into(), Some(saved(1))),
                ("b".into(), Some(saved(2))),
            ])
            .unwrap();
        store.apply(vec![("a".into(), Some(saved(3)))]).unwrap();
        store.apply(vec![("b".into(), None)]).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 4, "appended, not rewritten:\n{text}");
        let (reread, _) = StateStore::open(dir.path());
        assert_eq!(reread.state().len(), 1);
        assert_eq!(reread.state()["a"].total_restarts, 3);
    }

    #[test]
    fn a_long_log_is_compacted_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = StateStore::open(dir.path());
        for i in 0..100 {
            store.apply(vec![("a".into(), Some(saved(i)))]).unwrap();
        }
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.lines().count() < 70, "compacted");
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"agent\": \"a\", \"sta").unwrap();
        let (reread, warnings) = StateStore::open(dir.path());
        assert_eq!(reread.state()["a"].total_restarts, 99);
        assert!(
            warnings[0].contains("skipped unreadable line"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_deleted_state_dir_gets_the_whole_state_again() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let (mut store, _) = StateStore::open(&state_dir);
        store.apply(vec![("a".into(), Some(saved(1)))]).unwrap();
        store.apply(vec![("b".into(), Some(saved(2)))]).unwrap();
        fs::remove_dir_all(&state_dir).unwrap();
        store.apply(vec![("b".into(), Some(saved(3)))]).unwrap();
        let (reread, _) = StateStore::open(&state_dir);
        assert_eq!(reread.state()["a"].total_restarts, 1);
        assert_eq!(reread.state()["b"].total_restarts, 3);
    }

    #[test]
    fn the_legacy_document_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(LEGACY),
            r#"{"version":1,"vigil_pid":7,"agents":{"bot":{"held":true,"run":{"pid":42,"start_time":9,"started_ms":1,"run_tag":"bot#7.1"}}}}"#,
        )
        .unwrap();
        let (store, warnings) = StateStore::open(dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(store.state()["bot"].held);
        assert_eq!(store.state()["bot"].run.as_ref().unwrap().pid, 42);
        assert!(!dir.path().join(LEGACY).exists());
        let (again, _) = StateStore::open(dir.path());
        assert_eq!(again.state(), store.state());
    }
}
