//! `http` checks: GET a URL, expect a status (2xx by default) and optionally a body pattern.

use vigil_core::Observation;

use crate::config::{Pattern, StatusExpect};

/// Bodies larger than this are not read further (the pattern must match in the first MiB).
const MAX_BODY: usize = 1024 * 1024;

pub async fn probe(
    client: &reqwest::Client,
    url: &str,
    expect: &StatusExpect,
    body: Option<&Pattern>,
) -> Observation {
    let mut response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Observation::Unhealthy(format!("GET {url}: {}", describe(&e))),
    };
    let status = response.status();
    if !expect.accepts(status.as_u16()) {
        return Observation::Unhealthy(format!(
            "GET {url} → {status} (expected {})",
            expect.describe()
        ));
    }
    let Some(pattern) = body else {
        return Observation::Healthy(status.to_string());
    };
    let mut text = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                text.extend_from_slice(&chunk);
                if text.len() >= MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Observation::Unhealthy(format!(
                    "GET {url}: reading the body: {}",
                    describe(&e)
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&text);
    if pattern.0.is_match(&text) {
        Observation::Healthy(format!("{status}, body matches /{}/", pattern.0.as_str()))
    } else {
        let start: String = text.chars().take(80).collect();
        Observation::Unhealthy(format!(
            "GET {url} → {status}, but the body does not match /{}/: {start:?}",
            pattern.0.as_str()
        ))
    }
}

/// The innermost cause, which is what a user can act on ("Connection refused").
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let inner = crate::errors::root_cause(e);
    if e.is_connect() {
        format!("cannot connect ({inner})")
    } else {
        inner
    }
}
