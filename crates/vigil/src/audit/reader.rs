//! Reading and filtering the journal (`vigil audit`, later the API).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::time::SystemTime;

use super::record::Record;

/// A `since` that is neither a duration nor a time.
#[derive(Debug, thiserror::Error)]
#[error(
    "{given:?}: expected a duration ago (\"30m\", \"1h\", \"2d\") or an RFC 3339 time (\"2026-11-23T10:00:00Z\")"
)]
pub struct BadSince {
    given: String,
}

/// `1h` (that long before `now`) or `2026-11-23T10:00:00Z`.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, BadSince> {
    if let Ok(d) = crate::config::parse_duration(s) {
        return Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| BadSince {
        given: s.to_string(),
    })
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// An agent name, or a template name matching all its instances.
    pub agent: Option<String>,
    pub action: Option<String>,
    pub since: Option<SystemTime>,
    /// Keep only the newest `limit` records.
    pub limit: Option<usize>,
}

/// `want` names `agent`: it is that agent, or the template it is an instance of (`trader`
/// names `trader@BTC_USDT`).
pub fn names(want: &str, agent: &str) -> bool {
    want == agent || agent.split_once('@').is_some_and(|(t, _)| t == want)
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        if let Some(want) = &self.agent {
            let Some(agent) = &r.agent else { return false };
            if !names(want, agent) {
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

/// The newest `filter.limit` records matching `filter`, oldest first, reading the journal
/// backwards so a long journal costs only what is returned. Damaged lines are skipped.
pub fn read_newest(path: &Path, filter: &Filter) -> io::Result<Vec<Record>> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 64 * 1024;
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut pos = file.seek(SeekFrom::End(0))?;
    let mut newest_first = Vec::new();
    // Bytes of a line whose start lies in a block not yet read.
    let mut carry: Vec<u8> = Vec::new();
    while pos > 0 && newest_first.len() < limit {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&carry);
        pos = start;
        // The first piece may be incomplete unless we reached the start of the file.
        let mut lines = block.split(|b| *b == b'\n');
        let first = if pos > 0 { lines.next() } else { None };
        let complete: Vec<&[u8]> = lines.collect();
        for line in complete.iter().rev() {
            if newest_first.len() >= limit {
                break;
            }
            let Ok(r) = serde_json::from_slice::<Record>(line) else {
                continue;
            };
            // Records are appended in time order: nothing older can match.
            if let Some(since) = filter.since
                && r.time().is_some_and(|t| t < since)
            {
                return Ok(newest_first.into_iter().rev().collect());
            }
            if filter.matches(&r) {
                newest_first.push(r);
            }
        }
        carry = first.map(<[u8]>::to_vec).unwrap_or_default();
    }
    Ok(newest_first.into_iter().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(i: usize, agent: &str) -> String {
        format!(
            r#"{{"ts":"2026-11-23T10:00:{:02}.000Z","agent":"{agent}","action":"restart","reason":"r{i}","success":true,"error":null}}"#,
            i % 60
        )
    }

    #[test]
    fn newest_records_come_back_in_order_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut f = File::create(&path).unwrap();
        for i in 0..5000 {
            writeln!(f, "{}", record(i, if i % 2 == 0 { "a" } else { "b@x" })).unwrap();
            if i == 10 {
                writeln!(f, "{{damaged").unwrap();
            }
        }
        drop(f);
        let filter = Filter {
            agent: Some("b".into()),
            limit: Some(3),
            ..Filter::default()
        };
        let got = read_newest(&path, &filter).unwrap();
        let reasons: Vec<&str> = got.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["r4995", "r4997", "r4999"]);
        let all = read_newest(&path, &Filter::default()).unwrap();
        assert_eq!(all.len(), 5000);
        assert_eq!(all[0].reason, "r0");
        assert_eq!(read(&path, &Filter::default()).unwrap().0, all);
    }
}
