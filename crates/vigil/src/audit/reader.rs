//! Reading and filtering the journal (`vigil audit`, later the API).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::time::SystemTime;

use super::record::Record;

#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// An agent name, or a template name matching all its instances.
    pub agent: Option<String>,
    pub action: Option<String>,
    pub since: Option<SystemTime>,
    /// Keep only the newest `limit` records.
    pub limit: Option<usize>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        if let Some(want) = &self.agent {
            let Some(agent) = &r.agent else { return false };
            let template = agent.split_once('@').map(|(t, _)| t);
            if agent != want && template != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(action) = &self.action
            && &r.action != action
        {
            return false;
        }
        if let Some(since) = self.since {
            match r.time() {
                Some(t) if t >= since => {}
                _ => return false,
            }
        }
        true
    }
}

/// Records matching `filter`, oldest first, and a warning per damaged line.
pub fn read(path: &Path, filter: &Filter) -> io::Result<(Vec<Record>, Vec<String>)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) if filter.matches(&r) => records.push(r),
            Ok(_) => {}
            Err(e) => warnings.push(format!(
                "{}:{}: skipped a damaged record ({e})",
                path.display(),
                i + 1
            )),
        }
    }
    if let Some(limit) = filter.limit
        && records.len() > limit
    {
        records.drain(..records.len() - limit);
    }
    Ok((records, warnings))
}
