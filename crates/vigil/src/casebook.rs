//! The last failure of each agent as it was judged: the evidence, the rules' verdict and the
//! advisor's. What `vigil explain NAME` and `GET /agents/NAME/explain` show. Kept in memory
//! only: the audit journal is the durable record of every decision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use vigil_core::{Diagnosis, FailureReport, RunId};

#[derive(Clone, Default)]
pub struct Casebook(Arc<Mutex<HashMap<String, Case>>>);

struct Case {
    at_ms: i64,
    report: FailureReport,
    advice: Advice,
}

enum Advice {
    /// No advisor, or nothing for it to add (already quarantined).
    NotAsked,
    Pending,
    Given(Diagnosis),
    Failed(String),
}

impl Casebook {
    /// The cases, even if a thread panicked while holding them: a case is replaced or read
    /// whole, so what is there is consistent, and the supervision loop must never die of a
    /// lock.
    fn cases(&self) -> MutexGuard<'_, HashMap<String, Case>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn open(&self, agent: &str, at_ms: i64, report: FailureReport) {
        let advice = if report.ask_advisor {
            Advice::Pending
        } else {
            Advice::NotAsked
        };
        let case = Case {
            at_ms,
            report,
            advice,
        };
        self.cases().insert(agent.to_string(), case);
    }

    /// The advisor's answer about the failure of the run of `pid` (ignored if a newer failure
    /// has replaced that case meanwhile).
    pub fn advised(&self, agent: &str, run: Option<RunId>, advice: &Result<Diagnosis, String>) {
        let mut cases = self.cases();
        if let Some(case) = cases.get_mut(agent)
            && case.report.run == run
        {
            case.advice = match advice {
                Ok(d) => Advice::Given(d.clone()),
                Err(e) => Advice::Failed(e.clone()),
            };
        }
    }

    pub fn forget(&self, agent: &str) {
        self.cases().remove(agent);
    }

    pub fn explain(&self, agent: &str) -> Option<Value> {
        let cases = self.cases();
        let case = cases.get(agent)?;
        let r = &case.report;
        // The journal's own timestamp format, so both read alike.
        let at = crate::audit::format_ms(case.at_ms);
        let advisor = match &case.advice {
            Advice::NotAsked => json!({"state": "not_asked"}),
            Advice::Pending => json!({"state": "pending"}),
            Advice::Given(d) => json!({"state": "answered", "verdict": d.to_json()}),
            Advice::Failed(e) => json!({"state": "failed", "error": e}),
        };
        Some(json!({
            "agent": agent,
            "at": at,
            "pid": r.pid,
            "cause": r.cause.as_str(),
            "reason": r.reason,
            "uptime_s": r.uptime.map(|u| u.as_secs_f64()),
            "evidence": r.evidence,
            "rules": r.verdict.to_json(),
            "advisor": advisor,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_the_casebook_is_held_does_not_poison_it_for_the_loop() {
        let book = Casebook::default();
        let held = book.clone();
        let _ = std::thread::spawn(move || {
            let _cases = held.0.lock().unwrap();
            panic!("a thread dies holding the casebook");
        })
        .join();
        assert!(book.0.is_poisoned());
        book.forget("bot");
        assert!(book.explain("bot").is_none());
    }
}
