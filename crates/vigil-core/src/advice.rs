//! A second opinion on a failure, from an advisor such as a local LLM. The advisor can only
//! make vigil more careful (restart → backoff → quarantine), never less: the rules' verdict is
//! the floor, and whatever the advisor says is data, never a command.

use std::time::Duration;

use crate::diagnosis::{Diagnosis, FailureCause};
use crate::event::RunId;

/// How an advisor's verdicts are used, when one is configured.
#[derive(Clone, Debug, PartialEq)]
pub struct AdvisorSpec {
    /// Advice less sure than this is recorded but not acted on.
    pub min_confidence: f64,
    /// How long a stalled agent waits for advice (with `llm_before_restart`) before the
    /// rules' verdict is applied.
    pub wait: Duration,
}

/// What the edges get to know about one failure once the rules have judged it: kept for
/// `vigil explain`, counted in metrics, and sent to the advisor when `ask_advisor` is set.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureReport {
    /// The failed run, when a process existed (not for a failed spawn).
    pub run: Option<RunId>,
    /// Its main process.
    pub pid: Option<u32>,
    pub cause: FailureCause,
    /// What happened, as the audit journal says it (`exited with code 1`, the stall reason).
    pub reason: String,
    /// How long the failed run had been running.
    pub uptime: Option<std::time::Duration>,
    /// Redacted log lines, oldest first, and the evidence command's output if one ran.
    pub evidence: Vec<String>,
    /// The rules' verdict (or a stricter advice remembered from the previous failure).
    pub verdict: Diagnosis,
    /// Ask the advisor for a second opinion.
    pub ask_advisor: bool,
}

/// What an advice means for a failure already judged as `base`.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    /// Stricter than the rules and sure enough: it replaces the verdict.
    Stricter,
    /// Same remedy as the rules.
    Agrees,
    /// Would restart sooner than the rules allow: ignored.
    Looser,
    /// Stricter, but below `min_confidence`: recorded only.
    Unsure,
}

impl Judgement {
    pub fn of(base: &Diagnosis, advice: &Diagnosis, min_confidence: f64) -> Judgement {
        if advice.action < base.action {
            Judgement::Looser
        } else if advice.action == base.action {
            Judgement::Agrees
        } else if advice.confidence < min_confidence {
            Judgement::Unsure
        } else {
            Judgement::Stricter
        }
    }

    /// For the audit record.
    pub fn describe(&self, base: &Diagnosis, min_confidence: f64) -> String {
        match self {
            Judgement::Stricter => format!("stricter than the rules ({})", base.action),
            Judgement::Agrees => "agrees with the rules".to_string(),
            Judgement::Looser => format!(
                "looser than the rules ({}): ignored, the advisor can only make vigil more careful",
                base.action
            ),
            Judgement::Unsure => format!(
                "stricter than the rules ({}) but below min_confidence {min_confidence}: not acted on",
                base.action
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::{Category, Remedy};

    fn verdict(action: Remedy, confidence: f64) -> Diagnosis {
        Diagnosis {
            category: Category::Unknown,
            action,
            severity: crate::diagnosis::Severity::Info,
            rule: "t".into(),
            explanation: String::new(),
            confidence,
            source: crate::diagnosis::Source::Llm,
        }
    }

    #[test]
    fn advice_can_only_tighten_the_verdict() {
        let base = verdict(Remedy::Backoff, 0.9);
        let j = |a, c| Judgement::of(&base, &verdict(a, c), 0.5);
        assert_eq!(j(Remedy::Restart, 1.0), Judgement::Looser);
        assert_eq!(j(Remedy::Backoff, 1.0), Judgement::Agrees);
        assert_eq!(j(Remedy::Quarantine, 0.9), Judgement::Stricter);
        assert_eq!(j(Remedy::Quarantine, 0.2), Judgement::Unsure);
    }
}
