//! vigil's HTTP API, as an agent's run uses it: its own checkpoint, heartbeat and status.

use std::time::Duration;

/// What an API call came to.
pub enum Answer {
    /// vigil answered: status, `ETag` version, body.
    Reply(u16, Option<i64>, String),
    /// vigil could not be reached (down, restarting, overloaded): worth trying later.
    Unreachable,
}

pub struct Api {
    http: ureq::Agent,
    base: String,
    bearer: Option<String>,
}

/// An agent's name in a URL path (`trader@BTC_USDT` stays readable).
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    pub fn new(url: &str, agent: &str, token: Option<&str>) -> Api {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3)))
            .build();
        Api {
            http: ureq::Agent::new_with_config(config),
            base: format!("{url}/agents/{}", segment(agent)),
            bearer: token.map(|t| format!("Bearer {t}")),
        }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&str>,
    ) -> Answer {
        let url = format!("{}/{path}", self.base);
        let result = match method {
            "GET" => {
                let mut r = self.http.get(&url);
                if let Some(b) = &self.bearer {
                    r = r.header("Authorization", b);
                }
                r.call()
            }
            _ => {
                let mut r = if method == "PUT" {
                    self.http.put(&url)
                } else {
                    self.http.post(&url)
                };
                if let Some(b) = &self.bearer {
                    r = r.header("Authorization", b);
                }
                for (k, v) in headers {
                    r = r.header(*k, v);
                }
                r.content_type("application/json")
                    .send(body.unwrap_or("{}"))
            }
        };
        match result {
            Ok(mut res) => {
                let status = res.status().as_u16();
                let version = res
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim_matches('"').parse().ok());
                let text = res.body_mut().read_to_string().unwrap_or_default();
                // vigil could not keep it now (its store down, busy, failing): as good as
                // unreachable — the client keeps a local copy and tries again later.
                if status >= 500 {
                    return Answer::Unreachable;
                }
                Answer::Reply(status, version, text)
            }
            Err(_) => Answer::Unreachable,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_escaped_for_paths() {
        assert_eq!(super::segment("trader@BTC_USDT"), "trader@BTC_USDT");
        assert_eq!(super::segment("a b/c"), "a%20b%2Fc");
    }
}
