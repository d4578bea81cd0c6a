//! Bearer tokens: a person's (`[api] token`, full access) and each agent run's own
//! (`VIGIL_AGENT_TOKEN`: its own checkpoint, heartbeat and status only).

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::agent_token::{LiveRuns, PREFIX};

/// Who is asking, by the bearer token the request carries.
#[derive(Debug, PartialEq)]
pub enum Caller {
    /// The API's token (or none is needed: no `[api] token` and no token given).
    Person,
    /// The live run of this agent.
    Agent(String, vigil_core::RunId),
    /// An agent token whose run has ended (or never was).
    EndedRun,
    /// No token, or a wrong one, where the API needs one.
    Nobody,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

pub fn caller(person_token: Option<&str>, runs: &LiveRuns, headers: &HeaderMap) -> Caller {
    match bearer(headers) {
        Some(given) if given.starts_with(PREFIX) => match runs.agent_of(given) {
            Some((agent, run)) => Caller::Agent(agent, run),
            None => Caller::EndedRun,
        },
        _ if authorized(person_token, headers) => Caller::Person,
        _ => Caller::Nobody,
    }
}

/// Whether the request carries the token (compared in constant time).
pub fn authorized(expected: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    bearer(headers).is_some_and(|given| given.as_bytes().ct_eq(expected.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_bearer_token() {
        let mut h = HeaderMap::new();
        assert!(authorized(None, &h));
        assert!(!authorized(Some("secret-token-123456"), &h));
        h.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(!authorized(Some("secret-token-123456"), &h));
        h.insert(
            "authorization",
            "Bearer secret-token-123456".parse().unwrap(),
        );
        assert!(authorized(Some("secret-token-123456"), &h));
    }
}
