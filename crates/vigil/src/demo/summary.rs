//! The end of the demo: what went wrong, what vigil saw, how fast, and what it did.

use super::faults::Kind;
use super::tracker::{Fault, Outcome, Tracker};

fn median_max(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "-".to_string();
    }
    v.sort_by(f64::total_cmp);
    format!("{:.1}s / {:.1}s", v[v.len() / 2], v[v.len() - 1])
}

/// The summary table, and whether every fault was healed or escalated.
pub fn render(t: &Tracker, seed: u64) -> (String, bool) {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<28} {:>8} {:>8} {:>15} {:>15} {:>7} {:>9} {:>6}\n",
        "fault",
        "injected",
        "detected",
        "detect med/max",
        "recover med/max",
        "healed",
        "escalated",
        "open"
    ));
    for kind in Kind::ALL {
        let faults: Vec<&Fault> = t.faults.iter().filter(|f| f.kind == kind).collect();
        if faults.is_empty() {
            continue;
        }
        let detected: Vec<&&Fault> = faults.iter().filter(|f| f.detected_ms.is_some()).collect();
        let detect = detected
            .iter()
            .map(|f| (f.detected_ms.unwrap_or_default() - f.injected_ms) as f64 / 1000.0)
            .collect();
        let recover = faults
            .iter()
            .filter(|f| f.outcome == Some(Outcome::Healed))
            .filter_map(|f| Some((f.resolved_ms? - f.detected_ms?) as f64 / 1000.0))
            .collect();
        let count = |o: Option<Outcome>| faults.iter().filter(|f| f.outcome == o).count();
        out.push_str(&format!(
            "{:<28} {:>8} {:>8} {:>15} {:>15} {:>7} {:>9} {:>6}\n",
            kind.label(),
            faults.len(),
            detected.len(),
            median_max(detect),
            median_max(recover),
            count(Some(Outcome::Healed)),
            count(Some(Outcome::Escalated)),
            count(None),
        ));
    }
    let open: Vec<&Fault> = t.faults.iter().filter(|f| f.open()).collect();
    out.push_str(&format!(
        "\nrestarts {} · quarantines {} · budget exhaustions {}",
        t.totals.restarts, t.totals.quarantines, t.totals.budget_exhaustions
    ));
    if t.totals.advice + t.totals.llm_errors > 0 {
        out.push_str(&format!(
            " · LLM advice {} · LLM errors {}",
            t.totals.advice, t.totals.llm_errors
        ));
    }
    out.push('\n');
    if t.faults.iter().any(|f| f.kind == Kind::FeedHang) {
        out.push_str(&format!(
            "market feed down: traders waited for it {} time(s), and were restarted {} time(s) meanwhile — the feed was healed first\n",
            t.totals.waited_for_feed, t.totals.restarted_while_feed_down
        ));
    }
    if t.totals.files_repaired > 0 {
        out.push_str(&format!(
            "config files restored from their last known good copy before a restart: {}\n",
            t.totals.files_repaired
        ));
    }
    if t.totals.incidents_opened > 0 {
        out.push_str(&format!(
            "incidents: {} opened, {} resolved; {} failure(s) held by one (no restart budget spent on a shared cause)\n",
            t.totals.incidents_opened, t.totals.incidents_resolved, t.totals.held_by_incident
        ));
    }
    out.push_str(&format!(
        "people told: {} notification(s) delivered to the demo's sink\n",
        t.totals.told
    ));
    for line in storm_spread(t) {
        out.push_str(&line);
        out.push('\n');
    }
    if t.faults.is_empty() {
        out.push_str(
            "no fault was injected: the first comes after a 10 s warm-up (try --duration 3m).\n",
        );
    } else if open.is_empty() {
        out.push_str("every fault was healed or escalated to a human.\n");
    } else {
        for f in &open {
            out.push_str(&format!(
                "NOT HANDLED: {} on {} ({})\n",
                f.kind.name(),
                f.agent,
                if f.detected_ms.is_some() {
                    "detected, not healed yet"
                } else {
                    "never detected"
                }
            ));
        }
    }
    out.push_str(&format!("repeat this run with --seed {seed}\n"));
    (out, open.is_empty())
}

/// For each 429 storm: how its restarts were spread (the point is: no burst).
fn storm_spread(t: &Tracker) -> Vec<String> {
    let mut groups: Vec<usize> = t
        .faults
        .iter()
        .filter(|f| f.kind == Kind::RateLimit)
        .map(|f| f.group)
        .collect();
    groups.dedup();
    groups
        .into_iter()
        .filter_map(|g| {
            let mut at: Vec<i64> = t
                .faults
                .iter()
                .filter(|f| f.group == g && f.kind == Kind::RateLimit)
                .filter_map(|f| f.restarted_ms)
                .collect();
            if at.len() < 2 {
                return None;
            }
            at.sort();
            let first = t
                .faults
                .iter()
                .find(|f| f.group == g)
                .map(|f| f.detected_ms.unwrap_or(f.injected_ms))?;
            let gap = at.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(0);
            Some(format!(
                "429 storm: {} traders restarted {:.1}–{:.1}s after it, spread out (closest two {:.1}s apart), none at once",
                at.len(),
                (at[0] - first) as f64 / 1000.0,
                (at[at.len() - 1] - first) as f64 / 1000.0,
                gap as f64 / 1000.0
            ))
        })
        .collect()
}
